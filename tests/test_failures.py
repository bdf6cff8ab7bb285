"""Failures in the middle of an operation, after its checks passed (a Ctrl-C in a first
call's compile, a MemoryError, a reader's error): the state is wholly updated or left
as it was, and an output path holds the old file or store, or the new one whole."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from conftest import HAVE_NUMBA_CUDA

import nbbn
from nbbn import _durable
from nbbn.backends import cpu_weighted


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


def _bn_state(bn):
    return {k: np.array(v, copy=True) for k, v in bn.state_dict(tensors=False).items()}


@pytest.mark.parametrize("where", ["statistics", "map"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_a_failed_training_step_changes_nothing(backend, monkeypatch, rng, where, momentum):
    x1, x2 = (rng.normal(3.0, 2.0, (8, 3, 5)) for _ in range(2))
    bn = nbbn.BatchNorm(3, momentum=momentum, backend=backend)
    bn(x1)
    before = _bn_state(bn)
    be = nbbn.backends.resolve(backend, x2)
    if backend == "cpu":
        target = "reduce" if where == "statistics" else "affine"
    else:  # (the device step: partial sums, then the map after the running update)
        target = "_launch_partials" if where == "statistics" else "_affine"
    with monkeypatch.context() as m:
        m.setattr(be, target, _raise(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            bn(x2)
    after = _bn_state(bn)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    # the retried batch counts once: the same buffers as a run that never failed
    bn(x2)
    clean = nbbn.BatchNorm(3, momentum=momentum, backend=backend)
    clean(x1)
    clean(x2)
    for k, v in _bn_state(clean).items():
        np.testing.assert_array_equal(_bn_state(bn)[k], v, err_msg=k)


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed")
def test_a_failed_step_puts_the_device_buffers_back(cuda, monkeypatch, rng):
    """Between training steps on the CUDA backend the running buffers stay on the
    device (nothing here reads them): a step that fails after its running update is
    undone in that device buffer, in place."""
    x1, x2 = (rng.normal(3.0, 2.0, (8, 3, 5)) for _ in range(2))
    bn = nbbn.BatchNorm(3, backend="cuda")
    bn(x1)
    be = nbbn.backends.resolve("cuda", x2)
    with monkeypatch.context() as m:  # (the map runs after the running update)
        m.setattr(be, "_affine", _raise(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            bn(x2)
    bn(x2)
    clean = nbbn.BatchNorm(3, backend="cuda")
    clean(x1)
    clean(x2)
    for k, v in _bn_state(clean).items():
        np.testing.assert_array_equal(_bn_state(bn)[k], v, err_msg=k)


def test_a_failed_in_place_merge_keeps_the_channel_names():
    from nbbn._histogram import Histogram

    img8 = np.random.default_rng(0).integers(0, 255, (1, 4, 4, 2), dtype=np.uint8)
    a = nbbn.RunningStats(-1)
    a.histogram = Histogram.empty(2, np.uint8)
    a.update(img8)
    b = nbbn.RunningStats(-1, channel_names=["r", "g"])
    b.histogram = Histogram.empty(2, np.uint16)
    b.update(img8.astype(np.uint16) * 200)
    count = a.count.copy()
    with pytest.raises(ValueError, match="histogram"):
        a += b
    assert a.channel_names is None
    np.testing.assert_array_equal(a.count, count)
    assert a.histogram.counts.shape == (2, 256)


def test_a_failed_weighted_merge_leaves_the_statistics_unweighted(rng, monkeypatch):
    x = rng.normal(size=(50, 3))
    rs = nbbn.RunningStats(-1).update(x)
    with monkeypatch.context() as m:
        m.setattr(cpu_weighted, "_merge_weighted", _raise(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            rs.update(x, sample_weight=np.ones(50))
    rs.update(x)
    clean = nbbn.RunningStats(-1).update(x).update(x)
    assert not rs.weighted and "weight" not in rs.to_dict()
    assert rs.count.dtype == clean.count.dtype
    np.testing.assert_array_equal(rs.count, clean.count)
    np.testing.assert_array_equal(rs.mean, clean.mean)


def _temps(folder):
    return [n for n in os.listdir(folder) if n.endswith(_durable.TMP_SUFFIX)]


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_transform_to_a_zarr_path_keeps_the_old_store_on_failure(tmp_path, rng, monkeypatch,
                                                                  exchange):
    zarr = pytest.importorskip("zarr")
    if not exchange:  # (a system without renameat2: the store is renamed aside first)
        monkeypatch.setattr(_durable, "_exchange", lambda a, b: False)
    x = rng.normal(5.0, 3.0, (100, 3)).astype(np.float32)
    stats = nbbn.RunningStats(-1).update(x)
    out = tmp_path / "out.zarr"
    nbbn.transform(x, stats, out, batch_size=10, progress=False)
    first = zarr.open_array(str(out), mode="r")[:]
    np.testing.assert_array_equal(first, stats.to_normalizer()(x))

    calls = [0]
    real = nbbn.Normalizer.__call__

    def flaky(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    other = nbbn.RunningStats(-1).update(x * 2)
    with monkeypatch.context() as m:
        m.setattr(nbbn.Normalizer, "__call__", flaky)
        with pytest.raises(KeyboardInterrupt):
            nbbn.transform(x, other, out, batch_size=10, progress=False)
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], first)
    assert _temps(tmp_path) == []

    z = nbbn.transform(x, other, out, batch_size=10, progress=False)  # now whole
    np.testing.assert_array_equal(z[:], other.to_normalizer()(x))
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], z[:])
    assert _temps(tmp_path) == []


def test_a_killed_transform_s_temporary_store_is_removed(tmp_path, rng):
    pytest.importorskip("zarr")
    x = rng.normal(size=(20, 3)).astype(np.float32)
    out = tmp_path / "out.zarr"
    stale = _durable.StoreReplacement(out)  # as a killed writer left it: unlocked
    (stale.path / "chunk").write_bytes(b"x")
    os.close(stale._fd)
    stale._fd = None
    nbbn.transform(x, nbbn.RunningStats(-1).update(x), out, progress=False)
    assert _temps(tmp_path) == []


def test_transform_refuses_a_zarr_path_that_is_a_file(tmp_path, rng):
    pytest.importorskip("zarr")
    x = rng.normal(size=(20, 3)).astype(np.float32)
    out = tmp_path / "out.zarr"
    out.write_bytes(b"not a store")
    with pytest.raises(FileExistsError, match="is a file, not a zarr store"):
        nbbn.transform(x, nbbn.RunningStats(-1).update(x), out, progress=False)
    assert out.read_bytes() == b"not a store"


def test_dask_transform_to_a_zarr_path_keeps_the_old_store_on_failure(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    x = rng.normal(5.0, 3.0, (100, 3)).astype(np.float32)
    stats = nbbn.RunningStats(-1).update(x)
    out = tmp_path / "out.zarr"
    nbbn.transform(da.from_array(x, chunks=(25, 3)), stats, out)
    first = zarr.open_array(str(out), mode="r")[:]
    np.testing.assert_allclose(first, stats.to_normalizer()(x), rtol=1e-6)

    def third_block_fails(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("a reader's error")
        return block

    bad = da.from_array(x * 2, chunks=(25, 3)).map_blocks(third_block_fails, dtype=x.dtype)
    # (one task at a time: with threads, tasks still running when the error came may
    # write into the temporary store after it was removed, and the next transform to
    # the path removes what they left, a race this test would not hold still for)
    with dask.config.set(scheduler="synchronous"), \
            pytest.raises(RuntimeError, match="a reader's error"):
        nbbn.transform(bad, stats, out)
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], first)
    assert _temps(tmp_path) == []


def test_a_live_writer_s_temporary_store_is_left_alone(tmp_path):
    pytest.importorskip("zarr")
    from nbbn._outputs import open_writer

    out = tmp_path / "out.zarr"
    writer = open_writer(out, (10, 3), np.dtype(np.float32), 5)
    store = writer.store
    # the array was created in the folder that holds the lock (zarr's mode "w" would
    # have replaced it), so another transform's clean-up leaves it alone
    assert os.path.samestat(os.stat(store.path), os.fstat(store._fd))
    assert _durable.remove_stale_temps(out) == []
    rows = writer.view(0, 10)
    rows[...] = np.arange(30, dtype=np.float32).reshape(10, 3)
    writer.written(0, 10, rows)
    writer.commit()
    np.testing.assert_array_equal(writer.result[:], np.arange(30).reshape(10, 3))
    assert _temps(tmp_path) == []


def test_a_replaced_temporary_store_is_not_swapped_in(tmp_path):
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "zarr.json").write_text("{}")
    store = _durable.StoreReplacement(out)
    os.rmdir(store.path)  # (as zarr's mode "w" does: a new folder, without the lock)
    store.path.mkdir()
    with pytest.raises(OSError, match="was replaced while it was written"):
        store.commit()
    assert (out / "zarr.json").read_text() == "{}"


def _update_interrupted_after_merge(monkeypatch, rs, x) -> None:
    """``rs.update(x)`` with a KeyboardInterrupt just after the CPU merge returned."""
    from nbbn.backends import cpu

    merge = cpu.merge

    def merge_then_interrupt(state, part):
        merge(state, part)
        raise KeyboardInterrupt

    monkeypatch.setattr(cpu, "merge", merge_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        rs.update(x)
    monkeypatch.undo()


def test_a_ctrl_c_right_after_an_in_place_merge_leaves_the_batch_counted(monkeypatch, rng):
    """A KeyboardInterrupt can arrive just after the CPU merge folded a batch into the
    state in place: the state then holds the batch, and reads showed the old cached
    statistics until the next update (a retried batch counted twice, unseen)."""
    x1, x2 = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    rs = nbbn.RunningStats(-1).update(x1)
    _ = rs.count  # (the host cache filled)
    _update_interrupted_after_merge(monkeypatch, rs, x2)
    want = nbbn.RunningStats(-1).update(x1).update(x2)
    assert rs.count.tolist() == [10, 10, 10]
    np.testing.assert_array_equal(rs.mean, want.mean)
    np.testing.assert_array_equal(rs.var, want.var)


def test_ctrl_c_right_after_an_in_place_merge_counts_the_batch_in_the_histogram(monkeypatch):
    """A KeyboardInterrupt after the compiled merge folded the batch into the state: the
    rest of the commit (the histogram's counts) follows the state, so the statistics and
    their histogram agree (found by mutation testing: the commit's rest skipped on
    every error passed the tests)."""
    from nbbn._histogram import Histogram

    rng = np.random.default_rng(2)
    x1 = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)
    x2 = rng.integers(0, 256, size=(4, 3), dtype=np.uint8)
    rs = nbbn.RunningStats(-1)
    rs.histogram = Histogram.empty(3, np.uint8)
    rs.update(x1)
    _update_interrupted_after_merge(monkeypatch, rs, x2)
    assert rs.count.tolist() == [10, 10, 10]
    assert rs.histogram.counts.sum(1).tolist() == [10, 10, 10]
    np.testing.assert_array_equal(rs.histogram.counts, Histogram.of(np.vstack([x1, x2])).counts)


def test_a_ctrl_c_before_the_merge_changes_nothing(monkeypatch, rng):
    from nbbn.backends import cpu

    rs = nbbn.RunningStats(-1).update(rng.normal(size=(6, 3)))
    before = rs.to_dict()
    monkeypatch.setattr(cpu, "merge", _raise(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        rs.update(rng.normal(size=(4, 3)))
    monkeypatch.undo()
    assert all(np.array_equal(before[k], v) for k, v in rs.to_dict().items())


def test_fit_interrupted_pickles_with_its_attributes(tmp_path):
    """A fit stopped in a process pool's worker reached the parent as a broken pool:
    the exception could not be rebuilt from its message alone."""
    import copy
    import pickle

    rs = nbbn.RunningStats().update(np.ones((2, 3)))
    exc = nbbn.FitInterrupted(rs, tmp_path / "c.ckpt", 2)
    for back in (pickle.loads(pickle.dumps(exc)), copy.copy(exc), copy.deepcopy(exc)):
        assert str(back) == str(exc) and back.rows_done == 2
        assert back.checkpoint == tmp_path / "c.ckpt"
        np.testing.assert_array_equal(back.stats.count, rs.count)


def test_fit_interrupted_says_the_resume_call_to_paste(tmp_path):
    """The message's resume call names the checkpoint as a str literal (not a
    ``PosixPath(...)``), and the rows with thousands separators."""
    exc = nbbn.FitInterrupted(None, tmp_path / "c.ckpt", 1234567)
    path = str(tmp_path / "c.ckpt")
    assert "after 1,234,567 rows" in str(exc)
    assert f"nbbn.fit(<same source>, checkpoint={path!r}, resume=True)" in str(exc)
    assert "after 1,234,567 rows" in str(nbbn.FitInterrupted(None, None, 1234567))


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_statistics_pickle_with_every_protocol(protocol, rng):
    import pickle

    rs = nbbn.RunningStats().update(rng.normal(size=(5, 3)))
    back = pickle.loads(pickle.dumps(rs, protocol=protocol))
    np.testing.assert_array_equal(back.var, rs.var)


def test_a_second_ctrl_c_while_the_reader_stops_keeps_the_checkpoint(tmp_path):
    """Ctrl-C while the reader waits on a slow source, then again while ``fit`` waits
    for the reader to stop: the second one was a bare KeyboardInterrupt out of the
    reader's close, with no checkpoint and no FitInterrupted."""
    import signal
    import threading
    import time

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")

    def items():
        for i in range(40):
            time.sleep(0.01 if i < 10 else 2.0)
            yield np.full((100, 3), float(i))

    def ctrl_c_twice():
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    # (compiled first: the first Ctrl-C must find the reader waiting on the slow item)
    nbbn.fit([np.zeros((100, 3))], progress=False, checkpoint=tmp_path / "warm.ckpt")
    ckpt = tmp_path / "fit.ckpt"
    threading.Thread(target=ctrl_c_twice, daemon=True).start()
    outcome = None
    try:
        nbbn.fit(items(), progress=False, checkpoint=ckpt)
    except nbbn.FitInterrupted as exc:
        outcome = exc
    except KeyboardInterrupt:
        outcome = "bare"
    time.sleep(0.2)  # (both signals delivered before the test ends)
    assert isinstance(outcome, nbbn.FitInterrupted), outcome
    assert outcome.rows_done >= 1000 and ckpt.exists()


def test_a_failed_second_rename_puts_the_old_store_back(tmp_path, monkeypatch):
    """Without renameat2's exchange the old store is renamed aside, then the new one in:
    when that second rename fails, the old store is put back under its own name (and
    the new one removed), not left aside under a temporary name."""
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "zarr.json").write_text("old")
    monkeypatch.setattr(_durable, "_exchange", lambda a, b: False)
    store = _durable.StoreReplacement(out)
    (store.path / "zarr.json").write_text("new")
    rename = _durable._rename

    def second_rename_fails(src, dst):
        if src == str(store.path):
            raise OSError("the second rename failed")
        rename(src, dst)

    monkeypatch.setattr(_durable, "_rename", second_rename_fails)
    with pytest.raises(OSError, match="the second rename failed"):
        store.commit()
    assert (out / "zarr.json").read_text() == "old"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("how", ["raised", "sigint"])
def test_a_ctrl_c_right_after_an_in_place_iadd_merges_it_whole(monkeypatch, how):
    """``a += b`` merges ``b``'s statistics into ``a``'s in place: a KeyboardInterrupt
    just after left them holding ``b`` without its histogram (a file that load refused;
    a retry counted ``b`` twice). Now the rest of the merge follows the state, and a
    real SIGINT is held back until the merge is whole."""
    import signal

    from nbbn._histogram import Histogram
    from nbbn.backends import cpu

    if how == "sigint" and (threading.current_thread() is not threading.main_thread() or
                            signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        pytest.skip("Ctrl-C reaches the main thread, with Python's handler")
    rng = np.random.default_rng(3)
    x1 = rng.integers(0, 256, size=(5, 3), dtype=np.uint8)
    x2 = rng.integers(0, 256, size=(4, 3), dtype=np.uint8)

    def stats(x):
        rs = nbbn.RunningStats(-1)
        rs.histogram = Histogram.empty(3, np.uint8)
        return rs.update(x)

    a, b = stats(x1), stats(x2)
    merge = cpu.merge

    def merge_then_interrupt(state, part):
        out = merge(state, part)
        if how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)  # (its handler runs at the next bytecode)
            time.sleep(0.05)
            return out
        raise KeyboardInterrupt

    monkeypatch.setattr(cpu, "merge", merge_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        a += b
    monkeypatch.undo()
    assert a.count.tolist() == [9, 9, 9]
    np.testing.assert_array_equal(a.histogram.counts, Histogram.of(np.vstack([x1, x2])).counts)
    nbbn.RunningStats.from_dict(a.to_dict())  # (refused before: bins summing to 5, count 9)
    assert not a._lock.locked()
