"""``nbbn.sklearn.StandardScaler``'s fitted attributes from a host state, in one pass.

After every ``partial_fit`` the estimator sets ``mean_``, ``var_`` and ``scale_`` from
its statistics and checks them: infinities counted (refused, as scikit-learn), counts
that differ between features (``n_samples_seen_`` is then an array), features with
``count <= ddof`` and variances beyond float64 (warned about). As numpy expressions
that was a dozen passes over C values, each taken through ``RunningStats``' lock:
21 ms of a (4, 1048576) ``partial_fit``'s 35, and 85 us of a (256, 64) one's 240
(benchmarks.md, "Twenty-first session"). :func:`fitted` makes one pass, on the
threads of the CPU backend, with the same bits: the same float64 operations in the
same order (``fastmath`` off: no contraction into FMAs).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._jit import cached
from ._stats import BatchStats

_EPS64 = float(np.finfo(np.float64).eps)
# Flags, per thread: channels whose weight sum differs from channel 0's, with a weight
# sum <= ddof, with an infinite variance, with infinities seen, with NaNs seen.
_DIFFERS, _FEW, _HUGE, _INFS, _NANS = range(5)


@cached(nogil=True, fastmath=False, error_model="numpy")
def _scaler_fitted(ints, floats, w, ddof, with_std, t, nt, mean, var, scale,
                   flags):  # pragma: no cover - compiled
    """Channels ``[C t / nt, C (t + 1) / nt)``: ``mean`` (NaN where nothing was
    counted), ``var = M2 / (w - ddof)`` (NaN where ``w <= ddof``), with ``with_std``
    ``scale``: sqrt(var), or 1 where the variance is within scikit-learn's bound of a
    constant feature's (``w eps var + (w mean eps)**2``), and the counts of ``flags[t]``.
    ``w`` is the weight sums: the counts (int64), or the weights of a weighted state."""
    nchan = ints.shape[1]
    c0 = nchan * t // nt
    c1 = nchan * (t + 1) // nt
    first = w[0]
    fddof = np.float64(ddof)
    differs = few = huge = infs = nans = 0
    for c in range(c0, c1):
        wc = w[c]
        fw = np.float64(wc)
        mu = floats[0, c] if ints[0, c] > 0 else np.nan
        denom = fw - fddof
        v = floats[2, c] / denom if denom > 0 else np.nan
        mean[c] = mu
        var[c] = v
        if with_std:
            b = fw * mu * _EPS64
            bound = fw * _EPS64 * v + b * b
            scale[c] = 1.0 if v <= bound and v < np.inf else math.sqrt(v)
        differs += wc != first
        few += wc <= ddof
        huge += v == np.inf
        infs += ints[2, c] > 0
        nans += ints[1, c] > 0
    flags[t, _DIFFERS] = differs
    flags[t, _FEW] = few
    flags[t, _HUGE] = huge
    flags[t, _INFS] = infs
    flags[t, _NANS] = nans


class Fitted(NamedTuple):
    """What :func:`fitted` returns: the three arrays (``scale`` None without
    ``with_std``), ``n_samples_seen`` (the weight sum of every feature, or an array of
    them where they differ), and the numbers of features in each case of the flags."""

    mean: np.ndarray
    var: np.ndarray
    scale: np.ndarray | None
    n_samples_seen: np.ndarray | np.number
    few: int
    huge: int
    infs: int
    nans: int


def fitted(st: BatchStats, ddof: int, with_std: bool) -> Fitted:
    """The fitted attributes of the host state ``st`` (at least one channel)."""
    from . import cpu

    w = st.count if st.weight is None else st.weight
    nchan = st.num_channels
    mean, var = np.empty(nchan), np.empty(nchan)
    scale = np.empty(nchan if with_std else 0)
    flags = np.zeros((cpu.threads(), 5), np.int64)
    # (a channel reads 5 numbers and writes 3: 8 "elements" for the threading threshold)
    cpu._run(_scaler_fitted, (st.ints, st.floats, w, ddof, with_std), (mean, var, scale, flags),
             8 * nchan, nchan)
    total = flags.sum(axis=0).tolist()
    return Fitted(mean, var, scale if with_std else None,
                  w.copy() if total[_DIFFERS] else w[0], total[_FEW], total[_HUGE],
                  total[_INFS], total[_NANS])
