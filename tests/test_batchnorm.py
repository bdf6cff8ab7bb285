"""nbbn.BatchNorm against a pure-numpy model of torch's BatchNorm semantics (no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SIMULATOR
from reference import (
    RefBatchNorm,
    assert_close,
    random_array,
    ref_normalize,
    ref_stats,
    ref_stats_many,
)

import nbbn

RTOL = 1e-10


def _shape(kind, n, c, rng, channels_last=False):
    spatial = {"1d2": (), "1d3": (int(rng.integers(2, 6)),), "2d": (3, int(rng.integers(2, 5))),
               "3d": (2, 3, int(rng.integers(1, 4)))}[kind]
    return (n, *spatial, c) if channels_last else (n, c, *spatial)


def _assert_bn_matches(bn, ref):
    assert bn.training == ref.training
    if ref.running_mean is None:
        assert bn.running_mean is None and bn.running_var is None
        assert bn.num_batches_tracked is None
    else:
        assert isinstance(bn.running_mean, np.ndarray) and bn.running_mean.dtype == np.float64
        assert isinstance(bn.running_var, np.ndarray) and bn.running_var.dtype == np.float64
        assert_close(bn.running_mean, ref.running_mean, rtol=RTOL, atol=1e-12, name="running_mean")
        assert_close(bn.running_var, ref.running_var, rtol=RTOL, name="running_var")
        assert int(bn.num_batches_tracked) == ref.num_batches_tracked


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("kind", ["1d2", "1d3", "2d", "3d"])
def test_stream_matches_reference(kind, momentum, affine, track, channels_last, backend, rng):
    c = 3
    axis = -1 if channels_last else 1
    bn = nbbn.BatchNorm(c, eps=1e-5, momentum=momentum, affine=affine, track_running_stats=track,
                        channel_axis=axis, backend=backend)
    ref = RefBatchNorm(c, 1e-5, momentum, affine, track, channel_axis=axis)
    if affine:
        w, b = rng.uniform(0.5, 2.0, c), rng.standard_normal(c)
        bn.load_state_dict({**bn.state_dict(), "weight": w, "bias": b})
        ref.weight, ref.bias = w, b
    for step in range(4 if backend == "cuda" and SIMULATOR else 12):
        n = int(rng.integers(2, 7))
        x = random_array(rng, _shape(kind, n, c, rng, channels_last), "float64", channel_axis=axis)
        y = bn(x)
        assert y.dtype == np.float64 and y.shape == x.shape
        assert_close(y, ref(x), rtol=RTOL, atol=1e-10, name=f"train output step {step}")
        _assert_bn_matches(bn, ref)
    bn.eval()
    ref.training = False
    assert bn.training is False
    for step in range(3):
        x = random_array(rng, _shape(kind, 4, c, rng, channels_last), "float64", channel_axis=axis)
        assert_close(bn(x), ref(x), rtol=RTOL, atol=1e-10, name=f"eval output step {step}")
        _assert_bn_matches(bn, ref)


def test_defaults_and_buffers(backend):
    bn = nbbn.BatchNorm(4, backend=backend)
    assert bn.training is True
    np.testing.assert_array_equal(bn.weight, np.ones(4))
    np.testing.assert_array_equal(bn.bias, np.zeros(4))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(4))
    np.testing.assert_array_equal(bn.running_var, np.ones(4))
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert getattr(bn, name).dtype == np.float64, name
    assert int(bn.num_batches_tracked) == 0
    bn2 = nbbn.BatchNorm(4, affine=False, track_running_stats=False, backend=backend)
    assert bn2.weight is None and bn2.bias is None
    assert bn2.running_mean is None and bn2.running_var is None and bn2.num_batches_tracked is None


def test_train_eval_toggles(backend):
    bn = nbbn.BatchNorm(2, backend=backend)
    assert bn.eval() is bn or bn.eval() is None  # returns self like torch, or nothing
    assert bn.training is False
    bn.train()
    assert bn.training is True
    bn.train(False)
    assert bn.training is False
    bn.train(mode=True)
    assert bn.training is True


def test_classic_walkthrough(backend):
    """BatchNorm2d(3) on a (4, 3, 2, 2) batch: running_mean = 0.1 * batch mean,
    running_var = 0.9 + 0.1 * unbiased batch variance (independent formulas)."""
    x = np.arange(48, dtype=np.float32).reshape(4, 3, 2, 2) ** 1.5 / 7.0
    bn = nbbn.BatchNorm(3, backend=backend)
    y = bn(x)
    assert y.dtype == np.float32
    xc = np.moveaxis(x.astype(np.float64), 1, 0).reshape(3, -1)
    np.testing.assert_allclose(bn.running_mean, 0.1 * xc.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * xc.var(axis=1, ddof=1), rtol=1e-12)
    assert int(bn.num_batches_tracked) == 1
    zc = np.moveaxis(y.astype(np.float64), 1, 0).reshape(3, -1)
    np.testing.assert_allclose(zc.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(zc.var(axis=1), xc.var(axis=1) / (xc.var(axis=1) + 1e-5), rtol=1e-5)


def test_float32_output_dtype_and_accuracy(backend, rng):
    x = random_array(rng, (5, 3, 4, 4), "float32")
    bn = nbbn.BatchNorm(3, backend=backend)
    y = bn(x)
    assert y.dtype == np.float32
    st = ref_stats(x, 1)
    ref = ref_normalize(x, st.mean, st.var, eps=1e-5)
    assert_close(y, ref, rtol=1e-6, atol=1e-6)


def test_state_dict_keys(backend):
    cases = {
        (True, True): {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"},
        (True, False): {"weight", "bias"},
        (False, True): {"running_mean", "running_var", "num_batches_tracked"},
        (False, False): set(),
    }
    for (affine, track), keys in cases.items():
        bn = nbbn.BatchNorm(3, affine=affine, track_running_stats=track, backend=backend)
        assert set(bn.state_dict()) == keys, (affine, track)


def test_numpy_state_dict_is_a_copy(rng):
    """``state_dict(tensors=False)`` holds copies (the tensor form copies by converting;
    the numpy form shared the running buffers, so a later step rewrote it)."""
    bn = nbbn.BatchNorm(3)
    bn(random_array(rng, (8, 3), "float64"))
    d = bn.state_dict(tensors=False)
    kept = {k: np.array(v, copy=True) for k, v in d.items()}
    bn(random_array(rng, (8, 3), "float64"))
    with_params = bn.state_dict(tensors=False)
    with_params["weight"][...] = 5.0
    bn.reset_running_stats()
    for k in d:
        np.testing.assert_array_equal(d[k], kept[k])
    assert bn.state_dict(tensors=False)["weight"].tolist() == [1.0, 1.0, 1.0]


def test_state_dict_round_trip(backend, rng):
    bn = nbbn.BatchNorm(3, momentum=0.3, backend=backend)
    for _ in range(3):
        bn(random_array(rng, (4, 3, 5), "float64"))
    sd = bn.state_dict()
    bn2 = nbbn.BatchNorm(3, momentum=0.3, backend=backend)
    bn2.load_state_dict(sd)
    for k in sd:
        np.testing.assert_array_equal(np.asarray(bn2.state_dict()[k]), np.asarray(sd[k]), err_msg=k)
    assert int(bn2.num_batches_tracked) == 3
    x = random_array(rng, (4, 3, 5), "float64")
    bn.eval()
    bn2.eval()
    np.testing.assert_array_equal(bn(x), bn2(x))


def test_load_running_stats_and_to_normalizer(backend, rng):
    batches = [random_array(rng, (n, 3, 4, 2), "float32") for n in (2, 5, 3)]
    rs = nbbn.RunningStats(1, backend=backend)
    for b in batches:
        rs.update(b)
    bn = nbbn.BatchNorm(3, backend=backend)
    w, b_ = rng.uniform(0.5, 2.0, 3), rng.standard_normal(3)
    bn.load_state_dict({**bn.state_dict(), "weight": w, "bias": b_})
    bn.load_running_stats(rs)
    ref = ref_stats_many(batches, 1)
    np.testing.assert_array_equal(bn.running_mean, rs.mean)
    np.testing.assert_array_equal(bn.running_var, rs.variance(ddof=1))
    assert_close(bn.running_var, ref.variance(1), rtol=1e-12, name="running_var")
    bn.eval()
    x = random_array(rng, (3, 3, 4, 2), "float64")
    expect = ref_normalize(x, ref.mean, ref.variance(1), w, b_, 1e-5)
    assert_close(bn(x), expect, rtol=1e-10, atol=1e-10, name="eval output")
    norm = bn.to_normalizer()
    assert isinstance(norm, nbbn.Normalizer)
    assert_close(norm(x), bn(x), rtol=1e-12, atol=1e-12, name="to_normalizer output")
    # channels-last BatchNorm gives a channels-last normalizer
    bnl = nbbn.BatchNorm(3, channel_axis=-1, backend=backend)
    bnl.load_running_stats(rs)
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    expect_l = ref_normalize(xl, ref.mean, ref.variance(1), None, None, 1e-5, -1)
    assert_close(bnl.to_normalizer()(xl), expect_l, rtol=1e-10, atol=1e-10)


def test_eps_used(backend, rng):
    x = random_array(rng, (3, 2, 4), "float64")
    bn = nbbn.BatchNorm(2, eps=0.5, backend=backend)
    st = ref_stats(x, 1)
    assert_close(bn(x), ref_normalize(x, st.mean, st.var, eps=0.5), rtol=1e-12, atol=1e-12)


def test_frozen_and_checked_parameters():
    """A normalizer owns its parameters; weight and bias of the wrong shape are refused
    before a call changes any state; running_var >= 0 as load_state_dict; resets."""
    bn = nbbn.BatchNorm(2).eval()
    norm = bn.to_normalizer()
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    y0 = norm(x).copy()
    bn.bias[:] = 10.0
    bn.weight[:] = 5.0
    np.testing.assert_array_equal(norm(x), y0)
    np.testing.assert_array_equal(norm.weight, [1.0, 1.0])
    bn = nbbn.BatchNorm(3)
    bn.weight = np.array([2.0, 2.0])
    with pytest.raises(ValueError, match=r"weight must be shape \(3,\)"):
        bn(np.random.default_rng(0).normal(5, 1, (8, 3)))
    assert bn.num_batches_tracked == 0 and (bn.running_mean == 0).all()
    with pytest.raises(ValueError, match="running_var must be >= 0"):
        bn.running_var = [-1.0, 1.0, 1.0]
    bn.weight = [2.0, 2.0, 2.0]  # any array-like of the right shape
    bn(np.random.default_rng(0).normal(5, 1, (8, 3)))
    assert bn.num_batches_tracked == 1 and (bn.running_mean != 0).all()
    bn.reset_running_stats()
    assert bn.num_batches_tracked == 0 and (bn.running_mean == 0).all() \
        and (bn.running_var == 1).all() and bn.weight[0] == 2.0
    bn.reset_parameters()
    assert (bn.weight == 1).all() and (bn.bias == 0).all()
    # in place, as torch's: an array held before is reset too (it was replaced)
    held_w, held_b = bn.weight, bn.bias
    held_w[:] = 5.0
    held_b[:] = -2.0
    bn.reset_parameters()
    assert bn.weight is held_w and bn.bias is held_b
    assert held_w.tolist() == [1.0] * 3 and held_b.tolist() == [0.0] * 3


def test_state_dict_without_num_batches_tracked():
    """As torch's loader for checkpoints older than torch 0.4.1: the count is kept."""
    bn = nbbn.BatchNorm(2)
    d = bn.state_dict(tensors=False)
    del d["num_batches_tracked"]
    d["running_mean"] = np.array([1.0, 2.0])
    bn.num_batches_tracked = 7
    bn.load_state_dict(d)
    assert bn.num_batches_tracked == 7 and bn.running_mean.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="unexpected"):
        bn.load_state_dict({**d, "extra": np.zeros(2)})


def test_a_missing_count_is_kept_only_where_torch_keeps_it():
    """torch's loader keeps the module's count for a state dict without one only when
    the dict records no version 2 (torch 0.4.1 added the count) and the module tracks;
    otherwise the key is missing (nbbn filled it in every time)."""
    class Versioned(dict):  # (torch's OrderedDict with its _metadata)
        _metadata = {"": {"version": 2}}

    d = nbbn.BatchNorm(2).state_dict(tensors=False)
    del d["num_batches_tracked"]
    bn = nbbn.BatchNorm(2)
    bn.num_batches_tracked = 7
    with pytest.raises(ValueError, match=r"missing \['num_batches_tracked'\]"):
        bn.load_state_dict(Versioned(d))
    assert bn.load_state_dict(Versioned(d), strict=False).missing_keys == [
        "num_batches_tracked"]
    assert bn.num_batches_tracked == 7
    Versioned._metadata = {"": {"version": 1}}
    assert bn.load_state_dict(Versioned(d)).missing_keys == []
    bn.track_running_stats = False  # (the buffers stay; torch fills nothing in then)
    with pytest.raises(ValueError, match=r"missing \['num_batches_tracked'\]"):
        bn.load_state_dict(d)
    assert bn.num_batches_tracked == 7


def test_momentum_outside_0_1_is_refused():
    """torch takes a momentum of 2 and leaves a negative running variance, which no
    load_state_dict takes back (nbbn's own state dict was refused by nbbn)."""
    for m in (2.0, -0.5, 1.0 + 2**-52):
        with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
            nbbn.BatchNorm(2, momentum=m)
    for m in (0, 0.0, 1, 1.0, None):
        assert nbbn.BatchNorm(2, momentum=m).momentum == m


def test_numpy_state_dict_holds_the_count_as_torch_int64():
    """``num_batches_tracked`` is an int64 scalar in the numpy state_dict too (torch's
    buffer): the largest count a module takes comes back whole, and loads back."""
    bn = nbbn.BatchNorm(2)
    bn.num_batches_tracked = 2**63 - 2
    d = bn.state_dict(tensors=False)
    assert d["num_batches_tracked"].dtype == np.int64 and d["num_batches_tracked"].shape == ()
    assert int(d["num_batches_tracked"]) == 2**63 - 2
    again = nbbn.BatchNorm(2)
    again.load_state_dict(d)
    assert again.num_batches_tracked == 2**63 - 2


def test_to_normalizer_without_running_buffers_is_refused():
    """Built with ``track_running_stats=False``, eval mode normalizes with batch
    statistics: there are no frozen numbers to give a normalizer (it was a TypeError
    about a ``None`` mean)."""
    bn = nbbn.BatchNorm(3, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="track_running_stats=False: eval mode uses batch "
                                         "statistics"):
        bn.to_normalizer()


def test_load_state_dict_copies_into_the_weight_and_bias_held():
    """torch copies a loaded state into its parameters; nbbn replaced weight and bias,
    so an array held before kept the old values (the running buffers were in place)."""
    torch = pytest.importorskip("torch")
    bn = nbbn.BatchNorm(3, backend="cpu")
    w, b, mean = bn.weight, bn.bias, bn.running_mean
    bn.load_state_dict({**bn.state_dict(), "weight": torch.full((3,), 2.0),
                        "bias": np.array([1.0, 2.0, 3.0]), "running_mean": torch.ones(3)})
    assert bn.weight is w and bn.bias is b
    assert w.tolist() == [2.0] * 3 and b.tolist() == [1.0, 2.0, 3.0]
    assert mean.tolist() == [1.0] * 3
    with pytest.raises(ValueError, match="running_var must be >= 0"):  # (all or nothing)
        bn.load_state_dict({**bn.state_dict(), "weight": np.full(3, 5.0),
                            "running_var": -np.ones(3)})
    assert w.tolist() == [2.0] * 3 and bn.weight is w
