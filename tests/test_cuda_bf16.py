"""bfloat16 on the CUDA backend: the kernels decode bfloat16 bits on load and encode
bfloat16 outputs as torch rounds, and agree with the CPU backend bit for bit.

Under the simulator no CUDA tensor exists, so the inputs are host bfloat16 tensors with
``backend="cuda"`` (copied to the device as their uint16 bits, the same arrays a CUDA
tensor's ``view(torch.int16)`` gives the kernels). Small arrays and small blocks: each
simulated thread is a Python thread.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HAVE_NUMBA_CUDA

import nbbn

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")


@pytest.fixture
def small_blocks():
    """Blocks of 8 threads, parts of >= 16 values, at most 4 blocks: several parts per
    channel, partial last groups, and (rows of 5 values) the short-row kernels."""
    from nbbn.backends import cuda as backend

    backend.set_config(backend.LaunchConfig(threads=8, block_elements=16, max_blocks=4,
                                            merge_threads=2, merge_blocks=2, unroll=2))
    yield backend.config()
    backend.set_config(None)


# (shape, channel_axis): channels-first with long rows (I = 35 > 8 threads), with short
# rows (I = 5), and channels-last
LAYOUTS = {"cf": ((3, 2, 35), 1), "cf_short_rows": ((6, 3, 5), 1), "cl": ((40, 3), -1)}


def _bf16(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values, np.float32)).to(torch.bfloat16)


def _bits(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.bfloat16
    return t.view(torch.int16).numpy().view(np.uint16)


def _data(shape, rng, special: bool = False) -> torch.Tensor:
    x = rng.normal(size=shape) * 3.0 + 100.0  # a mean far from 0: exactness matters
    if special:
        flat = x.reshape(-1)
        flat[[1, 7]] = np.nan
        flat[4] = np.inf
    return _bf16(x)


def _assert_same_stats(gpu, cpu):
    np.testing.assert_array_equal(gpu.count, cpu.count)
    np.testing.assert_array_equal(gpu.nan_count, cpu.nan_count)
    for name in ("mean", "var", "min", "max"):
        a, b = getattr(gpu, name), getattr(cpu, name)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=name, equal_nan=True)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("special", [False, True], ids=["finite", "nan_inf"])
def test_statistics_like_cpu(layout, special, cuda, small_blocks, rng):
    shape, axis = LAYOUTS[layout]
    x = _data(shape, rng, special)
    policy = "omit" if special else "propagate"
    gpu = nbbn.RunningStats(channel_axis=axis, backend="cuda", nan_policy=policy)
    cpu = nbbn.RunningStats(channel_axis=axis, backend="cpu", nan_policy=policy)
    batches = 1 if special else 2  # the second batch is merged on the device (inf - inf
    for _ in range(batches):  # there would warn under the simulator, as numpy code)
        gpu.update(x)
        cpu.update(x)
    _assert_same_stats(gpu, cpu)
    # the values are those of the float32 widening, exactly
    ref = nbbn.RunningStats(channel_axis=axis, backend="cpu", nan_policy=policy)
    for _ in range(batches):
        ref.update(x.float().numpy())
    _assert_same_stats(gpu, ref)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_normalizer_output_bits_like_cpu(layout, cuda, small_blocks, rng):
    shape, axis = LAYOUTS[layout]
    nchan = shape[axis]
    x = rng.normal(size=shape).astype(np.float32)
    flat = np.moveaxis(x, axis, 0).reshape(nchan, -1)  # a copy: channel-major values
    # channel 0: y = x * 1 + 2**-8 on values that land on ties (1 + k * 2**-7 -> halfway),
    # NaN, inf, a value absorbed; channel 1 (weight 1e38): overflow to inf
    specials = np.array([1.0, 1.0078125, 1.015625, -1.0078125, np.nan, np.inf, -np.inf,
                         2.0**-133], np.float32)
    flat[0, :specials.size] = specials
    x = np.moveaxis(flat.reshape(np.moveaxis(x, axis, 0).shape), 0, axis)
    t = _bf16(x)
    mean = np.zeros(nchan)
    var = np.ones(nchan)
    weight = np.linspace(1.0, 1.5, nchan)
    weight[0] = 1.0
    bias = np.full(nchan, 0.25)
    bias[0] = 2.0**-8
    if nchan > 1:
        weight[1] = 1e38  # overflow to inf through float32
    kw = dict(eps=0.0, weight=weight, bias=bias, channel_axis=axis)
    gpu = nbbn.Normalizer(mean, var, backend="cuda", **kw)
    cpu = nbbn.Normalizer(mean, var, backend="cpu", **kw)
    y_gpu, y_cpu = gpu(t), cpu(t)
    assert isinstance(y_gpu, torch.Tensor) and y_gpu.dtype == torch.bfloat16
    np.testing.assert_array_equal(_bits(y_gpu), _bits(y_cpu))
    got = np.moveaxis(_bits(y_gpu), axis, 0).reshape(nchan, -1)
    # ties to even, NaN as 0x7FC0, inf stays inf, a tiny addend absorbed
    np.testing.assert_array_equal(got[0, :specials.size],
                                  [0x3F80, 0x3F82, 0x3F82, 0xBF80, 0x7FC0, 0x7F80, 0xFF80,
                                   0x3B80])
    if nchan > 1:
        assert np.isinf(y_gpu.float().numpy()).any()  # channel 1 overflows
    # torch's own rounding of the float64 results (float64 -> float32 -> bfloat16)
    y64 = (t.double().numpy() - _col(mean, axis, x.ndim)) * _col(weight, axis, x.ndim) + _col(
        bias, axis, x.ndim)
    want = torch.from_numpy(y64).to(torch.float32).to(torch.bfloat16)
    nan = torch.isnan(want).numpy()  # torch's own NaN bits vary between its code paths
    np.testing.assert_array_equal(_bits(y_gpu)[~nan], _bits(want)[~nan])
    assert (_bits(y_gpu)[nan] == 0x7FC0).all()

    back_gpu, back_cpu = gpu.inverse(y_gpu), cpu.inverse(y_cpu)
    np.testing.assert_array_equal(_bits(back_gpu), _bits(back_cpu))


def _col(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def test_mixed_outputs(cuda, small_blocks, rng):
    """bfloat16 in, float32 out; float32 in, bfloat16 out; bfloat16 in place."""
    shape, axis = LAYOUTS["cf"]
    t = _data(shape, rng)
    mean, var = np.full(2, 100.0), np.full(2, 9.0)
    gpu = nbbn.Normalizer(mean, var, backend="cuda")
    cpu = nbbn.Normalizer(mean, var, backend="cpu")
    out = np.empty(shape, np.float32)
    assert gpu(t, out=out) is out
    np.testing.assert_array_equal(out, cpu(t.float().numpy()))
    x32 = rng.normal(size=shape).astype(np.float32) * 3 + 100
    dst = torch.empty(shape, dtype=torch.bfloat16)
    assert gpu(x32, out=dst) is dst
    np.testing.assert_array_equal(_bits(dst), _bits(cpu(torch.from_numpy(x32),
                                                         out=torch.empty_like(dst))))
    y = gpu(t, out=t.clone())
    np.testing.assert_array_equal(_bits(y), _bits(cpu(t)))


@pytest.mark.parametrize("layout", ["cf", "cl"])
def test_batchnorm_training_like_cpu(layout, cuda, small_blocks, rng):
    shape, axis = LAYOUTS[layout]
    gpu = nbbn.BatchNorm(shape[axis], channel_axis=axis, backend="cuda")
    cpu = nbbn.BatchNorm(shape[axis], channel_axis=axis, backend="cpu")
    gpu.weight[:] = cpu.weight[:] = rng.normal(size=shape[axis])
    for _ in range(2):
        t = _data(shape, rng)
        y_gpu, y_cpu = gpu(t), cpu(t)
        assert isinstance(y_gpu, torch.Tensor) and y_gpu.dtype == torch.bfloat16
        np.testing.assert_array_equal(_bits(y_gpu), _bits(y_cpu))
    np.testing.assert_allclose(gpu.running_mean, cpu.running_mean, rtol=1e-12)
    np.testing.assert_allclose(gpu.running_var, cpu.running_var, rtol=1e-12)
    gpu.eval()
    cpu.eval()
    t = _data(shape, rng)
    np.testing.assert_array_equal(_bits(gpu(t)), _bits(cpu(t)))


def test_copy_through_a_temporary_keeps_the_bits(cuda, small_blocks, rng):
    """An output that partly overlaps its input is written through a temporary and then
    copied by an identity map (``_copy_device``), which for bfloat16 must read and write
    the bits as bfloat16 (mutant: the staged copy read them as integers). Such an
    overlap needs CUDA tensors, so under the simulator the copy is called directly."""
    from nbbn.backends import cuda as backend

    t = _data(LAYOUTS["cf_short_rows"][0], rng)
    # NaN as the kernels write it (0x7FC0: the copy, an affine map, writes any NaN so),
    # +inf, -inf and -0.0
    _bits(t).reshape(-1)[[1, 4, 7, 10]] = [0x7FC0, 0x7F80, 0xFF80, 0x8000]
    can = backend.prepare(t, 1, "input")
    assert can.bf16
    dst = cuda.device_array(can.shape, np.uint16)
    backend._copy_device(can.dev, dst, can, True)
    np.testing.assert_array_equal(dst.copy_to_host(), _bits(t))
