"""Cold build time of the channels-last float64 kernel, narrow and wide tables.

The "compile time" paragraph of docs/benchmarks.md ("Seventeenth session"): in a new
process with an empty numba cache (its own temporary folder), the time of the first
``update`` of a (300, 70) float64 table (the build that allocates its arrays), then of
a (30, 2**17) one (the build that takes them from the thread's scratch,
``cpu_stats.SCRATCH_MIN_CHANNELS``). Run ``python scripts/scratch_build_time.py``.
"""

import os
import subprocess
import sys
import tempfile

CHILD = """
import time
import numpy as np
import nbbn
for shape in [(300, 70), (30, 1 << 17)]:
    x = np.random.default_rng(0).standard_normal(shape)
    t0 = time.perf_counter()
    nbbn.RunningStats(-1).update(x)
    print(f"first update of {shape} float64: {time.perf_counter() - t0:6.2f} s")
"""


def main() -> None:
    from nbbn.tools.bench_env import cpu_line

    print(cpu_line())
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        subprocess.run([sys.executable, "-c", CHILD], env=env, check=True)


if __name__ == "__main__":
    main()
