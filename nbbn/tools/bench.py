"""``nbbn bench``: speed of RunningStats.update, Normalizer(out=) and BatchNorm training
forward, against the memory bandwidth measured in the same run, numpy and torch.

Every number printed is measured in the run:

* times are medians over ``repeats`` timed calls after one untimed warm-up call
  (compilation, page faults);
* GB/s counts the bytes an op must move: x read once for the statistics, x read and
  the output written for the normalizer, x read twice and the output written once for
  BatchNorm training (statistics pass + normalize pass);
* the read bandwidth is a Numba parallel sum over the same number of bytes, the copy
  bandwidth a Numba parallel copy (bytes read + bytes written), both measured right
  before each shape's ops; "% bw" is GB/s over the read bandwidth (statistics) or the
  copy bandwidth (normalizer, BatchNorm);
* "vs numpy" / "vs torch" are the peer's median time over nbbn's median time.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from .._durable import atomic_write, remove_stale_temps
from .bench_env import CpuMonitor, environment, wait_for_quiet
from .bench_ops import (
    EPS,
    FULL_SHAPES,
    OPS,
    QUICK_SHAPES,
    SMALL_SHAPE,
    bench_shape,
    bench_small,
    make_data,
)
from .bench_startup import bench_startup
from .bench_table import (
    print_header,
    print_legend,
    print_load,
    print_small,
    print_startup,
    print_table,
    shape_line,
)
from .bench_timing import ceiling_gbps, measure_bandwidth

__all__ = ["EPS", "FULL_SHAPES", "OPS", "QUICK_SHAPES", "SMALL_SHAPE", "run_bench"]


def run_bench(
    shapes: Sequence[tuple[tuple[int, ...], str, str, int]] | None = None,
    repeats: int | None = None,
    json_path: str | os.PathLike[str] | None = None,
    *,
    quick: bool = False,
    use_torch: bool = True,
    startup: bool = True,
    wait_quiet_s: float = 0.0,
    file: TextIO | None = None,
) -> dict[str, Any]:
    """Run the benchmark, print its table to ``file``, optionally write JSON; return the results.

    Parameters
    ----------
    shapes : list of (shape, dtype, layout, channel_axis), optional
        ``layout`` is one of "NCHW", "NHWC", "NC". Default: the issue's five shapes plus
        HWC uint8 images (:data:`FULL_SHAPES`), tiny ones with ``quick``.
    repeats : int, optional
        Timed calls per measurement, the median is reported (default 7, 2 with ``quick``).
    json_path : path, optional
        Also write the results there as JSON (atomically).
    quick : bool, default False
        Tiny shapes and few repeats: a smoke test.
    use_torch : bool, default True
        Compare against torch when it is installed.
    startup : bool, default True
        Measure the cold and warm start-up in subprocesses.
    wait_quiet_s : float, default 0.0
        > 0: wait up to that long before each shape for other processes to go idle (on a
        shared machine a busy neighbour slows every parallel kernel).
    file : text stream, optional
        Where the report is printed (default ``sys.stdout``).

    Returns
    -------
    dict
        ``env``, ``quick``, ``repeats``, ``bandwidth`` (per shape), ``results`` (per op
        and shape), ``small_batch``, ``startup``, ``elapsed_s``, ``cpu_load`` and
        ``max_other_cpus_measured``.
    """
    import gc

    import nbbn  # noqa: F401  (fail early if the library is broken)

    out = sys.stdout if file is None else file

    def say(*a: object) -> None:
        print(*a, file=out, flush=True)

    if shapes is None:
        shapes = QUICK_SHAPES if quick else FULL_SHAPES
    if repeats is None:
        repeats = 2 if quick else 7
    torch = _import_torch() if use_torch else None
    t_start = time.perf_counter()
    monitor = CpuMonitor()
    env = environment(torch)
    print_header(say, env, repeats, quick)

    rows: list[dict[str, Any]] = []
    bws: list[dict[str, Any]] = []
    prev = None
    for i, spec in enumerate(shapes):
        shape, dtype, layout, _ = spec
        x = make_data(shape, dtype, layout, seed=i, prev=prev)
        if prev is not None:
            del prev
            gc.collect()
        bw, shape_rows = _measure_shape(spec, x, repeats, torch, wait_quiet_s)
        bws.append(bw)
        rows.extend(shape_rows)
        say(shape_line(i, len(shapes), spec, x.nbytes, bw))
        # keep an NCHW float array for a following NHWC shape of the same data
        nxt = shapes[i + 1] if i + 1 < len(shapes) else None
        prev = x if (nxt is not None and nxt[2] == "NHWC" and layout == "NCHW") else None
        del x
        gc.collect()
    prev = None

    print_legend(say)
    print_table(rows, say)

    small_monitor = CpuMonitor()
    small = bench_small(quick, torch)
    busy = small_monitor.report()
    small["other_cpus"] = None if busy is None else busy["other_cpus"] + busy["steal_cpus"]
    print_small(say, small)

    start: dict[str, Any] | None = None
    if startup:
        start = bench_startup()
        print_startup(say, start)

    elapsed = time.perf_counter() - t_start
    load = monitor.report()
    measured = [
        v for v in [b.get("other_cpus") for b in bws] + [small.get("other_cpus")] if v is not None
    ]
    worst = max(measured) if measured else None
    print_load(say, env, elapsed, load, worst)

    result = {
        "env": env,
        "quick": quick,
        "repeats": repeats,
        "bandwidth": bws,
        "results": rows,
        "small_batch": small,
        "startup": start,
        "elapsed_s": elapsed,
        "cpu_load": load,
        "max_other_cpus_measured": worst,
    }
    if json_path is not None:
        _write_json(json_path, result)
        say(f"wrote {os.fspath(json_path)}")
    return result


def _measure_shape(spec, x, repeats: int, torch, wait_quiet_s: float
                   ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The bandwidth before and after one shape's ops, and the ops' rows."""
    shape, dtype, layout, _ = spec
    out_itemsize = x.dtype.itemsize if x.dtype.kind == "f" else 4
    waited = wait_for_quiet(wait_quiet_s) if wait_quiet_s > 0 else 0.0
    shape_monitor = CpuMonitor()
    # bandwidth before and after the shape's ops; the better of the two is the ceiling
    bw = measure_bandwidth(x.nbytes, x.size * out_itemsize, repeats)
    bw.update({"shape": list(shape), "dtype": dtype, "layout": layout})
    shape_rows = bench_shape(spec, x, repeats, torch, bw)
    after = measure_bandwidth(x.nbytes, x.size * out_itemsize, repeats)
    bw["read_gbps_before"], bw["copy_gbps_before"] = bw["read_gbps"], bw["copy_gbps"]
    bw["read_gbps_after"], bw["copy_gbps_after"] = after["read_gbps"], after["copy_gbps"]
    for kind in ("read", "copy"):
        if after[f"{kind}_gbps"] > bw[f"{kind}_gbps"]:
            bw[f"{kind}_gbps"] = after[f"{kind}_gbps"]
            bw[f"{kind}_ms"] = after[f"{kind}_ms"]
    for r in shape_rows:  # percentages against the final ceiling
        if r["gbps"] is not None:
            ceiling = ceiling_gbps(bw, r["bw_kind"], r["read_pass_bytes"] or 0, r["bytes"])
            r["pct_bw"] = 100.0 * r["gbps"] / ceiling
    busy = shape_monitor.report()
    other = None if busy is None else busy["other_cpus"] + busy["steal_cpus"]
    bw["other_cpus"] = other
    bw["waited_for_quiet_s"] = waited
    for r in shape_rows:
        r["other_cpus"] = other
    return bw, shape_rows


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    from ..backends import cpu

    torch.set_num_threads(cpu.threads())  # the threads nbbn uses (torch: physical cores)
    return torch


def _write_json(path, result: dict[str, Any]) -> None:
    """Write the results (ResultsNotWritten, naming ``path``, when the file cannot be:
    the run's table is printed already)."""
    from .._cli_errors import ResultsNotWritten

    try:
        remove_stale_temps(path)  # (what a killed run left, as every other write does)
        with atomic_write(path, "w") as f:
            json.dump(result, f, indent=2, default=_json_default)
            f.write("\n")
    except OSError as exc:
        raise ResultsNotWritten(f"--json {os.fspath(path)}: the results could not be "
                                f"written ({exc.strerror or exc}); the table above has "
                                "them") from exc


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
