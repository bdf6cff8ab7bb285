"""``nbbn.sklearn.StandardScaler`` calls of small and wide batches against scikit-learn's
``StandardScaler``, in one process: ``transform``, ``partial_fit`` (of a fitted
scaler) and ``fit``, interleaved (``bench_timing.interleaved``), medians in us, and scikit-learn's
time over nbbn's. The "sklearn calls" table of docs/benchmarks.md ("Twenty-first
session"); an old tree's numbers come from the same script run with ``PYTHONPATH`` set
to that tree, in alternation with the new one.

    python scripts/sklearn_calls.py          # small batches (1 to 100,000 rows of 64)
    python scripts/sklearn_calls.py wide     # wide batches of few rows (partial_fit)
    python scripts/sklearn_calls.py frame    # pandas DataFrames of 16 float64 columns
    python scripts/sklearn_calls.py ints     # the small batches in int16
"""

import sys
from functools import partial

import numpy as np
from sklearn.preprocessing import StandardScaler as SkScaler

import nbbn
from nbbn.sklearn import StandardScaler
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved

SMALL = [(1, 64), (256, 64), (4096, 64), (100_000, 64), (64, 4096)]
FRAMES = [(1, 16), (256, 16), (10_000, 16)]
WIDE = [(16, 262_144), (4, 1_048_576)]


def main() -> None:
    wide = "wide" in sys.argv[1:]
    frame = "frame" in sys.argv[1:]
    ints = "ints" in sys.argv[1:]
    print(cpu_line())
    print(f"nbbn from {nbbn.__file__}")
    rng = np.random.default_rng(0)
    print(f"{'batch':>20} {'call':>12} {'nbbn us':>10} {'sklearn us':>11} {'ratio':>6}")
    for shape in WIDE if wide else FRAMES if frame else SMALL:
        X = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
        if ints:
            X = np.round(X * 100).astype(np.int16)
        if frame:
            import pandas as pd

            X = pd.DataFrame(X.astype(np.float64), columns=[f"x{i}" for i in range(shape[1])])
        ours, theirs = StandardScaler().fit(X), SkScaler().fit(X)
        calls = {"partial_fit": (ours.partial_fit, theirs.partial_fit)}
        if not wide:
            calls["transform"] = (ours.transform, theirs.transform)
            calls["fit"] = (ours.fit, theirs.fit)
        repeats = 7 if wide or X.size > 1_000_000 else 41
        for name, (a, b) in calls.items():
            t = interleaved({"nbbn": partial(a, X), "sklearn": partial(b, X)}, repeats)
            print(f"{str(shape):>20} {name:>12} {t['nbbn'] * 1e6:10.1f} "
                  f"{t['sklearn'] * 1e6:11.1f} {t['sklearn'] / t['nbbn']:6.2f}")


if __name__ == "__main__":
    main()
