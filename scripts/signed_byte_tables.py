"""uint8 and int8 tables of many channels through the row kernel, in GB/s.

The "int8 tables" numbers in docs/benchmarks.md ("Thirteenth session"): a 64 MB table
per channel count (the same bytes viewed as uint8 and as int8), ``RunningStats.update``
on each in turn, medians of 5 interleaved rounds. To compare builds, run it from outside
the repository with ``PYTHONPATH`` on each build's tree and a ``NUMBA_CACHE_DIR`` of its
own, alternating them. Run ``python scripts/signed_byte_tables.py [label] [C,C,...]``.
"""

import sys
import time

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line

CHANNELS = [200, 784, 4096]
ROUNDS = 5


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "nbbn"
    chans = [int(c) for c in sys.argv[2].split(",")] if len(sys.argv) > 2 else CHANNELS
    print(cpu_line())
    rng = np.random.default_rng(0)
    cells = []
    for nchan in chans:
        u8 = rng.integers(0, 256, ((64 << 20) // nchan, nchan), dtype=np.uint8)
        tables = {"uint8": u8, "int8": u8.view(np.int8)}
        times: dict[str, list[float]] = {k: [] for k in tables}
        for x in tables.values():  # (compiled and paged in, untimed)
            nbbn.RunningStats(channel_axis=-1).update(x)
        for _ in range(ROUNDS):
            for name, x in tables.items():
                rs = nbbn.RunningStats(channel_axis=-1)
                t0 = time.perf_counter()
                rs.update(x)
                times[name].append(time.perf_counter() - t0)
        speeds = {k: u8.nbytes / np.median(v) / 1e9 for k, v in times.items()}
        cells.append(f"C={nchan} uint8 {speeds['uint8']:.1f} int8 {speeds['int8']:.1f}")
    print(label, " | ".join(cells), "(GB/s)")


if __name__ == "__main__":
    main()
