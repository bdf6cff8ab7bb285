"""The CSC kernel alone (``cpu_sparse._csc_unweighted`` and ``_csc_weighted``), on one
thread, per column: what a wide sparse batch costs beyond its stored values.

    python scripts/sparse_csc_kernel.py [--against REV] [--repeats N]

Float32 CSC matrices of 100,000 columns with 0.5 to 16 stored values per column, and a
tall one of 100 columns; per matrix the median of N (default 21) calls in turn, in ns per
column (for the tall one, a column's whole work), against scikit-learn's
``mean_variance_axis`` on the same CSC matrix (one thread too). With ``--against REV``
the kernel of that git revision (its ``nbbn/backends/cpu_sparse.py``, the rest of nbbn
as checked out) runs in turn with this one, and the two results are checked to be
equal bit for bit.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import numpy as np
from scipy import sparse
from sklearn.utils.sparsefuncs import mean_variance_axis

from nbbn._policy import POLICY_OMIT
from nbbn.backends import cpu_sparse
from nbbn.backends._stats import BatchStats
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved
from nbbn.tools.revision import backend_at

SHAPES = ((100, 100_000, 50_000), (100, 100_000, 100_000), (10, 100_000, 400_000),
          (1_600, 100_000, 1_600_000), (100_000, 100, 1_000_000))


def _kernel(module, weighted: bool):
    """``f(indptr, indices, data, w, total, npos, out, sw)`` on one thread."""
    if hasattr(module, "_csc_unweighted"):
        k = module._csc_weighted if weighted else module._csc_unweighted
        return lambda ip, ix, d, w, tot, npos, out, sw: k(
            ip, ix, d, w, POLICY_OMIT, tot, 0.0, npos, 0, 1, 1, out.ints, out.floats, sw)
    k = module._csc_columns  # (before the two builds: one kernel, ``weighted`` an argument)
    return lambda ip, ix, d, w, tot, npos, out, sw: k(
        ip, ix, d, w, weighted, POLICY_OMIT, tot, 0.0, npos, 0, 1, 1, out.ints, out.floats, sw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    modules = {"nbbn": cpu_sparse}
    if args.against:
        modules[args.against] = backend_at(args.against, "cpu_sparse")
    print(cpu_line())
    rng = np.random.default_rng(0)
    for rows, cols, nnz in SHAPES:
        x = sparse.random_array((rows, cols), density=nnz / rows / cols, format="csc",
                                dtype=np.float32, rng=rng)
        x.data = (x.data * 10 + 100).astype(np.float32)
        indptr, indices, data = cpu_sparse._entries(x)
        for weighted in (False, True):
            w = rng.uniform(0.5, 2.0, rows) if weighted else np.ones(0)
            total = float(w.sum()) if weighted else float(rows)
            outs = {name: (BatchStats.uninitialized(cols), np.empty(cols)) for name in modules}
            calls = {name: partial(_kernel(m, weighted), indptr, indices, data, w, total,
                                   rows, *outs[name]) for name, m in modules.items()}
            if not weighted:
                calls["scikit-learn"] = partial(mean_variance_axis, x, 0)
            med = interleaved(calls, args.repeats)
            if args.against:
                (a, sa), (b, sb) = outs.values()
                same = (np.array_equal(a.ints, b.ints) and np.array_equal(sa, sb)
                        and np.array_equal(a.floats, b.floats, equal_nan=True))
                if not same:
                    sys.exit(f"{(rows, cols, nnz)}: results differ from {args.against}'s")
            cells = "  ".join(f"{name} {t * 1e3:6.2f} ms ({t / cols * 1e9:5.1f} ns/col)"
                              for name, t in med.items())
            print(f"{str((rows, cols)):>15} {nnz:>10,} {'weighted' if weighted else '':>8}  "
                  f"{cells}", flush=True)


if __name__ == "__main__":
    main()
