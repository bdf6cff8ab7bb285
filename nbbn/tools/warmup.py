"""``nbbn warmup``: compile the CPU kernels ahead of their first use (numba's disk cache).

A container image or a cluster node can run it once at build time, so that the first
``nbbn fit`` or the first ``update`` of a service pays no compilation. Each dtype and
layout takes one tiny array through every operation that compiles something: the
statistics (one batch, then a merge; channels-first also a piece of short rows,
channels-last a table of few rows of many channels, and channels-last bytes a table of
many channels, which have kernels of their own), the
normalizer (for floating input also its build that counts infinities, which
``nbbn.sklearn.StandardScaler.transform`` takes; and the one pass that makes its fit's
attributes, ``cpu_scaler``) and BatchNorm training; channels-last uint8 and uint16 also
the per-level histograms of images (``nbbn fit --histogram``: RGB's kernel and the one of
any channel count). The "sparse"
layout (scipy CSR and CSC matrices, which need scipy) takes tiny matrices through each
way a sparse matrix is reduced, weighted and not, and the scaling of
``nbbn.sklearn.StandardScaler(with_mean=False).transform`` (and ``cpu_scaler``'s pass
of its fit): its kernels are built for
float32 and float64 values (other dtypes are read as float64) with int32 indices (the
int64 ones of matrices beyond 2**31 values compile on their first use).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TextIO

__all__ = ["DEFAULT_DTYPES", "LAYOUTS", "SPARSE", "warmup"]

DEFAULT_DTYPES = ("float32", "uint8")
DTYPES = ("float16", "float32", "float64", "uint8", "int8", "uint16", "int16", "int32",
          "uint32", "int64", "uint64")
LAYOUTS = {"nchw": ((4, 3, 8, 8), 1), "nhwc": ((4, 8, 8, 3), -1)}
# channels-first pieces of short rows (CNN feature maps) and at least 65,536 values take
# a kernel of their own (cpu_stats.stats_channels_first_grouped): one such piece, 256 KB
SHORT_ROWS = (2, 1024, 4, 8)
# uint8 and int8 tables of many channels (MNIST's 784 pixels) take one too
# (cpu_byte_tables): one such table, of more rows than cpu_few_rows takes (FEW_ROWS_MAX;
# (8, 256) went there, and the first MNIST batch after a warmup compiled)
WIDE_BYTES = (80, 256)
# and tables of few rows of many channels of every dtype but 64-bit integers
# (cpu_few_rows): one such table
FEW_ROWS = (2, 1024)
SPARSE = "sparse"  # the layout name of scipy sparse matrices


def warmup(dtypes: Sequence[str] = DEFAULT_DTYPES, layouts: Sequence[str] = tuple(LAYOUTS),
           file: TextIO | None = None) -> list[dict]:
    """Compile (or load) the CPU kernels for each dtype and layout.

    Parameters
    ----------
    dtypes : sequence of str
        Input dtypes, of :data:`DTYPES` (a name given twice counts once, as does a
        layout).
    layouts : sequence of str
        "nchw" (channels-first), "nhwc" (channels-last, also (N, C) tables) and/or
        "sparse" (scipy CSR and CSC matrices).
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

    names = (*LAYOUTS, SPARSE)
    bad = [d for d in dtypes if d not in DTYPES] + [lay for lay in layouts if lay not in names]
    if bad:
        raise ValueError(f"unknown dtype or layout {bad}; dtypes: {', '.join(DTYPES)}; "
                         f"layouts: {', '.join(names)}")
    dtypes, layouts = tuple(dict.fromkeys(dtypes)), tuple(dict.fromkeys(layouts))  # (each
    # case once: "float32,float32" made two cases of one, and four of one with a layout twice)
    if SPARSE in layouts:
        _scipy_sparse()  # (before any case: a missing scipy is said at once)
    done: list[dict] = []
    for dtype in dtypes:
        for layout in layouts:
            if layout == SPARSE:
                t0 = time.perf_counter()
                _warm_sparse(np.dtype(dtype))
                _report(done, dtype, layout, time.perf_counter() - t0, file)
                continue
            shape, axis = LAYOUTS[layout]
            x = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
            t0 = time.perf_counter()
            if layout == "nhwc" and dtype in ("uint8", "uint16"):  # images' histograms
                _warm_histograms(np.dtype(dtype))
            rs = nbbn.RunningStats(axis).update(x).update(x)  # a batch, then a merge
            # the weighted kernels (nbbn.sklearn's fit with sample_weight too): a batch,
            # then a second merged into it (cpu_weighted._merge_weighted, once unwarmed)
            w = np.ones(shape[0])
            nbbn.RunningStats(axis).update(x, sample_weight=w).update(x, sample_weight=w)
            if layout == "nchw":
                short = np.zeros(SHORT_ROWS, dtype)
                nbbn.RunningStats(axis).update(short).update(short)
            else:
                if dtype in ("uint8", "int8"):
                    nbbn.RunningStats(-1).update(np.zeros(WIDE_BYTES, dtype))
                nbbn.RunningStats(-1).update(np.zeros(FEW_ROWS, dtype))
            norm = rs.to_normalizer()
            norm(x)
            if np.dtype(dtype).kind == "f":  # nbbn.sklearn's transform: the normalizer
                # build that also counts infinities (it refuses them, as scikit-learn)
                can = cpu.prepare(x, axis, "x")
                cpu.affine(can, (norm.mean, norm.scale, norm.bias),
                           cpu.prepare_out(None, can, "x"), count_inf=True)
                _warm_scaler()
            nbbn.BatchNorm(3, channel_axis=axis)(x)
            _report(done, dtype, layout, time.perf_counter() - t0, file)
    return done


def _report(done: list[dict], dtype: str, layout: str, seconds: float,
            file: TextIO | None) -> None:
    done.append({"dtype": dtype, "layout": layout, "seconds": seconds})
    if file is not None:
        print(f"{dtype:>8} {layout}: {seconds:6.2f} s", file=file, flush=True)


def _warm_histograms(dtype) -> None:
    """The histogram kernels of images of ``dtype`` (uint8 or uint16): RGB's, and the
    one of any other channel count (grey, RGBA); each for writable pixels and for
    read-only ones (numba compiles those apart: Pillow's ``np.asarray(image)`` is
    read-only, and 8-bit PNGs compiled on the first image after a warmup)."""
    import numpy as np

    from .._histogram import Histogram

    for channels in (3, 4):
        pixels = np.zeros((5, channels), dtype)
        Histogram.of(pixels)
        pixels.flags.writeable = False
        Histogram.of(pixels)


def _scipy_sparse():
    from .._shards_zarr_h5 import import_extra

    return import_extra("scipy.sparse", "sparse", "the sparse layout")


def _warm_sparse(dtype) -> None:
    """Every sparse kernel for values of ``dtype`` (float32, or float64 for the others,
    as ``cpu_sparse._entries`` reads them): each way a CSR matrix is reduced ("parts"
    also with records larger than L2, whose builds prefetch), CSC matrices, each
    weighted and not; the merge of a second batch, and the columns' scaling."""
    import numpy as np

    import nbbn

    from .._policy import POLICY_PROPAGATE
    from ..backends import cpu_sparse

    sparse = _scipy_sparse()
    values = np.float32 if dtype == np.float32 else np.float64
    wide = cpu_sparse.L2_BYTES // (cpu_sparse.RECORD * 8) + 1  # records beyond L2
    for ncols in (8, wide):
        x = sparse.csr_matrix((np.arange(2 * ncols) % 7 + 1).astype(values).reshape(2, ncols))
        for weight in (None, np.array([1.0, 2.0])):
            for route in ("csc", "blocks", "parts") if ncols == 8 else ("parts",):
                cpu_sparse.reduce(x, POLICY_PROPAGATE, weight, route)
    x = sparse.csr_matrix(np.eye(4, 8, dtype=values))
    for batch in (x, x.tocsc()):  # the front end: a batch, a merge, a weighted merge
        rs = nbbn.RunningStats(-1).update(batch).update(batch)
        rs.update(batch, sample_weight=np.ones(4))  # (cpu_weighted._merge_weighted)
    cpu_sparse.scale_columns(x, np.full(8, 0.5))  # nbbn.sklearn's transform
    _warm_scaler()


def _warm_scaler() -> None:
    """``nbbn.sklearn``'s fitted attributes (``cpu_scaler``), of unweighted and weighted
    statistics (scikit-learn need not be installed)."""
    import numpy as np

    from ..backends import cpu_scaler
    from ..backends._stats import BatchStats

    st = BatchStats.empty(2)
    st.ints[0] = 1
    for weight in (None, np.ones(2)):
        cpu_scaler.fitted(BatchStats(st.ints, st.floats, weight), 0, True)
