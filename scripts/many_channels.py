"""Statistics of few rows of many channels: update times and page faults per call.

The "many channels" tables in docs/benchmarks.md ("Seventeenth session"):

* channels-last batches of 1 to 256 rows of 16,384 to 1,048,576 channels, each
  ``update`` of a new ``RunningStats`` timed in a loop of its own (a stream of such
  batches) with the minor page faults it took (``getrusage``): the kernel's arrays come
  from its thread's scratch (``cpu.scratch``), which before were new memory each call;
* channels-first pieces of few rows of many channels (``(1, C, L)``, a single sample or
  a column-major table; ``(8, 65536, 4)``) and a CNN feature map, against numpy's
  ``sum`` over the same axes, medians of 7 interleaved rounds;
* channels-last batches of few rows with NaNs (a value in a thousand) under
  ``nan_policy="omit"``, against the same batches without NaN, medians of 7 interleaved
  rounds;
* single rows of 1,024 to 1,048,576 channels ("Eighteenth session"), each into a new
  ``RunningStats`` and into a stream's, medians of 9 interleaved rounds.

Run ``python scripts/many_channels.py`` in a process of its own: whether malloc hands
new memory to a kernel depends on what the process did before.
"""

import resource
import time

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved

WIDE = [("float64", 1, 1 << 18), ("float64", 64, 1 << 18), ("float64", 256, 1 << 16),
        ("float64", 16, 1 << 16), ("float32", 1, 1 << 18), ("float64", 4, 1 << 20)]
NAN_CASES = [("float64", 256, 1 << 16), ("float32", 256, 1 << 16), ("float64", 64, 1 << 18),
             ("float64", 16, 1 << 16), ("float64", 100000, 64)]
PIECES = [("float32", (8, 65536, 4)), ("float64", (8, 65536, 4)), ("uint8", (8, 65536, 4)),
          ("float32", (1, 262144, 2)), ("float64", (1, 262144, 2)), ("float32", (1, 32768, 16)),
          ("float32", (1, 2048, 49)), ("float32", (32, 2048, 7, 7))]


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def wide_loops(rng) -> None:
    print("channels-last update, one loop per batch: median ms, minor faults per call")
    for dtype, rows, nchan in WIDE:
        x = (rng.standard_normal((rows, nchan)) * 100 + 5).astype(dtype)
        for _ in range(3):
            nbbn.RunningStats(-1).update(x)
        times, faults = [], []
        for _ in range(9):
            f0 = _faults()
            t0 = time.perf_counter()
            nbbn.RunningStats(-1).update(x)
            times.append(time.perf_counter() - t0)
            faults.append(_faults() - f0)
        print(f"  {dtype} ({rows}, {nchan}){'':12s} {np.median(times) * 1e3:8.2f} ms"
              f" {int(np.median(faults)):7d} faults")


def pieces(rng) -> None:
    print("channels-first update against numpy's sum: median ms of 7 interleaved rounds")
    calls = {}
    for dtype, shape in PIECES:
        x = (rng.standard_normal(shape) * 100 + 5).astype(dtype)
        axes = (0, *range(2, x.ndim))
        calls[f"{dtype} {shape}"] = lambda x=x: nbbn.RunningStats(1).update(x)
        calls[f"{dtype} {shape}, numpy sum"] = lambda x=x, axes=axes: x.sum(axes)
    for name, seconds in interleaved(calls, 7).items():
        print(f"  {name:44s} {seconds * 1e3:8.3f} ms")


def nan_batches(rng) -> None:
    print("channels-last update with NaNs under \"omit\": median ms of 7 interleaved rounds")
    calls = {}
    for dtype, rows, nchan in NAN_CASES:
        x = (rng.standard_normal((rows, nchan)) * 100 + 5).astype(dtype)
        y = x.copy()
        y[rng.random(y.shape) < 1e-3] = np.nan
        for label, a in (("clean", x), ("0.1% NaN", y)):
            calls[f"{dtype} ({rows}, {nchan}), {label}"] = (
                lambda a=a: nbbn.RunningStats(-1, nan_policy="omit").update(a))
    for name, seconds in interleaved(calls, 7).items():
        print(f"  {name:44s} {seconds * 1e3:8.3f} ms")


def one_row(rng) -> None:
    print("one row: update of a new RunningStats and of a stream's, median ms of 9 "
          "interleaved rounds")
    calls = {}
    for dtype in ("float32", "float64"):
        for nchan in (1024, 16384, 1 << 18, 1 << 20):
            x = (rng.standard_normal((1, nchan)) * 100 + 5).astype(dtype)
            stream = nbbn.RunningStats(-1).update(x)
            calls[f"{dtype} (1, {nchan}) stream"] = lambda s=stream, x=x: s.update(x)
            calls[f"{dtype} (1, {nchan}) new"] = lambda x=x: nbbn.RunningStats(-1).update(x)
    for name, seconds in interleaved(calls, 9).items():
        print(f"  {name:44s} {seconds * 1e3:8.3f} ms")


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    wide_loops(rng)  # (first: the process has done little else)
    pieces(rng)
    nan_batches(rng)
    one_row(rng)


if __name__ == "__main__":
    main()
