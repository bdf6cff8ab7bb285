"""Contracts mutation testing found unpinned (2026-12-04): nbbn.running_stats (RunningStats
persistence, merging, commit)."""

from __future__ import annotations

import numpy as np
import pytest

import nbbn


def test_from_dict_refuses_version_0():
    """Versions start at 1: version 0 is no format nbbn ever wrote (mutant: ``< 0``)."""
    d = nbbn.RunningStats(-1).update(np.arange(6.0).reshape(3, 2)).to_dict()
    d["version"] = np.int64(0)
    with pytest.raises(ValueError, match="version"):
        nbbn.RunningStats.from_dict(d)


def test_from_dict_refuses_min_above_max_for_a_single_value():
    """A channel that counted one value has min == max; min > max there is corrupt
    (mutant: the check only for count > 1)."""
    d = nbbn.RunningStats(-1).update(np.array([[1.0, 2.0]])).to_dict()
    assert d["count"].tolist() == [1, 1]
    d["min"] = d["min"] + 1.0  # min 2 > max 1 in channel 0, 3 > 2 in channel 1
    with pytest.raises(ValueError, match="min exceeds max"):
        nbbn.RunningStats.from_dict(d)


def test_iadd_keeps_the_skipped_files_of_both_sides():
    """``a += b`` keeps ``a.skipped + b.skipped``, as ``a + b`` does (mutant: b's dropped)."""
    rng = np.random.default_rng(0)
    a = nbbn.RunningStats(-1).update(rng.normal(size=(4, 2)))
    b = nbbn.RunningStats(-1).update(rng.normal(size=(5, 2)))
    a.skipped = ["a.npy: unreadable"]
    b.skipped = ["b.npy: unreadable"]
    want = (a + b).skipped
    a += b
    assert a.skipped == want == ["a.npy: unreadable", "b.npy: unreadable"]


def test_merge_takes_the_other_sides_channel_coordinate():
    """Statistics without a channel coordinate merged with DataArray statistics keep the
    DataArray's labels (``a + b`` and ``a += b``): to_xarray shows them, and a batch with
    the labels reordered is refused afterwards (mutant: only self's coordinate kept)."""
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(1)
    da = xr.DataArray(rng.normal(size=(5, 3)), dims=("t", "band"),
                      coords={"band": ["r", "g", "b"]})
    labelled = nbbn.RunningStats("band").update(da)
    for merged in (nbbn.RunningStats("band") + labelled, _iadd(nbbn.RunningStats("band"),
                                                             labelled)):
        ds = merged.to_xarray()
        assert ds["band"].values.tolist() == ["r", "g", "b"]
        with pytest.raises(ValueError, match="coordinate"):
            merged.update(da.sel(band=["b", "g", "r"]))


def _iadd(a, b):
    a += b
    return a
