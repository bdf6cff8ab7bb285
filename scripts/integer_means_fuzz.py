"""Channels whose mean of integers is not the exact mean rounded once: weighted updates
(``RunningStats.update(x, sample_weight=w)``, 8- to 64-bit integers, integer weights and
quarters of them, channels-first runs, tables, channels-last rows, one to three
batches) and scipy sparse matrices of integers by each CSR route, weighted or not,
against the exact mean (``fractions.Fraction``); and the weighted variance's worst
relative error against a long-double reference (docs/benchmarks.md, "Thirty-second
session"). Usage: ``python scripts/integer_means_fuzz.py [--seed N]``."""

from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np
from scipy import sparse

import nbbn
from nbbn.backends import cpu_sparse

DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16]


def _exact(num, den) -> np.ndarray:
    return np.array([float(Fraction(int(a), int(den))) for a in num])


def weighted(rng) -> tuple[int, int, float]:
    """(channels off, channels, worst relative error of the variance)."""
    off = total = 0
    worst = 0.0
    for trial in range(80):
        c = int(rng.integers(1, 7))
        layout = trial % 4
        dt = DTYPES[int(rng.integers(0, len(DTYPES)))]
        rs = nbbn.RunningStats(channel_axis=1 if layout == 1 else -1)
        xs, ws = [], []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(1, 700))
            shape = {0: (n, c), 1: (n, c, 7), 2: (n, 5, c), 3: (n, c)}[layout]
            info = np.iinfo(dt)
            lo, hi = max(info.min, -(2 ** 40)), min(info.max, 2 ** 40)
            if rng.random() < 0.5:  # values next to one another
                x = np.clip(int(rng.integers(lo, hi)) + rng.integers(-9, 10, size=shape),
                            lo, hi).astype(dt)
            else:
                x = rng.integers(lo, hi, size=shape, dtype=np.int64).astype(dt)
            w = rng.integers(0, 6, size=n).astype(float)
            if layout == 3:
                w *= 0.25  # quarters: integers times a power of two
            w[0] = 1.0
            rs.update(x, sample_weight=w)
            xs.append(x)
            ws.append(w)
        x, w = np.concatenate(xs), np.concatenate(ws)
        axis = 1 if layout == 1 else x.ndim - 1
        xm = np.moveaxis(x, axis, -1).reshape(x.shape[0], -1, c).astype(np.int64)
        w4 = (w * 4).astype(np.int64)
        num = (xm * w4[:, None, None]).sum(axis=(0, 1))
        if np.abs(num).max() >= 2 ** 62:
            continue
        off += int((rs.mean != _exact(num, int(w4.sum()) * xm.shape[1])).sum())
        total += c
        rep = np.repeat(xm.astype(np.longdouble), w4, axis=0).reshape(-1, c)
        want = np.array([float(np.var(rep[:, j])) for j in range(c)])
        with np.errstate(all="ignore"):
            rel = np.where(want > 0, np.abs(rs.variance() - want) / want,
                           np.abs(rs.variance()))
        worst = max(worst, float(rel.max()))
    return off, total, worst


def sparse_routes(rng) -> dict:
    """{(route, weighted): (columns off, columns)} for CSR matrices of integers."""
    res: dict = {}
    for trial in range(48):
        n, c = int(rng.integers(2, 400)), int(rng.integers(1, 6))
        dt = [np.int32, np.int64, np.int16, np.uint8][trial % 4]
        lo, hi = {np.int32: (-(2 ** 30), 2 ** 30), np.int64: (-(2 ** 30), 2 ** 30),
                  np.int16: (-30000, 30000), np.uint8: (0, 256)}[dt]
        if trial % 3 == 0:
            d = int(rng.integers(lo, hi - 3)) + rng.integers(0, 3, size=(n, c))
        else:
            d = rng.integers(lo, hi, size=(n, c))
        d = d * (rng.random((n, c)) < 0.5)
        is_weighted = trial % 2 == 1
        w = rng.integers(0, 5, size=n).astype(float)
        w[0] = 1.0
        ww = w.astype(np.int64) if is_weighted else np.ones(n, np.int64)
        want = _exact((d * ww[:, None]).sum(axis=0), ww.sum())
        for route in ("csc", "parts", "blocks"):
            st = cpu_sparse.reduce(sparse.csr_array(d.astype(dt)), 0,
                                   w if is_weighted else None, route)
            a, b = res.get((route, is_weighted), (0, 0))
            res[route, is_weighted] = (a + int((st.floats[0] != want).sum()), b + c)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    seed = p.parse_args().seed
    off, total, worst = weighted(np.random.default_rng(seed))
    print(f"weighted: {off} of {total} channels off; variance worst relative error "
          f"{worst:.2g}")
    for (route, w), (a, b) in sparse_routes(np.random.default_rng(seed)).items():
        print(f"sparse {route}, {'weighted' if w else 'unweighted'}: {a} of {b} columns off")


if __name__ == "__main__":
    main()
