"""Contracts mutation testing found unpinned (2026-12-04): nbbn.running_stats (RunningStats
persistence, merging, commit)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import nbbn


def test_from_dict_refuses_version_0():
    """Versions start at 1: version 0 is no format nbbn ever wrote (mutant: ``< 0``)."""
    d = nbbn.RunningStats(-1).update(np.arange(6.0).reshape(3, 2)).to_dict()
    d["version"] = np.int64(0)
    with pytest.raises(ValueError, match="version"):
        nbbn.RunningStats.from_dict(d)


def test_from_dict_refuses_min_above_max_for_a_single_value():
    """A channel that counted one value has min == max; min > max there is corrupt
    (mutant: the check only for count > 1)."""
    d = nbbn.RunningStats(-1).update(np.array([[1.0, 2.0]])).to_dict()
    assert d["count"].tolist() == [1, 1]
    d["min"] = d["min"] + 1.0  # min 2 > max 1 in channel 0, 3 > 2 in channel 1
    with pytest.raises(ValueError, match="min exceeds max"):
        nbbn.RunningStats.from_dict(d)


def test_iadd_keeps_the_skipped_files_of_both_sides():
    """``a += b`` keeps ``a.skipped + b.skipped``, as ``a + b`` does (mutant: b's dropped)."""
    rng = np.random.default_rng(0)
    a = nbbn.RunningStats(-1).update(rng.normal(size=(4, 2)))
    b = nbbn.RunningStats(-1).update(rng.normal(size=(5, 2)))
    a.skipped = ["a.npy: unreadable"]
    b.skipped = ["b.npy: unreadable"]
    want = (a + b).skipped
    a += b
    assert a.skipped == want == ["a.npy: unreadable", "b.npy: unreadable"]


def test_merge_takes_the_other_sides_channel_coordinate():
    """Statistics without a channel coordinate merged with DataArray statistics keep the
    DataArray's labels (``a + b`` and ``a += b``): to_xarray shows them, and a batch with
    the labels reordered is refused afterwards (mutant: only self's coordinate kept)."""
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(1)
    da = xr.DataArray(rng.normal(size=(5, 3)), dims=("t", "band"),
                      coords={"band": ["r", "g", "b"]})
    labelled = nbbn.RunningStats("band").update(da)
    for merged in (nbbn.RunningStats("band") + labelled, _iadd(nbbn.RunningStats("band"),
                                                             labelled)):
        ds = merged.to_xarray()
        assert ds["band"].values.tolist() == ["r", "g", "b"]
        with pytest.raises(ValueError, match="coordinate"):
            merged.update(da.sel(band=["b", "g", "r"]))


def _iadd(a, b):
    a += b
    return a


def test_m2_rounding_does_not_drift_over_many_merges():
    """Chan's merge adds the smaller M2 and the between-term first: integer data in
    batches of 3 rows (each batch's M2 ends in 0 or 2/3) rounded ``M2a + M2b`` the same
    way on every merge, 2.4e-13 of the variance after 30,000 merges (9e-12 after 1e6,
    past the documented 1e-12), against 3e-15 now. The merge arithmetic is plain
    Python (``nbbn._merge``), run here as it is, against exact rationals."""
    from fractions import Fraction

    from nbbn import _merge

    m = _merge.build(lambda f: f)
    x = np.round(100 * np.random.default_rng(1).standard_normal(90_000)).astype(np.int64)
    n, hi, lo, m2 = 0, 0.0, 0.0, 0.0
    for i in range(0, len(x), 3):
        b = [int(v) for v in x[i:i + 3]]
        mean = Fraction(sum(b), 3)
        bh = float(mean)
        batch_m2 = float(sum((v - mean) ** 2 for v in b))
        n, hi, lo, m2 = m.chan_merge(n, hi, lo, m2, 3, bh, float(mean - Fraction(bh)),
                                     batch_m2)
    s, s2 = int(x.sum()), int((x * x).sum())
    exact = Fraction(len(x) * s2 - s * s, len(x))
    assert abs(float((Fraction(m2) - exact) / exact)) < 2e-14
    # the compiled merge (a stream of batches of 3 rows) gives the same arithmetic
    rs = nbbn.RunningStats(channel_axis=1)
    for i in range(0, 30_000, 3):
        rs.update(x[i:i + 3, None].astype(np.int16))
    part = x[:30_000]
    s, s2 = int(part.sum()), int((part * part).sum())
    exact = Fraction(len(part) * s2 - s * s, len(part) ** 2)
    assert abs(float((Fraction(float(rs.var[0])) - exact) / exact)) < 1e-14


def test_a_count_beyond_the_limit_is_refused():
    """Counts are bounded by 2**62 values per channel (no stream gets there): a loaded
    state beyond it is refused, and so is a merge (``+``, ``+=``) or an update that would
    pass it, leaving both sides as they were; the count used to wrap to a negative
    number with NaN statistics. NaNs counted under "propagate" (they are in ``count``
    and in ``nan_count``) are not counted twice."""
    big = 2 ** 61

    def state(mean, count=big, nans=0, policy="propagate"):
        return nbbn.RunningStats.from_dict({
            "format": "nbbn.RunningStats", "version": 1, "channel_axis": 1,
            "nan_policy": policy, "count": np.array([count, 5]),
            "mean": np.array([mean, 0.0]), "mean_lo": np.zeros(2), "m2": np.ones(2),
            "min": np.array([mean - 1, -1.0]), "max": np.array([mean + 1, 1.0]),
            "nan_count": np.array([nans, 0]), "inf_count": np.zeros(2, np.int64)})

    a, b = state(1.0), state(3.0)
    half = a + b
    assert half.count[0] == 2 ** 62 and half.mean[0] == 2.0
    assert half.var[0] == 1.0  # (2 + 2**62) / 2**62: the merge of counts past 2**52
    # counts of 2**53 and 3 (the vectorized merge's exact path ends at 2**52): the
    # mean and variance of the pooled values, either order (n is not a float64: M2 to
    # an ulp)
    for m in (state(1.0, count=2 ** 53) + state(2.0, count=3),
              state(2.0, count=3) + state(1.0, count=2 ** 53)):
        n = Fraction(2 ** 53 + 3)
        mean = (2 ** 53 + Fraction(6)) / n
        m2 = 2 + Fraction(2 ** 53 * 3) / n
        assert m.mean[0] == float(mean)
        assert m.var[0] == pytest.approx(float(m2 / n), rel=1e-15, abs=0.0)
    with pytest.raises(ValueError, match=r"limit of 2\*\*62 values per channel in channel 0"):
        half + b
    before = half.to_dict()
    with pytest.raises(ValueError, match="limit of 2"):
        half += b
    with pytest.raises(ValueError, match="limit of 2"):
        half.update(np.zeros((1, 2)))
    for k, v in half.to_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    with pytest.raises(ValueError, match=r"count must hold non-negative integers of at most"):
        state(1.0, count=2 ** 62 + 1)
    # a channel that reaches exactly 2**62 merges, also where another channel's count is
    # large enough that the merge compares every channel with the limit
    wide = state(0.0).to_dict()
    wide["count"] = np.array([big, big + 1])
    for m in (state(1.0) + nbbn.RunningStats.from_dict(wide),
              _iadd(state(1.0), nbbn.RunningStats.from_dict(wide))):
        assert m.count.tolist() == [2 ** 62, big + 6] and m.mean[0] == 0.5
    # 2**62 - 2 values of which 2**61 NaN (in count and nan_count): room for one more row
    nan_state = state(np.nan, count=2 ** 62 - 2, nans=2 ** 61)
    nan_state.update(np.zeros((1, 2)))
    assert nan_state.count[0] == 2 ** 62 - 1
    # every channel and every count row is checked by an update (found in review: the
    # first channel's count alone let another channel, or the NaN count, pass the limit,
    # and save() then wrote a file that load() refused)
    x = np.ones((4, 2))
    x[:, 0] = np.nan
    for counts, nans in (([0, 2 ** 62], [0, 0]), ([5, 5], [2 ** 62, 0])):
        d = state(0.0).to_dict()
        d.update(count=np.array(counts), nan_count=np.array(nans), nan_policy="omit",
                 m2=np.where(np.array(counts) > 0, 1.0, 0.0),
                 min=np.where(np.array(counts) > 0, -1.0, np.inf),
                 max=np.where(np.array(counts) > 0, 1.0, -np.inf))
        rs = nbbn.RunningStats.from_dict(d)
        with pytest.raises(ValueError, match="limit of 2"):
            rs.update(x)
        np.testing.assert_array_equal(rs.to_dict()["count"], counts)
    rs = state(0.0, count=2 ** 62)  # a weighted batch into an unweighted state
    with pytest.raises(ValueError, match="limit of 2"):
        rs.update(np.ones((3, 2)), sample_weight=np.ones(3))
    assert rs.count[0] == 2 ** 62 and not rs.weighted
    rs = state(0.0, count=2 ** 62)  # a weighted batch into an unweighted state
    with pytest.raises(ValueError, match="limit of 2"):
        rs.update(np.ones((3, 2)), sample_weight=np.ones(3))
    assert rs.count[0] == 2 ** 62 and not rs.weighted
    xr = pytest.importorskip("xarray")
    rs = state(0.0, count=2 ** 62)
    with pytest.raises(ValueError, match="limit of 2"):
        rs.update(xr.DataArray(np.ones((3, 2)), dims=("n", "c")))
    assert rs.count[0] == 2 ** 62


def test_a_histogram_beyond_its_counts_is_refused():
    """A loaded histogram bin above 2**62 (a uint64 one wrapped to a negative int64) or
    above its channel's count is a damaged file: refused."""
    u8 = np.arange(12, dtype=np.uint8).reshape(4, 3)
    good = nbbn.RunningStats(-1).update(u8).to_dict()
    good["histogram"] = np.zeros((3, 256), np.int64)
    good["histogram"][:, 0] = 4
    assert nbbn.RunningStats.from_dict(good).histogram.counts[0, 0] == 4
    for bins, msg in ((np.uint64(2 ** 63 + 5), "at most 2"), (5, "above its channel's count")):
        d = dict(good)
        d["histogram"] = good["histogram"].astype(np.uint64)
        d["histogram"][0, 3] = bins
        with pytest.raises(ValueError, match=msg):
            nbbn.RunningStats.from_dict(d)


def test_a_histogram_whose_sums_are_not_the_counts_is_refused():
    """Every value counted is in one bin: bins that sum to more (or fewer) values than
    the channel's count are a hand-made or damaged state, whose percentiles would be
    wrong after the next update. The sums are checked without wrapping int64."""
    u8 = np.arange(12, dtype=np.uint8).reshape(4, 3)
    d = nbbn.RunningStats(-1).update(u8).to_dict()
    d["histogram"] = np.zeros((3, 256), np.int64)
    d["histogram"][:, 0] = 4
    d["histogram"][1, 7] = 1
    with pytest.raises(ValueError, match="counts 5 values in channel 1, the statistics 4"):
        nbbn.RunningStats.from_dict(d)
    d["histogram"][1, 7] = 0
    d["histogram"][2, 0] = 3
    with pytest.raises(ValueError, match="counts 3 values in channel 2"):
        nbbn.RunningStats.from_dict(d)
    big = dict(d, count=np.full(3, 2 ** 62, np.int64))  # (bins of 2**62 each: 2**78)
    big["histogram"] = np.full((3, 65536), 2 ** 62, np.int64)
    with pytest.raises(ValueError, match="sum to at most 2\\*\\*62 per channel"):
        nbbn.RunningStats.from_dict(big)  # (Histogram's own check, before from_dict's)


def test_states_from_one_dict_do_not_share_its_histogram():
    """``from_dict`` copies the histogram as it copies the statistics: two states made
    from one dict, or the dict itself, are not changed by the other's updates."""
    u8 = np.arange(12, dtype=np.uint8).reshape(4, 3)
    d = nbbn.RunningStats(-1).update(u8).to_dict()
    d["histogram"] = np.zeros((3, 256), np.int64)
    d["histogram"][:, 0] = 4
    a, b = nbbn.RunningStats.from_dict(d), nbbn.RunningStats.from_dict(d)
    a.update(np.full((2, 3), 7, np.uint8))
    assert a.histogram.counts[:, 7].tolist() == [2, 2, 2]
    assert b.histogram.counts.sum() == d["histogram"].sum() == 12


def test_to_dict_reads_statistics_and_histogram_together():
    """``to_dict`` copies the statistics and the histogram under one lock: a save while
    another thread updates paired old counts with a newer histogram, which ``load``
    then refused (a bin above its count; found in review, 1-9 in 3000 saves). A
    histogram set before any data saves and loads too."""
    from nbbn._histogram import Histogram

    rs = nbbn.RunningStats(-1)
    rs.histogram = Histogram.empty(3, np.uint8)
    back = nbbn.RunningStats.from_dict(rs.to_dict())
    assert back.histogram.counts.shape == (3, 256) and back.count.size == 0
    img = np.zeros((64, 64, 3), np.uint8)  # one level: each bin equals the count
    rs.update(img)

    def check():
        d = rs.to_dict()
        assert d["histogram"][0, 0] == d["count"][0]
        nbbn.RunningStats.from_dict(d)

    _while_another_thread_updates(rs, img, check, 2000)


def _while_another_thread_updates(rs, batch, check, times: int) -> None:
    """``check()`` called ``times`` times while another thread updates ``rs`` with
    ``batch`` over and over."""
    import threading

    stop = threading.Event()

    def updates():
        while not stop.is_set():
            rs.update(batch)

    worker = threading.Thread(target=updates)
    worker.start()
    try:
        for _ in range(times):
            check()
    finally:
        stop.set()
        worker.join()


def test_updates_near_the_count_limit_on_every_backend(backend):
    """The CUDA backend merged a batch into a state near 2**62 without the check: the
    count passed the limit, and ``save`` wrote a file ``load`` refused. Now both
    backends take a batch that fits (the exact counts decide near the limit), refuse
    one that does not, and leave the state as it was."""
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    d = nbbn.RunningStats(-1).update(x).to_dict()
    d["count"] = np.array([2 ** 62 - 6, 4, 4])
    rs = nbbn.RunningStats.from_dict(d, backend=backend)
    rs.update(x)  # 4 more: 2**62 - 2
    assert rs.count.tolist() == [2 ** 62 - 2, 8, 8]
    before = rs.to_dict()
    for _ in range(2):  # (a device state: its bound, then the exact counts, refuse it)
        with pytest.raises(ValueError, match=r"limit of 2\*\*62 values per channel in "
                                             r"channel 0: 4611686018427387902 \+ 4"):
            rs.update(x)
        for k, v in rs.to_dict().items():
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    rs.update(x[:2])
    assert rs.count.tolist() == [2 ** 62, 10, 10]
    back = nbbn.RunningStats.from_dict(rs.to_dict())
    assert back.count[0] == 2 ** 62


def test_an_update_may_end_exactly_on_the_count_limit(backend):
    """A batch whose omitted NaN leaves its count below its rows: the CUDA backend's
    bound (the rows) passes the limit, the exact counts end on it, and the update is
    taken, as on the CPU (mutant: the exact check refused a count equal to the limit)."""
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    d = nbbn.RunningStats(-1, nan_policy="omit").update(x).to_dict()
    d["count"] = np.array([2 ** 62 - 3, 4, 4])
    rs = nbbn.RunningStats.from_dict(d, backend=backend)
    y = x.copy()
    y[0, 0] = np.nan  # channel 0 counts 3 of the 4 rows
    rs.update(y)
    assert rs.count.tolist() == [2 ** 62, 8, 8]
    assert rs.nan_count.tolist() == [1, 0, 0]


def test_the_count_limit_error_names_the_first_channel_past_it():
    """Where several channels would pass the limit, the error names the first of them
    and its two counts (a merge is refused as a whole)."""
    d = {"format": "nbbn.RunningStats", "version": 1, "channel_axis": 1,
         "nan_policy": "propagate", "count": np.array([5, 2 ** 62, 2 ** 62 - 1]),
         "mean": np.zeros(3), "mean_lo": np.zeros(3), "m2": np.ones(3),
         "min": np.full(3, -1.0), "max": np.ones(3),
         "nan_count": np.zeros(3, np.int64), "inf_count": np.zeros(3, np.int64)}
    rs = nbbn.RunningStats.from_dict(d)
    with pytest.raises(ValueError, match=rf"in channel 1: {2 ** 62} \+ 2\. Nothing"):
        rs.update(np.zeros((2, 3)))
    np.testing.assert_array_equal(rs.count, d["count"])


def test_assigning_a_histogram_checks_it_against_the_statistics():
    """``.histogram`` set after an update (or of other channels) was taken, then saved,
    and ``load`` refused the file ("counts 10 values in channel 0, the statistics 20").
    Now the assignment is refused, by from_dict's rule, and nothing changes; a histogram
    of the values counted, an empty one before any data, and None are taken."""
    import pickle

    from nbbn._histogram import Histogram

    x = np.arange(30, dtype=np.uint8).reshape(10, 3)
    rs = nbbn.RunningStats(-1).update(x)
    for hist, msg in ((Histogram.empty(3, np.uint8),
                       "counts 0 values in channel 0, the statistics 10: expected"),
                      (Histogram.empty(4, np.uint8), "has 4 channels, the statistics 3"),
                      (Histogram.of(np.zeros((11, 3), np.uint8)), "above its channel's count")):
        with pytest.raises(ValueError, match=msg):
            rs.histogram = hist
        assert rs.histogram is None
    with pytest.raises(TypeError, match="takes a Histogram or None, got ndarray"):
        rs.histogram = np.zeros((3, 256), np.int64)
    rs.histogram = Histogram.of(x)
    rs.update(x)
    back = pickle.loads(pickle.dumps(rs))
    np.testing.assert_array_equal(back.histogram.counts,
                                  Histogram.of(np.concatenate([x, x])).counts)
    rs.histogram = None
    assert rs.histogram is None
    fresh = nbbn.RunningStats(-1)
    fresh.histogram = Histogram.empty(3, np.uint8)
    fresh.update(x)
    assert (fresh + back).histogram.counts.sum() == 90


def test_an_empty_batch_or_merge_of_other_channels_than_a_set_histogram_is_refused():
    """A histogram set before any data, then an empty batch (or a merge with statistics
    of empty batches) of another channel count: the statistics took 5 channels and the
    histogram kept 3, and the file save() wrote was refused by load()."""
    from nbbn._histogram import Histogram

    rs = nbbn.RunningStats(-1)
    rs.histogram = Histogram.empty(3, np.uint8)
    with pytest.raises(ValueError, match="batch has 5 channels, but these statistics keep a "
                                         "histogram of 3 channels"):
        rs.update(np.zeros((0, 5), np.uint8))
    assert rs.count.size == 0 and rs.histogram.num_channels == 3
    empty5 = nbbn.RunningStats(-1).update(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="the histogram of 3 channels cannot be kept "
                                         "with statistics of 5 channels"):
        rs + empty5
    other_way = empty5 + rs  # (a side that counted nothing leaves the other's extras)
    assert other_way.histogram is None and other_way.count.tolist() == [0] * 5
    with pytest.raises(ValueError, match="the histogram of 3 channels cannot be kept"):
        rs += empty5
    assert rs.count.size == 0 and rs.histogram.num_channels == 3
    rs.update(np.zeros((0, 3), np.uint8))  # (its own channels: fixed, and it loads)
    rs += nbbn.RunningStats(-1).update(np.ones((2, 3), np.uint8))  # (no histogram: dropped)
    assert rs.histogram is None and rs.count.tolist() == [2, 2, 2]
    # statistics of empty batches only, without a histogram, keep the other side's
    # (whether a side counted nothing is read before the merge into its copy)
    counted = nbbn.RunningStats(-1)
    counted.histogram = Histogram.empty(3, np.uint8)
    counted.update(np.ones((4, 3), np.uint8))
    for merged in (nbbn.RunningStats(-1).update(np.zeros((0, 3), np.uint8)) + counted,
                   counted + nbbn.RunningStats(-1).update(np.zeros((0, 3), np.uint8))):
        assert merged.histogram.counts[:, 1].tolist() == [4, 4, 4]
    inplace = nbbn.RunningStats(-1).update(np.zeros((0, 3), np.uint8))
    inplace += counted
    assert inplace.histogram.counts[:, 1].tolist() == [4, 4, 4]


def test_copies_and_merges_read_statistics_and_histogram_together():
    """``copy.copy``/``pickle`` and ``merge`` copied the histogram after the statistics'
    lock was released: while another thread updated, a copy paired a newer histogram
    with older counts (85 in 40,000 copies), which load refused."""
    import copy

    from nbbn._histogram import Histogram

    rs = nbbn.RunningStats(-1)
    rs.histogram = Histogram.empty(3, np.uint8)
    img = np.zeros((16, 16, 3), np.uint8)  # one level: each bin equals the count
    rs.update(img)

    def check():
        for other in (copy.copy(rs), rs + nbbn.RunningStats(-1)):
            assert other.histogram.counts[0, 0] == other.count[0]

    _while_another_thread_updates(rs, img, check, 3000)
