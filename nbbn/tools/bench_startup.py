"""Start-up of nbbn in a fresh process: import, then the first call of each op.

Run twice in subprocesses sharing an empty Numba cache folder: cold (everything is
compiled) and warm (the cache the cold run filled is loaded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from .._interrupt import sigterm_unwinds

__all__ = ["bench_startup"]

_STARTUP_SCRIPT = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import nbbn
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
rs = nbbn.RunningStats(channel_axis=1).update(x)
t2 = time.perf_counter()
norm = nbbn.Normalizer(rs.mean, rs.var, channel_axis=1)
y = norm(x, out=np.empty_like(x))
t3 = time.perf_counter()
bn = nbbn.BatchNorm(3)
bn(x)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_update_s": t2 - t1,
                  "first_normalizer_s": t3 - t2, "first_batchnorm_s": t4 - t3}))
"""


@sigterm_unwinds()
def bench_startup() -> dict[str, Any]:
    """Cold (empty Numba cache) and warm (cache filled by the cold run) process start-up.

    Returns
    -------
    dict
        ``cold`` and ``warm``: ``import_s``, ``first_update_s``, ``first_normalizer_s``,
        ``first_batchnorm_s``, ``first_calls_s``, ``process_wall_s``; or ``error``.
    """
    import nbbn

    root = os.path.dirname(os.path.dirname(os.path.abspath(nbbn.__file__)))
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="nbbn-bench-cache-") as cache:
        env = dict(os.environ)
        env["NUMBA_CACHE_DIR"] = cache
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        for phase in ("cold", "warm"):
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-c", _STARTUP_SCRIPT],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                res[phase] = {"error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["first_calls_s"] = (
                r["first_update_s"] + r["first_normalizer_s"] + r["first_batchnorm_s"]
            )
            r["process_wall_s"] = wall
            res[phase] = r
    return res
