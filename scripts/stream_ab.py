"""Paired A/B of the normalizer (or BatchNorm training) with and without streamed outputs.

Usage: ``python scripts/stream_ab.py SHAPE DTYPE CHANNEL_AXIS [bn]``, e.g.
``python scripts/stream_ab.py 256x224x224x3 uint8 -1``. The two variants alternate
call by call (25 rounds, the order flipped every round); printed: each median time and
the median of the per-round ratios streamed / plain (below 1: streaming is faster).
The threshold ``cpu_stream.STREAM_MIN_BYTES`` is switched at run time: no recompiling.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import nbbn
from nbbn.backends import cpu_stream


def main() -> None:
    shape = tuple(int(v) for v in sys.argv[1].split("x"))
    dtype, axis = np.dtype(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    x = (rng.random(shape, dtype=np.float32) * 200).astype(dtype)
    rs = nbbn.RunningStats(channel_axis=axis).update(x)
    norm = nbbn.Normalizer(rs.mean, rs.var, channel_axis=axis)
    bn = nbbn.BatchNorm(shape[axis], channel_axis=axis)
    out = norm(x)
    op = (lambda: bn(x, out=out)) if sys.argv[4:] == ["bn"] else (lambda: norm(x, out=out))
    limits = {"plain": 1 << 62, "streamed": cpu_stream.STREAM_MIN_BYTES}
    times: dict[str, list[float]] = {k: [] for k in limits}
    for limit in limits.values():
        cpu_stream.STREAM_MIN_BYTES = limit
        op()
    for r in range(25):
        for name in (list(limits) if r % 2 == 0 else list(limits)[::-1]):
            cpu_stream.STREAM_MIN_BYTES = limits[name]
            t0 = time.perf_counter()
            op()
            times[name].append(time.perf_counter() - t0)
    ratio = np.median(np.array(times["streamed"]) / np.array(times["plain"]))
    print(f"{sys.argv[1]} {dtype} {'bn' if sys.argv[4:] else 'normalizer'}: plain "
          f"{np.median(times['plain']) * 1e3:.2f} ms, streamed "
          f"{np.median(times['streamed']) * 1e3:.2f} ms, ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
