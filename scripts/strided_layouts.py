"""Time and peak memory of ``update`` and the normalizer on strided and Fortran layouts.

Each operation runs twice on each input (the first call compiles) and reports both
calls' time and the peak of numpy's allocations (tracemalloc) beside the contiguous
input's. Run from the repository root: ``python scripts/strided_layouts.py``; for
another revision, ``PYTHONPATH=<worktree> python scripts/strided_layouts.py``.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

import nbbn
from nbbn.tools.bench_env import cpu_line


def _timed(f) -> str:
    tracemalloc.start()
    t0 = time.perf_counter()
    f()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return f"{dt * 1e3:7.1f} ms, peak {peak / 2**20:6.1f} MB"


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    table = rng.standard_normal((6_553_600, 16), dtype=np.float32)  # 400 MB
    nchw = rng.standard_normal((100, 4, 512, 512), dtype=np.float32)  # 400 MB
    rgba = rng.integers(0, 255, (400, 512, 512, 4), dtype=np.uint8)  # 400 MB
    image = rng.standard_normal((1, 3, 6144, 6144), dtype=np.float32)  # 432 MB, one image
    cube = rng.standard_normal((400, 400, 128), dtype=np.float32)  # 78 MB
    half = table[:, :12].astype(np.float16)  # 150 MB
    cases = {"table[:, ::2]": (table[:, ::2], -1), "table[::-1]": (table[::-1], -1),
             "table": (table, -1), "nchw Fortran": (np.asfortranarray(nchw), 1),
             "nchw": (nchw, 1), "rgba[..., :3]": (rgba[..., :3], -1), "rgba": (rgba, -1),
             # one image: slabs cut inside it; float16 rows with gaps; swapped axes
             "image[..., ::2, ::2]": (image[:, :, ::2, ::2], 1),
             "image[..., ::2, ::2] copy": (np.ascontiguousarray(image[:, :, ::2, ::2]), 1),
             "f16 table[:, ::2]": (half[:, ::2], -1), "f16 table[:, ::2] copy":
             (np.ascontiguousarray(half[:, ::2]), -1),
             "cube.transpose(1, 0, 2)": (cube.transpose(1, 0, 2), -1),
             "cube copy": (np.ascontiguousarray(cube.transpose(1, 0, 2)), -1)}
    for name, (x, axis) in cases.items():
        c = x.shape[axis]
        norm = nbbn.Normalizer(np.zeros(c), np.ones(c), channel_axis=axis)
        out = np.empty_like(x, dtype=np.float32)
        for what, f in 2 * [("update", lambda x=x, axis=axis: nbbn.RunningStats(axis).update(x)),
                            ("normalizer out=", lambda x=x, norm=norm, out=out: norm(x, out=out))]:
            try:
                line = _timed(f)
            except Exception as exc:  # (an older revision that refuses the layout)
                line = f"{type(exc).__name__}: {exc}"[:60]
            print(f"{name:26s} {x.nbytes / 2**20:5.0f} MB  {what:16s} {line}")


if __name__ == "__main__":
    main()
