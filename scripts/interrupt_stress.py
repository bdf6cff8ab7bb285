"""Ctrl-C at random moments of a stream's in-place updates: how many leave a torn state
(some channels with the batch, some without) or the state's lock held.

A wide table of few rows is merged into the state in place on two threads
(``cpu.reduce_into``); ``nbbn._interrupt.deferred_sigint`` holds SIGINT back around it.
Each round arms a timer (``setitimer``) at a random moment of one update; its SIGALRM
handler sends SIGINT to the process, which Python's handler raises as KeyboardInterrupt
(docs/benchmarks.md, "Twenty-sixth session": 224 of 800 torn before, 0 after).

    python scripts/interrupt_stress.py [ROUNDS]
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 800)
