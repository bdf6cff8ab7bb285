"""Per-channel statistics as plain host arrays: the state format every backend shares.

``BatchStats`` is what the CPU backend computes for one batch, the layout of
``RunningStats``' state on the host, and what a device state becomes when it is read:
count (int64), mean as ``mean + mean_lo`` (float64 pair, see :mod:`nbbn._merge`), M2
(sum of squared deviations), min and max (float64), and the numbers of NaNs and
infinities seen (int64). numpy only: the compiled merge lives in the CPU backend.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class BatchStats:
    count: np.ndarray  # int64 (C,)
    mean: np.ndarray  # float64 (C,): the mean rounded to float64
    mean_lo: np.ndarray  # float64 (C,): the rest, mean + mean_lo being the exact mean
    m2: np.ndarray  # float64 (C,)
    min: np.ndarray  # float64 (C,), +inf where count == 0
    max: np.ndarray  # float64 (C,), -inf where count == 0
    nan: np.ndarray  # int64 (C,): NaNs seen (skipped under nan_policy="omit")
    inf: np.ndarray  # int64 (C,): +-inf seen

    @classmethod
    def empty(cls, nchan: int) -> BatchStats:
        """Statistics of no data: counts 0, min +inf, max -inf."""
        out = cls.uninitialized(nchan)
        for name in ("count", "mean", "mean_lo", "m2", "nan", "inf"):
            getattr(out, name)[:] = 0
        out.min[:] = np.inf
        out.max[:] = -np.inf
        return out

    @classmethod
    def uninitialized(cls, nchan: int) -> BatchStats:
        """Arrays for a kernel to fill completely (views of one int and one float block)."""
        i = np.empty((3, nchan), np.int64)
        f = np.empty((5, nchan))
        return cls(i[0], f[0], f[1], f[2], f[3], f[4], i[1], i[2])

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The fields in declaration order: the argument order of the kernels."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def copy(self) -> BatchStats:
        out = BatchStats.uninitialized(self.num_channels)
        for dst, src in zip(out.arrays(), self.arrays()):
            dst[...] = src
        return out

    def to_host(self) -> BatchStats:
        """Itself: host statistics are already on the host (see ``DeviceStats``)."""
        return self

    @property
    def num_channels(self) -> int:
        return self.count.shape[0]
