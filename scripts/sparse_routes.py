"""The three ways nbbn reduces a CSR matrix (``cpu_sparse._csr_route``), each forced
(``cpu_sparse.reduce``'s ``route``), against scikit-learn's ``mean_variance_axis``: the
measurements behind the route rule.

    python scripts/sparse_routes.py [REPEATS]

Float32 matrices of 10,000 to 1,000,000 columns, 0.5 to 64 stored values per column
in rows of 10 or 1,000 values; per matrix the medians of REPEATS (default 9) calls of
``cpu_sparse.reduce`` through each route ("csc": scipy's ``tocsc()`` then the CSC
kernel, "blocks": column blocks, "parts": partitions of the entries), timed in turn
with scikit-learn's (``bench_timing.interleaved``); "auto" names the route the rule
picks.
"""

from __future__ import annotations

import sys
from functools import partial

import numpy as np
from scipy import sparse
from sklearn.utils.sparsefuncs import mean_variance_axis

from nbbn._policy import POLICY_OMIT
from nbbn.backends import cpu_sparse
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved

ROUTES = ("csc", "blocks", "parts")


def main(repeats: int) -> None:
    print(cpu_line())
    print(f"{'shape':>20} {'stored':>11} {'per col':>7} {'per row':>7} {'auto':>6} "
          + " ".join(f"{r + ' ms':>9}" for r in ROUTES) + f" {'sklearn ms':>10}")
    rng = np.random.default_rng(0)
    for cols in (10_000, 100_000, 1_000_000):
        for per_col in (0.5, 1, 2, 4, 8, 16, 32, 64):
            for per_row in (1000, 10):
                nnz = int(cols * per_col)
                if nnz > 20_000_000:
                    continue
                rows = max(10, nnz // per_row)
                x = sparse.random_array((rows, cols), density=nnz / rows / cols,
                                        format="csr", dtype=np.float32, rng=rng)
                x.data = (x.data * 10 + 100).astype(np.float32)
                calls = {r: partial(cpu_sparse.reduce, x, POLICY_OMIT, None, r) for r in ROUTES}
                calls["sklearn"] = partial(mean_variance_axis, x, 0)
                *ms, theirs = (t * 1e3 for t in interleaved(calls, repeats).values())
                auto = cpu_sparse._csr_route(rows, cols, x.nnz)
                print(f"{str((rows, cols)):>20} {x.nnz:>11,} {per_col:>7} {per_row:>7} "
                      f"{auto:>6} " + " ".join(f"{t:>9.2f}" for t in ms) + f" {theirs:>10.2f}",
                      flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9)
