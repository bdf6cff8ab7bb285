"""CPU kernels for per-channel batch statistics (count, mean, M2, min, max).

Two layouts, both reducing to per-channel results of shape (C,):

* ``stats_channels_first(x, ...)`` for ``x`` of shape (O, C, L) with any strides:
  each row ``x[o, c]`` is cut into blocks of ``ROW_BLOCK`` elements.
* ``stats_channels_last(xf, C, ...)`` for a C-contiguous (M, C) array passed flat:
  rows are grouped ``k`` at a time into tiles of ``k * C`` elements, so the inner
  loop is long and unit-stride even for C = 3.

Numerics: every block is reduced with two passes over cache-resident data (sum,
then squared deviations from the block mean), and the blocks are combined with
Chan's merge into one accumulator per partition; partitions are merged in a fixed
order at the end. The partition count depends only on the shape, never on the
thread count, so results are bit-for-bit reproducible.

The fast path assumes finite data; a block whose sum is not finite (NaN or inf
inside) is redone by ``_block_slow``, which applies the NaN policy exactly.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .._numerics import (
    chan_merge,
    fmaximum,
    fminimum,
    is_finite_bits,
    merge_max,
    merge_min,
    to_float64,
)

POLICY_PROPAGATE = 0  # NaN counts as a value and poisons mean/var/min/max ("raise" also uses this)
POLICY_OMIT = 1  # NaN is skipped per channel

ROW_BLOCK = 8192  # channels-first: elements of one row reduced as one two-pass block
TILE_MIN = 64  # channels-last: a tile holds at least this many elements
CL_BLOCK = 16384  # channels-last: elements per two-pass block (a multiple of the tile)

# reassoc lets LLVM vectorize the sums, nsz the min/max; no nnan/ninf, so NaN checks stay valid.
_FASTMATH = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, nogil=True)
def _block_slow(r, start, n, step, half, policy):
    """Exact statistics of ``r[start + i * step]`` for i < n, with NaN/inf handling."""
    cnt = 0
    s = numba.float64(0)
    nnan = 0
    ninf = 0
    mn = numba.float64(np.inf)
    mx = numba.float64(-np.inf)
    for i in range(n):
        v = to_float64(r[start + i * step], half)
        if v != v:
            nnan += 1
            if policy == POLICY_OMIT:
                continue
        elif math.isinf(v):
            ninf += 1
        cnt += 1
        s += v
        mn = merge_min(mn, v)
        mx = merge_max(mx, v)
    if cnt == 0:
        return 0, numba.float64(0), numba.float64(0), mn, mx, nnan, ninf
    mean = s / cnt
    if mn == mx and ninf == 0:  # constant finite values: exact mean, M2 exactly 0
        return cnt, mn, numba.float64(0), mn, mx, nnan, ninf
    q = numba.float64(0)
    for i in range(n):
        v = to_float64(r[start + i * step], half)
        if v != v and policy == POLICY_OMIT:
            continue
        d = v - mean
        q += d * d
    return cnt, mean, q, mn, mx, nnan, ninf


def block_fast(r, half):  # pragma: no cover - replaced by the overload in jitted code
    """Statistics of one cache-resident block ``r`` (1-d, 0-based), fast path.

    Returns ``(ok, mean, m2, min, max)``; ``ok`` is False when the block holds a NaN or
    an infinity, and the caller then redoes it with ``_block_slow``.
    """
    raise NotImplementedError


@overload(block_fast, inline="always")
def _block_fast_impl(r, half):
    dt = r.dtype
    if isinstance(dt, types.Integer) and dt.bitwidth <= 16 and isinstance(half, types.NoneType):
        # Small integers: exact integer sums of v and v*v in one pass (int32 lanes for
        # 8-bit data: 8192 * 255**2 < 2**31), so M2 = (n * S2 - S**2) / n is computed from
        # an exact integer numerator and rounded once. This is not the cancelling
        # E[x^2] - E[x]^2 in floating point: no rounding happens before the division.
        acc = np.int32 if dt.bitwidth <= 8 else np.int64

        def impl(r, half):
            n = r.size
            s = acc(0)
            s2 = acc(0)
            mn = acc(r[0])
            mx = acc(r[0])
            for i in range(n):
                v = acc(r[i])
                s = acc(s + v)
                s2 = acc(s2 + v * v)
                mn = v if v < mn else mn
                mx = v if v > mx else mx
            num = np.int64(n) * np.int64(s2) - np.int64(s) * np.int64(s)
            return True, numba.float64(s) / n, numba.float64(num) / n, numba.float64(mn), \
                numba.float64(mx)

        return impl

    native_minmax = isinstance(dt, types.Float) and isinstance(half, types.NoneType)

    def impl(r, half):
        # Two passes over the block: the float64 sum gives the block mean, then the sum
        # of squared deviations from it. min/max in the input's float type when it is
        # float32/64 (twice the SIMD lanes for float32), else in float64.
        n = r.size
        s = numba.float64(0)
        if native_minmax:
            bmn = r[0]
            bmx = r[0]
        else:
            bmn = to_float64(r[0], half)
            bmx = bmn
        for i in range(n):
            v = to_float64(r[i], half)
            s += v
            if native_minmax:
                bmn = fminimum(bmn, r[i])
                bmx = fmaximum(bmx, r[i])
            else:
                bmn = fminimum(bmn, v)
                bmx = fmaximum(bmx, v)
        if not is_finite_bits(s):
            return False, s, s, numba.float64(bmn), numba.float64(bmx)
        if bmn == bmx:  # a constant block: its mean is exact and its M2 exactly 0
            return True, numba.float64(bmn), numba.float64(0), numba.float64(bmn), \
                numba.float64(bmx)
        bm = s / n
        q = numba.float64(0)
        for i in range(n):
            d = to_float64(r[i], half) - bm
            q += d * d
        return True, bm, q, numba.float64(bmn), numba.float64(bmx)

    return impl


def _minmax_value(v, half):  # pragma: no cover - replaced by the overload
    """An element as the type min/max are tracked in (see ``_minmax_empty``)."""
    raise NotImplementedError


@overload(_minmax_value, inline="always")
def _minmax_value_impl(v, half):
    if isinstance(v, types.Float) and isinstance(half, types.NoneType):
        return lambda v, half: v
    return lambda v, half: to_float64(v, half)


def _minmax_empty(n, xf, half):  # pragma: no cover - replaced by the overload
    """Scratch for min/max: the input's own float type (twice the lanes for float32)."""
    raise NotImplementedError


@overload(_minmax_empty)
def _minmax_empty_impl(n, xf, half):
    if isinstance(xf.dtype, types.Float) and isinstance(half, types.NoneType):
        dt = as_dtype(xf.dtype)
        return lambda n, xf, half: np.empty(n, dt)
    return lambda n, xf, half: np.empty(n, np.float64)


@numba.njit(inline="always")
def _merge_partitions(pn, pmean, pm2, pmn, pmx, pnan, pinf, cnt, mean, m2, mn, mx, nnan, ninf):
    """Fold the per-partition accumulators (P, C) into the outputs (C,), in order."""
    nparts, nchan = pn.shape
    for c in range(nchan):
        n = numba.int64(0)
        m = numba.float64(0)
        q = numba.float64(0)
        lo = numba.float64(np.inf)
        hi = numba.float64(-np.inf)
        a = numba.int64(0)
        b = numba.int64(0)
        for p in range(nparts):
            n, m, q = chan_merge(n, m, q, pn[p, c], pmean[p, c], pm2[p, c])
            lo = merge_min(lo, pmn[p, c])
            hi = merge_max(hi, pmx[p, c])
            a += pnan[p, c]
            b += pinf[p, c]
        cnt[c] = n
        mean[c] = m
        m2[c] = q
        mn[c] = lo
        mx[c] = hi
        nnan[c] = a
        ninf[c] = b


def _stats_channels_first(x, half, policy, nparts, cnt, mean, m2, mn, mx, nnan, ninf):
    no, nchan, length = x.shape
    bpr = max(1, (length + ROW_BLOCK - 1) // ROW_BLOCK)
    units = no * nchan * bpr
    pn = np.zeros((nparts, nchan), np.int64)
    pmean = np.zeros((nparts, nchan))
    pm2 = np.zeros((nparts, nchan))
    pmn = np.full((nparts, nchan), np.inf)
    pmx = np.full((nparts, nchan), -np.inf)
    pnan = np.zeros((nparts, nchan), np.int64)
    pinf = np.zeros((nparts, nchan), np.int64)
    for p in numba.prange(nparts):
        u0 = (units * p) // nparts
        u1 = (units * (p + 1)) // nparts
        for u in range(u0, u1):
            row = u // bpr
            lo = (u - row * bpr) * ROW_BLOCK
            hi = min(length, lo + ROW_BLOCK)
            o = row // nchan
            c = row - o * nchan
            r = x[o, c, lo:hi]  # 0-based loops over a slice: no wraparound checks, vectorizable
            n = hi - lo
            ok, bm, q, bmn, bmx = block_fast(r, half)
            bnan = 0
            binf = 0
            if not ok:
                n, bm, q, bmn, bmx, bnan, binf = _block_slow(r, 0, n, 1, half, policy)
            pn[p, c], pmean[p, c], pm2[p, c] = chan_merge(pn[p, c], pmean[p, c], pm2[p, c], n, bm, q)
            pmn[p, c] = merge_min(pmn[p, c], bmn)
            pmx[p, c] = merge_max(pmx[p, c], bmx)
            pnan[p, c] += bnan
            pinf[p, c] += binf
    _merge_partitions(pn, pmean, pm2, pmn, pmx, pnan, pinf, cnt, mean, m2, mn, mx, nnan, ninf)


def _stats_channels_last(xf, nchan, half, policy, nparts, cnt, mean, m2, mn, mx, nnan, ninf):
    nrows = xf.size // nchan
    k = max(1, (TILE_MIN + nchan - 1) // nchan)
    tile = k * nchan
    rpb = k * max(1, CL_BLOCK // tile)  # rows per block, a multiple of k
    nblocks = (nrows + rpb - 1) // rpb
    pn = np.zeros((nparts, nchan), np.int64)
    pmean = np.zeros((nparts, nchan))
    pm2 = np.zeros((nparts, nchan))
    pmn = np.full((nparts, nchan), np.inf)
    pmx = np.full((nparts, nchan), -np.inf)
    pnan = np.zeros((nparts, nchan), np.int64)
    pinf = np.zeros((nparts, nchan), np.int64)
    for p in numba.prange(nparts):
        b0 = (nblocks * p) // nparts
        b1 = (nblocks * (p + 1)) // nparts
        ts = np.empty(tile)
        tmn = _minmax_empty(tile, xf, half)
        tmx = _minmax_empty(tile, xf, half)
        tq = np.empty(tile)
        tmean = np.empty(tile)
        for b in range(b0, b1):
            r0 = b * rpb
            r1 = min(nrows, r0 + rpb)
            e0 = r0 * nchan
            e1 = r1 * nchan
            ts[:] = 0.0
            tmn[:] = np.inf
            tmx[:] = -np.inf
            e = e0
            while e + 4 * tile <= e1:  # four tiles at once: a quarter of the accumulator traffic
                s0 = xf[e : e + tile]
                s1 = xf[e + tile : e + 2 * tile]
                s2 = xf[e + 2 * tile : e + 3 * tile]
                s3 = xf[e + 3 * tile : e + 4 * tile]
                for t in range(tile):
                    ts[t] += (to_float64(s0[t], half) + to_float64(s1[t], half)) + (
                        to_float64(s2[t], half) + to_float64(s3[t], half)
                    )
                    v0 = _minmax_value(s0[t], half)
                    v1 = _minmax_value(s1[t], half)
                    v2 = _minmax_value(s2[t], half)
                    v3 = _minmax_value(s3[t], half)
                    tmn[t] = fminimum(tmn[t], fminimum(fminimum(v0, v1), fminimum(v2, v3)))
                    tmx[t] = fmaximum(tmx[t], fmaximum(fmaximum(v0, v1), fmaximum(v2, v3)))
                e += 4 * tile
            while e < e1:
                w = min(tile, e1 - e)  # a whole tile, or the last rows of the block
                seg = xf[e : e + w]
                for t in range(w):
                    ts[t] += to_float64(seg[t], half)
                    v = _minmax_value(seg[t], half)
                    tmn[t] = fminimum(tmn[t], v)
                    tmx[t] = fmaximum(tmx[t], v)
                e += w
            n = r1 - r0
            for c in range(nchan):  # fold the k copies of each channel; mean of the block
                s = ts[c]
                for j in range(1, k):
                    s += ts[j * nchan + c]
                tmean[c] = s / n
                ts[c] = s
            for j in range(1, k):
                for c in range(nchan):
                    tmean[j * nchan + c] = tmean[c]
            tq[:] = 0.0
            e = e0
            while e + 4 * tile <= e1:
                s0 = xf[e : e + tile]
                s1 = xf[e + tile : e + 2 * tile]
                s2 = xf[e + 2 * tile : e + 3 * tile]
                s3 = xf[e + 3 * tile : e + 4 * tile]
                for t in range(tile):
                    m = tmean[t]
                    d0 = to_float64(s0[t], half) - m
                    d1 = to_float64(s1[t], half) - m
                    d2 = to_float64(s2[t], half) - m
                    d3 = to_float64(s3[t], half) - m
                    tq[t] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
                e += 4 * tile
            while e < e1:
                w = min(tile, e1 - e)
                seg = xf[e : e + w]
                for t in range(w):
                    d = to_float64(seg[t], half) - tmean[t]
                    tq[t] += d * d
                e += w
            for c in range(nchan):
                q = tq[c]
                bmn = numba.float64(tmn[c])
                bmx = numba.float64(tmx[c])
                for j in range(1, k):
                    q += tq[j * nchan + c]
                    bmn = fminimum(bmn, numba.float64(tmn[j * nchan + c]))
                    bmx = fmaximum(bmx, numba.float64(tmx[j * nchan + c]))
                bn = n
                bm = tmean[c]
                if bmn == bmx:  # a constant block: exact mean, M2 exactly 0
                    bm = bmn
                    q = numba.float64(0)
                bnan = 0
                binf = 0
                if not is_finite_bits(ts[c]):
                    bn, bm, q, bmn, bmx, bnan, binf = _block_slow(xf, e0 + c, n, nchan, half, policy)
                pn[p, c], pmean[p, c], pm2[p, c] = chan_merge(
                    pn[p, c], pmean[p, c], pm2[p, c], bn, bm, q
                )
                pmn[p, c] = merge_min(pmn[p, c], bmn)
                pmx[p, c] = merge_max(pmx[p, c], bmx)
                pnan[p, c] += bnan
                pinf[p, c] += binf
    _merge_partitions(pn, pmean, pm2, pmn, pmx, pnan, pinf, cnt, mean, m2, mn, mx, nnan, ninf)


# One source, two targets: the serial build avoids waking the thread pool for small
# batches (and is the safe choice inside foreign thread pools).
_OPTS = dict(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
stats_channels_first_parallel = numba.njit(parallel=True, **_OPTS)(_stats_channels_first)
stats_channels_first_serial = numba.njit(**_OPTS)(_stats_channels_first)
stats_channels_last_parallel = numba.njit(parallel=True, **_OPTS)(_stats_channels_last)
stats_channels_last_serial = numba.njit(**_OPTS)(_stats_channels_last)
