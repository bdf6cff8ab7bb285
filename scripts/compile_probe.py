"""A pytest plugin that times every numba compilation of a test run, by kernel.

    PYTHONPATH=scripts NUMBA_CACHE_DIR=$(mktemp -d) \
        pytest -n 2 --dist loadfile -p compile_probe
    python scripts/compile_probe.py          # the table of the run's compilations

Each process (each pytest-xdist worker) writes ``compile_times_<worker>.json`` to
``COMPILE_PROBE_DIR`` (default: the system's temporary folder) at exit: per kernel, the
builds (``Dispatcher.compile`` calls of more than 0.05 s), their seconds without the
kernels compiled inside them (exclusive) and with them (inclusive). Two threads that
compile one kernel at once are both timed (one waits for the other).
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

OUT = os.environ.get("COMPILE_PROBE_DIR", tempfile.gettempdir())
# per kernel (module.qualname): [builds, exclusive s, inclusive s]
stats: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
_stack: list[float] = []
_pytest = False  # installed by pytest: the process writes its file at exit


def install() -> None:
    """Time every numba build of this process from now on into :data:`stats` (also
    used by ``first_update_compile.py`` and ``sparse_compile.py``)."""
    from numba.core import dispatcher

    original = dispatcher.Dispatcher.compile

    def compile(self, sig):  # noqa: A001 - numba's name
        t0 = time.perf_counter()
        _stack.append(0.0)
        try:
            return original(self, sig)
        finally:
            dt = time.perf_counter() - t0
            inner = _stack.pop()
            if _stack:
                _stack[-1] += dt
            if dt > 0.05:
                entry = stats[f"{self.py_func.__module__}.{self.py_func.__qualname__}"]
                entry[0] += 1
                entry[1] += dt - inner
                entry[2] += dt

    dispatcher.Dispatcher.compile = compile


def builds_line(least: float = 0.15) -> str:
    """The builds timed so far, by exclusive seconds: "name 1.23 s, ..." (those of at
    least ``least`` seconds; the kernel's own name, without its module)."""
    rows = sorted(stats.items(), key=lambda kv: -kv[1][1])
    return ", ".join(f"{name.rsplit('.', 1)[-1]} {excl:.2f} s"
                     for name, (_, excl, _) in rows if excl >= least)


def pytest_configure(config) -> None:  # noqa: ARG001 - pytest's hook
    global _pytest
    _pytest = True
    install()


@atexit.register
def _dump() -> None:
    if _pytest and stats:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(OUT, f"compile_times_{worker}.json"), "w") as f:
            json.dump(dict(stats), f)


def main(top: int = 30) -> None:
    """Print the kernels of the run's files by exclusive seconds, and the total."""
    total: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for path in glob.glob(os.path.join(OUT, "compile_times_*.json")):
        with open(path) as f:
            for name, (n, excl, incl) in json.load(f).items():
                t = total[name]
                t[0] += n
                t[1] += excl
                t[2] += incl
    rows = sorted(total.items(), key=lambda kv: -kv[1][1])
    print(f"compilations: {sum(v[1] for _, v in rows):.0f} s exclusive, all processes")
    print(f"{'exclusive s':>11} {'inclusive s':>11} {'builds':>6}  kernel")
    for name, (n, excl, incl) in rows[:top]:
        print(f"{excl:11.1f} {incl:11.1f} {n:6d}  {name}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
