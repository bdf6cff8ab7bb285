"""The CUDA backend: device arrays in and out, state on the device, block geometry.

Runs in Numba's CUDA simulator on machines without a GPU (see conftest.py), with a
patched launch configuration so that small arrays still use several blocks per
channel, several channel tiles and partial last blocks. Every result is compared with
the CPU backend and with the float64 reference.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import HAVE_NUMBA_CUDA, SIMULATOR
from reference import (
    assert_close,
    assert_output,
    assert_stats,
    random_array,
    ref_normalize,
    ref_stats,
    stats_rtol,
)

import nbbn

pytestmark = pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")


@pytest.fixture
def small_blocks():
    """Blocks of 32 threads, parts of >= 16 values, at most 6 blocks: a 40-channel
    channels-last array then needs two channel tiles (the second one partial), and a
    few hundred values per channel several parts with a partial last block."""
    from nbbn.backends import cuda as backend

    backend.set_config(backend.LaunchConfig(threads=32, block_elements=16, max_blocks=6,
                                            merge_blocks=3))
    yield backend.config()
    backend.set_config(None)


GEOMETRIES = {
    "cf_several_parts": ((3, 2, 7, 11), 1),  # 231 values per channel, 3 parts of 77
    "cf_one_row": ((1, 3, 100), 1),  # a single (C, L) image: parts split one row
    "cf_channel_axis0": ((2, 5, 9), 0),  # O = 1, long inner rows
    "cl_partial_tile": ((50, 40), -1),  # 40 channels > 32 threads: two tiles
    "cl_small_c": ((3, 29, 3), -1),  # C = 3: 10 rows per block step, partial last step
    "cl_middle_axis": ((7, 4, 1), 1),  # inner = 1: the channels-last kernel
    # long enough for whole unrolled groups (up to 16 loads per thread) before the tail
    "cf_long_rows": ((1, 2, 1100), 1),  # 3 parts of 733 values: 22-23 per thread
    "cl_long": ((1400, 3), -1),  # 6 parts of 233 rows, 10 rows per block step: 23-24 each
    # rows shorter than a block (32 threads): threads take positions of several rows
    "cf_short_rows": ((41, 3, 5), 1),  # 6 rows per step, 2 parts with a partial step
    "cf_short_rows_4d": ((300, 2, 3, 3), 1),  # I = 9: 3 rows per step, 3 parts
}


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "uint8", "int16", "uint16",
                                   "int64"])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_stats_geometries(geometry, dtype, cuda, small_blocks, rng):
    shape, axis = GEOMETRIES[geometry]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    gpu = nbbn.channel_stats(cuda.to_device(x), axis)
    assert_stats(gpu, ref_stats(x, axis), stats_rtol(dtype))
    cpu = nbbn.channel_stats(x, axis, backend="cpu")
    np.testing.assert_array_equal(gpu.count, cpu.count)
    np.testing.assert_array_equal(gpu.min, cpu.min)
    np.testing.assert_array_equal(gpu.max, cpu.max)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_normalizer_geometries(geometry, cuda, small_blocks, rng):
    shape, axis = GEOMETRIES[geometry]
    x = random_array(rng, shape, "float32", channel_axis=axis)
    c = shape[axis]
    mean, var = rng.normal(size=c), rng.uniform(0.5, 2.0, c)
    w, b = rng.normal(size=c), rng.normal(size=c)
    norm = nbbn.Normalizer(mean, var, weight=w, bias=b, channel_axis=axis)
    y = norm(cuda.to_device(x))
    assert nbbn.backends.is_device_array(y)
    assert_output(y.copy_to_host(), ref_normalize(x, mean, var, w, b, channel_axis=axis))
    back = norm.inverse(y).copy_to_host()
    assert_close(back, x, rtol=1e-5, atol=1e-5, name="inverse")


@pytest.mark.parametrize("shape, axis", [
    ((5, 2, 20), 1),  # rows of 20: >= 16 stats threads (partial_cf), < 32 (affine_rows)
    ((3, 2, 9), 1),  # rows of 9: short for both
    ((40, 40), -1),  # 40 channels: two tiles of 16 stats lanes + 8, of 32 affine + 8
    ((1, 3, 300), 1)])
def test_stats_launch_shape_of_its_own(shape, axis, cuda, rng):
    """The GPU default gives the statistics kernels a launch shape of their own
    (``stats_threads``, ``stats_max_blocks``; the affine kernels keep theirs): the
    statistics, the normalizer and BatchNorm's forward with the two shapes different."""
    from nbbn.backends import cuda as backend

    backend.set_config(backend.LaunchConfig(threads=32, block_elements=16, max_blocks=6,
                                            merge_blocks=3, stats_threads=16,
                                            stats_max_blocks=4))
    try:
        assert backend.stats_config().threads == 16 and backend.stats_config().max_blocks == 4
        assert backend.config().threads == 32
        x = random_array(rng, shape, "float32", channel_axis=axis)
        gpu = nbbn.channel_stats(cuda.to_device(x), axis)
        assert_stats(gpu, ref_stats(x, axis), stats_rtol("float32"))
        norm = gpu.to_normalizer()
        assert_output(norm(cuda.to_device(x)).copy_to_host(),
                      ref_normalize(x, gpu.mean, gpu.var, channel_axis=axis))
        bn, ref = (nbbn.BatchNorm(shape[axis], channel_axis=axis),
                   nbbn.BatchNorm(shape[axis], channel_axis=axis, backend="cpu"))
        assert_close(bn(cuda.to_device(x)).copy_to_host(), ref(x), rtol=1e-5, atol=1e-5,
                     name="train output")
        assert_close(bn.running_var, ref.running_var, rtol=1e-12, name="running_var")
    finally:
        backend.set_config(None)


def test_accuracy_large_mean(cuda, small_blocks, rng):
    """float32 data with mean = 1e4 x std: variance within 1e-6 of float64 on the same
    values (the per-thread shift keeps the cancellation bounded)."""
    x = (1e4 + rng.normal(size=(4, 3, 300))).astype(np.float32)
    rs = nbbn.channel_stats(cuda.to_device(x))
    ref = ref_stats(x, 1)
    assert_close(rs.var, ref.var, rtol=1e-6, name="var")
    assert_close(rs.mean, ref.mean, rtol=1e-12, name="mean")


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_nan_inf_like_cpu(nan_policy, cuda, small_blocks, rng):
    x = rng.normal(size=(6, 5, 40))
    x[1, 0, 3] = np.nan  # channel 0: a NaN
    x[2, 1, 5] = np.inf  # channel 1: +inf
    x[3, 2, 7], x[4, 2, 9] = np.inf, -np.inf  # channel 2: both signs
    x[:, 3, :] = np.nan  # channel 3: nothing but NaN
    x[0, 4, 0] = -np.inf  # channel 4: -inf and a NaN
    x[5, 4, 39] = np.nan
    gpu = nbbn.channel_stats(cuda.to_device(x), nan_policy=nan_policy)
    cpu = nbbn.channel_stats(x, nan_policy=nan_policy, backend="cpu")
    for name in ("count", "nan_count", "mean", "var", "min", "max"):
        np.testing.assert_allclose(getattr(gpu, name), getattr(cpu, name), rtol=1e-12,
                                   equal_nan=True, err_msg=name)


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_nan_and_inf_counts_add_up_over_device_updates(nan_policy, cuda, rng):
    """A state kept on the device adds each batch's NaN and inf counts to its own
    (mutant: the batch's counts replaced the state's)."""
    batches = [rng.normal(size=(3, 2, 4)) for _ in range(3)]
    batches[0][0, 0, 1] = batches[0][2, 1, 3] = np.nan
    batches[0][1, 1, 2] = np.inf
    batches[1][2, 0, 0] = np.nan
    batches[1][0, 0, 3] = -np.inf  # the last batch clean
    rs = nbbn.RunningStats(nan_policy=nan_policy)
    for b in batches:
        rs.update(cuda.to_device(b))
    x = np.concatenate(batches)
    np.testing.assert_array_equal(rs.nan_count, np.isnan(x).sum(axis=(0, 2)))
    np.testing.assert_array_equal(rs.inf_count, np.isinf(x).sum(axis=(0, 2)))


def test_nan_policy_raise_leaves_state(cuda, rng):
    rs = nbbn.RunningStats(nan_policy="raise")
    good = rng.normal(size=(4, 3, 5))
    rs.update(cuda.to_device(good))
    bad = good.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="nan_policy='raise'"):
        rs.update(cuda.to_device(bad))
    assert_stats(rs, ref_stats(good), 1e-12)


def test_state_stays_on_device_and_moves(cuda, small_blocks, rng):
    from nbbn.backends import cuda as backend

    batches = [rng.normal(size=(3, 4, 30)) for _ in range(4)]
    rs = nbbn.RunningStats()
    rs.update(cuda.to_device(batches[0]))
    rs.update(cuda.to_device(batches[1]))
    assert isinstance(rs._state, backend.DeviceStats)
    assert rs.num_channels == 4
    rs.update(batches[2])  # a numpy batch: the CPU backend, the state comes to the host
    assert not isinstance(rs._state, backend.DeviceStats)
    rs.update(cuda.to_device(batches[3]))  # and back to the device
    assert isinstance(rs._state, backend.DeviceStats)
    assert_stats(rs, ref_stats(np.concatenate(batches)), 1e-12)
    cpu = nbbn.RunningStats(backend="cpu")
    for b in batches:
        cpu.update(b)
    merged = rs + cpu  # merge, save, to_dict work from device state too
    assert_stats(merged, ref_stats(np.concatenate(batches * 2)), 1e-12)
    d = rs.to_dict()
    np.testing.assert_array_equal(d["count"], cpu.count)


def test_numpy_input_with_backend_cuda_returns_numpy(cuda, rng):
    x = rng.normal(size=(4, 3, 6)).astype(np.float32)
    rs = nbbn.channel_stats(x, backend="cuda")
    assert_stats(rs, ref_stats(x), 1e-6)
    y = nbbn.normalize(x, rs.mean, rs.var, backend="cuda")
    assert type(y) is np.ndarray and y.dtype == np.float32
    assert_output(y, ref_normalize(x, rs.mean, rs.var))
    out = np.empty_like(x)
    assert nbbn.normalize(x, rs.mean, rs.var, out=out, backend="cuda") is out
    assert_output(out, ref_normalize(x, rs.mean, rs.var))


def test_host_input_output_laid_out_as_on_the_cpu(cuda):
    """A new output of host input with backend="cuda" is laid out as the CPU backend's
    (numpy's order="K"): a Fortran-ordered array, a transposed view and a broadcast one
    came back C-ordered (the device copy's layout), and an expanded CPU tensor came
    back in torch.empty_like's order, where the CPU backend's is C-contiguous."""
    x = np.arange(24.0).reshape(2, 3, 4)
    mean, var = np.zeros(3), np.ones(3)
    for v in (np.asfortranarray(x), x.transpose(2, 1, 0).copy().transpose(2, 1, 0),
              np.broadcast_to(x[:1], x.shape), x[:, :, ::2]):
        ref = nbbn.Normalizer(mean, var, backend="cpu")(v)
        y = nbbn.Normalizer(mean, var, backend="cuda")(v)
        assert y.strides == ref.strides
        np.testing.assert_array_equal(y, ref)
        assert nbbn.BatchNorm(3, backend="cuda")(v).strides == ref.strides
    torch = pytest.importorskip("torch")
    t = torch.arange(6.0).reshape(2, 1, 3).expand(2, 3, 3).permute(2, 1, 0)
    ref = nbbn.normalize(t, mean, var, backend="cpu")
    y = nbbn.normalize(t, mean, var, backend="cuda")
    assert y.stride() == ref.stride() and y.is_contiguous()
    np.testing.assert_array_equal(y.numpy(), ref.numpy())


def test_host_data_goes_to_the_device_in_native_byte_order(cuda):
    """Big-endian host input, and a big-endian host ``out``, have native-order device
    copies: the GPU kernels read and write native numbers (the simulator indexes numpy
    arrays, which would hide a byte-swapped copy, so the dtypes are checked here)."""
    from nbbn.backends import cuda as backend

    for dt in (">f4", ">i2"):
        can = backend.prepare(np.arange(12, dtype=dt).reshape(2, 3, 2), 1, "x")
        assert can.dtype == np.dtype(dt).newbyteorder("=") and can.dtype.isnative
        out = backend.prepare_out(np.empty((2, 3, 2), ">f8"), can, "x")
        assert np.dtype(out.dev.dtype) == np.float64 and np.dtype(out.dev.dtype).isnative


def test_out_device_array_and_in_place(cuda, rng):
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    mean, var = rng.normal(size=3), rng.uniform(1, 2, 3)
    ref = ref_normalize(x, mean, var)
    d = cuda.to_device(x)
    out = cuda.device_array(x.shape, np.float64)
    assert nbbn.normalize(d, mean, var, out=out) is out
    assert_output(out.copy_to_host().astype(np.float32), ref)
    assert nbbn.normalize(d, mean, var, out=d) is d  # in place
    assert_output(d.copy_to_host(), ref)
    with pytest.raises(ValueError, match="device array"):
        nbbn.normalize(cuda.to_device(x), mean, var, out=np.empty_like(x))
    with pytest.raises(ValueError, match="shape"):
        nbbn.normalize(cuda.to_device(x), mean, var, out=cuda.device_array((2, 3), np.float32))


def test_uint8_output_is_float32(cuda, rng):
    x = rng.integers(0, 256, size=(3, 3, 8), dtype=np.uint8)
    rs = nbbn.channel_stats(cuda.to_device(x))
    y = rs.to_normalizer()(cuda.to_device(x))
    assert np.dtype(y.dtype) == np.float32
    assert_output(y.copy_to_host(), ref_normalize(x, rs.mean, rs.var))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("axis", [1, -1])
def test_batchnorm_like_cpu(momentum, axis, cuda, small_blocks, rng):
    shape = (6, 3, 10) if axis == 1 else (6, 10, 3)
    gpu = nbbn.BatchNorm(3, momentum=momentum, channel_axis=axis)
    cpu = nbbn.BatchNorm(3, momentum=momentum, channel_axis=axis, backend="cpu")
    gpu.weight[:] = cpu.weight[:] = rng.normal(size=3)
    for step in range(3):
        x = (rng.normal(size=shape) * (step + 1) + step).astype(np.float32)
        if step == 2:  # parameters edited in place between steps reach the device
            gpu.bias[:] = cpu.bias[:] = rng.normal(size=3)
        y = gpu(cuda.to_device(x))
        assert_close(y.copy_to_host(), cpu(x), rtol=1e-5, atol=1e-5, name="train output")
    assert gpu.num_batches_tracked == cpu.num_batches_tracked == 3
    assert_close(gpu.running_mean, cpu.running_mean, rtol=1e-12, name="running_mean")
    assert_close(gpu.running_var, cpu.running_var, rtol=1e-12, name="running_var")
    gpu.eval()
    cpu.eval()
    x = rng.normal(size=shape).astype(np.float32)
    assert_close(gpu(cuda.to_device(x)).copy_to_host(), cpu(x), rtol=1e-6, atol=1e-6,
                 name="eval output")
    gpu.weight[:] *= 2.0  # eval parameters are uploaded again when they change
    cpu.weight[:] *= 2.0
    gpu.running_var = cpu.running_var = cpu.running_var * 3.0
    assert_close(gpu(cuda.to_device(x)).copy_to_host(), cpu(x), rtol=1e-6, atol=1e-6,
                 name="eval output after edits")


def test_batchnorm_untracked_and_buffers_round_trip(cuda, rng):
    bn = nbbn.BatchNorm(2, track_running_stats=False)
    x = rng.normal(size=(5, 2, 4)).astype(np.float32)
    y = bn(cuda.to_device(x)).copy_to_host()
    ref = nbbn.BatchNorm(2, track_running_stats=False, backend="cpu")(x)
    assert_close(y, ref, rtol=1e-5, atol=1e-5)
    tracked = nbbn.BatchNorm(2)
    tracked(cuda.to_device(x))
    tracked.running_mean[:] = 0.0  # the host copy is the one the user edits
    tracked.running_var = np.full(2, 4.0)
    d = tracked.state_dict()
    np.testing.assert_array_equal(d["running_mean"], np.zeros(2))
    np.testing.assert_array_equal(d["running_var"], np.full(2, 4.0))


def test_batchnorm_untracked_with_an_infinite_variance(cuda, rng):
    """track_running_stats=False: the training kernel has no running buffers to move and
    must leave the affine parameters it wrote alone (mutant: it "updated" them as the
    buffers with factor 0, and 0 * inf turned the scale NaN). float64 values near the top
    of the range: the variance is inf, the scale 0, every output the bias, as on the
    CPU backend."""
    x = rng.uniform(0.0, 1.7e308, (4, 2, 3)) * rng.choice([-1.0, 1.0], (4, 2, 3))
    gpu = nbbn.BatchNorm(2, track_running_stats=False)
    gpu.bias[:] = rng.normal(size=2)
    y = gpu(cuda.to_device(x)).copy_to_host()  # (x - mean) * (weight / sqrt(inf)) + bias
    np.testing.assert_array_equal(y, np.broadcast_to(gpu.bias[:, None], x.shape))


def test_bad_input_leaves_state(cuda, rng):
    rs = nbbn.RunningStats()
    x = rng.normal(size=(4, 3, 5))
    rs.update(cuda.to_device(x))
    before = rs.to_dict()
    with pytest.raises(ValueError, match="channels"):
        rs.update(cuda.to_device(rng.normal(size=(4, 2, 5))))
    with pytest.raises(TypeError, match="dtype"):
        rs.update(cuda.to_device(np.zeros((4, 3, 5), np.complex64)))
    # every other element of the last axis: the inner axes (4, 3) do not merge
    strided = cuda.to_device(rng.normal(size=(4, 3, 4, 5)))[:, :, :, ::2]
    with pytest.raises(ValueError, match="without a copy"):
        rs.update(strided)
    # channels-last: rows 4 of 6 along the middle axis, whose outer axes do not merge
    # either (said so, whatever the row stride)
    with pytest.raises(ValueError, match="without a copy"):
        nbbn.channel_stats(cuda.to_device(rng.normal(size=(4, 6, 3)))[:, :4], channel_axis=-1)
    after = rs.to_dict()
    for key in ("count", "mean", "m2", "min", "max"):
        np.testing.assert_array_equal(before[key], after[key])


def _bn_state(bn):
    return {k: np.array(v, copy=True) for k, v in bn.state_dict(tensors=False).items()}


@pytest.mark.parametrize("case", ["out_no_view", "input_no_view", "out_read_only",
                                  "device_out_stride0", "host_out_stride0", "cl_out_no_flat"])
def test_batchnorm_bad_out_or_input_leaves_state(case, cuda, rng):
    """Every reason the kernels cannot read the input or write ``out`` is found before
    the training step changes the running buffers or ``num_batches_tracked``."""
    x = rng.normal(size=(4, 3, 4, 5))
    bn = nbbn.BatchNorm(3, channel_axis=-1 if case == "cl_out_no_flat" else 1,
                        backend="cuda")
    bn(x if case != "cl_out_no_flat" else rng.normal(size=(4, 3)))
    before = _bn_state(bn)
    kw: dict = {}
    arg = cuda.to_device(x)
    if case == "out_no_view":  # every other row of the third axis: no (O, C, I) view
        kw["out"] = cuda.device_array((4, 3, 8, 5), np.float64)[:, :, ::2, :]
        match = "out cannot be seen"
    elif case == "input_no_view":
        arg = cuda.to_device(x)[:, :, :, ::2]  # strides (480, 160, 40, 16): 3 * 16 != 40
        match = "cannot be seen as"
    elif case == "out_read_only":
        arg, kw["out"] = x, np.zeros_like(x)
        kw["out"].flags.writeable = False
        match = "read-only"
    elif case == "device_out_stride0":
        kw["out"] = cuda.to_device(np.broadcast_to(np.zeros((1, 3, 4, 5)), x.shape))
        match = "overlapping elements"
    elif case == "host_out_stride0":
        arg = x
        kw["out"] = np.lib.stride_tricks.as_strided(np.zeros((1, 3, 4, 5)), x.shape,
                                                    (0, 160, 40, 8))
        match = "overlapping elements"
    else:  # channels-last: rows of 3 at a row stride of -3 have no forward flat view
        arg = cuda.to_device(rng.normal(size=(4, 3)))
        kw["out"] = cuda.device_array((4, 3), np.float64)[::-1]
        match = r"negative stride \(a reversed axis\) or a zero stride along its rows"
    with pytest.raises(ValueError, match=match):
        bn(arg, **kw)
    after = _bn_state(bn)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_normalizer_refuses_an_overlapping_device_out(cuda, rng):
    x = rng.normal(size=(3, 3, 4))
    out = cuda.to_device(np.broadcast_to(np.zeros((1, 3, 4)), x.shape))
    with pytest.raises(ValueError, match="overlapping elements"):
        nbbn.Normalizer(np.zeros(3), np.ones(3))(cuda.to_device(x), out=out)


@pytest.mark.parametrize("shift", [1, 7])
def test_normalizer_device_out_partly_overlapping_its_input(cuda, shift):
    """An ``out`` that starts a few elements into its own input (one device buffer)
    goes through a temporary: written directly, values already normalized were read
    back as input."""
    shape = (2, 3, 40)
    n = int(np.prod(shape))
    host = np.random.default_rng(0).standard_normal(n + shift)
    buf = cuda.to_device(host)
    x, out = buf[:n].reshape(shape), buf[shift:].reshape(shape)
    norm = nbbn.Normalizer(np.arange(3.0), np.arange(1.0, 4.0))
    want = norm(host[:n].reshape(shape))
    norm(x, out=out)
    np.testing.assert_allclose(out.copy_to_host(), want, rtol=1e-12)


def test_normalizer_partly_overlapping_out_keeps_negative_zeros(cuda):
    """The copy back from the temporary keeps each value's bits: a -0.0 result (a value
    at its mean scaled by a negative weight, plus a bias of -0.0) stays -0.0, as written
    directly and on the CPU (an identity map adding +0.0 made it +0.0)."""
    shape, shift = (2, 3, 40), 3
    n = int(np.prod(shape))
    host = np.random.default_rng(1).standard_normal(n + shift)
    host[::4] = 0.0  # at the mean: (0 - 0) * -w + -0.0 = -0.0
    host[1::4] = -0.0  # (-0 - 0) * -w + -0.0 = +0.0
    buf = cuda.to_device(host)
    x, out = buf[:n].reshape(shape), buf[shift:].reshape(shape)
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), weight=-np.arange(1.0, 4.0),
                           bias=np.full(3, -0.0))
    want = norm(host[:n].reshape(shape))
    assert np.signbit(want[want == 0]).sum() >= n // 4 and (~np.signbit(want[want == 0])).any()
    norm(x, out=out)
    got = out.copy_to_host()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_device_parameters_are_uploaded_again_for_a_zero_of_the_other_sign(cuda):
    """The device copy of the parameters was kept while ``np.array_equal`` said the new
    ones were equal: a BatchNorm's bias of -0.0 stayed for the next one's +0.0 (the
    weight and bias upload is one per thread), so an output's sign depended on the
    module called before. Each now gives the CPU's bits."""
    x = np.array([[-1.0], [0.0], [1.0]])
    outs = {}
    for be in ("cpu", "cuda"):
        a = nbbn.BatchNorm(1, backend=be)
        a.weight, a.bias = np.array([-1.0]), np.array([-0.0])
        b = nbbn.BatchNorm(1, backend=be)
        b.weight = np.array([-1.0])
        outs[be] = [np.signbit(m(x)).tolist() for m in (a, b)]
    assert outs["cuda"] == outs["cpu"] and outs["cpu"][0] != outs["cpu"][1]


@pytest.mark.parametrize("axis", [1, 0])
def test_normalizer_device_out_transposing_its_input(cuda, axis):
    """An ``out`` that starts where its input starts, with other strides (the transpose
    of a square input), overlaps it without being the same view: written through a
    temporary, as a partly overlapping one."""
    host = np.random.default_rng(0).standard_normal((6, 6))
    d = cuda.to_device(host)
    norm = nbbn.Normalizer(np.arange(6.0), np.arange(1.0, 7.0), channel_axis=axis)
    want = norm(host)
    norm(d, out=d.T)
    np.testing.assert_allclose(d.copy_to_host().T, want, rtol=1e-12)


def test_cpu_tensor_with_backend_cuda_gives_tensors(cuda, rng):
    """torch in, torch out, as the CPU backend: a CPU tensor with backend="cuda" comes
    back as a CPU tensor, and a tensor ``out=`` is written (a bfloat16 input's float32
    ``out`` too)."""
    torch = pytest.importorskip("torch")
    mean, var = rng.normal(size=3), rng.uniform(1, 2, 3)
    for dt in (torch.float32, torch.float64, torch.uint8, torch.bfloat16):
        t = torch.from_numpy(rng.normal(4, 2, size=(2, 3, 4))).to(dt)
        ref = nbbn.normalize(t, mean, var, backend="cpu")
        y = nbbn.normalize(t, mean, var, backend="cuda")
        assert isinstance(y, torch.Tensor) and y.dtype == ref.dtype and y.device.type == "cpu"
        assert_close(y.double().numpy(), ref.double().numpy(), rtol=1e-6, atol=1e-6)
        out = torch.empty(t.shape, dtype=torch.float32)
        assert nbbn.normalize(t, mean, var, out=out, backend="cuda") is out
        assert_close(out.double().numpy(), ref.double().numpy(), rtol=1e-2, atol=1e-2)
    t = torch.from_numpy(rng.normal(size=(2, 3, 4, 5))).contiguous(
        memory_format=torch.channels_last)  # laid out as the input, as on the CPU
    assert nbbn.normalize(t, mean, var, backend="cuda").is_contiguous(
        memory_format=torch.channels_last)
    bn = nbbn.BatchNorm(3, backend="cuda")
    t = torch.from_numpy(rng.normal(size=(4, 3, 5)))
    y = bn(t)
    assert isinstance(y, torch.Tensor)
    assert_close(y.numpy(), nbbn.BatchNorm(3, backend="cpu")(t).numpy(), rtol=1e-12,
                 atol=1e-12)
    with pytest.raises(ValueError, match="numpy array or a CPU tensor for a host x, got list"):
        nbbn.normalize(t, mean, var, out=[0.0], backend="cuda")


def test_strided_device_view(cuda, rng):
    """A sliced device array whose strides still give an (O, C, I) view."""
    x = rng.normal(size=(6, 3, 8))
    d = cuda.to_device(x)[::2]
    assert_stats(nbbn.channel_stats(d), ref_stats(x[::2]), 1e-12)


def test_short_rows_strided_view(cuda, small_blocks, rng):
    """Every other sample of (O, C, I) with I < threads: the short-row kernels step over
    rows 2 * C * I apart, for the statistics and the normalizer (x and out)."""
    x = rng.normal(size=(60, 3, 7))
    d = cuda.to_device(x)[::2]
    rs = nbbn.channel_stats(d)
    assert_stats(rs, ref_stats(x[::2]), 1e-12)
    out = cuda.device_array((60, 3, 7), np.float32)[1::2]
    y = nbbn.normalize(d, rs.mean, rs.var, out=out)
    assert_output(y.copy_to_host(), ref_normalize(x[::2], rs.mean, rs.var))


def test_affine_cf_launches_stay_within_the_grid_limit(monkeypatch, cuda, small_blocks, rng):
    """``affine_cf`` takes a block per channel row (and chunk) and does not step over
    blocks: short rows with no flat view (an expanded input, a zero row stride) asked
    for one launch of ``O * C`` blocks, 2**31 for an expanded (2**31, 1, 2) tensor,
    past CUDA's grid limit. The rows are cut into launches within the limit (here a
    limit of 5 blocks, the launches recorded)."""
    from types import SimpleNamespace

    from nbbn.backends import cuda as backend

    assert backend._cf_rows_per_launch(1, 1, 2**31 - 1) == 2**31 - 1  # two launches
    assert backend._cf_rows_per_launch(3, 2, 2**31 - 1) == (2**31 - 1) // 6
    assert backend._cf_rows_per_launch(7, 1, 5) == 1  # (a row at least: 7 blocks)
    grids = []
    real = backend._affine_kernels

    def recording(*args):
        kern = real(*args)

        class Launch:
            def __getitem__(self, config):
                grids.append(config[0])
                return kern.affine_cf[config]

        return SimpleNamespace(**{**vars(kern), "affine_cf": Launch()})

    monkeypatch.setattr(backend, "_affine_kernels", recording)
    monkeypatch.setattr(backend, "MAX_GRID_X", 5)
    x = np.broadcast_to(rng.normal(size=(1, 2, 3)), (7, 2, 3))  # short rows, row stride 0
    d = cuda.to_device(x)
    assert d.strides[0] == 0
    mean, var = rng.normal(size=2), rng.uniform(1, 2, 2)
    y = nbbn.normalize(d, mean, var)
    assert_output(y.copy_to_host(), ref_normalize(x, mean, var))
    assert grids == [4, 4, 4, 2]  # 2 rows of 2 channels a launch
    grids.clear()
    x = rng.normal(size=(3, 2, 50))  # rows of one chunk (256 values), not short (32)
    y = nbbn.normalize(cuda.to_device(x), mean, var)
    assert_output(y.copy_to_host(), ref_normalize(x, mean, var))
    assert grids == [4, 2]


def test_single_row_with_a_zero_row_stride(cuda):
    """A (1, C) device row broadcast from a (C,) one has row stride 0: the kernels step
    over its one row with a positive step (a step of 0 read it as no rows at all)."""
    row = np.arange(4.0)
    d = cuda.to_device(np.broadcast_to(row, (1, 4)))
    assert d.strides[0] == 0
    assert_stats(nbbn.channel_stats(d, channel_axis=-1), ref_stats(row[None], -1), 1e-12)
    mean, var = np.ones(4), np.full(4, 4.0)
    y = nbbn.normalize(d, mean, var, channel_axis=-1)
    assert_output(y.copy_to_host(), ref_normalize(row[None], mean, var, channel_axis=-1))


def test_device_input_broadcast_along_its_first_axis(cuda):
    """Rows at a stride of 0 (M > 1): channels-first, the (O, C, I) view reads them;
    channels-last is refused, clearly (the flat kernels step along the first axis, and
    a step of 0 read nothing)."""
    x = np.broadcast_to(np.arange(6.0).reshape(1, 2, 3), (4, 2, 3))
    d = cuda.to_device(x)
    assert d.strides[0] == 0
    assert_stats(nbbn.channel_stats(d), ref_stats(x), 1e-12)
    rows = cuda.to_device(np.broadcast_to(np.arange(4.0), (3, 4)))
    with pytest.raises(ValueError, match="or a zero stride along its rows"):
        nbbn.channel_stats(rows, channel_axis=-1)


def test_device_input_with_reversed_channels(cuda):
    """A reversed channel axis was refused for "a negative or zero row stride" (the
    row stride was +16), and a reversed axis of length 1 was refused though it is
    never stepped."""
    d = cuda.to_device(np.arange(24.0, dtype=np.float32).reshape(6, 4))
    with pytest.raises(ValueError, match=r"has a negative stride \(a reversed axis\)"):
        nbbn.channel_stats(d[:, ::-1], channel_axis=-1)
    one = cuda.to_device(np.arange(6.0).reshape(6, 1))[:, ::-1]
    assert one.strides[1] < 0
    got = nbbn.channel_stats(one, channel_axis=-1)
    assert got.mean.tolist() == [2.5] and got.count.tolist() == [6]


STRIDED = {  # (shape, view, channel axis): a device view whose strides differ from
    # those of the new, contiguous output
    "rows": ((40, 3, 5), np.s_[::2], 1),  # every other sample: 20 rows of 5, short rows
    "inner": ((20, 3, 10), np.s_[:, :, ::2], 1),  # every other position of each row
    "channels_last": ((40, 8), np.s_[::2, ::2], -1),  # every other row and channel
}


@pytest.mark.parametrize("case", list(STRIDED))
def test_strided_view_into_a_new_output(case, cuda, small_blocks, rng):
    """Statistics and the normalizer of a strided device view, written to a new
    (contiguous) output: each kernel steps through the input by the input's row,
    channel and position strides and through the output by its own (mutants: an
    inner stride of 1 assumed, the output stepped by the input's strides)."""
    shape, view, axis = STRIDED[case]
    x = rng.normal(size=shape)
    xs = x[view]
    d = cuda.to_device(x)[view]
    rs = nbbn.channel_stats(d, axis)
    assert_stats(rs, ref_stats(xs, axis), 1e-12)
    y = nbbn.normalize(d, rs.mean, rs.var, channel_axis=axis)
    assert_output(y.copy_to_host(), ref_normalize(xs, rs.mean, rs.var, channel_axis=axis))


LAYOUTS = {  # device arrays of a (2, 3, 8) array in other memory orders
    "fortran": lambda cuda, x: cuda.to_device(np.asfortranarray(x)),
    "fortran_gapped": lambda cuda, x: cuda.to_device(np.asfortranarray(x))[:, :, ::2],
    "transposed_table": lambda cuda, x: cuda.to_device(x.reshape(-1, 3)).T,  # (3, 16)
}


@pytest.mark.parametrize("case", list(LAYOUTS))
def test_new_device_output_laid_out_as_its_input(case, cuda, small_blocks, rng):
    """A new device output has its input's layout (numpy's order="K", as a host
    output): it was C-contiguous whatever the input's strides."""
    d = LAYOUTS[case](cuda, rng.normal(size=(2, 3, 8)))
    host = d.copy_to_host()
    axis = 0 if case == "transposed_table" else 1
    want = np.empty_like(np.lib.stride_tricks.as_strided(host, strides=d.strides)).strides
    assert want != np.empty(host.shape).strides
    mean, var = rng.normal(size=3), rng.uniform(1, 2, 3)
    y = nbbn.normalize(d, mean, var, channel_axis=axis)
    assert y.strides == want
    assert_output(y.copy_to_host(), ref_normalize(host, mean, var, channel_axis=axis))
    y = nbbn.BatchNorm(3, channel_axis=axis)(d)
    assert y.strides == want
    assert_close(y.copy_to_host(), nbbn.BatchNorm(3, channel_axis=axis, backend="cpu")(host),
                 rtol=1e-9, atol=1e-9)


def test_new_device_output_of_an_expanded_input_is_c_contiguous(cuda):
    """An input broadcast along an axis (stride 0) gives a C-contiguous output, as the
    CPU backend's for an expanded tensor (numpy's order="K" puts such axes innermost)."""
    host = np.broadcast_to(np.arange(6.0).reshape(1, 2, 3), (4, 2, 3))
    y = nbbn.normalize(cuda.to_device(host), np.zeros(2), np.ones(2))
    assert y.strides == (48, 24, 8)


@pytest.mark.skipif(not SIMULATOR, reason="a simulator device array stands in for a tensor's")
def test_new_torch_device_output_keeps_its_memory_format(monkeypatch, cuda):
    """``empty_like_input`` for a torch input (a CPU tensor and the simulator's device
    array over its memory stand in for a CUDA tensor): a channels_last input gives a
    channels_last output, as docs/pytorch.md says (``torch.empty`` made it
    NCHW-contiguous), an expanded one a contiguous output, as on the CPU."""
    torch = pytest.importorskip("torch")
    from nbbn.backends import cuda_arrays

    fake = type(cuda.to_device(np.zeros(1)))  # (the simulator's, over a numpy array)
    for t, fmt in ((torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last),
                    torch.channels_last),
                   (torch.zeros(1, 3, 4, 5).expand(2, 3, 4, 5), torch.contiguous_format)):
        can = cuda_arrays.canonical(fake(t.numpy()), 1)
        can.array, can.kind = t, "torch"
        with monkeypatch.context() as m:
            m.setattr(cuda_arrays, "as_device", lambda t: (fake(t.numpy()), 0, "torch"))
            out, dev = cuda_arrays.empty_like_input(can, np.dtype(np.float32))
        assert out.dtype == torch.float32 and out.is_contiguous(memory_format=fmt)
        assert dev.strides == tuple(4 * s for s in out.stride())


def test_strides_like_match_numpy(rng):
    """The layout of a new device output (worked out on a data-less stand-in) is numpy's
    ``empty_like``'s, for permuted, sliced and reversed views."""
    from nbbn.backends.cuda_arrays import _strides_like

    a = np.zeros((3, 4, 5, 2))
    for _ in range(50):
        v = a.transpose(rng.permutation(4))
        v = v[tuple(slice(None, None, int(rng.choice([1, 2, -1]))) for _ in range(4))]
        assert _strides_like(v.shape, v.strides, 8) == np.empty_like(v).strides, v.strides


def test_empty_batch(cuda):
    rs = nbbn.RunningStats()
    rs.update(cuda.to_device(np.zeros((0, 3, 4), np.float32)))
    assert rs.num_channels == 3  # counts nothing, fixes the channel count
    np.testing.assert_array_equal(rs.count, [0, 0, 0])
    x = np.arange(24.0).reshape(2, 3, 4)
    rs.update(cuda.to_device(x))  # merged into the (host) statistics of no data
    assert_stats(rs, ref_stats(x), 1e-12)
    y = nbbn.normalize(cuda.to_device(np.zeros((0, 3), np.float32)), np.zeros(3), np.ones(3))
    assert tuple(y.shape) == (0, 3)


def test_no_channels(cuda):
    """An input with no channels (values along its other axes) has no statistics, as on
    the CPU backend: no launch (the kernels share the work out by channel)."""
    for shape, axis in (((3, 0, 4), 1), ((3, 0), -1)):
        x = np.zeros(shape)
        rs = nbbn.channel_stats(cuda.to_device(x), channel_axis=axis)
        np.testing.assert_array_equal(
            rs.count, nbbn.channel_stats(x, channel_axis=axis, backend="cpu").count)


def test_cuda_unavailable_messages(monkeypatch):
    from nbbn import backends

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(nbbn.BackendUnavailableError, match="numba-cuda"):
        nbbn.channel_stats(np.zeros((2, 3)), backend="cuda")
    monkeypatch.undo()
    from numba import cuda as nb_cuda
    from numba.core import config

    monkeypatch.setattr(config, "ENABLE_CUDASIM", False)
    monkeypatch.setattr(nb_cuda, "is_available", lambda: False)
    with pytest.raises(nbbn.BackendUnavailableError, match="no usable GPU"):
        backends.resolve("cuda")


def test_import_does_not_import_numba_cuda():
    code = ("import sys, numpy as np, nbbn; nbbn.channel_stats(np.ones((2, 3)));"
            "nbbn.normalize(np.ones((2, 3)), np.zeros(3), np.ones(3));"
            "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(SIMULATOR, reason="torch and CuPy device arrays need a real GPU")
@pytest.mark.parametrize("library", ["torch", "cupy"])
def test_library_round_trip(library, cuda, rng):
    lib = pytest.importorskip(library)
    x = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)
    if library == "torch":
        if not lib.cuda.is_available():
            pytest.skip("torch has no CUDA")
        d = lib.from_numpy(x).cuda()

        def host(a):
            return a.cpu().numpy()

        kind = lib.Tensor
    else:
        d = lib.asarray(x)
        host = lib.asnumpy
        kind = lib.ndarray
    rs = nbbn.channel_stats(d)
    assert_stats(rs, ref_stats(x), 1e-6)
    y = rs.to_normalizer()(d)
    assert isinstance(y, kind)
    assert_output(host(y), ref_normalize(x, rs.mean, rs.var))
    bn = nbbn.BatchNorm(3)
    assert isinstance(bn(d), kind)
    # a new output is laid out as its input (it was C-contiguous)
    if library == "torch":
        cl = d.contiguous(memory_format=lib.channels_last)
        for y in (rs.to_normalizer()(cl), bn(cl)):
            assert y.is_contiguous(memory_format=lib.channels_last)
    else:
        f = lib.asfortranarray(d.reshape(4, 3, 25))  # (4-d: no (O, C, I) view, a copy)
        assert rs.to_normalizer()(f).flags.f_contiguous


def test_backend_cpu_refuses_device_array(cuda):
    d = cuda.to_device(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="GPU array"):
        nbbn.channel_stats(d, backend="cpu")
    with pytest.raises(TypeError, match="GPU array"):
        nbbn.normalize(d, np.zeros(3), np.ones(3), backend="cpu")


@pytest.mark.parametrize("axis", [1, -1])
def test_outlier_first_value_per_thread(axis, cuda, small_blocks, rng):
    """Each thread's shift is its first value; make those values outliers 1e6 std away
    (on a mean of 5e4) and check the bounded cancellation keeps float64 accuracy."""
    x = 5e4 + rng.standard_normal((8, 3, 96))
    x[:, :, :32] += 1e6  # with 32 threads per block, every thread's first value
    if axis == -1:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    rs = nbbn.channel_stats(cuda.to_device(x), axis)
    assert_stats(rs, ref_stats(x, axis), 1e-12)


@pytest.mark.parametrize("shape, axis", [((1, 1, 6000), 1), ((6000, 1), -1),
                                         ((1500, 1, 3), 1)], ids=["cf", "cl", "rows"])
def test_a_long_thread_whose_first_value_is_far_out_is_read_again(shape, axis, cuda):
    """Each thread's shift is its first value: with 1,500 values per thread and that
    first value far from the others ([1.0, 0.3, 0.3, ...]), the rounding of its sums
    counted n + 1 times in M2 (1.2e-10 of the variance where the CPU gives 1e-14).
    Such a float64 thread now reads its values again around its mean, in each of the
    three statistics kernels (4 threads, one block)."""
    from fractions import Fraction

    from nbbn.backends import cuda as backend

    x = np.full(shape, 0.3)
    np.moveaxis(x, axis, -1).reshape(-1)[:4] = 1.0  # the first value of every thread
    flat = [Fraction(v) for v in x.reshape(-1).tolist()]
    mean = sum(flat) / len(flat)
    var = sum((v - mean) ** 2 for v in flat) / len(flat)
    backend.set_config(backend.LaunchConfig(threads=4, block_elements=10**7, max_blocks=1,
                                            merge_threads=1, merge_blocks=1, unroll=4))
    try:
        gpu = nbbn.channel_stats(cuda.to_device(x), axis)
    finally:
        backend.set_config(None)
    assert gpu.count.tolist() == [x.size]
    assert abs(Fraction(float(gpu.var[0])) - var) < var * Fraction(1, 10**13)
    assert abs(Fraction(float(gpu.mean[0])) - mean) < var ** 0.5 * 1e-14  # (in std units)
    assert gpu.min[0] == 0.3 and gpu.max[0] == 1.0


@pytest.mark.parametrize("geometry", ["cf_several_parts", "cl_long", "cf_short_rows_4d"])
def test_float64_near_the_top_of_the_range(geometry, cuda, small_blocks, rng):
    """Finite float64 values whose per-thread sums overflow (one sign) or whose single
    deviations do (both signs): each such thread redoes its values scaled by 2^-64, so
    the mean is finite and the CPU's to about 2^-53 of the values, the variance inf
    (its true value is beyond float64), as on the CPU; in every statistics kernel."""
    shape, axis = GEOMETRIES[geometry]
    x = rng.uniform(0.0, 1.7e308, shape)  # deviations from a thread's first value
    # up to 1.7e308: their sums overflow; channel 0 both signs: single deviations too
    ch0 = np.moveaxis(x, axis, 0)[0]
    ch0 *= rng.choice([-1.0, 1.0], ch0.shape)
    for policy in ("propagate", "omit"):
        y = x.copy()
        if policy == "omit":
            y.reshape(-1)[::7] = np.nan
        gpu = nbbn.channel_stats(cuda.to_device(y), axis, nan_policy=policy)
        cpu = nbbn.channel_stats(y, axis, nan_policy=policy, backend="cpu")
        assert np.isfinite(gpu.mean).all() and np.isposinf(gpu.var).all(), gpu
        np.testing.assert_allclose(gpu.mean, cpu.mean, rtol=0, atol=1e-15 * 1.7e308)
        np.testing.assert_array_equal(gpu.count, cpu.count)
        np.testing.assert_array_equal(gpu.min, cpu.min)
        np.testing.assert_array_equal(gpu.max, cpu.max)


def test_view_strides_match_numpy(rng):
    """The (O, C, I) view strides used on a GPU (computed on a data-less stand-in and
    cached per layout) equal numpy's reshape of the same layout, or both refuse."""
    from nbbn.backends.cuda_arrays import _view_strides

    for _ in range(300):
        shape = tuple(int(n) for n in rng.integers(1, 5, rng.integers(1, 5)))
        base = np.zeros(tuple(2 * n for n in shape), np.float32)
        a = base[tuple(slice(0, 2 * n, int(rng.integers(1, 3))) for n in shape)]
        a = a[tuple(slice(0, n) for n in shape)]
        if rng.random() < 0.3:
            a = a.transpose(rng.permutation(a.ndim))
        ax = int(rng.integers(0, a.ndim))
        new = (int(np.prod(a.shape[:ax])), a.shape[ax], int(np.prod(a.shape[ax + 1:])))
        try:
            expected = a.reshape(new, copy=False).strides
        except ValueError:
            expected = None
        assert _view_strides(a.shape, a.strides, 4, new) == expected


def test_bench_device_time_queues_behind_a_sleep(cuda):
    """``nbbn bench --backend cuda``'s device time: nothing without torch's CUDA; with it,
    one GPU sleep, then the calls between two events (a stand-in torch here: the
    simulator has no torch device)."""
    from nbbn.tools.bench_cuda import QUEUED, SLEEP_CYCLES, _Run

    calls, sleeps = [], []
    fake_torch = type("T", (), {"cuda": type("C", (), {"_sleep": staticmethod(sleeps.append)})})
    assert _Run(cuda, None, lambda fn, n: 0.0, 1).device_ms(lambda: calls.append(1)) is None
    assert not calls
    ms = _Run(cuda, fake_torch, lambda fn, n: 0.0, 1).device_ms(lambda: calls.append(1))
    assert sleeps == [SLEEP_CYCLES]
    assert len(calls) == QUEUED + 1  # one warm-up call before the sleep
    assert isinstance(ms, float)  # (the simulator's events time nothing: -1 ms)


def test_cuda_refuses_dataarrays_and_dask_arrays_clearly():
    """backend='cuda' passed a DataArray to the device path: a named channel axis said
    "the input has no named dimensions", an int one dropped the labels (a Normalizer
    returned numpy), and a dask array was computed whole."""
    xr = pytest.importorskip("xarray")
    da = pytest.importorskip("dask.array")
    labelled = xr.DataArray(np.ones((4, 3), np.float32), dims=("t", "band"))
    calls = [lambda: nbbn.RunningStats("band", backend="cuda").update(labelled),
             lambda: nbbn.Normalizer([0.0] * 3, [1.0] * 3, channel_axis=1,
                                     backend="cuda")(labelled),
             lambda: nbbn.BatchNorm(3, channel_axis="band", backend="cuda")(labelled)]
    for call in calls:
        with pytest.raises(TypeError, match="the input is an xarray DataArray: use "
                                            "backend='auto' or 'cpu'"):
            call()
    rs = nbbn.RunningStats(1, backend="cuda")
    with pytest.raises(TypeError, match="the input is a dask array"):
        rs.update(da.ones((4, 3), chunks=2))
    assert rs.num_channels is None


def test_overlap_test_of_device_arrays_sees_memory_below_a_reversed_view(monkeypatch):
    """On a card, ``overlaps`` took ``[pointer, pointer + alloc_size)``; a reversed
    view's pointer is its first element, the highest address, so ``x = D[4::-2]`` and
    ``out = D[0:3]`` (rows 0 and 2 shared) were judged apart and written in place. The
    card's branch, run on stand-ins of numpy views, against numpy's own test."""
    from nbbn.backends import cuda_arrays

    class Dev:  # what overlaps reads of a device array
        def __init__(self, a):
            self.shape, self.strides, self.dtype = a.shape, a.strides, a.dtype
            self.__cuda_array_interface__ = {"data": (a.__array_interface__["data"][0],
                                                      False)}
            self.alloc_size = a.nbytes  # (numba's: from the pointer up)

    monkeypatch.setattr(cuda_arrays, "SIMULATOR", False)
    base = np.zeros((6, 3), np.float32)
    views = [base[4::-2], base[0:3], base[3:], base[::-1], base[:, ::-1], base[5:6],
             base[1::2, 1:], base[0:1, ::-1], base[2:2]]
    for a in views:
        for b in views:
            same = (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                    and a.strides == b.strides)
            want = np.may_share_memory(a, b) and not same
            assert cuda_arrays.overlaps(Dev(a), Dev(b)) == want, (a.strides, b.strides)
