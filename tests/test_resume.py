"""Checkpoints and resume: bit-for-bit equal to an uninterrupted fit, refused when unsafe.

The crash test runs ``nbbn fit --checkpoint`` in a subprocess (through
``tests/slow_writes.py``, which slows the rename that commits a file so that the write
window is wide), kills it with SIGKILL at random moments and in the middle of
checkpoint writes, restarts it with
``--resume`` each time and compares the final statistics file bit for bit with an
uninterrupted fit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nbbn
from nbbn import CheckpointError, FitInterrupted, _shards_npy
from nbbn._durable import checksum as _checksum
from nbbn.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SLOW_WRITES = Path(__file__).resolve().parent / "slow_writes.py"  # nbbn with slow renames


def fit(src, **kw):
    kw.setdefault("progress", False)
    return nbbn.fit(src, **kw)


def same_bits(a, b) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return all(np.asarray(da[k]).tobytes() == np.asarray(db[k]).tobytes() for k in da)


@pytest.fixture
def shards(tmp_path, rng):
    d = tmp_path / "data"
    d.mkdir()
    for i, n in enumerate((50, 0, 73, 31)):
        x = (rng.standard_normal((n, 3, 4)) * 2 + 5).astype(np.float32)
        if i == 0:  # a compressed zip member: a resume inside it seeks in the stream
            np.savez_compressed(d / f"s{i}.npz", x)
        else:
            np.save(d / f"s{i}.npy", x)
    return d


def interrupt_at_read(monkeypatch, k: int) -> None:
    """Send SIGINT (Ctrl-C) to this process at the k-th batch read (.npy or .npz shard)."""
    calls = {"n": 0}
    for cls in (_shards_npy._NpyReader, _shards_npy._NpzReader):

        def read(self, start, stop, slot, _orig=cls.read):
            calls["n"] += 1
            if calls["n"] == k:
                os.kill(os.getpid(), signal.SIGINT)
            return _orig(self, start, stop, slot)

        monkeypatch.setattr(cls, "read", read)


# -------------------------------------------------------------------------- resume
def test_ctrl_c_then_resume_is_bit_for_bit(shards, tmp_path, monkeypatch):
    whole = fit(shards, batch_size=9)
    ck = tmp_path / "fit.ckpt"
    rows = []
    for k in (3, 9, 2):
        interrupt_at_read(monkeypatch, k)
        with pytest.raises(FitInterrupted, match=r"resume=True") as e:
            fit(shards, batch_size=9, checkpoint=ck, resume=True)
        c = load_checkpoint(ck)
        assert c.rows_done == e.value.rows_done and not c.complete
        assert e.value.stats.count.sum() == c.rows_done * 12  # 3 channels of 4 per row
        rows.append(c.rows_done)
    # a stop inside s0.npz keeps the state before it (a zip member's CRC is checked at its
    # end); the next stops are inside s2.npy
    assert rows[0] == 0 and 50 < rows[1] <= rows[2] < 50 + 73
    monkeypatch.undo()
    resumed = fit(shards, checkpoint=ck, resume=True)  # the batch size comes from the file
    assert same_bits(resumed, whole)
    c = load_checkpoint(ck)
    assert c.complete and c.rows_done == 154 and c.bytes_done == 154 * 12 * 4  # (float32)
    assert same_bits(fit(shards, checkpoint=ck, resume=True), whole)  # complete: no change


def test_scipy_sparse_shards_resume_bit_for_bit(tmp_path, rng, monkeypatch):
    sparse = pytest.importorskip("scipy.sparse")
    d = tmp_path / "sparse"
    d.mkdir()
    for i, fmt in enumerate(("csr", "csc")):
        sparse.save_npz(d / f"s{i}.npz", sparse.random_array((60, 4), density=0.3,
                                                             format=fmt, rng=rng))
    whole = fit(d, channel_axis=-1, batch_size=7)
    ck = tmp_path / "sparse.ckpt"
    calls = {"n": 0}

    def read(self, start, stop, slot, _orig=_shards_npy._SparseReader.read):
        calls["n"] += 1
        if calls["n"] == 12:  # inside the second file
            os.kill(os.getpid(), signal.SIGINT)
        return _orig(self, start, stop, slot)

    monkeypatch.setattr(_shards_npy._SparseReader, "read", read)
    with pytest.raises(FitInterrupted):
        fit(d, channel_axis=-1, batch_size=7, checkpoint=ck, resume=True)
    assert 60 < load_checkpoint(ck).rows_done < 120
    monkeypatch.undo()
    assert same_bits(fit(d, channel_axis=-1, checkpoint=ck, resume=True), whole)


def test_ctrl_c_during_a_checkpoint_write_stops_before_the_next_batch(tmp_path, monkeypatch):
    """Ctrl-C while a periodic checkpoint was written was acted on only after the next
    batch had been read and counted (a slow source kept the fit running, 6 s in one
    report); now the fit stops right after the write."""
    from nbbn import pipeline

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("Ctrl-C reaches the main thread, with Python's handler")
    items = [np.full((4, 3), float(i)) for i in range(5)]
    save, writes = pipeline.save_checkpoint, []

    def save_then_ctrl_c(path, ck):
        save(path, ck)
        writes.append(ck.rows_done)
        if len(writes) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pipeline, "save_checkpoint", save_then_ctrl_c)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(FitInterrupted) as e:
        fit(iter(items), checkpoint=ck, checkpoint_interval=0)
    assert e.value.rows_done == 4 and load_checkpoint(ck).rows_done == 4
    assert e.value.stats.count.tolist() == [4, 4, 4]


def test_ctrl_c_without_checkpoint_keeps_the_partial_stats(shards, monkeypatch):
    interrupt_at_read(monkeypatch, 4)  # read 4 waits for two batches to be done
    with pytest.raises(FitInterrupted, match="cannot be resumed") as e:
        fit(shards, batch_size=9)
    assert e.value.checkpoint is None and e.value.stats.count[0] == e.value.rows_done * 4 > 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_checkpoint_that_can_no_longer_be_written_says_what_it_holds(shards, tmp_path,
                                                                         monkeypatch):
    """The checkpoint's folder made read-only (or a full disk) during a fit: the error
    was a bare PermissionError; a note now says that the file still holds its last
    save, and how many rows that is, which a resume continues."""
    from nbbn import pipeline

    ck = tmp_path / "fit.ckpt"
    real, calls = pipeline.save_checkpoint, []

    def fails_after_two(path, c):
        calls.append(c.rows_done)
        if len(calls) > 2:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, c)

    monkeypatch.setattr(pipeline, "save_checkpoint", fails_after_two)
    with pytest.raises(PermissionError) as e:
        fit(shards, batch_size=25, checkpoint=ck, checkpoint_interval=0)
    monkeypatch.undo()
    held = load_checkpoint(ck).rows_done
    assert held == calls[1] > 0 and len(calls) == 4  # (the failed write, then once more)
    if sys.version_info >= (3, 11):
        note = " ".join(e.value.__notes__)
        assert f"could not be written again (PermissionError: [Errno 13] Permission " \
               f"denied: '{ck}'); it holds the statistics of the {held} rows of its last " \
               "save, which resume=True continues" in note, note
    assert same_bits(fit(shards, checkpoint=ck, resume=True), fit(shards, batch_size=25))


def test_error_midway_saves_progress_and_resume_reads_the_fixed_shard(shards, tmp_path):
    good = np.load(shards / "s3.npy")
    bad = good.copy()
    bad[5, 1, 2] = np.nan
    np.save(shards / "s3.npy", bad)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(ValueError, match=r"s3\.npy, rows 0-20: nan_policy='raise'") as e:
        fit(shards, batch_size=20, checkpoint=ck, nan_policy="raise")
    if sys.version_info >= (3, 11):
        assert "saved to" in " ".join(e.value.__notes__)
    assert load_checkpoint(ck).rows_done == 50 + 73
    np.save(shards / "s3.npy", good)  # a shard not read yet may change
    assert same_bits(fit(shards, checkpoint=ck, resume=True, nan_policy="raise"),
                     fit(shards, batch_size=20, nan_policy="raise"))


def test_a_bad_zip_checksum_keeps_none_of_the_shards_rows(tmp_path, rng):
    """zipfile checks a member's CRC only when it reads the member's last bytes, after
    the rows before them were counted: an error inside such a shard saves the statistics
    from before it, so a resume once the shard is fixed (same size and mtime: restored
    from a backup) equals an uninterrupted fit."""
    d = tmp_path / "data"
    d.mkdir()
    arrays = [(rng.standard_normal((20000, 3)) + i).astype(np.float32) for i in range(3)]
    for i, a in enumerate(arrays):
        np.savez_compressed(d / f"s{i}.npz", x=a)
    path = d / "s1.npz"
    good, st = path.read_bytes(), path.stat()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # inside the deflated data
    path.write_bytes(bytes(bad))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(Exception, match="(?i)crc|invalid|error") as e:  # zipfile's or zlib's
        fit(d, key="x", batch_size=3000, checkpoint=ck)
    saved = load_checkpoint(ck)
    assert saved.rows_done == 20000  # (the position: the end of s0)
    assert same_bits(saved.stats, fit(d / "s0.npz", key="x", batch_size=3000))
    if sys.version_info >= (3, 11):
        assert "rows read from it are not kept" in " ".join(e.value.__notes__)
    path.write_bytes(good)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert same_bits(fit(d, key="x", batch_size=3000, checkpoint=ck, resume=True),
                     fit(d, key="x", batch_size=3000))


def test_checkpoint_settings_checked_before_the_fit(tmp_path, rng, monkeypatch):
    """A numpy integer key is saved as an int; a key JSON cannot hold, a checkpoint the
    next fit of the folder would read as data, and an unwritable folder are refused
    before anything is read."""
    items = [(rng.standard_normal((5, 3)), 0) for _ in range(4)]
    st = fit(iter(items), key=np.int64(0), checkpoint=tmp_path / "a.ckpt")
    assert load_checkpoint(tmp_path / "a.ckpt").settings["key"] == 0
    assert same_bits(st, fit(iter(items), key=0))
    with pytest.raises(TypeError, match="key must be an int or a str"):
        fit(iter(items), key=(0,), checkpoint=tmp_path / "b.ckpt")
    d = tmp_path / "data"
    d.mkdir()
    np.save(d / "s0.npy", np.ones((4, 3)))
    with pytest.raises(ValueError, match="would be read as data of"):
        fit(d, checkpoint=d / "ck.npz")
    with pytest.raises(ValueError, match=r"is matched by the pattern .*would read it as "
                                         "data"):
        fit(str(d / "*.np[yz]"), checkpoint=d / "ck.npz")  # (a glob that matches it)
    fit(d, checkpoint=d / "fit.ckpt")  # not a data file's name: allowed
    import nbbn.pipeline as pipeline

    monkeypatch.setattr(pipeline.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="is not writable"):
        fit(d, checkpoint=tmp_path / "c.ckpt")
    assert not (tmp_path / "c.ckpt").exists()


def test_a_checkpoint_inside_the_zarr_store_fitted_is_refused(tmp_path, rng):
    """A zarr store is read as one shard whose fingerprint covers every file in it: a
    checkpoint written inside it (any name) was accepted, and changed the store, so no
    resume ever matched ("now has files 6, but the checkpoint recorded 5")."""
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "X.zarr"
    z = zarr.open_array(str(store), mode="w", shape=(40, 3), chunks=(10, 3), dtype="f8")
    z[:] = rng.standard_normal((40, 3))
    files = sorted(store.rglob("*"))
    for ck in (store / "fit.ckpt", store / "sub" / "fit.ckpt"):
        ck.parent.mkdir(exist_ok=True)
        with pytest.raises(ValueError, match=f"checkpoint='{ck}' is inside {store}, the "
                                             "zarr store fitted: .* write it outside"):
            fit(str(store), checkpoint=ck)
        assert not ck.exists()
    (store / "sub").rmdir()
    assert sorted(store.rglob("*")) == files  # nothing was written
    ck = tmp_path / "fit.ckpt"  # beside the store: fitted, and resumed
    assert same_bits(fit(str(store), checkpoint=ck), fit(str(store), checkpoint=ck,
                                                         resume=True))


def test_a_zarr_store_given_as_the_checkpoint_folder_is_told_a_place_outside(tmp_path, rng):
    """``--checkpoint r.zarr`` for the store r.zarr said "name the checkpoint file to
    write, e.g. fit.ckpt inside it", which was then refused as inside the store."""
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "r.zarr"
    z = zarr.open_array(str(store), mode="w", shape=(40, 3), chunks=(10, 3), dtype="f8")
    z[:] = rng.standard_normal((40, 3))
    with pytest.raises(IsADirectoryError, match=rf"is a folder: name the checkpoint file to "
                                                rf"write, outside .*r\.zarr, the source \(e\.g\. "
                                                rf"{tmp_path / 'fit.ckpt'}\)"):
        fit(str(store), checkpoint=store, resume=True)
    np.save(tmp_path / "a.npy", np.ones((4, 3)))
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="e.g. fit.ckpt inside it"):
        fit(tmp_path / "a.npy", checkpoint=tmp_path / "d")  # (a folder apart: inside it)


def test_an_hdf5_dataset_resumes_under_another_spelling(tmp_path, rng, monkeypatch):
    """A checkpoint written for "r.h5:g/x" was refused when resumed with key="g/x" ("a
    setting changed"): both name one dataset, which the fingerprint records."""
    h5py = pytest.importorskip("h5py")
    from nbbn import _shards

    with h5py.File(tmp_path / "r.h5", "w") as f:
        f["g/x"] = rng.standard_normal((200, 3))
        f["g/y"] = rng.standard_normal((200, 3))
    whole = fit(f"{tmp_path / 'r.h5'}:g/x", batch_size=40)
    ck = tmp_path / "fit.ckpt"
    calls = {"n": 0}

    def read(self, start, stop, slot, _orig=_shards._SliceReader.read):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return _orig(self, start, stop, slot)

    with monkeypatch.context() as m:
        m.setattr(_shards._SliceReader, "read", read)
        with pytest.raises(FitInterrupted):
            fit(f"{tmp_path / 'r.h5'}:g/x", batch_size=40, checkpoint=ck)
    with pytest.raises(CheckpointError, match="dataset '/g/y'"):
        fit(tmp_path / "r.h5", key="g/y", checkpoint=ck, resume=True)  # (another one)
    assert same_bits(fit(tmp_path / "r.h5", key="/g/x", checkpoint=ck, resume=True), whole)
    assert same_bits(fit(f"{tmp_path / 'r.h5'}:/g/x", checkpoint=ck, resume=True), whole)


def test_iterable_resume_and_shuffled_iterable_refused(tmp_path, rng):
    parts = [rng.standard_normal((n, 2)) for n in (10, 20, 5, 30)]

    def gen(order, stop_at=None):
        for i, j in enumerate(order):
            if i == stop_at:
                os.kill(os.getpid(), signal.SIGINT)
            yield parts[j]

    ck = tmp_path / "it.ckpt"
    with pytest.raises(FitInterrupted):
        fit(gen(range(4), stop_at=2), batch_size=7, checkpoint=ck, checkpoint_interval=0)
    pos = load_checkpoint(ck).position
    assert pos["digest"] and pos["shard"] >= 1
    with pytest.raises(CheckpointError, match="does not yield the items"):
        fit(gen([1, 0, 2, 3]), batch_size=7, checkpoint=ck, resume=True)
    assert same_bits(fit(gen(range(4)), checkpoint=ck, resume=True),
                     fit(gen(range(4)), batch_size=7))


def test_resume_without_file_starts_over_and_existing_file_needs_resume(shards, tmp_path,
                                                                         capsys):
    ck = tmp_path / "fit.ckpt"
    assert same_bits(nbbn.fit(shards, checkpoint=ck, resume=True), fit(shards))
    assert "starting from the beginning" in capsys.readouterr().err
    # the batch size used is saved, not "the default" (which may differ at the resume)
    assert load_checkpoint(ck).settings["batch_size"] == nbbn.sources.BATCH_BYTES // (12 * 4)
    with pytest.raises(CheckpointError, match="already exists.*resume=True"):
        fit(shards, checkpoint=ck)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit(shards, checkpoint=tmp_path / "no" / "such.ckpt")


def test_stale_temporary_files_are_removed(shards, tmp_path):
    stale = tmp_path / ".fit.ckpt.abc123.nbbn-tmp"
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.ckpt.abc123.nbbn-tmp"
    other.write_bytes(b"not ours")
    fit(shards, checkpoint=tmp_path / "fit.ckpt")
    assert not stale.exists() and other.exists()


# ------------------------------------------------------------------------ refusals
@pytest.fixture
def ckpt(shards, tmp_path, monkeypatch):
    """A checkpoint of an interrupted fit of ``shards`` (batch size 9)."""
    ck = tmp_path / "fit.ckpt"
    interrupt_at_read(monkeypatch, 9)  # inside s2.npy (s0.npz has 6 batches)
    with pytest.raises(FitInterrupted):
        fit(shards, batch_size=9, checkpoint=ck)
    monkeypatch.undo()
    return ck


def rewrite(path: Path, change) -> None:
    """Load the checkpoint's entries, let ``change`` edit them, save (checksum updated)."""
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    change(d)
    if "checksum" in d:
        d["checksum"] = np.asarray(_checksum(d))
    with open(path, "wb") as f:
        np.savez(f, **d)


def test_truncated_or_corrupt_checkpoint_refused(shards, ckpt):
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        fit(shards, checkpoint=ckpt, resume=True)
    middle = len(data) // 2
    ckpt.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    with pytest.raises(CheckpointError, match="corrupt"):
        fit(shards, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_checksum_mismatch_refused(shards, ckpt):
    with np.load(ckpt) as z:
        d = {k: z[k] for k in z.files}
    d["stats.mean"] = d["stats.mean"] + 1.0
    with open(ckpt, "wb") as f:
        np.savez(f, **d)
    with pytest.raises(CheckpointError, match="checksum does not match"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_newer_version_and_missing_fields_refused(shards, ckpt):
    original = ckpt.read_bytes()
    rewrite(ckpt, lambda d: d.update(version=np.asarray(99)))
    with pytest.raises(CheckpointError, match="version 99, newer"):
        fit(shards, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(original)
    rewrite(ckpt, lambda d: d.pop("meta"))
    with pytest.raises(CheckpointError, match=r"missing the fields \['meta'\]"):
        fit(shards, checkpoint=ckpt, resume=True)

    def drop_position(d):
        meta = json.loads(str(d["meta"]))
        del meta["position"]
        d["meta"] = np.asarray(json.dumps(meta))

    ckpt.write_bytes(original)
    rewrite(ckpt, drop_position)
    with pytest.raises(CheckpointError, match=r"missing the fields \['position'\]"):
        fit(shards, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(original)
    rewrite(ckpt, lambda d: d.pop("checksum"))
    with pytest.raises(CheckpointError, match=r"missing the fields \['checksum'\]"):
        fit(shards, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(original)
    rewrite(ckpt, lambda d: d.pop("stats.m2"))
    with pytest.raises(CheckpointError, match="missing the fields"):
        fit(shards, checkpoint=ckpt, resume=True)


@pytest.mark.parametrize("change, msg", [
    (lambda m: "a string", "expected a JSON object, got str"),
    (lambda m: dict(m, rows_done="abc"), "invalid metadata: rows_done='abc'"),
    (lambda m: dict(m, bytes_done=-1), "invalid metadata: bytes_done=-1"),
    (lambda m: dict(m, settings=[1]), r"invalid metadata: settings=\[1\]"),
    (lambda m: dict(m, complete=1), "invalid metadata: complete=1"),
    (lambda m: dict(m, position=dict(m["position"], shard=True)), "invalid position"),
    (lambda m: dict(m, position=dict(m["position"], row=-1)), "invalid position"),
])
def test_hand_made_metadata_refused(shards, ckpt, change, msg):
    """A checkpoint whose checksum matches but whose metadata no fit writes (found in
    review: a bare TypeError or ValueError that named no file, or loaded)."""
    def edit(d):
        d["meta"] = np.asarray(json.dumps(change(json.loads(str(d["meta"])))))

    rewrite(ckpt, edit)
    with pytest.raises(CheckpointError, match=msg):
        fit(shards, checkpoint=ckpt, resume=True)


@pytest.mark.parametrize("version", [np.asarray("2"), np.asarray(2.7), np.asarray([2])])
def test_a_version_that_is_not_an_integer_is_refused(shards, ckpt, version):
    rewrite(ckpt, lambda d: d.update(version=version))
    with pytest.raises(CheckpointError, match="no valid format version"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_version_1_checkpoints_resume(shards, ckpt):
    # version 1 held the fingerprint in the meta text, version 2 in an entry of its own
    def as_version_1(d):
        meta = json.loads(str(d["meta"]))
        meta["fingerprint"] = json.loads(d.pop("fingerprint").tobytes().decode())
        d["meta"] = np.asarray(json.dumps(meta))
        d["version"] = np.asarray(1)

    rewrite(ckpt, as_version_1)
    assert same_bits(fit(shards, batch_size=9, checkpoint=ckpt, resume=True),
                     fit(shards, batch_size=9))
    with np.load(ckpt) as z:  # the resumed fit wrote version 2
        assert int(z["version"]) == 2 and z["fingerprint"].dtype == np.uint8


def test_unreadable_or_missing_fingerprint_refused(shards, ckpt):
    original = ckpt.read_bytes()
    rewrite(ckpt, lambda d: d.pop("fingerprint"))
    with pytest.raises(CheckpointError, match=r"missing the fields \['fingerprint'\]"):
        fit(shards, checkpoint=ckpt, resume=True)
    ckpt.write_bytes(original)
    rewrite(ckpt, lambda d: d.update(fingerprint=np.frombuffer(b"{not json", np.uint8)))
    with pytest.raises(CheckpointError, match="unreadable fingerprint"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_statistics_file_is_not_a_checkpoint(shards, tmp_path):
    fit(shards).save(tmp_path / "stats.npz")
    with pytest.raises(CheckpointError, match="is a statistics file"):
        fit(shards, checkpoint=tmp_path / "stats.npz", resume=True)


def test_changed_data_refused(shards, ckpt, rng):
    counted = shards / "s0.npz"
    np.savez_compressed(counted, rng.standard_normal((50, 3, 4)).astype(np.float32))
    os.utime(counted, ns=(1, 1))
    with pytest.raises(CheckpointError, match=r"shard 0 .*s0\.npz.*refusing"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_other_source_refused(shards, ckpt, rng):
    with pytest.raises(CheckpointError, match="does not match the source|another source"):
        fit(rng.standard_normal((100, 3, 4)), checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="for files or arrays, but the source is an iter"):
        fit(iter([np.zeros((2, 3, 4))]), checkpoint=ckpt, resume=True)


@pytest.mark.parametrize("change, match", [
    ({"channel_axis": -1}, "channel_axis=1, but this fit has channel_axis=-1"),
    ({"nan_policy": "omit"}, "nan_policy='propagate'"),
    ({"batch_size": 10}, "batch_size=9, but batch_size=10"),
])
def test_other_settings_refused(shards, ckpt, change, match):
    with pytest.raises(CheckpointError, match=match):
        fit(shards, checkpoint=ckpt, resume=True, **change)


def test_another_name_for_the_same_channel_axis_resumes(shards, ckpt):
    """-2 names axis 1 of the shards' 3-d data: the resume was refused ("written with
    channel_axis=1, but this fit has channel_axis=-2")."""
    got = fit(shards, channel_axis=-2, checkpoint=ckpt, resume=True, batch_size=9)
    want = fit(shards, batch_size=9)
    for name in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


# ---------------------------------------------------------------- crash safety
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    return env


def test_sigkill_at_random_moments_then_resume_is_bit_for_bit(tmp_path):
    """Kill ``nbbn fit`` at random times and inside checkpoint writes; resume; compare."""
    rng = np.random.default_rng(1234)
    d = tmp_path / "data"
    d.mkdir()
    for i in range(6):
        np.save(d / f"part_{i}.npy",
                (rng.standard_normal((6000, 4, 8)) * 3 + i).astype(np.float32))
    work = tmp_path / "work"
    work.mkdir()
    ck, out = work / "fit.ckpt", work / "stats.npz"
    args = ["fit", str(d), "--batch-size", "300", "--checkpoint", str(ck),
            "--checkpoint-interval", "0", "--resume", "--no-progress", "-o", str(out)]
    cmd = [sys.executable, str(SLOW_WRITES), "0.015", *args]  # a wide write window
    env = _env()
    whole = fit(d, batch_size=300)

    def temps() -> set[str]:
        return {p.name for p in work.iterdir() if p.name.endswith(".nbbn-tmp")}

    pick = random.Random(99)
    seen_rows, killed_in_write = [], 0
    for attempt in range(6):
        left = temps()  # a killed write leaves its temp file; the next run removes it
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if attempt % 2:
            # inside a checkpoint write, after at least one write of this run completed
            names: set[str] = set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                now = temps() - left
                names |= now
                if now and len(names) >= 2:
                    break
                time.sleep(0.001)
        elif attempt == 0:  # start-up
            time.sleep(pick.uniform(0.1, 0.8))
        else:
            # any moment after this run got past the last checkpoint seen: reading,
            # computing or writing. (A fixed 1.0-2.5 s killed every run of a slow,
            # loaded host before it wrote again: the rows seen stayed at 300.)
            last = seen_rows[-1] if seen_rows else 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if ck.exists() and load_checkpoint(ck).rows_done > last:
                    break
                time.sleep(0.005)
            time.sleep(pick.uniform(0.0, 0.5))
        in_write = bool(temps() - left)
        proc.send_signal(signal.SIGKILL)
        if proc.wait() == 0:
            break
        killed_in_write += in_write
        if ck.exists():  # the checkpoint on disk is always a whole, valid one
            seen_rows.append(load_checkpoint(ck).rows_done)
    assert killed_in_write >= 3
    assert len(seen_rows) >= 3 and seen_rows[0] > 0
    assert seen_rows == sorted(seen_rows) and seen_rows[-1] > seen_rows[0]  # nothing lost

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert same_bits(nbbn.RunningStats.load(out), whole)
    assert not [p for p in work.iterdir() if p.name.endswith(".nbbn-tmp")]


# ------------------------------------------------ contracts a mutation round found unpinned
def test_an_edited_meta_fails_the_checksum(shards, ckpt):
    """The checksum covers the metadata (position, rows done), not only the arrays."""
    with np.load(ckpt) as z:
        d = {k: z[k] for k in z.files}
    meta = json.loads(str(d["meta"]))
    meta["rows_done"] += 1
    d["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    with open(ckpt, "wb") as f:
        np.savez(f, **d)  # the checksum left as it was
    with pytest.raises(CheckpointError, match="checksum"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_an_in_memory_array_whose_last_row_changed_is_refused(tmp_path, rng):
    """An array's fingerprint samples its first and last rows."""
    x = rng.standard_normal((20, 3))
    ck = tmp_path / "fit.ckpt"
    fit(x, checkpoint=ck)
    x[-1] += 1.0
    with pytest.raises(CheckpointError, match="sample_sha256"):
        fit(x, checkpoint=ck, resume=True)


def test_a_resume_with_another_view_of_a_memory_map_is_refused(tmp_path, rng):
    """``mm[5:15]`` and ``mm[0:10]`` are different rows of one file, ``mm.T`` of a square
    file other values than ``mm``: a checkpoint of one must not resume with the other
    (the views' ``np.memmap.offset`` is the map's: the first view's statistics came
    back). The same view resumes, and the whole map's fingerprint is as before."""
    np.save(tmp_path / "x.npy", rng.standard_normal((20, 3)))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ck = tmp_path / "fit.ckpt"
    fit(mm[0:10], checkpoint=ck)
    with pytest.raises(CheckpointError, match="changed"):
        fit(mm[5:15], checkpoint=ck, resume=True)
    assert same_bits(fit(mm[0:10], checkpoint=ck, resume=True), fit(mm[0:10]))
    np.save(tmp_path / "sq.npy", rng.standard_normal((3, 3)))
    sq = np.load(tmp_path / "sq.npy", mmap_mode="r")
    fit(sq, checkpoint=tmp_path / "sq.ckpt", channel_axis=-1)
    with pytest.raises(CheckpointError, match="changed"):
        fit(sq.T, checkpoint=tmp_path / "sq.ckpt", channel_axis=-1, resume=True)
    assert nbbn.sources.open_source(sq).shards[0].fingerprint()["offset"] == sq.offset


def test_a_resume_with_another_key_is_refused(tmp_path, rng):
    """Items of equal shapes and first rows (which the iterable's digest sees): only the
    saved ``key`` tells that another field is read."""
    a = [rng.standard_normal((5, 3)) for _ in range(4)]
    b = [x.copy() for x in a]
    for x in b:
        x[1:] += 1.0

    def items(stop=None):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if i == stop:
                raise RuntimeError("boom")
            yield {"a": x, "b": y}

    ck = tmp_path / "fit.ckpt"
    with pytest.raises(RuntimeError):
        fit(items(2), key="a", checkpoint=ck)
    with pytest.raises(CheckpointError, match="key"):
        fit(items(), key="b", checkpoint=ck, resume=True)


def test_the_complete_checkpoint_of_an_npz_holds_every_row(tmp_path, rng):
    """A fit that ends in an ``.npz`` member: the final checkpoint is complete at its
    last row, with the statistics returned."""
    np.savez_compressed(tmp_path / "a.npz", rng.standard_normal((30, 3)))
    ck = tmp_path / "fit.ckpt"
    st = fit(tmp_path / "a.npz", batch_size=7, checkpoint=ck)
    c = load_checkpoint(ck)
    assert c.complete and c.rows_done == 30 and c.position["row"] == 30
    assert c.bytes_done == 30 * 3 * 8  # (float64 rows of 3 values)
    assert same_bits(c.stats, st)


def test_an_iterable_resumed_inside_its_first_item_needs_that_item(tmp_path, rng):
    """A checkpoint at item 0, row > 0: an empty iterable on resume is refused."""
    x = rng.standard_normal((10, 3))

    def items():
        yield x
        raise RuntimeError("boom")

    ck = tmp_path / "fit.ckpt"
    with pytest.raises(RuntimeError):
        fit(items(), checkpoint=ck)
    assert load_checkpoint(ck).position["shard"] == 0
    with pytest.raises(ValueError, match="ended after 0 items"):
        fit(iter([]), checkpoint=ck, resume=True)


def test_an_entry_read_with_another_dtype_or_shape_fails_the_checksum(shards, ckpt):
    """The checksum covers each entry's dtype and shape, not only its bytes: the same
    bytes read as int64, or as a column, are other statistics."""
    original = ckpt.read_bytes()
    for change in (lambda a: a.view(np.int64), lambda a: a.reshape(-1, 1)):
        ckpt.write_bytes(original)
        with np.load(ckpt) as z:
            d = {k: z[k] for k in z.files}
        d["stats.mean"] = change(d["stats.mean"])
        with open(ckpt, "wb") as f:
            np.savez(f, **d)  # the checksum left as it was
        with pytest.raises(CheckpointError, match="checksum does not match"):
            fit(shards, checkpoint=ckpt, resume=True)


def test_a_rewritten_checkpoint_carries_its_own_write_time(ckpt, tmp_path, monkeypatch):
    """``extra`` holds further metadata only (a distributed fit's parts): the write time
    read from a checkpoint is not in it, so the next write of a resumed fit records its
    own time, not the old one."""
    from types import SimpleNamespace

    import nbbn.checkpoint as checkpoint_module

    c = load_checkpoint(ckpt)
    assert c.extra == {}
    monkeypatch.setattr(checkpoint_module, "time", SimpleNamespace(time=lambda: 1234.5))
    checkpoint_module.save_checkpoint(tmp_path / "again.ckpt", c)
    with np.load(tmp_path / "again.ckpt") as z:
        assert json.loads(str(z["meta"]))["written_unix"] == 1234.5


def test_a_source_with_fewer_shards_than_counted_is_refused(shards, ckpt):
    """The checkpoint is inside s2, the third shard: a source of two shards (s2 and s3
    gone) lacks one already counted in part."""
    (shards / "s2.npy").unlink()
    (shards / "s3.npy").unlink()
    with pytest.raises(CheckpointError, match="has counted 3 shards, but the source now has "
                                              "only 2"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_a_refused_resume_names_the_missing_or_new_file(shards, ckpt, tmp_path):
    """The checkpoint is inside s2 (s0.npz, s1.npy counted): with s1.npy gone, the
    message blamed s2's mtime ("shard 1 (s2.npy), already counted, now has mtime_ns"),
    since keys were compared in alphabetical order; it names the missing file, a new one
    that sorts before the position, or the checkpoint of another folder."""
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(shards, other)
    with pytest.raises(CheckpointError, match=rf"shard 0 is {other / 's0.npz'}\[arr_0\], "
                                              rf"but the checkpoint counted {shards / 's0.npz'}"
                                              r"\[arr_0\] there, and none of the files it "
                                              r"counted is among the data \(a checkpoint of "
                                              r"another folder\?\); refusing to resume"):
        fit(other, checkpoint=ckpt, resume=True)
    np.save(shards / "s0a.npy", np.ones((2, 3, 4), np.float32))
    with pytest.raises(CheckpointError, match=rf"{shards / 's0a.npy'} is new and sorts "
                                              r"before files already counted \(it is shard "
                                              rf"1 now, where the checkpoint counted "
                                              rf"{shards / 's1.npy'}\)"):
        fit(shards, checkpoint=ckpt, resume=True)
    (shards / "s0a.npy").unlink()
    (shards / "s1.npy").unlink()
    with pytest.raises(CheckpointError, match=rf"the checkpoint counted {shards / 's1.npy'}"
                                              r", which is no longer among the data") as info:
        fit(shards, checkpoint=ckpt, resume=True)
    assert "mtime_ns" not in str(info.value)
    (shards / "s3.npy").unlink()  # fewer shards than counted: the missing one named too
    with pytest.raises(CheckpointError, match=rf"only 2 \(it counted {shards / 's1.npy'}, "
                                              r"which is no longer among the data\)"):
        fit(shards, checkpoint=ckpt, resume=True)


def test_a_data_file_named_as_the_checkpoint_is_not_called_corrupt(shards, tmp_path):
    """A ``.npy`` array (a data file named by mistake) is refused for what it is, not as
    a truncated or corrupt checkpoint, whose message says to delete it."""
    data = tmp_path / "x.npy"
    np.save(data, np.ones((4, 3)))
    with pytest.raises(CheckpointError, match=r"is not an nbbn checkpoint \(expected an "
                                              r"\.npz") as info:
        fit(shards, checkpoint=data, resume=True)
    assert "delete" not in str(info.value)
    np.testing.assert_array_equal(np.load(data), np.ones((4, 3)))


def test_a_source_of_another_kind_is_refused_by_name(shards, ckpt):
    """A checkpoint of ``.npy``/``.npz`` shards resumed with a table: the message names
    both kinds, before any shard is compared."""
    pd = pytest.importorskip("pandas")
    table = pd.DataFrame(np.ones((50, 3)), columns=["a", "b", "c"])
    with pytest.raises(CheckpointError, match=r"different kind of source: arrays or array "
                                              r"files \(\.npy, \.npz, HDF5, zarr\), but the "
                                              r"source is a table \(Parquet, CSV"):
        fit(table, checkpoint=ckpt, resume=True, batch_size=9)


def test_a_memmap_resumed_as_an_array_in_memory_is_refused(tmp_path, rng):
    """A shard's fingerprint depends on what holds it (a file for a memmap, a sample of
    rows for an array in memory): a field one has and the other lacks is a difference,
    not skipped (other rows of the same shape were taken as the counted ones)."""
    np.save(tmp_path / "x.npy", rng.standard_normal((20, 3)))
    ck = tmp_path / "fit.ckpt"
    fit(np.load(tmp_path / "x.npy", mmap_mode="r"), checkpoint=ck)
    with pytest.raises(CheckpointError, match="does not match the source"):
        fit(rng.standard_normal((20, 3)), checkpoint=ck, resume=True)


def test_files_named_another_way_resume(shards, ckpt, tmp_path, monkeypatch):
    """A shard's name is the path as typed: the checkpoint of ``fit(shards)`` (absolute)
    was refused for ``data/``, ``./data`` or a relative list ("now has name 'data/s0.npz',
    but the checkpoint recorded '/tmp/.../data/s0.npz'"), though the absolute path, size
    and mtime it also records are those of the same files."""
    want = fit(shards, batch_size=9)
    monkeypatch.chdir(tmp_path)
    files = sorted(f"./data/{p.name}" for p in shards.iterdir())
    for spelled in ("data/", "./data", "./data/s*", files):
        got = fit(spelled, checkpoint=ckpt, resume=True, batch_size=9)
        assert same_bits(got, want), spelled
    other = tmp_path / "other"
    other.mkdir()
    (shards / "s0.npz").rename(other / "s0.npz")  # (another file is still refused)
    with pytest.raises(CheckpointError, match="s0.npz"):
        fit([str(other / "s0.npz"), *files[1:]], checkpoint=ckpt, resume=True, batch_size=9)


def test_a_table_named_another_way_resumes(tmp_path, rng, monkeypatch):
    """A Parquet row group or a CSV file is named by the path as typed: ``t.parquet``'s
    checkpoint was refused for ``./t.parquet`` (its "name" differed)."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame(rng.standard_normal((40, 2)), columns=["a", "b"])
    frame.to_parquet("t.parquet", row_group_size=10)
    frame.to_csv("t.csv", index=False)
    for name in ("t.parquet", "t.csv"):
        ck = tmp_path / f"{name}.ckpt"
        want = fit(name, checkpoint=ck)
        for spelled in (f"./{name}", str(tmp_path / name)):
            assert same_bits(fit(spelled, checkpoint=ck, resume=True), want), spelled


def test_a_refused_iterable_resume_leaves_the_checkpoint_as_it_was(tmp_path):
    """An iterable other than the one checkpointed (reordered, or shorter) is refused at
    its resume position; that refusal rewrote the checkpoint (a complete one became
    incomplete) and added the note that resume=True continues, which it cannot."""
    from nbbn.checkpoint import load_checkpoint
    from nbbn.errors import CheckpointError

    rng = np.random.default_rng(0)
    items = [rng.normal(size=(3, 3)) for _ in range(5)]
    ck = tmp_path / "c.ckpt"
    nbbn.fit(iter(items), progress=False, checkpoint=str(ck))
    before = ck.read_bytes()
    for other, why in ((items[::-1], "first rows differ"), (items[:2], "ended after 2 items")):
        with pytest.raises(CheckpointError, match=why) as info:
            nbbn.fit(iter(other), progress=False, checkpoint=str(ck), resume=True)
        assert not any("continues" in n for n in getattr(info.value, "__notes__", []))
    assert ck.read_bytes() == before and load_checkpoint(str(ck)).complete
