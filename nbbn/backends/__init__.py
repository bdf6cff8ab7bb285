"""Backend selection. A backend is a module with ``batch_stats`` and ``affine``.

``resolve(backend, x)`` maps the user's ``backend=`` keyword ("auto", "cpu", "cuda")
and the input array to a backend module: ``nbbn.backends.cpu`` for host arrays,
``nbbn.backends.cuda`` for device arrays (or ``backend="cuda"``). The CUDA module,
and with it ``numba.cuda``, is imported only then, never by ``import nbbn``.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import BackendUnavailableError

BACKENDS = ("auto", "cpu", "cuda")


def check_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def is_device_array(x) -> bool:
    """True for arrays in GPU memory: anything with ``__cuda_array_interface__`` (CuPy,
    torch CUDA tensors, numba device arrays) and numba's device arrays under the CUDA
    simulator, which lack that attribute but carry the ``__cuda_ndarray__`` marker."""
    return bool(getattr(type(x), "__cuda_ndarray__", False)) or hasattr(
        x, "__cuda_array_interface__")


def resolve(backend: str, x=None) -> ModuleType:
    """The backend module for ``backend`` ("auto" looks at where ``x`` lives)."""
    check_name(backend)
    if backend == "auto":
        backend = "cuda" if x is not None and is_device_array(x) else "cpu"
    if backend == "cuda":
        return _cuda()
    from . import cpu

    return cpu


def _cuda() -> ModuleType:
    """``nbbn.backends.cuda``, or BackendUnavailableError saying what is missing."""
    import importlib.util

    if importlib.util.find_spec("numba_cuda") is None:
        raise BackendUnavailableError(
            "backend='cuda' needs the numba-cuda package, which is not installed: "
            "pip install 'nbbn[cuda]'"
        )
    from numba.core import config

    if not getattr(config, "ENABLE_CUDASIM", 0):
        from numba import cuda as nb_cuda

        if not nb_cuda.is_available():
            raise BackendUnavailableError(
                "backend='cuda' needs a CUDA GPU: numba-cuda is installed but found no usable "
                "GPU or driver (numba.cuda.is_available() is False). Set "
                "NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in numba's simulator."
            )
    from . import cuda

    return cuda
