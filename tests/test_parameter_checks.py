"""Contracts mutation testing found unpinned (2026-12-04): nbbn._affine (out= checks) and
nbbn.batchnorm (state checks, to_normalizer)."""

from __future__ import annotations

import numpy as np
import pytest

import nbbn


def test_read_only_out_is_refused_with_a_value_error():
    """A read-only ``out=`` is a ValueError naming it (mutant: check removed, numba's
    typing error instead) and is left unwritten."""
    x = np.arange(6.0).reshape(3, 2)
    out = np.zeros((3, 2))
    out.flags.writeable = False
    norm = nbbn.Normalizer([1.0, 2.0], [1.0, 4.0], channel_axis=-1)
    with pytest.raises(ValueError, match="read-only"):
        norm(x, out=out)
    with pytest.raises(ValueError, match="read-only"):
        norm.inverse(x, out=out)
    with pytest.raises(ValueError, match="read-only"):
        nbbn.BatchNorm(2, channel_axis=-1)(x, out=out)
    assert not out.any()


def test_load_state_dict_refuses_a_negative_running_var_and_changes_nothing():
    """``load_state_dict`` with a negative running variance raises, all or nothing
    (mutant: the check removed, the negative variance loaded)."""
    bn = nbbn.BatchNorm(3)
    d = bn.state_dict(tensors=False)
    d["running_mean"] = np.array([1.0, 2.0, 3.0])
    d["running_var"] = np.array([1.0, -0.5, 2.0])
    with pytest.raises(ValueError, match="running_var"):
        bn.load_state_dict(d)
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))


def test_running_var_setter_refuses_negatives_and_takes_nan():
    """``bn.running_var = v`` refuses negative values (-inf too) and keeps the buffer;
    NaN is taken, as torch's ``load_state_dict`` takes it: a training step on a batch
    with a NaN leaves one there (refused before, so such a state could not load back)."""
    bn = nbbn.BatchNorm(2)
    for bad in ([1.0, -1.0], [-np.inf, 1.0], [np.nan, -1e-300]):
        with pytest.raises(ValueError, match=r"running_var must be >= 0 \(or NaN\)"):
            bn.running_var = np.array(bad)
        np.testing.assert_array_equal(bn.running_var, np.ones(2))
    bn.running_var = np.array([1.0, np.nan])
    np.testing.assert_array_equal(bn.running_var, [1.0, np.nan])


def test_load_running_stats_refuses_a_nan_unbiased_variance():
    """Statistics with one value per channel have no unbiased variance (NaN): precise BN
    refuses them rather than writing NaN buffers (mutant: only the mean checked)."""
    bn = nbbn.BatchNorm(2, channel_axis=-1)
    rs = nbbn.RunningStats(-1).update(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        bn.load_running_stats(rs)
    np.testing.assert_array_equal(bn.running_var, np.ones(2))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(2))


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_to_normalizer_keeps_eps(eps):
    """The frozen normalizer uses the BatchNorm's eps and maps as eval mode does
    (mutant: the default eps 1e-5)."""
    rng = np.random.default_rng(3)
    bn = nbbn.BatchNorm(3, eps=eps)
    bn.running_mean = rng.normal(size=3)
    bn.running_var = rng.uniform(0.1, 2.0, size=3)
    bn.weight = rng.normal(size=3)
    bn.bias = rng.normal(size=3)
    norm = bn.to_normalizer()
    assert norm.eps == eps
    x = rng.normal(size=(4, 3, 2))
    want = ((x - bn.running_mean[:, None]) / np.sqrt(bn.running_var[:, None] + eps)
            * bn.weight[:, None] + bn.bias[:, None])
    np.testing.assert_allclose(norm(x), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.eval()(x), want, rtol=1e-12, atol=1e-12)


# ------------------------------------- a review of the public API's arguments (2026-12-06)
def test_train_takes_a_bool_only_as_torch():
    """``train("eval")`` was training mode (``bool("eval")``); torch's ``Module.train``
    raises "training mode is expected to be boolean"."""
    bn = nbbn.BatchNorm(3)
    for mode in ("eval", 1, None, np.False_):
        with pytest.raises(ValueError, match="training mode is expected to be boolean"):
            bn.train(mode)
        assert bn.training is True
    assert bn.train(False).training is False and bn.eval().training is False


def test_arguments_named_in_their_errors(tmp_path):
    """Each was a raw error from deeper down (numpy, os, xarray), or taken as something
    else (an int path as a file descriptor; ``to_torch(True)`` as BatchNorm1d)."""
    x = np.ones((3, 2))
    for bad in ("5", None, [1], True):
        with pytest.raises(TypeError, match=r"checkpoint_interval must be a number of "
                                            r"seconds"):
            nbbn.fit(x, checkpoint_interval=bad, progress=False)
    for path in (None, 3):
        with pytest.raises(TypeError, match="the statistics file's path must be a str"):
            nbbn.RunningStats.load(path)
    bn = nbbn.BatchNorm(3)
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like"):
        bn.load_state_dict(None)
    for strict in ("False", 0, None):  # (a string from a config file: taken as True)
        with pytest.raises(TypeError, match="strict must be a bool"):
            bn.load_state_dict({"weight": np.full(3, 2.0)}, strict=strict)
    assert (bn.weight == 1).all()
    with pytest.raises(ValueError, match=r"the RunningStats are empty \(nothing was fitted\)"):
        bn.load_running_stats(nbbn.RunningStats())
    assert bn.num_batches_tracked == 0 and (bn.running_var == 1).all()
    with pytest.raises(TypeError, match=r"source must be a folder, a glob"):
        nbbn.ImageSource(None)
    pytest.importorskip("xarray")
    with pytest.raises(TypeError, match=r"dim must be a dimension name \(str\) or None"):
        nbbn.RunningStats(1).update(x).to_xarray(dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torch_modules_check_what_they_are_given():
    """``NormalizerModule`` (public) took a (1,) scale for 3 channels and applied it to
    all, cut ``channel_axis=1.7`` to 1, and built from 0-d values a module whose repr
    raised; ``BatchNorm.to_torch(True)`` gave a BatchNorm1d."""
    torch = pytest.importorskip("torch")
    import nbbn.torch as nt

    three = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"scale must be shape \(3,\), got shape \(1,\)"):
        nt.NormalizerModule(three, np.array([2.0]), np.zeros(3), 1)
    with pytest.raises(ValueError, match=r"mean must be a 1-d array, got shape \(\)"):
        nt.NormalizerModule(0.0, 1.0, 0.0, 1)
    for axis in (1.7, "1", True):
        with pytest.raises(TypeError, match="channel_axis must be an int"):
            nt.NormalizerModule(three, np.ones(3), np.zeros(3), axis)
    m = nt.NormalizerModule(three, np.full(3, 2.0), np.zeros(3), 1)
    assert torch.equal(m(torch.ones(2, 3, dtype=torch.float64)),
                       torch.tensor([[0.0, -2.0, -4.0]] * 2, dtype=torch.float64))
    # an input of 1 channel broadcast against the module's 3, and a 1-channel module
    # against 3 channels, both silently (as the Normalizer and torch's BatchNorm refuse)
    one = nt.NormalizerModule([1.0], [4.0], [0.0], 1)
    for mod, x, has, wants in ((m, torch.ones(2, 1, 5), 1, 3), (one, torch.ones(2, 3, 5), 3, 1),
                               (m, torch.ones(2, 4), 4, 3)):
        with pytest.raises(ValueError, match=f"the input has {has} channels along "
                                             f"channel_axis=1, the module normalizes {wants}"):
            mod(x.double())
        with pytest.raises(torch.jit.Error, match="channels along"):  # (scripted)
            torch.jit.script(mod)(x.double())
    for dim in (True, 2.0):
        with pytest.raises(TypeError, match="dim must be 1, 2 or 3"):
            nbbn.BatchNorm(3).to_torch(dim)


def test_integers_past_float64_are_refused_with_the_parameters_message():
    """A Python int past float64's range (10**400) raised a raw OverflowError from
    ``float()`` or ``astype``; the state stays as it was."""
    rs = nbbn.RunningStats(-1).update(np.arange(6.0).reshape(3, 2))
    big = 10 ** 400
    calls = {
        "eps must be a finite number": lambda: nbbn.Normalizer([0.0], [1.0], eps=big),
        "mean must hold finite numbers": lambda: nbbn.Normalizer([big], [1.0]),
        "weight must hold finite numbers": lambda: nbbn.Normalizer([1.0], [1.0], weight=[big]),
        "ddof must be a number within float64's range": lambda: rs.variance(ddof=big),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=what + ".*integer too large for float64"):
            call()
    bn = nbbn.BatchNorm(1)
    bn.momentum = big
    with pytest.raises(ValueError, match="momentum must be a finite number or None"):
        bn(np.ones((2, 1)))
    assert bn.num_batches_tracked == 0 and (bn.running_mean == 0).all()
    assert np.array_equal(rs.variance(ddof=1), [4.0, 4.0])
    assert np.isnan(rs.variance(ddof=2 ** 70)).all()  # (within float64's range: no count)


@pytest.mark.parametrize("axis", [10**20, -(10**20), 64, -65, np.int64(2**40)])
def test_a_channel_axis_of_no_array_is_refused_when_given(tmp_path, axis):
    """``RunningStats(channel_axis=10**20)`` was taken, and saved into a file that
    ``load`` called corrupt (an object array); any axis outside -64..63 (numpy's limit on
    dimensions) names no axis of any array. -64 and 63 are taken."""
    for make in (nbbn.RunningStats, lambda a: nbbn.BatchNorm(3, channel_axis=a),
                 lambda a: nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=a)):
        with pytest.raises(ValueError, match=rf"channel_axis={axis} is no axis of any array: "
                                             r"arrays have at most 64 dimensions"):
            make(axis)
    for ok in (-64, 63):
        rs = nbbn.RunningStats(ok)
        rs.save(tmp_path / "s.npz")
        assert nbbn.RunningStats.load(tmp_path / "s.npz").channel_axis == ok


def test_channel_axis_and_backend_are_checked_when_set():
    """The docs say channel_axis and backend may be set; a plain attribute took
    ``n.backend = "gpu"`` or ``n.channel_axis = 1.5`` and failed only at the next call.
    A refused value leaves the old one; a pickle from before (the plain names in its
    state) still loads."""
    import pickle

    objs = [nbbn.Normalizer(np.zeros(3), np.ones(3)), nbbn.RunningStats(1),
            nbbn.BatchNorm(3)]
    for obj in objs:
        with pytest.raises(ValueError, match=r"backend must be one of .* got 'gpu'"):
            obj.backend = "gpu"
        with pytest.raises(TypeError, match="channel_axis must be an int, got float"):
            obj.channel_axis = 1.5
        assert (obj.channel_axis, obj.backend) == (1, "auto")
        obj.channel_axis, obj.backend = -1, "cpu"
        again = pickle.loads(pickle.dumps(obj))
        assert (again.channel_axis, again.backend) == (-1, "cpu")
    for obj in objs[::2]:  # (their pickles hold __dict__)
        old = type(obj).__new__(type(obj))
        state = dict(obj.__getstate__() if hasattr(obj, "__getstate__") else obj.__dict__)
        state["channel_axis"], state["backend"] = state.pop("_channel_axis"), \
            state.pop("_backend")
        old.__setstate__(state)
        assert (old.channel_axis, old.backend) == (-1, "cpu")
        x = np.ones((2, 3))
        np.testing.assert_array_equal(np.asarray(old(x) if callable(old) else x), obj(x))


def test_flags_are_true_or_false_not_truthy(tmp_path):
    """``bool("False")`` is True: BatchNorm(affine="False") had a weight, and
    fit(resume="False") resumed; flags are bools (or 0 and 1) now, checked first."""
    x = np.arange(12.0).reshape(4, 3)
    for kw in ({"affine": "False"}, {"track_running_stats": None}, {"bias": "no"}):
        with pytest.raises(TypeError, match=f"{next(iter(kw))} must be True or False, got"):
            nbbn.BatchNorm(3, **kw)
    assert nbbn.BatchNorm(3, affine=0, bias=np.bool_(True)).weight is None
    ck = str(tmp_path / "fit.ckpt")
    nbbn.fit(x, checkpoint=ck, progress=False)
    with pytest.raises(TypeError, match="resume must be True or False, got 'False'"):
        nbbn.fit(x, checkpoint=ck, resume="False", progress=False)
    with pytest.raises(TypeError, match="progress must be True or False, got 'no'"):
        nbbn.fit(x, progress="no")
    with pytest.raises(TypeError, match="progress must be True or False, got None"):
        nbbn.transform(x, nbbn.fit(x, progress=False), str(tmp_path / "y.npy"),
                       progress=None)
    with pytest.raises(TypeError, match=r"checkpoint must be a path \(str or os.PathLike\), "
                                        "got int 1"):
        nbbn.fit(x, checkpoint=1, progress=False)


def test_nan_policy_is_checked_when_set():
    """A plain attribute took ``rs.nan_policy = "Omit"``: updates then propagated NaNs,
    and the saved file was refused by load."""
    rs = nbbn.RunningStats(-1)
    for bad, error in (("Omit", ValueError), (None, TypeError)):
        with pytest.raises(error, match="nan_policy must be"):
            rs.nan_policy = bad
    assert rs.nan_policy == "propagate"
    rs.nan_policy = "omit"
    rs.update(np.array([[1.0, np.nan], [3.0, 4.0]]))
    assert rs.count.tolist() == [2, 1] and rs.mean.tolist() == [2.0, 4.0]


def test_parameters_that_reached_numpy_dask_or_torch_unchecked(tmp_path):
    """Each raised the library underneath's own error (or took a wrong value): a ragged
    list of means, transform's dtype "float8", save(""), split_every=-1 (dask: "not
    'complex'"), a num_batches_tracked of "x" in state_dict (int()'s error; -5 was
    exported), to_torch(device=1.5) (read as a dtype: float64 buffers)."""
    with pytest.raises(ValueError, match="mean must be one number per channel, got a list"):
        nbbn.Normalizer([[1.0, 2.0], [3.0]], [1.0, 1.0, 1.0])
    x = np.arange(12.0).reshape(4, 3)
    stats = nbbn.fit(x, progress=False)
    with pytest.raises(TypeError, match="dtype must be float16, float32 or float64, got "
                                        "'float8'"):
        nbbn.transform(x, stats, str(tmp_path / "y.npy"), dtype="float8", progress=False)
    with pytest.raises(ValueError, match=r"got 'f16' \(float(96|128)\)"):
        nbbn.transform(x, stats, str(tmp_path / "y.npy"), dtype="f16", progress=False)
    with pytest.raises(ValueError, match="the statistics file's path is empty"):
        stats.save("")
    bn = nbbn.BatchNorm(3)
    for bad in ("x", None, -5):
        bn.num_batches_tracked = bad
        with pytest.raises(ValueError, match="num_batches_tracked must be an integer >= 0"):
            bn.state_dict(tensors=False)
    da = pytest.importorskip("dask.array")
    from nbbn.dask import channel_stats

    for bad, error in ((-1, ValueError), (10**30, ValueError), ("4", TypeError),
                       (True, TypeError)):
        with pytest.raises(error, match="split_every must be an integer from 2 to 2\\*\\*20"):
            channel_stats(da.from_array(x, chunks=2), split_every=bad)
    torch = pytest.importorskip("torch")
    norm = nbbn.Normalizer([0.0, 1.0], [1.0, 1.0])
    for bad in (1.5, torch.float64):
        with pytest.raises(TypeError, match="device must be a torch.device"):
            norm.to_torch(device=bad)
        with pytest.raises(TypeError, match="device must be a torch.device"):
            nbbn.BatchNorm(2).to_torch(device=bad)
    assert norm.to_torch(device="cpu").scale.device.type == "cpu"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torch_module_and_fold_refuse_what_they_misread():
    """The Normalizer's torch module normalized a complex tensor's real part (torch's
    warning only) and raised AttributeError on a numpy array; fold_normalizer took
    strict=None as False, folding a zero-padded conv wrongly at its borders."""
    torch = pytest.importorskip("torch")
    import nbbn.torch as nt

    mod = nbbn.Normalizer([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], channel_axis=1).to_torch()
    for x, what in ((torch.ones(2, 3, dtype=torch.complex64), "complex"),
                    (torch.ones(2, 3, dtype=torch.bool), "bool")):
        with pytest.raises(TypeError, match=f"real floating or integer tensor, got a {what}"):
            mod(x)
        with pytest.raises(torch.jit.Error, match=f"got a {what}"):
            torch.jit.script(mod)(x)
    with pytest.raises(TypeError, match="takes a torch tensor"):
        mod(np.ones((2, 3)))
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    norm = nbbn.Normalizer([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], channel_axis=1)
    with pytest.raises(TypeError, match="strict must be True or False, got None"):
        nt.fold_normalizer(conv, norm, strict=None)
