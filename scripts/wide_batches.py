"""Channels-last statistics of wide batches of few rows (16,384 to 262,144 channels).

The "wide batches" table in docs/benchmarks.md ("Sixteenth session"): ``update`` of a
new ``RunningStats`` with each (rows, channels) batch, and the merge of a batch's
statistics into a state of as many channels (``cpu_stats.fold``, what every update
of a running state ends with), against numpy's ``x.sum(0)`` of the same batch as a
read-speed reference; medians of 9 interleaved rounds. Run
``python scripts/wide_batches.py``.
"""

import numpy as np

import nbbn
from nbbn.backends import cpu_stats
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved

CASES = [("float64", 1, 1 << 18), ("float64", 64, 1 << 18), ("float64", 256, 1 << 16),
         ("float64", 1024, 1 << 14), ("float32", 64, 1 << 18), ("float32", 256, 1 << 16),
         ("int32", 256, 1 << 16)]
FOLD_CHANNELS = [1 << 16, 1 << 20]


def _fold_call(nchan: int, rng):
    """A call merging a batch's statistics of ``nchan`` channels into a state of as
    many (the state's own arrays, copied once: each call adds the batch again)."""
    batch = nbbn.RunningStats(-1).update(rng.standard_normal((4, nchan)))._snapshot()
    state = nbbn.RunningStats(-1).update(rng.standard_normal((4, nchan)))._snapshot()
    pi, pf = batch.ints[np.newaxis], batch.floats[np.newaxis]
    ints, floats = state.ints.copy(), state.floats.copy()
    return lambda: cpu_stats.fold(pi, pf, ints, floats, True, cpu_stats.whole_ranges(1, nchan))


def main() -> None:
    print(cpu_line())
    rng = np.random.default_rng(0)
    calls, sizes = {}, {}
    for dtype, rows, nchan in CASES:
        x = (rng.standard_normal((rows, nchan)) * 100 + 5).astype(dtype)
        name = f"{dtype} ({rows}, {nchan})"
        calls[name] = lambda x=x: nbbn.RunningStats(-1).update(x)
        calls[name + ", numpy sum(0)"] = lambda x=x: x.sum(0, dtype=x.dtype)
        sizes[name] = sizes[name + ", numpy sum(0)"] = x.nbytes
    for nchan in FOLD_CHANNELS:
        calls[f"fold of {nchan} channels"] = _fold_call(nchan, rng)
    medians = interleaved(calls, 9)
    for name, seconds in medians.items():
        rate = f"{sizes[name] / seconds / 1e9:6.1f} GB/s" if name in sizes else ""
        print(f"{name:44s} {seconds * 1e3:8.2f} ms {rate}")


if __name__ == "__main__":
    main()
