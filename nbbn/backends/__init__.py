"""Backends: the operations every compute backend offers, and how one is chosen.

A backend is a module that satisfies :class:`Backend`. The public classes
(``RunningStats``, ``Normalizer``, ``BatchNorm``) hold no backend-specific code: they
validate their own arguments, :func:`resolve` a backend once per call, and call its
operations, in this order:

1. ``prepare(x, channel_axis, what)``: validate the input (dtype, ndim, axis) and see it
   as ``(outer, channels, inner)``; the result has ``channels``, ``outer``, ``inner``
   and ``size``, and remembers the caller's array type for ``result``.
2. Statistics: ``reduce(inp, policy)`` computes the batch's statistics (outside any
   lock; a device backend may leave them on the device), ``summary(part)`` brings them
   to the host as a :class:`~nbbn.backends._stats.BatchStats` when the caller must look
   at them (``nan_policy="raise"``), and ``merge(state, part)`` merges them into a
   running state (under the caller's lock) and returns the new state. A state is a
   ``BatchStats`` on the host or a backend's own object on its device; every state
   has ``num_channels`` and ``to_host()``, and ``merge`` accepts a state from any
   backend (the state lives where the last update ran).
   ``reduce_weighted(inp, policy, weight)`` is ``reduce`` with float64 frequency
   weights per row along axis 0 (the CUDA backend raises ``BackendUnavailableError``).
3. The affine map ``out = (x - a[c]) * s[c] + b[c]``: ``prepare_out(out, inp, what)``
   validates the caller's ``out=`` (or allocates one of the input's kind),
   ``params(a, s, b, inp, owner)`` puts the (C,) parameter vectors where the kernels
   read them (the device backend keeps one copy per ``owner``, e.g. ``(id(normalizer),
   "x")``, and uploads again only when the values change), ``affine(inp, params, out)`` runs it and
   ``result(out)`` returns what the caller gets back, of the input's array type.
4. BatchNorm training: ``running(buffer, inp)`` moves the (2, C) running-statistics
   buffer to the backend, and ``batchnorm_train(inp, eps, weight, bias, running,
   factor, out)`` computes the batch statistics, updates ``running`` in place and
   writes the normalized output.

Array types: host arrays (numpy, memmaps, anything ``np.asarray`` takes) go to
``backends.cpu``; device arrays (anything with ``__cuda_array_interface__``: torch CUDA
tensors, CuPy, Numba device arrays) to ``backends.cuda``; dask arrays to
``backends.dask`` (a chunked reduction, lazy outputs); xarray DataArrays to
``backends.xarray``, which runs their data on one of the others. A new array type is one
new module: a backend when it computes differently (e.g. a lazy Dask reduction), or an
entry in :data:`ROUTES` plus an adapter in its backend's ``prepare``/``result`` when it
only needs converting (e.g. torch CPU tensors). Backend modules are imported by
:func:`resolve` only when needed: ``import nbbn`` imports neither numba nor
``numba.cuda``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Hashable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .._layout import is_device_array, is_sparse
from ..errors import BackendUnavailableError
from ._stats import BatchStats

BACKENDS = ("auto", "cpu", "cuda")

__all__ = ["BACKENDS", "Backend", "BackendUnavailableError", "BatchStats", "check_name",
           "is_device_array", "is_sparse", "resolve", "to_host"]


class Backend(Protocol):
    """The operations of a compute backend (see the module docstring for the flow)."""

    name: str

    def prepare(self, x: Any, channel_axis: int | str, what: str) -> Any:
        """The validated input seen as (outer, channels, inner)."""

    def reduce(self, inp: Any, policy: int) -> Any:
        """The statistics of one input (on the backend's device)."""

    def reduce_weighted(self, inp: Any, policy: int, weight: np.ndarray) -> Any:
        """The statistics of one input with float64 weights per row along axis 0."""

    def summary(self, part: Any) -> BatchStats:
        """The statistics of ``reduce`` as host arrays."""

    def merge(self, state: Any, part: Any) -> Any:
        """``part`` merged into ``state`` (None, or a state of any backend)."""

    def prepare_out(self, out: Any, inp: Any, what: str) -> Any:
        """The output of the affine map: the caller's ``out`` validated, or a new one."""

    def params(self, a: np.ndarray, s: np.ndarray, b: np.ndarray, inp: Any,
               owner: Hashable) -> Any:
        """The affine map's (C,) float64 parameters, where the kernels read them."""

    def affine(self, inp: Any, params: Any, out: Any) -> int | None:
        """``out = (x - a[c]) * s[c] + b[c]``; ``out`` may be the input itself. (The CPU
        backend's also counts infinite inputs on request, for scikit-learn's checks.)"""

    def result(self, out: Any) -> Any:
        """What the caller gets back for ``out``: an array of the input's type."""

    def running(self, buffer: Any, inp: Any) -> Any:
        """BatchNorm's (2, C) float64 running buffer, moved to this backend."""

    def batchnorm_train(self, inp: Any, eps: float, weight: np.ndarray, bias: np.ndarray,
                        running: Any, factor: float, out: Any) -> None:
        """BatchNorm's training forward: batch statistics, running update, output."""

    def batchnorm_eval(self, inp: Any, eps: float, weight: np.ndarray, bias: np.ndarray,
                       running: np.ndarray, out: Any, owner: Hashable) -> None:
        """BatchNorm's eval forward with the (2, C) host running statistics: the map by
        ``mean`` and ``weight / sqrt(var + eps)`` (parameters kept per ``owner`` where
        ``params`` keeps them)."""


if TYPE_CHECKING:  # mypy checks that both modules implement the protocol
    from . import cpu as _cpu_module
    from . import cuda as _cuda_module
    from . import dask as _dask_module
    from . import xarray as _xarray_module

    _cpu_backend: Backend = _cpu_module
    _cuda_backend: Backend = _cuda_module
    _dask_backend: Backend = _dask_module
    _xarray_backend: Backend = _xarray_module


def check_name(backend: str) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`; TypeError for a non-str,
    ValueError for another str."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {BACKENDS}, got "
                        f"{type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def is_xarray(x) -> bool:
    """True for an ``xarray.DataArray`` (tested without importing xarray)."""
    return type(x).__module__.startswith("xarray") and hasattr(x, "dims") \
        and hasattr(x, "variable")


def is_dask_array(x) -> bool:
    """True for a ``dask.array.Array`` (tested without importing dask)."""
    return type(x).__module__.startswith("dask.array") and hasattr(x, "__dask_graph__")


ROUTES: list[tuple[Callable[[Any], bool], str]] = [
    (is_xarray, "xarray"), (is_dask_array, "dask"), (is_device_array, "cuda")]
"""``(test, backend name)`` pairs that ``backend="auto"`` tries in order on the input;
anything else runs on "cpu". "xarray" unwraps a DataArray and runs its data on the
backend that fits it; "dask" reduces dask arrays chunk by chunk."""


def resolve(backend: str, x: Any = None) -> Backend:
    """The backend module for ``backend`` ("auto" looks at the type of ``x``).

    Raises
    ------
    ValueError
        ``backend`` is not one of :data:`BACKENDS`.
    BackendUnavailableError
        The backend cannot run here (says what is missing).
    """
    check_name(backend)
    if backend == "auto":
        backend = "cpu" if type(x) is np.ndarray else next(
            (name for test, name in ROUTES if x is not None and test(x)), "cpu")
    elif backend == "cpu" and x is not None and type(x) is not np.ndarray:
        # a DataArray and a dask array are CPU work too (chunk by chunk, or the
        # DataArray's data): np.asarray would load a dask array whole, and a DataArray
        # would lose its dimension names
        backend = "xarray" if is_xarray(x) else "dask" if is_dask_array(x) else "cpu"
    if backend == "cuda":
        if x is not None and type(x) is not np.ndarray and (is_xarray(x) or is_dask_array(x)):
            # (a DataArray lost its names, and a dask array was computed whole)
            if is_dask_array(x):  # (GPU chunks: 'auto' or 'cpu' would not read them)
                from .._layout import check_dense_chunks

                check_dense_chunks(x, "the input")
            kind = "an xarray DataArray" if is_xarray(x) else "a dask array"
            raise TypeError(f"backend='cuda' reads numpy arrays, GPU arrays and torch "
                            f"tensors, and the input is {kind}: use backend='auto' or "
                            "'cpu' (its chunks or data on the host), or pass the data "
                            "itself (x.values, x.compute()) copied to the device")
        return _cuda()
    return _module(backend)  # "cpu", or a route's module ("dask", "xarray")


def to_host(obj: Any) -> Any:
    """A state or buffer as host data: ``obj.to_host()`` for backend objects, ``obj``
    itself for numpy arrays and None."""
    return obj.to_host() if hasattr(obj, "to_host") else obj


def keep_running(buffer: Any) -> Any:
    """A copy of BatchNorm's running buffer (host or device), to put back with
    :func:`restore_running` if a training step fails."""
    return buffer.copy() if isinstance(buffer, np.ndarray) else buffer.keep()


def restore_running(buffer: Any, kept: Any) -> None:
    """Put ``kept`` (:func:`keep_running`) back into ``buffer``, in place."""
    if isinstance(buffer, np.ndarray):
        buffer[...] = kept
    else:
        buffer.restore(kept)


_loaded: dict[str, ModuleType] = {}


def _module(name: str) -> Any:
    module = _loaded.get(name)
    if module is None:
        module = _loaded[name] = importlib.import_module(f"{__name__}.{name}")
    return module


def _cuda() -> Backend:
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
    return _module("cuda")
