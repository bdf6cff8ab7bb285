"""The tests' float64 reference: ``ref_stats_rows`` (all rows at once) gives the bits of
its row-by-row definition, ``ref_stats_rows_slow``."""

from __future__ import annotations

import numpy as np
import pytest
from reference import ref_stats_rows, ref_stats_rows_slow


def _rows(rng, c, m):
    x = rng.standard_normal((c, m)) * 10.0 ** rng.integers(-5, 9, (c, 1)) \
        + 10.0 ** rng.integers(-3, 12, (c, 1))
    if c >= 8:
        x[0] = 7.25  # constant
        x[1, ::3] = np.nan
        x[2, :1] = np.inf
        x[3, :2] = [np.inf, -np.inf][: min(m, 2)]
        x[4] = np.nan
        x[5] = rng.integers(-9, 9, m) * 1e300  # squares past float64's range
        x[6] = 1e9 + rng.standard_normal(m) * 1e-4  # near-constant, far from 0
        x[7, ::2] = -0.0
    return x


@pytest.mark.parametrize("m", [0, 1, 2, 7, 33, 1000, 4099])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit", "raise"])
def test_all_rows_at_once_are_the_rows_one_by_one(m, nan_policy):
    rng = np.random.default_rng(m)
    rows = _rows(rng, 40, m)
    got, want = ref_stats_rows(rows, nan_policy), ref_stats_rows_slow(rows, nan_policy)
    for name in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
        assert getattr(got, name).dtype == getattr(want, name).dtype


def test_a_strided_float32_view_is_read_as_float64():
    rng = np.random.default_rng(5)
    with np.errstate(over="ignore"):  # (the 1e300 row: infinities in float32)
        rows = _rows(rng, 12, 50).astype(np.float32)[:, ::2]
    got, want = ref_stats_rows(rows), ref_stats_rows_slow(rows.astype(np.float64))
    for name in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
