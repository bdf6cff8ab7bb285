"""Exact per-channel histograms of 8- and 16-bit pixel values, and their percentiles.

A :class:`Histogram` holds one bin per level: 256 bins for 8-bit values, 65,536 for
16-bit values (``counts`` of shape ``(C, bins)``, int64). No binning is applied, so a
percentile read from it is the exact percentile of every value counted: the same
number ``np.percentile(values, q)`` gives (numpy's default "linear" method).

The kernel (``backends.cpu_histogram``) is imported on first use, so this module
imports numpy (and the layout module's slabs) only.
"""

from __future__ import annotations

import numpy as np

from ._layout import canonical
from .backends._stats import COUNT_LIMIT

__all__ = ["BINS", "Histogram"]

BINS = {np.dtype(np.uint8): 256, np.dtype(np.uint16): 65536}
"""Bins per channel for each pixel dtype (one per level)."""

_ROWS_PER_CALL = 2**31  # pixels per kernel call (its uint32 tables hold up to 2**32 - 1)


class Histogram:
    """Exact per-channel counts of each level of 8-bit or 16-bit values.

    Parameters
    ----------
    counts : ndarray of int64, shape (C, 256) or (C, 65536)
        ``counts[c, v]``: how many values of channel ``c`` equal ``v``.

    Examples
    --------
    >>> import numpy as np
    >>> h = Histogram.of(np.array([[0, 10], [2, 10], [4, 30]], np.uint8))
    >>> h.percentile(50)
    array([ 2., 10.])
    """

    def __init__(self, counts) -> None:
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] not in BINS.values() \
                or counts.dtype.kind not in "iu" or (counts < 0).any():
            raise ValueError("a histogram must be non-negative integer counts of shape (C, 256) "
                             f"or (C, 65536), got {counts.dtype} {counts.shape}")
        if counts.size and int(counts.max()) > COUNT_LIMIT:  # (a uint64 bin could wrap)
            raise ValueError("a histogram's counts must be at most 2**62 (nbbn's limit per "
                             f"channel), got {int(counts.max())}")
        if counts.size and int(counts.max()) > COUNT_LIMIT // counts.shape[1]:
            # (only where a row could pass the limit: its sums exact, as Python ints)
            total = max(int(t) for t in counts.astype(object).sum(axis=1))
            if total > COUNT_LIMIT:
                raise ValueError("a histogram's counts must sum to at most 2**62 per "
                                 f"channel (nbbn's limit), got {total}")
        self.counts = counts.astype(np.int64)  # (a copy: never the caller's array)

    @classmethod
    def empty(cls, channels: int, dtype) -> Histogram:
        """Zero counts for ``channels`` channels of ``dtype`` (uint8 or uint16)."""
        return cls(np.zeros((channels, bins_of(dtype)), np.int64))

    @classmethod
    def of(cls, pixels: np.ndarray) -> Histogram:
        """The histogram of ``pixels``: (N, C) or (..., C) uint8/uint16, channels last."""
        h = cls.empty(pixels.shape[-1], pixels.dtype)
        h.add(pixels)
        return h

    @property
    def bits(self) -> int:
        """8 or 16: the depth of the values counted."""
        return 8 if self.counts.shape[1] == 256 else 16

    @property
    def num_channels(self) -> int:
        """Number of channels."""
        return self.counts.shape[0]

    def add(self, pixels: np.ndarray) -> None:
        """Count ``pixels`` ((..., C) channels-last uint8/uint16 of this depth, either
        byte order) in place."""
        from .backends.cpu_histogram import count_levels, count_levels_rgb

        c = self.num_channels
        if bins_of(pixels.dtype) != self.counts.shape[1] or pixels.shape[-1] != c:
            raise ValueError(f"cannot count {pixels.dtype} values with {pixels.shape[-1]} "
                             f"channels in a {self.bits}-bit histogram of {c} channels")
        # a strided view in slabs of rows, never one copy of itself (a memory map's); a
        # non-native byte order in slabs too, each copied into native order
        slabs = not (pixels.flags.c_contiguous and pixels.dtype.isnative)
        for x3, _ in canonical(pixels, -1).pieces(slabs=slabs):
            flat = x3.reshape(-1)
            step = c * _ROWS_PER_CALL
            for lo in range(0, flat.size, step):  # the kernels' uint32 tables stay exact
                if c == 3:
                    count_levels_rgb(flat[lo:lo + step], self.counts)
                else:
                    count_levels(flat[lo:lo + step], c, self.counts)

    def __iadd__(self, other: Histogram) -> Histogram:
        if other.counts.shape != self.counts.shape:
            raise ValueError(f"cannot add a histogram of shape {other.counts.shape} to one of "
                             f"shape {self.counts.shape}")
        # every row sums to at most COUNT_LIMIT (the constructor's check), so the sums
        # below are exact, and a merged row within it holds no bin past int64
        mine, theirs = self.counts.sum(axis=1), other.counts.sum(axis=1)
        if (theirs > COUNT_LIMIT - mine).any():
            c = int(np.flatnonzero(theirs > COUNT_LIMIT - mine)[0])
            raise ValueError(f"the merged histogram would count more than 2**62 values "
                             f"(nbbn's limit) in channel {c}: {int(mine[c])} + "
                             f"{int(theirs[c])}. Nothing was changed.")
        self.counts += other.counts
        return self

    def copy(self) -> Histogram:
        """An independent copy."""
        return Histogram(self.counts.copy())

    def percentile(self, q) -> np.ndarray:
        """Exact per-channel percentiles, as ``np.percentile(values, q, axis=0)``.

        Parameters
        ----------
        q : float or array_like of float
            Percentiles in [0, 100], of any shape.

        Returns
        -------
        ndarray of float64
            Shape ``np.shape(q) + (C,)`` (``(C,)`` for a scalar ``q``); NaN for a channel
            without values.
        """
        qs = np.asarray(q, dtype=np.float64)
        if ((qs < 0) | (qs > 100) | np.isnan(qs)).any():
            raise ValueError(f"percentiles must lie in [0, 100], got {q!r}")
        flat = qs.reshape(-1)
        out = np.full((flat.size, self.num_channels), np.nan)
        for c, row in enumerate(self.counts):
            cum = np.cumsum(row)
            n = int(cum[-1])
            if n == 0:
                continue
            for i, p in enumerate(flat):
                # numpy's "linear" method, operation for operation: the virtual index
                # (n - 1) * (q / 100), and its lerp from the nearer end
                h = (n - 1) * (p / 100.0)
                lo = min(int(np.floor(h)), n - 1)  # (past the end, as rounded: the last)
                hi = min(lo + 1, n - 1)
                v_lo = float(np.searchsorted(cum, lo, side="right"))
                v_hi = float(np.searchsorted(cum, hi, side="right"))
                t, diff = h - lo, v_hi - v_lo
                out[i, c] = v_lo + diff * t if t < 0.5 else v_hi - diff * (1 - t)
        return out.reshape(qs.shape + (self.num_channels,))

    def __repr__(self) -> str:
        return f"Histogram({self.bits}-bit, {self.num_channels} channels)"


def bins_of(dtype) -> int:
    """Bins per channel for ``dtype``; ValueError for a dtype other than uint8/uint16."""
    dt = np.dtype(dtype)
    native = dt.newbyteorder("=") if dt.kind == "u" else dt  # (">u2" counts as uint16)
    if native not in BINS:
        raise ValueError(f"histograms count uint8 or uint16 values, got {dt}")
    return BINS[native]


PERCENTILES = (0.1, 1, 5, 25, 50, 75, 95, 99, 99.9)
"""The percentiles ``nbbn info`` prints when the statistics hold a histogram."""


def describe_extras(stats) -> list[str]:
    """The lines ``nbbn info`` adds for a histogram (percentiles) and skipped files."""
    return describe_percentiles(stats) + describe_skipped(stats)


def describe_percentiles(stats) -> list[str]:
    """The table of exact percentiles that ``nbbn info`` and ``nbbn fit`` print for
    statistics with a histogram, after a blank line (none: no line)."""
    lines = []
    hist = stats.histogram
    if hist is not None:
        pct = hist.percentile(PERCENTILES)
        lines += ["", f"exact percentiles per channel ({hist.bits}-bit histogram, numpy's "
                  "'linear' method):",
                  "  " + "q".rjust(6) + "".join(f"{c:>14d}" for c in range(hist.num_channels))]
        # 8 significant digits: a 16-bit value and its fraction in full (16416.25 and
        # 65484.505, which 6 digits rounded: not the exact percentile the title says)
        for q, row in zip(PERCENTILES, pct, strict=True):
            lines.append("  " + f"{q:g}".rjust(6) + "".join(f"{v:14.8g}" for v in row))
    return lines


def describe_skipped(stats) -> list[str]:
    """The lines ``nbbn info`` adds for the files a fit skipped (none: no line)."""
    if not stats.skipped:
        return []
    n = len(stats.skipped)
    lines = ["", f"{n} file{'s were' if n != 1 else ' was'} skipped by the fit:"]
    lines += [f"  {s}" for s in stats.skipped[:20]]
    if len(stats.skipped) > 20:
        lines.append(f"  ... and {len(stats.skipped) - 20} more")
    return lines

