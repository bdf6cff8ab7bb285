"""nbbn's worker pool (``cpu_pool``) against the ``concurrent.futures`` pool it replaced,
alternated in one process: an empty kernel split over two threads (the hand-off), then
``Normalizer(x, out=)`` and ``RunningStats.update`` of 1-2 M elements (threaded calls).
``threshold`` instead times the same calls of 0.1-1.6 M elements with
``cpu.THREADED_MIN_ELEMENTS`` set to 2**17 ... 2**20 and 2**30 (never threaded), to
see where two threads start to pay. Medians of 15 (11) alternating rounds, in
microseconds. Used for docs/benchmarks.md ("Twenty-second session")::

    python scripts/pool_handoff.py
    python scripts/pool_handoff.py threshold
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

import nbbn
from nbbn.backends import cpu
from nbbn.tools.bench_env import cpu_line


@numba.njit(nogil=True)
def _sum_chunk(a, t, nt):
    s = 0.0
    for i in range(a.size * t // nt, a.size * (t + 1) // nt):
        s += a[i]
    a[0] = a[0] + 0.0 * s


def _futures_run(executor):
    """``cpu._run`` as it was with a ``concurrent.futures`` pool."""

    def run(kernel, head, tail, size, chunks, scratch_bytes=None):
        nt = min(cpu.threads(), chunks) if size >= cpu.THREADED_MIN_ELEMENTS else 1

        def chunk(t):
            if scratch_bytes is None:
                kernel(*head, t, nt, *tail)
            else:
                kernel(*head, t, nt, *tail, cpu.scratch(scratch_bytes) if scratch_bytes else None)

        if nt <= 1:
            chunk(0)
            return
        futures = [executor.submit(chunk, t) for t in range(1, nt)]
        try:
            chunk(0)
        finally:
            for f in futures:
                f.result()

    return run


def _calls(rng, cases):
    for shape, dtype, axis, what in cases:
        x = (rng.standard_normal(shape, dtype=np.float32) * 20 + 100).astype(dtype)
        if what == "norm":
            rs = nbbn.RunningStats(channel_axis=axis).update(x)
            norm = nbbn.Normalizer(rs.mean, rs.var, channel_axis=axis)
            out = norm(x)
            yield (f"Normalizer(out=) {shape} {dtype}", x.size,
                   lambda n=norm, x=x, o=out: n(x, out=o))
        else:
            yield (f"update {shape} {dtype}", x.size,
                   lambda x=x, a=axis: nbbn.RunningStats(channel_axis=a).update(x))


def _alternate(sides: dict, op, size: int, rounds: int) -> dict[str, float]:
    reps = max(1, (1 << 23) // size)
    times: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds):
        for name in (names if r % 2 else names[::-1]):
            sides[name]()
            op()
            t0 = time.perf_counter()
            for _ in range(reps):
                op()
            times[name].append((time.perf_counter() - t0) / reps * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def pools() -> None:
    new_run, old_run = cpu._run, _futures_run(ThreadPoolExecutor(max(1, cpu.threads() - 1)))
    sides = {"futures": lambda: setattr(cpu, "_run", old_run),
             "cpu_pool": lambda: setattr(cpu, "_run", new_run)}
    a = np.ones(1 << 16)
    med = _alternate(sides, lambda: cpu._run(_sum_chunk, (a[:1],), (), cpu.THREADED_MIN_ELEMENTS,
                                             2), 1 << 16, 15)
    print(f"empty kernel on two threads: futures {med['futures']:.1f} us, "
          f"cpu_pool {med['cpu_pool']:.1f} us")
    cases = [((16, 64, 32, 32), "float32", 1, "norm"), ((8, 64, 56, 56), "float32", 1, "norm"),
             ((4096, 512), "float32", -1, "norm"), ((16, 64, 32, 32), "float32", 1, "stats"),
             ((8, 64, 56, 56), "float32", 1, "stats"), ((4096, 512), "float32", -1, "stats"),
             ((8, 224, 224, 3), "uint8", -1, "stats")]
    for name, size, op in _calls(np.random.default_rng(0), cases):
        med = _alternate(sides, op, size, 15)
        print(f"{name}: futures {med['futures']:.0f} us, cpu_pool {med['cpu_pool']:.0f} us "
              f"({med['cpu_pool'] / med['futures']:.3f})", flush=True)
    cpu._run = new_run


def threshold() -> None:
    default = cpu.THREADED_MIN_ELEMENTS
    values = [1 << 17, 1 << 18, 1 << 19, 1 << 20, 1 << 30]
    sides = {v: (lambda v=v: setattr(cpu, "THREADED_MIN_ELEMENTS", v)) for v in values}
    cases = [((1, 64, 56, 56), "float32", 1, k) for k in ("norm", "stats")] + [
        ((2, 64, 56, 56), "float32", 1, "norm"), ((4, 64, 56, 56), "float32", 1, "norm"),
        ((32, 256, 7, 7), "float32", 1, "norm"), ((1024, 512), "float32", -1, "norm"),
        ((2, 64, 56, 56), "float32", 1, "stats"), ((4, 64, 56, 56), "float32", 1, "stats"),
        ((4, 3, 224, 224), "uint8", 1, "stats"), ((16, 64, 32, 32), "float32", 1, "stats"),
        ((8, 64, 56, 56), "float32", 1, "stats")]
    for name, size, op in _calls(np.random.default_rng(0), cases):
        med = _alternate(sides, op, size, 11)
        print(f"{name}: " + ", ".join(f"2**{v.bit_length() - 1} {t:.0f}" for v, t in med.items())
              + " us", flush=True)
    cpu.THREADED_MIN_ELEMENTS = default


if __name__ == "__main__":
    print(cpu_line(), f"| {cpu.threads()} threads")
    threshold() if sys.argv[1:] == ["threshold"] else pools()
