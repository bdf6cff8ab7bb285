"""Channels-last tables of few rows and many channels (``cpu_few_rows``): the
statistics against the long-double reference, channel by channel, through every dtype
the kernel takes, its slow channels (NaN, infinities, sums that overflow or cancel), the
tables it gives up on, and its threads."""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_stats, ref_stats, ref_stats_many
from test_numerics_paths import assert_non_finite_counts

import nbbn
from nbbn.backends import cpu
from nbbn.backends import cpu_few_rows as kf

NCHAN = kf.FEW_ROWS_CHANNELS + kf.TILE + 77  # a partial tile, and a partial run in it


def _tight(nrows: int) -> float:
    """Every dtype the kernel takes is exact in float64: the statistics hold to the
    rounding of a sum of ``nrows`` terms."""
    return 4 * nrows * 2.0 ** -53


@pytest.fixture
def calls(monkeypatch):
    """What each call of ``cpu._few_rows_stats`` returned (None: it gave up)."""
    seen: list = []
    few = cpu._few_rows_stats

    def spy(x2, policy):
        seen.append(few(x2, policy))
        return seen[-1]

    monkeypatch.setattr(cpu, "_few_rows_stats", spy)
    return seen


def _table(rng, nrows: int, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        x = rng.integers(info.min, info.max, (nrows, NCHAN), endpoint=True).astype(dt)
        x[:, 3] = info.max  # a constant channel at the type's edge
        return x
    x = rng.standard_normal((nrows, NCHAN)) * 3.0 + 1e3
    x[:, 3] = 7.25  # constant
    x[:, 4] = -x[:, 4]
    if dt.itemsize == 8:
        x[:, 5] = 1e9 + rng.standard_normal(nrows) * 1e-4  # near-constant, far from 0
        x[:, 6] = rng.standard_normal(nrows) * 1e150  # squares near the top of the range
    x[0, 7] = -0.0
    return x.astype(dt)


@pytest.mark.parametrize("nrows", [2, 5, 64])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint8", "int8", "int16",
                                   "uint16", "int32", "uint32"])
def test_few_rows_against_the_reference(rng, calls, dtype, nrows):
    x = _table(rng, nrows, dtype)
    rs = nbbn.RunningStats(-1, backend="cpu").update(x)
    assert len(calls) == 1 and calls[0] is not None
    assert_stats(rs, ref_stats(x, -1), _tight(nrows))
    assert rs.var[3] == 0.0 and rs.mean[3] == x[0, 3]  # a constant channel: exact


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_few_rows_slow_channels(rng, calls, dtype, nan_policy):
    """Channels whose sums are not finite or cancel are computed exactly on their own:
    NaNs (one, and all), infinities of one and of both signs, finite values whose sums
    overflow, and a channel far from its first value; then streamed into a state."""
    nrows = 9
    x = rng.standard_normal((nrows, NCHAN)) * 2.0 + 5.0
    x[4, 10] = np.nan
    x[:, 11] = np.nan
    x[2, 12] = np.inf
    x[1, 13], x[6, 13] = np.inf, -np.inf
    x[:, 14] = -np.inf
    if dtype == "float64":
        x[:, 15] = 1e308 * (-1.0) ** np.arange(nrows)  # (differences, squares overflow)
        x[:, 16] = 1.5e308  # (their sum overflows, the mean does not)
        x[0, 17] = 1e12  # a first value far from the rest
    x = x.astype(dtype)
    first = nbbn.RunningStats(-1, nan_policy=nan_policy, backend="cpu").update(x)
    assert_stats(first, ref_stats(x, -1, nan_policy), _tight(nrows))
    x[:, 15:17] = 3.0  # (the reference's fsum of a stream of them overflows)
    second = (x[::-1] * 0.5 + 1.0).astype(dtype)
    rs = nbbn.RunningStats(-1, nan_policy=nan_policy, backend="cpu").update(x).update(second)
    assert [c is not None for c in calls] == [True] * 3
    assert_stats(rs, ref_stats_many([x, second], -1, nan_policy), 1e-13)
    assert_non_finite_counts(rs, [x, second], -1)


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_few_rows_give_up_on_many_nan_channels(rng, calls, nan_policy):
    """Under "omit", a table whose NaNs fall in many channels goes to the other kernels
    (exact strided reads of so many channels would cost more), with the same results
    as theirs; the threshold is per tile, so a few such channels are kept. Under
    "propagate" a NaN decides its channel in one pass: kept at any share."""
    nrows = kf.FEW_ROWS_MAX
    x = rng.standard_normal((nrows, NCHAN))
    x[5, ::2] = np.nan
    rs = nbbn.RunningStats(-1, nan_policy=nan_policy, backend="cpu").update(x)
    assert [c is None for c in calls] == [nan_policy == "omit"]
    assert_stats(rs, ref_stats(x, -1, nan_policy), 1e-13)
    assert_non_finite_counts(rs, [x], -1)
    y = rng.standard_normal((nrows, NCHAN))
    y[5, ::kf.TILE // 8] = np.nan  # (eight a tile)
    calls.clear()
    rs = nbbn.RunningStats(-1, nan_policy=nan_policy, backend="cpu").update(y)
    assert calls[0] is not None
    assert_stats(rs, ref_stats(y, -1, nan_policy), _tight(nrows))


def test_few_rows_bits_do_not_depend_on_threads(rng, calls):
    """Tiles are what the threads share, and each channel is computed on its own: one
    thread and two give the same bits (a table of more than ``THREADED_MIN_ELEMENTS``),
    and so does the channel in a table of other width (a vector lane, a loop's tail)."""
    x = rng.standard_normal((16, cpu.THREADED_MIN_ELEMENTS // 16 + 99)) * 4.0 + 1e6
    with cpu.thread_limit(1):
        one = nbbn.RunningStats(-1, backend="cpu").update(x)._snapshot()
    two = nbbn.RunningStats(-1, backend="cpu").update(x)._snapshot()
    narrow = nbbn.RunningStats(-1, backend="cpu").update(x[:, 5:5 + NCHAN])._snapshot()
    assert len(calls) == 3 and all(c is not None for c in calls)
    np.testing.assert_array_equal(one.ints, two.ints)
    np.testing.assert_array_equal(one.floats.view(np.int64), two.floats.view(np.int64))
    np.testing.assert_array_equal(narrow.floats.view(np.int64),
                                  two.floats[:, 5:5 + NCHAN].view(np.int64))


@pytest.mark.parametrize("shape, dtype, taken", [
    ((2, 1024), "float32", True), ((64, 4096), "int32", True), ((1, 4096), "float64", False),
    ((65, 4096), "float64", False), ((8, 1023), "float64", False), ((8, 4096), "int64", False),
    ((8, 4096), "uint64", False)])
def test_few_rows_takes(rng, calls, shape, dtype, taken):
    """Which tables the kernel takes: 2 to ``FEW_ROWS_MAX`` rows of at least
    ``FEW_ROWS_CHANNELS`` channels, not int64 (not exact in float64); a single row is
    written directly (``_one_row_stats``). The others' statistics are right too."""
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    rs = nbbn.RunningStats(-1, backend="cpu").update(x)
    assert len(calls) == int(taken)
    assert_stats(rs, ref_stats(x, -1), 1e-13)
