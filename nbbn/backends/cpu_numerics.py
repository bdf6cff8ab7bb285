"""Scalar numerics of the CPU kernels: Chan's merge, NaN-propagating min/max, loads.

The merge arithmetic is the CPU build of :mod:`nbbn._merge` (the CUDA kernels compile
the same source as device functions); the rest are small ``@njit(inline="always")``
helpers. Importing this module imports numba but compiles nothing: numba compiles
these when the first kernel that calls them is compiled.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import _merge
from .cpu_simd import HAVE_SIMD, f32_to_half_bits, half_bits_to_f32

__all__ = [
    "chan_merge",
    "dd_mean",
    "dd_quot",
    "inf_mean",
    "int_mean",
    "two_sum",
    "two_prod",
    "merge_min",
    "merge_max",
    "store_stats",
    "fmin_fast",
    "fmax_fast",
    "fmin_num",
    "fmax_num",
    "to_float64",
    "as_float32",
    "store_float",
    "half_bits_to_float64",
    "BF16",
    "is_bf16",
]

BF16 = np.uint8(16)
"""The ``half`` marker of bfloat16 input or output (its uint16 bits): ``None`` marks a
native dtype, ``True`` float16 bits, and this integer bfloat16 bits; the marker's numba
*type* picks the decoder when a kernel is compiled."""


def is_bf16(half) -> bool:
    """True when the numba type of a ``half`` marker says bfloat16 (see :data:`BF16`)."""
    return isinstance(half, types.Integer)


_EXP_MASK = np.uint64(0x7FF0000000000000)
_EXP_BITS = np.int64(0x7FF0000000000000)
_MAGNITUDE = np.int64(0x7FFFFFFFFFFFFFFF)


@numba.njit(inline="always")
def is_finite_bits(x):
    """``math.isfinite`` on the bit pattern of a float64.

    Kernels compiled with fast-math flags (even just ``reassoc``) may have a
    floating-point ``isfinite`` test folded away by LLVM; an integer test on the
    exponent bits cannot be.
    """
    return (np.float64(x).view(np.uint64) & _EXP_MASK) != _EXP_MASK


@numba.njit(inline="always")
def is_nan_bits(x):
    """``math.isnan`` on the bit pattern of a float64 (see ``is_finite_bits``): a signed
    compare of the magnitude's bits, which vectorizes on AVX2 (``vpcmpgtq``)."""
    return (np.float64(x).view(np.int64) & _MAGNITUDE) > _EXP_BITS


# The merge arithmetic (nbbn/_merge.py), compiled for the CPU. fastmath=False is
# explicit: a numba callee that sets no fastmath option inherits its caller's, and the
# kernels' ``reassoc`` folds two_sum's error term to 0 and ``math.isfinite`` to True.
@intrinsic
def fma64(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma.f64``: the FMA instruction at the AVX2 and
    AVX-512 levels, libm's ``fma`` on a target without one)."""
    if not (a == b == c == types.float64):
        return None

    def codegen(context, builder, signature, args):
        t = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t, t]),
                                            "llvm.fma.f64")
        return builder.call(fn, args)

    return types.float64(a, b, c), codegen


@numba.njit(fastmath=False)
def _two_prod_fma(a, b):
    """``_merge._two_prod`` in two operations: ``p = fl(a * b)`` and its error
    ``fma(a, b, -p)``, exact (Dekker's split took 17; the merges of wide tables of few
    rows ran 1.25x slower with it)."""
    af = numba.float64(a)
    bf = numba.float64(b)
    p = af * bf
    return p, fma64(af, bf, -p)


_merge_cpu = _merge.build(numba.njit(fastmath=False), two_prod=_two_prod_fma)
two_sum = _merge_cpu.two_sum
two_prod = _merge_cpu.two_prod
dd_mean = _merge_cpu.dd_mean
dd_quot = _merge_cpu.dd_quot
chan_merge = _merge_cpu.chan_merge
merge_min = _merge_cpu.nan_min
merge_max = _merge_cpu.nan_max
store_stats = _merge_cpu.store


@numba.njit(inline="always")
def inf_mean(mn, mx):
    """The mean of values holding infinities of one sign, or both (min ``mn``, max
    ``mx``): that infinity, or NaN, whatever the finite values' sum did."""
    if mn == -math.inf and mx == math.inf:
        return math.nan
    return mx if mx == math.inf else mn


@numba.njit(inline="always")
def int_mean(s, n):
    """The mean ``s / n`` of integers with an exact integer sum ``s``, as ``(hi, lo)``:
    the quotient and remainder are exact integers, and the remainder's share keeps its
    rounding error (``dd_quot``), so ``hi`` is the mean correctly rounded."""
    q = s // n
    r = s - q * n
    return dd_quot(numba.float64(q), numba.float64(r), numba.float64(n))


@numba.njit(inline="always")
def corrected_m2(q, c, n):
    """M2 of the corrected two-pass algorithm, ``q - c^2 / n`` (``q`` the sum of the
    squared deviations from a trial mean, ``c`` their sum), at least 0. An overflowed
    ``q`` is M2's overflow (``c^2 / n <= q``): it stays inf, where ``c * (c / n)`` may
    overflow too and ``inf - inf`` would be NaN."""
    if q == math.inf:
        return q
    return max(q - c * (c / n), numba.float64(0))


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


@numba.njit(inline="always")
def bf16_bits_to_f32(h):
    """The float32 value (exact) of the bfloat16 whose bits are ``h``: its top 16 bits."""
    return np.uint32(np.uint32(h) << np.uint32(16)).view(np.float32)


@intrinsic
def f32_to_bf16_bits(typingctx, f):
    """The bits (uint16) of float32 ``f`` rounded to bfloat16 to nearest even, as torch
    rounds (any NaN becomes the quiet NaN 0x7FC0): integer adds, shifts and a select on
    the float's bits, in LLVM IR so that the loops around it vectorize (as numba code
    called from ``store_float`` it stayed a call, and its loop ran 4x slower)."""
    if f != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        u = builder.bitcast(args[0], i32)
        odd = builder.and_(builder.lshr(u, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        rounded = builder.lshr(builder.add(builder.add(u, ir.Constant(i32, 0x7FFF)), odd),
                               ir.Constant(i32, 16))
        nan = builder.icmp_unsigned(">", builder.and_(u, ir.Constant(i32, 0x7FFFFFFF)),
                                    ir.Constant(i32, 0x7F800000))
        bits = builder.select(nan, ir.Constant(i32, 0x7FC0), rounded)
        return builder.trunc(bits, ir.IntType(16))

    return types.uint16(f), codegen


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
    if is_bf16(half):
        return lambda value, half: numba.float64(bf16_bits_to_f32(value))
    if HAVE_SIMD:  # F16C in hardware
        return lambda value, half: numba.float64(half_bits_to_f32(value))
    return lambda value, half: half_bits_to_float64(value)


def as_float32(value, half):  # pragma: no cover - replaced by the overload
    """A float32 element as it is, float16 bits (``half=True``) as float32 (F16C), or
    bfloat16 bits (``half=BF16``) as float32."""
    raise NotImplementedError("as_float32 is only callable from jitted code")


@overload(as_float32, inline="always")
def _as_float32_impl(value, half):
    if isinstance(half, types.NoneType):
        return lambda value, half: value
    if is_bf16(half):
        return lambda value, half: bf16_bits_to_f32(value)
    return lambda value, half: half_bits_to_f32(value)


def store_float(out, i, value, half):  # pragma: no cover - replaced by the overload
    """``out[i] = value`` (float64), or its float16 bits when ``half`` is True (then
    ``out`` is the uint16 view of a float16 array; only at the SIMD levels), or its
    bfloat16 bits when ``half`` is BF16 (float64 -> float32 -> bfloat16, as torch)."""
    raise NotImplementedError("store_float is only callable from jitted code")


@overload(store_float, inline="always")
def _store_float_impl(out, i, value, half):
    if isinstance(half, types.NoneType):
        def store(out, i, value, half):
            out[i] = value
        return store
    if is_bf16(half):
        def store_bf16(out, i, value, half):
            out[i] = f32_to_bf16_bits(np.float32(value))
        return store_bf16

    # float64 -> float32 -> float16: F16C converts float32 only, and a float64 -> float16
    # rounding done once cost 1.4-1.8x on float16 outputs (docs/numerics.md)
    def store_half(out, i, value, half):
        out[i] = f32_to_half_bits(np.float32(value))
    return store_half


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


def _llvm_num_float(name):
    """``llvm.minnum`` or ``llvm.maxnum`` (``name``): the minimum or maximum of two
    floats that ignores a NaN operand (NaN only when both are), either zero for a -0.0
    and 0.0 pair. LLVM vectorizes a loop over it (``vminpd`` and a blend per vector),
    where a compare-and-select that skips NaN stayed scalar in a kernel without
    fast-math flags (1.5 against 0.62 ns per value, ``cpu_weighted._rows_masked``)."""

    @intrinsic
    def _impl(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            t = args[0].type
            suffix = "f64" if t == ir.DoubleType() else "f32"
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(t, [t, t]), f"llvm.{name}.{suffix}")
            return builder.call(fn, args)

        return a(a, b), codegen

    return _impl


fmin_num = _llvm_num_float("minnum")
fmax_num = _llvm_num_float("maxnum")
