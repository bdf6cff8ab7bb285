"""Channels-last uint8 -> float32 affine map with the parameters held in registers.

``cpu_normalize._affine_channels_last`` reads the three float64 parameters of every
element from tiled vectors (``ta[j]``, ``ts[j]``, ``tb[j]``): for uint8 HWC images (C = 3)
that is 24 bytes of parameter loads per byte of input, and the loop ran at 2.2-2.5 G
values/s per core in cache on an Intel AVX-512 host against 3.4 for the channels-first
loop, whose parameters are scalars (docs/benchmarks.md). Here a *period* of
``P = LANES * nvec`` elements (``nvec = C / gcd(C, LANES)`` vectors of ``LANES`` float64
lanes, 8 on AVX-512 and 4 on AVX2: a whole number of rows) keeps its ``3 * nvec``
parameter vectors in registers, loaded once per call, and each vector of ``LANES``
bytes costs one load, one conversion, ``x - a``, one FMA
``(x - a) * s + b``, the rounding to float32 and one store: the same operations, hence
the same bits, as the portable loop (``fastmath={"contract"}`` makes that an FMA too).
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .cpu_simd import HAVE_SIMD, SIMD_LEVEL, _declare

LANES = 8 if SIMD_LEVEL == "avx512" else 4  # float64 lanes per vector: a zmm or ymm register
# periods of at most this many vectors: 3 x 8 parameter vectors in AVX-512's 32 zmm
# registers, 3 x 4 in AVX2's 16 ymm
MAX_VECTORS = 8 if SIMD_LEVEL == "avx512" else 4

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_VI8 = ir.VectorType(ir.IntType(8), LANES)
_VF32 = ir.VectorType(ir.FloatType(), LANES)
_VF64 = ir.VectorType(ir.DoubleType(), LANES)


def period_vectors(nchan: int) -> int:
    """Vectors of ``LANES`` elements per period (a whole number of rows) for ``nchan``
    channels; 0 where the kernel does not apply (no SIMD level, or too many)."""
    nvec = nchan // math.gcd(nchan, LANES)
    return nvec if HAVE_SIMD and nvec <= MAX_VECTORS else 0


def _periods(context, builder, arrays, e0, nper, nvec: int) -> None:
    """The loop over ``nper`` periods of ``nvec`` vectors from ``e0`` on."""
    x, out, ta, ts, tb = arrays
    fma = _declare(builder, f"llvm.fma.v{LANES}f64", _VF64, [_VF64] * 3)

    def vec_ptr(arr, index, vt):
        return builder.bitcast(builder.gep(arr.data, [index]), vt.as_pointer())

    params = [[builder.load(vec_ptr(p, ir.Constant(_I64, LANES * v), _VF64), align=8)
               for v in range(nvec)] for p in (ta, ts, tb)]
    period = ir.Constant(_I64, LANES * nvec)
    with cgutils.for_range(builder, nper) as loop:
        base = builder.add(e0, builder.mul(loop.index, period))
        for v in range(nvec):
            at = builder.add(base, ir.Constant(_I64, LANES * v))
            raw = builder.load(vec_ptr(x, at, _VI8), align=1)
            d = builder.fsub(builder.uitofp(raw, _VF64), params[0][v])
            y = builder.call(fma, [d, params[1][v], params[2][v]])
            builder.store(builder.fptrunc(y, _VF32), vec_ptr(out, at, _VF32), align=4)


@intrinsic
def u8_affine_periods(typingctx, x, out, ta, ts, tb, e0, nper, nvec):
    """``out[e] = float32((x[e] - ta[j]) * ts[j] + tb[j])`` (one FMA) for the ``nper``
    periods of ``LANES * nvec`` elements from ``e0`` on, ``j`` the position in the
    period; ``x`` uint8 and ``out`` float32, flat and C-contiguous; ``nvec`` from 1 to
    ``MAX_VECTORS`` (one compiled loop each, chosen by a switch), else nothing."""
    if not (isinstance(x, types.Array) and x.dtype == types.uint8
            and isinstance(out, types.Array) and out.dtype == types.float32):
        return None
    sig = types.void(x, out, ta, ts, tb, e0, nper, nvec)

    def codegen(context, builder, signature, args):
        sa = signature.args
        arrays = [context.make_array(sa[i])(context, builder, args[i]) for i in range(5)]
        e, n, k = (context.cast(builder, args[i], sa[i], types.int64) for i in (5, 6, 7))
        done = builder.append_basic_block("periods_done")
        switch = builder.switch(k, done)
        for nv in range(1, MAX_VECTORS + 1):
            case = builder.append_basic_block(f"periods_of_{nv}")
            switch.add_case(ir.Constant(_I64, nv), case)
            builder.position_at_end(case)
            _periods(context, builder, arrays, e, n, nv)
            builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen


def u8_affine_head(xf, outf, ta, ts, tb, e, e1, nvec):  # pragma: no cover - overloaded
    """The whole periods of ``xf[e:e1]`` through the register kernel (``nvec`` vectors
    per period, 0: none); returns where the rest begins."""
    raise NotImplementedError


@overload(u8_affine_head, inline="always")
def _u8_affine_head_impl(xf, outf, ta, ts, tb, e, e1, nvec):
    if not (HAVE_SIMD and xf.dtype == types.uint8 and outf.dtype == types.float32):
        return lambda xf, outf, ta, ts, tb, e, e1, nvec: e

    def impl(xf, outf, ta, ts, tb, e, e1, nvec):
        if nvec == 0:
            return e
        nper = (e1 - e) // (LANES * nvec)
        u8_affine_periods(xf, outf, ta, ts, tb, e, nper, nvec)
        return e + nper * LANES * nvec

    return impl
