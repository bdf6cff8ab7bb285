"""Statistics of channels-last uint8 and int8 tables of many channels, read row by row.

The byte-position kernel (``cpu_stats._stats_channels_last_u8``) needs every vector it
reads to hold the same channels at the same positions, so for C channels it reads a
block once per vector of a period of ``C / gcd(C, W)`` vectors (W the vector's bytes):
125 passes over a 256 KB block for C = 1000 on AVX2 (4.5-5.3 GB/s on two cores), and
C = 4096 ran at 1.5-1.7 GB/s, slower than numpy's ``sum``. This kernel reads the rows in
order instead, four at a time, into per-channel accumulators that stay in L1 (8-11 GB/s
from C = 200 to 8192; docs/benchmarks.md, "Twelfth session"):

- 16-bit sums and 32-bit sums of squares over ``SUB_ROWS`` rows (exact: ``256 * 255 <
  2**16`` and ``256 * 255**2 < 2**32``), then added into int64 sums;
- minima and maxima in bytes.

The loops over the channels are plain loops that LLVM vectorizes at the target's width
(AVX2, AVX-512 or any other), one output array per loop: a loop that updated all four
arrays stayed scalar (the checks that they do not overlap are more than LLVM's
vectorizer takes). One source serves uint8 and int8: its casts keep the values (zeros
or the sign widen a byte), the minima and maxima are of the input's own type, and an
int8 sub-block's 16-bit sum is read back as signed. (int8 read as the uint8 ``v + 128``,
as the byte-position kernel reads it, cost an XOR per row in each loop: 10-16% slower
than uint8; now 8-10%, docs/benchmarks.md, "Thirteenth session".)

Every sum is an exact integer, as in the other integer kernels, so a block's mean and
M2 come from the exact numerator ``n * Q - S**2``, rounded once, and the results do not
depend on the kernel that read the bytes.
"""

from __future__ import annotations

import numba
import numpy as np

from ._jit import tagged
from .cpu_numerics import int_mean
from .cpu_simd import SIMD_LEVEL, byte_offset
from .cpu_stats import _OPTS, _add_block, _open, _partitions, u8_cl_simd

__all__ = ["BLOCK_BYTES", "MIN_BLOCK_ROWS", "MIN_CHANNELS", "PERIOD_CHANNELS", "SUB_ROWS",
           "byte_rows", "byte_rows_block", "stats_byte_rows"]

SUB_ROWS = 256  # rows summed in 16-bit (sums) and 32-bit (squares) lanes before int64
SUB_BYTES = 262144  # ... fewer where that many rows are more bytes than this (L2)
TILE = 4096  # the channels a pass over a sub-block's rows updates (1024: no faster)
BLOCK_BYTES = 1 << 22  # a block (a unit of the threads' partitions, one float merge per
# channel) holds whole sub-blocks of about this many bytes ...
MIN_BLOCK_ROWS = 2048  # ... and at least this many rows
assert SUB_ROWS * 255 < 1 << 16 and SUB_ROWS * 255**2 < 1 << 32


MIN_CHANNELS = 48  # fewer: the loops' setup per group of rows costs more than it saves
PERIOD_CHANNELS = 192  # below this many channels, the byte-position kernel where it runs


def byte_rows(dtype: np.dtype, nchan: int) -> bool:
    """Whether a channels-last table of ``dtype`` and ``nchan`` channels takes this
    kernel: uint8 and int8 from ``PERIOD_CHANNELS`` channels on, and from
    ``MIN_CHANNELS`` on where the byte-position kernel does not take them (a period of
    more than ``U8CL_MAX_PERIOD`` vectors, or no SIMD build), which read them as floats
    in tiles (about 5 GB/s on the AVX2 host, against 6-10)."""
    if dtype not in (np.uint8, np.int8) or nchan < MIN_CHANNELS:
        return False
    return nchan >= PERIOD_CHANNELS or not u8_cl_simd(dtype, nchan)


def byte_rows_block(nrows: int, nchan: int) -> int:
    """Rows per block of an (nrows, nchan) table: whole sub-blocks of about
    ``BLOCK_BYTES`` and at least ``MIN_BLOCK_ROWS`` rows (the fold merges C channels per
    partition, about 11 ns each: at C = 4096, blocks of 256 rows, 64 partitions of a
    64 MB table, it took a third of the time), or a quarter of the table where that is
    less, never under ``4 * SUB_ROWS`` rows (a mid-size table keeps 4 blocks for the
    threads). Computed once per plan and passed to the kernel (plain Python: a numba
    build of it, uncached, cost every process 0.55 s at its first such table)."""
    rpb = SUB_ROWS * max(MIN_BLOCK_ROWS // SUB_ROWS, BLOCK_BYTES // (SUB_ROWS * nchan))
    quarter = SUB_ROWS * max(4, -(-nrows // (4 * SUB_ROWS)))
    return min(rpb, quarter)


@numba.njit(inline="always")
def _four_rows(x0, x1, x2, x3, s16, q32, lo, hi):  # pragma: no cover - compiled
    """Four rows of a tile's channels (``x0`` to ``x3``, 1-d views of uint8 or int8)
    into the tile's sums, squares, minima and maxima: one loop per output array (each
    vectorizes; together they did not), the four rows added in registers. The casts keep
    the values (uint8 widened with zeros, int8 with its sign), so one code serves both
    types; the sums and squares are kept modulo 2**16 and 2**32, where they fit. (Views,
    and loops from 0: indices from a variable start are signed for numba, which then
    tests each for a negative value, and LLVM vectorized nothing.)"""
    for c in range(s16.shape[0]):
        s16[c] = numba.uint16(s16[c] + ((numba.int16(x0[c]) + numba.int16(x1[c]))
                                        + (numba.int16(x2[c]) + numba.int16(x3[c]))))
    for c in range(q32.shape[0]):
        w0 = numba.uint32(numba.int32(x0[c]))
        w1 = numba.uint32(numba.int32(x1[c]))
        w2 = numba.uint32(numba.int32(x2[c]))
        w3 = numba.uint32(numba.int32(x3[c]))
        q32[c] = numba.uint32(q32[c] + ((w0 * w0 + w1 * w1) + (w2 * w2 + w3 * w3)))
    for c in range(lo.shape[0]):
        lo[c] = min(lo[c], min(min(x0[c], x1[c]), min(x2[c], x3[c])))
    for c in range(hi.shape[0]):
        hi[c] = max(hi[c], max(max(x0[c], x1[c]), max(x2[c], x3[c])))


@numba.njit(inline="always")
def _one_row(x0, s16, q32, lo, hi):  # pragma: no cover - compiled
    """One row of a tile's channels into its sums, squares, minima and maxima."""
    for c in range(s16.shape[0]):
        v = x0[c]
        w = numba.uint32(numba.int32(v))
        s16[c] = numba.uint16(s16[c] + numba.int16(v))
        q32[c] = numba.uint32(q32[c] + w * w)
        lo[c] = min(lo[c], v)
        hi[c] = max(hi[c], v)


def _stats_byte_rows(x3, rpb, t, nt, pi, pf, cr):  # pragma: no cover - compiled
    """Channels-last uint8 or int8 ``x3`` (O, C, 1), C-contiguous: per block of ``rpb``
    rows (:func:`byte_rows_block`), the exact integer sums, sums of squares, minima and
    maxima of each channel (rows four at a time, in sub-blocks of ``SUB_ROWS``), merged
    into the partitions of ``pi``/``pf`` that chunk ``t`` of ``nt`` owns."""
    nrows, nchan = x3.shape[0], x3.shape[1]
    x = x3.reshape((nrows, nchan))
    signed = byte_offset(x3) != 0  # int8 (a constant of the build)
    sub = min(SUB_ROWS, max(4, SUB_BYTES // nchan))
    nblocks = (nrows + rpb - 1) // rpb
    nparts = pi.shape[0]
    p0, p1, pn, pmean, plo, pm2, pmn, pmx, pnan, pinf = _partitions(pi, pf, t, nt)
    s16 = np.empty(nchan, np.uint16)
    q32 = np.empty(nchan, np.uint32)
    lo = np.empty(nchan, x3.dtype)
    hi = np.empty(nchan, x3.dtype)
    s = np.empty(nchan, np.int64)
    q = np.empty(nchan, np.int64)
    for p in range(p0, p1):
        _open(pi, pf, cr, p, 0, nchan)
        for b in range((nblocks * p) // nparts, (nblocks * (p + 1)) // nparts):
            r0 = b * rpb
            r1 = min(nrows, r0 + rpb)
            s[:] = 0
            q[:] = 0
            lo[:] = x[r0]
            hi[:] = x[r0]
            for g0 in range(r0, r1, sub):
                g1 = min(r1, g0 + sub)
                s16[:] = 0
                q32[:] = 0
                for c0 in range(0, nchan, TILE):
                    c1 = min(nchan, c0 + TILE)
                    ts, tq, tlo, thi = s16[c0:c1], q32[c0:c1], lo[c0:c1], hi[c0:c1]
                    r = g0
                    while r + 4 <= g1:
                        _four_rows(x[r, c0:c1], x[r + 1, c0:c1], x[r + 2, c0:c1],
                                   x[r + 3, c0:c1], ts, tq, tlo, thi)
                        r += 4
                    while r < g1:
                        _one_row(x[r, c0:c1], ts, tq, tlo, thi)
                        r += 1
                for c in range(nchan):  # (an int8 sum is in [-32768, 32512])
                    s[c] += numba.int64(numba.int16(s16[c])) if signed else numba.int64(s16[c])
                    q[c] += numba.int64(q32[c])
            n = numba.int64(r1 - r0)
            for c in range(nchan):  # exact integer numerator, rounded once (as block_fast)
                bm, bl = int_mean(s[c], n)
                bq = numba.float64(n * q[c] - s[c] * s[c]) / n
                _add_block(pi, pf, p, c, n, bm, bl, bq, numba.float64(lo[c]),
                           numba.float64(hi[c]), 0, 0)


stats_byte_rows = tagged(_stats_byte_rows, SIMD_LEVEL, **_OPTS)
