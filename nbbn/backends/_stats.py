"""Per-channel statistics as plain arrays, and their exact merge.

``BatchStats`` is what a backend returns for one batch and also the layout of
``RunningStats``' state: count (int64), mean, M2 (sum of squared deviations), min and
max (float64), plus the number of NaNs and infinities seen (int64). ``merge_into`` is
Chan's pairwise merge applied channel by channel, in one compiled call.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numba
import numpy as np

from .._numerics import chan_merge, merge_max, merge_min


@dataclass
class BatchStats:
    count: np.ndarray  # int64 (C,)
    mean: np.ndarray  # float64 (C,)
    m2: np.ndarray  # float64 (C,)
    min: np.ndarray  # float64 (C,), +inf where count == 0
    max: np.ndarray  # float64 (C,), -inf where count == 0
    nan: np.ndarray  # int64 (C,): NaNs seen (skipped under nan_policy="omit")
    inf: np.ndarray  # int64 (C,): +-inf seen

    @classmethod
    def empty(cls, nchan: int) -> BatchStats:
        return cls(
            np.zeros(nchan, np.int64),
            np.zeros(nchan),
            np.zeros(nchan),
            np.full(nchan, np.inf),
            np.full(nchan, -np.inf),
            np.zeros(nchan, np.int64),
            np.zeros(nchan, np.int64),
        )

    @classmethod
    def uninitialized(cls, nchan: int) -> BatchStats:
        """Arrays for a kernel to fill completely."""
        i = np.empty((3, nchan), np.int64)
        f = np.empty((4, nchan))
        return cls(i[0], f[0], f[1], f[2], f[3], i[1], i[2])

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def copy(self) -> BatchStats:
        out = BatchStats.uninitialized(self.num_channels)
        for dst, src in zip(out.arrays(), self.arrays()):
            dst[...] = src
        return out

    @property
    def num_channels(self) -> int:
        return self.count.shape[0]


@numba.njit(cache=True, nogil=True)
def merge_into(cnt, mean, m2, mn, mx, nnan, ninf, bcnt, bmean, bm2, bmn, bmx, bnan, binf):
    """Merge the second set of (C,) arrays into the first, in place."""
    for c in range(cnt.shape[0]):
        cnt[c], mean[c], m2[c] = chan_merge(cnt[c], mean[c], m2[c], bcnt[c], bmean[c], bm2[c])
        mn[c] = merge_min(mn[c], bmn[c])
        mx[c] = merge_max(mx[c], bmx[c])
        nnan[c] += bnan[c]
        ninf[c] += binf[c]


def merge_stats(a: BatchStats, b: BatchStats) -> BatchStats:
    """A new ``BatchStats`` holding the exact merge of ``a`` and ``b``."""
    out = a.copy()
    merge_into(*out.arrays(), *b.arrays())
    return out
