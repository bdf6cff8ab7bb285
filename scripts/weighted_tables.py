"""Weighted statistics of tables against unweighted ones and numpy's weighted average.

The "Weighted tables" table in docs/benchmarks.md ("Tenth session"): (1e6, 64) float32
and float64 tables with a random weight per row, the float32 table with 0.1% NaN under
``nan_policy="omit"``, an NCHW float32 batch weighted per image; medians of 5
interleaved rounds. Run ``python scripts/weighted_tables.py``.
"""

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1_000_000, 64)) * 3 + 5).astype(np.float32)
    x64 = x.astype(np.float64)
    xn = x.copy()
    xn[rng.random(x.shape) < 1e-3] = np.nan
    w = rng.random(1_000_000)
    images = rng.standard_normal((64, 16, 56, 56)).astype(np.float32)
    wi = rng.random(64)
    calls = {
        "unweighted (1e6, 64) float32": lambda: nbbn.RunningStats(-1).update(x),
        "weighted (1e6, 64) float32": lambda: nbbn.RunningStats(-1).update(x, sample_weight=w),
        "weighted (1e6, 64) float64": lambda: nbbn.RunningStats(-1).update(
            x64, sample_weight=w),
        "weighted (1e6, 64) float32, 0.1% NaN, omit": lambda: nbbn.RunningStats(
            -1, nan_policy="omit").update(xn, sample_weight=w),
        "weighted (64, 16, 56, 56) float32, axis 1": lambda: nbbn.RunningStats(1).update(
            images, sample_weight=wi),
        "numpy average (1e6, 64) float32": lambda: np.average(x, axis=0, weights=w),
    }
    for f in calls.values():
        f()
    for name, seconds in interleaved(calls, 5).items():
        print(f"{name:44s} {seconds * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
