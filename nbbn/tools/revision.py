"""A backend module as it was at a git revision, imported beside the current one: the
in-process A/B scripts (``scripts/affine_ab.py``, ``scripts/affine_prefetch_ab.py``,
``scripts/sparse_csc_kernel.py``) time and compare its kernels with the working
tree's."""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

__all__ = ["backend_at"]


def backend_at(rev: str, module: str,
               rewrite: Callable[[str], str] | None = None) -> ModuleType:
    """``nbbn.backends.<module>`` as it was at git revision ``rev`` (read with ``git
    show`` from the current directory's repository), imported as
    ``nbbn.backends.<module>_ab``: its relative imports then load the current helpers,
    so it must import the same names as they are now (``rewrite``, given the source,
    returns it adapted to them). The module's file is in a temporary folder removed
    when the process ends (one was left per call)."""
    src = subprocess.run(["git", "show", f"{rev}:nbbn/backends/{module}.py"],
                         check=True, capture_output=True, text=True).stdout
    if rewrite is not None:
        src = rewrite(src)
    folder = tempfile.mkdtemp(prefix="nbbn-ab-")
    # (removed when the process ends, not now: numba reads the source file when it
    # compiles a kernel, at its first call, and its disk cache keys on the file)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / f"{module}_ab.py"
    path.write_text(src)
    name = f"nbbn.backends.{module}_ab"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # numba's cache finds a kernel's module by name
    spec.loader.exec_module(loaded)
    return loaded
