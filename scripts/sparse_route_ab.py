"""One way of reducing a CSR matrix (``cpu_sparse._csr_route``), forced (``cpu_sparse.reduce``'s
``route``, from commit 9d5bb5f on), over a few shapes: the probe for comparing two trees
of nbbn on one route.

    PYTHONPATH=/tmp/v_old python scripts/sparse_route_ab.py blocks old
    PYTHONPATH=/tmp/v_new python scripts/sparse_route_ab.py blocks new

(each tree with its own ``NUMBA_CACHE_DIR``; run them in turn, several times). Prints
one line: the label, then per shape the median of 9 calls of ``cpu_sparse.reduce``
(``bench_timing.interleaved``) on a float32 matrix of random values near 100.
"""

from __future__ import annotations

import sys
from functools import partial

import numpy as np
from scipy import sparse

from nbbn._policy import POLICY_OMIT
from nbbn.backends import cpu_sparse
from nbbn.tools.bench_timing import interleaved

SHAPES = [  # (rows, columns, stored values)
    (160, 10_000, 160_000),
    (800, 100_000, 800_000),
    (1_600, 100_000, 1_600_000),
    (3_200, 100_000, 3_200_000),
    (16_000, 1_000_000, 16_000_000),
]


def main(route: str, label: str) -> None:
    rng = np.random.default_rng(0)
    cells = []
    for rows, cols, nnz in SHAPES:
        x = sparse.random_array((rows, cols), density=nnz / rows / cols, format="csr",
                                dtype=np.float32, rng=rng)
        x.data = (x.data * 10 + 100).astype(np.float32)
        med = interleaved({route: partial(cpu_sparse.reduce, x, POLICY_OMIT, None, route)},
                          9)[route]
        cells.append(f"{(rows, cols)} {med * 1e3:.2f}")
    print(label, route, " | ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "blocks",
         sys.argv[2] if len(sys.argv) > 2 else "")
