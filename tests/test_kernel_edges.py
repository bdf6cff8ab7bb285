"""Contracts mutation testing found unpinned (2026-12-04): the CPU statistics kernels
(nbbn.backends.cpu_*)."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

import nbbn
from nbbn.backends import cpu_stats


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


def test_exact_redo_of_a_block_with_a_nan_keeps_the_mean_correctly_rounded():
    """A float64 block holding a NaN is redone exactly (``_block_slow``), and its mean
    keeps the corrected two-pass correction: the correctly rounded mean of the values
    it counts, not the rounded ``sum / count`` (mutant: the correction term dropped)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, (1, 6, 200)) + np.array([1e6, -3e5, 7.0, 1e3, -40.0, 0.5])[:, None]
    x[0, :, 5] = np.nan  # (200 values: fewer than a sub-block, the block is exact)
    rs = nbbn.RunningStats(1, nan_policy="omit").update(x)
    for c in range(6):
        v = x[0, c][~np.isnan(x[0, c])]
        assert rs.mean[c] == float(sum(map(Fraction, v)) / len(v)), c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_omitting_pass_keeps_an_infinity_in_the_last_rows(dtype):
    """A channels-last block with a NaN in its first row goes straight to the
    NaN-omitting pass, whose last rows (fewer than a SIMD tile's) are read one by one:
    an infinity there is a value, counted into the mean, not a NaN left out (mutant:
    the float32 NaN test that takes the infinity's bits for a NaN's)."""
    x = np.arange(101 * 3, dtype=np.float64).reshape(101, 3) % 7.0  # (101 rows: not whole tiles)
    x[0, 0] = np.nan
    x[-1, 1] = np.inf
    x[-1, 2] = -np.inf
    x = x.astype(dtype)
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(rs.mean, np.nanmean(x.astype(np.float64), axis=0))
    assert rs.count.tolist() == [100, 101, 101]
    assert rs.nan_count.tolist() == [1, 0, 0] and rs.inf_count.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(rs.max, [6.0, np.inf, 6.0])


def test_merge_of_states_with_an_infinite_variance_keeps_the_mean():
    """Values whose squared deviations overflow (an infinite M2) around a finite mean:
    merging two such states keeps that mean; a merge flushes a mean that cancelled to
    0 only when it is within a finite multiple of the spread (mutant: the flush taken
    for an infinite spread too, which set the mean to 0)."""
    x = np.array([[3e154, 2.0], [-1e154, 3.0], [1e154, 4.0]])  # (deviations 2e154)
    rs = nbbn.RunningStats(-1).update(x).update(x)  # (the second batch: a merge)
    exact = [float(sum(map(Fraction, x[:, c])) / 3) for c in range(2)]  # (1e154, 3)
    np.testing.assert_allclose(rs.mean, exact, rtol=1e-15)
    assert np.isposinf(rs.var[0])
    np.testing.assert_allclose(rs.var[1], np.var(np.concatenate([x, x])[:, 1]), rtol=1e-15)


def test_short_float64_rows_whose_deviations_overflow_are_redone():
    """Short float64 rows (the grouped two-pass kernel) whose sum is finite but one of
    whose deviations from the mean overflows (the largest float beside a negative
    mean): the group is redone exactly, a finite mean and an infinite variance
    (mutant: only the first pass's sum checked, and the infinite sum of deviations
    made the mean infinite)."""
    rng = np.random.default_rng(5)
    top = np.finfo(np.float64).max
    x = rng.standard_normal((2048, 2, 16))
    rpg = cpu_stats.rows_per_group(16)
    n = rpg * 16  # (the first group of channel 0: its mean about -1e300)
    x[:rpg, 0, :] = -(top / (n - 1)) - 1e300 * n / (n - 1)
    x[0, 0, 0] = top  # (top - mean overflows)
    assert cpu_stats.f64_grouped_rows(x.dtype, x.shape)
    rs = nbbn.channel_stats(x, 1)
    exact = float(sum(map(Fraction, x[:, 0].ravel())) / x[:, 0].size)
    np.testing.assert_allclose(rs.mean[0], exact, rtol=1e-9)
    assert np.isposinf(rs.var[0])


def test_integer_rows_centre_on_the_nearest_integer():
    """Integer rows (the two-pass block of wide integers) whose mean lies just below an
    integer: the block is centred on the nearest integer, so that the correction
    ``c**2 / n`` stays below M2 and the variance keeps every digit (mutant: the centre
    rounded down, a whole unit off, and the variance came back 4e-13 off)."""
    x = np.full((1, 2, 5000), 7, np.int32)
    x[0, 0, 0] = 6
    x[0, 1] = 1000
    x[0, 1, 10:12] = 999
    rs = nbbn.RunningStats(1).update(x)
    for c in range(2):
        v = [Fraction(int(a)) for a in x[0, c]]
        m = sum(v) / len(v)
        assert rs.mean[c] == float(m)
        np.testing.assert_allclose(rs.var[c], float(sum((a - m) ** 2 for a in v) / len(v)),
                                   rtol=1e-14)


# ------------------------------------------------ blocks a kernel must fill completely
def _cases(rng):
    """Batches that reach the kernels writing into ``BatchStats.uninitialized`` blocks:
    few rows of many channels (and merged into a shared, read-only state), a single
    row, byte tables, a folded channels-first partition, weights, a sparse matrix."""
    few = rng.normal(3, 2, (3, 2048)).astype(np.float32)
    few[1, 5], few[2, 9], few[0, 700] = np.nan, np.inf, -np.inf
    return {
        "few rows": (few, {}),
        "one row": (rng.normal(size=(1, 3000)), {}),
        "byte table": (rng.integers(0, 256, (16, 2048), dtype=np.uint8), {}),
        "channels first": (rng.normal(5, 1, (6, 8, 4099)).astype(np.float32), {"axis": 1}),
        "weighted": (few, {"sample_weight": np.array([1.0, 3.0, 2.0])}),
        "sparse": (few, {"sparse": True}),
        "shared": (few, {"shared": True}),
    }


@pytest.mark.parametrize("policy", ["propagate", "omit"])
@pytest.mark.parametrize("case", ["few rows", "one row", "byte table", "channels first",
                                  "weighted", "sparse", "shared"])
def test_kernels_write_every_field_of_their_blocks(rng, monkeypatch, case, policy):
    """The kernels that fill ``BatchStats.uninitialized`` blocks write every field of
    every channel: blocks that start out holding garbage (not numpy's usually zeroed
    fresh pages) give the bits blocks from ``np.empty`` give (mutants: a NaN or
    infinity count not zeroed, a source row not copied, survived or were killed by the
    chance contents of ``np.empty``)."""
    from nbbn.backends._stats import BatchStats

    x, opts = _cases(rng)[case]
    opts = dict(opts)
    axis = opts.pop("axis", -1)
    if opts.pop("sparse", False):
        x = pytest.importorskip("scipy.sparse").csr_matrix(np.nan_to_num(x, posinf=9.0,
                                                                         neginf=-9.0))
    shared = opts.pop("shared", False)

    def run():
        rs = nbbn.RunningStats(axis, backend="cpu", nan_policy=policy)
        if shared:
            rs = rs.update(x[::-1] * 2)._shared_copy()
        return rs.update(x, **opts).to_dict()

    want = run()
    real = BatchStats.uninitialized.__func__

    made = []

    def garbage(cls, nchan):
        made.append(nchan)
        out = real(cls, nchan)
        out.ints.fill(987654321)
        out.floats.fill(7.25)
        return out

    monkeypatch.setattr(BatchStats, "uninitialized", classmethod(garbage))
    got = run()
    assert made, "the case did not reach a kernel that fills uninitialized blocks"
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert int(np.max(got["count"])) <= 6 * 4099  # (not the garbage count)
