"""uint8 channels-last -> float32 through the register kernel (``cpu_affine_simd``).

Each result is compared bit for bit with the portable tile loop's (the kernel forced
off) and against the float64 reference: channel counts with periods of 1 to 8 vectors
and counts the kernel does not take, row counts that leave a partial period and a
partial tile, misaligned outputs, the streamed path, BatchNorm training and the inverse.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_output, random_array, ref_normalize

import nbbn
from nbbn.backends import cpu_affine_simd, cpu_normalize, cpu_simd, cpu_stream


@pytest.fixture
def both(monkeypatch):
    """Run ``fn`` with the register kernel (where it applies) and without; both results
    and the ``nvec`` the kernel was given."""
    def run(fn):
        seen = []
        real = cpu_normalize.register_periods

        def spy(*args):
            seen.append(real(*args))
            return seen[-1]

        monkeypatch.setattr(cpu_normalize, "register_periods", spy)
        got = fn()
        monkeypatch.setattr(cpu_normalize, "register_periods", lambda *a: 0)
        return got, fn(), seen
    return run


def _norm(rng, nchan):
    return nbbn.Normalizer(rng.uniform(0, 255, nchan), rng.uniform(1, 4e3, nchan), eps=1e-3,
                           weight=rng.uniform(0.5, 2, nchan), bias=rng.standard_normal(nchan),
                           channel_axis=-1)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("offset", [0, 3])
@pytest.mark.parametrize("nchan", [1, 2, 3, 5, 6, 7, 8, 12, 16, 24, 40, 64, 9, 100])
def test_uint8_channels_last_register_kernel(both, monkeypatch, rng, nchan, offset, stream):
    monkeypatch.setattr(cpu_stream, "STREAM_MIN_BYTES", 0 if stream else 1 << 62)
    x = random_array(rng, (2 * cpu_normalize.CL_ROWS_PER_UNIT + 37, nchan), "uint8",
                     channel_axis=-1)
    norm = _norm(rng, nchan)
    raw = np.empty(x.size + 64, np.float32)
    start = (-raw.ctypes.data % 64) // 4 + offset
    out = raw[start : start + x.size].reshape(x.shape)
    got, plain, seen = both(lambda: norm(x, out=out).copy())
    np.testing.assert_array_equal(got, plain)
    assert_output(got, ref_normalize(x, norm.mean, norm.var, norm.weight, norm.bias, 1e-3, -1))
    nvec = nchan // np.gcd(nchan, cpu_affine_simd.LANES)
    applies = cpu_simd.HAVE_SIMD and nvec <= cpu_affine_simd.MAX_VECTORS
    assert seen == [nvec if applies else 0]


def test_register_kernel_only_for_uint8_to_float32(rng):
    x = random_array(rng, (100, 3), "uint8", channel_axis=-1)
    f32 = np.empty(x.shape, np.float32)
    on = cpu_normalize.register_periods(x, f32, 3, 288)
    assert on == (3 if cpu_simd.HAVE_SIMD else 0)  # 3 rows of 8 or of 4 float64 lanes
    assert cpu_normalize.register_periods(x, f32, 3, 100) == 0  # tiles not whole periods
    assert cpu_normalize.register_periods(x, np.empty(x.shape), 3, 288) == 0  # float64 out
    assert cpu_normalize.register_periods(x.astype(np.int8), f32, 3, 288) == 0


def test_register_kernel_batchnorm_and_inverse(both, rng):
    x = random_array(rng, (16, 24, 24, 3), "uint8", channel_axis=-1)

    def train():
        bn = nbbn.BatchNorm(3, channel_axis=-1)
        y = bn(x)
        return np.concatenate([y.ravel(), bn.running_mean, bn.running_var])

    got, plain, seen = both(train)
    np.testing.assert_array_equal(got, plain)
    assert seen == [3 if cpu_simd.HAVE_SIMD else 0]
    norm = _norm(rng, 3)
    y = norm(x)
    back, plain, _ = both(lambda: norm.inverse(y))  # float32 input: the portable loop
    np.testing.assert_array_equal(back, plain)


@pytest.mark.parametrize("nchan", [1, 3, 5, 6, 7, 9, 12, 24, 40, 100])
def test_register_kernel_writes_nothing_past_the_output(monkeypatch, nchan):
    """The kernel runs whole periods only and leaves the partial one to the tail: one
    period too many wrote past the output, which only a later crash elsewhere showed."""
    monkeypatch.setattr(cpu_stream, "STREAM_MIN_BYTES", 1 << 62)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2 * cpu_normalize.CL_ROWS_PER_UNIT + 37, nchan), np.uint8)
    norm = nbbn.Normalizer(rng.uniform(0, 255, nchan), rng.uniform(1, 4e3, nchan),
                           channel_axis=-1)
    raw = np.full(x.size + 4096, np.nan, np.float32)
    norm(x, out=raw[:x.size].reshape(x.shape))
    assert np.isnan(raw[x.size:]).all()
    np.testing.assert_array_equal(raw[:x.size].reshape(x.shape), norm(x))
