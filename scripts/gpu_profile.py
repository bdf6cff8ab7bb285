"""Where a CUDA call's time goes: cProfile of the host side, and the kernels' own device
times from torch's profiler (CUPTI sees Numba's kernels too). Run on a card:
``python scripts/gpu_profile.py`` (after gpu_check.sh's numpy setup)."""

from __future__ import annotations

import cProfile
import pstats
import sys

import numpy as np
from numba import cuda

import nbbn

CALLS = 200


def cases():
    for shape, axis in (((64, 256, 56, 56), 1), ((64, 56, 56, 256), -1), ((8, 16, 4, 4), 1)):
        x = cuda.to_device(np.random.default_rng(0).standard_normal(shape, np.float32))
        out = cuda.device_array(shape, np.float32)
        rs = nbbn.RunningStats(channel_axis=axis)
        norm = nbbn.channel_stats(x, axis).to_normalizer()
        bn = nbbn.BatchNorm(shape[axis], channel_axis=axis)
        yield f"{shape} update", lambda rs=rs, x=x: rs.update(x)
        yield f"{shape} normalizer", lambda n=norm, x=x, o=out: n(x, out=o)
        yield f"{shape} batchnorm", lambda b=bn, x=x, o=out: b(x, out=o)


def main() -> int:
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    for name, fn in cases():
        fn()
        cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        cuda.synchronize()
        wall = (time.perf_counter() - t0) / CALLS * 1e6
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            cuda.synchronize()
        kern = [(e.key, e.count, e.device_time_total / 20) for e in prof.key_averages()
                if e.device_time_total > 0]
        print(f"\n=== {name}: {wall:.1f} us per call (wall, {CALLS} calls, one sync)")
        for k, c, us in sorted(kern, key=lambda r: -r[2]):
            print(f"   kernel {k[:70]:<70} x{c // 20} {us:8.1f} us per call")
        if "update" in name or "8, 16" in name:
            pr = cProfile.Profile()
            pr.enable()
            for _ in range(CALLS):
                fn()
            cuda.synchronize()
            pr.disable()
            st = pstats.Stats(pr, stream=sys.stdout)
            st.sort_stats("tottime").print_stats(18)
    return 0


if __name__ == "__main__":
    sys.exit(main())
