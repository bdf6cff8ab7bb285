"""Time of ``cpu_stats.fold`` over 64 partitions of 64 to 4,096 channels, in ms.

The fold table in docs/benchmarks.md ("Twelfth session"): the partitions' statistics of
a large batch merged per channel in partition order; random counts and moments. Median
of 21 calls after one warm-up; the last column a checksum (the same bits before and
after a change of the loop order). Run ``python scripts/fold_partitions.py`` (with
``PYTHONPATH`` at another checkout's code to compare two versions).
"""

import time

import numpy as np

from nbbn.backends import cpu_stats
from nbbn.backends._stats import BatchStats
from nbbn.tools.bench_env import cpu_line


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    nparts = 64
    for nchan in (64, 1000, 4000, 4096):
        pi = rng.integers(1, 100, (nparts, 3, nchan))
        pf = rng.random((nparts, 5, nchan))
        out = BatchStats.uninitialized(nchan)
        ranges = cpu_stats.whole_ranges(nparts, nchan)
        cpu_stats.fold(pi, pf, out.ints, out.floats, False, ranges)
        times = []
        for _ in range(21):
            t0 = time.perf_counter()
            cpu_stats.fold(pi, pf, out.ints, out.floats, False, ranges)
            times.append(time.perf_counter() - t0)
        print(f"C={nchan:5d}: {np.median(times) * 1e3:7.3f} ms  checksum "
              f"{out.floats.sum():.17g}")


if __name__ == "__main__":
    main()
