"""torch CPU tensors in and out: statistics, Normalizer and BatchNorm on tensors of every
dtype (bfloat16 included) against float64 references, requires-grad tensors, bfloat16
rounding, strided and in-place tensors."""

from __future__ import annotations

import numpy as np
import pytest

import nbbn

torch = pytest.importorskip("torch")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8]
LAYOUTS = [("nchw", 1), ("nhwc", -1)]


def _tensor(dtype, layout, rng, shape=(5, 3, 9, 7)):
    """Values exactly representable in ``dtype``, in NCHW or NHWC."""
    v = rng.normal(3.0, 2.0, shape)
    if dtype == torch.uint8:
        v = np.clip(v * 40 + 100, 0, 255)
    t = torch.from_numpy(v).to(dtype)
    return t.permute(0, 2, 3, 1).contiguous() if layout == "nhwc" else t


def _ref(t, axis):
    """Float64 per-channel mean, variance, min and max of a tensor's values."""
    a = t.double().numpy()
    axis = axis % a.ndim
    a = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
    return a.mean(1), a.var(1), a.min(1), a.max(1)


def _expand(v, axis, ndim):
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


@pytest.mark.parametrize("layout,axis", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip(dtype, layout, axis):
    rng = np.random.default_rng(1)
    x = _tensor(dtype, layout, rng)
    before = x.clone()
    rs = nbbn.RunningStats(channel_axis=axis).update(x)
    mean, var, mn, mx = _ref(x, axis)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(rs.variance(), var, rtol=1e-12)
    np.testing.assert_array_equal(rs.min, mn)
    np.testing.assert_array_equal(rs.max, mx)

    norm = rs.to_normalizer(eps=1e-5)
    y = norm(x)
    assert isinstance(y, torch.Tensor) and y.device == x.device
    want = dtype if dtype.is_floating_point else torch.float32
    assert y.dtype == want and y.shape == x.shape
    # the normalizer alone: its own statistics (checked above) in a float64 reference
    m, v = _expand(rs.mean, axis, 4), _expand(rs.variance(), axis, 4)
    ref = (x.double().numpy() - m) / np.sqrt(v + 1e-5)
    eps = torch.finfo(want).eps
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=eps, atol=8 * eps)
    assert torch.equal(x, before)  # the input is read, never written

    back = norm.inverse(y)
    assert isinstance(back, torch.Tensor) and back.dtype == want
    np.testing.assert_allclose(back.double().numpy(), x.double().numpy(), rtol=4 * eps,
                               atol=4 * eps * 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_batchnorm_on_tensors(dtype):
    rng = np.random.default_rng(2)
    x = _tensor(dtype, "nchw", rng)
    bn = nbbn.BatchNorm(3, momentum=None)
    y = bn(x)
    assert isinstance(y, torch.Tensor) and y.dtype == dtype
    mean, var, _, _ = _ref(x, 1)
    n = x.numel() // 3
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-13)
    np.testing.assert_allclose(bn.running_var, var * n / (n - 1), rtol=1e-12)
    ref = (x.double().numpy() - _expand(mean, 1, 4)) / np.sqrt(_expand(var, 1, 4) + 1e-5)
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=eps, atol=eps)
    if dtype == torch.float32:  # the tensor path is the numpy path: the same bits
        bn2 = nbbn.BatchNorm(3, momentum=None)
        np.testing.assert_array_equal(bn2(x.numpy()), y.numpy())
        bn.eval()
        bn2.eval()
        np.testing.assert_array_equal(bn2(x.numpy()), bn(x).numpy())


def test_bfloat16_output_rounds_to_nearest_even_as_torch():
    """float32 values written as bfloat16 by the kernels, into a contiguous and a
    strided out: torch's bits. (Both now go through the kernels; the numpy fallback's
    rounding is tested directly, ``test_numpy_to_bf16_bits_rounds_as_torch``.)"""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, (4, 2, 64), dtype=np.uint64).astype(np.uint32)
    bits[0, 0, :8] = [0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,  # ties, near-ties
                      0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x807FFFFF]  # overflow, subnormal
    bits[0, 1, :4] = [0x7F800000, 0xFF800000, 0x7FC00001, 0xFFFFFFFF]  # inf, NaN
    x = torch.from_numpy(bits.view(np.float32))
    norm = nbbn.Normalizer([0.0, 0.0], [1.0, 1.0], eps=0.0)  # the identity
    want = x.to(torch.bfloat16)
    nan = torch.isnan(x)  # torch's own NaN bits differ between its scalar and vector code
    assert nan.any()
    out = torch.empty(x.shape, dtype=torch.bfloat16)
    wide = torch.zeros(4, 2, 128, dtype=torch.bfloat16)
    strided = wide[:, :, ::2]
    for dst in (out, strided):
        assert norm(x, out=dst) is dst
        assert torch.equal(torch.isnan(dst), nan)
        np.testing.assert_array_equal(dst[~nan].view(torch.int16).numpy(),
                                      want[~nan].view(torch.int16).numpy())


def test_bfloat16_special_values_in_statistics():
    x = torch.tensor([[1.0, 2.0], [float("inf"), 3.0], [float("nan"), -4.0], [0.5, 5.0]],
                     dtype=torch.bfloat16)
    rs = nbbn.RunningStats(nan_policy="omit").update(x)
    np.testing.assert_array_equal(rs.count, [3, 4])
    assert rs.max[0] == np.inf and rs.min[0] == 0.5
    np.testing.assert_allclose(rs.mean[1], 1.5)
    assert np.isnan(nbbn.RunningStats().update(x).mean[0])


def test_batchnorm_outputs_are_laid_out_as_torchs():
    # the output of a transposed input kept its strides (as elementwise operations and
    # nbbn's Normalizer do), where torch's BatchNorm gives a contiguous tensor: a
    # .view of it failed
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(4, 7, 3, generator=g).transpose(1, 2),
              torch.randn(3, 6, generator=g).t(),
              torch.randn(3, 4, 5, 5, generator=g).permute(1, 0, 2, 3),
              torch.randn(4, 3, 5, 6, generator=g).to(memory_format=torch.channels_last),
              torch.randn(2, 3, 4, 5, 6, generator=g).to(
                  memory_format=torch.channels_last_3d),
              torch.randn(4, 3, 5, generator=g)]
    for x in inputs:
        tbn = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
               5: torch.nn.BatchNorm3d}[x.dim()](3).double()
        bn = nbbn.BatchNorm(3)
        for train in (True, False):
            tbn.train(train)
            bn.train(train)
            want = tbn(x.double()).float()
            y = bn(x)
            assert y.stride() == want.stride(), (x.shape, x.stride(), train)
            torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-6)
    y = nbbn.Normalizer([0.0] * 3, [1.0] * 3)(inputs[0])  # elementwise: strides kept
    assert y.stride() == inputs[0].stride()


def test_requires_grad():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 10, 10)
    h = conv(x)
    assert h.requires_grad
    rs = nbbn.RunningStats().update(h)  # the values are read, detached
    mean, var, _, _ = _ref(h.detach(), 1)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rs.variance(), var, rtol=1e-12)
    np.testing.assert_allclose(nbbn.fit(h, progress=False).mean, rs.mean, rtol=1e-15)

    norm = rs.to_normalizer()
    bn = nbbn.BatchNorm(4)
    for fn in (norm, norm.inverse, bn):
        with pytest.raises(RuntimeError, match=r"torch.no_grad\(\).*\.detach\(\)"):
            fn(h)
    assert bn.num_batches_tracked == 0 and bn.running_mean.tolist() == [0.0] * 4
    with torch.no_grad():
        y = norm(h)
    assert isinstance(y, torch.Tensor) and not y.requires_grad
    np.testing.assert_array_equal(norm(h.detach()).numpy(), y.numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_strided_and_in_place(dtype):
    rng = np.random.default_rng(4)
    base = _tensor(dtype, "nchw", rng, (4, 3, 8, 10))
    x = base.permute(0, 3, 2, 1)[:, ::2]  # channels last, a strided view: no (O, C, I) view
    rs = nbbn.RunningStats(channel_axis=-1).update(x)
    mean, var, _, _ = _ref(x, -1)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-13)
    np.testing.assert_allclose(rs.variance(), var, rtol=1e-12)
    norm = rs.to_normalizer(eps=0.0)
    y = norm(x)
    assert y.dtype == dtype
    z = x.clone()
    assert norm(z, out=z) is z
    assert torch.equal(z, y)


def test_tensor_out_checks():
    x = torch.ones(2, 3, 4)
    norm = nbbn.Normalizer([0.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="shape"):
        norm(x, out=torch.empty(2, 3, 5))
    with pytest.raises(TypeError, match="bool"):
        nbbn.RunningStats().update(torch.ones(2, 3, dtype=torch.bool))
    y = norm(x, out=np.empty((2, 3, 4), np.float64))  # a numpy out stays numpy
    assert isinstance(y, np.ndarray)


def test_bfloat16_on_the_cuda_backend(cuda):
    """The CUDA kernels decode bfloat16 (a host tensor with backend="cuda" here; its bits
    are copied to the device) and write bfloat16 outputs: the CPU backend's results
    (tests/test_cuda_bf16.py checks the layouts and rounding)."""
    x = torch.arange(12, dtype=torch.float32).reshape(4, 3).to(torch.bfloat16) / 3
    gpu = nbbn.RunningStats(backend="cuda").update(x)
    cpu = nbbn.RunningStats(backend="cpu").update(x)
    np.testing.assert_allclose(gpu.mean, cpu.mean, rtol=1e-15)
    np.testing.assert_allclose(gpu.var, cpu.var, rtol=1e-12)
    y = nbbn.Normalizer(gpu.mean, gpu.var, backend="cuda")(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16
    assert torch.equal(y.view(torch.int16),
                       nbbn.Normalizer(cpu.mean, cpu.var, backend="cpu")(x).view(torch.int16))


def test_bench_torch_smoke():
    """``nbbn bench --torch`` runs (tiny shapes): every measurement gives its rows."""
    import io

    from nbbn.tools.bench_torch import MEASUREMENTS, run_torch_bench

    result = run_torch_bench(io.StringIO(), quick=True, repeats=1)
    for title, _ in MEASUREMENTS:
        assert result[title] and all(r["tensor_ms"] > 0 for r in result[title])


def test_in_place_writes_are_seen_by_autograd():
    """An ``out=`` tensor is written through numpy, which autograd does not see: nbbn
    bumps its version, so a graph that saved it raises at backward (as after torch's
    own in-place ops) instead of giving wrong gradients; an ``out=`` that requires grad
    is refused."""
    x = torch.full((4, 3), 5.0)
    w = torch.ones(3, requires_grad=True)
    loss = (x * w).sum()
    nbbn.Normalizer([5.0] * 3, [1.0] * 3, eps=0.0, channel_axis=-1)(x, out=x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    with pytest.raises(RuntimeError, match="out is a tensor that requires grad"):
        nbbn.Normalizer([0.0] * 3, [1.0] * 3, channel_axis=-1)(
            torch.ones(2, 3), out=torch.zeros(2, 3, requires_grad=True))


def test_a_trainable_weight_or_bias_is_refused_while_autograd_records():
    """A ``torch.nn.Parameter`` set as a BatchNorm's ``weight`` gave outputs without
    gradient and no word (an input that requires grad was already refused); under
    ``torch.no_grad()`` it is read, and a refused call changes no state."""
    x = torch.randn(4, 3)
    for name in ("weight", "bias"):
        bn = nbbn.BatchNorm(3)
        setattr(bn, name, torch.nn.Parameter(torch.ones(3)))
        with pytest.raises(RuntimeError, match=f"{name} is a tensor that requires grad"):
            bn(x)
        assert bn.num_batches_tracked == 0 and bn.running_mean.tolist() == [0.0] * 3
        with torch.no_grad():
            bn(x)
        assert bn.num_batches_tracked == 1


def test_overlapping_outputs_are_refused():
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64).expand(4, 3, 6, 5)
    norm = nbbn.Normalizer([1.0, 2.0, 3.0], [4.0, 4.0, 4.0], eps=0.0)
    with pytest.raises(ValueError, match="overlapping elements"):
        norm(x, out=x)
    a = np.lib.stride_tricks.as_strided(np.zeros(3), (4, 3), (0, 8), writeable=True)
    with pytest.raises(ValueError, match="overlapping elements"):
        nbbn.Normalizer([1.0] * 3, [1.0] * 3, channel_axis=-1)(np.ones((4, 3)), out=a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outputs_keep_channels_last(dtype):
    x = torch.randn(4, 3, 5, 5).to(dtype).to(memory_format=torch.channels_last)
    for layer in (nbbn.BatchNorm(3), nbbn.Normalizer([0.0] * 3, [1.0] * 3)):
        y = layer(x)
        assert y.dtype == dtype
        assert y.is_contiguous(memory_format=torch.channels_last)
        ref = layer(x.contiguous())
        assert ref.is_contiguous() and torch.equal(y, ref)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_normalizer_module_names_a_missing_channel_axis():
    module = nbbn.Normalizer([1.0, 2.0, 3.0], [1.0] * 3).to_torch()
    for m in (module, torch.jit.script(module)):
        with pytest.raises(Exception, match="has 1 dimensions, so it has no channel_axis=1"):
            m(torch.ones(3))


def test_outputs_of_expanded_and_subclassed_tensors():
    """New outputs are numpy's memory: an expanded input (strides of 0) got numpy's
    order="K" layout, its axes of stride 0 innermost (not contiguous, 3x slower to
    write, ``.view`` failing), and a Tensor subclass came back as a plain Tensor."""
    norm = nbbn.Normalizer([0.5, 1.0, 2.0], [1.0, 4.0, 9.0], eps=0.0)
    for x in (torch.randn(1, 3, 5, 6).expand(4, 3, 5, 6),
              torch.randn(1, 3, 1, 6).expand(4, 3, 5, 6)):
        y = norm(x)
        assert y.is_contiguous() and y.view(4, -1).shape == (4, 90)
        assert torch.equal(y, norm(x.contiguous()))

    class Tagged(torch.Tensor):
        pass

    x = torch.randn(2, 3, 4).as_subclass(Tagged)
    for layer in (norm, nbbn.BatchNorm(3)):
        y = layer(x)
        assert type(y) is Tagged
        assert torch.equal(y.as_subclass(torch.Tensor), layer(x.as_subclass(torch.Tensor)))


def test_a_parameter_or_buffer_gives_a_plain_tensor():
    """A Parameter's output was a Parameter (``as_subclass`` of the input's class): set
    as a module's attribute it became one of the module's parameters. torch's own
    operations give a plain tensor for a Parameter or a Buffer (their
    ``__torch_function__`` is off), and so does nbbn."""
    norm = nbbn.Normalizer([1.0, 2.0, 3.0], [1.0, 4.0, 9.0], channel_axis=1)
    for x in (torch.nn.Parameter(torch.randn(2, 3)), torch.nn.Buffer(torch.randn(2, 3))):
        with torch.no_grad():
            want = type(x * 2)
            for layer in (norm, nbbn.BatchNorm(3)):
                y = layer(x)
                assert type(y) is want is torch.Tensor
                assert torch.equal(y, layer(x.detach().as_subclass(torch.Tensor)))


# ------------------------------------------------- edges found by mutation testing
def test_numpy_to_bf16_bits_rounds_as_torch():
    """The numpy fallback's rounding (ties to even, NaN quieted, infinities kept): the
    kernels' tests no longer reach it."""
    from nbbn._torch_arrays import numpy_to_bf16_bits

    bits = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0x7F7FFFFF,
                     0x7F800000, 0xFF800000, 0x00000001, 0x7FC00001, 0xFFFFFFFF], np.uint32)
    x = bits.view(np.float32)
    want = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy()
    got = numpy_to_bf16_bits(x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want.view(np.uint16)[~nan])
    assert (got[nan] == 0x7FC0).all()


def test_bfloat16_parameters_are_widened_exactly():
    mean = torch.tensor([1e10, -3.0e38], dtype=torch.bfloat16)
    norm = nbbn.Normalizer(mean, torch.ones(2))
    np.testing.assert_array_equal(norm.mean, mean.double().numpy())


def test_negative_bit_parameters_and_inputs_are_read():
    neg = torch.tensor([1 + 2j, 3 + 4j]).conj().imag  # a lazy negative view: [-2, -4]
    assert neg.is_neg()
    norm = nbbn.Normalizer(neg, torch.ones(2), eps=0.0)
    np.testing.assert_array_equal(norm.mean, [-2.0, -4.0])
    x = torch.tensor([[1 + 5j, 1 + 6j]]).conj().imag  # [[-5, -6]]
    assert x.is_neg()
    np.testing.assert_allclose(norm(x).numpy(), [[-3.0, -2.0]])


def test_a_size_one_axis_of_stride_zero_is_not_an_overlap():
    out = torch.zeros(4).as_strided((1, 2), (0, 2))  # one element per index
    assert out.stride() == (0, 2)
    norm = nbbn.Normalizer([1.0, 2.0], [1.0, 1.0], eps=0.0)
    norm(torch.tensor([[3.0, 5.0]]), out=out)
    torch.testing.assert_close(out, torch.tensor([[2.0, 3.0]]))


def test_paired_ratio_is_other_over_base_per_pair(monkeypatch):
    """``bench_torch.paired_ratio``: after an untimed call of each, the medians of each
    side's times and the median of other/base taken pair by pair (the order alternating)."""
    import statistics
    import types

    from nbbn.tools import bench_torch

    clock = [0.0]
    order = []

    def taking(name, durations):
        it = iter(durations)

        def call():
            order.append(name)
            clock[0] += next(it)
        return call

    monkeypatch.setattr(bench_torch, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    tb, to = [2.0, 1.0, 4.0], [3.0, 4.0, 2.0]
    got = bench_torch.paired_ratio(taking("b", [99.0, *tb]), taking("o", [99.0, *to]), 3)
    assert order == ["b", "o", "b", "o", "o", "b", "b", "o"]
    assert got == (statistics.median(tb), statistics.median(to),
                   statistics.median([o / b for b, o in zip(tb, to, strict=True)]))


@pytest.mark.filterwarnings("ignore::UserWarning")  # (torch: nested tensors are a prototype)
def test_a_nested_tensor_is_refused_in_nbbns_words():
    """torch's "Internal error ... Please file an issue" came out instead."""
    for layout in (torch.strided, torch.jagged):
        x = torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)], layout=layout)
        for call in (nbbn.RunningStats(-1).update,
                     nbbn.Normalizer([0.0] * 3, [1.0] * 3, channel_axis=-1),
                     nbbn.BatchNorm(3, channel_axis=-1)):
            with pytest.raises(TypeError, match=r"is a nested torch tensor .*x.unbind\(\)"):
                call(x)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_rounded_once_is_the_nearest_value(dtype, rng):
    """torch's float64 to bfloat16/float16 conversion goes through float32 and rounds
    twice: values just past a tie landed on it and went to even (1 + 2**-8 + 2**-30 as
    bfloat16 1.0, not 1.0078125). rounded_once gives the nearest, ties to even."""
    from fractions import Fraction

    from nbbn._torch_arrays import rounded_once

    dt = getattr(torch, dtype)
    bits = {"bfloat16": 8, "float16": 11, "float32": 24}[dtype]
    m = rng.integers(2 ** (bits - 1), 2**bits, 400).astype(np.float64)
    e = rng.integers(-8, 8, 400).astype(np.float64)
    step = 2.0 ** (e - bits + 1)  # (the spacing at m * 2**(e - bits + 1))
    nudge = rng.choice([-1.0, 1.0], 400) * step * 2.0 ** -rng.integers(18, 40, 400)
    x = np.concatenate([m * step + step / 2 + nudge, m * step + step / 2,
                        rng.standard_normal(400) * 100, [np.nan, np.inf, -np.inf, -0.0]])
    got = rounded_once(x, dt)
    assert got.dtype == dt
    g = got.double().numpy()
    assert np.isnan(g[-4]) and g[-3:].tolist() == [np.inf, -np.inf, 0.0]
    assert np.signbit(g[-1])
    up = torch.nextafter(got, torch.full_like(got, np.inf)).double().numpy()
    down = torch.nextafter(got, torch.full_like(got, -np.inf)).double().numpy()
    lsb = got.view(torch.int16 if bits < 24 else torch.int32).numpy() & 1
    for v, a, lo, hi, odd in zip(x[:-4], g[:-4], down[:-4], up[:-4], lsb[:-4], strict=True):
        err = abs(Fraction(v) - Fraction(a))
        assert err <= abs(Fraction(v) - Fraction(lo)) and err <= abs(Fraction(v) - Fraction(hi))
        if err in (abs(Fraction(v) - Fraction(lo)), abs(Fraction(v) - Fraction(hi))):
            assert odd == 0, (v, a)  # (a tie: the even one)
    if bits < 24:  # (what torch gives, for the record: not always the nearest)
        assert (torch.from_numpy(x[:400]).to(dt).double().numpy() != g[:400]).any()
