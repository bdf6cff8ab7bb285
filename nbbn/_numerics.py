"""Scalar numerics shared by every kernel: Chan's merge, NaN-propagating min/max, loads.

Each function here is a small ``@njit(inline="always")`` function so that the CPU
kernels (and, later, the CUDA kernels as device functions) share one source for
the merge arithmetic. Nothing here is compiled at import: numba compiles these
when the first kernel that calls them is compiled.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

__all__ = [
    "chan_merge",
    "merge_min",
    "merge_max",
    "fmin_fast",
    "fmax_fast",
    "to_float64",
    "half_bits_to_float64",
]


_EXP_MASK = np.uint64(0x7FF0000000000000)


@numba.njit(inline="always")
def is_finite_bits(x):
    """``math.isfinite`` on the bit pattern of a float64.

    Kernels compiled with fast-math flags (even just ``reassoc``) may have a
    floating-point ``isfinite`` test folded away by LLVM; an integer test on the
    exponent bits cannot be.
    """
    return (np.float64(x).view(np.uint64) & _EXP_MASK) != _EXP_MASK


_ABS_MASK = np.uint64(0x7FFFFFFFFFFFFFFF)


@numba.njit(inline="always")
def is_nan_bits(x):
    """``math.isnan`` on the bit pattern of a float64 (immune to fast-math folding)."""
    return (np.float64(x).view(np.uint64) & _ABS_MASK) > _EXP_MASK


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
    if is_finite_bits(d):
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
    if is_nan_bits(a) or is_nan_bits(b):
        return np.nan
    return a if a <= b else b


@numba.njit(inline="always")
def merge_max(a, b):
    """``max`` that propagates NaN (as ``np.maximum``)."""
    if is_nan_bits(a) or is_nan_bits(b):
        return np.nan
    return a if a >= b else b


_TWO_POW_112 = 5.192296858534828e33  # 2.0 ** 112: rebias a half exponent into float32


@numba.njit
def half_bits_to_float64(h):
    """Exact value of an IEEE binary16 number given as its uint16 bit pattern.

    numba's CPU target has no float16 type, so float16 arrays reach the kernels as
    ``view(np.uint16)``. Shifting the 15 magnitude bits into a float32 and scaling by
    2**112 rebiases the exponent for normal and subnormal numbers alike; the all-ones
    exponent (inf and NaN) is mapped separately. Written with selects, not branches,
    so that it inlines cleanly into vectorized loops.
    """
    hb = np.uint32(h)
    mag = np.uint32((hb & np.uint32(0x7FFF)) << np.uint32(13))
    special = np.uint32((hb & np.uint32(0x7C00)) == np.uint32(0x7C00))  # 1 for inf/NaN
    # inf/NaN: an all-ones float32 exponent with the same mantissa bits, no rescaling
    bits = np.uint32(mag | (special * np.uint32(0x7F800000)))
    scale = 1.0 + numba.float64(np.uint32(1) - special) * (_TWO_POW_112 - 1.0)
    sign = 1.0 - 2.0 * numba.float64(hb >> np.uint32(15))
    return numba.float64(bits.view(np.float32)) * scale * sign


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


def _llvm_select_float(op):
    """``b if b <op> a else a`` as one flagged compare and select (CPU target only).

    The ``nnan nsz`` flags on the compare and the select let LLVM turn a loop over it
    into a vectorized min/max reduction (plain ``vminps``/``vmaxps``), which a
    compare-and-select in Python source never becomes. The price: with a NaN operand
    the result is an unspecified value. Use it only in fast paths whose NaN blocks are
    detected independently (by an integer test of the sum) and recomputed, and never
    branch on its result before that test.
    """

    @intrinsic
    def _impl(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None
        sig = a(a, b)

        def codegen(context, builder, signature, args):
            x, y = args
            take_y = builder.fcmp_ordered(op, y, x, flags=("nnan", "nsz"))
            return builder.select(take_y, y, x, flags=("nnan", "nsz"))

        return sig, codegen

    return _impl


fmin_fast = _llvm_select_float("<")
fmax_fast = _llvm_select_float(">")
