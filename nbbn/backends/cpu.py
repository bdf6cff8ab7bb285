"""The CPU backend: the :class:`~nbbn.backends.Backend` operations on host arrays.

Inputs are validated and described as (O, C, I) by :func:`nbbn._layout.canonical`
(a :class:`~nbbn._layout.Canonical`), so the kernels only ever see 3-d pieces. This
module picks a kernel, a partition count and serial or parallel execution; the
kernels are in ``cpu_stats`` (statistics) and ``cpu_normalize`` (the affine map).
Statistics are host :class:`BatchStats`; states that live on a device are brought to
the host by ``merge``.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from contextlib import contextmanager

import numba
import numpy as np

from .._affine import affine_scale, check_out, result_dtype
from .._layout import Canonical, canonical
from .._numerics import chan_merge, merge_max, merge_min
from .._policy import POLICY_PROPAGATE
from . import cpu_normalize as kn
from . import cpu_stats as ks
from ._stats import BatchStats

name = "cpu"

MAX_PARTS = 64  # fixed upper bound: the partitioning never depends on the thread count
MIN_PART_ELEMENTS = 1 << 16  # below this many elements per partition, run serially

_workqueue_lock = threading.Lock()
_threadsafe_layer = False  # becomes True once numba reports omp or tbb


@contextmanager
def _parallel_allowed():
    """Yield True when a parallel kernel may run now.

    numba's ``workqueue`` threading layer aborts the process when two Python threads
    launch parallel kernels at once; under it, a second concurrent caller runs the
    serial kernel instead. ``omp`` and ``tbb`` are thread-safe and never wait here.
    """
    global _threadsafe_layer
    if not _threadsafe_layer:
        try:
            _threadsafe_layer = numba.threading_layer() != "workqueue"
        except ValueError:  # no parallel kernel has run yet: be careful
            pass
    if _threadsafe_layer:
        yield True
        return
    got = _workqueue_lock.acquire(blocking=False)
    try:
        yield got
    finally:
        if got:
            _workqueue_lock.release()


def _nparts(size: int, units: int) -> int:
    return int(max(1, min(MAX_PARTS, units, size // MIN_PART_ELEMENTS)))


def _half(x3: np.ndarray):
    """float16 reaches the kernels as its uint16 bits plus the ``half=True`` marker."""
    if x3.dtype == np.float16:
        return x3.view(np.uint16), True
    return x3, None


def _piece_stats(x3: np.ndarray, policy: int) -> BatchStats:
    nchan = x3.shape[1]
    if x3.size == 0:
        return BatchStats.empty(nchan)
    out = BatchStats.uninitialized(nchan)
    if x3.shape[2] == 1 and not x3[:, :, 0].flags.c_contiguous:
        x3 = np.ascontiguousarray(x3)  # only 2-d strided channels-last views land here
    data, half = _half(x3)
    args: tuple
    if x3.shape[2] == 1 and ks.u8_cl_simd(x3.dtype, nchan):
        rpb = ks.u8_cl_geometry(nchan)[2]
        nparts = _nparts(x3.size, -(-x3.shape[0] // rpb))
        kernels = (ks.stats_channels_last_u8_serial, ks.stats_channels_last_u8_parallel)
        args = (data.reshape(-1), nchan)
    elif x3.shape[2] == 1:
        simd = ks.cl_simd(x3.dtype, nchan)
        rpb = ks.channels_last_geometry(nchan, simd)[2]
        nparts = _nparts(x3.size, -(-x3.shape[0] // rpb))
        kernels = (ks.stats_channels_last_serial, ks.stats_channels_last_parallel)
        args = (data.reshape(-1), nchan, half, policy, ks.ratio_limit(x3.dtype), simd)
    else:
        rb = ks.row_block(x3.dtype)
        nparts = _nparts(x3.size, x3.shape[0] * nchan * -(-x3.shape[2] // rb))
        kernels = (ks.stats_channels_first_serial, ks.stats_channels_first_parallel)
        args = (data, half, policy, rb)
    if nparts == 1:
        kernels[0](*args, nparts, out.ints, out.floats)
        return out
    with _parallel_allowed() as parallel:
        kernels[1 if parallel else 0](*args, nparts, out.ints, out.floats)
    return out


# ------------------------------------------------------------------ statistics
def prepare(x, channel_axis: int, what: str) -> Canonical:
    """Validate a host array and describe it as (O, C, I) around ``channel_axis``."""
    return canonical(x, channel_axis, what)


def reduce(can: Canonical, policy: int) -> BatchStats:
    """Per-channel statistics of one input array (all its pieces merged)."""
    view = can.view3()
    if view is not None:
        return _piece_stats(view, policy)
    total = None
    for x3, _ in can.pieces():
        part = _piece_stats(x3, policy)
        total = part if total is None else merge(total, part)
    return total if total is not None else BatchStats.empty(can.channels)


def summary(part: BatchStats) -> BatchStats:
    """The batch statistics of ``reduce`` on the host: they already are."""
    return part


@numba.njit(cache=True, nogil=True)
def _merge_into(si, sf, bi, bf):
    """Merge the statistics blocks (bi, bf) into (si, sf) in place (``BatchStats``)."""
    for c in range(si.shape[1]):
        si[0, c], sf[0, c], sf[1, c], sf[2, c] = chan_merge(
            si[0, c], sf[0, c], sf[1, c], sf[2, c], bi[0, c], bf[0, c], bf[1, c], bf[2, c])
        sf[3, c] = merge_min(sf[3, c], bf[3, c])
        sf[4, c] = merge_max(sf[4, c], bf[4, c])
        si[1, c] += bi[1, c]
        si[2, c] += bi[2, c]


def merge(state, part: BatchStats) -> BatchStats:
    """``part`` merged into ``state`` (None, host statistics, or a device state, which
    is brought to the host first); ``part`` itself when there is no state yet."""
    if state is None:
        return part
    host = state.to_host()
    _merge_into(host.ints, host.floats, part.ints, part.floats)
    return host


def _out_view3(out: np.ndarray, shape3: tuple[int, int, int]) -> np.ndarray | None:
    if out.dtype not in (np.float32, np.float64) or not out.dtype.isnative:
        return None
    try:
        return out.reshape(shape3, copy=False)
    except ValueError:
        return None


def _run_affine(x3: np.ndarray, a, s, b, o3: np.ndarray) -> None:
    data, half = _half(x3)
    nchan = x3.shape[1]
    flat = x3.shape[2] == 1 and x3.flags.c_contiguous and o3.flags.c_contiguous
    with _parallel_allowed() as parallel:
        parallel = parallel and x3.size >= 2 * MIN_PART_ELEMENTS
        if flat:
            ta, ts, tb = kn.tile_params(a, s, b)
            kernel = (
                kn.affine_channels_last_parallel if parallel else kn.affine_channels_last_serial
            )
            kernel(data.reshape(-1), half, ta, ts, tb, nchan, o3.reshape(-1))
        else:
            kernel = (
                kn.affine_channels_first_parallel if parallel else kn.affine_channels_first_serial
            )
            kernel(data, half, a, s, b, o3)


# ------------------------------------------------------------------ affine map
def prepare_out(out, can: Canonical, what: str) -> np.ndarray:
    """The caller's ``out`` (a numpy array, validated) or a new array of the result dtype."""
    x = can.array
    if out is None:
        return np.empty(x.shape, result_dtype(x.dtype))
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    check_out(out.shape, out.dtype, out.flags.writeable, x.shape, what)
    return out


def params(a: np.ndarray, s: np.ndarray, b: np.ndarray, can: Canonical, owner: Hashable):
    """The affine parameters as they are: the CPU kernels read host arrays."""
    return a, s, b


def result(out: np.ndarray) -> np.ndarray:
    """The output array itself (numpy in, numpy out)."""
    return out


def affine(can: Canonical, params, out: np.ndarray) -> None:
    """``out = (x - a[c]) * s[c] + b[c]`` for every channel c; ``out`` may be the input."""
    a, s, b = params
    x = can.array
    if type(out) is not np.ndarray:  # np.memmap and other subclasses: a plain view
        out = out.view(np.ndarray)
    # Exact aliasing (out is x, or the same memory with the same layout) is safe for an
    # elementwise kernel; any other overlap goes through a temporary.
    overlap = np.may_share_memory(x, out) and not (
        x.__array_interface__["data"][0] == out.__array_interface__["data"][0]
        and x.strides == out.strides
        and x.dtype.itemsize == out.dtype.itemsize
    )
    target_all = np.empty(out.shape, np.float32 if out.dtype == np.float16 else out.dtype) if (
        overlap
    ) else out
    for x3, index in can.pieces():
        dst = target_all[index]
        o3 = _out_view3(dst, x3.shape)
        if o3 is None:
            o3 = np.empty(x3.shape, np.float64 if dst.dtype.itemsize >= 8 else np.float32)
            _run_affine(x3, a, s, b, o3)
            dst[...] = o3.reshape(dst.shape)
        else:
            _run_affine(x3, a, s, b, o3)
    if overlap:
        out[...] = target_all


# ------------------------------------------------------------------ BatchNorm
def running(buffer, can: Canonical) -> np.ndarray:
    """BatchNorm's (2, C) running buffer on the host."""
    return buffer.to_host() if hasattr(buffer, "to_host") else buffer


def batchnorm_train(can: Canonical, eps: float, weight: np.ndarray, bias: np.ndarray,
                    running: np.ndarray | None, factor: float, out: np.ndarray) -> None:
    """Batch statistics (biased variance to normalize with), the running update with
    the unbiased variance (``running`` (2, C) in place, or None), then the affine map:
    two reads of x and one write."""
    st = reduce(can, POLICY_PROPAGATE)
    n = can.outer * can.inner
    if running is not None:
        keep = 1.0 - factor
        running[0] = keep * running[0] + factor * st.mean
        running[1] = keep * running[1] + factor * (st.m2 / (n - 1))
    affine(can, (st.mean, affine_scale(weight, st.m2 / n, eps), bias), out)
