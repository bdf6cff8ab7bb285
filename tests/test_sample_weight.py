"""Sample weights in the core: ``RunningStats.update(x, sample_weight=w)``.

Frequency weights: integer weights must equal repeated rows, float weights a float64
weighted two-pass reference computed here, and weighted states merge with unweighted
ones exactly.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from conftest import HAVE_NUMBA_CUDA
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import assert_close, assert_stats, ref_stats, stats_rtol

import nbbn


def _layout(rng, dtype, layout, n):
    shape, axis = {"nchw": ((n, 3, 2, 5), 1), "nhwc": ((n, 2, 3, 4), -1),
                   "rows": ((n, 6), -1)}[layout]
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 256, shape).astype(dtype), axis
    return (rng.standard_normal(shape) * 3 + 50).astype(dtype), axis


def _as_repeated(rs_weighted):
    """A weighted RunningStats seen as unweighted statistics (for assert_stats)."""
    class View:
        count = rs_weighted.count.astype(np.int64)
        mean, var, std = rs_weighted.mean, rs_weighted.var, rs_weighted.std
        min, max = rs_weighted.min, rs_weighted.max
    assert np.array_equal(View.count, rs_weighted.count)  # integral weight sums
    return View


def _weighted_ref(x, w, axis, omit=False):
    """Per-channel weighted mean and variance (float64 two-pass, exact sums)."""
    rows = np.moveaxis(np.asarray(x, np.float64), axis, 1).reshape(x.shape[0], x.shape[axis], -1)
    mean, var, wsum = [], [], []
    for c in range(rows.shape[1]):
        v = rows[:, c, :]
        ww = np.broadcast_to(w[:, None], v.shape)
        keep = ~np.isnan(v) if omit else np.ones(v.shape, bool)
        v, ww = v[keep], ww[keep]
        sw = math.fsum(ww.tolist())
        m = math.fsum((ww * v).tolist()) / sw
        var.append(math.fsum((ww * (v - m) ** 2).tolist()) / sw)
        mean.append(m)
        wsum.append(sw)
    return np.array(wsum), np.array(mean), np.array(var)


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "rows"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
def test_integer_weights_equal_repeated_rows(rng, dtype, layout):
    x, axis = _layout(rng, dtype, layout, 40)
    w = rng.integers(0, 4, x.shape[0])
    rs = nbbn.RunningStats(axis).update(x, sample_weight=w)
    assert rs.weighted and rs.count.dtype == np.float64
    ref = ref_stats(np.repeat(x, w, axis=0), axis)
    assert_stats(_as_repeated(rs), ref, rtol=stats_rtol(dtype))


def test_float_weights_against_reference(rng):
    x = rng.standard_normal((300, 4)) * [1.0, 1e-3, 1e3, 5.0] + [0.0, 1e6, -3.0, 1e9]
    w = rng.random(300) * 3
    rs = nbbn.RunningStats(-1).update(x, sample_weight=w)
    wsum, mean, var = _weighted_ref(x, w, -1)
    assert_close(rs.count, wsum, rtol=1e-14, name="weight sum")
    assert_close(rs.mean, mean, rtol=1e-15, atol=1e-13 * np.sqrt(var), name="mean")
    assert_close(rs.var, var, rtol=1e-12, name="var")
    assert_close(rs.variance(ddof=1), var * wsum / (wsum - 1), rtol=1e-12, name="ddof=1")
    np.testing.assert_array_equal(rs.min, x.min(0))
    np.testing.assert_array_equal(rs.max, x.max(0))


def test_weighted_and_unweighted_batches_merge_exactly(rng):
    """Any split, any mix of weighted and unweighted batches, merged by update or `+`,
    equals the repeated-rows statistics of the whole stream."""
    x = (rng.standard_normal((90, 3, 4)) + 7).astype(np.float32)
    w = rng.integers(0, 3, 90)
    cuts = [0, 13, 14, 50, 90]
    a, b = nbbn.RunningStats(1), nbbn.RunningStats(1)
    for k, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        target = a if k % 2 else b
        if k == 1:  # an unweighted batch: every row weighs 1
            target.update(x[lo:hi])
            w[lo:hi] = 1
        else:
            target.update(x[lo:hi], sample_weight=w[lo:hi])
    ref = ref_stats(np.repeat(x, w, axis=0), 1)
    for merged in (a + b, b + a, b.merge(a)):
        assert_stats(_as_repeated(merged), ref, rtol=1e-6)
    a += b
    assert_stats(_as_repeated(a), ref, rtol=1e-6)


def test_zero_weight_rows_are_absent(rng):
    x = rng.standard_normal((20, 3))
    x[0] = [1e9, np.nan, -1e9]  # weight 0: no count, no min/max, no NaN
    w = np.ones(20)
    w[0] = 0.0
    rs = nbbn.RunningStats(-1).update(x, sample_weight=w)
    ref = ref_stats(x[1:], -1)
    assert_stats(_as_repeated(rs), ref, rtol=1e-12)
    np.testing.assert_array_equal(rs.nan_count, [0, 0, 0])


def test_boolean_weights_weigh_zero_and_one(rng):
    x = rng.standard_normal((30, 4)).astype(np.float32)
    keep = rng.random(30) < 0.5
    rs = nbbn.RunningStats(-1).update(x, sample_weight=keep)
    ref = nbbn.RunningStats(-1).update(x[keep])
    np.testing.assert_array_equal(rs.count, ref.count)
    np.testing.assert_allclose(rs.mean, ref.mean, rtol=1e-13)
    np.testing.assert_allclose(rs.var, ref.var, rtol=1e-12)
    np.testing.assert_array_equal(rs.min, ref.min)
    np.testing.assert_array_equal(rs.max, ref.max)


@pytest.mark.parametrize("kind", ["float64", "float16", "bfloat16", "4-d"])
def test_raise_refuses_a_nan_in_a_row_of_weight_0(rng, kind):
    """nan_policy="raise" took a NaN or an infinity in a row of weight 0 (the kernels
    skip the row), all-zero weights too; scikit-learn validates X whole. The state is
    unchanged, and a batch whose absent rows are finite is taken."""
    x = rng.standard_normal((4, 3, 2) if kind == "4-d" else (4, 3))
    x[(1, 2) + (0,) * (x.ndim - 2)] = np.nan
    x[(3, 0) + (1,) * (x.ndim - 2)] = np.inf
    axis = 1 if kind == "4-d" else -1
    if kind == "bfloat16":
        x = pytest.importorskip("torch").tensor(x, dtype=pytest.importorskip(
            "torch").bfloat16)
    elif kind != "4-d":
        x = x.astype(kind)
    rs = nbbn.RunningStats(axis, nan_policy="raise").update(np.ones((1, 3, 2)[:x.ndim]))
    before = pickle.dumps(rs.to_dict())
    for w in ([1.0, 0, 2, 0], [0, 0, 0, 0]):
        with pytest.raises(ValueError, match=r"holds 1 NaN and 1 infinite values \(channels "
                                             r"0, 2\) in rows of weight 0"):
            rs.update(x, sample_weight=w)
        assert pickle.dumps(rs.to_dict()) == before
    finite = np.asarray(x.double() if kind == "bfloat16" else x, np.float64)
    rs.update(np.nan_to_num(finite, posinf=0.0), sample_weight=[1.0, 0, 2, 0])
    per = 2 if kind == "4-d" else 1  # (values per row and channel)
    assert rs.count.tolist() == [(1 + 3) * per] * 3


@pytest.mark.parametrize("policy", ["omit", "propagate", "raise"])
def test_nan_policies(rng, policy):
    x = rng.standard_normal((30, 3))
    x[[2, 5], 1] = np.nan
    w = rng.random(30) + 0.5
    rs = nbbn.RunningStats(-1, nan_policy=policy)
    if policy == "raise":
        with pytest.raises(ValueError, match="NaN"):
            rs.update(x, sample_weight=w)
        assert rs.num_channels is None
        return
    rs.update(x, sample_weight=w)
    np.testing.assert_array_equal(rs.nan_count, [0, 2, 0])
    wsum, mean, var = _weighted_ref(x, w, -1, omit=True)
    if policy == "omit":
        assert_close(rs.count, wsum, rtol=1e-14, name="weight sum")
        assert_close(rs.var, var, rtol=1e-12, name="var")
    else:
        assert np.isnan(rs.mean[1]) and np.isnan(rs.var[1])
        assert_close(rs.var[[0, 2]], var[[0, 2]], rtol=1e-12, name="var")


@pytest.mark.parametrize("policy", ["omit", "propagate"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_runs_in_weighted_tables(rng, dtype, policy):
    """Tables of many ``BLOCK``-row blocks (``cpu_weighted._weighted_rows``): a block
    with a NaN is read again with its NaNs selected out, and so is the next one; an
    infinity and a NaN in one block, zero weights inside such blocks, a channel NaN for
    whole blocks, a clean stretch after the NaNs, and a stretch far from the first
    mean: against the exact weighted reference."""
    from nbbn.backends.cpu_weighted import BLOCK

    n = 9 * BLOCK + 17
    x = rng.standard_normal((n, 5)) * [1.0, 3.0, 1e-2, 10.0, 2.0] + [0.0, 50.0, -3.0, 1e3, 7.0]
    x[4 * BLOCK:, 3] += 1e5  # (far from the first mean)
    x[BLOCK + 3, 0] = x[BLOCK + 90, 1] = x[2 * BLOCK + 5, 4] = np.nan
    x[2 * BLOCK + 7:2 * BLOCK + 40, 1] = np.nan
    x[3 * BLOCK:5 * BLOCK, 2] = np.nan  # whole blocks of one channel
    x[2 * BLOCK + 9, 0] = np.inf  # an infinity beside NaNs (channel 0), and one alone
    x[2 * BLOCK + 11, 0] = np.nan
    x[8 * BLOCK, 3] = -np.inf
    x = x.astype(dtype)
    w = rng.random(n) * 2.0
    w[[BLOCK + 3, 2 * BLOCK + 8, 3 * BLOCK + 1, 3 * BLOCK + 2]] = 0.0
    rs = nbbn.RunningStats(-1, nan_policy=policy).update(x, sample_weight=w)
    keep = w > 0
    np.testing.assert_array_equal(rs.nan_count, np.isnan(x[keep]).sum(0))
    np.testing.assert_array_equal(rs.inf_count, np.isinf(x[keep]).sum(0))
    np.testing.assert_array_equal(rs.min[[1, 2, 4]], np.nanmin(x[keep], 0)[[1, 2, 4]]
                                  if policy == "omit" else np.full(3, np.nan))
    np.testing.assert_array_equal(rs.max[[1, 2, 4]], np.nanmax(x[keep], 0)[[1, 2, 4]]
                                  if policy == "omit" else np.full(3, np.nan))
    assert rs.mean[3] == -np.inf and np.isnan(rs.var[3])  # (no NaN in channel 3)
    assert (rs.mean[0] == np.inf if policy == "omit" else np.isnan(rs.mean[0]))
    assert np.isnan(rs.var[0])
    finite = [1, 2, 4]  # (channels without an infinity)
    wsum, mean, var = _weighted_ref(x[:, finite], w, -1, omit=True)
    if policy == "omit":
        kept = np.array([math.fsum(w[~np.isnan(x[:, c])]) for c in range(5)])
        assert_close(rs.count, kept, rtol=1e-14, name="weight sum")
        assert_close(rs.mean[finite], mean, rtol=1e-15, atol=1e-12, name="mean")
        assert_close(rs.var[finite], var, rtol=1e-12, name="var")
    else:
        assert np.isnan(rs.mean[[0, 1, 2, 4]]).all() and np.isnan(rs.var).all()
        assert_close(rs.count, np.full(5, w.sum()), rtol=1e-14, name="weight sum")


@pytest.mark.parametrize("policy", ["omit", "propagate"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
def test_long_channels_first_runs(rng, dtype, policy):
    """Channels-first runs long enough for the lane spans of ``_weighted_stats``: runs of
    ``SPAN`` whole blocks, of fewer, and a tail of less than a block; a NaN inside a
    span (read again), an infinity alone, a channel NaN for a whole run, a stretch far
    from the first mean, zero weights; uint8 read as it is. Counts, min and max exact,
    mean and variance against the exact weighted reference."""
    from nbbn.backends.cpu_weighted import BLOCK, SPAN

    length = SPAN * BLOCK + 3 * BLOCK + 37  # one whole span, one of 3 blocks, a tail
    o, nchan = 7, 5
    if dtype == "uint8":
        x = rng.integers(0, 256, (o, nchan, length)).astype(np.uint8)
    else:
        x = rng.standard_normal((o, nchan, length)) * [[1.0], [3.0], [1e-2], [10.0], [2.0]]
        x = x + [[0.0], [50.0], [-3.0], [1e3], [7.0]]
        x[3:, 3] += 1e5  # (far from the first mean)
        x[1, 0, 5 * BLOCK + 3] = x[4, 4, SPAN * BLOCK + 40] = np.nan  # in spans
        x[2, 1, 2] = np.nan  # (at weight 0: absent)
        x[5, 1, :] = np.nan  # a whole run of one channel
        x[3, 3, BLOCK + 9] = np.inf  # an infinity (channel 3 has no NaN)
        x[6, 2, length - 1] = np.nan  # in the tail
        x = x.astype(dtype)
    w = rng.random(o) * 2.0
    w[2] = 0.0
    rs = nbbn.RunningStats(1, nan_policy=policy).update(x, sample_weight=w)
    keep = np.moveaxis(x[w > 0], 1, 0).reshape(nchan, -1)
    np.testing.assert_array_equal(rs.nan_count, np.isnan(keep).sum(1))
    np.testing.assert_array_equal(rs.inf_count, np.isinf(keep).sum(1))
    if dtype == "uint8":
        np.testing.assert_array_equal(rs.min, keep.min(1))
        np.testing.assert_array_equal(rs.max, keep.max(1))
        wsum, mean, var = _weighted_ref(x, w, 1)
        assert_close(rs.mean, mean, rtol=1e-15, name="mean")
        assert_close(rs.var, var, rtol=1e-13, name="var")
        return
    assert rs.mean[3] == np.inf and np.isnan(rs.var[3])  # (channel 3: an infinity)
    nans = [0, 1, 2, 4]  # (the channels with a NaN of nonzero weight)
    if policy == "omit":
        np.testing.assert_array_equal(rs.min, np.nanmin(keep, 1))
        np.testing.assert_array_equal(rs.max, np.nanmax(keep, 1))
        wsum, mean, var = _weighted_ref(x[:, nans], w, 1, omit=True)
        assert_close(rs.mean[nans], mean, rtol=1e-15, atol=1e-12, name="mean")
        assert_close(rs.var[nans], var, rtol=1e-12, name="var")
    else:  # a NaN anywhere in a run (a span read again, the tail) makes all four NaN
        for name in ("mean", "var", "min", "max"):
            assert np.isnan(getattr(rs, name)[nans]).all(), name
        assert rs.min[3] == keep[3].min() and rs.max[3] == np.inf


@pytest.mark.parametrize("view", ["strided", "fortran", "big-endian"])
def test_non_contiguous_input(rng, view):
    base = rng.standard_normal((40, 5, 3))
    x = {"strided": base[::2, :, ::2], "fortran": np.asfortranarray(base),
         "big-endian": base.astype(">f8")}[view]
    w = rng.random(x.shape[0])
    rs = nbbn.RunningStats(1).update(x, sample_weight=w)
    wsum, mean, var = _weighted_ref(np.asarray(x, np.float64), w, 1)
    assert_close(rs.count, wsum, rtol=1e-14, name="weight sum")
    assert_close(rs.var, var, rtol=1e-12, name="var")


def test_state_survives_save_load_and_pickle(rng, tmp_path):
    x = rng.standard_normal((25, 4))
    rs = nbbn.RunningStats(-1).update(x).update(x, sample_weight=rng.random(25))
    rs.save(tmp_path / "s.npz")
    for back in (nbbn.RunningStats.load(tmp_path / "s.npz"), pickle.loads(pickle.dumps(rs))):
        assert back.weighted
        np.testing.assert_array_equal(back.count, rs.count)
        np.testing.assert_array_equal(back.var, rs.var)
    plain = nbbn.RunningStats(-1).update(x)
    assert "weight" not in plain.to_dict() and not plain.weighted  # unweighted format as before


def test_weights_with_the_channel_axis_first_say_what_to_do():
    """A DataArray with its channel dimension first, or a 1-d batch, was told "channel_axis
    must not be 0", where the caller gave "band" or -1, with no word of the fix."""
    xr = pytest.importorskip("xarray")
    da = xr.DataArray(np.ones((3, 5)), dims=("band", "row"))
    with pytest.raises(ValueError, match=r"axis 0 is the channel axis here \(channel_axis="
                                         r"'band'\); transpose .*da\.transpose\("):
        nbbn.RunningStats("band").update(da, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"\(channel_axis=-1\); a 1-d batch is one row of "
                                         r"channels: pass x\[None\] with one weight"):
        nbbn.RunningStats(-1).update(np.ones(4), sample_weight=np.ones(4))
    with pytest.raises(ValueError, match=r"\(channel_axis=-2\); the weighted rows must come "
                                         r"first: pass np\.moveaxis\(x, 0, -1\)"):
        nbbn.RunningStats(-2).update(np.ones((3, 4)), sample_weight=np.ones(3))


@pytest.mark.parametrize(("weight", "axis", "exc", "match"), [
    (np.ones(9), -1, ValueError, r"shape \(10,\)"),
    (np.ones((10, 1)), -1, ValueError, r"shape \(10,\)"),
    (np.r_[np.ones(9), -1.0], -1, ValueError, ">= 0"),
    (np.r_[np.ones(9), np.nan], -1, ValueError, "finite"),
    (np.r_[np.ones(9), np.inf], -1, ValueError, "finite"),
    (np.array(["a"] * 10), -1, TypeError, "real numbers"),
    (np.ones(10), 0, ValueError, "but axis 0 is the channel axis here"),
    (np.full(10, 1e308), -1, ValueError, "between 2\\*\\*-500 and 2\\*\\*500"),
])
def test_bad_weights_leave_the_state_unchanged(rng, weight, axis, exc, match):
    x = rng.standard_normal((10, 4))
    rs = nbbn.RunningStats(axis)
    if axis != 0:  # (no kernel for channels on axis 0 compiled just for this)
        rs.update(x)
    before = rs.to_dict()
    with pytest.raises(exc, match=match):
        rs.update(x, sample_weight=weight)
    after = rs.to_dict()
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_all_zero_weights_change_nothing(rng):
    """A batch whose rows all weigh 0 is an empty batch: the state (its count's dtype,
    ``weighted``) stays as it was, and a fresh object's channel count is fixed, as by
    an empty batch (tests/test_running_stats.py)."""
    x = rng.standard_normal((4, 3))
    rs = nbbn.RunningStats(-1).update(x)
    before = rs.to_dict()
    rs.update(x, sample_weight=np.zeros(4))
    assert not rs.weighted and rs.count.dtype == np.int64
    for k, v in before.items():
        np.testing.assert_array_equal(rs.to_dict()[k], v)
    fresh = nbbn.RunningStats(-1).update(x, sample_weight=np.zeros(4))
    assert fresh.num_channels == 3 and not fresh.weighted
    np.testing.assert_array_equal(fresh.count, np.zeros(3, np.int64))


def test_a_weighted_count_that_would_overflow_is_refused(rng, monkeypatch):
    """Each batch's weight sum was checked, the running sum not: two batches of weight
    1.6e308 gave an infinite count and a variance of 0 (and scikit-learn's scaler a scale
    of 0), silently."""
    from nbbn.sklearn import StandardScaler

    # Weights past 2**500 are refused now (test_weights_out_of_float64s_reach_are_refused),
    # so no update reaches an overflowing weight sum; the guard stays for states loaded
    # or merged near float64's limit, and is driven here with the range lifted
    monkeypatch.setattr("nbbn._weights.WEIGHT_MAX", np.inf)
    x = rng.normal(size=(4, 2)) * 0.1  # (M2, the weight sum times the variance, finite)
    w = np.full(4, 4e307)
    rs = nbbn.RunningStats(-1).update(x, sample_weight=w)
    before = rs.to_dict()
    for step in (lambda: rs.update(x, sample_weight=w), lambda: rs.merge(rs),
                 lambda: rs.update(x.astype(np.float32), sample_weight=w)):
        with pytest.raises(ValueError, match="weighted count would overflow float64"):
            step()
        for k, v in before.items():
            np.testing.assert_array_equal(rs.to_dict()[k], v)
    np.testing.assert_allclose(rs.var, x.var(0), rtol=1e-12)
    scaler = StandardScaler().partial_fit(x, sample_weight=w)
    with pytest.raises(ValueError, match="weighted count would overflow"):
        scaler.partial_fit(x, sample_weight=w)
    np.testing.assert_allclose(scaler.var_, x.var(0), rtol=1e-12)
    # one batch of 100 values per channel and row: each weight counts 100 times
    maps = nbbn.RunningStats(1)
    with pytest.raises(ValueError, match="each counts 100 values per channel"):
        maps.update(rng.normal(size=(4, 2, 10, 10)), sample_weight=np.full(4, 4e306))
    assert maps.num_channels is None


def test_an_overflowing_m2_is_infinite_not_nan():
    """Compensated sums keep an overflowed sum infinite (a NaN compensation made it NaN):
    the variance is inf, as numpy's and as the unweighted kernels' (sparse input:
    tests/test_sparse.py)."""
    x = np.array([[0.0, 1.0], [1e160, 2.0], [-1e200, 3.0]])
    for w in (None, np.ones(3)):
        rs = nbbn.RunningStats(-1).update(x, sample_weight=w)
        assert rs.var[0] == np.inf and rs.var[1] == pytest.approx(2 / 3)


@pytest.mark.parametrize("policy", ["propagate", "omit"])
def test_values_near_the_top_of_the_range_keep_a_finite_mean(rng, policy):
    """Finite values whose weighted deviations overflow float64 (one sign: their sum;
    both signs: each deviation) keep a finite mean, redone scaled by 2^-64 as the
    unweighted kernels do: the exact weighted mean (fractions) to about 2^-53 of the
    values; the variance is inf (its true value is beyond float64), never NaN."""
    from fractions import Fraction

    top = 1e307 * (10.0 + rng.uniform(-1, 1, (400, 2)))  # 9e307 .. 1.1e308
    top[1::2, 1] *= -1.0  # channel 1: both signs, so single deviations overflow too
    w = rng.integers(0, 4, 400).astype(np.float64)
    if policy == "omit":
        top[::7, 0] = np.nan
    rs = nbbn.RunningStats(-1, nan_policy=policy).update(top, sample_weight=w)
    for c in range(2):
        keep = ~np.isnan(top[:, c])
        pairs = zip(w[keep], top[keep, c], strict=True)
        exact = sum(Fraction(a) * Fraction(b) for a, b in pairs)
        exact /= Fraction(w[keep].sum())
        # (to 2^-53 of the values' size: channel 1's mean is far smaller than they are)
        scale = np.nanmax(np.abs(top[:, c]))
        assert abs(rs.mean[c] - float(exact)) <= 1e-15 * scale, (c, rs.mean[c], exact)
    assert np.isposinf(rs.var).all(), rs.var
    # as the same rows repeated (the unweighted kernels' scaled redo)
    rep = nbbn.RunningStats(-1, nan_policy=policy).update(np.repeat(top, w.astype(int), 0))
    np.testing.assert_allclose(rs.mean, rep.mean, rtol=0, atol=2e-15 * np.nanmax(top))


@pytest.mark.parametrize("layout", ["rows", "nchw"])
def test_tiny_weights_of_tiny_values_keep_the_mean(rng, layout):
    """The weights are scaled by a power of two to a largest of 1 before the kernels:
    values of 1e-200 weighted 2**-450 (``w * (x - s)`` underflowed to 0) had the mean of
    their first value, 31% off; weights scaled by any power of two give the same bits."""
    shape = (64, 3) if layout == "rows" else (64, 3, 5)
    x = 1e-200 * (1.0 + rng.random(shape))
    rs = nbbn.RunningStats(1).update(x, sample_weight=np.full(64, 2.0 ** -450))
    axes = (0,) if layout == "rows" else (0, 2)
    np.testing.assert_allclose(rs.mean, x.mean(axes), rtol=1e-15)
    if layout == "rows":  # a sparse matrix's sums, scaled the same way
        sparse = pytest.importorskip("scipy.sparse")
        x[::3, 1] = 0.0
        got = nbbn.RunningStats(1).update(sparse.csr_matrix(x),
                                          sample_weight=np.full(64, 2.0 ** -450))
        np.testing.assert_allclose(got.mean, x.mean(0), rtol=1e-15)
    # huge values weighted 2**-450: scaled, their M2 leaves float64 (1e320), so they are
    # reduced again with the weights as given (a first version kept the inf, and a
    # merge with a heavy zero gave the variance inf for 1.1e51)
    big = rng.normal(0.0, 1e160, (100, 1))
    light = nbbn.RunningStats(-1).update(big, sample_weight=np.full(100, 2.0 ** -450))
    heavy = nbbn.RunningStats(-1).update(np.zeros((1, 1)), sample_weight=[2.0 ** 450])
    one = nbbn.RunningStats(-1).update(np.vstack([big, [[0.0]]]),
                                       sample_weight=np.r_[np.full(100, 2.0 ** -450), 2.0 ** 450])
    assert np.isfinite(one.var[0])
    assert (light + heavy).var[0] == pytest.approx(one.var[0], rel=1e-12)
    y, w = rng.normal(5.0, 2.0, shape), rng.random(64) * 3.0
    want = nbbn.RunningStats(1).update(y, sample_weight=w)
    for k in (-300, -7, 1, 300):
        got = nbbn.RunningStats(1).update(y, sample_weight=np.ldexp(w, k))
        assert np.array_equal(got.mean, want.mean) and np.array_equal(got.var, want.var)
        assert np.array_equal(got.count, np.ldexp(want.count, k))


def test_huge_weights_keep_a_finite_mean_and_an_inf_or_exact_variance(monkeypatch):
    """Weights up to float64's range (refused past 2**-500..2**500 now; the kernels'
    handling is kept for states merged or loaded near the limits, and driven here with
    the range lifted): the redo divides them by their sum (weight times value
    overflowed in it: NaN), and a merge whose weight ratio underflows to 0 gives an
    infinite variance where d * d overflows (inf * 0 was NaN)."""
    monkeypatch.setattr("nbbn._weights.WEIGHT_MAX", np.inf)
    monkeypatch.setattr("nbbn._weights.WEIGHT_MIN", 0.0)
    rs = nbbn.RunningStats(-1).update(np.array([[2e30], [1e30]]),
                                      sample_weight=np.array([1.0, 1e300]))
    assert rs.mean[0] == 1e30 and rs.var[0] == pytest.approx(1e-240, rel=1e-12)
    a = nbbn.RunningStats(-1).update(np.array([[-1e308]]), sample_weight=np.array([1e25]))
    b = nbbn.RunningStats(-1).update(np.array([[1e308]]), sample_weight=np.array([1e-300]))
    for merged in (a.merge(b), b.merge(a)):  # either part first
        assert merged.mean[0] == -1e308 and merged.var[0] == np.inf
    x, w = np.array([[1e308], [-1e308]]), np.array([1e-320, 1e300])
    for chunk in (8, 1 << 20):  # one row per chunk (merged), or one chunk
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("nbbn.backends.cpu_weighted.CHUNK_BYTES", chunk)
            rs = nbbn.RunningStats(-1).update(x, sample_weight=w)
        assert rs.mean[0] == -1e308 and rs.var[0] == np.inf, chunk


@pytest.mark.parametrize("weighted", [False, True])
def test_an_infinity_among_values_whose_sum_overflows(weighted):
    """The infinity decides the mean (NaN for both signs), whatever the finite values'
    sum did: 299 values near 1e308 overflow it to +inf, and + (-inf) made the mean NaN;
    the variance is NaN, as numpy's with an infinity."""
    top = np.full((300, 1), 1.5e308)
    for inf, want in ((-np.inf, -np.inf), (np.inf, np.inf)):
        x = top.copy()
        x[137] = inf
        w = np.full(300, 2.0) if weighted else None
        rs = nbbn.RunningStats(-1).update(x, sample_weight=w)
        assert rs.mean[0] == want and np.isnan(rs.var[0]), (rs.mean, rs.var)
    x = top.copy()
    x[[3, 200]] = [[np.inf], [-np.inf]]
    rs = nbbn.RunningStats(-1).update(x, sample_weight=np.ones(300) if weighted else None)
    assert np.isnan(rs.mean[0]) and np.isnan(rs.var[0])


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="needs numba-cuda (GPU or simulator)")
def test_cuda_says_weights_are_cpu_only(rng, cuda):
    x = rng.standard_normal((6, 3))
    rs = nbbn.RunningStats(-1).update(x, sample_weight=np.full(6, 2.0))
    before = rs.to_dict()
    with pytest.raises(nbbn.BackendUnavailableError, match="backend='cpu' or 'auto'"):
        rs.update(cuda.to_device(x), sample_weight=np.ones(6))
    fresh = nbbn.RunningStats(-1)  # (all-zero weights were taken: the channels fixed)
    with pytest.raises(nbbn.BackendUnavailableError, match="backend='cpu' or 'auto'"):
        fresh.update(cuda.to_device(x), sample_weight=np.zeros(6))
    assert fresh.num_channels is None
    np.testing.assert_array_equal(rs.to_dict()["weight"], before["weight"])
    # an unweighted device batch merges into the weighted state on the host
    rs.update(cuda.to_device(x))
    ref = ref_stats(np.concatenate([x, x, x]), -1)
    assert_stats(_as_repeated(rs), ref, rtol=1e-12)


def test_many_chunks_give_the_same_statistics(rng, monkeypatch):
    from nbbn.backends import cpu_weighted

    x = rng.standard_normal((97, 3, 5)).astype(np.float32)
    w = rng.integers(0, 3, 97)
    monkeypatch.setattr(cpu_weighted, "CHUNK_BYTES", 1000)  # rows of 120 bytes: 8 per chunk
    rs = nbbn.RunningStats(1).update(x, sample_weight=w)
    assert_stats(_as_repeated(rs), ref_stats(np.repeat(x, w, axis=0), 1), rtol=1e-12)


@pytest.mark.parametrize("layout", ["rows", "nchw"])
def test_long_streams_keep_float64_precision(rng, layout):
    """200,000 weighted rows in one chunk: the weight sums and the squares are summed
    with compensation, so the variance stays within a few ulp (a plain running sum left
    1e-12 of it)."""
    n = 200_000
    x = rng.standard_normal((n, 3)) * [2.0, 1e-3, 50.0] + [5.0, 1e3, -7.0]
    x[rng.random(x.shape) < 0.7] = 0.0  # spread: zeros far from the mean
    w = rng.random(n) * 3
    if layout == "rows":
        rs = nbbn.RunningStats(-1).update(x, sample_weight=w)
    else:  # 2,000 images of 100 pixels, one weight per image
        w = np.repeat(w[: n // 100], 100)
        images = x.reshape(n // 100, 100, 3).transpose(0, 2, 1)
        rs = nbbn.RunningStats(1).update(images, sample_weight=w[::100])
    wsum, mean, var = _weighted_ref(x, w, -1)
    assert_close(rs.count, wsum, rtol=1e-15, name="weight sum")
    assert_close(rs.mean, mean, rtol=1e-15, atol=1e-15 * np.sqrt(var), name="mean")
    assert_close(rs.var, var, rtol=1e-14, name="var")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(-1e6, 1e6, width=32)), min_size=1,
                max_size=40),
       st.integers(0, 40), st.floats(1e-3, 1e3))
def test_split_and_merge_never_change_the_answer(rows, cut, spread):
    """Any integer weights, any split into two weighted states merged with `+`: the
    statistics of the repeated rows."""
    w = np.array([r[0] for r in rows])
    x = np.array([[r[1], r[1] * spread] for r in rows])
    cut = min(cut, len(rows))
    a = nbbn.RunningStats(-1).update(x[:cut], sample_weight=w[:cut])
    b = nbbn.RunningStats(-1).update(x[cut:], sample_weight=w[cut:])
    merged = a + b
    if w.sum() == 0:
        assert merged.num_channels is None or not merged.count.any()
        return
    assert_stats(_as_repeated(merged), ref_stats(np.repeat(x, w, axis=0), -1), rtol=1e-12)


def test_report_shows_weight_sums():
    from nbbn.report import format_json, format_table

    rs = nbbn.RunningStats(-1).update(np.ones((3, 2)), sample_weight=[0.25, 1.0, 2.0])
    assert "3.25" in format_table(rs)
    assert '"count": [3.25, 3.25]' in format_json(rs)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_cpu_tensors(rng, dtype):
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(rng.standard_normal((30, 3, 4)).astype(np.float32) * 5 + 10)
    t = t.to(getattr(torch, dtype))
    w = rng.integers(0, 3, 30)
    rs = nbbn.RunningStats(1).update(t, sample_weight=w)
    x = t.float().numpy()  # the exact values (bfloat16 widens exactly)
    assert_stats(_as_repeated(rs), ref_stats(np.repeat(x, w, axis=0), 1), rtol=1e-12)


def test_weights_with_xarray_and_dask():
    """A DataArray's weighted statistics are its data's; a dask array is refused clearly
    and leaves the state as it was."""
    xr = pytest.importorskip("xarray")
    da = pytest.importorskip("dask.array")
    from nbbn.errors import BackendUnavailableError

    rng = np.random.default_rng(5)
    x = rng.normal(3.0, 2.0, (20, 4)).astype(np.float32)
    w = rng.integers(0, 4, 20).astype(np.float64)
    ref = nbbn.RunningStats(channel_axis=1).update(x, sample_weight=w)
    rs = nbbn.RunningStats(channel_axis="f").update(xr.DataArray(x, dims=("n", "f")),
                                                    sample_weight=w)
    np.testing.assert_array_equal(rs.var, ref.var)
    np.testing.assert_array_equal(rs.count, ref.count)
    before = rs.to_dict()
    with pytest.raises(BackendUnavailableError, match="dask arrays"):
        rs.update(xr.DataArray(da.from_array(x, chunks=5), dims=("n", "f")), sample_weight=w)
    after = rs.to_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("layout", ["nchw", "rows"])
def test_threaded_chunks_and_runs_match_one_thread_and_the_reference(rng, monkeypatch, layout):
    """The chunks of a weighted update are spread over the threads and merged in their
    order: the same bits as one thread. Runs of one channel longer than a block (NCHW,
    300 values per row) and rows of a table, with NaNs (omitted) and an infinity among
    them (read value by value), against the float64 reference."""
    from nbbn.backends import cpu, cpu_weighted

    shape, axis = {"nchw": ((61, 3, 300), 1), "rows": ((3001, 5), -1)}[layout]
    x = rng.standard_normal(shape) * 4 + 1e4
    x.reshape(-1)[rng.choice(x.size, 40, replace=False)] = np.nan
    w = rng.random(shape[0]) * 3
    w[::7] = 0.0
    monkeypatch.setattr(cpu_weighted, "CHUNK_BYTES", 8 * x[0].size * 5)  # 5 rows a chunk
    monkeypatch.setattr(cpu, "THREADED_MIN_ELEMENTS", 0)
    rs = nbbn.RunningStats(axis, nan_policy="omit").update(x, sample_weight=w)
    with cpu.thread_limit(1):
        one = nbbn.RunningStats(axis, nan_policy="omit").update(x, sample_weight=w)
    for k, v in rs.to_dict().items():
        np.testing.assert_array_equal(v, one.to_dict()[k], err_msg=k)
    wsum, mean, var = _weighted_ref(x, w, axis, omit=True)
    np.testing.assert_allclose(rs.count, wsum, rtol=1e-15)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-15)
    np.testing.assert_allclose(rs.var, var, rtol=1e-12)
    at = x[0].size + 5  # (row 1, of weight > 0: its channel's mean inf, variance NaN)
    x.reshape(-1)[at] = np.inf
    rs = nbbn.RunningStats(axis, nan_policy="omit").update(x, sample_weight=w)
    c = np.unravel_index(at, x.shape)[axis % x.ndim]
    assert rs.mean[c] == np.inf and np.isnan(rs.var[c])
    assert np.isfinite(np.delete(rs.var, c)).all()


def test_weights_in_an_object_array_are_read_as_numbers():
    """Python numbers in an object array count as scikit-learn counts them; text does not."""
    x = np.arange(12.0).reshape(4, 3)
    w = np.array([1, 2.5, True, np.float32(0.5)], dtype=object)
    got = nbbn.RunningStats(-1).update(x, sample_weight=w)
    want = nbbn.RunningStats(-1).update(x, sample_weight=w.astype(np.float64))
    np.testing.assert_array_equal(got.mean, want.mean)
    with pytest.raises(TypeError, match="sample_weight must hold real numbers"):
        nbbn.RunningStats(-1).update(x, sample_weight=np.array([1, "1", 1, 1], dtype=object))


@pytest.mark.parametrize("w, match", [([10 ** 400, 1], "too large for float64"),
                                      ([5e307, 1.0], "2\\*\\*500"),
                                      ([1e-305, 1.0], "2\\*\\*-500")])
def test_weights_out_of_float64s_reach_are_refused(w, match):
    """Weights whose weighted sums leave float64 (a variance of 1.6 came back inf at
    5e307, 9e-23 came back 0 at 1e-305) and a Python int past float64 (a raw
    OverflowError) are refused, the state untouched."""
    rs = nbbn.RunningStats(-1).update(np.arange(6.0).reshape(2, 3))
    before = rs.to_dict()
    with pytest.raises(ValueError, match=match):
        rs.update(np.ones((2, 3)), sample_weight=w)
    after = rs.to_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    rs.update(np.ones((2, 3)), sample_weight=[2.0 ** 500, 0.0])  # the bounds are taken


def test_dask_batches_refuse_weights_even_all_zero():
    """A dask array (or a DataArray of one) with sample_weight is refused whatever the
    weights: all-zero weights were taken, fixing the channel count (mutant: the zero
    return first)."""
    da = pytest.importorskip("dask.array")
    xr = pytest.importorskip("xarray")
    from nbbn.errors import BackendUnavailableError

    for x in (da.ones((4, 3), chunks=2), xr.DataArray(da.ones((4, 3), chunks=2))):
        rs = nbbn.RunningStats(-1)
        with pytest.raises(BackendUnavailableError, match="dask"):
            rs.update(x, sample_weight=np.zeros(4))
        assert rs.num_channels is None


# ------------------------------------------------- edges found by mutation testing
def test_complex_sample_weight_is_refused():
    x = np.ones((4, 3))
    rs = nbbn.RunningStats(-1).update(x)
    with pytest.raises(TypeError, match="real numbers"):
        rs.update(x, sample_weight=np.ones(4, complex))


def test_weight_bounds_are_inclusive_and_exact():
    x = np.ones((2, 3))
    for w in (2.0 ** -500, 2.0 ** 500):
        assert nbbn.RunningStats(-1).update(x, sample_weight=[w, 0.0]).weighted
    for w in (np.nextafter(2.0 ** -500, 0), np.nextafter(2.0 ** 500, np.inf)):
        with pytest.raises(ValueError, match=r"between 2\*\*-500 and 2\*\*500"):
            nbbn.RunningStats(-1).update(x, sample_weight=[1.0, w])


def test_a_bad_weight_error_names_the_first_bad_row():
    with pytest.raises(ValueError, match=r"-1\.0\)? at row 1\b"):
        nbbn.RunningStats(-1).update(np.ones((4, 3)),
                                     sample_weight=[1.0, -1.0, np.nan, 1.0])


@pytest.mark.parametrize("layout", ["rows", "nchw"])
def test_integers_are_centred_on_the_nearest_integer(layout):
    """Integers are centred on the integer nearest their weighted mean, so the heavy
    value's deviations are 0 and M2 = Q - E^2 / W cancels nothing: a million 3s and
    one 2 (mean 2.999999) keep the exact variance (mutant: centred on the mean's floor,
    2, every deviation 1 and M2 cancelled to 1e-10 of itself)."""
    from fractions import Fraction

    x = np.array([[3, 3, 7], [2, 4, 6]], np.int32)  # (means just below/above integers)
    if layout == "nchw":
        x = np.repeat(x[:, :, None], 5, axis=2)
    w = np.array([10 ** 6, 1])
    rs = nbbn.RunningStats(1).update(x, sample_weight=w)
    for c in range(3):
        v = [int(r) for r in x[:, c].reshape(2, -1)[:, 0]]
        total = Fraction(int(w.sum()))
        mean = sum(Fraction(int(a)) * b for a, b in zip(w, v, strict=True)) / total
        var = sum(int(a) * (b - mean) ** 2 for a, b in zip(w, v, strict=True)) / total
        assert rs.mean[c] == float(mean), c
        assert rs.var[c] == pytest.approx(float(var), rel=1e-15, abs=0), c


def test_weighted_merges_add_the_nan_and_inf_counts(rng, monkeypatch):
    """The counts of NaNs and of infinities each add up through every weighted merge:
    chunks of one update, weighted states merged with ``+``, and an unweighted state
    merged into a weighted one (mutant: the merged infinity count took the part's NaNs)."""
    from nbbn.backends import cpu_weighted

    x = rng.standard_normal((97, 3, 5)).astype(np.float32)
    x[3, 0, 1] = x[50, 0, 2] = x[90, 2, 4] = np.nan
    x[10, 1, 0] = x[60, 1, 3] = np.inf
    x[70, 2, 0] = -np.inf
    w = rng.integers(0, 3, 97)
    w[[3, 10, 50, 60, 70, 90]] = 1
    keep = x[w > 0]
    nans, infs = np.isnan(keep).sum((0, 2)), np.isinf(keep).sum((0, 2))
    with monkeypatch.context() as m:
        m.setattr(cpu_weighted, "CHUNK_BYTES", 1000)  # (8 rows a chunk, merged)
        rs = nbbn.RunningStats(1, nan_policy="omit").update(x, sample_weight=w)
    np.testing.assert_array_equal(rs.nan_count, nans)
    np.testing.assert_array_equal(rs.inf_count, infs)
    a = nbbn.RunningStats(1, nan_policy="omit").update(x[:40], sample_weight=w[:40])
    b = nbbn.RunningStats(1, nan_policy="omit").update(x[40:], sample_weight=w[40:])
    for merged in (a + b, b + a):
        np.testing.assert_array_equal(merged.nan_count, nans)
        np.testing.assert_array_equal(merged.inf_count, infs)
    plain = nbbn.RunningStats(1, nan_policy="omit").update(x[40:])
    a += plain
    np.testing.assert_array_equal(a.nan_count, np.isnan(x[:40][w[:40] > 0]).sum((0, 2))
                                  + np.isnan(x[40:]).sum((0, 2)))
    np.testing.assert_array_equal(a.inf_count, np.isinf(x[:40][w[:40] > 0]).sum((0, 2))
                                  + np.isinf(x[40:]).sum((0, 2)))


def test_a_subnormal_scaled_m2_is_taken_from_the_weights_as_given(rng):
    """Values 1e-160 apart weighted 2**450: scaled to weights of 1, M2 (1e-321) is
    subnormal and keeps a few bits, so it is reduced again with the weights as given
    (M2 near 1e-186, every bit kept): against the exact M2 (mutant: a subnormal
    scaled M2 kept)."""
    from fractions import Fraction

    x = 1e-160 * (1.0 + rng.random((16, 2)))
    rs = nbbn.RunningStats(-1).update(x, sample_weight=np.full(16, 2.0 ** 450))
    for c in range(2):
        v = [Fraction(a) for a in x[:, c]]
        mean = sum(v) / len(v)
        want = float(Fraction(2) ** 450 * sum((a - mean) ** 2 for a in v))
        assert rs.to_dict()["m2"][c] == pytest.approx(want, rel=1e-14, abs=0), c


def test_omitted_nans_do_not_stop_the_redo_with_the_weights_as_given(rng):
    """Huge values weighted 2**-450 (scaled, their M2 leaves float64) are reduced again
    with the weights as given also where NaNs are omitted: M2 stays finite and exact
    (mutant: a channel with NaNs counted as unclean, its scaled inf M2 kept)."""
    big = rng.normal(0.0, 1e160, (100, 1))
    big[[5, 50]] = np.nan
    w = np.full(100, 2.0 ** -450)
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(big, sample_weight=w)
    clean = np.ldexp(big[~np.isnan(big)], -200)  # (scaled: its squares stay finite)
    assert rs.nan_count[0] == 2
    m2 = np.ldexp(clean.var() * clean.size, 400 - 450)
    np.testing.assert_allclose(rs.to_dict()["m2"], [m2], rtol=1e-12)
    np.testing.assert_allclose(rs.mean, [np.ldexp(clean.mean(), 200)], rtol=1e-12,
                               atol=1e146)


@pytest.mark.parametrize("view", ["strided", "fortran", "big-endian"])
def test_slabs_of_a_non_viewable_input_take_their_own_rows_weights(rng, monkeypatch, view):
    """An input read in slabs of rows (no (O, C, I) view: copied ``SLAB_BYTES`` at a
    time) gives each slab the weights of its own rows: the statistics of the whole
    (mutant: every slab given the weights from row 0 on)."""
    monkeypatch.setattr("nbbn._layout.SLAB_BYTES", 600)  # (a few rows a slab)
    base = rng.standard_normal((40, 5, 3))
    x = {"strided": base[::2, :, ::2], "fortran": np.asfortranarray(base),
         "big-endian": base.astype(">f8")}[view]
    w = rng.random(x.shape[0]) * np.arange(1, x.shape[0] + 1)  # (rows weigh differently)
    rs = nbbn.RunningStats(1).update(x, sample_weight=w)
    wsum, mean, var = _weighted_ref(np.asarray(x, np.float64), w, 1)
    assert_close(rs.count, wsum, rtol=1e-14, name="weight sum")
    assert_close(rs.mean, mean, rtol=1e-14, atol=1e-14 * np.sqrt(var), name="mean")
    assert_close(rs.var, var, rtol=1e-12, name="var")


@pytest.mark.parametrize("route", ["dense", "csc", "parts", "blocks"])
def test_weights_spanning_hundreds_of_decades_keep_the_variance(route):
    """The shift was each channel's first value in a row of nonzero weight: a first
    value of tiny weight far from the mean (1.8e92 weighted 8.6e-137 beside -5.6e32
    weighted 8e59) put the first mean further off than the values' spread, and M2
    cancelled to 0 (a variance of 47.9 read as 0; 29 of 400 random channels of values
    10^+-100 and weights 2^+-500 far off). Now the shift is a value of the largest
    weight (dense, CSC) or one outweighing all before it (CSR partitions, blocks)."""
    from fractions import Fraction

    from nbbn.backends import cpu_sparse

    def exact(x, w):
        tw = sum(Fraction(v) for v in w)
        m = sum(Fraction(a) * Fraction(b) for a, b in zip(x, w, strict=True)) / tw
        return float(sum(Fraction(b) * (Fraction(a) - m) ** 2
                         for a, b in zip(x, w, strict=True)) / tw)

    rng = np.random.default_rng(7)
    cols = [np.array([1.84185763e+92, 6.87880394e-06, -5.61409562e+32])]
    weights = [np.array([8.59888142e-137, 1.22070312e-04, 8.03469022e+59])]
    for _ in range(60):
        cols.append(rng.choice([-1.0, 1.0], 6) * 10.0 ** rng.uniform(-60, 60, 6))
        weights.append(2.0 ** rng.uniform(-200, 200, 6))
    for x, w in zip(cols, weights, strict=True):
        x2 = np.column_stack([x, np.arange(x.size, dtype=float)])
        if route == "dense":
            var = nbbn.RunningStats(-1).update(x2, sample_weight=w).var
        else:
            sparse = pytest.importorskip("scipy.sparse")
            st = cpu_sparse.reduce(sparse.csr_array(x2), 0, w.copy(), route=route)
            var = st.m2 / st.weight
        np.testing.assert_allclose(var[0], exact(x, w), rtol=1e-9)


def test_weights_with_a_dask_batch_are_refused_before_they_are_read():
    """A dask array of weights with a dask batch was computed (a scheduler run), then
    refused; the refusal now comes first, and the state is unchanged."""
    da = pytest.importorskip("dask.array")
    from dask.callbacks import Callback

    from nbbn.errors import BackendUnavailableError

    runs = []

    class Count(Callback):
        def _start(self, dsk):
            runs.append(len(dsk))

    x = da.from_array(np.random.default_rng(0).random((20, 3)), chunks=(5, 3))
    rs = nbbn.RunningStats(1).update(np.ones((2, 3)))
    with Count(), pytest.raises(BackendUnavailableError, match="not supported for dask "
                                                              "arrays"):
        rs.update(x, sample_weight=da.ones(20, chunks=5))
    assert runs == [] and rs.count.tolist() == [2, 2, 2]


def test_raise_checks_the_rows_of_weight_0_of_a_sparse_batch_too():
    # (a dense batch refused a NaN in a row of weight 0; a sparse one took it)
    sparse = pytest.importorskip("scipy.sparse")
    x = np.array([[1.0, 2.0], [np.nan, 0.0], [0.0, np.inf]])
    for w in (np.array([1.0, 0.0, 0.0]), np.zeros(3)):
        for batch in (x, sparse.csr_matrix(x), sparse.csc_array(x)):
            rs = nbbn.RunningStats(-1, nan_policy="raise").update(np.ones((2, 2)))
            with pytest.raises(ValueError, match=r"1 NaN and 1 infinite values \(channels "
                                                 r"0, 1\) in rows of weight 0"):
                rs.update(batch, sample_weight=w)
            assert rs.count.tolist() == [2, 2] and not rs.weighted
    ok = nbbn.RunningStats(-1, nan_policy="raise")
    ok.update(sparse.csr_matrix(x[:1]), sample_weight=[2.0])  # (finite: taken)
    assert ok.count.tolist() == [2.0, 2.0]


def test_a_masked_weight_says_to_fill_it_with_0():
    w = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    rs = nbbn.RunningStats(-1)
    with pytest.raises(TypeError, match=r"pass sample_weight.filled\(0\) to leave those rows"):
        rs.update(np.ones((2, 3)), sample_weight=w)
    assert rs.update(np.ones((2, 3)), sample_weight=w.filled(0)).count.tolist() == [1.0] * 3


def test_weighted_statistics_keep_no_histogram():
    # (update refused weights with a histogram, but one assigned after weighted data
    # was kept, and saved: unweighted percentiles beside a weighted mean)
    from nbbn._histogram import Histogram

    x = np.array([[0, 10], [2, 10], [4, 30]], np.uint8)
    rs = nbbn.RunningStats(1).update(x, sample_weight=[1.0, 1.0, 100.0])
    with pytest.raises(ValueError, match="statistics of weighted data .* cannot keep a "
                                         "histogram.*Nothing was changed"):
        rs.histogram = Histogram.of(x)
    assert rs.histogram is None
    d = rs.to_dict()
    d["histogram"] = Histogram.of(x).counts  # (a file written before 2026-12-08)
    with pytest.warns(RuntimeWarning, match="statistics of weighted data .* the histogram "
                                            "of these statistics is dropped"):
        back = nbbn.RunningStats.from_dict(d)
    assert back.histogram is None and back.count.tolist() == rs.count.tolist()
    # a merge with a weighted side (one that counted nothing too) keeps no histogram
    empty = nbbn.RunningStats(1, nan_policy="omit")
    empty.update(np.full((3, 2), np.nan), sample_weight=np.ones(3))
    counted = nbbn.RunningStats(1, nan_policy="omit")
    counted.histogram = Histogram.empty(2, np.uint8)
    counted.update(x)
    for merged in (empty + counted, counted + empty):
        assert merged.histogram is None and merged.weighted
        nbbn.RunningStats.from_dict(merged.to_dict())
    counted += empty
    assert counted.histogram is None
