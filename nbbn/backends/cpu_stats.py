"""CPU kernels for per-channel batch statistics (count, mean, M2, min, max).

Two layouts, both reducing to per-channel results of shape (C,):

* ``stats_channels_first(x, ...)`` for ``x`` of shape (O, C, L) with any strides:
  each row ``x[o, c]`` is cut into blocks of ``ROW_BLOCK`` elements;
  ``stats_channels_first_grouped`` for float32/float16/bfloat16 rows shorter than
  ``FLOAT_SHORT_ROW`` (CNN feature maps up to 90x90): a block is a group of rows of one
  channel, read in memory order with one shift per channel; rows of 2 to 7 whole
  vectors go through ``cpu_simd.row_shifted_sums``; ``stats_channels_first_int_grouped``
  the same for 8/16-bit integers, with exact integer sums per group, and
  ``stats_channels_first_f64_grouped`` for float64 rows under ``F64_SHORT_ROW``.
* ``stats_channels_last(xf, C, ...)`` for a C-contiguous (M, C) array passed flat:
  rows are grouped ``k`` at a time into tiles of ``k * C`` elements, so the inner
  loop is long and unit-stride even for C = 3.

Numerics: each cache-sized block is reduced on its own (see ``block_fast`` and the
channels-last kernel: exact integer sums for 8/16-bit integers, a shifted single pass
for float32 and channels-last data, two passes otherwise), and the blocks are combined
with Chan's merge into one accumulator per partition; partitions are merged in a
fixed order at the end, each over the channels it holds (all of them, or for few rows
of many channels a slice: ``_open``). The partition count depends only on the shape, never on the
thread count, so results are bit-for-bit reproducible.

Shifted sums: with a shift K close to the block mean, ``M2 = sum(d*d) - sum(d)**2 / n``
for ``d = x - K`` loses ``log10(sum(d*d) / M2)`` digits of float64. K is the channel's
running mean (or the block's first value); a block whose ratio ``sum(d*d) / M2``
exceeds the dtype's limit is recomputed with its own mean as the shift, so the loss is
bounded: at most ~6 digits for float32/float16 input (1e6), ~1.2 for the rest (16).

The fast paths assume finite data; a block whose sums are not finite (NaN or inf
inside) is redone by ``_block_slow``, which applies the NaN policy exactly.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .. import _merge
from .._policy import POLICY_OMIT
from ._jit import cached, tagged
from ._stats import COUNT_LIMIT
from .cpu_numerics import (
    as_float32,
    chan_merge,
    corrected_m2,
    dd_mean,
    dd_quot,
    fmax_fast,
    fmin_fast,
    inf_mean,
    int_mean,
    is_bf16,
    is_finite_bits,
    is_nan_bits,
    merge_max,
    merge_min,
    store_stats,
    to_float64,
    two_prod,
    two_sum,
)
from .cpu_simd import (
    CL_LANES,
    F32_HEAD,
    F32_STEP,
    HAVE_SIMD,
    MAX_BYTES,
    ROW_LANES,
    ROW_MAX_VECTORS,
    SIMD_LEVEL,
    U8CL_LANES,
    U8CL_MAX_ITERATIONS,
    U8CL_VEC,
    UNROLL,
    VEC,
    byte_offset,
    cl_rows_f32,
    f32_shifted_sums,
    row_shifted_sums,
    u8_cl_pass_best,
    u8_sums,
)

ROW_BLOCK = 8192  # channels-first: elements of one row reduced as one block
SUB_BLOCK = 256  # ... and of the sub-blocks of a block that holds a NaN or an infinity
SUB_TRIES = 8  # sub-blocks tried before a block whose sub-blocks nearly all fail ...
SUB_FAILING = 7 / 8  # ... (this share) is finished exactly (NaNs too dense to skip)
TILE_MIN = 2048  # channels-last: a tile holds at least this many elements (see design.md)
CL_BLOCK = 262144  # channels-last: elements per block (a multiple of the tile)
CL_BLOCK_ROWS = 2048  # ... and rows per block at least, with the SIMD kernel (see below)
CL_MIN_BLOCKS = 4  # ... unless that leaves fewer blocks than this (see channels_last_geometry)
CL_SHARE_ROWS = 1024  # ... down to this many rows
CL_SUB_ROWS = 64  # ... and rows per sub-block of a block that holds a NaN or an infinity
GROUP = 8  # channels-last: tiles (row groups) accumulated in registers before memory
MERGE_CHANNELS = 64  # ... in runs of this many channels (the bits of a uint64)
FOLD_CHANNELS = 128  # the partitions' statistics are folded this many channels at once

# channels-first rows shorter than a block are reduced in groups of rows (float32
# family): one block per row cost a block's setup and a merge per row, and (256, 2048,
# 7, 7) float32 ran at 4.4 GB/s against 25 for 56x56 rows; 56x56 rows themselves ran at
# 70-72% of the read bandwidth with a block per row, 85-86% in groups (an Intel AVX-512
# host, docs/benchmarks.md)
FLOAT_SHORT_ROW = ROW_BLOCK
# ... and integer rows of at most this many values (``int_grouped_rows``)
SHORT_ROW = 1024
# ... when the piece holds at least this many elements: a small batch's rows cost little
# either way, and its first call then compiles the kernel that long rows use as well
# (the grouped kernel added 0.4-0.8 s to a cold (8, 16, 4, 4) update)
GROUPED_MIN_ELEMENTS = 1 << 16
# ... and a piece of one group (fewer rows per channel than a group holds) is cut into
# channel slices for the threads, each reading runs of at least this many bytes per row
GROUPED_SLICE_BYTES = 65536

ROW_BLOCK_U8 = 65536  # ... for uint8 with SIMD (cpu_simd): the block costs less per byte
assert ROW_BLOCK_U8 <= MAX_BYTES

RATIO_LIMIT_LOW = 1e6  # shifted-sum cancellation allowed for float32/float16 input
RATIO_LIMIT_HIGH = 16.0  # ... and for float64 and integer input (tolerance 1e-12)

# reassoc lets LLVM vectorize the sums, nsz the min/max; no nnan/ninf, and the
# finiteness tests are integer tests on the bits (see cpu_numerics.is_finite_bits).
_FASTMATH = {"reassoc", "contract", "nsz"}


def ratio_limit(dtype: np.dtype) -> float:
    """The shifted-sum cancellation limit for an input dtype (see the module doc)."""
    return RATIO_LIMIT_LOW if dtype in (np.float16, np.float32) else RATIO_LIMIT_HIGH


@numba.njit(inline="always")
def _sub_blocks_fail(tried, failed):
    """Whether the sub-blocks of a block so far failed often enough (a NaN or an
    infinity in nearly every one) that the rest is redone exactly without them: a fast
    pass over a sub-block that then fails is wasted time."""
    return tried >= SUB_TRIES and failed >= SUB_FAILING * tried


@cached(nogil=True)
def _block_slow(r, start, n, step, half, policy):
    """Exact statistics of ``r[start + i * step]`` for i < n, with NaN/inf handling.

    _ONE_BUILD: callers pass ``start`` and ``step`` as int64 (``np.int64(0)``, not
    ``0``): a constant argument is typed ``Literal[int]``, another build of this
    function for each dtype (29 builds in the test suite, 12 of them for the literals
    0 and 1; a build for the retry of a block, where ``step=1`` gains nothing)."""
    cnt = 0
    s = numba.float64(0)
    nnan = 0
    ninf = 0
    mn = numba.float64(np.inf)
    mx = numba.float64(-np.inf)
    for i in range(n):
        v = to_float64(r[start + i * step], half)
        if math.isnan(v):
            nnan += 1
            if policy == POLICY_OMIT:
                continue
        elif math.isinf(v):
            ninf += 1
        cnt += 1
        s += v
        mn = merge_min(mn, v)
        mx = merge_max(mx, v)
    zero = numba.float64(0)
    if cnt == 0:
        return 0, zero, zero, zero, mn, mx, nnan, ninf
    mean = s / cnt
    if mn == mx and ninf == 0:  # constant finite values: exact mean, M2 exactly 0
        return cnt, mn, zero, zero, mn, mx, nnan, ninf
    if not is_finite_bits(mean):
        if ninf or (nnan and policy != POLICY_OMIT):  # the policy rules, no second pass
            if not (nnan and policy != POLICY_OMIT):
                # the infinities' signs decide (the finite values' sum may have
                # overflowed to the other infinity: inf - inf)
                mean = inf_mean(mn, mx)
            return cnt, mean, zero, mean - mean, mn, mx, nnan, ninf
        # finite values whose sum overflowed: summed scaled by 2^-64 (exact above the
        # subnormals; any count fits), the mean scaled back. ldexp, not a product by a
        # constant: the callers' fastmath "reassoc" may factor a constant out of a sum
        s = zero
        for i in range(n):
            v = to_float64(r[start + i * step], half)
            if not math.isnan(v):
                s += math.ldexp(v, -64)
        mean = math.ldexp(s / cnt, 64)
    # corrected two-pass: the sum of deviations c repairs the rounding of the first mean
    c = numba.float64(0)
    q = numba.float64(0)
    for i in range(n):
        v = to_float64(r[start + i * step], half)
        if policy == POLICY_OMIT and math.isnan(v):
            continue
        d = v - mean
        c += d
        q += d * d
    if is_finite_bits(c):
        hi, lo = dd_quot(mean, c, cnt)
    else:
        # deviations that overflow (M2 is inf): their sum again scaled by 2^-64 repairs
        # the mean's rounding as c would (kept as it was, the mean was the scaled sum's
        # rounding: 500 ulp off at 50,000 values near 1e308)
        ms = math.ldexp(mean, -64)
        cs = zero
        for i in range(n):
            v = to_float64(r[start + i * step], half)
            if not (policy == POLICY_OMIT and math.isnan(v)):
                cs += math.ldexp(v, -64) - ms
        hs, ls = dd_quot(ms, cs, cnt) if is_finite_bits(cs) else dd_mean(ms, zero)
        hi, lo = math.ldexp(hs, 64), math.ldexp(ls, 64)
    return cnt, hi, lo, corrected_m2(q, c, cnt), mn, mx, nnan, ninf


def _f32_head(r, kd, half):  # pragma: no cover - replaced by the overload
    """``(m, sd, sq, mn, mx)``: the explicit-SIMD sums (``cpu_simd.f32_shifted_sums``,
    where ``F32_HEAD``: both SIMD levels, but not AVX-512 on Zen 4/5) over the first
    ``m`` elements of ``r``, whole loop steps; ``m = 0`` (and empty sums) where that
    kernel does not apply."""
    raise NotImplementedError


@overload(_f32_head, inline="always")
def _f32_head_impl(r, kd, half):
    def empty(r, kd, half):
        return 0, numba.float64(0), numba.float64(0), np.float32(np.inf), np.float32(-np.inf)

    if not (F32_HEAD and isinstance(r, types.Array) and r.ndim == 1 and (
            (r.dtype == types.float32 and isinstance(half, types.NoneType))
            or (r.dtype == types.uint16 and isinstance(half, types.Boolean)))):
        return empty

    def impl(r, kd, half):
        steps = r.size // F32_STEP
        if steps == 0 or r.strides[0] != r.itemsize:
            return 0, numba.float64(0), numba.float64(0), np.float32(np.inf), \
                np.float32(-np.inf)
        sd, sq, mn, mx = f32_shifted_sums(r, kd, steps)
        return steps * F32_STEP, sd, sq, mn, mx

    return impl


@numba.njit(inline="always")
def _shifted_rest(r, i0, kd, sd, sq, bmn, bmx, half):
    """Add ``r[i0:]`` to the sums of d = r - kd and d*d and the min/max, one by one
    (the caller's fastmath flags apply: inlined)."""
    for i in range(i0, r.size):
        v = as_float32(r[i], half)
        d = numba.float64(v) - kd
        sd += d
        sq += d * d
        bmn = fmin_fast(bmn, v)
        bmx = fmax_fast(bmx, v)
    return sd, sq, bmn, bmx


@numba.njit(nogil=True, fastmath=_FASTMATH)
def _f32_shifted_pass(r, k, half):
    """Sums of d = r - k and d*d in float64 (d is exact), min and max in float32 (``r``
    float32, or float16 bits with ``half=True``): the SIMD head, then the rest."""
    kd = numba.float64(k)
    m, sd, sq, bmn, bmx = _f32_head(r, kd, half)
    bmn = fmin_fast(bmn, as_float32(r[0], half))
    bmx = fmax_fast(bmx, as_float32(r[0], half))
    return _shifted_rest(r, m, kd, sd, sq, bmn, bmx, half)


def block_fast(r, half, shift):  # pragma: no cover - replaced by the overload
    """Statistics of one cache-resident block ``r`` (1-d, 0-based), fast path.

    ``shift`` is a float64 hint for the block mean (NaN when there is none). Returns
    ``(ok, mean, mean_lo, m2, min, max)`` (the mean as ``mean + mean_lo``, see
    ``nbbn/_merge.py``); ``ok`` is False when the block holds a NaN or an infinity, and
    the caller then redoes it with ``_block_slow``.
    """
    raise NotImplementedError


@overload(block_fast, inline="always")
def _block_fast_impl(r, half, shift):
    dt = r.dtype
    if isinstance(dt, types.Integer) and dt.bitwidth <= 16 and isinstance(half, types.NoneType):
        # Small integers: exact integer sums of v and v*v in one pass (``_int_sums``; uint8
        # on AVX-512BW or AVX2 on whole 64-byte vectors, cpu_simd), so M2 = (n * S2 - S**2)
        # / n is computed from an exact integer numerator and rounded once. This is not the
        # cancelling E[x^2] - E[x]^2 in floating point: no rounding happens before the
        # division.
        simd = dt in (types.uint8, types.int8) and HAVE_SIMD

        def impl_int(r, half, shift):
            s, s2, mn, mx = u8_sums(r) if simd else _int_sums(r)
            hi, lo, m2 = _int_block(s, s2, r.size)
            return True, hi, lo, m2, numba.float64(mn), numba.float64(mx)

        return impl_int

    if (dt == types.float32 and isinstance(half, types.NoneType)) or is_bf16(half) or (
            HAVE_SIMD and not isinstance(half, types.NoneType)):
        # float32 (and float16, converted to float32 by F16C at the SIMD levels): one
        # pass of d = x - K in float64 (exact for float32 x and K), sums of d and d*d in
        # float64, min/max in float32 lanes. The data streams from memory once and each
        # element costs one conversion. If K was far from the block mean, the block is
        # redone with its mean as K.
        def impl_f32(r, half, shift):
            n = r.size
            k = np.float32(shift) if is_finite_bits(shift) else as_float32(r[0], half)
            sd, sq, bmn, bmx = _f32_shifted_pass(r, k, half)
            zero = numba.float64(0)
            if not (is_finite_bits(sq) and is_finite_bits(sd)):
                return False, sq, sq, sq, sq, sq  # NaN/inf inside: min/max unspecified
            if bmn == bmx:
                return True, numba.float64(bmn), zero, zero, numba.float64(bmn), \
                    numba.float64(bmx)
            q = sq - sd * sd / n
            if q * RATIO_LIMIT_LOW < sq:  # K far from the block mean: again, with the mean
                k = np.float32(numba.float64(k) + sd / n)
                sd, sq, bmn, bmx = _f32_shifted_pass(r, k, half)
                q = sq - sd * sd / n
            hi, lo = dd_quot(numba.float64(k), sd, n)
            return True, hi, lo, max(q, zero), numba.float64(bmn), numba.float64(bmx)

        return impl_f32

    native_minmax = isinstance(dt, types.Float) and isinstance(half, types.NoneType)
    # integers: the centre rounded to an integer, so that every deviation, their sum c
    # and the mean from it are exact (dd_quot): the mean correctly rounded. Deviations
    # from the unrounded s / n each rounded, and a channels-first int32 block of values
    # up to 2**20 with a mean near 0 came back up to 200 ulp of its mean off. Floating
    # blocks (float64; float16 on the portable path) whose values all are integers
    # centre on an integer too: their first pass sums the values' fractional parts
    # (float64 tables of one column and Fortran-ordered ones are read here, and integers
    # in them came back hundreds of ulp off numpy's mean). For integers the centre's
    # offset from the mean costs the variance little: each |x - mean| is at least the
    # mean's distance to the nearest integer, so c**2 / n <= M2 (numerics.md)
    integral = isinstance(dt, types.Integer) and isinstance(half, types.NoneType)
    # float16 (uint16 bits with ``half``) centres on the float16 grid otherwise: its
    # deviations, their squares and sums are then exact (11 significant bits), and the
    # centre is within half a float16 ulp of the mean, the values' own spacing, so
    # c**2 / n <= M2 as for integers. Around the unrounded s / n quarters came back 1972
    # ulp off, around the float32 grid N(3, 1) had a variance 127 ulp off, and around an
    # integer (as integers, before) a spread of 1e-4 at 0.3 had one 5e5 ulp off
    grid16 = not isinstance(half, types.NoneType)

    def impl(r, half, shift):
        # float64, float16 and wide integers: two passes over the block, the float64 sum
        # for the block mean, then the sums of the deviations from it and of their
        # squares: the "corrected two-pass" algorithm, whose correction term c repairs
        # the rounding of the first mean (it matters when |mean| >> std).
        n = r.size
        zero = numba.float64(0)
        s = numba.float64(0)
        fr = numba.float64(0)  # (the sum of the fractional parts: 0 for integers)
        if native_minmax:
            bmn = r[0]
            bmx = r[0]
        else:
            bmn = to_float64(r[0], half)
            bmx = bmn
        for i in range(n):
            v = to_float64(r[i], half)
            s += v
            if not integral:
                fr += v - np.floor(v)
            if native_minmax:
                bmn = fmin_fast(bmn, r[i])
                bmx = fmax_fast(bmx, r[i])
            else:
                bmn = fmin_fast(bmn, v)
                bmx = fmax_fast(bmx, v)
        if not is_finite_bits(s):  # NaN/inf inside: bmn/bmx are unspecified, redo the block
            return False, s, s, s, s, s
        if bmn == bmx:  # a constant block: its mean is exact and its M2 exactly 0
            return True, numba.float64(bmn), zero, zero, numba.float64(bmn), \
                numba.float64(bmx)
        if integral or fr == 0.0:
            bm = np.floor(s / n + 0.5)
        else:
            bm = _on_half_grid(s / n) if grid16 else s / n
        c = numba.float64(0)
        q = numba.float64(0)
        for i in range(n):
            d = to_float64(r[i], half) - bm
            c += d
            q += d * d
        if not is_finite_bits(c):  # deviations that overflow: the exact redo
            return False, c, c, c, c, c
        hi, lo = dd_quot(bm, c, n)
        return True, hi, lo, corrected_m2(q, c, n), numba.float64(bmn), numba.float64(bmx)

    return impl


@numba.njit(inline="always")
def _on_half_grid(m):
    """``m`` (finite) rounded to the float16 grid: a multiple of the float16 ulp at ``m``
    (2**-24 at the least; float16's range is not imposed)."""
    if m == 0.0:
        return m
    u = math.ldexp(1.0, max(math.frexp(m)[1] - 11, -24))
    return np.floor(m / u + 0.5) * u


def row_block(dtype: np.dtype) -> int:
    """Elements of one channels-first row reduced as one block, for an input dtype
    (the ``rb`` argument of the channels-first kernels)."""
    return ROW_BLOCK_U8 if dtype == np.uint8 and HAVE_SIMD else ROW_BLOCK


def _minmax_value(v, half):  # pragma: no cover - replaced by the overload
    """An element as the type min/max are tracked in (see ``_minmax_empty``)."""
    raise NotImplementedError


@overload(_minmax_value, inline="always")
def _minmax_value_impl(v, half):
    if isinstance(v, types.Float) and isinstance(half, types.NoneType):
        return lambda v, half: v
    if is_bf16(half) or HAVE_SIMD and not isinstance(half, types.NoneType):
        return lambda v, half: as_float32(v, half)  # float16/bfloat16 in float32 lanes
    return lambda v, half: to_float64(v, half)


def _minmax_empty(n, xf, half):  # pragma: no cover - replaced by the overload
    """Scratch for min/max: the input's own float type (twice the lanes for float32)."""
    raise NotImplementedError


@overload(_minmax_empty)
def _minmax_empty_impl(n, xf, half):
    if isinstance(xf.dtype, types.Float) and isinstance(half, types.NoneType):
        dt = as_dtype(xf.dtype)
        return lambda n, xf, half: np.empty(n, dt)
    if is_bf16(half) or HAVE_SIMD and not isinstance(half, types.NoneType):
        return lambda n, xf, half: np.empty(n, np.float32)
    return lambda n, xf, half: np.empty(n, np.float64)


SCRATCH_PAGE = 4096  # the arrays taken from a kernel's scratch start at these offsets
SCRATCH_SKEW = 320  # ... past the input's address (mod the page), 1, 2, ... times this
# (a multiple of 64: every array starts on a cache line). A store 4 KB apart from a
# load stalls the load (4K aliasing), and the input's rows and the tile arrays all
# start at one offset mod 4 KB where their sizes are multiples of it: arrays taken
# one after the other from the scratch, each at that offset, took 15-17 ms for
# (256, 65536) float64 against 8.3-8.7 with arrays of their own (benchmarks.md)


@numba.njit(nogil=True)
def _take(ws, off, n, size, x0, i, dt):
    """``(array, end)``: ``n`` elements of ``size`` bytes and dtype ``dt`` from ``ws``
    (uint8 scratch), at or after byte ``off``: at ``i * SCRATCH_SKEW`` past the input's
    address ``x0`` (its cache line) mod ``SCRATCH_PAGE``, ``i`` the array's number (at
    most ``SCRATCH_PAGE - 1`` bytes of padding). A function of its own, not inlined at
    numba's IR level: 17 inlined copies made the channels-last kernel's first build
    1.8 s longer (20.1 against 18.3 s on this host)."""
    want = (x0 // 64 * 64 + i * SCRATCH_SKEW) % SCRATCH_PAGE
    start = off + (want - (ws.ctypes.data + off) % SCRATCH_PAGE) % SCRATCH_PAGE
    end = start + n * size
    return ws[start:end].view(dt), end


@numba.njit(nogil=True, fastmath=_FASTMATH)
def _cl_pass(xf, e0, e1, tk, sd, sq, tmn, tmx, half):
    """One pass over the rows ``xf[e0:e1]`` (whole tiles, then a partial one):
    per tile slot t, sums of d = x - tk[t] and d*d, and min/max."""
    tile = tk.size
    sd[:] = 0.0
    sq[:] = 0.0
    tmn[:] = np.inf
    tmx[:] = -np.inf
    e = e0
    while e + GROUP * tile <= e1:  # GROUP tiles at once, accumulated in registers
        grp = xf[e : e + GROUP * tile]
        for t in range(tile):
            k = tk[t]
            a = numba.float64(0)
            q = numba.float64(0)
            lo = _minmax_value(grp[t], half)
            hi = lo
            for j in range(GROUP):
                v = grp[j * tile + t]
                d = to_float64(v, half) - k
                a += d
                q += d * d
                lo = fmin_fast(lo, _minmax_value(v, half))
                hi = fmax_fast(hi, _minmax_value(v, half))
            sd[t] += a
            sq[t] += q
            tmn[t] = fmin_fast(tmn[t], lo)
            tmx[t] = fmax_fast(tmx[t], hi)
        e += GROUP * tile
    while e < e1:
        w = min(tile, e1 - e)  # a whole tile, or the last rows of the block
        _cl_partial(xf, e, e + w, tk, sd, sq, tmn, tmx, half)
        e += w


@numba.njit(inline="always")
def _cl_partial(xf, e0, e1, tk, sd, sq, tmn, tmx, half):
    """Add ``xf[e0:e1]`` (at most one tile) into the tile slots ``t < e1 - e0``."""
    seg = xf[e0:e1]
    for t in range(e1 - e0):
        d = to_float64(seg[t], half) - tk[t]
        sd[t] += d
        sq[t] += d * d
        v = _minmax_value(seg[t], half)
        tmn[t] = fmin_fast(tmn[t], v)
        tmx[t] = fmax_fast(tmx[t], v)


def _cl_pass_omit(xf, e0, e1, tile, tk, sd, sq, cn, tmn, tmx, half, simd, nchan
                  ):  # pragma: no cover - replaced by the overload
    """``_cl_pass_any`` over the rows ``xf[e0:e1]`` with NaNs left out: per tile slot
    t, the sums of d = x - tk[t] and d*d and the min/max of its values that are not
    NaN, and their count ``cn[t]`` (float64). With ``simd`` (float32 and float16 where
    ``cl_simd`` takes them) the SIMD chunk kernel in tiles of ``simd`` rows (the arrays
    padded as for ``_cl_pass_any``), else (``simd`` None) the portable pass in tiles of
    ``tile`` elements. Returns False, doing nothing, for integer input (no NaNs)."""
    raise NotImplementedError


@overload(_cl_pass_omit)
def _cl_pass_omit_impl(xf, e0, e1, tile, tk, sd, sq, cn, tmn, tmx, half, simd, nchan):
    if isinstance(xf.dtype, types.Integer) and isinstance(half, types.NoneType):
        return lambda xf, e0, e1, tile, tk, sd, sq, cn, tmn, tmx, half, simd, nchan: False
    if not (HAVE_SIMD and (xf.dtype == types.float32 or isinstance(half, types.Boolean))) \
            or isinstance(simd, types.NoneType):  # (as _cl_pass_any)
        def portable(xf, e0, e1, tile, tk, sd, sq, cn, tmn, tmx, half, simd, nchan):
            _cl_omit_rows(xf, e0, e1, tile, tk, sd, sq, cn, tmn, tmx, half)
            return True

        return portable

    def impl(xf, e0, e1, tile, tk, sd, sq, cn, tmn, tmx, half, simd, nchan):
        cn[:] = 0.0
        e = _cl_simd_tiles(xf, e0, e1, tk, sd, sq, tmn, tmx, cn, simd * nchan)
        if e < e1:  # the array's last rows, fewer than k
            _cl_omit_partial(xf, e, e1, tk, sd, sq, cn, tmn, tmx, half)
        return True

    return impl


def _is_nan_value(v, half):  # pragma: no cover - replaced by the overload
    """Whether an input value is NaN, by an integer test of its own bits (float16 and
    bfloat16 bits too, before conversion): lanes of its own width vectorize best."""
    raise NotImplementedError


@overload(_is_nan_value, inline="always")
def _is_nan_value_impl(v, half):
    if isinstance(half, types.NoneType):
        if v == types.float32:
            return lambda v, half: (np.float32(v).view(np.int32) & np.int32(0x7FFFFFFF)) > np.int32(
                0x7F800000)
        return lambda v, half: is_nan_bits(v)
    top = 0x7F80 if is_bf16(half) else 0x7C00  # the bits of an infinity
    return lambda v, half: (numba.int32(v) & 0x7FFF) > top


@numba.njit(nogil=True, fastmath=_FASTMATH)
def _cl_omit_rows(xf, e0, e1, tile, tk, sd, sq, cn, tmn, tmx, half):
    """The body of ``_cl_pass_omit``: GROUP tiles at once in registers, as ``_cl_pass``,
    each value's terms selected to 0 (and its min/max to an infinity) where it is NaN."""
    sd[:tile] = 0.0
    sq[:tile] = 0.0
    cn[:tile] = 0.0
    tmn[:tile] = np.inf
    tmx[:tile] = -np.inf
    big = tmn[0]  # (an infinity of the min/max lanes' type)
    e = e0
    while e + GROUP * tile <= e1:  # (GROUP constant: the loop over t vectorizes)
        grp = xf[e : e + GROUP * tile]
        for t in range(tile):
            k = tk[t]
            a = numba.float64(0)
            q = numba.float64(0)
            m = numba.float64(0)
            lo = tmn[t]
            hi = tmx[t]
            for j in range(GROUP):
                v = grp[j * tile + t]
                ok = not _is_nan_value(v, half)
                d = to_float64(v, half) - k if ok else 0.0
                a += d
                q += d * d
                m += 1.0 if ok else 0.0
                mv = _minmax_value(v, half)
                lo = fmin_fast(lo, mv if ok else big)
                hi = fmax_fast(hi, mv if ok else -big)
            sd[t] += a
            sq[t] += q
            cn[t] += m
            tmn[t] = lo
            tmx[t] = hi
        e += GROUP * tile
    while e < e1:  # whole tiles, then the last rows
        w = min(tile, e1 - e)
        _cl_omit_partial(xf, e, e + w, tk, sd, sq, cn, tmn, tmx, half)
        e += w


@numba.njit(inline="always")
def _cl_omit_partial(xf, e0, e1, tk, sd, sq, cn, tmn, tmx, half):
    """``_cl_partial`` with NaNs left out (and the values kept counted into ``cn``)."""
    seg = xf[e0:e1]
    for t in range(e1 - e0):
        v = seg[t]
        if _is_nan_value(v, half):
            continue
        d = to_float64(v, half) - tk[t]
        sd[t] += d
        sq[t] += d * d
        cn[t] += 1.0
        mv = _minmax_value(v, half)
        tmn[t] = fmin_fast(tmn[t], mv)
        tmx[t] = fmax_fast(tmx[t], mv)


CL_TILE_MAX = 1024  # channels-last SIMD tiles of k rows: at most this many elements
CL_RUN_TILES = 256  # ... whose sums run over this many tiles at a time (_cl_simd_tiles)
CL_SIMD_MAX_CHANNELS = 8192  # ... and channels of the chunk kernel at most (see cl_simd)


def cl_simd(dtype: np.dtype, nchan: int) -> int:
    """Rows per tile with which channels-last input of this dtype and channel count
    takes the explicit-SIMD chunk kernel (``cpu_simd.cl_rows_f32``) instead of
    ``_cl_pass``, 0 for none (the ``simd`` argument of the channels-last kernels).

    1: whole vectors of channels, or for float32 a masked last vector where at least
    3/4 of the lanes read are channels and there is one whole vector (two threads, 64
    MB, AVX-512 code: C = 30 33 -> 44-46 GB/s, 100 33 -> 38-40, 300 28 -> 39-42, 24 33
    -> 37; C = 17, one lane of its second vector, 31 -> 16-28). Other float32 and
    float16 channel counts: k = lanes / gcd(C, lanes) rows per tile, so that a tile of
    k * C elements is whole vectors (C = 3: 8 rows of 24 on AVX2, 16 of 48 on AVX-512),
    read by the chunk kernel as rows of k * C "channels" whose k copies of each channel
    are folded afterwards, as ``_cl_pass`` folds its tiles; up to ``CL_TILE_MAX``. At the
    AVX2 level tiles come before the masked vector (Zen 2, two threads, 64 MB, GB/s:
    C = 13 15 -> 18-21, 20 14-16 -> 19-20, 30 17 -> 20, 100 17 -> 17); AVX-512 keeps the
    masked vector where it applies (an Intel AVX-512 host, float32 C = 30: tiles
    21.8-25.8 GB/s, the masked vector 24.9-25.0). Tiles against the tile
    kernel on Zen 2: float32 C = 3 17 -> 23, 5 and 10 19 -> 24, 7 17 -> 21, 17 18 -> 20;
    float16 C = 3 9 -> 17, 5 and 10 6 -> 16-17, 13 and 17 10 -> 15-16.

    None past ``CL_SIMD_MAX_CHANNELS``: the chunk kernel's row groups (at least 16 rows)
    and the next group it prefetches are meant to stay in L2, and a group of 16 rows of
    C = 262,144 is 16 MB. The tile kernel read (64, 262144) float32 in 11 ms against 16-18
    (Zen 2, AVX2 code), (256, 65536) in 7.0 against 7.8-8.0; float16 alike either way."""
    if not HAVE_SIMD or dtype not in (np.float32, np.float16) or nchan > CL_SIMD_MAX_CHANNELS:
        return 0
    if nchan % CL_LANES == 0:
        return 1
    padded = -(-nchan // CL_LANES) * CL_LANES
    masked = dtype == np.float32 and nchan >= CL_LANES and 4 * nchan >= 3 * padded
    k = CL_LANES // math.gcd(nchan, CL_LANES)
    tiles = k * nchan <= CL_TILE_MAX
    if masked and (SIMD_LEVEL == "avx512" or not tiles):
        return 1
    return k if tiles else 0


def _cl_pass_any(xf, e0, e1, tk, sd, sq, tmn, tmx, half, simd, nchan):  # pragma: no cover
    """``_cl_pass`` (``simd`` None), or the SIMD chunk kernel in tiles of ``simd`` rows
    (float32 and float16 where ``cl_simd`` takes them)."""
    raise NotImplementedError


def _simd_rows(simd):  # pragma: no cover - replaced by the overload
    """``simd`` as an integer: the rows of a SIMD tile, 0 for None (no SIMD)."""
    raise NotImplementedError


@overload(_simd_rows, inline="always")
def _simd_rows_impl(simd):
    if isinstance(simd, types.NoneType):
        return lambda simd: 0
    return lambda simd: simd


@overload(_cl_pass_any)
def _cl_pass_any_impl(xf, e0, e1, tk, sd, sq, tmn, tmx, half, simd, nchan):
    # the SIMD kernel types only for float32 and float16: other dtypes compile without
    # it, and so do the builds for channel counts that cl_simd does not take (``simd``
    # None): a build compiles one of the two passes (and of the two NaN-omitting ones)
    if not (HAVE_SIMD and (xf.dtype == types.float32 or isinstance(half, types.Boolean))) \
            or isinstance(simd, types.NoneType):
        def portable(xf, e0, e1, tk, sd, sq, tmn, tmx, half, simd, nchan):
            _cl_pass(xf, e0, e1, tk, sd, sq, tmn, tmx, half)

        return portable

    def impl(xf, e0, e1, tk, sd, sq, tmn, tmx, half, simd, nchan):
        e = _cl_simd_tiles(xf, e0, e1, tk, sd, sq, tmn, tmx, None, simd * nchan)
        if e < e1:  # the array's last rows, fewer than k
            _cl_partial(xf, e, e1, tk, sd, sq, tmn, tmx, half)

    return impl


@numba.njit(inline="always")
def _cl_simd_tiles(xf, e0, e1, tk, sd, sq, tmn, tmx, cn, tile):
    """The SIMD chunk kernel over the whole tiles (``tile`` elements, k rows: whole
    vectors, and ``e0`` a multiple of it) of ``xf[e0:e1]``, into the tile slots reset
    first (``cn``: None, or the count of the NaN-omitting build, reset by the caller);
    returns where the whole tiles end.

    The sums run over ``CL_RUN_TILES`` tiles at a time, each run's added to the slots
    in float64: a slot's one running sum over a whole block (16,384 values a slot with
    4 channels) rounded with a bias that grew with its length, 1-4e-13 of the variance
    at mean/std 10-100 (benchmarks.md, twenty-eighth session)."""
    sd[:] = 0.0
    sq[:] = 0.0
    tmn[:] = np.inf
    tmx[:] = -np.inf
    e = e0 + (e1 - e0) // tile * tile
    t0 = e0 // tile
    t1 = e // tile
    ntiles = xf.size // tile
    if t1 - t0 <= CL_RUN_TILES:
        cl_rows_f32(xf, tile, t0, t1, ntiles, tk, sd, sq, tmn, tmx, cn)
        return e
    rsd = np.empty_like(sd)
    rsq = np.empty_like(sq)
    for r0 in range(t0, t1, CL_RUN_TILES):
        rsd[:] = 0.0
        rsq[:] = 0.0
        cl_rows_f32(xf, tile, r0, min(t1, r0 + CL_RUN_TILES), ntiles, tk, rsd, rsq, tmn,
                    tmx, cn)
        for i in range(sd.size):
            sd[i] += rsd[i]
            sq[i] += rsq[i]
    return e


@numba.njit(inline="always")
def _partitions(pi, pf, t, nt):
    """Chunk ``t`` of ``nt`` of the partitions of the accumulators ``pi`` (P, 3, C) and
    ``pf`` (P, 5, C) (``BatchStats``' layout per partition): ``(p0, p1)`` and the
    accumulators as (P, C) views by field. Each partition is opened (``_open``) before
    the kernel adds to it."""
    nparts = pi.shape[0]
    p0 = (nparts * t) // nt
    p1 = (nparts * (t + 1)) // nt
    return (p0, p1, pi[:, 0], pf[:, 0], pf[:, 1], pf[:, 2], pf[:, 3], pf[:, 4], pi[:, 1],
            pi[:, 2])


@numba.njit(inline="always")
def _open(pi, pf, cr, p, c0, c1):
    """Partition ``p`` holds the channels ``c0 <= c < c1``: their statistics set empty,
    and the range recorded in ``cr`` (P, 2) for ``fold``, which reads no other channel
    of it (a partition of a slice of the channels, ``_grouped_part``: P partitions of C
    channels each were set and folded whole, at C = 65,536 in 16 slices 64 MB, more
    time than reading the data)."""
    cr[p, 0] = c0
    cr[p, 1] = c1
    pi[p, :, c0:c1] = 0
    pf[p, 0:3, c0:c1] = 0.0
    pf[p, 3, c0:c1] = np.inf
    pf[p, 4, c0:c1] = -np.inf


@numba.njit(inline="always")
def _unit_channels(u0, u1, bpr, nchan):
    """``(c0, c1)``: the channels of ``_stats_channels_first``'s units ``u0 <= u < u1``
    (``bpr`` blocks per row, rows in (o, c) order): a range within one ``o``, else all."""
    if u1 <= u0:
        return 0, 0
    r0 = u0 // bpr
    r1 = (u1 - 1) // bpr
    if r0 // nchan != r1 // nchan:
        return 0, nchan
    return r0 % nchan, r1 % nchan + 1


@numba.njit(nogil=True, fastmath=_FASTMATH, error_model="numpy")  # (the kernels' options)
def _add_block(pi, pf, p, c, n, bm, bl, q, bmn, bmx, bnan, binf):
    """Merge one block's statistics into channel ``c`` of partition ``p`` of the
    accumulators ``pi`` (P, 3, C) and ``pf`` (P, 5, C) (``_partitions``' layout).

    A function of its own, not inlined at numba's IR level, and given the accumulators
    rather than ``_partitions``' views of them: inlined, each array argument became a
    variable of the caller's loop, whose reference count numba raised and dropped on
    every iteration (atomic operations) unless numba's pass that prunes them removed
    them, which depended on what the process had compiled before: the same source
    built, after a scikit-learn CSR fit, a channels-last kernel that took 36 ms for a
    float64 row of 262,144 channels, and 15 ms in a new process. The per-channel loop
    of the channels-last kernel writes these steps out."""
    pi[p, 0, c], pf[p, 0, c], pf[p, 1, c], pf[p, 2, c] = chan_merge(
        pi[p, 0, c], pf[p, 0, c], pf[p, 1, c], pf[p, 2, c], n, bm, bl, q
    )
    pf[p, 3, c] = merge_min(pf[p, 3, c], bmn)
    pf[p, 4, c] = merge_max(pf[p, 4, c], bmx)
    pi[p, 1, c] += bnan
    pi[p, 2, c] += binf


@numba.njit(inline="always")
def _finish_shifted(k, a, q, n, bmn, bmx, limit):
    """``(redo, mean, mean_lo, M2)`` of a block of ``n`` values from its shifted sums
    ``a = sum(x - k)``, ``q = sum((x - k)**2)`` and its min/max, after the retry with
    the block mean as ``k``. ``redo``: the block must be redone exactly (a NaN or an
    infinity inside, or the sums still cancel: a negative M2 always does). A constant
    block gets its exact mean and an M2 of exactly 0."""
    zero = numba.float64(0)
    if not (is_finite_bits(q) and is_finite_bits(a)):
        return True, zero, zero, zero
    if bmn == bmx:
        return False, bmn, zero, zero
    bm, bl = dd_quot(k, a, n)
    m2 = q - a * a / n
    return m2 * limit < q, bm, bl, m2


@functools.lru_cache(maxsize=64)
def whole_ranges(nparts: int, nchan: int) -> np.ndarray:
    """``fold``'s channel ranges for ``nparts`` partitions that each hold all ``nchan``
    channels; kept by their arguments and shared (``fold`` only reads them): every
    merge of a batch into a state passes one, and making it took 1.7 us of a small
    ``update``."""
    cr = np.empty((nparts, 2), np.int64)
    cr[:, 0] = 0
    cr[:, 1] = nchan
    return cr


_TWO_52 = 2 ** 52
_TINY = _merge.TINY
_ZERO_FLUSH = _merge.ZERO_FLUSH
_TWO_52_FLOAT = float(_TWO_52)
_TWO_52_BITS = np.int64(np.float64(_TWO_52_FLOAT).view(np.int64))  # its bits, 0x43300...


@numba.njit(inline="always")
def _small_to_float(k):
    """``float(k)`` for an integer ``0 <= k < 2**52``, exactly, by setting the bits of
    ``2**52 + k`` and subtracting ``2**52``: AVX2 has no vector conversion of int64,
    and the scalar ones took a third of ``_merge_channels``' time (other ``k``: a wrong
    result, which its callers do not take)."""
    return np.int64(k | _TWO_52_BITS).view(np.float64) - _TWO_52_FLOAT


@numba.njit(nogil=True, fastmath=False, error_model="numpy")
def _merge_channels(ints, floats, pi, pf, p, c0, c1, off=0):
    """Partition ``p`` of ``pi`` (P, 3, C) and ``pf`` (P, 5, C) merged into channels
    ``c0 <= c < c1`` of ``ints`` (3, C) and ``floats`` (5, C) (their channel ``c - off``
    into ``c``: ``cpu_few_rows`` merges a tile of its own): ``chan_merge``,
    ``merge_min``, ``merge_max`` and the sums of the NaN and infinity counts, bit for
    bit, in a loop of selects that LLVM vectorizes. ``fastmath`` is off (``two_sum``'s
    error term), ``error_model="numpy"`` (a division by a count of 0, whose result is
    not taken, raises nothing), and the index unsigned (a signed one kept numba's
    wraparound of negative indices, which LLVM did not vectorize). The channels that
    ``chan_merge`` takes another branch for (both parts counted, and a difference of
    the means, a between-term or a low part of the mean that is not finite, or a count
    of 2**52 or more) keep their count, mean and M2 in the loop, are marked in the bits
    of ``slow`` (``c1 - c0 <= MERGE_CHANNELS``) and are merged by ``chan_merge`` after
    it. Channel by channel through ``chan_merge`` a batch's merge into a state took
    15.7-16.0 ns a channel in cache (4,096 channels) and 51-55 at 65,536-262,144
    channels (the data's branches mispredicted); this loop 8.1-8.6 and 19-26
    (benchmarks.md, "Eighteenth session"). The count, mean and M2 are merged in one
    loop and min, max, NaN and infinity counts in a second one, 8 rows of the blocks
    each: where the rows lie a multiple of 4 KB apart (C a power of two, 16,384 or
    more), one loop over all 16 rows mapped 16 lines to each 8-way L1 set (and, at 8 MB
    apart, L2 set) and took 23 ns a channel at 1,048,576 channels; two loops 12
    (benchmarks.md, "Twentieth session")."""
    slow = np.uint64(0)
    cu = np.uint64(c0)
    bu = np.uint64(c0 - off)
    for j in range(c1 - c0):
        c = cu + np.uint64(j)
        b = bu + np.uint64(j)
        na = ints[0, c]
        nb = pi[p, 0, b]
        ha = floats[0, c]
        la = floats[1, c]
        m2a = floats[2, c]
        hb = pf[p, 0, b]
        lb = pf[p, 1, b]
        m2b = pf[p, 2, b]
        # chan_merge's arithmetic: both of its branches computed, one taken
        n = na + nb
        fn = _small_to_float(n)
        fb = _small_to_float(nb) / fn
        d = (hb - ha) + (lb - la)
        light = nb <= na  # the mean moves from the heavier part's (chan_merge's moved)
        h0 = ha if light else hb
        l0 = la if light else lb
        h1 = hb if light else ha
        l1 = lb if light else la
        w = _small_to_float(nb if light else na)
        dh, dl = two_sum(h1, -h0)
        dl = dl + (l1 - l0)
        pr, pe = two_prod(dh, w)
        inv = 1.0 / fn
        q = pr * inv
        t, te = two_prod(q, fn)
        r = ((pr - t) - te) + (pe + dl * w)
        s0, e0 = two_sum(h0, q)
        x = e0 + (l0 + r * inv)
        s, e = two_sum(s0, x)  # (dd_mean, whose low part is checked below)
        between = d * d * _small_to_float(na) * fb
        m2 = m2a + (m2b + between) if m2a >= m2b else m2b + (m2a + between)
        far = _ZERO_FLUSH * math.sqrt(m2 / fn)  # (chan_merge's flush of a cancelled mean)
        zero = (abs(s) <= far) & math.isfinite(far)
        s = 0.0 if zero else s
        e = 0.0 if zero else e
        # chan_merge: a's when nb == 0, else b's when na == 0, else the merge
        both = (na != 0) & (nb != 0)
        only_b = (na == 0) & (nb != 0)
        tiny = (dh != 0.0) & ((abs(pr) < _TINY) | (abs(q) < _TINY))  # (moved's fallback)
        fine = (na > 0) & (nb > 0) & (n < _TWO_52) & math.isfinite(d) & \
            math.isfinite(between) & math.isfinite(e) & math.isfinite(x) & \
            math.isfinite(q) & (tiny == False)  # noqa: E712
        sl = both & (fine == False)  # noqa: E712 (a select, not a branch)
        slow |= np.uint64(sl) << np.uint64(j)
        ints[0, c] = n if fine else (nb if only_b else na)
        floats[0, c] = s if fine else (hb if only_b else ha)
        floats[1, c] = e if fine else (lb if only_b else la)
        floats[2, c] = m2 if fine else (m2b if only_b else m2a)
    for j in range(c1 - c0):  # (two loops of 8 rows each: see the docstring)
        c = cu + np.uint64(j)
        b = bu + np.uint64(j)
        mna = floats[3, c]
        mnb = pf[p, 3, b]
        mxa = floats[4, c]
        mxb = pf[p, 4, b]
        floats[3, c] = mna + mnb if math.isnan(mna) | math.isnan(mnb) else (
            mna if mna <= mnb else mnb)
        floats[4, c] = mxa + mxb if math.isnan(mxa) | math.isnan(mxb) else (
            mxa if mxa >= mxb else mxb)
        ints[1, c] += pi[p, 1, b]
        ints[2, c] += pi[p, 2, b]
    if slow:
        for j in range(c1 - c0):
            c = cu + np.uint64(j)
            b = bu + np.uint64(j)
            if slow >> np.uint64(j) & np.uint64(1):
                ints[0, c], floats[0, c], floats[1, c], floats[2, c] = chan_merge(
                    ints[0, c], floats[0, c], floats[1, c], floats[2, c],
                    pi[p, 0, b], pf[p, 0, b], pf[p, 1, b], pf[p, 2, b])


@cached(nogil=True)
def fold(pi, pf, ints, floats, into, cr):
    """Fold the partitions' statistics ``pi`` (P, 3, C), ``pf`` (P, 5, C), in partition
    order, into ``ints`` (3, C) and ``floats`` (5, C): merged into what they hold when
    ``into`` (a state merging a batch: ``pi = batch.ints[None]``), else replacing it.
    ``cr`` (P, 2): the channels ``cr[p, 0] <= c < cr[p, 1]`` that partition p holds
    (``_open``, ``whole_ranges``); it is empty in the others, and merging empty
    statistics changes nothing. Returns False, changing
    nothing, when ``into`` and a count would pass ``COUNT_LIMIT`` (a state loaded near
    it: real data never gets there)."""
    nparts = pi.shape[0]
    if into and nparts == 1:  # (a merge: one loop that LLVM vectorizes)
        over = False
        for k in range(3):
            for c in range(pi.shape[2]):
                over |= pi[0, k, c] > COUNT_LIMIT - ints[k, c]
        if over:
            return False
    elif into:
        for c in range(pi.shape[2]):
            for k in range(3):
                t = ints[k, c]
                for p in range(nparts):
                    if pi[p, k, c] > COUNT_LIMIT - t:
                        return False
                    t += pi[p, k, c]
    # FOLD_CHANNELS channels at a time, each merged over the partitions in order (the
    # bits of a channel-by-channel fold), their running statistics in ``ints`` and
    # ``floats`` themselves (no arrays to allocate: a small update calls this once): a
    # channel's fields lie 5 C * 8 bytes apart from one partition to the next, and read
    # channel by channel at C = 4096 (160 KB, a multiple of 4 KB: all in one L1 set)
    # 64 partitions took 15 ms against 4 at C = 4000; now each line is read once. Each
    # partition's share of a tile is merged in runs of MERGE_CHANNELS channels by
    # ``_merge_channels``, a vectorized loop
    nchan = pi.shape[2]
    if not into:
        for c in range(nchan):
            store_stats(ints, floats, c, 0, 0.0, 0.0, 0.0, np.inf, -np.inf, 0, 0)
    for c0 in range(0, nchan, FOLD_CHANNELS):
        c1 = min(nchan, c0 + FOLD_CHANNELS)
        for p in range(nparts):
            e1 = min(c1, cr[p, 1])
            for m0 in range(max(c0, cr[p, 0]), e1, MERGE_CHANNELS):
                _merge_channels(ints, floats, pi, pf, p, m0, min(e1, m0 + MERGE_CHANNELS))
    return True


def _stats_channels_first(x, half, policy, rb, t, nt, pi, pf, cr):
    no, nchan, length = x.shape
    nparts = pi.shape[0]
    bpr = max(1, (length + rb - 1) // rb)
    units = no * nchan * bpr
    p0, p1, pn, pmean, plo, pm2, pmn, pmx, pnan, pinf = _partitions(pi, pf, t, nt)
    for p in range(p0, p1):
        u0 = (units * p) // nparts
        u1 = (units * (p + 1)) // nparts
        c0, c1 = _unit_channels(u0, u1, bpr, nchan)
        _open(pi, pf, cr, p, c0, c1)
        for u in range(u0, u1):
            row = u // bpr
            lo = (u - row * bpr) * rb
            hi = min(length, lo + rb)
            o = row // nchan
            c = row - o * nchan
            r = x[o, c, lo:hi]  # 0-based loops over a slice: no wraparound checks, vectorizable
            n = hi - lo
            shift = pmean[p, c] if pn[p, c] > 0 else np.nan
            # the block on the fast path; where it holds a NaN or an infinity, again in
            # sub-blocks, each on the fast path where it is clean and exactly otherwise
            # (a NaN in a thousand values made every block exact: 13x the time of clean
            # data). One call site of each: numba inlines block_fast.
            # Where nearly every sub-block fails too, the rest of the block is exact.
            s0 = 0
            step = n
            mode = 0  # 0: the block, 1: its sub-blocks, 2: the rest, exactly
            tried = 0
            failed = 0
            while s0 < n:
                s1 = min(n, s0 + step)
                sub = r[s0:s1]
                ok = False
                if mode < 2:
                    ok, bm, bl, q, bmn, bmx = block_fast(sub, half, shift)
                if not ok and mode == 0 and n > SUB_BLOCK:
                    mode = 1
                    step = SUB_BLOCK
                    continue
                sn = s1 - s0
                bnan = 0
                binf = 0
                if not ok:
                    sn, bm, bl, q, bmn, bmx, bnan, binf = _block_slow(
                        sub, np.int64(0), sn, np.int64(1), half, policy)  # (_ONE_BUILD)
                _add_block(pi, pf, p, c, sn, bm, bl, q, bmn, bmx, bnan, binf)
                s0 = s1
                if mode == 1:
                    tried += 1
                    failed += not ok
                    if _sub_blocks_fail(tried, failed):
                        mode = 2
                        step = n


ONE_ROW_GROUPED = 256  # (1, C, L) pieces (one row per channel) take the grouped kernels
# for rows up to this length: a row of L = 2 through the per-row kernel cost 100 ns
# (262,144 channels float32: 28.5 -> 10.0 ms, uint8 23.9 -> 7.6; L = 16 3.8 -> 1.4), at
# L = 512 the grouped kernel was slower (float32 0.20 -> 0.24 ms; benchmarks.md)


def _grouped_shape(shape: tuple[int, int, int], short: int) -> bool:
    """Rows shorter than ``short``, more than one per channel or one of at most
    ``ONE_ROW_GROUPED``, and at least ``GROUPED_MIN_ELEMENTS`` in all."""
    return (shape[2] < short and (shape[0] > 1 or shape[2] <= ONE_ROW_GROUPED)
            and shape[0] * shape[1] * shape[2] >= GROUPED_MIN_ELEMENTS)


def grouped_rows(dtype: np.dtype, bf16: bool, shape: tuple[int, int, int]) -> bool:
    """Whether an (O, C, L) piece takes ``stats_channels_first_grouped``: float32,
    bfloat16 (``bf16``) or, with F16C, float16 (the dtypes of ``block_fast``'s shifted
    single pass), rows shorter than ``FLOAT_SHORT_ROW`` (``_grouped_shape``)."""
    floats = bf16 or dtype == np.float32 or (dtype == np.float16 and HAVE_SIMD)
    return floats and _grouped_shape(shape, FLOAT_SHORT_ROW)


def rows_per_group(length: int) -> int:
    """Rows of ``length`` elements per group of ``stats_channels_first_grouped``: about
    ``ROW_BLOCK`` elements, as a block of long rows."""
    return max(1, ROW_BLOCK // max(1, length))


@numba.njit(nogil=True, fastmath=_FASTMATH)
def _group_pass(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half):
    """Per channel ``c0 <= c < c1``, over the rows ``x[o, c]`` for ``o0 <= o < o1`` in
    memory order: the sums of d = x - kc[c] and d*d (float64, d exact) and the min/max
    (float32)."""
    sd[c0:c1] = 0.0
    sq[c0:c1] = 0.0
    tmn[c0:c1] = np.inf
    tmx[c0:c1] = -np.inf
    # unsigned indices, one view per o: less index arithmetic per row (16-value rows:
    # 15% of the time with signed indices)
    for o in range(numba.uint64(o0), numba.uint64(o1)):
        xo = x[o]
        for c in range(numba.uint64(c0), numba.uint64(c1)):
            a, q, lo, hi = _f32_shifted_pass(xo[c], kc[c], half)
            sd[c] += a
            sq[c] += q
            tmn[c] = fmin_fast(tmn[c], lo)
            tmx[c] = fmax_fast(tmx[c], hi)


def row_vectors(length: int, dtype: np.dtype, bf16: bool) -> bool:
    """Whether rows of ``length`` elements take ``_group_pass_vectors`` (the argument
    ``vectors`` of ``stats_channels_first_grouped``): 2 to ``ROW_MAX_VECTORS - 1`` whole
    vectors, float32 or float16, at the SIMD levels. With one vector the reduction of
    the accumulators costs more than it saves; from 8 on LLVM's loop (4 x 16 lanes
    with AVX-512, more sums in flight) is faster."""
    return (HAVE_SIMD and not bf16 and dtype in (np.float32, np.float16)
            and 2 <= length // ROW_LANES < ROW_MAX_VECTORS)


# fastmath=False explicitly: a callee without the option inherits the kernel's fastmath
# flags, and numba's fastmath pass puts them on the inlined IR of row_shifted_sums too,
# which made it exactly as slow as the loop it replaces (design.md)
@numba.njit(nogil=True, fastmath=False)
def _group_pass_vectors(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half):
    """``_group_pass`` for unit-stride rows of ``row_vectors`` length: each row's whole
    vectors through ``cpu_simd.row_shifted_sums``, the rest one by one."""
    sd[c0:c1] = 0.0
    sq[c0:c1] = 0.0
    tmn[c0:c1] = np.inf
    tmx[c0:c1] = -np.inf
    nvec = x.shape[2] // ROW_LANES
    for o in range(numba.uint64(o0), numba.uint64(o1)):
        xo = x[o]
        for c in range(numba.uint64(c0), numba.uint64(c1)):
            r = xo[c]
            kd = numba.float64(kc[c])
            a, q, lo, hi = row_shifted_sums(r, kd, nvec)
            a, q, lo, hi = _shifted_rest(r, nvec * ROW_LANES, kd, a, q, lo, hi, half)
            sd[c] += a
            sq[c] += q
            tmn[c] = fmin_fast(tmn[c], lo)
            tmx[c] = fmax_fast(tmx[c], hi)


def _group_pass_any(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half, vectors):  # pragma: no cover
    """``_group_pass``, or ``_group_pass_vectors`` when ``vectors``."""
    raise NotImplementedError


@overload(_group_pass_any)
def _group_pass_any_impl(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half, vectors):
    # the vector pass compiles only where it can run (SIMD levels, float32 and float16)
    if not (HAVE_SIMD and (x.dtype == types.float32 or isinstance(half, types.Boolean))):
        def plain(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half, vectors):
            _group_pass(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half)

        return plain

    def impl(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half, vectors):
        if vectors:
            _group_pass_vectors(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half)
        else:
            _group_pass(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half)

    return impl


@numba.njit(nogil=True, fastmath=_FASTMATH)
def _rows_slow(x, o0, o1, c, half, policy):
    """The statistics of the rows ``x[o, c]``, ``o0 <= o < o1``, of a group that holds a
    NaN or an infinity, or still cancels, merged: each row in sub-blocks of
    ``SUB_BLOCK`` values, on ``block_fast`` where a sub-block is clean and exactly
    (``_block_slow``) otherwise (every row exact took 10x the time of clean data with
    one NaN in a thousand values)."""
    n = 0
    m = numba.float64(0)
    ml = numba.float64(0)
    q = numba.float64(0)
    lo = numba.float64(np.inf)
    hi = numba.float64(-np.inf)
    nnan = 0
    ninf = 0
    length = x.shape[2]
    subs = (length + SUB_BLOCK - 1) // SUB_BLOCK
    exact = False  # nearly every sub-block failed: the rest exactly (_sub_blocks_fail)
    tried = 0
    failed = 0
    for u in range((o1 - o0) * subs):  # one call site of each: numba inlines block_fast
        o = o0 + u // subs
        s0 = (u % subs) * SUB_BLOCK
        sub = x[o, c, s0:min(length, s0 + SUB_BLOCK)]
        shift = m if n > 0 else np.nan
        ok = False
        if not exact:
            ok, bm, bl, bq, bmn, bmx = block_fast(sub, half, shift)
            tried += 1
            failed += not ok
            exact = _sub_blocks_fail(tried, failed)
        bn = sub.size
        bnan = 0
        binf = 0
        if not ok:
            bn, bm, bl, bq, bmn, bmx, bnan, binf = _block_slow(
                sub, np.int64(0), sub.size, np.int64(1), half, policy)  # (_ONE_BUILD)
        n, m, ml, q = chan_merge(n, m, ml, q, bn, bm, bl, bq)
        lo = merge_min(lo, bmn)
        hi = merge_max(hi, bmx)
        nnan += bnan
        ninf += binf
    return n, m, ml, q, lo, hi, nnan, ninf


def grouped_parts(ngroups: int, nchan: int, row_bytes: int, target: int) -> int:
    """Partitions of ``stats_channels_first_grouped``, at most ``target``: ranges of
    whole row groups, or, for a single group, slices of its channels, each reading runs
    of at least ``GROUPED_SLICE_BYTES`` of every row ``x[o]`` (``row_bytes``). Slicing
    several groups measured slower than whole groups (strided runs; design.md)."""
    if ngroups > 1 or target <= 1:
        return max(1, min(target, ngroups))
    return max(1, min(target, nchan, row_bytes // GROUPED_SLICE_BYTES))


@numba.njit(inline="always")
def _group_rows(no, ngroups, g):
    """``(o0, o1)``: the rows of group ``g`` of ``ngroups`` of equal sizes over ``no``."""
    return (no * g) // ngroups, (no * (g + 1)) // ngroups


@numba.njit(inline="always")
def _grouped_part(p, nparts, ngroups, nchan):
    """``(g0, g1, c0, c1)``: the row groups and channels of partition ``p`` (see
    ``grouped_parts``)."""
    if nparts <= ngroups:
        return (ngroups * p) // nparts, (ngroups * (p + 1)) // nparts, 0, nchan
    return 0, 1, (nchan * p) // nparts, (nchan * (p + 1)) // nparts  # one group, sliced


def _stats_channels_first_grouped(x, half, policy, rpg, vectors, t, nt, pi, pf, cr):
    """Channels-first (O, C, L) float32/float16/bfloat16 with short rows: a block is the
    rows ``x[o0:o1, c]`` of one channel in a group of at most ``rpg`` rows (groups of
    equal sizes), reduced as ``_stats_channels_last`` reduces a block (a float32 shift
    per channel, one retry with the block means, exact redo of non-finite or
    still-cancelling blocks); the rows are read in memory order, all channels of a
    partition's slice at a time; ``vectors``: rows of ``row_vectors`` length with unit
    stride."""
    no, nchan, length = x.shape
    ngroups = (no + rpg - 1) // rpg
    nparts = pi.shape[0]
    p0, p1, pn, pmean, plo, pm2, pmn, pmx, pnan, pinf = _partitions(pi, pf, t, nt)
    sd = np.empty(nchan)
    sq = np.empty(nchan)
    tmn = np.empty(nchan, np.float32)
    tmx = np.empty(nchan, np.float32)
    kc = np.empty(nchan, np.float32)
    for p in range(p0, p1):
        g0, g1, c0, c1 = _grouped_part(p, nparts, ngroups, nchan)
        _open(pi, pf, cr, p, c0, c1)
        for g in range(g0, g1):
            o0, o1 = _group_rows(no, ngroups, g)
            n = (o1 - o0) * length
            for c in range(c0, c1):  # shift: the running mean, else the group's first value
                if pn[p, c] > 0 and is_finite_bits(pmean[p, c]):
                    kc[c] = np.float32(pmean[p, c])
                else:
                    kc[c] = as_float32(x[o0, c, 0], half)
            for attempt in range(2):
                _group_pass_any(x, o0, o1, c0, c1, kc, sd, sq, tmn, tmx, half, vectors)
                retry = False
                for c in range(c0, c1):
                    a = sd[c]
                    q = sq[c]
                    if attempt == 0 and is_finite_bits(q) and is_finite_bits(a):
                        if (q - a * a / n) * RATIO_LIMIT_LOW < q:  # far from the shift
                            retry = True
                            kc[c] = np.float32(numba.float64(kc[c]) + a / n)
                if not retry:
                    break
            for c in range(c0, c1):
                a = sd[c]
                q = sq[c]
                bmn = numba.float64(tmn[c])
                bmx = numba.float64(tmx[c])
                bn = n
                bnan = 0
                binf = 0
                redo, bm, bl, q = _finish_shifted(numba.float64(kc[c]), a, q, n, bmn, bmx,
                                                  RATIO_LIMIT_LOW)
                if redo:
                    bn, bm, bl, q, bmn, bmx, bnan, binf = _rows_slow(x, o0, o1, c, half, policy)
                _add_block(pi, pf, p, c, bn, bm, bl, q, bmn, bmx, bnan, binf)


def int_grouped_rows(dtype: np.dtype, shape: tuple[int, int, int]) -> bool:
    """Whether an (O, C, L) piece takes ``stats_channels_first_int_grouped``: 8- and
    16-bit integers (exact integer sums, as ``block_fast``), rows shorter than
    ``SHORT_ROW`` or of exactly ``SHORT_ROW`` (32x32 images; ``_grouped_shape``)."""
    return dtype.kind in "iu" and dtype.itemsize <= 2 and _grouped_shape(shape, SHORT_ROW + 1)


def int_rows_per_group(dtype: np.dtype, length: int) -> int:
    """Rows per group of ``stats_channels_first_int_grouped``: about ``row_block`` values
    (for 16-bit integers that bound keeps ``n * sum(v*v)`` within int64)."""
    return max(1, row_block(dtype) // max(1, length))


U8_STEP = VEC * UNROLL  # bytes per step of cpu_simd's uint8 block sums


def _int_sums(r):  # pragma: no cover - replaced by the overload
    """Exact ``(sum, sum of squares, min, max)`` of an 8/16-bit integer block of at most
    ``ROW_BLOCK`` values, as int64, in one loop (int32 lanes for 8-bit data: 8192 *
    255**2 < 2**31; min/max in the input's own type: 4x the lanes of int32 for uint8)."""
    raise NotImplementedError


@overload(_int_sums, inline="always")
def _int_sums_impl(r):
    acc = np.int32 if r.dtype.bitwidth <= 8 else np.int64

    def impl(r):
        s = acc(0)
        s2 = acc(0)
        mn = r[0]
        mx = r[0]
        for i in range(r.size):
            w = r[i]
            v = acc(w)
            s = acc(s + v)
            s2 = acc(s2 + v * v)
            mn = w if w < mn else mn
            mx = w if w > mx else mx
        return numba.int64(s), numba.int64(s2), numba.int64(mn), numba.int64(mx)

    return impl


@numba.njit(inline="always")
def _int_block(s, s2, n):
    """``(mean hi, mean lo, M2)`` of ``n`` integers from their exact sums ``s``, ``s2``."""
    hi, lo = int_mean(s, n)
    return hi, lo, numba.float64(numba.int64(n) * s2 - s * s) / n


def _int_row_sums(r):  # pragma: no cover - replaced by the overload
    """``_int_sums`` of a short row; uint8 rows of whole ``U8_STEP`` steps or more
    through ``cpu_simd.u8_sums`` at the SIMD levels."""
    raise NotImplementedError


@overload(_int_row_sums, inline="always")
def _int_row_sums_impl(r):
    simd = r.dtype in (types.uint8, types.int8) and HAVE_SIMD

    def impl(r):
        if simd and r.size >= U8_STEP:
            return u8_sums(r)
        return _int_sums(r)

    return impl


def _stats_channels_first_int_grouped(x, rpg, t, nt, pi, pf, cr):
    """Channels-first (O, C, L) 8/16-bit integers with short rows: a block is the rows
    ``x[o0:o1, c]`` of one channel in a group of at most ``rpg`` rows (equal sizes, as
    ``stats_channels_first_grouped``), its exact integer sums added row by row in memory
    order, then one exact mean and M2 per block (``block_fast``'s integer arithmetic):
    no merge per row."""
    no, nchan, length = x.shape
    ngroups = (no + rpg - 1) // rpg
    nparts = pi.shape[0]
    p0, p1, pn, pmean, plo, pm2, pmn, pmx, pnan, pinf = _partitions(pi, pf, t, nt)
    s = np.empty(nchan, np.int64)
    s2 = np.empty(nchan, np.int64)
    mn = np.empty(nchan, np.int64)
    mx = np.empty(nchan, np.int64)
    for p in range(p0, p1):
        g0, g1, c0, c1 = _grouped_part(p, nparts, ngroups, nchan)
        _open(pi, pf, cr, p, c0, c1)
        for g in range(g0, g1):
            o0, o1 = _group_rows(no, ngroups, g)
            s[c0:c1] = 0
            s2[c0:c1] = 0
            mn[c0:c1] = np.iinfo(np.int64).max
            mx[c0:c1] = np.iinfo(np.int64).min
            for o in range(numba.uint64(o0), numba.uint64(o1)):  # (unsigned: see _group_pass)
                xo = x[o]
                for c in range(numba.uint64(c0), numba.uint64(c1)):
                    a, q, lo, hi = _int_row_sums(xo[c])
                    s[c] += a
                    s2[c] += q
                    mn[c] = min(mn[c], lo)
                    mx[c] = max(mx[c], hi)
            n = (o1 - o0) * length
            for c in range(c0, c1):
                hi, lo, m2 = _int_block(s[c], s2[c], n)
                _add_block(pi, pf, p, c, n, hi, lo, m2, numba.float64(mn[c]),
                           numba.float64(mx[c]), 0, 0)


F64_SLICE_VALUES = 32768  # float64 grouped rows: values per sub-slice (256 KB, in L2)
# ... rows shorter than this: from DRAM the sub-slices' strided runs cost more than the
# per-row merges they save for longer rows (L = 128: 24 / 17.7 -> 16.1 / 17.9 GB/s)
F64_SHORT_ROW = 100


def f64_grouped_rows(dtype: np.dtype, shape: tuple[int, int, int]) -> bool:
    """Whether an (O, C, L) piece takes ``stats_channels_first_f64_grouped``: float64,
    rows shorter than ``F64_SHORT_ROW`` (``_grouped_shape``)."""
    return dtype == np.float64 and _grouped_shape(shape, F64_SHORT_ROW)


def _stats_channels_first_f64_grouped(x, policy, rpg, t, nt, pi, pf, cr):
    """Channels-first (O, C, L) float64 with short rows: a block is the rows
    ``x[o0:o1, c]`` of one channel in a group (as ``stats_channels_first_grouped``),
    reduced by ``block_fast``'s corrected two-pass algorithm over all its rows: the
    float64 sum for the mean, then the deviations' sums. The two passes go over a few
    channels at a time (``F64_SLICE_VALUES`` per group), so that the second reads from
    L2; a block holding NaN or inf is redone exactly row by row. Its blocks keep the
    unrounded centre: summing the values' fractional parts, as ``block_fast`` does to
    centre a block of integers on an integer, cost 1.4x the time at rows of 8."""
    no, nchan, length = x.shape
    ngroups = (no + rpg - 1) // rpg
    nparts = pi.shape[0]
    p0, p1, pn, pmean, plo, pm2, pmn, pmx, pnan, pinf = _partitions(pi, pf, t, nt)
    sm = np.empty(nchan)
    bmn = np.empty(nchan)
    bmx = np.empty(nchan)
    sc = np.empty(nchan)
    sq = np.empty(nchan)
    zero = numba.float64(0)
    for p in range(p0, p1):
        g0, g1, c0, c1 = _grouped_part(p, nparts, ngroups, nchan)
        _open(pi, pf, cr, p, c0, c1)
        for g in range(g0, g1):
            o0, o1 = _group_rows(no, ngroups, g)
            n = (o1 - o0) * length
            step = max(1, F64_SLICE_VALUES // n)
            for cs in range(c0, c1, step):
                ce = min(c1, cs + step)
                for c in range(cs, ce):
                    sm[c] = 0.0
                    sc[c] = 0.0
                    sq[c] = 0.0
                    bmn[c] = x[o0, c, 0]
                    bmx[c] = x[o0, c, 0]
                for o in range(numba.uint64(o0), numba.uint64(o1)):  # the sums (unsigned:
                    xo = x[o]  # see _group_pass)
                    for c in range(numba.uint64(cs), numba.uint64(ce)):
                        r = xo[c]
                        a = zero
                        lo = r[0]
                        hi = r[0]
                        for i in range(r.size):
                            a += r[i]
                            lo = fmin_fast(lo, r[i])
                            hi = fmax_fast(hi, r[i])
                        sm[c] += a
                        bmn[c] = fmin_fast(bmn[c], lo)
                        bmx[c] = fmax_fast(bmx[c], hi)
                for c in range(cs, ce):
                    sm[c] = sm[c] / n  # the first mean (NaN/inf: redone below)
                for o in range(numba.uint64(o0), numba.uint64(o1)):  # the deviations
                    xo = x[o]
                    for c in range(numba.uint64(cs), numba.uint64(ce)):
                        r = xo[c]
                        bm = sm[c]
                        a = zero
                        q = zero
                        for i in range(r.size):
                            d = r[i] - bm
                            a += d
                            q += d * d
                        sc[c] += a
                        sq[c] += q
                for c in range(cs, ce):
                    if not (is_finite_bits(sm[c]) and is_finite_bits(sc[c])):
                        # NaN/inf inside, or deviations that overflow: the exact redo
                        bn, hi, lo, m2, mn, mx, bnan, binf = _rows_slow(x, o0, o1, c, None,
                                                                        policy)
                    elif bmn[c] == bmx[c]:  # a constant block: exact mean, M2 exactly 0
                        bn, hi, lo, m2, mn, mx, bnan, binf = n, bmn[c], zero, zero, bmn[c], \
                            bmx[c], 0, 0
                    else:
                        hi, lo = dd_quot(sm[c], sc[c], n)
                        m2 = corrected_m2(sq[c], sc[c], n)
                        bn, mn, mx, bnan, binf = n, bmn[c], bmx[c], 0, 0
                    _add_block(pi, pf, p, c, bn, hi, lo, m2, mn, mx, bnan, binf)


@numba.njit
def channels_last_geometry(nchan, simd, nrows):
    """``(k, tile, rows_per_block)`` for ``nrows`` rows: k rows per tile of ``k * nchan
    >= TILE_MIN`` elements, and whole tiles per block. The SIMD chunk kernel (``simd``:
    its rows per tile, ``cl_simd``) works on tiles of k = simd rows. Each block costs a
    per-channel shift, retry test and merge (with 256 rows of C = 1024 that cost as much
    time as reading the rows; with the 64 rows of 256 KB blocks at C = 4096, float64 ran
    at a sixth of its speed at C = 64), so a block has at least ``CL_BLOCK_ROWS`` rows
    (the chunk kernels stream a block in row groups: it need not fit a cache), or about
    ``CL_BLOCK`` elements where that is more, but no more than 1/``CL_MIN_BLOCKS`` of
    the rows (the blocks are what threads share) down to ``CL_SHARE_ROWS`` rows or the
    256 KB blocks (a table of 256 rows at C = 4096 in four blocks took 4x the time of
    one)."""
    k = simd if simd else max(1, (TILE_MIN + nchan - 1) // nchan)
    tile = k * nchan
    small = k * max(1, CL_BLOCK // tile)  # about CL_BLOCK elements
    share = max(-(-nrows // CL_MIN_BLOCKS), CL_SHARE_ROWS)
    rows = max(small, min(max(CL_BLOCK_ROWS, CL_BLOCK // nchan), share))
    return k, tile, -(-rows // k) * k


HEAD_ROWS = 16  # channels-last: rows whose mean is a partition's first shift ...
HEAD_MIN_ROWS = 1024  # ... in blocks of at least this many rows (see below)
FIRST_ROW_NAN_ROWS = 64  # ... a NaN in the first row of a block of this many rows or
# more sends it straight to the NaN-omitting pass ("omit"; a block of fewer rows is
# cheaper to read twice than to pass all its channels through the omitting pass's
# per-channel steps: (16, 65536) float64 with 0.1% NaN 3.8-4.1 -> 5.2-7.5 ms)
CL_RETRY_CHANNELS = 64  # ... and a block's retry reads only the channels it shifts anew
# where they are at most 1 in this many (a strided read costs a cache line per value)


@numba.njit(inline="always")
def _tile_channel(sd, sq, tmn, tmx, c, nchan, k):
    """``(sum d, sum d*d, min, max)`` of channel ``c`` from its k slots of a tile."""
    a = sd[c]
    q = sq[c]
    bmn = numba.float64(tmn[c])
    bmx = numba.float64(tmx[c])
    for j in range(1, k):
        a += sd[j * nchan + c]
        q += sq[j * nchan + c]
        bmn = fmin_fast(bmn, numba.float64(tmn[j * nchan + c]))
        bmx = fmax_fast(bmx, numba.float64(tmx[j * nchan + c]))
    return a, q, bmn, bmx


@numba.njit(nogil=True, fastmath=_FASTMATH, error_model="numpy")  # (the kernels' options)
def _add_shifted(pi, pf, p, c, shift, a, q, count, bmn, bmx, nnan, limit, xf, start, rows,
                 step, half, policy):
    """Merge a channels-last block's channel ``c`` (``count`` values, ``nnan`` NaNs left
    out) from its shifted sums into partition ``p``, or, where they are not finite or
    cancel, the exact statistics of its ``rows`` values ``xf[start + i * step]``. (Not
    inlined at numba's IR level: see ``_add_block``.)"""
    redo, bm, bl, m2 = _finish_shifted(shift, a, q, count, bmn, bmx, limit)
    binf = 0
    if redo:
        count, bm, bl, m2, bmn, bmx, nnan, binf = _block_slow(xf, start, rows, step, half,
                                                              policy)
    _add_block(pi, pf, p, c, count, bm, bl, m2, bmn, bmx, nnan, binf)


@numba.njit(inline="always")
def _strided_sums(xf, start, n, step, shift, half):
    """``(sum d, sum d*d)`` of ``d = x - shift`` for the values ``x = xf[start + i *
    step]``, i < n, that are not NaN."""
    a = numba.float64(0)
    q = numba.float64(0)
    for i in range(n):
        v = to_float64(xf[start + i * step], half)
        if not is_nan_bits(v):
            d = v - shift
            a += d
            q += d * d
    return a, q


@numba.njit(inline="always")
def _first_finite(r, start, n, step, half):
    """The first finite value of ``r[start + i * step]`` for i < n as float64 (a shift),
    0 when there is none."""
    for i in range(n):
        v = to_float64(r[start + i * step], half)
        if is_finite_bits(v):
            return v
    return numba.float64(0)


@numba.njit(inline="always")
def _cl_scratch_need(slots, nchan, nko, ncn, mm):
    """Bytes of ``_stats_channels_last``'s scratch (the 17 arrays it takes): five of
    ``slots`` (two of them of ``mm``-byte items), two float64 and three bool of
    ``nchan``, ``ncn`` float64 and six of ``nko`` (two of ``mm``-byte items), each after
    at most a page of padding (``_take``)."""
    return (slots * (24 + 2 * mm) + nchan * 19 + ncn * 8 + nko * (32 + 2 * mm)
            + 17 * SCRATCH_PAGE)


SCRATCH_MIN_CHANNELS = 1 << 17  # channels-last tables of this many channels take their
# kernel's arrays from the thread's scratch (``_cl_arrays``): arrays of their own were
# page-faulted in at each call at 262,144 and 1,048,576 channels, never at 65,536 (it
# depends on malloc's history), and the build that takes them from one scratch cannot
# tell LLVM that they do not overlap, which made its first build 4-7 s longer (13.4-14.1
# -> 18.3-21.4 s on this host): narrower tables keep the other build


def cl_scratch_bytes(nchan: int) -> int:
    """At least the bytes of ``_stats_channels_last``'s scratch for ``nchan`` channels,
    any dtype, geometry and row count: a tile of at most ``nchan + TILE_MIN`` elements
    (SIMD: ``CL_TILE_MAX``, or one row) plus ``CL_LANES``, the omitting pass's tiles of
    fewer than ``nchan + 2 * TILE_MIN``, items of at most 8 bytes. (Where it is short
    the kernel takes new memory: the results do not depend on it.)"""
    slots = nchan + max(TILE_MIN, CL_TILE_MAX) + CL_LANES
    return _cl_scratch_need.py_func(slots, nchan, nchan + 2 * TILE_MIN, slots, 8)


@numba.njit
def cl_layout(nchan, simd, nrows):
    """``(k, tile, rpb, slots, ko, nko, ncn)`` of ``_stats_channels_last`` for ``nrows``
    rows (``simd``: the SIMD tile's rows, 0 for none): ``channels_last_geometry``'s
    ``(k, tile, rows_per_block)``, the tile arrays' ``slots``, and the NaN-omitting
    pass's tiles of ``ko`` rows, ``nko`` elements of arrays of their own and ``ncn`` of
    counts."""
    k, tile, rpb = channels_last_geometry(nchan, simd, nrows)
    if simd == 0 and nrows < k:
        # fewer rows than a tile holds: a tile of just those rows (one block). Setting
        # up and folding a whole tile of TILE_MIN elements took 9-12 us of a call with a
        # few rows (benchmarks.md)
        k = max(nrows, 1)
        tile = k * nchan
    slots = tile if simd == 0 else tile + CL_LANES  # the SIMD chunks' whole vectors
    # "omit": the NaN-omitting pass. With SIMD in the block's tiles (its arrays beside
    # the clean pass's); else in tiles of ko rows (whole tiles of the block's geometry,
    # at least TILE_MIN elements: the portable pass's per-tile costs are scalar), arrays
    # of their own (pages of the scratch that only a block with a NaN touches)
    ko = k * max(1, -(-TILE_MIN // tile)) if simd == 0 else k
    nko = ko * nchan if simd == 0 else 0
    ncn = 0 if simd == 0 else slots
    return k, tile, rpb, slots, ko, nko, ncn


def _cl_arrays(ws, xf, half, slots, nchan, nko, ncn):  # pragma: no cover - the overload
    """The channels-last kernel's 17 arrays: ``(tk, sd, sq, tmn, tmx)`` of ``slots``,
    ``(kc, hd, fail, moved, again)`` of ``nchan``, ``cn`` of ``ncn``, and the omitting
    pass's ``(otk, osd, osq, ocn, omn, omx)`` of ``nko``. ``ws`` None (fewer than
    ``SCRATCH_MIN_CHANNELS`` channels): new arrays, the omitting pass's empty (made when
    a block needs them); else taken from the scratch ``ws`` (``_take``; new memory
    where it is short)."""
    raise NotImplementedError


@overload(_cl_arrays, inline="always")
def _cl_arrays_impl(ws, xf, half, slots, nchan, nko, ncn):
    if isinstance(ws, types.NoneType):
        def new(ws, xf, half, slots, nchan, nko, ncn):
            return (np.zeros(slots), np.empty(slots), np.empty(slots),
                    _minmax_empty(slots, xf, half), _minmax_empty(slots, xf, half),
                    np.empty(nchan), np.empty(nchan), np.zeros(nchan, np.bool_),
                    np.zeros(nchan, np.bool_), np.zeros(nchan, np.bool_), np.empty(ncn),
                    np.empty(0), np.empty(0), np.empty(0), np.empty(0),
                    _minmax_empty(0, xf, half), _minmax_empty(0, xf, half))

        return new

    def taken(ws, xf, half, slots, nchan, nko, ncn):
        mm = _minmax_empty(0, xf, half)  # (the min/max arrays' dtype)
        need = _cl_scratch_need(slots, nchan, nko, ncn, mm.itemsize)
        if ws.size < need:
            ws = np.empty(need, np.uint8)
        x0 = xf.ctypes.data
        f8 = np.float64
        i8 = np.int64  # (sizes and numbers as int64: a literal each was a build of _take)
        b1 = np.bool_
        tk, off = _take(ws, i8(0), slots, i8(8), x0, i8(1), f8)
        sd, off = _take(ws, off, slots, i8(8), x0, i8(2), f8)
        sq, off = _take(ws, off, slots, i8(8), x0, i8(3), f8)
        tmn, off = _take(ws, off, slots, mm.itemsize, x0, i8(4), mm.dtype)
        tmx, off = _take(ws, off, slots, mm.itemsize, x0, i8(5), mm.dtype)
        kc, off = _take(ws, off, nchan, i8(8), x0, i8(6), f8)
        hd, off = _take(ws, off, nchan, i8(8), x0, i8(7), f8)
        fail, off = _take(ws, off, nchan, i8(1), x0, i8(8), b1)
        moved, off = _take(ws, off, nchan, i8(1), x0, i8(9), b1)
        again, off = _take(ws, off, nchan, i8(1), x0, i8(10), b1)
        cn, off = _take(ws, off, ncn, i8(8), x0, i8(11), f8)
        otk, off = _take(ws, off, nko, i8(8), x0, i8(12), f8)
        osd, off = _take(ws, off, nko, i8(8), x0, i8(13), f8)
        osq, off = _take(ws, off, nko, i8(8), x0, i8(14), f8)
        ocn, off = _take(ws, off, nko, i8(8), x0, i8(15), f8)
        omn, off = _take(ws, off, nko, mm.itemsize, x0, i8(16), mm.dtype)
        omx, off = _take(ws, off, nko, mm.itemsize, x0, i8(17), mm.dtype)
        return tk, sd, sq, tmn, tmx, kc, hd, fail, moved, again, cn, otk, osd, osq, ocn, omn, omx

    return taken


def on_grid(k, xf, half):  # pragma: no cover - replaced by the overload
    """A shift ``k`` moved onto the values' own grid: float32 for float32, float16 and
    bfloat16 input, the nearest integer for integers, ``k`` itself for float64 (64-bit
    integers kept ``k`` too, and int64 values of 2**40 in blocks of 3,000 rows came back
    an ulp off the exact mean: the deviations rounded).

    ``d = x - k`` is then a number of the grid's ulps, and ``d*d`` and the sums of both
    are exact in float64 until they pass 2**53 of those ulps (float32 values near 100,
    ulp 2**-17: sums of d*d up to 2**19). A float64 shift (a running mean) made every
    ``d*d`` round, with a bias that grew with the rows: a channels-last float32 block of
    20,000 rows at mean/std 100 had a variance 1.5e-13 off, relative (2e-16 now).
    """
    raise NotImplementedError


@overload(on_grid, inline="always")
def _on_grid_impl(k, xf, half):
    dt = xf.dtype
    if dt == types.float32 or not isinstance(half, types.NoneType):
        return lambda k, xf, half: numba.float64(numba.float32(k))
    if isinstance(dt, types.Integer):
        return lambda k, xf, half: np.floor(k + 0.5)
    return lambda k, xf, half: k


# channels-last float64 blocks of at least this variance centre on an integer
WIDE_VARIANCE = 2.0 ** 20


def centre(k, xf, half, var):  # pragma: no cover - replaced by the overload
    """A channels-last block's shift: :func:`on_grid` of ``k``, and for float64 input
    whose variance (estimated: ``var``) is at least ``WIDE_VARIANCE`` the nearest
    integer to ``k``. Integers held as float64 then have exact deviations and sums,
    and a correctly rounded mean, as the other integer paths: around the unrounded
    running mean the deviations of values of 2**37 and more rounded (a table of
    (5000, 8) values up to 2**39 came back up to 838 ulp off in 11 channels in 32).
    Float data lose nothing: a shift within 0.5 of the mean, against a standard
    deviation of at least 1024, moves the shifted sums by less than their own random
    walk over a block (and M2's cancellation by a factor 1 + 2**-22)."""
    raise NotImplementedError


@overload(centre, inline="always")
def _centre_impl(k, xf, half, var):
    if xf.dtype == types.float64 and isinstance(half, types.NoneType):
        def wide(k, xf, half, var):
            if var >= WIDE_VARIANCE and abs(k) < 2.0 ** 52:
                return np.floor(k + 0.5)
            return k
        return wide
    return lambda k, xf, half, var: on_grid(k, xf, half)


# channels-last blocks of integers: a sum of deviations of at least this size may have
# rounded on its way (past 2**53), unless the deviations' spread makes it hopeless
INT_SUM_LIMIT = 2.0 ** 50
INT_SPREAD_LIMIT = 2.0 ** 104  # (M2 = n * var: a random walk of sqrt(M2) = 2**52)


def sum_rounds(k, a, m2, w, xf, half):  # pragma: no cover - replaced by the overload
    """Whether a channels-last block's sum ``a`` of deviations from an integer shift
    ``k`` may have rounded on its way (past 2**53), so that the block must be summed
    again around its own mean: ``|a|`` of at least ``INT_SUM_LIMIT``, for integer input
    and for float64 input centred on an integer (:func:`centre`) whose head rows' sum
    ``w`` is an integer too (0 past a partition's first block), where the block's
    ``m2`` leaves the sums around its mean exact (below ``INT_SPREAD_LIMIT``; beyond,
    the values are past the range the exact mean is promised for). Float32, float16 and
    bfloat16 input never (``False``: numba prunes the test).

    A partition's first shift, the mean of its ``HEAD_ROWS`` head rows, is about a
    quarter of a standard deviation off, and ``|a|`` grows with the rows: int64 values
    of 2**40 in (100000, 2) tables (blocks of 25,000 rows) passed 2**53 and came back
    168 ulp off the exact mean (2026-12-07). The head's test spares float64 data of a
    wide spread (not integers) the second read."""
    raise NotImplementedError


@overload(sum_rounds, inline="always")
def _sum_rounds_impl(k, a, m2, w, xf, half):
    # (no ``and`` chains in these: inlined at numba's IR level, a lambda's short
    # circuits left a variable out of scope in numba's SSA check, a warning per build)
    dt = xf.dtype
    if isinstance(dt, types.Integer):
        def ints(k, a, m2, w, xf, half):
            return (abs(a) >= INT_SUM_LIMIT) & (m2 < INT_SPREAD_LIMIT)
        return ints
    if dt == types.float64 and isinstance(half, types.NoneType):
        def wide(k, a, m2, w, xf, half):
            return (abs(a) >= INT_SUM_LIMIT) & (m2 < INT_SPREAD_LIMIT) \
                & (k == np.floor(k)) & (w == np.floor(w))
        return wide
    return lambda k, a, m2, w, xf, half: False


def _stats_channels_last(xf, nchan, half, policy, limit, simd, nans, t, nt, pi, pf, cr, ws):
    nrows = xf.size // nchan
    nparts = pi.shape[0]
    k, tile, rpb, slots, ko, nko, ncn = cl_layout(nchan, _simd_rows(simd), nrows)
    nblocks = (nrows + rpb - 1) // rpb
    p0, p1, pn, pmean, plo, pm2, pmn, pmx, pnan, pinf = _partitions(pi, pf, t, nt)
    tk, sd, sq, tmn, tmx, kc, hd, fail, moved, again, cn, otk, osd, osq, ocn, omn, omx = \
        _cl_arrays(ws, xf, half, slots, nchan, nko, ncn)
    if simd is not None:  # (the omitting pass's tiles: the clean pass's)
        otk = tk
        osd = sd
        osq = sq
        ocn = cn
        omn = tmn
        omx = tmx
    for p in range(p0, p1):
        b0 = (nblocks * p) // nparts
        b1 = (nblocks * (p + 1)) // nparts
        _open(pi, pf, cr, p, 0, nchan)
        tk[:] = 0.0  # (a masked lane's shift must be 0)
        fail[:] = False
        moved[:] = False
        again[:] = False
        # "omit": after a block with a NaN the next goes straight to the NaN-omitting
        # pass, and so does a block whose first row holds one (a partition's first block
        # of HEAD_MIN_ROWS rows: its head rows; below): a clean pass that fails,
        # followed by the omitting one, read each such block twice. The choice is made
        # from the data alone (never the thread count); the two passes round
        # differently (the channels without NaN of a direct block differ from the clean
        # pass's in their last bits: a review measured M2 up to 6.5e-16 apart, relative).
        nan_before = False
        # whole tiles, at least 4: each pass resets and folds a tile's slots
        sub = max(4, CL_SUB_ROWS // k) * k
        for b in range(b0, b1):
            r0 = b * rpb
            r1 = min(nrows, r0 + rpb)
            e0 = r0 * nchan
            e1 = r1 * nchan
            n = r1 - r0
            # Shift: the running mean, else (a partition's first block) the mean of its
            # first HEAD_ROWS rows, else the block's first row. A single value is 3.9
            # standard deviations off once in 10^4, which makes a float64 block's sums
            # cancel past RATIO_LIMIT_HIGH and the whole block be read again: at
            # C = 4096, in a third of the partitions. Only in blocks long enough for the
            # head's read (row by row) to cost little: in a short one a retry is cheap.
            head = b == b0 and n >= HEAD_MIN_ROWS
            if head:
                hd[:] = 0.0
                for i in range(HEAD_ROWS):
                    for c in range(nchan):
                        hd[c] += to_float64(xf[e0 + i * nchan + c], half)
                for c in range(nchan):  # a NaN among them: the block too, most likely
                    nan_before |= policy == POLICY_OMIT and np.isnan(hd[c])
                    sq[c] = 0.0  # (free here: the head's squared deviations, for centre)
                for i in range(HEAD_ROWS):
                    for c in range(nchan):
                        d = to_float64(xf[e0 + i * nchan + c], half) - hd[c] / HEAD_ROWS
                        sq[c] += d * d
            elif nans is not None and policy == POLICY_OMIT and not nan_before \
                    and n >= FIRST_ROW_NAN_ROWS:
                # the block's first row, likewise: a wide block of few rows (one per call,
                # no head rows) with NaNs in a fifth of its channels was read twice
                for c in range(nchan):
                    nan_before |= is_nan_bits(to_float64(xf[e0 + c], half))
            for c in range(nchan):
                if pn[p, c] > 0 and is_finite_bits(pmean[p, c]):
                    kc[c] = centre(pmean[p, c], xf, half, pm2[p, c] / pn[p, c])
                else:
                    m = hd[c] / HEAD_ROWS if head else np.nan
                    kc[c] = centre(m, xf, half, sq[c] / HEAD_ROWS) if is_finite_bits(m) \
                        else to_float64(xf[e0 + c], half)
            direct = nan_before and policy == POLICY_OMIT
            nfail = 0
            if direct:
                for c in range(nchan):
                    fail[c] = True
                nfail = nchan
            else:
                for attempt in range(2):
                    for j in range(k):
                        for c in range(nchan):
                            tk[j * nchan + c] = kc[c]
                    _cl_pass_any(xf, e0, e1, tk, sd, sq, tmn, tmx, half, simd, nchan)
                    nmoved = 0
                    for c in range(nchan):  # fold the k copies of each channel
                        a = sd[c]
                        q = sq[c]
                        for j in range(1, k):
                            a += sd[j * nchan + c]
                            q += sq[j * nchan + c]
                        sd[c] = a
                        sq[c] = q
                        moved[c] = attempt == 0 and is_finite_bits(q) and is_finite_bits(a) \
                            and ((q - a * a / n) * limit < q
                                 or sum_rounds(tk[c], a, q - a * a / n,
                                               hd[c] if head else 0.0, xf, half))
                        nmoved += moved[c]
                    if nmoved == 0:
                        break
                    if nmoved * CL_RETRY_CHANNELS <= nchan:
                        # far from the shift, and few (a first row's value 3.9 standard
                        # deviations off: one channel in 10^4, in nearly every block of
                        # 262,144 channels): those channels again with the block mean,
                        # each on its own (strided), not the whole block
                        for c in range(nchan):
                            if moved[c]:
                                kc[c] = centre(tk[c] + sd[c] / n, xf, half,
                                               (sq[c] - sd[c] * sd[c] / n) / n)
                                tk[c] = kc[c]
                                sd[c], sq[c] = _strided_sums(xf, e0 + c, n, nchan, kc[c], half)
                        break
                    for c in range(nchan):  # far from the shift: redo with the block means
                        if is_finite_bits(sd[c]):
                            kc[c] = centre(tk[c] + sd[c] / n, xf, half,
                                           (sq[c] - sd[c] * sd[c] / n) / n)
                for c in range(nchan):
                    a = sd[c]
                    q = sq[c]
                    fail[c] = not (is_finite_bits(q) and is_finite_bits(a))
                    if fail[c]:  # a NaN or an infinity: this channel again, below
                        nfail += 1
                        continue
                    bmn = numba.float64(tmn[c])
                    bmx = numba.float64(tmx[c])
                    for j in range(1, k):
                        bmn = fmin_fast(bmn, numba.float64(tmn[j * nchan + c]))
                        bmx = fmax_fast(bmx, numba.float64(tmx[j * nchan + c]))
                    # (``_add_shifted``'s and ``_add_block``'s steps written out: through
                    # the helpers this loop took twice the time per channel, int32
                    # C = 4096 4.0 -> 2.2 GB/s, float64 C = 262,144 up to 2.4x)
                    bn = n
                    bnan = 0
                    binf = 0
                    redo, bm, bl, q = _finish_shifted(tk[c], a, q, n, bmn, bmx, limit)
                    if redo:
                        bn, bm, bl, q, bmn, bmx, bnan, binf = _block_slow(
                            xf, e0 + c, n, nchan, half, policy
                        )
                    pi[p, 0, c], pf[p, 0, c], pf[p, 1, c], pf[p, 2, c] = chan_merge(
                        pi[p, 0, c], pf[p, 0, c], pf[p, 1, c], pf[p, 2, c], bn, bm, bl, q)
                    pf[p, 3, c] = merge_min(pf[p, 3, c], bmn)
                    pf[p, 4, c] = merge_max(pf[p, 4, c], bmx)
                    pi[p, 1, c] += bnan
                    pi[p, 2, c] += binf
            if nans is None:  # integer input: its sums are always finite, no channel
                continue  # fails, and numba prunes the section below from its builds
            if nfail:
                # The failed channels again (strided exact passes over the whole block,
                # one per channel with a NaN in it, took 15x the time of clean data):
                # "omit", one pass over the block that leaves NaNs out; otherwise in
                # sub-blocks of ``sub`` rows, each on the fast path where it is clean and
                # exactly otherwise. The sums of the other channels are not used.
                for c in range(nchan):
                    if fail[c] and not is_finite_bits(kc[c]):
                        kc[c] = _first_finite(xf, e0 + c, n, nchan, half)
                for j in range(k):
                    for c in range(nchan):
                        tk[j * nchan + c] = kc[c]
                omitted = False
                if policy == POLICY_OMIT:
                    if ocn.size < nko:  # (the portable pass's own tiles, made when needed)
                        otk = np.empty(nko)
                        osd = np.empty(nko)
                        osq = np.empty(nko)
                        ocn = np.empty(nko)
                        omn = _minmax_empty(nko, xf, half)
                        omx = _minmax_empty(nko, xf, half)
                    for attempt in range(2):
                        for j in range(ko):
                            for c in range(nchan):
                                otk[j * nchan + c] = kc[c]
                        omitted = _cl_pass_omit(xf, e0, e1, ko * nchan, otk, osd, osq, ocn,
                                                omn, omx, half, simd, nchan)
                        if not omitted:  # (integers: no NaN)
                            break
                        retry = False
                        nagain = 0
                        for c in range(nchan):  # fold the ko copies of the failed channels
                            if not fail[c]:
                                continue
                            a, q, bmn, bmx = _tile_channel(osd, osq, omn, omx, c, nchan, ko)
                            m = ocn[c]
                            for j in range(1, ko):
                                m += ocn[j * nchan + c]
                            osd[c] = a
                            osq[c] = q
                            omn[c] = bmn
                            omx[c] = bmx
                            ocn[c] = m
                            # (only a channel whose sums cancel moves its shift: the
                            # others' sums are read again as they were)
                            again[c] = attempt == 0 and m > 0 and is_finite_bits(q) and \
                                is_finite_bits(a) and ((q - a * a / m) * limit < q
                                                       or sum_rounds(otk[c], a, q - a * a / m,
                                                                     hd[c] if head else 0.0,
                                                                     xf, half))
                            retry |= again[c]
                            nagain += again[c]
                        if not retry:
                            break
                        if nagain * CL_RETRY_CHANNELS <= nchan:
                            # few: those channels again on their own, as the clean pass's
                            # (a block that came here for a NaN in its first row read the
                            # whole block twice: (64, 262144) float64 28 -> 38 ms)
                            for c in range(nchan):
                                if fail[c] and again[c]:
                                    kc[c] = centre(otk[c] + osd[c] / ocn[c], xf, half,
                                                   (osq[c] - osd[c] * osd[c] / ocn[c])
                                                   / ocn[c])
                                    otk[c] = kc[c]
                                    osd[c], osq[c] = _strided_sums(xf, e0 + c, n, nchan,
                                                                   kc[c], half)
                            break
                        for c in range(nchan):  # far from the shift: the block means
                            if fail[c] and again[c]:
                                kc[c] = centre(otk[c] + osd[c] / ocn[c], xf, half,
                                               (osq[c] - osd[c] * osd[c] / ocn[c]) / ocn[c])
                    nan_before = False
                for c in range(nchan):
                    if not (omitted and fail[c]):
                        continue
                    bn = numba.int64(ocn[c])
                    nan_before |= bn < n
                    if bn == 0:  # NaN only
                        _add_block(pi, pf, p, c, 0, 0.0, 0.0, 0.0, np.inf, -np.inf, n, 0)
                        continue
                    # (an infinity, or sums that cancel: the block's channel exactly)
                    _add_shifted(pi, pf, p, c, otk[c], osd[c], osq[c], bn,
                                 numba.float64(omn[c]), numba.float64(omx[c]), n - bn,
                                 limit, xf, e0 + c, n, nchan, half, policy)
                if not omitted:
                    s0 = r0
                    tried = 0
                    failed = 0
                    while s0 < r1:
                        s1 = min(r1, s0 + sub)
                        sn = s1 - s0
                        _cl_pass_any(xf, s0 * nchan, s1 * nchan, tk, sd, sq, tmn, tmx, half,
                                     simd, nchan)
                        for c in range(nchan):
                            if not fail[c]:
                                continue
                            a, q, bmn, bmx = _tile_channel(sd, sq, tmn, tmx, c, nchan, k)
                            tried += 1
                            failed += not (is_finite_bits(a) and is_finite_bits(q))
                            _add_shifted(pi, pf, p, c, kc[c], a, q, sn, bmn, bmx, 0, limit,
                                         xf, s0 * nchan + c, sn, nchan, half, policy)
                        s0 = s1
                        if s0 < r1 and _sub_blocks_fail(tried, failed):
                            for c in range(nchan):  # the rest of the block exactly
                                if fail[c]:
                                    bn, bm, bl, q, bmn, bmx, bnan, binf = _block_slow(
                                        xf, s0 * nchan + c, r1 - s0, nchan, half, policy
                                    )
                                    _add_block(pi, pf, p, c, bn, bm, bl, q, bmn, bmx, bnan, binf)
                            break


U8CL_BLOCK = 262144  # channels-last uint8: bytes per block (whole periods; L2-resident)
U8CL_MAX_PERIOD = 128  # ... and the most vectors per period it takes (C / gcd(C, VEC))
U8CL_PIXELS_MAX = 16  # ... the most channels read as whole pixels (>= 52 of 64 bytes)
# ... and their blocks (read once: fewer per-block folds than 256 KB, 1 MiB on AVX-512)
U8CL_PIXELS_BLOCK = 1048576 if U8CL_VEC == 64 else 524288
assert U8CL_BLOCK // U8CL_VEC <= U8CL_MAX_ITERATIONS
assert U8CL_PIXELS_BLOCK // min(U8CL_VEC - U8CL_VEC % c for c in range(1, U8CL_PIXELS_MAX + 1)) \
    < U8CL_MAX_ITERATIONS


def u8_cl_simd(dtype: np.dtype, nchan: int) -> bool:
    """Whether channels-last input takes ``_stats_channels_last_u8`` (uint8, and int8
    read as uint8 ``v + 128``)."""
    return (HAVE_SIMD and dtype in (np.uint8, np.int8)
            and nchan // math.gcd(nchan, U8CL_VEC) <= U8CL_MAX_PERIOD)


@numba.njit
def u8_cl_geometry(nchan):
    """``(passes, step, rows per block, period bytes)`` for channels-last uint8 and
    vectors of ``U8CL_VEC`` bytes: one pass over vectors ``step = U8CL_VEC - U8CL_VEC % C``
    bytes apart (whole pixels each) for C <= ``U8CL_PIXELS_MAX``, else one pass per
    vector of a period (``step`` = the period). Blocks are whole periods."""
    nvec = nchan // math.gcd(nchan, U8CL_VEC)
    period = U8CL_VEC * nvec
    if nchan <= U8CL_PIXELS_MAX:
        return (1, U8CL_VEC - U8CL_VEC % nchan,
                (period // nchan) * max(1, U8CL_PIXELS_BLOCK // period), period)
    return nvec, period, (period // nchan) * max(1, U8CL_BLOCK // period), period


@numba.njit(inline="always")
def _u8_cl_scalar(xf, a, b, e0, nchan, s, q, lo, hi):
    """Add the bytes ``xf[a:b]`` of a block starting at ``e0`` into the channel sums
    (as uint8: int8 plus 128, as the SIMD pass reads them)."""
    off = byte_offset(xf)
    for e in range(a, b):
        c = (e - e0) % nchan
        v = numba.int64(xf[e]) + off
        s[c] += v
        q[c] += v * v
        lo[c] = min(lo[c], v)
        hi[c] = max(hi[c], v)


def _stats_channels_last_u8(xf, nchan, t, nt, pi, pf, cr):
    """Channels-last uint8 (``xf`` flat, C-contiguous): per block, from the first address
    aligned to the vector size on, the exact integer sums by byte position
    (``cpu_simd.u8_cl_pass``), folded into channels; the bytes before that address and
    after the last whole period in a scalar loop."""
    nrows = xf.size // nchan
    passes, step, rpb, period = u8_cl_geometry(nchan)
    vec = U8CL_VEC
    keep = min(step, vec)  # bytes of a vector that are its own (the rest: the next one's)
    nblocks = (nrows + rpb - 1) // rpb
    # blocks start at multiples of the vector size from xf[0], so one offset aligns every
    # block's vectors: a vector split over two cache lines costs two reads from L1
    head = (-xf.ctypes.data) % vec
    chan = np.empty(period, np.int64)  # the channel of each byte of a period
    for j in range(period):
        chan[j] = (head + j) % nchan
    nparts = pi.shape[0]
    p0, p1, pn, pmean, plo, pm2, pmn, pmx, pnan, pinf = _partitions(pi, pf, t, nt)
    for p in range(p0, p1):
        b0 = (nblocks * p) // nparts
        b1 = (nblocks * (p + 1)) // nparts
        _open(pi, pf, cr, p, 0, nchan)
        lanes = np.empty(U8CL_LANES, np.int64)
        s = np.empty(nchan, np.int64)
        q = np.empty(nchan, np.int64)
        lo = np.empty(nchan, np.int64)
        hi = np.empty(nchan, np.int64)
        for b in range(b0, b1):
            r0 = b * rpb
            r1 = min(nrows, r0 + rpb)
            e0 = r0 * nchan
            e1 = r1 * nchan
            s[:] = 0
            q[:] = 0
            lo[:] = 255
            hi[:] = 0
            v0 = min(e1, e0 + head)  # the vectors' first byte
            if passes == 1:  # vectors of whole pixels, all their bytes inside the block
                nper = (e1 - v0 - vec) // step + 1 if e1 - v0 >= vec else 0
            else:  # whole periods
                nper = (e1 - v0) // period
            # passes over a period: prefetch the next block while this one is reduced
            # from L2 (if it is a whole one); a single pass streams without help
            ahead = rpb * nchan if passes > 1 and (b + 2) * rpb <= nrows else 0
            if nper > 0:
                for k in range(passes):
                    u8_cl_pass_best(xf, v0 + vec * k, nper, step, keep, ahead, lanes)
                    for pos in range(vec):  # vector k's byte positions are fixed channels
                        c = chan[vec * k + pos]
                        lo[c] = min(lo[c], lanes[pos])
                        hi[c] = max(hi[c], lanes[64 + pos])
                        s[c] += lanes[128 + pos]
                        q[c] += lanes[192 + pos]
            # the rest: the bytes before v0, and less than a period after the vectors
            _u8_cl_scalar(xf, e0, v0, e0, nchan, s, q, lo, hi)
            _u8_cl_scalar(xf, v0 + nper * step, e1, e0, nchan, s, q, lo, hi)
            n = r1 - r0
            off = byte_offset(xf)  # (the sums are of uint8 values; M2 is the same)
            for c in range(nchan):  # exact integer numerator, rounded once (see block_fast)
                bm, bl = int_mean(s[c] - off * n, n)
                bq = numba.float64(np.int64(n) * q[c] - s[c] * s[c]) / n
                pn[p, c], pmean[p, c], plo[p, c], pm2[p, c] = chan_merge(
                    pn[p, c], pmean[p, c], plo[p, c], pm2[p, c], n, bm, bl, bq
                )
                pmn[p, c] = merge_min(pmn[p, c], numba.float64(lo[c] - off))
                pmx[p, c] = merge_max(pmx[p, c], numba.float64(hi[c] - off))


# Serial kernels, each called on a chunk of the partitions (``t`` of ``nt``) by the
# CPU backend's threads (the kernels release the GIL); no parallel=True build, which
# would double the compilations of a cold start. The SIMD level is part of the names:
# the kernels of each level have disk-cache entries of their own, so a process run with
# NBBN_SIMD=none never loads the AVX-512 build of an earlier one.
_OPTS: dict[str, Any] = dict(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
stats_channels_first = tagged(_stats_channels_first, SIMD_LEVEL, **_OPTS)
stats_channels_first_grouped = tagged(_stats_channels_first_grouped, SIMD_LEVEL, **_OPTS)
stats_channels_first_int_grouped = tagged(_stats_channels_first_int_grouped, SIMD_LEVEL,
                                          **_OPTS)
stats_channels_first_f64_grouped = tagged(_stats_channels_first_f64_grouped, SIMD_LEVEL,
                                          **_OPTS)
stats_channels_last = tagged(_stats_channels_last, SIMD_LEVEL, **_OPTS)
stats_channels_last_u8 = tagged(_stats_channels_last_u8, SIMD_LEVEL, **_OPTS)
