"""Channels-last statistics of (N, C) tables with few channels: each path of ``cl_simd``.

For each dtype and channel count, ``RunningStats(channel_axis=-1).update`` of a 64 MB
table on all threads, median of 5 calls, in rounds that alternate the paths the CPU
backend can take for it: the tile kernel (``_cl_pass``), the SIMD chunk kernel in tiles
of k rows, and (float32, where it applies) one masked last vector. Prints GB/s per path
and round, and the worst error of mean/var against a float64 reference. Used for
docs/benchmarks.md ("Few channels, channels-last, in tiles of k rows")::

    python scripts/few_channels.py                   # float32 and float16, C = 3..100
    python scripts/few_channels.py float16 3,5,10 2  # dtypes, channel counts, rounds
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

import nbbn
from nbbn.backends import cpu, cpu_simd
from nbbn.backends import cpu_stats as ks
from nbbn.tools.bench_env import environment

_CHOICE = ks.cl_simd


def _paths(dtype: np.dtype, nchan: int) -> dict[str, int]:
    """The ``simd`` values (rows per tile; 0 the tile kernel) that apply."""
    lanes = cpu_simd.CL_LANES
    paths = {"tile kernel": 0}
    if not cpu_simd.HAVE_SIMD:
        return paths
    k = lanes // math.gcd(nchan, lanes)
    if k * nchan <= ks.CL_TILE_MAX:
        paths[f"tiles of {k} rows"] = k
    padded = -(-nchan // lanes) * lanes
    if nchan % lanes == 0 or (dtype == np.float32 and nchan >= lanes
                              and 4 * nchan >= 3 * padded):
        paths["whole/masked vectors"] = 1
    return paths


def _time(x: np.ndarray, simd: int) -> float:
    ks.cl_simd = lambda dtype, nchan: simd  # the plan asks cl_simd; cleared plans
    cpu._plans.clear()
    try:
        nbbn.RunningStats(channel_axis=-1).update(x)  # compile, warm
        times = []
        for _ in range(5):
            t = time.perf_counter()
            nbbn.RunningStats(channel_axis=-1).update(x)
            times.append(time.perf_counter() - t)
    finally:
        ks.cl_simd = _CHOICE
        cpu._plans.clear()
    return x.nbytes / float(np.median(times)) / 1e9


def main(argv: list[str]) -> None:
    dtypes = (argv[0] if argv else "float32,float16").split(",")
    counts = [int(c) for c in (argv[1] if len(argv) > 1 else "3,5,7,10,13,17,20,30,100")
              .split(",")]
    rounds = int(argv[2]) if len(argv) > 2 else 2
    env = environment(None)
    print(f"cpu: {env['cpu']}; flags {' '.join(env['cpu_flags'])}; SIMD level "
          f"{cpu_simd.SIMD_LEVEL} (numba target: {env['numba_cpu_name'] or 'host'})")
    rng = np.random.default_rng(0)
    for name in dtypes:
        dt = np.dtype(name)
        for nchan in counts:
            x = (rng.standard_normal((64_000_000 // (nchan * dt.itemsize), nchan)) * 2
                 + 5).astype(dt)
            ref_mean = x.mean(0, dtype=np.float64)
            ref_var = x.astype(np.float64).var(0)
            st = nbbn.RunningStats(channel_axis=-1).update(x)
            err = max(np.max(np.abs(st.mean - ref_mean) / np.sqrt(ref_var)),
                      np.max(np.abs(st.var / ref_var - 1)))
            paths = _paths(dt, nchan)
            speeds: dict[str, list[float]] = {p: [] for p in paths}
            for _ in range(rounds):
                for label, simd in paths.items():
                    speeds[label].append(_time(x, simd))
            shown = "; ".join(f"{p} " + " / ".join(f"{v:.1f}" for v in vs)
                              for p, vs in speeds.items())
            print(f"{name} C={nchan}: chosen simd={_CHOICE(dt, nchan)}, GB/s {shown}; "
                  f"worst error {err:.1e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
