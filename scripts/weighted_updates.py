"""Weighted ``update`` (``sample_weight=``) against the unweighted call and numpy.

The "Weighted statistics" table in docs/benchmarks.md ("Eighth session"): medians of 5
interleaved rounds of nbbn weighted, nbbn unweighted and numpy's ``np.average`` of the
mean and of the variance (float64 copies made outside the timing). Run ``python
scripts/weighted_updates.py``.
"""

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    cases = {
        "uint8 (512,64,32,32) axis 1": (
            rng.integers(0, 256, (512, 64, 32, 32), dtype=np.uint8), 1),
        "float32 (128,64,32,32) axis 1": (
            rng.standard_normal((128, 64, 32, 32), dtype=np.float32), 1),
        "float32 (131072,64) axis -1": (rng.standard_normal((131072, 64), dtype=np.float32), -1),
        "float64 (20000,3) axis -1": (rng.standard_normal((20000, 3)), -1),
    }
    for name, (x, ax) in cases.items():
        w = np.random.default_rng(1).random(x.shape[0])
        axes = tuple(i for i in range(x.ndim) if i != ax % x.ndim)
        xf = x if x.dtype == np.float32 else x.astype(np.float64)
        wb = np.broadcast_to(w.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape)

        def numpy_weighted(xf=xf, wb=wb, axes=axes):
            m = np.average(xf, axis=axes, weights=wb)
            d = xf - np.expand_dims(m, axes).astype(xf.dtype)
            np.average(d * d, axis=axes, weights=wb)

        calls = {
            "weighted": lambda x=x, ax=ax, w=w: nbbn.RunningStats(ax).update(x, sample_weight=w),
            "unweighted": lambda x=x, ax=ax: nbbn.RunningStats(ax).update(x),
            "numpy": numpy_weighted,
        }
        med = {k: s * 1e3 for k, s in interleaved(calls, 5).items()}
        print(f"{name:32s} weighted {med['weighted']:8.2f} ms  unweighted "
              f"{med['unweighted']:7.2f} ms  numpy weighted {med['numpy']:8.2f} ms")


if __name__ == "__main__":
    main()
