"""The CUDA statistics kernels' device time under other launch configurations, each result
checked against the CPU backend; then where the host time of a small call goes.

Device time without host overhead: ``torch.cuda._sleep`` first holds the GPU for ~10 ms,
so the host queues all ``CALLS`` calls before the first runs, and the events around them
time the GPU alone. Run on a card after gpu_check.sh's numpy setup:
``python scripts/gpu_tune.py``. Under the simulator (``--small``) it only runs through.
"""

from __future__ import annotations

import cProfile
import itertools
import pstats
import sys
import time

import numpy as np
from numba import cuda

import nbbn
from nbbn.backends import cuda as cb

SMALL = "--small" in sys.argv
CALLS = 2 if SMALL else 20
SHAPES = [((2, 4, 6, 6), "float32", 1)] if SMALL else [
    ((64, 256, 56, 56), "float32", 1), ((64, 56, 56, 256), "float32", -1),
    ((1_000_000, 64), "float32", -1), ((256, 3, 224, 224), "uint8", 1),
    ((256, 224, 224, 3), "uint8", -1)]


def gpu_ms(fn) -> float:
    """Median-free: the device time per call of ``CALLS`` calls queued behind a sleep."""
    fn()
    cuda.synchronize()
    if SMALL:
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        return (time.perf_counter() - t0) / CALLS * 1e3
    import torch

    torch.cuda._sleep(20_000_000)  # ~10 ms of GPU cycles: the host gets ahead
    start, end = cuda.event(), cuda.event()
    start.record()
    for _ in range(CALLS):
        fn()
    end.record()
    end.synchronize()
    return cuda.event_elapsed_time(start, end) / CALLS


def host_data(shape, dtype):
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return (rng.standard_normal(shape, dtype=np.float32) * 2 + 5).astype(dtype)


def reference(h, axis):
    """count, mean, var (biased), min, max per channel in float64 numpy (no CPU kernels
    to compile on the device machine)."""
    v = np.moveaxis(h, axis, 0).reshape(h.shape[axis], -1).astype(np.float64)
    return (np.full(v.shape[0], v.shape[1]), v.mean(1), v.var(1), v.min(1), v.max(1))


def main() -> int:
    base = cb.config()
    sms = max(1, base.max_blocks // cb.BLOCKS_PER_SM)
    if "--fine" in sys.argv:  # the second sweep, around the first one's best
        grid = [(256, None, 24, base.block_elements)] + [
            (t, 16, bps, base.block_elements) for t, bps in (
                (128, 2), (128, 4), (128, 6), (128, 8), (128, 12), (64, 8), (64, 16),
                (64, 24), (256, 2), (256, 4))] + [(128, None, 4, base.block_elements)]
    else:
        grid = [(256, None, 24, base.block_elements)] + [
            (t, u, bps, be) for t, u, bps, be in itertools.product(
                (128, 256, 512), (None, 16), (8, 24, 64), (base.block_elements,))
            if (t, u, bps) != (256, None, 24)] + [
                (256, None, 24, 4 * base.block_elements),
                (256, None, 64, base.block_elements // 4)]
    if SMALL:
        grid = grid[:2]
    data = [(s, d, a, host_data(s, d)) for s, d, a in SHAPES]
    refs = [reference(h, a) for s, d, a, h in data]
    devs = [cuda.to_device(h) for *_, h in data]
    print("threads unroll blocks/SM block_elements | us per update, per shape: "
          + ", ".join(f"{s} {d}" for s, d, _, _ in data), flush=True)
    for t, u, bps, be in grid:
        cfg = cb.LaunchConfig(threads=t, block_elements=be, max_blocks=bps * sms,
                              merge_threads=base.merge_threads,
                              merge_blocks=base.merge_blocks, unroll=u)
        if SMALL:
            cfg = cb.LaunchConfig(threads=4, block_elements=64, max_blocks=8, merge_threads=1,
                                  merge_blocks=1, unroll=2)
        cb.set_config(cfg)
        row = []
        for (_s, _d, a, _), ref, x in zip(data, refs, devs, strict=True):
            rs = nbbn.RunningStats(channel_axis=a)
            try:
                us = gpu_ms(lambda rs=rs, x=x: rs.update(x)) * 1e3
                one = nbbn.channel_stats(x, a)
                cnt, mean, var, mn, mx = ref
                ok = (np.array_equal(one.count, cnt)
                      and np.allclose(one.var, var, rtol=1e-9, atol=0)
                      and np.allclose(one.mean, mean, rtol=1e-12, atol=0)
                      and np.array_equal(one.min, mn) and np.array_equal(one.max, mx))
                row.append(f"{us:7.1f}{'' if ok else ' WRONG'}")
            except Exception as exc:  # noqa: BLE001 - a config the card refuses
                row.append(f"error {type(exc).__name__}: {str(exc)[:60]}")
        print(f"{t:4d} {u!s:>5} {bps:3d} {be:6d} | " + " | ".join(row), flush=True)
    cb.set_config(None)
    if "--fine" in sys.argv:
        return 0

    # the normalizer and BatchNorm device times at the default configuration
    for (s, d, a, _), ref, x in zip(data, refs, devs, strict=True):
        out = cuda.device_array(s, np.float32)
        norm = nbbn.Normalizer(ref[1], ref[2], channel_axis=a)
        bn = nbbn.BatchNorm(s[a], channel_axis=a)
        print(f"{s} {d}: normalizer {gpu_ms(lambda n=norm, x=x, o=out: n(x, out=o)) * 1e3:.1f}"
              f" us, batchnorm train {gpu_ms(lambda b=bn, x=x, o=out: b(x, out=o)) * 1e3:.1f}"
              " us (device time)", flush=True)

    # the host side of a small call: nbbn's own functions by cumulative time
    x = cuda.to_device(np.ones((8, 16, 4, 4), np.float32))
    out = cuda.device_array((8, 16, 4, 4), np.float32)
    rs = nbbn.RunningStats()
    norm = nbbn.channel_stats(x).to_normalizer()
    for name, fn in (("update", lambda: rs.update(x)), ("normalizer", lambda: norm(x, out=out))):
        fn()
        cuda.synchronize()
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(200):
            fn()
        cuda.synchronize()
        pr.disable()
        print(f"\n=== host profile, 200 x {name} (8, 16, 4, 4) float32, cumulative", flush=True)
        pstats.Stats(pr, stream=sys.stdout).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
