"""How often ``nbbn.onnx.to_onnx(form="exact")`` exceeds 2 float32 ulp (docs/sklearn.md,
ONNX, "Where it exceeds 2 ulp").

For each mean/std and each seed: a ``Normalizer`` of ``--channels`` channels (std
10^U(-2, 2), means of mean/std times 0.5..1 with random signs; with ``--affine``, a
weight and a bias drawn from N(0, 1) as in tests/test_onnx.py), float32 data
``mean + spread * std * N(0, 1)`` with the ``2 * near + 1`` float32 numbers nearest each
mean in the first rows, the exported float32 model run by onnxruntime, and each output's
error in float32 ulp of the float64 map. Prints, per mean/std, the largest error, the
number of seeds whose largest error is above 2 ulp, and the fraction of all outputs above
2 ulp:

    python scripts/onnx_exact_ulp.py [--ratios 0 1 10 100 1e4 1e6] [--seeds 20]
        [--n 960] [--channels 8] [--spread 3] [--near 3] [--affine]
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

import nbbn
from nbbn.onnx import to_onnx


def errors(ratio: float, seed: int, n: int, channels: int, spread: float, near: int,
           affine: bool) -> np.ndarray:
    """The exact model's error in float32 ulp of each float64 output, (n, channels)."""
    rng = np.random.default_rng(seed)
    std = 10.0 ** rng.uniform(-2, 2, channels)
    mean = ratio * std * rng.uniform(0.5, 1, channels) * rng.choice([-1.0, 1.0], channels)
    weight = rng.normal(size=channels) if affine else np.ones(channels)
    bias = rng.normal(size=channels) if affine else np.zeros(channels)
    norm = nbbn.Normalizer(mean, std ** 2, eps=0.0, weight=weight, bias=bias,
                           channel_axis=-1)
    x = (mean + spread * std * rng.standard_normal((n, channels))).astype(np.float32)
    hi = mean.astype(np.float32)
    for i, k in enumerate(range(-near, near + 1)[:n]):
        x[i] = hi + k * np.spacing(np.abs(hi))
    ref = (x.astype(np.float64) - mean) / std * weight + bias
    sess = ort.InferenceSession(to_onnx(norm, ndim=2).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0].astype(np.float64)
    return np.abs(y - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0, 1, 10, 1e2, 1e4, 1e6])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--n", type=int, default=960, help="rows per seed")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--spread", type=float, default=3.0, help="standard deviations")
    p.add_argument("--near", type=int, default=3, metavar="K")
    p.add_argument("--affine", action="store_true", help="draw a weight and a bias")
    a = p.parse_args()
    print(f"onnxruntime {ort.__version__}; seeds 0-{a.seeds - 1}, {a.n} rows x "
          f"{a.channels} channels, spread {a.spread:g} std, near {a.near}, "
          f"affine {a.affine}")
    print("| mean/std | max ulp | seeds above 2 ulp | outputs above 2 ulp |")
    print("|---|---|---|---|")
    for ratio in a.ratios:
        errs = [errors(ratio, s, a.n, a.channels, a.spread, a.near, a.affine)
                for s in range(a.seeds)]
        worst = [float(e.max()) for e in errs]
        frac = float(np.mean(np.concatenate([e.ravel() for e in errs]) > 2.0))
        print(f"| {ratio:g} | {max(worst):.2f} | {sum(w > 2 for w in worst)}/{a.seeds} | "
              f"{frac:.1e} |")


if __name__ == "__main__":
    main()
