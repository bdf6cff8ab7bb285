"""Contracts mutation testing found unpinned (2026-12-04): nbbn._affine (out= checks) and
nbbn.batchnorm (state checks, to_normalizer)."""

from __future__ import annotations

import numpy as np
import pytest

import nbbn


def test_read_only_out_is_refused_with_a_value_error():
    """A read-only ``out=`` is a ValueError naming it (mutant: check removed, numba's
    typing error instead) and is left unwritten."""
    x = np.arange(6.0).reshape(3, 2)
    out = np.zeros((3, 2))
    out.flags.writeable = False
    norm = nbbn.Normalizer([1.0, 2.0], [1.0, 4.0], channel_axis=-1)
    with pytest.raises(ValueError, match="read-only"):
        norm(x, out=out)
    with pytest.raises(ValueError, match="read-only"):
        norm.inverse(x, out=out)
    with pytest.raises(ValueError, match="read-only"):
        nbbn.BatchNorm(2, channel_axis=-1)(x, out=out)
    assert not out.any()


def test_load_state_dict_refuses_a_negative_running_var_and_changes_nothing():
    """``load_state_dict`` with a negative running variance raises, all or nothing
    (mutant: the check removed, the negative variance loaded)."""
    bn = nbbn.BatchNorm(3)
    d = bn.state_dict(tensors=False)
    d["running_mean"] = np.array([1.0, 2.0, 3.0])
    d["running_var"] = np.array([1.0, -0.5, 2.0])
    with pytest.raises(ValueError, match="running_var"):
        bn.load_state_dict(d)
    np.testing.assert_array_equal(bn.running_mean, np.zeros(3))
    np.testing.assert_array_equal(bn.running_var, np.ones(3))


def test_running_var_setter_refuses_negatives_and_takes_nan():
    """``bn.running_var = v`` refuses negative values (-inf too) and keeps the buffer;
    NaN is taken, as torch's ``load_state_dict`` takes it: a training step on a batch
    with a NaN leaves one there (refused before, so such a state could not load back)."""
    bn = nbbn.BatchNorm(2)
    for bad in ([1.0, -1.0], [-np.inf, 1.0], [np.nan, -1e-300]):
        with pytest.raises(ValueError, match=r"running_var must be >= 0 \(or NaN\)"):
            bn.running_var = np.array(bad)
        np.testing.assert_array_equal(bn.running_var, np.ones(2))
    bn.running_var = np.array([1.0, np.nan])
    np.testing.assert_array_equal(bn.running_var, [1.0, np.nan])


def test_load_running_stats_refuses_a_nan_unbiased_variance():
    """Statistics with one value per channel have no unbiased variance (NaN): precise BN
    refuses them rather than writing NaN buffers (mutant: only the mean checked)."""
    bn = nbbn.BatchNorm(2, channel_axis=-1)
    rs = nbbn.RunningStats(-1).update(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        bn.load_running_stats(rs)
    np.testing.assert_array_equal(bn.running_var, np.ones(2))
    np.testing.assert_array_equal(bn.running_mean, np.zeros(2))


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_to_normalizer_keeps_eps(eps):
    """The frozen normalizer uses the BatchNorm's eps and maps as eval mode does
    (mutant: the default eps 1e-5)."""
    rng = np.random.default_rng(3)
    bn = nbbn.BatchNorm(3, eps=eps)
    bn.running_mean = rng.normal(size=3)
    bn.running_var = rng.uniform(0.1, 2.0, size=3)
    bn.weight = rng.normal(size=3)
    bn.bias = rng.normal(size=3)
    norm = bn.to_normalizer()
    assert norm.eps == eps
    x = rng.normal(size=(4, 3, 2))
    want = ((x - bn.running_mean[:, None]) / np.sqrt(bn.running_var[:, None] + eps)
            * bn.weight[:, None] + bn.bias[:, None])
    np.testing.assert_allclose(norm(x), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.eval()(x), want, rtol=1e-12, atol=1e-12)
