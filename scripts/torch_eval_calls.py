"""``Normalizer`` against torch's eval ``F.batch_norm`` on activation-sized float32
batches (in cache: 0.03-1.6 M elements), both allocating their output, torch on its
default threads and on one, nbbn on its own (one thread below
``cpu.THREADED_MIN_ELEMENTS``).
Medians of 5 rounds, each the best of one timed loop of calls, in microseconds. Used
for docs/benchmarks.md ("Twenty-second session")::

    python scripts/torch_eval_calls.py
"""

from __future__ import annotations

import timeit

import numpy as np
import torch

import nbbn
from nbbn.tools.bench_env import cpu_line

SHAPES = [(1, 64, 56, 56), (2, 64, 56, 56), (4, 64, 56, 56), (8, 64, 56, 56), (1, 256, 14, 14),
          (32, 256, 7, 7), (16, 64, 32, 32), (64, 512)]


def main() -> None:
    threads = torch.get_num_threads()
    print(cpu_line(), f"| torch {torch.__version__}, {threads} threads")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        c = shape[1]
        x = rng.standard_normal(shape, dtype=np.float32)
        mean, var = rng.standard_normal(c), rng.random(c) + 0.5
        norm = nbbn.Normalizer(mean, var, channel_axis=1)
        t = torch.from_numpy(x)
        tm, tv = torch.tensor(mean, dtype=torch.float32), torch.tensor(var, dtype=torch.float32)
        def bn(t=t, tm=tm, tv=tv):
            return torch.nn.functional.batch_norm(t, tm, tv, training=False, eps=1e-5)

        calls = {"nbbn": (lambda x=x, norm=norm: norm(x), threads),
                 "torch": (bn, threads), "torch_1": (bn, 1)}
        number = max(20, int(4e6 // x.size))
        us: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(5):
            for k, (f, n) in calls.items():
                torch.set_num_threads(n)
                f()
                us[k].append(timeit.timeit(f, number=number) / number * 1e6)
        torch.set_num_threads(threads)
        med = {k: float(np.median(v)) for k, v in us.items()}
        print(f"{shape}: nbbn {med['nbbn']:.1f} us, torch {med['torch']:.1f} us "
              f"(nbbn / torch {med['nbbn'] / med['torch']:.2f}), torch on one thread "
              f"{med['torch_1']:.1f} us", flush=True)


if __name__ == "__main__":
    main()
