"""nbbn's worker threads (``cpu_pool``): every chunk runs once, on the calling thread
when no worker is idle, errors reach the caller after every chunk has ended, and the
workers serve the next call."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from nbbn.backends import cpu_pool


def _recording():
    runs: Counter = Counter()
    where: dict[int, str] = {}
    lock = threading.Lock()

    def chunk(t: int) -> None:
        with lock:
            runs[t] += 1
            where[t] = threading.current_thread().name

    return chunk, runs, where


@pytest.mark.parametrize("size", [0, 1, 3])
@pytest.mark.parametrize("nt", [1, 2, 5])
def test_every_chunk_runs_once(size, nt):
    pool = cpu_pool.Pool(size)
    for _ in range(3):  # (the workers are given back and serve the next call)
        chunk, runs, where = _recording()
        cpu_pool.run_chunks(pool, chunk, nt)
        assert runs == Counter(range(nt))
        on_workers = {t for t, name in where.items() if name.startswith("nbbn_")}
        assert len(on_workers) == min(size, nt - 1)
        assert where[0] == threading.current_thread().name
    assert pool._started == min(size, nt - 1) and len(pool._idle) == pool._started


def test_an_error_is_raised_once_every_chunk_has_ended():
    pool = cpu_pool.Pool(2)
    ended = []

    def chunk(t: int) -> None:
        if t == 1:
            raise ValueError("chunk 1")
        time.sleep(0.2)
        ended.append(t)

    with pytest.raises(ValueError, match="chunk 1"):
        cpu_pool.run_chunks(pool, chunk, 3)
    assert sorted(ended) == [0, 2]
    chunk, runs, _ = _recording()  # the pool still works, with both workers
    cpu_pool.run_chunks(pool, chunk, 3)
    assert runs == Counter(range(3)) and len(pool._idle) == 2


def test_the_callers_own_error_waits_for_the_workers():
    pool = cpu_pool.Pool(1)
    ended = []

    def chunk(t: int) -> None:
        if t == 0:
            raise RuntimeError("chunk 0")
        time.sleep(0.2)
        ended.append(t)

    with pytest.raises(RuntimeError, match="chunk 0"):
        cpu_pool.run_chunks(pool, chunk, 2)
    assert ended == [1]


def test_calls_from_many_threads_share_the_workers():
    pool = cpu_pool.Pool(1)
    results, errors = [], []

    def caller() -> None:
        try:
            for _ in range(50):
                chunk, runs, _ = _recording()
                cpu_pool.run_chunks(pool, chunk, 3)
                results.append(runs == Counter(range(3)))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and not any(th.is_alive() for th in threads)
    assert len(results) == 200 and all(results)
    assert pool._started == 1 and len(pool._idle) == 1


def test_idle_workers_keep_nothing_of_a_call():
    # the chunks' closure holds the caller's arrays: once the call has returned, no
    # worker may keep it alive (a big batch would stay in memory while the pool idles)
    import gc
    import weakref

    class Big:
        pass

    pool = cpu_pool.Pool(2)
    big = Big()
    ref = weakref.ref(big)

    def chunk(t: int, held=big) -> None:
        if t == 2:
            raise ValueError("chunk 2")

    with pytest.raises(ValueError):
        cpu_pool.run_chunks(pool, chunk, 3)
    del big, chunk
    gc.collect()
    assert ref() is None


def test_a_ctrl_c_while_handing_out_chunks_leaves_the_pool_sound(monkeypatch):
    # a Ctrl-C may land between a worker's start and the call's record of it: that
    # worker's chunk runs on, unwaited; it must not be handed the next call's chunk
    # and waited on there (its first ``done`` would end that wait early)
    pool = cpu_pool.Pool(3)
    gate = threading.Event()
    ran = []
    real_start = cpu_pool.Worker.start
    calls = []

    def start(self, job):
        real_start(self, job)
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt  # (after the hand-off, as a signal could)

    def chunk(t: int) -> None:
        if t == 2:
            gate.wait(10)  # (still running after the call has raised)
        ran.append(t)

    monkeypatch.setattr(cpu_pool.Worker, "start", start)
    with pytest.raises(KeyboardInterrupt):
        cpu_pool.run_chunks(pool, chunk, 4)
    monkeypatch.setattr(cpu_pool.Worker, "start", real_start)
    dropped = calls[1]
    assert dropped not in pool._idle and len(pool._idle) == 2 and pool._started == 2
    for _ in range(5):  # the pool serves on, with a new third worker
        chunk2, runs, where = _recording()
        cpu_pool.run_chunks(pool, chunk2, 4)
        assert runs == Counter(range(4))
        assert dropped.thread.name not in where.values()
    assert pool._started == 3
    gate.set()
    dropped.thread.join(0.5)  # (its chunk ends; the thread then waits for a job forever)
    assert 2 in ran


def test_an_interrupt_raised_once_the_wait_has_won_ends_it():
    """Python may raise a Ctrl-C's KeyboardInterrupt just after ``acquire`` has won the
    job's lock (its handler runs between bytecodes; a SIGINT that did not wake the wait
    runs right after it returns). The wait then ends, with the interrupt, instead of
    acquiring again forever; the worker serves the next job, whose wait waits for it."""
    worker = cpu_pool.Worker("nbbn_test")
    ran: list[int] = []
    worker.start(lambda: ran.append(1))
    won = worker._done

    class LateInterrupt:  # (the lock won, then the interrupt)
        def acquire(self, *args):
            won.acquire(*args)
            raise KeyboardInterrupt

    worker._done = LateInterrupt()  # type: ignore[assignment]
    got: list = []
    waiting = threading.Thread(target=lambda: got.append(worker.wait()), daemon=True)
    waiting.start()
    waiting.join(10)
    assert not waiting.is_alive() and ran == [1]
    assert isinstance(got[0], KeyboardInterrupt)
    worker.start(lambda: time.sleep(0.2) or ran.append(2))
    assert worker.wait() is None and ran == [1, 2]


# ------------------------------------------------- edges found by mutation testing
def test_a_call_takes_no_more_workers_than_it_has_chunks():
    pool = cpu_pool.Pool(3)
    cpu_pool.run_chunks(pool, lambda t: None, 4)  # three idle workers now
    runs, lock = Counter(), threading.Lock()

    def chunk(t):
        with lock:
            runs[t] += 1

    cpu_pool.run_chunks(pool, chunk, 2)
    assert runs == Counter(range(2))
    assert len(pool._idle) == pool._started == 3


def test_a_ctrl_c_on_a_worker_is_raised_before_the_callers_error():
    """A KeyboardInterrupt in a worker's chunk reaches the caller (the worker's thread
    does not die, leaving the caller waiting), and wins over a chunk's error."""
    pool = cpu_pool.Pool(1)

    def chunk(t):
        if t == 0:
            raise ValueError("chunk 0")
        raise KeyboardInterrupt

    got = []

    def call():
        try:
            cpu_pool.run_chunks(pool, chunk, 2)
        except BaseException as e:  # noqa: BLE001 - the test looks at what came
            got.append(e)

    th = threading.Thread(target=call, daemon=True)
    th.start()
    th.join(10)
    assert not th.is_alive()
    assert len(got) == 1 and isinstance(got[0], KeyboardInterrupt)


def test_workers_used_before_and_not_handed_a_job_are_kept(monkeypatch):
    pool = cpu_pool.Pool(2)
    cpu_pool.run_chunks(pool, lambda t: None, 3)

    def start(self, job):
        raise KeyboardInterrupt  # (before any hand-off)

    monkeypatch.setattr(cpu_pool.Worker, "start", start)
    with pytest.raises(KeyboardInterrupt):
        cpu_pool.run_chunks(pool, lambda t: None, 3)
    assert len(pool._idle) == pool._started == 2


def test_a_thread_that_cannot_start_leaves_the_chunks_to_the_caller(monkeypatch):
    """A new worker whose thread cannot start (a thread limit; Python 3.12 in an atexit
    handler: "can't create new thread at interpreter shutdown") made the call raise,
    lost the idle workers it had taken and counted the failed one as started, so the
    pool stayed smaller for good. Now the calling thread runs the chunks left, and the
    pool is whole for the next call."""
    pool = cpu_pool.Pool(3)
    cpu_pool.run_chunks(pool, lambda t: None, 2)  # one idle worker
    start = threading.Thread.start

    def refused(self):
        if self.name.startswith("nbbn_"):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refused)
    chunk, runs, where = _recording()
    cpu_pool.run_chunks(pool, chunk, 4)
    assert runs == Counter(range(4))
    assert sum(name.startswith("nbbn_") for name in where.values()) == 1  # the idle one
    assert pool._started == len(pool._idle) == 1
    monkeypatch.undo()
    chunk, runs, where = _recording()
    cpu_pool.run_chunks(pool, chunk, 4)
    assert runs == Counter(range(4)) and pool._started == len(pool._idle) == 3
    assert sum(name.startswith("nbbn_") for name in where.values()) == 3
