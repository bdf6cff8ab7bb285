"""``nbbn bench --backend cuda``: the GPU benchmark.

For the CPU bench's shapes, on device data (Numba device arrays): ``RunningStats.update``,
``Normalizer(x, out=)`` and the training ``BatchNorm`` forward, timed with CUDA events
around each call (median of the repeats). Where torch has CUDA, also as device time:
``QUEUED`` calls queued behind a ``torch.cuda._sleep`` of about 10 ms, so that the host
is ahead and the events time the GPU alone (a call's host overhead, 175-260 us on an
H200 host, hides the kernels of any batch under about 0.7 GB). Both against the
device's read bandwidth (``torch.sum`` over 1 GiB, or a Numba reduction without torch)
and copy bandwidth (a device-to-device copy, bytes read plus written) measured in the
same run, and against torch's ``var_mean``, eval ``F.batch_norm`` and training
``F.batch_norm`` when torch has CUDA. Then the host overhead per call for a tiny
(8, 16, 4, 4) batch. Under the CUDA simulator only the smoke-test shapes run and the
times mean nothing.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numba
import numpy as np
from numba import cuda

from .bench_ops import FULL_SHAPES, QUICK_SHAPES, SMALL_SHAPE

SIM_SHAPES = [((2, 4, 6, 6), "float32", "NCHW", 1), ((2, 6, 6, 4), "float32", "NHWC", -1),
              ((40, 8), "float32", "NC", -1)]
BW_BYTES = 1 << 30
EPS = 1e-5
QUEUED = 20  # calls per device-time measurement
SLEEP_CYCLES = 20_000_000  # about 10 ms at the H100/H200's 1.98 GHz


@dataclass(frozen=True)
class _Run:
    """What every measurement of one run needs: numba.cuda, torch (or None), the timer
    and the number of repeats."""

    cuda: Any
    torch: Any
    timeit: Callable[[Callable[[], Any], int], float]
    repeats: int

    def device_ms(self, fn: Callable[[], Any]) -> float | None:
        """Device time per call (ms): ``QUEUED`` calls queued behind a GPU sleep (None
        without torch's CUDA)."""
        if self.torch is None:
            return None
        fn()
        self.cuda.synchronize()
        self.torch.cuda._sleep(SLEEP_CYCLES)  # the host gets ahead of the GPU
        start, end = self.cuda.event(), self.cuda.event()
        start.record()
        for _ in range(QUEUED):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / QUEUED


def _versions(cuda) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                            "numba": numba.__version__}
    try:
        from importlib.metadata import version

        info["numba_cuda"] = version("numba-cuda")
    except Exception:  # noqa: BLE001
        info["numba_cuda"] = None
    try:
        dev = cuda.get_current_device()
        name = dev.name
        info["device"] = name.decode() if isinstance(name, bytes) else str(name)
        info["compute_capability"] = list(dev.compute_capability)
        info["sms"] = int(dev.MULTIPROCESSOR_COUNT)
        drv = cuda.cudadrv.driver.driver.get_version()
        info["driver_cuda_version"] = list(drv)
    except Exception as exc:  # noqa: BLE001 - simulator or an old driver
        info["device"] = f"unknown ({exc.__class__.__name__})"
    return info


def _timer(cuda, sim: bool):
    """``time(fn, repeats) -> median ms``: CUDA events on the default stream (wall clock
    under the simulator)."""

    def run(fn: Callable[[], Any], repeats: int) -> float:
        fn()  # warm-up: compilation, caches
        cuda.synchronize()
        times = []
        for _ in range(repeats):
            if sim:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
                continue
            start, end = cuda.event(), cuda.event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cuda.event_elapsed_time(start, end))
        return statistics.median(times)

    return run


def _bandwidth(run: _Run, nbytes: int) -> dict[str, Any]:
    cuda, torch, timeit, repeats = run.cuda, run.torch, run.timeit, run.repeats
    n = nbytes // 4
    src = cuda.to_device(np.ones(n, np.float32))
    dst = cuda.device_array(n, np.float32)
    if torch is not None:
        t = torch.as_tensor(src, device="cuda")
        read_ms = timeit(lambda: t.sum(), repeats)
        how = "torch.sum"
    else:
        read_ms = timeit(lambda: _numba_sum(cuda, src), repeats)
        how = "numba reduction"
    copy_ms = timeit(lambda: dst.copy_to_device(src), repeats)
    return {"read_GBps": nbytes / read_ms / 1e6, "copy_GBps": 2 * nbytes / copy_ms / 1e6,
            "read_method": how, "bytes": nbytes}


_sum_kernel = None


def _numba_sum(cuda, x):
    global _sum_kernel
    if _sum_kernel is None:
        _sum_kernel = (_sum_float32, cuda.device_array(1, np.float32))
    k, out = _sum_kernel
    sim = not hasattr(x, "gpu_data")
    grid, block = (4, 32) if sim else (1024, 256)
    k[grid, block](x, out)


@cuda.jit
def _sum_float32(a, out):
    """A plain grid-stride sum: the read bandwidth without torch."""
    i = cuda.grid(1)
    s = numba.float32(0)
    while i < a.size:
        s += a[i]
        i += cuda.gridsize(1)
    cuda.atomic.add(out, 0, s)


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _device_data(cuda, spec, seed: int):
    shape, dtype, _, _ = spec
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        host = rng.integers(0, 256, size=shape, dtype=np.uint8)
    else:
        host = (rng.standard_normal(shape, dtype=np.float32) * 2 + 1).astype(dtype)
    return cuda.to_device(host)


def _bench_shape(run: _Run, spec, bw: dict, seed: int) -> list[dict]:
    import nbbn

    cuda, torch, timeit, repeats = run.cuda, run.torch, run.timeit, run.repeats
    shape, dtype, layout, axis = spec
    x = _device_data(cuda, spec, seed)
    c = shape[axis]
    nbytes = x.size * np.dtype(dtype).itemsize
    out_dtype = np.float32 if dtype == "uint8" else np.dtype(dtype)
    out = cuda.device_array(shape, out_dtype)
    out_bytes = x.size * np.dtype(out_dtype).itemsize
    rs = nbbn.RunningStats(channel_axis=axis)
    norm = nbbn.channel_stats(x, axis).to_normalizer()
    bn = nbbn.BatchNorm(c, channel_axis=axis)
    ops = {
        "stats": (lambda: rs.update(x), nbytes, "read"),
        "normalizer": (lambda: norm(x, out=out), nbytes + out_bytes, "copy"),
        "batchnorm_train": (lambda: bn(x, out=out), 2 * nbytes + out_bytes, "copy"),
    }
    ref: dict[str, Callable[[], Any]] = {}
    if torch is not None and dtype != "uint8":
        import torch.nn.functional as F

        t = torch.as_tensor(x, device="cuda")
        if axis in (-1, len(shape) - 1):  # channels-last: torch wants (N, C, ...) views
            t = t.movedim(-1, 1)
        dims = [d for d in range(t.ndim) if d != 1]
        # cuDNN wants float64 parameters for float64 data, float32 for half and float32
        kw = {"device": "cuda", "dtype": torch.float64 if dtype == "float64" else torch.float32}
        rm, rv = torch.zeros(c, **kw), torch.ones(c, **kw)
        w, b = torch.ones(c, **kw), torch.zeros(c, **kw)
        ref = {
            "stats": lambda: torch.var_mean(t, dim=dims, correction=0),  # as the CPU bench
            "normalizer": lambda: F.batch_norm(t, rm, rv, w, b, training=False),
            "batchnorm_train": lambda: F.batch_norm(t, rm, rv, w, b, training=True),
        }
    rows = []
    for op, (fn, moved, kind) in ops.items():
        ms = timeit(fn, repeats)
        gbps = moved / ms / 1e6
        torch_ms = timeit(ref[op], repeats) if op in ref else None
        dev_ms = run.device_ms(fn)
        torch_dev_ms = run.device_ms(ref[op]) if op in ref else None
        dev_gbps = None if dev_ms is None else moved / dev_ms / 1e6
        rows.append({
            "op": op, "shape": list(shape), "dtype": dtype, "layout": layout,
            "time_ms": ms, "gbps": gbps,
            "pct_read_bw": 100 * gbps / bw["read_GBps"],
            "pct_copy_bw": 100 * gbps / bw["copy_GBps"],
            "bw_kind": kind,
            "torch_ms": torch_ms, "vs_torch": None if torch_ms is None else torch_ms / ms,
            "device_ms": dev_ms, "device_gbps": dev_gbps,
            "device_pct_bw": None if dev_gbps is None
            else 100 * dev_gbps / bw[f"{kind}_GBps"],
            "torch_device_ms": torch_dev_ms,
            "vs_torch_device": None if torch_dev_ms is None or dev_ms is None
            else torch_dev_ms / dev_ms,
        })
    return rows


def _overhead(run: _Run, calls: int) -> dict[str, float]:
    """Host time per call (us) for a tiny batch, with one synchronize at the end."""
    import nbbn

    cuda, torch = run.cuda, run.torch
    x = cuda.to_device(np.ones(SMALL_SHAPE, np.float32))
    out = cuda.device_array(SMALL_SHAPE, np.float32)
    rs = nbbn.RunningStats()
    norm = nbbn.channel_stats(x).to_normalizer()

    def per_call(fn) -> float:
        fn()
        cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        cuda.synchronize()
        return (time.perf_counter() - t0) / calls * 1e6

    res = {"update_us": per_call(lambda: rs.update(x)),
           "normalizer_us": per_call(lambda: norm(x, out=out))}
    if torch is not None:
        t = torch.as_tensor(x, device="cuda")
        tout = torch.as_tensor(out, device="cuda")
        res["update_torch_tensor_us"] = per_call(lambda: rs.update(t))
        res["normalizer_torch_tensor_us"] = per_call(lambda: norm(t, out=tout))
    return res


def run_cuda_bench(*, quick: bool = False, repeats: int | None = None, json_path=None,
                   use_torch: bool = True, file: TextIO,
                   only: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Run the GPU benchmark, print the table to ``file``, return (and save) the results.

    Parameters
    ----------
    quick : bool, default False
        Small shapes and few repeats (the simulator always runs its smoke-test shapes).
    repeats : int, optional
        Timed calls per measurement, the median is reported (default 20; 2 with
        ``quick`` or in the simulator).
    json_path : path, optional
        Also write the results there as JSON.
    use_torch : bool, default True
        Compare against torch when it has CUDA.
    file : text stream
        Where the report is printed.
    only : set of (str, str), optional
        Only the shapes of these ``(dtype, layout)`` pairs (``("uint8", "NHWC")``).

    Returns
    -------
    dict
        ``info``, ``bandwidth``, ``rows`` (per op and shape), ``overhead``,
        ``simulator`` and ``repeats``.

    Raises
    ------
    BackendUnavailableError
        numba-cuda or a GPU is missing.
    """
    from numba.core import config

    from ..backends import resolve

    resolve("cuda")  # a clear error when numba-cuda or the GPU is missing
    sim = bool(getattr(config, "ENABLE_CUDASIM", 0))

    def say(s: str = "") -> None:
        print(s, file=file, flush=True)

    repeats = repeats or (2 if quick or sim else 20)
    torch = _torch_cuda() if use_torch and not sim else None
    run = _Run(cuda, torch, _timer(cuda, sim), repeats)
    info = _versions(cuda)
    if torch is not None:
        info["torch"] = torch.__version__
    say(f"nbbn bench --backend cuda on {info.get('device')}"
        f"{' (CUDA SIMULATOR: times are meaningless)' if sim else ''}")
    say("  " + ", ".join(f"{k}={v}" for k, v in info.items() if k != "device"))
    bw = _bandwidth(run, (1 << 20) if quick or sim else BW_BYTES)
    say(f"  read bandwidth {bw['read_GBps']:.0f} GB/s ({bw['read_method']}), "
        f"copy bandwidth {bw['copy_GBps']:.0f} GB/s (device-to-device, read + write)")
    shapes = SIM_SHAPES if sim else (QUICK_SHAPES if quick else FULL_SHAPES)
    if only is not None:
        shapes = [spec for spec in shapes if spec[1:3] in only]
    rows: list[dict] = []
    for i, spec in enumerate(shapes):
        rows.extend(_bench_shape(run, spec, bw, seed=i))
    say()
    head = (f"{'op':<16} {'shape':<17} {'dtype':<7} {'layout':<5} {'time us':>9} {'GB/s':>8}"
            f" {'% read':>7} {'% copy':>7} {'torch us':>9} {'vs torch':>8}")
    say(head)
    say("-" * len(head))
    for r in rows:
        tms = "-" if r["torch_ms"] is None else f"{r['torch_ms'] * 1e3:9.1f}"
        vs = "-" if r["vs_torch"] is None else f"{r['vs_torch']:7.2f}x"
        say(f"{r['op']:<16} {'x'.join(map(str, r['shape'])):<17} {r['dtype']:<7} "
            f"{r['layout']:<5} {r['time_ms'] * 1e3:9.1f} {r['gbps']:8.0f} "
            f"{r['pct_read_bw']:6.0f}% {r['pct_copy_bw']:6.0f}% {tms:>9} {vs:>8}")
    if any(r["device_ms"] is not None for r in rows):
        say()
        say(f"device time ({QUEUED} calls queued behind a GPU sleep: no host overhead)")
        head = (f"{'op':<16} {'shape':<17} {'dtype':<7} {'layout':<5} {'dev us':>9} "
                f"{'GB/s':>8} {'% bw':>6} {'torch us':>9} {'vs torch':>8}")
        say(head)
        say("-" * len(head))
        for r in rows:
            if r["device_ms"] is None:
                continue
            tms = "-" if r["torch_device_ms"] is None else f"{r['torch_device_ms'] * 1e3:9.1f}"
            vs = "-" if r["vs_torch_device"] is None else f"{r['vs_torch_device']:7.2f}x"
            say(f"{r['op']:<16} {'x'.join(map(str, r['shape'])):<17} {r['dtype']:<7} "
                f"{r['layout']:<5} {r['device_ms'] * 1e3:9.1f} {r['device_gbps']:8.0f} "
                f"{r['device_pct_bw']:5.0f}% {tms:>9} {vs:>8}")
        say("  (% bw: of the read bandwidth for stats, of the copy bandwidth otherwise)")
    overhead = _overhead(run, calls=20 if sim else 2000)
    say()
    say(f"host overhead per call, {SMALL_SHAPE} float32: " + ", ".join(
        f"{k[:-3]} {v:.1f} us" for k, v in overhead.items()))
    from .bench_env import cpu_record

    result = {"host": cpu_record(), "info": info, "bandwidth": bw, "rows": rows,
              "overhead": overhead, "simulator": sim, "repeats": repeats}
    if json_path:
        from .bench import _write_json  # atomic, as every bench's JSON

        _write_json(json_path, result)
    return result
