"""``nbbn bench --tabular``: ``nbbn.fit`` of a Parquet file against pyarrow reading it.

A Parquet file of float32 columns (16 columns, 1 GB of values by default, 64 MB with
``quick``) is written with pyarrow's defaults (snappy compression, row groups of
1,048,576 rows) to a temporary folder and read once, so that it is in the page cache.
Then, alternating so that both see the same load on a shared machine, each timed
``repeats`` times:

* ``pyarrow.parquet.read_table(path, columns=...)``: pyarrow's read-only throughput of
  the same columns (all its threads, its pre-buffering), the data dropped afterwards;
* ``ParquetFile.iter_batches``: pyarrow's streaming read, row group by row group;
* ``nbbn.fit(path, progress=False)``: the whole fit (reading, statistics, merge).

Reported: GB/s of float32 values for each (median), the CPU time of the process (all
threads; on a loaded machine the wall time also counts the waits for a core), and the
fit's throughput relative to each pyarrow read and to the faster of the two, taken
per round (the fit against the reads just before it) and then the median (target >=
70%), with the fit's result checked against a float64 reference of one column.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Any, TextIO

import numpy as np

from .._interrupt import sigterm_unwinds

COLUMNS = 16
FULL_BYTES = 10**9
QUICK_BYTES = 64 * 10**6
ROW_GROUP_ROWS = 1_048_576  # pyarrow's default


def write_parquet(path: str, nbytes: int, seed: int = 0) -> tuple[list[str], int]:
    """Write ``nbytes`` of float32 values in :data:`COLUMNS` columns; return names, rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"c{i:02d}" for i in range(COLUMNS)]
    rows = max(1, nbytes // (4 * COLUMNS))
    rng = np.random.default_rng(seed)
    schema = pa.schema([(n, pa.float32()) for n in names])
    with pq.ParquetWriter(path, schema) as w:
        for lo in range(0, rows, ROW_GROUP_ROWS):
            k = min(ROW_GROUP_ROWS, rows - lo)
            cols = [(rng.standard_normal(k, np.float32) * (i + 1) + 10 * i)
                    for i in range(COLUMNS)]
            w.write_table(pa.table(dict(zip(names, cols, strict=True))),
                          row_group_size=ROW_GROUP_ROWS)
    return names, rows


@sigterm_unwinds()
def run_tabular_bench(file: TextIO, quick: bool = False, repeats: int | None = None,
                      size_gb: float | None = None, workdir: str | None = None
                      ) -> dict[str, Any]:
    """Run the benchmark, print its table to ``file`` and return the results.

    Parameters
    ----------
    file : text stream
        Where the lines go.
    quick : bool, default False
        64 MB (unless ``size_gb``) and 2 repeats (a smoke test).
    repeats : int, optional
        Timed pairs (default 5, 2 with ``quick``).
    size_gb : float, optional
        GB of float32 values (default 1; 0.064 with ``quick``), with ``quick`` too, as
        ``--pipeline`` and ``--dask`` take it.
    workdir : str, optional
        Folder for the temporary file (default the system's).

    Returns
    -------
    dict
        Sizes, the times of each contender, GB/s and the ratio.
    """
    import pyarrow.parquet as pq

    import nbbn

    from .bench_env import cpu_model

    nbytes = int(size_gb * 1e9) if size_gb else (QUICK_BYTES if quick else FULL_BYTES)
    repeats = repeats or (2 if quick else 5)
    tmp = tempfile.mkdtemp(prefix="nbbn-bench-tabular-", dir=workdir)
    try:
        path = os.path.join(tmp, "table.parquet")
        t0 = time.perf_counter()
        names, rows = write_parquet(path, nbytes)
        data_bytes = rows * COLUMNS * 4
        print(f"nbbn bench --tabular: {platform.node()}, {cpu_model()}, {os.cpu_count()} CPUs",
              file=file)
        print(f"{path}: {rows:,} rows x {COLUMNS} float32 columns = {data_bytes / 1e9:.2f} GB of "
              f"values, {os.path.getsize(path) / 1e9:.2f} GB on disk (snappy), row groups of "
              f"{ROW_GROUP_ROWS:,} rows; written in {time.perf_counter() - t0:.1f} s", file=file)

        def read_table() -> None:
            pq.read_table(path, columns=names)

        def iter_batches() -> None:
            for _ in pq.ParquetFile(path).iter_batches(columns=names):
                pass

        def fit() -> Any:
            return nbbn.fit(path, progress=False)

        stats = fit()  # warm-up: the kernels, and every page in the page cache
        read_table()
        ref = pq.read_table(path, columns=[names[-1]]).column(0).to_numpy().astype(np.float64)
        err = max(abs(stats.mean[-1] - ref.mean()) / ref.std(),
                  abs(stats.var[-1] / ref.var() - 1))
        contenders = {"pyarrow read_table": read_table, "pyarrow iter_batches": iter_batches,
                      "nbbn.fit": fit}
        times: dict[str, list[float]] = {k: [] for k in contenders}
        cpu: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(repeats):
            for name, fn in contenders.items():
                t, c = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        fit_t = times["nbbn.fit"]
        rt, ib = times["pyarrow read_table"], times["pyarrow iter_batches"]

        def ratio(ref: list[float]) -> float:  # per pair (same moment), then the median
            return statistics.median(r / f for r, f in zip(ref, fit_t, strict=True))

        result: dict[str, Any] = {
            "rows": rows, "columns": COLUMNS, "bytes": data_bytes,
            "file_bytes": os.path.getsize(path), "repeats": repeats, "cpu": cpu_model(),
            "times_s": times, "cpu_s": cpu,
            "ratio_fit_to_read_table": ratio(rt), "ratio_fit_to_iter_batches": ratio(ib),
            "ratio_fit_to_best_read": ratio([min(a, b) for a, b in zip(rt, ib, strict=True)]),
            "cpu_ratio_best_read_to_fit": min(statistics.median(cpu[k]) for k in
                                              ("pyarrow read_table", "pyarrow iter_batches"))
            / statistics.median(cpu["nbbn.fit"]),
            "check_rel_error": float(err)}
        print(f"{'':24}{'median s':>10}{'GB/s':>8}{'CPU s':>8}", file=file)
        for name, ts in times.items():
            med = statistics.median(ts)
            result[f"gbps {name}"] = data_bytes / med / 1e9
            print(f"{name:24}{med:10.3f}{data_bytes / med / 1e9:8.2f}"
                  f"{statistics.median(cpu[name]):8.2f}", file=file)
        print(f"nbbn.fit throughput / pyarrow's (median of {repeats} alternated runs, each "
              f"against the reads just before it): read_table "
              f"{100 * result['ratio_fit_to_read_table']:.0f}%, iter_batches "
              f"{100 * result['ratio_fit_to_iter_batches']:.0f}%, the faster of the two "
              f"{100 * result['ratio_fit_to_best_read']:.0f}% (target >= 70%); CPU time: "
              f"{100 * result['cpu_ratio_best_read_to_fit']:.0f}%", file=file)
        print(f"last column against a float64 reference: relative error {err:.1e}", file=file)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
