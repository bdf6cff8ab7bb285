"""The accuracy table of the ONNX forms of a standardization (docs/sklearn.md, ONNX).

For each mean/std (1e2, 1e4, 1e6): float32 data ``mean + std * N(0, 1)`` in 16 channels
whose std spans 1e-2..1e2, each form built by ``nbbn.tools.bench_onnx`` and run by
onnxruntime's CPU provider; the maximum absolute error against the float64 map of the
same float32 numbers, and for the split-mean forms the maximum error in float32 ulp of
each float64 output. Prints the markdown table:

    python scripts/onnx_accuracy.py [--n 1000000] [--seed 0]

``--near K --channels 4096 --ratios 10 100`` puts the 2K+1 float32 numbers nearest each
channel's mean in the first rows (the worst case of the split-mean forms).
"""

from __future__ import annotations

import argparse

import onnxruntime

from nbbn.tools.bench_onnx import accuracy_table, format_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="rows per mean/std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--near", type=int, default=0, metavar="K",
                   help="the first 2K+1 rows: the float32 numbers nearest each mean")
    p.add_argument("--ratios", type=float, nargs="+", default=[1e2, 1e4, 1e6])
    args = p.parse_args()
    print(f"onnxruntime {onnxruntime.__version__}, {args.n:,} rows x {args.channels} "
          f"channels, seed {args.seed}, near {args.near}")
    print(format_table(accuracy_table(n=args.n, channels=args.channels, ratios=args.ratios,
                                      seed=args.seed, near=args.near)))


if __name__ == "__main__":
    main()
