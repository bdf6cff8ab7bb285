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
