"""The worst relative error of the variance of float32 N(R, 1), 4 channels, one
channels-last batch, for R from 0 to 1e4 (docs/benchmarks.md, twenty-eighth session).

Usage: ``python scripts/cl_variance_probe.py [SEED]`` (``NBBN_SIMD=none`` for the
portable loops). The reference is a two-pass variance of exactly rounded sums.
"""

from __future__ import annotations

import math
import sys

import numpy as np

import nbbn


def exact_var(column: np.ndarray) -> float:
    v = column.astype(np.float64)
    d = v - math.fsum(v) / v.size
    return (math.fsum(d * d) - math.fsum(d) ** 2 / v.size) / v.size


def main() -> None:
    rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    locs = (0.0, 0.5, 1.0, 2.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)
    print("rows   " + " ".join(f"{r:>7g}" for r in locs))
    for n in (20000, 200000):
        row = []
        for loc in locs:
            x = (loc + rng.standard_normal((n, 4))).astype(np.float32)
            var = nbbn.channel_stats(x, -1).var
            row.append(max(abs(var[c] / exact_var(x[:, c]) - 1) for c in range(4)))
        print(f"{n:<6} " + " ".join(f"{e:7.0e}" for e in row), flush=True)


if __name__ == "__main__":
    main()
