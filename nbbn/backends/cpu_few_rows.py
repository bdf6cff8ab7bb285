"""Statistics of a channels-last table of few rows and many channels, channel tile by
channel tile.

The channels-last kernel (``cpu_stats``) reads a table in blocks of rows and finishes
every channel at the end of each block: a shift, a retry test and a merge per channel,
a dozen sweeps over arrays of C values. A table of 2 to ``FEW_ROWS_MAX`` rows is a
single block, so that finish is most of its time (20-35 ns per channel, one thread),
and a stream of wide batches of few rows paid it at every call. Here the table is cut
into tiles of ``TILE`` channels, shared by the threads, and each tile is read twice
while its rows are in the cache:

1. the sums of ``x - x[0]``, whose mean is the shift of
2. the shifted sums ``a = sum(x - k)``, ``q = sum((x - k)**2)``, min and max,

and finished in runs of ``RUN`` channels by a loop of selects (the steps of
``cpu_stats._finish_shifted``): mean ``k + a / n`` as a double-double, ``M2 = q - a *
a / n``, a constant channel's exact mean and M2 of 0. A channel whose sums are not
finite (a NaN or an infinity) or still cancel (``M2 * limit < q``) is marked in the
run's bits and computed by ``cpu_stats._block_slow`` (the NaN policy, exactly), which
reads its few values. A tile's sums are kept in five arrays of ``TILE`` values, and
its statistics then written into the batch's.

Each channel's arithmetic is the same in a vector lane and in a loop's scalar tail
(``fastmath`` off: no reassociation, no contraction), and its rows are summed in order,
so the results do not depend on the tiles' split between threads. Under "omit", a
tile whose slow channels would cost more than the other kernels (NaNs in more than a
third of the channels of 64 rows) makes the call give up (``gave_up``), and the caller
uses them.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .._policy import POLICY_OMIT
from ._jit import cached
from .cpu_numerics import dd_quot, fmax_fast, fmin_fast, to_float64
from .cpu_stats import MERGE_CHANNELS, _block_slow, _merge_channels, on_grid

FEW_ROWS_MAX = 64  # tables of 2 to this many rows ...
FEW_ROWS_CHANNELS = 1024  # ... of at least this many channels take this kernel (a
# single row, written directly by cpu._one_row_stats, from ROW_CHANNELS on); floats and
# 16/32-bit integers from NARROW_CHANNELS channels on, 8-bit integers of at most
# BYTE_ROWS rows from BYTE_CHANNELS on; tables of more than TALL_ROWS rows of float16 or
# 8-bit integers only from WIDE_CHANNELS on.
# Against the channels-last kernel, 2-64 rows of 64-1000 channels: a new state's update
# 0.96-1.72x as fast and a stream's 0.99-1.72x; 8-bit integers, whose channels-last
# kernel reads bytes, lost at C <= 64 (0.82-0.97x) and won at 2-16 rows of 256-1000
# channels (1.02-1.55x, AVX2 and AVX-512 code). A single row written directly against
# the kernel: Zen 2 0.80-0.84x at 64-128 channels, 0.97-0.98x at 512, 1.09-1.10x at
# 1000; Zen 4 1.01-1.14x at 256, 1.10-1.28x at 512, 1.15-1.39x at 700. At 64 rows of
# 512-16384 channels float16 and 8-bit integers lost (0.67-0.93x; at 40-48 rows the
# two SIMD levels disagreed, and float32 went either way), and from 32768 channels on the
# tiles win again (1.1-2.4x; benchmarks.md, "Twenty-third session" to "Twenty-fifth
# session")
NARROW_CHANNELS = 64
ROW_CHANNELS = 768
BYTE_CHANNELS = 256
BYTE_ROWS = 16
TALL_ROWS = 48
WIDE_CHANNELS = 32768
TILE = 256  # channels per tile: 64 rows of float64 are 128 KB, in L2 for the second pass
RUN = 64  # channels finished per run (the bits of a uint64 mark its slow ones)
GIVE_UP = 24  # "omit": a tile gives up when its slow channels times its rows pass this
# many tiles (each slow channel's exact passes, about 5 ns a value, against the
# channels-last kernel's omitting pass: even at NaNs in 36% of the channels of 64 rows,
# in 68% of 32 rows; benchmarks.md). Under "propagate" a slow channel takes one pass
# (its NaN or infinity decides it), and the tiles won at every share


def takes(shape: tuple[int, ...], dtype: np.dtype, bf16: bool) -> bool:
    """Whether an (n, C) table of ``dtype`` is one of few rows of many channels: 1 to
    ``FEW_ROWS_MAX`` rows of at least ``min_channels(dtype, n)`` channels, floats (not
    bfloat16) and integers of at most 32 bits (exact in float64). A single row is
    written directly (``cpu._one_row_stats``), C-contiguous tables of more take this
    kernel."""
    n, nchan = shape
    return (1 <= n <= FEW_ROWS_MAX and nchan >= min_channels(dtype, n) and not bf16
            and (dtype.kind == "f" or (dtype.kind in "iu" and dtype.itemsize <= 4)))


def min_channels(dtype: np.dtype, nrows: int = 2) -> int:
    """The fewest channels of a table of ``nrows`` rows of ``dtype`` that ``takes``
    takes: ``WIDE_CHANNELS`` for tables of more than ``TALL_ROWS`` rows of float16 or
    8-bit integers, ``NARROW_CHANNELS`` for other tables of floats and of 16/32-bit
    integers, ``BYTE_CHANNELS`` for tables of at most ``BYTE_ROWS`` rows of 8-bit
    integers, ``ROW_CHANNELS`` for a single row, else (17-48 rows of 8-bit integers)
    ``FEW_ROWS_CHANNELS``. Two rows give each dtype's fewest."""
    if nrows < 2:
        return ROW_CHANNELS
    if nrows > TALL_ROWS and (dtype.itemsize == 1 or dtype.kind == "f" and dtype.itemsize == 2):
        return WIDE_CHANNELS
    if dtype.kind == "f" or dtype.itemsize in (2, 4):
        return NARROW_CHANNELS
    return BYTE_CHANNELS if nrows <= BYTE_ROWS else FEW_ROWS_CHANNELS


@numba.njit(inline="always")
def _rows4(xf, i, nchan, c0, w):
    """Rows ``i`` to ``i + 3`` of the tile of channels ``c0 <= c < c0 + w``."""
    e = i * nchan + c0
    return (xf[e:e + w], xf[e + nchan:e + nchan + w], xf[e + 2 * nchan:e + 2 * nchan + w],
            xf[e + 3 * nchan:e + 3 * nchan + w])


@numba.njit(inline="always")
def _add(sums, v, k):
    """One value ``v`` added to a channel's ``(a, q, lo, hi)``: its shifted sums (shift
    ``k``), min and max (selects: a compare and branch became masked stores,
    ``vmaskmovpd``, and the min and max alone ran at 1.16 ns a value on Zen 2, the
    whole pass with selects at 0.68)."""
    a, q, lo, hi = sums
    d = v - k
    return a + d, q + d * d, fmin_fast(lo, v), fmax_fast(hi, v)


@numba.njit(inline="always")
def _fill(row, cu, w, value):
    for j in range(w):
        row[cu + np.uint64(j)] = value


@numba.njit(inline="always")
def _copy(row, cu, tile, w):
    for j in range(w):
        row[cu + np.uint64(j)] = tile[j]


@cached(nogil=True, fastmath=False, error_model="numpy")
def stats_few_rows(xf, half, nchan, policy, limit, into, src_ints, src_floats, t, nt, ints,
                   floats, gave_up):
    """The statistics of the (n, ``nchan``) table ``xf`` (flat) into ``ints`` (3, C) and
    ``floats`` (5, C) (``BatchStats``' layout), tiles ``ntiles * t // nt`` to ``ntiles
    * (t + 1) // nt``; ``gave_up[0]`` set (and the results unfinished) where a tile's
    slow channels would cost more than the other kernels. With ``into``, merged into
    the statistics ``ints`` and ``floats`` hold instead, tile by tile (a stream's
    state: ``cpu.reduce_into``), and no tile gives up; or, where ``src_ints`` and
    ``src_floats`` have C channels (not 0), into the statistics they hold, each tile's
    copied into ``ints`` and ``floats`` first (a new state, the old one unchanged: one
    pass over both, not a copy of the state and then a merge into it).
    ``error_model="numpy"`` and unsigned channel indices: LLVM vectorizes the loops over
    channels (numba's division checks and wraparound of negative indices kept them
    scalar)."""
    n = xf.size // nchan
    fn = numba.float64(n)
    ntiles = -(-nchan // TILE)
    k = np.empty(TILE)  # a tile's shifts, sums of x - k and of (x - k)**2, min and max
    a = np.empty(TILE)  # (arrays of their own: LLVM did not vectorize the passes over
    q = np.empty(TILE)  # rows of the batch's arrays, views of one another)
    mn = np.empty(TILE)
    mx = np.empty(TILE)
    masks = np.zeros(TILE // RUN, np.uint64)
    ti = np.empty((1, 3, TILE), np.int64)  # with ``into``: the tile's statistics, as
    tf = np.empty((1, 5, TILE))  # ``cpu_stats.fold`` merges a partition's
    for tile in range(ntiles * t // nt, ntiles * (t + 1) // nt):
        if gave_up[0]:
            return
        c0 = tile * TILE
        w = min(nchan, c0 + TILE) - c0
        r0 = xf[c0:c0 + w]
        for j in range(w):  # pass 1: the sums of x - x[0]
            k[j] = to_float64(r0[j], half)
            a[j] = 0.0
        e = n // 4 * 4  # (row 0 too: it adds 0, and n = 4 is one group of rows)
        for i in range(0, e, 4):  # (four rows at once: a channel's sums stay in registers)
            r1, r2, r3, r4 = _rows4(xf, i, nchan, c0, w)
            for j in range(w):
                kk = k[j]
                a[j] = (((a[j] + (to_float64(r1[j], half) - kk))
                         + (to_float64(r2[j], half) - kk))
                        + (to_float64(r3[j], half) - kk)) + (to_float64(r4[j], half) - kk)
        for i in range(e, n):
            r = xf[i * nchan + c0:i * nchan + c0 + w]
            for j in range(w):
                a[j] += to_float64(r[j], half) - k[j]
        for j in range(w):  # pass 2: shifted by their mean, on the values' grid (an
            # integer for integers, float32 for float32 and float16: every deviation
            # and the sums of integers then exact, so dd_quot's mean is correctly
            # rounded; the unrounded centre left int32 means up to 989 ulp off)
            k[j] = on_grid(k[j] + a[j] / fn, xf, half)
            a[j] = 0.0
            q[j] = 0.0
            mn[j] = np.inf
            mx[j] = -np.inf
        for i in range(0, e, 4):
            r1, r2, r3, r4 = _rows4(xf, i, nchan, c0, w)
            for j in range(w):
                kk = k[j]
                sums = _add((a[j], q[j], mn[j], mx[j]), to_float64(r1[j], half), kk)
                sums = _add(sums, to_float64(r2[j], half), kk)
                sums = _add(sums, to_float64(r3[j], half), kk)
                a[j], q[j], mn[j], mx[j] = _add(sums, to_float64(r4[j], half), kk)
        for i in range(e, n):
            r = xf[i * nchan + c0:i * nchan + c0 + w]
            for j in range(w):
                a[j], q[j], mn[j], mx[j] = _add((a[j], q[j], mn[j], mx[j]),
                                                to_float64(r[j], half), k[j])
        nslow = 0
        for m in range(masks.size):  # the finish, in runs of RUN channels, in place
            slow = np.uint64(0)
            for j in range(max(0, min(RUN, w - m * RUN))):
                u = np.uint64(m * RUN) + np.uint64(j)
                kk = k[u]
                aa = a[u]
                qq = q[u]
                flat = mn[u] == mx[u]
                hi, lo = dd_quot(kk, aa, fn)  # (the mean as a double-double)
                m2 = qq - aa * aa / fn
                fine = math.isfinite(aa) & math.isfinite(qq)
                sl = (fine == False) | ((flat == False) & (m2 * limit < qq))  # noqa: E712
                slow |= np.uint64(sl) << np.uint64(j)
                nslow += sl
                k[u] = mn[u] if flat else hi
                a[u] = 0.0 if flat | (math.isfinite(lo) == False) else lo  # noqa: E712
                q[u] = 0.0 if flat else m2
            masks[m] = slow
        # the tile's statistics into the batch's (or the tile's, ``into``), a loop per
        # field (numba's slice assignment copied through a temporary: 7.2 -> 5.1 ns a
        # channel at (2, 4096))
        di = ti[0] if into else ints
        df = tf[0] if into else floats
        base = 0 if into else c0  # (their channel c0 + j at base + j)
        bu = np.uint64(base)
        _fill(di[0], bu, w, n)
        _fill(di[1], bu, w, 0)
        _fill(di[2], bu, w, 0)
        _copy(df[0], bu, k, w)
        _copy(df[1], bu, a, w)
        _copy(df[2], bu, q, w)
        _copy(df[3], bu, mn, w)
        _copy(df[4], bu, mx, w)
        if nslow and not into and policy == POLICY_OMIT and nslow * n > GIVE_UP * TILE:
            gave_up[0] = True
            return
        if nslow:
            for m in range(masks.size):
                for j in range(RUN):
                    if masks[m] >> np.uint64(j) & np.uint64(1):
                        b = base + m * RUN + j
                        (di[0, b], df[0, b], df[1, b], df[2, b], df[3, b], df[4, b],
                         di[1, b], di[2, b]) = _block_slow(xf, c0 + m * RUN + j, n, nchan,
                                                           half, policy)
        if into:  # (runs of MERGE_CHANNELS: the bits of _merge_channels' slow mask)
            if src_ints.shape[1]:  # (the old state's tile, merged into below)
                for r in range(3):
                    _copy(ints[r], np.uint64(c0), src_ints[r, c0:c0 + w], w)
                for r in range(5):
                    _copy(floats[r], np.uint64(c0), src_floats[r, c0:c0 + w], w)
            for m0 in range(0, w, MERGE_CHANNELS):
                _merge_channels(ints, floats, ti, tf, 0, c0 + m0,
                                c0 + min(w, m0 + MERGE_CHANNELS), c0)


__all__ = ["BYTE_CHANNELS", "BYTE_ROWS", "FEW_ROWS_CHANNELS", "FEW_ROWS_MAX",
           "NARROW_CHANNELS", "ROW_CHANNELS", "TALL_ROWS", "WIDE_CHANNELS", "min_channels",
           "stats_few_rows", "takes"]
