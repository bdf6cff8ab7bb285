"""The float32 cancellation case of docs/dask.md: variance of float32 data far from zero.

2,000,000 x 3 float32 values, mean 1e4, std 1, in dask chunks of 100,000 rows; the
variance by dask's own reductions, numpy, and nbbn (threads and a LocalCluster of
2 workers x 1 thread), each against the exact variance (integer arithmetic).
Prints a markdown table.

    python scripts/dask_accuracy.py [--rows 2000000] [--no-cluster]
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import dask
import dask.array as da
import numpy as np

import nbbn
import nbbn.dask


def exact_var(x: np.ndarray) -> np.ndarray:
    """The population variance per column, exactly (rounded once): float32 values in
    [8192, 16384) are multiples of 2**-10, so ``x * 1024`` are integers and the
    variance is ``(n * S2 - S**2) / n**2 / 1024**2`` in Python integers."""
    out = []
    for col in x.T:
        q = (col.astype(np.float64) * 1024).astype(np.int64)
        assert np.array_equal(q / 1024, col)  # the scaling is exact
        s = int(q.sum())
        s2 = sum(int(v) * int(v) for v in q)
        n = len(q)
        out.append(float(Fraction(n * s2 - s * s, n * n * 1024 * 1024)))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--no-cluster", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(12)
    x = (1e4 + rng.standard_normal((args.rows, 3))).astype(np.float32)
    ref = exact_var(x)
    dx = da.from_array(x, chunks=(args.chunk, 3))
    rows: list[tuple[str, np.ndarray]] = []
    with dask.config.set(scheduler="threads"):
        rows.append(("dask `x.var(axis=0)`", dx.var(axis=0).compute()))
        rows.append(("dask `x.var(axis=0, dtype=float64)`",
                     dx.var(axis=0, dtype=np.float64).compute()))
        rows.append(("numpy `np.var(x, axis=0)` (float32)", np.var(x, axis=0)))
        rows.append(("nbbn `channel_stats(dx, -1).var`, threads",
                     nbbn.channel_stats(dx, -1).var))
    if not args.no_cluster:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            lazy = nbbn.dask.channel_stats(dx, -1)
            rows.append(("nbbn `nbbn.dask.channel_stats`, LocalCluster 2 x 1",
                         client.compute(lazy).result().var))
    print(f"{args.rows:,} x 3 float32, mean 1e4, std 1, chunks of {args.chunk:,} rows; "
          f"exact var = {ref[0]:.6f}, {ref[1]:.6f}, {ref[2]:.6f}\n")
    print("| method | var (channel 0) | max relative error |")
    print("| --- | --- | --- |")
    for name, v in rows:
        err = np.max(np.abs(np.asarray(v, np.float64) / ref - 1))
        print(f"| {name} | {float(v[0]):.6g} | {err:.2g} |")


if __name__ == "__main__":
    main()
