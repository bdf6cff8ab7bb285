"""Weighted statistics kernels (``RunningStats.update(x, sample_weight=w)``) and the
merge of weighted states, on the CPU.

The unweighted kernels (``cpu_stats``) are untouched; a weighted batch is reduced here
and its statistics carry a float64 weight sum per channel (``BatchStats.weight``).
The numerics are those of the rest of nbbn: each channel is reduced in two passes
around a shift (its first finite value), so no sum of raw values is formed:

1. ``W = sum w``, ``S = sum w (x - s)``, ``delta = S / W``;
2. ``d = (x - s) - delta``, ``Q = sum w d^2``, ``E = sum w d`` (the rounding left in
   ``delta``), then ``M2 = Q - E^2 / W`` and the mean ``s + (delta + E / W)`` as a
   double-double;

and parts are merged with Chan's formula (:mod:`nbbn._merge`), the weight sums taking
the place of the counts, so a weighted state merges with unweighted ones (whose weight
sum is their count) exactly as two unweighted states do. A row of weight 0 is absent:
it adds nothing to any count, minimum or maximum.

The kernel is compiled once, for float64: the input is handed to it in chunks of whole
rows of at most ``CHUNK_BYTES``, converted to float64 (exact for every dtype but
integers beyond 2**53), on one thread; the weighted path is not the fast path.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .._layout import Canonical
from .._policy import POLICY_OMIT
from ._jit import cached
from ._stats import BatchStats
from .cpu_numerics import chan_merge, dd_mean, merge_max, merge_min

__all__ = ["merge", "reduce"]


@cached(nogil=True)
def _weighted_stats(x, w, rpw, policy, si, sf, sw):  # pragma: no cover - compiled
    """Statistics of ``x`` (O, C, I) with weights ``w[o // rpw]`` into ``si`` (3, C),
    ``sf`` (5, C) and ``sw`` (C,), replacing what they hold."""
    no, nchan, length = x.shape
    omit = policy == POLICY_OMIT
    shift = np.zeros(nchan)
    have = np.zeros(nchan, np.bool_)
    found = 0
    for o in range(no):
        if found == nchan:
            break
        if w[o // rpw] == 0.0:
            continue
        for c in range(nchan):
            if have[c]:
                continue
            for i in range(length):
                v = numba.float64(x[o, c, i])
                if math.isfinite(v):
                    shift[c] = v
                    have[c] = True
                    found += 1
                    break
    n = np.zeros(nchan, np.int64)
    nnan = np.zeros(nchan, np.int64)
    ninf = np.zeros(nchan, np.int64)
    wsum = np.zeros(nchan)
    s1 = np.zeros(nchan)
    mn = np.full(nchan, np.inf)
    mx = np.full(nchan, -np.inf)
    for o in range(no):
        wo = w[o // rpw]
        if wo == 0.0:
            continue
        for c in range(nchan):
            s = shift[c]
            for i in range(length):
                v = numba.float64(x[o, c, i])
                if math.isnan(v):
                    nnan[c] += 1
                    if omit:
                        continue
                elif math.isinf(v):
                    ninf[c] += 1
                n[c] += 1
                wsum[c] += wo
                s1[c] += wo * (v - s)
                mn[c] = merge_min(mn[c], v)
                mx[c] = merge_max(mx[c], v)
    delta = np.zeros(nchan)
    for c in range(nchan):
        if wsum[c] > 0.0:
            delta[c] = s1[c] / wsum[c]
    q = np.zeros(nchan)
    e = np.zeros(nchan)
    for o in range(no):
        wo = w[o // rpw]
        if wo == 0.0:
            continue
        for c in range(nchan):
            s = shift[c]
            dc = delta[c]
            for i in range(length):
                v = numba.float64(x[o, c, i])
                if omit and math.isnan(v):
                    continue
                d = (v - s) - dc
                q[c] += wo * d * d
                e[c] += wo * d
    for c in range(nchan):
        corr = 0.0
        m2 = 0.0
        if wsum[c] > 0.0:
            corr = e[c] / wsum[c]
            m2 = q[c] - e[c] * corr
            if m2 < 0.0:
                m2 = 0.0
        hi, lo = dd_mean(shift[c], delta[c] + corr)
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
    if state.weight is None:
        state.weight = state.count.astype(np.float64)
    _merge_weighted(state.ints, state.floats, state.weight, part.ints, part.floats,
                    np.ascontiguousarray(part.weight_sum()))
    return state


CHUNK_BYTES = 16 << 20  # float64 bytes per chunk handed to the kernel


def _piece(x3: np.ndarray, w: np.ndarray, policy: int, bf16: bool = False) -> BatchStats:
    """The statistics of one (O, C, I) piece with weights ``w[o // rpw]``, in chunks of
    whole rows converted to float64 C-contiguous read-only arrays (one compiled kernel
    for every input dtype and layout, and bounded extra memory)."""
    nchan = x3.shape[1]
    rpw = x3.shape[0] // w.shape[0]
    per_row = max(1, rpw * nchan * x3.shape[2] * 8)
    step = max(1, CHUNK_BYTES // per_row)  # rows (of weight) per chunk
    total: BatchStats | None = None
    for r0 in range(0, w.shape[0], step):
        src = x3[r0 * rpw:(r0 + step) * rpw]
        if bf16:  # bfloat16 bits: the high half of a float32
            src = (src.astype(np.uint32) << np.uint32(16)).view(np.float32)
        chunk = np.ascontiguousarray(src, dtype=np.float64)
        if chunk.flags.writeable:  # one compiled type for writable and read-only input
            chunk = chunk.view()
            chunk.flags.writeable = False
        part = BatchStats.uninitialized(nchan)
        part.weight = np.empty(nchan)
        _weighted_stats(chunk, w[r0:r0 + step], rpw, policy, part.ints, part.floats,
                        part.weight)
        total = part if total is None else merge(total, part)
    assert total is not None
    return total


def reduce(can: Canonical, policy: int, weight: np.ndarray) -> BatchStats:
    """The weighted statistics of one input; ``weight`` is float64 (N,), checked by
    :func:`nbbn._weights.check_sample_weight` (axis 0 is not the channel axis)."""
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
