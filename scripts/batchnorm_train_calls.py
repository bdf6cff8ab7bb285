"""``nbbn.BatchNorm`` calls on small batches, per call in microseconds (the median of
9 timed loops): training steps (the statistics, the running update, the parameters and
the map) and eval-mode calls (the parameters from the running statistics and the map).
Used for docs/benchmarks.md ("Twenty-third session")::

    python scripts/batchnorm_train_calls.py            # this tree
    python scripts/batchnorm_train_calls.py --torch    # against torch's nn.BatchNorm
    python scripts/batchnorm_train_calls.py --against REV [--rounds 6]

``--torch``: torch's ``nn.BatchNorm1d/2d`` forward in the same mode (no autograd), on
its default threads and on one, interleaved with nbbn in one process.
``--against REV``: this tree against git revision ``REV`` (a temporary worktree), each in
its own processes with its own kernel cache, alternated ``--rounds`` times; prints the
medians and the range of the new/old ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# name: (shape, dtype, channel axis)
CASES = {
    "(64, 512) float32": ((64, 512), "float32", 1),
    "(256, 64) float32": ((256, 64), "float32", 1),
    "(64, 512) float64": ((64, 512), "float64", 1),
    "(32, 64, 8, 8) float32": ((32, 64, 8, 8), "float32", 1),
    "(16, 32, 32, 32) float32": ((16, 32, 32, 32), "float32", 1),
    "(32, 32, 32, 3) uint8 NHWC": ((32, 32, 32, 3), "uint8", -1),
}


def _batch(shape, dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * 20 + 50).astype(dtype)


def _loop(f, k: int):
    def run():
        for _ in range(k):
            f()
    return run


def measure() -> dict[str, float]:
    """This tree's nbbn: us per training call, per case."""
    import nbbn

    out = {}
    for mode in ("train", "eval"):
        for name, (shape, dtype, axis) in CASES.items():
            x = _batch(shape, dtype)
            bn = nbbn.BatchNorm(shape[axis], channel_axis=axis)
            for _ in range(30):
                bn(x)
            bn.train(mode == "train")
            bn(x)
            k = max(20, int(2e6 // x.size))
            run = _loop(lambda bn=bn, x=x: bn(x), k)
            times = []
            for _ in range(9):
                t0 = time.perf_counter()
                run()
                times.append((time.perf_counter() - t0) / k * 1e6)
            out[f"{mode} {name}"] = statistics.median(times)
    return out


def against_torch() -> None:
    import torch

    import nbbn
    from nbbn.tools.bench_env import cpu_line
    from nbbn.tools.bench_timing import interleaved

    threads = torch.get_num_threads()
    print(cpu_line(), f"| torch {torch.__version__}, {threads} threads")
    torch.set_grad_enabled(False)
    for mode, (name, (shape, dtype, axis)) in [(m, c) for m in ("train", "eval")
                                               for c in CASES.items()]:
        if axis != 1 or dtype != "float32":
            continue  # (torch's BatchNorm takes channels-first floating input)
        x = _batch(shape, dtype)
        tx = torch.from_numpy(x)
        bn = nbbn.BatchNorm(shape[1])
        tb = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(shape[1])
        bn(x), tb(tx)
        bn.train(mode == "train"), tb.train(mode == "train")
        k = max(20, int(2e6 // x.size))

        def torch_1(tb=tb, tx=tx, k=k):
            torch.set_num_threads(1)
            try:
                for _ in range(k):
                    tb(tx)
            finally:
                torch.set_num_threads(threads)

        r = interleaved({"nbbn": _loop(lambda bn=bn, x=x: bn(x), k),
                         "torch": _loop(lambda tb=tb, tx=tx: tb(tx), k), "torch_1": torch_1}, 11)
        times = "  ".join(f"{key} {v / k * 1e6:6.1f} us" for key, v in r.items())
        print(f"{mode:5s} {name:26s} {times}"
              + f"  nbbn/torch {r['nbbn'] / r['torch']:.2f}"
              + f"  nbbn/torch_1 {r['nbbn'] / r['torch_1']:.2f}")


def against(rev: str, rounds: int) -> None:
    from nbbn.tools.bench_env import cpu_line

    here = Path(__file__).resolve().parent.parent
    print(cpu_line(), f"| this tree against {rev}, {rounds} alternations")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(here), "worktree", "add", "-q", "--detach", str(old),
                        rev], check=True)
        try:
            sides = {"old": old, "new": here}
            got: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
            for _ in range(rounds):
                for side, tree in sides.items():
                    env = {**os.environ, "PYTHONPATH": str(tree),
                           "NUMBA_CACHE_DIR": str(Path(tmp) / f"cache_{side}")}
                    res = subprocess.run([sys.executable, __file__, "--json"], env=env,
                                         check=True, capture_output=True, text=True)
                    for name, us in json.loads(res.stdout.splitlines()[-1]).items():
                        got[side].setdefault(name, []).append(us)
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(old)],
                           check=False)
    for name in got["new"]:
        old_us, new_us = got["old"][name], got["new"][name]
        ratios = [n / o for n, o in zip(new_us, old_us, strict=True)]
        print(f"{name:32s} old {statistics.median(old_us):7.1f} us  new "
              f"{statistics.median(new_us):7.1f} us  new/old median "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--against", metavar="REV")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.json:
        print(json.dumps(measure()))
    elif args.torch:
        against_torch()
    elif args.against:
        against(args.against, args.rounds)
    else:
        from nbbn.tools.bench_env import cpu_line

        print(cpu_line())
        for name, us in measure().items():
            print(f"{name:32s} {us:7.1f} us")


if __name__ == "__main__":
    main()
