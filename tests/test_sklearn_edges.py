"""Contracts mutation testing found unpinned (2026-12-04): nbbn.sklearn.StandardScaler."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn import preprocessing  # noqa: E402

from nbbn.sklearn import StandardScaler  # noqa: E402


@pytest.mark.parametrize("total_weight", [2e16, 1e3])
def test_near_constant_bound_uses_the_weighted_count_times_var(total_weight):
    """scikit-learn's near-constant bound is ``n * eps * var + (n * mean * eps)**2``
    with ``n`` the weight sum: once ``n * eps >= 1`` every finite variance is under it
    and every scale_ is 1 (mutant: the ``n * eps * var`` term dropped, so only features
    with a mean far from 0 were)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)) * [1.0, 100.0, 1e-3] + [0.0, 5.0, -2.0]
    w = np.full(20, total_weight / 20)
    ref = preprocessing.StandardScaler().fit(X, sample_weight=w)
    ours = StandardScaler().fit(X, sample_weight=w)
    np.testing.assert_allclose(ours.n_samples_seen_, ref.n_samples_seen_)
    np.testing.assert_allclose(ours.scale_, ref.scale_, rtol=1e-6)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("with_mean", [True, False])
def test_without_std_var_is_none_as_scikit_learn(with_mean):
    """``with_std=False``: ``var_`` and ``scale_`` are None, as scikit-learn's, and the
    transform only centers (mutant: var_ kept)."""
    X = np.arange(12.0).reshape(4, 3) ** 2
    ref = preprocessing.StandardScaler(with_mean=with_mean, with_std=False).fit(X)
    ours = StandardScaler(with_mean=with_mean, with_std=False).fit(X)
    for name in ("mean_", "var_", "scale_"):
        want, got = getattr(ref, name), getattr(ours, name)
        assert (want is None) == (got is None), name
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-15)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-15)


def test_weighted_count_without_mean_and_std_is_the_weight_sum():
    """``with_mean=False, with_std=False`` with ``sample_weight``: ``n_samples_seen_`` is
    the weight of the values counted, as scikit-learn's sparse path gives and as with
    either flag set; scikit-learn's dense path counts the rows there, unweighted
    (docs/sklearn.md; mutant: the weights dropped without mean and std)."""
    sparse = pytest.importorskip("scipy.sparse")
    X = np.array([[1.0, np.nan], [2.0, 5.0], [0.0, 6.0], [4.0, 0.0]])
    w = np.array([0.5, 2.0, 1.0, 3.0])
    ref = preprocessing.StandardScaler(with_mean=False, with_std=False).fit(
        sparse.csr_matrix(X), sample_weight=w)
    np.testing.assert_array_equal(ref.n_samples_seen_, [6.5, 6.0])  # (the reference's)
    for data in (X, sparse.csr_matrix(X)):
        ours = StandardScaler(with_mean=False, with_std=False).fit(data, sample_weight=w)
        np.testing.assert_array_equal(ours.n_samples_seen_, ref.n_samples_seen_)
        assert ours.mean_ is None and ours.var_ is None


@pytest.mark.parametrize("inverse", [False, True])
def test_sparse_transform_refuses_nan_under_raise(inverse):
    """``nan_policy="raise"`` refuses a NaN in a sparse matrix's stored values in
    transform and inverse_transform as in dense input (mutant: only infinities looked
    for in sparse input)."""
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.csr_matrix(np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]]))
    sc = StandardScaler(with_mean=False, nan_policy="raise").fit(X)
    bad = X.copy()
    bad.data[1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        (sc.inverse_transform if inverse else sc.transform)(bad)
    with pytest.raises(ValueError, match="NaN"):
        (sc.inverse_transform if inverse else sc.transform)(bad.toarray())


@pytest.mark.parametrize("name, value", [("channel_axis", 3), ("nan_policy", "propagate"),
                                         ("nan_policy", "raise")])
def test_partial_fit_refuses_settings_changed_since_the_fit(name, value):
    """``set_params(channel_axis=...)`` or ``(nan_policy=...)`` between fit and
    partial_fit merged the batch by the fitted settings, silently (found in review)."""
    x = np.random.default_rng(3).normal(size=(4, 3, 5, 3))
    sc = StandardScaler(channel_axis=1).fit(x)
    before = sc.mean_.copy(), sc.n_samples_seen_
    sc.set_params(**{name: value})
    with pytest.raises(ValueError, match=f"{name} is .*fitted statistics were computed "
                                         f"with .*call fit to start over"):
        sc.partial_fit(x)
    np.testing.assert_array_equal(sc.mean_, before[0])
    assert sc.n_samples_seen_ == before[1]
    sc.fit(x)  # (fit starts over with the new setting)


def test_partial_fit_takes_another_name_for_the_same_axis():
    x = np.random.default_rng(4).normal(size=(6, 2))
    sc = StandardScaler(channel_axis=1).fit(x).set_params(channel_axis=-1).partial_fit(x)
    assert sc.n_samples_seen_ == 12


@pytest.mark.parametrize("shape", [(20, 4), (5, 1000), (3000, 7), (50000, 3)])
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_weighted_sparse_n_samples_seen_is_one_number(shape, fmt):
    """Without NaNs every feature counts every row: ``n_samples_seen_`` is one number,
    the dense fit's (each column's weight was the stored rows' merged with the zeros',
    whose rounding differed by column: a per-feature array, found in review); the sum
    of the weights to an ulp, as the dense fit's."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(shape[0])
    x = rng.normal(5, 2, shape)
    x[rng.random(shape) < 0.6] = 0
    w = rng.random(shape[0])
    got = StandardScaler(with_mean=False).fit(getattr(sparse, f"{fmt}_matrix")(x),
                                              sample_weight=w).n_samples_seen_
    assert np.ndim(got) == 0
    dense = StandardScaler().fit(x, sample_weight=w).n_samples_seen_
    assert abs(got - math.fsum(w)) <= np.spacing(got) and abs(dense - got) <= np.spacing(got)


# ---------------------------------------------------------------- tags, rollback, output settings
def test_tags_follow_nan_policy_and_with_mean():
    """``allow_nan`` is False only under ``nan_policy="raise"``, and sparse input is
    declared as scikit-learn's own scaler declares it: without centering (mutant:
    ``allow_nan`` always True)."""
    from sklearn.utils import get_tags

    for policy, allowed in [("omit", True), ("propagate", True), ("raise", False)]:
        assert get_tags(StandardScaler(nan_policy=policy)).input_tags.allow_nan is allowed
    for with_mean in (True, False):
        want = get_tags(preprocessing.StandardScaler(with_mean=with_mean)).input_tags.sparse
        assert get_tags(StandardScaler(with_mean=with_mean)).input_tags.sparse is want
    # N-d arrays are read (channels on channel_axis): the tag said no
    assert get_tags(StandardScaler()).input_tags.three_d_array is True
    assert StandardScaler().fit(np.ones((2, 3, 4))).n_features_in_ == 4


@pytest.mark.parametrize("axis", [0, -4, 4])
def test_nd_input_refuses_the_samples_axis_as_features(axis):
    """Axis 0 of N-d input is the samples axis, never the features (mutant: the check of
    ``channel_axis % ndim == 0`` dropped, so ``channel_axis=0`` pooled the features)."""
    x = np.ones((4, 3, 2, 2))
    with pytest.raises(ValueError, match=f"channel_axis={axis} is not a features axis"):
        StandardScaler(channel_axis=axis).fit(x)


def test_a_failed_fit_keeps_the_earlier_fit():
    """A fit that raises leaves the earlier fit as it was, ``n_features_in_`` and
    ``feature_names_in_`` included, which fit resets and validation sets before the
    error (mutant: no rollback, the scaler left half reset)."""
    pd = pytest.importorskip("pandas")
    X = np.random.default_rng(5).normal(3.0, 2.0, size=(10, 3))
    sc = StandardScaler().fit(pd.DataFrame(X, columns=list("abc")))
    before = sc.mean_.copy(), sc.var_.copy(), sc.n_samples_seen_, sc.stats_
    bad = np.ones((5, 2))
    bad[1, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        sc.fit(bad)
    assert sc.n_features_in_ == 3 and sc.feature_names_in_.tolist() == list("abc")
    np.testing.assert_array_equal(sc.mean_, before[0])
    np.testing.assert_array_equal(sc.var_, before[1])
    assert sc.n_samples_seen_ == before[2] and sc.stats_ is before[3]
    ref = preprocessing.StandardScaler().fit(X)
    np.testing.assert_allclose(sc.transform(pd.DataFrame(X, columns=list("abc"))),
                               ref.transform(X), rtol=1e-12, atol=1e-12)


def test_a_failed_fit_transform_keeps_the_earlier_fit():
    """``fit_transform`` (scikit-learn's, inherited: fit, then transform) replaced the
    fit when the transform or ``set_output``'s conversion refused the output: N-d
    output as a DataFrame, a sparse one as a dense container."""
    pytest.importorskip("pandas")
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(7)
    cases = [(StandardScaler(channel_axis=1), rng.normal(0, 1, (4, 3, 2, 2)),
              rng.normal(100, 5, (4, 3, 2, 2)), "makes 2-d tables"),
             (StandardScaler(with_mean=False), sparse.random(20, 3, 0.5, "csr", rng=1),
              sparse.random(20, 3, 0.5, "csr", rng=2) * 100, "sparse")]
    for sc, a, b, message in cases:
        sc.fit(a).set_output(transform="pandas")
        before = sc.var_.copy(), sc.n_samples_seen_, sc.stats_
        with pytest.raises(ValueError, match=message):
            sc.fit_transform(b)
        np.testing.assert_array_equal(sc.var_, before[0])
        assert sc.stats_ is before[2]
        np.testing.assert_array_equal(sc.n_samples_seen_, before[1])
    X = rng.normal(3.0, 2.0, size=(10, 3))  # and it still fits and transforms
    np.testing.assert_allclose(StandardScaler().fit_transform(X),
                               preprocessing.StandardScaler().fit_transform(X), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("inverse", [False, True])
def test_in_place_call_refusing_an_infinity_leaves_x_unchanged(inverse):
    """``copy=False``: an infinity is refused before ``X`` is written, so the caller's
    array is as it was (mutant: infinities counted in the writing pass only, in place
    too, so ``X`` was half scaled when the error came)."""
    rng = np.random.default_rng(6)
    X = rng.normal(5.0, 2.0, size=(40, 3))
    sc = StandardScaler().fit(X)
    bad = X.copy()
    bad[30, 2] = np.inf
    bad[1, 0] = np.nan
    keep = bad.copy()
    with pytest.raises(ValueError, match="infinity"):
        (sc.inverse_transform if inverse else sc.transform)(bad, copy=False)
    np.testing.assert_array_equal(bad, keep)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_inverse_transform_multiplies_by_the_scale(fmt):
    """Sparse ``inverse_transform`` is scikit-learn's: the stored values times
    ``scale_``, a CSR matrix out (mutant: divided by it, as transform does)."""
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(7)
    X = rng.normal(4.0, 3.0, size=(30, 4)) * (rng.random((30, 4)) < 0.5)
    ref = preprocessing.StandardScaler(with_mean=False).fit(X)
    sc = StandardScaler(with_mean=False).fit(getattr(sparse, f"{fmt}_matrix")(X))
    Z = rng.normal(size=(6, 4)) * (rng.random((6, 4)) < 0.5)
    got = sc.inverse_transform(getattr(sparse, f"{fmt}_matrix")(Z))
    assert sparse.issparse(got) and got.format == "csr"
    np.testing.assert_allclose(got.toarray(), ref.inverse_transform(Z), rtol=1e-12)
    back = sc.inverse_transform(sc.transform(sparse.csr_matrix(X)))
    np.testing.assert_allclose(back.toarray(), X, rtol=1e-12, atol=1e-12)


def test_global_pandas_output_refuses_nd_input():
    """``transform_output="pandas"`` set globally (not by ``set_output``) refuses N-d
    input clearly too (mutant: only the estimator's own setting looked at); it does
    not touch ``inverse_transform``, which scikit-learn never wraps (mutant: refused
    there as well)."""
    pytest.importorskip("pandas")
    import sklearn

    imgs = np.random.default_rng(8).normal(size=(4, 3, 2, 2))
    sc = StandardScaler(channel_axis=1).fit(imgs)
    z = sc.transform(imgs)
    assert z.shape == imgs.shape  # (outside the context: an array)
    with sklearn.config_context(transform_output="pandas"):
        with pytest.raises(ValueError,
                           match=r"set_output\(transform='pandas'\) makes 2-d tables"):
            sc.transform(imgs)
        np.testing.assert_allclose(sc.inverse_transform(z), imgs, rtol=1e-12, atol=1e-12)
    sc.set_output(transform="pandas")
    np.testing.assert_allclose(sc.inverse_transform(z), imgs, rtol=1e-12, atol=1e-12)


def test_a_fit_of_nd_input_forgets_the_names_of_an_earlier_frame():
    """A fit of N-d numpy input after a fit of a DataFrame forgets its column names, as
    scikit-learn forgets them for a fit of unnamed data (mutant: the old names kept,
    so get_feature_names_out gave the frame's columns)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(9)
    sc = StandardScaler(channel_axis=1).fit(pd.DataFrame(rng.normal(size=(6, 3)),
                                                         columns=list("abc")))
    assert sc.feature_names_in_.tolist() == list("abc")
    sc.fit(rng.normal(size=(4, 3, 2, 2)))
    assert not hasattr(sc, "feature_names_in_") and sc.n_features_in_ == 3
    assert sc.get_feature_names_out().tolist() == ["x0", "x1", "x2"]


def test_partial_fit_of_attributes_set_by_hand_says_why():
    """partial_fit merges into stats_: a scaler whose attributes were set by hand (from
    scikit-learn's) failed with an AttributeError naming stats_."""
    from sklearn.preprocessing import StandardScaler as SkScaler

    X = np.arange(12.0).reshape(4, 3)
    sk = SkScaler().fit(X)
    rebuilt = StandardScaler()
    for k in ("mean_", "var_", "scale_", "n_samples_seen_", "n_features_in_"):
        setattr(rebuilt, k, getattr(sk, k))
    np.testing.assert_allclose(rebuilt.transform(X), sk.transform(X), rtol=1e-15)
    with pytest.raises(ValueError, match="has n_samples_seen_ but no stats_"):
        rebuilt.partial_fit(X + 10)
    assert rebuilt.n_samples_seen_ == 4 and "stats_" not in rebuilt.__dict__


def test_a_subclass_defining_eq_transforms():
    """A subclass that defines __eq__ (so no __hash__) failed in transform with
    "unhashable type": the kept normalizer was looked up by the estimator."""

    class Mine(StandardScaler):
        def __eq__(self, other):
            return type(other) is type(self) and self.get_params() == other.get_params()

    X = np.arange(12.0).reshape(4, 3)
    s = Mine().fit(X)
    np.testing.assert_allclose(s.inverse_transform(s.transform(X)), X, atol=1e-14)
