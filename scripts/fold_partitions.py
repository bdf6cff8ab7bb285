"""Time of ``cpu_stats.fold``: over 64 partitions, and merging a batch into a state.

* The fold table in docs/benchmarks.md ("Twelfth session"): the partitions' statistics
  of a large batch, 64 to 4,096 channels, merged per channel in partition order; random
  counts and moments. Median of 21 calls after one warm-up, in ms; the last column a
  checksum (the same bits before and after a change of the loop order).
* The merge of a batch's statistics into a running state ("Eighteenth session"), the
  last step of every ``update`` of a stream: statistics of real float32 batches (a state
  of two batches, a batch of a quarter of the rows), 4,096 to 1,048,576 channels, in ns
  per channel (median of 21, each on a fresh copy of the state), with the checksum, and
  the ``update`` of a stream at those shapes (median ms of 9). Channel counts that are
  powers of two and one that is not beside two of them ("Twentieth session": the rows
  of a power of two of 16,384 channels or more lie a multiple of 4 KB apart).

Run ``python scripts/fold_partitions.py`` (with ``PYTHONPATH`` at another checkout's
code to compare two versions), or ``python scripts/fold_partitions.py ab OLD.py`` with
another version's ``nbbn/backends/cpu_stats.py`` (``git show REV:nbbn/backends/cpu_stats.py
> OLD.py``): the merge of a batch into a state by both, in one process, interleaved
(median of 11 rounds, ns per channel), at channel counts that are powers of two and
beside them ("Twentieth session").
"""

import sys
import time

import numpy as np

import nbbn
from nbbn.backends import cpu_stats
from nbbn.backends._stats import BatchStats
from nbbn.tools.bench_env import cpu_line


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    nparts = 64
    for nchan in (64, 1000, 4000, 4096):
        pi = rng.integers(1, 100, (nparts, 3, nchan))
        pf = rng.random((nparts, 5, nchan))
        out = BatchStats.uninitialized(nchan)
        ranges = cpu_stats.whole_ranges(nparts, nchan)
        cpu_stats.fold(pi, pf, out.ints, out.floats, False, ranges)
        times = []
        for _ in range(21):
            t0 = time.perf_counter()
            cpu_stats.fold(pi, pf, out.ints, out.floats, False, ranges)
            times.append(time.perf_counter() - t0)
        print(f"C={nchan:5d}: {np.median(times) * 1e3:7.3f} ms  checksum "
              f"{out.floats.sum():.17g}")
    into_state(rng)


def into_state(rng) -> None:
    print("a batch merged into a state: ns per channel; a stream's update: ms")
    for rows, nchan in ((1024, 4096), (256, 65536), (256, 65600), (64, 262144),
                       (16, 1 << 20), (16, 1000000)):
        x = (rng.standard_normal((rows, nchan)) * 100 + 5).astype(np.float32)
        stream = nbbn.RunningStats(-1).update(x).update(x)
        state = stream._state
        part = nbbn.RunningStats(-1).update(x[: rows // 4])._state
        ranges = cpu_stats.whole_ranges(1, nchan)
        times = []
        for _ in range(21):
            ints, floats = state.ints.copy(), state.floats.copy()
            t0 = time.perf_counter()
            cpu_stats.fold(part.ints[None], part.floats[None], ints, floats, True, ranges)
            times.append(time.perf_counter() - t0)
        updates = []
        for _ in range(9):
            t0 = time.perf_counter()
            stream.update(x)
            updates.append(time.perf_counter() - t0)
        print(f"  ({rows}, {nchan}): merge {np.median(times) * 1e9 / nchan:6.2f} ns/ch, "
              f"update {np.median(updates) * 1e3:8.3f} ms  checksum {floats.sum():.17g}")


def ab(path: str) -> None:
    import importlib.util

    from nbbn.tools.bench_timing import interleaved

    print(cpu_line())
    spec = importlib.util.spec_from_file_location("nbbn.backends._old_cpu_stats", path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)  # (its relative imports: nbbn.backends' modules)
    rng = np.random.default_rng(0)
    print("a batch merged into a state, ns per channel: old, new")
    for nchan in (1024, 4096, 4160, 16384, 65536, 65600, 262144, 1 << 20, 1_000_000):
        x = rng.standard_normal((4, nchan)) * 100 + 5
        state = nbbn.RunningStats(-1).update(x)._state
        part = nbbn.RunningStats(-1).update(x)._state
        ranges = cpu_stats.whole_ranges(1, nchan)
        reps = max(1, (1 << 16) // nchan)

        def merge(module, state=state, part=part, ranges=ranges, reps=reps):
            def run():
                for _ in range(reps):
                    module.fold(part.ints[None], part.floats[None], state.ints,
                                state.floats, True, ranges)
            return run

        t = interleaved({"old": merge(old), "new": merge(cpu_stats)}, 11)
        o, n = (t[k] / reps / nchan * 1e9 for k in ("old", "new"))
        print(f"  C={nchan:8d}: {o:6.2f} {n:6.2f}  x{o / n:.2f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["ab"]:
        ab(sys.argv[2])
    else:
        main()
