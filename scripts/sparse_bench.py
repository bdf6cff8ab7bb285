"""Per-column statistics of scipy sparse matrices: nbbn against scikit-learn's
``mean_variance_axis``, over shapes from tall and narrow to short and wide.

    python scripts/sparse_bench.py [REPEATS]

Each row: a float32 matrix of 100,000 to 10,000,000 stored values,
CSR and CSC; the medians of REPEATS (default 7) alternating calls of
``RunningStats(-1).update(X)`` and ``sklearn.utils.sparsefuncs.mean_variance_axis(X,
0)`` after a warm-up call of each; then (``partial_fit``) the two estimators'
``StandardScaler(with_mean=False).partial_fit(X)`` of the CSR matrix, each fitted once
before (so that the merge with a fitted state is in the time).
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import sparse
from sklearn.preprocessing import StandardScaler as SkStandardScaler
from sklearn.utils.sparsefuncs import mean_variance_axis

import nbbn
from nbbn.sklearn import StandardScaler
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_sklearn import alternate

SHAPES = [  # (rows, columns, stored values)
    (33_333_333, 30, 10_000_000),
    (1_000_000, 300, 3_000_000),
    (1_000_000, 1_000, 10_000_000),
    (100_000, 1_000, 1_000_000),
    (10_000, 10_000, 1_000_000),
    (10_000, 100_000, 10_000_000),
    (1_600, 100_000, 1_600_000),
    (160_000, 100_000, 1_600_000),
    (100, 100_000, 100_000),
    (1_000, 1 << 20, 100_000),  # a batch of 1,000 documents through HashingVectorizer
]


def main(repeats: int) -> None:
    print(cpu_line())
    print(f"{'shape':>20} {'stored':>11} {'format':>11} {'nbbn ms':>9} {'sklearn ms':>11} "
          f"{'speed-up':>9}")
    rng = np.random.default_rng(0)
    for rows, cols, nnz in SHAPES:
        x = sparse.random_array((rows, cols), density=nnz / rows / cols, format="csr",
                                dtype=np.float32, rng=rng)
        x.data = (x.data * 10 + 100).astype(np.float32)
        for fmt in ("csr", "csc", "partial_fit"):
            m = x.asformat("csr" if fmt == "partial_fit" else fmt)
            if fmt == "partial_fit":  # the estimators, on a second batch (their merge)
                ours_est = StandardScaler(with_mean=False).partial_fit(m)
                theirs_est = SkStandardScaler(with_mean=False).partial_fit(m)
                calls = (lambda m=m, e=ours_est: e.partial_fit(m),
                         lambda m=m, e=theirs_est: e.partial_fit(m))
            else:
                calls = (lambda m=m: nbbn.RunningStats(-1).update(m),
                         lambda m=m: mean_variance_axis(m, 0))
            ours, theirs = (t * 1e3 for t in alternate(*calls, repeats))
            print(f"{str((rows, cols)):>20} {m.nnz:>11,} {fmt:>11} {ours:>9.1f} "
                  f"{theirs:>11.1f} {theirs / ours:>8.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
