"""Contracts mutation testing found unpinned (2026-12-04): nbbn._statsfile
(RunningStats.save/load) and nbbn.checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nbbn
from nbbn._durable import checksum
from nbbn.checkpoint import FORMAT_VERSION, Checkpoint, load_checkpoint, save_checkpoint


def _entries(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _write(path, d: dict, *, fix_checksum: bool) -> None:
    if fix_checksum:
        d["checksum"] = np.asarray(checksum(d))
    with open(path, "wb") as f:
        np.savez(f, **d)


def _stats():
    return nbbn.RunningStats(-1).update(np.arange(12.0).reshape(4, 3) ** 2)


def test_load_refuses_a_stats_file_whose_content_fails_its_checksum(tmp_path):
    """A well-formed archive whose numbers were edited after saving (checksum kept) is
    refused (mutant: only a missing checksum refused)."""
    path = tmp_path / "s.npz"
    _stats().save(path)
    d = _entries(path)
    d["mean"] = d["mean"] + 1.0
    _write(path, d, fix_checksum=False)
    with pytest.raises(ValueError, match="checksum"):
        nbbn.RunningStats.load(path)


def test_load_refuses_a_stats_file_without_its_checksum(tmp_path):
    """An archive of valid statistics whose ``checksum`` entry is missing is refused:
    nothing vouches for its numbers (mutant: only a wrong checksum refused)."""
    path = tmp_path / "s.npz"
    _stats().save(path)
    d = _entries(path)
    del d["checksum"]
    _write(path, d, fix_checksum=False)
    with pytest.raises(ValueError, match="checksum mismatch"):
        nbbn.RunningStats.load(path)


def test_load_refuses_an_archive_of_another_format(tmp_path):
    """An archive with a ``format`` entry other than nbbn.RunningStats (its checksum
    valid) is refused by name (mutant: only checkpoints refused, others read)."""
    path = tmp_path / "s.npz"
    _stats().save(path)
    d = _entries(path)
    d["format"] = np.asarray("someone.else.Stats")
    _write(path, d, fix_checksum=True)
    with pytest.raises(ValueError, match="format"):
        nbbn.RunningStats.load(path)


def _checkpoint(path, **position) -> None:
    pos = {"shard": 0, "row": 0, "name": "s0.npy", "digest": None, **position}
    save_checkpoint(path, Checkpoint(_stats(), pos, None, {"batch_size": 4}))


def test_a_checkpoint_round_trips(tmp_path):
    path = tmp_path / "c.ckpt"
    _checkpoint(path, shard=1, row=3)
    ck = load_checkpoint(path)
    assert (ck.position["shard"], ck.position["row"]) == (1, 3)
    np.testing.assert_array_equal(ck.stats.mean, _stats().mean)


@pytest.mark.parametrize("position", [{"row": -1}, {"shard": -1}, {"row": 1.5}])
def test_load_checkpoint_refuses_a_negative_or_fractional_position(tmp_path, position):
    """The next row to read is a shard and a row, integers >= 0 (mutant: a negative row
    accepted)."""
    from nbbn.errors import CheckpointError

    path = tmp_path / "c.ckpt"
    _checkpoint(path, **position)
    with pytest.raises(CheckpointError, match="position"):
        load_checkpoint(path)


def test_load_checkpoint_refuses_the_next_format_version(tmp_path):
    """A checkpoint of format version FORMAT_VERSION + 1 is from a newer nbbn (mutant:
    only versions beyond that refused)."""
    from nbbn.errors import CheckpointError

    path = tmp_path / "c.ckpt"
    _checkpoint(path)
    d = _entries(path)
    d["version"] = np.asarray(FORMAT_VERSION + 1)
    _write(path, d, fix_checksum=True)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_check_fingerprint_checks_the_shard_read_in_part():
    """Shards 0 .. read_upto are counted (the last one possibly in part): a change in
    shard read_upto itself is refused, one in a later shard is not (mutant: shard
    read_upto left unchecked)."""
    from nbbn.checkpoint import check_fingerprint
    from nbbn.errors import CheckpointError

    saved = {"kind": "files", "shards": [{"name": f"s{i}.npy", "size": 100 + i}
                                          for i in range(4)]}
    changed = json.loads(json.dumps(saved))
    changed["shards"][2]["size"] = 999
    check_fingerprint(saved, changed, "c.ckpt", read_upto=1)  # s2 not read yet: fine
    with pytest.raises(CheckpointError, match="shard 2"):
        check_fingerprint(saved, changed, "c.ckpt", read_upto=2)


def test_resume_refuses_a_change_in_the_shard_it_stopped_in(tmp_path, monkeypatch):
    """End to end: a fit stopped by Ctrl-C inside shard s2, whose s2 then changes, is not
    resumed (its first rows were counted from the old data)."""
    import os
    import signal

    from nbbn import FitInterrupted, _shards_npy
    from nbbn.errors import CheckpointError

    rng = np.random.default_rng(5)
    src = tmp_path / "data"
    src.mkdir()
    for i in range(4):
        np.save(src / f"s{i}.npy", rng.standard_normal((30, 3)).astype(np.float32))
    calls = {"n": 0}
    orig = _shards_npy._NpyReader.read

    def read(self, start, stop, slot):
        calls["n"] += 1
        if calls["n"] == 9:  # (reads, prefetches included): inside s2
            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, start, stop, slot)

    monkeypatch.setattr(_shards_npy._NpyReader, "read", read)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(FitInterrupted):
        nbbn.fit(src, batch_size=10, checkpoint=ck, progress=False)
    monkeypatch.undo()
    pos = load_checkpoint(ck).position
    assert pos["shard"] == 2 and 0 < pos["row"] < 30, pos  # s2 counted in part
    np.save(src / "s2.npy", rng.standard_normal((30, 3)).astype(np.float32) + 7)
    os.utime(src / "s2.npy", ns=(1, 1))
    with pytest.raises(CheckpointError, match="shard 2"):
        nbbn.fit(src, batch_size=10, checkpoint=ck, resume=True, progress=False)


def test_a_foreign_npz_names_its_format_as_text(tmp_path):
    """scipy's ``save_npz`` stores ``format`` as bytes: the message said
    ``format "np.bytes_(b'csr')"``."""
    path = tmp_path / "sparse.npz"
    np.savez(path, format=np.bytes_(b"csr"), data=np.ones(2))
    with pytest.raises(ValueError, match="this is format 'csr', expected format"):
        nbbn.RunningStats.load(path)


@pytest.mark.parametrize("field, value, what", [("min", np.nan, "NaN"), ("max", np.inf, "infinite"),
                                                ("min", -np.inf, "infinite"),
                                                ("max", np.nan, "NaN")])
def test_from_dict_refuses_extremes_no_data_gives(field, value, what):
    """A NaN min or max comes only from a NaN, an infinite one from an infinity: such
    hand-made states loaded, and gave wrong statistics after the next update."""
    d = _stats().to_dict()
    d[field] = d[field].copy()
    d[field][1] = value
    with pytest.raises(ValueError, match=f"min or max is {what} in channels \\[1\\]"):
        nbbn.RunningStats.from_dict(d)
    x = np.array([[1.0, np.nan, np.inf], [2.0, -np.inf, 3.0]])
    for policy in ("propagate", "omit"):  # (the states data give load)
        rs = nbbn.RunningStats(-1, nan_policy=policy).update(x)
        np.testing.assert_array_equal(nbbn.RunningStats.from_dict(rs.to_dict()).max, rs.max)
