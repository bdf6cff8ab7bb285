"""float64 accuracy far outside the easy range: mean/std up to 1e12, against exact sums.

The reference is exact: the values (float64 numbers) are summed as fractions, so the
variance compared with is the variance of exactly these numbers, whatever their
mean/std. The float64 two-pass reference of ``reference.py`` is not enough here: its
own mean is off by half an ulp of the mean, which at mean/std = 1e12 already moves the
variance by ~4e-9.

Cases: scikit-learn's near-constant features (half the values ``avg + scale``, half
``avg - scale``, from its ``test_standard_scaler_near_constant_features``) and random
normal data, each in one batch and streamed in uneven batches, channels-last and
channels-first.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import SIMULATOR, skip_large_for_simulator

import nbbn

RATIOS = [1e3, 1e5, 1e8, 1e10, 1e12]
VAR_RTOL = 1e-10  # the bound for float64 data up to mean/std = 1e12
N = 10_000


def exact_mean_var(v: np.ndarray) -> tuple[Fraction, Fraction]:
    """The exact mean and population variance of the float64 numbers ``v`` (each
    distinct value once, times its count: 99,999 zeros are one term)."""
    values, counts = np.unique(np.asarray(v, np.float64), return_counts=True)
    f = [(Fraction(float(x)), int(k)) for x, k in zip(values, counts, strict=True)]
    n = int(counts.sum())
    mean = sum((x * k for x, k in f), Fraction(0)) / n
    return mean, sum(((x - mean) ** 2 * k for x, k in f), Fraction(0)) / n


def near_constant(avg: float, scale: float, n: int = N) -> np.ndarray:
    x = np.empty(n)
    x[: n // 2] = avg + scale
    x[n // 2:] = avg - scale
    return x


def random_data(rng, avg: float, scale: float, n: int = N) -> np.ndarray:
    return avg + rng.standard_normal(n) * scale


def _as_layout(v: np.ndarray, layout: str) -> tuple[np.ndarray, int]:
    """One channel of values ``v`` as a 2-d channels-last or 3-d channels-first array,
    with a second channel (the values reversed) beside it."""
    two = np.stack([v, v[::-1].copy()])
    if layout == "channels_last":
        return np.ascontiguousarray(two.T), -1  # (N, 2)
    return np.ascontiguousarray(two.reshape(2, 4, -1).transpose(1, 0, 2)), 1  # (4, 2, N/4)


def _check(rs: nbbn.RunningStats, v: np.ndarray) -> None:
    mean, var = exact_mean_var(v)
    got_var = rs.var[0]
    rel = abs(Fraction(got_var) - var) / var
    assert rel <= VAR_RTOL, f"variance relative error {float(rel):.2e} > {VAR_RTOL}"
    assert abs(Fraction(rs.mean[0]) - mean) <= abs(mean) * Fraction(2 ** -52)
    np.testing.assert_allclose(rs.var[1], rs.var[0], rtol=VAR_RTOL)


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("ratio", RATIOS, ids=lambda r: f"{r:.0e}")
@pytest.mark.parametrize("kind", ["near_constant", "random"])
def test_float64_variance_far_from_zero(kind, ratio, layout, backend, rng):
    scale = 1.0
    v = near_constant(ratio, scale) if kind == "near_constant" else \
        random_data(rng, ratio, scale)
    x, axis = _as_layout(v, layout)
    skip_large_for_simulator(backend, x.size)
    _check(nbbn.channel_stats(x, axis, backend=backend), v)


@pytest.mark.parametrize("ratio", [1e8, 1e12], ids=lambda r: f"{r:.0e}")
@pytest.mark.parametrize("kind", ["near_constant", "random"])
def test_float64_variance_far_from_zero_streamed(kind, ratio, backend, rng):
    """Uneven batches: the state's mean (a double-double) carries the precision across
    every merge; a float64 mean alone would lose ~1e-6 of the variance at 1e12."""
    v = near_constant(ratio, 1.0) if kind == "near_constant" else random_data(rng, ratio, 1.0)
    x, axis = _as_layout(v, "channels_last")
    skip_large_for_simulator(backend, x.size)
    rs = nbbn.RunningStats(axis, backend=backend)
    cuts = np.sort(rng.choice(np.arange(1, N), size=12, replace=False))
    for part in np.split(x, cuts):
        rs.update(part)
    _check(rs, v)
    # the statistics survive a save/load and a merge without losing the precision
    back = nbbn.RunningStats.from_dict(rs.to_dict())
    halves = nbbn.channel_stats(x[: N // 3], axis, backend=backend) + \
        nbbn.channel_stats(x[N // 3:], axis, backend=backend)
    _check(back, v)
    _check(halves, v)


def test_near_constant_features_like_scikit_learn(backend):
    """scikit-learn's case in full: every scale from 1e-30 to 1e19 around one average
    (features with |avg| / scale <= 1e12 are held to the bound)."""
    scales = np.array([10.0 ** i for i in range(-30, 20)])
    skip_large_for_simulator(backend, 1000 * scales.size)
    for avg in (1e-10, 1.0, 1e10):
        x = np.empty((1000, scales.size))
        x[:500] = avg + scales
        x[500:] = avg - scales
        rs = nbbn.channel_stats(x, -1, backend=backend)
        for c, s in enumerate(scales):
            if avg / s > 1e12:
                continue
            _, var = exact_mean_var(x[:, c])
            rel = abs(Fraction(rs.var[c]) - var) / var
            assert rel <= VAR_RTOL, (avg, s, float(rel))


@pytest.mark.parametrize("order", ["value_first", "zeros_first"])
def test_lopsided_merge_keeps_a_small_mean_exact(backend, order):
    """One value of 1e6 merged with 99,999 zeros (batches of one and of the rest, either
    order): the mean, 10.0000..., is held to an ulp. Chan's update taken from the
    lighter part moved the mean by 1e6 times a rounded fraction and missed it by 1e-11
    (relative); taken from the heavier part, it moves it by the lighter part's share.
    (9,999 zeros in the CUDA simulator: 4-5 s a case with 99,999.)"""
    one = np.array([[1e6 + 0.141]])
    zeros = np.zeros((9_999 if backend == "cuda" and SIMULATOR else 99_999, 1))
    parts = (one, zeros) if order == "value_first" else (zeros, one)
    rs = nbbn.RunningStats(-1, backend=backend)
    for part in parts:
        rs.update(part)
    v = np.concatenate(parts)[:, 0]
    mean, var = exact_mean_var(v)
    assert abs(Fraction(rs.mean[0]) - mean) <= abs(mean) * Fraction(2 ** -52)
    assert abs(Fraction(rs.var[0]) - var) <= var * Fraction(2 ** -50)


def test_sparse_column_of_one_large_weighted_value():
    """The same through a sparse column: one stored value of 1e6 with a small weight among
    implicit zeros; its statistics are the stored value's merged with the zeros'."""
    sparse = pytest.importorskip("scipy.sparse")
    w = np.linspace(0.5, 1.5, 200)
    w[0] = 0.007
    x = np.zeros((200, 1))
    x[0, 0] = 1e6 + 0.141
    rs = nbbn.RunningStats(-1).update(sparse.csc_array(x), sample_weight=w)
    fw = [Fraction(float(a)) for a in w]
    mean = fw[0] * Fraction(float(x[0, 0])) / sum(fw, Fraction(0))
    assert abs(Fraction(rs.mean[0]) - mean) <= abs(mean) * Fraction(2 ** -52)


@pytest.mark.parametrize("seed", [7, 0, 2, 3, 8, 14])
@pytest.mark.parametrize("form", ["dense", "csr", "csc"])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_first_value_far_from_the_mean(form, weighted, seed):
    """The weighted and sparse kernels reduce around a column's first value; their
    second pass measures deviations from the first pass's mean instead, so a first value
    of 1e6 among 999 values near 3 leaves the mean (about 1003) within 2**-51 of it,
    where deviations from the first value were 2e-14 to 3e-14 off (2**-53 of the first
    value's distance to the mean in every term). Those deviations' sum is compensated
    per value: summed plainly in blocks, the 1e6 term made every other addition round
    at 1e-10, up to 5.4 * 2**-52 of the mean (the seeds here were the worst of 30 for
    one form or another). The unweighted dense kernels sum plainly (their speed): within
    2**-50 there (3 * 2**-52 at worst over 30 seeds)."""
    rng = np.random.default_rng(seed)
    v = 3.0 + rng.standard_normal(1000) * 0.5
    v[0] = 1e6 + 0.141
    w = rng.uniform(0.5, 1.5, 1000) if weighted else np.ones(1000)
    x = v[:, None]
    if form != "dense":
        x = pytest.importorskip("scipy.sparse").csr_array(x).asformat(form)
    rs = nbbn.RunningStats(-1).update(x, sample_weight=w if weighted else None)
    fw = [Fraction(float(a)) for a in w]
    mean = sum((a * Fraction(float(b)) for a, b in zip(fw, v, strict=True)), Fraction(0))
    mean /= sum(fw, Fraction(0))
    bound = 2 ** -50 if form == "dense" and not weighted else 2 ** -51
    assert abs(Fraction(rs.mean[0]) - mean) <= abs(mean) * Fraction(bound)
