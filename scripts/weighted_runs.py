"""Weighted statistics of channels-first runs against the unweighted path: the
"channels-first runs" table of docs/benchmarks.md ("Eleventh session").

(256, 3, 224, 224) uint8, (64, 64, 56, 56) float32 and float64, (512, 64, 28, 28) and
(1024, 256, 7, 7) float32 (runs shorter than a block), and a (1e6, 64) uint8 table,
weighted and not; medians of interleaved rounds. Run ``python scripts/weighted_runs.py``
(with ``PYTHONPATH`` at another checkout's code to compare two versions).
"""

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    cases = {
        "(256, 3, 224, 224) uint8": (rng.integers(0, 256, (256, 3, 224, 224), np.uint8), 1),
        "(64, 64, 56, 56) float32": (rng.normal(size=(64, 64, 56, 56)).astype(np.float32), 1),
        "(64, 64, 56, 56) float64": (rng.normal(size=(64, 64, 56, 56)), 1),
        "(512, 64, 28, 28) float32": (rng.normal(size=(512, 64, 28, 28)).astype(np.float32), 1),
        "(1024, 256, 7, 7) float32": (rng.normal(size=(1024, 256, 7, 7)).astype(np.float32), 1),
        "(1e6, 64) uint8 table": (rng.integers(0, 256, (1_000_000, 64), np.uint8), -1),
    }
    calls = {}
    for name, (x, axis) in cases.items():
        w = rng.uniform(0.5, 2.0, x.shape[0])
        calls[name] = lambda x=x, axis=axis: nbbn.RunningStats(axis).update(x)
        calls[name + ", weighted"] = (
            lambda x=x, axis=axis, w=w: nbbn.RunningStats(axis).update(x, sample_weight=w))
    for name, sec in interleaved(calls, 7).items():
        print(f"{name:38s} {sec * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
