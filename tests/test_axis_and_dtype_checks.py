"""Contracts mutation testing found unpinned (2026-12-04): nbbn._layout (channel axis and
dtype validation)."""

from __future__ import annotations

import numpy as np
import pytest

import nbbn


def test_channel_axis_minus_ndim_for_non_ndarray_input():
    """``channel_axis=-ndim`` is valid for any input, a nested list (and a torch tensor)
    too, which take the general validation path (mutant: ``-ndim < axis`` there)."""
    x = np.arange(12.0).reshape(3, 4) ** 1.5
    want = nbbn.RunningStats(0).update(x)
    for batch in (x.tolist(), x):
        got = nbbn.RunningStats(-2).update(batch)
        np.testing.assert_array_equal(got.count, want.count)
        np.testing.assert_allclose(got.mean, x.mean(axis=1), rtol=1e-15)
        np.testing.assert_allclose(got.var, x.var(axis=1), rtol=1e-13)
    norm = nbbn.Normalizer(x.mean(axis=1), x.var(axis=1), eps=0.0, channel_axis=-2)
    ref = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    np.testing.assert_allclose(norm(x.tolist()), ref, rtol=1e-12, atol=1e-12)


def test_channel_axis_minus_ndim_for_a_torch_tensor():
    torch = pytest.importorskip("torch")
    x = np.arange(24.0).reshape(2, 3, 4) ** 1.5
    got = nbbn.RunningStats(-3).update(torch.from_numpy(x))
    np.testing.assert_allclose(got.mean, x.mean(axis=(1, 2)), rtol=1e-15)


@pytest.mark.parametrize("axis", [True, False, np.True_])
def test_boolean_channel_axis_is_refused(axis):
    """A bool is not an axis, though ``isinstance(True, int)`` (mutant: accepted as 1/0)."""
    with pytest.raises(TypeError, match="channel_axis"):
        nbbn.RunningStats(axis)
    with pytest.raises(TypeError, match="channel_axis"):
        nbbn.Normalizer([0.0], [1.0], channel_axis=axis)
    with pytest.raises(TypeError, match="channel_axis"):
        nbbn.BatchNorm(2, channel_axis=axis)


@pytest.mark.skipif(np.dtype(np.longdouble).itemsize <= 8,
                    reason="long double is float64 on this platform")
def test_long_double_input_is_a_type_error():
    """Only float16/32/64 floats are read: an extended-precision (float128) array is a
    TypeError naming the dtype, before anything is computed or changed (mutant: every
    floating dtype accepted, failing later inside numba)."""
    x = np.ones((3, 2), np.longdouble)
    rs = nbbn.RunningStats(-1).update(np.ones((3, 2)))
    before = rs.to_dict()
    with pytest.raises(TypeError, match="dtype"):
        rs.update(x)
    assert all(np.array_equal(before[k], v) for k, v in rs.to_dict().items())
    with pytest.raises(TypeError, match="dtype"):
        nbbn.Normalizer([0.0, 0.0], [1.0, 1.0], channel_axis=-1)(x)
