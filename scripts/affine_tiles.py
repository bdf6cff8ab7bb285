"""The channels-last affine kernel with the old tile rule (at least 64 elements) against
``cpu_normalize.tile_rows``, one thread, the kernel called directly.

Usage: ``python scripts/affine_tiles.py [C,C,...]`` (default 1,3,4,16,64,100,256,1000);
set ``NUMBA_CPU_NAME=znver3 NUMBA_CPU_FEATURES=+avx2,+fma,+f16c`` for AVX2 machine code.
Per channel count and input dtype (uint8, float32; float32 output): G values/s of each
rule (median of three rounds of best-of-15 over 786,432 values) and their ratio.
"""

from __future__ import annotations

import sys
import time

import numba
import numpy as np

from nbbn.backends import cpu_normalize as kn
from nbbn.backends.cpu import _NO_COUNT
from nbbn.tools.bench_env import cpu_line


def rate(x, out, k, a, s, b) -> float:
    nchan = x.shape[1]
    ta, ts, tb = np.tile(a, k), np.tile(s, k), np.tile(b, k)

    def call():
        kn.affine_channels_last(x.reshape(-1), None, ta, ts, tb, nchan, out.reshape(-1), None,
                                False, 0, 0, 1, _NO_COUNT)

    call()
    best = np.inf
    for _ in range(15):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return x.size / best / 1e9


def main() -> None:
    print(cpu_line())
    numba.set_num_threads(1)
    chans = [int(c) for c in (sys.argv[1] if sys.argv[1:] else "1,3,4,16,64,100,256,1000")
             .split(",")]
    rng = np.random.default_rng(0)
    for nchan in chans:
        for dtype in (np.uint8, np.float32):
            x = (rng.random((786432 // nchan, nchan)) * 255).astype(dtype)
            out = np.empty(x.shape, np.float32)
            a, s, b = rng.random(nchan) * 100, 1 / (rng.random(nchan) + 50), np.zeros(nchan)
            ks = (max(1, -(-64 // nchan)), kn.tile_rows(nchan))
            rates: dict[int, list[float]] = {k: [] for k in ks}
            for _ in range(3):
                for k in ks:
                    rates[k].append(rate(x, out, k, a, s, b))
            old, new = (float(np.median(rates[k])) for k in ks)
            print(f"C={nchan:5d} {np.dtype(dtype).name:8s} old tile {ks[0] * nchan:5d} "
                  f"{old:.2f}  new tile {ks[1] * nchan:5d} {new:.2f} G values/s  "
                  f"ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
