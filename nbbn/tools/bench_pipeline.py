"""``nbbn bench --pipeline``: ``nbbn.fit`` on files in the page cache vs in-memory updates.

Two cases, written to a temporary folder and removed afterwards:

* one float32 ``.npy`` file of image-like rows ``(N, 3, 224, 224)`` (4 GB; 64 MB with
  ``quick``);
* a folder of 100 uint8 ``.npy`` shards of the same row shape (4 GB in all; 32 MB).

For each case, in a fresh subprocess: the kernels are warmed up on a tiny array, then
``nbbn.fit(path, progress=False)`` is timed (median of ``repeats``; the files were just
written, and a first untimed fit reads them once more, so they are in the page cache)
and the process's peak resident memory (``VmHWM``, reset after the warm-up where Linux
allows) is read. In another subprocess the same data is loaded into memory and
``RunningStats.update`` is timed over it in the same batches. Reported: both speeds in
GB/s, their ratio (target >= 70%), the peak RSS and the target ``2 batches + 150 MB``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, TextIO

from .._interrupt import sigterm_unwinds

ROW_SHAPE = (3, 224, 224)
FULL_BYTES = 4 * 10**9
QUICK_BYTES = 64 * 10**6
QUICK_SHARD_BYTES = 32 * 10**6
N_SHARDS = 100
RSS_ALLOWANCE = 150 * 2**20  # the "+ 150 MB" of the memory target

_CHILD = r"""
import json, os, statistics, sys, time
import numpy as np
import nbbn
from nbbn.sources import open_source

mode, path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])

def status(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024

src = open_source(path)
bs = src.default_batch_size()
warm = np.zeros((2, *src.row_shape), src.dtype)
nbbn.RunningStats(1).update(warm).merge(nbbn.RunningStats(1).update(warm))
out = {"batch_rows": bs, "batch_bytes": bs * src.row_bytes, "nbytes": src.nbytes}
if mode == "fit":
    nbbn.fit(path, progress=False)  # untimed: brings every page into the page cache
    out["rss_before"] = status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        out["hwm_reset"] = True
    except OSError:
        out["hwm_reset"] = False
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        stats = nbbn.fit(path, progress=False)
        times.append(time.perf_counter() - t0)
    out["peak_rss"] = status("VmHWM")
else:
    arrays = [np.load(s.path) for s in src.shards]  # the data, in memory
    def run():
        rs = nbbn.RunningStats(1)
        for a in arrays:
            for i in range(0, a.shape[0], bs):
                rs.update(a[i:i + bs])
        return rs
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    if len(arrays) == 1:
        t1 = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            nbbn.RunningStats(1).update(arrays[0])
            t1.append(time.perf_counter() - t0)
        out["one_call_s"] = statistics.median(t1)
out["seconds"] = statistics.median(times)
out["all_seconds"] = times
print(json.dumps(out))
"""


def _child(mode: str, path: str, repeats: int) -> dict[str, Any]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, path, str(repeats)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline benchmark child ({mode}) failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _write_float32(path: str, nbytes: int, seed: int) -> int:
    """A float32 .npy written as ``np.save`` writes (sequential ``write`` calls)."""
    import numpy as np

    row_bytes = 4 * int(np.prod(ROW_SHAPE))
    rows = max(1, nbytes // row_bytes)
    rng = np.random.default_rng(seed)
    step = max(1, (64 * 2**20) // row_bytes)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (rows, *ROW_SHAPE)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for i in range(0, rows, step):
            n = min(step, rows - i)
            block = rng.standard_normal((n, *ROW_SHAPE), dtype=np.float32)
            block *= np.float32(2.0)
            block += np.float32(0.5)
            block.tofile(f)
    return rows * row_bytes


def _write_uint8_shards(folder: str, nbytes: int, seed: int) -> int:
    import numpy as np

    os.makedirs(folder)
    row_bytes = int(np.prod(ROW_SHAPE))
    rows = max(N_SHARDS, nbytes // row_bytes)
    rng = np.random.default_rng(seed)
    total = 0
    for k in range(N_SHARDS):
        n = rows * (k + 1) // N_SHARDS - rows * k // N_SHARDS
        a = rng.integers(0, 256, size=(n, *ROW_SHAPE), dtype=np.uint8)
        np.save(os.path.join(folder, f"shard_{k:03d}.npy"), a)
        total += a.nbytes
    return total


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@sigterm_unwinds()
def run_pipeline_bench(file: TextIO | None = None, quick: bool = False,
                       repeats: int | None = None, *, size_gb: float | None = None,
                       workdir: str | None = None) -> dict[str, Any]:
    """Measure ``nbbn.fit`` on files in the page cache against in-memory updates.

    Parameters
    ----------
    file : text stream, optional
        Where the report is printed (default ``sys.stdout``).
    quick : bool, default False
        Small files (64 MB and 32 MB) for a smoke test.
    repeats : int, optional
        Timed fits per case, the median is reported (default 3, 2 with ``quick``).
    size_gb : float, optional
        Size of each case in GB (default 4, or the quick sizes).
    workdir : str, optional
        Folder in which the temporary folder is made (default: the system's).

    Returns
    -------
    dict
        ``environment`` and one entry per case in ``cases`` with ``fit_gbps``,
        ``memory_gbps``, ``ratio``, ``peak_rss``, ``rss_target`` and the raw timings.
    """
    file = sys.stdout if file is None else file
    repeats = repeats or (2 if quick else 3)

    def say(msg: str = "") -> None:
        print(msg, file=file, flush=True)

    if size_gb is not None:
        big = small = int(size_gb * 1e9)
    else:
        big, small = (QUICK_BYTES, QUICK_SHARD_BYTES) if quick else (FULL_BYTES, FULL_BYTES)
    need = big + small
    tmp = tempfile.mkdtemp(prefix="nbbn-bench-pipeline-", dir=workdir)
    try:
        free_disk = shutil.disk_usage(tmp).free
        avail = _mem_available()
        if free_disk < need * 1.1:
            raise RuntimeError(f"{tmp}: {free_disk / 1e9:.1f} GB free, the benchmark needs "
                               f"{need * 1.1 / 1e9:.1f} GB; use --pipeline-gb or a --workdir")
        say(f"pipeline benchmark: files in {tmp} (removed afterwards); "
            f"{os.cpu_count()} CPUs, memory available "
            f"{'?' if avail is None else f'{avail / 1e9:.1f} GB'}")
        if avail is not None and avail < 2.2 * max(big, small):
            say("  warning: the files may not stay in the page cache next to an in-memory copy")
        cases = []
        specs = [("float32 .npy", "x.npy", big), (f"uint8, {N_SHARDS} .npy shards", "shards",
                                                   small)]
        for label, name, nbytes in specs:
            path = os.path.join(tmp, name)
            t0 = time.perf_counter()
            if name.endswith(".npy"):
                written = _write_float32(path, nbytes, seed=1)
            else:
                written = _write_uint8_shards(path, nbytes, seed=2)
            say(f"  {label}: wrote {written / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
            fit = _child("fit", path, repeats)
            mem = _child("memory", path, repeats)
            fit_gbps = written / fit["seconds"] / 1e9
            mem_gbps = written / mem["seconds"] / 1e9
            target = 2 * fit["batch_bytes"] + RSS_ALLOWANCE
            case = {
                "case": label, "row_shape": list(ROW_SHAPE), "bytes": written,
                "batch_rows": fit["batch_rows"], "batch_bytes": fit["batch_bytes"],
                "fit_seconds": fit["all_seconds"], "memory_seconds": mem["all_seconds"],
                "fit_gbps": fit_gbps, "memory_gbps": mem_gbps, "ratio": fit_gbps / mem_gbps,
                "memory_one_call_gbps": (written / mem["one_call_s"] / 1e9
                                         if "one_call_s" in mem else None),
                "rss_before_fit": fit["rss_before"], "peak_rss": fit["peak_rss"],
                "peak_rss_reset": fit["hwm_reset"], "rss_target": target,
            }
            cases.append(case)
            if name.endswith(".npy"):
                os.unlink(path)
            else:
                shutil.rmtree(path)
        say()
        say(f"{'case':<26} {'size':>8} {'fit GB/s':>9} {'memory GB/s':>12} {'ratio':>6} "
            f"{'peak RSS':>9} {'target':>8}")
        for c in cases:
            say(f"{c['case']:<26} {c['bytes'] / 1e9:>6.2f}GB {c['fit_gbps']:>9.2f} "
                f"{c['memory_gbps']:>12.2f} {c['ratio']:>6.0%} {c['peak_rss'] / 2**20:>7.0f}MB "
                f"{c['rss_target'] / 2**20:>6.0f}MB")
        say("fit: nbbn.fit(path, progress=False) in a fresh process, median of "
            f"{repeats}; memory: RunningStats.update over the same data loaded into memory, "
            "in the same batches; ratio target >= 70%; peak RSS = VmHWM of the fit process "
            "(including its RSS before the fit), target 2 batches + 150 MiB")
        return {
            "environment": {"python": platform.python_version(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "platform": platform.platform(),
                            "mem_available": avail},
            "repeats": repeats, "cases": cases,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
