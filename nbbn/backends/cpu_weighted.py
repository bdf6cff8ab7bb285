"""Weighted statistics kernels (``RunningStats.update(x, sample_weight=w)``) and the
merge of weighted states, on the CPU.

The unweighted kernels (``cpu_stats``) are untouched; a weighted batch is reduced here
and its statistics carry a float64 weight sum per channel (``BatchStats.weight``).
The numerics are those of the rest of nbbn: each channel is reduced in two passes
around a shift (its first finite value in the rows of the largest weight:
:func:`_first_finite`), so no sum of raw values is formed:

1. ``W = sum w``, ``S = sum w (x - s)``, ``delta = S / W``, and the first mean
   ``m = s + delta`` as a double-double ``hi + lo`` (:func:`recentre`);
2. ``d = (x - hi) - lo``, ``Q = sum w d^2``, ``E = sum w d`` (the rounding left in
   ``m``), then ``M2 = Q - E^2 / W`` and the mean ``hi + (lo + E / W)`` as a
   double-double (:func:`shifted_moments`);

and parts are merged with Chan's formula (:mod:`nbbn._merge`), the weight sums taking
the place of the counts, so a weighted state merges with unweighted ones (whose weight
sum is their count) exactly as two unweighted states do. A row of weight 0 is absent:
it adds nothing to any count, minimum or maximum.

``W``, ``Q`` and ``E`` are summed in blocks of ``BLOCK`` values whose sums are added
with Kahan's compensation (:func:`kahan_add`), so their rounding does not grow with the
number of values (a plain running sum of 200,000 weighted rows left 1e-12 of the
variance; this leaves about 1e-16). ``S`` needs no care: ``E`` corrects it.

The kernels are compiled for float32, float64 and uint8: the input is handed to them
in chunks of whole rows of at most ``CHUNK_BYTES`` (counted as float64), float32,
float64 and uint8 as they are and other dtypes converted to float64 (exact for every
dtype but integers beyond 2**53); the chunks are spread over nbbn's threads and merged
in their order.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .._layout import Canonical
from .._policy import POLICY_OMIT
from ._jit import cached
from ._stats import COUNT_LIMIT, BatchStats, count_limit_error
from .cpu_numerics import (
    chan_merge,
    dd_mean,
    dd_quot,
    fmax_fast,
    fmax_num,
    fmin_fast,
    fmin_num,
    inf_mean,
    is_finite_bits,
    merge_max,
    merge_min,
)

__all__ = ["BLOCK", "grid_centre", "kahan_add", "merge", "recentre", "reduce", "scaled_weights",
           "shifted_moments", "with_scaled_weights"]


BLOCK = 128  # values summed plainly before their sum is added with compensation
LANES = 32  # a channels-first run's whole blocks are summed in LANES lanes ...
GROUP = BLOCK // LANES  # ... of GROUP values per block (the loop over lanes vectorizes)
SPAN = 8  # ... and folded every SPAN blocks: a lane sums SPAN * GROUP values plainly


@numba.njit(inline="always")
def _span_first(x, o, c, i0, nb, s, la, lmn, lmx):  # pragma: no cover - compiled
    """The first pass over the ``nb`` whole blocks ``x[o, c, i0:i0 + nb * BLOCK]``: per lane
    ``t`` the sum of ``v - s`` and the min/max of the values ``i0 + j * LANES + t``
    into ``la``, ``lmn``, ``lmx`` (of LANES entries). Each lane's sum is added in a fixed
    order (no reassociation: the result does not depend on the vector width); the
    min/max of a span with a NaN are unspecified (its sum is NaN, and the caller reads
    it again). The lane count is read from ``la`` at run time: with a constant one LLVM
    unrolls the loops whole and vectorizes none (1.0 against 0.25 ns per value)."""
    nl = la.shape[0]
    for t in range(nl):
        la[t] = 0.0
        lmn[t] = np.inf
        lmx[t] = -np.inf
    for b in range(nb):
        blk = x[o, c, i0 + b * BLOCK:i0 + (b + 1) * BLOCK]
        for t in range(nl):
            a = la[t]
            for j in range(GROUP):
                a += numba.float64(blk[j * nl + t]) - s
            la[t] = a
        for t in range(nl):  # (a loop of its own: one output array per loop vectorizes)
            lo = lmn[t]
            hi = lmx[t]
            for j in range(GROUP):
                v = numba.float64(blk[j * nl + t])
                lo = fmin_fast(lo, v)
                hi = fmax_fast(hi, v)
            lmn[t] = lo
            lmx[t] = hi


@numba.njit(inline="always")
def _span_second(x, o, c, i0, nb, s, dc, lq, le):  # pragma: no cover - compiled
    """The second pass over the ``nb`` whole blocks ``x[o, c, i0:i0 + nb * BLOCK]``: per
    lane the sums of ``d^2`` and ``d`` of ``d = (v - s) - dc`` into ``lq`` and ``le``."""
    nl = lq.shape[0]
    for t in range(nl):
        lq[t] = 0.0
        le[t] = 0.0
    for b in range(nb):
        blk = x[o, c, i0 + b * BLOCK:i0 + (b + 1) * BLOCK]
        for t in range(nl):
            q = lq[t]
            e = le[t]
            for j in range(GROUP):
                d = (numba.float64(blk[j * nl + t]) - s) - dc
                q += d * d
                e += d
            lq[t] = q
            le[t] = e


@numba.njit(inline="always")
def _fold_sum(a):  # pragma: no cover - compiled
    """The sum of the lanes ``a`` (a power of two of them), overwriting them: halves
    added pairwise, a fixed order (a running sum over the lanes is one chain of
    dependent adds, which took as long as the block's own loops)."""
    h = a.shape[0] // 2
    while h >= 1:
        for t in range(h):
            a[t] += a[t + h]
        h //= 2
    return a[0]


@numba.njit(inline="always")
def _fold_min_max(lo, hi, amn, amx):  # pragma: no cover - compiled
    """``lo`` and ``hi`` merged with the minimum of the lanes ``amn`` and the maximum of
    ``amx``, folded as :func:`_fold_sum` (overwriting them). A NaN ``lo`` or ``hi`` (an
    earlier NaN under "propagate") stays NaN: the builtin ``min``/``max`` keep it, where
    ``fmin_fast`` would not."""
    h = amn.shape[0] // 2
    while h >= 1:
        for t in range(h):
            amn[t] = fmin_fast(amn[t], amn[t + h])
            amx[t] = fmax_fast(amx[t], amx[t + h])
        h //= 2
    return min(lo, amn[0]), max(hi, amx[0])


@numba.njit(fastmath=False)
def kahan_add(total, comp, x):  # pragma: no cover - compiled
    """``(total, comp)`` after adding ``x`` with Kahan's compensation: the sum is
    ``total - comp``, rounded about once whatever the number of terms (a plain running
    sum of n terms of one sign drifts by up to n roundings); an infinite sum stays
    infinite, with no compensation."""
    y = x - comp
    t = total + y
    c = (t - total) - y
    # once the sum overflows, the compensation is inf - inf: 0 keeps the sum infinite
    # (as a plain sum's) where a NaN compensation would make it NaN
    return t, c if c - c == 0.0 else 0.0


@numba.njit(fastmath=False)
def recentre(shift, delta):  # pragma: no cover - compiled
    """The second pass's centre: the first pass's mean ``shift + delta`` as a
    double-double ``(hi, lo)`` (``(shift, delta)`` unchanged when ``delta`` is not
    finite). Deviations from it, rather than from the shift, keep the mean's rounding
    to about 2**-53 of the values' mean absolute deviation: a shift far from the mean
    (a first value of 1e6 among zeros) put 2**-53 of that distance into every term."""
    if not math.isfinite(delta):
        return shift, delta
    return dd_mean(shift, delta)


@numba.njit(fastmath=False)
def grid_centre(shift, delta, integral):  # pragma: no cover - compiled
    """:func:`recentre`, and for ``integral`` values (integers) that mean's nearest
    integer, ``(k, 0.0)``: every deviation from it is then an exact integer and, with
    weights that are integers (times a power of two), so are their weighted sums, and
    :func:`shifted_moments` gives the mean correctly rounded. (Centred on the unrounded
    mean, each deviation rounded: int32 means came back up to 63 ulp off the exact
    mean.) Its distance from the mean, at most about 1/2, costs the variance little, as
    for the unweighted kernels (``cpu_stats.on_grid``)."""
    hi, lo = recentre(shift, delta)
    if integral and math.isfinite(lo):
        return math.floor(hi + 0.5), 0.0
    return hi, lo


@numba.njit(fastmath=False)
def shifted_moments(shift, wsum, delta, q, e):  # pragma: no cover - compiled
    """``(mean hi, mean lo, M2)`` of values of weight sum ``wsum > 0`` from the second
    pass around the first pass's mean ``shift + delta`` (a double-double, from
    :func:`recentre`): ``q = sum w d^2`` and ``e = sum w d`` of ``d = (x - shift) -
    delta``. An infinite value makes ``delta`` infinite (or NaN for both signs), and the
    mean is then ``shift + delta``, as numpy's (``e`` is NaN); M2 is then NaN, as
    numpy's variance."""
    if wsum <= 0.0:
        return shift, 0.0, 0.0
    if not math.isfinite(delta):
        return shift + delta, 0.0, math.nan
    # deviations that overflow (values of both signs near 1e308) make ``e`` inf or
    # NaN, and ``q`` inf: M2 is inf, and the mean keeps the first pass's rounding
    corr = e / wsum if math.isfinite(e) else 0.0
    # (e^2 / wsum <= q, so an overflowed q is M2's overflow: inf, where e * corr can
    # overflow too and inf - inf would be NaN; a NaN q stays NaN)
    m2 = q - e * corr if q < math.inf else q
    if m2 < 0.0:  # (not max(): a NaN under "propagate" stays NaN)
        m2 = 0.0
    if delta == 0.0 and math.isfinite(e):
        # (a centre on the values' grid, integers: ``e`` exact, and the quotient's
        # remainder kept makes ``hi`` the mean correctly rounded, as ``dd_quot`` does
        # for the unweighted kernels)
        hi, lo = dd_quot(shift, e, wsum)
    else:
        hi, lo = dd_mean(shift, delta + corr)
    return hi, lo, m2


@numba.njit(fastmath=False)
def _scaled_means(x, w, rpw, redo, wsum, shift, delta):  # pragma: no cover - compiled
    """For the channels ``redo``: the mean as ``(shift, delta)``, a double-double, from
    the values scaled by 2^-64 and the weights by the power of two that brings their
    sum below 1 (both exact above the subnormals), so that no product or sum can
    overflow (weights up to float64's range times values near 1e308): a first mean,
    corrected by the sum of the scaled deviations from it (two passes, as the unscaled
    kernel), scaled back. NaNs are skipped: a channel is redone only where they are
    omitted."""
    no, nchan, length = x.shape
    s = np.zeros(nchan)
    wexp = np.zeros(nchan, np.int64)
    for c in range(nchan):
        wexp[c] = math.frexp(wsum[c])[1]  # wsum = m 2^wexp, 0.5 <= m < 1
    for step in range(2):
        for o in range(no):
            wo = w[o // rpw]
            if wo == 0.0:
                continue
            for c in range(nchan):
                if not redo[c]:
                    continue
                f = math.ldexp(wo, -wexp[c])
                for i in range(length):
                    v = numba.float64(x[o, c, i])
                    if not math.isnan(v):
                        s[c] += f * (math.ldexp(v, -64) - shift[c]) if step else \
                            f * math.ldexp(v, -64)
        for c in range(nchan):
            if redo[c]:
                total = math.ldexp(wsum[c], -wexp[c])
                if step:
                    hi, lo = dd_mean(shift[c], s[c] / total)
                    shift[c] = math.ldexp(hi, 64)
                    delta[c] = math.ldexp(lo, 64)
                else:
                    shift[c] = s[c] / total
                    s[c] = 0.0


@numba.njit(fastmath=False)
def _first_finite(x, w, rpw):  # pragma: no cover - compiled
    """Each channel's shift: its first finite value in the rows of the largest weight
    (the first such weight), else its first finite value in a row of nonzero weight, in
    row order (0 where it has none). The largest weight ``w_k`` bounds ``(x_k - mean)^2``
    by the variance times ``W / w_k``, at most ``n`` times it, as for unweighted data;
    a first value of tiny weight far from the mean (1e92 weighted 1e-136 beside -5.6e32
    weighted 8e59, of variance 47.9) put the first mean further off than the values'
    spread, and ``M2 = Q - E^2 / W`` cancelled to 0."""
    no, nchan, length = x.shape
    shift = np.zeros(nchan)
    have = np.zeros(nchan, np.bool_)
    found = 0
    nw = min(w.shape[0], (no + rpw - 1) // rpw)
    if nw == 0:
        return shift
    k = np.argmax(w[:nw])
    for o in range(k * rpw, min((k + 1) * rpw, no)):
        found = _take_finite(x, o, shift, have, found)
    for o in range(no):
        if found == nchan:
            break
        if w[o // rpw] != 0.0:
            found = _take_finite(x, o, shift, have, found)
    return shift


@numba.njit(fastmath=False)
def _take_finite(x, o, shift, have, found):  # pragma: no cover - compiled
    """:func:`_first_finite`'s step: each channel without a shift yet takes its first
    finite value in row ``o``; the number of channels with one."""
    for c in range(x.shape[1]):
        if have[c]:
            continue
        for i in range(x.shape[2]):
            v = numba.float64(x[o, c, i])
            if math.isfinite(v):
                shift[c] = v
                have[c] = True
                found += 1
                break
    return found


@numba.njit(fastmath=False)
def _first_mean(x, w, rpw, omit, integral, wsum, wsumc, part, s1, nnan, ninf, shift
                ):  # pragma: no cover - compiled
    """After the first pass: each channel's weight sum finished (its last block
    Kahan-added, the compensation applied, in ``wsum``) and its first mean as the
    double-double ``(shift, delta)`` (:func:`grid_centre`: for ``integral`` input its
    nearest integer); returns ``delta``."""
    nchan = wsum.shape[0]
    delta = np.zeros(nchan)
    redo = np.zeros(nchan, np.bool_)
    for c in range(nchan):
        wsum[c], wsumc[c] = kahan_add(wsum[c], wsumc[c], part[c])
        wsum[c] -= wsumc[c]
        if wsum[c] > 0.0:
            delta[c] = s1[c] / wsum[c]
            # finite values whose weighted deviations overflowed (both signs near
            # 1e308): summed again scaled by 2^-64, as the unweighted kernels do
            redo[c] = not math.isfinite(delta[c]) and ninf[c] == 0 and (
                omit or nnan[c] == 0)
    if redo.any():
        _scaled_means(x, w, rpw, redo, wsum, shift, delta)
    for c in range(nchan):
        shift[c], delta[c] = grid_centre(shift[c], delta[c], integral)
    return delta


@numba.njit(fastmath=False)
def _store_weighted(omit, shift, wsum, delta, qsums, esums, counts, mn, mx, si, sf, sw
                    ):  # pragma: no cover - compiled
    """After the second pass: ``qsums`` and ``esums`` (Kahan sum, compensation, last
    block) of ``sum w d^2`` and ``sum w d`` finished, the moments
    (:func:`shifted_moments`) and ``counts`` (count, NaNs, infinities) written."""
    q, qc, part = qsums
    e, ec, epart = esums
    n, nnan, ninf = counts
    for c in range(wsum.shape[0]):
        q[c], qc[c] = kahan_add(q[c], qc[c], part[c])
        e[c], ec[c] = kahan_add(e[c], ec[c], epart[c])
        hi, lo, m2 = shifted_moments(shift[c], wsum[c], delta[c], q[c] - qc[c],
                                     e[c] - ec[c])
        if ninf[c] and (omit or nnan[c] == 0):  # the infinities' signs decide (the
            hi, lo, m2 = inf_mean(mn[c], mx[c]), 0.0, math.nan  # finite sum may be NaN)
        si[0, c] = n[c]
        si[1, c] = nnan[c]
        si[2, c] = ninf[c]
        sf[0, c] = hi
        sf[1, c] = lo
        sf[2, c] = m2
        sf[3, c] = mn[c]
        sf[4, c] = mx[c]
        sw[c] = wsum[c]


@cached(nogil=True)
def _weighted_stats(x, w, rpw, policy, integral, si, sf, sw):  # pragma: no cover - compiled
    """Statistics of ``x`` (O, C, I) with weights ``w[o // rpw]`` into ``si`` (3, C),
    ``sf`` (5, C) and ``sw`` (C,), replacing what they hold; ``integral``: the values
    are integers (centred on one, :func:`_first_mean`).

    Each row's run of a channel (``I`` values of one weight) is read in spans of up to
    ``SPAN`` whole blocks, in ``LANES`` lanes that each sum at most ``SPAN * GROUP``
    values plainly and are then added pairwise (:func:`_span_first`, :func:`_fold_sum`);
    the run's last values (fewer than a block) are summed plainly. Each span's sums
    times the weight go into the channel's block sums (Kahan-added every ``BLOCK``
    values or more). A span is first read without a test per value; a span whose sum
    is not finite (a NaN, an infinity, or deviations that overflow) is read again value
    by value."""
    no, nchan, length = x.shape
    omit = policy == POLICY_OMIT
    shift = _first_finite(x, w, rpw)
    n = np.zeros(nchan, np.int64)
    nnan = np.zeros(nchan, np.int64)
    ninf = np.zeros(nchan, np.int64)
    wsum = np.zeros(nchan)
    wsumc = np.zeros(nchan)
    part = np.zeros(nchan)
    inblock = np.zeros(nchan, np.int64)
    s1 = np.zeros(nchan)
    mn = np.full(nchan, np.inf)
    mx = np.full(nchan, -np.inf)
    la = np.empty(LANES)
    lb = np.empty(LANES)
    lc = np.empty(LANES)
    for o in range(no):
        wo = w[o // rpw]
        if wo == 0.0:
            continue
        for c in range(nchan):
            s = shift[c]
            i1 = 0
            while i1 < length:
                i0 = i1
                nb = min(SPAN, (length - i0) // BLOCK)
                i1 = i0 + nb * BLOCK if nb else length  # whole blocks, or the run's end
                acc = 0.0
                lo = mn[c]
                hi = mx[c]
                if nb:
                    _span_first(x, o, c, i0, nb, s, la, lb, lc)
                    acc = _fold_sum(la)
                    lo, hi = _fold_min_max(lo, hi, lb, lc)
                else:
                    for i in range(i0, i1):
                        v = numba.float64(x[o, c, i])
                        acc += v - s
                        lo = min(lo, v)
                        hi = max(hi, v)
                k = i1 - i0
                if not math.isfinite(acc):  # the run again, value by value
                    acc = 0.0
                    k = 0
                    lo = mn[c]
                    hi = mx[c]
                    for i in range(i0, i1):
                        v = numba.float64(x[o, c, i])
                        if math.isnan(v):
                            nnan[c] += 1
                            if omit:
                                continue
                        elif math.isinf(v):
                            ninf[c] += 1
                        k += 1
                        acc += v - s
                        lo = merge_min(lo, v)
                        hi = merge_max(hi, v)
                n[c] += k
                s1[c] += wo * acc
                mn[c] = lo
                mx[c] = hi
                part[c] += wo * k
                inblock[c] += k
                if inblock[c] >= BLOCK:
                    wsum[c], wsumc[c] = kahan_add(wsum[c], wsumc[c], part[c])
                    part[c] = 0.0
                    inblock[c] = 0
    delta = _first_mean(x, w, rpw, omit, integral, wsum, wsumc, part, s1, nnan, ninf,
                        shift)
    q = np.zeros(nchan)
    qc = np.zeros(nchan)
    e = np.zeros(nchan)
    ec = np.zeros(nchan)
    epart = np.zeros(nchan)
    part[:] = 0.0
    inblock[:] = 0
    for o in range(no):
        wo = w[o // rpw]
        if wo == 0.0:
            continue
        for c in range(nchan):
            s = shift[c]
            dc = delta[c]
            skip = omit and nnan[c] > 0
            i1 = 0
            while i1 < length:
                i0 = i1
                nb = 0 if skip else min(SPAN, (length - i0) // BLOCK)
                i1 = i0 + nb * BLOCK if nb else min(i0 + BLOCK, length)
                qq = 0.0
                ee = 0.0
                k = 0
                if nb:
                    _span_second(x, o, c, i0, nb, s, dc, la, lb)
                    qq = _fold_sum(la)
                    ee = _fold_sum(lb)
                    k = i1 - i0
                else:
                    for i in range(i0, i1):
                        v = numba.float64(x[o, c, i])
                        if skip and math.isnan(v):
                            continue
                        d = (v - s) - dc
                        qq += d * d
                        ee += d
                        k += 1
                part[c] += wo * qq
                epart[c] += wo * ee
                inblock[c] += k
                if inblock[c] >= BLOCK:
                    q[c], qc[c] = kahan_add(q[c], qc[c], part[c])
                    e[c], ec[c] = kahan_add(e[c], ec[c], epart[c])
                    part[c] = 0.0
                    epart[c] = 0.0
                    inblock[c] = 0
    _store_weighted(omit, shift, wsum, delta, (q, qc, part), (e, ec, epart),
                    (n, nnan, ninf), mn, mx, si, sf, sw)


@numba.njit(inline="always")
def _rows_masked(x, w, rpw, b0, b1, shift, bs, bw, bn, bmn, bmx):  # pragma: no cover
    """Rows ``b0 <= o < b1`` of a table into the block's per-channel sums, weight,
    count, min and max (reset here), its NaNs left out by a select per value and
    ``fmin_num`` (no branch: the loops vectorize)."""
    bs[:] = 0.0
    bw[:] = 0.0
    bn[:] = 0.0
    bmn[:] = np.inf
    bmx[:] = -np.inf
    for o in range(b0, b1):
        wo = w[o // rpw]
        if wo == 0.0:
            continue
        for c in range(x.shape[1]):
            v = numba.float64(x[o, c, 0])
            ok = v == v
            bs[c] += wo * (v - shift[c]) if ok else 0.0
            bw[c] += wo if ok else 0.0
        for c in range(x.shape[1]):
            v = numba.float64(x[o, c, 0])
            bmn[c] = fmin_num(bmn[c], v)  # (NaN ignored)
            bmx[c] = fmax_num(bmx[c], v)
            bn[c] += 1.0 if v == v else 0.0


@cached(nogil=True)
def _weighted_rows(x, w, rpw, policy, integral, si, sf, sw):  # pragma: no cover - compiled
    """:func:`_weighted_stats` of an (O, C, 1) ``x`` (a table, channels-last rows), in
    blocks of ``BLOCK`` rows: each row's channels updated side by side (loops over the
    channels that vectorize: no test per value, min/max by ``fmin_fast``), into the
    block's own sums, which are then added per channel (the weight sums Kahan-added).

    A channel whose block sum is not finite (a NaN, an infinity, or deviations that
    overflow) is read again value by value for that block. Where NaNs are omitted, a
    block with a NaN is first read again with the NaNs selected out
    (:func:`_rows_masked`), and so is the next block directly (NaNs come in runs of
    rows); in the second pass every block is, once a NaN was met."""
    no, nchan, _ = x.shape
    omit = policy == POLICY_OMIT
    shift = _first_finite(x, w, rpw)
    n = np.zeros(nchan, np.int64)
    nnan = np.zeros(nchan, np.int64)
    ninf = np.zeros(nchan, np.int64)
    wsum = np.zeros(nchan)
    wsumc = np.zeros(nchan)
    part = np.zeros(nchan)
    s1 = np.zeros(nchan)
    mn = np.full(nchan, np.inf)
    mx = np.full(nchan, -np.inf)
    bs = np.empty(nchan)  # the block's sums, min and max
    bmn = np.empty(nchan)
    bmx = np.empty(nchan)
    bwc = np.empty(nchan)  # ... and, NaNs left out, its weights and counts per channel
    bnc = np.empty(nchan)
    masked = False
    for b0 in range(0, no, BLOCK):
        b1 = min(no, b0 + BLOCK)
        bw = 0.0  # the weight and number of the block's rows of nonzero weight
        bn = 0
        for o in range(b0, b1):
            wo = w[o // rpw]
            bw += wo
            bn += wo != 0.0
        if not masked:
            bs[:] = 0.0
            bmn[:] = np.inf
            bmx[:] = -np.inf
            for o in range(b0, b1):
                wo = w[o // rpw]
                if wo == 0.0:
                    continue
                # (two loops: in one, the checks that its four arrays do not overlap were
                # more than LLVM's vectorizer takes, and it stayed scalar)
                for c in range(nchan):
                    bs[c] += wo * (numba.float64(x[o, c, 0]) - shift[c])
                for c in range(nchan):
                    v = numba.float64(x[o, c, 0])
                    bmn[c] = fmin_fast(bmn[c], v)  # (unspecified if NaN: redone below)
                    bmx[c] = fmax_fast(bmx[c], v)
            if omit:
                for c in range(nchan):
                    masked |= not is_finite_bits(bs[c])
        if masked:  # (the block's NaNs, most likely, or the previous block's)
            _rows_masked(x, w, rpw, b0, b1, shift, bs, bwc, bnc, bmn, bmx)
        nan_met = False
        for c in range(nchan):
            if is_finite_bits(bs[c]):
                s1[c] += bs[c]
                mn[c] = min(mn[c], bmn[c])
                mx[c] = max(mx[c], bmx[c])
                if masked:
                    kept = numba.int64(bnc[c])
                    nnan[c] += bn - kept
                    nan_met |= kept < bn
                    part[c] = bwc[c]
                    n[c] += kept
                else:
                    part[c] = bw
                    n[c] += bn
            else:  # the block's channel again, value by value
                part[c] = 0.0
                for o in range(b0, b1):
                    wo = w[o // rpw]
                    if wo == 0.0:
                        continue
                    v = numba.float64(x[o, c, 0])
                    if math.isnan(v):
                        nan_met = True
                        nnan[c] += 1
                        if omit:
                            continue
                    elif math.isinf(v):
                        ninf[c] += 1
                    s1[c] += wo * (v - shift[c])
                    mn[c] = merge_min(mn[c], v)
                    mx[c] = merge_max(mx[c], v)
                    part[c] += wo
                    n[c] += 1
            wsum[c], wsumc[c] = kahan_add(wsum[c], wsumc[c], part[c])
        masked = omit and nan_met
    part[:] = 0.0
    delta = _first_mean(x, w, rpw, omit, integral, wsum, wsumc, part, s1, nnan, ninf,
                        shift)
    q = np.zeros(nchan)
    qc = np.zeros(nchan)
    e = np.zeros(nchan)
    ec = np.zeros(nchan)
    epart = np.zeros(nchan)
    ecomp = np.zeros(nchan)
    skip = False  # NaNs omitted, and met
    for c in range(nchan):
        skip |= omit and nnan[c] > 0
    for b0 in range(0, no, BLOCK):
        b1 = min(no, b0 + BLOCK)
        part[:] = 0.0
        epart[:] = 0.0
        ecomp[:] = 0.0
        for o in range(b0, b1):
            wo = w[o // rpw]
            if wo == 0.0:
                continue
            # E by Kahan's compensation per value: one value far from the mean (1e6
            # among values near 3) made E's plain block sum round at 1e-10 on every
            # other term, up to 7 units of 2^-52 of the mean (in a loop of its own, as
            # above; NaNs selected out, where omitted, in loops of their own too)
            if skip:
                for c in range(nchan):
                    v = numba.float64(x[o, c, 0])
                    d = (v - shift[c]) - delta[c] if v == v else 0.0
                    part[c] += wo * d * d
                for c in range(nchan):
                    v = numba.float64(x[o, c, 0])
                    y = (wo * ((v - shift[c]) - delta[c]) if v == v else 0.0) - ecomp[c]
                    t = epart[c] + y
                    ecomp[c] = (t - epart[c]) - y
                    epart[c] = t
            else:
                for c in range(nchan):
                    d = (numba.float64(x[o, c, 0]) - shift[c]) - delta[c]
                    part[c] += wo * d * d
                for c in range(nchan):
                    y = wo * ((numba.float64(x[o, c, 0]) - shift[c]) - delta[c]) - ecomp[c]
                    t = epart[c] + y
                    ecomp[c] = (t - epart[c]) - y
                    epart[c] = t
        for c in range(nchan):
            q[c], qc[c] = kahan_add(q[c], qc[c], part[c])
            e[c], ec[c] = kahan_add(e[c], ec[c], epart[c] - ecomp[c])
    part[:] = 0.0
    epart[:] = 0.0
    _store_weighted(omit, shift, wsum, delta, (q, qc, part), (e, ec, epart),
                    (n, nnan, ninf), mn, mx, si, sf, sw)


@cached(nogil=True)
def _merge_weighted(si, sf, sw, pi, pf, pw):  # pragma: no cover - compiled
    """Merge the part ``(pi, pf, pw)`` into the state ``(si, sf, sw)`` in place."""
    for c in range(si.shape[1]):
        wn, hi, lo, m2 = chan_merge(sw[c], sf[0, c], sf[1, c], sf[2, c],
                                    pw[c], pf[0, c], pf[1, c], pf[2, c])
        sw[c] = wn
        sf[0, c] = hi
        sf[1, c] = lo
        sf[2, c] = m2
        sf[3, c] = merge_min(sf[3, c], pf[3, c])
        sf[4, c] = merge_max(sf[4, c], pf[4, c])
        si[0, c] += pi[0, c]
        si[1, c] += pi[1, c]
        si[2, c] += pi[2, c]


def merge(state: BatchStats, part: BatchStats) -> BatchStats:
    """``part`` merged into the host ``state`` in place (either may be unweighted: its
    weight sum is its count); the state becomes weighted."""
    if (part.ints > COUNT_LIMIT - state.ints).any():  # (counts >= 0: no overflow here)
        raise count_limit_error(state.ints, part.ints)
    weight = state.count.astype(np.float64) if state.weight is None else state.weight
    part_weight = np.ascontiguousarray(part.weight_sum())
    with np.errstate(over="ignore"):
        total = weight + part_weight
    if not np.isfinite(total).all():  # (each side is finite: their sum overflowed)
        c = int(np.flatnonzero(~np.isfinite(total))[0])
        raise ValueError(
            f"the weighted count would overflow float64: {float(weight[c])!r} + "
            f"{float(part_weight[c])!r} in channel {c}; sample weights must keep the total "
            "weight finite (scale them down). Nothing was changed.")
    # one kernel call, which cannot stop halfway; only once it has run is the state
    # weighted (a failure before it, a Ctrl-C in its first compile, changes nothing)
    _merge_weighted(state.ints, state.floats, weight, part.ints, part.floats, part_weight)
    state.weight = weight
    return state


CHUNK_BYTES = 16 << 20  # float64 bytes per chunk handed to the kernel


def _piece(x3: np.ndarray, w: np.ndarray, policy: int, bf16: bool = False) -> BatchStats:
    """The statistics of one (O, C, I) piece with weights ``w[o // rpw]``, in chunks of
    whole rows as C-contiguous read-only arrays, float32, float64 and uint8 as they are
    and other dtypes converted to float64 (six compiled kernels in all,
    whatever the input dtypes and layouts, and bounded extra memory). The chunks are spread
    over nbbn's threads (each converts and reduces its own) and merged in their order,
    so the result does not depend on the thread count."""
    from .cpu import _run

    nchan = x3.shape[1]
    integral = not bf16 and x3.dtype.kind in "biu"  # (centred on an integer)
    rpw = x3.shape[0] // w.shape[0]
    per_row = max(1, rpw * nchan * x3.shape[2] * 8)
    step = max(1, CHUNK_BYTES // per_row)  # rows (of weight) per chunk
    starts = range(0, w.shape[0], step)
    parts: list[BatchStats | None] = [None] * len(starts)

    def chunk(k: int) -> None:
        r0 = starts[k]
        src = x3[r0 * rpw:(r0 + step) * rpw]
        if bf16:  # bfloat16 bits: the high half of a float32
            src = (src.astype(np.uint32) << np.uint32(16)).view(np.float32)
        # float32 and float64 as they are (a float64 copy of float32 cost more than the
        # kernel's passes), and uint8 too (its float64 copy is 8 times its size: a
        # table took 25 times its unweighted time); other dtypes converted to float64
        # (exact below 2**53)
        native = not bf16 and src.dtype in (np.float32, np.float64, np.uint8)
        data = np.ascontiguousarray(src, dtype=src.dtype if native else np.float64)
        if data.flags.writeable:  # one compiled type for writable and read-only input
            data = data.view()
            data.flags.writeable = False
        part = BatchStats.uninitialized(nchan)
        part.weight = np.empty(nchan)
        kernel = _weighted_rows if data.shape[2] == 1 else _weighted_stats
        kernel(data, w[r0:r0 + step], rpw, policy, integral, part.ints, part.floats,
               part.weight)
        parts[k] = part

    def every(t: int, nt: int) -> None:
        for k in range(t, len(starts), nt):
            chunk(k)

    _run(every, (), (), x3.size, len(starts))  # (nbbn's threads, as the kernels)
    done = [p for p in parts if p is not None]
    assert len(done) == len(parts)
    total = done[0]
    for part in done[1:]:
        total = merge(total, part)
    return total


_TINY_NORMAL = float(np.finfo(np.float64).tiny)


def scaled_weights(weight: np.ndarray) -> tuple[np.ndarray, int]:
    """``(weight * 2**-shift, shift)``: the weights scaled by the power of two that brings
    the largest into [1, 2) (``shift`` 0 where none is positive, or where a scaled
    weight would be subnormal: a range lifted past 2**-500..2**500 in the tests)."""
    pos = weight[weight > 0.0]
    if not pos.size:
        return weight, 0
    shift = math.frexp(float(pos.max()))[1] - 1
    if shift == 0 or math.ldexp(float(pos.min()), -shift) < _TINY_NORMAL:
        return weight, 0
    return np.ldexp(weight, -shift), shift


def with_scaled_weights(reduce_weighted, weight: np.ndarray, policy: int) -> BatchStats:
    """``reduce_weighted(w)`` (the statistics of a batch with weights ``w``) of the
    weights scaled by :func:`scaled_weights`, as those of the weights as given.

    Every weighted sum is homogeneous in the weights, so the weight sums and M2 are
    scaled back by ``2**shift`` and the bits are those of the weights as given, except
    where ``w * (x - s)`` or ``w * d**2`` left float64's range: values of 1e-200 weighted
    2**-450 (the products underflowed) had the mean of their first value. Scaled, the
    heaviest rows weigh about 1 and the sums have the range of unweighted data's; a
    channel of finite data whose scaled mean or M2 is not finite, or whose M2 is
    subnormal (values of 1e160 weighted 2**-450: M2 beyond float64 where the weights as
    given kept it finite, and a merge with heavier rows gave the variance inf), is
    taken from a second reduction with the weights as given."""
    scaled, shift = scaled_weights(weight)
    if not shift:
        return reduce_weighted(weight)
    total = reduce_weighted(scaled)
    mean, m2 = total.floats[0], total.floats[2]
    clean = (total.ints[2] == 0) & ((total.ints[1] == 0) | (policy == POLICY_OMIT))
    fine = np.isfinite(mean) & np.isfinite(m2) & ((m2 == 0.0) | (m2 >= _TINY_NORMAL))
    redo = clean & ~fine
    assert total.weight is not None
    total.weight = np.ldexp(total.weight, shift)
    total.floats[2] = np.ldexp(m2, shift)
    if redo.any():
        plain = reduce_weighted(weight)
        assert plain.weight is not None
        take = redo & np.isfinite(plain.floats[0]) & np.isfinite(plain.floats[2])
        total.ints[:, take] = plain.ints[:, take]
        total.floats[:, take] = plain.floats[:, take]
        total.weight[take] = plain.weight[take]
    return total


def reduce(can: Canonical, policy: int, weight: np.ndarray) -> BatchStats:
    """The weighted statistics of one input; ``weight`` is float64 (N,), checked by
    :func:`nbbn._weights.check_sample_weight` (axis 0 is not the channel axis), and
    scaled by a power of two for the sums (:func:`with_scaled_weights`)."""

    def pieces(weight: np.ndarray) -> BatchStats:
        total: BatchStats | None = None
        for x3, index in can.pieces():
            # a piece is the whole input, or a slab of rows along axis 0
            w = weight if index == (Ellipsis,) else weight[index[0]]
            if x3.size == 0:
                continue
            part = _piece(x3, w, policy, can.bf16)
            total = part if total is None else merge(total, part)
        if total is None:
            total = BatchStats.empty(can.channels)
            total.weight = np.zeros(can.channels)
        return total

    return with_scaled_weights(pieces, weight, policy)
