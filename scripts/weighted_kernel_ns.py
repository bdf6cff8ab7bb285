"""Nanoseconds per value of the weighted channels-first kernel (``_weighted_stats``), one
thread, both passes, on one (10, 64, 3136) float32 chunk: the steps table of
docs/benchmarks.md ("Eleventh session"). Median of 20 calls after one warm-up. Run
``python scripts/weighted_kernel_ns.py`` (``PYTHONPATH`` at another checkout's code to
compare two versions).
"""

import time

import numpy as np

from nbbn.backends import cpu_weighted
from nbbn.backends._stats import BatchStats
from nbbn.tools.bench_env import cpu_line


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 64, 3136)).astype(np.float32)
    x.flags.writeable = False
    w = rng.uniform(0.5, 2.0, 10)
    part = BatchStats.uninitialized(64)
    part.weight = np.empty(64)

    def call() -> None:
        cpu_weighted._weighted_stats(x, w, 1, 0, False, part.ints, part.floats, part.weight)

    call()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    print(f"_weighted_stats: {sec * 1e3:.2f} ms, {sec / x.size * 1e9:.2f} ns per value")


if __name__ == "__main__":
    main()
