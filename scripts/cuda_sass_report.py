"""What the statistics and affine kernels compile to on sm_90, without a GPU.

For each kernel and a few input dtypes: registers, spills, and the instruction mix of
every loop of the SASS (loads, float64 ops, conversions, integer ops), so that the cost
per value can be read off and compared before and after a change. This is how the
kernels were tuned while no card was lent (docs/benchmarks.md, "GPU").

Needs what ``scripts/cuda_ptx_check.py`` needs (numba-cuda, NVRTC, ``CUDA_HOME`` with
libnvvm), plus ``ptxas`` (``$CUDA_HOME/bin``) and ``cuobjdump``, for example from the
``nvidia-cuda-cuobjdump`` wheel (``pip download --no-deps nvidia-cuda-cuobjdump``, then
unzip it and set ``CUOBJDUMP`` to its ``bin/cuobjdump``). Run it without
NUMBA_ENABLE_CUDASIM::

    CUDA_HOME=/usr/local/cuda-13.0 CUOBJDUMP=/path/to/cuobjdump \\
        python scripts/cuda_sass_report.py [dtype ...]
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from numba import cuda, types

from nbbn.backends import cuda_kernels as kk
from nbbn.backends.cuda import STATS_THREADS

CC = (9, 0)
LINE = re.compile(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);")
BRANCH = re.compile(r"BRA.*?0x([0-9a-f]+)")


def tool(name: str, env: str) -> str:
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
        path = os.path.join(home, "bin", name)
    if not os.path.exists(path):
        sys.exit(f"{name} not found: set {env} or CUDA_HOME")
    return path


def sass(fn, sig) -> tuple[str, list[tuple[int, str]]]:
    """(ptxas resource line, [(address, instruction)]) of one kernel."""
    ptx, _ = cuda.compile_ptx(fn, sig, cc=CC)
    with tempfile.TemporaryDirectory() as d:
        src, cubin = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([tool("ptxas", "PTXAS"), f"-arch=sm_{CC[0]}{CC[1]}", "-v", "-o",
                            cubin, src], capture_output=True, text=True, check=True)
        dump = subprocess.run([tool("cuobjdump", "CUOBJDUMP"), "-sass", cubin],
                              capture_output=True, text=True, check=True).stdout
    res = " ".join(line.split("info    :")[-1].strip() for line in r.stderr.splitlines()
                   if "Used" in line or "spill" in line)
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in map(LINE.match,
                                                                    dump.splitlines()) if m]
    return res, ins


def opcode(text: str) -> str:
    words = text.split()
    op = words[1] if words[0].startswith("@") else words[0]
    return op.split(".")[0]


def report(label: str, fn, sig) -> None:
    res, ins = sass(fn, sig)
    print(f"{label}: {len(ins)} instructions; {res}")
    for addr, text in ins:
        m = BRANCH.search(text)
        if m and int(m.group(1), 16) < addr:  # a backward branch closes a loop
            start = int(m.group(1), 16)
            body = [t for a, t in ins if start <= a <= addr]
            mix = collections.Counter(opcode(t) for t in body).most_common(12)
            print(f"    loop {start:#06x}-{addr:#06x}: {len(body)} instructions: "
                  + " ".join(f"{k}:{v}" for k, v in mix))


def main(names: list[str]) -> int:
    i64 = types.int64
    parts = (types.int64[:, :, ::1], types.float64[:, :, ::1])
    params = types.float64[:, ::1]
    for name in names or ["float32", "float16", "float64", "uint8", "int16"]:
        dt, npdt = getattr(types, name), np.dtype(name)
        k = kk.make_kernels(STATS_THREADS, kk.family(npdt), kk.unroll(npdt))
        a = kk.make_affine_kernels(kk.affine_unroll(npdt))
        flat = types.Array(dt, 1, "C")
        print(f"== {name}: family {kk.family(npdt)}, {kk.unroll(npdt)} loads per group "
              f"(affine: {kk.affine_unroll(npdt)})")
        report("partial_cf", k.partial_cf.py_func, (types.Array(dt, 3, "C"), i64) + parts)
        report("partial_cl", k.partial_cl.py_func, (flat,) + (i64,) * 6 + parts)
        report("partial_rows", k.partial_rows.py_func, (flat,) + (i64,) * 7 + parts)
        out = types.float64 if name == "float64" else types.float32
        report(f"affine_cf -> {out}", a.affine_cf.py_func,
               (types.Array(dt, 3, "C"), params, types.Array(out, 3, "C"), i64, i64))
        oflat = types.Array(out, 1, "C")
        report(f"affine_cl -> {out}", a.affine_cl.py_func,
               (flat, i64, i64, params, oflat) + (i64,) * 6)
        report(f"affine_rows -> {out}", a.affine_rows.py_func,
               (flat, i64, i64, i64, params, oflat) + (i64,) * 6)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
