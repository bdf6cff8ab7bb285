"""The affine kernels of a git revision against the working tree's, each built with
and without the L1 prefetch, alternated call by call in one process.

Usage: ``python scripts/affine_prefetch_ab.py REV [ROUNDS] [CASE ...]``, a CASE being
``new|out:SHAPE:DTYPE:AXIS`` (``Normalizer(x)`` or ``Normalizer(x, out=)``), e.g.
``new:32x256x7x7:float32:1``; without cases, the list below. Four sides: REV's
``cpu_normalize`` with the prefetch 1536 bytes ahead (``rev``) and without
(``rev0``), the working tree's without (``tree0``) and with (``tree1536``), whatever
the host would choose (``cpu_simd.AFFINE_L1_AHEAD``). A revision from before
``prefetch_ahead`` took its distance as an argument has its calls rewritten to pass it
(``scripts/affine_ab.py`` loads revisions this way too).
Each timing is enough calls for about 4 M elements; printed: the median time of each
side and the medians of the per-round ratios to ``rev`` (below 1: faster). Used for
docs/benchmarks.md ("Twenty-second session").
"""

from __future__ import annotations

import functools
import statistics
import sys
import time

import numpy as np

import nbbn
from nbbn.backends import cpu_normalize as kn
from nbbn.backends._jit import tagged
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.revision import backend_at

KERNELS = ("affine_channels_first", "affine_channels_last")
CASES = ["new:32x256x7x7:float32:1", "new:1x64x56x56:float32:1", "new:8x64x56x56:float32:1",
         "out:64x64x56x56:float32:1", "out:64x256x56x56:float32:1",
         "out:256x3x224x224:uint8:1", "out:64x56x56x256:float32:-1",
         "out:256x224x224x3:uint8:-1", "out:1000000x64:float32:-1", "new:256x512:float32:-1",
         "out:32x56x56x256:float64:-1", "out:64x56x56x256:float16:-1"]
OLD_CALLS = ["prefetch_ahead(x[o, c], lo + f, w)", "prefetch_ahead(x[o, c], lo + i0, i1 - i0)",
             "prefetch_ahead(xf, e, m)", "prefetch_ahead(xf, e, span)", "prefetch_ahead(xf, e, w)"]


def _pass_ahead(src: str) -> str:
    """An older ``cpu_normalize`` source adapted to ``prefetch_ahead(arr, start, count,
    ahead)``: a revision from before ``AHEAD`` prefetches at this host's
    ``AFFINE_L1_AHEAD``, as the working tree does."""
    if "\nAHEAD = " in src:
        return src
    for call in OLD_CALLS:
        src = src.replace(call, call[:-1] + ", AHEAD)")
    return src.replace("from .cpu_simd import SIMD_LEVEL, prefetch_ahead",
                       "from .cpu_simd import AFFINE_L1_AHEAD, SIMD_LEVEL, prefetch_ahead\n"
                       "AHEAD = AFFINE_L1_AHEAD")


def module_at(rev: str):
    """``cpu_normalize`` at ``rev``, loaded beside the current one (``backend_at``)."""
    return backend_at(rev, "cpu_normalize", _pass_ahead)


def builds(module, ahead: int, tag: str) -> dict:
    return {name: tagged(getattr(module, "_" + name), tag, {"AHEAD": ahead}, **kn._OPTS)
            for name in KERNELS}


def main() -> None:
    rev = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 11
    cases = sys.argv[3:] or CASES
    old = module_at(rev)
    sides = {"rev": builds(old, 1536, "ab_rev1536"), "rev0": builds(old, 0, "ab_rev0"),
             "tree0": builds(kn, 0, "ab_tree0"), "tree1536": builds(kn, 1536, "ab_tree1536")}

    def use(side: str) -> None:
        for name, kernel in sides[side].items():
            setattr(kn, name, kernel)

    print(cpu_line(), f"| this host's choice: {kn.AHEAD} bytes ahead")
    rng = np.random.default_rng(0)
    for case in cases:
        kind, shape_s, dtype, axis_s = case.split(":")
        shape, axis = tuple(int(v) for v in shape_s.split("x")), int(axis_s)
        x = (rng.standard_normal(shape, dtype=np.float32) * 20 + 100).astype(dtype)
        rs = nbbn.RunningStats(channel_axis=axis).update(x)
        norm = nbbn.Normalizer(rs.mean, rs.var, channel_axis=axis)
        out = norm(x)
        op = functools.partial(norm, x, out=out) if kind == "out" else functools.partial(norm, x)
        results = {}
        for side in sides:
            use(side)
            results[side] = np.array(op())
        for side in sides:
            np.testing.assert_array_equal(results[side], results["rev"])
        reps = max(1, (1 << 22) // x.size)
        names = list(sides)
        times: dict[str, list[float]] = {side: [] for side in names}
        for r in range(rounds):
            for side in (names if r % 2 == 0 else names[::-1]):
                use(side)
                t0 = time.perf_counter()
                for _ in range(reps):
                    op()
                times[side].append((time.perf_counter() - t0) / reps)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        ratios = {k: statistics.median(np.array(times[k]) / np.array(times["rev"]))
                  for k in names[1:]}
        print(f"{case}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in med.items()) + " | " +
              ", ".join(f"{k}/rev {v:.3f}" for k, v in ratios.items()), flush=True)
    use("tree0" if kn.AHEAD == 0 else "tree1536")


if __name__ == "__main__":
    main()
