"""RunningStats and channel_stats against the float64 reference: dtypes, layouts, nan_policy."""

from __future__ import annotations

import math
import os
import pickle
from fractions import Fraction

import numpy as np
import pytest
from conftest import SIMULATOR, skip_large_for_simulator
from reference import (
    ALL_DTYPES,
    LAYOUTS,
    assert_close,
    assert_stats,
    make_layout,
    random_array,
    ref_stats,
    ref_stats_many,
    stats_rtol,
)

import nbbn

# Layouts crossed with every dtype; the others run with float32 only.
MAIN_LAYOUTS = {"channels_first": ((4, 3, 5, 6), 1), "channels_last": ((4, 5, 6, 3), -1)}


def _mb(layout, c, backend="cpu"):
    """Past the CPU kernels' blocks (8,192 values of a channels-first row, 16,384 of a
    channels-last batch). The CUDA simulator's launches are blocks of 64 values (at
    most 8 a launch): there about a sixteenth is still many blocks and grid-stride
    steps, and the full size took 4-6 s a test of a slow CI host."""
    if backend == "cuda" and SIMULATOR:
        if layout == "channels_first":
            return (2, c, 24, 20), 1
        return ((17000 // c) // 160 + 1, 2, 5, c), -1
    if layout == "channels_first":
        return ((1 if c >= 64 else 2), c, 96, 90), 1
    if c == 300:
        return (200, 300), -1  # 60000 elements, (N, C)
    rows = 17000 // c + 1
    return (rows // 10 + 1, 2, 5, c), -1  # NHWC with > 16384 elements


def _stats(x, channel_axis, backend, nan_policy="propagate"):
    return nbbn.RunningStats(channel_axis, nan_policy=nan_policy, backend=backend).update(x)


# --------------------------------------------------------------------------- dtypes x layouts


@pytest.mark.parametrize("layout", list(MAIN_LAYOUTS))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_update_dtype_layout(dtype, layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    rs = _stats(x, axis, backend)
    ref = ref_stats(x, axis)
    assert rs.num_channels == 3
    assert_stats(rs, ref, stats_rtol(dtype))


@pytest.mark.parametrize("layout", list(MAIN_LAYOUTS))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_channel_stats_dtype_layout(dtype, layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    rs = nbbn.channel_stats(x, channel_axis=axis, backend=backend)
    assert isinstance(rs, nbbn.RunningStats)
    assert_stats(rs, ref_stats(x, axis), stats_rtol(dtype))


@pytest.mark.parametrize("c", [1, 3, 64, 300])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "float16"])
def test_multiblock(dtype, layout, c, backend, rng):
    shape, axis = _mb(layout, c)
    skip_large_for_simulator(backend, math.prod(shape))
    x = random_array(rng, shape, dtype, channel_axis=axis)
    if layout == "channels_first":
        assert x.shape[-1] * x.shape[-2] > 8192
    else:
        assert x.size > 16384
    rs = _stats(x, axis, backend)
    assert_stats(rs, ref_stats(x, axis), stats_rtol(dtype))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_float32(layout, backend, rng):
    x, axis = make_layout(layout, rng, "float32", 5)
    rs = _stats(x, axis, backend)
    assert rs.num_channels == 5
    assert_stats(rs, ref_stats(x, axis), stats_rtol("float32"))


@pytest.mark.parametrize("layout", ["strided", "negative_strides", "nchw_transposed_to_nhwc"])
@pytest.mark.parametrize("dtype", ["float64", "uint8", "int16"])
def test_views_other_dtypes(layout, dtype, backend, rng):
    x, axis = make_layout(layout, rng, dtype, 3)
    assert_stats(_stats(x, axis, backend), ref_stats(x, axis), stats_rtol(dtype))


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2", ">i2", ">u4", ">i8"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_big_endian(dtype, layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    native = random_array(rng, shape, np.dtype(dtype).newbyteorder("="), channel_axis=axis)
    x = native.astype(dtype)
    assert not x.dtype.isnative
    rs = _stats(x, axis, backend)
    ref = ref_stats(native, axis)
    assert_stats(rs, ref, stats_rtol(native.dtype))


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_read_only(layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, "float32", channel_axis=axis)
    x.setflags(write=False)
    rs = _stats(x, axis, backend)
    assert_stats(rs, ref_stats(x, axis), 1e-6)


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_memmap(layout, dtype, backend, rng, tmp_path):
    shape, axis = MAIN_LAYOUTS[layout]
    data = random_array(rng, shape, dtype, channel_axis=axis)
    path = tmp_path / "x.dat"
    mm = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
    mm[...] = data
    mm.flush()
    del mm
    x = np.memmap(path, dtype=dtype, mode="r", shape=shape)
    rs = _stats(x, axis, backend)
    assert_stats(rs, ref_stats(data, axis), stats_rtol(dtype))
    # a strided view of the memmap too
    view = x[:, :, ::2] if layout == "channels_first" else x[:, ::2]
    rs2 = _stats(view, axis, backend)
    assert_stats(rs2, ref_stats(np.asarray(view), axis), stats_rtol(dtype))
    del x, view


# --------------------------------------------------------------------------- nan policy


def _with_specials(rng, dtype, layout, big=False, backend="cpu"):
    """float data with NaN/inf in chosen channels (C = 6):
    0: clean; 1: a few NaN; 2: all NaN; 3: +inf and finite; 4: +inf and -inf; 5: NaN and inf."""
    c = 6
    if big:
        shape, axis = _mb(layout, c, backend)
    else:
        shape, axis = ((3, c, 4, 5), 1) if layout == "channels_first" else ((3, 4, 5, c), -1)
    x = random_array(rng, shape, dtype, channel_axis=axis)
    moved = np.moveaxis(x, axis, 0)
    xm = np.array(moved).reshape(c, -1)  # channel-major copy; written back below
    m = xm.shape[1]
    xm[1, rng.choice(m, size=3, replace=False)] = np.nan
    xm[1, m - 1] = np.nan  # in the last block too
    xm[2, :] = np.nan
    xm[3, rng.choice(m, size=2, replace=False)] = np.inf
    xm[4, 0] = np.inf
    xm[4, m - 1] = -np.inf
    xm[5, 1] = np.nan
    xm[5, m // 2] = -np.inf
    moved[...] = xm.reshape(moved.shape)
    return x, axis


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nan_policy(dtype, layout, nan_policy, backend, rng):
    x, axis = _with_specials(rng, dtype, layout)
    rs = _stats(x, axis, backend, nan_policy)
    ref = ref_stats(x, axis, nan_policy)
    assert rs.nan_policy == nan_policy
    assert_stats(rs, ref, stats_rtol(dtype))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_nan_policy_multiblock(layout, nan_policy, backend, rng):
    x, axis = _with_specials(rng, "float32", layout, big=True, backend=backend)
    rs = _stats(x, axis, backend, nan_policy)
    assert_stats(rs, ref_stats(x, axis, nan_policy), 1e-6)


def test_a_nan_stays_through_later_clean_batches(backend):
    """Under "propagate", a channel that saw a NaN keeps NaN min, max and mean after
    clean batches (a merge whose other side is smaller dropped the NaN minimum in the
    vectorized merge, a mutant that only one float16 test noticed): updates in a row,
    either order, and states merged with ``+``."""
    a = np.array([[np.nan, 1.0], [2.0, 3.0]])
    b = np.array([[5.0, 6.0], [-7.0, 8.0]])
    for first, second in ((a, b), (b, a)):
        row = nbbn.RunningStats(1, backend=backend).update(first).update(second)
        added = (nbbn.RunningStats(1, backend=backend).update(first)
                 + nbbn.RunningStats(1, backend=backend).update(second))
        for rs in (row, added):
            for name in ("min", "max", "mean", "var"):
                assert np.isnan(getattr(rs, name)[0]), (name, getattr(rs, name))
            assert (rs.min[1], rs.max[1]) == (1.0, 8.0)


def test_nan_semantics_explicit(backend):
    """Independent of the reference: the numpy functions named in the issue."""
    x = np.array([[1.0, np.nan, 3.0, 4.0], [np.nan, np.nan, np.nan, np.nan], [1.0, 2.0, 3.0, 4.0]])
    omit = _stats(x, 0, backend, "omit")
    np.testing.assert_array_equal(omit.count, [3, 0, 4])
    np.testing.assert_allclose(omit.mean[[0, 2]], [8 / 3, 2.5], rtol=1e-15)
    np.testing.assert_allclose(omit.var[[0, 2]], [np.nanvar(x[0]), np.var(x[2])], rtol=1e-14)
    np.testing.assert_array_equal(omit.min, [1.0, np.nan, 1.0])
    np.testing.assert_array_equal(omit.max, [4.0, np.nan, 4.0])
    assert np.isnan(omit.mean[1]) and np.isnan(omit.var[1]) and np.isnan(omit.std[1])
    prop = _stats(x, 0, backend, "propagate")
    np.testing.assert_array_equal(prop.count, [4, 4, 4])
    for name in ("mean", "var", "min", "max"):
        v = getattr(prop, name)
        assert np.isnan(v[0]) and np.isnan(v[1]) and not np.isnan(v[2]), name


def test_inf_semantics_explicit(backend):
    x = np.array([[1.0, np.inf, 3.0], [np.inf, -np.inf, 0.0], [-np.inf, -np.inf, 1.0]])
    for policy in ("propagate", "omit"):
        rs = _stats(x, 0, backend, policy)
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(rs.mean, np.mean(x, axis=1))
            np.testing.assert_array_equal(rs.var, np.var(x, axis=1))
        np.testing.assert_array_equal(rs.min, np.min(x, axis=1))
        np.testing.assert_array_equal(rs.max, np.max(x, axis=1))
        np.testing.assert_array_equal(rs.count, [3, 3, 3])


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_raise_policy_clean_data(layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, "float32", channel_axis=axis)
    rs = _stats(x, axis, backend, "raise")
    assert rs.nan_policy == "raise"
    assert_stats(rs, ref_stats(x, axis), 1e-6)


def test_omit_counts_across_updates(backend, rng):
    batches = []
    for n in (3, 5, 2):
        b = rng.standard_normal((n, 4, 7))
        b[rng.random(b.shape) < 0.2] = np.nan
        batches.append(b)
    rs = nbbn.RunningStats(1, nan_policy="omit", backend=backend)
    for b in batches:
        rs.update(b)
    assert_stats(rs, ref_stats_many(batches, 1, "omit"), 1e-12)


# --------------------------------------------------------------------------- streaming / merge


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_stream_of_batches(layout, backend, rng):
    axis = 1 if layout == "channels_first" else -1
    batches = []
    for n in (1, 7, 2, 30, 5):
        shape = (n, 4, 3, 5) if axis == 1 else (n, 3, 5, 4)
        batches.append(random_array(rng, shape, "float64", channel_axis=axis))
    rs = nbbn.RunningStats(axis, backend=backend)
    for b in batches:
        assert rs.update(b) is rs
    assert_stats(rs, ref_stats_many(batches, axis), 1e-12)


def test_stream_mixed_dtypes_and_layout_views(backend, rng):
    b1 = random_array(rng, (3, 4, 6), "uint8")
    b2 = random_array(rng, (5, 4, 6), "float32")
    b3 = random_array(rng, (2, 4, 9), "float64")[:, :, ::-2]
    b4 = random_array(rng, (6, 4, 2), "int16")
    rs = nbbn.RunningStats(1, backend=backend)
    rs.update(b1).update(b2).update(b3).update(b4)
    assert_stats(rs, ref_stats_many([b1, b2, b3, b4], 1), 1e-6)


def test_same_shape_other_strides_and_dtypes(rng):
    """The CPU backend keeps its kernel choice per shape, strides and dtype (``_plan``):
    one shape seen with other strides (a transposed copy's view, a channels-last
    float16 array) or dtypes in between must still take the right kernel each time."""
    base = random_array(rng, (6, 32, 48), "float32")
    other = np.ascontiguousarray(random_array(rng, (48, 32, 6), "float32").transpose(2, 1, 0))
    strided = other.transpose(2, 1, 0).T  # the (6, 32, 48) shape, Fortran strides
    batches = [base, strided, base.astype(np.float16), base[:, :, ::-1], base.astype(np.uint8),
               base]
    rs = nbbn.RunningStats(1, backend="cpu")
    for b in batches:
        rs.update(b)
    assert_stats(rs, ref_stats_many(batches, 1), 1e-6)


def test_merge_operators(backend, rng):
    a_data = random_array(rng, (5, 3, 4), "float64")
    b_data = random_array(rng, (9, 3, 2), "float64")
    a = nbbn.RunningStats(1, backend=backend).update(a_data)
    b = nbbn.RunningStats(1, backend=backend).update(b_data)
    a_before, b_before = a.to_dict(), b.to_dict()
    ref = ref_stats_many([a_data, b_data], 1)

    m = a.merge(b)
    assert isinstance(m, nbbn.RunningStats) and m is not a and m is not b
    assert_stats(m, ref, 1e-12)
    s = a + b
    assert isinstance(s, nbbn.RunningStats) and s is not a and s is not b
    assert_stats(s, ref, 1e-12)
    _assert_dict_equal(a.to_dict(), a_before)
    _assert_dict_equal(b.to_dict(), b_before)

    a_id = id(a)
    a += b
    assert id(a) == a_id
    assert_stats(a, ref, 1e-12)
    _assert_dict_equal(b.to_dict(), b_before)


def test_merge_with_empty_state(backend, rng):
    x = random_array(rng, (4, 3, 5), "float64")
    a = nbbn.RunningStats(1, backend=backend).update(x)
    empty = nbbn.RunningStats(1, backend=backend)
    ref = ref_stats(x, 1)
    assert_stats(a.merge(empty), ref, 1e-12)
    assert_stats(empty.merge(a), ref, 1e-12)
    e2 = nbbn.RunningStats(1, backend=backend)
    e2 += a
    assert_stats(e2, ref, 1e-12)
    assert e2.num_channels == 3


def test_merge_channel_with_zero_count(backend):
    """omit-policy states with a zero-count channel merge like an empty part."""
    x = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]])
    y = np.array([[4.0, 5.0], [6.0, 8.0]])
    a = _stats(x, 0, backend, "omit")
    b = _stats(y, 0, backend, "omit")
    for m in (a.merge(b), b.merge(a)):
        np.testing.assert_array_equal(m.count, [5, 2])
        np.testing.assert_allclose(m.mean, [3.0, 7.0], rtol=1e-15)
        np.testing.assert_allclose(m.var, [2.0, 1.0], rtol=1e-14)
        np.testing.assert_array_equal(m.min, [1.0, 6.0])
        np.testing.assert_array_equal(m.max, [5.0, 8.0])


def test_update_is_chan_exact_for_merge_order(backend, rng):
    """update(a); update(b) equals channel_stats(a) + channel_stats(b)."""
    a = random_array(rng, (6, 5, 7), "float32")
    b = random_array(rng, (2, 5, 3), "float32")
    serial = nbbn.RunningStats(1, backend=backend).update(a).update(b)
    merged = nbbn.channel_stats(a, backend=backend) + nbbn.channel_stats(b, backend=backend)
    ref = ref_stats_many([a, b], 1)
    assert_stats(serial, ref, 1e-12)
    assert_stats(merged, ref, 1e-12)


# --------------------------------------------------------------------------- accessors


def test_variance_ddof_and_std(backend, rng):
    x = random_array(rng, (7, 4, 3), "float64")
    rs = _stats(x, 1, backend)
    ref = ref_stats(x, 1)
    assert_close(rs.variance(), ref.var, rtol=1e-12, name="variance()")
    assert_close(rs.variance(ddof=0), ref.var, rtol=1e-12, name="variance(0)")
    assert_close(rs.variance(ddof=1), ref.variance(1), rtol=1e-12, name="variance(1)")
    rows = np.moveaxis(x, 1, 0).reshape(4, -1)
    np.testing.assert_allclose(rs.variance(ddof=1), np.var(rows, axis=1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(rs.std, np.std(rows, axis=1), rtol=1e-12)
    assert rs.variance(ddof=1).dtype == np.float64


def test_attributes(backend):
    rs = nbbn.RunningStats(-1, nan_policy="omit", backend=backend)
    assert rs.channel_axis == -1
    assert rs.nan_policy == "omit"
    assert rs.num_channels is None
    rs.update(np.zeros((3, 7), np.float32))
    assert rs.num_channels == 7
    assert rs.count.shape == (7,)
    rs2 = nbbn.RunningStats(backend=backend)
    assert rs2.channel_axis == 1 and rs2.nan_policy == "propagate"


def test_reset(backend, rng):
    x = random_array(rng, (4, 3, 5), "float64")
    y = random_array(rng, (2, 3, 2), "float64")
    rs = nbbn.RunningStats(1, backend=backend).update(x)
    rs.reset()
    rs.update(y)
    assert_stats(rs, ref_stats(y, 1), 1e-12)
    # after reset, a different channel count is accepted as a fresh start
    rs.reset()
    z = random_array(rng, (2, 5, 2), "float64")
    rs.update(z)
    assert_stats(rs, ref_stats(z, 1), 1e-12)
    # what came with the data goes with it: the files a fit skipped, the histogram
    from nbbn._histogram import Histogram

    rs.reset()  # (a histogram is set before the data it counts)
    rs.histogram = Histogram.empty(5, np.uint8)
    rs.update(np.zeros((2, 5, 2), np.uint8))
    rs.skipped = ["bad.npy: unreadable"]
    rs.reset()
    assert rs.skipped == [] and rs.histogram is None and rs.num_channels is None


def test_reset_forgets_the_names_a_batch_gave():
    """reset() kept a DataFrame's column names: the next table of other columns was
    refused as not the columns "the statistics were fitted on", though none were;
    names given by the caller stay."""
    pd = pytest.importorskip("pandas")
    rs = nbbn.RunningStats(-1)
    rs.update(pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}))
    rs.reset()
    assert rs.channel_names is None
    rs.update(pd.DataFrame({"x": [1.0], "y": [2.0]}))
    assert rs.channel_names == ("x", "y")
    again = pickle.loads(pickle.dumps(rs))  # (learned names stay learned)
    again.reset()
    assert again.channel_names is None
    given = nbbn.RunningStats(-1, channel_names=["x", "y"])
    given.update(pd.DataFrame({"x": [1.0], "y": [2.0]}))
    for kept in (given, pickle.loads(pickle.dumps(given))):
        kept.reset()
        assert kept.channel_names == ("x", "y")


def test_reset_keeps_given_names_through_merges_and_files(tmp_path):
    """Names given to the constructor were lost by reset() on the result of a merge
    (``+``, ``sum``, ``+=`` into empty statistics) and on statistics read back by
    from_dict or load, whose names were their own; names a batch's columns gave stay
    forgotten."""
    pd = pytest.importorskip("pandas")
    named = nbbn.RunningStats(-1, channel_names=["r", "g"]).update(np.ones((3, 2)))
    plain = nbbn.RunningStats(-1).update(np.zeros((3, 2)))
    named.save(tmp_path / "s.npz")
    into = nbbn.RunningStats(-1)
    into += named
    kept = [named + plain, plain + named, sum([plain, named]), into,
            nbbn.RunningStats.from_dict(named.to_dict()),
            nbbn.RunningStats.load(tmp_path / "s.npz")]
    for i, rs in enumerate(kept):
        rs.reset()
        assert rs.channel_names == ("r", "g"), i
    learned = nbbn.RunningStats(-1).update(pd.DataFrame({"a": [1.0], "b": [2.0]}))
    for rs in (learned + plain, plain + learned):
        rs.reset()
        assert rs.channel_names is None


@pytest.mark.parametrize("layout", ["one_d", "two_d", "two_d_axis0"])
def test_small_ndim(layout, backend, rng):
    x, axis = make_layout(layout, rng, "float64", 4)
    rs = _stats(x, axis, backend)
    assert_stats(rs, ref_stats(x, axis), 1e-12)
    if layout == "one_d":
        np.testing.assert_array_equal(rs.count, np.ones(4, np.int64))
        np.testing.assert_array_equal(rs.var, np.zeros(4))
        np.testing.assert_array_equal(rs.mean, x)


@pytest.mark.parametrize(
    "shape,axis", [((0, 3, 4), 1), ((2, 3, 0), 1), ((0, 3), -1), ((5, 0, 3), -1)]
)
def test_empty_batch_is_noop(shape, axis, backend, rng):
    c = shape[axis]
    first_shape = (2, c, 4) if axis == 1 else (2, 4, c) if len(shape) == 3 else (2, c)
    first = random_array(rng, first_shape, "float32", axis)
    rs = nbbn.RunningStats(axis, backend=backend).update(first)
    before = rs.to_dict()
    assert rs.update(np.empty(shape, np.float32)) is rs
    _assert_dict_equal(rs.to_dict(), before)


@pytest.mark.parametrize("kind", ["dense", "zero_weights", "sparse"])
def test_a_first_empty_batch_fixes_the_channel_count(kind, backend, rng):
    """An empty first batch counts nothing but fixes the channel count, so that a later
    batch of another count is refused as after any other batch; the statistics then
    merge like an empty part."""
    x = rng.standard_normal((6, 3))
    rs = nbbn.RunningStats(-1, backend="cpu" if kind != "dense" else backend)
    if kind == "dense":
        rs.update(np.empty((0, 3), np.float32))
    elif kind == "zero_weights":
        rs.update(x[:2], sample_weight=np.zeros(2))
    else:
        sparse = pytest.importorskip("scipy.sparse")
        rs.update(sparse.csr_array((0, 3)))
    assert rs.num_channels == 3
    np.testing.assert_array_equal(rs.count, [0, 0, 0])
    assert np.isnan(rs.mean).all()
    before = rs.to_dict()
    with pytest.raises(ValueError, match="has 4 channels .* have 3 channels"):
        rs.update(np.ones((2, 4)))
    _assert_dict_equal(rs.to_dict(), before)
    with pytest.raises(ValueError, match="channels"):
        rs.merge(nbbn.channel_stats(np.ones((2, 4)), channel_axis=-1))
    rs.update(x)
    assert_stats(rs, ref_stats(x, -1), 1e-12)
    # a batch with no channels fixes nothing
    empty = nbbn.RunningStats(-1).update(np.empty((5, 0)))
    assert empty.num_channels is None
    # statistics of empty batches only are still empty for to_normalizer
    with pytest.raises(ValueError, match="needs statistics"):
        nbbn.RunningStats(-1).update(np.empty((0, 3))).to_normalizer()


# --------------------------------------------------------------------------- to_dict / save


def _assert_dict_equal(d1, d2):
    assert set(d1) == set(d2), (sorted(d1), sorted(d2))
    for k in d1:
        a, b = d1[k], d2[k]
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            a, b = np.asarray(a), np.asarray(b)
            assert a.dtype == b.dtype, (k, a.dtype, b.dtype)
            np.testing.assert_array_equal(a, b, err_msg=k)
        else:
            assert a == b, (k, a, b)


def _assert_same_state(r1, r2):
    for name in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(r1, name), getattr(r2, name), err_msg=name)
    assert r1.channel_axis == r2.channel_axis
    assert r1.nan_policy == r2.nan_policy
    assert r1.num_channels == r2.num_channels


def test_to_dict_from_dict(backend, rng):
    x = random_array(rng, (4, 3, 5), "float64")
    x[0, 1, 0] = np.nan
    rs = _stats(x, 1, backend, "omit")
    d = rs.to_dict()
    for k, v in d.items():
        assert isinstance(v, (np.ndarray, int, float, str, type(None), np.integer)), (k, type(v))
    rs2 = nbbn.RunningStats.from_dict(d, backend=backend)
    _assert_same_state(rs, rs2)
    _assert_dict_equal(rs2.to_dict(), d)
    # the restored state keeps streaming exactly like the original
    y = random_array(rng, (2, 3, 5), "float64")
    rs.update(y)
    rs2.update(y)
    _assert_same_state(rs, rs2)


def test_save_load(backend, rng, tmp_path):
    x = random_array(rng, (4, 5, 6), "float32", channel_axis=-1)
    rs = _stats(x, -1, backend, "omit")
    rs.skipped = ["b.npy: unreadable"]
    path = tmp_path / "stats.npz"
    rs.save(path)
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"]  # atomic write leaves no temp file
    rs2 = nbbn.RunningStats.load(path)
    _assert_same_state(rs, rs2)
    _assert_dict_equal(rs2.to_dict(), rs.to_dict())
    assert rs2.skipped == ["b.npy: unreadable"]
    # str paths work and overwrite
    rs.update(x)
    rs.save(str(path))
    assert sorted(os.listdir(tmp_path)) == ["stats.npz"]
    _assert_same_state(rs, nbbn.RunningStats.load(str(path)))


def test_save_load_empty_state(tmp_path):
    rs = nbbn.RunningStats(2, nan_policy="raise")
    rs.save(tmp_path / "e.npz")
    rs2 = nbbn.RunningStats.load(tmp_path / "e.npz")
    assert rs2.num_channels is None
    assert rs2.channel_axis == 2 and rs2.nan_policy == "raise"


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_mean_small_std(dtype, layout, backend, rng):
    """|mean| = 1e4 * std: var within 1e-6 (float32) / 1e-12 (float64) of the two-pass value."""
    c = 3
    shape, axis = _mb(layout, c, backend)
    base = rng.standard_normal(shape)
    xm = np.moveaxis(base, axis, 0)
    for i, (mu, sd) in enumerate([(1e4, 1.0), (-3e7, 3e3), (2.5e-3, 2.5e-7)]):
        xm[i] = xm[i] * sd + mu
    x = base.astype(dtype)
    ref = ref_stats(x, axis)
    assert np.all(np.abs(ref.mean) > 5e3 * ref.std)
    rs = _stats(x, axis, backend)
    rtol = stats_rtol(dtype)
    assert_stats(rs, ref, rtol, mean_atol=rtol * ref.std)
    # and streamed in uneven batches
    rs2 = nbbn.RunningStats(axis, backend=backend)
    n = x.shape[0]
    cuts = sorted({0, 1, n // 3, n // 2 + 1, n})
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        rs2.update(x[a:b])
    assert_stats(rs2, ref, rtol, mean_atol=rtol * ref.std)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint8", "int64"])
def test_constant_channels_var_exactly_zero(dtype, layout, backend):
    """Constant channels give var == 0 exactly, including values whose sums round."""
    c = 4
    shape, axis = _mb(layout, c, backend)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        values = [0.1, 1e4 + 0.1, -3.7, 1.0 / 3.0]
    else:
        ii = np.iinfo(dt)
        values = [ii.max, ii.min, ii.max // 3, 7]
    x = np.empty(shape, dtype=dt)
    xm = np.moveaxis(x, axis, 0)
    for i, v in enumerate(values):
        xm[i] = np.asarray(v).astype(dt)
    expect = np.array([np.asarray(v).astype(dt) for v in values], dtype=np.float64)
    rs = _stats(x, axis, backend)
    np.testing.assert_array_equal(rs.var, np.zeros(c))
    np.testing.assert_array_equal(rs.std, np.zeros(c))
    np.testing.assert_array_equal(rs.min, expect)
    np.testing.assert_array_equal(rs.max, expect)
    assert_close(rs.mean, expect, rtol=2 * np.finfo(np.float64).eps, name="mean")
    # streaming uneven batches of the same constants (merges of different-size parts)
    rs2 = nbbn.RunningStats(axis, backend=backend)
    n = x.shape[0]
    for a, b in [(0, 1), (1, 3), (3, n)]:
        rs2.update(x[a:b])
    np.testing.assert_array_equal(rs2.var, np.zeros(c))
    np.testing.assert_array_equal(rs2.variance(ddof=1), np.zeros(c))


def _state_keys(d, rs):
    """Find the count, mean and M2 entries of ``to_dict()`` by value (names are not contract)."""

    def find(pred, what):
        keys = [k for k, v in d.items()
                if isinstance(v, np.ndarray) and v.shape == rs.count.shape and pred(v)]
        assert len(keys) == 1, f"cannot identify the {what} entry of to_dict(): {sorted(d)}"
        return keys[0]

    m2 = rs.var * rs.count
    kc = find(lambda v: v.dtype.kind in "iu" and np.array_equal(v, rs.count), "count")
    km = find(lambda v: v.dtype.kind == "f" and np.array_equal(v, rs.mean), "mean")
    km2 = find(lambda v: v.dtype.kind == "f" and np.allclose(v, m2, rtol=1e-12, atol=0), "M2")
    kmin = find(lambda v: v.dtype.kind == "f" and np.array_equal(v, rs.min), "min")
    kmax = find(lambda v: v.dtype.kind == "f" and np.array_equal(v, rs.max), "max")
    return kc, km, km2, kmin, kmax


def _synthetic_state(template, count, mean, var, lo, hi):
    d = template.to_dict()
    kc, km, km2, kmin, kmax = _state_keys(d, template)
    d = dict(d)
    d[kc] = np.asarray(count, dtype=np.int64)
    d[km] = np.asarray(mean, dtype=np.float64)
    d[km2] = np.asarray(var, dtype=np.float64) * np.asarray(count, dtype=np.float64)
    d[kmin] = np.asarray(lo, dtype=np.float64)
    d[kmax] = np.asarray(hi, dtype=np.float64)
    return nbbn.RunningStats.from_dict(d)


def _exact_merge(na, ma, m2a, nb, mb, m2b):
    """Chan's merge in exact rational arithmetic, rounded once to float64."""
    na, nb = int(na), int(nb)
    ma, m2a, mb, m2b = (Fraction(float(v)) for v in (ma, m2a, mb, m2b))
    n = na + nb
    mean = (na * ma + nb * mb) / n
    m2 = m2a + m2b + (mb - ma) ** 2 * Fraction(na * nb, n)
    return n, float(mean), float(m2 / n)


def test_large_counts(backend, rng):
    """Streams of 10^9+ values per channel: int64 counts, merged values against the formula."""
    template = _stats(np.array([[1.0, 2.0, 3.0], [5.0, 7.0, 11.0], [-1.0, 0.5, 4.0]]), 0, backend)
    na = np.array([3_000_000_000, 5_000_000_007, 2**40])
    ma, va = np.array([1.5, -2.25, 1e3]), np.array([4.0, 0.25, 9.0])
    nb = np.array([2_000_000_001, 17, 2**41 + 3])
    mb, vb = np.array([1.5 + 1e-6, 7.0, -1e3]), np.array([4.5, 0.5, 16.0])
    a = _synthetic_state(template, na, ma, va, ma - 10, ma + 10)
    b = _synthetic_state(template, nb, mb, vb, mb - 20, mb + 5)
    np.testing.assert_array_equal(a.count, na)
    for m in (a.merge(b), b + a):
        assert m.count.dtype == np.int64
        np.testing.assert_array_equal(m.count, na + nb)
        for c in range(3):
            n, mean, var = _exact_merge(na[c], ma[c], va[c] * na[c], nb[c], mb[c], vb[c] * nb[c])
            assert int(m.count[c]) == n
            np.testing.assert_allclose(m.mean[c], mean, rtol=1e-12)
            np.testing.assert_allclose(m.var[c], var, rtol=1e-12)
        np.testing.assert_array_equal(m.min, np.minimum(ma - 10, mb - 20))
        np.testing.assert_array_equal(m.max, np.maximum(ma + 10, mb + 5))
    # a small batch on top of a huge state
    y = random_array(rng, (3, 4), "float64", channel_axis=0)
    big = _synthetic_state(template, na, ma, va, ma - 10, ma + 10)
    big.update(y)
    ry = ref_stats(y, 0)
    np.testing.assert_array_equal(big.count, na + 4)
    for c in range(3):
        _, mean, var = _exact_merge(na[c], ma[c], va[c] * na[c], 4, ry.mean[c], ry.m2[c])
        np.testing.assert_allclose(big.mean[c], mean, rtol=1e-12)
        np.testing.assert_allclose(big.var[c], var, rtol=1e-12)


# --------------------------------------------------------------------------- pickling


def _same_stats(a, b):
    for name in ("count", "mean", "var", "min", "max", "nan_count"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_deepcopy_and_pickle(nan_policy, backend, rng):
    """A RunningStats (with its lock) deep-copies and pickles; the copy is independent
    of the original, also when the state lives on the device."""
    import copy
    import pickle

    x = random_array(rng, (4, 3, 5), "float32")
    x[0, 1, 0] = np.nan
    rs = nbbn.channel_stats(x, 1, nan_policy=nan_policy, backend=backend)
    for clone in (copy.deepcopy(rs), pickle.loads(pickle.dumps(rs))):
        _same_stats(clone, rs)
        assert (clone.channel_axis, clone.nan_policy, clone.backend) == \
            (1, nan_policy, backend)
        more = random_array(rng, (2, 3, 5), "float32")
        clone.update(more)
        clone += rs
        assert rs.count.tolist() == [20, 20 if nan_policy == "propagate" else 19, 20]
        assert clone.count.tolist() == [50, 50 if nan_policy == "propagate" else 48, 50]
    assert pickle.loads(pickle.dumps(nbbn.RunningStats())).num_channels is None


def test_unpickled_in_another_process(tmp_path, rng):
    """What a worker process does: unpickle statistics, update and merge them, and send
    them back pickled; the result equals the same work done here."""
    import pickle
    import subprocess
    import sys

    a = random_array(rng, (5, 3, 7), "float64")
    b = random_array(rng, (4, 3, 7), "float64")
    np.save(tmp_path / "b.npy", b)
    rs = nbbn.channel_stats(a)
    code = (
        "import pickle, sys, numpy as np, nbbn\n"
        "rs = pickle.loads(sys.stdin.buffer.read())\n"
        f"b = np.load({str(tmp_path / 'b.npy')!r})\n"
        "rs.update(b)\n"
        "both = rs + nbbn.channel_stats(b)\n"
        "sys.stdout.buffer.write(pickle.dumps((rs, both)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(rs),
                          capture_output=True, check=True, timeout=300)
    got, both = pickle.loads(done.stdout)
    _same_stats(got, nbbn.channel_stats(a).update(b))
    assert_stats(both, ref_stats(np.concatenate([a, b, b]), 1), 1e-12)


@pytest.mark.parametrize("dtype", [">f8", ">f4", ">i2", "<f8"])
def test_one_d_input_of_any_byte_order(dtype):
    x = np.arange(5.0).astype(dtype)
    rs = nbbn.RunningStats(0).update(x).update(x[::-1])
    np.testing.assert_array_equal(rs.count, np.full(5, 2))
    np.testing.assert_array_equal(rs.mean, np.full(5, 2.0))  # (i + 4 - i) / 2
    y = nbbn.Normalizer(np.zeros(5), np.ones(5), eps=0.0, channel_axis=0)(x)
    np.testing.assert_array_equal(y, x.astype(y.dtype))


def test_results_are_snapshots_and_merges_share_nothing():
    """A result read before an update does not change with it (reads copy the state
    under the lock: an update merges in place), and a merge with an empty side, or a
    copy, has a histogram of its own."""
    import copy

    from nbbn._histogram import Histogram

    x = np.arange(30, dtype=np.uint8).reshape(10, 3)
    a = nbbn.RunningStats(-1)
    a.histogram = Histogram.empty(3, np.uint8)
    a.update(x)
    count, mean = a.count, a.mean
    a.update(x)
    assert count.tolist() == [10, 10, 10] and a.count.tolist() == [20, 20, 20]
    assert mean.tolist() == a.mean.tolist()
    for other in (a + nbbn.RunningStats(-1), copy.copy(a)):
        other.update(x)
        assert a.histogram.counts.sum(1).tolist() == [20, 20, 20]
        assert other.histogram.counts.sum(1).tolist() == [30, 30, 30]


def test_merging_another_nan_policy():
    """Statistics of another nan_policy merge when they counted no NaN (the policies
    agree there); with NaNs (or, into "raise", infinities) they are refused."""
    prop = nbbn.RunningStats(1).update(np.array([[1.0], [2.0]]))
    clean = nbbn.RunningStats(1, nan_policy="omit").update(np.array([[4.0], [5.0]]))
    assert (prop + clean).mean[0] == 3.0
    # the merged statistics have the left side's settings, and treat NaNs by its policy
    for merged, policy in ((prop + clean, "propagate"), (clean.merge(prop), "omit")):
        assert merged.nan_policy == policy
        merged.update(np.array([[np.nan], [6.0]]))
        assert np.isnan(merged.mean[0]) == (policy == "propagate")
    nan = nbbn.RunningStats(1, nan_policy="omit").update(np.array([[np.nan], [5.0]]))
    with pytest.raises(ValueError, match="nan_policy='omit' that counted NaN"):
        prop + nan
    raise_ = nbbn.RunningStats(1, nan_policy="raise").update(np.ones((2, 1)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        raise_ += nbbn.RunningStats(1).update(np.array([[np.inf], [1.0]]))
    assert raise_.count[0] == 2


def test_an_empty_state_with_names_round_trips(tmp_path):
    e = nbbn.RunningStats(1, channel_names=["a", "b"])
    assert nbbn.RunningStats.from_dict(e.to_dict()).channel_names == ("a", "b")
    e.save(tmp_path / "e.npz")
    assert nbbn.RunningStats.load(tmp_path / "e.npz").channel_names == ("a", "b")


def test_from_dict_refuses_what_no_state_holds():
    d = nbbn.RunningStats(-1).update(np.arange(6.0).reshape(3, 2)).to_dict()
    for key, value, match in [("nan_count", np.array([-1, 0]), "nan_count must hold"),
                              ("m2", np.array([-1.0, 1.0]), "m2 must hold floats >= 0"),
                              ("channel_axis", 1.5, "channel_axis must be an int"),
                              ("count", np.array([1.5, 3.0]), "count must hold"),
                              ("mean_lo", np.zeros(3), r"mean_lo must hold floats of shape \(2")]:
        with pytest.raises(ValueError, match=match):
            nbbn.RunningStats.from_dict({**d, key: value})
    assert nbbn.RunningStats.from_dict(d).count.tolist() == [3, 3]


def test_from_dict_refuses_a_state_its_updates_would_spoil():
    """A NaN ``mean_lo`` under a finite mean (every later update of the channel NaN),
    and a weight of 0 where values were counted (or the reverse): both refused."""
    x = np.arange(6.0).reshape(3, 2)
    d = nbbn.RunningStats(1).update(x).to_dict()
    with pytest.raises(ValueError, match="mean_lo"):
        nbbn.RunningStats.from_dict({**d, "mean_lo": np.array([np.nan, 0.0])})
    w = nbbn.RunningStats(1).update(x, sample_weight=[1.0, 2.0, 3.0]).to_dict()
    for weight in ([0.0, 6.0], [6.0, 0.0]):
        with pytest.raises(ValueError, match="weight"):
            nbbn.RunningStats.from_dict({**w, "weight": np.array(weight)})
    for weight in ([np.inf, 6.0], [6.0, np.nan]):  # (a weight sum is finite: every weight is)
        with pytest.raises(ValueError, match="weight must hold finite non-negative floats"):
            nbbn.RunningStats.from_dict({**w, "weight": np.array(weight)})
    assert nbbn.RunningStats.from_dict(w).count.tolist() == [6.0, 6.0]


def test_reading_the_results_leaves_the_state_as_it_was():
    """``mean``, ``min`` and ``max`` mark a channel without values with NaN in a copy,
    never in the state: under "omit", a read between updates changed nothing."""
    rs = nbbn.RunningStats(1, nan_policy="omit").update(np.array([[np.nan, 1.0]]))
    before = rs.to_dict()
    assert np.isnan(rs.mean[0]) and np.isnan(rs.min[0]) and np.isnan(rs.max[0])
    after = rs.to_dict()
    for key in ("mean", "min", "max"):
        np.testing.assert_array_equal(after[key], before[key])
    rs.update(np.array([[2.0, 3.0]]))
    assert rs.min.tolist() == [2.0, 1.0] and rs.max.tolist() == [2.0, 3.0]
    assert rs.mean.tolist() == [2.0, 2.0]


def test_merged_into_empty_statistics_share_nothing():
    """``RunningStats() + b`` is a new state: updating it leaves ``b`` as it was."""
    b = nbbn.RunningStats(1).update(np.ones((4, 2)))
    for c in (nbbn.RunningStats(1) + b, b + nbbn.RunningStats(1)):
        c.update(np.zeros((4, 2)))
        assert b.count.tolist() == [4, 4] and b.mean.tolist() == [1.0, 1.0]
        assert c.count.tolist() == [8, 8] and c.mean.tolist() == [0.5, 0.5]


def test_sum_of_statistics_merges_them(rng):
    """``sum(parts)`` starts from 0: it raised TypeError (no ``0 + stats``)."""
    xs = [rng.normal(size=(n, 3)) for n in (4, 7, 2)]
    parts = [nbbn.RunningStats(-1).update(x) for x in xs]
    total = sum(parts)
    want = nbbn.RunningStats(-1).update(np.concatenate(xs))
    assert total is not parts[0] and total.count.tolist() == [13, 13, 13]
    np.testing.assert_allclose(total.var, want.var, rtol=1e-14)
    for start in (1, False, 0.0):  # (only the int 0 that sum() starts from)
        with pytest.raises(TypeError):
            start + parts[0]


def test_wrong_types_are_type_errors_and_wrong_values_value_errors():
    for make in (lambda: nbbn.RunningStats(nan_policy=None), lambda: nbbn.RunningStats(backend=1),
                 lambda: nbbn.BatchNorm("3"), lambda: nbbn.BatchNorm(3.0),
                 lambda: nbbn.RunningStats().variance("1")):
        with pytest.raises(TypeError):
            make()
    for make in (lambda: nbbn.RunningStats(nan_policy="skip"),
                 lambda: nbbn.RunningStats(backend="gpu"),
                 lambda: nbbn.BatchNorm(0), lambda: nbbn.RunningStats().variance(-1),
                 lambda: nbbn.RunningStats().variance(float("nan"))):
        with pytest.raises(ValueError):
            make()
