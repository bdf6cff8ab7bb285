"""Durable files (nbbn._durable): statistics files, checkpoints and ``transform``'s ``.npy``.

Each is written through a temporary file renamed over the target: the permissions are
those ``open()`` gives under the umask, a failed write leaves the old file and no
temporary file, and the temporary files dead writers left are removed.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nbbn
from nbbn import _durable
from nbbn._durable import TMP_SUFFIX, Replacement, atomic_write, remove_stale_temps

ROOT = Path(__file__).resolve().parents[1]
POSIX = os.name == "posix"


@pytest.fixture
def umask():
    """Set the process's umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


X = np.random.default_rng(0).standard_normal((10, 3))


def write_save(path: Path) -> None:
    nbbn.channel_stats(X, 1).save(path)


def write_checkpoint(path: Path) -> None:
    """A fit with a checkpoint, resumed (and so rewritten) when the file exists."""
    nbbn.fit(X, checkpoint=path, resume=os.path.exists(path), progress=False)


def write_transform(path: Path) -> None:
    nbbn.transform(X, nbbn.channel_stats(X, 1), path, progress=False)


WRITERS = {"save": write_save, "checkpoint": write_checkpoint, "transform": write_transform}
NAMES = {"save": "stats.npz", "checkpoint": "fit.ckpt", "transform": "y.npy"}


# ------------------------------------------------------------------------ permissions
@pytest.mark.skipif(not POSIX, reason="POSIX permissions")
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_mode_open_gives(tmp_path, umask, writer, mask, want):
    umask(mask)
    path = tmp_path / NAMES[writer]
    WRITERS[writer](path)
    assert mode(path) == want
    with open(tmp_path / "by_open", "w"):  # what open() gives, for comparison
        pass
    assert mode(tmp_path / "by_open") == want
    assert temps(tmp_path) == []


@pytest.mark.skipif(not POSIX, reason="POSIX permissions")
@pytest.mark.parametrize("writer", WRITERS)
def test_an_existing_files_mode_is_kept(tmp_path, umask, writer):
    """Writing over a file keeps its permissions, as open(path, "w") would."""
    umask(0o022)
    path = tmp_path / NAMES[writer]
    WRITERS[writer](path)
    os.chmod(path, 0o640)
    WRITERS[writer](path)
    assert mode(path) == 0o640


# ------------------------------------------------------------------ failures midway
def test_a_save_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "stats.npz"
    write_save(path)
    before = path.read_bytes()

    def savez_then_fail(f, **entries):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and temps(tmp_path) == []
    nbbn.RunningStats.load(path)


@pytest.mark.parametrize("writer", WRITERS)
def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch, writer):
    path = tmp_path / NAMES[writer]
    WRITERS[writer](path)
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_durable, "_rename", fail)
    with pytest.raises(OSError, match="Input/output error"):
        WRITERS[writer](path)
    assert path.read_bytes() == before and temps(tmp_path) == []


def test_a_transform_that_fails_midway_keeps_the_old_output(tmp_path, rng):
    d = tmp_path / "data"
    d.mkdir()
    x = rng.standard_normal((40, 3))
    np.save(d / "a.npy", x)
    np.save(d / "b.npy", x)
    out = tmp_path / "y.npy"
    stats = nbbn.channel_stats(x, 1)
    nbbn.transform(d, stats, out, progress=False)
    before = out.read_bytes()
    (d / "b.npy").write_bytes((d / "b.npy").read_bytes()[:200])  # truncated: read fails
    with pytest.raises(ValueError, match="b.npy"):
        nbbn.transform(d, stats, out, progress=False, batch_size=8)
    assert out.read_bytes() == before and temps(tmp_path) == []


# ------------------------------------------------------------------ Ctrl-C
def ctrl_c() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGINT)  # (Python raises it at the next bytecode)


@pytest.mark.skipif(not POSIX, reason="os.kill(SIGINT) interrupts the process itself on POSIX")
def test_ctrl_c_inside_a_save_writes_the_file_whole_then_raises(tmp_path, monkeypatch):
    """A statistics file is small: Ctrl-C waits for it (inside ``np.savez`` it would
    surface as zipfile's ValueError and leave the temporary file and its descriptor)."""
    path = tmp_path / "stats.npz"
    savez = np.savez

    def interrupted_savez(f, **entries):
        f.write(b"PK")
        ctrl_c()
        f.seek(0)
        savez(f, **entries)

    monkeypatch.setattr(np, "savez", interrupted_savez)
    rs = nbbn.channel_stats(X, 1)
    with pytest.raises(KeyboardInterrupt):
        rs.save(path)
    monkeypatch.undo()
    assert temps(tmp_path) == []
    np.testing.assert_array_equal(nbbn.RunningStats.load(path).mean, rs.mean)


@pytest.mark.skipif(not POSIX, reason="os.kill(SIGINT) interrupts the process itself on POSIX")
@pytest.mark.parametrize("step", ["_lock", "_rename"])
def test_ctrl_c_while_a_temporary_file_is_made_or_committed_leaves_none(
        tmp_path, monkeypatch, step):
    """Between the writer's lock on its new temporary file and ``__init__``'s end (or
    between the rename and closing the file) an interrupt would leave the file, or its
    descriptor, to no one."""
    target = tmp_path / "t.txt"
    target.write_text("old")
    real = getattr(_durable, step)

    def interrupted(*args):
        done = real(*args)
        ctrl_c()
        return done

    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    monkeypatch.setattr(_durable, step, interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_write(target, "w") as f:
        f.write("new")
    assert temps(tmp_path) == []
    assert target.read_text() == ("old" if step == "_lock" else "new")
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) == fds


@pytest.mark.parametrize("writer", WRITERS)
def test_a_path_ending_in_a_separator_is_refused(tmp_path, writer):
    """``open("out/", "w")`` refuses such a path; ``Path()`` drops the separator, and the
    file was written under the name the user meant as a folder (found in review)."""
    path = str(tmp_path / NAMES[writer]) + os.sep
    with pytest.raises(IsADirectoryError, match="ending in a separator"):
        WRITERS[writer](path)
    assert list(tmp_path.iterdir()) == []


def _special_file(path: Path, kind: str) -> None:
    """Make a FIFO, or a socket bound to ``path`` (left for the test's folder)."""
    if kind == "fifo":
        os.mkfifo(path)
    else:
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()


SPECIAL_WRITERS = {"save": write_save, "transform": write_transform,
                   "checkpoint": lambda p: nbbn.fit(X, checkpoint=p, progress=False),
                   "atomic_write": lambda p: atomic_write(p).__enter__()}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("writer", SPECIAL_WRITERS)
@pytest.mark.parametrize("kind, word", [("fifo", "is a FIFO"), ("socket", "is a socket")])
def test_a_fifo_or_socket_is_refused_not_replaced(tmp_path, writer, kind, word):
    """The rename replaced a FIFO (or a socket, or a device: ``--json /dev/null`` as root
    replaced the system's /dev/null) with a regular file, and the FIFO's reader never got
    the data. Now such a target, a link to one too, is refused before anything is
    written."""
    special = tmp_path / NAMES.get(writer, "out.json")
    _special_file(special, kind)
    link = tmp_path / ("link" + special.suffix)
    link.symlink_to(special)
    for target in (special, link):
        with pytest.raises(OSError, match=rf"{target.name} {word}.*not a regular file"):
            SPECIAL_WRITERS[writer](target)
    assert not stat.S_ISREG(os.stat(special).st_mode) and link.is_symlink()
    assert temps(tmp_path) == []


def test_replacement_commits_or_aborts(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("new, half")
        raise RuntimeError("stop")
    assert target.read_text() == "old" and temps(tmp_path) == []
    rep = Replacement(target)
    assert re.fullmatch(r"\.t\.txt\.[0-9a-f]{8}\.nbbn-tmp", rep.path.name)
    rep.path.write_text("new")
    assert target.read_text() == "old"
    rep.commit()
    rep.commit()  # a second commit or abort does nothing
    rep.abort()
    assert target.read_text() == "new" and temps(tmp_path) == []


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the folder .*no does not exist"):
        write_save(tmp_path / "no" / "stats.npz")


# ------------------------------------------------------------------- stale temporaries
def test_stale_temps_of_a_save_are_removed(tmp_path):
    ours = [tmp_path / ".stats.npz.1f2e3d4c.nbbn-tmp", tmp_path / ".stats.npz.ab_12x9q.nbbn-tmp"]
    others = [tmp_path / ".stats.npz.bak.1f2e3d4c.nbbn-tmp",  # the temp of stats.npz.bak
              tmp_path / ".other.npz.1f2e3d4c.nbbn-tmp", tmp_path / "stats.npz.nbbn-tmp"]
    for p in ours + others:
        p.write_bytes(b"half a file")
    write_save(tmp_path / "stats.npz")
    assert not any(p.exists() for p in ours) and all(p.exists() for p in others)


def test_stale_temps_of_the_bench_json_are_removed(tmp_path):
    from nbbn.tools.bench import _write_json

    stale = tmp_path / ".b.json.deadbeef.nbbn-tmp"
    stale.write_bytes(b"half a file")
    _write_json(tmp_path / "b.json", {"x": 1})
    assert not stale.exists() and (tmp_path / "b.json").read_text() == '{\n  "x": 1\n}\n'


def test_one_temp_name_pattern_for_every_writer(tmp_path, monkeypatch):
    seen = []
    rename = _durable._rename
    monkeypatch.setattr(_durable, "_rename", lambda a, b: (seen.append((a, b)), rename(a, b)))
    for writer, fn in WRITERS.items():
        fn(tmp_path / NAMES[writer])
    assert {Path(b).name for _, b in seen} == set(NAMES.values())
    for src, dst in seen:
        assert re.fullmatch(rf"\.{re.escape(Path(dst).name)}\.[0-9a-f]{{8}}\.nbbn-tmp",
                            Path(src).name)


@pytest.mark.skipif(not POSIX, reason="flock")
def test_a_live_writers_temp_is_not_removed(tmp_path):
    """A temporary file another process is still writing (it holds the lock) survives."""
    target = tmp_path / "stats.npz"
    code = ("import sys, time; from nbbn._durable import Replacement; "
            "r = Replacement(sys.argv[1]); print(r.path, flush=True); time.sleep(30)")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        live = Path(proc.stdout.readline().strip())
        dead = tmp_path / ".stats.npz.00000000.nbbn-tmp"
        dead.write_bytes(b"left by a killed writer")
        assert remove_stale_temps(target) == [str(dead)]
        assert live.exists() and not dead.exists()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    time.sleep(0.05)
    assert remove_stale_temps(target) == [str(live)]  # its writer is gone now


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_a_link_is_followed_not_replaced(tmp_path):
    """Saving to a symbolic link replaces the file it points to and keeps the link (as
    ``cp`` and ``open`` do), where a rename onto the link would replace the link."""
    real = tmp_path / "real.npz"
    nbbn.RunningStats(-1).update(np.ones((2, 3))).save(real)
    link = tmp_path / "link.npz"
    try:
        link.symlink_to(real)
    except OSError:
        pytest.skip("symbolic links not permitted")
    nbbn.RunningStats(-1).update(np.full((4, 3), 2.0)).save(link)
    assert link.is_symlink()
    assert nbbn.RunningStats.load(real).count.tolist() == [4, 4, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]


@pytest.mark.parametrize("resume", [False, True])
def test_a_folder_given_as_the_checkpoint_is_refused(tmp_path, resume):
    """``checkpoint=<a folder>`` was told the checkpoint "already exists; pass resume",
    and with ``resume`` came a raw IsADirectoryError (found in review)."""
    import nbbn

    with pytest.raises(IsADirectoryError, match=r"is a folder: name the checkpoint file"):
        nbbn.fit(np.ones((4, 2)), checkpoint=tmp_path, resume=resume, progress=False)
    assert list(tmp_path.iterdir()) == []


def _logged_syncs(monkeypatch, owner, name: str) -> list:
    """Log each fsync, ``("fsync", True)`` for a file and ``False`` for a folder, and
    each call of the rename ``owner.name`` as ``("rename", None)``, in order."""
    events = []
    real_fsync, real_rename = os.fsync, getattr(owner, name)

    def fsync(fd):
        events.append(("fsync", stat.S_ISREG(os.fstat(fd).st_mode)))
        return real_fsync(fd)

    def rename(a, b):
        events.append(("rename", None))
        return real_rename(a, b)

    monkeypatch.setattr(_durable.os, "fsync", fsync)
    monkeypatch.setattr(owner, name, rename)
    return events


def test_the_file_is_synced_before_the_rename(tmp_path, monkeypatch):
    """Durable: the temporary file's data reach the disk before the rename, and the
    folder's entry after it."""
    events = _logged_syncs(monkeypatch, _durable.os, "replace")
    nbbn.RunningStats(-1).update(np.ones((2, 3))).save(tmp_path / "s.npz")
    i = events.index(("rename", None))
    assert ("fsync", True) in events[:i]
    assert ("fsync", False) in events[i + 1:]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_stale_temps_beside_a_links_file_are_removed(tmp_path):
    """A save through a link writes beside the file it points to, so that is where a
    killed writer's temporary files are: they are removed there, not beside the link."""
    folder = tmp_path / "real"
    folder.mkdir()
    write_save(folder / "stats.npz")
    link = tmp_path / "link.npz"
    try:
        link.symlink_to(folder / "stats.npz")
    except OSError:
        pytest.skip("symbolic links not permitted")
    stale = folder / ".stats.npz.1f2e3d4c.nbbn-tmp"
    stale.write_bytes(b"half a file")
    assert remove_stale_temps(link) == [str(stale)]
    stale.write_bytes(b"half a file")
    write_save(link)
    assert not stale.exists() and link.is_symlink()
    assert temps(folder) == [] and temps(tmp_path) == []


@pytest.mark.skipif(not POSIX, reason="flock")
def test_a_temp_a_cleaner_removed_before_the_lock_is_not_used(tmp_path, monkeypatch):
    """Another process's clean-up may remove a new temporary file between its creation
    and the writer's lock: the writer then makes another, rather than fill a file that
    no longer has a name (its rename would then fail, or commit what it did not write)."""
    flock, removed = _durable.fcntl.flock, []

    def cleaner_first(fd, op):
        if not removed:  # (the first temporary file: gone before the writer locks it)
            for p in tmp_path.iterdir():
                if p.name.endswith(TMP_SUFFIX):
                    p.unlink()
                    removed.append(p.name)
        return flock(fd, op)

    monkeypatch.setattr(_durable.fcntl, "flock", cleaner_first)
    rep = Replacement(tmp_path / "t.txt")
    monkeypatch.undo()
    assert len(removed) == 1 and rep.path.name != removed[0]
    assert os.path.samestat(os.stat(rep.path), os.fstat(rep._fd))
    with rep.open("w") as f:
        f.write("new")
    rep.commit()
    assert (tmp_path / "t.txt").read_text() == "new" and temps(tmp_path) == []


def test_a_stores_files_are_synced_before_it_is_renamed_in(tmp_path, monkeypatch):
    """A zarr store (a folder): each of its files reaches the disk before the rename
    that makes the store visible, as a single file's data do."""
    events = _logged_syncs(monkeypatch, _durable, "_rename")
    out = tmp_path / "out.zarr"
    store = _durable.StoreReplacement(out)
    (store.path / "c").mkdir()
    (store.path / "c" / "0").write_bytes(b"chunk")
    store.commit()
    i = events.index(("rename", None))
    assert ("fsync", True) in events[:i] and ("fsync", False) in events[:i]
    assert (out / "c" / "0").read_bytes() == b"chunk" and temps(tmp_path) == []
