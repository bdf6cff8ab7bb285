"""nbbn.sklearn.StandardScaler's short cuts, each against the long way it replaces:
the fitted attributes in one pass (``cpu_scaler.fitted``) against their numpy
expressions, bit for bit; the kept normalizer against edits of what it was built from;
the validation of a plain float array against scikit-learn's own."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.preprocessing import StandardScaler as SkScaler  # noqa: E402

from nbbn.backends import cpu, cpu_scaler  # noqa: E402
from nbbn.backends._stats import BatchStats  # noqa: E402
from nbbn.sklearn import StandardScaler  # noqa: E402

EPS = float(np.finfo(np.float64).eps)


def _numpy_fitted(st: BatchStats, ddof: int):
    """The fitted attributes as numpy expressions (what ``_set_fitted`` computed before
    ``cpu_scaler``): mean, var, scale, n_samples_seen_ and the flags' features."""
    count = st.count if st.weight is None else st.weight
    n = count[0] if count.min() == count.max() else count
    mean = np.where(st.count > 0, st.mean, np.nan)
    denom = (st.count.astype(np.float64) if st.weight is None else st.weight) - ddof
    var = np.full(count.shape, np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        np.divide(st.m2, denom, out=var, where=denom > 0)
        bound = count * EPS * var + (count * mean * EPS) ** 2
        scale = np.sqrt(var)
        scale[(var <= bound) & (var < np.inf)] = 1.0
    return mean, var, scale, n, {"few": int((count <= ddof).sum()),
                                 "huge": int((var == np.inf).sum()),
                                 "infs": int((st.inf > 0).sum()), "nans": int((st.nan > 0).sum())}


def _state(rng, nchan: int, weighted: bool, same_counts: bool) -> BatchStats:
    """A state of every kind of channel: nothing counted, one value, constant and near
    constant ones, wide ranges, a variance beyond float64, NaNs and infinities seen."""
    count = np.full(nchan, 7) if same_counts else rng.integers(0, 5, nchan)
    count[0] = 7
    mean = rng.standard_normal(nchan) * 10.0 ** rng.integers(-8, 12, nchan)
    m2 = rng.random(nchan) * 10.0 ** rng.integers(-30, 30, nchan) * count
    m2[rng.random(nchan) < 0.1] = 0.0  # constant features
    near = rng.random(nchan) < 0.1  # within a few ulp of constant ones
    m2[near] = (count * (mean * EPS) ** 2 * rng.random(nchan) * 4)[near]
    m2[rng.random(nchan) < 0.02] = 1e308  # its variance overflows nothing; ...
    m2[:3] = np.array([np.inf, 0.0, 5.0])[:nchan]  # ... this one does
    mean[count == 0] = 0.0
    m2[count == 0] = 0.0
    ints = np.stack([count, rng.integers(0, 2, nchan) * (rng.random(nchan) < 0.05),
                     rng.integers(0, 2, nchan) * (rng.random(nchan) < 0.05)]).astype(np.int64)
    floats = np.stack([mean, mean * EPS / 4, m2, mean - 1, mean + 1])
    weight = None
    if weighted:
        weight = count * rng.choice([0.5, 1.0, 3.25], nchan)
        if same_counts:
            weight[:] = weight[0]
    return BatchStats(ints, floats, weight)


@pytest.mark.parametrize("nchan", [1, 5, 1000, 140_000])  # (the last one on threads)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("same_counts", [False, True])
@pytest.mark.parametrize("ddof", [0, 1, 3])
def test_fitted_in_one_pass_has_the_bits_of_numpy(rng, nchan, weighted, same_counts, ddof):
    st = _state(rng, nchan, weighted, same_counts)
    mean, var, scale, n, flags = _numpy_fitted(st, ddof)
    if nchan == 140_000:
        assert 8 * nchan >= cpu.THREADED_MIN_ELEMENTS  # (the threads' split is tested)
    for with_std in (True, False):
        fit = cpu_scaler.fitted(st, ddof, with_std)
        np.testing.assert_array_equal(fit.mean.view(np.int64), mean.view(np.int64))
        np.testing.assert_array_equal(fit.var.view(np.int64), var.view(np.int64))
        if with_std:
            np.testing.assert_array_equal(fit.scale.view(np.int64), scale.view(np.int64))
        else:
            assert fit.scale is None
        assert type(fit.n_samples_seen) is type(n)
        np.testing.assert_array_equal(fit.n_samples_seen, n)
        assert {k: getattr(fit, k) for k in flags} == flags
    if nchan >= 1000:  # (the state's kinds of channels are all there)
        assert flags["infs"] and flags["nans"] and (scale == 1.0).any()
        assert flags["huge"] or ddof  # (channel 0, unless its weight sum is <= ddof)
        assert bool(flags["few"]) == np.isnan(mean).any() == (not same_counts)


def test_the_fitted_attributes_and_their_warnings_after_partial_fit(rng):
    """What partial_fit sets, the kernel's numbers as the numpy expressions give them
    (the degrees-of-freedom and overflow warnings among them), and a refused batch."""
    X = rng.standard_normal((40, 6)) * [1, 1e-9, 1e3, 1, 1, 3e300]
    X[:, 4] = 2.5
    X[:39, 3] = np.nan
    with pytest.warns(RuntimeWarning) as caught:
        sc = StandardScaler(ddof=1).partial_fit(X[:20]).partial_fit(X[20:])
    said = " ".join(str(w.message) for w in caught)
    assert "Degrees of freedom <= 0 in features [3]" in said and "features [5] overflows" in said
    mean, var, scale, n, _ = _numpy_fitted(sc.stats_._snapshot(), 1)
    for got, want in ((sc.mean_, mean), (sc.var_, var), (sc.scale_, scale),
                      (sc.n_samples_seen_, n)):
        np.testing.assert_array_equal(got, want)
    assert sc.n_samples_seen_.tolist() == [40, 40, 40, 1, 40, 40] and sc.scale_[4] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc = StandardScaler().fit(X[:, :5])
    assert sc.n_samples_seen_.tolist() == [40, 40, 40, 1, 40]
    sc = StandardScaler().fit(X[:, [0, 1, 2, 4]])
    assert type(sc.n_samples_seen_) is np.int64 and sc.n_samples_seen_ == 40
    bad = X[:, :5].copy()
    bad[3, 2] = -np.inf
    before = (sc.mean_, sc.var_, sc.scale_, sc.n_samples_seen_, sc.stats_)
    with pytest.raises(ValueError, match=r"infinity \(1 values, in features 2\)"):
        sc.partial_fit(bad[:, [0, 1, 2, 4]])
    assert all(a is b for a, b in zip(before, (sc.mean_, sc.var_, sc.scale_,
                                               sc.n_samples_seen_, sc.stats_), strict=True))


@pytest.mark.parametrize("nt", [2, 3, 7])
def test_fitted_chunks_cover_every_channel_once(rng, nt):
    """The kernel's chunks of channels, as the threads call it: every chunk count writes
    each channel once (chunks that do not divide the channels evenly among them) and
    the flags sum to one call's."""
    st = _state(rng, 10, False, False)
    w = st.count

    def run(n):
        mean, var, scale = (np.full(10, -7.0) for _ in range(3))
        flags = np.zeros((n, 5), np.int64)
        for t in range(n):
            cpu_scaler._scaler_fitted(st.ints, st.floats, w, 1, True, t, n, mean, var,
                                      scale, flags)
        return np.stack([mean, var, scale]), flags.sum(axis=0)

    want, want_flags = run(1)
    got, got_flags = run(nt)
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    np.testing.assert_array_equal(got_flags, want_flags)


def test_n_samples_seen_is_an_array_of_its_own(rng):
    """Features counted differently: ``n_samples_seen_`` is a new array, not the fitted
    statistics' counts (writing into it changed what a later partial_fit merged into)."""
    X = rng.standard_normal((30, 3))
    X[:5, 1] = np.nan
    sc = StandardScaler().partial_fit(X[:10])
    seen = sc.n_samples_seen_
    assert seen.tolist() == [10, 5, 10]
    seen[:] = 0  # (the caller's to do with as it likes)
    sc.partial_fit(X[10:])
    assert sc.n_samples_seen_.tolist() == [30, 25, 30]
    np.testing.assert_allclose(sc.mean_, np.nanmean(X, axis=0), rtol=1e-12)


def test_the_kept_normalizer_follows_every_change_of_the_fit(rng):
    X = rng.standard_normal((50, 4)) * [1, 2, 3, 4] + [5, 6, 7, 8]
    Z = rng.standard_normal((9, 4))
    sc = StandardScaler().fit(X)
    keys = set(sc.__dict__)
    y = sc.transform(Z)
    assert set(sc.__dict__) == keys  # (kept outside the estimator)
    assert sc._normalizer(4) is sc._normalizer(4)  # built once
    np.testing.assert_allclose(y, (Z - sc.mean_) / sc.scale_, rtol=1e-15)

    def expect():
        m = sc.mean_ if sc.with_mean else 0.0
        s = sc.scale_ if sc.with_std else 1.0
        np.testing.assert_allclose(sc.transform(Z), (Z - m) / s, rtol=1e-15)
        np.testing.assert_allclose(sc.inverse_transform(Z), Z * s + m, rtol=1e-15)

    sc.mean_[1] += 1.0  # edits in place are seen ...
    expect()
    sc.scale_[2] = 0.5
    expect()
    sc.mean_[0] = np.nan  # ... NaNs too (the bits are compared)
    assert np.isnan(sc.transform(Z)[:, 0]).all()
    sc.mean_ = sc.mean_.copy()  # a new array of the same values
    sc.mean_[0] = 1.0
    expect()
    sc.mean_ = sc.mean_.tolist()  # a list (edited in place too)
    sc.transform(Z)
    sc.mean_[1] = -2.0
    np.testing.assert_allclose(sc.transform(Z)[:, 1], (Z[:, 1] + 2.0) / sc.scale_[1],
                               rtol=1e-15)
    sc.mean_ = np.array(sc.mean_)
    sc.set_params(with_mean=False)
    expect()
    sc.set_params(with_mean=True, with_std=False)
    expect()
    sc.set_params(with_std=True)
    sc.partial_fit(X + 3)  # new statistics
    expect()
    for other in (copy.deepcopy(sc), pickle.loads(pickle.dumps(sc))):
        np.testing.assert_array_equal(other.transform(Z), sc.transform(Z))
        other.mean_[0] += 1.0  # (its own arrays, its own kept normalizer)
        np.testing.assert_array_equal(other.transform(Z)[:, 1:], sc.transform(Z)[:, 1:])
        assert (other.transform(Z)[:, 0] != sc.transform(Z)[:, 0]).all()
    np.testing.assert_allclose(clone(sc).fit(X).transform(Z),
                               SkScaler().fit(X).transform(Z), rtol=1e-12)


@pytest.mark.parametrize("case", ["float32", "float16", "fortran", "strided", "readonly",
                                  "names", "features", "big-endian", "float64", "int16",
                                  "uint8", "int64", "readonly int"])
def test_a_plain_array_is_validated_as_scikit_learn_validates_it(rng, case):
    """The validation that returns a plain float or integer array of the fitted features
    as it is (no scikit-learn call) gives what scikit-learn's gives: the same warning,
    error and numbers, in every case around its conditions."""
    X = rng.standard_normal((30, 4))
    fit_on = X
    if case == "names":
        pd = pytest.importorskip("pandas")
        fit_on = pd.DataFrame(X, columns=list("abcd"))
    ours, theirs = StandardScaler().fit(fit_on), SkScaler().fit(fit_on)
    Z = {"float32": X.astype(np.float32), "float16": X.astype(np.float16),
         "fortran": np.asfortranarray(X), "strided": np.repeat(X, 2, axis=1)[:, ::2],
         "readonly": X.copy(), "names": X, "features": X[:, :3],
         "big-endian": X.astype(">f8"), "float64": X, "int16": np.round(X * 1e3).astype(np.int16),
         "uint8": np.clip(np.round(X * 30 + 100), 0, 255).astype(np.uint8),
         "int64": np.round(X * 1e6).astype(np.int64),
         "readonly int": np.round(X * 1e3).astype(np.int32)}[case]
    if case.startswith("readonly"):
        Z.setflags(write=False)
    if case == "features":
        for est in (ours, theirs):
            with pytest.raises(ValueError, match="X has 3 features, but StandardScaler is "
                               "expecting 4 features as input"):
                est.transform(Z)
        return
    if case == "names":
        for est in (ours, theirs):
            with pytest.warns(UserWarning, match="X does not have valid feature names"):
                est.transform(Z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for copy_ in (True, False):
            a, b = Z.copy(), Z.copy()
            a.setflags(write=Z.flags.writeable)
            b.setflags(write=Z.flags.writeable)
            if case == "strided":
                a, b = np.repeat(X, 2, axis=1)[:, ::2], np.repeat(X, 2, axis=1)[:, ::2]
            got, want = ours.transform(a, copy=copy_), theirs.transform(b, copy=copy_)
            assert got.dtype.str[1:] == want.dtype.str[1:]
            if case != "big-endian":  # (nbbn scales byte-swapped floats in place)
                assert got.dtype == want.dtype and (got is a) == (want is b)
            # (float16: scikit-learn rounds each operation to float16, nbbn once)
            tol = {2: 4e-3, 4: 1e-6, 8: 1e-12}[got.itemsize]  # (integers: float64 out)
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        got = ours.partial_fit(Z).mean_
        np.testing.assert_allclose(got, theirs.partial_fit(Z).mean_, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["int16", "uint8", "int64", "float32"])
def test_plain_arrays_skip_the_validation_call(rng, monkeypatch, dtype):
    """A plain native array of integers or floats (not empty, writable where it must
    be) is fitted, transformed and mapped back without scikit-learn's validation call
    (a spy says), to the numbers of the call."""
    import nbbn.sklearn as nsk

    calls = []
    real = nsk.validate_data
    monkeypatch.setattr(nsk, "validate_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    X = np.clip(np.round(rng.standard_normal((40, 5)) * 30 + 100), 0, 255).astype(dtype)
    ours = StandardScaler().fit(X)
    ours.partial_fit(X[:7])
    got, back = ours.transform(X), ours.inverse_transform(ours.transform(X))
    assert calls == []
    theirs = SkScaler().fit(X)
    theirs.partial_fit(X[:7])
    np.testing.assert_allclose(got, theirs.transform(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(back, theirs.inverse_transform(theirs.transform(X)),
                               rtol=1e-6, atol=1e-6)
    assert got.dtype == theirs.transform(X).dtype


def test_a_first_fit_of_a_plain_array_forgets_names_as_scikit_learn(rng):
    """A first fit of a plain float array (validated without scikit-learn's call) sets
    ``n_features_in_`` and drops the ``feature_names_in_`` of an earlier fit, as
    scikit-learn's validation does; a transform then takes the new features."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(rng.standard_normal((20, 3)), columns=["a", "b", "c"])
    X = rng.standard_normal((25, 5)).astype(np.float32)
    for est in (StandardScaler(), SkScaler()):
        est.fit(frame)
        assert list(est.feature_names_in_) == ["a", "b", "c"]
        est.fit(X)
        assert not hasattr(est, "feature_names_in_") and est.n_features_in_ == 5
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = est.transform(X)
        np.testing.assert_allclose(y, (X - X.mean(0)) / X.std(0), rtol=2e-5, atol=2e-6)
        with pytest.raises(ValueError, match="X has 3 features, but StandardScaler is "
                           "expecting 5 features as input"):
            est.transform(frame.to_numpy())
        with pytest.raises(ValueError, match="0 feature"):
            est.fit(np.empty((4, 0)))


@pytest.mark.parametrize("case", ["float64", "float32", "index", "blocks", "mixed",
                                  "nullable", "ints", "order", "renamed", "big-endian"])
def test_a_plain_frame_is_validated_as_scikit_learn_validates_it(rng, case, monkeypatch):
    """A DataFrame of the fitted names whose columns are all float32 or all float64 is
    converted without scikit-learn's validation call (checked by a spy), into what that
    call makes; every other DataFrame takes the call: the same numbers, warnings and
    errors as scikit-learn's own scaler, with ``copy=False`` and pandas output too."""
    pd = pytest.importorskip("pandas")
    import nbbn.sklearn as nsk

    calls = []
    real = nsk.validate_data
    monkeypatch.setattr(nsk, "validate_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    names = ["a", "b", "c", "d"]
    X = rng.standard_normal((30, 4)) * [1, 2, 3, 4] + 10
    fit_on = pd.DataFrame(X, columns=names)
    ours, theirs = StandardScaler().fit(fit_on), SkScaler().fit(fit_on)
    Z = rng.standard_normal((12, 4)) + 10
    frame = pd.DataFrame(Z, columns=names)
    if case == "float32":
        frame = frame.astype(np.float32)
    elif case == "index":
        frame.index = list("pqrstuvwxyzo")
    elif case == "blocks":
        frame = pd.DataFrame({"a": Z[:, 0], "b": Z[:, 1]})
        frame["c"], frame["d"] = Z[:, 2], Z[:, 3]
    elif case == "mixed":
        frame = frame.astype({"b": np.float32})
    elif case == "nullable":
        frame = frame.astype("Float64")
    elif case == "ints":
        frame = (frame * 10).round().astype(np.int64)
    elif case == "order":
        frame = frame[["b", "a", "c", "d"]]
    elif case == "renamed":
        frame.columns = ["a", "b", "c", "e"]
    elif case == "big-endian":
        frame = frame.astype(">f8")
    plain = case in ("float64", "float32", "index", "blocks")
    if case in ("order", "renamed"):
        for est in (ours, theirs):
            with pytest.raises(ValueError, match="feature names should match those that "
                               "were passed during fit"):
                est.transform(frame)
        return
    calls.clear()
    ours.transform(frame)
    ours.partial_fit(frame)
    theirs.partial_fit(frame)
    assert (len(calls) == 0) == plain, calls  # the short cut taken, and only there
    for copy_ in (True, False):
        mine, want = frame.copy(), frame.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got, exp = ours.transform(mine, copy=copy_), theirs.transform(want, copy=copy_)
        assert type(got) is np.ndarray and got.dtype.str[1:] == exp.dtype.str[1:]
        # (float32: scikit-learn rounds each operation to float32, nbbn once; at a mean
        # of 10, a float32 ulp is 1e-6)
        tol = 1e-5 if got.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, exp, rtol=tol, atol=tol)
        # (with copy=False both write the result into the frame's own block)
        np.testing.assert_allclose(mine.to_numpy(float), want.to_numpy(float), rtol=tol,
                                   atol=tol)
    np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-10)
    ours.set_output(transform="pandas")
    theirs.set_output(transform="pandas")
    got, want = ours.transform(frame), theirs.transform(frame)
    assert (got.index == want.index).all() and (got.columns == want.columns).all()
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(float), rtol=1e-5,
                               atol=1e-5)

