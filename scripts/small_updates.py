"""``RunningStats.update`` of a few rows per dtype and layout against numpy's mean + var.

The "Small updates" table in docs/benchmarks.md: best of 7 x 3,000 calls of a (8, 3)
channels-last and a (2, 3, 4, 4) channels-first batch. Run ``python
scripts/small_updates.py``; for AVX2 code on an AVX-512 host, with
``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma,+f16c``.
"""

import time

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line


def best_us(call, calls: int = 3000) -> float:
    call()
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return min(runs)


def one_dtype(dtype, rng: np.random.Generator) -> str:
    rows = (rng.standard_normal((8, 3)) * 10).astype(dtype)
    maps = (rng.standard_normal((2, 3, 4, 4)) * 10).astype(dtype)
    last, first = nbbn.RunningStats(channel_axis=-1), nbbn.RunningStats(channel_axis=1)
    cl = best_us(lambda: last.update(rows))
    cf = best_us(lambda: first.update(maps))
    ref = best_us(lambda: (rows.mean(0), rows.var(0)))
    return (f"{np.dtype(dtype).name:>8}: channels-last {cl:5.1f} us, channels-first "
            f"{cf:5.1f} us, numpy mean + var of the rows {ref:5.1f} us")


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64, np.uint8, np.int16, np.int64):
        print(one_dtype(dtype, rng))


if __name__ == "__main__":
    main()
