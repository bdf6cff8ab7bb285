"""nbbn's worker threads: the hand-off of a kernel's chunks by a lock per worker and one
per job.

``cpu._run`` gives chunks ``1 .. nt - 1`` of a kernel to idle workers and runs chunk 0
on the calling thread. A worker sleeps on its ``go`` lock; the caller puts the job in
its slot and releases ``go``, and later acquires the job's ``done`` lock (one per job),
which the worker releases when the job has run. A ``concurrent.futures`` pool did the
same with a Future, a Condition and a queue per chunk: an empty kernel split over two
threads took 40-49 us a call through it, against 25-33 through these locks (Zen 2 under
KVM, docs/benchmarks.md), and calls of 1-2 M values 0.86-0.94 of the time.

A worker serves one caller at a time: calls from several threads at once take the idle
workers there are, and a call that finds none runs its remaining chunks itself, one
after the other (the chunks are cut by the shape alone, so the bits are the same).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable


class Worker:
    """One thread that runs the jobs handed to it, one at a time."""

    def __init__(self, name: str) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()  # each job's own, made held by start()
        self._ended = False  # set by the worker before it releases the job's _done
        self._job: tuple[Callable[[], object], threading.Lock] | None = None
        self._error: BaseException | None = None
        self.handed = False  # set first by start(), cleared by wait()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            self._go.acquire()
            handed, self._job = self._job, None
            if handed is None:
                continue
            done = handed[1]
            try:
                handed[0]()
            except BaseException as e:  # handed to the caller by wait()
                self._error = e
            handed = None  # (an idle worker keeps no reference to the caller's arrays)
            self._ended = True
            done.release()

    def start(self, job: Callable[[], object]) -> None:
        """Run ``job`` on this worker (idle: taken from the pool by one caller)."""
        self.handed = True
        self._ended = False
        self._done = threading.Lock()
        self._done.acquire()
        self._job = (job, self._done)
        self._go.release()

    def wait(self) -> BaseException | None:
        """Wait for the job to end, through KeyboardInterrupts (returned, after the wait,
        if the job raised nothing else); returns what the job raised, else None.

        A KeyboardInterrupt may be raised just after ``acquire`` has won the lock: Python
        runs a signal's handler between bytecodes, so a SIGINT whose handler did not run
        inside the wait runs right after it returns (it did, with polars loaded, in
        tests/test_threads.py). Acquiring again would then wait forever. So the lock is
        each job's own, and an interrupt seen once the job has ``_ended`` ends the wait."""
        interrupt = None
        while True:
            try:
                self._done.acquire()
                break
            except KeyboardInterrupt as e:
                interrupt = e
                if self._ended:  # (the lock is ours, or the worker is releasing it)
                    break
        error, self._error = self._error, None
        self.handed = False
        return error if error is not None else interrupt


class Pool:
    """At most ``size`` workers, started as calls first need them."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._idle: list[Worker] = []
        self._started = 0  # workers running, idle or not
        self._names = 0  # workers ever started (their names)
        self._lock = threading.Lock()

    def take(self, n: int) -> list[Worker]:
        """Up to ``n`` workers for one call (fewer while other calls hold them, or where
        no new thread can start: the calling thread then runs the chunks left, as when
        none is idle)."""
        with self._lock:
            got = self._idle[len(self._idle) - min(n, len(self._idle)):]
            del self._idle[len(self._idle) - len(got):]
            while len(got) < n and self._started < self.size:
                self._names += 1
                try:
                    worker = Worker(f"nbbn_{self._names}")
                except RuntimeError:
                    # "can't start new thread" (a thread or process limit), "can't
                    # create new thread at interpreter shutdown" (Python 3.12+, in an
                    # atexit handler): the call raised, the idle workers it had taken
                    # were lost and _started counted one that never ran, so the pool
                    # stayed smaller for good
                    break
                self._started += 1
                got.append(worker)
        return got

    def give_back(self, workers: list[Worker], waited: list[Worker]) -> None:
        """The ``workers`` of a call idle again: those it ``waited`` for, and those never
        handed a job. A worker handed one but not waited for (a Ctrl-C between
        ``start`` and the call's record of it) may still be running: it is dropped, never
        reused (its next job would wait behind this one, and its ``_ended`` could end
        that job's wait early), and a new one may start."""
        with self._lock:
            keep = [w for w in workers if w in waited or not w.handed]
            self._idle.extend(keep)
            self._started -= len(workers) - len(keep)


def run_chunks(pool: Pool, chunk: Callable[[int], object], nt: int) -> None:
    """``chunk(t)`` for ``t < nt``: chunk 0, and those no worker took, on the calling
    thread, the others on workers. Returns once every chunk has ended, a Ctrl-C
    included (raised then: a kernel merging into a state in place is never left
    running after the call); then raises the first exception a chunk raised."""
    workers = pool.take(nt - 1)
    started: list[Worker] = []
    errors: list[BaseException] = []
    try:
        for t, worker in enumerate(workers, 1):
            worker.start(functools.partial(chunk, t))
            started.append(worker)
        for t in [0, *range(len(workers) + 1, nt)]:
            chunk(t)
    except BaseException as e:
        errors.append(e)
    finally:
        for worker in started:
            error = worker.wait()
            if error is not None:
                errors.append(error)
        pool.give_back(workers, started)
    interrupts = [e for e in errors if isinstance(e, KeyboardInterrupt)]
    if errors:
        raise (interrupts or errors)[0]
