"""Scalar numerics shared by every kernel: Chan's merge, NaN-propagating min/max, loads.

Each function here is a small ``@njit(inline="always")`` function so that the CPU
kernels (and, later, the CUDA kernels as device functions) share one source for
the merge arithmetic. Nothing here is compiled at import: numba compiles these
when the first kernel that calls them is compiled.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = [
    "chan_merge",
    "merge_min",
    "merge_max",
    "fminimum",
    "fmaximum",
    "to_float64",
    "half_bits_to_float64",
]


@numba.njit(inline="always")
def chan_merge(na, ma, m2a, nb, mb, m2b):
    """Merge two (count, mean, M2) triples exactly (Chan, Golub & LeVeque 1979).

    ``na`` and ``nb`` are integer counts; the result count is ``na + nb``. Empty
    parts are returned unchanged, so the merge never divides by zero.
    """
    if nb == 0:
        return na, ma, m2a
    if na == 0:
        return nb, mb, m2b
    n = na + nb
    fb = numba.float64(nb) / numba.float64(n)
    d = mb - ma
    if math.isfinite(d):
        mean = ma + d * fb
    else:
        # inf/NaN means (or a difference that overflows): the weighted form gives
        # inf for two infinities of one sign and NaN for opposite signs, as numpy does.
        mean = ma * (numba.float64(na) / numba.float64(n)) + mb * fb
    m2 = m2a + m2b + d * d * numba.float64(na) * fb
    return n, mean, m2


@numba.njit(inline="always")
def merge_min(a, b):
    """``min`` that propagates NaN (as ``np.minimum``)."""
    if a != a or b != b:
        return np.nan
    return a if a <= b else b


@numba.njit(inline="always")
def merge_max(a, b):
    """``max`` that propagates NaN (as ``np.maximum``)."""
    if a != a or b != b:
        return np.nan
    return a if a >= b else b


_TWO_POW_112 = 5.192296858534828e33  # 2.0 ** 112: rebias a half exponent into float32


@numba.njit(inline="always")
def half_bits_to_float64(h):
    """Exact value of an IEEE binary16 number given as its uint16 bit pattern.

    numba's CPU target has no float16 type, so float16 arrays reach the kernels as
    ``view(np.uint16)``. Shifting the 15 magnitude bits into a float32 and scaling by
    2**112 rebiases the exponent for normal and subnormal numbers alike; the all-ones
    exponent (inf and NaN) is mapped separately.
    """
    hb = np.uint32(h)
    mag = np.uint32((hb & np.uint32(0x7FFF)) << np.uint32(13))
    f = numba.float64(mag.view(np.float32)) * _TWO_POW_112
    if (hb & np.uint32(0x7C00)) == np.uint32(0x7C00):
        f = np.inf if (hb & np.uint32(0x3FF)) == np.uint32(0) else np.nan
    if hb & np.uint32(0x8000):
        f = -f
    return f


def to_float64(value, half):  # pragma: no cover - replaced by the overload in jitted code
    """Read one array element as float64; ``half`` is ``None`` or ``True`` (float16 bits)."""
    raise NotImplementedError("to_float64 is only callable from jitted code")


@overload(to_float64, inline="always")
def _to_float64_impl(value, half):
    # The *type* of ``half`` selects the decoder at compile time, so one kernel source
    # serves float16 (passed as uint16 bits with half=True) and every other dtype
    # (half=None), and the compiled kernels stay cacheable on disk.
    if isinstance(half, types.NoneType):
        return lambda value, half: numba.float64(value)
    return lambda value, half: half_bits_to_float64(value)


def _llvm_binary_float(name):
    """A numba intrinsic for the LLVM float intrinsic ``llvm.<name>.f32/f64``."""

    @intrinsic
    def _impl(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None
        sig = a(a, b)

        def codegen(context, builder, signature, args):
            lty = args[0].type
            fnty = ir.FunctionType(lty, [lty, lty])
            suffix = "f64" if isinstance(lty, ir.DoubleType) else "f32"
            fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.{name}.{suffix}")
            return builder.call(fn, args)

        return sig, codegen

    return _impl


# NaN-propagating min/max (IEEE 754-2019 minimum/maximum). Unlike a compare-and-select
# in Python source, LLVM vectorizes reductions over these intrinsics, which is what
# keeps the statistics kernels at memory speed. CPU target only.
fminimum = _llvm_binary_float("minimum")
fmaximum = _llvm_binary_float("maximum")
