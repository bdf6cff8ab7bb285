"""nbbn's ``StandardScaler`` and scikit-learn's against exact rational statistics on
random scenarios: which one's ``var_`` is further from the exact variance.

    python scripts/sklearn_exactness.py [SCENARIOS] [SEED]

Each scenario: 1-299 rows of 1-7 features (means 1e-2 to 1e5 either sign, standard
deviations 1e-3 to 1e3), float32 or float64, sometimes a constant feature, mostly-zero
sparse CSR input (``with_mean=False``), NaNs, real or integer weights, fitted by both
estimators in the same 1-4 ``partial_fit`` batches. Per feature, the relative error of
each ``var_`` against the exact weighted variance of the values (fractions) is compared;
the counts of features where either is more than 1e-12 off and further off than the
other are printed, and the features where scikit-learn's ``var_`` is NaN and nbbn's is not.
"""

from __future__ import annotations

import sys
import warnings
from fractions import Fraction

import numpy as np
from scipy import sparse
from sklearn.preprocessing import StandardScaler as SkStandardScaler

from nbbn.sklearn import StandardScaler


def _exact_var(col: np.ndarray, w: np.ndarray) -> Fraction | None:
    keep = ~np.isnan(col) & (w > 0)
    fw = [Fraction(float(a)) for a in w[keep]]
    fx = [Fraction(float(a)) for a in col[keep]]
    if not fw:
        return None
    total = sum(fw, Fraction(0))
    mean = sum((a * b for a, b in zip(fw, fx, strict=True)), Fraction(0)) / total
    return sum((a * (b - mean) ** 2 for a, b in zip(fw, fx, strict=True)), Fraction(0)) / total


def _scenario(rng):
    n, f = int(rng.integers(1, 300)), int(rng.integers(1, 8))
    dtype = rng.choice([np.float32, np.float64])
    loc = 10.0 ** rng.uniform(-2, 5, f) * rng.choice([-1, 1], f)
    x = (loc + 10.0 ** rng.uniform(-3, 3, f) * rng.standard_normal((n, f))).astype(dtype)
    if rng.random() < 0.3:
        x[:, 0] = x[0, 0]
    is_sparse = rng.random() < 0.3
    if is_sparse:
        x[rng.random((n, f)) < 0.7] = 0
    if rng.random() < 0.3:
        x[rng.random((n, f)) < 0.1] = np.nan
    w = None
    if rng.random() < 0.3:
        w = rng.uniform(0, 3, n) if rng.random() < 0.5 else rng.integers(0, 4, n).astype(float)
        w[0] = max(w[0], 1.0)
    cuts = sorted(rng.choice(np.arange(1, n), min(n - 1, int(rng.integers(0, 4))),
                             replace=False)) if n > 1 else []
    return x, is_sparse, w, [0, *cuts, n]


def main(scenarios: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    nbbn_worse = sklearn_worse = sklearn_nan = 0
    for _ in range(scenarios):
        x, is_sparse, w, cuts = _scenario(rng)
        ours, theirs = StandardScaler(with_mean=not is_sparse), SkStandardScaler(
            with_mean=not is_sparse)
        data = sparse.csr_array(x) if is_sparse else x
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            part_w = None if w is None else w[lo:hi]
            if part_w is not None and not part_w.any():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours.partial_fit(data[lo:hi], sample_weight=part_w)
                theirs.partial_fit(data[lo:hi], sample_weight=part_w)
        for c in range(x.shape[1]):
            exact = _exact_var(x[:, c].astype(np.float64), np.ones(len(x)) if w is None else w)
            if exact is None or not np.isfinite(ours.var_[c]):
                continue
            if not np.isfinite(theirs.var_[c]):
                sklearn_nan += 1
                continue
            scale = exact if exact else Fraction(1)
            e_ours = float(abs(Fraction(float(ours.var_[c])) - exact) / scale)
            e_theirs = float(abs(Fraction(float(theirs.var_[c])) - exact) / scale)
            nbbn_worse += e_ours > 1e-12 and e_ours > e_theirs
            sklearn_worse += e_theirs > 1e-12 and e_theirs > e_ours
    print(f"{scenarios} scenarios (seed {seed}): features where nbbn's var_ is more than "
          f"1e-12 off and further off than scikit-learn's: {nbbn_worse}; the reverse: "
          f"{sklearn_worse}; scikit-learn's var_ NaN where nbbn's is not: {sklearn_nan}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300,
         int(sys.argv[2]) if len(sys.argv) > 2 else 1)
