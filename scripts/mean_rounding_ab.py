"""Timings of the merge-heavy paths that the correctly rounded mean touched (twenty-ninth
session, docs/benchmarks.md): ``a += b`` of two states of 262,144 channels, and updates
of wide tables of few rows (every update is a merge per channel), of uint8 NCHW and of
int32 channels-first blocks. Prints one JSON line of medians (seconds).

A/B: run it alternately from two checkouts (``PYTHONPATH=<checkout>``, each with its own
NUMBA_CACHE_DIR) and compare the per-run ratios; the host is shared and noisy.

    python scripts/mean_rounding_ab.py          # medians
    python scripts/mean_rounding_ab.py min      # minima of 40 calls (the fifth review's)
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import nbbn

STAT = sys.argv[1] if len(sys.argv) > 1 else "median"


def _median(f, reps: int = 30) -> float:
    """The median (or, with ``min`` on the command line, the minimum of 40) of ``reps``
    timed calls of ``f``."""
    ts = []
    for _ in range(40 if STAT == "min" else reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.min(ts) if STAT == "min" else np.median(ts))


def main() -> None:
    rng = np.random.default_rng(0)
    c = 1 << 18
    a = nbbn.RunningStats(-1).update(rng.normal(3, 1, (3, c)))
    b = nbbn.RunningStats(-1).update(rng.normal(3, 1, (5, c)))
    out = {}

    def merge():
        s = a + nbbn.RunningStats(-1)
        s += b

    out["merge 262144 ch (incl. a copy)"] = _median(merge)
    cases = {
        "update (4,262144) f64": (rng.normal(3, 1, (4, c)), -1),
        "update (16,65536) f32": (rng.normal(3, 1, (16, 65536)).astype(np.float32), -1),
        "update u8 (64,3,224,224)": (rng.integers(0, 256, (64, 3, 224, 224), np.uint8), 1),
        "update i32 (64,16,4096)": (rng.integers(-1000, 1000, (64, 16, 4096)).astype(np.int32), 1),
    }
    for name, (x, axis) in cases.items():
        rs = nbbn.RunningStats(axis).update(x)
        out[name] = _median(lambda rs=rs, x=x: rs.update(x), 15)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
