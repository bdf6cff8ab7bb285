"""Per-call cost of a ``Normalizer`` on small channels-last float32 batches, against
numpy's ``(x - m) * s`` on the same array: best of 7 repeats of 2,000 calls each, in
microseconds. Used for docs/benchmarks.md ("Sixth review session: small calls")::

    python scripts/small_calls.py
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2,+fma,+f16c python scripts/small_calls.py
"""

from __future__ import annotations

import timeit

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line


def main() -> None:
    print(cpu_line())
    norm = nbbn.Normalizer([1.0, 2.0, 3.0], [1.0, 4.0, 9.0], channel_axis=-1)
    m, s = norm.mean.astype(np.float32), norm.scale.astype(np.float32)
    for shape in [(1, 3), (8, 3), (32, 3)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        norm(x)  # (compiled or loaded from the cache first)
        cases = {"nbbn": lambda x=x: norm(x), "numpy": lambda x=x: (x - m) * s}
        us = {k: min(timeit.repeat(f, number=2000, repeat=7)) / 2000 * 1e6
              for k, f in cases.items()}
        print(f"{shape}: nbbn {us['nbbn']:.1f} us, numpy {us['numpy']:.1f} us "
              f"({us['nbbn'] / us['numpy']:.1f}x)")


if __name__ == "__main__":
    main()
