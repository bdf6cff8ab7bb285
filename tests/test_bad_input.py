"""Every bad input gets a clear error, and leaves the state exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKENDS, cuda_available

import nbbn
from nbbn.running_stats import FORMAT_VERSION

BAD_DTYPES = [
    (np.zeros((2, 3, 4), bool), "bool"),
    (np.zeros((2, 3, 4), np.complex64), "complex64"),
    (np.zeros((2, 3, 4), np.complex128), "complex128"),
    (np.zeros((2, 3, 4), object), "object"),
    (np.zeros((2, 3, 4), "U3"), r"U3|str"),
    (np.zeros((2, 3, 4), "S2"), r"S2|bytes"),
    (np.zeros((2, 3, 4), "datetime64[s]"), "datetime64"),
    (np.zeros((2, 3, 4), "timedelta64[ms]"), "timedelta64"),
]
BAD_DTYPE_IDS = [d for _, d in BAD_DTYPES]


def _state(rs):
    return rs.to_dict()


def _assert_unchanged(before, after):
    assert set(before) == set(after), (sorted(before), sorted(after))
    for k in before:
        a, b = before[k], after[k]
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=k)
            assert np.asarray(a).dtype == np.asarray(b).dtype, k
        else:
            assert a == b, (k, a, b)


def _fresh(backend, axis=1, policy="propagate", data=True):
    rs = nbbn.RunningStats(axis, nan_policy=policy, backend=backend)
    if data:
        rng = np.random.default_rng(0)
        shape = (4, 3, 5) if axis in (1, -2) else (4, 5, 3)
        rs.update(rng.standard_normal(shape))
    return rs


def _bn_state(bn):
    return {k: np.array(v, copy=True) for k, v in bn.state_dict(tensors=False).items()}


def _assert_bn_unchanged(bn, before):
    after = _bn_state(bn)
    assert set(after) == set(before)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("x,name", BAD_DTYPES, ids=BAD_DTYPE_IDS)
def test_update_bad_dtype(x, name, backend):
    rs = _fresh(backend)
    before = _state(rs)
    with pytest.raises(TypeError, match=name):
        rs.update(x)
    _assert_unchanged(before, _state(rs))
    empty = nbbn.RunningStats(backend=backend)
    with pytest.raises(TypeError, match=name):
        empty.update(x)
    assert empty.num_channels is None


@pytest.mark.parametrize("x,name", BAD_DTYPES, ids=BAD_DTYPE_IDS)
def test_channel_stats_bad_dtype(x, name, backend):
    with pytest.raises(TypeError, match=name):
        nbbn.channel_stats(x, backend=backend)


@pytest.mark.parametrize("x,name", BAD_DTYPES, ids=BAD_DTYPE_IDS)
def test_normalizer_bad_dtype(x, name, backend):
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), backend=backend)
    with pytest.raises(TypeError, match=name):
        norm(x)
    with pytest.raises(TypeError, match=name):
        nbbn.normalize(x, np.zeros(3), np.ones(3), backend=backend)


@pytest.mark.parametrize("x,name", BAD_DTYPES[:3], ids=BAD_DTYPE_IDS[:3])
def test_batchnorm_bad_dtype(x, name, backend):
    bn = nbbn.BatchNorm(3, backend=backend)
    before = _bn_state(bn)
    with pytest.raises(TypeError, match=name):
        bn(x)
    _assert_bn_unchanged(bn, before)


# --------------------------------------------------------------------------- shapes / axes


def test_zero_d_input(backend):
    rs = _fresh(backend)
    before = _state(rs)
    with pytest.raises(ValueError, match=r"0-d|scalar|ndim|dimension"):
        rs.update(np.array(3.0))
    _assert_unchanged(before, _state(rs))
    with pytest.raises(ValueError, match=r"0-d|scalar|ndim|dimension"):
        rs.update(np.float32(3.0))
    _assert_unchanged(before, _state(rs))
    with pytest.raises(ValueError, match=r"0-d|scalar|ndim|dimension"):
        nbbn.channel_stats(np.array(1.0), backend=backend)
    with pytest.raises(ValueError, match=r"0-d|scalar|ndim|dimension"):
        nbbn.normalize(np.array(1.0), np.zeros(1), np.ones(1), backend=backend)
    # with an axis a 1-d copy has (0, -1), the CUDA backend took a scalar as one channel
    # of one value (numpy's ascontiguousarray makes a 0-d array 1-d)
    for axis in (0, -1):
        rs = nbbn.RunningStats(axis, backend=backend)
        bn = nbbn.BatchNorm(1, channel_axis=axis, backend=backend).eval()
        norm = nbbn.Normalizer([1.0], [4.0], channel_axis=axis, backend=backend)
        for call, x in ((rs.update, np.float32(3)), (bn, np.array(3.0)),
                        (norm, np.array(3.0))):
            with pytest.raises(ValueError, match=r"got a 0-d array \(a scalar\)"):
                call(x)
        assert rs.count is None or rs.count.size == 0


@pytest.mark.parametrize("axis", [4, 7, -5])
def test_channel_axis_out_of_range(axis, backend):
    x = np.zeros((2, 3, 4, 5), np.float32)
    rs = nbbn.RunningStats(axis, backend=backend)
    with pytest.raises(ValueError, match=rf"(?s)(?=.*{axis})(?=.*\b4\b)"):
        rs.update(x)
    assert rs.num_channels is None
    with pytest.raises(ValueError, match=rf"(?s)(?=.*{axis})(?=.*\b4\b)"):
        nbbn.channel_stats(x, channel_axis=axis, backend=backend)
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=axis, backend=backend)
    with pytest.raises(ValueError, match=rf"(?s)(?=.*{axis})(?=.*\b4\b)"):
        norm(x)
    with pytest.raises(ValueError, match=rf"(?s)(?=.*{axis})(?=.*\b4\b)"):
        nbbn.normalize(x, np.zeros(3), np.ones(3), channel_axis=axis, backend=backend)
    bn = nbbn.BatchNorm(3, channel_axis=axis, backend=backend)
    before = _bn_state(bn)
    with pytest.raises(ValueError, match=rf"(?s)(?=.*{axis})(?=.*\b4\b)"):
        bn(x)
    _assert_bn_unchanged(bn, before)


def test_channel_axis_out_of_range_keeps_state(backend):
    rs = _fresh(backend, axis=2)  # state from a (4, 5, 3) batch: 3 channels
    before = _state(rs)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b2\b)(?=.*\b1\b)"):
        rs.update(np.zeros(5))  # a 1-d array has no axis 2
    _assert_unchanged(before, _state(rs))


@pytest.mark.parametrize("axis", [1, -1])
def test_channel_count_mismatch(axis, backend):
    rs = _fresh(backend, axis=axis)
    before = _state(rs)
    bad = np.zeros((2, 7, 5)) if axis == 1 else np.zeros((2, 5, 7))
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b7\b)(?=.*\b3\b)"):
        rs.update(bad)
    _assert_unchanged(before, _state(rs))


def test_merge_channel_mismatch(backend):
    a = _fresh(backend)
    b = nbbn.RunningStats(1, backend=backend).update(np.ones((2, 4, 3)))
    a_before, b_before = _state(a), _state(b)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b4\b)(?=.*\b3\b)"):
        a.merge(b)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b4\b)(?=.*\b3\b)"):
        a + b
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b4\b)(?=.*\b3\b)"):
        a += b
    _assert_unchanged(a_before, _state(a))
    _assert_unchanged(b_before, _state(b))


def test_invalid_nan_policy():
    with pytest.raises(ValueError, match="nan_policy"):
        nbbn.RunningStats(nan_policy="ignore")
    with pytest.raises(ValueError, match="nan_policy"):
        nbbn.channel_stats(np.zeros((2, 3)), nan_policy="drop")


def test_invalid_backend_name():
    with pytest.raises(ValueError, match="tpu"):
        nbbn.RunningStats(backend="tpu").update(np.zeros((2, 3)))


@pytest.mark.skipif("cuda" in BACKENDS and cuda_available(), reason="CUDA backend is available")
def test_cuda_backend_unavailable_is_clear():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises((RuntimeError, ImportError), match="(?i)cuda"):
        nbbn.RunningStats(backend="cuda").update(x)
    with pytest.raises((RuntimeError, ImportError), match="(?i)cuda"):
        nbbn.channel_stats(x, backend="cuda")
    with pytest.raises((RuntimeError, ImportError), match="(?i)cuda"):
        nbbn.Normalizer(np.zeros(3), np.ones(3), backend="cuda")(x)
    with pytest.raises((RuntimeError, ImportError), match="(?i)cuda"):
        nbbn.normalize(x, np.zeros(3), np.ones(3), backend="cuda")
    with pytest.raises((RuntimeError, ImportError), match="(?i)cuda"):
        nbbn.BatchNorm(3, backend="cuda")(x)


# --------------------------------------------------------------------------- nan_policy="raise"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_raise_policy(dtype, layout, bad, backend):
    axis = 1 if layout == "channels_first" else -1
    rs = _fresh(backend, axis=axis, policy="raise")
    before = _state(rs)
    shape = (3, 3, 4) if axis == 1 else (3, 4, 3)
    x = np.ones(shape, dtype)
    x[2, 1, 2] = bad  # one bad value, late in the batch
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        rs.update(x)
    _assert_unchanged(before, _state(rs))
    fresh = nbbn.RunningStats(axis, nan_policy="raise", backend=backend)
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        fresh.update(x)
    assert fresh.num_channels is None
    with pytest.raises(ValueError, match=r"(?i)nan|inf|finite"):
        nbbn.channel_stats(x, axis, nan_policy="raise", backend=backend)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_raise_policy_in_last_block_of_big_batch(layout, backend):
    """A NaN in the very last element of a multi-block batch: nothing of the batch applies."""
    axis = 1 if layout == "channels_first" else -1
    shape = (2, 3, 96, 90) if axis == 1 else (1000, 2, 5, 3)
    rs = _fresh(backend, axis=axis, policy="raise")
    before = _state(rs)
    x = np.ones(shape, np.float32)
    x.reshape(-1)[-1] = np.nan
    with pytest.raises(ValueError, match=r"(?i)nan"):
        rs.update(x)
    _assert_unchanged(before, _state(rs))


# --------------------------------------------------------------------------- empty batches


def test_empty_batch_no_op_every_policy(backend):
    for policy in ("propagate", "omit", "raise"):
        rs = _fresh(backend, policy=policy)
        before = _state(rs)
        rs.update(np.empty((0, 3, 5)))
        rs.update(np.empty((4, 3, 0), np.float16))
        _assert_unchanged(before, _state(rs))


# --------------------------------------------------------------------------- normalizer


def test_normalizer_mismatched_param_lengths(backend):
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b3\b)(?=.*\b4\b)"):
        nbbn.Normalizer(np.zeros(3), np.ones(4), backend=backend)
    with pytest.raises(ValueError, match=r"var must be shape \(3,\), got shape \(1,\)"):
        nbbn.Normalizer(np.zeros(3), np.ones(1), backend=backend)  # (not broadcast)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b3\b)(?=.*\b2\b)"):
        nbbn.Normalizer(np.zeros(3), np.ones(3), weight=np.ones(2), backend=backend)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b3\b)(?=.*\b5\b)"):
        nbbn.Normalizer(np.zeros(3), np.ones(3), bias=np.ones(5), backend=backend)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b3\b)(?=.*\b4\b)"):
        nbbn.normalize(np.zeros((2, 3)), np.zeros(3), np.ones(4), backend=backend)
    with pytest.raises(ValueError):
        nbbn.Normalizer(np.zeros((3, 1)), np.ones((3, 1)), backend=backend)


def test_normalizer_negative_var(backend):
    with pytest.raises(ValueError, match=r"(?i)var"):
        nbbn.Normalizer(np.zeros(3), np.array([1.0, -0.5, 2.0]), backend=backend)
    with pytest.raises(ValueError, match=r"(?i)var"):
        nbbn.normalize(np.zeros((2, 3)), np.zeros(3), np.array([1.0, -1e-300, 2.0]),
                       backend=backend)
    with pytest.raises(ValueError, match=r"got NaN in channels \[0\], whose mean is finite"):
        nbbn.Normalizer(np.zeros(2), np.array([np.nan, 1.0]), backend=backend)
    # statistics of data holding an infinity (mean inf, var NaN) are accepted, as before
    inf_stats = nbbn.channel_stats(np.array([[np.inf, 1.0], [0.0, 3.0]]), channel_axis=1)
    assert np.isinf(inf_stats.mean[0]) and np.isnan(inf_stats.var[0])
    inf_stats.to_normalizer()
    # a channel without statistics (mean and var NaN, as to_normalizer gives for an
    # all-NaN channel under nan_policy="omit"): accepted, its outputs NaN
    stats = nbbn.channel_stats(np.array([[np.nan, 1.0], [np.nan, 3.0]]), channel_axis=1,
                               nan_policy="omit", backend=backend)
    y = np.asarray(stats.to_normalizer()(np.ones((2, 2))))
    assert np.isnan(y[:, 0]).all() and np.isfinite(y[:, 1]).all()


def test_normalizer_scale_overflow_refused():
    """weight / sqrt(var + eps) beyond float64: every output of the channel would be
    inf or NaN (0 * inf at the mean), so the parameters are refused, naming them."""
    with pytest.raises(ValueError, match=r"overflows float64 in channels \[1\] \(weight "
                                         r"1e\+300, var 1e-200, eps 0\)"):
        nbbn.Normalizer(np.zeros(2), np.array([1.0, 1e-200]), eps=0.0,
                        weight=np.array([1.0, 1e300]))
    big = nbbn.Normalizer(np.zeros(1), np.array([1e-200]), eps=0.0, weight=np.array([1e10]))
    np.testing.assert_allclose(big.scale, [1e110], rtol=1e-15)


@pytest.mark.parametrize("eps", [-1e-5, -1.0])
def test_normalizer_negative_eps(eps, backend):
    with pytest.raises(ValueError, match="eps"):
        nbbn.Normalizer(np.zeros(3), np.ones(3), eps=eps, backend=backend)
    with pytest.raises(ValueError, match="eps"):
        nbbn.normalize(np.zeros((2, 3)), np.zeros(3), np.ones(3), eps=eps, backend=backend)
    rs = _fresh(backend)
    with pytest.raises(ValueError, match="eps"):
        rs.to_normalizer(eps=eps)


@pytest.mark.parametrize("axis", [1, -1])
def test_normalizer_wrong_channel_count(axis, backend):
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=axis, backend=backend)
    x = np.zeros((2, 5, 4)) if axis == 1 else np.zeros((2, 4, 5))
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b5\b)(?=.*\b3\b)"):
        norm(x)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b5\b)(?=.*\b3\b)"):
        norm.inverse(x)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b5\b)(?=.*\b3\b)"):
        nbbn.normalize(x, np.zeros(3), np.ones(3), channel_axis=axis, backend=backend)


def test_normalizer_bad_out(backend):
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), backend=backend)
    x = np.ones((2, 3, 4), np.float32)
    for out in (np.empty((2, 3, 5), np.float32), np.empty((2, 3), np.float32),
                np.empty((3, 2, 4), np.float32)):
        sentinel = out.copy()
        with pytest.raises(ValueError, match="shape"):
            norm(x, out=out)
        np.testing.assert_array_equal(out, sentinel)
    for dt in (np.int32, np.uint8, np.complex64, bool):
        out = np.zeros(x.shape, dt)
        with pytest.raises(ValueError, match=np.dtype(dt).name):
            norm(x, out=out)
        np.testing.assert_array_equal(out, np.zeros(x.shape, dt))
    with pytest.raises(ValueError, match="shape"):
        nbbn.normalize(x, np.zeros(3), np.ones(3), out=np.empty((2, 3, 5), np.float32),
                       backend=backend)
    with pytest.raises(ValueError, match="int"):
        norm.inverse(x, out=np.zeros(x.shape, np.int16))
    # the input is never touched by a rejected call
    np.testing.assert_array_equal(x, np.ones((2, 3, 4), np.float32))


# --------------------------------------------------------------------------- batchnorm


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), float("inf")])
def test_batchnorm_bad_eps(eps, backend):
    with pytest.raises(ValueError, match="eps"):
        nbbn.BatchNorm(3, eps=eps, backend=backend)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1), (1, 3, 1, 1, 1)])
def test_batchnorm_one_value_per_channel(shape, backend):
    bn = nbbn.BatchNorm(3, backend=backend)
    bn(np.random.default_rng(0).standard_normal((4, 3) + shape[2:]))
    before = _bn_state(bn)
    with pytest.raises(ValueError, match=r"(?i)more than 1 value|1 value"):
        bn(np.ones(shape, np.float32))
    _assert_bn_unchanged(bn, before)
    # eval mode with running stats accepts a single value
    bn.eval()
    y = bn(np.ones(shape, np.float32))
    assert y.shape == shape
    _assert_bn_unchanged(bn, before)


def test_batchnorm_one_value_channels_last(backend):
    bn = nbbn.BatchNorm(3, channel_axis=-1, backend=backend)
    before = _bn_state(bn)
    with pytest.raises(ValueError, match=r"(?i)1 value"):
        bn(np.ones((1, 1, 1, 3)))
    _assert_bn_unchanged(bn, before)


@pytest.mark.parametrize("axis", [1, -1])
def test_batchnorm_wrong_channel_count(axis, backend):
    bn = nbbn.BatchNorm(3, channel_axis=axis, backend=backend)
    before = _bn_state(bn)
    x = np.ones((4, 5, 2)) if axis == 1 else np.ones((4, 2, 5))
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b5\b)(?=.*\b3\b)"):
        bn(x)
    _assert_bn_unchanged(bn, before)
    bn.eval()
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b5\b)(?=.*\b3\b)"):
        bn(x)


def test_batchnorm_raise_keeps_nbt(backend):
    bn = nbbn.BatchNorm(3, backend=backend)
    bn(np.random.default_rng(1).standard_normal((4, 3, 2)))
    assert int(bn.num_batches_tracked) == 1
    with pytest.raises(TypeError):
        bn(np.ones((4, 3, 2), np.complex128))
    assert int(bn.num_batches_tracked) == 1


def test_load_running_stats_channel_mismatch(backend):
    bn = nbbn.BatchNorm(4, backend=backend)
    before = _bn_state(bn)
    rs = _fresh(backend)  # 3 channels
    with pytest.raises(ValueError, match=r"(?s)(?=.*\b4\b)(?=.*\b3\b)"):
        bn.load_running_stats(rs)
    _assert_bn_unchanged(bn, before)


# ------------------------------------------------------- attributes set after __init__
@pytest.mark.parametrize("attr,value,error", [
    ("eps", None, TypeError), ("eps", "1e-5", TypeError), ("eps", -10.0, ValueError),
    ("eps", float("nan"), ValueError), ("momentum", "0.1", TypeError),
    ("momentum", np.array([0.1, 0.2]), TypeError), ("momentum", float("inf"), ValueError),
    ("momentum", 2.0, ValueError), ("momentum", -0.1, ValueError),
])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_attribute_set_later_is_checked_first(attr, value, error, training,
                                                        backend):
    # torch users write bn.momentum = 0.01: a bad value is refused before the call
    # moves num_batches_tracked or the running buffers (it used to raise after both)
    x = np.random.default_rng(2).standard_normal((8, 3))
    bn = nbbn.BatchNorm(3, backend=backend)
    bn(x)
    bn.train(training)
    before = _bn_state(bn)
    setattr(bn, attr, value)
    with pytest.raises(error, match=attr):
        bn(x)
    _assert_bn_unchanged(bn, before)


def test_batchnorm_one_value_message_names_the_mode(backend):
    bn = nbbn.BatchNorm(3, track_running_stats=False, backend=backend).eval()
    with pytest.raises(ValueError, match="batch statistics"):
        bn(np.zeros((1, 3)))


@pytest.mark.parametrize("value", [-3, 2.7, "3", np.nan, 2**63, np.uint64(2**64 - 1), 1e300,
                                   None])
def test_load_state_dict_bad_num_batches_tracked(value, backend):
    bn = nbbn.BatchNorm(3, backend=backend)
    before = _bn_state(bn)
    with pytest.raises(ValueError, match="num_batches_tracked must be an integer >= 0"):
        bn.load_state_dict({**bn.state_dict(tensors=False), "num_batches_tracked": value})
    _assert_bn_unchanged(bn, before)
    bn.load_state_dict({**bn.state_dict(tensors=False), "num_batches_tracked": np.int64(7)})
    assert bn.num_batches_tracked == 7


def test_load_state_dict_negative_running_var_changes_nothing(backend, rng):
    # NaN passed the loader's own check ("< 0") and then failed in the running_var
    # setter after other keys were set (by the hash seed's order of the keys); a
    # negative variance, refused by both, must leave every key as it was
    bn = nbbn.BatchNorm(3, backend=backend)
    bn.train()(rng.standard_normal((8, 3)) * 4 + 2)
    before = _bn_state(bn)
    bad = {key: v + 1 for key, v in bn.state_dict(tensors=False).items()}
    bad["running_var"] = np.array([1.0, -0.5, np.nan])
    with pytest.raises(ValueError, match=r"running_var must be >= 0 \(or NaN\), got \[-0.5\]"):
        bn.load_state_dict(bad)
    _assert_bn_unchanged(bn, before)


def test_a_nan_running_var_loads_back_as_in_torch(backend):
    """A training step on a batch with a NaN leaves a NaN in ``running_var`` (torch's
    too); nbbn refused to load that state back (its own, or torch's: ``from_torch``),
    where torch's ``load_state_dict`` takes it."""
    x = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]])
    bn = nbbn.BatchNorm(2, backend=backend)
    bn(x)
    assert np.isnan(bn.running_var[1]) and np.isfinite(bn.running_var[0])
    again = nbbn.BatchNorm(2, backend=backend)
    again.load_state_dict(bn.state_dict(tensors=False))
    np.testing.assert_array_equal(again.running_var, bn.running_var)
    again.running_var = bn.running_var
    np.testing.assert_array_equal(again.running_var, bn.running_var)


def test_load_state_dict_repairs_a_wrong_weight():
    """The all-or-nothing backup read the current values through state_dict(), which
    checks them: a BatchNorm whose weight was set to a wrong length could not be
    repaired by loading a good state."""
    bn = nbbn.BatchNorm(3)
    bn.weight = np.ones(5)
    good = nbbn.BatchNorm(3).state_dict(tensors=False)
    bn.load_state_dict(good)
    np.testing.assert_array_equal(bn.state_dict(tensors=False)["weight"], np.ones(3))


def test_load_state_dict_failing_setter_restores_every_key(monkeypatch, rng):
    bn = nbbn.BatchNorm(3)
    bn.train()(rng.standard_normal((8, 3)) * 4 + 2)
    before = _bn_state(bn)
    new = {key: v + 1 for key, v in bn.state_dict(tensors=False).items()}

    def refuse(self, value):
        raise KeyboardInterrupt

    # (running_var is set after weight, bias and running_mean)
    monkeypatch.setattr(nbbn.BatchNorm, "running_var",
                        property(nbbn.BatchNorm.running_var.fget, refuse))
    with pytest.raises(KeyboardInterrupt):
        bn.load_state_dict(new)
    monkeypatch.undo()
    _assert_bn_unchanged(bn, before)


@pytest.mark.parametrize("value", [None, -1, "3", 2**63])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_num_batches_tracked_set_by_hand_is_checked_per_call(value, momentum, rng):
    # (an AssertionError, a ZeroDivisionError, a str + int TypeError; 2**63 overflowed
    # torch's int64 buffer in state_dict)
    bn = nbbn.BatchNorm(3, momentum=momentum)
    bn(rng.standard_normal((4, 3)))
    before = _bn_state(bn)
    bn.num_batches_tracked = value
    with pytest.raises(ValueError, match="num_batches_tracked must be an integer >= 0"):
        bn(rng.standard_normal((4, 3)))
    bn.num_batches_tracked = 1
    _assert_bn_unchanged(bn, before)


def test_masked_or_complex_parameters_are_refused(rng):
    """Per-channel parameters read the values under a mask, dropped an imaginary part
    (with only numpy's warning) and parsed strings, where batches and sample weights
    refuse such input."""
    masked = np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    with pytest.raises(TypeError, match=r"mean is a numpy masked array.*mean.filled"):
        nbbn.Normalizer(masked, [1.0] * 3)
    with pytest.raises(TypeError, match="var must hold real numbers, got dtype complex128"):
        nbbn.Normalizer([0.0] * 3, np.ones(3, complex))
    with pytest.raises(TypeError, match=r"mean must hold real numbers, got None"):
        nbbn.Normalizer([1.0, None, 3.0], [1.0] * 3)  # (it read as NaN)
    with pytest.raises(TypeError, match="weight must hold real numbers, got dtype <U"):
        nbbn.Normalizer([0.0] * 3, [1.0] * 3, weight=["1", "2", "3"])
    bn = nbbn.BatchNorm(3)
    before = _bn_state(bn)
    bn.bias = masked
    with pytest.raises(TypeError, match="bias is a numpy masked array"):
        bn(rng.standard_normal((4, 3)))
    with pytest.raises(TypeError, match="running_mean is a numpy masked array"):
        bn.running_mean = masked
    bn.bias = np.zeros(3)
    _assert_bn_unchanged(bn, before)
    unmasked = np.ma.array([1.0, 2.0, 3.0])  # (no masked element: read as its data)
    np.testing.assert_array_equal(nbbn.Normalizer(unmasked, [1.0] * 3).mean, [1.0, 2.0, 3.0])


def test_state_dict_of_weights_set_as_lists_or_tensors(rng):
    bn = nbbn.BatchNorm(3)
    bn.weight, bn.bias = [1.0, 2.0, 3.0], (0.5, 0.5, 0.5)  # (plain attributes)
    y = bn(rng.standard_normal((4, 3)))
    d = bn.state_dict(tensors=False)
    np.testing.assert_array_equal(d["weight"], [1.0, 2.0, 3.0])
    assert d["bias"].dtype == np.float64 and d["bias"].tolist() == [0.5] * 3
    torch = pytest.importorskip("torch")
    bn.weight = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    expected = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.equal(bn.state_dict()["weight"], expected)
    assert isinstance(bn.to_torch(), torch.nn.Module) and isinstance(y, np.ndarray)


def test_booleans_are_not_numbers_and_from_dict_takes_a_dict(rng):
    for make in (lambda: nbbn.Normalizer([0.0], [1.0], eps=True),
                 lambda: nbbn.BatchNorm(1, momentum=True),
                 lambda: nbbn.BatchNorm(1, eps=np.bool_(True))):
        with pytest.raises(TypeError, match="must be a number"):
            make()
    with pytest.raises(TypeError, match="from_dict takes the dict of RunningStats.to_dict"):
        nbbn.RunningStats.from_dict(None)
    # (a path or a list read as missing fields, a ValueError that named none of this)
    with pytest.raises(TypeError, match=r"got str: for a statistics file, use "
                                        r"RunningStats.load\(path\)"):
        nbbn.RunningStats.from_dict("stats.npz")
    with pytest.raises(TypeError, match="to_dict\\(\\), got list$"):
        nbbn.RunningStats.from_dict(["version", "count"])

    class Fields:  # (a mapping by duck typing: what from_dict reads is [] and in)
        def __init__(self, d):
            self.d = d

        def __getitem__(self, key):
            return self.d[key]

        def __contains__(self, key):
            return key in self.d

        def get(self, key, default=None):
            return self.d.get(key, default)

    rs = nbbn.RunningStats(-1).update(rng.normal(size=(5, 2)))
    np.testing.assert_array_equal(nbbn.RunningStats.from_dict(Fields(rs.to_dict())).mean,
                                  rs.mean)


def test_to_normalizer_says_why_there_is_nothing(rng):
    rs = nbbn.RunningStats(-1, nan_policy="omit")
    with pytest.raises(ValueError, match="no update yet"):
        rs.to_normalizer()
    rs.update(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="only NaNs skipped under nan_policy='omit'"):
        rs.to_normalizer()


def test_load_running_stats_not_running_stats(backend):
    bn = nbbn.BatchNorm(3, backend=backend)
    before = _bn_state(bn)
    with pytest.raises(TypeError, match="RunningStats, got ndarray"):
        bn.load_running_stats(np.zeros(3))
    _assert_bn_unchanged(bn, before)


# ------------------------------------------------------------------- masked arrays
def test_masked_array_with_masked_values_refused(backend):
    rs = _fresh(backend, axis=-1)
    before = _state(rs)
    m = np.ma.masked_array(np.ones((4, 5, 3)), mask=np.zeros((4, 5, 3), bool))
    m[0, 0, 1] = np.ma.masked
    with pytest.raises(TypeError, match=r"masked array with 1 masked element\b.*filled"):
        rs.update(m)
    _assert_unchanged(before, _state(rs))
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=-1, backend=backend)
    with pytest.raises(TypeError, match=r"masked array.*to normalize, pass "
                                        r"x.filled\(value\) or x.data"):
        norm(m)
    with pytest.raises(TypeError, match="masked array"):
        nbbn.fit(m, channel_axis=-1, progress=False)


def test_masked_array_without_masked_values_is_its_data(backend):
    data = np.random.default_rng(3).standard_normal((4, 5, 3))
    a = nbbn.RunningStats(-1, backend=backend).update(np.ma.masked_array(data))
    b = nbbn.RunningStats(-1, backend=backend).update(np.ma.masked_array(data, mask=False))
    c = nbbn.RunningStats(-1, backend=backend).update(data)
    for rs in (a, b):
        np.testing.assert_array_equal(rs.mean, c.mean)
        np.testing.assert_array_equal(rs.count, c.count)


# ------------------------------------------------------------------ lists, paths
def test_ragged_and_object_lists_say_what_came(backend):
    rs = _fresh(backend, axis=-1)
    before = _state(rs)
    with pytest.raises(ValueError, match="not an array: numpy could not read the list"):
        rs.update([[1.0, 2.0, 3.0], [4.0]])
    with pytest.raises(TypeError, match="dtype object.*beyond int64"):
        rs.update([[1, 2, 3], [4, 5, 2 ** 70]])
    _assert_unchanged(before, _state(rs))


def test_save_to_a_folder_or_a_non_path(tmp_path):
    rs = _fresh("cpu")
    with pytest.raises(IsADirectoryError, match="is a folder: name the .npz file"):
        rs.save(tmp_path)
    assert list(tmp_path.iterdir()) == []  # (no temporary file left either)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        rs.save(5)


def test_save_under_a_text_name_is_refused(tmp_path):
    """save("stats.json") wrote an .npz archive that JSON readers and editors then
    opened as text."""
    rs = _fresh("cpu")
    for name in ("stats.json", "stats.yml", "s.CSV"):
        with pytest.raises(ValueError, match=r"not as (JSON|YML|CSV) text; name the file "
                                              r"\.npz"):
            rs.save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    rs.save(tmp_path / "stats.bin")  # (any other name: an .npz archive, as torch.save's)
    assert nbbn.RunningStats.load(tmp_path / "stats.bin").count.tolist() == [20] * 3


# ------------------------------------------------------------------- torch inputs
def test_torch_out_with_negative_bit_refused():
    torch = pytest.importorskip("torch")
    norm = nbbn.Normalizer([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], eps=0.0, channel_axis=-1,
                           backend="cpu")
    x = torch.arange(12.0).reshape(4, 3)
    out = torch.zeros(4, 3, dtype=torch.complex64).conj().imag
    assert out.is_neg()
    with pytest.raises(ValueError, match="negative or conjugate bit"):
        norm(x, out=out)
    bn = nbbn.BatchNorm(3, channel_axis=-1, backend="cpu")
    before = _bn_state(bn)
    with pytest.raises(ValueError, match="negative or conjugate bit"):
        bn(x, out=out)
    _assert_bn_unchanged(bn, before)
    plain = torch.zeros(4, 3)
    assert norm(x, out=plain) is plain
    np.testing.assert_array_equal(plain.numpy(), (x - torch.tensor([1.0, 2.0, 3.0])).numpy())


def test_torch_sparse_tensor_message():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="layout torch.sparse_coo.*to_dense"):
        nbbn.RunningStats(-1, backend="cpu").update(torch.eye(3).to_sparse())


def test_torch_sample_weight_grad_and_bfloat16():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(4).standard_normal((8, 3))
    w = np.arange(8.0)
    want = nbbn.RunningStats(-1, backend="cpu").update(x, sample_weight=w)
    for tw in (torch.tensor(w, requires_grad=True), torch.tensor(w, dtype=torch.bfloat16)):
        got = nbbn.RunningStats(-1, backend="cpu").update(x, sample_weight=tw)
        np.testing.assert_array_equal(got.mean, want.mean)
        np.testing.assert_array_equal(got.count, want.count)


@pytest.mark.parametrize("field,value,match", [
    ("version", np.int64(-1), "version must be >= 1"),
    ("version", np.int64(FORMAT_VERSION + 1),
     f"format version {FORMAT_VERSION + 1}, newer than this nbbn supports"),
    ("min", np.array([0.0, 5.0, 0.0]), "min exceeds max in channels \\[1\\]"),
])
def test_from_dict_inconsistent_state(field, value, match):
    d = _fresh("cpu").to_dict()
    if field == "min":
        d["max"] = np.array([1.0, 1.0, 1.0])
    d[field] = value
    with pytest.raises(ValueError, match=match):
        nbbn.RunningStats.from_dict(d)


def test_from_dict_weight_where_nothing_was_counted():
    rs = nbbn.RunningStats(-1, backend="cpu").update(np.ones((4, 3)), sample_weight=np.ones(4))
    d = rs.to_dict()
    d["weight"] = np.array([4.0, 0.0, 4.0])
    with pytest.raises(ValueError, match="weight must be > 0 exactly where count is"):
        nbbn.RunningStats.from_dict(d)


def test_from_dict_nan_mean_or_mean_lo_where_nothing_explains_it():
    """A NaN ``mean_lo`` (or a NaN mean in a channel without NaN or infinity) was
    taken: the statistics read right, and the next update made every variance NaN."""
    rs = nbbn.RunningStats(1, backend="cpu").update(np.arange(6.0).reshape(2, 3))
    for field, channel in (("mean_lo", 0), ("mean", 2)):
        d = rs.to_dict()
        d[field] = d[field].copy()
        d[field][channel] = np.nan
        with pytest.raises(ValueError, match=rf"mean or mean_lo is NaN or infinite in "
                                             rf"channels \[{channel}\]"):
            nbbn.RunningStats.from_dict(d)


def test_from_dict_refuses_fields_no_data_could_give():
    """Accepted before, each corrupting a later result: a ``mean_lo`` of 1 on a mean of
    3 (the next update moved the mean to 3.75), an infinite mean without an infinity,
    more NaNs than values under "propagate", an M2 for a single value."""
    rs = nbbn.RunningStats(-1, backend="cpu").update(np.array([[1.0, 4.0], [3.0, 4.0],
                                                               [5.0, 4.0]]))
    one = nbbn.RunningStats(-1, backend="cpu").update(np.array([[2.0, 7.0]]))
    for base, field, value, match in (
            (rs, "mean_lo", [1.0, 0.0], r"mean_lo above the last bit of its mean in "
                                        r"channels \[0\]"),
            (rs, "mean", [np.inf, 4.0], r"infinite mean where no infinity was counted"),
            (rs, "nan_count", [0, 4], r"NaNs and infinities\) than values counted in "
                                      r"channels \[1\]"),
            (rs, "inf_count", [4, 0], r"than values counted in channels \[0\]"),
            (one, "m2", [0.0, 2.0], r"M2 other than 0 for a single value in channels "
                                    r"\[1\]")):
        d = base.to_dict()
        d[field] = np.array(value, d[field].dtype)
        with pytest.raises(ValueError, match=match):
            nbbn.RunningStats.from_dict(d)
    # the rest of a mean within its last bit is what the kernels leave: taken
    d = rs.to_dict()
    d["mean_lo"] = np.array([np.spacing(3.0) / 2, 0.0])
    assert nbbn.RunningStats.from_dict(d).mean.tolist() == [3.0, 4.0]


def test_from_dict_channels_of_no_values_hold_none():
    """A channel of count 0 with a min, mean or M2 of its own (a hand-made dict) leaked
    them into the next update: a min of 1 in statistics of 10 alone. They read as the
    empty channel's; the NaNs an "omit" skipped stay counted."""
    rs = nbbn.RunningStats(-1, nan_policy="omit", backend="cpu").update(
        np.array([[1.0, np.nan], [3.0, np.nan], [5.0, np.nan]]))
    d = rs.to_dict()
    d["count"] = np.array([0, 0], d["count"].dtype)
    r = nbbn.RunningStats.from_dict(d).update(np.array([[10.0, 2.0]]))
    assert r.min.tolist() == [10.0, 2.0] and r.max.tolist() == [10.0, 2.0]
    assert r.mean.tolist() == [10.0, 2.0] and r.var.tolist() == [0.0, 0.0]
    assert r.nan_count.tolist() == [0, 3]


def test_from_dict_of_an_empty_state_sent_through_json():
    """``[]`` reads as float64: an empty state's ``count`` was refused as "must hold
    non-negative integers" (a non-empty one came back whole)."""
    import json

    for rs in (nbbn.RunningStats(-1), nbbn.RunningStats(-1).update(np.ones((2, 3)))):
        d = {k: v.tolist() if isinstance(v, np.ndarray) else v
             for k, v in rs.to_dict().items()}
        back = nbbn.RunningStats.from_dict(json.loads(json.dumps(d)))
        assert back.num_channels == rs.num_channels
        assert back.count.tolist() == rs.count.tolist()


def test_channel_names_must_be_unique():
    """Duplicate names were taken by the constructor, ``Normalizer`` and ``from_dict``,
    and no DataFrame batch could ever match them (its columns must be unique)."""
    with pytest.raises(ValueError, match=r"several channels named \['a'\]"):
        nbbn.RunningStats(-1, channel_names=["a", "a"])
    with pytest.raises(ValueError, match="names must be unique"):
        nbbn.Normalizer([0.0, 0.0], [1.0, 1.0], channel_names=["b", "b"])
    d = nbbn.RunningStats(-1, channel_names=["a", "b"]).update(np.ones((1, 2))).to_dict()
    d["channel_names"] = np.array(["a", "a"])
    with pytest.raises(ValueError, match="names must be unique"):
        nbbn.RunningStats.from_dict(d)


@pytest.mark.parametrize("weighted", [False, True])
def test_from_dict_takes_the_nan_and_infinite_states_kernels_leave(backend, weighted):
    if weighted and backend == "cuda":
        pytest.skip("no weighted CUDA kernels (BackendUnavailableError)")
    x = np.array([[1.0, np.nan, np.inf, -np.inf, 1e308], [2.0, 3.0, 4.0, np.inf, -1e308]])
    w = np.array([1.0, 3.0]) if weighted else None
    for policy in ("propagate", "omit"):
        rs = nbbn.RunningStats(1, nan_policy=policy, backend=backend)
        rs.update(x, sample_weight=w)
        back = nbbn.RunningStats.from_dict(rs.to_dict(), backend=backend)
        np.testing.assert_array_equal(back.update(x, sample_weight=w).mean,
                                      rs.update(x, sample_weight=w).mean)


def test_masked_sample_weight_refused():
    rs = _fresh("cpu", axis=-1)
    before = _state(rs)
    w = np.ma.masked_array(np.ones(4), mask=[True, False, False, False])
    with pytest.raises(TypeError, match="sample_weight is a numpy masked array"):
        rs.update(np.ones((4, 5, 3)), sample_weight=w)
    _assert_unchanged(before, _state(rs))


def test_empty_out_is_not_overlapping(backend):
    # numpy gives an empty array zero strides: it has no elements to overlap
    x = np.ones((4, 3), np.float32)[:0]
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=-1, backend=backend)
    out = np.empty((0, 3), np.float32)
    assert norm(x, out=out).shape == (0, 3)


def test_out_with_elements_overlapping_through_strides_is_refused(backend):
    # rows of 4 float32 at a stride of 8 bytes: row i's last two are row i+1's first two
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    buf = np.zeros(16, np.float32)
    out = np.lib.stride_tricks.as_strided(buf, (3, 4), (8, 4))
    bn = nbbn.BatchNorm(4, channel_axis=-1, backend=backend)
    before = _bn_state(bn)
    with pytest.raises(ValueError, match="two indices reach the same bytes"):
        bn(x, out=out)
    _assert_bn_unchanged(bn, before)
    np.testing.assert_array_equal(buf, 0)


def test_out_with_interleaved_strides_that_do_not_overlap_is_written(backend):
    # row 0 at bytes 0, 8, 16; row 1 at 12, 20, 28: interleaved, no element shared
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]], np.float32)
    buf = np.full(8, np.nan, np.float32)
    out = np.lib.stride_tricks.as_strided(buf, (2, 3), (12, 8))
    mean, var = np.array([1.0, -1.0, 0.5]), np.array([4.0, 1.0, 2.0])
    got = nbbn.Normalizer(mean, var, eps=0.0, channel_axis=-1, backend=backend)(x, out=out)
    want = (x - mean) / np.sqrt(var)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-6)


def test_masked_arrays_in_a_list_are_refused_as_one_alone():
    """``np.asarray`` of a list drops its items' masks: ``update([m, m])`` counted the
    masked values where ``update(m)`` refuses them."""
    m = np.ma.array(np.arange(6.0).reshape(3, 2), mask=[[0, 1], [0, 0], [0, 0]])
    rs = nbbn.RunningStats(1)
    for x in ([m, m], (m[0], m[1])):
        with pytest.raises(TypeError, match="an item of batch is a numpy masked array"):
            rs.update(x)
    assert rs.num_channels is None
    rs.update([np.ma.array([1.0, 2.0]), [3.0, 4.0]])  # (no masked element: its data)
    assert rs.count.tolist() == [2, 2]


def test_masks_deeper_than_a_list_or_behind_array_are_refused():
    """A list of lists of masked rows, and an object whose ``__array__`` gives a masked
    array, were read with the values under their masks (count 2 where one is valid)."""
    row = np.ma.array([-9999.0, 2.0], mask=[1, 0])

    class Lazy:
        def __array__(self, dtype=None, copy=None):
            return np.ma.vstack([row, row])

    rs = nbbn.RunningStats(-1)
    with pytest.raises(TypeError, match="an item of batch is a numpy masked array"):
        rs.update([[row], [np.ma.array([3.0, 4.0])]])
    with pytest.raises(TypeError, match=r"batch \(a Lazy read through its __array__\) is a "
                                        "numpy masked array with 2 masked elements"):
        rs.update(Lazy())
    with pytest.raises(TypeError, match=r"x \(a Lazy read through its __array__\)"):
        nbbn.Normalizer([0.0, 0.0], [1.0, 1.0], channel_axis=-1)(Lazy())
    assert rs.num_channels is None
    rs.update([[np.ma.array([1.0, 2.0])], [[3.0, 4.0]]])  # (no masked element: its data)
    assert rs.count.tolist() == [2, 2] and rs.mean.tolist() == [2.0, 3.0]


def test_sliced_sources_of_masked_rows_are_refused_by_fit_and_transform():
    """``nbbn.fit`` and ``nbbn.transform`` read a sliceable source (a netCDF4 variable
    gives masked slices where its fill value is) and a dask array of masked chunks
    through np.asarray, which drops the mask: the fill value -9999 was counted and
    normalized, where ``update`` refuses the same input."""
    da = pytest.importorskip("dask.array")
    x = np.arange(12.0).reshape(6, 2)
    m = np.ma.array(x.copy())
    m[1, 0] = np.ma.masked
    m.data[1, 0] = -9999.0

    class Variable:  # (netCDF4.Variable's reading: shape, dtype, slices)
        def __init__(self, a):
            self.a, self.shape, self.dtype = a, a.shape, a.dtype

        def __getitem__(self, key):
            return self.a[key]

    stats = nbbn.fit(x, progress=False)
    for source, where in ((Variable(m), "rows 0 to 6 of the input"),
                          (da.from_array(m, chunks=(3, 2), asarray=False), "rows 0:3")):
        with pytest.raises(TypeError, match=f"{where} is a numpy masked array with 1 masked"):
            nbbn.fit(source, progress=False)
        out = np.zeros((6, 2))
        with pytest.raises(TypeError, match="masked array with 1 masked"):
            nbbn.transform(source, stats, out, progress=False)
    whole = np.ma.array(x)  # (no masked element: its data, as an array passed whole)
    for source in (Variable(whole), da.from_array(whole, chunks=(3, 2), asarray=False)):
        np.testing.assert_array_equal(nbbn.fit(source, progress=False).mean, x.mean(0))


def test_a_longdouble_parameter_beyond_float64_is_refused():
    """A finite float128 of 1e400 became inf in the float64 cast (numpy's warning only):
    an infinite mean gave -inf outputs, where the Python int 10**400 is refused."""
    big = np.array([np.longdouble("1e400"), 1.0], dtype=np.longdouble)
    if not np.isfinite(big[0]):
        pytest.skip("this platform's longdouble is float64")
    for kw in ({"mean": big, "var": [1.0, 1.0]}, {"mean": [0.0, 0.0], "var": [1.0, 1.0],
                                                    "weight": big}):
        with pytest.raises(ValueError, match="must hold finite numbers, got a float(96|128)"):
            nbbn.Normalizer(channel_axis=-1, **kw)


def test_polars_and_arrow_tables_of_dates_and_bools_refused():
    """polars and pyarrow tables convert datetime, duration and bool columns to numbers
    (the mean of microseconds since 1970 came back), or fail in numpy's promotion with
    a raw DTypePromotionError; pandas tables were refused by column. Now all three."""
    import datetime as dt

    pl = pytest.importorskip("polars")
    pa = pytest.importorskip("pyarrow")
    days = [dt.datetime(2020, 1, d) for d in (1, 2, 3)]
    cases = [(pl.DataFrame({"t": days, "x": [1.0, 2.0, 3.0]}), r"'t' \(Datetime"),
             (pl.DataFrame({"flag": [True, False, True], "x": [1, 2, 3]}), "'flag'"),
             (pa.table({"flag": [True, False, True], "x": [1, 2, 3]}), r"'flag' \(bool\)"),
             (pa.table({"d": [dt.date(2020, 1, 1)] * 3, "x": [1.0, 2.0, 3.0]}),
              r"'d' \(date32")]
    norm = nbbn.Normalizer(np.zeros(2), np.ones(2), channel_axis=-1)
    for table, column in cases:
        rs = nbbn.RunningStats(-1)
        with pytest.raises(TypeError, match=f"must hold numbers, but the .* has the column "
                                            f"{column}"):
            rs.update(table)
        assert rs.num_channels is None
        with pytest.raises(TypeError, match="must hold numbers"):
            norm(table)
    ok = nbbn.RunningStats(-1).update(pl.DataFrame({"a": [1, 2], "b": [1.5, 2.5]}))
    np.testing.assert_array_equal(ok.mean, [1.5, 2.0])
    ok = nbbn.RunningStats(-1).update(pa.table({"a": [1, 2], "b": [1.5, 2.5]}))
    np.testing.assert_array_equal(ok.mean, [1.5, 2.0])


def test_ml_dtypes_bfloat16_named():
    """numpy arrays of ml_dtypes' bfloat16 (JAX's) were refused as "void/structured"."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.ones((3, 2), ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match=r"got dtype bfloat16 \(an ml_dtypes float, .*pass "
                                        r"x.astype\(np.float32\), or a torch bfloat16"):
        nbbn.RunningStats().update(x)


# ------------------------------------------------- edges found by mutation testing
def test_big_endian_input_gives_a_native_output():
    x = np.arange(12, dtype=">f4").reshape(4, 3)
    y = nbbn.Normalizer(np.zeros(3), np.ones(3), eps=0.0)(x)
    assert y.dtype == np.dtype("=f4") and y.dtype.isnative
    np.testing.assert_array_equal(y, x.astype(np.float32))


def test_read_only_out_is_refused():
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3))
    out = np.zeros((4, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        norm(np.ones((4, 3), np.float32), out=out)
    assert not out.any()


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_a_numpy_matrix_is_read_as_its_array():
    m = np.matrix([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
    np.testing.assert_array_equal(nbbn.channel_stats(m, -1).mean, [3.0, 4.0, 5.0])
    y = nbbn.Normalizer(np.zeros(3), np.full(3, 4.0), eps=0.0)(m)
    assert type(y) is np.ndarray
    np.testing.assert_array_equal(y, np.asarray(m) / 2)


def test_a_dataframe_with_a_text_column_names_it():
    pd = pytest.importorskip("pandas")
    with pytest.raises(TypeError, match="column 'b'"):
        nbbn.channel_stats(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}), -1)


def test_a_polars_int128_column_is_named():
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"a": pl.Series([1, 2], dtype=pl.Int128), "b": [1.0, 2.0]})
    with pytest.raises(TypeError, match="column 'a' \\(Int128\\)"):
        nbbn.channel_stats(df, -1)


@pytest.mark.parametrize("bad", ["out", "weight"])
def test_a_refused_empty_training_batch_is_not_counted(bad, backend):
    """An empty training batch counts in num_batches_tracked (as torch), but only once
    the call's checks have passed: an ``out`` of the wrong shape, or a weight of the
    wrong length, is refused with the count (and the buffers) left as they were."""
    bn = nbbn.BatchNorm(3, backend=backend)
    before = _bn_state(bn)
    x = np.zeros((0, 3))
    if bad == "out":
        with pytest.raises(ValueError):
            bn(x, out=np.zeros((0, 4)))
    else:
        bn.weight = np.ones(2)
        with pytest.raises(ValueError, match="weight"):
            bn(x)
        bn.weight = np.ones(3)
    _assert_bn_unchanged(bn, before)
    bn(x)  # (accepted, it counts)
    assert bn.num_batches_tracked == 1
