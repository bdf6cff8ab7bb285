"""Channels-last uint8 tables from 64 to 8,192 columns by each route, in GB/s.

The "Byte tables" table in docs/benchmarks.md ("Twelfth session"): a 64 MB uint8 table
per channel count, its statistics through three routes, each forced in turn (``old``:
the routes before ``cpu_byte_tables``, the byte-position kernel where it takes the
table, else the float tile kernel; ``now``: the routes nbbn picks, the row kernel where
``byte_rows`` says so; ``tile``: the float tile kernel), each
route's statistics checked against the others' (counts, min and max equal, mean and
variance within 1e-14); medians of 5 interleaved rounds. Run
``python scripts/byte_tables.py [C,C,...]``.
"""

import sys

import numpy as np

import nbbn
from nbbn.backends import cpu, cpu_byte_tables, cpu_stats
from nbbn.tools.bench_env import cpu_line
from nbbn.tools.bench_timing import interleaved

CHANNELS = [64, 100, 128, 160, 200, 256, 300, 784, 1000, 2048, 4000, 4096, 8192]
ROUTES = ("old", "now", "tile")
_rows = cpu_byte_tables.byte_rows
_periods = cpu_stats.u8_cl_simd


def _force(route: str) -> None:
    """Send uint8 tables down ``route`` (the plans are kept per shape: cleared)."""
    cpu_byte_tables.byte_rows = lambda d, n: route == "now" and _rows(d, n)  # type: ignore
    cpu_stats.u8_cl_simd = lambda d, n: route != "tile" and _periods(d, n)  # type: ignore
    cpu._plans.clear()


def main() -> None:
    print(cpu_line())
    chans = [int(c) for c in sys.argv[1].split(",")] if len(sys.argv) > 1 else CHANNELS
    rng = np.random.default_rng(0)
    calls, sizes = {}, {}
    for nchan in chans:
        x = rng.integers(0, 256, ((64 << 20) // nchan, nchan)).astype(np.uint8)
        first = None
        for route in ROUTES:
            _force(route)
            rs = nbbn.RunningStats(-1).update(x)
            if first is None:
                first = rs
            for name in ("count", "min", "max"):
                assert (getattr(rs, name) == getattr(first, name)).all(), (nchan, route)
            for name in ("mean", "var"):
                got, want = getattr(rs, name), getattr(first, name)
                assert np.allclose(got, want, rtol=1e-14, atol=0), (nchan, route, name)
            key = f"C={nchan} {route}"
            calls[key] = lambda x=x, route=route: (_force(route),
                                                   nbbn.RunningStats(-1).update(x))
            sizes[key] = x.nbytes
    for key, seconds in interleaved(calls, 5).items():
        print(f"{key:16s} {sizes[key] / seconds / 1e9:6.1f} GB/s {seconds * 1e3:8.2f} ms")
    _force("now")


if __name__ == "__main__":
    main()
