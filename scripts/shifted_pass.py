"""G values/s of ``cpu_stats._f32_shifted_pass`` (the channels-first float32/float16
block pass) on 8192-element blocks of a 1 MB array, one thread, all four results used
(using only the sum lets LLVM drop the rest of the loop and overstates it).

Usage: ``python scripts/shifted_pass.py``; with ``NUMBA_CPU_NAME=znver3
NUMBA_CPU_FEATURES=+avx2,+fma,+f16c`` the AVX2 level, which takes the IR head
(``cpu_simd.f32_shifted_sums``).
"""

from __future__ import annotations

import time

import numba
import numpy as np

from nbbn.backends.cpu_stats import _f32_shifted_pass
from nbbn.tools.bench_env import cpu_line


@numba.njit
def _run(x, n, reps, half):
    total = 0.0
    for _ in range(reps):
        for i in range(0, x.size, n):
            a, b, c, d = _f32_shifted_pass(x[i:i + n], np.float32(5.0), half)
            total += a + b + c + d
    return total


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    x = (rng.random(1 << 18) * 2 + 5).astype(np.float32)
    for name, arr, half in (("float32", x, None),
                            ("float16", x.astype(np.float16).view(np.uint16), True)):
        _run(arr, 8192, 1, half)
        best = np.inf
        for _ in range(5):
            t0 = time.perf_counter()
            _run(arr, 8192, 100, half)
            best = min(best, time.perf_counter() - t0)
        print(f"{name}: {100 * arr.size / best / 1e9:.2f} G values/s")


if __name__ == "__main__":
    main()
