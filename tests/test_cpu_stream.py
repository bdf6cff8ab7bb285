"""The affine kernels' streamed outputs (non-temporal stores, ``cpu_stream``).

Only outputs larger than the last-level cache are streamed; here the threshold is
lowered to zero so that small arrays take that path, and each result is compared bit
for bit with the ordinary stores' and against the float64 reference: misaligned
outputs (a partial first and last cache line per buffer), channel counts whose rows
are and are not whole lines (those are not streamed), rows shorter and longer than a
buffer, and the build that counts infinities.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_output, random_array, ref_normalize

import nbbn
from nbbn.backends import cpu_normalize, cpu_stream


@pytest.fixture
def streamed(monkeypatch):
    """Run ``fn`` with the streamed and with the ordinary stores; both results."""
    def run(fn):
        monkeypatch.setattr(cpu_stream, "STREAM_MIN_BYTES", 1 << 62)
        plain = fn()
        monkeypatch.setattr(cpu_stream, "STREAM_MIN_BYTES", 0)
        return fn(), plain
    return run


def _norm(rng, x, axis):
    c = x.shape[axis]
    return nbbn.Normalizer(rng.uniform(-2, 2, c), rng.uniform(0.5, 2, c), eps=1e-3,
                           weight=rng.uniform(0.5, 2, c), bias=rng.standard_normal(c),
                           channel_axis=axis)


def _misaligned(shape, dtype, offset):
    """An output of ``shape`` starting ``offset`` elements past a 64-byte boundary."""
    dt = np.dtype(dtype)
    raw = np.empty(int(np.prod(shape)) + 64, dt)
    start = (-raw.ctypes.data % 64) // dt.itemsize + offset
    return raw[start : start + int(np.prod(shape))].reshape(shape)


@pytest.mark.parametrize("offset", [0, 1, 5])
@pytest.mark.parametrize("nchan", [1, 3, 16, 64, 100])
@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_channels_last_streamed_equals_plain(streamed, rng, dtype, nchan, offset):
    x = random_array(rng, (2 * cpu_normalize.CL_ROWS_PER_UNIT + 37, nchan), dtype,
                     channel_axis=-1)
    norm = _norm(rng, x, -1)
    out_dtype = np.float64 if dtype == "float64" else np.float32
    got, plain = streamed(lambda: norm(x, out=_misaligned(x.shape, out_dtype, offset)))
    np.testing.assert_array_equal(got, plain)
    assert_output(got, ref_normalize(x, norm.mean, norm.var, norm.weight, norm.bias, 1e-3, -1))


@pytest.mark.parametrize("offset", [0, 3])
@pytest.mark.parametrize("length", [1024, 1500, cpu_normalize.ROW_BLOCK + 700])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_channels_first_streamed_equals_plain(streamed, rng, dtype, length, offset):
    x = random_array(rng, (2, 3, length), dtype, channel_axis=1)
    norm = _norm(rng, x, 1)
    got, plain = streamed(lambda: norm(x, out=_misaligned(x.shape, np.float32, offset)))
    np.testing.assert_array_equal(got, plain)
    assert_output(got, ref_normalize(x, norm.mean, norm.var, norm.weight, norm.bias, 1e-3, 1))


def test_streamed_batchnorm_and_inverse(streamed, rng):
    x = random_array(rng, (64, 24, 24, 3), "uint8", channel_axis=-1)

    def both():
        bn = nbbn.BatchNorm(3, channel_axis=-1)
        y = bn(x, out=np.empty(x.shape, np.float32))  # (a new output is not streamed)
        return np.concatenate([y.ravel(), bn.running_mean, bn.running_var])

    got, plain = streamed(both)
    np.testing.assert_array_equal(got, plain)
    y = random_array(rng, (3000, 16), "float32", channel_axis=-1)
    norm = _norm(rng, y, -1)
    got, plain = streamed(lambda: norm.inverse(y, out=np.empty_like(y)))
    np.testing.assert_array_equal(got, plain)


def test_streamed_count_of_infinities(streamed, rng):
    # scikit-learn's transform counts infinities in the normalizer's own read (its new
    # output is not streamed: the build that counts, streamed, through the backend)
    from nbbn.backends import cpu

    x = rng.standard_normal((5000, 16)).astype(np.float32)
    x[4321, 5] = x[7, 0] = np.inf
    params = (rng.uniform(-1, 1, 16), rng.uniform(0.5, 2, 16), np.zeros(16))
    counts = []

    def run():
        out = np.empty_like(x)
        counts.append(cpu.affine(cpu.prepare(x, -1, "x"), params, out, count_inf=True))
        return out

    got, plain = streamed(run)
    np.testing.assert_array_equal(got, plain)
    assert counts == [2, 2]


def test_streamed_channels_first_count_of_infinities(streamed, rng):
    """The channels-first build that counts infinities counts them in its streamed
    loop too (rows of at least 1024 elements into a given output)."""
    from nbbn.backends import cpu

    x = rng.standard_normal((2, 3, 1100))
    x[1, 2, 1050] = x[0, 0, 3] = -np.inf
    x[1, 0, 7] = np.inf
    params = (rng.uniform(-1, 1, 3), rng.uniform(0.5, 2, 3), np.zeros(3))
    counts = []

    def run():
        out = np.empty_like(x)
        counts.append(cpu.affine(cpu.prepare(x, 1, "x"), params, out, count_inf=True))
        return out

    got, plain = streamed(run)
    np.testing.assert_array_equal(got, plain)
    assert counts == [3, 3]


def test_in_place_and_small_outputs_are_not_streamed(monkeypatch, rng):
    """An output that is the input, smaller than the threshold, or just allocated by the
    call (its pages are zero-filled into the cache as they are first touched) takes the
    ordinary stores (the kernels are given ``stream=False``)."""
    calls = []
    real = cpu_normalize.affine_channels_last

    def spy(*args):
        calls.append(args[8])  # the ``stream`` argument
        return real(*args)

    from nbbn.backends import cpu
    monkeypatch.setattr(cpu.kn, "affine_channels_last", spy)
    x = rng.standard_normal((4000, 16)).astype(np.float32)
    norm = _norm(rng, x, -1)
    norm(x, out=np.empty_like(x))
    monkeypatch.setattr(cpu_stream, "STREAM_MIN_BYTES", 0)
    norm(x, out=np.empty_like(x))
    norm(x)  # a new output
    norm(x, out=x)
    norm(x.astype(np.float16))  # a float16 output is not streamed
    x3 = x[:, :3].copy()
    _norm(rng, x3, -1)(x3, out=np.empty_like(x3))  # rows of part lines are not streamed
    assert calls == [False, True, False, False, False, False]


@pytest.mark.parametrize("offset", [1, 3, 7])
@pytest.mark.parametrize("shape, axis, dtype", [
    ((2, 3, 1030), 1, "float32"), ((1, 2, cpu_normalize.ROW_BLOCK + 5), 1, "uint8"),
    ((2 * cpu_normalize.CL_ROWS_PER_UNIT + 1, 3), -1, "uint8")])
def test_streamed_pieces_shorter_than_the_first_line(monkeypatch, shape, axis, dtype, offset):
    """A streamed piece shorter than the gap before its output's first 64-byte line is
    written by the head copy alone, which stops at the piece's end (unclamped, it wrote
    past the output): the bits of the ordinary stores, and nothing beyond the output."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 40 + 100).astype(dtype)
    c = shape[axis]
    norm = nbbn.Normalizer(rng.uniform(-2, 2, c), rng.uniform(0.5, 2, c), channel_axis=axis)
    monkeypatch.setattr(cpu_stream, "STREAM_MIN_BYTES", 1 << 62)
    plain = norm(x)
    monkeypatch.setattr(cpu_stream, "STREAM_MIN_BYTES", 0)
    raw = np.full(x.size + 64 + 256, np.nan, np.float32)
    start = (-raw.ctypes.data % 64) // 4 + offset
    out = raw[start:start + x.size].reshape(shape)
    norm(x, out=out)
    np.testing.assert_array_equal(out, plain)
    assert np.isnan(raw[:start]).all() and np.isnan(raw[start + x.size:]).all()
