"""Ctrl-C at random moments of a stream's in-place updates: how many leave a torn state
(some channels with the batch, some without) or the state's lock held.

A wide table of few rows is merged into the state in place on two threads
(``cpu.reduce_into``); ``nbbn._interrupt.deferred_sigint`` holds SIGINT back around it.
Each round arms a timer (``setitimer``) at a random moment of one update; its SIGALRM
handler sends SIGINT to the process, which Python's handler raises as KeyboardInterrupt
(docs/benchmarks.md, "Twenty-sixth session": 224 of 800 torn before, 0 after).

``saves`` does the same to ``RunningStats.save``: how many interrupted saves leave a
temporary ``.nbbn-tmp`` file or an open descriptor behind, or a target that does not
load (docs/benchmarks.md, "Twenty-seventh session").

    python scripts/interrupt_stress.py [ROUNDS] [saves]
"""

from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import nbbn


def main(rounds: int = 800) -> None:
    x = np.random.default_rng(0).standard_normal((16, 65536)).astype(np.float32)
    rs = nbbn.RunningStats(-1).update(x)
    signal.signal(signal.SIGALRM, lambda s, f: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    rs.update(x)
    dur = time.perf_counter() - t0
    torn = held = interrupted = 0
    for _ in range(rounds):
        try:
            signal.setitimer(signal.ITIMER_REAL, random.uniform(1e-6, 1.2 * dur))
            rs.update(x)
            time.sleep(1.5 * dur)  # (a late signal lands here)
        except KeyboardInterrupt:
            interrupted += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        if rs._lock.locked():
            held += 1
            break
        if len(set(rs.count.tolist())) != 1:
            torn += 1
            rs = nbbn.RunningStats(-1).update(x)
    print(f"{rounds} rounds, {interrupted} interrupted, {torn} torn, lock held {held}; "
          f"an update {dur * 1e3:.2f} ms")


def saves(rounds: int = 800) -> None:
    rs = nbbn.RunningStats(-1).update(np.arange(12.0).reshape(4, 3))
    signal.signal(signal.SIGALRM, lambda s, f: os.kill(os.getpid(), signal.SIGINT))
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "stats.npz"
        rs.save(target)
        fds = len(os.listdir("/proc/self/fd"))
        t0 = time.perf_counter()
        rs.save(target)
        dur = time.perf_counter() - t0
        interrupted = other = temps = bad = 0
        for _ in range(rounds):
            try:
                signal.setitimer(signal.ITIMER_REAL, random.uniform(1e-6, 1.2 * dur))
                rs.save(target)
                time.sleep(1.5 * dur)
            except KeyboardInterrupt:
                interrupted += 1
            except Exception:  # (zipfile's ValueError for an interrupt inside np.savez)
                other += 1
            signal.setitimer(signal.ITIMER_REAL, 0)
            left = [p for p in os.listdir(folder) if p.endswith(".nbbn-tmp")]
            temps += len(left)
            for p in left:
                os.remove(Path(folder) / p)
            try:
                nbbn.RunningStats.load(target)
            except Exception:
                bad += 1
        leaked = len(os.listdir("/proc/self/fd")) - fds
    print(f"{rounds} saves, {interrupted} interrupted, {other} other errors instead of "
          f"KeyboardInterrupt, {temps} temporary files left, "
          f"{leaked} descriptors left open, {bad} targets that did not load; "
          f"a save {dur * 1e3:.2f} ms")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 800
    saves(n) if sys.argv[2:] == ["saves"] else main(n)
