"""BatchNorm's training step on the CPU backend: the compiled step
(``cpu_normalize.batchnorm_params``) gives the bits of the numpy one
(``_affine.batchnorm_step``) and of its tiles (``tile_params``); the training call's
quick checks of ``num_batches_tracked``, ``weight`` and ``bias`` refuse and accept what
the full ones do."""

from __future__ import annotations

import numpy as np
import pytest

import nbbn
from nbbn._affine import batchnorm_step
from nbbn.backends import cpu_normalize as kn


def _batch(rng, c, n):
    """Batch statistics as the kernels give them: some constant channels (M2 0), a NaN
    channel, means far from 0 and near it."""
    mean = rng.standard_normal(c) * 10.0 ** rng.integers(-3, 4, c)
    m2 = rng.uniform(0, 50, c) * n
    m2[::5] = 0.0
    if c > 2:
        mean[2], m2[2] = np.nan, np.nan
    return mean, m2


@pytest.mark.parametrize("c", [1, 3, 7, 64, 512, 1000])
@pytest.mark.parametrize("factor", [0.1, 1 / 3, 1.0])
@pytest.mark.parametrize("tracked", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_compiled_step_has_the_numpy_bits(c, factor, tracked, eps, rng):
    n = int(rng.integers(2, 5000))
    mean, m2 = _batch(rng, c, n)
    weight, bias = rng.uniform(-2, 2, c), rng.uniform(-1, 1, c)
    start = np.stack([rng.standard_normal(c) * 3, rng.uniform(0.1, 9, c)])
    want_running, got_running = start.copy(), start.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        a, s, b = batchnorm_step(mean, m2, n, weight, bias, eps,
                                 want_running if tracked else None, factor)
    rows = kn.tile_rows(c)
    t = kn.batchnorm_params(mean, m2, n, weight, bias, eps,
                            got_running if tracked else kn.NO_RUNNING, factor, rows)
    assert t.shape == (3, rows, c) and t.dtype == np.float64
    want = np.stack([np.tile(v, rows).reshape(rows, c) for v in (a, s, b)])
    np.testing.assert_array_equal(t.view(np.uint64), want.view(np.uint64))
    np.testing.assert_array_equal(got_running.view(np.uint64), want_running.view(np.uint64))
    if not tracked:
        np.testing.assert_array_equal(got_running, start)
    assert kn.NO_RUNNING.shape == (2, 0)


def test_rounding_is_not_fused(rng):
    """Many channels of large values, on which a fused multiply-add rounds the running
    mean differently in some (a build with ``fastmath={"contract"}`` fails this test):
    the compiled step computes ``keep * r + factor * m`` with two roundings, as numpy."""
    c = 4096
    mean, m2 = rng.standard_normal(c) * 1e3, rng.uniform(1, 2, c) * 10
    start = np.stack([rng.standard_normal(c) * 1e3, rng.uniform(1, 2, c)])
    want = start.copy()
    batchnorm_step(mean, m2, 11, np.ones(c), np.zeros(c), 1e-5, want, 0.1)
    got = start.copy()
    kn.batchnorm_params(mean, m2, 11, np.ones(c), np.zeros(c), 1e-5, got, 0.1, 1)
    np.testing.assert_array_equal(got.view(np.uint64), want.view(np.uint64))


def test_training_call_matches_numpy_step(rng):
    """A training call's output and running buffers against the numpy step applied to
    the batch's float64 statistics by hand."""
    x = (rng.standard_normal((64, 37)) * 4 + 2).astype(np.float32)
    bn = nbbn.BatchNorm(37, momentum=0.2)
    bn.weight, bias = rng.uniform(0.5, 2, 37), rng.uniform(-1, 1, 37)
    bn.bias = bias
    y = bn(x)
    x64 = x.astype(np.float64)
    mean = x64.mean(0)
    m2 = ((x64 - mean) ** 2).sum(0)
    running = np.stack([np.zeros(37), np.ones(37)])
    a, s, b = batchnorm_step(mean, m2, 64, bn.weight, bias, 1e-5, running, 0.2)
    np.testing.assert_allclose(bn.running_mean, running[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bn.running_var, running[1], rtol=1e-12)
    np.testing.assert_allclose(y, ((x64 - a) * s + b).astype(np.float32), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("value", [-1, 2**63 - 1, 2**63, 1.5, True, "3", [1, 2],
                                   float("inf")])
def test_bad_num_batches_tracked_refused_untouched(value, rng):
    bn = nbbn.BatchNorm(3)
    before = bn.running_mean.copy()
    bn.num_batches_tracked = value
    with pytest.raises(ValueError, match="num_batches_tracked"):
        bn(rng.standard_normal((8, 3)))
    np.testing.assert_array_equal(bn.running_mean, before)


@pytest.mark.parametrize("value", [0, 5, 2**63 - 2, np.int64(7), 7.0])
def test_good_num_batches_tracked_counted_on(value, rng):
    bn = nbbn.BatchNorm(3, momentum=None)
    bn.num_batches_tracked = value
    bn(rng.standard_normal((8, 3)))
    assert bn.num_batches_tracked == int(value) + 1
    assert type(bn.num_batches_tracked) is int


def test_parameters_copied_and_checked(rng):
    """A float64 weight is read as a copy (the call does not keep or change it); other
    forms go through the full checks: converted, or refused with the state untouched."""
    x = rng.standard_normal((16, 4))
    bn = nbbn.BatchNorm(4)
    w = np.array([1.0, 2.0, 3.0, 4.0])
    bn.weight = w
    y = bn(x)
    np.testing.assert_array_equal(w, [1.0, 2.0, 3.0, 4.0])
    for same in (w.astype(">f8"), w.astype(np.float32), list(w)):
        fresh = nbbn.BatchNorm(4)
        fresh.weight = same
        np.testing.assert_array_equal(fresh(x), y)
    before = bn.running_mean.copy()
    for bad, error in ((np.ones(5), ValueError), (np.ones((4, 1)), ValueError),
                       (np.array(["a"] * 4), TypeError)):
        bn.weight = bad
        with pytest.raises(error, match="weight"):
            bn(x)
        np.testing.assert_array_equal(bn.running_mean, before)


@pytest.mark.parametrize("shape,axis", [((64, 37), 1), ((8, 5, 6, 7), 1), ((4, 6, 7, 3), -1),
                                        ((2, 1000), 1)])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_eval_map_has_the_bits_of_numpy_parameters(shape, axis, eps, rng):
    """Eval mode with running statistics (the compiled parameters, the running variance
    as one value's M2) against the map by ``affine_scale``'s numpy parameters, bit for
    bit: constant channels (variance 0, with eps=0 the scale is the weight) included."""
    from nbbn._affine import affine_scale
    from nbbn._layout import canonical
    from nbbn.backends import cpu

    c = shape[axis]
    x = (rng.standard_normal(shape) * 5 + 3).astype(np.float32)
    bn = nbbn.BatchNorm(c, eps=eps, channel_axis=axis)
    bn.running_mean = rng.standard_normal(c) * 10.0 ** rng.integers(-2, 3, c)
    var = rng.uniform(0, 4, c) * 10.0 ** rng.integers(-3, 3, c)
    var[::4] = 0.0
    bn.running_var = var
    bn.weight, bn.bias = rng.uniform(-2, 2, c), rng.uniform(-1, 1, c)
    bn.eval()
    got = bn(x)
    can = canonical(x, axis, "x")
    want = np.empty_like(x)
    cpu.affine(can, (bn.running_mean, affine_scale(bn.weight, var, eps), bn.bias), want)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(bn.to_normalizer()(x).view(np.uint32), got.view(np.uint32))
