"""Compile time of the CSR kernels at a process's first call, cold numba cache.

    for c in blocks blocks_w parts parts_w; do
        NUMBA_CACHE_DIR=$(mktemp -d) python scripts/sparse_compile.py $c; done

``blocks``: a (1,000, 10,000) CSR matrix of 1% (column blocks, ``_csr_blocks``);
``parts``: (20,000, 50) of 30% (partitions, ``_csr_parts``); ``_w``: with random
sample weights. Prints the first call's seconds and each kernel's compile seconds,
exclusive of the builds inside it (``compile_probe.install``; two threads that compile
one kernel at once are both timed).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from compile_probe import builds_line, install  # (this folder)
from scipy import sparse

from nbbn.backends import cpu_sparse


def main(case: str) -> None:
    install()
    shape, density = ((1000, 10000), 0.01) if case.startswith("blocks") else ((20000, 50), 0.3)
    x = sparse.random(*shape, density=density, format="csr", random_state=1)
    w = np.random.default_rng(0).random(shape[0]) if case.endswith("_w") else None
    route = cpu_sparse._csr_route(*x.shape, x.nnz, w is not None)
    t0 = time.perf_counter()
    cpu_sparse.reduce(x, 1, w)
    print(f"{case} (route {route}): first call {time.perf_counter() - t0:.2f} s;",
          builds_line())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "blocks")
