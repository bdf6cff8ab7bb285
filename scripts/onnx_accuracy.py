"""The accuracy table of the ONNX forms of a standardization (docs/onnx.md).

For each mean/std (1e2, 1e4, 1e6): float32 data ``mean + std * N(0, 1)`` in 16 channels
whose std spans 1e-2..1e2, each form built by ``nbbn.tools.bench_onnx`` and run by
onnxruntime's CPU provider; the maximum absolute error against the float64 map of the
same float32 numbers, and for the split-mean forms the maximum error in float32 ulp of
each float64 output. Prints the markdown table:

    python scripts/onnx_accuracy.py [--n 1000000] [--seed 0]
"""

from __future__ import annotations

import argparse

import onnxruntime

from nbbn.tools.bench_onnx import accuracy_table, format_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="rows per mean/std")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"onnxruntime {onnxruntime.__version__}, {args.n:,} rows x 16 channels, "
          f"seed {args.seed}")
    print(format_table(accuracy_table(n=args.n, seed=args.seed)))


if __name__ == "__main__":
    main()
