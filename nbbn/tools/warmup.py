"""``nbbn warmup``: compile the CPU kernels ahead of their first use (numba's disk cache).

A container image or a cluster node can run it once at build time, so that the first
``nbbn fit`` or the first ``update`` of a service pays no compilation. Each dtype and
layout takes one tiny array through every operation that compiles something: the
statistics (one batch, then a merge; channels-first also a piece of short rows, and
channels-last bytes a table of many channels, which have kernels of their own), the
normalizer (for floating input also its build that counts infinities, which
``nbbn.sklearn.StandardScaler.transform`` takes) and BatchNorm training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TextIO

__all__ = ["DEFAULT_DTYPES", "LAYOUTS", "warmup"]

DEFAULT_DTYPES = ("float32", "uint8")
DTYPES = ("float16", "float32", "float64", "uint8", "int8", "uint16", "int16", "int32",
          "uint32", "int64", "uint64")
LAYOUTS = {"nchw": ((4, 3, 8, 8), 1), "nhwc": ((4, 8, 8, 3), -1)}
# channels-first pieces of short rows (CNN feature maps) and at least 65,536 values take
# a kernel of their own (cpu_stats.stats_channels_first_grouped): one such piece, 256 KB
SHORT_ROWS = (2, 1024, 4, 8)
# uint8 and int8 tables of many channels (MNIST's 784 pixels) take one too
# (cpu_byte_tables): one such table
WIDE_BYTES = (8, 256)


def warmup(dtypes: Sequence[str] = DEFAULT_DTYPES, layouts: Sequence[str] = tuple(LAYOUTS),
           file: TextIO | None = None) -> list[dict]:
    """Compile (or load) the CPU kernels for each dtype and layout.

    Parameters
    ----------
    dtypes : sequence of str
        Input dtypes, of :data:`DTYPES`.
    layouts : sequence of str
        "nchw" (channels-first) and/or "nhwc" (channels-last, also (N, C) tables).
    file : text file, optional
        Where to print one line per case.

    Returns
    -------
    list of dict
        ``{"dtype", "layout", "seconds"}`` per case: compile time, or the time to load
        from the cache when the kernels were built before.
    """
    import numpy as np

    import nbbn

    from ..backends import cpu

    bad = [d for d in dtypes if d not in DTYPES] + [lay for lay in layouts if lay not in LAYOUTS]
    if bad:
        raise ValueError(f"unknown dtype or layout {bad}; dtypes: {', '.join(DTYPES)}; "
                         f"layouts: {', '.join(LAYOUTS)}")
    done = []
    for dtype in dtypes:
        for layout in layouts:
            shape, axis = LAYOUTS[layout]
            x = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
            t0 = time.perf_counter()
            rs = nbbn.RunningStats(axis).update(x).update(x)  # a batch, then a merge
            if layout == "nchw":
                short = np.zeros(SHORT_ROWS, dtype)
                nbbn.RunningStats(axis).update(short).update(short)
            elif dtype in ("uint8", "int8"):
                nbbn.RunningStats(-1).update(np.zeros(WIDE_BYTES, dtype))
            norm = rs.to_normalizer()
            norm(x)
            if np.dtype(dtype).kind == "f":  # nbbn.sklearn's transform: the normalizer
                # build that also counts infinities (it refuses them, as scikit-learn)
                can = cpu.prepare(x, axis, "x")
                cpu.affine(can, (norm.mean, norm.scale, norm.bias),
                           cpu.prepare_out(None, can, "x"), count_inf=True)
            nbbn.BatchNorm(3, channel_axis=axis)(x)
            seconds = time.perf_counter() - t0
            done.append({"dtype": dtype, "layout": layout, "seconds": seconds})
            if file is not None:
                print(f"{dtype:>8} {layout}: {seconds:6.2f} s", file=file, flush=True)
    return done
