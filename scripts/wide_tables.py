"""Channels-last statistics of tables from 3 to 4,096 columns, in GB/s.

The "wide tables" table in docs/benchmarks.md ("Ninth session"): each dtype and
channel count on 128 MB (and mid-size arrays of 8 and 32 MB, whose blocks threads
share), and numpy's ``x.sum(0)`` of the same array as a read-speed reference; medians
of 7 interleaved rounds. Run ``python scripts/wide_tables.py``.
"""

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved

CASES = [("float64", 64, 128), ("float64", 1000, 128), ("float64", 4096, 128),
         ("float64", 1000, 8), ("int32", 1000, 128), ("int32", 4096, 32),
         ("int16", 1024, 128), ("uint16", 300, 64), ("float32", 3, 64),
         ("float32", 64, 128), ("float32", 1000, 8), ("float32", 4096, 128),
         ("float32", 4096, 32), ("float16", 100, 32)]


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    calls, sizes = {}, {}
    for dtype, nchan, mb in CASES:
        nbytes = mb << 20
        x = (rng.standard_normal((nbytes // (nchan * np.dtype(dtype).itemsize), nchan))
             * 100 + 5).astype(dtype)
        name = f"{dtype} C={nchan} {mb} MB"
        calls[name] = lambda x=x: nbbn.RunningStats(-1).update(x)
        calls[name + ", numpy sum(0)"] = lambda x=x: x.sum(0, dtype=x.dtype)
        sizes[name] = sizes[name + ", numpy sum(0)"] = nbytes
    with np.errstate(over="ignore"):  # (numpy's float16 sums overflow)
        medians = interleaved(calls, 7)
    for name, seconds in medians.items():
        print(f"{name:36s} {sizes[name] / seconds / 1e9:6.1f} GB/s")


if __name__ == "__main__":
    main()
