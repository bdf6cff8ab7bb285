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
from compile_probe import builds_line, install  # (this folder)

import nbbn


def main(dtype: str = "float32", nchan: str = "64") -> None:
    install()
    x = np.random.default_rng(0).random((200_000, int(nchan))).astype(dtype)
    t0 = time.perf_counter()
    nbbn.RunningStats(-1).update(x)
    print(f"{dtype} C = {nchan}: first update {time.perf_counter() - t0:.2f} s; builds:",
          builds_line())


if __name__ == "__main__":
    main(*sys.argv[1:])
