"""``nbbn bench --images``: ``nbbn.fit`` of a JPEG folder against decoding alone.

A folder of generated JPEGs (2,000 by default, 0.5-2 MP each in three aspect ratios,
quality 90; crops of a few textured base images, so the files differ) is written to a
temporary folder and removed afterwards. Then, alternating the contenders in each
round (the order rotates), with the same number of worker threads:

* **decode only**: ``decode_image`` (the decoder ``ImageSource`` uses: simplejpeg when
  installed) over every file in a thread pool, the pixels dropped;
* **decode only, processes**: the same in a process pool (the answer to "threads or
  processes": if processes were much faster, the decoder would be holding the GIL);
* **nbbn fit**: ``nbbn.fit(ImageSource(folder, workers=W))``;
* **nbbn fit, histogram**: the same with ``histogram=True``;
* **common recipe**: Pillow decode, ``astype(float64)``, numpy mean and var per image,
  merged with Chan's formula, in the same thread pool; on every 10th file only (it is
  slow), with **nbbn fit** timed on the same subset for the ratio.

Reported per contender: median seconds, MP/s and images/s, and the CPU time used
(this process's threads plus the pool processes: ``getrusage``, microseconds, where
``os.times`` counts 10 ms ticks), as megapixels per CPU second; a time measured as 0
gives no rate nor ratio (None in the JSON, "n/a" in the table) rather than a division
by zero; ratios within each round (fit / decode only: target >= 90%; fit / recipe:
target >= 4x), by wall time and by CPU time. On a shared machine the CPU-time ratio is
the steadier one: wall time depends on the share of the cores the scheduler gives.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TextIO

import numpy as np

from .._interrupt import sigterm_unwinds

FULL_COUNT = 2000
QUICK_COUNT = 40
ASPECTS = ((4, 3), (3, 2), (16, 9))


def _bases(rng: np.random.Generator, n: int = 4) -> list[np.ndarray]:
    """Textured RGB base images (gradients, blobs, noise) to crop the files from."""
    h, w = 1600, 2600
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        img = np.empty((h, w, 3), np.float32)
        for c in range(3):
            fx, fy = rng.uniform(0.002, 0.02, 2)
            img[..., c] = 128 + 60 * np.sin(x * fx + rng.uniform(0, 6)) * np.cos(y * fy)
            img[..., c] += 40 * np.sin((x + y) * rng.uniform(0.01, 0.05))
        img += rng.normal(0, 12, img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def generate(folder: str, count: int, seed: int = 0, workers: int = 2) -> tuple[int, float]:
    """Write ``count`` JPEGs of 0.5-2 MP to ``folder``; return (files, megapixels)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    bases = _bases(rng)
    jobs = []
    for i in range(count):
        mp = rng.uniform(0.5, 2.0) * 1e6
        aw, ah = ASPECTS[i % len(ASPECTS)]
        if i % 2:
            aw, ah = ah, aw  # portrait
        w = int(round((mp * aw / ah) ** 0.5))
        h = int(round(mp / w))
        base = bases[i % len(bases)]
        y0 = int(rng.integers(0, base.shape[0] - h + 1)) if h < base.shape[0] else 0
        x0 = int(rng.integers(0, base.shape[1] - w + 1)) if w < base.shape[1] else 0
        jobs.append((os.path.join(folder, f"img{i:05d}.jpg"), base, y0, x0, h, w))

    def write(job) -> int:
        path, base, y0, x0, h, w = job
        crop = base[y0:y0 + h, x0:x0 + w]
        Image.fromarray(crop).save(path, quality=90)
        return crop.shape[0] * crop.shape[1]

    with ThreadPoolExecutor(workers) as ex:
        pixels = sum(ex.map(write, jobs))
    return count, pixels / 1e6


def _cpu_seconds() -> float:
    """CPU seconds of this process's threads and of its waited-for children
    (``getrusage``: microseconds; ``os.times``, in 10 ms ticks, where it is missing)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _per(amount: float, seconds: float) -> float | None:
    """``amount / seconds``; None for a time measured as 0 (too short to see)."""
    return amount / seconds if seconds > 0 else None


def _shown(value: float | None, fmt: str, width: int) -> str:
    """``value`` in ``fmt`` right-aligned in ``width``; "n/a" for None."""
    return f"{'n/a' if value is None else format(value, fmt):>{width}s}"


def _decode_count(path: str) -> int:
    from nbbn._images import decode_image

    a = decode_image(path)
    return a.shape[0] * a.shape[1]


def _recipe(paths: list[str], workers: int) -> np.ndarray:
    """The common recipe: Pillow, float64 numpy mean/var per image, Chan-merged."""
    from PIL import Image

    def one(path):
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3)
        return a.shape[0], a.mean(0), a.var(0)

    n, mean, m2 = 0, np.zeros(3), np.zeros(3)
    with ThreadPoolExecutor(workers) as ex:
        for k, mu, var in ex.map(one, paths):
            delta = mu - mean
            tot = n + k
            mean = mean + delta * k / tot
            m2 = m2 + var * k + delta**2 * n * k / tot
            n = tot
    return np.sqrt(m2 / n)


@sigterm_unwinds()
def run_images_bench(file: TextIO, quick: bool = False, repeats: int | None = None, *,
                     count: int | None = None, workers: int | None = None,
                     workdir: str | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table to ``file`` and return the results.

    Parameters
    ----------
    file : text stream
        Where the table goes.
    quick : bool
        40 files and 1 repeat (a smoke test).
    repeats : int, optional
        Rounds (default 3, 1 with ``quick``); medians are reported.
    count : int, optional
        Files to generate (default 2,000).
    workers : int, optional
        Decoding threads for every contender (default: the CPUs available).
    workdir : str, optional
        Where the temporary folder goes.

    Returns
    -------
    dict
        The machine, the data set, the per-contender times and the ratios.
    """
    import nbbn
    from nbbn._images import _cpus

    from .bench_env import cpu_model

    repeats = repeats or (1 if quick else 3)
    count = count or (QUICK_COUNT if quick else FULL_COUNT)
    workers = workers or _cpus()
    root = tempfile.mkdtemp(prefix="nbbn-bench-images-", dir=workdir)
    try:
        t0 = time.perf_counter()
        files, mp = generate(root, count, workers=workers)
        gen_s = time.perf_counter() - t0
        paths = sorted(os.path.join(root, f) for f in os.listdir(root))
        subset = paths[::10]
        sub_mp = sum(_decode_count(p) for p in subset) / 1e6
        size_mb = sum(os.path.getsize(p) for p in paths) / 1e6
        print(f"nbbn bench --images: {files} JPEGs, {mp:,.0f} MP, {size_mb:,.0f} MB "
              f"(generated in {gen_s:.0f} s), {workers} worker threads, {repeats} rounds; "
              f"CPU {cpu_model()}", file=file)
        fit = nbbn.fit(nbbn.ImageSource(subset[:2], histogram=True), progress=False)  # compile
        assert fit.num_channels == 3

        def decode_threads(ps=paths):
            with ThreadPoolExecutor(workers) as ex:
                for _ in ex.map(_decode_count, ps):
                    pass

        def decode_processes(ps=paths):
            with ProcessPoolExecutor(workers) as ex:
                for _ in ex.map(_decode_count, ps, chunksize=4):
                    pass

        def fit_images(ps=paths, histogram=False):
            src = nbbn.ImageSource(ps, workers=workers, histogram=histogram)
            nbbn.fit(src, progress=False)

        contenders: dict[str, tuple[Callable[[], Any], float, int]] = {
            "decode only (threads)": (decode_threads, mp, files),
            "decode only (processes)": (decode_processes, mp, files),
            "nbbn fit": (fit_images, mp, files),
            "nbbn fit, histogram": (lambda: fit_images(histogram=True), mp, files),
            "nbbn fit (every 10th file)": (lambda: fit_images(subset), sub_mp, len(subset)),
            "common recipe (every 10th file)": (lambda: _recipe(subset, workers), sub_mp,
                                                len(subset)),
        }
        names = list(contenders)
        times: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                c, t = _cpu_seconds(), time.perf_counter()
                contenders[name][0]()
                times[name].append(time.perf_counter() - t)
                cpu[name].append(_cpu_seconds() - c)
                print(f"  round {r + 1}: {name}: {times[name][-1]:.2f} s, CPU "
                      f"{cpu[name][-1]:.2f} s", file=sys.stderr)
        rows: dict[str, dict[str, Any]] = {}
        for name in names:
            _, m, n = contenders[name]
            med = statistics.median(times[name])
            rows[name] = {"seconds": med, "mp_per_s": _per(m, med),
                          "images_per_s": _per(n, med),
                          "mp_per_cpu_s": _per(m, statistics.median(cpu[name])),
                          "all_seconds": times[name], "all_cpu_seconds": cpu[name]}

        def ratio(a: str, b: str, by: dict[str, list[float]] = times) -> float | None:
            """Median over rounds of (throughput a / throughput b), same round; rounds
            where either time was measured as 0 left out (None: every round)."""
            ma, mb = contenders[a][1], contenders[b][1]
            each = [(ma / ta) / (mb / tb) for ta, tb in zip(by[a], by[b], strict=True)
                    if ta > 0 and tb > 0]
            return statistics.median(each) if each else None

        ratios = {
            "fit / decode only, CPU time": ratio("nbbn fit", "decode only (threads)", cpu),
            "fit with histogram / decode only, CPU time": ratio(
                "nbbn fit, histogram", "decode only (threads)", cpu),
            "fit / common recipe, CPU time": ratio("nbbn fit (every 10th file)",
                                                   "common recipe (every 10th file)", cpu),
            "fit / decode only": ratio("nbbn fit", "decode only (threads)"),
            "fit with histogram / decode only": ratio("nbbn fit, histogram",
                                                      "decode only (threads)"),
            "fit / common recipe": ratio("nbbn fit (every 10th file)",
                                         "common recipe (every 10th file)"),
            "decode threads / processes": ratio("decode only (threads)",
                                                "decode only (processes)"),
        }
        print(f"{'contender':34s}{'median s':>10s}{'MP/s':>9s}{'images/s':>10s}"
              f"{'MP/CPU s':>10s}", file=file)
        for name, row in rows.items():
            print(f"{name:34s}{row['seconds']:10.2f}{_shown(row['mp_per_s'], '.1f', 9)}"
                  f"{_shown(row['images_per_s'], '.1f', 10)}"
                  f"{_shown(row['mp_per_cpu_s'], '.1f', 10)}", file=file)
        for name, value in ratios.items():
            target = ">= 4x" if "recipe" in name else ">= 90%" if name.startswith(
                "fit / decode") else ""
            shown = "n/a" if value is None else f"{value:.2f}x" if "recipe" in name \
                else f"{100 * value:.0f}%"
            print(f"{name:44s}{shown:>8s}  {target}", file=file)
        result = {"cpu": cpu_model(), "python": platform.python_version(), "files": files,
                  "megapixels": mp, "megabytes": size_mb, "workers": workers,
                  "repeats": repeats, "rows": rows, "ratios": ratios}
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
