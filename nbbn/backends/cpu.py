"""The CPU backend: the :class:`~nbbn.backends.Backend` operations on host arrays.

Inputs are validated and described as (O, C, I) by :func:`nbbn._layout.canonical`
(a :class:`~nbbn._layout.Canonical`), so the kernels only ever see 3-d pieces. This
module picks a kernel, a partition count and serial or parallel execution; the
kernels are in ``cpu_stats`` (statistics) and ``cpu_normalize`` (the affine map).
Statistics are host :class:`BatchStats`; states that live on a device are brought to
the host by ``merge``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any

import numba
import numpy as np

from .. import _layout
from .._affine import check_out, result_dtype
from .._layout import Canonical, canonical, copied_rows, streams
from .._policy import POLICY_PROPAGATE
from .._torch_arrays import (
    TensorOutput,
    check_no_grad,
    check_out_overlap,
    check_writable_bits,
    empty_tensor_out,
    host_view,
    is_tensor,
    numpy_to_bf16_bits,
    written,
)
from . import cpu_byte_tables as kb
from . import cpu_few_rows as kf
from . import cpu_normalize as kn
from . import cpu_pool, cpu_stream, to_host
from . import cpu_stats as ks
from ._stats import COUNT_LIMIT, BatchStats, count_limit_error
from .cpu_numerics import BF16
from .cpu_simd import HAVE_SIMD

name = "cpu"

MAX_PARTS = 64  # fixed upper bound: the partitioning never depends on the thread count
MIN_PART_ELEMENTS = 1 << 16  # a partition holds at least this many elements
THREADED_MIN_ELEMENTS = 1 << 20  # below this many elements one thread does all the work

_pool: cpu_pool.Pool | None = None
_pool_lock = threading.Lock()
_local = threading.local()  # .limit: thread_limit() of the calling thread


def threads() -> int:
    """Threads the kernels use: numba's thread count (``NUMBA_NUM_THREADS``, default the
    CPUs this process may use), or fewer inside :func:`thread_limit`, and one inside a
    task of a dask.distributed worker (:func:`_in_worker_task`)."""
    n = max(1, int(getattr(numba.config, "NUMBA_NUM_THREADS", 1)))
    limit = getattr(_local, "limit", None)
    if limit is None and _in_worker_task():
        limit = 1
    return n if limit is None else min(n, limit)


def _in_worker_task() -> bool:
    """Whether this thread runs a task of a dask.distributed worker (a user's task that
    calls nbbn, as ``client.submit(f)``): the worker's threads already use the cores, as
    nbbn's own tasks assume (``serial``), and distributed's nanny sets
    ``OMP_NUM_THREADS=1`` for the same reason. A threaded kernel there started nbbn's
    pool beside the worker's threads (found against numbagg's and distributed#9075's
    pitfall)."""
    worker = sys.modules.get("distributed.worker")
    if worker is None:
        return False
    try:
        worker.get_worker()
    except (ValueError, AttributeError):
        return False
    return True


@contextlib.contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """Calls from this thread use at most ``n`` threads (a dask worker's task: 1)."""
    old = getattr(_local, "limit", None)
    _local.limit = max(1, int(n))
    try:
        yield
    finally:
        _local.limit = old


def serial() -> contextlib.AbstractContextManager[None]:
    """Within this block, this thread's kernels run on this thread alone (Dask tasks:
    the scheduler's threads or workers already use the cores; nested threads would
    oversubscribe them). Results are the same bits either way: ``thread_limit(1)``."""
    return thread_limit(1)


def _forget_pool() -> None:
    """In a forked child (``multiprocessing``'s fork, a DataLoader worker): the parent's
    pool threads do not exist there, so a chunk submitted to its pool would wait
    forever; the child starts a pool of its own on first use."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_forget_pool)


def _workers() -> cpu_pool.Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            n = max(1, int(getattr(numba.config, "NUMBA_NUM_THREADS", 1)))
            _pool = cpu_pool.Pool(max(1, n - 1))
        return _pool


SCRATCH_KEEP = 64 << 20  # bytes of scratch (``scratch``) a thread keeps between calls
_scratch = threading.local()


def scratch(nbytes: int) -> np.ndarray:
    """The calling thread's scratch, uint8, of at least ``nbytes``: kept for its next
    calls where it is at most ``SCRATCH_KEEP``. A kernel's per-call arrays taken from new
    memory were page-faulted in each call, 4 KB at a time, when malloc had returned the
    last call's to the system (it does past a size that depends on what the process
    did before): 3 us a page on a VM, 11 ms of a 17 ms update of one float64 row of
    262,144 channels (docs/benchmarks.md). One kernel runs on a thread at a time."""
    buf = getattr(_scratch, "buf", None)
    if buf is not None and buf.size >= nbytes:
        return buf
    buf = np.empty(max(nbytes, 1), np.uint8)
    if nbytes <= SCRATCH_KEEP:
        _scratch.buf = buf
    return buf


def _run(kernel, head: tuple, tail: tuple, size: int, chunks: int,
         scratch_bytes: int | None = None) -> None:
    """``kernel(*head, t, nt, *tail)`` for the chunks ``t < nt`` of the work: on the
    calling thread alone below ``THREADED_MIN_ELEMENTS``, else spread over
    ``min(threads(), chunks)`` threads, the calling one included. The kernels release
    the GIL, and their results do not depend on ``nt`` (the work is cut into partitions
    by the shape alone), so any thread count gives the same bits. The pool is nbbn's own
    (no numba threading layer), so calls from many threads at once are safe. With
    ``scratch_bytes`` the kernel takes one more argument: its thread's ``scratch`` of
    that size, or None for 0."""
    nt = min(threads(), chunks) if size >= THREADED_MIN_ELEMENTS else 1

    def chunk(t: int) -> None:
        if scratch_bytes is None:
            kernel(*head, t, nt, *tail)
        else:
            kernel(*head, t, nt, *tail, scratch(scratch_bytes) if scratch_bytes else None)

    if nt <= 1:
        chunk(0)
    else:
        cpu_pool.run_chunks(_workers(), chunk, nt)


def _nparts(size: int, units: int) -> int:
    return int(max(1, min(MAX_PARTS, units, size // MIN_PART_ELEMENTS)))


def _grouped_nparts(x3: np.ndarray, rpg: int) -> int:
    """Partitions of a grouped channels-first kernel for ``rpg`` rows per group
    (``cpu_stats.grouped_parts``); a single group is cut into channel slices only where
    threads will share it."""
    ngroups = -(-x3.shape[0] // rpg)
    row_bytes = x3[0].nbytes if x3.size >= THREADED_MIN_ELEMENTS else 0
    return ks.grouped_parts(ngroups, x3.shape[1], row_bytes,
                            _nparts(x3.size, ngroups * x3.shape[1]))


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: kernels see one array type whether or not the caller's array is
    writable (a memory map and an in-memory array share one compiled kernel)."""
    if not a.flags.writeable:
        return a
    v = a.view()
    v.setflags(write=False)
    return v


def _half(x3: np.ndarray, bf16: bool = False):
    """float16 reaches the kernels as its uint16 bits plus the ``half=True`` marker,
    bfloat16 (``bf16``) as its uint16 bits plus the ``half=BF16`` marker."""
    if bf16:
        return x3, BF16
    if x3.dtype == np.float16:
        return x3.view(np.uint16), True
    return x3, None


_plans: dict[tuple, tuple] = {}  # _plan's decisions by shape, strides, dtype, bf16, policy
_PLANS_MAX = 256


def _plan(x3: np.ndarray, policy: int, bf16: bool) -> tuple:
    """``(kernel, flat, tail, nparts[, scratch])`` for an (O, C, L) piece: the name of
    the statistics kernel in ``cpu_stats``, whether it takes the flat array, its
    arguments after the data, the partition count, and, for a kernel that takes a
    scratch (``_run``), its bytes (0: None). A function of the piece's shape, strides
    and dtype (and ``bf16``, ``policy``), kept by them: a stream of batches of one
    shape decides once (small batches: 2-3 us per call on Zen 2)."""
    key = (x3.shape, x3.strides, x3.dtype, bf16, policy)
    plan = _plans.get(key)
    if plan is None:
        plan = _make_plan(x3, policy, bf16)
        if len(_plans) >= _PLANS_MAX:
            _plans.clear()
        _plans[key] = plan
    return plan


def _make_plan(x3: np.ndarray, policy: int, bf16: bool) -> tuple:
    nchan = x3.shape[1]
    _, half = _half(x3, bf16)
    tail: tuple
    if x3.shape[2] == 1 and not bf16 and kb.byte_rows(x3.dtype, nchan):
        rpb = kb.byte_rows_block(x3.shape[0], nchan)
        return "stats_byte_rows", False, (rpb,), _nparts(x3.size, -(-x3.shape[0] // rpb))
    if x3.shape[2] == 1 and not bf16 and ks.u8_cl_simd(x3.dtype, nchan):
        rpb = ks.u8_cl_geometry.py_func(nchan)[2]  # (plain Python: no build per process)
        nparts = _nparts(x3.size, -(-x3.shape[0] // rpb))
        return "stats_channels_last_u8", True, (nchan,), nparts
    if x3.shape[2] == 1:
        simd = ks.cl_simd(x3.dtype, nchan)
        rpb = ks.channels_last_geometry.py_func(nchan, simd, x3.shape[0])[2]
        nparts = _nparts(x3.size, -(-x3.shape[0] // rpb))
        nans = None if x3.dtype.kind in "iu" and half is None else True  # (cpu_stats)
        tail = (nchan, half, policy, ks.ratio_limit(x3.dtype), simd or None, nans)
        scratch_bytes = ks.cl_scratch_bytes(nchan) if nchan >= ks.SCRATCH_MIN_CHANNELS else 0
        return "stats_channels_last", True, tail, nparts, scratch_bytes
    if ks.grouped_rows(x3.dtype, bf16, x3.shape):  # short rows: groups of rows
        rpg = ks.rows_per_group(x3.shape[2])
        vectors = ks.row_vectors(x3.shape[2], x3.dtype, bf16) and x3.strides[2] == x3.itemsize
        return ("stats_channels_first_grouped", False, (half, policy, rpg, vectors),
                _grouped_nparts(x3, rpg))
    if ks.int_grouped_rows(x3.dtype, x3.shape):  # short integer rows: groups, exact sums
        rpg = ks.int_rows_per_group(x3.dtype, x3.shape[2])
        return "stats_channels_first_int_grouped", False, (rpg,), _grouped_nparts(x3, rpg)
    if ks.f64_grouped_rows(x3.dtype, x3.shape):  # short float64 rows: groups, two passes
        rpg = ks.rows_per_group(x3.shape[2])
        return ("stats_channels_first_f64_grouped", False, (policy, rpg),
                _grouped_nparts(x3, rpg))
    rb = ks.row_block(x3.dtype)
    nparts = _nparts(x3.size, x3.shape[0] * nchan * -(-x3.shape[2] // rb))
    return "stats_channels_first", False, (half, policy, rb), nparts


def _piece_stats(x3: np.ndarray, policy: int, bf16: bool = False) -> BatchStats:
    nchan = x3.shape[1]
    if x3.size == 0:
        return BatchStats.empty(nchan)
    if nchan == 1 and x3.shape[0] > 1 and x3.flags.c_contiguous:
        # one channel (MNIST's (N, 1, 28, 28)): its rows one after the other are one
        # long row, read in blocks instead of row by row (uint8 16 -> 36 GB/s)
        x3 = x3.reshape(1, 1, x3.size)
    if x3.shape[2] == 1 and not x3[:, :, 0].flags.c_contiguous:
        rows = x3[:, :, 0]  # a table's columns one after the other (pandas' to_numpy(),
        # nbbn's table batches) are read as channels-first (1, C, M) without a copy;
        # other strided rows came in contiguous slabs (reduce), or are a single row
        x3 = rows.T[np.newaxis] if rows.flags.f_contiguous else np.ascontiguousarray(x3)
    if x3.shape[2] == 1 and kf.takes(x3.shape[:2], x3.dtype, bf16):
        # a row (written directly), or a C-contiguous table of few rows (channel tiles)
        few = (_one_row_stats(x3.reshape(nchan)) if x3.shape[0] == 1 else
               _few_rows_stats(x3[:, :, 0], policy) if x3.flags.c_contiguous else None)
        if few is not None:
            return few
    name, flat, tail, nparts, *rest = _plan(x3, policy, bf16)
    # (by name: a test's spy on the module is seen)
    kernel = getattr(kb if name in kb.__all__ else ks, name)
    data = _half(x3, bf16)[0]
    data = _readonly(data.reshape(-1) if flat else data)
    pi = np.empty((nparts, 3, nchan), np.int64)
    pf = np.empty((nparts, 5, nchan))
    cr = np.empty((nparts, 2), np.int64)  # each partition's channels (cpu_stats._open)
    _run(kernel, (data, *tail), (pi, pf, cr), x3.size, nparts, *rest)
    if nparts == 1:  # (one partition holds every channel)
        return BatchStats(pi[0], pf[0])
    out = BatchStats.uninitialized(nchan)
    ks.fold(pi, pf, out.ints, out.floats, False, cr)
    return out


def _few_rows_stats(x2: np.ndarray, policy: int) -> BatchStats | None:
    """The statistics of a C-contiguous (n, C) table of few rows and many channels
    (``cpu_few_rows``), or None (the other kernels' turn) where NaNs or infinities in
    many of its channels made the kernel give up."""
    out = BatchStats.uninitialized(x2.shape[1])
    return None if _tiles_stats(x2, policy, False, out) else out


_NO_SOURCE = (_readonly(np.empty((3, 0), np.int64)), _readonly(np.empty((5, 0))))


def _tiles_stats(x2: np.ndarray, policy: int, into: bool, out: BatchStats,
                 source: BatchStats | None = None) -> bool:
    """``cpu_few_rows.stats_few_rows`` of the table ``x2`` into ``out``'s blocks (merged
    into them with ``into``; or into ``source``'s, written to ``out``), its tiles shared
    by the threads; whether it gave up."""
    data, half = _half(x2)
    gave_up = np.zeros(1, np.bool_)
    src = _NO_SOURCE if source is None else (_readonly(source.ints), _readonly(source.floats))
    _run(kf.stats_few_rows, (_readonly(data.reshape(-1)), half, x2.shape[1], policy,
                             ks.ratio_limit(x2.dtype), into, *src),
         (out.ints, out.floats, gave_up), x2.size, -(-x2.shape[1] // kf.TILE))
    return bool(gave_up[0])


def in_place_table(can: Canonical, policy: int) -> np.ndarray | None:
    """The (n, C) table of ``can`` if ``reduce_into`` may merge it into a state as it
    computes it: a C-contiguous table of few rows and many channels (``cpu_few_rows``)
    none of whose tiles can give up (a tile would after others merged): under
    "propagate", or "omit" with at most ``GIVE_UP`` rows (a tile gives up when its slow
    channels times its rows pass ``GIVE_UP * TILE``). Else None. The channel count
    first (the fewest the dtype's tables take, at two rows): it runs on every update of
    a stream, and small ones pay it."""
    if can.channels < kf.min_channels(can.array.dtype):
        return None
    view = can.view3()
    if (view is None or view.shape[0] < 2 or view.shape[2] != 1
            or (policy != POLICY_PROPAGATE and view.shape[0] > kf.GIVE_UP)):
        return None
    x2 = view[:, :, 0]
    return x2 if x2.flags.c_contiguous and kf.takes(x2.shape, x2.dtype, can.bf16) else None


def reduce_into(x2: np.ndarray, policy: int, state) -> BatchStats | None:
    """The statistics of the table ``x2`` (``in_place_table``) merged into ``state`` tile
    by tile: they are never written out, read back and merged, 64 bytes a channel each
    way. Into ``state`` itself, which is returned; or, where its blocks are read-only (a
    state shared with another object: ``RunningStats._shared_copy``), into a new state,
    returned, each tile of ``state`` copied there as it is merged (no copy of the whole
    state first). None, nothing changed, unless ``state`` is unweighted host statistics
    of its channels, C-contiguous and far from ``COUNT_LIMIT`` (``reduce`` and ``merge``
    then). The caller holds the state's lock (``RunningStats._merge_in_place``)."""
    if (not isinstance(state, BatchStats) or state.weight is not None
            or state.ints.shape[1] != x2.shape[1]
            or not (state.ints.flags.c_contiguous and state.floats.flags.c_contiguous)):
        return None
    # the batch counts at most n values of each kind a channel: the state's largest
    # count is enough to know no merged count passes the limit (else merge checks)
    if int(state.ints.max(initial=0)) > COUNT_LIMIT - x2.shape[0]:
        return None
    if state.writeable:
        _tiles_stats(x2, policy, True, state)  # (merging, no tile gives up)
        return state
    out = BatchStats.uninitialized(x2.shape[1])
    _tiles_stats(x2, policy, True, out, state)
    return out


def _one_row_stats(row: np.ndarray) -> BatchStats | None:
    """The statistics of a single row of channels (float16/32/64, integers of at most
    32 bits: exact in float64), each value its channel's only one: count 1, mean, min
    and max the value, M2 0, as the kernels give them, bit for bit; None (the kernels'
    turn) where a value is not finite, or their sum overflows. The channels-last kernel
    read one row through its shifted sums, retry test and merge per channel, a dozen
    arrays of C values: one float64 row of 262,144 channels took 5.8-7.3 ms, this
    1.3-1.4 (benchmarks.md, "Eighteenth session")."""
    out = BatchStats.uninitialized(row.size)
    value = out.floats[0]
    value[...] = row
    with np.errstate(over="ignore", invalid="ignore"):
        total = value.sum()  # (one pass, no array: a NaN or an infinity makes it so)
    if not np.isfinite(total):
        return None
    out.ints[0] = 1
    out.ints[1:] = 0
    out.floats[1:3] = 0.0
    out.floats[3] = value
    out.floats[4] = value
    return out


def _gapped_rows_stats(x3: np.ndarray, policy: int, bf16: bool) -> BatchStats | None:
    """Statistics of channels-last rows with gaps (``x[:, ::2]``, RGBA's ``x[..., :3]``,
    reversed rows), read in place: the rows as they lie in memory, gaps included, are
    an (O, W) C-contiguous table of W <= 2 C channels, whose statistics hold those of
    the wanted ones (every channel is reduced on its own). Its rows all but the last
    lie between the view's first and last elements, so in its memory; the last row is
    read on its own. None where the rows are not so spaced (then slabs are copied)."""
    rows = x3[:, :, 0]
    if rows.strides[0] < 0:
        rows = rows[::-1]  # (the order of the rows does not matter)
    (o, c), (row_step, col_step), size = rows.shape, rows.strides, rows.itemsize
    if col_step <= 0 or row_step % size or col_step % size:
        return None
    width, spacing = row_step // size, col_step // size
    if width < (c - 1) * spacing + 1 or width > 2 * c:  # overlapping rows, or wide gaps
        return None
    table = np.lib.stride_tricks.as_strided(rows, (o - 1, width), (row_step, size),
                                            writeable=False)
    part = _piece_stats(table[:, :, np.newaxis], policy, bf16)
    cols = np.arange(c) * spacing
    # (C order, as every other state: a fancy index of the columns gives F order, and
    # the merge compiled a variant of its own for it)
    total = BatchStats(np.ascontiguousarray(part.ints[:, cols]),
                       np.ascontiguousarray(part.floats[:, cols]))
    last = _piece_stats(np.ascontiguousarray(rows[-1:])[:, :, np.newaxis], policy, bf16)
    return merge(total, last)


# ------------------------------------------------------------------ statistics
def prepare(x, channel_axis: int | str, what: str) -> Canonical:
    """Validate a host array and describe it as (O, C, I) around ``channel_axis``."""
    return canonical(x, channel_axis, what)


def reduce(can: Canonical, policy: int) -> BatchStats:
    """Per-channel statistics of one input array (all its pieces merged)."""
    view = can.view3()
    if (view is None or not streams(view)) and (flipped := can.transposed()) is not None:
        can = flipped[0]  # (the axes in memory order: Fortran order, permuted views)
        view = can.view3()
    if view is not None and not copied_rows(view):
        return _piece_stats(view, policy, can.bf16)
    if view is not None and (whole := _gapped_rows_stats(view, policy, can.bf16)) is not None:
        return whole
    total = None
    pieces: Iterator[Any] = _row_slabs(view) if view is not None else can.pieces()
    for piece in pieces:
        x3: np.ndarray = piece if view is not None else piece[0]
        part = _piece_stats(x3, policy, can.bf16)
        del piece, x3  # (before the next slab is made: one at a time)
        total = part if total is None else merge(total, part)
    return total if total is not None else BatchStats.empty(can.channels)


def _row_slabs(x3: np.ndarray, item_bytes: int = 0) -> Iterator[np.ndarray]:
    """An (O, C, 1) view whose rows have gaps as contiguous (n, C, 1) slabs of at most
    ``SLAB_BYTES`` (counted at ``item_bytes`` per element where the caller's own
    buffer is wider than the input's items), gathered by ``copy_rows`` into one buffer
    (each slab is used before the next is gathered)."""
    rows = x3[:, :, 0]
    step = _slab_rows(x3, item_bytes)
    buf = np.empty((min(step, rows.shape[0]), rows.shape[1]), rows.dtype)
    for r0 in range(0, rows.shape[0], step):
        src = rows[r0:r0 + step]
        dst = buf[:src.shape[0]]
        _copy_rows(src, dst)
        yield dst[:, :, np.newaxis]


def _copy_rows(src: np.ndarray, dst: np.ndarray) -> None:
    """``dst[...] = src`` by ``copy_rows``, on the bits (an unsigned integer of the item
    size: one compiled copy per size, and float16, which numba lacks, copied too)."""
    bits = np.dtype(f"u{src.itemsize}")
    _run(kn.copy_rows, (src.view(bits), dst.view(bits)), (), src.size, 1 << 30)


def reduce_weighted(can: Canonical, policy: int, weight: np.ndarray) -> BatchStats:
    """Per-channel statistics of one input with a weight per row along axis 0."""
    from . import cpu_weighted

    return cpu_weighted.reduce(can, policy, weight)


def summary(part: BatchStats) -> BatchStats:
    """The batch statistics of ``reduce`` on the host: they already are."""
    return part


def merge(state, part: BatchStats) -> BatchStats:
    """``part`` merged into ``state`` (None, host statistics, or a device state, which
    is brought to the host first), in place, or into a copy of a state whose blocks are
    read-only (``RunningStats._shared_copy``); ``part`` itself when there is no state
    yet."""
    if state is None:
        return part
    host = state.to_host()
    if not host.writeable:
        host = host.copy()  # (a state shared read-only with another object: its own now)
    if host.weight is not None or part.weight is not None:
        from . import cpu_weighted

        return cpu_weighted.merge(host, part)
    # a merge is the batch folded into the state: one compiled kernel for both
    if not ks.fold(part.ints[np.newaxis], part.floats[np.newaxis], host.ints, host.floats,
                   True, ks.whole_ranges(1, part.ints.shape[1])):
        raise count_limit_error(host.ints, part.ints)
    return host


_TILES: OrderedDict = OrderedDict()  # read-only parameters -> their tiles
_TILES_KEPT = 16


def _tiles(a: np.ndarray, s: np.ndarray, b: np.ndarray):
    """``tile_params(a, s, b)``, kept for read-only parameters (a Normalizer's, which
    never change): building them took 5-6 us of a small batch's 20 us call. The entry
    holds the arrays themselves, so their ids are not reused while it is kept."""
    if a.flags.writeable or s.flags.writeable or b.flags.writeable:
        return kn.tile_params(a, s, b)
    key = (id(a), id(s), id(b))
    hit = _TILES.get(key)
    if hit is None:
        hit = _TILES[key] = (a, s, b, kn.tile_params(a, s, b))
        while len(_TILES) > _TILES_KEPT:
            _TILES.popitem(last=False)
    return hit[3]


def _out_view3(out: np.ndarray, shape3: tuple[int, int, int], bf16: bool = False
               ) -> np.ndarray | None:
    """``out`` as (O, C, I) for the kernels to write: float32/float64, float16 as its
    uint16 bits where the kernels convert in hardware (F16C), bfloat16 bits (``bf16``:
    ``out`` is their uint16 view); None: write through a temporary."""
    half = out.dtype == np.float16 and HAVE_SIMD
    if out.dtype not in (np.float32, np.float64) and not (half or bf16) or not (
            out.dtype.isnative):
        return None
    try:
        o3 = out.reshape(shape3, copy=False)
    except ValueError:
        return None
    return o3.view(np.uint16) if half else o3


_NO_COUNT = np.zeros(1, np.int64)  # the ``ninf`` of the kernels that count nothing


def _columns(a3: np.ndarray) -> bool:
    """An (N, C, 1) view whose channels are contiguous columns (C, N)."""
    return a3[:, :, 0].T.flags.c_contiguous


def _run_affine(x3: np.ndarray, a, s, b, o3: np.ndarray, bf16: bool = False,
                out_bf16: bool = False, count_inf: bool = False, fresh: bool = False,
                tiles: tuple | None = None) -> int:
    """The affine kernel over one (O, C, I) piece; with ``count_inf`` (floating input)
    the build that also counts infinite inputs, and their number is returned; ``fresh``:
    ``o3`` was just allocated (``_FRESH``), not streamed; ``tiles``: the parameters'
    tiles, made already (else ``_tiles``)."""
    data, half = _half(x3, bf16)
    data = _readonly(data)
    out_half = BF16 if out_bf16 else True if o3.dtype == np.uint16 else None
    nchan = x3.shape[1]
    count_inf = count_inf and (bf16 or x3.dtype.kind == "f")
    ninf = np.zeros(threads(), np.int64) if count_inf else _NO_COUNT
    if x3.shape[2] == 1 and not x3.flags.c_contiguous and _columns(x3) and _columns(o3):
        # a 2-d table stored column by column (Fortran order: pandas' to_numpy(), a
        # transposed array) and an output laid out the same: (1, C, N) channels-first
        # rows, as the statistics read it (one element per row would crawl)
        data, o3 = data[:, :, 0].T[np.newaxis], o3[:, :, 0].T[np.newaxis]
        x3 = data
    # a float32/float64 output larger than the last-level cache, apart from the input:
    # non-temporal stores (cpu_stream; channels-first needs contiguous output rows, long
    # enough that their unaligned ends are a small part; channels-last rows of whole
    # lines, so the tiles are too). Measured slower, so not streamed: float16/bfloat16
    # outputs (the conversions make those kernels compute-bound), see STREAM_CHANNELS_MAX.
    stream = (not fresh and o3.itemsize >= 4 and o3.nbytes >= cpu_stream.STREAM_MIN_BYTES
              and not np.may_share_memory(data, o3))
    if x3.shape[2] == 1 and x3.flags.c_contiguous and o3.flags.c_contiguous:
        ta, ts, tb = _tiles(a, s, b) if tiles is None else tiles
        nvec = kn.register_periods(data, o3, nchan, ta.size)  # uint8 in, float32 out
        stream = stream and (nvec > 0 or (nchan * o3.itemsize % cpu_stream.LINE_BYTES == 0
                                          and nchan <= kn.STREAM_CHANNELS_MAX))
        head: tuple = (data.reshape(-1), half, ta, ts, tb, nchan, o3.reshape(-1), out_half,
                       stream, nvec)
        kernel = kn.affine_channels_last_inf if count_inf else kn.affine_channels_last
    else:
        stream = stream and o3.strides[2] == o3.itemsize and x3.shape[2] >= 1024
        # the parameters read-only, as a Normalizer's frozen ones are: one build serves
        # both (writable and read-only arrays are two numba types; with both, the test
        # suite built 12 of its 47 channels-first builds twice, 3-4 s each)
        head = (data, half, _readonly(a), _readonly(s), _readonly(b), o3, out_half, stream)
        kernel = kn.affine_channels_first_inf if count_inf else kn.affine_channels_first
    _run(kernel, head, (ninf,), x3.size, 1 << 30)  # as many threads as there are
    return int(ninf.sum()) if count_inf else 0


# ------------------------------------------------------------------ affine map
# Outputs that prepare_out allocated and no kernel has written yet. Their pages are
# zero-filled by the OS as the first stores touch them, which leaves the lines in the
# cache: ordinary stores then cost no read from memory, and non-temporal ones would
# evict the zeroed lines (written back) besides writing their own. So they are not
# streamed (cpu_stream). An Intel AVX-512 host, 12 alternations, streamed -> plain:
# StandardScaler.transform of (1000000, 64) float32 53.6 -> 44.0 ms, a uint8 HWC
# normalizer into a new array 25.9 -> 20.2 ms (docs/benchmarks.md).
_FRESH: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def prepare_out(out, can: Canonical, what: str) -> np.ndarray | TensorOutput:
    """The caller's ``out`` (a numpy array or CPU tensor, validated) or a new array of the
    result dtype (a tensor for a tensor input: bfloat16 stays bfloat16)."""
    x = can.array
    if out is None:
        # laid out as the input (numpy's order="K"): a column-major table stays one, and
        # the kernels read and write both the same way
        if can.tensor is not None:
            made = empty_tensor_out(x, None if can.bf16 else result_dtype(x.dtype),
                                    type(can.tensor))
            _FRESH[id(made.array)] = made.array
            return made
        new = np.empty_like(x, result_dtype(x.dtype))
        _FRESH[id(new)] = new
        return new
    if is_tensor(out) and out.device.type == "cpu":
        check_no_grad(out, "out")  # (written in place: autograd would not see it)
        check_writable_bits(out, "out")
        arr, bf16 = host_view(out, "out")
        dt = np.dtype(np.float32) if bf16 else arr.dtype  # bfloat16: a floating out
        check_out(arr.shape, dt, True, x.shape, what)
        check_out_overlap(arr, "out")
        return TensorOutput(arr, out, bf16, given=True)
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array or a CPU tensor, got {type(out).__name__}")
    check_out(out.shape, out.dtype, out.flags.writeable, x.shape, what)
    check_out_overlap(out, "out")
    return out


def params(a: np.ndarray, s: np.ndarray, b: np.ndarray, can: Canonical, owner: Hashable):
    """The affine parameters as they are: the CPU kernels read host arrays."""
    return a, s, b


def result(out: np.ndarray | TensorOutput):
    """The output array itself (numpy in, numpy out), or its tensor (tensor in, tensor out;
    the caller's ``out=`` tensor marked as written in place for autograd)."""
    if isinstance(out, TensorOutput):
        if out.given:
            written(out.target)
        return out.target
    return out


def affine(can: Canonical, params, out: np.ndarray | TensorOutput, *,
           count_inf: bool = False, tiles: tuple | None = None) -> int:
    """``out = (x - a[c]) * s[c] + b[c]`` for every channel c; ``out`` may be the input.
    ``count_inf``: also count the infinite values of ``x`` in the same read, returned
    (0 without it). ``tiles``: the parameters' ``tile_params``, where the caller made
    them already (``batchnorm_train``)."""
    a, s, b = params
    x = can.array
    out_bf16 = False
    if isinstance(out, TensorOutput):
        out_bf16, out = out.bf16, out.array
    fresh = _FRESH.pop(id(out), None) is out
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
    target = target_all
    view = can.view3()
    if (view is None or not streams(view)) and (flipped := can.transposed()) is not None:
        # the axes in memory order (Fortran order, permuted views): the map through the
        # same permutation of both (C-ordered for an out laid out as the input). Where the
        # input has a view that does not stream but the output has one and has none in
        # the permuted order (a channels_last input into a C-ordered out=), the input is
        # read as it lies: faster than writing the output through slabs. Where the
        # output has a view in neither order (Fortran, byte-swapped, with gaps), the
        # input is read in memory order (the slabs are then the output's anyway)
        permuted, pview = target_all.transpose(flipped[1]), flipped[0].view3()
        assert pview is not None  # (transposed() returns only views that stream)
        if (view is None or _out_view3(permuted, pview.shape, out_bf16) is not None
                or _out_view3(target_all, view.shape, out_bf16) is None):
            can, target, view = flipped[0], permuted, pview
    # one pass over the whole input where the kernels can read and write it as it lies;
    # else slabs (bounded copies of the input and temporaries for the output)
    whole = None if view is None else _out_view3(target, view.shape, out_bf16)
    if view is not None and whole is not None and _streams(view, whole):
        ninf = _run_affine(view, a, s, b, whole, can.bf16, out_bf16, count_inf, fresh,
                           tiles)
    elif view is not None and whole is not None and view.shape[2] == 1:
        # channels-last rows with gaps (or a column-major table) on either side
        ninf = _affine_row_slabs(view, whole, (a, s, b), can.bf16, out_bf16, count_inf,
                                 fresh)
    else:
        ninf = _affine_slabs(can, target, (a, s, b), out_bf16, count_inf, fresh)
    if overlap:
        out[...] = target_all
    return ninf


def _affine_slabs(can: Canonical, target: np.ndarray, params, out_bf16: bool,
                  count_inf: bool, fresh: bool) -> int:
    """The affine map of an input without a usable (O, C, I) view (or into an output
    without one), in slabs along a non-channel axis, each written through a slab-sized
    temporary where the output's slab has no view the kernels can write."""
    a, s, b = params
    ninf = 0
    # (a slab's temporary is float32 or float64: budget its bytes, not only the input's)
    item_bytes = max(can.array.itemsize, 8 if target.dtype.itemsize >= 8 else 4)
    for x3, index in can.pieces(slabs=True, item_bytes=item_bytes):
        dst = target[index]
        o3 = _out_view3(dst, x3.shape, out_bf16)
        if o3 is None or not _streams(x3, o3):
            o3 = np.empty(x3.shape, np.float64 if dst.dtype.itemsize >= 8 else np.float32)
            ninf += _run_affine(x3, a, s, b, o3, can.bf16, count_inf=count_inf, fresh=True)
            with np.errstate(over="ignore"):  # (beyond float16's range: inf, as the kernels)
                dst[...] = numpy_to_bf16_bits(o3).reshape(dst.shape) if out_bf16 else \
                    o3.reshape(dst.shape)
        else:
            ninf += _run_affine(x3, a, s, b, o3, can.bf16, out_bf16, count_inf, fresh)
        del x3, o3, dst  # (before the next slab is made)
    return ninf


def _affine_row_slabs(x3: np.ndarray, o3: np.ndarray, params, bf16: bool, out_bf16: bool,
                      count_inf: bool, fresh: bool) -> int:
    """The affine map of (O, C, 1) views whose rows are not both contiguous (rows with
    gaps, or a column-major table on one side only), in slabs of rows: gathered into a
    contiguous buffer, mapped by the channels-last kernel, scattered into the output
    (straight into it where its rows are contiguous)."""
    a, s, b = params
    rows_out = o3[:, :, 0]
    direct = rows_out.flags.c_contiguous
    item_bytes = 0 if direct else o3.itemsize  # (the output's buffer, where there is one)
    step = _slab_rows(x3, item_bytes)
    slabs = _row_slabs(x3, item_bytes) if not x3[:, :, 0].flags.c_contiguous else (
        x3[r0:r0 + step] for r0 in range(0, x3.shape[0], step))
    buf = rows_out if direct else np.empty((min(step, x3.shape[0]), x3.shape[1]), o3.dtype)
    ninf, r0 = 0, 0
    for xs in slabs:
        n = xs.shape[0]
        dst = rows_out[r0:r0 + n] if direct else buf[:n]
        ninf += _run_affine(xs, a, s, b, dst[:, :, np.newaxis], bf16, out_bf16, count_inf,
                            fresh or not direct)
        if not direct:
            _copy_rows(dst, rows_out[r0:r0 + n])
        r0 += n
    return ninf


def _slab_rows(x3: np.ndarray, item_bytes: int = 0) -> int:
    """Rows of an (O, C, 1) view per slab: ``SLAB_BYTES`` at the larger of its item
    size and ``item_bytes``."""
    return max(1, _layout.SLAB_BYTES // max(1, x3.shape[1] * max(x3.itemsize, item_bytes)))


def _streams(x3: np.ndarray, o3: np.ndarray) -> bool:
    """Whether the affine kernels read ``x3`` and write ``o3`` as they lie at their
    speed: channels-first rows (I > 1), contiguous channels-last rows on both sides, or
    contiguous columns on both sides (a column-major table); not one element per row."""
    if x3.shape[2] != 1 or x3.shape[0] < 2 or (x3.flags.c_contiguous and o3.flags.c_contiguous):
        return True
    both_rows = x3[:, :, 0].flags.c_contiguous and o3[:, :, 0].flags.c_contiguous
    return both_rows or (_columns(x3) and _columns(o3))


# ------------------------------------------------------------------ BatchNorm
def running(buffer, can: Canonical) -> np.ndarray:
    """BatchNorm's (2, C) running buffer on the host."""
    return to_host(buffer)


def batchnorm_train(can: Canonical, eps: float, weight: np.ndarray, bias: np.ndarray,
                    running: np.ndarray | None, factor: float,
                    out: np.ndarray | TensorOutput) -> None:
    """Batch statistics (biased variance to normalize with), the running update with
    the unbiased variance (``running`` (2, C) in place, or None), then the affine map:
    two reads of x and one write."""
    st = reduce(can, POLICY_PROPAGATE)
    _affine_by(kn.batchnorm_params(st.mean, st.m2, can.outer * can.inner, weight, bias, eps,
                                   kn.NO_RUNNING if running is None else running, factor,
                                   kn.tile_rows(can.channels)), can, out)


def batchnorm_eval(can: Canonical, eps: float, weight: np.ndarray, bias: np.ndarray,
                   running: np.ndarray, out: np.ndarray | TensorOutput,
                   owner: Hashable) -> None:
    """Eval mode with running statistics: the compiled step with the running variance
    as ``m2`` of one value (``m2 / 1`` is exact: ``affine_scale``'s bits) and no update,
    then the affine map."""
    _affine_by(kn.batchnorm_params(running[0], running[1], 1, weight, bias, eps,
                                   kn.NO_RUNNING, 0.0, kn.tile_rows(can.channels)), can, out)


def _affine_by(t: np.ndarray, can: Canonical, out: np.ndarray | TensorOutput) -> None:
    """The affine map by ``batchnorm_params``' (3, rows, C) tiles."""
    tiles = (t[0].reshape(-1), t[1].reshape(-1), t[2].reshape(-1))
    affine(can, (t[0, 0], t[1, 0], t[2, 0]), out, tiles=tiles)
