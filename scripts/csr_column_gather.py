"""A probe for wide CSR batches that go through ``tocsc()`` (cpu_sparse's "csc" route):
a sequential numba gather of the values alone into column order, against scipy's
``tocsc()``, which also moves the row indices (that the unweighted CSC kernel does not
read). Not used by nbbn (docs/benchmarks.md, "Fourteenth session").

    python scripts/csr_column_gather.py
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import sparse

from nbbn.tools.bench_timing import interleaved


@numba.njit(nogil=True)
def gather(indptr, indices, data, ncols, colptr, values):  # pragma: no cover - compiled
    """``colptr`` (zeroed, ncols + 1) and ``values``: the CSC ``indptr`` and ``data``."""
    for k in range(indptr[-1]):
        colptr[indices[k] + 1] += 1
    for c in range(ncols):
        colptr[c + 1] += colptr[c]
    pos = colptr[:-1].copy()
    for r in range(indptr.shape[0] - 1):
        for k in range(indptr[r], indptr[r + 1]):
            c = indices[k]
            values[pos[c]] = data[k]
            pos[c] += 1


def main() -> None:
    rng = np.random.default_rng(0)
    for shape, nnz in [((160_000, 100_000), 1_600_000), ((100, 100_000), 100_000)]:
        x = sparse.random_array(shape, density=nnz / shape[0] / shape[1], format="csr",
                                dtype=np.float32, rng=rng)

        def run(x=x, ncols=shape[1]):
            colptr = np.zeros(ncols + 1, np.int64)
            values = np.empty(x.nnz, x.dtype)
            gather(x.indptr, x.indices, x.data, ncols, colptr, values)
            return colptr, values

        colptr, values = run()
        xc = x.tocsc()
        same = np.array_equal(colptr, xc.indptr) and np.array_equal(values, xc.data)
        med = interleaved({"gather": run, "tocsc": x.tocsc}, 9)  # medians, in turn
        print(f"{shape}: gather {med['gather'] * 1e3:.1f} ms, tocsc "
              f"{med['tocsc'] * 1e3:.1f} ms, same columns: {same}")


if __name__ == "__main__":
    main()
