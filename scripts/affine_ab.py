"""Paired A/B of the affine kernels in one process: ``cpu_normalize`` at a git revision
against the working tree's.

Usage: ``python scripts/affine_ab.py REV CASE SHAPE DTYPE CHANNEL_AXIS [ROUNDS]``, e.g.
``python scripts/affine_ab.py HEAD~1 norm-out 64x56x56x256 float32 -1``. CASE is
``norm-out`` (``Normalizer(x, out=)``), ``norm-new`` (``Normalizer(x)``, a new output)
or ``transform`` (``nbbn.sklearn.StandardScaler.transform``). The revision's
``nbbn/backends/cpu_normalize.py`` is loaded as a module beside the current one
(``affine_prefetch_ab.module_at``: it must import the same helpers), and the two sets of
kernels are swapped in call by call (ROUNDS rounds, default 21, the order flipped every
round). Both results are checked equal; printed: each median time and the median of the
per-round ratios new / old (below 1: the working tree is faster). A small array is timed
over enough calls to make about 4 M elements a timing. One process, so no load change
between the two sides goes unpaired.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

import nbbn
from nbbn.backends import cpu_normalize, cpu_simd

sys.path.insert(0, str(Path(__file__).parent))
from affine_prefetch_ab import module_at  # noqa: E402

KERNELS = ("affine_channels_first", "affine_channels_last", "affine_channels_first_inf",
           "affine_channels_last_inf")


def main() -> None:
    rev, case, shape_s, dtype_s, axis_s = sys.argv[1:6]
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 21
    shape = tuple(int(v) for v in shape_s.split("x"))
    dtype, axis = np.dtype(dtype_s), int(axis_s)
    old_module = module_at(rev)
    sides = {"old": {k: getattr(old_module, k) for k in KERNELS},
             "new": {k: getattr(cpu_normalize, k) for k in KERNELS}}

    def use(side: str) -> None:
        for name, kernel in sides[side].items():
            setattr(cpu_normalize, name, kernel)

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape, dtype=np.float32) * 20 + 100).astype(dtype)
    if case == "transform":
        from nbbn.sklearn import StandardScaler

        scaler = StandardScaler(channel_axis=axis).fit(x)
        op = lambda: scaler.transform(x)  # noqa: E731
    elif case in ("norm-out", "norm-new"):
        rs = nbbn.RunningStats(channel_axis=axis).update(x)
        norm = nbbn.Normalizer(rs.mean, rs.var, channel_axis=axis)
        out = norm(x)
        op = (lambda: norm(x, out=out)) if case == "norm-out" else (lambda: norm(x))
    else:
        raise SystemExit(f"CASE must be norm-out, norm-new or transform, got {case!r}")
    use("old")
    y_old = np.array(op())
    use("new")
    y_new = np.array(op())
    np.testing.assert_array_equal(y_new, y_old)
    reps = max(1, (1 << 22) // x.size)  # calls per timing: about 4 M elements
    times: dict[str, list[float]] = {"old": [], "new": []}
    ratios = []
    for r in range(rounds):
        pair = {}
        for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
            use(side)
            t0 = time.perf_counter()
            for _ in range(reps):
                op()
            pair[side] = (time.perf_counter() - t0) / reps
            times[side].append(pair[side])
        ratios.append(pair["new"] / pair["old"])
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{case} {shape_s} {dtype} axis {axis} [{cpu_simd.SIMD_LEVEL}]: {rev} "
          f"{med['old']:.3f} ms, working tree {med['new']:.3f} ms, median ratio new / old "
          f"{statistics.median(ratios):.3f} ({rounds} rounds)")


if __name__ == "__main__":
    main()
