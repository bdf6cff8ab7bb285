"""Channels-last tables of few rows and many channels: the tile kernel (``cpu_few_rows``)
against the channels-last kernel it replaced there, in one process.

Each case is timed as ``update`` of a new ``RunningStats`` (the batch's statistics,
then their merge into the new state) and of a stream's (the same, merged into a state
of C channels), each with the tile kernel and with it turned off (``FEW_ROWS_MAX = 0``:
the channels-last kernels, as before); numpy's ``x.var(axis=0)`` of the same table
beside them (a mean, a second pass and a temporary of the table's size). Medians of 7
interleaved rounds, ms, the ratios, and the tile kernel's GB/s of input (new state).
The "few rows" table in docs/benchmarks.md ("Nineteenth session").

    python scripts/few_rows.py            # the table
    python scripts/few_rows.py nan        # the same with a NaN in 1% of the channels
    python scripts/few_rows.py shares     # NaNs in 10-100% of the channels, both policies
    python scripts/few_rows.py narrow     # streams of 16-64 rows of 1,024-32,768 channels
    python scripts/few_rows.py inplace    # streams merged into the state in place, or not
    python scripts/few_rows.py inplace omit   # the same under "omit" (at most 24 rows)
    python scripts/few_rows.py small      # what that check costs small updates
    python scripts/few_rows.py sklearn    # nbbn.sklearn partial_fit (PYTHONPATH: a tree)
    python scripts/few_rows.py below      # float tables of 16-1000 channels, taken or not
    python scripts/few_rows.py below uint8 rows=16,32 channels=64,128   # those tables
    python scripts/few_rows.py tall       # the tall-table and byte-row rules, before/after

The "many NaN channels" table measured ``shares`` with ``cpu_few_rows.GIVE_UP`` set to
8000 in the source (a constant of the compiled kernel), so that no tile gave up.
"""

import sys

import numpy as np

import nbbn
from nbbn.backends import cpu_few_rows
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved

CASES = [("float64", n, c) for c in (1 << 16, 1 << 18, 1 << 20) for n in (2, 4, 16, 64)]
CASES += [("float32", 4, 1 << 18), ("float32", 64, 1 << 18), ("float16", 4, 1 << 18),
          ("uint8", 4, 1 << 18), ("int16", 16, 1 << 18), ("int32", 8, 1 << 18),
          ("float64", 8, 1024), ("float64", 64, 4096)]


def _update(x, on: bool, state=None, policy: str = "propagate"):
    limit = cpu_few_rows.FEW_ROWS_MAX

    def call():
        cpu_few_rows.FEW_ROWS_MAX = limit if on else 0
        try:
            (state if state is not None else nbbn.RunningStats(-1, nan_policy=policy)
             ).update(x)
        finally:
            cpu_few_rows.FEW_ROWS_MAX = limit
    return call


def main() -> None:
    print(cpu_line())
    nan = "nan" in sys.argv[1:]
    rng = np.random.default_rng(0)
    print(f"{'batch':26s} {'new: before':>11s} {'tiles':>7s} {'x':>5s}"
          f" {'stream: before':>14s} {'tiles':>7s} {'x':>5s} {'numpy var':>9s} {'GB/s':>5s}"
          + ("   (a NaN in 1% of the channels)" if nan else ""))
    for dtype, nrows, nchan in CASES:
        x = (rng.standard_normal((nrows, nchan)) * 100 + 5).astype(dtype)
        if nan and x.dtype.kind == "f":
            x[nrows // 2, rng.random(nchan) < 0.01] = np.nan
        stream = nbbn.RunningStats(-1).update(x)
        with np.errstate(over="ignore"):  # (numpy's float16 squares)
            t = interleaved({"before": _update(x, False), "tiles": _update(x, True),
                             "stream before": _update(x, False, stream),
                             "stream": _update(x, True, stream),
                             "numpy": lambda x=x: x.var(axis=0)}, 7)
        print(f"{dtype:8s} ({nrows:3d}, {nchan:8d})  {t['before'] * 1e3:11.3f}"
              f" {t['tiles'] * 1e3:7.3f} {t['before'] / t['tiles']:5.1f}"
              f" {t['stream before'] * 1e3:14.3f} {t['stream'] * 1e3:7.3f}"
              f" {t['stream before'] / t['stream']:5.1f} {t['numpy'] * 1e3:9.3f}"
              f" {x.nbytes / t['tiles'] / 1e9:5.1f}", flush=True)


def shares() -> None:
    """(n, 262144) float64 tables with a NaN in a share of the channels (of one row),
    "propagate" and "omit", the tile kernel on and off: median ms of 5 interleaved rounds."""
    print(cpu_line())
    rng = np.random.default_rng(0)
    for nrows, share in ((64, 0.1), (64, 0.3), (64, 1.0), (32, 1.0), (16, 1.0)):
        x = rng.standard_normal((nrows, 1 << 18))
        x[nrows // 2, rng.random(x.shape[1]) < share] = np.nan
        calls = {}
        for policy in ("propagate", "omit"):
            for on in (False, True):
                calls[f"{policy} {'tiles' if on else 'before'}"] = _update(
                    x, on, policy=policy)
        t = interleaved(calls, 5)
        print(f"({nrows}, 262144) {share:4.0%} NaN channels: "
              + "  ".join(f"{k} {v * 1e3:.2f}" for k, v in t.items()), flush=True)


def narrow() -> None:
    """A stream's ``update`` near the thresholds: 16-64 rows of 1,024-32,768 channels,
    float64 and float32, the tile kernel on and off: median ms of 15 interleaved
    rounds."""
    print(cpu_line())
    rng = np.random.default_rng(0)
    for dtype in ("float64", "float32"):
        for nchan in (1024, 4096, 16384, 32768):
            for nrows in (16, 32, 64):
                x = (rng.standard_normal((nrows, nchan)) * 100 + 5).astype(dtype)
                stream = nbbn.RunningStats(-1).update(x)
                t = interleaved({"before": _update(x, False, stream),
                                 "tiles": _update(x, True, stream)}, 15)
                print(f"{dtype} ({nrows}, {nchan}) stream: before {t['before'] * 1e3:.3f}"
                      f" tiles {t['tiles'] * 1e3:.3f} x{t['before'] / t['tiles']:.2f}",
                      flush=True)


def in_place() -> None:
    """A stream's ``update`` with the batch merged into the state as it is computed
    (``cpu.reduce_into``) and with its statistics written out and then merged (``reduce``,
    ``merge``), both with the tile kernel: median ms of 11 interleaved rounds, and the
    in-place update's GB/s of the input and of the state, read and written (64 bytes a
    channel each way) ("Twentieth session"). With ``omit``: under "omit", at most
    ``GIVE_UP`` rows (more are not merged in place)."""
    from nbbn.backends import cpu

    print(cpu_line())
    a, b = np.ones(1 << 23), np.empty(1 << 23)  # (this host's copy: read + write, 128 MB)
    copy = interleaved({"copy": lambda: np.copyto(b, a)}, 11)["copy"]
    print(f"numpy copy of 64 MB: {2 * a.nbytes / copy / 1e9:.1f} GB/s read + written")
    rng = np.random.default_rng(0)
    into = cpu.reduce_into
    cases = [("float64", 4, 1 << 20), ("float64", 4, 1_000_000), ("float64", 16, 1 << 18),
             ("float32", 16, 1 << 18), ("float64", 64, 1 << 16), ("float32", 64, 1 << 16),
             ("uint8", 8, 1 << 18), ("float32", 64, 4096), ("float32", 32, 1024),
             ("float64", 8, 1024)]
    policy = "omit" if "omit" in sys.argv[1:] else "propagate"
    for dtype, nrows, nchan in cases:
        if policy == "omit":
            nrows = min(nrows, cpu_few_rows.GIVE_UP)
        x = (rng.standard_normal((nrows, nchan)) * 100 + 5).astype(dtype)
        stream = nbbn.RunningStats(-1, nan_policy=policy).update(x)

        def call(on: bool, x=x, stream=stream):
            def run():
                cpu.reduce_into = into if on else (lambda table, policy, state: False)
                try:
                    stream.update(x)
                finally:
                    cpu.reduce_into = into
            return run

        t = interleaved({"merged after": call(False), "in place": call(True)}, 11)
        print(f"{dtype:8s} ({nrows:3d}, {nchan:8d}) stream: merged after"
              f" {t['merged after'] * 1e3:8.3f}  in place {t['in place'] * 1e3:8.3f}"
              f"  x{t['merged after'] / t['in place']:.2f}"
              f"  {(x.nbytes + 128 * nchan) / t['in place'] / 1e9:5.1f} GB/s", flush=True)


def small() -> None:
    """What the in-place check costs an update it does not take: a stream's ``update`` of
    (8, 16) float64 and (4, 3, 8, 8) float32 with ``RunningStats._merge_in_place`` and
    with it turned off, 200 calls a round, median us a call of 15 interleaved rounds."""
    from nbbn.running_stats import RunningStats

    print(cpu_line())
    check = RunningStats._merge_in_place
    rng = np.random.default_rng(0)
    calls = {}
    for axis, x in ((-1, rng.standard_normal((8, 16))),
                    (1, rng.standard_normal((4, 3, 8, 8)).astype(np.float32))):
        stream = RunningStats(axis).update(x)
        for on in (False, True):
            def run(on=on, x=x, stream=stream):
                RunningStats._merge_in_place = check if on else (lambda *a: False)
                try:
                    for _ in range(200):
                        stream.update(x)
                finally:
                    RunningStats._merge_in_place = check
            calls[f"{x.dtype} {x.shape} {'checked' if on else 'off'}"] = run
    for name, t in interleaved(calls, 15).items():
        print(f"{name}: {t / 200 * 1e6:.2f} us")


def sklearn() -> None:
    """``nbbn.sklearn.StandardScaler.partial_fit`` of a second batch (median ms of 11),
    wide tables of few rows and two others; run with ``PYTHONPATH`` at each of two
    trees to compare them ("Twentieth session")."""
    from nbbn.sklearn import StandardScaler

    print(cpu_line(), nbbn.__file__)
    rng = np.random.default_rng(0)
    for shape in ((16, 1 << 18), (4, 1 << 20), (8, 4096), (256, 1 << 16), (100_000, 64)):
        x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
        est = StandardScaler().partial_fit(x)
        t = interleaved({"partial_fit": lambda est=est, x=x: est.partial_fit(x)}, 11)
        print(f"float32 {shape}: partial_fit {t['partial_fit'] * 1e3:.3f} ms", flush=True)


def below() -> None:
    """Tables of fewer than ``FEW_ROWS_CHANNELS`` channels: ``update`` of a new
    ``RunningStats`` and of a stream's, 50 calls a round, with float32/float64 tables
    from ``NARROW_CHANNELS`` channels on taken by the tile kernel (new) and with
    ``NARROW_CHANNELS`` set to ``FEW_ROWS_CHANNELS`` (old: the channels-last kernel), and
    ``nbbn.sklearn.StandardScaler.partial_fit`` the same way; median us a call of 9
    interleaved rounds ("Twenty-third session"). ``below DTYPE [DTYPE ...]`` (uint8,
    float16, int8, int16, int32, ...): tables of those dtypes taken by the tile kernel
    from 16 channels on (the thresholds lowered) or not at all, the measurement that
    decides their threshold ("Twenty-fourth session"). ``rows=2,16`` and ``channels=64,96``
    pick the tables' rows and channels; ``rows=1``: single rows, written directly or not
    ("Twenty-fifth session")."""
    from nbbn.sklearn import StandardScaler

    print(cpu_line())
    limit, floats = cpu_few_rows.FEW_ROWS_CHANNELS, cpu_few_rows.NARROW_CHANNELS
    byte, row = cpu_few_rows.BYTE_CHANNELS, cpu_few_rows.ROW_CHANNELS
    picked = {a.split("=")[0]: [int(v) for v in a.split("=")[1].split(",")]
              for a in sys.argv[1:] if a.startswith(("rows=", "channels="))}
    named = [a for a in sys.argv[1:] if a != "below" and "=" not in a]

    def calls(f, taken: bool):
        def run():
            if not taken and named:  # (the channels-last kernel for every table)
                cpu_few_rows.FEW_ROWS_CHANNELS = cpu_few_rows.NARROW_CHANNELS = 1 << 62
                cpu_few_rows.BYTE_CHANNELS = cpu_few_rows.ROW_CHANNELS = 1 << 62
            elif not taken:  # (every table below FEW_ROWS_CHANNELS: the channels-last kernel)
                cpu_few_rows.NARROW_CHANNELS = cpu_few_rows.BYTE_CHANNELS = limit
            elif named:  # (every table of the dtype, 16 channels too)
                cpu_few_rows.FEW_ROWS_CHANNELS = cpu_few_rows.NARROW_CHANNELS = 1
                cpu_few_rows.BYTE_CHANNELS = cpu_few_rows.ROW_CHANNELS = 1
            try:
                for _ in range(50):
                    f()
            finally:
                cpu_few_rows.FEW_ROWS_CHANNELS, cpu_few_rows.NARROW_CHANNELS = limit, floats
                cpu_few_rows.BYTE_CHANNELS, cpu_few_rows.ROW_CHANNELS = byte, row
        return run

    rng = np.random.default_rng(0)
    for dtype in named or ("float32", "float64"):
        for nchan in picked.get("channels", (16, 64, 100, 256, 512, 700, 1000)):
            for nrows in picked.get("rows", (2, 4, 8, 16, 32, 64)):
                x = rng.standard_normal((nrows, nchan)) * 30 + 100
                if np.dtype(dtype).kind in "iu":
                    x = np.clip(x, np.iinfo(dtype).min, np.iinfo(dtype).max)
                x = x.astype(dtype)
                stream = nbbn.RunningStats(-1).update(x)
                est = StandardScaler().partial_fit(x)
                cases = {"new state": lambda x=x: nbbn.RunningStats(-1).update(x),
                         "stream": lambda x=x, s=stream: s.update(x),
                         "partial_fit": lambda x=x, e=est: e.partial_fit(x)}
                timed = interleaved({f"{name} {side}": calls(f, side == "new")
                                     for name, f in cases.items() for side in ("old", "new")},
                                    9)
                print(f"{dtype} ({nrows}, {nchan})" + "".join(
                    f"  {name} {timed[name + ' old'] / 50 * 1e6:6.1f} ->"
                    f" {timed[name + ' new'] / 50 * 1e6:6.1f} us"
                    f" x{timed[name + ' old'] / timed[name + ' new']:.2f}"
                    for name in cases), flush=True)


def tall() -> None:
    """The rules of the "Twenty-fifth session" against the ones before (``TALL_ROWS``
    set to 64, ``BYTE_ROWS`` to 8), toggled at run time: ``update`` of a new state and
    of a stream's, 20 calls a round, 9 interleaved rounds, us per call; tables of 64
    rows of float16 and 8-bit integers of 512-16384 channels (now left to the
    channels-last kernels), 9-16 rows of 8-bit integers of 256-1000 channels (now
    taken), and tables neither rule changes (48 rows, float32, float64)."""
    print(cpu_line())
    rules = {"before": (64, 8), "after": (cpu_few_rows.TALL_ROWS, cpu_few_rows.BYTE_ROWS)}

    def calls(f, side: str):
        def run():
            cpu_few_rows.TALL_ROWS, cpu_few_rows.BYTE_ROWS = rules[side]
            try:
                for _ in range(20):
                    f()
            finally:
                cpu_few_rows.TALL_ROWS, cpu_few_rows.BYTE_ROWS = rules["after"]
        return run

    rng = np.random.default_rng(0)
    cases = [(d, 64, c) for d in ("float16", "uint8", "int8") for c in (512, 2048, 8192, 16384)]
    cases += [(d, n, c) for d in ("uint8", "int8") for n in (12, 16) for c in (256, 1000)]
    cases += [("uint8", 48, 2048), ("float32", 64, 2048), ("float64", 64, 2048)]
    for dtype, nrows, nchan in cases:
        x = rng.standard_normal((nrows, nchan)) * 30 + 100
        if np.dtype(dtype).kind in "iu":
            x = np.clip(x, np.iinfo(dtype).min, np.iinfo(dtype).max)
        x = x.astype(dtype)
        stream = nbbn.RunningStats(-1).update(x)
        cases_ = {"new state": lambda x=x: nbbn.RunningStats(-1).update(x),
                  "stream": lambda x=x, s=stream: s.update(x)}
        timed = interleaved({f"{name} {side}": calls(f, side) for name, f in cases_.items()
                             for side in rules}, 9)
        print(f"{dtype} ({nrows}, {nchan})" + "".join(
            f"  {name} {timed[name + ' before'] / 20 * 1e6:7.1f} ->"
            f" {timed[name + ' after'] / 20 * 1e6:7.1f} us"
            f" x{timed[name + ' before'] / timed[name + ' after']:.2f}"
            for name in cases_), flush=True)


if __name__ == "__main__":
    modes = {"shares": shares, "narrow": narrow, "inplace": in_place, "small": small,
             "sklearn": sklearn, "below": below, "tall": tall}
    next((modes[a] for a in sys.argv[1:] if a in modes), main)()
