"""Milliseconds of a weighted ``RunningStats.update`` (median of 9 after one warm-up) on a
uint8 channels-first batch and int32 and float32 tables: docs/benchmarks.md ("Thirty-second
session"). Run ``python scripts/weighted_update_ms.py`` (``PYTHONPATH`` at another
checkout's code to compare two versions, alternating them).
"""

import time

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    cases = {
        "uint8 (32, 3, 224, 224), channel_axis=1":
            (rng.integers(0, 256, (32, 3, 224, 224)).astype(np.uint8), 1),
        "int32 (200000, 64) table": (rng.integers(-1000, 1000, (200000, 64)).astype(np.int32), -1),
        "float32 (200000, 64) table": (rng.normal(size=(200000, 64)).astype(np.float32), -1),
    }
    for name, (x, axis) in cases.items():
        w = rng.integers(0, 4, x.shape[0]).astype(float)
        nbbn.RunningStats(axis).update(x, sample_weight=w)
        times = []
        for _ in range(9):
            t0 = time.perf_counter()
            nbbn.RunningStats(axis).update(x, sample_weight=w)
            times.append(time.perf_counter() - t0)
        print(f"{name}: {np.median(times) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
