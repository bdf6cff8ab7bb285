"""Concurrent update() calls on one RunningStats give the serial result."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import SIMULATOR
from reference import assert_stats, random_array, ref_stats_many

import nbbn

NTHREADS = 4


def _run_threads(fn, args_per_thread):
    barrier = threading.Barrier(len(args_per_thread))

    def wrapped(args):
        barrier.wait()
        return fn(*args)

    with ThreadPoolExecutor(len(args_per_thread)) as pool:
        return list(pool.map(wrapped, args_per_thread))


@pytest.mark.parametrize("big", [False, True], ids=["small_batches", "parallel_kernels"])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "few_rows"])
def test_concurrent_updates_equal_serial(layout, big, backend, rng):
    """``few_rows``: wide tables of few rows, which a thread that finds the state's lock
    free merges into the state as it computes them (``cpu.reduce_into``), and the others
    compute outside it."""
    if backend == "cuda" and SIMULATOR and big:
        pytest.skip("the CPU's parallel kernels; too large for the CUDA simulator")
    if layout == "few_rows" and backend == "cuda":
        pytest.skip("a CPU kernel")
    axis = 1 if layout == "channels_first" else -1
    c = 3
    per_thread = 3 if big or (backend == "cuda" and SIMULATOR) else 12
    batches = []
    for _ in range(NTHREADS * per_thread):
        n = int(rng.integers(1, 5))
        spatial = (96, 90) if big else (3, int(rng.integers(1, 4)))
        shape = (n, c, *spatial) if axis == 1 else (n, *spatial, c)
        if layout == "few_rows":
            # big: 41-44 rows of 32,768 channels, past THREADED_MIN_ELEMENTS (2**20) and
            # within FEW_ROWS_MAX; before, 2-5 rows of 262,144, whose per-channel
            # reference and data took 45 s of a slow CI host
            shape = (n + 40, 1 << 15) if big else (n + 1, 1100)
        batches.append(random_array(rng, shape, "float64", channel_axis=axis))
    if layout == "few_rows" and big:  # (the kernel of few rows, on more than one thread)
        from nbbn.backends import cpu, cpu_few_rows
        assert all(b.size >= cpu.THREADED_MIN_ELEMENTS
                   and cpu_few_rows.takes(b.shape, b.dtype, False) for b in batches)
    serial = nbbn.RunningStats(axis, backend=backend)
    for b in batches:
        serial.update(b)
    shared = nbbn.RunningStats(axis, backend=backend)
    chunks = [(batches[i::NTHREADS],) for i in range(NTHREADS)]

    def work(mine):
        for b in mine:
            assert shared.update(b) is shared

    _run_threads(work, chunks)
    ref = ref_stats_many(batches, axis)
    assert_stats(serial, ref, 1e-12)
    assert_stats(shared, ref, 1e-12)
    np.testing.assert_array_equal(shared.count, serial.count)
    np.testing.assert_array_equal(shared.min, serial.min)
    np.testing.assert_array_equal(shared.max, serial.max)
    np.testing.assert_allclose(shared.mean, serial.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(shared.var, serial.var, rtol=1e-12)


def test_concurrent_mixed_dtypes_and_layouts(backend, rng):
    """Threads feed different dtypes and memory layouts (same channel count) at once."""
    c = 4
    kinds = [
        lambda: random_array(rng, (3, c, 5), "uint8"),
        lambda: random_array(rng, (2, c, 7), "float32"),
        lambda: np.ascontiguousarray(
            random_array(rng, (3, 6, c), "float16", -1).transpose(0, 2, 1)
        ),
        lambda: random_array(rng, (4, c, 9), "int16")[:, :, ::-2],
    ]
    per_thread = [[kinds[t]() for _ in range(8)] for t in range(len(kinds))]
    shared = nbbn.RunningStats(1, backend=backend)

    def work(mine):
        for b in mine:
            shared.update(b)

    _run_threads(work, [(p,) for p in per_thread])
    all_batches = [b for p in per_thread for b in p]
    assert_stats(shared, ref_stats_many(all_batches, 1), 1e-6)


def test_concurrent_first_update_and_channel_mismatch(backend):
    """Racing first updates with different channel counts: exactly one count wins, every
    other update either applies whole or raises ValueError, and the result is consistent."""
    rs = nbbn.RunningStats(1, backend=backend)
    a = np.ones((2, 3, 4))
    b = np.full((2, 5, 4), 2.0)
    errors = []

    def work(x):
        for _ in range(10):
            try:
                rs.update(x)
            except ValueError as exc:
                errors.append(str(exc))

    _run_threads(work, [(a,), (b,), (a,), (b,)])
    c = rs.num_channels
    assert c in (3, 5)
    assert len(errors) == 20  # the two threads with the losing channel count failed every time
    np.testing.assert_array_equal(rs.count, np.full(c, 20 * 8))
    np.testing.assert_array_equal(rs.mean, np.full(c, 1.0 if c == 3 else 2.0))
    np.testing.assert_array_equal(rs.var, np.zeros(c))


def test_concurrent_merges_into_one(backend, rng):
    parts = [nbbn.channel_stats(random_array(rng, (5, 3, 4), "float64"), backend=backend)
             for _ in range(16)]
    total = nbbn.RunningStats(1, backend=backend)

    def work(mine):
        for p in mine:
            nonlocal total
            total += p  # in-place merge under the lock; `total` is always the same object

    obj = total
    _run_threads(work, [(parts[i::NTHREADS],) for i in range(NTHREADS)])
    assert total is obj
    serial = nbbn.RunningStats(1, backend=backend)
    for p in parts:
        serial += p
    np.testing.assert_array_equal(total.count, serial.count)
    np.testing.assert_allclose(total.mean, serial.mean, rtol=1e-12)
    np.testing.assert_allclose(total.var, serial.var, rtol=1e-12)


def _child_update(x, queue) -> None:
    rs = nbbn.RunningStats()
    rs.update(x)
    queue.put((rs.mean, rs.var))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_threaded_kernels(monkeypatch):
    """A forked child (multiprocessing's fork, a DataLoader worker) of a process that
    already ran threaded kernels: the parent's pool threads are not in the child, whose
    threaded call waited on them forever; it gets a pool of its own."""
    import multiprocessing

    from nbbn.backends import cpu

    monkeypatch.setattr(cpu.numba.config, "NUMBA_NUM_THREADS", 2)  # a pool even on one CPU
    x = np.random.default_rng(5).normal(2.0, 3.0, (cpu.THREADED_MIN_ELEMENTS // 2, 4))
    parent = nbbn.RunningStats()
    parent.update(x)  # threaded: the pool's threads start here
    assert cpu._pool is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_update, args=(x, queue))
    child.start()
    child.join(120)
    hung = child.is_alive()
    if hung:
        child.kill()
    assert not hung and child.exitcode == 0
    mean, var = queue.get(timeout=10)
    np.testing.assert_array_equal(mean, parent.mean)
    np.testing.assert_array_equal(var, parent.var)


def test_threaded_kernels_finish_before_a_ctrl_c_is_raised(monkeypatch):
    """A Ctrl-C while the calling thread waits for the others' chunks is raised once
    they are all done: a kernel merging into a state in place (``cpu.reduce_into``)
    never leaves part of its channels to a thread still running after the call."""
    import signal
    import time

    from nbbn.backends import cpu, cpu_pool

    main = threading.main_thread().ident
    if threading.get_ident() != main or signal.getsignal(signal.SIGINT) is not \
            signal.default_int_handler:
        pytest.skip("Ctrl-C reaches the main thread, with Python's handler")
    if cpu.threads() < 2:
        monkeypatch.setattr(cpu, "threads", lambda: 2)
    monkeypatch.setattr(cpu, "_pool", cpu_pool.Pool(1))  # (a worker even on one CPU)
    done = []

    def kernel(t, nt):
        if t == 1:
            time.sleep(0.2)  # (the calling thread's chunk is done: it waits for this one)
            signal.pthread_kill(main, signal.SIGINT)  # (a signal: it wakes the wait)
            time.sleep(0.3)
            done.append(t)

    with pytest.raises(KeyboardInterrupt):
        cpu._run(kernel, (), (), cpu.THREADED_MIN_ELEMENTS, 2)
        time.sleep(2.0)  # (not reached: the interrupt is raised by _run)
    assert done == [1]


def test_a_ctrl_c_during_an_in_place_merge_is_held_until_it_ends(monkeypatch):
    """A wide table of few rows is merged into the state in place, on several threads:
    a Ctrl-C between the chunks left the worker's channels merged and the caller's not
    (224 of 800 interrupted updates in a stress run), and one just after the lock's
    acquire left the lock held (every later call hung). Now SIGINT is held back until
    the merge has ended, then raised: the batch is in every channel, the lock free."""
    import signal
    import time

    from nbbn.backends import cpu

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("Ctrl-C reaches the main thread, with Python's handler")
    x = np.random.default_rng(0).standard_normal((16, 65536)).astype(np.float32)
    rs = nbbn.RunningStats(-1, backend="cpu").update(x)
    real, called = cpu.reduce_into, []

    def interrupted_merge(table, policy, state):
        called.append(1)
        os.kill(os.getpid(), signal.SIGINT)  # (its handler runs at the next bytecode)
        time.sleep(0.05)
        return real(table, policy, state)

    monkeypatch.setattr(cpu, "reduce_into", interrupted_merge)
    with pytest.raises(KeyboardInterrupt):
        rs.update(x)
    assert called == [1] and not rs._lock.locked()
    assert (rs.count == 32).all()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:.*multi-threaded, use of fork:DeprecationWarning")
def test_a_fork_during_updates_gives_the_child_a_whole_usable_state(rng):
    """A fork (a DataLoader worker) while another thread updates the same statistics:
    the child copied the lock held, and its first use of the object waited forever (a
    wide table of few rows runs its whole kernel under the lock: 10 forks of 10 hung).
    The fork now waits for the update in progress; the child's state is whole."""
    rs = nbbn.RunningStats(-1)
    x = rng.standard_normal((4, 300_000))
    rs.update(x)
    stop = threading.Event()

    def updates():
        while not stop.is_set():
            rs.update(x)

    worker = threading.Thread(target=updates, daemon=True)
    worker.start()
    try:
        for _ in range(3):
            time.sleep(0.05)
            pid = os.fork()
            if pid == 0:  # the child: whole (a multiple of the batch's 4 rows everywhere)
                try:
                    c = rs.count
                    os._exit(0 if c[0] % 4 == 0 and (c == c[0]).all() else 3)
                finally:
                    os._exit(4)
            assert _child_exit_code(pid) == 0
    finally:
        stop.set()
        worker.join()
    assert rs.count[0] % 4 == 0  # (the parent's lock was given back)


def _child_exit_code(pid: int) -> int:
    deadline = time.monotonic() + 60
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child waited for the statistics' lock for 60 s")
        time.sleep(0.02)
    return os.waitstatus_to_exitcode(done[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:.*multi-threaded, use of fork:DeprecationWarning")
def test_a_state_still_held_at_a_fork_is_refused_in_the_child(monkeypatch):
    """An update that holds the lock past ``FORK_WAIT_S`` (here: the forking thread
    itself): the child's state may be half-merged, so its use raises, saying why."""
    from nbbn import running_stats

    monkeypatch.setattr(running_stats, "FORK_WAIT_S", 0.05)
    rs = nbbn.RunningStats(-1).update(np.ones((3, 2)))
    with rs._lock:
        pid = os.fork()
        if pid == 0:
            try:
                rs.to_dict()
            except RuntimeError as e:
                os._exit(0 if "updated by another thread when the process forked" in str(e)
                         else 3)
            finally:
                os._exit(4)
    assert _child_exit_code(pid) == 0
    assert rs.count.tolist() == [3, 3]  # the parent's own object is untouched


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.filterwarnings("ignore:.*multi-threaded, use of fork:DeprecationWarning")
def test_a_second_fork_leaves_the_other_states_usable(monkeypatch):
    """A child whose copy of one state is refused (held at the fork) forks again: the
    before-fork hook's acquire of that refused lock raised, so no later state was held
    and the grandchild refused every one of them, idle as they were."""
    from nbbn import running_stats

    monkeypatch.setattr(running_stats, "FORK_WAIT_S", 0.05)
    x = np.ones((3, 2))
    busy = nbbn.RunningStats(-1).update(x)
    idle = [nbbn.RunningStats(-1).update(x) for _ in range(3)]
    with busy._lock:
        pid = os.fork()
        if pid == 0:
            try:
                grandchild = os.fork()
                if grandchild == 0:
                    try:
                        for rs in idle:
                            rs.update(x)
                        os._exit(0 if all(rs.count[0] == 6 for rs in idle) else 3)
                    finally:
                        os._exit(4)
                os._exit(os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1]))
            finally:
                os._exit(5)
    assert _child_exit_code(pid) == 0
