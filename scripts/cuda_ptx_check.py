"""Compile every CUDA kernel to PTX for sm_90 without a GPU, for every input dtype.

Catches what the simulator cannot: code that the CUDA target does not support (the
simulator runs kernels as Python). Needs numba-cuda, CUDA's libnvvm and NVRTC (for
example ``pip install "nvidia-cuda-nvrtc>=13,<14"`` and ``CUDA_HOME`` pointing at a
toolkit with nvvm, or ``LD_LIBRARY_PATH`` at the wheel's ``nvidia/cu13/lib``). Run it
without NUMBA_ENABLE_CUDASIM: about a minute on a GPU host, three on 2 cores without one.
Without a driver, numba-cuda 0.30.4 still asks the current device for its compute
capability when it compiles a device function: the script then answers sm_90 itself.
"""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np
from numba import cuda, types

from nbbn.backends import cuda_kernels as kk
from nbbn.backends.cuda import STATS_THREADS

CC = (9, 0)
DTYPES = [types.float16, types.float32, types.float64, types.uint8, types.int8, types.uint16,
          types.int16, types.int32, types.uint32, types.int64, types.uint64]


def _without_a_driver() -> None:
    """Let device functions compile for ``CC`` on a machine without a CUDA driver."""
    from numba.cuda import dispatcher

    try:
        cuda.get_current_device()
    except Exception:  # no driver: CudaSupportError (no GPU either)
        dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=CC)


def main() -> int:
    t0 = time.perf_counter()
    _without_a_driver()
    i64, f64, b1 = types.int64, types.float64, types.boolean
    parts = (types.int64[:, :, ::1], types.float64[:, :, ::1])
    stats = (types.int64[:, ::1], types.float64[:, ::1])
    params = types.float64[:, ::1]
    n = 0
    for dt in DTYPES:
        npdt = np.dtype(str(dt))
        k = kk.make_kernels(STATS_THREADS, kk.family(npdt), kk.unroll(npdt))
        a = kk.make_affine_kernels(kk.affine_unroll(npdt))
        flat = types.Array(dt, 1, "C")
        cuda.compile_ptx(k.partial_cl.py_func, (flat,) + (i64,) * 6 + parts, cc=CC)
        cuda.compile_ptx(k.partial_rows.py_func, (flat,) + (i64,) * 7 + parts, cc=CC)
        n += 2
        for layout in ("C", "A"):
            cuda.compile_ptx(k.partial_cf.py_func, (types.Array(dt, 3, layout), i64) + parts,
                             cc=CC)
            n += 1
        for odt in (types.float16, types.float32, types.float64):
            for layout in ("C", "A"):
                cuda.compile_ptx(a.affine_cf.py_func, (types.Array(dt, 3, layout), params,
                                 types.Array(odt, 3, layout), i64, i64), cc=CC)
                n += 1
            oflat = types.Array(odt, 1, "C")
            cuda.compile_ptx(a.affine_cl.py_func, (flat, i64, i64, params, oflat)
                             + (i64,) * 6, cc=CC)
            cuda.compile_ptx(a.affine_rows.py_func, (flat, i64, i64, i64, params, oflat)
                             + (i64,) * 6, cc=CC)
            n += 2
        print(f"{dt}: ok", flush=True)
    # bfloat16 as its uint16 bits: the "bf16" statistics family, decode/encode affine maps
    u16 = types.Array(types.uint16, 1, "C")
    k = kk.make_kernels(STATS_THREADS, "bf16", kk.unroll(np.dtype(np.uint16)))
    cuda.compile_ptx(k.partial_cl.py_func, (u16,) + (i64,) * 6 + parts, cc=CC)
    cuda.compile_ptx(k.partial_rows.py_func, (u16,) + (i64,) * 7 + parts, cc=CC)
    cuda.compile_ptx(k.partial_cf.py_func, (types.Array(types.uint16, 3, "A"), i64) + parts,
                     cc=CC)
    n += 3
    for bf16_in, bf16_out in ((True, True), (True, False), (False, True)):
        a = kk.make_affine_kernels(8, bf16_in, bf16_out)
        xdt = types.uint16 if bf16_in else types.float32
        odt = types.uint16 if bf16_out else types.float32
        cuda.compile_ptx(a.affine_cf.py_func, (types.Array(xdt, 3, "A"), params,
                         types.Array(odt, 3, "A"), i64, i64), cc=CC)
        cuda.compile_ptx(a.affine_cl.py_func, (types.Array(xdt, 1, "C"), i64, i64, params,
                         types.Array(odt, 1, "C")) + (i64,) * 6, cc=CC)
        cuda.compile_ptx(a.affine_rows.py_func, (types.Array(xdt, 1, "C"), i64, i64, i64,
                         params, types.Array(odt, 1, "C")) + (i64,) * 6, cc=CC)
        n += 3
    print("bfloat16: ok", flush=True)
    ck = kk.make_channel_kernels(128)
    ptx, _ = cuda.compile_ptx(ck.finalize.py_func, (i64,) + parts + stats + (b1,) + stats,
                              cc=CC)
    # two_prod on a GPU: a product ptxas may not fuse (mul.rn.f64) and its error by one
    # FMA, not Dekker's split (its splitter 134217729.0), which NVVM contracts
    if "0d41A0000002000000" in ptx or "mul.rn.f64" not in ptx or "fma.rn.f64" not in ptx:
        print("finalize: two_prod is not cuda.fma's (Dekker's splitter in the PTX, or no "
              "mul.rn.f64 / fma.rn.f64)", flush=True)
        return 1
    cuda.compile_ptx(ck.finalize_bn.py_func, parts + (f64, params, params, b1, f64, params),
                     cc=CC)
    print(f"{n + 2} kernels compiled to PTX for sm_{CC[0]}{CC[1]} in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
