"""The per-channel histogram kernel of 8- and 16-bit pixels (``nbbn._histogram``)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def count_levels(x, out):  # pragma: no cover - compiled
    """Add the count of every level of ``x[:, c]`` to ``out[c]`` (x: (N, C) uint8/uint16).

    Two partial tables alternate between rows, so that equal neighbouring pixels (the
    common case in images) do not wait on each other's increments.
    """
    n, c = x.shape
    bins = out.shape[1]
    part = np.zeros((2, c, bins), np.int64)
    half = n // 2
    for i in range(half):
        for j in range(c):
            part[0, j, x[2 * i, j]] += 1
            part[1, j, x[2 * i + 1, j]] += 1
    if n % 2:
        for j in range(c):
            part[0, j, x[n - 1, j]] += 1
    for j in range(c):
        for v in range(bins):
            out[j, v] += part[0, j, v] + part[1, j, v]
