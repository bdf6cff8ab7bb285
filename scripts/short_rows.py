"""``RunningStats(channel_axis=1).update`` on channels-first batches with short rows
(CNN feature maps) and long ones.

Two tables:

* default: float32 batches of 26-103 MB (from DRAM), median of 9 calls, the default
  threads; 32x2048x7x7 and 16x512x14x14 are a single row group, cut into channel
  slices for the threads;
* ``--cached DTYPE``: pieces of 0.8 M values (3.2 MB float32, cache-resident: one
  thread, as the kernels run below 2**20 values), G values/s of the best of 400 calls:
  the per-core speed of the row passes, steady on a noisy host.

Usage: ``python scripts/short_rows.py`` or ``python scripts/short_rows.py --cached
float16``; AVX2 code with ``NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES=+avx2,+fma,+f16c``.
To compare two versions, run it alternately in two checkouts (each with its own
``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import sys
import time

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line

SHAPES = [(256, 2048, 7, 7), (32, 2048, 7, 7), (16, 512, 14, 14), (256, 512, 14, 14),
          (64, 256, 56, 56), (1024, 64, 4, 4)]
CACHED = [(64, 256, 7, 7), (16, 256, 14, 14), (4, 256, 28, 28), (256, 64, 4, 4)]


def _times(x: np.ndarray, calls: int) -> list[float]:
    nbbn.RunningStats(channel_axis=1).update(x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        nbbn.RunningStats(channel_axis=1).update(x)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    if len(sys.argv) > 2 and sys.argv[1] == "--cached":
        dtype = np.dtype(sys.argv[2])
        row = []
        for shape in CACHED:
            x = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
            t = min(_times(x, 400))
            row.append(f"{'x'.join(map(str, shape))} {x.size / t / 1e9:.2f}")
        print(f"{dtype}, one thread, G values/s (best of 400): " + " | ".join(row))
        return
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        t = float(np.median(_times(x, 9)))
        print(f"{'x'.join(map(str, shape))}: {t * 1e3:.2f} ms, {x.nbytes / t / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
