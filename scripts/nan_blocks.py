"""Channels-first statistics of long rows with scattered NaNs, against clean data.

The "NaN blocks" table in docs/benchmarks.md ("Eighth session"): (8, 4, 1024, 1024)
with one NaN in a thousand values (float32, float16, and float64 on two images), NaNs
in whole rows (clustered), and the clean array; medians of 5 interleaved rounds. Run
``python scripts/nan_blocks.py``.
"""

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4, 1024, 1024), dtype=np.float32)
    scattered = x.copy()
    scattered.reshape(-1)[::1000] = np.nan
    clustered = x.copy()
    clustered[:, :, :100, :] = np.nan
    f16, f64 = scattered.astype(np.float16), scattered[:2].astype(np.float64)

    def stats(a, policy="omit"):
        return lambda: nbbn.RunningStats(1, nan_policy=policy).update(a)

    calls = {"float32, clean": stats(x), "float32, omit": stats(scattered),
             "float32, propagate": stats(scattered, "propagate"),
             "float32, clustered, omit": stats(clustered), "float16, omit": stats(f16),
             "float64 (2 images), omit": stats(f64)}
    for name, seconds in interleaved(calls, 5).items():
        print(f"{name:28s} {seconds * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
