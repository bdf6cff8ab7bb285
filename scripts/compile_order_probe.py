"""Whether a channels-last kernel's speed depends on what its process compiled first.

Builds the kernels into two new numba cache folders, one in a process that first
fits a CSR matrix with ``nbbn.sklearn`` (then a dense batch), one in a process that
updates the dense batch alone; then times ``update`` of (1, 262144) and (64, 262144)
float64 batches in a new process per cache, alternating, medians of 7. The "compile
order" table in docs/benchmarks.md ("Sixteenth session"). Run ``python
scripts/compile_order_probe.py``; set ``PYTHONPATH`` to compare two trees.
"""

import os
import subprocess
import sys
import tempfile

BUILD = {
    "after a CSR fit": (
        "import numpy as np, scipy.sparse as sp, cProfile\n"
        "from nbbn.sklearn import StandardScaler\n"
        "x = sp.random(1000, 1 << 20, density=1e5 / (1000 * (1 << 20)), format='csr',\n"
        "              random_state=0, dtype=np.float64)\n"
        "xd = np.random.default_rng(0).standard_normal((64, 1 << 18))\n"
        "for batch, kw in ((x, dict(with_mean=False)), (xd, {})):\n"
        "    s = StandardScaler(**kw)\n"
        "    for _ in range(13):\n"
        "        s.partial_fit(batch)\n"
        "    cProfile.run('for _ in range(5): s.partial_fit(batch)', '/dev/null')\n"),
    "alone": "import numpy as np, nbbn\nnbbn.RunningStats(-1).update(np.ones((64, 1 << 18)))\n",
}
TIME = (
    "import time, numpy as np, nbbn\n"
    "rng = np.random.default_rng(0)\n"
    "for n in (1, 64):\n"
    "    x = rng.standard_normal((n, 1 << 18))\n"
    "    nbbn.RunningStats(-1).update(x)\n"
    "    t = []\n"
    "    for _ in range(7):\n"
    "        t0 = time.perf_counter(); nbbn.RunningStats(-1).update(x)\n"
    "        t.append(time.perf_counter() - t0)\n"
    "    print(f'({n}, 262144) {1e3 * sorted(t)[3]:.1f} ms', end='  ')\n"
    "print()\n")


def main() -> None:
    from nbbn.tools.bench_env import cpu_line

    print(cpu_line())
    caches = {}
    for name, code in BUILD.items():
        caches[name] = tempfile.mkdtemp(prefix="nbbn_probe_")
        env = {**os.environ, "NUMBA_CACHE_DIR": caches[name]}
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    for _ in range(2):
        for name, cache in caches.items():
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            out = subprocess.run([sys.executable, "-c", TIME], env=env, check=True,
                                 capture_output=True, text=True).stdout
            print(f"kernels built {name:16s} {out.strip()}")


if __name__ == "__main__":
    main()
