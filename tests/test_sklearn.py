"""nbbn.sklearn.StandardScaler: scikit-learn's estimator checks, and equality with
scikit-learn's own StandardScaler on its scenarios (to 1e-12 relative, and to an exact
float64 reference where scikit-learn's own rounding is larger)."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("sklearn")

from reference import assert_close, assert_ulps, ref_stats  # noqa: E402
from sklearn.preprocessing import StandardScaler as SkScaler  # noqa: E402
from sklearn.utils import estimator_checks as ec  # noqa: E402

import nbbn  # noqa: E402
from nbbn.sklearn import StandardScaler  # noqa: E402

RTOL = 1e-12


# (StandardScaler() does not declare sparse input, as scikit-learn's own: it cannot
# center sparse data; the sparse checks run on the second one)
@ec.parametrize_with_checks([StandardScaler(), StandardScaler(with_mean=False, ddof=1)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# the pandas/polars checks transform numpy arrays with a scaler fitted on a DataFrame,
# for which scikit-learn warns (its own StandardScaler the same): not an nbbn matter
@pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning",
                            "ignore:X has feature names, but:UserWarning")
@pytest.mark.parametrize("check", [
    "check_set_output_transform", "check_set_output_transform_pandas",
    "check_global_output_transform_pandas", "check_set_output_transform_polars",
    "check_global_set_output_transform_polars", "check_transformer_get_feature_names_out",
    "check_transformer_get_feature_names_out_pandas",
])
def test_sklearn_output_checks(check):
    if "pandas" in check:
        pytest.importorskip("pandas")
    if "polars" in check:
        pytest.importorskip("polars")
    getattr(ec, check)("StandardScaler", StandardScaler())


def _split_fit(est, X, cuts, w=None):
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        est.partial_fit(X[lo:hi], sample_weight=None if w is None else w[lo:hi])
    return est


def _assert_same(ours, theirs, X, rtol=RTOL):
    n_ours, n_theirs = np.asarray(ours.n_samples_seen_), np.asarray(theirs.n_samples_seen_)
    assert n_ours.shape == n_theirs.shape
    assert_close(n_ours, n_theirs, rtol=1e-14, name="n_samples_seen_")
    for name in ("mean_", "var_", "scale_"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert_close(a, b, rtol=rtol, name=name)
    x64 = X.astype(np.float64)
    for method, exp64 in (("transform", (x64 - ours.mean_) / ours.scale_),
                          ("inverse_transform", x64 * ours.scale_ + ours.mean_)):
        got, exp = getattr(ours, method)(X), getattr(theirs, method)(X)
        assert got.dtype == exp.dtype and got.shape == exp.shape
        if X.dtype == np.float32:
            # nbbn computes in float64 and rounds once; scikit-learn subtracts and divides
            # in float32 (off by far more at large means, #12333): held to the float64 map
            assert_ulps(got, exp64, ulps=1.0, name=method)
        else:
            assert_close(got, exp, rtol=1e-12, atol=1e-12, name=method)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_random_partial_fit_splits_with_nans(rng, dtype, weighted):
    X = (rng.standard_normal((240, 5)) * [1, 10, 0.1, 3, 1e3] + [0, 5, -2, 1e3, 7]).astype(dtype)
    X[rng.random(X.shape) < 0.1] = np.nan
    # dyadic weights: scikit-learn rounds weights to X's dtype and sums them in it
    w = rng.integers(0, 16, 240) / 8 if weighted else None
    cuts = np.unique(np.r_[0, rng.integers(1, 240, 6), 240])
    ours = _split_fit(StandardScaler(), X, cuts, w)
    theirs = _split_fit(SkScaler(), X, cuts, w)
    _assert_same(ours, theirs, X)
    if not weighted:  # and the exact statistics, NaNs skipped
        ref = ref_stats(X, -1, nan_policy="omit")
        np.testing.assert_array_equal(ours.n_samples_seen_, ref.count)
        assert_close(ours.var_, ref.var, rtol=RTOL, name="var_ vs reference")


@pytest.mark.parametrize("constant", [0.0, 0.1, 1e10, -3.0])
def test_constant_features(rng, constant):
    X = np.c_[np.full(50, constant), rng.standard_normal(50), np.full(50, constant)]
    for kw in ({}, {"with_mean": False}):
        ours, theirs = StandardScaler(**kw).fit(X), SkScaler(**kw).fit(X)
        _assert_same(ours, theirs, X)
        assert ours.var_[0] == 0.0 and ours.scale_[0] == 1.0


def _exact_var(X):
    """Per-column variance of the float values in X, computed in exact rationals."""
    out = []
    for col in np.asarray(X, np.float64).T:
        xs = [Fraction(v) for v in col.tolist()]
        mu = sum(xs) / len(xs)
        out.append(float(sum((v - mu) ** 2 for v in xs) / len(xs)))
    return np.array(out)


@pytest.mark.parametrize("average", [1e-10, 1.0, 1e10])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_near_constant_features(dtype, average):
    """scikit-learn's scenario: variance scales**2 around ``average``; a feature whose
    variance is below its bound ``N eps var + (N eps mean)^2`` gets scale 1."""
    n = 100
    scales = np.array([10.0 ** i for i in range(-30, 19)], dtype=dtype)
    X = np.empty((n, scales.size), dtype=dtype)
    X[: n // 2] = average + scales
    X[n // 2:] = average - scales
    ours = StandardScaler(with_mean=False).fit(X)
    theirs = SkScaler(with_mean=False).fit(X)
    exact = _exact_var(X)
    assert_close(ours.var_, exact, rtol=RTOL, name="var_ vs exact")
    eps = np.finfo(np.float64).eps
    bound = n * eps * exact + (n * eps * ours.mean_) ** 2
    below, above = exact <= bound * (1 - 1e-9), exact > bound * (1 + 1e-9)
    assert below.any() and above.any()
    np.testing.assert_array_equal(ours.scale_[below], 1.0)
    np.testing.assert_array_equal(theirs.scale_[below], 1.0)
    assert_close(ours.scale_[above], np.sqrt(exact[above]), rtol=RTOL, name="scale_")
    # equal to scikit-learn wherever its own variance is exact to 1e-13
    good = above & (np.abs(theirs.var_ - exact) <= 1e-13 * exact)
    assert good.sum() >= 10
    assert_close(ours.scale_[good], theirs.scale_[good], rtol=RTOL, name="scale_ vs sklearn")


@pytest.mark.parametrize("mean", [1e4, 1e6])
def test_large_float32_means(rng, mean):
    X = (mean + rng.standard_normal((400, 3)) * [1.0, 0.1, 10.0]).astype(np.float32)
    ours, theirs = StandardScaler().fit(X), SkScaler().fit(X)
    _assert_same(ours, theirs, X)
    ref = ref_stats(X, -1)
    assert_close(ours.mean_, ref.mean, rtol=1e-15, name="mean_ vs exact")
    assert_close(ours.var_, ref.var, rtol=RTOL, name="var_ vs exact")
    cuts = [0, 7, 150, 151, 400]
    assert_close(_split_fit(StandardScaler(), X, cuts).var_, ref.var, rtol=RTOL,
                 name="split var_ vs exact")


def test_integer_input(rng):
    X = rng.integers(-1000, 1000, (80, 4))
    ours, theirs = StandardScaler().fit(X), SkScaler().fit(X)
    _assert_same(ours, theirs, X)
    assert ours.transform(X).dtype == np.float64


def test_no_overflow_where_sklearn_partial_fit_overflows(rng):
    """scikit-learn #5602: ``mean * n`` overflows; nbbn forms no sums."""
    X = np.c_[np.full(1000, 1e306), rng.standard_normal(1000)]
    cuts = list(range(0, 1001, 100))
    ours = _split_fit(StandardScaler(), X, cuts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _split_fit(SkScaler(), X, cuts)
    assert not np.isfinite(theirs.mean_[0])  # the scenario: scikit-learn overflows here
    assert ours.mean_[0] == 1e306 and ours.var_[0] == 0.0 and ours.scale_[0] == 1.0
    np.testing.assert_array_equal(ours.transform(X)[:, 0], 0.0)
    ref = ref_stats(X[:, 1:], -1)
    assert_close(ours.var_[1:], ref.var, rtol=RTOL, name="var_")
    assert_close(ours.mean_[1:], ref.mean, rtol=RTOL, atol=1e-15, name="mean_")


def test_a_batch_with_an_all_nan_feature(rng):
    """A ``partial_fit`` batch in which a feature is all NaN adds nothing to it: the
    fitted statistics are those of its other values (scikit-learn 1.9's update divides
    0 by 0 there, and its ``var_`` for that feature stays NaN)."""
    X = rng.standard_normal((12, 3)) * 2 + 5
    X[:6, 1] = np.nan
    ours = _split_fit(StandardScaler(), X, [0, 6, 12])
    ref = ref_stats(X[6:, 1:2], -1)
    assert_close(ours.mean_[1:2], ref.mean, rtol=RTOL, name="mean_")
    assert_close(ours.var_[1:2], ref.var, rtol=RTOL, name="var_")
    np.testing.assert_array_equal(ours.n_samples_seen_, [12, 6, 12])


@pytest.mark.parametrize(("shape", "axis"), [((6, 3, 4, 5), 1), ((6, 4, 5, 3), -1)])
def test_nd_images_pool_all_but_the_channel_axis(rng, shape, axis):
    X = rng.standard_normal(shape).astype(np.float32) * 4 + 2
    X[0, 0, 0, 0] = np.nan
    ours = StandardScaler(channel_axis=axis).fit(X)
    rows = np.moveaxis(X, axis, -1).reshape(-1, X.shape[axis])
    theirs = SkScaler().fit(rows)
    assert ours.n_features_in_ == X.shape[axis]
    assert len(ours.get_feature_names_out()) == X.shape[axis]
    for name in ("mean_", "var_", "scale_", "n_samples_seen_"):
        assert_close(getattr(ours, name), getattr(theirs, name), rtol=RTOL, name=name)
    y = ours.transform(X)
    assert y.shape == X.shape and y.dtype == np.float32
    assert_close(np.moveaxis(y, axis, -1).reshape(rows.shape), theirs.transform(rows),
                 rtol=2e-7, atol=2e-6, name="transform")
    with pytest.raises(ValueError, match="expecting 3 features"):
        ours.transform(np.moveaxis(X, axis, 2 if axis == 1 else 1))


def test_ddof_and_nan_policies(rng):
    X = rng.standard_normal((30, 3))
    ref = ref_stats(X, -1)
    sc = StandardScaler(ddof=1).fit(X)
    assert_close(sc.var_, ref.var * 30 / 29, rtol=RTOL, name="var_ ddof=1")
    X[3, 1] = np.nan
    prop = StandardScaler(nan_policy="propagate").fit(X)
    assert np.isnan(prop.mean_[1]) and np.isfinite(prop.mean_[[0, 2]]).all()
    with pytest.raises(ValueError, match="NaN"):
        StandardScaler(nan_policy="raise").fit(X)
    with pytest.raises(ValueError, match="NaN"):
        StandardScaler(nan_policy="raise").fit(X[:3]).transform(X)


def test_bad_input_leaves_the_fit_unchanged(rng):
    X = rng.standard_normal((20, 3))
    sc = StandardScaler().fit(X)
    before = (sc.mean_.copy(), sc.var_.copy(), sc.n_samples_seen_)
    bad = X.copy()
    bad[4, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        sc.partial_fit(bad)
    with pytest.raises(ValueError, match="features"):
        sc.partial_fit(X[:, :2])
    for method in (sc.transform, sc.inverse_transform):
        with pytest.raises(ValueError, match="infinity"):
            method(bad)
    with pytest.raises(ValueError, match="sample_weight"):
        sc.partial_fit(X, sample_weight=-np.ones(20))
    np.testing.assert_array_equal(sc.mean_, before[0])
    np.testing.assert_array_equal(sc.var_, before[1])
    assert sc.n_samples_seen_ == before[2]
    with pytest.raises(ValueError, match="channel_axis"):
        StandardScaler(channel_axis=0).fit(X)
    with pytest.raises(ValueError, match="nan_policy"):
        StandardScaler(nan_policy="skip").fit(X)


def test_copy_false_writes_in_place_and_stats_are_nbbn(rng):
    X = rng.standard_normal((10, 3)) + 5
    sc = StandardScaler(copy=False).fit(X)
    expected = (X - sc.mean_) / sc.scale_
    out = sc.transform(X)
    assert out is X
    assert_close(X, expected, rtol=1e-14, atol=1e-15, name="in place")
    assert isinstance(sc.stats_, nbbn.RunningStats)
    assert_close(sc.stats_.mean, sc.mean_, rtol=0.0, name="stats_")


def test_in_a_pipeline(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X = rng.standard_normal((60, 4)) * 100 + 1e4
    y = (X[:, 0] > 1e4).astype(int)
    ours = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    theirs = make_pipeline(SkScaler(), LogisticRegression()).fit(X, y)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_bench_sklearn_smoke(tmp_path, capsys):
    """``nbbn bench --sklearn`` runs (tiny shape; speed is never asserted)."""
    import json

    from nbbn.cli import main

    path = tmp_path / "b.json"
    assert main(["bench", "--sklearn", "--quick", "--repeats", "1", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert [r["name"] for r in result["rows"]] == ["fit", "transform", "fit, sample_weight",
                                                  "fit, 0.1% NaN", "fit CSR", "transform CSR"]
    out = capsys.readouterr().out
    assert "transform" in out
    # every benchmark prints the CPU model and flags, and keeps them in its JSON
    from nbbn.tools.bench_env import cpu_flags, cpu_model

    assert out.splitlines()[0].startswith(f"cpu: {cpu_model()}; flags: ")
    assert result["host"]["model"] == cpu_model()
    assert result["host"]["flags"] == cpu_flags()
    assert result["host"]["simd_level"] in ("none", "avx2", "avx512")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", [((70, 5, 3001), 1), ((3001, 7, 50), -1)])
def test_normalizer_kernel_counts_infinities_in_its_read(rng, dtype, shape, axis):
    """transform's one read: the counting build of the affine kernel gives the map's
    values and the number of infinities (NaNs not counted), on one and on two threads."""
    from nbbn.backends import cpu

    x = rng.standard_normal(shape).astype(dtype)
    where = rng.choice(x.size, 9, replace=False)
    x.flat[where[:3]] = np.inf
    x.flat[where[3:6]] = -np.inf
    x.flat[where[6:]] = np.nan
    nchan = shape[axis]
    a, s, b = rng.standard_normal(nchan), rng.uniform(0.5, 2, nchan), rng.standard_normal(nchan)
    bshape = [1] * x.ndim
    bshape[axis] = nchan
    ref = (x.astype(np.float64) - a.reshape(bshape)) * s.reshape(bshape) + b.reshape(bshape)
    for limit in (1, 2):
        out = np.empty_like(x)
        with cpu.thread_limit(limit):
            n = cpu.affine(cpu.prepare(x, axis, "x"), (a, s, b), out, count_inf=True)
        assert n == 6
        eps = np.finfo(dtype).eps  # (float64: the kernel fuses the multiply-add)
        np.testing.assert_allclose(out, ref, rtol=2 * eps, atol=8 * eps)
    clean = np.nan_to_num(x, posinf=1.0, neginf=-1.0)
    assert cpu.affine(cpu.prepare(clean, axis, "x"), (a, s, b), out, count_inf=True) == 0


def test_transform_refuses_infinity_after_its_fused_read(rng):
    """An infinity anywhere in a large X (threaded kernels) is refused by transform and
    inverse_transform, with the features named, whatever the copy mode."""
    X = rng.standard_normal((20000, 64)).astype(np.float32)
    sc = StandardScaler().fit(X)
    X[19999, 63] = -np.inf
    for copy in (True, False):
        for method in (sc.transform, sc.inverse_transform):
            with pytest.raises(ValueError, match=r"infinity \(1 values, in features 63\)"):
                method(X.copy(), copy=copy)


def test_bench_calls_are_timed_in_turn_the_order_reversed():
    """``bench_timing.interleaved``: a warm-up call of each, then rounds of one call of
    each, every other round in reverse order, and a median per call."""
    from nbbn.tools.bench_timing import interleaved

    log: list[str] = []
    med = interleaved({name: (lambda name=name: log.append(name)) for name in "abc"}, 4)
    assert log == list("abc" "abc" "cba" "abc" "cba")
    assert set(med) == set("abc") and all(t >= 0.0 for t in med.values())


# ----------------------------------------------------------------- as scikit-learn, edge cases
def test_zero_weight_rows_are_checked_as_scikit_learn_checks_x(rng):
    """A weight-0 row is absent from the statistics, but its values are validated as
    scikit-learn validates all of X: an infinity is an error (a NaN too under "raise"),
    dense and sparse, and the fit is left as it was."""
    sparse = pytest.importorskip("scipy.sparse")
    X = rng.standard_normal((6, 2))
    w = np.r_[0.0, np.ones(5)]
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        SkScaler().fit(bad, sample_weight=w)
    sc = StandardScaler().fit(X)
    before = sc.mean_.copy()
    with pytest.raises(ValueError, match="contains infinity .* not changed"):
        sc.partial_fit(bad, sample_weight=w)
    np.testing.assert_array_equal(sc.mean_, before)
    with pytest.raises(ValueError, match="infinity"):
        StandardScaler(with_mean=False).fit(sparse.csr_matrix(bad), sample_weight=w)
    nan = X.copy()
    nan[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StandardScaler(nan_policy="raise").fit(nan, sample_weight=w)
    ours = StandardScaler().fit(nan, sample_weight=w)  # "omit": absent, as scikit-learn
    _assert_same(ours, SkScaler().fit(nan, sample_weight=w), X)


def test_inverse_transform_checks_no_feature_names(rng):
    """As scikit-learn's: the round trip of a DataFrame-fitted scaler does not warn, and
    other column names are not refused; the feature count still is."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(rng.standard_normal((5, 2)) + 3, columns=["a", "b"])
    ours, theirs = StandardScaler().fit(df), SkScaler().fit(df)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = ours.inverse_transform(ours.transform(df))
        swapped = ours.inverse_transform(df[["b", "a"]])
    assert_close(back, df.to_numpy(), rtol=1e-14, atol=1e-14, name="round trip")
    assert_close(swapped, theirs.inverse_transform(df[["b", "a"]]), rtol=1e-14,
                 name="other names")
    with pytest.raises(ValueError, match="expecting 2 features"):
        ours.inverse_transform(np.ones((3, 3)))


def test_sample_weight_as_scikit_learn_takes_it(rng):
    """A scalar weighs every row; a bool array is 0s and 1s."""
    X = rng.standard_normal((7, 3))
    for w in (2.0, 3, np.array([True, False, True, True, False, True, True])):
        _assert_same(StandardScaler().fit(X, sample_weight=w),
                     SkScaler().fit(X, sample_weight=w), X)


def test_float16_is_preserved_as_scikit_learn_preserves_it(rng):
    X = (rng.standard_normal((40, 3)) * 2 + 5).astype(np.float16)
    ours, theirs = StandardScaler().fit(X), SkScaler().fit(X)
    assert_close(ours.mean_, X.astype(np.float64).mean(0), rtol=1e-14, name="mean_")
    for method in ("transform", "inverse_transform"):
        got, exp = getattr(ours, method)(X), getattr(theirs, method)(X)
        assert got.dtype == exp.dtype == np.float16
        assert np.abs(got.astype(np.float64) - exp).max() <= 2 * np.spacing(
            np.abs(exp).max())


def test_degrees_of_freedom_warning():
    Z = np.array([[1.0, 2.0], [3.0, np.nan]])
    with pytest.warns(RuntimeWarning, match=r"Degrees of freedom <= 0 in features \[1\]"):
        sc = StandardScaler(ddof=1).fit(Z)
    assert np.isfinite(sc.scale_[0]) and np.isnan(sc.scale_[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        StandardScaler(ddof=1, with_std=False).fit(Z)  # no variance: nothing to warn of


def test_clear_errors_where_scikit_learn_fails_or_would(rng):
    """N-d input with DataFrame output, an empty pooled axis, a flag switched on after
    fitting, parameters (ValueError and TypeError both), the "raise" wording, sparse
    inverse."""
    sparse = pytest.importorskip("scipy.sparse")
    from sklearn.exceptions import NotFittedError

    from nbbn.sklearn import InvalidParameterError

    imgs = rng.standard_normal((4, 3, 2, 2))
    sc = StandardScaler(channel_axis=1).fit(imgs)
    pytest.importorskip("pandas")
    with pytest.raises(ValueError, match=r"makes 2-d tables, but X is 4-d"):
        sc.set_output(transform="pandas").transform(imgs)
    with pytest.raises(ValueError, match="no values to pool"):
        StandardScaler(channel_axis=1).fit(np.zeros((4, 3, 0, 2)))
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(4, 0, 2\)\)"):
        StandardScaler(channel_axis=1).fit(np.zeros((4, 0, 2)))  # (said "no values to pool")
    X = rng.standard_normal((5, 3))
    for flag in ("with_mean", "with_std"):
        fitted = StandardScaler(with_mean=False, with_std=False).fit(X)
        with pytest.raises(NotFittedError, match=f"fitted with {flag}=False"):
            fitted.set_params(**{flag: True}).transform(X)
    with pytest.raises(NotFittedError, match="with_std=False"):
        StandardScaler(with_mean=False, with_std=False).fit(X).set_params(
            with_std=True).transform(sparse.csr_matrix(X))
    for bad in (dict(with_mean="yes"), dict(channel_axis="x"), dict(ddof=-1)):
        for exc in (ValueError, TypeError):
            with pytest.raises(exc):
                StandardScaler(**bad).fit(X)
        with pytest.raises(InvalidParameterError):
            StandardScaler(**bad).fit(X)
    nan = X.copy()
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"expected finite values \(nan_policy='raise'\)"):
        StandardScaler(nan_policy="raise").fit(X).transform(nan)
    with pytest.raises(ValueError, match="Cannot uncenter sparse"):
        StandardScaler().fit(X).inverse_transform(sparse.csr_matrix(X))


def test_array_api_dispatch_is_refused_clearly(monkeypatch):
    torch = pytest.importorskip("torch")
    sklearn = pytest.importorskip("sklearn")
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    X = torch.randn(6, 3, dtype=torch.float64)
    try:
        context = sklearn.config_context(array_api_dispatch=True)
        context.__enter__()
    except (ImportError, RuntimeError) as exc:  # this scipy/array-api-compat refuses it
        pytest.skip(f"array_api_dispatch unavailable: {exc}")
    try:
        with pytest.raises(TypeError, match="array_api_dispatch is on"):
            StandardScaler().fit(X)
    finally:
        context.__exit__(None, None, None)
    assert StandardScaler().fit(X.numpy()).n_features_in_ == 3  # numpy input still works


def test_variance_beyond_float64_is_not_a_constant_feature():
    # std 3e300 is a float64, its square is not: scale_ used to be the constant
    # feature's 1 (inf <= its inf bound), and transform gave values near 1e300
    X = np.random.default_rng(0).normal(2, 3, (50, 2)) * 1e300
    X[:, 1] /= 1e300
    with pytest.warns(RuntimeWarning, match=r"features \[0\] overflows float64"):
        s = StandardScaler().fit(X)
    assert s.var_[0] == np.inf and s.scale_[0] == np.inf
    np.testing.assert_allclose(s.scale_[1], np.std(X[:, 1]), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "int64", ">f4"])
def test_integer_and_byte_swapped_input_not_copied(dtype):
    # integers (and byte-swapped floats) go to the kernels as they are: fit used to
    # make a float64 copy of the whole input first (8x the memory of uint8 images)
    import tracemalloc

    X = np.random.default_rng(5).integers(0, 256, (20000, 16)).astype(dtype)
    ours, theirs = StandardScaler().fit(X), SkScaler().fit(X)
    assert_close(ours.mean_, theirs.mean_, rtol=1e-12)
    assert_close(ours.var_, theirs.var_, rtol=1e-12)
    tracemalloc.start()
    try:
        StandardScaler().fit(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # (byte-swapped: a native copy, in slabs of at most 64 MiB; float64 would be 8 bytes)
    assert peak < X.size * (3 if dtype == ">f4" else 1) * 8 // 4
    y = ours.transform(X)
    assert y.dtype == (np.float32 if dtype == ">f4" else np.float64)
    assert_close(y, theirs.transform(X), rtol=1e-6 if dtype == ">f4" else 1e-12, atol=1e-6)
    inplace = ours.transform(X, copy=False)  # (integers: a new float64 array)
    assert (inplace is X) == (dtype == ">f4")
    assert_close(inplace, y, rtol=0, atol=0)


@pytest.mark.parametrize("nrows, taken", [(8, [True]), (100, [])])
def test_partial_fit_merges_into_a_copy_of_the_fit(rng, monkeypatch, nrows, taken):
    """``partial_fit`` merges the batch into a copy of ``stats_`` that shares its state
    read-only (``RunningStats._shared_copy``): a wide table of few rows as it is read
    (``cpu.reduce_into``, into a new state), any other batch by a merge into a copy of
    the state (``cpu.merge``); with the bits of merging the batch's own statistics. The
    fitted statistics it replaces do not change, and the new ones are the estimator's
    own (writable). A later batch with infinities is refused (their count and
    feature), and the fit stays as it was."""
    from nbbn.backends import cpu

    seen: list = []
    into = cpu.reduce_into

    def spy(*a):
        merged = into(*a)
        seen.append(merged is not None)
        return merged

    monkeypatch.setattr(cpu, "reduce_into", spy)
    first, second = (rng.standard_normal((nrows, 1500)).astype(np.float32) + k
                     for k in (0, 5))
    sc = StandardScaler().partial_fit(first)
    old = sc.stats_
    kept = old.to_dict()
    seen.clear()
    sc.partial_fit(second)
    assert seen == taken and sc.stats_ is not old
    assert sc.stats_._state.ints.flags.writeable and sc.stats_._state.floats.flags.writeable
    assert not np.shares_memory(sc.stats_._state.floats, old._state.floats)
    for k, v in old.to_dict().items():
        np.testing.assert_array_equal(v, kept[k], err_msg=k)
    want = nbbn.RunningStats(-1, nan_policy="omit").update(first) + \
        nbbn.RunningStats(-1, nan_policy="omit").update(second)
    np.testing.assert_array_equal(sc.mean_, want.mean)
    np.testing.assert_array_equal(sc.var_, want.var)
    bad = second.copy()
    bad[[1, 4], 7] = np.inf
    before = sc.stats_.to_dict()
    with pytest.raises(ValueError, match=r"infinity \(2 values, in features 7\).* not chan"):
        sc.partial_fit(bad)
    for k, v in sc.stats_.to_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_bench_sklearn_speedup_is_peer_time_over_nbbn_time():
    from nbbn.tools.bench_sklearn import Row

    row = Row("fit", "scikit-learn", nbbn_s=0.5, peer_s=2.0, target=10.0)
    assert row.speedup == 2.0 / 0.5  # nbbn 4x faster: above 1
