"""The per-channel histogram kernels of 8- and 16-bit pixels (``nbbn._histogram``).

Both take the pixels flat (a C-contiguous ``(N, C)`` array raveled) and add to
``out`` (``(C, bins)`` int64). Two uint32 tables per channel alternate between pixels,
so that equal neighbouring values (common in images) do not wait on each other's
increments; the caller keeps ``N`` below 2**32 per call so the tables cannot overflow.
"""

from __future__ import annotations

import numpy as np

from ._jit import cached


@cached(nogil=True, boundscheck=False)
def count_levels_rgb(xf, out):  # pragma: no cover - compiled
    """Three channels (RGB): one table per channel and parity, loops unrolled."""
    n = xf.size // 3
    t = np.zeros((6, out.shape[1]), np.uint32)
    a0, a1, a2, b0, b1, b2 = t[0], t[1], t[2], t[3], t[4], t[5]
    half = n // 2
    for i in range(half):
        k = 6 * i
        a0[xf[k]] += 1
        a1[xf[k + 1]] += 1
        a2[xf[k + 2]] += 1
        b0[xf[k + 3]] += 1
        b1[xf[k + 4]] += 1
        b2[xf[k + 5]] += 1
    for k in range(6 * half, 3 * n):
        t[k % 3, xf[k]] += 1
    for j in range(3):
        for v in range(out.shape[1]):
            out[j, v] += np.int64(t[j, v]) + np.int64(t[j + 3, v])


@cached(nogil=True, boundscheck=False)
def count_levels(xf, c, out):  # pragma: no cover - compiled
    """Any channel count ``c``."""
    n = xf.size // c
    bins = out.shape[1]
    t = np.zeros((2 * c, bins), np.uint32)
    half = n // 2
    for i in range(half):
        k = 2 * c * i
        for j in range(c):
            t[j, xf[k + j]] += 1
            t[c + j, xf[k + c + j]] += 1
    for k in range(2 * c * half, c * n):
        t[k % c, xf[k]] += 1
    for j in range(c):
        for v in range(bins):
            out[j, v] += np.int64(t[j, v]) + np.int64(t[c + j, v])
