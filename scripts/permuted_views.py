"""``update`` and the normalizer on permuted views of contiguous memory.

The "Permuted views" table in docs/benchmarks.md ("Eighth session"): (128, 64, 32, 32)
float32 seen as an NHWC view of NCHW memory, an NCHW view of NHWC memory (a torch
``channels_last`` layout), a CNHW view, Fortran order and the contiguous array; medians
of 7 alternating calls, and a check of the statistics against the contiguous array's.
Run ``python scripts/permuted_views.py``.
"""

import statistics
import time

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line


def main() -> None:
    print(cpu_line())
    xc = np.random.default_rng(0).standard_normal((128, 64, 32, 32), dtype=np.float32)
    cases = {
        "NHWC view of NCHW, axis -1": (xc.transpose(0, 2, 3, 1), -1),
        "NCHW view of NHWC, axis 1": (
            np.ascontiguousarray(xc.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), 1),
        "CNHW view of NCHW, axis 0": (xc.transpose(1, 0, 2, 3), 0),
        "Fortran NCHW, axis 1": (np.asfortranarray(xc), 1),
        "NCHW contiguous, axis 1": (xc, 1),
    }
    ref = nbbn.RunningStats(channel_axis=1).update(xc)
    for name, (v, ax) in cases.items():
        norm = nbbn.Normalizer(np.zeros(64), np.ones(64), channel_axis=ax)
        calls = {"update": lambda v=v, ax=ax: nbbn.RunningStats(channel_axis=ax).update(v),
                 "norm": lambda v=v, norm=norm: norm(v)}
        for call in calls.values():
            call()
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(7):
            for k, call in calls.items():
                t0 = time.perf_counter()
                call()
                times[k].append(time.perf_counter() - t0)
        got = nbbn.RunningStats(channel_axis=ax).update(v)
        ok = np.allclose(got.mean, ref.mean, rtol=1e-12, atol=1e-15) and np.allclose(
            got.var, ref.var, rtol=1e-12)
        print(f"{name:28s} update {statistics.median(times['update']) * 1e3:7.2f} ms  "
              f"normalizer {statistics.median(times['norm']) * 1e3:7.2f} ms  stats ok {ok}")


if __name__ == "__main__":
    main()
