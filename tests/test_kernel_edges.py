"""Contracts mutation testing found unpinned (2026-12-04): the CPU statistics kernels
(nbbn.backends.cpu_*)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nbbn


def _numpy_stats(x: np.ndarray):
    with warnings.catch_warnings(), np.errstate(invalid="ignore", over="ignore"):
        warnings.simplefilter("ignore")
        return x.mean(axis=0), x.var(axis=0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("policy", ["propagate", "omit"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_a_channel_of_one_infinity_repeated_has_nan_variance(dtype, policy, layout):
    """Values all equal to one infinity: the mean is that infinity and the variance NaN,
    as numpy (inf - inf), not 0 as for a constant finite channel (mutant: the constant
    shortcut taken for infinities too)."""
    x = np.array([[np.inf, -np.inf, 1.0], [np.inf, -np.inf, 1.0],
                  [np.inf, -np.inf, 1.0]], dtype)
    if layout == "channels_last":
        rs = nbbn.RunningStats(-1, nan_policy=policy).update(x)
    else:  # (C, N): each channel a contiguous row
        rs = nbbn.RunningStats(0, nan_policy=policy).update(np.ascontiguousarray(x.T))
    mean, var = _numpy_stats(x.astype(np.float64))
    np.testing.assert_array_equal(rs.mean, mean)
    np.testing.assert_array_equal(rs.var, var)  # [nan, nan, 0]
    assert rs.inf_count.tolist() == [3, 3, 0]


def test_zero_weight_rows_do_not_choose_the_shift():
    """A row of weight 0 counts as absent, whatever it holds: a huge value there must not
    become the shift the weighted kernel subtracts, which would round every deviation
    away (mutant: the first finite value of any row taken as the shift)."""
    rng = np.random.default_rng(4)
    x = rng.normal(5.0, 1.0, size=(50, 3))
    x[0] = [1e20, -1e18, 3e15]
    w = rng.uniform(0.5, 2.0, size=50)
    w[0] = 0.0
    got = nbbn.RunningStats(-1).update(x, sample_weight=w)
    want = nbbn.RunningStats(-1).update(x[1:], sample_weight=w[1:])
    ref_mean = np.average(x[1:], axis=0, weights=w[1:])
    ref_var = np.average((x[1:] - ref_mean) ** 2, axis=0, weights=w[1:])
    np.testing.assert_allclose(got.mean, ref_mean, rtol=1e-13)
    np.testing.assert_allclose(got.var, ref_var, rtol=1e-12)
    np.testing.assert_allclose(got.mean, want.mean, rtol=1e-14)
    np.testing.assert_array_equal(got.min, x[1:].min(0))  # (absent from min/max too)
    np.testing.assert_array_equal(got.max, x[1:].max(0))
