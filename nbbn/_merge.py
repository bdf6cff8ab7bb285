"""The merge arithmetic of every kernel, written once and compiled for each target.

:func:`build` compiles these plain-Python sources with a target's decorator:
``numba.njit`` for the CPU kernels (:mod:`nbbn.backends.cpu_numerics`) and
``numba.cuda.jit(device=True)`` for the CUDA kernels
(:mod:`nbbn.backends.cuda_kernels`). Importing this module imports no numba.

Means are carried as an unevaluated sum ``hi + lo`` of two float64 numbers (a
"double-double"): ``hi`` is the mean rounded to float64, ``lo`` the rest. A float64
mean alone is off by up to half an ulp of the mean, and when |mean| >> std that
rounding error, multiplied by the difference of two means in Chan's formula, is what
limits the variance: at mean/std = 1e12 it alone would cost about 1e-6 of it. With
``lo`` kept, the difference of two means is exact to float64 relative precision.

The functions are compiled as functions of their own, never inlined at the numba IR
level, and the CPU build sets ``fastmath=False`` explicitly: the CPU kernels run with
fast-math flags (``reassoc``), which would fold the error term of :func:`two_sum` to
zero and ``math.isfinite`` to True, and a numba callee that sets no fastmath option
inherits its caller's. LLVM still inlines the calls, with the flags of the callee.
"""

from __future__ import annotations

import math
from types import SimpleNamespace


def _two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e == a + b`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's splitter for float64
TINY = 2.0 ** -969  # below it, a product's error term may be subnormal: not exact
ZERO_FLUSH = 2.0 ** -90
"""A merged mean within this fraction of the merged standard deviation is 0. The parts'
double-double means hold a mean such as 242/3 to about 2**-106 of itself, and where the
exact merged mean is 0 that rounding was all that was left: int8 batches summing to 0
had the mean -3.9e-31 where numpy's is 0.0 (integer means are otherwise numpy's bit for
bit). With the mean near 0, every value, and so every part's mean, is within sqrt(n)
standard deviations of 0: the rounding left is below 2**-106 * sqrt(n) of the standard
deviation, flushed for up to about 2**30 values. The flush moves a mean by at most
2**-90 of the standard deviation (a bound scaled by the parts' means as well flushed
weighted means that the data hold: 1e-20, of 0 and 1e10 weighted 1 and 1e-30). A
non-zero integer mean, at least 1 / count, is never flushed below 2**27 values of int64
data near its limits (2**63 * 2**-90 = 2**-27)."""


def _two_prod(a, b):
    """``(p, e)`` with ``p = fl(a * b)`` and ``p + e == a * b`` exactly (Dekker, without
    an FMA: numba's CPU and CUDA targets share this source), for ``|a|, |b| < 2**995``
    and a product that neither overflows nor underflows; otherwise ``e`` is not
    finite or not exact, and callers only use it next to much larger terms."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def store_record(si, sf, j, n, hi, lo, m2, mn, mx, nnan, ninf):
    """Write record ``j`` of the statistics layout: ``si`` int (3, ...) [count, NaNs,
    infs], ``sf`` float (5, ...) [mean, mean_lo, M2, min, max] (``BatchStats``,
    ``DeviceStats``, the kernels' workspaces)."""
    si[0, j] = n
    si[1, j] = nnan
    si[2, j] = ninf
    sf[0, j] = hi
    sf[1, j] = lo
    sf[2, j] = m2
    sf[3, j] = mn
    sf[4, j] = mx


def build(jit, two_prod=None) -> SimpleNamespace:
    """The merge functions compiled with ``jit`` (a decorator), as a namespace:

    ``two_sum(a, b)``, ``two_prod(a, b)``, ``dd_mean(hi, lo)``, ``dd_quot(k, a, n)``,
    ``chan_merge(na, ha, la, m2a, nb, hb, lb, m2b)``, ``nan_min(a, b)``,
    ``nan_max(a, b)``, and ``store(si, sf, j, ...)``, which writes one record in the
    layout every backend shares. ``two_prod``: a compiled
    replacement of Dekker's (the CPU's uses the FMA instruction); by default Dekker's,
    compiled with ``jit``.
    """
    two_sum = jit(_two_sum)
    if two_prod is None:
        two_prod = jit(_two_prod)

    def dd_mean(hi, lo):
        """``(hi, lo)`` renormalized: ``hi`` becomes ``fl(hi + lo)``. A non-finite
        ``hi`` (infinite data, NaN under "propagate") is kept with ``lo = 0``."""
        s, e = two_sum(hi, lo)
        if math.isfinite(e):
            return s, e
        return s, 0.0

    dd_mean_c = jit(dd_mean)

    def dd_quot(k, a, n):
        """``k + a / n`` as a renormalized ``(hi, lo)``, the quotient's rounding error
        kept (its remainder ``a - q * n``, exact by ``two_prod``), so that ``hi`` is
        ``k + a / n`` correctly rounded (but in ties closer than about 2**-100): for a
        block of integers, whose shifted sum ``a`` is exact, numpy's mean bit for bit.
        ``dd_mean(k, a / n)`` rounded twice, and about one channel of uint8 values in
        40 came back an ulp off. A non-finite ``a / n`` gives ``dd_mean(k, a / n)``."""
        inv = 1.0 / n  # (hoisted out of a loop over channels of one n; q need not be
        # the rounded quotient: r is its exact remainder)
        q = a * inv
        p, pe = two_prod(q, n)
        r = ((a - p) - pe) * inv
        if not math.isfinite(r):
            return dd_mean_c(k, a / n)
        s, e = two_sum(k, q)
        return dd_mean_c(s, e + r)

    def moved(h0, l0, h1, l1, w, n):
        """The mean ``h0 + l0`` moved towards ``h1 + l1`` by the fraction ``w / n``, as a
        double-double: the difference of the means, its product by ``w`` and the
        quotient by ``n`` each keep their rounding error (``two_sum``, ``two_prod``, the
        quotient's remainder), so the merged ``hi`` is the merged mean correctly rounded
        but in rare ties, and a stream of integers gets numpy's ``mean`` bit for bit.
        Rounding ``d * (w / n)`` once cost up to an ulp of the mean wherever ``d`` was
        near it: ``nbbn.dask`` of float64 integers in chunks had 29 channels in 900 an
        ulp off numpy's for that alone."""
        dh, dl = two_sum(h1, -h0)
        dl = dl + (l1 - l0)
        p, pe = two_prod(dh, w)
        inv = 1.0 / n  # (q need not be the rounded quotient: r is its exact remainder)
        q = p * inv
        t, te = two_prod(q, n)
        r = ((p - t) - te) + (pe + dl * w)
        corr = r * inv
        s, e = two_sum(h0, q)
        lo = e + (l0 + corr)
        if not (math.isfinite(lo) and math.isfinite(q)) or (
                dh != 0.0 and (abs(p) < TINY or abs(q) < TINY)):
            # past the split's range (|d| or a product near the float64 limits), or a
            # product or quotient that underflows (weights of 1e-140: d * w lost the
            # move): the single rounding of d * w / n, which such data can hold anyway
            return dd_mean_c(h0, l0 + ((h1 - h0) + (l1 - l0)) * (w / n))
        return dd_mean_c(s, lo)

    _moved = jit(moved)

    def chan_merge(na, ha, la, m2a, nb, hb, lb, m2b):
        """Merge two (count, mean ``h + l``, M2) triples exactly (Chan, Golub and
        LeVeque 1979). Counts are integers (or float weights); an empty part returns
        the other unchanged, so the merge never divides by zero.

        The mean moves from the heavier part's towards the other's by ``d`` times the
        lighter part's fraction: the rounding of that fraction and product then costs
        at most half of ``|d|`` times 2**-53, where starting from the lighter part
        costs up to ``|d|`` times it. The difference shows when the merged mean is much
        smaller than ``d``: one stored value of 1e6 merged with 99,999 zeros (a sparse
        column) has the mean 10, which the other side reaches only to about 1e-11."""
        if nb == 0:
            return na, ha, la, m2a
        if na == 0:
            return nb, hb, lb, m2b
        n = na + nb
        fb = nb / n  # float64: counts are int64
        d = (hb - ha) + (lb - la)
        if math.isfinite(d):
            if nb <= na:
                hi, lo = _moved(ha, la, hb, lb, nb, n)
            else:
                hi, lo = _moved(hb, lb, ha, la, na, n)
        else:
            # infinite means (or a difference that overflows): the weighted form gives
            # inf for two infinities of one sign and NaN for opposite signs, as numpy does
            hi = ha * (na / n) + hb * fb
            lo = 0.0
        between = d * d * na * fb
        if not math.isfinite(between):
            # d * d overflowed: with weights, a share can underflow to 0 (inf * 0 =
            # NaN) and the term be finite or inf: na * nb / n as the lighter weight
            # times the heavier part's share (>= 1/2: no underflow), then d twice
            t = nb * (na / n) if nb <= na else na * fb
            between = (d * t) * d
        # the smaller M2 and the between-term first: one rounding at the larger M2's
        # scale instead of two. ``(m2a + m2b) + between`` rounded a running M2 plus a
        # batch's M2 on every merge, and integer data in batches of 3 rows (M2 ending in
        # 0 or 2/3) rounded the same way each time: 9e-12 of the variance after 1e6
        # batches, against 4e-14 this way
        m2 = m2a + (m2b + between) if m2a >= m2b else m2b + (m2a + between)
        # a mean that cancels to (nearly) zero is the double-doubles' rounding: flushed
        # (see ZERO_FLUSH)
        far = ZERO_FLUSH * math.sqrt(m2 / n)
        if abs(hi) <= far and math.isfinite(far):
            return n, 0.0, 0.0, m2
        return n, hi, lo, m2

    def nan_min(a, b):
        """``min`` that propagates NaN (as ``np.minimum``)."""
        if math.isnan(a) or math.isnan(b):
            return a + b
        return a if a <= b else b

    def nan_max(a, b):
        """``max`` that propagates NaN (as ``np.maximum``)."""
        if math.isnan(a) or math.isnan(b):
            return a + b
        return a if a >= b else b

    return SimpleNamespace(two_sum=two_sum, two_prod=two_prod, dd_mean=dd_mean_c,
                           dd_quot=jit(dd_quot), chan_merge=jit(chan_merge),
                           nan_min=jit(nan_min), nan_max=jit(nan_max),
                           store=jit(store_record))
