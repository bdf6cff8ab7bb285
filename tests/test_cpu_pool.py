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
