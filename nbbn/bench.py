"""``nbbn bench``: speed of RunningStats.update, Normalizer(out=) and BatchNorm training
forward, against the memory bandwidth measured in the same run, numpy and torch.

Every number printed is measured in the run:

* times are medians over ``repeats`` timed calls after one untimed warm-up call
  (compilation, page faults);
* GB/s counts the bytes an op must move: x read once for the statistics, x read and
  the output written for the normalizer, x read twice and the output written once for
  BatchNorm training (statistics pass + normalize pass);
* the read bandwidth is a Numba parallel sum over the same number of bytes, the copy
  bandwidth a Numba parallel copy (bytes read + bytes written), both measured right
  before each shape's ops; "% bw" is GB/s over the read bandwidth (statistics) or the
  copy bandwidth (normalizer, BatchNorm);
* "vs numpy" / "vs torch" are the peer's median time over nbbn's median time.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

# (shape, dtype, layout, channel_axis). NHWC is the NCHW array above it, transposed.
FULL_SHAPES: list[tuple[tuple[int, ...], str, str, int]] = [
    ((64, 256, 56, 56), "float32", "NCHW", 1),
    ((64, 56, 56, 256), "float32", "NHWC", -1),
    ((256, 3, 224, 224), "uint8", "NCHW", 1),
    ((256, 224, 224, 3), "uint8", "NHWC", -1),  # HWC images, as PIL/OpenCV give them
    ((256, 3, 224, 224), "float32", "NCHW", 1),
    ((1_000_000, 64), "float32", "NC", -1),
]
QUICK_SHAPES: list[tuple[tuple[int, ...], str, str, int]] = [
    ((4, 16, 8, 8), "float32", "NCHW", 1),
    ((4, 8, 8, 16), "float32", "NHWC", -1),
    ((4, 3, 16, 16), "uint8", "NCHW", 1),
    ((4, 16, 16, 3), "uint8", "NHWC", -1),
    ((4, 3, 16, 16), "float32", "NCHW", 1),
    ((2_000, 64), "float32", "NC", -1),
]
SMALL_SHAPE = (8, 16, 4, 4)
N_PARTS = 64  # partitions of the bandwidth kernels
EPS = 1e-5

OPS = ("stats", "normalizer", "batchnorm_train")


# ----------------------------------------------------------------- bandwidth kernels
_kernels: dict[str, Callable[..., Any]] = {}


def _bw_kernels() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Compile (lazily) a parallel sum and a parallel copy over ``N_PARTS`` partitions.

    Each partition takes a slice and loops over it with a unit-stride range: indexing
    ``a[i]`` for i in ``range(lo, hi)`` instead does not vectorize in Numba.
    """
    if not _kernels:
        import numba
        import numpy as np

        @numba.njit(parallel=True, fastmath=True, nogil=True)
        def read_sum(a):
            n = a.size
            part = np.zeros(N_PARTS)
            for p in numba.prange(N_PARTS):
                lo = n * p // N_PARTS
                hi = n * (p + 1) // N_PARTS
                seg = a[lo:hi]
                s = np.float32(0)
                for i in range(seg.size):
                    s += seg[i]
                part[p] = s
            return part.sum()

        @numba.njit(parallel=True, fastmath=True, nogil=True)
        def copy(src, dst):
            n = src.size
            for p in numba.prange(N_PARTS):
                lo = n * p // N_PARTS
                hi = n * (p + 1) // N_PARTS
                s = src[lo:hi]
                d = dst[lo:hi]
                for i in range(s.size):
                    d[i] = s[i]

        # compile and start the thread pool now, outside any timed region
        a = np.ones(1 << 16, dtype=np.float32)
        b = np.empty_like(a)
        for _ in range(20):
            read_sum(a)
            copy(a, b)
        _kernels["read"] = read_sum
        _kernels["copy"] = copy
    return _kernels["read"], _kernels["copy"]


def _median_time(fn: Callable[[Any], Any], repeats: int, setup: Callable[[], Any] | None = None):
    """Median wall time of ``fn(setup())`` over ``repeats`` timed calls, after one warm-up."""
    fn(setup() if setup else None)
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _paired_pct(fn: Callable[[Any], Any], nbytes: int, bw_fn: Callable[[], Any],
                bw_bytes: int, repeats: int, setup: Callable[[], Any] | None = None) -> float:
    """Median over ``repeats`` of (op GB/s) / (bandwidth kernel GB/s) timed back to back.

    The bandwidth of a shared host drifts (here between about 35 and 60 GB/s within
    seconds); a ratio taken from adjacent calls compares the two at the same moment.
    """
    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        bw_fn()
        t_bw = time.perf_counter() - t0
        arg = setup() if setup else None
        t0 = time.perf_counter()
        fn(arg)
        t_op = time.perf_counter() - t0
        ratios.append((nbytes / t_op) / (bw_bytes / t_bw))
    return 100.0 * statistics.median(ratios)


def _measure_bandwidth(nbytes_read: int, nbytes_copy: int, repeats: int) -> dict[str, Any]:
    """Read bandwidth over ``nbytes_read`` bytes and copy bandwidth copying ``nbytes_copy``."""
    import numpy as np

    read_sum, copy = _bw_kernels()
    n = max(repeats, 5)
    rng = np.random.default_rng(7)  # distinct pages: nothing a host could deduplicate
    a = rng.random(max(1, nbytes_read // 4), dtype=np.float32)
    t_read_med, t_read_all = _median_time(lambda _: read_sum(a), n)
    rb = a.nbytes
    src = rng.random(max(1, nbytes_copy // 4), dtype=np.float32)
    dst = np.empty_like(src)
    t_copy_med, t_copy_all = _median_time(lambda _: copy(src, dst), n)
    moved = src.nbytes + dst.nbytes
    # The machine's capability: the best of the repeats (as STREAM reports it); the ops
    # are reported as medians, so the percentages lean against nbbn, never for it.
    t_read, t_copy = min(t_read_all), min(t_copy_all)
    return {
        "read_bytes": rb,
        "read_ms": t_read * 1e3,
        "read_gbps": rb / t_read / 1e9,
        "read_gbps_median": rb / t_read_med / 1e9,
        "copy_bytes": moved,
        "copy_ms": t_copy * 1e3,
        "copy_gbps": moved / t_copy / 1e9,
        "copy_gbps_median": moved / t_copy_med / 1e9,
    }


# --------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _environment(torch_mod) -> dict[str, Any]:
    import numba
    import numpy as np

    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    env: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "torch": None,
        "torch_threads": None,
    }
    try:
        from importlib.metadata import version

        env["nbbn"] = version("nbbn")
    except Exception:
        env["nbbn"] = "unknown (not installed)"
    if torch_mod is not None:
        env["torch"] = torch_mod.__version__
        env["torch_threads"] = torch_mod.get_num_threads()
    return env


class _CpuMonitor:
    """CPU time that other processes (and the hypervisor, as steal) took during the run.

    Reads the aggregate ``cpu`` line of /proc/stat (Linux only; elsewhere it reports None)
    and subtracts this process's own CPU time, children included. On a shared 2-core
    machine a busy neighbour makes every parallel kernel wait for its core, so the bench
    prints this next to its numbers.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource

        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        v = [int(t) for t in fields[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(v[i] for i in (0, 1, 2, 5, 6) if i < len(v)) / hz  # user nice system irq softirq
        steal = (v[7] if len(v) > 7 else 0) / hz
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            own += ru.ru_utime + ru.ru_stime
        return time.perf_counter(), busy, steal, own

    def report(self) -> dict[str, Any] | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        if wall <= 0:
            return None
        other = max(0.0, (end[1] - self.start[1]) - (end[3] - self.start[3]))
        return {
            "wall_s": wall,
            "own_cpus": (end[3] - self.start[3]) / wall,
            "other_cpus": other / wall,
            "steal_cpus": (end[2] - self.start[2]) / wall,
        }


def _wait_for_quiet(max_wait_s: float, threshold: float = 0.1, window_s: float = 1.0) -> float:
    """Wait until other processes use under ``threshold`` cores over ``window_s``; at most
    ``max_wait_s`` seconds. Returns the seconds waited (0 when already quiet or unmeasurable)."""
    t0 = time.perf_counter()
    while True:
        m = _CpuMonitor()
        if m.start is None:
            return 0.0
        time.sleep(window_s)
        r = m.report()
        waited = time.perf_counter() - t0
        if r is None or r["other_cpus"] + r["steal_cpus"] < threshold or waited >= max_wait_s:
            return waited - window_s if waited > window_s else 0.0


# ------------------------------------------------------------------- data and peers
def _make_data(shape, dtype: str, layout: str, seed: int, prev=None):
    """A seeded array; NHWC reuses the previous NCHW array's values when shapes match."""
    import numpy as np

    if layout == "NHWC":
        n, h, w, c = shape
        if prev is not None and prev.shape == (n, c, h, w) and prev.dtype == np.dtype(dtype):
            return np.ascontiguousarray(prev.transpose(0, 2, 3, 1))
        return np.ascontiguousarray(
            _make_data((n, c, h, w), dtype, "NCHW", seed).transpose(0, 2, 3, 1)
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
def _bench_shape(spec, x, repeats: int, torch, bw: dict[str, Any], say) -> list[dict[str, Any]]:
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
            ref = bw["read_gbps"] if bw_kind == "read" else bw["copy_gbps"]
            r["pct_bw"] = 100.0 * r["gbps"] / ref
        rows.append(r)
        return r

    def peers(r: dict[str, Any], t_np: float | None, t_torch: float | None, note: str = ""):
        if t_np is not None:
            r["numpy_ms"] = t_np * 1e3
            if r["time_ms"]:
                r["speedup_numpy"] = t_np * 1e3 / r["time_ms"]
        if t_torch is not None:
            r["torch_ms"] = t_torch * 1e3
            if r["time_ms"]:
                r["speedup_torch"] = t_torch * 1e3 / r["time_ms"]
        if note:
            r["note"] = (r["note"] + "; " if r["note"] else "") + note

    # --- nbbn: all three ops first, before numpy/torch touch the cores -------------
    t_stats, _ = _median_time(
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
    t_norm, _ = _median_time(lambda _: norm(x, out=out), repeats)

    bn_note = ""
    t_bn: float | None = None
    y_nbytes = x.size * out_dtype.itemsize
    t_bn_alloc: float | None = None
    try:
        bn = nbbn.BatchNorm(c, eps=EPS, momentum=0.1, channel_axis=ca)
        # timed like the normalizer, into a preallocated out=; bn(x) allocating y is recorded too
        t_bn, _ = _median_time(lambda _: bn(x, out=out), repeats)
        t_bn_alloc, _ = _median_time(lambda _: bn(x), repeats)
    except (TypeError, ValueError) as e:  # e.g. an input dtype BatchNorm does not take
        bn_note = f"nbbn BatchNorm: {type(e).__name__}: {e}"
    r_stats = row("stats", t_stats, x.nbytes, "read")
    r_norm = row("normalizer", t_norm, x.nbytes + out.nbytes, "copy")
    r_bn = row("batchnorm_train", t_bn, 2 * x.nbytes + y_nbytes, "copy", bn_note)
    r_bn["time_alloc_ms"] = None if t_bn_alloc is None else t_bn_alloc * 1e3
    del rs

    # --- the same ops interleaved with the bandwidth kernels (same-moment ratios) -----
    read_sum, copy = _bw_kernels()
    a = np.random.default_rng(7).random(max(1, x.nbytes // 4), dtype=np.float32)
    src = np.random.default_rng(8).random(max(1, out.nbytes // 4), dtype=np.float32)
    dst = np.empty_like(src)
    r_stats["pct_bw_paired"] = _paired_pct(
        lambda rs_: rs_.update(x), x.nbytes, lambda: read_sum(a), a.nbytes, repeats,
        lambda: nbbn.RunningStats(channel_axis=ca),
    )
    r_norm["pct_bw_paired"] = _paired_pct(
        lambda _: norm(x, out=out), r_norm["bytes"], lambda: copy(src, dst), 2 * src.nbytes,
        repeats,
    )
    if t_bn is not None:
        r_bn["pct_bw_paired"] = _paired_pct(
            lambda _: bn(x, out=out), r_bn["bytes"], lambda: copy(src, dst), 2 * src.nbytes,
            repeats,
        )

    # --- numpy -------------------------------------------------------------------
    t_np_stats, _ = _median_time(lambda _: (x.mean(axis=axes), x.var(axis=axes)), repeats)
    m32 = mean.astype(out_dtype).reshape(bsh)
    s32 = (weight / np.sqrt(var + EPS)).astype(out_dtype).reshape(bsh)
    b32 = bias.astype(out_dtype).reshape(bsh)

    def np_norm(_):
        np.subtract(x, m32, out=out)
        np.multiply(out, s32, out=out)
        np.add(out, b32, out=out)

    t_np_norm, _ = _median_time(np_norm, repeats)

    def np_bn(_):  # batch statistics, then the same normalize into out=
        m = x.mean(axis=axes, keepdims=True)
        v = x.var(axis=axes, keepdims=True)
        np.subtract(x, m.astype(out_dtype), out=out)
        np.multiply(out, (weight.reshape(bsh) / np.sqrt(v + EPS)).astype(out_dtype), out=out)
        np.add(out, b32, out=out)

    t_np_bn, _ = _median_time(np_bn, repeats)
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
            t_t_stats, _ = _median_time(
                lambda _: torch.var_mean(tin(), dim=dims, correction=0), repeats
            )
            t_t_norm, _ = _median_time(
                lambda _: F.batch_norm(tin(), rm, rv, tw, tb, training=False, eps=EPS), repeats
            )
            rm2, rv2 = rm.clone(), rv.clone()
            t_t_bn, _ = _median_time(
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


# ------------------------------------------------------------------- small batches
def _per_call_us(fn: Callable[[], Any], blocks: int, per_block: int) -> float:
    """Median over ``blocks`` of the mean time per call within a block of ``per_block`` calls."""
    for _ in range(per_block):
        fn()
    per = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        per.append((time.perf_counter() - t0) / per_block)
    return statistics.median(per) * 1e6


def _bench_small(quick: bool, torch) -> dict[str, Any]:
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
    res["update_us"] = _per_call_us(lambda: rs.update(x), blocks, per_block)
    norm = nbbn.Normalizer(np.zeros(c), np.ones(c), channel_axis=1)
    out = np.empty_like(x)
    res["normalizer_us"] = _per_call_us(lambda: norm(x, out=out), blocks, per_block)
    bn = nbbn.BatchNorm(c)
    res["batchnorm_train_us"] = _per_call_us(lambda: bn(x, out=out), blocks, per_block)
    res["numpy_stats_us"] = _per_call_us(
        lambda: (x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))), blocks, per_block
    )
    res["torch_stats_us"] = None
    if torch is not None:
        t = torch.from_numpy(x)
        with torch.no_grad():
            res["torch_stats_us"] = _per_call_us(
                lambda: torch.var_mean(t, dim=(0, 2, 3), correction=0), blocks, per_block
            )
    return res


# ------------------------------------------------------------------------ start-up
_STARTUP_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import nbbn
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
rs = nbbn.RunningStats(channel_axis=1).update(x)
t2 = time.perf_counter()
norm = nbbn.Normalizer(rs.mean, rs.var, channel_axis=1)
y = norm(x, out=np.empty_like(x))
t3 = time.perf_counter()
bn = nbbn.BatchNorm(3)
bn(x)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_update_s": t2 - t1,
                  "first_normalizer_s": t3 - t2, "first_batchnorm_s": t4 - t3}))
"""


def _bench_startup() -> dict[str, Any]:
    """Cold (empty Numba cache) and warm (cache filled by the cold run) process start-up."""
    import nbbn

    root = os.path.dirname(os.path.dirname(os.path.abspath(nbbn.__file__)))
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nbbn-bench-cache-") as cache:
        env = dict(os.environ)
        env["NUMBA_CACHE_DIR"] = cache
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for phase in ("cold", "warm"):
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-c", _STARTUP_SCRIPT],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                res[phase] = {"error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["first_calls_s"] = (
                r["first_update_s"] + r["first_normalizer_s"] + r["first_batchnorm_s"]
            )
            r["process_wall_s"] = wall
            res[phase] = r
    return res


# ----------------------------------------------------------------------- printing
def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _print_table(rows: list[dict[str, Any]], say) -> None:
    head = (
        f"{'op':<16} {'shape':<16} {'dtype':<7} {'layout':<6} {'time ms':>9} {'GB/s':>7}"
        f" {'% bw':>6} {'% pair':>6} {'numpy ms':>9} {'vs numpy':>8}"
        f" {'torch ms':>9} {'vs torch':>8}"
        f" {'busy':>5}"
    )
    say(head)
    say("-" * len(head))
    for r in rows:
        say(
            f"{r['op']:<16} {_shape_str(r['shape']):<16} {r['dtype']:<7} {r['layout']:<6}"
            f" {_fmt(r['time_ms'], '9.3f'):>9} {_fmt(r['gbps'], '7.2f'):>7}"
            f" {_fmt(r['pct_bw'], '5.0f') + '%' if r['pct_bw'] is not None else '-':>6}"
            f" {_fmt(r.get('pct_bw_paired'), '5.0f') + '%' if r.get('pct_bw_paired') else '-':>6}"
            f" {_fmt(r['numpy_ms'], '9.2f'):>9}"
            f" {_fmt(r['speedup_numpy'], '7.1f') + 'x' if r['speedup_numpy'] else '-':>8}"
            f" {_fmt(r['torch_ms'], '9.2f'):>9}"
            f" {_fmt(r['speedup_torch'], '7.1f') + 'x' if r['speedup_torch'] else '-':>8}"
            f" {_fmt(r.get('other_cpus'), '5.2f'):>5}"
        )
    alloc = [r for r in rows if r.get("time_alloc_ms") is not None]
    if alloc:
        say("  batchnorm_train without out= (bn(x) allocates y each call): " + "; ".join(
            f"{_shape_str(r['shape'])} {r['dtype']} {r['layout']} {r['time_alloc_ms']:.2f} ms"
            for r in alloc
        ))
    notes = sorted({r["note"] for r in rows if r["note"]})
    for n in notes:
        say(f"  note: {n}")


# --------------------------------------------------------------------------- main
def run_bench(
    shapes: Sequence[tuple[tuple[int, ...], str, str, int]] | None = None,
    repeats: int | None = None,
    json_path: str | os.PathLike[str] | None = None,
    *,
    quick: bool = False,
    use_torch: bool = True,
    startup: bool = True,
    wait_quiet_s: float = 0.0,
    file: TextIO | None = None,
) -> dict[str, Any]:
    """Run the benchmark, print its table to ``file``, optionally write JSON; return the results.

    ``shapes`` is a list of ``(shape, dtype, layout, channel_axis)`` with layout one of
    "NCHW", "NHWC", "NC" (default: the issue's five shapes plus HWC uint8 images, tiny
    ones with ``quick``).
    ``wait_quiet_s`` > 0 waits up to that long before each shape for other processes to go
    idle (on a shared machine a busy neighbour slows every parallel kernel).
    """
    import gc

    import nbbn  # noqa: F401  (fail early if the library is broken)

    out = sys.stdout if file is None else file

    def say(*a: object) -> None:
        print(*a, file=out, flush=True)

    if shapes is None:
        shapes = QUICK_SHAPES if quick else FULL_SHAPES
    if repeats is None:
        repeats = 2 if quick else 7
    torch: Any = None
    if use_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            torch = None
    t_start = time.perf_counter()
    monitor = _CpuMonitor()
    env = _environment(torch)
    say(f"nbbn bench  {env['date']}")
    say(f"cpu: {env['cpu']}  ({env['cpu_count']} logical cpus, {env['cpus_usable']} usable;"
        f" numba threads {env['numba_threads']}"
        + (f", torch threads {env['torch_threads']})" if torch is not None else ")"))
    say(f"python {env['python']}  numpy {env['numpy']}  numba {env['numba']}"
        f"  torch {env['torch'] or 'not used'}  nbbn {env['nbbn']}  ({env['platform']})")
    say(f"median of {repeats} timed calls after one warm-up call"
        + ("; QUICK mode: tiny shapes, numbers are not meaningful" if quick else ""))
    say("")

    rows: list[dict[str, Any]] = []
    bws: list[dict[str, Any]] = []
    prev = None
    for i, spec in enumerate(shapes):
        shape, dtype, layout, ca = spec
        x = _make_data(shape, dtype, layout, seed=i, prev=prev)
        if prev is not None:
            del prev
            gc.collect()
        out_itemsize = x.dtype.itemsize if x.dtype.kind == "f" else 4
        waited = _wait_for_quiet(wait_quiet_s) if wait_quiet_s > 0 else 0.0
        shape_monitor = _CpuMonitor()
        # bandwidth before and after the shape's ops; the better of the two is the ceiling
        bw = _measure_bandwidth(x.nbytes, x.size * out_itemsize, repeats)
        bw.update({"shape": list(shape), "dtype": dtype, "layout": layout})
        bws.append(bw)
        shape_rows = _bench_shape(spec, x, repeats, torch, bw, say)
        after = _measure_bandwidth(x.nbytes, x.size * out_itemsize, repeats)
        bw["read_gbps_before"], bw["copy_gbps_before"] = bw["read_gbps"], bw["copy_gbps"]
        bw["read_gbps_after"], bw["copy_gbps_after"] = after["read_gbps"], after["copy_gbps"]
        for kind in ("read", "copy"):
            if after[f"{kind}_gbps"] > bw[f"{kind}_gbps"]:
                bw[f"{kind}_gbps"] = after[f"{kind}_gbps"]
                bw[f"{kind}_ms"] = after[f"{kind}_ms"]
        for r in shape_rows:  # percentages against the final ceiling
            if r["gbps"] is not None:
                ref = bw["read_gbps"] if r["bw_kind"] == "read" else bw["copy_gbps"]
                r["pct_bw"] = 100.0 * r["gbps"] / ref
        rows.extend(shape_rows)
        busy = shape_monitor.report()
        other = None if busy is None else busy["other_cpus"] + busy["steal_cpus"]
        bw["other_cpus"] = other
        bw["waited_for_quiet_s"] = waited
        for r in shape_rows:
            r["other_cpus"] = other
        say(
            f"[{i + 1}/{len(shapes)}] {_shape_str(shape)} {dtype} {layout}"
            f" ({x.nbytes / 1e6:.1f} MB): read bw {bw['read_gbps']:.2f} GB/s,"
            f" copy bw {bw['copy_gbps']:.2f} GB/s (read + write), best of the repeats"
            f" before and after (read {bw['read_gbps_before']:.1f} / {bw['read_gbps_after']:.1f},"
            f" copy {bw['copy_gbps_before']:.1f} / {bw['copy_gbps_after']:.1f});"
            + (" other processes used -" if other is None else
               f" other processes used {other:.2f} cores meanwhile")
            + (f" (waited {waited:.0f} s for quiet)" if waited >= 1 else "")
        )
        # keep an NCHW float array for a following NHWC shape of the same data
        nxt = shapes[i + 1] if i + 1 < len(shapes) else None
        prev = x if (nxt is not None and nxt[2] == "NHWC" and layout == "NCHW") else None
        del x
        gc.collect()
    prev = None

    say("")
    say("GB/s: stats = bytes of x read; normalizer = x read + out written;"
        " batchnorm_train = 2 reads of x + 1 write of y.")
    say("nbbn normalizer and batchnorm_train (and numpy's) write into a preallocated out=;"
        " torch's F.batch_norm allocates its output.")
    say("% bw: of the read bandwidth (stats) or the copy bandwidth (normalizer, batchnorm_train)"
        " measured for that shape (best of the repeats, before and after its ops);")
    say("% pair: the same ratio taken call by call, each nbbn call right after a bandwidth-kernel"
        " call over the same bytes (median of the pairs): the fair figure on a shared host.")
    say("vs numpy / vs torch: peer median time / nbbn median time; busy: cores used by other"
        " processes while that shape ran (above ~0.1 the row is slowed by a neighbour).")
    say("numpy: x.mean+x.var | subtract/multiply/add with out= | mean+var then normalize;"
        " torch: var_mean | F.batch_norm(training=False) | F.batch_norm(training=True)")
    say("")
    _print_table(rows, say)

    small_monitor = _CpuMonitor()
    small = _bench_small(quick, torch)
    busy = small_monitor.report()
    small["other_cpus"] = None if busy is None else busy["other_cpus"] + busy["steal_cpus"]
    say("")
    say(
        f"small batch {_shape_str(small['shape'])} float32, median per call over"
        f" {small['calls']} calls: update {small['update_us']:.2f} us,"
        f" normalizer(out=) {small['normalizer_us']:.2f} us,"
        f" batchnorm train(out=) {small['batchnorm_train_us']:.2f} us;"
        f" numpy mean+var {small['numpy_stats_us']:.2f} us"
        + (f", torch var_mean {small['torch_stats_us']:.2f} us" if small["torch_stats_us"] else "")
        + ("" if small["other_cpus"] is None else
           f" (other processes used {small['other_cpus']:.2f} cores meanwhile)")
    )

    start: dict[str, Any] | None = None
    if startup:
        start = _bench_startup()
        say("")
        say("start-up in a fresh process (import numpy + nbbn, then the first update,"
            " normalizer and BatchNorm call on a small float32 NCHW batch):")
        for phase, label in (("cold", "empty Numba cache (compile)"), ("warm", "warm cache   ")):
            r = start.get(phase, {})
            if "error" in r:
                say(f"  {label}: FAILED: {r['error']}")
                continue
            say(
                f"  {label}: import {r['import_s']:.2f} s,"
                f" first update {r['first_update_s']:.2f} s,"
                f" normalizer {r['first_normalizer_s']:.2f} s,"
                f" batchnorm {r['first_batchnorm_s']:.2f} s;"
                f" process wall {r['process_wall_s']:.2f} s"
            )

    try:
        import numba

        env["numba_threading_layer"] = numba.threading_layer()
    except Exception:  # no parallel kernel ran yet
        env["numba_threading_layer"] = None
    elapsed = time.perf_counter() - t_start
    load = monitor.report()
    say("")
    say(f"numba threading layer: {env['numba_threading_layer']}; bench took {elapsed:.0f} s")
    measured = [
        v for v in [b.get("other_cpus") for b in bws] + [small.get("other_cpus")] if v is not None
    ]
    worst = max(measured) if measured else None
    if load is not None:
        say(
            f"cpu use over the whole run incl. any waits (cores, averaged): this bench"
            f" {load['own_cpus']:.2f}, other processes {load['other_cpus']:.2f},"
            f" hypervisor steal {load['steal_cpus']:.2f}"
        )
    if worst is not None:
        say(
            f"busiest measured phase: other processes used {worst:.2f} cores"
            + ("  <- a neighbour was busy: the rows marked busy > 0.1 are pessimistic"
               if worst > 0.1 else " (a quiet machine)")
        )

    result = {
        "env": env,
        "quick": quick,
        "repeats": repeats,
        "bandwidth": bws,
        "results": rows,
        "small_batch": small,
        "startup": start,
        "elapsed_s": elapsed,
        "cpu_load": load,
        "max_other_cpus_measured": worst,
    }
    if json_path is not None:
        _write_json(json_path, result)
        say(f"wrote {os.fspath(json_path)}")
    return result


def _write_json(path, result: dict[str, Any]) -> None:
    from ._durable import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(result, f, indent=2, default=_json_default)
        f.write("\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
