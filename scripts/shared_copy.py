"""A stream's ``update`` of wide tables of few rows into a copy of a state: a full copy
(``copy.copy``) against a copy that shares the state read-only
(``RunningStats._shared_copy``, what ``nbbn.sklearn``'s ``partial_fit`` takes), whose
update writes the new state from the old one tile by tile. Medians of 15 interleaved
rounds ("Twenty-fourth session" in docs/benchmarks.md).

    python scripts/shared_copy.py
"""

import copy

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    for shape in [(16, 262144), (4, 1048576), (8, 65536), (64, 4096)]:
        x = (rng.standard_normal(shape) * 3 + 5).astype(np.float32)
        base = nbbn.RunningStats(-1, nan_policy="omit", backend="cpu").update(x)
        t = interleaved({"copy": lambda b=base, x=x: copy.copy(b).update(x),
                         "shared": lambda b=base, x=x: b._shared_copy().update(x)}, 15)
        print(shape, f"copy+update {t['copy'] * 1e3:.2f} ms, shared copy+update "
              f"{t['shared'] * 1e3:.2f} ms, x{t['copy'] / t['shared']:.2f}")


if __name__ == "__main__":
    main()
