"""CPU kernels for the per-channel affine map ``out = (x - a[c]) * s[c] + b[c]``.

The normalizer uses ``a = mean, s = weight / sqrt(var + eps), b = bias``; its inverse
uses ``a = bias, s = 1 / s, b = mean``. The arithmetic is float64 whatever the input,
and the mean is subtracted before scaling, so the result is within an ulp or two of a
float64 computation even when |mean| >> std (folding into ``x * scale + shift`` in
float32 would lose about 1e-3 at mean/std = 1e4). Rounding to the output dtype
happens once, on store.

Layouts mirror the statistics kernels: (O, C, L) rows cut into blocks for
channels-first (any strides), and flat tiles of ``k * C`` elements with tiled
parameters for C-contiguous channels-last data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from ._jit import tagged
from .cpu_affine_simd import LANES, period_vectors, u8_affine_head
from .cpu_numerics import store_float, to_float64
from .cpu_simd import AFFINE_L1_AHEAD, SIMD_LEVEL, prefetch_ahead
from .cpu_stream import STREAM_CHUNK_BYTES, stream_copy, stream_fence

COUNT_INF = False  # the *_inf builds set it True: they also count infinite inputs
AHEAD = AFFINE_L1_AHEAD  # bytes the kernels prefetch their input ahead (0: no prefetch)
# The kernels below keep the streamed and the plain loop apart on purpose: written as
# one loop whose destination is ``buf[...] if stream else out[...]``, LLVM no longer
# sees that the buffer is a fresh allocation, and streaming became 1.6x slower.
ROW_BLOCK = 16384  # channels-first: elements of one row handled by one work unit
# channels-last: the tiled parameter vectors hold k whole rows, at least TILE_MIN
# elements, and a multiple of TILE_ALIGN when that stays within TILE_MAX (L1-resident
# parameters). A tile is one vectorized inner loop: a tile that is not whole vectors
# (C = 3: 66 elements) ends in scalar iterations, and a short one pays the loop's setup
# per few vectors. Against 64-element tiles, one thread: C = 3 1.37x (uint8) and 1.49x
# (float32), C = 100 1.2-1.3x, no loss beyond noise elsewhere (design.md).
TILE_MIN = 256
TILE_ALIGN = 32  # float32 lanes of two AVX-512 vectors, four AVX2 ones
TILE_MAX = 1024
CL_ROWS_PER_UNIT = 2048  # channels-last: minimum rows handled by one work unit
# elements per prefetch_ahead call: a plain channels-first row's span, and the span of
# whole periods the plain channels-last loop gives the uint8 register kernel at once
PREFETCH_SPAN = 1024
# ... streamed when its rows are whole 64-byte lines and C is at most this (C = 1024:
# the parameters of a tile crowd the buffer out of L1, 10% slower; C = 3: 0.98-1.15x,
# the uint8 map is compute-bound)
STREAM_CHANNELS_MAX = 256


@njit(inline="always")
def _affine_run(src, dst, ac, sc, bc, half, out_half, count_inf):
    """``dst[i] = (src[i] - ac) * sc + bc`` over two 1-d views of one length; returns
    the number of infinite inputs with ``count_inf`` (a constant of the build), else 0."""
    bad = 0
    for i in range(src.shape[0]):
        v = to_float64(src[i], half)
        if count_inf:
            bad += np.isinf(v)
        store_float(dst, i, (v - ac) * sc + bc, out_half)
    return bad


def _affine_channels_first(x, half, a, s, b, out, out_half, stream, t, nt, ninf):
    """Chunk ``t`` of ``nt`` of the work units of (O, C, L) ``x``; the ``COUNT_INF``
    build stores the number of infinite inputs it read in ``ninf[t]``. ``stream``
    (``out``'s rows contiguous): each unit goes through a buffer to non-temporal stores
    (``cpu_stream``)."""
    bad = 0
    no, nchan, length = x.shape
    if not stream and length <= ROW_BLOCK:
        # rows of one unit each, walked by nested loops over the rows of chunk t: a
        # short row (a 7 x 7 map: 49 elements) then costs little more than its loop (the
        # unit walk's divisions and slices per row ran 7 x 7 maps at a third of the
        # speed); prefetched in spans where the build prefetches and rows are that long
        rows = no * nchan
        r0 = rows * t // nt
        r1 = rows * (t + 1) // nt
        for o in range(r0 // nchan, (r1 + nchan - 1) // nchan):
            for c in range(max(0, r0 - o * nchan), min(nchan, r1 - o * nchan)):
                src = x[o, c]
                dst = out[o, c]
                if AHEAD and length >= PREFETCH_SPAN:
                    for i0 in range(0, length, PREFETCH_SPAN):
                        i1 = min(length, i0 + PREFETCH_SPAN)
                        prefetch_ahead(src, i0, i1 - i0, AHEAD)
                        bad += _affine_run(src[i0:i1], dst[i0:i1], a[c], s[c], b[c], half,
                                           out_half, COUNT_INF)
                else:
                    bad += _affine_run(src, dst, a[c], s[c], b[c], half, out_half, COUNT_INF)
        if COUNT_INF:
            ninf[t] = bad
        return
    bpr = max(1, (length + ROW_BLOCK - 1) // ROW_BLOCK)
    units = no * nchan * bpr
    sub = max(1, STREAM_CHUNK_BYTES // out.itemsize)  # streamed: elements per buffer
    span = PREFETCH_SPAN if AHEAD else ROW_BLOCK  # elements per prefetch_ahead
    buf = np.empty(min(sub, length) if stream else 0, out.dtype)
    for u in range((units * t) // nt, (units * (t + 1)) // nt):
        row = u // bpr
        lo = (u - row * bpr) * ROW_BLOCK
        hi = min(length, lo + ROW_BLOCK)
        o = row // nchan
        c = row - o * nchan
        src = x[o, c, lo:hi]
        f = 0
        while stream and f < hi - lo:  # buffers of whole cache lines, streamed out
            w = min(sub, hi - lo - f)
            prefetch_ahead(x[o, c], lo + f, w, AHEAD)  # the row's next lines, past this unit too
            tmp = buf[:w]
            bad += _affine_run(src[f : f + w], tmp, a[c], s[c], b[c], half, out_half, COUNT_INF)
            stream_copy(tmp, out[o, c], lo + f)
            f += w
        if not stream:
            for i0 in range(0, hi - lo, span):
                i1 = min(hi - lo, i0 + span)
                prefetch_ahead(x[o, c], lo + i0, i1 - i0, AHEAD)
                bad += _affine_run(src[i0:i1], out[o, c, lo + i0 : lo + i1], a[c], s[c], b[c],
                                   half, out_half, COUNT_INF)
    if stream:
        stream_fence()
    if COUNT_INF:
        ninf[t] = bad


def _affine_channels_last(xf, half, ta, ts, tb, nchan, outf, out_half, stream, nvec, t, nt,
                          ninf):
    """Chunk ``t`` of ``nt`` of the work units of the flat channels-last ``xf`` (``ninf``,
    ``stream``: as in :func:`_affine_channels_first`; chunks of whole tiles). ``nvec``:
    uint8 to float32 through ``cpu_affine_simd`` in periods of that many vectors (0:
    not)."""
    bad = 0
    tile = ta.size
    nrows = xf.size // nchan
    k = tile // nchan
    rpu = k * max(1, CL_ROWS_PER_UNIT // k)  # rows per unit, a multiple of k
    units = (nrows + rpu - 1) // rpu
    # streamed: buffered chunks of whole tiles, or with the register kernel of whole
    # periods that are whole lines of the output
    step = tile if nvec == 0 else LANES * nvec * 16 // math.gcd(LANES * nvec, 16)
    chunk = step * max(1, STREAM_CHUNK_BYTES // (step * outf.itemsize))
    buf = np.empty(chunk if stream else 0, outf.dtype)
    for u in range((units * t) // nt, (units * (t + 1)) // nt):
        e = u * rpu * nchan
        e1 = min(nrows, (u + 1) * rpu) * nchan
        while stream and e < e1:
            m = min(chunk, e1 - e)
            prefetch_ahead(xf, e, m, AHEAD)
            f = u8_affine_head(xf[e : e + m], buf, ta, ts, tb, 0, m, nvec)
            while f < m:
                w = min(tile, m - f)
                src = xf[e + f : e + f + w]
                tmp = buf[f : f + w]
                for j in range(w):
                    v = to_float64(src[j], half)
                    if COUNT_INF:
                        bad += np.isinf(v)
                    store_float(tmp, j, (v - ta[j]) * ts[j] + tb[j], out_half)
                f += w
            stream_copy(buf[:m], outf, e)
            e += m
        if nvec:  # the register kernel in spans of whole periods, each prefetched ahead
            span = LANES * nvec * max(1, PREFETCH_SPAN // (LANES * nvec))
            while e + span <= e1:
                prefetch_ahead(xf, e, span, AHEAD)
                e = u8_affine_head(xf, outf, ta, ts, tb, e, e + span, nvec)
        e = u8_affine_head(xf, outf, ta, ts, tb, e, e1, nvec)  # (streamed: e == e1)
        while e < e1:
            w = min(tile, e1 - e)
            prefetch_ahead(xf, e, w, AHEAD)
            src = xf[e : e + w]
            dst = outf[e : e + w]
            for j in range(w):
                v = to_float64(src[j], half)
                if COUNT_INF:
                    bad += np.isinf(v)
                store_float(dst, j, (v - ta[j]) * ts[j] + tb[j], out_half)
            e += w
    if stream:
        stream_fence()
    if COUNT_INF:
        ninf[t] = bad


def tile_rows(nchan: int) -> int:
    """Rows per channels-last tile (see TILE_MIN)."""
    step = TILE_ALIGN // math.gcd(nchan, TILE_ALIGN)  # rows per whole number of vectors
    k = step * -(-TILE_MIN // (nchan * step))
    return k if k * nchan <= TILE_MAX else -(-TILE_MIN // nchan)


def register_periods(x: np.ndarray, out: np.ndarray, nchan: int, tile: int) -> int:
    """``nvec`` of ``_affine_channels_last``: the vectors per period of the register
    kernel for uint8 input and float32 output whose tiles are whole periods, else 0."""
    nvec = period_vectors(nchan) if x.dtype == np.uint8 and out.dtype == np.float32 else 0
    return nvec if nvec and tile % (LANES * nvec) == 0 else 0


def tile_params(a: np.ndarray, s: np.ndarray, b: np.ndarray):
    """Repeat the (C,) parameter vectors ``tile_rows(C)`` times: one tile each (rows of
    one array, filled by broadcasting: a third of the time of three ``np.tile``, which
    a small channels-last batch pays per call)."""
    nchan = a.shape[0]
    t = np.empty((3, tile_rows(nchan), nchan), np.result_type(a, s, b))
    t[0], t[1], t[2] = a, s, b
    return t[0].reshape(-1), t[1].reshape(-1), t[2].reshape(-1)


def _batchnorm_params(mean, m2, n, weight, bias, eps, running, factor, rows):
    """BatchNorm's training step and the affine parameters' tiles in one compiled call
    (a small batch paid 14 us for ``_affine.batchnorm_step``'s dozen numpy operations on
    (C,) vectors, and 5 more for ``tile_params``): ``running`` ((2, C) running mean and
    unbiased variance; (2, 0): none) moved by ``factor`` towards the batch's in place;
    returns (3, rows, C) float64, each of ``mean``, ``weight / sqrt(m2 / n + eps)`` (the
    biased variance; a zero deviation taken as 1) and ``bias`` repeated ``rows`` times
    (``tile_rows``: the channels-last kernel's tiles, whose first rows are the vectors).
    The same operations in the same order as ``batchnorm_step``, nothing contracted
    (built without fastmath), so the same bits."""
    nchan = mean.shape[0]
    keep = 1.0 - factor
    out = np.empty((3, rows, nchan))
    for c in range(nchan):
        if running.shape[1] != 0:
            running[0, c] = keep * running[0, c] + factor * mean[c]
            running[1, c] = keep * running[1, c] + factor * (m2[c] / (n - 1))
        std = np.sqrt(m2[c] / n + eps)
        if std == 0.0:
            std = 1.0
        out[0, 0, c] = mean[c]
        out[1, 0, c] = weight[c] / std
        out[2, 0, c] = bias[c]
    for r in range(1, rows):
        for j in range(3):
            for c in range(nchan):
                out[j, r, c] = out[j, 0, c]
    return out


NO_RUNNING = np.empty((2, 0))  # ``batchnorm_params``' running buffer for no running statistics
batchnorm_params = tagged(_batchnorm_params, "", cache=True, nogil=True, error_model="numpy")


# Serial kernels called on chunks of the work by the CPU backend's threads, named by
# SIMD level (float16 conversions are F16C instructions at the SIMD levels).
_OPTS: dict[str, Any] = dict(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
affine_channels_first = tagged(_affine_channels_first, SIMD_LEVEL, **_OPTS)
affine_channels_last = tagged(_affine_channels_last, SIMD_LEVEL, **_OPTS)
# ... and the builds that also count infinite inputs (scikit-learn's transform refuses
# them: counting while normalizing saves the separate read a check would take)
_INF = {"COUNT_INF": True}
affine_channels_first_inf = tagged(_affine_channels_first, f"inf_{SIMD_LEVEL}", _INF, **_OPTS)
affine_channels_last_inf = tagged(_affine_channels_last, f"inf_{SIMD_LEVEL}", _INF, **_OPTS)


def _copy_rows(src, dst, t, nt):
    """``dst[i] = src[i]`` for the rows of chunk ``t`` of ``nt``: two (M, C) arrays of
    one dtype, any strides. Gathers channels-last rows with gaps (``x[:, ::2]``, RGBA's
    ``x[..., :3]``, reversed rows) into a contiguous slab, and scatters a slab into an
    output laid out so: 2-3x numpy's copy of such rows (rows of 3 bytes: numpy's
    inner loop per row)."""
    m = src.shape[0]
    for i in range(m * t // nt, m * (t + 1) // nt):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


copy_rows = tagged(_copy_rows, "", cache=True, nogil=True)
