"""xarray DataArrays: channel_axis by dimension name, DataArray out, statistics as a
Dataset, dask-backed DataArrays kept lazy."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
from reference import random_array

import nbbn

xr = pytest.importorskip("xarray")


def _data(rng, dtype="float32"):
    x = random_array(rng, (4, 3, 5, 6), dtype, channel_axis=1)
    return xr.DataArray(x, dims=("time", "band", "y", "x"), name="radiance",
                        coords={"band": ["red", "green", "blue"], "time": np.arange(4)},
                        attrs={"units": "W m-2"})


def _same_labels(out, x):
    assert isinstance(out, xr.DataArray)
    assert out.dims == x.dims and out.name == x.name and out.attrs == x.attrs
    assert set(out.coords) == set(x.coords)
    for k in x.coords:
        np.testing.assert_array_equal(out.coords[k].values, x.coords[k].values)


def test_channel_axis_by_name(rng):
    x = _data(rng)
    rs = nbbn.channel_stats(x, "band")
    want = nbbn.channel_stats(x.values, 1)
    for f in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(rs, f), getattr(want, f))
    by_int = nbbn.RunningStats(1).update(x)
    np.testing.assert_array_equal(by_int.mean, want.mean)
    transposed = x.transpose("time", "y", "x", "band")  # the name follows the dimension
    np.testing.assert_allclose(nbbn.channel_stats(transposed, "band").var, want.var,
                               rtol=1e-12)


def test_outputs_are_dataarrays(rng):
    x = _data(rng, "uint8")
    rs = nbbn.channel_stats(x, "band")
    norm = rs.to_normalizer()
    y = norm(x)
    _same_labels(y, x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.values, nbbn.Normalizer(rs.mean, rs.var)(x.values))
    _same_labels(norm.inverse(y), x)
    _same_labels(nbbn.normalize(x, rs.mean, rs.var, channel_axis="band"), x)
    bn = nbbn.BatchNorm(3, channel_axis="band")
    _same_labels(bn(x), x)
    _same_labels(bn.eval()(x), x)
    out = xr.zeros_like(x, dtype=np.float64)
    res = norm(x, out=out)  # out= may be a DataArray: its data is written
    want = nbbn.Normalizer(rs.mean, rs.var)(x.values, out=np.empty(x.shape))
    np.testing.assert_array_equal(out.values, want)
    _same_labels(res, x)


def test_to_xarray(rng):
    x = _data(rng)
    rs = nbbn.channel_stats(x, "band")
    ds = rs.to_xarray()
    assert isinstance(ds, xr.Dataset) and ds.sizes == {"band": 3}
    assert ds["band"].values.tolist() == ["red", "green", "blue"]
    for f in ("count", "mean", "var", "std", "min", "max", "nan_count"):
        np.testing.assert_array_equal(ds[f].values, getattr(rs, f))
    assert ds.attrs["channel_axis"] == "band"
    again = pickle.loads(pickle.dumps(rs))  # the coordinate travels with the statistics
    assert again.to_xarray()["band"].values.tolist() == ["red", "green", "blue"]
    assert (rs + rs).to_xarray()["band"].values.tolist() == ["red", "green", "blue"]
    plain = nbbn.channel_stats(x.values, 1).to_xarray()
    assert plain.sizes == {"channel": 3} and "channel" not in plain.coords
    assert nbbn.channel_stats(x.values, 1).to_xarray(dim="c").sizes == {"c": 3}


def test_to_xarray_keeps_dimension_names_and_multiindex_levels(rng):
    """A dimension named by a non-str (xarray allows any hashable) keeps its name, and
    a MultiIndex channel coordinate its levels (they became strings, and tuples)."""
    import pandas as pd

    x = random_array(rng, (6, 4), "float64", channel_axis=1)
    ds = nbbn.channel_stats(xr.DataArray(x, dims=("t", 7)), 1).to_xarray()
    assert dict(ds.sizes) == {7: 4}
    np.testing.assert_allclose(ds["mean"].values, x.mean(axis=0), rtol=1e-14)
    index = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["site", "n"])
    labelled = xr.DataArray(x, dims=("t", "c"),
                            coords=xr.Coordinates.from_pandas_multiindex(index, "c"))
    rs = nbbn.channel_stats(labelled, "c")
    for stats in (rs, pickle.loads(pickle.dumps(rs)), rs + rs):
        ds = stats.to_xarray()
        assert list(ds.indexes["c"].names) == ["site", "n"]
        np.testing.assert_allclose(ds["mean"].sel(site="b").values, x[:, 2:].mean(0),
                                   rtol=1e-14)
    with pytest.raises(ValueError, match="labels must match"):
        rs.update(labelled.isel(c=[1, 0, 2, 3]))


def test_named_axis_saved_and_loaded(rng, tmp_path):
    rs = nbbn.channel_stats(_data(rng), "band")
    rs.save(tmp_path / "s.npz")
    back = nbbn.RunningStats.load(tmp_path / "s.npz")
    assert back.channel_axis == "band"
    np.testing.assert_array_equal(back.var, rs.var)


def test_dask_backed_stays_lazy(rng):
    pytest.importorskip("dask.array")
    import nbbn.dask

    x = _data(rng)
    xd = x.chunk({"time": 2, "band": 2})
    rs = nbbn.channel_stats(xd, "band")
    np.testing.assert_allclose(rs.var, nbbn.channel_stats(x, "band").var, rtol=1e-12)
    y = rs.to_normalizer()(xd)
    _same_labels(y, x)
    assert type(y.data).__module__.startswith("dask")  # still lazy
    np.testing.assert_array_equal(y.values, rs.to_normalizer()(x).values)
    lazy = nbbn.dask.channel_stats(xd, "band").compute()
    assert lazy.to_xarray()["band"].values.tolist() == ["red", "green", "blue"]


def test_bad_names(rng):
    x = _data(rng)
    with pytest.raises(ValueError, match="'wavelength' is not a dimension"):
        nbbn.channel_stats(x, "wavelength")
    rs = nbbn.RunningStats("band")
    with pytest.raises(TypeError, match="dimension name"):
        rs.update(x.values)
    assert rs.num_channels is None
    with pytest.raises(TypeError, match="channel_axis must be an int"):
        nbbn.RunningStats(1.5)


def test_missing_xarray_names_the_extra(rng, monkeypatch):
    rs = nbbn.channel_stats(_data(rng).values, 1)
    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(nbbn.MissingExtraError, match=r"nbbn\[xarray\]"):
        rs.to_xarray()


def test_outputs_drop_the_inputs_encoding(rng):
    """A packed input's encoding (int16 with a scale_factor) would quantize the
    normalized values when saved: outputs have none, as xarray's own arithmetic."""
    x = _data(rng, "int16")
    x.encoding = {"dtype": "int16", "scale_factor": 0.1, "_FillValue": -1}
    rs = nbbn.channel_stats(x, "band")
    for y in (rs.to_normalizer()(x), nbbn.BatchNorm(3, channel_axis="band")(x)):
        assert y.encoding == {}
    assert x.encoding["scale_factor"] == 0.1  # the input's is kept


def test_channels_of_other_labels_are_not_merged(rng):
    """Statistics are merged by position: a DataArray whose channel coordinate orders
    the labels otherwise is refused (update, merge, +=), the statistics unchanged."""
    x = _data(rng)
    rs = nbbn.channel_stats(x, "band")
    before = rs.mean.copy()
    shuffled = x.isel(band=[2, 0, 1])
    with pytest.raises(ValueError, match=r"'band' coordinate \['blue', 'red', 'green'\]"):
        rs.update(shuffled)
    other = nbbn.channel_stats(shuffled, "band")
    with pytest.raises(ValueError, match="labels must match"):
        rs + other
    with pytest.raises(ValueError, match="labels must match"):
        rs += other
    np.testing.assert_array_equal(rs.mean, before)
    rs.update(shuffled.sel(band=["red", "green", "blue"]))  # reordered: merged
    assert rs.count[0] == 2 * x.sizes["time"] * x.sizes["y"] * x.sizes["x"]


def test_backend_cpu_takes_dataarrays_and_dask_arrays(rng):
    """backend="cpu" routes a DataArray (dimension names kept) and a dask array (chunk by
    chunk, nothing loaded whole) as "auto" does: both are CPU work."""
    x = _data(rng)
    rs = nbbn.RunningStats("band", backend="cpu").update(x)
    np.testing.assert_array_equal(rs.mean, nbbn.channel_stats(x, "band").mean)
    y = nbbn.Normalizer(rs.mean, rs.var, channel_axis="band", backend="cpu")(x)
    _same_labels(y, x)
    da = pytest.importorskip("dask.array")
    lazy = nbbn.Normalizer(rs.mean, rs.var, channel_axis=1, backend="cpu")(
        da.from_array(x.values, chunks=2))
    assert type(lazy).__module__.startswith("dask")
    np.testing.assert_array_equal(lazy.compute(), y.values)


# ------------------------------------------------- edges found by mutation testing
def test_a_negative_axis_keeps_the_channel_coordinate(rng):
    x = xr.DataArray(rng.normal(size=(5, 3)), dims=("t", "band"),
                     coords={"band": ["r", "g", "b"]})
    ds = nbbn.RunningStats(-1).update(x).to_xarray()
    assert list(ds.dims) == ["band"]
    assert list(ds["band"].values) == ["r", "g", "b"]


def test_a_loaded_named_axis_names_the_dimension(rng, tmp_path):
    x = xr.DataArray(rng.normal(size=(5, 3)), dims=("t", "band"))
    nbbn.channel_stats(x, "band").save(tmp_path / "s.npz")
    ds = nbbn.RunningStats.load(tmp_path / "s.npz").to_xarray()
    assert list(ds.dims) == ["band"]


def test_to_xarray_attrs(rng):
    ds = nbbn.RunningStats(1, nan_policy="omit").update(rng.normal(size=(4, 3))).to_xarray()
    assert ds.attrs == {"channel_axis": 1, "nan_policy": "omit"}


def test_labels_of_another_length_are_left_out(rng):
    from nbbn._xarray import stats_dataset

    rs = nbbn.RunningStats(1).update(rng.normal(size=(4, 3)))
    ds = stats_dataset(rs, None, ("band", np.array(["a", "b"])))
    assert list(ds.dims) == ["band"] and "band" not in ds.coords


def test_a_dataarray_without_labels_is_counted_by_position(rng):
    """A batch whose channel dimension has no coordinate has no labels to compare: it
    is counted by position, as a plain array is (not refused, nor a crash)."""
    x = xr.DataArray(rng.normal(size=(5, 3)), dims=("t", "band"),
                     coords={"band": ["r", "g", "b"]})
    rs = nbbn.RunningStats(-1).update(x).update(x.drop_vars("band"))
    np.testing.assert_array_equal(rs.count, [10, 10, 10])
    norm = nbbn.RunningStats(-1).update(x).to_normalizer(eps=0.0)
    np.testing.assert_array_equal(norm(x.drop_vars("band")).values, norm(x).values)


def test_labels_of_another_dimension_are_not_compared(rng):
    """Labels are compared only along the same dimension: with an integer channel axis,
    a DataArray whose channel dimension has another name is counted by position."""
    x = xr.DataArray(rng.normal(size=(5, 3)), dims=("t", "band"),
                     coords={"band": ["r", "g", "b"]})
    other = xr.DataArray(x.values, dims=("t", "colour"),
                         coords={"colour": ["b", "g", "r"]})
    rs = nbbn.RunningStats(-1).update(x).update(other)
    np.testing.assert_array_equal(rs.count, [10, 10, 10])
    norm = nbbn.RunningStats(-1).update(x).to_normalizer(eps=0.0)
    np.testing.assert_array_equal(norm(other).values, norm(x).values)


def test_a_transposed_dataarray_is_refused_not_read_along_another_dimension(rng, tmp_path):
    """Statistics of dimension "c" applied (or updated) with an integer channel axis to
    a DataArray transposed so that axis holds "t", of the same size: read along "t" in
    silence (outputs of 218 where about 2.5 was right). The dimension it holds
    elsewhere is named; by name (channel_axis="c") it is read right."""
    x = xr.DataArray(rng.standard_normal((10, 3, 3)) + np.array([0, 100, 200])[:, None],
                     dims=("n", "c", "t"), coords={"c": ["r", "g", "b"],
                                                   "t": ["x", "y", "z"]})
    rs = nbbn.RunningStats(1).update(x)
    norm = rs.to_normalizer()
    moved = x.transpose("n", "t", "c")
    why = (r"the channel axis of .* is its dimension 't', but .* count the channels of "
           r"dimension 'c', which it holds on another axis .*pass channel_axis='c'")
    before = rs.count.tolist()
    with pytest.raises(ValueError, match=why):
        rs.update(moved)
    assert rs.count.tolist() == before
    with pytest.raises(ValueError, match=why):
        norm(moved)
    with pytest.raises(ValueError, match=why):
        nbbn.transform(moved, rs, np.empty(moved.shape), progress=False)
    norm.channel_axis = "c"
    np.testing.assert_allclose(norm(moved)
                               .transpose("n", "c", "t").values, norm(x).values)


def test_a_batch_without_labels_keeps_the_statistics_labels(rng):
    """The first labels stay: a batch with none (or, with an integer channel axis,
    labels of another dimension), or statistics merged in without labels, replaced
    them, and a later batch with the channels in another order was then pooled by
    position unchecked."""
    x = xr.DataArray(rng.normal(size=(5, 3)), dims=("t", "band"),
                     coords={"band": ["r", "g", "b"]})
    shuffled = x.isel(band=[2, 0, 1])
    rs = nbbn.RunningStats("band").update(x).update(x.drop_vars("band"))
    assert rs.to_xarray()["band"].values.tolist() == ["r", "g", "b"]
    with pytest.raises(ValueError, match="labels must match"):
        rs.update(shuffled)
    np.testing.assert_array_equal(rs.count, [10, 10, 10])  # (nothing changed)
    other = xr.DataArray(x.values, dims=("t", "colour"), coords={"colour": ["b", "g", "r"]})
    rs = nbbn.RunningStats(-1).update(x).update(other)
    with pytest.raises(ValueError, match="labels must match"):
        rs.update(shuffled)
    unlabelled = nbbn.RunningStats("band").update(x.drop_vars("band"))
    for merged in (rs.merge(unlabelled), unlabelled.merge(rs), unlabelled + rs):
        assert merged.to_xarray()["band"].values.tolist() == ["r", "g", "b"]
    unlabelled += rs
    with pytest.raises(ValueError, match="labels must match"):
        unlabelled.update(shuffled)


def test_fit_and_transform_of_a_dataarray_keep_and_check_its_labels(rng, tmp_path):
    # nbbn.fit read a DataArray's rows as numpy and dropped its channel coordinate, and
    # nbbn.transform normalized one with its channels in another order by position
    x = _data(rng, "float64")
    rs = nbbn.fit(x, channel_axis=1, progress=False)
    assert rs.to_xarray().coords["band"].values.tolist() == ["red", "green", "blue"]
    np.testing.assert_array_equal(rs.mean, nbbn.channel_stats(x.values, 1).mean)
    out = nbbn.transform(x, rs, tmp_path / "a.npy", progress=False)
    np.testing.assert_array_equal(np.load(out), rs.to_normalizer()(x.values))
    for stats in (rs, rs.to_normalizer()):
        with pytest.raises(ValueError, match=r"'band' coordinate \['blue', 'green', 'red'\]"):
            nbbn.transform(x.isel(band=[2, 1, 0]), stats, tmp_path / "b.npy", progress=False)
    assert not (tmp_path / "b.npy").exists()


def test_fit_and_transform_take_a_dataarrays_dimension_names(rng, tmp_path):
    # RunningStats("band") takes a name; nbbn.fit(x, "band") and
    # nbbn.transform(x, RunningStats("band")...) said "channel_axis must be an int, got str"
    # or asked for the axis number
    x = _data(rng, "float64")
    rs = nbbn.fit(x, "band", progress=False)
    np.testing.assert_array_equal(rs.mean, nbbn.fit(x, 1, progress=False).mean)
    assert rs.channel_axis == 1
    assert rs.to_xarray().coords["band"].values.tolist() == ["red", "green", "blue"]
    named = nbbn.RunningStats("band").update(x)
    want = named.to_normalizer()(x).values
    for i, kw in enumerate(({}, {"channel_axis": "band"}, {"channel_axis": 1})):
        out = nbbn.transform(x, named, tmp_path / f"y{i}.npy", progress=False, **kw)
        np.testing.assert_array_equal(np.load(out), want)
    with pytest.raises(ValueError, match=r"channel_axis='colour' is not a dimension of the "
                                         r"DataArray \(its dims: \('time', 'band'"):
        nbbn.fit(x, "colour", progress=False)
    with pytest.raises(TypeError, match="the dimension name 'band'"):  # numpy rows: a number
        nbbn.transform(x.values, named, tmp_path / "z.npy", progress=False)


def test_items_of_an_iterable_keep_and_check_their_labels(rng):
    x = _data(rng, "float64")
    rs = nbbn.fit([x, x[:2]], channel_axis=1, progress=False)
    assert rs.to_xarray().coords["band"].values.tolist() == ["red", "green", "blue"]
    np.testing.assert_array_equal(rs.count, [4 * 30 + 2 * 30] * 3)
    with pytest.raises(ValueError, match=r"item 1 of an iterable \(list\) has the 'band' "
                                         r"coordinate \['blue', 'green', 'red'\], but item 0"):
        nbbn.fit([x, x.isel(band=[2, 1, 0])], channel_axis=1, progress=False)
    # an item without labels between them is counted by position, as by update
    rs = nbbn.fit([x.values, x], channel_axis=1, progress=False)
    assert rs.to_xarray().coords["band"].values.tolist() == ["red", "green", "blue"]


def test_nan_labels_equal_themselves(rng):
    # np.array_equal called the coordinate [0.5, nan, 2.0] different from itself
    x = _data(rng).assign_coords(band=[0.5, np.nan, 2.0])
    rs = nbbn.RunningStats("band").update(x).update(x)
    np.testing.assert_array_equal(rs.count, [2 * 4 * 5 * 6] * 3)
    rs.to_normalizer()(x)
    with pytest.raises(ValueError, match="coordinate"):
        rs.update(x.assign_coords(band=[np.nan, 0.5, 2.0]))


def test_a_resumed_dataarray_fit_checks_its_values(rng):
    # a DataArray's fingerprint held its shape and dtype only: a resumed fit took
    # another DataArray of the same shape as the one the checkpoint counted
    from nbbn.sources import open_source

    x = _data(rng, "float64")
    fp = open_source(x, channel_axis=1).fingerprint()
    assert fp == open_source(x.copy(deep=True), channel_axis=1).fingerprint()
    assert fp != open_source(x + 1000, channel_axis=1).fingerprint()


def test_a_dask_backed_batch_of_other_labels_is_refused_before_it_is_read(rng):
    # the coordinate was checked after the reduction: every chunk was computed first
    da = pytest.importorskip("dask.array")
    import dask

    calls = []

    def seen(block):
        calls.append(1)
        return block

    x = _data(rng)
    xd = x.chunk({"time": 2}).copy(data=da.from_array(x.values, chunks=(2, 3, 5, 6))
                                   .map_blocks(seen, dtype=x.dtype,
                                               meta=np.empty((0,) * 4, x.dtype)))
    with dask.config.set(scheduler="synchronous"):
        rs = nbbn.RunningStats("band").update(xd)
        before, n = rs.mean.copy(), len(calls)
        assert n == 2
        with pytest.raises(ValueError, match=r"'band' coordinate \['blue', 'green', 'red'\]"):
            rs.update(xd.isel(band=[2, 1, 0]))
    assert len(calls) == n
    np.testing.assert_array_equal(rs.mean, before)


def test_fit_and_transform_of_a_dask_backed_dataarray_follow_its_chunks(rng, tmp_path):
    # a dask-backed DataArray was read as any array: batches of ~BATCH_BYTES that cut
    # its chunks (each computed up to twice), and transform took the generic row path
    da = pytest.importorskip("dask.array")
    import dask

    from nbbn.sources import ChunkedSource, open_source

    calls = []

    def seen(block):
        calls.append(block.shape[0])
        return block

    x = xr.concat([_data(rng, "float64")] * 5, "time")  # 20 rows
    xd = x.copy(data=da.from_array(x.values, chunks=(6, 3, 5, 6)).map_blocks(
        seen, dtype=x.dtype, meta=np.empty((0,) * 4, x.dtype)))
    src = open_source(xd, channel_axis=1)
    assert isinstance(src, ChunkedSource) and src.default_batch_size() == 6
    assert src.channel_coord[1].tolist() == ["red", "green", "blue"]
    assert calls == []
    with dask.config.set(scheduler="synchronous"):
        rs = nbbn.fit(xd, channel_axis=1, progress=False, batch_size=None)
        assert sorted(calls) == [2, 6, 6, 6]  # each chunk once
        calls.clear()
        out = nbbn.transform(xd, rs, tmp_path / "a.npy", progress=False)
        assert sorted(calls) == [2, 6, 6, 6]
        with pytest.raises(ValueError, match=r"'band' coordinate \['blue', 'green', 'red'\]"):
            nbbn.transform(xd.isel(band=[2, 1, 0]), rs, tmp_path / "b.npy", progress=False)
    assert rs.to_xarray().coords["band"].values.tolist() == ["red", "green", "blue"]
    np.testing.assert_allclose(rs.mean, nbbn.channel_stats(x.values, 1).mean, rtol=1e-14)
    np.testing.assert_array_equal(np.load(out), rs.to_normalizer()(x.values))
    assert not (tmp_path / "b.npy").exists()


def test_a_dimension_name_is_quoted_in_reprs_and_errors():
    # (Normalizer and BatchNorm printed channel_axis=ch, RunningStats channel_axis='ch')
    x = xr.DataArray(np.arange(12.0).reshape(4, 3), dims=("n", "ch"))
    norm = nbbn.RunningStats("ch").update(x).to_normalizer()
    assert repr(norm) == "Normalizer(num_channels=3, eps=1e-05, channel_axis='ch')"
    assert repr(nbbn.BatchNorm(3, channel_axis="ch")).endswith(", channel_axis='ch')")
    with pytest.raises(ValueError, match="x has 2 channels along channel_axis='ch', but"):
        norm(x[:, :2])


def test_object_labels_with_a_missing_label_match_themselves():
    # (["red", nan]: a second update of the same DataArray, and its normalizer, were
    # refused, "the labels must match"; float labels with NaN already matched)
    from nbbn._labels import same_labels

    labels = np.array(["red", np.nan], dtype=object)
    da = xr.DataArray(np.arange(8.0).reshape(4, 2), dims=("n", "band"),
                      coords={"band": labels})
    rs = nbbn.RunningStats("band").update(da).update(da)
    assert rs.count.tolist() == [8, 8]
    np.testing.assert_allclose(rs.to_normalizer(eps=0.0)(da).values,
                               (da.values - rs.mean) / rs.std, rtol=1e-15)
    assert same_labels(np.array(["a", None], object), np.array(["a", np.nan], object))
    assert not same_labels(np.array(["a", None], object), np.array(["b", None], object))
    assert not same_labels(np.array(["a", None], object), np.array([None, "a"], object))
    other = da.assign_coords(band=np.array(["red", "blue"], dtype=object))
    with pytest.raises(ValueError, match="so the labels must match"):
        rs.update(other)
