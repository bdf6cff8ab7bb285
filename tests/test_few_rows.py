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


def _width(nrows: int, dtype: str) -> int:
    """``NCHAN``, or a partial tile past ``WIDE_CHANNELS`` where the kernel takes tables
    of ``nrows`` rows of ``dtype`` only from there (more than ``TALL_ROWS``)."""
    return max(NCHAN, kf.min_channels(np.dtype(dtype), nrows) + kf.TILE + 77)


def _table(rng, nrows: int, dtype: str, nchan: int | None = None) -> np.ndarray:
    dt = np.dtype(dtype)
    nchan = _width(nrows, dtype) if nchan is None else nchan
    if dt.kind in "iu":
        info = np.iinfo(dt)
        x = rng.integers(info.min, info.max, (nrows, nchan), endpoint=True).astype(dt)
        x[:, 3] = info.max  # a constant channel at the type's edge
        return x
    x = rng.standard_normal((nrows, nchan)) * 3.0 + 1e3
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


@pytest.mark.parametrize("nchan", [kf.NARROW_CHANNELS, 100, kf.TILE, kf.TILE + 1, 700, 1023])
@pytest.mark.parametrize("dtype, nrows", [
    (d, n) for d in ("float16", "float32", "float64", "int16", "uint16", "int32", "uint32")
    for n in (2, 7, kf.TALL_ROWS, 64) if n <= kf.TALL_ROWS or d != "float16"])
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_narrow_tables(rng, calls, dtype, nrows, nchan, nan_policy):
    """Tables of floats and 16/32-bit integers of ``NARROW_CHANNELS`` to 1023 channels
    (one partial tile, or a whole one and a partial one), a NaN and an infinity among
    the floats: taken, and right; a stream of them merged in place (``cpu.reduce_into``)
    as well. (Not float16 of more than ``TALL_ROWS`` rows: ``test_tall_tables``.)"""
    x = _table(rng, nrows, dtype, nchan)
    if x.dtype.kind == "f":
        x[1, 8] = np.nan
        x[0, 9] = np.inf
    rs = nbbn.RunningStats(-1, backend="cpu", nan_policy=nan_policy).update(x)
    assert len(calls) == 1 and calls[0] is not None
    assert_stats(rs, ref_stats(x, -1, nan_policy=nan_policy), _tight(nrows))
    y = _table(rng, nrows, dtype, nchan)
    both = np.concatenate([x, y])
    rs.update(y)
    assert_stats(rs, ref_stats(both, -1, nan_policy=nan_policy), 1e-13)


@pytest.mark.parametrize("dtype", ["float16", "uint8", "int8"])
def test_tall_tables(rng, calls, in_place, dtype):
    """Tables of more than ``TALL_ROWS`` rows of float16 and 8-bit integers:
    left to the channels-last kernels below ``WIDE_CHANNELS`` channels, taken from there
    (a partial tile past it), right either way; a stream of the wide ones merged in place
    with the bits of a merge."""
    narrow = _table(rng, kf.TALL_ROWS + 1, dtype, kf.WIDE_CHANNELS - 1)
    rs = nbbn.RunningStats(-1, backend="cpu").update(narrow)
    assert calls == []
    assert_stats(rs, ref_stats(narrow, -1), 1e-13)
    batches = [_table(rng, n, dtype, kf.WIDE_CHANNELS + kf.TILE + 77)
               for n in (kf.TALL_ROWS + 1, kf.FEW_ROWS_MAX, 5)]
    merged = _stream(batches, True)
    assert [c is not None for c in calls] == [True] and in_place == [True, True]
    _same_bits(merged, _stream(batches, False))
    assert_stats(merged, ref_stats_many(batches, -1), 1e-13)


@pytest.mark.parametrize("nchan", [kf.BYTE_CHANNELS, kf.TILE + 1, 1023])
@pytest.mark.parametrize("nrows", [2, 5, 9, kf.BYTE_ROWS])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_narrow_byte_tables(rng, calls, in_place, dtype, nrows, nchan):
    """Tables of at most ``BYTE_ROWS`` rows of 8-bit integers of ``BYTE_CHANNELS`` to
    1023 channels: taken, and right (a constant channel at the type's edge); a stream
    of them merged in place."""
    x = _table(rng, nrows, dtype, nchan)
    rs = nbbn.RunningStats(-1, backend="cpu").update(x)
    assert len(calls) == 1 and calls[0] is not None
    assert_stats(rs, ref_stats(x, -1), _tight(nrows))
    assert rs.var[3] == 0.0 and rs.mean[3] == x[0, 3]
    y = _table(rng, nrows, dtype, nchan)
    rs.update(y)
    assert in_place == [True]
    assert_stats(rs, ref_stats(np.concatenate([x, y]), -1), 1e-13)


@pytest.mark.parametrize("nchan, direct", [
    (kf.NARROW_CHANNELS, False), (kf.ROW_CHANNELS - 1, False), (kf.ROW_CHANNELS, True),
    (1023, True), (kf.FEW_ROWS_CHANNELS, True)])
def test_single_float_rows_written_directly_from_row_channels(rng, monkeypatch, nchan,
                                                              direct):
    """A single float32 row is written directly (``cpu._one_row_stats``) from
    ``ROW_CHANNELS`` channels on, not from ``NARROW_CHANNELS`` as tables: narrower,
    the kernel is faster. Right either way."""
    seen = []
    one_row = cpu._one_row_stats
    monkeypatch.setattr(cpu, "_one_row_stats", lambda r: seen.append(1) or one_row(r))
    x = rng.standard_normal((1, nchan)).astype(np.float32)
    rs = nbbn.RunningStats(-1, backend="cpu").update(x)
    assert bool(seen) == direct
    assert_stats(rs, ref_stats(x, -1), _tight(1))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_few_rows_slow_channels(rng, calls, in_place, dtype, nan_policy):
    """Channels whose sums are not finite or cancel are computed exactly on their own:
    NaNs (one, and all), infinities of one and of both signs, finite values whose sums
    overflow, and a channel far from its first value; then streamed into a state (merged
    into it as computed: ``cpu.reduce_into``)."""
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
    assert [c is not None for c in calls] == [True] * 2
    assert in_place == [True]
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
    ((65, 4096), "float64", False), ((8, 1023), "float64", True), ((8, 4096), "int64", False),
    ((8, 4096), "uint64", False), ((8, 64), "float32", True), ((8, 63), "float64", False),
    ((8, 1023), "float16", True), ((17, 1023), "uint8", False), ((2, 1023), "int32", True),
    ((8, 64), "int16", True), ((8, 63), "uint16", False), ((8, 256), "uint8", True),
    ((2, 255), "int8", False), ((16, 256), "int8", True), ((17, 256), "int8", False),
    ((48, 1024), "int8", True), ((49, 1024), "int8", False), ((49, 32767), "uint8", False),
    ((49, 32768), "uint8", True), ((48, 64), "float16", True), ((49, 32767), "float16", False),
    ((64, 32768), "float16", True), ((64, 64), "float32", True), ((64, 64), "int16", True),
    ((1, 64), "float32", False), ((1, 1023), "int16", False), ((1, 1023), "uint8", False)])
def test_few_rows_takes(rng, calls, shape, dtype, taken):
    """Which tables the kernel takes: 2 to ``FEW_ROWS_MAX`` rows of at least
    ``NARROW_CHANNELS`` channels (floats, 16/32-bit integers), of 8-bit integers
    ``BYTE_CHANNELS`` (at most ``BYTE_ROWS`` rows) or ``FEW_ROWS_CHANNELS``, but tables
    of more than ``TALL_ROWS`` rows of float16 and 8-bit integers only from
    ``WIDE_CHANNELS`` on; not int64 (not exact in float64); a single row is written
    directly (``_one_row_stats``). The others' statistics are right too."""
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    rs = nbbn.RunningStats(-1, backend="cpu").update(x)
    assert len(calls) == int(taken)
    assert_stats(rs, ref_stats(x, -1), 1e-13)


@pytest.fixture
def in_place(monkeypatch):
    """What each call of ``cpu.reduce_into`` did (True: the batch was merged into the
    state as it was computed, False: it was left to the other kernels)."""
    seen: list = []
    into = cpu.reduce_into

    def spy(table, policy, state):
        merged = into(table, policy, state)
        seen.append(merged is not None)
        return merged

    monkeypatch.setattr(cpu, "reduce_into", spy)
    return seen


def _stream(batches, in_place: bool, **kw) -> nbbn.RunningStats:
    rs = nbbn.RunningStats(-1, backend="cpu", **kw)
    with pytest.MonkeyPatch.context() as m:
        if not in_place:
            m.setattr(cpu, "reduce_into", lambda table, policy, state: None)
        for x in batches:
            rs.update(x)
    return rs


def _same_bits(a: nbbn.RunningStats, b: nbbn.RunningStats) -> None:
    sa, sb = a._snapshot(), b._snapshot()
    np.testing.assert_array_equal(sa.ints, sb.ints)
    np.testing.assert_array_equal(sa.floats.view(np.int64), sb.floats.view(np.int64))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint8", "int32"])
def test_stream_merged_in_place_has_the_bits_of_a_merge(rng, in_place, dtype, nan_policy):
    """A stream's batch of few rows of many channels is merged into the state tile by
    tile as the kernel computes it (``cpu.reduce_into``; under "omit" at most
    ``GIVE_UP`` rows, whose tiles never give up): the same bits as its statistics
    computed and then merged, slow channels (NaNs, one and a channel of them,
    infinities, a channel far from its first value) and a state that is constant or
    empty in some channels included; the first batch, with no state yet, is computed as
    before."""
    tall = kf.FEW_ROWS_MAX if kf.min_channels(np.dtype(dtype), 64) <= NCHAN else kf.TALL_ROWS
    rows = (5, 2, tall if nan_policy == "propagate" else kf.GIVE_UP, 9)
    batches = [_table(rng, n, dtype, NCHAN) for n in rows]
    if dtype[0] == "f":
        batches[1][1, 10] = np.nan
        batches[2][:, 11] = np.inf
        batches[2][3, 12] = -np.inf
        batches[2][:, 14] = np.nan
        batches[3][0, 13] = 1e4 if dtype == "float16" else 1e12
    merged = _stream(batches, True, nan_policy=nan_policy)
    assert in_place == [True] * 3
    _same_bits(merged, _stream(batches, False, nan_policy=nan_policy))
    assert_stats(merged, ref_stats_many(batches, -1, nan_policy), 1e-12)
    assert_non_finite_counts(merged, batches, -1)


def test_stream_merged_in_place_bits_do_not_depend_on_threads(rng, in_place):
    """Each thread merges its own tiles: one thread and two give the same bits."""
    batches = [rng.standard_normal((8, cpu.THREADED_MIN_ELEMENTS // 8 + 99)) + k
               for k in range(3)]
    with cpu.thread_limit(1):
        one = _stream(batches, True)
    two = _stream(batches, True)
    assert in_place == [True] * 4
    _same_bits(one, two)
    _same_bits(one, _stream(batches, False))


@pytest.mark.parametrize("case", ["omit", "raise", "weighted", "locked", "one row",
                                  "narrow"])
def test_stream_merged_in_place_only_where_it_may(rng, in_place, case):
    """Not merged in place: under "omit" a table of more than ``GIVE_UP`` rows (a tile
    may give up, after others merged), under "raise" (the batch is checked before it
    touches the state), into a weighted state, while another thread holds the state's
    lock (then this one computes outside it, as before), a single row, a table narrower
    than the kernel takes. Right all the same."""
    import threading
    import time

    x = _table(rng, kf.GIVE_UP + 1 if case == "omit" else 4, "float64")
    y = x[:1] if case == "one row" else x[:, :kf.min_channels(x.dtype) - 1] if \
        case == "narrow" else x[::-1] + 1.0
    kw = {"nan_policy": case} if case in ("omit", "raise") else {}
    rs = nbbn.RunningStats(-1, backend="cpu", **kw)
    rs.update(x if case != "narrow" else y, sample_weight=np.ones(len(x)) * 2 if
              case == "weighted" else None)
    if case == "locked":
        rs._lock.acquire()
        threading.Thread(target=lambda: (time.sleep(0.2), rs._lock.release())).start()
    rs.update(y)
    assert True not in in_place
    if case == "weighted":  # (weight 2: the batch twice; the counts are weight sums)
        want = ref_stats_many([x, x, y], -1)
        np.testing.assert_array_equal(rs.count, want.count)
        np.testing.assert_allclose(rs.mean, want.mean, rtol=1e-13)
        np.testing.assert_allclose(rs.var, want.var, rtol=1e-12)
        return
    assert_stats(rs, ref_stats_many([x if case != "narrow" else y, y], -1), 1e-12)


def test_stream_merged_in_place_stays_within_the_count_limit(rng, in_place):
    """A state whose largest count leaves room for the batch's rows is merged in place;
    one that does not is left to the merge, which refuses it and changes nothing."""
    nchan = NCHAN
    x = rng.standard_normal((4, nchan))
    rs = nbbn.RunningStats(-1, backend="cpu").update(x)
    d = rs.to_dict()
    for room, taken in ((4, True), (3, False)):
        d["count"] = np.full(nchan, 4)
        d["count"][700] = 2 ** 62 - room
        near = nbbn.RunningStats.from_dict(d)
        before = near.to_dict()
        in_place.clear()
        if taken:
            near.update(x)
            assert near.count[700] == 2 ** 62 and near.count[0] == 8
        else:
            with pytest.raises(ValueError, match="limit of 2"):
                near.update(x)
            for k, v in near.to_dict().items():
                np.testing.assert_array_equal(v, before[k], err_msg=k)
        assert in_place == [taken]


@pytest.mark.parametrize("case", ["few rows", "omit few rows", "many rows", "weighted",
                                  "sparse", "iadd", "one row", "empty"])
def test_a_shared_copy_never_writes_the_state_it_shares(rng, in_place, case):
    """``RunningStats._shared_copy`` shares the state read-only: every way of merging
    into the copy (a wide table of few rows as it is read, into a new state; a tall
    table, weights, a sparse matrix, ``+=``, a single row, an empty batch) leaves the
    original's statistics as they were, bit for bit, and gives the copy the bits a
    full copy gets. The copy's own later updates merge in place again (unweighted)."""
    import copy

    sparse = pytest.importorskip("scipy.sparse") if case == "sparse" else None
    policy = "omit" if case == "omit few rows" else "propagate"
    x = _table(rng, 6, "float32")
    base = nbbn.RunningStats(-1, backend="cpu", nan_policy=policy).update(x)
    before = base._snapshot()
    y = {"many rows": _table(rng, kf.FEW_ROWS_MAX + 1, "float32", NCHAN), "one row": x[:1] + 1,
         "empty": x[:0]}.get(case, x[::-1] * 2 + 1)
    shared, full = base._shared_copy(), copy.copy(base)
    for rs in (shared, full):
        if case == "weighted":
            rs.update(y, sample_weight=np.arange(len(y)) % 3)
        elif case == "sparse":
            rs.update(sparse.csr_matrix(y))
        elif case == "iadd":
            rs += nbbn.RunningStats(-1, backend="cpu", nan_policy=policy).update(y)
        else:
            rs.update(y)
    assert in_place == ([True, True] if "few rows" in case else [])
    after = base._snapshot()
    np.testing.assert_array_equal(after.ints, before.ints)
    np.testing.assert_array_equal(after.floats.view(np.int64), before.floats.view(np.int64))
    got, want = shared._snapshot(), full._snapshot()
    np.testing.assert_array_equal(got.ints, want.ints)
    np.testing.assert_array_equal(got.floats.view(np.int64), want.floats.view(np.int64))
    if case != "empty":  # (an empty batch merges nothing: the copy still shares)
        assert shared._state.floats.flags.writeable
        in_place.clear()
        shared.update(x)
        assert in_place == [case != "weighted"]  # (a weighted state: merged after)
    np.testing.assert_array_equal(base._snapshot().floats.view(np.int64),
                                  before.floats.view(np.int64))


def test_few_rows_give_up_only_past_the_threshold(rng, calls, in_place):
    """Under "omit" a tile gives up only where its slow channels times its rows pass
    ``GIVE_UP * TILE``: ``GIVE_UP`` rows with a NaN in every channel of a tile are
    kept, and merged into a stream's state in place (``in_place_table`` lets such a
    table merge, so none of its tiles may give up after others merged); one row more
    gives up. Right either way."""
    nrows, nchan = kf.GIVE_UP, kf.TILE + 44
    x = rng.standard_normal((nrows + 1, nchan)) * 2.0 + 3.0
    x[1, :kf.TILE] = np.nan  # every channel of the first tile slow
    at = x[:nrows]
    rs = nbbn.RunningStats(-1, nan_policy="omit", backend="cpu").update(at)
    assert [c is not None for c in calls] == [True]
    assert_stats(rs, ref_stats(at, -1, "omit"), _tight(nrows))
    second = at[::-1] * 0.5 + 1.0
    rs.update(second)
    assert in_place == [True]
    assert_stats(rs, ref_stats_many([at, second], -1, "omit"), 1e-13)
    assert_non_finite_counts(rs, [at, second], -1)
    calls.clear()
    past = nbbn.RunningStats(-1, nan_policy="omit", backend="cpu").update(x)
    assert [c is None for c in calls] == [True]
    assert_stats(past, ref_stats(x, -1, "omit"), 1e-13)


def test_a_shared_copy_keeps_the_states_non_finite_counts(rng, in_place):
    """A shared copy's update merges into a new state each tile of the shared one
    copied first: every field, the NaN and infinity counts included, so the copy
    counts the state's non-finite values and the batch's (against a full copy, bit for
    bit), and the original is unchanged."""
    import copy

    x = _table(rng, 6, "float32")
    x[1, 8] = np.nan
    x[2, 9] = np.inf
    x[:, 10] = -np.inf
    y = (x[::-1] * 2 + 1).astype(np.float32)
    y[3, 9] = np.nan
    base = nbbn.RunningStats(-1, backend="cpu").update(x)
    before = base._snapshot()
    shared, full = base._shared_copy(), copy.copy(base)
    shared.update(y)
    full.update(y)
    assert in_place == [True, True]
    assert_non_finite_counts(shared, [x, y], -1)
    _same_bits(shared, full)
    after = base._snapshot()
    np.testing.assert_array_equal(after.ints, before.ints)
