"""``import nbbn`` stays light: no numba (kernels are built on first use), no extras."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numba", "torch", "matplotlib", "zarr", "h5py", "tqdm", "dask", "distributed",
         "pyarrow", "pandas", "polars", "xarray", "PIL", "simplejpeg", "sklearn", "onnx",
         "onnxruntime", "skl2onnx")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120)
    return out.stdout.split()


def test_import_nbbn_loads_no_numba():
    assert _loaded_after("import nbbn") == []


def test_cli_parser_loads_no_numba():
    assert _loaded_after("import nbbn.cli; nbbn.cli.build_parser()") == []


def test_public_objects_built_without_numba():
    """Constructing the public classes compiles nothing: numba loads on the first call
    that computes."""
    code = ("import numpy as np, nbbn\n"
            "nbbn.RunningStats(-1, nan_policy='omit'); nbbn.BatchNorm(3).eval()\n"
            "nbbn.Normalizer(np.zeros(3), np.ones(3), eps=0.0)\n"
            "nbbn.BatchNorm(3).state_dict()")  # numpy arrays while torch is not imported
    assert _loaded_after(code) == []


def test_public_exceptions_exported_and_documented():
    """Everything a public function raises on purpose is importable from nbbn and on the
    API page."""
    from pathlib import Path

    import nbbn

    api = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    for name in ("BackendUnavailableError", "CheckpointError", "FitInterrupted",
                 "ImageError", "MissingExtraError"):
        assert name in nbbn.__all__
        assert issubclass(getattr(nbbn, name), BaseException)
        assert f"::: nbbn.{name}" in api


def test_numpy_work_loads_no_torch():
    """Tensors are recognised without importing torch (a tensor implies the caller did)."""
    code = ("import numpy as np, nbbn\nx = np.ones((4, 3, 2), np.float32)\n"
            "rs = nbbn.RunningStats().update(x); rs.to_normalizer()(x)\n"
            "nbbn.fit([x[0], x[1]], batched=False, progress=False)")
    assert "torch" not in _loaded_after(code)


def test_dask_and_xarray_loaded_only_when_used():
    """``nbbn.dask`` and a named channel axis import neither dask nor xarray."""
    code = "import nbbn.dask, nbbn\nnbbn.RunningStats('band'); nbbn.Normalizer([0.0], [1.0])"
    assert _loaded_after(code) == []


def test_sklearn_module_without_scikit_learn_names_the_extra():
    """``nbbn.sklearn`` imports scikit-learn, and says which extra to install when it is
    missing."""
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import nbbn\n"
            "try:\n"
            "    import nbbn.sklearn\n"
            "except nbbn.MissingExtraError as e:\n"
            "    print('MissingExtraError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.startswith("MissingExtraError") and "nbbn[sklearn]" in out.stdout


def test_disabled_jit_is_named():
    """``NUMBA_DISABLE_JIT=1`` (set to debug other numba code): the kernels cannot run as
    Python (overloads, intrinsics); the first computing call says why, where it raised
    a bare NotImplementedError from inside a kernel."""
    import os

    code = ("import numpy as np, nbbn\n"
            "nbbn.RunningStats().update(np.ones((4, 3)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "NUMBA_DISABLE_JIT": "1"}, timeout=120)
    assert out.returncode != 0
    assert "NUMBA_DISABLE_JIT is set" in out.stderr.splitlines()[-1]
