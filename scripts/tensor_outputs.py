"""A Normalizer on a torch CPU tensor against the same numpy array (new outputs).

The table "Tensor outputs" in docs/benchmarks.md: median of 11 alternating calls per
operation, float32, 2 threads, with torch's own eval-mode ``F.batch_norm`` beside the
channels-first case. Run: ``python scripts/tensor_outputs.py`` (needs torch).
"""

import time

import numpy as np
import torch

import nbbn
from nbbn.tools.bench_env import cpu_line

SHAPES = [((64, 64, 56, 56), 1), ((1_000_000, 64), -1)]


def time_shape(shape: tuple[int, ...], axis: int, rng: np.random.Generator) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    t = torch.from_numpy(x.copy())
    c = shape[axis]
    norm = nbbn.Normalizer(np.zeros(c), np.ones(c), channel_axis=axis)
    calls = {"nbbn numpy": lambda: norm(x), "nbbn tensor": lambda: norm(t)}
    if axis == 1:
        calls["torch F.batch_norm"] = lambda: torch.nn.functional.batch_norm(
            t, torch.zeros(c), torch.ones(c), training=False)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(11):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    print(shape, {name: f"{np.median(v) * 1e3:.1f} ms" for name, v in times.items()})


def main() -> None:
    print(cpu_line())
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    for shape, axis in SHAPES:
        time_shape(shape, axis, rng)


if __name__ == "__main__":
    main()
