"""``RunningStats(channel_axis=1).update`` on channels-first float32 batches with short
rows (CNN feature maps) and long ones: median of 9 calls, two threads.

Usage: ``python scripts/short_rows.py``. To compare two versions, run it alternately in
two checkouts (each with its own ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import time

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line

SHAPES = [(256, 2048, 7, 7), (256, 512, 14, 14), (64, 256, 56, 56), (1024, 64, 4, 4)]


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        nbbn.RunningStats(channel_axis=1).update(x)
        times = []
        for _ in range(9):
            t0 = time.perf_counter()
            nbbn.RunningStats(channel_axis=1).update(x)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        print(f"{'x'.join(map(str, shape))}: {t * 1e3:.2f} ms, {x.nbytes / t / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
