"""``RunningStats.channel_names``: checked, saved, merged, pickled, shown."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import nbbn
from nbbn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from nbbn.info import describe
from nbbn.report import format_json, format_table

NAMES = ("height", "weight", "age")


@pytest.fixture
def named(rng):
    return nbbn.RunningStats(-1, channel_names=list(NAMES)).update(rng.standard_normal((20, 3)))


def test_names_are_checked_before_anything_changes(rng):
    rs = nbbn.RunningStats(-1, channel_names=NAMES)
    assert rs.channel_names == NAMES and nbbn.RunningStats().channel_names is None
    with pytest.raises(ValueError, match=r"has 2 channels .* channel_names has 3 names"):
        rs.update(rng.standard_normal((5, 2)))
    assert rs.num_channels is None
    rs.update(rng.standard_normal((5, 3)))
    before = rs.to_dict()
    with pytest.raises(ValueError, match="channel_names has 2 names, but the statistics have 3"):
        rs.channel_names = ["a", "b"]
    with pytest.raises(TypeError, match="must all be str, got 3"):
        rs.channel_names = ["a", "b", 3]
    with pytest.raises(TypeError, match="sequence of str"):
        nbbn.RunningStats(channel_names="abc")
    with pytest.raises(ValueError, match="cannot end in a NUL character"):
        rs.channel_names = ["a", "b", "c\x00"]  # the statistics file would drop it
    assert rs.channel_names == NAMES
    assert all(np.array_equal(before[k], v) for k, v in rs.to_dict().items())
    rs.channel_names = None
    assert rs.channel_names is None and "channel_names" not in rs.to_dict()


def test_saved_and_loaded_older_files_still_load(named, tmp_path):
    named.save(tmp_path / "s.npz")
    back = nbbn.RunningStats.load(tmp_path / "s.npz")
    assert back.channel_names == NAMES
    np.testing.assert_array_equal(back.mean, named.mean)
    with np.load(tmp_path / "s.npz") as z:
        assert int(z["version"]) == 1  # the entry is optional: the format version stays
    d = named.to_dict()
    del d["channel_names"]  # a file written before names existed
    assert nbbn.RunningStats.from_dict(d).channel_names is None
    bad = {**named.to_dict(), "channel_names": np.asarray(["a", "b"])}
    with pytest.raises(ValueError, match="channel_names must be 3 str"):
        nbbn.RunningStats.from_dict(bad)


def test_checkpoint_pickle_and_copy_keep_names(named, tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", Checkpoint(named, {"shard": 0, "row": 0}, None, {}))
    assert load_checkpoint(tmp_path / "c.ckpt").stats.channel_names == NAMES
    assert pickle.loads(pickle.dumps(named)).channel_names == NAMES
    assert copy.deepcopy(named).channel_names == NAMES


def test_merging_keeps_equal_names_and_refuses_different_ones(named, rng):
    x = rng.standard_normal((7, 3))
    same = nbbn.RunningStats(-1, channel_names=NAMES).update(x)
    unnamed = nbbn.RunningStats(-1).update(x)
    assert (named + same).channel_names == NAMES
    assert (unnamed + named).channel_names == NAMES  # no names: the other's
    assert (named + nbbn.RunningStats(-1)).channel_names == NAMES
    other = nbbn.RunningStats(-1, channel_names=("height", "age", "weight")).update(x)
    before = named.to_dict()
    with pytest.raises(ValueError, match=r"different channels: .*first difference at channel 1"):
        named + other
    with pytest.raises(ValueError, match="different channels"):
        named += other
    assert named.channel_names == NAMES
    assert all(np.array_equal(before[k], v) for k, v in named.to_dict().items())
    unnamed += same
    assert unnamed.channel_names == NAMES and unnamed.count[0] == 14
    empty_named = nbbn.RunningStats(-1, channel_names=["a", "b"])
    with pytest.raises(ValueError, match="2 names, but the statistics have 3"):
        nbbn.RunningStats(-1).update(x).merge(empty_named)


def test_table_json_and_info_show_names(named):
    lines = format_table(named).splitlines()
    assert lines[0].split()[:2] == ["channel", "name"]
    assert [ln.split()[1] for ln in lines[1:]] == list(NAMES)
    assert '"channel_names": ["height", "weight", "age"]' in format_json(named)
    assert "channel_names" not in format_json(nbbn.RunningStats(-1).update(np.ones((2, 3))))
    assert "height" in describe(named) and "channel_names=['height'" in repr(named)
