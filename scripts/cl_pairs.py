"""% pair of ``RunningStats.update`` on the channels-last float shapes of ``nbbn bench``.

Each figure is the bench's own measure (``nbbn.tools.bench_timing.paired_pct``): the
update timed right after the bench's read-bandwidth kernel over the same bytes, the
ratio per pair, median of 7 pairs; one round per shape, rounds alternating the shapes.
Used for docs/benchmarks.md ("Channels-last float statistics", issue 11 slice D)::

    python scripts/cl_pairs.py f32,f16,f64,c1024 3
    NUMBA_CPU_NAME=znver3 python scripts/cl_pairs.py f32,f16,f64,c1024 3  # AVX2 code
"""

from __future__ import annotations

import statistics
import sys

import numpy as np

import nbbn
from nbbn.tools.bench_env import environment
from nbbn.tools.bench_ops import make_data
from nbbn.tools.bench_timing import bw_kernels, paired_pct

SHAPES = {  # the weak channels-last rows of nbbn bench's FULL_SHAPES
    "f32": ((64, 56, 56, 256), "float32", "NHWC"),
    "f16": ((64, 56, 56, 256), "float16", "NHWC"),
    "f64": ((32, 56, 56, 256), "float64", "NHWC"),
    "c1024": ((50_000, 1024), "float32", "NC"),
    "c3": ((256, 224, 224, 3), "float32", "NHWC"),
}


def main(names: list[str], rounds: int) -> None:
    env = environment(None)
    print(f"cpu: {env['cpu']}; cpu flags: {' '.join(env['cpu_flags'])}; nbbn SIMD level "
          f"{env['simd_level']} (numba target: {env['numba_cpu_name']})", flush=True)
    read_sum, _ = bw_kernels()
    data = {n: make_data(SHAPES[n][0], SHAPES[n][1], SHAPES[n][2], 1) for n in names}
    same = {n: np.random.default_rng(7).random(data[n].nbytes // 4, dtype=np.float32)
            for n in names}
    for n in names:  # compile outside the timed calls
        nbbn.RunningStats(channel_axis=-1).update(data[n])
    res: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            x, a = data[n], same[n]
            res[n].append(paired_pct(lambda rs, x=x: rs.update(x), x.nbytes,
                                     (lambda a=a: read_sum(a), a.nbytes), 7,
                                     lambda: nbbn.RunningStats(channel_axis=-1)))
    for n in names:
        shape, dtype, layout = SHAPES[n]
        print(f"{'x'.join(map(str, shape))} {dtype} {layout}: "
              + " ".join(f"{p:.0f}%" for p in res[n])
              + f"; median {statistics.median(res[n]):.0f}%")


if __name__ == "__main__":
    main(sys.argv[1].split(",") if len(sys.argv) > 1 else list(SHAPES),
         int(sys.argv[2]) if len(sys.argv) > 2 else 3)
