"""The first ``RunningStats(-1).update`` of a process, compilation included, and each
numba build's compile seconds (exclusive of the builds made inside it).

    NUMBA_CACHE_DIR=$(mktemp -d) python scripts/first_update_compile.py float32 64

Arguments: the dtype and the channel count C of a (200,000, C) channels-last array
(default float32, 64). Run it with an empty cache folder: a cached kernel is loaded,
not compiled.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from numba.core import dispatcher

import nbbn

times: dict[str, float] = {}
_stack: list[float] = []
_compile = dispatcher.Dispatcher.compile


def _timed(self, sig):
    t0 = time.perf_counter()
    _stack.append(0.0)
    try:
        return _compile(self, sig)
    finally:
        dt = time.perf_counter() - t0
        inner = _stack.pop()
        if _stack:
            _stack[-1] += dt
        if dt > 0.1:
            name = self.py_func.__name__
            times[name] = times.get(name, 0.0) + dt - inner


def main(dtype: str = "float32", nchan: str = "64") -> None:
    dispatcher.Dispatcher.compile = _timed
    x = np.random.default_rng(0).random((200_000, int(nchan))).astype(dtype)
    t0 = time.perf_counter()
    nbbn.RunningStats(-1).update(x)
    builds = sorted(times.items(), key=lambda kv: -kv[1])
    print(f"{dtype} C = {nchan}: first update {time.perf_counter() - t0:.2f} s; builds:",
          ", ".join(f"{k} {v:.2f} s" for k, v in builds if v > 0.15))


if __name__ == "__main__":
    main(*sys.argv[1:])
