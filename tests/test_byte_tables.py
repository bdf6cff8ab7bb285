"""Channels-last uint8 and int8 tables of many channels (``cpu_byte_tables``), and the
fold of the partitions' statistics (``cpu_stats.fold``), which such tables stress."""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_stats, ref_stats

import nbbn
from nbbn.backends import cpu, cpu_byte_tables, cpu_stats
from nbbn.backends._stats import COUNT_LIMIT, BatchStats
from nbbn.backends.cpu_numerics import chan_merge, merge_max, merge_min


@pytest.fixture
def spy(monkeypatch):
    """The calls of the row kernel (looked up by name on its module at each call)."""
    calls = []
    kernel = cpu_byte_tables.stats_byte_rows

    def counted(*args):
        calls.append(args[0].shape)
        return kernel(*args)

    monkeypatch.setattr(cpu_byte_tables, "stats_byte_rows", counted)
    return calls


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("nchan", [131, 300, cpu_byte_tables.TILE + 100])
def test_byte_rows_exact(rng, spy, nchan, dtype):
    """C = 131: a period of 131 vectors, which the byte-position kernel leaves. Several
    blocks and a partial one, sub-blocks (of fewer than 256 rows at C = TILE + 100, in
    two channel tiles), groups of four rows and the rows after them; the largest sums
    of a sub-block (a channel at the top value: 256 * 255 in 16 bits, 256 * 255**2 in
    32), the bottom value, a constant channel, and the full range elsewhere."""
    assert cpu_byte_tables.byte_rows(np.dtype(dtype), nchan)
    info = np.iinfo(dtype)
    rows = 2 * cpu_byte_tables.byte_rows_block(10**6, nchan) + cpu_byte_tables.SUB_ROWS + 7
    assert rows // cpu_byte_tables.byte_rows_block(rows, nchan) >= 2
    x = rng.integers(info.min, info.max + 1, (rows, nchan), dtype=dtype)
    x[:, 0] = info.max
    x[: rows // 2, 1] = info.min
    x[:, 2] = 5 if dtype == np.uint8 else -5  # variance exactly 0
    # channel 3 within [10, 20] but for its extremes, in the rows after the last group
    x[:, 3] = rng.integers(10, 21, rows)
    x[rows - 3, 3] = info.max
    x[rows - 1, 3] = info.min
    rs = nbbn.channel_stats(x, -1, backend="cpu")
    assert spy and spy[0] == (rows, nchan, 1)
    assert_stats(rs, ref_stats(x, -1), 1e-12)
    assert rs.var[0] == 0.0 and rs.var[2] == 0.0


def test_byte_rows_do_not_depend_on_the_thread_count(rng, spy):
    x = rng.integers(0, 256, (3000, 700), dtype=np.uint8)
    with cpu.thread_limit(1):
        one = nbbn.channel_stats(x, -1, backend="cpu")
    two = nbbn.channel_stats(x, -1, backend="cpu")
    assert len(spy) >= 2
    for name in ("mean", "var", "min", "max", "count"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)


def test_byte_rows_in_a_stream_and_as_a_view(rng, spy):
    """Batches of odd sizes (fewer rows than a group of four, one row), and a table
    whose rows are every other row of a larger one (gathered into slabs first)."""
    x = rng.integers(0, 256, (1301, 200), dtype=np.uint8)
    rs = nbbn.RunningStats(-1, backend="cpu")
    for lo, hi in [(0, 1), (1, 4), (4, 700), (700, 1301)]:
        rs.update(x[lo:hi])
    assert_stats(rs, ref_stats(x, -1), 1e-12)
    short = x[1:4]  # (three rows: no group of four)
    assert_stats(nbbn.channel_stats(short, -1, backend="cpu"), ref_stats(short, -1), 1e-12)
    view = x[::2]
    assert_stats(nbbn.channel_stats(view, -1, backend="cpu"), ref_stats(view, -1), 1e-12)
    assert len(spy) >= 4


def test_byte_rows_routes():
    """The row kernel takes uint8 and int8 tables from ``PERIOD_CHANNELS`` channels on,
    and from ``MIN_CHANNELS`` on where the byte-position kernel does not (its period
    too long, or no SIMD build); other dtypes are not bytes."""
    low, high = cpu_byte_tables.MIN_CHANNELS, cpu_byte_tables.PERIOD_CHANNELS
    for dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
        assert not cpu_byte_tables.byte_rows(dtype, low - 1)
        assert cpu_byte_tables.byte_rows(dtype, 131)  # (a period of 131 vectors)
        assert cpu_byte_tables.byte_rows(dtype, low) == (not cpu_stats.HAVE_SIMD)
        assert cpu_byte_tables.byte_rows(dtype, 160) == (not cpu_stats.HAVE_SIMD)  # (5)
        assert cpu_byte_tables.byte_rows(dtype, high)
        assert cpu_byte_tables.byte_rows(dtype, 4096)
    for dtype in (np.uint16, np.float32, np.bool_):
        assert not cpu_byte_tables.byte_rows(np.dtype(dtype), 1000)
    x = np.zeros((10, high, 1), np.uint8)
    assert cpu._make_plan(x, 0, False)[0] == "stats_byte_rows"


def _fold_reference(pi, pf, ints, floats, into):
    """``cpu_stats.fold`` channel by channel, the order it had before it read channels
    in groups (the bits must not change)."""
    ints, floats = ints.copy(), floats.copy()
    for c in range(pi.shape[2]):
        if into:
            n, a, b = ints[:, c]
            m, ml, q, lo, hi = floats[:, c]
        else:
            n = a = b = 0
            m = ml = q = 0.0
            lo, hi = np.inf, -np.inf
        for p in range(pi.shape[0]):
            n, m, ml, q = chan_merge(n, m, ml, q, pi[p, 0, c], pf[p, 0, c], pf[p, 1, c],
                                     pf[p, 2, c])
            lo = merge_min(lo, pf[p, 3, c])
            hi = merge_max(hi, pf[p, 4, c])
            a += pi[p, 1, c]
            b += pi[p, 2, c]
        ints[:, c] = n, a, b
        floats[:, c] = m, ml, q, lo, hi
    return ints, floats


@pytest.mark.parametrize("into", [False, True])
def test_fold_in_channel_groups_keeps_the_bits(rng, into):
    """Partitions of ``2 * FOLD_CHANNELS + 5`` channels (two whole groups and a part),
    means far apart, empty partitions: the same bits as the channel-by-channel fold."""
    nparts, nchan = 6, 2 * cpu_stats.FOLD_CHANNELS + 5
    pi = rng.integers(0, 50, (nparts, 3, nchan))
    pi[2, 0, :7] = 0  # (empty partitions of some channels)
    pf = np.empty((nparts, 5, nchan))
    pf[:, 0] = rng.normal(size=(nparts, nchan)) * 10.0 ** rng.integers(-3, 6, (nparts, nchan))
    pf[:, 1] = pf[:, 0] * 1e-17
    pf[:, 2] = rng.random((nparts, nchan)) * pi[:, 0]
    pf[:, 3] = pf[:, 0] - 1.0
    pf[:, 4] = pf[:, 0] + 1.0
    pf[2, :, :7] = [[0.0], [0.0], [0.0], [np.inf], [-np.inf]]
    state = BatchStats.empty(nchan)
    if into:
        state.ints[:] = rng.integers(0, 50, (3, nchan))
        state.floats[:] = pf[0] + 3.0
    want_i, want_f = _fold_reference(pi, pf, state.ints, state.floats, into)
    assert cpu_stats.fold(pi, pf, state.ints, state.floats, into,
                          cpu_stats.whole_ranges(nparts, nchan))
    np.testing.assert_array_equal(state.ints, want_i)
    np.testing.assert_array_equal(state.floats, want_f)


def test_fold_into_a_state_counts_every_partition_against_the_limit():
    """``fold`` into a state from several partitions that each fit beside the state but
    together pass ``COUNT_LIMIT``: refused (False), the state as it was; one value
    fewer fits (mutant: each partition's count checked against the state alone)."""
    nparts, nchan = 3, 2
    pi = np.zeros((nparts, 3, nchan), np.int64)
    pi[:, 0] = 10
    pf = np.zeros((nparts, 5, nchan))
    pf[:, 3:] = 1.0  # (each partition: 10 values of 1)
    for room, fits in ((29, False), (30, True)):
        state = BatchStats.empty(nchan)
        state.ints[0] = COUNT_LIMIT - room
        state.floats[0] = state.floats[3] = state.floats[4] = 1.0
        before = state.ints.copy(), state.floats.copy()
        assert cpu_stats.fold(pi, pf, state.ints, state.floats, True,
                              cpu_stats.whole_ranges(nparts, nchan)) == fits
        if fits:
            assert state.ints[0].tolist() == [COUNT_LIMIT] * nchan
        else:
            np.testing.assert_array_equal(state.ints, before[0])
            np.testing.assert_array_equal(state.floats, before[1])


@pytest.mark.parametrize("into", [False, True])
def test_fold_of_special_values_keeps_the_bits(rng, into):
    """The vectorized merge (``_merge_channels``) against ``chan_merge`` channel by
    channel, bit for bit (a NaN's sign aside), where ``chan_merge`` branches: empty
    parts, infinite and NaN means, means so far apart that the between-term overflows,
    counts of 2**52 and more (its exact conversion's limit), NaN and infinite min/max,
    signed zeros."""
    nparts, nchan = 3, 2 * cpu_stats.FOLD_CHANNELS + 37
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, -1e308, 1e-310, 1.0])

    def some(shape):
        v = rng.normal(size=shape) * 10.0 ** rng.integers(-20, 20, shape)
        hit = rng.random(shape) < 0.15
        v[hit] = rng.choice(specials, hit.sum())
        return v

    counts = [0, 0, 1, 2, 7, 1000, 2 ** 40, 2 ** 52 - 1, 2 ** 52, 2 ** 52 + 3]
    pi = rng.choice(counts, (nparts, 3, nchan))
    pf = some((nparts, 5, nchan))
    pf[:, 3:, :16] = rng.choice([0.0, -0.0], (nparts, 2, 16))  # (min/max of zeros)
    state = BatchStats.empty(nchan)
    if into:
        state.ints[:] = rng.choice(counts, (3, nchan))
        state.floats[:] = some((5, nchan))
        state.floats[3:, :16] = rng.choice([0.0, -0.0], (2, 16))
    # means 1.5e154 apart, a value each: d * d overflows, chan_merge's other form of the
    # between-term, (d * 0.5) * d, does not
    state.ints[0, 16] = 0
    pi[:, 0, 16] = 1, 1, 0
    pf[:, :3, 16] = [[0.0, 0.0, 0.0], [1.5e154, 0.0, 0.0], [0.0, 0.0, 0.0]]
    want_i, want_f = _fold_reference(pi, pf, state.ints, state.floats, into)
    assert cpu_stats.fold(pi, pf, state.ints, state.floats, into,
                          cpu_stats.whole_ranges(nparts, nchan))
    np.testing.assert_array_equal(state.ints, want_i)
    # bit for bit but a NaN's sign: of two NaNs added, which one comes out depends on
    # the order of the operands, which LLVM may swap in either build
    nan = np.isnan(want_f)
    np.testing.assert_array_equal(np.isnan(state.floats), nan)
    np.testing.assert_array_equal(state.floats.view(np.int64)[~nan], want_f.view(np.int64)[~nan])


@pytest.mark.parametrize("simd", [False, True])
def test_byte_rows_thresholds_either_way(monkeypatch, simd):
    """The row kernel's two thresholds, whichever way the byte-position kernel decides
    (on this host its answer for ``MIN_CHANNELS`` hides the first): where it takes no
    table (no SIMD build), from ``MIN_CHANNELS`` channels on; where it takes every one,
    from ``PERIOD_CHANNELS`` on."""
    monkeypatch.setattr(cpu_byte_tables, "u8_cl_simd", lambda dtype, nchan: simd)
    low = cpu_byte_tables.PERIOD_CHANNELS if simd else cpu_byte_tables.MIN_CHANNELS
    for dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
        assert not cpu_byte_tables.byte_rows(dtype, low - 1)
        assert cpu_byte_tables.byte_rows(dtype, low)
        assert not cpu_byte_tables.byte_rows(np.dtype(np.uint16), low)
