"""Backend selection. A backend is a module with ``batch_stats`` and ``affine``.

``resolve(backend, x)`` maps the user's ``backend=`` keyword ("auto", "cpu", "cuda")
and the input array to a backend module. Only the CPU backend exists in this release;
the CUDA backend will plug in here as ``nbbn.backends.cuda`` with the same two
functions, chosen automatically for inputs that expose ``__cuda_array_interface__``.
Importing this package never imports ``numba.cuda``.
"""

from __future__ import annotations

from types import ModuleType

BACKENDS = ("auto", "cpu", "cuda")


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (missing GPU, driver or package)."""


def check_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def is_device_array(x) -> bool:
    """True for arrays that live in GPU memory (CuPy, torch CUDA, numba device arrays)."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    # numba's device arrays under the simulator have no __cuda_array_interface__
    return type(x).__name__ in ("DeviceNDArray", "FakeCUDAArray")


def resolve(backend: str, x=None) -> ModuleType:
    """The backend module for ``backend`` ("auto" looks at where ``x`` lives)."""
    check_name(backend)
    if backend == "auto":
        backend = "cuda" if x is not None and is_device_array(x) else "cpu"
    if backend == "cuda":
        raise BackendUnavailableError(
            "backend='cuda' is not available: this release of nbbn has no CUDA kernels yet "
            "(only backend='cpu'); pass a numpy array or copy the data to the host"
        )
    from . import cpu

    return cpu
