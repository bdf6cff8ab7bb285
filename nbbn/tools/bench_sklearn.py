"""``nbbn bench --sklearn``: ``nbbn.sklearn.StandardScaler`` against scikit-learn's.

On a (1,000,000, 64) float32 array (20,000 rows with ``quick``), in one process, each
measurement times nbbn and its peer in turn (one call of each per repeat, the order
reversed every other repeat, after a warm-up call of each, so a load change on the
shared machine hits both), and reports
both medians and their ratio. Targets (issue 14): ``fit`` >= 10x and ``transform`` >= 3x
scikit-learn's; a weighted ``fit`` not slower; a ``fit`` of data with scattered NaNs
10x as well. Then the same for a sparse CSR matrix
(``with_mean=False``; 1,000 columns, 1% stored), where nbbn aims not to be slower.

Each measurement is one function of :data:`MEASUREMENTS`, taking the data and the
repeat count and returning a row (:class:`Row`); another peer (e.g. onnxruntime) is
one more function appended there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np

from .bench_timing import interleaved

FULL_SHAPE = (1_000_000, 64)
QUICK_SHAPE = (20_000, 64)


@dataclass
class Row:
    """One measurement: nbbn's and the peer's median seconds and the target speed-up."""

    name: str
    peer: str
    nbbn_s: float
    peer_s: float
    target: float

    @property
    def speedup(self) -> float:
        """``peer_s / nbbn_s``."""
        return self.peer_s / self.nbbn_s


def alternate(ours: Callable[[], Any], peer: Callable[[], Any],
              repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours()`` and ``peer()``, timed in turn
    (:func:`~nbbn.tools.bench_timing.interleaved`)."""
    med = interleaved({"ours": ours, "peer": peer}, repeats)
    return med["ours"], med["peer"]


def measure_fit(X: np.ndarray, repeats: int) -> Row:
    """``StandardScaler().fit(X)``: nbbn's against scikit-learn's."""
    from sklearn.preprocessing import StandardScaler as SkScaler

    from ..sklearn import StandardScaler

    ours, peer = alternate(lambda: StandardScaler().fit(X), lambda: SkScaler().fit(X), repeats)
    return Row("fit", "scikit-learn", ours, peer, 10.0)


def measure_transform(X: np.ndarray, repeats: int) -> Row:
    """``transform(X)`` (a new array) of fitted scalers: nbbn's against scikit-learn's."""
    from sklearn.preprocessing import StandardScaler as SkScaler

    from ..sklearn import StandardScaler

    ours_sc, peer_sc = StandardScaler().fit(X), SkScaler().fit(X)
    ours, peer = alternate(lambda: ours_sc.transform(X), lambda: peer_sc.transform(X), repeats)
    return Row("transform", "scikit-learn", ours, peer, 3.0)


def measure_fit_weighted(X: np.ndarray, repeats: int) -> Row:
    """``fit(X, sample_weight=w)`` with random weights: nbbn's against scikit-learn's
    (nbbn aims not to be slower: its weighted kernels are its slower path)."""
    from sklearn.preprocessing import StandardScaler as SkScaler

    from ..sklearn import StandardScaler

    w = np.random.default_rng(1).random(X.shape[0])
    ours, peer = alternate(lambda: StandardScaler().fit(X, sample_weight=w),
                           lambda: SkScaler().fit(X, sample_weight=w), repeats)
    return Row("fit, sample_weight", "scikit-learn", ours, peer, 1.0)


NAN_SHARE = 0.001


def measure_fit_nan(X: np.ndarray, repeats: int) -> Row:
    """``fit`` of a copy of ``X`` with ``NAN_SHARE`` of its values NaN (scattered):
    both scalers skip them per feature; nbbn aims at its dense ``fit`` target."""
    from sklearn.preprocessing import StandardScaler as SkScaler

    from ..sklearn import StandardScaler

    Xn = X.copy()
    Xn[np.random.default_rng(2).random(X.shape) < NAN_SHARE] = np.nan
    ours, peer = alternate(lambda: StandardScaler().fit(Xn), lambda: SkScaler().fit(Xn),
                           repeats)
    return Row("fit, 0.1% NaN", "scikit-learn", ours, peer, 10.0)


SPARSE_COLUMNS, SPARSE_DENSITY = 1_000, 0.01


@functools.lru_cache(maxsize=1)  # made once for both sparse measurements
def sparse_data(nrows: int):
    """A float32 CSR matrix of ``nrows`` x ``SPARSE_COLUMNS`` with ``SPARSE_DENSITY`` of
    its values stored (10,000,000 for the full bench), of varied means and spreads."""
    from scipy import sparse

    rng = np.random.default_rng(1)
    X = sparse.random_array((nrows, SPARSE_COLUMNS), density=SPARSE_DENSITY, format="csr",
                            dtype=np.float32, rng=rng)
    X.data = (X.data * np.logspace(-2, 2, SPARSE_COLUMNS)[X.indices]
              + np.linspace(0, 1e3, SPARSE_COLUMNS)[X.indices]).astype(np.float32)
    return X


def measure_fit_sparse(X: np.ndarray, repeats: int) -> Row:
    """``StandardScaler(with_mean=False).fit`` of a CSR matrix with as many rows as
    ``X``: nbbn's against scikit-learn's (no target in the issue: 1x, not slower)."""
    from sklearn.preprocessing import StandardScaler as SkScaler

    from ..sklearn import StandardScaler

    S = sparse_data(X.shape[0])
    ours, peer = alternate(lambda: StandardScaler(with_mean=False).fit(S),
                           lambda: SkScaler(with_mean=False).fit(S), repeats)
    return Row("fit CSR", "scikit-learn", ours, peer, 1.0)


def measure_transform_sparse(X: np.ndarray, repeats: int) -> Row:
    """``transform`` (a new CSR matrix) of the same matrix as :func:`measure_fit_sparse`."""
    from sklearn.preprocessing import StandardScaler as SkScaler

    from ..sklearn import StandardScaler

    S = sparse_data(X.shape[0])
    ours_sc = StandardScaler(with_mean=False).fit(S)
    peer_sc = SkScaler(with_mean=False).fit(S)
    ours, peer = alternate(lambda: ours_sc.transform(S), lambda: peer_sc.transform(S),
                           repeats)
    return Row("transform CSR", "scikit-learn", ours, peer, 1.0)


MEASUREMENTS: list[Callable[[np.ndarray, int], Row]] = [
    measure_fit, measure_transform, measure_fit_weighted, measure_fit_nan, measure_fit_sparse,
    measure_transform_sparse]
"""The measurements ``nbbn bench --sklearn`` runs, in order."""


def make_data(shape: tuple[int, int]) -> np.ndarray:
    """Float32 features of varied means and spreads (a few NaN-free columns of each)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal(shape, dtype=np.float32)
    X *= np.logspace(-2, 2, shape[1], dtype=np.float32)
    X += np.linspace(-1e3, 1e3, shape[1], dtype=np.float32)
    return X


def run_sklearn_bench(file: TextIO, quick: bool = False, repeats: int | None = None
                      ) -> dict[str, Any]:
    """Run :data:`MEASUREMENTS`, print a table to ``file``, return the results."""
    from .bench_env import cpu_model

    shape = QUICK_SHAPE if quick else FULL_SHAPE
    repeats = repeats or (2 if quick else 7)
    X = make_data(shape)
    print(f"nbbn bench --sklearn: float32 {shape}, median of {repeats} alternating runs, "
          f"CPU {cpu_model()}", file=file)
    print(f"{'operation':<19}{'nbbn ms':>10}{'peer ms':>10}  {'peer':<14}{'speed-up':>9}"
          f"{'target':>8}", file=file)
    rows = []
    for measure in MEASUREMENTS:
        row = measure(X, repeats)
        rows.append(row)
        flag = "" if row.speedup >= row.target else "  (below target)"
        print(f"{row.name:<19}{row.nbbn_s * 1e3:>10.1f}{row.peer_s * 1e3:>10.1f}  "
              f"{row.peer:<14}{row.speedup:>8.1f}x{row.target:>7.1f}x{flag}", file=file)
    result = {"shape": list(shape), "dtype": "float32", "repeats": repeats, "cpu": cpu_model(),
              "rows": [{**asdict(r), "speedup": r.speedup} for r in rows]}
    return result
