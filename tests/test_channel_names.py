"""``RunningStats.channel_names``: checked, saved, merged, pickled, shown."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import nbbn
from nbbn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from nbbn.info import describe
from nbbn.report import format_json, format_table

NAMES = ("height", "weight", "age")


@pytest.fixture
def named(rng):
    return nbbn.RunningStats(-1, channel_names=list(NAMES)).update(rng.standard_normal((20, 3)))


def test_names_are_checked_before_anything_changes(rng):
    rs = nbbn.RunningStats(-1, channel_names=NAMES)
    assert rs.channel_names == NAMES and nbbn.RunningStats().channel_names is None
    with pytest.raises(ValueError, match=r"has 2 channels .* channel_names has 3 names"):
        rs.update(rng.standard_normal((5, 2)))
    assert rs.num_channels is None
    rs.update(rng.standard_normal((5, 3)))
    before = rs.to_dict()
    with pytest.raises(ValueError, match="channel_names has 2 names, but the statistics have 3"):
        rs.channel_names = ["a", "b"]
    with pytest.raises(TypeError, match="must all be str, got 3"):
        rs.channel_names = ["a", "b", 3]
    with pytest.raises(TypeError, match="sequence of str"):
        nbbn.RunningStats(channel_names="abc")
    with pytest.raises(ValueError, match="cannot end in a NUL character"):
        rs.channel_names = ["a", "b", "c\x00"]  # the statistics file would drop it
    assert rs.channel_names == NAMES
    assert all(np.array_equal(before[k], v) for k, v in rs.to_dict().items())
    rs.channel_names = None
    assert rs.channel_names is None and "channel_names" not in rs.to_dict()


def test_saved_and_loaded_older_files_still_load(named, tmp_path):
    named.save(tmp_path / "s.npz")
    back = nbbn.RunningStats.load(tmp_path / "s.npz")
    assert back.channel_names == NAMES
    np.testing.assert_array_equal(back.mean, named.mean)
    with np.load(tmp_path / "s.npz") as z:
        assert int(z["version"]) == 1  # the entry is optional: the format version stays
    d = named.to_dict()
    del d["channel_names"]  # a file written before names existed
    assert nbbn.RunningStats.from_dict(d).channel_names is None
    bad = {**named.to_dict(), "channel_names": np.asarray(["a", "b"])}
    with pytest.raises(ValueError, match="channel_names must be 3 str"):
        nbbn.RunningStats.from_dict(bad)


def test_checkpoint_pickle_and_copy_keep_names(named, tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", Checkpoint(named, {"shard": 0, "row": 0}, None, {}))
    assert load_checkpoint(tmp_path / "c.ckpt").stats.channel_names == NAMES
    assert pickle.loads(pickle.dumps(named)).channel_names == NAMES
    assert copy.deepcopy(named).channel_names == NAMES


def test_merging_keeps_equal_names_and_refuses_different_ones(named, rng):
    x = rng.standard_normal((7, 3))
    same = nbbn.RunningStats(-1, channel_names=NAMES).update(x)
    unnamed = nbbn.RunningStats(-1).update(x)
    assert (named + same).channel_names == NAMES
    assert (unnamed + named).channel_names == NAMES  # no names: the other's
    assert (named + nbbn.RunningStats(-1)).channel_names == NAMES
    other = nbbn.RunningStats(-1, channel_names=("height", "age", "weight")).update(x)
    before = named.to_dict()
    with pytest.raises(ValueError, match=r"different channels: .*first difference at channel 1"):
        named + other
    with pytest.raises(ValueError, match="different channels"):
        named += other
    assert named.channel_names == NAMES
    assert all(np.array_equal(before[k], v) for k, v in named.to_dict().items())
    unnamed += same
    assert unnamed.channel_names == NAMES and unnamed.count[0] == 14
    empty_named = nbbn.RunningStats(-1, channel_names=["a", "b"])
    with pytest.raises(ValueError, match="2 names, but the statistics have 3"):
        nbbn.RunningStats(-1).update(x).merge(empty_named)


def test_table_json_and_info_show_names(named):
    lines = format_table(named).splitlines()
    assert lines[0].split()[:2] == ["channel", "name"]
    assert [ln.split()[1] for ln in lines[1:]] == list(NAMES)
    assert '"channel_names": ["height", "weight", "age"]' in format_json(named)
    assert "channel_names" not in format_json(nbbn.RunningStats(-1).update(np.ones((2, 3))))
    assert "height" in describe(named) and "channel_names=['height'" in repr(named)


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_a_dataframe_names_the_channels_and_its_columns_are_checked(rng):
    """``update`` of a DataFrame read its values by position: a batch with its columns
    reordered pooled column "c" into "a". The first DataFrame names the channels (as
    ``nbbn.fit`` of it does), and a later one with other columns is refused, whole."""
    pd = pytest.importorskip("pandas")
    x = rng.normal([0.0, 10.0, 100.0], 1.0, (30, 3))
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    rs = nbbn.RunningStats().update(df)
    assert rs.channel_names == ("a", "b", "c")
    assert rs.channel_names == nbbn.fit(df, progress=False).channel_names
    before = rs.to_dict()
    with pytest.raises(ValueError, match=r"columns \['c', 'b', 'a'\].*df\[\['a', 'b', 'c'\]\]"):
        rs.update(df[["c", "b", "a"]])
    with pytest.raises(ValueError, match=r"columns \['a', 'b', 'd'\]"):
        rs.update(df.rename(columns={"c": "d"}))
    assert _same(rs.to_dict(), before)
    rs.update(df[["a", "b", "c"]]).update(x)  # the same columns, and plain arrays
    np.testing.assert_allclose(rs.mean, x.mean(0), rtol=1e-13)
    unnamed = nbbn.RunningStats().update(x).update(df[["c", "b", "a"]])
    assert unnamed.channel_names is None  # statistics of arrays: nothing to check against
    empty = nbbn.RunningStats().update(df.iloc[:0])
    assert empty.channel_names == ("a", "b", "c") and empty.num_channels == 3
    # a column name ending in NUL, which the statistics file cannot keep, names nothing
    # (the batch is counted; as channel_names= it is refused)
    nul = nbbn.RunningStats().update(df.rename(columns={"c": "c\x00"}))
    assert nul.channel_names is None and nul.count.tolist() == [30, 30, 30]


def test_two_first_dataframes_in_other_orders_are_not_both_taken(rng):
    """Two threads' first batches, the same columns in two orders: one names the
    channels, the other is refused (the check and the naming are one step under the
    state's lock)."""
    import threading

    pd = pytest.importorskip("pandas")
    x = rng.normal(size=(8, 3))
    frames = [pd.DataFrame(x, columns=list(cols)) for cols in ("abc", "cba")]
    for _ in range(20):
        rs = nbbn.RunningStats()
        barrier, errors = threading.Barrier(2), []

        def feed(df, rs=rs, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                rs.update(df)
            except ValueError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=feed, args=(f,)) for f in frames]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(errors) == 1 and rs.count.tolist() == [8, 8, 8]
        assert rs.channel_names in (tuple("abc"), tuple("cba"))


def test_a_normalizer_checks_dataframe_columns_and_dataarray_labels(rng):
    pd = pytest.importorskip("pandas")
    x = rng.normal([0.0, 10.0, 100.0], 1.0, (30, 3))
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    norm = nbbn.RunningStats().update(df).to_normalizer(eps=0.0)
    assert norm.channel_names == ("a", "b", "c")
    np.testing.assert_allclose(norm(df), (x - x.mean(0)) / x.std(0), atol=1e-12)
    np.testing.assert_allclose(norm(x), norm(df))  # arrays: by position, unchecked
    with pytest.raises(ValueError, match="the normalizer's statistics were fitted on"):
        norm(df[["c", "b", "a"]])
    with pytest.raises(ValueError, match="the normalizer's statistics were fitted on"):
        norm.inverse(df[["c", "b", "a"]])
    with pytest.raises(ValueError, match="channel_names has 2 names"):
        nbbn.Normalizer([0.0] * 3, [1.0] * 3, channel_names=["a", "b"])
    xr = pytest.importorskip("xarray")
    da = xr.DataArray(x.T.copy(), dims=("band", "pixel"), coords={"band": ["r", "g", "b"]})
    norm = nbbn.RunningStats("band").update(da).to_normalizer(eps=0.0)
    np.testing.assert_allclose(norm(da).values, ((x - x.mean(0)) / x.std(0)).T, atol=1e-12)
    with pytest.raises(ValueError, match="labels must match"):
        norm(da.isel(band=[2, 1, 0]))


@pytest.mark.parametrize("kind", ["table", "record_batch"])
def test_pyarrow_tables_name_the_channels_and_are_checked(rng, kind):
    """A pyarrow Table (``pq.read_table``) was read by position without a check: a
    Table with the columns reordered was pooled column into column, and normalized with
    the other column's statistics."""
    pa = pytest.importorskip("pyarrow")
    make = pa.table if kind == "table" else pa.record_batch
    x = rng.normal([1.0, 100.0], 1.0, (20, 2))
    t = make({"price": x[:, 0], "quantity": x[:, 1]})
    swapped = make({"quantity": x[:, 1], "price": x[:, 0]})
    rs = nbbn.RunningStats(-1).update(t)
    assert rs.channel_names == ("price", "quantity")
    before = rs.to_dict()
    with pytest.raises(ValueError, match=r"columns \['quantity', 'price'\]"):
        rs.update(swapped)
    assert _same(rs.to_dict(), before)
    norm = rs.to_normalizer(eps=0.0)
    with pytest.raises(ValueError, match="the normalizer's statistics were fitted on"):
        norm(swapped)
    np.testing.assert_allclose(norm(t), (x - x.mean(0)) / x.std(0), atol=1e-12)


def test_nullable_dataframe_columns_read_as_fit_reads_them(rng):
    """``update`` and a Normalizer refused a DataFrame of nullable columns (numpy reads
    them as objects), which ``nbbn.fit`` and the scikit-learn scaler read with pd.NA as
    NaN; the message blamed None or oversized integers."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": pd.array([1, None, 3, 7], dtype="Int64"),
                       "b": [1.0, 2.0, 4.0, 8.0],
                       "c": pd.array([1.5, 2.5, None, 0.5], dtype="Float64")})
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(df)
    fitted = nbbn.fit(df, nan_policy="omit", progress=False)
    np.testing.assert_array_equal(rs.count, fitted.count)
    np.testing.assert_allclose(rs.mean, fitted.mean, rtol=1e-15)
    np.testing.assert_allclose(rs.var, fitted.var, rtol=1e-15)
    assert rs.channel_names == ("a", "b", "c")
    y = rs.to_normalizer(eps=0.0)(df)
    assert np.isnan(y[1, 0]) and np.isnan(y[2, 2]) and np.isfinite(y[0]).all()
    with pytest.raises(TypeError, match=r"the column 'f' \(bool\): select the numeric"):
        nbbn.RunningStats(-1).update(pd.DataFrame({"f": [True, False], "b": [1.0, 2.0]}))


def test_duplicate_column_names_are_refused_as_fit_refuses_them(rng):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(rng.normal(size=(4, 3)), columns=["a", "b", "a"])
    rs = nbbn.RunningStats(-1)
    with pytest.raises(ValueError, match=r"several columns named \['a'\]"):
        rs.update(df)
    assert rs.num_channels is None and rs.channel_names is None
    with pytest.raises(ValueError, match="several columns named"):
        nbbn.fit(df, progress=False)
    rs.update(df.to_numpy())
    np.testing.assert_allclose(rs.mean, df.to_numpy().mean(0), rtol=1e-15)
    with pytest.raises(ValueError, match=r"named \['1'\] \(labels compared as str\)"):
        nbbn.RunningStats(-1).update(pd.DataFrame([[1.0, 2.0]], columns=[1, "1"]))


def test_the_reorder_hint_only_for_the_same_columns(rng):
    """``select them in that order`` is suggested only when the batch has the fitted
    columns in another order; other columns of the same count are only refused."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(rng.normal(size=(4, 3)), columns=["a", "b", "c"])
    rs = nbbn.RunningStats(-1).update(df)
    with pytest.raises(ValueError, match="channels are matched by position") as info:
        rs.update(df.rename(columns={"c": "d"}))
    assert "select them in that order" not in str(info.value)


def test_long_label_lists_are_shortened_after_eight():
    from nbbn._labels import shown

    assert shown(tuple("abcdefgh")) == "[" + ", ".join(repr(c) for c in "abcdefgh") + "]"
    assert shown(tuple("abcdefghi")).endswith("'h', ...]")
    assert shown(("a",), limit=1) == "['a']"


def test_dataframes_of_an_iterable_name_the_channels_and_are_checked():
    # nbbn.fit of an iterable of DataFrames (read_csv(chunksize=...)) read them as
    # arrays: no names, and a chunk with its columns in another order pooled "w" into "h"
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"h": [170.0, 180.0], "w": [60.0, 80.0]})
    rs = nbbn.fit([df, df[1:]], progress=False)
    assert rs.channel_names == ("h", "w")
    np.testing.assert_array_equal(rs.mean, np.array([[170, 60], [180, 80], [180, 80]]).mean(0))
    with pytest.raises(ValueError, match=r"item 1 of an iterable \(list\) has the columns "
                                         r"\['w', 'h'\], but item 0 had \['h', 'w'\].*"
                                         r"df\[\[\.\.\.\]\]"):
        nbbn.fit([df, df[["w", "h"]]], progress=False)
    with pytest.raises(ValueError, match=r"has the columns \['h', 'x'\].*every item must"):
        nbbn.fit([df, df.rename(columns={"w": "x"})], progress=False)


def test_repr_quotes_a_dimension_name_and_marks_a_cut_count():
    """``channel_axis=band`` read as a variable; ten counts showed as eight, unmarked."""
    r = repr(nbbn.RunningStats("band"))
    assert "channel_axis='band'" in r and "count=[]" in r
    r = repr(nbbn.RunningStats(-1).update(np.ones((2, 10))))
    assert "channel_axis=-1" in r and r.endswith("count=[2, 2, 2, 2, 2, 2, 2, 2, ...])")
    assert repr(nbbn.RunningStats(1).update(np.ones((2, 3)))).endswith("count=[2, 2, 2])")
