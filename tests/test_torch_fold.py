"""``nbbn.torch.fold_normalizer`` / ``fuse_bn`` against the unfused layers (float64
references), the padding caveat, and nbbn objects as torch modules both ways."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nbbn  # noqa: E402
import nbbn.torch as nt  # noqa: E402

nn = torch.nn


def _normalizer(rng, c, channel_axis=1, offset=5.0):
    return nbbn.Normalizer(rng.normal(offset, 2.0, c), rng.uniform(0.5, 4.0, c), eps=1e-3,
                           weight=rng.uniform(0.5, 2.0, c), bias=rng.normal(0, 1, c),
                           channel_axis=channel_axis)


def _apply64(norm, x):
    """The normalizer applied to a float64 tensor in float64 numpy."""
    return torch.from_numpy(norm(x.double().numpy()))


def _close(a, b, rtol):
    a, b = a.double(), b.double()
    err = float((a - b).abs().max() / b.abs().max())
    assert err <= rtol, err


LAYERS = [
    ("conv1d", lambda: nn.Conv1d(4, 6, 3), (5, 4, 9)),
    ("conv2d-groups", lambda: nn.Conv2d(4, 6, 3, stride=2, groups=2), (3, 4, 9, 8)),
    ("conv2d-reflect", lambda: nn.Conv2d(4, 5, 3, padding=1, padding_mode="reflect"),
     (3, 4, 7, 7)),
    ("conv3d-nobias", lambda: nn.Conv3d(4, 3, 2, bias=False), (2, 4, 4, 5, 3)),
    ("linear", lambda: nn.Linear(4, 7), (6, 4)),
]


@pytest.mark.parametrize("make, shape", [p[1:] for p in LAYERS], ids=[p[0] for p in LAYERS])
def test_fold_normalizer_matches_unfused(make, shape, rng):
    torch.manual_seed(0)
    layer = make()
    norm = _normalizer(rng, 4)
    x = torch.from_numpy(rng.normal(5.0, 3.0, shape))
    with torch.no_grad():
        ref = layer.double()(_apply64(norm, x))  # float64 layer on float64 normalized input
        folded64 = nt.fold_normalizer(layer, norm)  # already float64: the fold's own math
        assert folded64.weight.dtype == torch.float64 and folded64.bias is not None
        _close(folded64(x), ref, 1e-13)
        layer32 = layer.float()
        folded = nt.fold_normalizer(layer32, norm)
        assert type(folded) is type(layer) and folded.weight.dtype == torch.float32
        _close(folded(x.float()), ref, 1e-5)
    assert layer32.weight.dtype == torch.float32  # the original is not changed


def test_fold_zero_padding_caveat(rng):
    layer = nn.Conv2d(3, 4, 3, padding=1).double()
    norm = _normalizer(rng, 3)
    with pytest.raises(ValueError, match="pads with zeros"):
        nt.fold_normalizer(layer, norm)
    folded = nt.fold_normalizer(layer, norm, strict=False)
    x = torch.from_numpy(rng.normal(5.0, 3.0, (2, 3, 6, 6)))
    with torch.no_grad():
        ref, got = layer(_apply64(norm, x)), folded(x)
    _close(got[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], 1e-13)  # exact inside
    border = (got - ref)[..., 0, :].abs().min()
    assert border > 1e-3  # a padded zero is not a normalized zero
    # a normalizer that maps 0 to 0 folds exactly with zero padding
    centred = nbbn.Normalizer(np.zeros(3), np.full(3, 4.0), eps=0.0)
    with torch.no_grad():
        _close(nt.fold_normalizer(layer, centred)(x), layer(_apply64(centred, x)), 1e-13)


def test_fold_bad_input(rng):
    with pytest.raises(ValueError, match="channels"):
        nt.fold_normalizer(nn.Conv2d(3, 4, 1), _normalizer(rng, 4))
    with pytest.raises(ValueError, match="channel_axis"):
        nt.fold_normalizer(nn.Conv2d(3, 4, 1), _normalizer(rng, 3, channel_axis=-1))
    with pytest.raises(TypeError, match="Conv"):
        nt.fold_normalizer(nn.ConvTranspose2d(3, 4, 1), _normalizer(rng, 3))
    linear = nt.fold_normalizer(nn.Linear(3, 2), _normalizer(rng, 3, channel_axis=-1))
    assert isinstance(linear, nn.Linear)


def test_fuse_bn_checks_the_channel_axis():
    """fuse_bn folded an nbbn BatchNorm of channel_axis=-1 into a Conv's axis 1 without
    a word (fold_normalizer refuses the same)."""
    with pytest.raises(ValueError, match=r"bn has channel_axis=-1, but Conv2d writes "
                                         r"channels on axis 1"):
        nt.fuse_bn(nn.Conv2d(3, 4, 3), nbbn.BatchNorm(4, channel_axis=-1).eval())
    with pytest.raises(ValueError, match="channel_axis=0"):
        nt.fuse_bn(nn.Linear(3, 4), nbbn.BatchNorm(4, channel_axis=0).eval())
    assert isinstance(nt.fuse_bn(nn.Linear(3, 4), nbbn.BatchNorm(4, channel_axis=-1).eval()),
                      nn.Linear)
    # -3 is axis 1 of a Conv2d's (N, C, H, W) output: the same layer as axis 1
    x = torch.randn(2, 3, 5, 5)
    conv = nn.Conv2d(3, 4, 3)
    bn = nbbn.BatchNorm(4, channel_axis=-3).eval()
    bn.running_mean, bn.running_var = np.arange(4.0), np.arange(1.0, 5.0)
    with torch.no_grad():
        want = torch.from_numpy(bn(conv(x).numpy()))
        got = nt.fuse_bn(conv, bn)(x)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("torch_bn", [True, False])
def test_fuse_bn_matches_unfused(torch_bn, rng):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, groups=1).double()
    bn = nn.BatchNorm2d(5).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.from_numpy(rng.normal(3, 1, 5)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.1, 3, 5)))
        bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2, 5)))
        bn.bias.copy_(torch.from_numpy(rng.normal(0, 1, 5)))
    bn.eval()
    x = torch.from_numpy(rng.normal(0, 1, (2, 3, 7, 7)))
    with torch.no_grad():
        ref = bn(conv(x))
        fused = nt.fuse_bn(conv, bn if torch_bn else nbbn.BatchNorm.from_torch(bn))
        _close(fused(x), ref, 1e-13)
        bn32 = bn.float() if torch_bn else nbbn.BatchNorm.from_torch(bn)
        fused32 = nt.fuse_bn(conv.float(), bn32)
        assert fused32.weight.dtype == torch.float32
        _close(fused32(x.float()), ref, 1e-5)
    with pytest.raises(ValueError, match="eval"):
        nt.fuse_bn(conv, bn.train())
    with pytest.raises(ValueError, match="channels"):
        nt.fuse_bn(nn.Linear(3, 4), nn.BatchNorm1d(5).eval())


# ------------------------------------------------------------------ modules both ways
@pytest.mark.parametrize("dim, shape", [(1, (6, 3)), (2, (4, 3, 5, 5)), (3, (2, 3, 3, 4, 2))])
def test_batchnorm_from_and_to_torch(dim, shape, rng):
    tbn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dim](3, momentum=0.3)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor([0.5, 1.5, 2.0]))
        tbn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        for _ in range(3):
            tbn(torch.from_numpy(rng.normal(2, 3, shape)).float())
    bn = nbbn.BatchNorm.from_torch(tbn)
    assert bn.training and bn.momentum == 0.3 and bn.num_batches_tracked == 3
    for key, value in tbn.state_dict().items():
        np.testing.assert_array_equal(np.asarray(bn.state_dict(tensors=False)[key]),
                                      value.numpy())
    x = rng.normal(2, 3, shape).astype(np.float32)
    with torch.no_grad():
        tbn.eval()
        np.testing.assert_allclose(bn.eval()(x), tbn(torch.from_numpy(x)).numpy(), atol=1e-5)
    back = bn.to_torch(dim)
    assert type(back) is type(tbn) and not back.training and back.momentum == 0.3
    for key, value in tbn.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    # torch modules load nbbn's state_dict as it is
    fresh = type(tbn)(3)
    fresh.load_state_dict(bn.state_dict())
    assert int(fresh.num_batches_tracked) == 3
    np.testing.assert_array_equal(fresh.running_var.numpy(), tbn.running_var.numpy())


def test_state_dict_kinds_and_variants():
    bn = nbbn.BatchNorm(3, bias=False)
    sd = bn.state_dict()  # torch is imported here: tensors
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert sd["running_mean"].dtype == torch.float64 and sd["num_batches_tracked"].dim() == 0
    assert all(isinstance(v, np.ndarray) for v in bn.state_dict(tensors=False).values())
    t = bn.to_torch(2)
    assert t.bias is None and t.weight is not None
    nn.BatchNorm2d(3, bias=False).load_state_dict(sd)
    assert nbbn.BatchNorm.from_torch(t).bias is None
    plain = nbbn.BatchNorm(2, affine=False, track_running_stats=False, momentum=None)
    t2 = plain.to_torch(1, dtype=torch.float64)
    assert not t2.affine and not t2.track_running_stats and t2.momentum is None
    nb = nbbn.BatchNorm.from_torch(nn.SyncBatchNorm(4))
    assert nb.num_features == 4
    with pytest.raises(ValueError, match="channel_axis"):
        nbbn.BatchNorm(3, channel_axis=-1).to_torch()
    with pytest.raises(ValueError, match="uninitialized"):
        nbbn.BatchNorm.from_torch(nn.LazyBatchNorm2d())
    with pytest.raises(TypeError, match="BatchNorm"):
        nbbn.BatchNorm.from_torch(nn.LayerNorm(3))


# torch 2.13 deprecates TorchScript; the module still scripts
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("channel_axis", [1, -1])
def test_normalizer_to_torch(channel_axis, rng):
    norm = _normalizer(rng, 3, channel_axis=channel_axis, offset=1e4)
    shape = (4, 3, 5, 6) if channel_axis == 1 else (4, 5, 6, 3)
    x = rng.normal(1e4, 1.0, shape)  # |mean| = 1e4 std: the mean is kept as hi + lo
    ref = norm(x)
    module = norm.to_torch()
    assert {k for k, _ in module.named_buffers()} == {"mean", "mean_lo", "scale", "bias"}
    got = module(torch.from_numpy(x.astype(np.float32)))
    assert got.dtype == torch.float32
    # float32 input is off by its own rounding (|x| ~ 1e4: ulp 1e-3) times the scale
    ref32 = norm(x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(got.numpy(), ref32, rtol=0, atol=1e-5 * np.abs(ref32).max())
    module64 = norm.to_torch(dtype=torch.float64)
    np.testing.assert_allclose(module64(torch.from_numpy(x)).numpy(), ref, rtol=0, atol=1e-12)
    scripted = torch.jit.script(norm.to_torch())
    exported = torch.export.export(norm.to_torch(), (torch.from_numpy(x).float(),)).module()
    xt = torch.from_numpy(x).float()
    assert torch.equal(scripted(xt), got) and torch.equal(exported(xt), got)
    u8 = torch.from_numpy(rng.integers(0, 255, shape, dtype=np.uint8))
    assert module.float()(u8).dtype == torch.float32
    np.testing.assert_allclose(module(u8).numpy(), norm(u8.numpy()), rtol=1e-6)


def test_fold_and_fuse_a_whole_model(rng):
    """normalizer -> conv -> BatchNorm as one conv, against the unfused model in float64."""
    torch.manual_seed(2)
    norm = _normalizer(rng, 3)
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate").double()
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn(conv(_apply64(norm, torch.from_numpy(rng.normal(5, 3, (8, 3, 6, 6))))))
    unfused = nn.Sequential(norm.to_torch(dtype=torch.float64), conv, bn).eval()
    fused = nt.fuse_bn(nt.fold_normalizer(conv, norm), bn.eval())
    x = torch.from_numpy(rng.normal(5, 3, (2, 3, 6, 6)))
    with torch.no_grad():
        _close(fused(x), unfused(x), 1e-12)


def test_missing_torch_names_the_extra():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, nbbn\n"
            "assert isinstance(nbbn.BatchNorm(2).state_dict()['weight'], np.ndarray)\n"
            "for call in (lambda: nbbn.Normalizer([0.0], [1.0]).to_torch(),\n"
            "             lambda: nbbn.BatchNorm(2).state_dict(tensors=True),\n"
            "             lambda: __import__('nbbn.torch')):\n"
            "    try:\n"
            "        call()\n"
            "    except nbbn.MissingExtraError as e:\n"
            "        assert \"pip install 'nbbn[torch]'\" in str(e), e\n"
            "    else:\n"
            "        raise AssertionError('no MissingExtraError')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr


def test_fuse_bn_with_eps_zero_and_a_zero_variance_as_the_bn():
    """nbbn.BatchNorm(eps=0) scales a channel of running variance 0 by its weight; the
    fused layer does the same (not inf or NaN weights)."""
    lin = torch.nn.Linear(2, 3).double()
    bn = nbbn.BatchNorm(3, eps=0.0, backend="cpu")
    bn.running_mean = np.array([0.5, -1.0, 2.0])
    bn.running_var = np.array([4.0, 0.0, 1.0])
    bn.eval()
    x = torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        want = bn(lin(x).numpy())
        got = nt.fuse_bn(lin, bn)(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_to_torch_refuses_an_integer_dtype(rng):
    """An integer module truncated the scale (0.5 -> 0) and gave wrong outputs."""
    norm = _normalizer(rng, 3)
    for dtype in (torch.int64, torch.uint8, np.float32):
        with pytest.raises(TypeError, match="floating torch dtype"):
            norm.to_torch(dtype=dtype)


def test_fold_normalizer_takes_a_batchnorm_and_names_what_it_takes(rng):
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 1).double()
    bn = nbbn.BatchNorm(3)
    bn(rng.normal(2.0, 3.0, (8, 3, 4, 4)))
    bn.eval()
    x = rng.normal(2.0, 3.0, (2, 3, 5, 5))
    folded = nbbn.torch.fold_normalizer(conv, bn)
    want = conv(torch.from_numpy(bn(x))).detach().numpy()
    np.testing.assert_allclose(folded(torch.from_numpy(x)).detach().numpy(), want,
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match=r"from_torch\(bn\) first"):
        nbbn.torch.fold_normalizer(conv, nn.BatchNorm2d(3))
    with pytest.raises(TypeError, match="got NormalizerModule"):
        nbbn.torch.fold_normalizer(conv, _normalizer(rng, 3).to_torch())


def test_to_torch_refuses_parameters_beyond_the_dtype():
    """A float16 module stored a scale of 1e5 as an infinity and gave NaN where nbbn
    gives 0; now refused, naming the parameter and the channels, as ``to_onnx`` does."""
    norm = nbbn.Normalizer([1.0, 2.0], [1.0, 1.0], eps=0.0, weight=[1e5, 1.0],
                           channel_axis=1)
    with pytest.raises(ValueError, match=r"scale is beyond torch.float16's range in "
                                         r"channels \[0\]"):
        norm.to_torch(dtype=torch.float16)
    far = nbbn.Normalizer([1.0, 7e4], [1.0, 1.0], channel_axis=1)
    with pytest.raises(ValueError, match=r"mean is beyond .* channels \[1\]"):
        far.to_torch(dtype=torch.float16)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float16)
    assert torch.equal(norm.to_torch()(x), norm(x))  # float32 buffers hold it
    assert torch.isfinite(far.to_torch(dtype=torch.float32).mean).all()


def test_fuse_bn_reads_an_nbbn_batchnorms_weight_and_bias_as_bn_does():
    """``weight``/``bias`` are plain attributes: a Parameter, a bfloat16 tensor or a list
    are read as ``bn(x)`` reads them, and a wrong shape is refused (a Parameter failed in
    ``.numpy()``; ``[3.0]`` was broadcast to every channel, silently)."""
    conv = torch.nn.Conv2d(3, 4, 3).eval()
    bn = nbbn.BatchNorm(4).eval()
    bn.running_mean[:] = np.arange(4.0)
    x = torch.randn(2, 3, 8, 8)
    for weight in (torch.nn.Parameter(torch.rand(4)), torch.rand(4).bfloat16(),
                   [0.5, 1.0, 2.0, 3.0]):
        bn.weight = weight
        with torch.no_grad():
            got, want = nt.fuse_bn(conv, bn)(x), torch.as_tensor(bn(conv(x)))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for name, value in (("weight", [3.0]), ("bias", 0.5)):
        bn.weight, bn.bias = None, None
        setattr(bn, name, value)
        with pytest.raises(ValueError, match=f"{name} must be shape \\(4,\\)"):
            nt.fuse_bn(conv, bn)


def test_normalizer_module_half_checks_the_range_and_splits_the_mean_again():
    """``.half()`` of a float32 module made a scale beyond float16's range infinite (to
    ``to_torch(dtype=torch.float16)`` refuses it) and kept the float32 mean's split."""
    y = torch.randn(10, 3, dtype=torch.float64) * 1e-6 + 1e-5
    module = nbbn.RunningStats(channel_axis=1).update(y).to_normalizer(eps=0).to_torch()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ValueError, match="scale is beyond torch.float16's range"):
        module.half()
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    x = torch.randn(100, 3, dtype=torch.float64) * 0.5 + 1e4
    norm = nbbn.RunningStats(channel_axis=1).update(x).to_normalizer()
    for dt in (torch.float16, torch.bfloat16):
        made, cast = norm.to_torch(dtype=dt), norm.to_torch().to(dt)
        assert cast.mean.dtype == cast.mean_lo.dtype == dt
        assert torch.equal(made.mean, cast.mean) and torch.equal(made.mean_lo, cast.mean_lo)


def test_normalizer_module_loads_another_dtypes_state_split_again():
    """``load_state_dict`` of a float64 module's state into a float32 module cast its
    ``mean`` and ``mean_lo`` each (``mean_lo`` about 0): 4.4e-3 of error where the
    module's own is 1.3e-7, at mean/std 1e5 in one report. The incoming mean is now
    split again, and a scale beyond the module's range refused, the module unchanged."""
    rng = np.random.default_rng(5)
    x = rng.normal(1e4, 0.1, (1000, 3))
    norm = nbbn.RunningStats(channel_axis=1).update(x).to_normalizer(eps=0.0)
    for src, dst in ((torch.float64, torch.float32), (torch.float32, torch.float16),
                     (torch.float64, torch.bfloat16)):
        module = norm.to_torch(dtype=dst)
        module.load_state_dict(norm.to_torch(dtype=src).state_dict())
        made = norm.to_torch(dtype=dst)
        for k, v in made.state_dict().items():
            assert v.dtype == dst and torch.equal(module.state_dict()[k], v), (src, dst, k)
    module = norm.to_torch(dtype=torch.float32)
    module.load_state_dict(norm.to_torch(dtype=torch.float64).state_dict())
    x32 = x.astype(np.float32)
    got = module(torch.from_numpy(x32)).double().numpy()
    assert np.abs(got - norm(x32.astype(np.float64))).max() < 2e-6  # (4e-3 before)
    wide = nbbn.Normalizer([0.0], [1e-12], eps=0.0, channel_axis=1)  # (scale 1e6)
    half = nbbn.Normalizer([0.0], [1.0], eps=0.0, channel_axis=1).to_torch(dtype=torch.float16)
    before = {k: v.clone() for k, v in half.state_dict().items()}
    with pytest.raises(RuntimeError, match="scale is beyond torch.float16's range"):
        half.load_state_dict(wide.to_torch(dtype=torch.float32).state_dict())
    assert all(torch.equal(before[k], v) for k, v in half.state_dict().items())
    # assign=True keeps the state's tensors and dtype, as torch documents
    assigned = norm.to_torch(dtype=torch.float32)
    assigned.load_state_dict(norm.to_torch(dtype=torch.float64).state_dict(), assign=True)
    assert assigned.mean.dtype == torch.float64
    # a module on the meta device is materialized (to_empty moves, changes no dtype)
    meta = norm.to_torch().to("meta")
    assert meta.to_empty(device="cpu").mean.device.type == "cpu"


def test_a_half_normalizer_module_subtracts_the_mean_before_rounding_to_float16():
    """A float16 module cast its input to float16 first: 16-bit pixels of 65520 or
    more became infinities (and so did their outputs, about 2.08 here)."""
    x = np.array([[0], [20000], [65519], [65520], [65535]], np.int32)
    norm = nbbn.Normalizer([40000.0], [12247.0**2], eps=0.0, channel_axis=1)
    for dt in (torch.float16, torch.bfloat16):
        module = norm.to_torch(dtype=dt)
        for t in (torch.from_numpy(x), torch.from_numpy(x).float()):
            y = module(t)
            assert y.dtype == (dt if t.dtype == torch.int32 else torch.float32)
            assert torch.isfinite(y).all()
            np.testing.assert_allclose(y.double().numpy(), norm(x.astype(np.float64)),
                                       rtol=1e-2)


def test_half_of_a_float64_module_rounds_its_numbers_once():
    """``.half()`` of a float64 module rounded scale and bias through float32, twice (1
    ulp off the nearest float16); ``to_torch(dtype=torch.float16)`` rounds once."""
    norm = nbbn.Normalizer([0.0], [1.0 / 1.0004882812509095**2], eps=0.0, channel_axis=1,
                           bias=[1.0004882812509095])
    cast = norm.to_torch(dtype=torch.float64).half()
    made = norm.to_torch(dtype=torch.float16)
    for k, v in made.state_dict().items():
        assert torch.equal(cast.state_dict()[k], v), k
    assert made.scale.item() == 1.0009765625


# ------------------------------------------------- edges found by mutation testing
def _bn(c):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn.eval()


def test_folded_layers_keep_the_mode_and_frozen_weights(rng):
    conv = nn.Conv2d(3, 4, 1).eval()
    conv.requires_grad_(False)
    for new in (nt.fold_normalizer(conv, _normalizer(rng, 3)), nt.fuse_bn(conv, _bn(4))):
        assert not new.training
        assert not new.weight.requires_grad
        assert not new.bias.requires_grad  # (it was made trainable)
    free = nn.Linear(3, 4, bias=False)
    assert nt.fuse_bn(free, nn.BatchNorm1d(4).eval()).bias.requires_grad


def test_fold_keeps_the_dilation(rng):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, dilation=2, padding_mode="reflect", padding=2).double()
    norm = _normalizer(rng, 2)
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    new = nt.fold_normalizer(conv, norm)
    assert new.dilation == (2, 2)
    with torch.no_grad():
        want = conv(torch.from_numpy(norm(x.numpy())))
        torch.testing.assert_close(new(x), want, rtol=1e-12, atol=1e-12)


def test_fold_same_padding_with_a_1x1_kernel_pads_nothing(rng):
    new = nt.fold_normalizer(nn.Conv2d(3, 4, 1, padding="same"), _normalizer(rng, 3))
    assert isinstance(new, nn.Conv2d)  # strict: no border, nothing refused
    with pytest.raises(ValueError, match="pads with zeros"):
        nt.fold_normalizer(nn.Conv2d(3, 4, 3, padding="same"), _normalizer(rng, 3))


def test_fuse_bn_refuses_an_untracked_or_lazy_bn():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        nt.fuse_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False).eval())
    with pytest.raises(ValueError, match="uninitialized lazy"):
        nt.fuse_bn(nn.Conv2d(3, 4, 1), nn.LazyBatchNorm2d().eval())


def test_normalizer_module_keeps_a_floating_inputs_dtype():
    m64 = nbbn.Normalizer([1.0, 2.0, 3.0], [1.0, 4.0, 9.0]).to_torch(dtype=torch.float64)
    assert m64(torch.ones(2, 3)).dtype == torch.float32
    assert m64(torch.ones(2, 3, dtype=torch.float16)).dtype == torch.float16


def test_to_torch_refuses_a_negative_number_beyond_the_dtype():
    # (the advice named the dtype asked for among the wider ones)
    with pytest.raises(ValueError, match=r"mean is beyond torch.float32's range in channels "
                                         r"\[0\]: use a wider dtype \(torch.float64\)$"):
        nbbn.Normalizer([-1e39, 0.0], [1.0, 1.0]).to_torch()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_to_torch_keeps_an_infinite_mean_as_nbbn_applies_it(dtype):
    """A Normalizer takes an infinite mean (a channel that held an infinity), but
    to_torch refused it as "beyond torch.float64's range: use a wider dtype (torch.float32
    or torch.float64)", in float64 too; and the mean's rest inf - inf was NaN."""
    x = np.array([[1.0, 5.0, 0.5], [np.inf, -np.inf, 2.0]])
    np_dtype = {torch.float64: np.float64, torch.float32: np.float32,
                torch.float16: np.float16}[dtype]
    for norm in (nbbn.Normalizer([np.inf, 1.0, -np.inf], [1.0, 4.0, 1.0], channel_axis=-1),
                 nbbn.RunningStats(-1).update(np.array([[1.0, np.inf, 0.0], [2.0, 3.0, 1.0]]))
                 .to_normalizer()):
        got = norm.to_torch(dtype=dtype)(torch.tensor(x, dtype=dtype))
        np.testing.assert_array_equal(got.numpy(), norm(x.astype(np_dtype)))


def test_to_torch_refuses_a_dimension_name_axis():
    norm = nbbn.Normalizer([0.0], [1.0], channel_axis="channel")
    with pytest.raises(TypeError, match="dimension name 'channel'"):
        norm.to_torch()


def test_folding_refuses_numbers_beyond_the_layers_dtype():
    """A float16 BatchNorm of running variance 1e-6, weight 100 and eps 0 scales by 1e5:
    the fused float16 layer stored that as inf and gave inf/NaN where the unfused pair is
    finite. Both folds refuse it and change nothing; in float32 the fold is finite."""
    conv = nn.Conv2d(2, 3, 1).half()
    bn = nn.BatchNorm2d(3, eps=0.0).half().eval()
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        bn.running_var.copy_(torch.tensor([1.0, 1e-6, 1.0]))
        bn.weight.copy_(torch.tensor([1.0, 100.0, 1.0]))
    x = torch.zeros(1, 2, 1, 1, dtype=torch.float16)
    with torch.no_grad():
        assert torch.isfinite(bn(conv(x))).all()  # (an inf weight gave NaN: inf * 0)
    before = conv.weight.clone()
    with pytest.raises(ValueError, match=r"folded weight is beyond torch.float16's range in "
                       r"output channels \[1\]"):
        nt.fuse_bn(conv, bn)
    assert torch.equal(conv.weight, before)
    fused = nt.fuse_bn(conv.float(), bn.float())
    assert torch.isfinite(fused.weight).all()
    lin = nn.Linear(2, 2).half()
    with torch.no_grad():
        lin.weight.fill_(0.5)
    norm = nbbn.Normalizer([0.0, 7e4], [1.0, 1e-8], eps=0.0, channel_axis=-1)  # scale 1e4
    with pytest.raises(ValueError, match=r"folded bias is beyond torch.float16's range"):
        nt.fold_normalizer(lin, norm)
