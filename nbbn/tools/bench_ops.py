"""What ``nbbn bench`` times: nbbn's three operations and their numpy and torch peers.

For one array (:func:`bench_shape`): ``RunningStats.update``, ``Normalizer(x, out=)``
and the training ``BatchNorm`` forward (into ``out=``, and allocating), each also
paired call by call with a bandwidth kernel; then numpy's and torch's equivalents.
:func:`bench_small` times the per-call overhead on a tiny batch. The shapes of the
full and quick runs are here too.
"""

from __future__ import annotations

import time
from typing import Any

from .bench_timing import bw_kernels, ceiling_gbps, median_time, paired_pct, per_call_us

__all__ = ["EPS", "FULL_SHAPES", "OPS", "QUICK_SHAPES", "SMALL_SHAPE", "bench_shape",
           "bench_small", "make_data"]

# (shape, dtype, layout, channel_axis). NHWC is the NCHW array above it, transposed.
FULL_SHAPES: list[tuple[tuple[int, ...], str, str, int]] = [
    ((64, 256, 56, 56), "float32", "NCHW", 1),
    ((64, 56, 56, 256), "float32", "NHWC", -1),
    ((256, 3, 224, 224), "uint8", "NCHW", 1),
    ((256, 224, 224, 3), "uint8", "NHWC", -1),  # HWC images, as PIL/OpenCV give them
    ((256, 3, 224, 224), "float32", "NCHW", 1),
    ((1_000_000, 64), "float32", "NC", -1),
    # the weak cases of channels-last: float16 and float64, C = 3 float32, C = 1024
    ((64, 56, 56, 256), "float16", "NHWC", -1),
    ((32, 56, 56, 256), "float64", "NHWC", -1),
    ((256, 224, 224, 3), "float32", "NHWC", -1),
    ((50_000, 1024), "float32", "NC", -1),
]
QUICK_SHAPES: list[tuple[tuple[int, ...], str, str, int]] = [
    ((4, 16, 8, 8), "float32", "NCHW", 1),
    ((4, 8, 8, 16), "float32", "NHWC", -1),
    ((4, 3, 16, 16), "uint8", "NCHW", 1),
    ((4, 16, 16, 3), "uint8", "NHWC", -1),
    ((4, 3, 16, 16), "float32", "NCHW", 1),
    ((2_000, 64), "float32", "NC", -1),
    ((4, 8, 8, 16), "float16", "NHWC", -1),
    ((4, 8, 8, 16), "float64", "NHWC", -1),
    ((4, 16, 16, 3), "float32", "NHWC", -1),
    ((64, 1024), "float32", "NC", -1),
]
SMALL_SHAPE = (8, 16, 4, 4)
EPS = 1e-5

OPS = ("stats", "normalizer", "batchnorm_train")


# ------------------------------------------------------------------- data and peers
def make_data(shape, dtype: str, layout: str, seed: int, prev=None):
    """A seeded array; NHWC reuses the previous NCHW array's values when shapes match.

    Parameters
    ----------
    shape : tuple of int
        The array's shape.
    dtype : str
        "float32", "uint8", ...
    layout : {"NCHW", "NHWC", "NC"}
        NHWC is an NCHW array transposed (and copied).
    seed : int
        The values' seed.
    prev : numpy.ndarray, optional
        The previous shape's array, reused when it is this one's NCHW form.

    Returns
    -------
    numpy.ndarray
        A C-contiguous array.
    """
    import numpy as np

    if layout == "NHWC":
        n, h, w, c = shape
        if prev is not None and prev.shape == (n, c, h, w) and prev.dtype == np.dtype(dtype):
            return np.ascontiguousarray(prev.transpose(0, 2, 3, 1))
        return np.ascontiguousarray(
            make_data((n, c, h, w), dtype, "NCHW", seed).transpose(0, 2, 3, 1)
        )
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "u":
        return rng.integers(0, 256, size=shape, dtype=np.dtype(dtype))
    x = rng.standard_normal(shape, dtype=np.float32)
    x += np.float32(0.5)
    return x.astype(dtype, copy=False)


def _reduced_axes(ndim: int, channel_axis: int) -> tuple[int, ...]:
    ca = channel_axis % ndim
    return tuple(i for i in range(ndim) if i != ca)


def _bshape(ndim: int, channel_axis: int, c: int) -> tuple[int, ...]:
    s = [1] * ndim
    s[channel_axis % ndim] = c
    return tuple(s)


def _torch_view(torch, x, layout: str):
    """A torch tensor on x's memory that torch sees as (N, C, ...)."""
    t = torch.from_numpy(x)
    if layout == "NHWC":
        t = t.permute(0, 3, 1, 2)  # NCHW shape in channels_last memory format
    return t


# ---------------------------------------------------------------------- one shape
def bench_shape(spec, x, repeats: int, torch, bw: dict[str, Any]) -> list[dict[str, Any]]:
    """The three ops on ``x`` (the array of ``spec``), and their numpy and torch peers.

    Parameters
    ----------
    spec : tuple
        ``(shape, dtype, layout, channel_axis)``.
    x : numpy.ndarray
        The data.
    repeats : int
        Timed calls per measurement.
    torch : module or None
        torch, to time its peers.
    bw : dict
        The bandwidth measured for this shape (:func:`measure_bandwidth`).

    Returns
    -------
    list of dict
        One row per op: time, GB/s, % of the bandwidth ``bw``, paired %, and the
        peers' times and speed-ups.
    """
    import numpy as np

    import nbbn

    shape, dtype, layout, ca = spec
    c = x.shape[ca % x.ndim]
    axes = _reduced_axes(x.ndim, ca)
    bsh = _bshape(x.ndim, ca, c)
    out_dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    rows: list[dict[str, Any]] = []

    def row(op: str, t: float | None, nbytes: int, bw_kind: str, note: str = "") -> dict[str, Any]:
        r: dict[str, Any] = {
            "op": op,
            "shape": list(shape),
            "dtype": dtype,
            "layout": layout,
            "channel_axis": ca,
            "bytes": nbytes,
            "time_ms": None if t is None else t * 1e3,
            "gbps": None if t is None else nbytes / t / 1e9,
            "bw_kind": bw_kind,
            "pct_bw": None,
            "pct_bw_paired": None,
            "numpy_ms": None,
            "speedup_numpy": None,
            "torch_ms": None,
            "speedup_torch": None,
            "note": note,
        }
        if t is not None:
            r["pct_bw"] = 100.0 * r["gbps"] / ceiling_gbps(bw, bw_kind, x.nbytes, nbytes)
        r["read_pass_bytes"] = x.nbytes if bw_kind == "mixed" else None
        rows.append(r)
        return r

    def peers(r: dict[str, Any], t_np: float | None, t_torch: float | None, note: str = ""):
        if t_np is not None:  # numpy, as nbbn, writes into out=
            r["numpy_ms"] = t_np * 1e3
            if r["time_ms"]:
                r["speedup_numpy"] = t_np * 1e3 / r["time_ms"]
        if t_torch is not None:
            r["torch_ms"] = t_torch * 1e3
            # torch allocates its output: against nbbn's allocating call where there is
            # one (an out= call against an allocating one overstated the ratio up to 2x)
            base = r.get("time_alloc_ms") or r["time_ms"]
            if base:
                r["speedup_torch"] = t_torch * 1e3 / base
        if note:
            r["note"] = (r["note"] + "; " if r["note"] else "") + note

    # --- nbbn: all three ops first, before numpy/torch touch the cores -------------
    t_stats, _ = median_time(
        lambda rs: rs.update(x), repeats, lambda: nbbn.RunningStats(channel_axis=ca)
    )
    rs = nbbn.RunningStats(channel_axis=ca).update(x)
    mean = np.asarray(rs.mean, dtype=np.float64)
    var = np.asarray(rs.var, dtype=np.float64)
    rng = np.random.default_rng(1)
    weight = 1.0 + 0.1 * rng.standard_normal(c)
    bias = 0.1 * rng.standard_normal(c)
    norm = nbbn.Normalizer(mean, var, eps=EPS, weight=weight, bias=bias, channel_axis=ca)
    out = np.empty(x.shape, dtype=out_dtype)
    t_norm, _ = median_time(lambda _: norm(x, out=out), repeats)
    t_norm_alloc, _ = median_time(lambda _: norm(x), repeats)  # a new output, as torch's

    bn_note = ""
    t_bn: float | None = None
    y_nbytes = x.size * out_dtype.itemsize
    t_bn_alloc: float | None = None
    try:
        bn = nbbn.BatchNorm(c, eps=EPS, momentum=0.1, channel_axis=ca)
        # timed like the normalizer, into a preallocated out=; bn(x) allocating y is recorded too
        t_bn, _ = median_time(lambda _: bn(x, out=out), repeats)
        t_bn_alloc, _ = median_time(lambda _: bn(x), repeats)
    except (TypeError, ValueError) as e:  # e.g. an input dtype BatchNorm does not take
        bn_note = f"nbbn BatchNorm: {type(e).__name__}: {e}"
    r_stats = row("stats", t_stats, x.nbytes, "read")
    r_norm = row("normalizer", t_norm, x.nbytes + out.nbytes, "copy")
    r_norm["time_alloc_ms"] = t_norm_alloc * 1e3
    # one read-only pass (the statistics) and one read-and-write pass: its ceiling is
    # 2 reads + 1 write at the read and copy speeds, not the copy speed alone (which let
    # the percentage pass 100% where reads are faster than copies)
    r_bn = row("batchnorm_train", t_bn, 2 * x.nbytes + y_nbytes, "mixed", bn_note)
    r_bn["time_alloc_ms"] = None if t_bn_alloc is None else t_bn_alloc * 1e3
    del rs

    # --- the same ops interleaved with the bandwidth kernels (same-moment ratios) -----
    read_sum, copy = bw_kernels()
    a = np.random.default_rng(7).random(max(1, x.nbytes // 4), dtype=np.float32)
    src = np.random.default_rng(8).random(max(1, out.nbytes // 4), dtype=np.float32)
    dst = np.empty_like(src)
    r_stats["pct_bw_paired"] = paired_pct(
        lambda rs_: rs_.update(x), x.nbytes, (lambda: read_sum(a), a.nbytes), repeats,
        lambda: nbbn.RunningStats(channel_axis=ca),
    )
    r_norm["pct_bw_paired"] = paired_pct(
        lambda _: norm(x, out=out), r_norm["bytes"], (lambda: copy(src, dst), 2 * src.nbytes),
        repeats,
    )
    if t_bn is not None:  # paired with a read pass and a copy, as its two passes
        r_bn["pct_bw_paired"] = paired_pct(
            lambda _: bn(x, out=out), r_bn["bytes"],
            (lambda: (read_sum(a), copy(src, dst)), a.nbytes + 2 * src.nbytes), repeats,
        )

    # --- numpy -------------------------------------------------------------------
    t_np_stats, _ = median_time(lambda _: (x.mean(axis=axes), x.var(axis=axes)), repeats)
    m32 = mean.astype(out_dtype).reshape(bsh)
    s32 = (weight / np.sqrt(var + EPS)).astype(out_dtype).reshape(bsh)
    b32 = bias.astype(out_dtype).reshape(bsh)

    def np_norm(_):
        np.subtract(x, m32, out=out)
        np.multiply(out, s32, out=out)
        np.add(out, b32, out=out)

    t_np_norm, _ = median_time(np_norm, repeats)

    def np_bn(_):  # batch statistics, then the same normalize into out=
        m = x.mean(axis=axes, keepdims=True)
        v = x.var(axis=axes, keepdims=True)
        np.subtract(x, m.astype(out_dtype), out=out)
        np.multiply(out, (weight.reshape(bsh) / np.sqrt(v + EPS)).astype(out_dtype), out=out)
        np.add(out, b32, out=out)

    t_np_bn, _ = median_time(np_bn, repeats)
    peers(r_stats, t_np_stats, None)
    peers(r_norm, t_np_norm, None)
    peers(r_bn, t_np_bn, None)

    # --- torch -------------------------------------------------------------------
    if torch is not None:
        import torch.nn.functional as F

        t = _torch_view(torch, x, layout)
        dims = (0,) + tuple(range(2, t.dim()))
        conv = x.dtype.kind != "f"  # torch's ops need float: the conversion is timed too
        tnote = "torch timed incl. uint8->float32 conversion" if conv else ""

        def tin():
            return t.float() if conv else t

        tdt = np.float32 if conv else x.dtype  # parameters in the dtype torch computes in
        rm = torch.from_numpy(mean.astype(tdt))
        rv = torch.from_numpy(var.astype(tdt))
        tw = torch.from_numpy(weight.astype(tdt))
        tb = torch.from_numpy(bias.astype(tdt))
        with torch.no_grad():
            t_t_stats, _ = median_time(
                lambda _: torch.var_mean(tin(), dim=dims, correction=0), repeats
            )
            t_t_norm, _ = median_time(
                lambda _: F.batch_norm(tin(), rm, rv, tw, tb, training=False, eps=EPS), repeats
            )
            rm2, rv2 = rm.clone(), rv.clone()
            t_t_bn, _ = median_time(
                lambda _: F.batch_norm(
                    tin(), rm2, rv2, tw, tb, training=True, momentum=0.1, eps=EPS
                ),
                repeats,
            )
        peers(r_stats, None, t_t_stats, tnote)
        peers(r_norm, None, t_t_norm, tnote)
        peers(r_bn, None, t_t_bn, tnote)
        del t
        time.sleep(0.3)  # let torch's OpenMP workers stop spinning before the next shape
    return rows


def bench_small(quick: bool, torch) -> dict[str, Any]:
    """Per-call times (us) of the three ops and numpy/torch statistics on ``SMALL_SHAPE``.

    Parameters
    ----------
    quick : bool
        Fewer calls.
    torch : module or None
        torch, to time ``var_mean`` too.

    Returns
    -------
    dict
        ``update_us``, ``normalizer_us``, ``batchnorm_train_us``, ``numpy_stats_us``,
        ``torch_stats_us`` (None without torch), the shape and the number of calls.
    """
    import numpy as np

    import nbbn

    blocks, per_block = (10, 10) if quick else (200, 25)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(SMALL_SHAPE, dtype=np.float32)
    c = SMALL_SHAPE[1]
    rs = nbbn.RunningStats(channel_axis=1)
    res: dict[str, Any] = {
        "shape": list(SMALL_SHAPE),
        "dtype": "float32",
        "calls": blocks * per_block,
    }
    res["update_us"] = per_call_us(lambda: rs.update(x), blocks, per_block)
    norm = nbbn.Normalizer(np.zeros(c), np.ones(c), channel_axis=1)
    out = np.empty_like(x)
    res["normalizer_us"] = per_call_us(lambda: norm(x, out=out), blocks, per_block)
    bn = nbbn.BatchNorm(c)
    res["batchnorm_train_us"] = per_call_us(lambda: bn(x, out=out), blocks, per_block)
    res["numpy_stats_us"] = per_call_us(
        lambda: (x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))), blocks, per_block
    )
    res["torch_stats_us"] = None
    if torch is not None:
        t = torch.from_numpy(x)
        with torch.no_grad():
            res["torch_stats_us"] = per_call_us(
                lambda: torch.var_mean(t, dim=(0, 2, 3), correction=0), blocks, per_block
            )
    return res
