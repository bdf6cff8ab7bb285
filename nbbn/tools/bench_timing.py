"""Timing for ``nbbn bench``: the memory-bandwidth kernels, medians and paired ratios.

* The read bandwidth is a Numba sum and the copy bandwidth a Numba copy over
  :data:`N_PARTS` partitions, spread over the threads of nbbn's CPU backend the way its
  kernels are (serial kernels on chunks, ``cpu._run``), compiled on first use, outside
  any timed region. Using numba's own ``parallel=True`` instead would pit its threading
  layer's spinning workers against nbbn's threads right before each timed call.
* :func:`median_time` times an operation (median of the repeats, after a warm-up
  call); :func:`interleaved` times several in turn, one call of each per round and the
  order reversed every other round; :func:`paired_pct` times it right after a
  bandwidth kernel, call by call, so that the ratio compares the two at the same moment
  on a shared host;
  :func:`per_call_us` times a small batch's per-call overhead in blocks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["N_PARTS", "bw_kernels", "interleaved", "measure_bandwidth", "median_time",
           "paired_pct", "per_call_us"]

N_PARTS = 64  # partitions of the bandwidth kernels

# ----------------------------------------------------------------- bandwidth kernels
_kernels: dict[str, Callable[..., Any]] = {}


def bw_kernels() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Compile (lazily) a sum and a copy over ``N_PARTS`` partitions, on nbbn's threads.

    Each partition takes a slice and loops over it with a unit-stride range: indexing
    ``a[i]`` for i in ``range(lo, hi)`` instead does not vectorize in Numba.

    Returns
    -------
    tuple of callable
        ``read_sum(a)`` and ``copy(src, dst)`` on float32 arrays.
    """
    if not _kernels:
        import numba
        import numpy as np

        from ..backends import cpu

        @numba.njit(fastmath=True, nogil=True)
        def read_chunk(a, t, nt, part):
            n = a.size
            for p in range(N_PARTS * t // nt, N_PARTS * (t + 1) // nt):
                seg = a[n * p // N_PARTS: n * (p + 1) // N_PARTS]
                s = np.float32(0)
                for i in range(seg.size):
                    s += seg[i]
                part[p] = s

        @numba.njit(fastmath=True, nogil=True)
        def copy_chunk(src, dst, t, nt):
            n = src.size
            for p in range(N_PARTS * t // nt, N_PARTS * (t + 1) // nt):
                s = src[n * p // N_PARTS: n * (p + 1) // N_PARTS]
                d = dst[n * p // N_PARTS: n * (p + 1) // N_PARTS]
                for i in range(s.size):
                    d[i] = s[i]

        def read_sum(a):
            part = np.zeros(N_PARTS)
            cpu._run(read_chunk, (a,), (part,), a.size, N_PARTS)
            return part.sum()

        def copy(src, dst):
            cpu._run(copy_chunk, (src, dst), (), src.size, N_PARTS)

        # compile and start the thread pool now, outside any timed region
        a = np.ones(cpu.THREADED_MIN_ELEMENTS, dtype=np.float32)
        b = np.empty_like(a)
        for _ in range(20):
            read_sum(a)
            copy(a, b)
        _kernels["read"] = read_sum
        _kernels["copy"] = copy
    return _kernels["read"], _kernels["copy"]


def median_time(fn: Callable[[Any], Any], repeats: int, setup: Callable[[], Any] | None = None):
    """Median wall time of ``fn(setup())`` over ``repeats`` timed calls, after one warm-up.

    Parameters
    ----------
    fn : callable
        The operation; called with ``setup()``'s result (None without ``setup``).
    repeats : int
        Timed calls.
    setup : callable, optional
        Untimed preparation before each call (e.g. a fresh ``RunningStats``).

    Returns
    -------
    tuple of (float, list of float)
        The median and every time, in seconds.
    """
    fn(setup() if setup else None)
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each of ``calls``, timed in turn: after one warm-up call of
    each, ``repeats`` rounds of one call of each, in reverse order every other round.
    A load change on a shared host then hits them all, and no call always runs right
    after the same other one (a fixed order was measured to favour the second of two
    kernels by up to 10%: docs/benchmarks.md, "The AMD host again")."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for r in range(repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def paired_pct(fn: Callable[[Any], Any], nbytes: int, kernel: tuple[Callable[[], Any], int],
               repeats: int, setup: Callable[[], Any] | None = None) -> float:
    """Median over ``repeats`` of (op GB/s) / (bandwidth kernel GB/s) timed back to back.

    The bandwidth of a shared host drifts (here between about 35 and 60 GB/s within
    seconds); a ratio taken from adjacent calls compares the two at the same moment.

    Parameters
    ----------
    fn : callable
        The operation, called with ``setup()``'s result.
    nbytes : int
        Bytes the operation moves.
    kernel : tuple of (callable, int)
        The bandwidth kernel's call and the bytes it moves.
    repeats : int
        Pairs timed.
    setup : callable, optional
        Untimed preparation before each call of ``fn``.

    Returns
    -------
    float
        The median ratio, in percent.
    """
    bw_fn, bw_bytes = kernel
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


def ceiling_gbps(bw: dict[str, Any], kind: str, read_pass_bytes: int, nbytes: int) -> float:
    """The GB/s an op of ``nbytes`` could reach on ``bw`` (:func:`measure_bandwidth`):
    the read speed (``kind`` "read"), the copy speed ("copy"), or for "mixed" (a
    read-only pass over ``read_pass_bytes`` bytes, then a read-and-write pass over the
    rest: BatchNorm's training forward) the speed of each pass in turn."""
    if kind == "read":
        return bw["read_gbps"]
    if kind == "copy":
        return bw["copy_gbps"]
    seconds = read_pass_bytes / bw["read_gbps"] + (nbytes - read_pass_bytes) / bw["copy_gbps"]
    return nbytes / seconds


def measure_bandwidth(nbytes_read: int, nbytes_copy: int, repeats: int) -> dict[str, Any]:
    """Read bandwidth over ``nbytes_read`` bytes and copy bandwidth copying ``nbytes_copy``.

    Parameters
    ----------
    nbytes_read, nbytes_copy : int
        Sizes of the summed array and of the copied one.
    repeats : int
        Timed calls (at least 5 are made).

    Returns
    -------
    dict
        ``read_gbps``, ``copy_gbps`` (best of the calls, as STREAM reports), their
        medians, the bytes and times.
    """
    import numpy as np

    read_sum, copy = bw_kernels()
    n = max(repeats, 5)
    rng = np.random.default_rng(7)  # distinct pages: nothing a host could deduplicate
    a = rng.random(max(1, nbytes_read // 4), dtype=np.float32)
    t_read_med, t_read_all = median_time(lambda _: read_sum(a), n)
    rb = a.nbytes
    src = rng.random(max(1, nbytes_copy // 4), dtype=np.float32)
    dst = np.empty_like(src)
    t_copy_med, t_copy_all = median_time(lambda _: copy(src, dst), n)
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


def per_call_us(fn: Callable[[], Any], blocks: int, per_block: int) -> float:
    """Median over ``blocks`` of the mean time per call within a block of ``per_block`` calls.

    Parameters
    ----------
    fn : callable
        The call to time (no arguments).
    blocks, per_block : int
        Blocks timed, and calls per block.

    Returns
    -------
    float
        Microseconds per call.
    """
    for _ in range(per_block):
        fn()
    per = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        per.append((time.perf_counter() - t0) / per_block)
    return statistics.median(per) * 1e6
