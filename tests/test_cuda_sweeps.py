"""One thread's sweep in the CUDA statistics kernels, against exact arithmetic.

Each case launches a one-thread kernel that runs a family's ``init``/``sweep``/
``finish`` over ``a[i:end:step]`` and compares (count, mean + mean_lo, M2, min, max,
NaNs, infs) with numpy or exact integers. The lengths cover no full group, whole groups and a
masked last group; float data puts NaN and inf in the first value, the main groups and
the masked tail; integer data reaches each dtype's extremes, and a patched ``CHUNK``
makes the 32-bit sums flush many times.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import HAVE_NUMBA_CUDA

pytestmark = pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")


def run_sweep(cuda, fam, unroll, a, i, end, step):
    """(ints [count, NaNs, infs], floats [mean, M2, min, max, mean_lo]) of one thread's
    sweep."""
    import numba

    from nbbn.backends import cuda_kernels as kk

    init, sweep, finish = kk._family_sweep(fam, unroll)

    @cuda.jit
    def probe(a, i, end, step, ints, floats):
        r = finish(sweep(a, numba.uint64(i), numba.uint64(end), numba.uint64(step), init()))
        ints[0] = r[0]
        ints[1] = r[6]
        ints[2] = r[7]
        floats[0] = r[1]
        floats[1] = r[3]
        floats[2] = r[4]
        floats[3] = r[5]
        floats[4] = r[2]

    ints = np.zeros(3, np.int64)
    floats = np.zeros(5, np.float64)
    d_ints, d_floats = cuda.to_device(ints), cuda.to_device(floats)
    probe[1, 1](cuda.to_device(a), i, end, step, d_ints, d_floats)
    return d_ints.copy_to_host(), d_floats.copy_to_host()


# (start, end, step): no full group, one group exactly, groups plus a masked tail, a
# last group that ends one value short of a full one (its last load would be ``end``)
SPANS = [(0, 3, 1), (2, 2 + 8 * 3, 3), (2, 2 + 16 * 3, 3), (1, 100, 1), (5, 197, 2),
         (0, 15, 1), (0, 0, 1)]


@pytest.mark.parametrize("span", SPANS, ids=str)
@pytest.mark.parametrize("dtype,unroll", [("float32", 16), ("float32", 8), ("float16", 16),
                                          ("float64", 8)])  # the first, third, last: kk.unroll
@pytest.mark.parametrize("specials", ["none", "first", "spread", "tail"])
def test_float_sweep(span, dtype, unroll, specials, cuda, rng):
    from nbbn.backends import cuda_kernels as kk

    a = (rng.standard_normal(220) * 3 + 40).astype(dtype)
    i, end, step = span
    picked = np.arange(i, end, step)
    if picked.size and specials != "none":
        where = {"first": [0, 1], "spread": [1, 4, 9, 10],
                 "tail": [picked.size - 1]}[specials]
        for n, w in enumerate(where):
            if w < picked.size:
                a[picked[w]] = [np.nan, np.inf, -np.inf][n % 3]
    ints, floats = run_sweep(cuda, kk.family(np.dtype(dtype)), unroll, a, i, end, step)
    v = a[picked].astype(np.float64)
    fin = v[np.isfinite(v)]
    assert ints.tolist() == [fin.size, np.isnan(v).sum(), np.isinf(v).sum()]
    if fin.size:
        np.testing.assert_allclose(floats[0], fin.mean(), rtol=1e-13)
        m2 = ((fin - fin.mean()) ** 2).sum()
        np.testing.assert_allclose(floats[1], m2, rtol=1e-11, atol=1e-11)
    notnan = v[~np.isnan(v)]
    assert floats[2] == (notnan.min() if notnan.size else np.inf)
    assert floats[3] == (notnan.max() if notnan.size else -np.inf)


def test_float_sweep_m2_of_tiny_values_is_not_negative(cuda):
    """Values near 1e-162, whose squares are below the smallest subnormal: the rounded
    ``sum(d*d) - sum(d)**2 / n`` comes out -5e-324, which must be clamped to 0, not give
    a negative variance (and a NaN std)."""
    a = np.array([0.0, 1.5e-162, 1.5e-162, 0.0])
    ints, floats = run_sweep(cuda, "float64", 8, a, 0, 3, 1)
    assert ints.tolist() == [3, 0, 0]
    exact = sum((Fraction(v) - Fraction(sum(map(Fraction, a[:3])), 3)) ** 2 for v in a[:3])
    assert 0.0 <= floats[1] <= float(exact) + 5e-324  # (exact: about 1.5e-324)


def test_overflowed_thread_redo_keeps_the_mean_lo(cuda):
    """A float64 thread whose shifted sums overflow redoes its values scaled by 2^-64
    (``rescale``): the mean comes back as hi + lo, both scaled back, to double-double
    accuracy of the exact mean (values m * 2^1019 with small integers m, so every sum of
    the redo is exact)."""
    import numba

    from nbbn.backends import cuda_kernels as kk

    init, sweep, finish = kk._family_sweep("float64", 8)
    sweep_scaled = kk._float_sweep(numba.float64, 8, scaled=True)[1]

    @cuda.jit
    def probe(a, out):
        n = numba.uint64(a.shape[0])
        r = finish(sweep(a, numba.uint64(0), n, numba.uint64(1), init()))
        if kk.overflowed(r):
            r = kk.rescale(r, finish(sweep_scaled(a, numba.uint64(0), n, numba.uint64(1),
                                                  init())))
        out[0] = r[1]
        out[1] = r[2]
        out[2] = r[3]

    m = [1, 7, 6, 7, 5, 7, 6, 7, 3, 7]  # deviations from 1 sum to 46 * 2^1019 > 2^1024
    a = np.array([np.ldexp(float(k), 1019) for k in m])
    out = cuda.to_device(np.zeros(3))
    probe[1, 1](cuda.to_device(a), out)
    hi, lo, m2 = out.copy_to_host()
    exact = Fraction(sum(m), len(m)) * 2**1019
    assert hi == float(exact)
    assert abs(Fraction(hi) + Fraction(lo) - exact) <= exact * Fraction(1, 2**100)
    assert m2 == np.inf  # its true value (about 2^2046) is beyond float64


def exact_m2(v: np.ndarray) -> Fraction:
    n, s1 = len(v), sum(int(x) for x in v)
    s2 = sum(int(x) * int(x) for x in v)
    return Fraction(n * s2 - s1 * s1, n)


@pytest.mark.parametrize("span", SPANS[:-1], ids=str)
@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
@pytest.mark.parametrize("chunk", [None, 7], ids=["chunk_default", "chunk_7"])
def test_exact_sweep(span, dtype, chunk, cuda, rng, monkeypatch):
    from nbbn.backends import cuda_kernels as kk

    if chunk is not None:
        monkeypatch.setattr(kk, "CHUNK", chunk)
    ii = np.iinfo(dtype)
    a = rng.integers(ii.min, ii.max, size=220, dtype=dtype, endpoint=True)
    a[::5] = ii.max  # extremes: the largest squares
    a[1::7] = ii.min
    i, end, step = span
    ints, floats = run_sweep(cuda, kk.family(np.dtype(dtype)), 16 // np.dtype(dtype).itemsize,
                             a, i, end, step)
    v = a[i:end:step]
    assert ints.tolist() == [v.size, 0, 0]
    mean = Fraction(sum(int(x) for x in v), v.size)
    # the mean as hi + lo: hi within an ulp, hi + lo within 2**-53 of the exact mean
    assert abs(floats[0] - float(mean)) <= np.spacing(abs(float(mean)))
    assert abs(Fraction(floats[0]) + Fraction(floats[4]) - mean) <= Fraction(1, 2**53)
    assert floats[1] == float(exact_m2(v))  # exact, rounded once
    assert (floats[2], floats[3]) == (v.min(), v.max())


@pytest.mark.parametrize("dtype, base, spread", [
    ("int16", 32767, 2767), ("uint16", 65535, 2), ("int16", -32768, 1)])
def test_exact_sweep_beyond_exact_count(cuda, rng, dtype, base, spread):
    """Above 2**15 values per thread a 16-bit thread's ``n * t2 - t1**2`` leaves int64
    (the default launch reaches it on a channel of 4.2 million values). It took
    ``t2 - t1 * (t1 / n)`` in float64: 5.5e-5 relative error for near-constant values.
    Now the sum of squares around the integer nearest the mean, exact in int64: within a
    few ulp."""
    ii = np.iinfo(dtype)
    a = rng.integers(max(ii.min, base - spread), min(ii.max, base + spread),
                     size=2**15 + 9, endpoint=True).astype(dtype)
    ints, floats = run_sweep(cuda, "exact16", 8, a, 0, a.size, 1)
    assert ints[0] == a.size
    exact = exact_m2(a)
    assert abs(Fraction(floats[1]) - exact) <= exact * Fraction(4, 2**53)
    np.testing.assert_allclose(floats[0], a.mean(dtype=np.float64), rtol=1e-15)
