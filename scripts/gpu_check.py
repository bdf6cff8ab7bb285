"""Check the CUDA backend against the CPU backend on a real GPU (run by gpu_check.sh).

Every public entry point, both layouts, every dtype family, NaN policies, several
blocks per channel and a partial last block, and the array-type round trip for
Numba device arrays, torch CUDA tensors and CuPy arrays where installed. Prints one
line per check and exits with status 1 if any check fails. Also runs under the CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1 python scripts/gpu_check.py --small``), slowly.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np
from numba import cuda

import nbbn

SMALL = "--small" in sys.argv
failures: list[str] = []


def check(name: str, fn) -> None:
    try:
        fn()
        print(f"PASS {name}", flush=True)
    except Exception:  # noqa: BLE001
        failures.append(name)
        print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)


def close(got, exp, rtol, what):
    np.testing.assert_allclose(got, exp, rtol=rtol, atol=0, equal_nan=True, err_msg=what)


def data(shape, dtype, rng, mean=3.0):
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        if info.bits <= 16:  # the exact integer kernels: the whole range, extremes included
            return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        lo, hi = max(info.min, -1000), min(info.max, 1000)
        return rng.integers(lo, hi, size=shape, dtype=dtype)
    return (rng.standard_normal(shape) * 2 + mean).astype(dtype)


SHAPES = [((3, 5, 7, 9), 1), ((7, 6, 5, 3), -1), ((40, 300), -1), ((2, 300, 17), 1)] if SMALL \
    else [((16, 64, 33, 35), 1), ((16, 33, 35, 64), -1), ((8, 3, 224, 224), 1),
          ((8, 224, 224, 3), -1), ((100_003, 64), -1), ((3, 1000, 7), 1), ((1, 3, 1_000_001), 1)]
DTYPES = ["float32", "float64", "float16", "uint8", "int16", "uint16", "int64"]


def stats_case(shape, axis, dtype):
    def run():
        rng = np.random.default_rng(0)
        x = data(shape, dtype, rng)
        cpu = nbbn.channel_stats(x, axis, backend="cpu")
        gpu = nbbn.channel_stats(cuda.to_device(x), axis)
        tol = 1e-6 if dtype in ("float32", "float16") else 1e-12
        np.testing.assert_array_equal(gpu.count, cpu.count)
        close(gpu.mean, cpu.mean, tol, "mean")
        close(gpu.var, cpu.var, tol, "var")
        np.testing.assert_array_equal(gpu.min, cpu.min)
        np.testing.assert_array_equal(gpu.max, cpu.max)
        norm = nbbn.Normalizer(cpu.mean, cpu.var, channel_axis=axis)  # backend "auto"
        y = norm(cuda.to_device(x)).copy_to_host()
        close(y.astype(np.float64), norm(x).astype(np.float64), 2e-3 if dtype == "float16"
              else 1e-6, "normalizer")
        bn_g, bn_c = nbbn.BatchNorm(x.shape[axis], channel_axis=axis), \
            nbbn.BatchNorm(x.shape[axis], channel_axis=axis, backend="cpu")
        for _ in range(2):
            yg, yc = bn_g(cuda.to_device(x)).copy_to_host(), bn_c(x)
        close(yg.astype(np.float64), yc.astype(np.float64), 2e-3 if dtype == "float16"
              else 1e-5, "batchnorm output")
        close(bn_g.running_var, bn_c.running_var, tol, "running_var")
    return run


def accuracy_case():
    rng = np.random.default_rng(1)
    x = (1e4 + rng.standard_normal((8, 4, 5000))).astype(np.float32)
    gpu = nbbn.channel_stats(cuda.to_device(x))
    ref = x.astype(np.float64).transpose(1, 0, 2).reshape(4, -1)
    close(gpu.var, ref.var(axis=1), 1e-6, "var at mean = 1e4 x std")


def nan_case(policy):
    def run():
        rng = np.random.default_rng(2)
        x = rng.standard_normal((5, 4, 1000))
        x[1, 0, 3] = np.nan
        x[2, 1, 5] = np.inf
        x[3, 2, 7], x[4, 2, 9] = np.inf, -np.inf
        x[:, 3, :] = np.nan
        cpu = nbbn.channel_stats(x, nan_policy=policy, backend="cpu")
        gpu = nbbn.channel_stats(cuda.to_device(x), nan_policy=policy)
        for name in ("count", "nan_count", "mean", "var", "min", "max"):
            close(getattr(gpu, name), getattr(cpu, name), 1e-12, name)
    return run


def stream_case():
    rng = np.random.default_rng(3)
    batches = [data((9, 6, 31), "float32", rng) for _ in range(5)]
    rs = nbbn.RunningStats()
    for b in batches:
        rs.update(cuda.to_device(b))
    cpu = nbbn.RunningStats(backend="cpu")
    for b in batches:
        cpu.update(b)
    close(rs.var, cpu.var, 1e-12, "streamed var")


def library_case(name):
    def run():
        rng = np.random.default_rng(4)
        x = data((8, 16, 12, 12), "float32", rng)
        if name == "torch":
            import torch

            if not torch.cuda.is_available():
                print("SKIP torch (no CUDA in this torch)")
                return
            d, kind, host = torch.from_numpy(x).cuda(), torch.Tensor, lambda a: a.cpu().numpy()
            side = torch.cuda.Stream()
            with torch.cuda.stream(side):  # kernels must run on the tensor's stream
                d2 = d * 1.0
                rs = nbbn.channel_stats(d2)
                y = rs.to_normalizer()(d2)
            torch.cuda.synchronize()
        else:
            import cupy

            d, kind, host = cupy.asarray(x), cupy.ndarray, cupy.asnumpy
            rs = nbbn.channel_stats(d)
            y = rs.to_normalizer()(d)
        cpu = nbbn.channel_stats(x)
        close(rs.var, cpu.var, 1e-6, "var")
        assert isinstance(y, kind), type(y)
        close(host(y), cpu.to_normalizer()(x), 1e-6, "normalizer")
        assert isinstance(nbbn.BatchNorm(16)(d), kind)
    return run


def main() -> int:
    print(f"device: {getattr(cuda.get_current_device(), 'name', 'simulator')}", flush=True)
    for shape, axis in SHAPES:
        for dtype in DTYPES:
            check(f"stats/normalizer/batchnorm {shape} axis={axis} {dtype}",
                  stats_case(shape, axis, dtype))
    check("accuracy mean = 1e4 x std", accuracy_case)
    for policy in ("propagate", "omit"):
        check(f"nan/inf nan_policy={policy}", nan_case(policy))
    check("stream of 5 updates", stream_case)
    for lib in ("torch", "cupy"):
        try:
            __import__(lib)
        except ImportError:
            print(f"SKIP {lib} (not installed)")
            continue
        check(f"{lib} round trip", library_case(lib))
    print(f"{len(failures)} failed" if failures else "all passed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
