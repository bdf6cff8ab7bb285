"""``nbbn bench --torch``: nbbn on torch tensors, one function per measurement.

Each measurement is a function ``(shapes, repeats) -> list of row dicts`` listed in
:data:`MEASUREMENTS`; :func:`run_torch_bench` runs them in order and prints one table
each. Contenders are timed in alternation (numpy, tensor, numpy, tensor, ...) and the
ratio is the median of the per-pair ratios, so a shared machine's drift cancels.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TextIO

import numpy as np

from .bench_ops import FULL_SHAPES, QUICK_SHAPES

__all__ = ["MEASUREMENTS", "bench_normalizer_tensors", "bench_update_tensors",
           "paired_ratio", "run_torch_bench"]

Shape = tuple[tuple[int, ...], str, str, int]


def _shapes(quick: bool) -> list[Shape]:
    """The first five shapes of ``nbbn bench`` (float32 and uint8, NCHW and NHWC)."""
    return (QUICK_SHAPES if quick else FULL_SHAPES)[:5]


def paired_ratio(base: Callable[[], Any], other: Callable[[], Any], repeats: int
                 ) -> tuple[float, float, float]:
    """``(median base s, median other s, median of other/base per pair)``; the order
    within a pair alternates, after one untimed call of each."""
    base()
    other()
    tb, to, ratios = [], [], []
    for i in range(repeats):
        pair = []
        for fn in ((base, other) if i % 2 == 0 else (other, base)):
            t0 = time.perf_counter()
            fn()
            pair.append((fn, time.perf_counter() - t0))
        b = next(t for fn, t in pair if fn is base)
        o = next(t for fn, t in pair if fn is other)
        tb.append(b)
        to.append(o)
        ratios.append(o / b)
    return statistics.median(tb), statistics.median(to), statistics.median(ratios)


def _data(shape: tuple[int, ...], dtype: str, rng) -> np.ndarray:
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def _update(axis: int, x) -> None:
    import nbbn

    nbbn.RunningStats(axis).update(x)


def bench_update_tensors(shapes: list[Shape], repeats: int) -> list[dict]:
    """``RunningStats.update`` on a numpy array and on the CPU tensor over the same
    memory (``5 * repeats`` pairs), and the same shape in bfloat16, which has no numpy
    peer."""
    import torch

    rows = []
    rng = np.random.default_rng(0)
    for shape, dtype, layout, axis in shapes:
        x = _data(shape, dtype, rng)
        t = torch.from_numpy(x)
        # 5x the pairs: a call takes 1-10 ms, where 11 pairs scatter by +-10%
        tn, tt, ratio = paired_ratio(partial(_update, axis, x), partial(_update, axis, t),
                                     5 * repeats)
        rows.append(dict(op="update", shape=list(shape), dtype=dtype, layout=layout,
                         numpy_ms=tn * 1e3, tensor_ms=tt * 1e3, ratio=ratio,
                         gbps=x.nbytes / tt / 1e9))
        if dtype == "float32":
            b = t.to(torch.bfloat16)
            tb, _ = _median(partial(_update, axis, b), repeats)
            rows.append(dict(op="update", shape=list(shape), dtype="bfloat16", layout=layout,
                             numpy_ms=None, tensor_ms=tb * 1e3, ratio=None,
                             gbps=b.numel() * 2 / tb / 1e9))
    return rows


def bench_normalizer_tensors(shapes: list[Shape], repeats: int) -> list[dict]:
    """``Normalizer(x)`` (a new output) on a numpy array and on the CPU tensor over the
    same memory (the tensor path returns a tensor), and bfloat16 in and out."""
    import torch

    import nbbn

    rows = []
    rng = np.random.default_rng(1)
    for shape, dtype, layout, axis in shapes:
        x = _data(shape, dtype, rng)
        t = torch.from_numpy(x)
        nchan = shape[axis]
        norm = nbbn.Normalizer(np.full(nchan, 0.5), np.full(nchan, 2.0), channel_axis=axis)
        tn, tt, ratio = paired_ratio(partial(norm, x), partial(norm, t), repeats)
        out_bytes = x.size * (4 if dtype == "uint8" else x.dtype.itemsize)
        rows.append(dict(op="normalizer", shape=list(shape), dtype=dtype, layout=layout,
                         numpy_ms=tn * 1e3, tensor_ms=tt * 1e3, ratio=ratio,
                         gbps=(x.nbytes + out_bytes) / tt / 1e9))
        if dtype == "float32":
            b = t.to(torch.bfloat16)
            tb, _ = _median(partial(norm, b), repeats)
            rows.append(dict(op="normalizer", shape=list(shape), dtype="bfloat16",
                             layout=layout, numpy_ms=None, tensor_ms=tb * 1e3, ratio=None,
                             gbps=b.numel() * 4 / tb / 1e9))
    return rows


def bench_call_overhead(shapes: list[Shape], repeats: int) -> list[dict]:
    """What a tensor costs per call on top of the numpy path: ``update`` and
    ``Normalizer`` on a small float32 batch (16, 3, 8, 8), ``50 * repeats`` pairs (the
    large shapes above hide a few microseconds in their noise)."""
    import torch

    import nbbn

    shape = (16, 3, 8, 8)
    x = np.random.default_rng(2).standard_normal(shape, dtype=np.float32)
    t = torch.from_numpy(x)
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3))
    rows = []
    for op, fn in (("update", partial(_update, 1)), ("normalizer", norm)):
        tn, tt, ratio = paired_ratio(partial(fn, x), partial(fn, t), 50 * repeats)
        rows.append(dict(op=op, shape=list(shape), dtype="float32", layout="NCHW",
                         numpy_ms=tn * 1e3, tensor_ms=tt * 1e3, ratio=ratio,
                         # (the normalizer writes an output as large as x: counted, as
                         # in the other normalizer rows)
                         gbps=x.nbytes * (2 if op == "normalizer" else 1) / tt / 1e9,
                         extra_us=(tt - tn) * 1e6))
    return rows


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


MEASUREMENTS: list[tuple[str, Callable[[list[Shape], int], list[dict]]]] = [
    ("RunningStats.update: tensor vs numpy path", bench_update_tensors),
    ("Normalizer: tensor vs numpy path", bench_normalizer_tensors),
    ("Per call: update, then Normalizer, on a small batch", bench_call_overhead),
]
"""``(title, function)`` pairs that :func:`run_torch_bench` runs in order."""


def run_torch_bench(file: TextIO | None = None, quick: bool = False,
                    repeats: int | None = None) -> dict[str, Any]:
    """Run every measurement of :data:`MEASUREMENTS` and print a table for each.

    Parameters
    ----------
    file : text stream, optional
        Where the tables are printed (default ``sys.stdout``).
    quick : bool, default False
        Tiny shapes and 2 repeats (a smoke test).
    repeats : int, optional
        Timed pairs per row (default 11, 2 with ``quick``).

    Returns
    -------
    dict
        ``environment`` and, per measurement title, its rows.
    """
    import torch

    from .bench_env import environment

    file = sys.stdout if file is None else file
    repeats = repeats or (2 if quick else 11)
    env = environment(torch)
    print(f"nbbn bench --torch: {env['cpu']}, {env['threads']} threads, torch {torch.__version__}"
          f", {repeats} pairs per row, {5 * repeats} for update (medians; ratio = tensor / "
          "numpy time, per pair)",
          file=file)
    result: dict[str, Any] = {"environment": env}
    for title, fn in MEASUREMENTS:
        rows = fn(_shapes(quick), repeats)
        result[title] = rows
        print(f"\n{title}", file=file)
        print(f"{'shape':>20} {'dtype':>9} {'layout':>6} {'numpy ms':>9} {'tensor ms':>9} "
              f"{'ratio':>6} {'GB/s':>6}", file=file)
        for r in rows:
            num = "-" if r["numpy_ms"] is None else f"{r['numpy_ms']:.3f}"
            ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
            print(f"{'x'.join(map(str, r['shape'])):>20} {r['dtype']:>9} {r['layout']:>6} "
                  f"{num:>9} {r['tensor_ms']:>9.3f} {ratio:>6} {r['gbps']:>6.1f}"
                  + (f"  tensor +{r['extra_us']:.1f} us/call" if "extra_us" in r else ""),
                  file=file, flush=True)
    return result
