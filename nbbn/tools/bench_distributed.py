"""``nbbn bench --distributed``: ``nbbn.fit(client=...)`` on a LocalCluster vs one process.

16 float32 ``.npy`` shards of rows ``(3, 64, 64)`` (1 GB in all; 64 MB with ``quick``)
are written to a temporary folder (removed afterwards) and fitted

* in this process: ``nbbn.fit(folder)`` (the reader thread, the kernels on numba's
  thread count);
* on a ``LocalCluster`` of ``workers`` single-threaded worker processes:
  ``nbbn.fit(folder, client=client)``.

The two are run alternately ``repeats`` times after one untimed run of each (files in
the page cache, kernels compiled or loaded); medians are reported with their ratio,
the cluster's start time, each worker's first-call cost and kernels compiled (from its
first, untimed fit), its peak resident memory (``VmHWM``), and the largest relative
difference between the two fits' means and variances.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from typing import Any, TextIO

import numpy as np

from .._interrupt import sigterm_unwinds

ROW_SHAPE = (3, 64, 64)
N_SHARDS = 16
FULL_BYTES = 2**30
QUICK_BYTES = 64 * 2**20


def _peak_rss() -> int:
    """The peak resident memory of the calling process in bytes (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _write_shards(folder: str, total: int) -> int:
    rng = np.random.default_rng(0)
    row_bytes = int(np.prod(ROW_SHAPE)) * 4
    rows = max(1, total // (N_SHARDS * row_bytes))
    for i in range(N_SHARDS):
        x = rng.standard_normal((rows, *ROW_SHAPE), dtype=np.float32)
        x *= 10
        x += 1e3
        np.save(os.path.join(folder, f"s{i:03d}.npy"), x)
    return rows * N_SHARDS * row_bytes


@sigterm_unwinds()
def run_distributed_bench(file: TextIO, quick: bool = False, repeats: int | None = None,
                          workers: int = 2, workdir: str | None = None) -> dict[str, Any]:
    """Time a fit of files on a LocalCluster against the same fit in this process.

    Parameters
    ----------
    file : text stream
        Where the table goes.
    quick : bool, default False
        64 MB instead of 1 GB, 2 repeats.
    repeats : int, optional
        Timed runs of each (default 5, 2 with ``quick``).
    workers : int, default 2
        Worker processes (one thread each).
    workdir : str, optional
        Folder for the temporary shards.

    Returns
    -------
    dict
        The measurements.
    """
    import nbbn

    from .. import _distributed as nd
    from ..pipeline import FitSettings
    from ..sources import open_source
    from .bench_env import cpu_model

    reps = repeats or (2 if quick else 5)
    folder = tempfile.mkdtemp(prefix="nbbn-bench-dist-", dir=workdir)
    try:
        nbytes = _write_shards(folder, QUICK_BYTES if quick else FULL_BYTES)
        single = nbbn.fit(folder, progress=False)  # page cache, kernels
        t = time.perf_counter()
        with nd.local_client(workers) as client:
            start_s = time.perf_counter() - t
            src = open_source(folder)
            cfg = FitSettings(1, "propagate", None, None, "auto", False, None, False, 5.0)
            run = nd._ClusterRun(src, cfg, [nd.shard_recipe(s) for s in src.shards])
            first = run.run_on(client)
            src.close()
            times: dict[str, list[float]] = {"single": [], "cluster": []}
            for _ in range(reps):
                for name in ("single", "cluster"):
                    t = time.perf_counter()
                    nbbn.fit(folder, progress=False,
                             client=client if name == "cluster" else None)
                    times[name].append(time.perf_counter() - t)
            rss = client.run(_peak_rss)
        rel = max(float(np.max(np.abs(first.mean / single.mean - 1))),
                  float(np.max(np.abs(first.var / single.var - 1))))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"cpu": cpu_model(), "bytes": nbytes, "shards": N_SHARDS, "workers": workers,
           "repeats": reps, "median_s": med,
           "gbps": {k: nbytes / v / 1e9 for k, v in med.items()},
           "ratio_cluster_vs_single": med["single"] / med["cluster"],
           "cluster_start_s": start_s, "first_call": run.workers, "peak_rss": rss,
           "max_rel_diff": rel}
    p = lambda *a: print(*a, file=file)  # noqa: E731
    p(f"nbbn fit of {N_SHARDS} float32 .npy shards, {nbytes / 1e9:.2f} GB in the page cache "
      f"({out['cpu']}; medians of {reps}, alternated)")
    p(f"  one process         {med['single']:.3f} s  {out['gbps']['single']:.2f} GB/s")
    p(f"  LocalCluster {workers}x1     {med['cluster']:.3f} s  {out['gbps']['cluster']:.2f} GB/s"
      f"  ({out['ratio_cluster_vs_single']:.2f}x one process)")
    p(f"  cluster start {start_s:.1f} s; max relative difference of mean/var {rel:.1e}")
    for name, w in sorted(run.workers.items()):
        p(f"  worker {name}: first call {w['first_call_s']:.2f} s, {w['compiled']} kernels "
          f"compiled, peak RSS {rss.get(name, 0) / 2**20:.0f} MiB")
    return out
