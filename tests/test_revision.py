"""``nbbn.tools.revision.backend_at``: a backend module of a git revision, for the A/B
scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and the repository")
def test_the_revisions_module_file_is_removed_when_the_process_ends():
    """Each call left ``/tmp/tmpXXXXXXXX/<module>_ab.py`` behind (a ``mkdtemp`` never
    removed). The folder lasts as long as the process (numba reads the file when it
    compiles), then goes."""
    code = ("from nbbn.tools.revision import backend_at\n"
            "m = backend_at('HEAD', 'cpu_histogram')\n"
            "import os; assert os.path.isfile(m.__file__)\n"
            "print(m.__file__)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip())
    assert path.name == "cpu_histogram_ab.py"
    assert not path.parent.exists()
