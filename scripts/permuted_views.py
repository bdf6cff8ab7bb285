"""``update`` and the normalizer on permuted views of contiguous memory.

The "Permuted views" table in docs/benchmarks.md ("Eighth session"): (128, 64, 32, 32)
float32 seen as an NHWC view of NCHW memory, an NCHW view of NHWC memory (a torch
``channels_last`` layout), a CNHW view, Fortran order and the contiguous array; medians
of 7 alternating calls, and a check of the statistics against the contiguous array's.
Run ``python scripts/permuted_views.py``.
"""

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved


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
    # the process's first ~8 fresh 32 MB outputs took 21 ms each, later ones 4.4 ms,
    # whatever the layout (the allocator's warm-up on this host): outside the timing
    warm = nbbn.Normalizer(np.zeros(64), np.ones(64), channel_axis=1)
    for _ in range(12):
        warm(xc)
    for name, (v, ax) in cases.items():
        norm = nbbn.Normalizer(np.zeros(64), np.ones(64), channel_axis=ax)
        calls = {"update": lambda v=v, ax=ax: nbbn.RunningStats(channel_axis=ax).update(v),
                 "norm": lambda v=v, norm=norm: norm(v)}
        med = {k: s * 1e3 for k, s in interleaved(calls, 7).items()}
        got = nbbn.RunningStats(channel_axis=ax).update(v)
        ok = np.allclose(got.mean, ref.mean, rtol=1e-12, atol=1e-15) and np.allclose(
            got.var, ref.var, rtol=1e-12)
        print(f"{name:28s} update {med['update']:7.2f} ms  "
              f"normalizer {med['norm']:7.2f} ms  stats ok {ok}")


if __name__ == "__main__":
    main()
