"""``nbbn.fit(source, client=...)``: files counted on dask.distributed workers.

One module-scoped ``LocalCluster`` (2 worker processes, 1 thread each) serves every
cluster test. Results are compared with a float64 reference and with the
single-process fit (1e-12 relative: the merge order follows the completion order).
"""

from __future__ import annotations

import contextlib
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from reference import assert_stats, ref_stats_many

import nbbn
from nbbn import _distributed as nd
from nbbn._progress import Progress
from nbbn.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from nbbn.cli import main
from nbbn.sources import Position, open_source

distributed = pytest.importorskip("distributed")

RTOL = 1e-12


@pytest.fixture(scope="module")
def client():
    with nd.local_client(2) as c:
        yield c


def _shards(folder, rng, layout="nchw", bad=None):
    """Five non-empty shards of uneven length (one .npz) and an empty one."""
    folder.mkdir(exist_ok=True)
    arrays = []
    for i, rows in enumerate([40, 7, 33, 0, 25, 61]):
        if layout == "nchw":
            x = (rng.standard_normal((rows, 3, 4, 4)) * 10 + 1e3).astype(np.float32)
        else:
            x = rng.integers(0, 256, (rows, 4, 4, 3), dtype=np.uint8)
        if i == bad:
            x[rows // 2, 0, 0, 0] = np.nan
        arrays.append(x)
        if i == 4:
            np.savez_compressed(folder / f"s{i}.npz", x=x)
        else:
            np.save(folder / f"s{i}.npy", x)
    return arrays


def _settings(src):
    """The fit settings a checkpoint of ``src`` (of NCHW shards) records."""
    return {"channel_axis": 1, "nan_policy": "propagate", "key": None,
            "batch_size": src.default_batch_size()}


def _assert_same(got, want):
    np.testing.assert_array_equal(got.count, want.count)
    np.testing.assert_array_equal(got.min, want.min)
    np.testing.assert_array_equal(got.max, want.max)
    np.testing.assert_allclose(got.mean, want.mean, rtol=RTOL, atol=0)
    np.testing.assert_allclose(got.var, want.var, rtol=RTOL, atol=0)


# ------------------------------------------------------------------ parts, no cluster
def test_counted_remaining_and_prefix():
    src_rows = [10, 0, 8]

    class S:
        def __init__(self, rows):
            self.rows, self.size = rows, rows * 2

    shards = [S(r) for r in src_rows]
    c = nd.Counted(Position(0, 4), [[0, 6, 8], [2, 0, 3]])
    assert c.remaining(0, 10) == [(4, 6), (8, 10)]
    assert c.remaining(2, 8) == [(3, 8)]
    assert c.normalized(shards) == (Position(0, 4), [[0, 6, 8], [2, 0, 3]])
    c.add(0, 4, 6)
    c.add(0, 8, 10)
    # shard 0 complete, shard 1 empty: the prefix moves into shard 2
    assert c.normalized(shards) == (Position(2, 3), [])
    assert c.shards() == {0, 2}
    c.add(2, 3, 8)
    assert c.normalized(shards) == (Position(3, 0), [])


def test_parts_follow_files_and_chunks(tmp_path, rng, monkeypatch):
    zarr = pytest.importorskip("zarr")
    arrays = _shards(tmp_path / "d", rng)
    src = open_source(tmp_path / "d")
    parts = nd.plan_parts(src, part_bytes=20 * arrays[0][0].nbytes)
    # .npy files cut every 20 rows, the .npz (shard 4) whole, the empty shard skipped;
    # pieces grouped until a part holds 20 rows
    assert [p.pieces for p in parts] == [
        ((0, 0, 20),), ((0, 20, 40),), ((1, 0, 7), (2, 0, 20)), ((2, 20, 33), (4, 0, 25)),
        ((5, 0, 20),), ((5, 20, 40),), ((5, 40, 60),), ((5, 60, 61),)]
    assert [p.rows for p in parts] == [20, 20, 27, 38, 20, 20, 20, 1]
    z = zarr.create_array(store=str(tmp_path / "z.zarr"), shape=(50, 3), chunks=(6, 3),
                          dtype="f4")
    zsrc = open_source(tmp_path / "z.zarr")
    # 13 rows asked: parts of whole chunks of 6 rows, at least 13 rows
    assert [p.pieces for p in nd.plan_parts(zsrc, part_bytes=13 * 12)] == [
        ((0, 0, 18),), ((0, 18, 36),), ((0, 36, 50),)]
    del z


def test_refusals_without_a_cluster(tmp_path, rng):
    x = rng.standard_normal((10, 3)).astype(np.float32)
    with pytest.raises(TypeError, match="not read from a file"):
        nbbn.fit(x, client="local", progress=False)
    with pytest.raises(TypeError, match="cannot be split between workers"):
        nbbn.fit(iter([x]), client="local", progress=False)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(TypeError, match="client must be"):
        nbbn.fit(tmp_path / "x.npy", client=3, progress=False)
    with pytest.raises(TypeError, match=r"memory map of .*x\.npy: pass that path"):
        nbbn.fit(np.load(tmp_path / "x.npy", mmap_mode="r"), client="local", progress=False)


def test_addresses_and_dead_workers_reported_clearly(tmp_path, rng, capsys):
    """A scheduler address distributed cannot parse is refused at once (distributed
    itself retries for a minute); a worker that died is a ConnectionError (one line on
    the command line)."""
    pytest.importorskip("distributed")
    np.save(tmp_path / "x.npy", rng.standard_normal((10, 3)))
    with pytest.raises(ValueError, match="missing port number"):
        nbbn.fit(tmp_path / "x.npy", client="nonsense", progress=False)
    assert main(["fit", str(tmp_path / "x.npy"), "--scheduler", "nonsense",
                 "--no-progress"]) == 2
    assert "scheduler address 'nonsense'" in capsys.readouterr().err

    class KilledWorker(Exception):
        pass

    class Future:
        def result(self):
            raise KilledWorker("attempted to run task count_part on 3 different workers")

    with pytest.raises(ConnectionError, match="a worker died .* 3 different workers"):
        nd._result(Future())


def test_a_closed_client_is_refused(client, tmp_path, rng):
    distributed = pytest.importorskip("distributed")
    np.save(tmp_path / "x.npy", rng.standard_normal((10, 3)))
    closed = distributed.Client(client.scheduler.address, set_as_default=False)
    closed.close()
    with pytest.raises(ValueError, match="Client is closed"):
        nbbn.fit(tmp_path / "x.npy", client=closed, progress=False)


def test_worker_refuses_a_different_file(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((10, 3)).astype(np.float32))
    recipe = nd.shard_recipe(open_source(tmp_path / "x.npy").shards[0])
    assert nd._open_recipe(recipe).rows == 10
    np.save(tmp_path / "x.npy", rng.standard_normal((12, 3)).astype(np.float32))
    with pytest.raises(FileNotFoundError, match="sees a different file"):
        nd._open_recipe(recipe)


def test_missing_extra_names_it(tmp_path, rng, monkeypatch):
    np.save(tmp_path / "x.npy", rng.standard_normal((10, 3)).astype(np.float32))
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(nbbn.MissingExtraError, match=r"nbbn\[dask\]"):
        nbbn.fit(tmp_path / "x.npy", client="local", progress=False)


def test_thread_limit():
    from nbbn.backends import cpu

    with cpu.thread_limit(1):
        assert cpu.threads() == 1
    assert cpu.threads() >= 1


def _task_threads():
    import threading

    import numba

    from nbbn.backends import cpu

    # (above cpu.THREADED_MIN_ELEMENTS: a smaller batch runs on the calling thread anyway)
    x = np.random.default_rng(0).normal(size=(128, 3, 64, 64)).astype(np.float32)
    nbbn.RunningStats(1).update(x)
    pool = [t.name for t in threading.enumerate() if t.name.startswith("nbbn")]
    return int(numba.config.NUMBA_NUM_THREADS), cpu.threads(), pool


# ---------------------------------------------------------------------- on a cluster
def test_a_users_task_on_a_worker_runs_the_kernels_on_its_thread(client):
    """nbbn's own tasks ran single-threaded, a user's task calling nbbn on a worker
    started nbbn's pool beside the worker's threads (oversubscription)."""
    numba_threads, used, pool = client.submit(_task_threads, pure=False).result()
    if numba_threads < 2:
        pytest.skip("one CPU: a single thread either way")
    assert used == 1 and pool == []


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_cluster_fit_equals_single_process(client, tmp_path, rng, monkeypatch, capsys, layout):
    axis = 1 if layout == "nchw" else -1
    arrays = _shards(tmp_path / "d", rng, layout)
    single = nbbn.fit(tmp_path / "d", axis, progress=False)
    monkeypatch.setattr(nd, "PART_BYTES", 16 * arrays[0][0].nbytes)  # files in parts
    got = nbbn.fit(tmp_path / "d", axis, client=client, batch_size=9)
    _assert_same(got, single)
    assert_stats(got, ref_stats_many(arrays, axis), RTOL)
    err = capsys.readouterr().err
    assert "parts on 2 workers" in err
    # each worker reports its first call; the kernels this process just compiled (or
    # loaded) for the single-process fit come from numba's disk cache there
    assert err.count("first call") == err.count("(no kernel compiled)") >= 1


def test_scipy_sparse_shards_on_a_cluster(client, tmp_path, rng):
    sparse = pytest.importorskip("scipy.sparse")
    mats = [sparse.random_array((rows, 5), density=0.3, format=fmt, rng=rng)
            for rows, fmt in ((50, "csr"), (31, "csc"), (44, "csr"))]
    for i, m in enumerate(mats):
        sparse.save_npz(tmp_path / f"s{i}.npz", m)
    got = nbbn.fit(tmp_path, -1, client=client, progress=False)
    _assert_same(got, nbbn.fit(tmp_path, -1, progress=False))
    assert_stats(got, ref_stats_many([m.toarray() for m in mats], -1), RTOL)


def test_zarr_and_hdf5_chunks_on_a_cluster(client, tmp_path, rng, monkeypatch):
    zarr = pytest.importorskip("zarr")
    h5py = pytest.importorskip("h5py")
    x = (rng.standard_normal((90, 3, 4, 4)) * 3 - 500).astype(np.float32)
    z = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=x.shape, chunks=(8, 3, 4, 4),
                          dtype="f4")
    z[...] = x
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("g/x", data=x, chunks=(8, 3, 4, 4))
    monkeypatch.setattr(nd, "PART_BYTES", 20 * x[0].nbytes)  # 2 chunks per part
    ref = ref_stats_many([x], 1)
    for source in (tmp_path / "x.zarr", f"{tmp_path / 'x.h5'}:g/x"):
        got = nbbn.fit(source, client=client, progress=False)
        _assert_same(got, nbbn.fit(source, progress=False))
        assert_stats(got, ref, RTOL)


@pytest.mark.parametrize("stop", [RuntimeError, KeyboardInterrupt])
def test_stopped_after_k_parts_resumes_without_recounting(client, tmp_path, rng, monkeypatch,
                                                          stop):
    """An error in the client (or Ctrl-C: FitInterrupted) after 2 parts."""
    arrays = _shards(tmp_path / "d", rng)
    ck = tmp_path / "fit.ckpt"
    monkeypatch.setattr(nd, "PART_BYTES", 10 * arrays[0][0].nbytes)
    total = len(nd.plan_parts(open_source(tmp_path / "d")))
    calls = []

    class StoppingBar(nd.Progress):
        def update(self, nbytes, rows):  # called after each part is merged
            calls.append(rows)
            if len(calls) == 2:
                raise stop("injected after 2 parts")

    monkeypatch.setattr(nd, "Progress", StoppingBar)
    # tiny parts all finish at once: keep the parts that finished after the error out
    monkeypatch.setattr(nd._ClusterRun, "_take_finished", lambda self, pending: False)
    with pytest.raises(RuntimeError if stop is RuntimeError else nbbn.FitInterrupted) as info:
        nbbn.fit(tmp_path / "d", client=client, checkpoint=ck, checkpoint_interval=0,
                 progress=False)
    if stop is RuntimeError:
        assert "were saved" in "".join(getattr(info.value, "__notes__", []))
    else:
        assert info.value.rows_done == calls[1] and "resume=True" in str(info.value)
    monkeypatch.setattr(nd, "Progress", Progress)
    saved = load_checkpoint(ck)
    assert saved.rows_done == calls[1] < sum(len(a) for a in arrays)
    assert saved.stats.count[0] == saved.rows_done * 16
    planned = []
    plan = nd.plan_parts
    monkeypatch.setattr(nd, "plan_parts", lambda *a, **k: planned.append(plan(*a, **k))
                        or planned[-1])
    got = nbbn.fit(tmp_path / "d", client=client, checkpoint=ck, resume=True, progress=False)
    counted = sum(p.rows for p in planned[0])
    assert counted + saved.rows_done == sum(len(a) for a in arrays)  # nothing read twice
    assert len(planned[0]) < total
    assert_stats(got, ref_stats_many(arrays, 1), RTOL)
    assert load_checkpoint(ck).complete


def test_worker_failure_then_resume(client, tmp_path, rng):
    arrays = _shards(tmp_path / "d", rng, bad=2)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(ValueError, match=r"s2\.npy, rows 0-33: .*NaN"):
        nbbn.fit(tmp_path / "d", client=client, nan_policy="raise", checkpoint=ck,
                 checkpoint_interval=0, progress=False)
    arrays[2] = np.nan_to_num(arrays[2])  # the failed shard, never counted, is replaced
    np.save(tmp_path / "d" / "s2.npy", arrays[2])
    got = nbbn.fit(tmp_path / "d", client=client, nan_policy="raise", checkpoint=ck,
                   resume=True, progress=False)
    assert_stats(got, ref_stats_many(arrays, 1), RTOL)


def test_an_error_with_nothing_new_merged_still_says_the_progress_is_saved(
        client, tmp_path, rng, monkeypatch):
    """A resumed cluster fit that failed before merging a part raised the error without
    the note that resume=True continues (written only when something new was merged),
    and a checkpoint that could not be written again was never said to hold its last
    save (the cluster's writes did not record it): one process says both."""
    _shards(tmp_path / "d", rng, bad=2)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(ValueError, match="NaN"):  # shards 0 and 1 saved, in one process
        nbbn.fit(tmp_path / "d", nan_policy="raise", checkpoint=ck, progress=False)
    with pytest.raises(ValueError, match=r"s2\.npy, rows 0-33: .*NaN") as info:
        nbbn.fit(tmp_path / "d", client=client, nan_policy="raise", checkpoint=ck,
                 resume=True, progress=False)
    notes = "".join(getattr(info.value, "__notes__", None) or [])
    assert "the statistics of the 47 rows before the error were saved" in notes, \
        f"expected a note that the 47 rows were saved, got notes {notes!r}"
    assert load_checkpoint(ck).rows_done == 47

    def refuse(path, ckpt):
        raise OSError("disk full")

    monkeypatch.setattr(nd, "save_checkpoint", refuse)
    with pytest.raises(ValueError, match="NaN") as info:
        nbbn.fit(tmp_path / "d", client=client, nan_policy="raise", checkpoint=ck,
                 resume=True, progress=False)
    notes = "".join(getattr(info.value, "__notes__", None) or [])
    assert "could not be written again (OSError: disk full); it holds the statistics of " \
        "the 47 rows of its last save" in notes, \
        f"expected a note that the checkpoint holds its last save, got notes {notes!r}"


def test_checkpoints_across_kinds_of_fit(client, tmp_path, rng):
    """A checkpoint with rows counted out of order resumes on a cluster only; an
    ordinary one resumes on a cluster too."""
    arrays = _shards(tmp_path / "d", rng)
    src = open_source(tmp_path / "d")
    settings = _settings(src)
    ref = ref_stats_many(arrays, 1)
    # shard 2 counted, shards 0-1 not: out of order
    ck = tmp_path / "gap.ckpt"
    save_checkpoint(ck, Checkpoint(nbbn.RunningStats(1).update(arrays[2]),
                                   {"shard": 0, "row": 0, "name": None, "digest": None},
                                   src.fingerprint(), settings, len(arrays[2]),
                                   arrays[2].nbytes, extra={"parts_done": [[2, 0, 33]]}))
    with pytest.raises(nbbn.CheckpointError, match="out of order"):
        nbbn.fit(tmp_path / "d", checkpoint=ck, resume=True, progress=False)
    assert_stats(nbbn.fit(tmp_path / "d", client=client, checkpoint=ck, resume=True,
                          progress=False), ref, RTOL)
    # an ordinary checkpoint: everything before shard 2, row 10
    ck = tmp_path / "seq.ckpt"
    done = [*arrays[:2], arrays[2][:10]]
    stats = nbbn.RunningStats(1)
    for a in done:
        stats.update(a)
    save_checkpoint(ck, Checkpoint(stats, {"shard": 2, "row": 10, "name": None, "digest": None},
                                   src.fingerprint(), settings, sum(len(a) for a in done),
                                   sum(a.nbytes for a in done)))
    assert_stats(nbbn.fit(tmp_path / "d", client=client, checkpoint=ck, resume=True,
                          progress=False), ref, RTOL)


# ------------------------------------------------------------------------------ CLI
def test_cli_scheduler_and_workers(client, tmp_path, rng, capsys, monkeypatch):
    arrays = _shards(tmp_path / "d", rng)
    out = tmp_path / "stats.npz"
    assert main(["fit", str(tmp_path / "d"), "--scheduler", client.scheduler.address,
                 "--no-progress", "-o", str(out)]) == 0
    assert_stats(nbbn.RunningStats.load(out), ref_stats_many(arrays, 1), RTOL)
    out.unlink()
    started = []

    @contextlib.contextmanager
    def fixture_cluster(n):  # the module's cluster stands in for a new one of n workers
        started.append(n)
        yield client

    monkeypatch.setattr(nd, "local_client", fixture_cluster)
    assert main(["fit", str(tmp_path / "d"), "--workers", "3", "-o", str(out)]) == 0
    assert started == [3]
    assert_stats(nbbn.RunningStats.load(out), ref_stats_many(arrays, 1), RTOL)
    assert "1 part on 2 workers" in capsys.readouterr().err  # (singular: one part)
    assert main(["fit", str(tmp_path / "d"), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", str(tmp_path / "d"), "--workers", "2", "--scheduler", "tcp://x:1"])


# ------------------------------------------------- edges found by mutation testing
def test_adjacent_counted_ranges_are_joined():
    c = nd.Counted(Position(0, 0), [[0, 5, 8], [0, 8, 9]])
    shard = type("S", (), {"rows": 20, "size": 40})()
    assert c.normalized([shard]) == (Position(0, 0), [[0, 5, 9]])


def test_resumed_parts_stay_on_chunk_multiples(tmp_path):
    zarr = pytest.importorskip("zarr")
    zarr.create_array(store=str(tmp_path / "z.zarr"), shape=(50, 3), chunks=(6, 3),
                      dtype="f4")
    parts = nd.plan_parts(open_source(tmp_path / "z.zarr"), nd.Counted(Position(0, 5)),
                          part_bytes=13 * 12)
    assert [p.pieces for p in parts] == [((0, 5, 18),), ((0, 18, 36),), ((0, 36, 50),)]


def test_a_zarr_array_in_a_group_reopens_from_its_recipe(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    x = rng.standard_normal((10, 3)).astype(np.float32)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("x", shape=x.shape, chunks=(5, 3), dtype="f4")[...] = x
    recipe = nd.shard_recipe(open_source(tmp_path / "g.zarr", key="x").shards[0])
    np.testing.assert_array_equal(nd._open_recipe(recipe).array[...], x)


def test_a_worker_refuses_a_different_hdf5_file(tmp_path, rng):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=rng.standard_normal((10, 3)))
    recipe = nd.shard_recipe(open_source(f"{tmp_path / 'x.h5'}:x").shards[0])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=rng.standard_normal((12, 3)))
    with pytest.raises(FileNotFoundError, match="sees a different file"):
        nd._open_recipe(recipe)


def test_an_hdf5_file_open_for_writing_is_named(tmp_path, rng):
    """A dataset of a file this process holds open for writing failed on the workers
    with HDF5's BlockingIOError ("unable to lock file"), which names no file; it is
    refused before any part is sent. A worker locked out by another process names the
    file too."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", data=rng.standard_normal((10, 3)))
        with pytest.raises(ValueError, match=r"w\.h5 is open for writing in this process "
                           r"\(h5py mode 'r\+'\).*close it, or reopen it read-only"):
            nbbn.fit(ds, client="local", progress=False)
    with h5py.File(path, "r") as f:  # read-only: its recipe is made
        assert nd.shard_recipe(open_source(f["x"]).shards[0])[:3] == ("hdf5", str(path), "/x")
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, sys; f = h5py.File({str(path)!r}, 'r+'); "
         "print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        recipe = ("hdf5", str(path), "/x", nd._file_id(str(path)))
        with pytest.raises(BlockingIOError, match=r"w\.h5: this worker cannot open the HDF5 "
                           "file, which another process holds open for writing"):
            nd._open_recipe(recipe)
    finally:
        holder.communicate("")


def test_count_part_reads_batches_on_one_thread(tmp_path, rng, monkeypatch):
    """A part is read in batches of ``batch_size``, each on one thread, its pages
    released, its compiles counted; an error names the shard and rows."""
    from nbbn import _shards_npy
    from nbbn.backends import cpu

    x = rng.standard_normal((30, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    recipe = nd.shard_recipe(open_source(tmp_path / "x.npy").shards[0])
    limits, released, batches = [], [], []
    limit = cpu.thread_limit
    monkeypatch.setattr(cpu, "thread_limit", lambda n: limits.append(n) or limit(n))
    release = _shards_npy._NpyReader._release
    monkeypatch.setattr(_shards_npy._NpyReader, "_release",
                        lambda self, lo, hi: released.append((lo, hi)) or release(self, lo, hi))

    class Counting(nbbn.RunningStats):  # a "compile" per batch
        def update(self, b, **kw):
            batches.append(len(b))
            nd._compiles.n = getattr(nd._compiles, "n", 0) + 1
            return super().update(b, **kw)

    monkeypatch.setattr(nd, "RunningStats", Counting)
    opts = {"channel_axis": 1, "nan_policy": "propagate", "backend": "cpu", "batch_size": 8}
    rec = nd.count_part([(recipe, 3, 30)], opts)
    assert batches == [8, 8, 8, 3] and rec["rows"] == 27
    assert limits == [1] * 4 and len(released) == 4 and rec["compiled"] == 4
    assert_stats(rec["stats"], ref_stats_many([x[3:]], 1), 1e-12)
    x[17, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    recipe = nd.shard_recipe(open_source(tmp_path / "x.npy").shards[0])
    with pytest.raises(ValueError, match=r"x\.npy, rows 11-19"):
        nd.count_part([(recipe, 3, 30)], {**opts, "nan_policy": "raise"})


def test_local_client_workers():
    with pytest.raises(ValueError, match="at least 1"):
        with nd.local_client(0):
            pass
    with nd.local_client(1) as c:
        assert list(c.nthreads().values()) == [1]


def test_bad_parts_done_is_a_checkpoint_error(tmp_path, rng):
    arrays = _shards(tmp_path / "d", rng)
    src = open_source(tmp_path / "d")
    ck = tmp_path / "bad.ckpt"
    save_checkpoint(ck, Checkpoint(nbbn.RunningStats(1).update(arrays[2]),
                                   {"shard": 0, "row": 0, "name": None, "digest": None},
                                   src.fingerprint(), _settings(src), 33,
                                   arrays[2].nbytes, extra={"parts_done": [[2, 0]]}))
    with pytest.raises(nbbn.CheckpointError, match="invalid parts_done"):
        nbbn.fit(tmp_path / "d", client="local", checkpoint=ck, resume=True, progress=False)


def test_a_resume_checks_the_counted_shards_only(client, tmp_path, rng):
    arrays = _shards(tmp_path / "d", rng)
    src = open_source(tmp_path / "d")
    ck = tmp_path / "gap.ckpt"
    save_checkpoint(ck, Checkpoint(nbbn.RunningStats(1).update(arrays[2]),
                                   {"shard": 0, "row": 0, "name": None, "digest": None},
                                   src.fingerprint(), _settings(src), len(arrays[2]),
                                   arrays[2].nbytes, extra={"parts_done": [[2, 0, 33]]}))
    ck_bytes = ck.read_bytes()
    arrays[0] = arrays[0][:30] + 1  # an uncounted shard may change
    np.save(tmp_path / "d" / "s0.npy", arrays[0])
    got = nbbn.fit(tmp_path / "d", client=client, checkpoint=ck, resume=True, progress=False)
    assert_stats(got, ref_stats_many(arrays, 1), 1e-12)
    ck.write_bytes(ck_bytes)  # a counted one may not
    np.save(tmp_path / "d" / "s2.npy", arrays[2][:20])
    with pytest.raises(nbbn.CheckpointError, match="shard 2"):
        nbbn.fit(tmp_path / "d", client=client, checkpoint=ck, resume=True, progress=False)


def test_a_resume_names_the_uncounted_file_removed_before_counted_ones(tmp_path, rng):
    """Shards 0 and 2 counted, shard 1 (which failed, say) removed: the resume blamed
    s2.npy, still there, as no longer among the data, and said 3 shards were counted
    (the current shards were blanked by the checkpoint's numbers)."""
    arrays = _shards(tmp_path / "d", rng)
    src = open_source(tmp_path / "d")
    ck = tmp_path / "gap.ckpt"
    stats = nbbn.RunningStats(1).update(arrays[0]).update(arrays[2])
    save_checkpoint(ck, Checkpoint(stats, {"shard": 1, "row": 0, "name": None, "digest": None},
                                   src.fingerprint(), _settings(src), 73,
                                   arrays[0].nbytes + arrays[2].nbytes,
                                   extra={"parts_done": [[2, 0, 33]]}))
    src.close()
    (tmp_path / "d" / "s1.npy").unlink()
    with pytest.raises(nbbn.CheckpointError) as info:
        nbbn.fit(tmp_path / "d", client="local", checkpoint=ck, resume=True, progress=False)
    msg = str(info.value)
    assert re.search(r"counted \S*s2\.npy as shard 2, which is shard 1 now: \S*s1\.npy, "
                     r"before it, is no longer among the data", msg), \
        f"expected s1.npy named as removed and s2.npy as moved, got: {msg}"
    (tmp_path / "d" / "s2.npy").unlink()  # a counted file removed: named as such
    with pytest.raises(nbbn.CheckpointError, match=r"the checkpoint counted \S*s2\.npy, "
                       r"which is no longer among the data"):
        nbbn.fit(tmp_path / "d", client="local", checkpoint=ck, resume=True, progress=False)


def test_a_checkpoint_counts_bytes_and_parts_fill_the_threads(client, tmp_path, rng,
                                                            monkeypatch, capsys):
    arrays = _shards(tmp_path / "d", rng)
    monkeypatch.setattr(nd, "MIN_PART_BYTES", 1)
    ck = tmp_path / "fit.ckpt"
    nbbn.fit(tmp_path / "d", client=client, checkpoint=ck)
    saved = load_checkpoint(ck)
    assert saved.complete and saved.rows_done == 166
    assert saved.bytes_done == sum(a.nbytes for a in arrays)
    n = int(re.search(r"(\d+) parts? on 2 workers", capsys.readouterr().err).group(1))
    assert n >= 5  # (7; the .npz shard is one piece)


class _Future:
    """A distributed future's surface for ``run_on``: a part counted in this process
    when ``run`` is called, pending until then."""

    def __init__(self, fn, args):
        self.status, self._fn, self._args, self._value = "pending", fn, args, None

    def run(self):
        try:
            self._value, self.status = self._fn(*self._args), "finished"
        except Exception as exc:  # noqa: BLE001 - kept for result(), as distributed does
            self._value, self.status = exc, "error"

    def result(self, timeout=None):
        if self.status == "pending":
            raise AssertionError("the result of a part that never ran was asked for")
        if self.status == "error":
            raise self._value
        return self._value


class _SyncClient:
    """A stand-in for a ``distributed.Client``; with :func:`_all_but_the_last` as
    ``as_completed``, every part but the last is counted, the failed ones come first,
    and the last part never starts."""

    loop = None

    def __init__(self):
        self.futures, self.cancelled = [], []
        self.scheduler = type("Scheduler", (), {"address": "tcp://fake:8786"})()

    def nthreads(self):
        return {"tcp://fake:1": 1}

    def submit(self, fn, pieces, opts, pure):
        self.futures.append(_Future(fn, (pieces, opts)))
        return self.futures[-1]

    def cancel(self, futures):
        self.cancelled.extend(futures)


def _all_but_the_last(futures, loop=None):
    for f in futures[:-1]:
        f.run()
    return iter(sorted(futures[:-1], key=lambda f: f.status != "error"))


def test_after_a_part_fails_the_finished_parts_are_saved_and_the_rest_cancelled(
        tmp_path, rng, monkeypatch):
    """A part's error arrives first: the parts that finished meanwhile are merged into
    the checkpoint, the part that never started is cancelled, and a resume counts only
    the failed and the cancelled parts."""
    arrays = _shards(tmp_path / "d", rng, bad=2)
    ck = tmp_path / "fit.ckpt"
    monkeypatch.setattr(nd, "MIN_PART_BYTES", 1)
    monkeypatch.setattr(nd, "connect", contextlib.nullcontext)
    monkeypatch.setattr(distributed, "as_completed", _all_but_the_last)
    fake = _SyncClient()
    with pytest.raises(ValueError, match=r"s2\.npy, rows 0-33: .*NaN"):
        nbbn.fit(tmp_path / "d", client=fake, nan_policy="raise", checkpoint=ck,
                 checkpoint_interval=3600, progress=False)
    rows = [sum(hi - lo for _, lo, hi in f._args[0]) for f in fake.futures]
    unfinished = [f for f in fake.futures if f.status != "finished"]
    assert [f.status for f in unfinished] == ["error", "pending"]
    assert fake.cancelled == unfinished
    saved = load_checkpoint(ck)
    assert saved.rows_done == sum(n for n, f in zip(rows, fake.futures, strict=True)
                                  if f.status == "finished") > 0
    assert saved.stats.count[0] == saved.rows_done * 16

    arrays[2] = np.nan_to_num(arrays[2])
    np.save(tmp_path / "d" / "s2.npy", arrays[2])
    monkeypatch.setattr(distributed, "as_completed", lambda futures, loop=None: [
        f.run() or f for f in futures])
    fake = _SyncClient()
    got = nbbn.fit(tmp_path / "d", client=fake, nan_policy="raise", checkpoint=ck,
                   resume=True, progress=False)
    resumed = sum(hi - lo for f in fake.futures for _, lo, hi in f._args[0])
    assert resumed == sum(map(len, arrays)) - saved.rows_done  # nothing read twice
    assert_stats(got, ref_stats_many(arrays, 1), RTOL)


@pytest.mark.parametrize("order", ["in order", "last part first"])
def test_interrupted_says_client_when_only_a_cluster_resumes(tmp_path, rng, monkeypatch,
                                                             order):
    """Ctrl-C after the last part was merged first: FitInterrupted said to resume with
    nbbn.fit(<same source>, checkpoint=..., resume=True), which refuses a checkpoint of
    parts counted out of order; it names client=... then (not for a prefix)."""
    arrays = _shards(tmp_path / "d", rng)
    ck = tmp_path / "fit.ckpt"
    monkeypatch.setattr(nd, "MIN_PART_BYTES", 1)
    monkeypatch.setattr(nd, "connect", contextlib.nullcontext)
    monkeypatch.setattr(distributed, "as_completed", lambda futures, loop=None: [
        f.run() or f for f in (futures if order == "in order" else futures[::-1])])

    class StoppingBar(nd.Progress):
        def update(self, nbytes, rows):  # Ctrl-C after the first part merged
            raise KeyboardInterrupt

    monkeypatch.setattr(nd, "Progress", StoppingBar)
    with pytest.raises(nbbn.FitInterrupted) as info:
        nbbn.fit(tmp_path / "d", client=_SyncClient(), checkpoint=ck, progress=False)
    monkeypatch.setattr(nd, "Progress", Progress)
    msg = str(info.value)
    out_of_order = bool(load_checkpoint(ck).extra["parts_done"])
    assert out_of_order == (order != "in order")
    if out_of_order:
        assert "nbbn.fit(<same source>, client=..., checkpoint=" in msg, \
            f"expected the resume hint to name client=..., got: {msg}"
        with pytest.raises(nbbn.CheckpointError, match="out of order"):
            nbbn.fit(tmp_path / "d", checkpoint=ck, resume=True, progress=False)
    else:
        assert "nbbn.fit(<same source>, checkpoint=" in msg, msg
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.on_cluster, str(copy)) == (out_of_order, msg)
    got = nbbn.fit(tmp_path / "d", client=_SyncClient() if out_of_order else None,
                   checkpoint=ck, resume=True, progress=False)
    assert_stats(got, ref_stats_many(arrays, 1), RTOL)
