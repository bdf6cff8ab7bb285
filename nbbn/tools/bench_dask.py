"""``nbbn bench --dask``: statistics of a chunked float32 array on a ``LocalCluster``.

The data: float32 rows of shape (3, 224, 224) in ``.npy`` files of 128 MB (4 GB in all;
64 MB in 8 MB files with ``quick``), written to a temporary folder and removed
afterwards; the dask array has one chunk per file, each chunk read by a worker from
its own file (memory-mapped, read-only; the files are in the page cache).
On a ``LocalCluster(n_workers=2, threads_per_worker=1)``:

* first-call cost per worker: a tiny ``channel_stats`` in each worker of a fresh
  cluster, once with an empty numba cache folder (compilation) and once with the
  usual cache (loading);
* nbbn: ``nbbn.dask.channel_stats(x, 1)`` computed on the cluster, against Dask's own
  ``x.mean(axis, dtype=float64)`` and ``x.var(axis, dtype=float64)`` computed together,
  alternated, median of ``repeats`` each;
* single-process in-memory ``RunningStats.update`` on the same data: each file loaded
  into memory, the updates alone timed (summed over the files), alternated with the
  above;
* peak RSS per worker (``VmHWM``, reset where Linux allows) during one nbbn run,
  against ``4 chunks + 200 MB``, and during one dask run.
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

ROW_SHAPE = (3, 224, 224)
FULL_BYTES = 4 * 10**9
FILE_BYTES = 128 * 2**20
QUICK_BYTES = 64 * 10**6
QUICK_FILE_BYTES = 8 * 2**20
RSS_ALLOWANCE = 200 * 2**20  # the "+ 200 MB" of the memory target


# module-level: the workers get them by reference
def load_npy(path: str) -> np.ndarray:
    """One chunk: a ``.npy`` file, memory-mapped (read-only, pages from the page cache,
    as ``nbbn.fit`` reads ``.npy`` shards)."""
    return np.load(path, mmap_mode="r")


def first_call_s() -> float:
    """Seconds of the first ``channel_stats`` call in this process (compile or load)."""
    import nbbn

    t = time.perf_counter()
    nbbn.channel_stats(np.ones((2, 3, 8, 8), np.float32), 1)
    return time.perf_counter() - t


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def reset_peak_rss() -> int:
    """Reset ``VmHWM`` to the current RSS (Linux); returns the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status("VmRSS")


def peak_rss() -> int:
    """The peak resident memory of the calling process (``VmHWM``) in bytes."""
    return _status("VmHWM")


def _write_files(folder: str, nbytes: int, file_bytes: int) -> list[str]:
    rng = np.random.default_rng(0)
    row_bytes = 4 * int(np.prod(ROW_SHAPE))
    rows_per_file = max(1, file_bytes // row_bytes)
    nfiles = max(1, nbytes // (rows_per_file * row_bytes))
    paths = []
    block = (100 + 20 * rng.standard_normal((rows_per_file, *ROW_SHAPE))).astype(np.float32)
    for i in range(nfiles):
        block[:, :, 0, 0] = i  # files differ
        path = os.path.join(folder, f"part-{i:04d}.npy")
        np.save(path, block)
        paths.append(path)
    return paths


def _dask_array(paths: list[str]):
    import dask
    import dask.array as da

    shape = np.load(paths[0], mmap_mode="r").shape
    parts = [da.from_delayed(dask.delayed(load_npy)(p), shape, np.float32) for p in paths]
    return da.concatenate(parts, axis=0)


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _in_memory_update_s(paths: list[str]) -> float:
    """The summed time of ``RunningStats.update`` over each file loaded into memory."""
    import nbbn

    rs = nbbn.RunningStats(1)
    total = 0.0
    for p in paths:
        a = np.load(p)
        total += _time(lambda a=a: rs.update(a))
        del a
    return total


def _first_calls(cache_dir: str | None) -> list[float]:
    from distributed import Client, LocalCluster

    env = {"NUMBA_CACHE_DIR": cache_dir} if cache_dir else {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, env=env) as cluster, Client(cluster) as client:
        return sorted(client.run(first_call_s).values())


@sigterm_unwinds()
def run_dask_bench(file: TextIO | None = None, quick: bool = False,
                   repeats: int | None = None, size_gb: float | None = None,
                   workdir: str | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table to ``file``, return the numbers.

    Parameters
    ----------
    file : text stream, optional
        Where to print (default: nowhere).
    quick : bool
        64 MB instead of 4 GB (a smoke test).
    repeats : int, optional
        Timed runs per contender (default 5, 2 with ``quick``).
    size_gb : float, optional
        The data size in GB (default 4).
    workdir : str, optional
        Folder for the temporary files (default: the system's temporary folder).

    Returns
    -------
    dict
        Speeds (GB/s), ratios, first-call seconds per worker, peak RSS per worker and
        its target, the environment.
    """
    import dask
    from distributed import Client, LocalCluster

    import nbbn
    import nbbn.dask

    from .bench_env import cpu_model

    def say(msg: str = "") -> None:
        if file is not None:
            print(msg, file=file, flush=True)

    repeats = repeats or (2 if quick else 5)
    nbytes = int(size_gb * 1e9) if size_gb else (QUICK_BYTES if quick else FULL_BYTES)
    file_bytes = QUICK_FILE_BYTES if quick else FILE_BYTES
    folder = tempfile.mkdtemp(prefix="nbbn-bench-dask-", dir=workdir)
    result: dict[str, Any] = {"cpu": cpu_model(), "dask": dask.__version__,
                              "repeats": repeats}
    try:
        paths = _write_files(folder, nbytes, file_bytes)
        chunk_bytes = os.path.getsize(paths[0])
        total = sum(os.path.getsize(p) for p in paths)
        result.update(nbytes=total, chunk_bytes=chunk_bytes, chunks=len(paths))
        say(f"nbbn bench --dask: {total / 1e9:.2f} GB float32 in {len(paths)} .npy chunks of "
            f"{chunk_bytes / 2**20:.0f} MB, LocalCluster(2 workers x 1 thread); "
            f"CPU {result['cpu']}")
        with tempfile.TemporaryDirectory(prefix="nbbn-cold-cache-") as cold:
            result["first_call_cold_s"] = _first_calls(cold)
        result["first_call_warm_s"] = _first_calls(None)
        say(f"first call per worker: {result['first_call_cold_s']} s with an empty numba "
            f"cache, {result['first_call_warm_s']} s from the disk cache")
        _in_memory_update_s(paths[:1])  # compile/load in this process
        x = _dask_array(paths)
        axes = (0, 2, 3)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            client.run(first_call_s)
            ours = lambda: client.compute(nbbn.dask.channel_stats(x, 1)).result()  # noqa: E731
            theirs = lambda: dask.compute(  # noqa: E731
                x.mean(axis=axes, dtype=np.float64), x.var(axis=axes, dtype=np.float64),
                scheduler=client)
            check = ours()
            want = theirs()
            result["max_rel_diff_mean"] = float(np.max(np.abs(check.mean / want[0] - 1)))
            result["max_rel_diff_var"] = float(np.max(np.abs(check.var / want[1] - 1)))
            rss_start = client.run(reset_peak_rss)
            ours()
            peaks = client.run(peak_rss)  # nbbn's own peak
            client.run(reset_peak_rss)
            theirs()
            peaks_dask = client.run(peak_rss)
            t_ours, t_dask, t_mem = [], [], []
            for _ in range(repeats):  # alternated, so load from others hits all alike
                t_ours.append(_time(ours))
                t_dask.append(_time(theirs))
                t_mem.append(_in_memory_update_s(paths))
        med = {k: statistics.median(v) for k, v in
               (("nbbn", t_ours), ("dask", t_dask), ("memory", t_mem))}
        result.update(
            seconds={"nbbn_cluster": t_ours, "dask_mean_var": t_dask, "in_memory_update": t_mem},
            gbps={k: total / v / 1e9 for k, v in med.items()},
            ratio_vs_in_memory=med["memory"] / med["nbbn"],
            speedup_vs_dask=med["dask"] / med["nbbn"],
            rss_start=sorted(rss_start.values()),
            peak_rss=sorted(peaks.values()),
            peak_rss_dask=sorted(peaks_dask.values()),
            rss_target=4 * chunk_bytes + RSS_ALLOWANCE,
        )
        g = result["gbps"]
        say("")
        say("| measurement | value | target |")
        say("| --- | --- | --- |")
        say(f"| nbbn on the cluster | {g['nbbn']:.2f} GB/s (median {med['nbbn']:.2f} s) | |")
        say(f"| in-memory RunningStats.update, one process | {g['memory']:.2f} GB/s | |")
        say(f"| dask mean + var (float64) on the cluster | {g['dask']:.2f} GB/s | |")
        say(f"| nbbn / in-memory | {result['ratio_vs_in_memory']:.2f} | >= 0.7 |")
        say(f"| nbbn speed-up over dask | {result['speedup_vs_dask']:.1f}x | >= 5x |")
        say(f"| peak RSS per worker, nbbn | "
            f"{', '.join(f'{p / 2**20:.0f} MB' for p in result['peak_rss'])} | "
            f"<= {result['rss_target'] / 2**20:.0f} MB (4 chunks + 200 MB) |")
        say(f"| peak RSS per worker, dask mean + var | "
            f"{', '.join(f'{p / 2**20:.0f} MB' for p in result['peak_rss_dask'])} | |")
        say(f"| RSS per worker before the runs | "
            f"{', '.join(f'{p / 2**20:.0f} MB' for p in result['rss_start'])} | |")
        say(f"| nbbn vs dask, max relative difference | mean "
            f"{result['max_rel_diff_mean']:.1g}, var {result['max_rel_diff_var']:.1g} | |")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result
