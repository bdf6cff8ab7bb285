"""The Dask backend: the :class:`~nbbn.backends.Backend` operations on dask arrays.

Statistics are one ``dask.array.reduction`` over every axis but the channel axis: each
chunk is reduced by the CPU kernels (serially, on the worker thread that runs the task:
the scheduler owns the parallelism) to a small float64 *record* per channel (count, NaN
and inf counts, the double-double mean, M2, min, max: :data:`RECORD`, 64 bytes), and
records are merged with Chan's formula (``cpu_stats.fold``) in a tree of
``split_every`` records at a time. Chunks that split the channel axis give records for
their channels only; the tree never merges records of different channels. The affine
map (``Normalizer``, ``normalize``, ``BatchNorm`` in eval mode) is a lazy
``map_blocks``: same chunks, nbbn's output dtype, nothing computed.

Every function a task runs is defined at module level, so it pickles by reference and
each worker process compiles (or loads from numba's disk cache) a kernel once. dask is
imported on first use only (``pip install 'nbbn[dask]'``).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import numpy as np

from .._affine import affine_scale, batchnorm_step, result_dtype
from .._layout import (
    check_dense_chunks,
    check_dtype,
    device_chunks_message,
    is_device_array,
    is_sparse,
    normalize_axis,
    sparse_chunks_message,
)
from .._policy import POLICY_PROPAGATE
from ._stats import FLOAT_FIELDS, INT_FIELDS, BatchStats

name = "dask"

RECORD = np.dtype([(f, np.int64) for f in INT_FIELDS] + [(f, np.float64) for f in FLOAT_FIELDS])
"""One channel's statistics in a chunk record (the fields of ``BatchStats``)."""


class DaskInput:
    """A dask array seen as (outer, channels, inner) around its channel axis (nothing
    computed): ``array``, ``axis`` (non-negative), ``outer``, ``channels``, ``inner``."""

    __slots__ = ("array", "axis", "outer", "channels", "inner")

    def __init__(self, array, axis: int) -> None:
        shape = tuple(int(n) for n in array.shape)
        self.array = array
        self.axis = axis
        self.outer = int(np.prod(shape[:axis], dtype=np.int64))
        self.channels = shape[axis]
        self.inner = int(np.prod(shape[axis + 1:], dtype=np.int64))

    @property
    def size(self) -> int:
        """Number of values."""
        return self.outer * self.channels * self.inner


class _LazyOut:
    """The output of the affine map: filled by :func:`affine` with a lazy dask array."""

    __slots__ = ("array", "dtype", "like")

    def __init__(self, like, dtype: np.dtype) -> None:
        self.like = like
        self.dtype = dtype
        self.array = None


# ------------------------------------------------------------------ chunk functions
# Module level: tasks pickle them by reference (a closure would be re-sent and
# re-compiled on every worker).
def stats_to_records(st: BatchStats) -> np.ndarray:
    """``BatchStats`` as a (C,) array of :data:`RECORD`."""
    rec = np.empty(st.num_channels, RECORD)
    for i, f in enumerate(INT_FIELDS):
        rec[f] = st.ints[i]
    for i, f in enumerate(FLOAT_FIELDS):
        rec[f] = st.floats[i]
    return rec


def records_to_stats(rec: np.ndarray) -> BatchStats:
    """A (C,) array of :data:`RECORD` as ``BatchStats``."""
    rec = np.asarray(rec).reshape(-1)
    return BatchStats(np.array([rec[f] for f in INT_FIELDS], np.int64),
                      np.array([rec[f] for f in FLOAT_FIELDS], np.float64))


def _chunk_stats(block: np.ndarray, axis=None, keepdims: bool = True, *, caxis: int,
                 policy: int) -> np.ndarray:
    """One chunk's record per channel, shaped as the chunk with every axis but the
    channel axis of length 1 (``dask.array.reduction``'s ``chunk``)."""
    from . import cpu

    if is_sparse(block):  # (a dask array whose meta did not say so: check_dense_chunks)
        raise TypeError(sparse_chunks_message("the input", block))
    if is_device_array(block):  # (the same, for GPU chunks)
        raise TypeError(device_chunks_message("the input", block))
    nchan = block.shape[caxis]
    if block.size == 0:
        st = BatchStats.empty(nchan)
    else:
        with cpu.serial():
            st = cpu.reduce(cpu.prepare(block, caxis, "chunk"), policy)
    return _shaped(stats_to_records(st), block.ndim, caxis, keepdims)


def _shaped(rec: np.ndarray, ndim: int, caxis: int, keepdims: bool) -> np.ndarray:
    if not keepdims:
        return rec
    shape = [1] * ndim
    shape[caxis] = rec.shape[0]
    return rec.reshape(shape)


def _merge_records(recs: np.ndarray, axis=None, keepdims: bool = False, *,
                   caxis: int) -> np.ndarray:
    """Records concatenated along the reduced axes, merged per channel in their order
    with Chan's formula (``combine`` and ``aggregate`` of the reduction)."""
    from . import cpu_stats

    ndim = recs.ndim
    nchan = recs.shape[caxis]
    if nchan == 0:  # a zero-width chunk along the channel axis: no records to merge
        return _shaped(np.empty(0, RECORD), ndim, caxis, keepdims)
    flat = np.moveaxis(recs, caxis, -1).reshape(-1, nchan)  # (P, C)
    pi = np.ascontiguousarray(np.stack([flat[f] for f in INT_FIELDS], axis=1))
    pf = np.ascontiguousarray(np.stack([flat[f] for f in FLOAT_FIELDS], axis=1))
    out = BatchStats.uninitialized(flat.shape[1])
    if flat.shape[0] == 0:
        out = BatchStats.empty(flat.shape[1])
    else:
        cpu_stats.fold(pi, pf, out.ints, out.floats, False,
                       cpu_stats.whole_ranges(*flat.shape))
    return _shaped(stats_to_records(out), ndim, caxis, keepdims)


def _affine_block(block: np.ndarray, a: np.ndarray, s: np.ndarray, b: np.ndarray, *,
                  caxis: int, out_dtype: np.dtype, block_info=None) -> np.ndarray:
    """The affine map of one chunk, with the parameters of its channels."""
    from . import cpu

    lo, hi = block_info[0]["array-location"][caxis] if block_info else (0, block.shape[caxis])
    if is_device_array(block):  # (a dask array whose meta did not say so)
        raise TypeError(device_chunks_message("the input", block))
    out = np.empty(block.shape, out_dtype)
    if block.size:
        with cpu.serial():
            cpu.affine(cpu.prepare(block, caxis, "chunk"), (a[lo:hi], s[lo:hi], b[lo:hi]), out)
    return out


# ------------------------------------------------------------------ graphs
def lazy_records(x, axis: int, policy: int, split_every: int | None = None):
    """The (C,) dask array of :data:`RECORD` for ``x`` (a validated dask array, ``axis``
    non-negative): a tree reduction, nothing computed."""
    import dask.array as da

    reduced = tuple(i for i in range(x.ndim) if i != axis)
    return da.reduction(
        x,
        functools.partial(_chunk_stats, caxis=axis, policy=policy),
        functools.partial(_merge_records, caxis=axis),
        combine=functools.partial(_merge_records, caxis=axis),
        axis=reduced,
        keepdims=False,
        dtype=RECORD,
        split_every=split_every,
        concatenate=True,
        meta=np.empty(0, RECORD),
        name="nbbn-channel-stats",
    )


def lazy_affine(inp: DaskInput, a: np.ndarray, s: np.ndarray, b: np.ndarray,
                dtype: np.dtype):
    """``(x - a[c]) * s[c] + b[c]`` as a lazy dask array of ``dtype``, chunked as ``x``.
    The parameters are copied into the graph: a BatchNorm trained (or its bias edited)
    before ``compute`` must not change an output already built."""
    x = inp.array
    return x.map_blocks(_affine_block, np.array(a, np.float64), np.array(s, np.float64),
                        np.array(b, np.float64), caxis=inp.axis, out_dtype=dtype, dtype=dtype,
                        meta=np.empty((0,) * x.ndim, dtype), token="nbbn-affine")


# ------------------------------------------------------------------ statistics
def prepare(x, channel_axis: int | str, what: str) -> DaskInput:
    """Validate a dask array (dtype, axis, dense chunks) without computing anything."""
    check_dense_chunks(x, what)
    check_dtype(np.dtype(x.dtype), what)
    if any(np.isnan(n) for n in x.shape):
        raise ValueError(
            f"the dask array {what} has unknown chunk sizes (shape {x.shape}): call "
            f"x.compute_chunk_sizes() first, or compute the filtered array")
    return DaskInput(x, normalize_axis(channel_axis, x.ndim))


def reduce(inp: DaskInput, policy: int) -> BatchStats:
    """The statistics of the whole array: the reduction computed on the active scheduler
    (threads by default, or a ``dask.distributed`` client)."""
    return records_to_stats(lazy_records(inp.array, inp.axis, policy).compute())


WEIGHTS = False  # (no weighted reduction: reduce_weighted raises, for any weights)


def reduce_weighted(inp: DaskInput, policy: int, weight: np.ndarray) -> BatchStats:
    """Weighted statistics of a dask array are not implemented: a clear error."""
    from ..errors import BackendUnavailableError

    raise BackendUnavailableError(
        "sample_weight is not supported for dask arrays: update with a numpy array "
        "(e.g. per chunk: rs.update(np.asarray(block), sample_weight=w)), or without "
        "sample_weight")


def summary(part: BatchStats) -> BatchStats:
    """The computed statistics are host arrays already."""
    return part


def merge(state, part: BatchStats) -> BatchStats:
    """``part`` merged into ``state`` on the host (the CPU backend's merge)."""
    from . import cpu

    return cpu.merge(state, part)


# ------------------------------------------------------------------ affine map
def prepare_out(out, inp: DaskInput, what: str) -> _LazyOut:
    """The lazy output: ``out=`` cannot be given (the result is a new dask array)."""
    if out is not None:
        raise ValueError(
            f"out= is not supported for a dask array {what}: the result is a new lazy dask "
            "array (store it with dask.array.store / to_zarr, or use nbbn.transform)")
    return _LazyOut(inp.array, result_dtype(np.dtype(inp.array.dtype)))


def params(a: np.ndarray, s: np.ndarray, b: np.ndarray, inp: DaskInput, owner: Hashable):
    """The parameters as host arrays (embedded in the graph)."""
    return a, s, b


def affine(inp: DaskInput, params, out: _LazyOut) -> None:
    """Build the lazy map into ``out`` (computes nothing)."""
    a, s, b = params
    out.array = lazy_affine(inp, a, s, b, out.dtype)


def result(out: _LazyOut):
    """The lazy dask array (an empty input gives an empty array of the output dtype)."""
    return out.like.astype(out.dtype) if out.array is None else out.array


# ------------------------------------------------------------------ BatchNorm
def running(buffer, inp: DaskInput) -> Any:
    """BatchNorm's (2, C) running buffer on the host."""
    from . import to_host

    return to_host(buffer)


def batchnorm_eval(inp: DaskInput, eps: float, weight: np.ndarray, bias: np.ndarray,
                   running: np.ndarray, out: _LazyOut, owner: Hashable) -> None:
    """Eval mode with running statistics: the lazy map (computes nothing)."""
    affine(inp, params(running[0], affine_scale(weight, running[1], eps), bias, inp, owner),
           out)


def batchnorm_train(inp: DaskInput, eps: float, weight: np.ndarray, bias: np.ndarray,
                    running: np.ndarray | None, factor: float, out: _LazyOut) -> None:
    """Training mode: the batch statistics are computed now (one pass of the reduction,
    the running buffers change at once, as in eager mode); the output is lazy."""
    st = reduce(inp, POLICY_PROPAGATE)
    params = batchnorm_step(st.mean, st.m2, inp.outer * inp.inner, weight, bias, eps,
                            running, factor)
    affine(inp, params, out)
