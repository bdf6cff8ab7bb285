"""nbbn.BatchNorm against torch.nn.BatchNorm{1,2,3}d (CPU): outputs, buffers, state_dict."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import SIMULATOR  # noqa: E402
from reference import assert_close, ref_stats  # noqa: E402

import nbbn  # noqa: E402

TORCH_BN = {"1d2": torch.nn.BatchNorm1d, "1d3": torch.nn.BatchNorm1d,
            "2d": torch.nn.BatchNorm2d, "3d": torch.nn.BatchNorm3d}
# float32 torch vs float64 nbbn buffers: rtol ~1e-5; float64 torch: tight.
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-10)}


def _spatial(kind, rng):
    return {"1d2": (), "1d3": (int(rng.integers(1, 7)),),
            "2d": (int(rng.integers(1, 5)), int(rng.integers(2, 5))),
            "3d": (int(rng.integers(1, 3)), 2, int(rng.integers(1, 4)))}[kind]


def _batch(rng, kind, c, dtype, n=None):
    n = int(rng.integers(2, 9)) if n is None else n
    shape = (n, c, *_spatial(kind, rng))
    loc = rng.uniform(-3, 3, c).reshape((1, c) + (1,) * (len(shape) - 2))
    scale = rng.uniform(0.5, 2, c).reshape(loc.shape)
    return (rng.standard_normal(shape) * scale + loc).astype(dtype)


EPS32 = float(np.finfo(np.float32).eps)


def _out_tol(x, mean, var, weight, dtype, eps=1e-5):
    """Output tolerance: torch float32 computes x - mean in float32, an absolute error of
    ~ulp(max|x|) that the division by sqrt(var + eps) amplifies (large when a small batch
    has a tiny variance). float64 torch is held to 1e-10."""
    if dtype == "float64":
        return TOL["float64"]
    c = len(mean)
    xm = np.moveaxis(np.asarray(x, np.float64), 1, 0).reshape(c, -1)
    w = np.ones(c) if weight is None else np.abs(np.asarray(weight, np.float64))
    amp = (np.abs(xm).max(axis=1) + np.abs(mean)) / np.sqrt(np.asarray(var, np.float64) + eps)
    atol = 1e-5 + 8 * EPS32 * amp * w
    return dict(rtol=1e-5, atol=atol.reshape((1, c) + (1,) * (np.ndim(x) - 2)))


def _tnp(t):
    return t.detach().cpu().numpy()


def _to_nbbn_layout(x, channels_last):
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if channels_last else x


def _from_nbbn_layout(y, channels_last):
    return np.moveaxis(y, -1, 1) if channels_last else y


def _compare_buffers(bn, tbn, tol):
    if tbn.running_mean is None:
        assert bn.running_mean is None and bn.running_var is None
        assert bn.num_batches_tracked is None
        return
    assert bn.running_mean.dtype == np.float64 and bn.running_var.dtype == np.float64
    assert_close(bn.running_mean, _tnp(tbn.running_mean), name="running_mean", **tol)
    assert_close(bn.running_var, _tnp(tbn.running_var), name="running_var", **tol)
    assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("track", [True, False], ids=["track", "notrack"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["m0.1", "mNone"])
@pytest.mark.parametrize("kind", list(TORCH_BN))
def test_stream_parity(kind, momentum, affine, track, channels_last, dtype, backend, rng):
    if backend == "cuda" and SIMULATOR and (kind in ("1d3", "3d") or dtype == "float64"):
        pytest.skip("a quarter of the matrix on the CUDA simulator (1d2 and 2d, float32)")
    c = 4
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    tol = TOL[dtype]
    tbn = TORCH_BN[kind](c, eps=1e-5, momentum=momentum, affine=affine,
                         track_running_stats=track).to(tdtype)
    bn = nbbn.BatchNorm(c, eps=1e-5, momentum=momentum, affine=affine, track_running_stats=track,
                        channel_axis=-1 if channels_last else 1, backend=backend)
    if affine:
        w, b = rng.uniform(0.5, 2.0, c), rng.standard_normal(c)
        with torch.no_grad():
            tbn.weight.copy_(torch.from_numpy(w))
            tbn.bias.copy_(torch.from_numpy(b))
        bn.load_state_dict({**bn.state_dict(), "weight": w, "bias": b})
    with torch.no_grad():
        weight = bn.weight if affine else None
        for step in range(6 if backend == "cuda" and SIMULATOR else 20):
            x = _batch(rng, kind, c, dtype)
            ty = _tnp(tbn(torch.from_numpy(x)))
            y = bn(_to_nbbn_layout(x, channels_last))
            assert y.dtype == np.dtype(dtype)
            st = ref_stats(x, 1)
            otol = _out_tol(x, st.mean, st.var, weight, dtype)
            assert_close(_from_nbbn_layout(y, channels_last), ty, name=f"train step {step}", **otol)
            _compare_buffers(bn, tbn, tol)
        tbn.eval()
        bn.eval()
        assert bn.training is False
        for step in range(3):
            x = _batch(rng, kind, c, dtype)
            ty = _tnp(tbn(torch.from_numpy(x)))
            y = bn(_to_nbbn_layout(x, channels_last))
            if track:
                otol = _out_tol(x, bn.running_mean, bn.running_var, weight, dtype)
            else:
                st = ref_stats(x, 1)
                otol = _out_tol(x, st.mean, st.var, weight, dtype)
            assert_close(_from_nbbn_layout(y, channels_last), ty, name=f"eval step {step}", **otol)
            _compare_buffers(bn, tbn, tol)
        # back to training: running stats continue from where they were
        tbn.train()
        bn.train()
        x = _batch(rng, kind, c, dtype)
        ty = _tnp(tbn(torch.from_numpy(x)))
        y = bn(_to_nbbn_layout(x, channels_last))
        st = ref_stats(x, 1)
        otol = _out_tol(x, st.mean, st.var, weight, dtype)
        assert_close(_from_nbbn_layout(y, channels_last), ty, name="train again", **otol)
        _compare_buffers(bn, tbn, tol)


@pytest.mark.parametrize("kind", ["1d2", "2d"])
def test_state_dict_to_torch_and_back(kind, backend, rng):
    c = 3
    bn = nbbn.BatchNorm(c, momentum=0.2, backend=backend)
    bn.load_state_dict({**bn.state_dict(), "weight": rng.uniform(0.5, 2, c),
                        "bias": rng.standard_normal(c)})
    for _ in range(5):
        bn(_batch(rng, kind, c, "float32"))
    sd = bn.state_dict()
    assert set(sd) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    tbn = TORCH_BN[kind](c, momentum=0.2)
    tbn.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in sd.items()})
    assert int(tbn.num_batches_tracked) == 5
    tbn.eval()
    bn.eval()
    x = _batch(rng, kind, c, "float32")
    with torch.no_grad():
        assert_close(bn(x), _tnp(tbn(torch.from_numpy(x))), rtol=1e-5, atol=1e-5, name="eval")

    # torch -> nbbn: train torch further, load its tensors (float32) into a fresh nbbn
    tbn.train()
    with torch.no_grad():
        for _ in range(3):
            tbn(torch.from_numpy(_batch(rng, kind, c, "float32")))
    bn2 = nbbn.BatchNorm(c, momentum=0.2, backend=backend)
    bn2.load_state_dict(tbn.state_dict())
    assert int(bn2.num_batches_tracked) == 8
    for k in ("weight", "bias", "running_mean", "running_var"):
        got = getattr(bn2, k)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64, k
        np.testing.assert_array_equal(got, _tnp(tbn.state_dict()[k]).astype(np.float64), err_msg=k)
    tbn.eval()
    bn2.eval()
    x = _batch(rng, kind, c, "float32")
    with torch.no_grad():
        assert_close(bn2(x), _tnp(tbn(torch.from_numpy(x))), rtol=1e-5, atol=1e-5, name="eval 2")


def test_state_dict_without_affine_or_tracking_loads_into_torch(backend, rng):
    for affine, track in [(False, True), (True, False), (False, False)]:
        bn = nbbn.BatchNorm(3, affine=affine, track_running_stats=track, backend=backend)
        bn(_batch(rng, "2d", 3, "float32"))
        tbn = torch.nn.BatchNorm2d(3, affine=affine, track_running_stats=track)
        tbn.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in bn.state_dict().items()})
        bn2 = nbbn.BatchNorm(3, affine=affine, track_running_stats=track, backend=backend)
        bn2.load_state_dict(tbn.state_dict())
        assert set(bn2.state_dict()) == set(tbn.state_dict())


def test_a_nan_batch_state_goes_both_ways_as_torch(backend):
    """A NaN in a training batch leaves NaN buffers in torch and in nbbn alike; torch
    takes such a state in ``load_state_dict``, and so do nbbn's loader and
    ``BatchNorm.from_torch`` (they refused a NaN ``running_var``)."""
    x = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]])
    tbn = torch.nn.BatchNorm1d(2, dtype=torch.float64)
    tbn(torch.from_numpy(x))
    bn = nbbn.BatchNorm(2, backend=backend)
    bn(x)
    for key, v in tbn.state_dict().items():
        np.testing.assert_allclose(np.asarray(bn.state_dict(tensors=False)[key]), v.numpy(),
                                   rtol=1e-12)
    for loaded in (nbbn.BatchNorm.from_torch(tbn), nbbn.BatchNorm(2, backend=backend)):
        loaded.load_state_dict(tbn.state_dict())
        np.testing.assert_allclose(loaded.running_var, tbn.running_var.numpy(), rtol=1e-12)
    torch.nn.BatchNorm1d(2).load_state_dict(bn.state_dict(tensors=True))


def test_precise_bn_matches_torch_cumulative_average(backend, rng):
    """load_running_stats(rs) with equal-size batches equals torch's momentum=None running_mean,
    and its running_var is the unbiased variance of the whole stream."""
    c = 3
    batches = [rng.standard_normal((4, c, 3, 2)) * 2 + rng.uniform(-3, 3) for _ in range(6)]
    rs = nbbn.RunningStats(1, backend=backend)
    tbn = torch.nn.BatchNorm2d(c, momentum=None).double()
    with torch.no_grad():
        for b in batches:
            rs.update(b)
            tbn(torch.from_numpy(b))
    bn = nbbn.BatchNorm(c, backend=backend)
    bn.load_running_stats(rs)
    assert_close(bn.running_mean, _tnp(tbn.running_mean), rtol=1e-12, atol=1e-12)
    whole = np.concatenate(batches)
    ref = ref_stats(whole, 1)
    assert_close(bn.running_var, ref.variance(1), rtol=1e-12)


def test_one_value_per_channel_like_torch(backend):
    x = np.ones((1, 3), np.float32)
    with pytest.raises(ValueError):
        torch.nn.BatchNorm1d(3)(torch.from_numpy(x))
    with pytest.raises(ValueError):
        nbbn.BatchNorm(3, backend=backend)(x)


def test_one_value_per_channel_refused_as_torch_without_running_stats():
    """Without running statistics an eval-mode module normalizes with the batch's own
    statistics, so one value per channel is refused there too, as torch refuses it."""
    for training in (True, False):
        tbn = torch.nn.BatchNorm1d(3, track_running_stats=False).train(training)
        with pytest.raises(ValueError, match="more than 1 value"):
            tbn(torch.ones(1, 3))
        bn = nbbn.BatchNorm(3, track_running_stats=False).train(training)
        with pytest.raises(ValueError, match="more than 1 value"):
            bn(np.ones((1, 3)))
    bn = nbbn.BatchNorm(3).eval()  # (with running statistics: one value is fine)
    assert bn(np.ones((1, 3))).shape == (1, 3)


def test_eps_zero_as_torch(backend, rng):
    """eps=0, as torch: refused when normalizing with batch statistics (state left
    unchanged, where torch has already counted the batch); accepted in eval mode, where
    channels of nonzero running variance match torch and a channel of zero variance is
    scaled by 1, where torch divides by 0."""
    tbn = torch.nn.BatchNorm2d(3, eps=0.0).double()
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor([2.0, -1.0, 0.5]))
        tbn.bias.copy_(torch.tensor([0.25, 1.0, -3.0]))
    bn = nbbn.BatchNorm.from_torch(tbn, backend=backend)
    assert bn.eps == 0.0
    x = _batch(rng, "2d", 3, "float64", n=4)
    with pytest.raises(ValueError, match="eps must be positive"):
        tbn(torch.from_numpy(x))
    for untracked in (False, True):
        b = nbbn.BatchNorm(3, eps=0.0, track_running_stats=not untracked, backend=backend)
        if untracked:
            b.eval()
        with pytest.raises(ValueError, match=r"eps must be > 0 .*got eps=0\.0"):
            b(x)
        assert b.num_batches_tracked == (None if untracked else 0)
    tbn.eval()
    with torch.no_grad():
        tbn.running_mean.copy_(torch.tensor([1.0, -2.0, 3.0]))
        tbn.running_var.copy_(torch.tensor([4.0, 0.0, 0.25]))
    bn = nbbn.BatchNorm.from_torch(tbn, backend=backend)
    y, ty = bn(x), _tnp(tbn(torch.from_numpy(x)))
    assert not np.isfinite(ty[:, 1]).any()
    assert_close(y[:, 1], 1.0 - (x[:, 1] + 2.0), **TOL["float64"])
    assert_close(y[:, [0, 2]], ty[:, [0, 2]], **TOL["float64"])


@pytest.mark.parametrize("momentum", [None, 0.1])
def test_empty_training_batch_counts_as_torch(momentum, backend, rng):
    """torch adds 1 to num_batches_tracked before it looks at the batch, so an empty
    training batch counts (and changes nothing else); with momentum=None that halves
    the weight of the next batch."""
    tbn = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    bn = nbbn.BatchNorm(3, momentum=momentum, backend=backend)
    empty = np.zeros((0, 3, 2, 2))
    x = _batch(rng, "2d", 3, "float64", n=4)
    y_empty = bn(empty)
    assert y_empty.shape == (0, 3, 2, 2)
    tbn(torch.from_numpy(empty))
    assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked) == 1
    y = bn(x)
    ty = tbn(torch.from_numpy(x))
    assert int(bn.num_batches_tracked) == int(tbn.num_batches_tracked) == 2
    assert_close(bn.running_mean, _tnp(tbn.running_mean), **TOL["float64"])
    assert_close(bn.running_var, _tnp(tbn.running_var), **TOL["float64"])
    assert_close(y, _tnp(ty), **TOL["float64"])


@pytest.mark.parametrize("affine", [True, False])
def test_bias_false_state_dict_with_torch(affine, backend, rng):
    """torch's ``bias=False`` keyword: a weight and no bias; state_dicts load both ways
    and the outputs agree."""
    tbn = torch.nn.BatchNorm2d(3, affine=affine, bias=False).double()
    if affine:
        with torch.no_grad():
            tbn.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    x = _batch(rng, "2d", 3, "float64", n=5)
    tbn(torch.from_numpy(x))  # a training step: the buffers move
    bn = nbbn.BatchNorm(3, affine=affine, bias=False, backend=backend)
    assert set(bn.state_dict()) == set(tbn.state_dict())
    bn.load_state_dict(tbn.state_dict())
    x2 = _batch(rng, "2d", 3, "float64", n=5)
    assert_close(bn(x2), _tnp(tbn(torch.from_numpy(x2))), **TOL["float64"])
    bn.eval()
    tbn.eval()
    assert_close(bn(x2), _tnp(tbn(torch.from_numpy(x2))), **TOL["float64"])
    back = torch.nn.BatchNorm2d(3, affine=affine, bias=False).double()
    back.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                          bn.state_dict().items()})
    assert_close(_tnp(back.running_var), bn.running_var, **TOL["float64"])
    assert "bias=False" in repr(bn) if affine else True


def _run_both(t, b, x, steps=3):
    out = []
    for _ in range(steps):
        with torch.no_grad():
            out.append((t(x).numpy(), np.asarray(b(x.numpy()))))
    return out


@pytest.mark.parametrize("built_with", [True, False])
def test_track_running_stats_set_after_construction_as_torch(built_with, rng):
    """torch's flag is read at each call: set False later, training stops updating the
    buffers and eval mode still normalizes with them (they stay in the state_dict); set
    True on a module built without buffers, both modes use batch statistics. nbbn read
    the flag alone: eval mode then used batch statistics (outputs 2.9 off), the
    state_dict lost the buffers, and the reverse raised raw errors."""
    x = torch.from_numpy(rng.standard_normal((8, 3, 4)) * 2 + 5)
    t = torch.nn.BatchNorm1d(3, track_running_stats=built_with).double()
    b = nbbn.BatchNorm(3, track_running_stats=built_with)
    _run_both(t, b, x)
    t.track_running_stats = b.track_running_stats = not built_with
    for mode in (True, False, True, False):
        t.train(mode)
        b.train(mode)
        for got_t, got_b in _run_both(t, b, x * (1.5 if mode else 0.5), 2):
            np.testing.assert_allclose(got_b, got_t, rtol=1e-12, atol=1e-12)
    sd_t, sd_b = t.state_dict(), b.state_dict(tensors=False)
    assert list(sd_b) == list(sd_t)
    for key, value in sd_t.items():
        np.testing.assert_allclose(sd_b[key], value.numpy(), rtol=1e-12)
    back = nbbn.BatchNorm.from_torch(t)  # the flag and the buffers travel both ways
    assert back.track_running_stats is t.track_running_stats
    again = back.to_torch(1, dtype=torch.float64)
    assert again.track_running_stats is t.track_running_stats
    assert list(again.state_dict()) == list(sd_t)
    with torch.no_grad():
        np.testing.assert_allclose(again.eval()(x).numpy(), t.eval()(x).numpy(), rtol=1e-12)
    if built_with:
        b.reset_running_stats()  # (torch's: nothing while the flag is off)
        np.testing.assert_allclose(b.running_mean, t.running_mean.numpy(), rtol=1e-12)
        assert b.num_batches_tracked == int(t.num_batches_tracked) == 3


def test_reset_running_stats_in_place_and_load_state_dict_strict(rng):
    """reset_running_stats wrote new arrays: a running_mean held before stayed at zero
    while training moved the module's. load_state_dict takes torch's strict= and
    returns the missing and unexpected keys."""
    b = nbbn.BatchNorm(2)
    held = b.running_mean
    b(rng.standard_normal((4, 2)) + 3)
    b.reset_running_stats()
    assert b.num_batches_tracked == 0 and (held == 0).all() and (b.running_var == 1).all()
    b(rng.standard_normal((4, 2)) + 3)
    assert held is b.running_mean or np.shares_memory(held, b.running_mean)
    assert (held != 0).all()
    got = b.load_state_dict({"weight": np.array([2.0, 3.0]), "extra": np.ones(2)},
                            strict=False)
    # (num_batches_tracked absent: the module's own is kept, as torch's loader does)
    assert got.missing_keys == ["bias", "running_mean", "running_var"]
    assert got.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(b.weight, [2.0, 3.0])
    assert b.num_batches_tracked == 1
    t = torch.nn.BatchNorm1d(2)
    assert tuple(b.load_state_dict(t.state_dict())) == tuple(
        t.load_state_dict(b.state_dict())) == ([], [])
    with pytest.raises(ValueError, match=r"missing \['bias'"):
        b.load_state_dict({"weight": np.ones(2)})


def test_to_torch_rounds_once_to_half_precision():
    """to_torch's buffers and Normalizer.to_torch's parameters went through torch's
    float64 to float32 to bfloat16/float16 conversion and rounded twice (docs: rounded
    once): 1 + 2**-8 + 2**-30 became bfloat16 1.0, not 1.0078125."""
    near = 1 + 2.0**-8 + 2.0**-30  # (just past bfloat16's tie between 1 and 1 + 2**-7)
    bn = nbbn.BatchNorm(1, backend="cpu")
    bn.running_mean = np.array([near])
    bn.weight = np.array([1 + 2.0**-11 + 2.0**-40])  # (past float16's tie)
    assert bn.to_torch(1, dtype=torch.bfloat16).running_mean.item() == 1.0078125
    assert bn.to_torch(1, dtype=torch.float16).weight.item() == 1 + 2.0**-10
    norm = nbbn.Normalizer([near], [1.0], eps=0.0, bias=[near], channel_axis=1)
    mod = norm.to_torch(dtype=torch.bfloat16)
    assert mod.mean.item() == 1.0078125 and mod.bias.item() == 1.0078125


def test_to_torch_refuses_values_beyond_the_dtype_and_exports_a_dropped_weight():
    """to_torch(dtype=float16) stored a running_var of 1e6 as inf (outputs 0 instead of
    +-1), where Normalizer.to_torch refuses; a weight set to None (forward reads ones)
    made torch's load_state_dict fail with its raw error."""
    b = nbbn.BatchNorm(2).eval()
    b.running_var = np.array([1e6, 1.0])
    with pytest.raises(ValueError, match=r"running_var is beyond torch.float16's range "
                                         r"in channels \[0\]"):
        b.to_torch(1, dtype=torch.float16)
    b.to_torch(1, dtype=torch.float32)
    b.weight = None
    m = b.to_torch(1, dtype=torch.float64)
    x = np.array([[1000.0, 1.0], [-1000.0, 2.0]])
    np.testing.assert_allclose(m(torch.from_numpy(x)).detach().numpy(), b(x), rtol=1e-12)
    assert torch.equal(m.weight.detach(), torch.ones(2, dtype=torch.float64))


def test_from_torch_of_a_dropped_weight_and_to_torch_of_a_wrong_dtype():
    """A torch module whose weight was set to None (its forward reads ones) was refused
    by from_torch ("missing ['weight']"); to_torch(dtype=torch.int32) raised torch's
    own finfo error; a torch momentum outside [0, 1] is refused by name."""
    t = torch.nn.BatchNorm1d(2).double()
    t.weight = None
    x = torch.tensor([[1000.0, 1.0], [-1000.0, 2.0], [5.0, 3.0]], dtype=torch.float64)
    for mode in (True, False):
        with torch.no_grad():
            expect = t.train(mode)(x)
        b = nbbn.BatchNorm.from_torch(t)
        assert b.weight is None and b.training == mode
        np.testing.assert_allclose(b(x.numpy()), expect.numpy(), rtol=1e-12)
    for dtype in (torch.int32, "float32", np.float32):
        with pytest.raises(TypeError, match="dtype must be a floating torch dtype"):
            b.to_torch(1, dtype=dtype)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        nbbn.BatchNorm.from_torch(torch.nn.BatchNorm1d(2, momentum=2.0))


def test_a_torch_state_dict_without_its_count_is_missing_it():
    """torch's own state dict records version 2 (torch 0.4.1 added the count): without
    the count it is missing, in torch's loader and in nbbn's, not filled in."""
    sd = copy.copy(torch.nn.BatchNorm2d(3).state_dict())
    del sd["num_batches_tracked"]
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        torch.nn.BatchNorm2d(3).load_state_dict(sd)
    with pytest.raises(ValueError, match=r"missing \['num_batches_tracked'\]"):
        nbbn.BatchNorm(3).load_state_dict(sd)
    keys = torch.nn.BatchNorm2d(3).load_state_dict(sd, strict=False)
    assert nbbn.BatchNorm(3).load_state_dict(sd, strict=False) == (
        keys.missing_keys, keys.unexpected_keys)


def test_momentum_zero_keeps_the_buffers_as_torch(backend, rng):
    """``momentum=0.0`` is a factor, not "None": torch's buffers then never move (no
    cumulative average), and the outputs use the batch statistics as usual."""
    tbn = torch.nn.BatchNorm2d(3, momentum=0.0).double()
    bn = nbbn.BatchNorm(3, momentum=0.0, backend=backend)
    for _ in range(3):
        x = _batch(rng, "2d", 3, "float64", n=4)
        assert_close(bn(x), _tnp(tbn(torch.from_numpy(x))), **TOL["float64"])
    _compare_buffers(bn, tbn, TOL["float64"])
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))
    assert bn.num_batches_tracked == 3


def test_reset_parameters_resets_the_buffers_too_as_torch(rng):
    """torch's ``reset_parameters`` starts with ``reset_running_stats``: after training,
    the buffers and the count go back to their initial values with the parameters."""
    tbn = torch.nn.BatchNorm1d(2).double()
    bn = nbbn.BatchNorm(2)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor([2.0, 3.0]))
        tbn.bias.copy_(torch.tensor([-1.0, 0.5]))
    bn.load_state_dict(tbn.state_dict())
    x = rng.standard_normal((6, 2)) * 3 + 1
    bn(x)
    tbn(torch.from_numpy(x))
    bn.reset_parameters()
    tbn.reset_parameters()
    _compare_buffers(bn, tbn, TOL["float64"])
    np.testing.assert_array_equal(bn.weight, _tnp(tbn.weight))
    np.testing.assert_array_equal(bn.bias, _tnp(tbn.bias))
    assert bn.num_batches_tracked == 0 and (bn.running_var == 1).all()
