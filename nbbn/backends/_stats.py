"""Per-channel statistics as plain host arrays: the state format every backend shares.

``BatchStats`` is what the CPU backend computes for one batch, the layout of
``RunningStats``' state on the host, and what a device state becomes when it is read.
It is two blocks, in the same layout as the CUDA backend's ``DeviceStats``:

* ``ints``, int64 (3, C): count, NaNs seen, infinities seen;
* ``floats``, float64 (5, C): the mean as ``mean + mean_lo`` (a double-double, see
  :mod:`nbbn._merge`), M2 (sum of squared deviations), min, max;
* ``weight``, float64 (C,) or None: the sum of the sample weights of the values
  counted, once any weighted data was merged (``RunningStats.update(x,
  sample_weight=w)``); None means every value weighs 1 (the weight sum is ``count``).
  The mean and M2 are then weighted, and ``count`` counts the values of nonzero weight.

Kernels take the two blocks (two arguments instead of eight: numba's dispatch costs
per argument, which shows on tiny batches). numpy only: the compiled merge lives in the
CPU backend.
"""

from __future__ import annotations

import numpy as np

INT_FIELDS = ("count", "nan", "inf")
# The largest count (values, NaNs, infinities) a channel may hold: 2**62, 4.6e18 values,
# which no stream reaches. A loaded state beyond it is refused, and so is a merge or an
# update past it (checked for every channel), so int64 counts never wrap and what is
# saved can be loaded.
COUNT_LIMIT = 2 ** 62


def count_limit_error(state_ints: np.ndarray, part_ints: np.ndarray) -> ValueError:
    """The error of a merge of ``part_ints`` into ``state_ints`` (int (3, C) counts) that
    would pass :data:`COUNT_LIMIT`, naming the first channel and the two counts."""
    over = part_ints > COUNT_LIMIT - state_ints  # (counts are >= 0: no overflow here)
    row, c = (int(i[0]) for i in np.nonzero(over)) if over.any() else (0, 0)
    return ValueError(f"the merged count would pass nbbn's limit of 2**62 values per channel "
                      f"in channel {c}: {int(state_ints[row, c])} + {int(part_ints[row, c])}."
                      " Nothing was changed.")
FLOAT_FIELDS = ("mean", "mean_lo", "m2", "min", "max")


class BatchStats:
    """Per-channel count, mean (double-double), M2, min, max, NaN and inf counts.

    Parameters
    ----------
    ints : numpy.ndarray
        int64 (3, C): count (NaNs excluded under "omit"), NaNs seen, infinities seen.
    floats : numpy.ndarray
        float64 (5, C): mean, mean_lo, M2, min (+inf where count is 0), max (-inf).
    weight : numpy.ndarray or None
        float64 (C,): the weight sums of weighted statistics; None for unweighted ones.
    """

    __slots__ = ("ints", "floats", "weight")

    def __reduce__(self):  # (pickle protocols 0 and 1 cannot save __slots__ by themselves)
        return type(self), (self.ints, self.floats, self.weight)

    def __init__(self, ints: np.ndarray, floats: np.ndarray,
                 weight: np.ndarray | None = None) -> None:
        self.ints = ints
        self.floats = floats
        self.weight = weight

    @classmethod
    def empty(cls, nchan: int) -> BatchStats:
        """Statistics of no data: counts 0, min +inf, max -inf."""
        floats = np.zeros((5, nchan))
        floats[3] = np.inf
        floats[4] = -np.inf
        return cls(np.zeros((3, nchan), np.int64), floats)

    @classmethod
    def uninitialized(cls, nchan: int) -> BatchStats:
        """Blocks for a kernel to fill completely."""
        return cls(np.empty((3, nchan), np.int64), np.empty((5, nchan)))

    @classmethod
    def from_fields(cls, **fields: np.ndarray | None) -> BatchStats:
        """Statistics from (C,) arrays named as the properties (all eight, and
        optionally ``weight``)."""
        weight = fields.get("weight")
        return cls(np.array([fields[k] for k in INT_FIELDS], np.int64),
                   np.array([fields[k] for k in FLOAT_FIELDS], np.float64),
                   None if weight is None else np.array(weight, np.float64))

    def copy(self) -> BatchStats:
        """An independent copy."""
        return BatchStats(self.ints.copy(), self.floats.copy(),
                          None if self.weight is None else self.weight.copy())

    @property
    def writeable(self) -> bool:
        """Whether every block may be written (else a state shared read-only:
        ``read_only``)."""
        return (self.ints.flags.writeable and self.floats.flags.writeable
                and (self.weight is None or self.weight.flags.writeable))

    def read_only(self) -> BatchStats:
        """Read-only views of the blocks (a state shared with another object, which
        merges into a copy of it: ``cpu.merge``, ``cpu.reduce_into``)."""
        def view(a: np.ndarray) -> np.ndarray:
            v = a.view()
            v.setflags(write=False)
            return v

        return BatchStats(view(self.ints), view(self.floats),
                          None if self.weight is None else view(self.weight))

    def weight_sum(self) -> np.ndarray:
        """The weight sums (float64 (C,)): ``weight``, or ``count`` when unweighted."""
        return self.count.astype(np.float64) if self.weight is None else self.weight

    def to_host(self) -> BatchStats:
        """Itself: host statistics are already on the host (see ``DeviceStats``)."""
        return self

    @property
    def num_channels(self) -> int:
        """Number of channels C."""
        return int(self.ints.shape[1])

    count = property(lambda self: self.ints[0], doc="Values counted (int64 (C,)).")
    nan = property(lambda self: self.ints[1], doc="NaNs seen (int64 (C,)).")
    inf = property(lambda self: self.ints[2], doc="Infinities seen (int64 (C,)).")
    mean = property(lambda self: self.floats[0], doc="The mean rounded to float64.")
    mean_lo = property(lambda self: self.floats[1], doc="The rest of the mean.")
    m2 = property(lambda self: self.floats[2], doc="Sums of squared deviations.")
    min = property(lambda self: self.floats[3], doc="Minima (+inf where count is 0).")
    max = property(lambda self: self.floats[4], doc="Maxima (-inf where count is 0).")

    def __repr__(self) -> str:
        return (f"BatchStats(count={self.count.tolist()}, mean={self.mean.tolist()}, "
                f"m2={self.m2.tolist()})")
