"""Statistics of tables and short rows with scattered NaNs, against clean data.

The "NaN tables" table in docs/benchmarks.md ("Ninth session"): channels-last tables
(scikit-learn's layout: a NaN per thousand values, and per hundred), channels-first
images of short rows (32x32), NaNs dense enough that nearly every sub-block holds
one, and numpy's ``nanmean`` + ``nanvar`` of the first table; medians of 5 interleaved
rounds. Run ``python scripts/nan_tables.py`` (``--numpy`` adds numpy's row).
"""

import sys

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved


def scatter(rng, shape, dtype, share):
    x = rng.normal(3.0, 2.0, shape).astype(dtype)
    x[rng.random(shape) < share] = np.nan
    return x


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    cases = {  # name: (array, channel axis)
        "(1e6, 64) float32, clean": (scatter(rng, (1_000_000, 64), np.float32, 0), -1),
        "(1e6, 64) float32, 0.1% NaN": (scatter(rng, (1_000_000, 64), np.float32, 1e-3), -1),
        "(1e6, 64) float32, 1% NaN": (scatter(rng, (1_000_000, 64), np.float32, 1e-2), -1),
        "(1e6, 64) float32, 10% NaN": (scatter(rng, (1_000_000, 64), np.float32, 0.1), -1),
        "(1e6, 64) float16, 1% NaN": (scatter(rng, (1_000_000, 64), np.float16, 1e-2), -1),
        "(1e6, 64) float64, clean": (scatter(rng, (1_000_000, 64), np.float64, 0), -1),
        "(1e6, 64) float64, 0.1% NaN": (scatter(rng, (1_000_000, 64), np.float64, 1e-3), -1),
        "(3e6, 3) float32, 0.1% NaN": (scatter(rng, (3_000_000, 3), np.float32, 1e-3), -1),
        "(2e5, 300) float32, 0.1% NaN": (scatter(rng, (200_000, 300), np.float32, 1e-3), -1),
        "(3e5, 7) float64, 2% NaN": (scatter(rng, (300_000, 7), np.float64, 2e-2), -1),
        "(128, 64, 32, 32) float32, clean": (scatter(rng, (128, 64, 32, 32), np.float32, 0), 1),
        "(128, 64, 32, 32) float32, 0.1% NaN": (
            scatter(rng, (128, 64, 32, 32), np.float32, 1e-3), 1),
        "(128, 64, 32, 32) float16, 0.1% NaN": (
            scatter(rng, (128, 64, 32, 32), np.float16, 1e-3), 1),
        "(128, 64, 32, 32) float32, 2% NaN": (
            scatter(rng, (128, 64, 32, 32), np.float32, 2e-2), 1),
        "(4, 4, 512, 1024) float32, 0.5% NaN": (
            scatter(rng, (4, 4, 512, 1024), np.float32, 5e-3), 1),
    }

    def stats(a, axis):
        return lambda: nbbn.RunningStats(axis, nan_policy="omit").update(a)

    calls = {name: stats(a, axis) for name, (a, axis) in cases.items()}
    if "--numpy" in sys.argv:
        table = cases["(1e6, 64) float32, 0.1% NaN"][0]
        calls["numpy nanmean + nanvar, (1e6, 64) 0.1%"] = lambda: (
            np.nanmean(table, 0), np.nanvar(table, 0))
    for name, seconds in interleaved(calls, 5).items():
        print(f"{name:40s} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
