"""The worst relative error of nbbn's variance per dtype and mean/std, against exact sums.

For each dtype and ratio R = |mean| / std, random normal data ``R + N(0, 1)`` (rounded
to the dtype; integers: ``round(R * s) + N(0, s)`` with the spread ``s`` the dtype
allows) is reduced by ``nbbn.channel_stats`` in one batch, channels-first and
channels-last, and streamed in 7 uneven batches; the variance is compared with the
exact variance of the same numbers (fractions). Prints the table in docs/numerics.md:

    python scripts/accuracy_table.py [--backend cpu|cuda] [--n 40000]
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np

import nbbn

RATIOS = [1e0, 1e2, 1e4, 1e6, 1e8, 1e10, 1e12, 1e14]
DTYPES = ["float16", "float32", "float64", "uint8", "int16", "int32", "int64"]


def exact_var(v: np.ndarray) -> Fraction:
    f = [Fraction(int(x)) if v.dtype.kind in "iu" else Fraction(float(x)) for x in v]
    mean = sum(f, Fraction(0)) / len(f)
    return sum(((x - mean) ** 2 for x in f), Fraction(0)) / len(f)


def sample(rng, dtype: str, ratio: float, n: int) -> np.ndarray | None:
    dt = np.dtype(dtype)
    z = rng.standard_normal(n)
    if dt.kind == "f":
        if ratio > float(np.finfo(dt).max) / 2:
            return None
        v = (ratio + z).astype(dt)
    else:  # mean R * s and std s, as wide a spread s as the dtype leaves (at most 1e6)
        spread = min(1e6, float(np.iinfo(dt).max) / (ratio + 6))
        if spread < 2:
            return None
        v = np.clip(np.round(ratio * spread + z * spread), np.iinfo(dt).min,
                    np.iinfo(dt).max).astype(dt)
    return v if np.unique(v).size > 1 else None


def worst_error(v: np.ndarray, backend: str, rng) -> float:
    ref = exact_var(v)
    n = v.size
    two = np.stack([v, v[::-1].copy()])
    cases = [nbbn.channel_stats(np.ascontiguousarray(two.T), -1, backend=backend),
             nbbn.channel_stats(np.ascontiguousarray(two.reshape(2, 8, -1).transpose(1, 0, 2)),
                                1, backend=backend)]
    streamed = nbbn.RunningStats(-1, backend=backend)
    for part in np.split(np.ascontiguousarray(two.T), np.sort(rng.choice(n, 6, replace=False))):
        streamed.update(part)
    cases.append(streamed)
    return max(float(abs(Fraction(rs.var[0]) - ref) / ref) for rs in cases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--n", type=int, default=40_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| dtype | " + " | ".join(f"{r:.0e}" for r in RATIOS) + " |")
    print("|---|" + "---:|" * len(RATIOS))
    for dtype in DTYPES:
        cells = []
        for ratio in RATIOS:
            v = sample(rng, dtype, ratio, args.n)
            cells.append("-" if v is None else f"{worst_error(v, args.backend, rng):.0e}")
        print(f"| {dtype} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
