"""Normalizer, normalize, inverse and RunningStats.to_normalizer against the float64 reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import SIMULATOR, skip_large_for_simulator
from reference import (
    ALL_DTYPES,
    LAYOUTS,
    assert_close,
    assert_output,
    make_layout,
    random_array,
    ref_inverse,
    ref_normalize,
    ref_out_dtype,
    ref_stats,
)

import nbbn

MAIN_LAYOUTS = {"channels_first": ((4, 3, 5, 6), 1), "channels_last": ((4, 5, 6, 3), -1)}


def _params(rng, x, axis, affine=True):
    """Per-channel mean/var near the data's own statistics, plus weight and bias."""
    st = ref_stats(x, axis)
    c = st.count.shape[0]
    with np.errstate(invalid="ignore"):
        spread = np.where(st.std > 0, st.std, 1.0)
    mean = st.mean + 0.1 * spread * rng.standard_normal(c)
    var = st.var * rng.uniform(0.8, 1.25, c) + 0.01
    if not affine:
        return mean, var, None, None
    weight = rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c)
    bias = rng.standard_normal(c)
    return mean, var, weight, bias


# --------------------------------------------------------------------------- dtypes x layouts


@pytest.mark.parametrize("layout", list(MAIN_LAYOUTS))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_normalizer_dtype_layout(dtype, layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    mean, var, weight, bias = _params(rng, x, axis)
    norm = nbbn.Normalizer(mean, var, eps=1e-3, weight=weight, bias=bias, channel_axis=axis,
                           backend=backend)
    y = norm(x)
    assert y.dtype == ref_out_dtype(dtype)
    assert y.shape == x.shape
    assert_output(y, ref_normalize(x, mean, var, weight, bias, 1e-3, axis))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("layout", list(MAIN_LAYOUTS))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_normalize_function(dtype, layout, affine, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    mean, var, weight, bias = _params(rng, x, axis, affine)
    y = nbbn.normalize(x, mean, var, weight, bias, eps=1e-5, channel_axis=axis, backend=backend)
    assert y.dtype == ref_out_dtype(dtype)
    assert_output(y, ref_normalize(x, mean, var, weight, bias, 1e-5, axis))


def test_default_eps_and_identity_affine(backend, rng):
    x = random_array(rng, (3, 4, 5), "float64")
    mean, var, _, _ = _params(rng, x, 1)
    y = nbbn.Normalizer(mean, var, backend=backend)(x)
    assert_output(y, ref_normalize(x, mean, var, eps=1e-5))
    # explicit ones/zeros give the same numbers as None
    y2 = nbbn.Normalizer(mean, var, weight=np.ones(4), bias=np.zeros(4), backend=backend)(x)
    assert_output(y2, ref_normalize(x, mean, var, eps=1e-5))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_normalizer_layouts_float32(layout, backend, rng):
    x, axis = make_layout(layout, rng, "float32", 5)
    mean, var, weight, bias = _params(rng, x, axis)
    y = nbbn.normalize(x, mean, var, weight, bias, channel_axis=axis, backend=backend)
    assert y.shape == x.shape and y.dtype == np.float32
    assert_output(y, ref_normalize(x, mean, var, weight, bias, 1e-5, axis))


@pytest.mark.parametrize("c", [1, 3, 300])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_normalizer_multiblock(dtype, layout, c, backend, rng):
    if layout == "channels_first":
        shape, axis = ((1 if c >= 64 else 2), c, 96, 90), 1
    else:
        shape, axis = ((200, 300), -1) if c == 300 else ((17000 // c // 10 + 1, 2, 5, c), -1)
    skip_large_for_simulator(backend, math.prod(shape))
    x = random_array(rng, shape, dtype, channel_axis=axis)
    mean, var, weight, bias = _params(rng, x, axis)
    y = nbbn.Normalizer(mean, var, weight=weight, bias=bias, channel_axis=axis, backend=backend)(x)
    assert_output(y, ref_normalize(x, mean, var, weight, bias, 1e-5, axis))


def test_channels_last_tile_rule():
    from nbbn.backends import cpu_normalize as kn

    for c in range(1, 1200):
        k = kn.tile_rows(c)
        tile = k * c
        assert tile >= kn.TILE_MIN, c
        if tile % kn.TILE_ALIGN:  # whole vectors only cost too many rows
            step = kn.TILE_ALIGN // math.gcd(c, kn.TILE_ALIGN)
            assert step * c > kn.TILE_MAX and k == -(-kn.TILE_MIN // c), c
        else:
            assert tile <= max(kn.TILE_MAX, c), c
            assert (k - kn.TILE_ALIGN // math.gcd(c, kn.TILE_ALIGN)) * c < kn.TILE_MIN, c


@pytest.mark.parametrize("c", [1, 3, 5, 33, 100, 1000])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32", "float64"])
def test_channels_last_tiles_match_channels_first(dtype, c, rng):
    """Whole tiles, then a part tile of 7 rows: the same bits as the channels-first
    kernel on the transposed data, and the float64 reference's rounding."""
    from nbbn.backends import cpu_normalize as kn

    x = (rng.random((3 * kn.tile_rows(c) + 7, c)) * 200).astype(dtype)
    mean, var, weight, bias = _params(rng, x, -1)
    y = nbbn.Normalizer(mean, var, weight=weight, bias=bias, channel_axis=-1)(x)
    y_cf = nbbn.Normalizer(mean, var, weight=weight, bias=bias,
                           channel_axis=0)(np.ascontiguousarray(x.T))
    np.testing.assert_array_equal(y, y_cf.T)
    assert_output(y, ref_normalize(x, mean, var, weight, bias, channel_axis=-1))


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2", ">i2"])
def test_normalizer_big_endian(dtype, backend, rng):
    native = random_array(rng, (3, 4, 5), np.dtype(dtype).newbyteorder("="))
    x = native.astype(dtype)
    mean, var, weight, bias = _params(rng, native, 1)
    y = nbbn.normalize(x, mean, var, weight, bias, backend=backend)
    assert y.dtype.kind == "f" and y.dtype.itemsize == ref_out_dtype(native.dtype).itemsize
    assert_output(y, ref_normalize(native, mean, var, weight, bias))


def test_normalizer_read_only_and_memmap(backend, rng, tmp_path):
    x = random_array(rng, (4, 3, 5, 6), "float32")
    x.setflags(write=False)
    mean, var, weight, bias = _params(rng, x, 1)
    norm = nbbn.Normalizer(mean, var, weight=weight, bias=bias, backend=backend)
    ref = ref_normalize(x, mean, var, weight, bias)
    assert_output(norm(x), ref)
    path = tmp_path / "x.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    mm[...] = x
    mm.flush()
    del mm
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=x.shape)
    assert_output(norm(ro), ref)
    out = np.memmap(tmp_path / "y.dat", dtype=np.float32, mode="w+", shape=x.shape)
    norm(ro, out=out)
    assert_output(np.asarray(out), ref)
    del ro, out


# --------------------------------------------------------------------------- out=


@pytest.mark.parametrize("layout", list(MAIN_LAYOUTS))
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_out_and_in_place(dtype, layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    mean, var, weight, bias = _params(rng, x, axis)
    norm = nbbn.Normalizer(mean, var, weight=weight, bias=bias, channel_axis=axis, backend=backend)
    ref = ref_normalize(x, mean, var, weight, bias, 1e-5, axis)
    out = np.full_like(x, np.nan)
    y = norm(x, out=out)
    assert y is out
    assert_output(out, ref)
    x_in = x.copy()
    y2 = norm(x_in, out=x_in)
    assert y2 is x_in
    assert_output(x_in, ref)


def test_out_wider_dtype(backend, rng):
    """out of another floating dtype gets the float64 result rounded once to out's dtype."""
    x = random_array(rng, (4, 3, 5), "uint8")
    mean, var, weight, bias = _params(rng, x, 1)
    norm = nbbn.Normalizer(mean, var, weight=weight, bias=bias, backend=backend)
    ref = ref_normalize(x, mean, var, weight, bias)
    out = np.zeros(x.shape, np.float64)
    assert norm(x, out=out) is out
    assert_output(out, ref)
    xf = random_array(rng, (4, 3, 5), "float32")
    out = np.zeros(x.shape, np.float64)
    norm(xf, out=out)
    assert_output(out, ref_normalize(xf, mean, var, weight, bias))


def test_out_non_contiguous(backend, rng):
    x = random_array(rng, (4, 3, 5, 6), "float32")
    mean, var, weight, bias = _params(rng, x, 1)
    big = np.zeros((4, 3, 10, 6), np.float32)
    out = big[:, :, ::2]
    nbbn.normalize(x, mean, var, weight, bias, out=out, backend=backend)
    assert_output(out, ref_normalize(x, mean, var, weight, bias))
    np.testing.assert_array_equal(big[:, :, 1::2], 0.0)  # untouched


@pytest.mark.parametrize("layout", ["strided", "negative_strides", "nchw_transposed_to_nhwc",
                                    "strided_channels_last"])
def test_in_place_on_view(layout, backend, rng):
    shape_fn, base_axis, view, axis = LAYOUTS[layout]
    base = random_array(rng, shape_fn(3), "float32", channel_axis=base_axis)
    base_before = base.copy()
    x = view(base)
    mean, var, weight, bias = _params(rng, x, axis)
    ref = ref_normalize(x, mean, var, weight, bias, 1e-5, axis)
    mask = np.zeros(base.shape, bool)
    view(mask)[...] = True  # the elements the view covers
    y = nbbn.normalize(x, mean, var, weight, bias, channel_axis=axis, out=x, backend=backend)
    assert y is x
    assert_output(x, ref)
    np.testing.assert_array_equal(base[~mask], base_before[~mask])


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("layout", list(MAIN_LAYOUTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_accuracy_large_mean(dtype, layout, backend, rng):
    """|mean| = 1e4 * std: a folded float32 x * scale + shift is off by ~1e-3 here."""
    shape, axis = ((2, 3, 96, 90), 1) if layout == "channels_first" else ((600, 2, 5, 3), -1)
    if backend == "cuda" and SIMULATOR:  # (9 s each on the simulator at 51,840 values)
        shape = (2, 3, 32, 30) if axis == 1 else (150, 2, 5, 3)
    base = rng.standard_normal(shape)
    xm = np.moveaxis(base, axis, 0)
    for i, (mu, sd) in enumerate([(1e4, 1.0), (-3e7, 3e3), (2.5e-3, 2.5e-7)]):
        xm[i] = xm[i] * sd + mu
    x = base.astype(dtype)
    st = ref_stats(x, axis)
    assert np.all(np.abs(st.mean) > 5e3 * st.std)
    eps = 1e-20  # negligible against every channel's variance
    weight, bias = np.array([1.0, 2.0, -0.5]), np.array([0.0, 0.25, 1.0])
    ref = ref_normalize(x, st.mean, st.var, weight, bias, eps, axis)
    y = nbbn.normalize(x, st.mean, st.var, weight, bias, eps=eps, channel_axis=axis,
                       backend=backend)
    assert_output(y, ref)
    # via the statistics nbbn computes itself
    rs = nbbn.channel_stats(x, axis, backend=backend)
    y2 = rs.to_normalizer(eps=eps, weight=weight, bias=bias)(x)
    ref2 = ref_normalize(x, rs.mean, rs.var, weight, bias, eps, axis)
    assert_output(y2, ref2)


def test_nan_and_inf_inputs(backend):
    x = np.array([[1.0, np.nan, np.inf, -np.inf]], np.float32).T.reshape(4, 1, 1)
    y = nbbn.normalize(x, np.array([0.5]), np.array([4.0]), eps=1e-5, backend=backend)
    ref = ref_normalize(x, [0.5], [4.0], eps=1e-5)
    assert_close(y, ref, rtol=1e-6)


def test_zero_variance_uses_eps(backend):
    x = np.full((2, 2, 3), 3.0)
    y = nbbn.normalize(x, np.array([2.0, 3.0]), np.array([0.0, 0.0]), eps=0.25, backend=backend)
    ref = ref_normalize(x, [2.0, 3.0], [0.0, 0.0], eps=0.25)
    assert_output(y, ref)
    assert np.all(np.isfinite(y))


def test_empty_input(backend):
    x = np.empty((0, 3, 4), np.float32)
    y = nbbn.normalize(x, np.zeros(3), np.ones(3), backend=backend)
    assert y.shape == (0, 3, 4) and y.dtype == np.float32
    # no channels, channels-last: nothing to map (the kernels share rows out by channel)
    z = nbbn.normalize(np.empty((3, 0)), np.zeros(0), np.ones(0), channel_axis=-1,
                       backend=backend)
    assert z.shape == (3, 0)


# --------------------------------------------------------------------------- inverse


@pytest.mark.parametrize("layout", list(MAIN_LAYOUTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inverse(dtype, layout, backend, rng):
    shape, axis = MAIN_LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    mean, var, weight, bias = _params(rng, x, axis)
    norm = nbbn.Normalizer(mean, var, weight=weight, bias=bias, channel_axis=axis, backend=backend)
    y = norm(x)
    xi = norm.inverse(y)
    assert xi.dtype == y.dtype and xi.shape == x.shape
    assert_output(xi, ref_inverse(y, mean, var, weight, bias, 1e-5, axis))
    if dtype == "float64":
        np.testing.assert_allclose(xi, x, rtol=1e-12, atol=1e-12 * np.abs(x).max())
    out = np.empty_like(y)
    assert norm.inverse(y, out=out) is out
    np.testing.assert_array_equal(out, xi)
    assert norm.inverse(y, out=y) is y  # in place
    np.testing.assert_array_equal(y, xi)


def test_inverse_float64_roundtrip_large_mean(backend, rng):
    x = rng.standard_normal((5, 2, 50)) + np.array([1e4, -1e4])[None, :, None]
    st = ref_stats(x, 1)
    norm = nbbn.Normalizer(st.mean, st.var, eps=1e-12, backend=backend)
    xi = norm.inverse(norm(x))
    np.testing.assert_allclose(xi, x, rtol=1e-13)


# --------------------------------------------------------------------------- to_normalizer


@pytest.mark.parametrize("axis", [1, -1])
def test_to_normalizer(axis, backend, rng):
    shape = (6, 4, 5) if axis == 1 else (6, 5, 4)
    x = random_array(rng, shape, "float32", channel_axis=axis)
    rs = nbbn.RunningStats(axis, backend=backend).update(x)
    norm = rs.to_normalizer()
    assert isinstance(norm, nbbn.Normalizer)
    assert_output(norm(x), ref_normalize(x, rs.mean, rs.var, eps=1e-5, channel_axis=axis))
    w, b = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    norm2 = rs.to_normalizer(eps=0.5, weight=w, bias=b)
    x64 = x.astype(np.float64)
    assert_output(norm2(x64), ref_normalize(x64, rs.mean, rs.var, w, b, 0.5, axis))
    # standardized data: mean 0 and var var/(var+eps) per channel (independent formula)
    z = norm(x64)
    st = ref_stats(z, axis)
    np.testing.assert_allclose(st.mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(st.var, rs.var / (rs.var + 1e-5), rtol=1e-10)


def test_eps_zero_constant_channel_gets_scale_one(backend):
    """eps=0 (scikit-learn's StandardScaler has none) with a zero-variance channel:
    scale 1, as scikit-learn's rule for constant features, instead of inf or NaN."""
    x = np.array([[5.0, 1.0], [5.0, 3.0], [5.0, 2.0]])
    rs = nbbn.channel_stats(x, -1)
    norm = rs.to_normalizer(eps=0.0, bias=[0.25, 0.0])
    assert norm.scale.tolist() == [1.0, 1.0 / np.sqrt(rs.var[1])]
    y = nbbn.normalize(x, rs.mean, rs.var, eps=0.0, bias=[0.25, 0.0], channel_axis=-1,
                       backend=backend)
    assert np.isfinite(y).all()
    assert y[:, 0].tolist() == [0.25, 0.25, 0.25]
    assert_close(y[:, 1], (x[:, 1] - 2.0) / np.sqrt(2.0 / 3.0), rtol=1e-15)
    back = nbbn.Normalizer(rs.mean, rs.var, eps=0.0, bias=[0.25, 0.0], channel_axis=-1,
                           backend=backend).inverse(y)
    assert_close(back, x, rtol=1e-15)


def test_inverse_refuses_a_channel_of_weight_zero():
    """``Normalizer(..., weight=[0, 1]).inverse(y)`` returned NaN for channel 0 quietly
    (its outputs are all the bias: nothing to invert); it is a ValueError naming the
    channels now, raised before ``out`` is written."""
    norm = nbbn.Normalizer([1.0, 2.0, 3.0], [4.0, 1.0, 1.0], eps=0.0, weight=[0.0, 1.0, 0.0],
                           bias=[0.5, 0.0, 0.0])
    y = norm(np.array([[3.0, 2.0, 1.0], [1.0, 5.0, 4.0]]))
    assert y[:, 0].tolist() == [0.5, 0.5]
    out = np.full_like(y, 7.0)
    with pytest.raises(ValueError, match=r"inverse needs a nonzero scale .* got 0 in "
                       r"channels \[0, 2\] \(weight 0, var 4\).*with a nonzero weight"):
        norm.inverse(y, out=out)
    assert (out == 7.0).all()
    with pytest.raises(ValueError, match=r"channels \[1\] \(weight 1, var inf\).*an "
                                         "infinite variance leaves nothing to invert"):
        nbbn.Normalizer([1.0, 2.0], [1.0, np.inf]).inverse(np.zeros((2, 2)))
    # a scale that underflows to 0 with a finite variance was blamed on an infinite one,
    # and a subnormal scale (its reciprocal inf) gave NaN and inf, with a RuntimeWarning
    with pytest.raises(ValueError, match=r"got 0 in channels \[0\] \(weight 1e-200, var "
                                         r"1e\+300\).*underflows to 0 there"):
        nbbn.Normalizer([0.0], [1e300], weight=[1e-200]).inverse(np.ones((1, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny = nbbn.Normalizer([0.0], [1.0], eps=0.0, weight=[1e-310])
    with pytest.raises(ValueError, match=r"got 1e-310 in channels \[0\] \(weight 1e-310, "
                                         r"var 1\): its reciprocal overflows float64"):
        tiny.inverse(tiny(np.array([[0.0], [1.0]])))


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
def test_column_major_table_keeps_its_layout(dtype, rng):
    """A 2-d table stored column by column (pandas' to_numpy(), scikit-learn's input) is
    mapped column by column, and the new output is laid out as the input (numpy's
    order="K"); an explicit C-ordered ``out`` is written correctly too."""
    x = np.asfortranarray(random_array(rng, (3001, 7), dtype, channel_axis=1))
    mean, var, weight, bias = _params(rng, x, 1)
    norm = nbbn.Normalizer(mean, var, weight=weight, bias=bias, channel_axis=-1)
    ref = ref_normalize(x, mean, var, weight, bias, 1e-5, 1)
    y = norm(x)
    assert y.flags.f_contiguous and y.dtype == (np.float64 if dtype == "float64" else np.float32)
    assert_output(y, ref)
    out = np.empty(x.shape, y.dtype)
    assert_output(norm(x, out=out), ref)
    assert_output(norm.inverse(y), ref_inverse(y, mean, var, weight, bias, 1e-5, 1))


def test_the_numbers_are_read_only_and_stay_so_through_copies():
    """Setting ``eps``, ``var`` or ``weight`` changed nothing (``scale`` is computed once)
    while ``mean`` and ``bias`` took effect, and ``inverse`` kept the old scale: the
    numbers are read-only, through pickling and copying too."""
    import copy
    import pickle

    norm = nbbn.Normalizer([1.0, 2.0], [4.0, 1.0], eps=0.0, bias=[0.5, 0.0])
    x = np.array([[3.0, 2.0], [1.0, 5.0]])
    y = norm(x)
    for twin in (norm, pickle.loads(pickle.dumps(norm)), copy.deepcopy(norm)):
        for name in ("mean", "var", "weight", "bias", "scale"):
            with pytest.raises(ValueError, match="read-only"):
                getattr(twin, name)[0] = 7.0
            with pytest.raises(AttributeError):
                setattr(twin, name, np.zeros(2))
        with pytest.raises(AttributeError):
            twin.eps = 1.0
        np.testing.assert_array_equal(twin(x), y)
        np.testing.assert_allclose(twin.inverse(y), x, rtol=1e-15)
    norm.channel_axis = -1  # how inputs are read may change
    np.testing.assert_array_equal(norm(x.T.copy()), norm(x.T.copy()))


def test_an_older_pickle_loads():
    """A Normalizer pickled before the numbers were read-only kept them as public
    attributes."""
    norm = nbbn.Normalizer([1.0, 2.0], [4.0, 1.0], eps=0.0)
    old = {"eps": 0.0, "mean": np.array([1.0, 2.0]), "var": np.array([4.0, 1.0]),
           "weight": np.ones(2), "bias": np.zeros(2), "channel_axis": 1, "backend": "auto",
           "scale": np.array([0.5, 1.0]), "_inv_scale": np.array([2.0, 1.0])}
    back = nbbn.Normalizer.__new__(nbbn.Normalizer)
    back.__setstate__(old)
    x = np.array([[3.0, 2.0]])
    np.testing.assert_array_equal(back(x), norm(x))
    assert back.channel_names is None and not back.mean.flags.writeable


def test_many_normalizers_in_turn_each_apply_their_own_numbers(rng):
    """The CPU backend keeps the channels-last tiles of read-only parameters (a
    Normalizer's) for a few recent normalizers: many of them in turn, and new ones made
    where old ones were freed, each apply their own numbers."""
    x = rng.normal(size=(5, 3))
    for _round in range(2):
        norms = [nbbn.Normalizer(rng.normal(size=3), rng.uniform(0.5, 2.0, 3), eps=0.0,
                                 channel_axis=-1) for _ in range(40)]
        for norm in norms + norms[::-1]:
            want = (x - norm.mean) / np.sqrt(norm.var)
            np.testing.assert_allclose(norm(x), want, rtol=1e-14, atol=1e-14)
        del norms


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 1)])
def test_a_single_value_is_normalized(shape, backend):
    """An input of one element (one row of one channel) is mapped like any other, into
    a new array or into ``out``, and back by ``inverse``."""
    norm = nbbn.Normalizer([2.0], [4.0], eps=0.0, weight=[3.0], bias=[0.5], backend=backend)
    x = np.full(shape, 6.0)
    want = (6.0 - 2.0) / 2.0 * 3.0 + 0.5
    np.testing.assert_array_equal(norm(x), np.full(shape, want))
    out = np.full(shape, np.nan)
    assert norm(x, out=out) is out
    np.testing.assert_array_equal(out, np.full(shape, want))
    np.testing.assert_array_equal(norm.inverse(out), x)


def test_pandas_series_parameters_must_be_indexed_alike():
    """``Normalizer(df.mean(), df[["b", "a", "c"]].var())`` paired a's mean with b's
    variance in silence (the Series are read by position); a Series of the default
    index (0, 1, ...) pairs with any, and Series indexed alike are taken."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 40.0], "c": [0.0, 1.0, 0.0]})
    with pytest.raises(ValueError, match=r"mean and var are pandas Series indexed \['a', 'b', "
                                         r"'c'\] and \['b', 'a', 'c'\].*var\[mean\.index\]"):
        nbbn.Normalizer(df.mean(), df[["b", "a", "c"]].var(), channel_axis=-1)
    with pytest.raises(ValueError, match=r"mean and weight are pandas Series"):
        nbbn.Normalizer(df.mean(), df.var(), weight=pd.Series([1.0, 2.0, 3.0], list("cab")))
    norm = nbbn.Normalizer(df.mean(), df.var(), bias=pd.Series([0.0, 1.0, 2.0]),
                           channel_axis=-1)
    np.testing.assert_allclose(norm(df.to_numpy()),
                               (df - df.mean()).to_numpy() / np.sqrt(df.var().to_numpy()
                                                                    + 1e-5) + [0, 1, 2])
