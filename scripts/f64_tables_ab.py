"""Timings of the float64 channels-first paths whose first pass now sums the values'
fractional parts (thirtieth session, docs/benchmarks.md): an NCHW batch, a one-column
table and a Fortran-ordered table (both read as channels-first rows), and an NCHW batch
of integers held as float64; and the grouped kernel of short rows (8 and 16 values),
where that sum cost 1.4x at rows of 8 and was taken out. Prints one JSON line of minima
of 40 calls (ms).

A/B: run it alternately from two checkouts (``PYTHONPATH=<checkout>``, each with its own
NUMBA_CACHE_DIR) and compare the per-round ratios; the host is shared and noisy.

    python scripts/f64_tables_ab.py
"""

from __future__ import annotations

import json
import time

import numpy as np

import nbbn


def main() -> None:
    rng = np.random.default_rng(0)
    cases = {
        "nchw_f64_8x16x256x256": (rng.normal(3, 1, (8, 16, 256, 256)), 1),
        "onecol_f64_8M": (rng.normal(3, 1, (1 << 23, 1)), -1),
        "fortran_f64_1Mx16": (np.asfortranarray(rng.normal(3, 1, (1 << 20, 16))), -1),
        "nchw_f64_int_valued": (rng.integers(0, 255, (8, 16, 256, 256)).astype(np.float64), 1),
        "grouped_f64_65536x16x8": (rng.normal(3, 1, (65536, 16, 8)), 1),
        "grouped_f64_int_8192x64x16": (rng.integers(0, 99, (8192, 64, 16)).astype(np.float64), 1),
    }
    out = {}
    for name, (x, axis) in cases.items():
        nbbn.channel_stats(x, axis)  # (compiled, and the pages touched)
        ts = []
        for _ in range(40):
            t = time.perf_counter()
            nbbn.channel_stats(x, axis)
            ts.append(time.perf_counter() - t)
        out[name] = round(float(np.min(ts)) * 1e3, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
