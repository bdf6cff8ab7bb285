"""Explicit SIMD (LLVM IR on vector types) where numba's auto-vectorized loops fall short.

Five kernels, each used only when numba's compile target has AVX-512BW or AVX2 (with
FMA): :data:`SIMD_LEVEL` is "avx512", "avx2" or "none", decided once, from the
features numba compiles with (``NUMBA_CPU_FEATURES``, else the host's, as numba reads
them: ``NUMBA_ENABLE_AVX=0`` clears the ``avx*`` features, so the level is "none",
though features such as FMA may still let LLVM use AVX; :func:`target_level`) and
capped by the
environment variable ``NBBN_SIMD`` ("none" forces the portable loops of ``cpu_stats``,
"avx2" the AVX2 code on an AVX-512 host; the tests run under both). The kernels are
written on generic LLVM vector types (64-byte vectors of bytes, 16 or 8 float lanes),
which LLVM lowers to zmm or ymm registers; the only x86-specific intrinsics are the
integer ``psadbw`` and ``pmaddwd``, taken as one 512-bit instruction or two 256-bit
ones by level (:func:`_psadbw`, :func:`_pmaddwd`), and ``vpdpbusd`` where the target
has AVX-512 VNNI (:data:`HAVE_VNNI`). The compiled kernels of each level
have names (hence numba disk-cache entries) of their own (``cpu_stats``).

* ``u8_sums``: a uint8 block's exact sums (channels-first rows), below;
* ``cl_rows_f32``: channels-last float32 (and float16), a chunk of channels in registers
  (``cl_chunk_masked``: the last, partial, vector of float32 channels);
* ``f32_shifted_sums``: a channels-first float32 (and float16) block with more
  accumulators than LLVM gives it (``F32_HEAD``: not on Zen 4/5's AVX-512);
* ``row_shifted_sums``: one short channels-first row (2 to 7 vectors: 7x7 maps);
* ``u8_cl_pass``: channels-last uint8 (HWC images), exact sums by byte position
  (``u8_cl_pass_vnni``: the same with AVX-512 VNNI's ``vpdpbusd``).

and ``prefetch_ahead`` (``prefetch_line``), the L1 prefetch ``L1_AHEAD`` bytes ahead
that the affine kernels (``cpu_normalize``) call once per tile or block.

For a uint8 block the exact statistics need four integer reductions: the sum, the sum
of squares, the minimum and the maximum. Auto-vectorized, the loop widens every byte
to an int32 lane (16 lanes per 512-bit register), so the sums cost eight vector
operations per 64 bytes and the kernel is compute-bound at about 25 G values/s per
core from L2. Three AVX-512BW instructions do the same work on whole 64-byte vectors,
at about 70 G values/s per core from L2 (docs/benchmarks.md):

* ``vpsadbw`` against zero: the sum of each 8 bytes, as 8 int64 lanes (one op for 64 values);
* ``vpmaddwd`` of the 16-bit lanes holding the even bytes (a mask) and the odd bytes
  (a shift) with themselves: ``x[2i]**2 + x[2i+1]**2`` as 16 int32 lanes (two ops for
  64 values; LLVM fuses each with its add into ``vpdpwssd`` where VNNI exists);
* ``vpminub`` / ``vpmaxub`` for the minimum and maximum.

``u8_block_sums`` emits that loop as LLVM IR (x86 intrinsics for the sums, generic
``llvm.umin``/``llvm.umax`` for the extremes); on AVX2 each 64-byte vector is two
``vpsadbw``/``vpmaddwd`` of 32 bytes. Elsewhere the portable loop in
``cpu_stats.block_fast`` runs. All sums are exact integers, so every path gives
identical results.
"""

from __future__ import annotations

import os

import llvmlite.binding as llvm_binding
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, overload

LEVELS = ("none", "avx2", "avx512")

# CPU names numba may be told to target (NUMBA_CPU_NAME), by the widest level nbbn uses
# on them; a name not listed gets the portable loops (always correct).
_AVX512_CPUS = {"skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                "icelake-server", "tigerlake", "rocketlake", "sapphirerapids",
                "emeraldrapids", "graniterapids", "graniterapids-d", "diamondrapids",
                "znver4", "znver5", "x86-64-v4"}
_AVX2_CPUS = {"haswell", "broadwell", "skylake", "kabylake", "coffeelake", "cometlake",
              "alderlake", "raptorlake", "meteorlake", "arrowlake", "arrowlake-s",
              "lunarlake", "pantherlake", "gracemont", "sierraforest", "grandridge",
              "clearwaterforest", "znver1", "znver2", "znver3", "bdver4", "x86-64-v3"}


def _level_of_features(features) -> str:
    """The level a set of LLVM feature names supports."""
    if {"avx512bw", "avx512f", "fma", "f16c"} <= features:
        return "avx512"
    if {"avx2", "fma", "f16c"} <= features:
        return "avx2"
    return "none"


def _numba_features(cpu_features: str | None, host: str | None = None) -> set | None:
    """The features numba enables in LLVM, or None when it passes none (the CPU name's
    defaults then apply). numba passes ``NUMBA_CPU_FEATURES`` when set, else the host's
    whole feature string (``+a,-b,...``, every feature named, ``avx*`` cleared under
    ``NUMBA_ENABLE_AVX=0``) whatever ``NUMBA_CPU_NAME`` is: ``NUMBA_CPU_NAME=haswell``
    alone on an AVX-512 host still compiles AVX-512 code. ``host``: that string, for
    tests (default: numba's own)."""
    if cpu_features is None:
        if host is None:
            try:
                from numba.core.codegen import get_host_cpu_features

                host = get_host_cpu_features()
            except Exception:  # pragma: no cover - exotic hosts
                host = ""
        cpu_features = host
    if not cpu_features:
        return None
    enabled: set[str] = set()
    for entry in cpu_features.split(","):  # in order, as LLVM applies them: the last wins
        name = entry.strip()[1:]
        if entry.strip().startswith("+"):
            enabled.add(name)
        elif entry.strip().startswith("-"):  # and every feature that needs it
            enabled -= {name} | {f for f in enabled if name in _NEEDS_ALL.get(f, ())}
    return enabled


# What each feature the levels read needs in LLVM (directly): "-avx" clears AVX2, FMA,
# F16C and AVX-512 with it, and "-sse4.2" all of them
_NEEDS = {"avx512bw": ("avx512f",), "avx512vnni": ("avx512f",), "avx512vl": ("avx512f",),
          "avx512f": ("avx2", "fma", "f16c"), "avx2": ("avx",), "fma": ("avx",),
          "f16c": ("avx",), "avx": ("sse4.2",), "sse4.2": ("sse4.1",), "sse4.1": ("ssse3",),
          "ssse3": ("sse3",), "sse3": ("sse2",), "sse2": ("sse",)}


def _all_needs(feature: str) -> frozenset:
    out: set[str] = set()
    todo = list(_NEEDS.get(feature, ()))
    while todo:
        f = todo.pop()
        if f not in out:
            out.add(f)
            todo.extend(_NEEDS.get(f, ()))
    return frozenset(out)


_NEEDS_ALL = {f: _all_needs(f) for f in _NEEDS}


def target_level(cpu_name: str | None = None, cpu_features: str | None = None,
                 host: str | None = None) -> str:
    """The SIMD level of numba's compile target: from the features numba passes to
    LLVM (:func:`_numba_features`: ``NUMBA_CPU_FEATURES``, else the host's), and from
    a table of known CPUs only where it passes none (``NUMBA_CPU_FEATURES=""``, and
    ``NUMBA_CPU_NAME=generic``, whose default is no features). An explicit feature
    list is read alone: a level the CPU name would add is not used (portable loops,
    never code the target lacks)."""
    features = _numba_features(cpu_features, host)
    if features is not None:
        return _level_of_features(features)
    if cpu_name and cpu_name != "host":
        if cpu_name in _AVX512_CPUS:
            return "avx512"
        return "avx2" if cpu_name in _AVX2_CPUS else "none"
    return "none"


def simd_level() -> str:
    """:func:`target_level`, capped by ``NBBN_SIMD`` (none, avx2, avx512 or auto)."""
    level = target_level(getattr(config, "CPU_NAME", None), getattr(config, "CPU_FEATURES", None))
    cap = os.environ.get("NBBN_SIMD", "auto").strip().lower() or "auto"
    if cap == "auto":
        return level
    if cap not in LEVELS:
        raise ValueError(f"NBBN_SIMD must be one of auto, {', '.join(LEVELS)}; got {cap!r}")
    return LEVELS[min(LEVELS.index(level), LEVELS.index(cap))]


SIMD_LEVEL = simd_level()
HAVE_SIMD = SIMD_LEVEL != "none"


def target_cpu_name(cpu_name: str | None = None) -> str:
    """The CPU numba compiles for: ``NUMBA_CPU_NAME`` unless "host", else the host's."""
    if cpu_name and cpu_name != "host":
        return cpu_name
    try:
        return str(llvm_binding.get_host_cpu_name())
    except Exception:  # pragma: no cover - exotic hosts
        return "generic"

# Bytes per vector, vectors per loop iteration, and the most iterations one call may
# run: each int32 lane of a squares accumulator gains at most 2 * 255**2 per
# iteration, and 16384 * 130050 < 2**31. So one call reduces at most 2 MiB.
VEC = 64
UNROLL = 2
MAX_ITERATIONS = 16384
# Bytes ahead of each load that the kernels also prefetch into L1 (0: none): a loop
# that computes while the hardware prefetchers alone fetch ran as if the arithmetic and
# the DRAM waits took turns (see F32_HEAD for the float32 head's series). One machine,
# two threads, alternating runs, GB/s:
# - AVX2 level, Zen 2: uint8 NCHW (u8_block_sums) 17.7 -> 22.2-24.1 at 1536 bytes (1024:
#   21.0, 3072: 19.3-25.3, 4096: 20.6-22.7); uint8 HWC (u8_cl_pass) 16.5 -> 19.3-22.7
#   (768: 18.3-20.2, 3072: 19.6-21.0);
# - AVX-512 level, an Intel Xeon (LLVM: "rocketlake"; 38 GB/s read): uint8 NCHW 16.3-16.9
#   -> 30.6-31.4 at 1536, 30.6-32.5 at 2048, 34.8-35.8 at 3072, 34.9-35.7 at 4096; uint8
#   HWC 22.2-22.8 -> 27.2-27.8 / 29.7-30.8 / 28.2-36.8 / 29.5-36.5; float32 NCHW (with
#   F32_HEAD) 22.1-23.9 / 21.7-23.8 / 24.0-24.8 / 19.8.
# Not at the AVX-512 level of AMD's Zen 4/5 (``znver*``): not measured there, where the
# kernels read at 71-117% of the bandwidth without it (docs/benchmarks.md).
_TARGET_CPU = target_cpu_name(getattr(config, "CPU_NAME", None))
_ZEN_AVX512 = SIMD_LEVEL == "avx512" and _TARGET_CPU.startswith("znver")
L1_AHEAD = {"avx2": 1536, "avx512": 0 if _ZEN_AVX512 else 3072}.get(SIMD_LEVEL, 0)
# The affine kernels' prefetch (``prefetch_ahead``), measured on Intel (faster at both
# levels), is left out on AMD's Zen hardware whatever the code's level. On Zen 4, AVX2
# code (``NUMBA_CPU_NAME=haswell``) mapped at 0.75-0.87x with it (float32 NCHW and
# float64 NHWC normalizer, 5-8 alternating rounds, 2026-12-03); on Zen 2, the
# normalizer without it took 0.76-0.98 of the time with it (11 alternating rounds,
# 2026-12-05). Zen 3 is not measured and follows its neighbours. A tuning of the
# hardware, not of the instruction set, so the host's name decides.
_HOST_CPU = target_cpu_name()
AFFINE_L1_AHEAD = 0 if _HOST_CPU.startswith("znver") else L1_AHEAD
MAX_BYTES = VEC * UNROLL * MAX_ITERATIONS

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
_V64I8 = ir.VectorType(_I8, 64)
_V32I16 = ir.VectorType(_I16, 32)
_V16I32 = ir.VectorType(_I32, 16)
_V8I64 = ir.VectorType(_I64, 8)
_V16I64 = ir.VectorType(_I64, 16)


def _declare(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _prefetch(builder, ptr, locality: int) -> None:
    """A read prefetch of the line at ``ptr``: ``locality`` 3 into L1 (``prefetcht0``),
    2 into L2 (``prefetcht1``)."""
    fn = _declare(builder, "llvm.prefetch.p0", ir.VoidType(), [_PTR8, _I32, _I32, _I32])
    builder.call(fn, [builder.bitcast(ptr, _PTR8), _I32(0), _I32(locality), _I32(1)])


@intrinsic
def prefetch_line(typingctx, arr, index):
    """Prefetch into L1 (``prefetcht0``) the line that holds ``arr[index]`` of a 1-d
    array (by its stride). An ``index`` past the end is allowed: a prefetch is a hint,
    it reads nothing there and cannot fault."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.int64)
        offset = builder.mul(i, builder.extract_value(ary.strides, 0))
        _prefetch(builder, builder.gep(builder.bitcast(ary.data, _PTR8), [offset]), 3)
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@numba.njit(inline="always")
def prefetch_ahead(arr, start, count, ahead):
    """Prefetch into L1 the lines of ``arr[start + a : start + a + count]`` of a 1-d
    contiguous array, ``a`` being ``ahead`` bytes (the affine kernels pass
    ``AFFINE_L1_AHEAD``, a constant of their build); nothing where that is 0, nothing of
    a strided array, nothing past the end. Called by the affine kernels once per tile or
    block of their input, ahead of the loop that reads it (the hardware prefetchers alone
    leave the loads waiting on memory on Intel: design.md, "Prefetching in the affine
    kernels")."""
    if ahead and arr.strides[0] == arr.itemsize:
        first = start + ahead // arr.itemsize
        for p in range(first, min(first + count, arr.size), max(1, 64 // arr.itemsize)):
            prefetch_line(arr, p)


def _halves(builder, v, n):
    """The two halves of an ``n``-lane vector."""
    lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n // 2),
                                                  list(range(n // 2))))
    hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n // 2),
                                                  list(range(n // 2, n))))
    return lo, hi


def _concat(builder, a, b, n):
    """Two ``n``-lane vectors as one of ``2 n`` lanes."""
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, 2 * n),
                                                    list(range(2 * n))))


def _psadbw(builder, v):
    """``vpsadbw`` of a <64 x i8> against zero: the sums of its 8-byte groups, <8 x i64>."""
    zero = ir.Constant(_V64I8, None)
    if SIMD_LEVEL == "avx512":
        psad = _declare(builder, "llvm.x86.avx512.psad.bw.512", _V8I64, [_V64I8, _V64I8])
        return builder.call(psad, [v, zero])
    v32 = ir.VectorType(_I8, 32)
    psad = _declare(builder, "llvm.x86.avx2.psad.bw", ir.VectorType(_I64, 4), [v32, v32])
    z = ir.Constant(v32, None)
    lo, hi = _halves(builder, v, 64)
    return _concat(builder, builder.call(psad, [lo, z]), builder.call(psad, [hi, z]), 4)


def _pmaddwd(builder, a, b):
    """``vpmaddwd`` of two <32 x i16>: ``a[2i] b[2i] + a[2i+1] b[2i+1]``, <16 x i32>."""
    if SIMD_LEVEL == "avx512":
        pmadd = _declare(builder, "llvm.x86.avx512.pmaddw.d.512", _V16I32, [_V32I16, _V32I16])
        return builder.call(pmadd, [a, b])
    v16 = ir.VectorType(_I16, 16)
    pmadd = _declare(builder, "llvm.x86.avx2.pmadd.wd", ir.VectorType(_I32, 8), [v16, v16])
    alo, ahi = _halves(builder, a, 32)
    blo, bhi = _halves(builder, b, 32)
    return _concat(builder, builder.call(pmadd, [alo, blo]), builder.call(pmadd, [ahi, bhi]), 8)


@intrinsic
def u8_block_sums(typingctx, arr, nit):
    """``(sum, sum of squares, min, max)`` of the first ``VEC * UNROLL * nit`` bytes of ``arr``.

    ``arr`` is a 1-d uint8 array with unit stride (checked by the caller) and ``nit`` at
    most ``MAX_ITERATIONS``; ``nit = 0`` gives ``(0, 0, 255, 0)``. An int8 array is read
    as uint8 ``v + 128`` (each byte's top bit flipped): the results are of those values.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1
            and arr.dtype in (types.uint8, types.int8)):
        return None
    sig = types.UniTuple(types.int64, 4)(arr, nit)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        n = context.cast(builder, args[1], signature.args[1], types.int64)
        umin = _declare(builder, "llvm.umin.v64i8", _V64I8, [_V64I8, _V64I8])
        umax = _declare(builder, "llvm.umax.v64i8", _V64I8, [_V64I8, _V64I8])

        # UNROLL vectors per iteration, each with accumulators of its own: the fused
        # vpdpwssd has a latency of several cycles, and one chain would be the bottleneck.
        acc_s = [cgutils.alloca_once_value(builder, ir.Constant(_V8I64, None))
                 for _ in range(UNROLL)]
        acc_q = [cgutils.alloca_once_value(builder, ir.Constant(_V16I32, None))
                 for _ in range(2 * UNROLL)]
        acc_lo = cgutils.alloca_once_value(builder, ir.Constant(_V64I8, [255] * 64))
        acc_hi = cgutils.alloca_once_value(builder, ir.Constant(_V64I8, None))
        with cgutils.for_range(builder, n) as loop:
            base = builder.mul(loop.index, ir.Constant(_I64, VEC * UNROLL))
            for u in range(UNROLL):
                off = builder.add(base, ir.Constant(_I64, VEC * u))
                if L1_AHEAD:
                    _prefetch(builder, builder.gep(ary.data, [
                        builder.add(off, ir.Constant(_I64, L1_AHEAD))]), 3)  # into L1
                ptr = builder.bitcast(builder.gep(ary.data, [off]), _V64I8.as_pointer())
                v = builder.load(ptr, align=1, typ=_V64I8)
                if signature.args[0].dtype == types.int8:
                    v = builder.xor(v, ir.Constant(_V64I8, [-128] * 64))
                sad = _psadbw(builder, v)
                builder.store(builder.add(builder.load(acc_s[u]), sad), acc_s[u])
                v16 = builder.bitcast(v, _V32I16)  # even bytes in the low halves of 16-bit lanes
                even = builder.and_(v16, ir.Constant(_V32I16, [0xFF] * 32))
                odd = builder.lshr(v16, ir.Constant(_V32I16, [8] * 32))
                for h, w in enumerate((even, odd)):
                    q = acc_q[2 * u + h]
                    builder.store(builder.add(builder.load(q), _pmaddwd(builder, w, w)), q)
                builder.store(builder.call(umin, [builder.load(acc_lo), v]), acc_lo)
                builder.store(builder.call(umax, [builder.load(acc_hi), v]), acc_hi)
        sum_s = builder.load(acc_s[0])
        for a in acc_s[1:]:
            sum_s = builder.add(sum_s, builder.load(a))
        sum_q = builder.zext(builder.load(acc_q[0]), _V16I64)
        for a in acc_q[1:]:
            sum_q = builder.add(sum_q, builder.zext(builder.load(a), _V16I64))

        red_add64 = _declare(builder, "llvm.vector.reduce.add.v8i64", _I64, [_V8I64])
        red_add64q = _declare(builder, "llvm.vector.reduce.add.v16i64", _I64, [_V16I64])
        red_umin = _declare(builder, "llvm.vector.reduce.umin.v64i8", _I8, [_V64I8])
        red_umax = _declare(builder, "llvm.vector.reduce.umax.v64i8", _I8, [_V64I8])
        s = builder.call(red_add64, [sum_s])
        q = builder.call(red_add64q, [sum_q])
        lo = builder.zext(builder.call(red_umin, [builder.load(acc_lo)]), _I64)
        hi = builder.zext(builder.call(red_umax, [builder.load(acc_hi)]), _I64)
        return context.make_tuple(builder, signature.return_type, (s, q, lo, hi))

    return sig, codegen


def byte_offset(xf):  # pragma: no cover - replaced by the overload
    """What makes a byte of ``xf`` unsigned: 128 for int8 (whose bytes the uint8 kernels
    read with the top bit flipped, as ``v + 128``), 0 for uint8."""
    raise NotImplementedError


@overload(byte_offset, inline="always")
def _byte_offset_impl(xf):
    off = 128 if xf.dtype == types.int8 else 0
    return lambda xf: off


@numba.njit(inline="always")
def u8_sums(r):
    """Exact ``(sum, sum of squares, min, max)`` of a uint8 (or int8) block of at most
    ``MAX_BYTES`` elements: whole iterations through ``u8_block_sums`` when the block
    has unit stride, the rest (and strided blocks) in a scalar loop. int8 is summed as
    uint8 ``v + 128`` and the results shifted back exactly."""
    n = r.size
    off = byte_offset(r)
    nit = n // (VEC * UNROLL) if r.strides[0] == 1 else 0
    s, q, lo, hi = u8_block_sums(r, nit)
    for i in range(nit * VEC * UNROLL, n):
        v = numba.int64(r[i]) + off
        s += v
        q += v * v
        lo = min(lo, v)
        hi = max(hi, v)
    if off:  # sum (v - off)**2 = q - 2 off s + off**2 n, exactly
        q = q - 2 * off * s + off * off * n
        s = s - off * n
    return s, q, lo - off, hi - off


# ---------------------------------------------------------------------------------------
# float16 <-> float32 in hardware (F16C, part of both SIMD levels): numba's CPU target has
# no float16 type, so float16 data travels as its uint16 bits. At the SIMD levels LLVM
# turns these conversions into vcvtph2ps/vcvtps2ph, 8 or 16 values per instruction in
# vectorized loops; without F16C they would be calls to compiler-rt routines that numba
# may not link, so the portable level keeps cpu_numerics' bit-manipulating decoder.

_HALF = ir.HalfType()


@intrinsic
def half_bits_to_f32(typingctx, h):
    """The float32 value (exact) of the float16 whose bits are ``h`` (uint16)."""
    if not (isinstance(h, types.Integer) and h.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], _HALF), ir.FloatType())

    return types.float32(h), codegen


@intrinsic
def f32_to_half_bits(typingctx, f):
    """The bits (uint16) of ``f`` (float32) rounded to float16, to nearest even."""
    if f != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], _HALF), _I16)

    return types.uint16(f), codegen


# ---------------------------------------------------------------------------------------
# Channels-last float32 (and float16 through F16C): a chunk of channels, accumulated in
# registers over many rows.
#
# The portable channels-last kernel (cpu_stats._cl_pass) vectorizes across the channels
# of a tile and keeps its accumulators in memory; from DRAM it ran at ~16 GB/s per core
# against ~26 for channels-first. Here a chunk of CL_LANES * CL_VECTORS channels keeps
# its sums of d = x - k and d*d (float64) and its min/max (float32) in registers while
# the loop walks a group of rows (stride C; 128 rows for C <= 256). Each chunk pass
# re-reads lines that the first pass brought into L2, and every row step prefetches
# (into L2) one line of the next group, ``prefetch_rows`` rows on: DRAM streams one
# group ahead of the arithmetic instead of stalling it (without the prefetch, C = 256
# ran at 8 GB/s; groups of 128 rows beat 64 and 256 by a few percent on Zen 4). The
# prefetches go in address order (the k-th of the group's passes to the k-th line of
# the next group), not at the passes' stride of C: on a Zen 2 host, one thread read C =
# 256 at 7.4 GB/s with strided prefetches and 14.5 in address order (two threads 13.8
# -> 23.3; C = 1024 13.5 -> 21; C = 64 17.5 -> 24).

# float32 lanes of one vector (chunks are whole vectors, so C % CL_LANES == 0) and
# vectors per chunk: AVX-512 16 x 4 (64 channels: 8 + 8 + 4 + 4 = 24 zmm accumulators),
# AVX2 8 x 2 (16 channels: 4 + 4 + 2 + 2 = 12 ymm accumulators of 16)
CL_LANES = 16 if SIMD_LEVEL == "avx512" else 8
CL_VECTORS = 4 if SIMD_LEVEL == "avx512" else 2
# Bytes per row group: it and the prefetched next one stay in L2. On an Intel AVX-512
# host (two threads, GB/s, alternating runs) 64x56x56x256 float32 read 22.6-23.4 in groups
# of 128 KB (128 rows), 25.4-25.9 in 64 KB (64 rows), 24.4-25.5 in 32 KB, 20-21 in 256
# KB; float16, float64 and (1000000, 64) the same in 64 or 128 KB. Zen 2 (AVX2) read the
# same at 64, 128 and 256 KB, Zen 4 was tuned at 128.
CL_GROUP_BYTES = 131072 if SIMD_LEVEL != "avx512" or _ZEN_AVX512 else 65536
CL_ROWS = CL_GROUP_BYTES // 1024  # at most this many rows per group (C <= 256) ...
CL_MIN_ROWS = 16  # ... and at least this many (C > 2048)

# On Zen 1/2 float adds and FMAs issue to different pipes, and the chunk loop is bound
# by the FMA pipes (12 FMAs and 4 min/max per 16 values): there ``x - k`` is a
# subtraction instead (float32; exact either way, the same bits). One thread, in L1,
# Zen 2: 5.4 -> 6.8 G values/s (C = 16), 5.3 -> 6.4 (C = 256, 32 KB); from DRAM no
# change (the loop waits on memory there); float16 (its conversions share the add
# pipes) 4.7 -> 4.4, so float16 keeps the FMA; Zen 4 measured the FMA form faster.
CL_SUB = _TARGET_CPU in {"znver1", "znver2"}

_F32, _F64 = ir.FloatType(), ir.DoubleType()
_VF32 = ir.VectorType(_F32, CL_LANES)
_VF64 = ir.VectorType(_F64, CL_LANES)
_VI16 = ir.VectorType(_I16, CL_LANES)
_PTR8 = ir.PointerType(_I8)


def _opaque_splat(builder, value: float, n: int):
    """An ``n``-lane vector of ``value`` that LLVM cannot see is a constant: the scalar
    passes through an empty inline asm (an x86 register constraint: the SIMD levels are
    x86-only), so ``fma(a, 1.0, b)`` stays an FMA instead of being folded into an add."""
    one = builder.asm(ir.FunctionType(_F64, [_F64]), "", "=x,0", [ir.Constant(_F64, value)],
                      False)
    vec = builder.insert_element(ir.Constant(ir.VectorType(_F64, n), None), one, _I32(0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(_I32, n), [0] * n))


def _cl_chunk_codegen(nvec: int, half: bool, masked: bool, omit: bool):
    """The code of ``cl_chunk`` (below) for ``nvec`` vectors; ``masked``: one vector
    whose lanes from ``valid`` (a 13th argument) on are neither loaded nor counted;
    ``omit``: NaNs left out of the sums, and the values kept counted into ``cn`` (the
    12th argument, float64 lanes)."""
    def codegen(context, builder, signature, args):
        sa = signature.args
        x, tka, sda, sqa, mna, mxa = (
            context.make_array(sa[i])(context, builder, args[i]) for i in (0, 6, 7, 8, 9, 10)
        )
        nc, first, row0, row1, ahead = (
            context.cast(builder, args[i], sa[i], types.int64) for i in (1, 2, 3, 4, 5)
        )
        fma = _declare(builder, f"llvm.fma.v{CL_LANES}f64", _VF64, [_VF64] * 3)
        # x - k and the running sum of it as FMAs with an opaque 1.0 (exact: the same
        # roundings as the sub and the add): they run on the FMA pipes, which the
        # sums of squares alone left half idle, while the conversions and min/max
        # keep the add pipes busy (see design.md)
        one = _opaque_splat(builder, 1.0, CL_LANES)

        def vec_ptr(arr, index, vt):
            return builder.bitcast(builder.gep(arr.data, [index]), vt.as_pointer())

        offs = [builder.add(first, ir.Constant(_I64, CL_LANES * v)) for v in range(nvec)]
        ks = [builder.load(vec_ptr(tka, o, _VF64), align=8, typ=_VF64) for o in offs]
        negks = [builder.fneg(k) for k in ks]
        acc = []
        for o in offs:
            acc.append(tuple(
                cgutils.alloca_once_value(
                    builder, builder.load(vec_ptr(a, o, vt), align=al, typ=vt))
                for a, vt, al in ((sda, _VF64, 8), (sqa, _VF64, 8), (mna, _VF32, 4),
                                  (mxa, _VF32, 4))
            ))
        if omit:  # per vector: an int32 count of the values kept, in registers
            cna = context.make_array(sa[11])(context, builder, args[11])
            vi32 = ir.VectorType(_I32, CL_LANES)
            counts = [cgutils.alloca_once_value(builder, ir.Constant(vi32, None))
                      for _ in offs]
            zero = ir.Constant(_VF64, None)
        if masked:
            valid = context.cast(builder, args[12], sa[12], types.int64)
            lanes = ir.Constant(ir.VectorType(_I64, CL_LANES), list(range(CL_LANES)))
            mask = builder.icmp_signed("<", lanes, _splat(
                builder, valid, ir.VectorType(_I64, CL_LANES)))
            mload = _declare(builder, f"llvm.masked.load.v{CL_LANES}f32.p0", _VF32,
                             [_VF32.as_pointer(), _I32, mask.type, _VF32])
        # one prefetch per cache line of the chunk's row
        line_elems = 64 // (2 if half else 4)
        nlines = max(1, nvec * CL_LANES // line_elems)
        # the k-th prefetch of a group's chunk passes (in their order) goes to the k-th
        # line of the next group, ``ahead`` rows on (clamped to it): DRAM is read in
        # address order while the passes walk the rows at stride C
        nrows = builder.sub(row1, row0)
        next0 = builder.mul(builder.add(row0, ahead), nc)
        kbase = builder.mul(builder.sdiv(first, ir.Constant(_I64, line_elems)), nrows)
        last = builder.sub(builder.mul(builder.add(row1, ahead), nc), ir.Constant(_I64, 1))
        with cgutils.for_range(builder, nrows) as loop:
            base = builder.add(builder.mul(builder.add(row0, loop.index), nc), first)
            k0 = builder.add(kbase, builder.mul(loop.index, ir.Constant(_I64, nlines)))
            ahead_base = builder.add(next0, builder.mul(k0, ir.Constant(_I64, line_elems)))
            for li in range(nlines):
                e = builder.add(ahead_base, ir.Constant(_I64, line_elems * li))
                e = builder.select(builder.icmp_signed(">", e, last), last, e)
                _prefetch(builder, builder.gep(x.data, [e]), 2)  # into L2
            for v in range(nvec):
                lane0 = ir.Constant(_I64, CL_LANES * v)
                if masked:  # lanes past ``valid`` read as 0 (their shift is 0: d = 0)
                    xv = builder.call(mload, [vec_ptr(x, builder.add(base, lane0), _VF32),
                                              _I32(4), mask, ir.Constant(_VF32, None)])
                elif half:
                    raw = builder.load(vec_ptr(x, builder.add(base, lane0), _VI16),
                                       align=2, typ=_VI16)
                    xv = _half_to_f32(builder, raw, CL_LANES)
                else:
                    xv = builder.load(vec_ptr(x, builder.add(base, lane0), _VF32),
                                      align=4, typ=_VF32)
                s, q, lo, hi = acc[v]
                if CL_SUB and not half:  # the same rounding either way
                    d = builder.fadd(builder.fpext(xv, _VF64), negks[v])
                else:
                    d = builder.call(fma, [builder.fpext(xv, _VF64), one, negks[v]])  # x - k
                if omit:  # a NaN's d is 0, and it is not counted (min/max skip it:
                    ok = builder.fcmp_ordered("ord", xv, xv)  # ordered comparisons)
                    d = builder.select(ok, d, zero)
                    cnt = counts[v]
                    builder.store(builder.add(builder.load(cnt), builder.zext(ok, vi32)), cnt)
                builder.store(builder.call(fma, [d, one, builder.load(s)]), s)  # sd + d
                builder.store(builder.call(fma, [d, d, builder.load(q)]), q)
                cur = builder.load(lo)
                builder.store(builder.select(builder.fcmp_ordered("<", xv, cur), xv, cur), lo)
                cur = builder.load(hi)
                builder.store(builder.select(builder.fcmp_ordered(">", xv, cur), xv, cur), hi)
        for o, slots in zip(offs, acc, strict=True):
            for a, vt, al, slot in zip((sda, sqa, mna, mxa), (_VF64, _VF64, _VF32, _VF32),
                                       (8, 8, 4, 4), slots, strict=True):
                builder.store(builder.load(slot), vec_ptr(a, o, vt), align=al)
        if omit:
            for o, cnt in zip(offs, counts, strict=True):
                ptr = vec_ptr(cna, o, _VF64)
                total = builder.fadd(builder.load(ptr, align=8, typ=_VF64),
                                     builder.sitofp(builder.load(cnt), _VF64))
                builder.store(total, ptr, align=8)
        return context.get_dummy_value()

    return codegen


def _chunk_signature(xf, cn, args):
    """A chunk intrinsic's signature (``args`` its arguments), and whether it omits NaNs
    (``cn`` an array: it then counts the values kept; None: the plain sums); None for
    input other than float32 and float16 bits (uint16)."""
    if not (isinstance(xf, types.Array) and xf.dtype in (types.float32, types.uint16)):
        return None, False
    return types.void(*args), not isinstance(cn, types.NoneType)


def _make_cl_chunk(nvec: int):
    @intrinsic
    def cl_chunk(typingctx, xf, nchan, c0, r0, r1, prefetch_rows, tk, sd, sq, mn, mx, cn):
        """Accumulate rows ``r0 <= r < r1`` of the flat (M, nchan) ``xf`` for the
        channels ``c0 <= c < c0 + CL_LANES * nvec`` into ``sd`` (sum of x - tk), ``sq``
        (sum of squares), ``mn``/``mx`` (float32; unspecified where a NaN was met: the
        caller detects NaN/inf from the sums). ``xf`` (float32, or float16 bits as
        uint16) must be C-contiguous. With an array ``cn`` (float64, else None), NaNs
        are left out of every sum and the values kept are counted into it."""
        sig, omit = _chunk_signature(xf, cn, (xf, nchan, c0, r0, r1, prefetch_rows, tk,
                                              sd, sq, mn, mx, cn))
        if sig is None:
            return None
        return sig, _cl_chunk_codegen(nvec, xf.dtype == types.uint16, False, omit)

    return cl_chunk


cl_chunk_wide = _make_cl_chunk(CL_VECTORS)
cl_chunk_one = _make_cl_chunk(1)


@intrinsic
def cl_chunk_masked(typingctx, xf, nchan, c0, r0, r1, prefetch_rows, tk, sd, sq, mn, mx,
                    cn, valid):
    """``cl_chunk_one`` for the last ``valid < CL_LANES`` channels of float32 rows: the
    lanes past them are masked off the loads (the last row's would lie past the array)
    and their shifts must be 0; the accumulators must have ``CL_LANES`` slots from
    ``c0`` on (padded)."""
    if not (isinstance(xf, types.Array) and xf.dtype == types.float32):
        return None
    sig, omit = _chunk_signature(xf, cn, (xf, nchan, c0, r0, r1, prefetch_rows, tk, sd,
                                          sq, mn, mx, cn, valid))
    return sig, _cl_chunk_codegen(1, False, True, omit)


def _cl_tail(xf, nchan, c0, r0, r1, ahead, tk, sd, sq, mn, mx, cn):  # pragma: no cover
    """``cl_chunk_masked`` over the channels from ``c0`` on (float32; float16 rows are
    whole vectors, and compile without it)."""
    raise NotImplementedError


@overload(_cl_tail, inline="always")
def _cl_tail_impl(xf, nchan, c0, r0, r1, ahead, tk, sd, sq, mn, mx, cn):
    if xf.dtype != types.float32:
        return lambda xf, nchan, c0, r0, r1, ahead, tk, sd, sq, mn, mx, cn: None

    def impl(xf, nchan, c0, r0, r1, ahead, tk, sd, sq, mn, mx, cn):
        cl_chunk_masked(xf, nchan, c0, r0, r1, ahead, tk, sd, sq, mn, mx, cn, nchan - c0)

    return impl


@numba.njit(inline="always")
def cl_rows_f32(xf, nchan, r0, r1, nrows, tk, sd, sq, mn, mx, cn):
    """Add rows ``r0 <= r < r1`` of the flat (nrows, nchan) float32 array ``xf`` (or
    float16 bits with ``nchan % CL_LANES == 0``) into the per-channel ``sd``, ``sq``,
    ``mn``, ``mx`` (padded to whole vectors: ``CL_LANES`` slots past ``nchan``), in
    groups of about ``CL_GROUP_BYTES``, chunk by chunk; the last channels of a float32
    row that do not fill a vector through ``cl_chunk_masked``. ``cn``: None, or the
    float64 count per channel (padded too) of the values kept when NaNs are left out
    (``nan_policy="omit"``)."""
    wide = CL_LANES * CL_VECTORS
    rows = min(CL_ROWS, max(CL_MIN_ROWS, CL_GROUP_BYTES // (xf.itemsize * nchan)))
    for g0 in range(r0, r1, rows):
        g1 = min(r1, g0 + rows)
        ahead = rows if g1 + rows <= nrows else 0  # never prefetch past the array
        c0 = 0
        while c0 + wide <= nchan:
            cl_chunk_wide(xf, nchan, c0, g0, g1, ahead, tk, sd, sq, mn, mx, cn)
            c0 += wide
        while c0 + CL_LANES <= nchan:
            cl_chunk_one(xf, nchan, c0, g0, g1, ahead, tk, sd, sq, mn, mx, cn)
            c0 += CL_LANES
        if c0 < nchan:  # float32 with C % CL_LANES != 0 (cpu_stats.cl_simd)
            _cl_tail(xf, nchan, c0, g0, g1, ahead, tk, sd, sq, mn, mx, cn)


# ---------------------------------------------------------------------------------------
# Channels-first float32 (and float16 through F16C) on AVX2: one contiguous block's
# shifted sums with more chains in flight than LLVM's vectorizer gives.
#
# Auto-vectorized for an AVX2 target, ``cpu_stats._f32_shifted_pass`` keeps two vector
# accumulators per sum (LLVM's interleave count for znver3/haswell): 8 values per step,
# and each FMA into the sum of squares waits on the previous one. Splitting the block
# into streams in numba did not help (LLVM then interleaved less). Here F32_ACC vectors
# of F32_LANES values carry their own sums, squares, min and max: one thread, 32 KB
# blocks from L2, AVX2 machine code on Zen 4, 5.3 -> 6.6 G values/s (float32) and
# 4.6 -> 5.1 (float16). For AVX-512 code LLVM's own loop (4 x 8 lanes) was as fast for
# float32 (7.2 against 7.1) and faster for float16 (6.2 against 5.6) on Zen 4, which
# keeps LLVM's loop; 4 lanes x 4, 8 x 3 and 16 x 1 were slower. On an Intel AVX-512 host
# (LLVM's "rocketlake": its tuning prefers 256-bit vectors, and LLVM's loop is ymm
# there too) this kernel with the L1 prefetch below read 64x256x56x56 from DRAM at
# 22.5 GB/s on two threads against 13.0 for LLVM's loop (9.2 without the prefetch, one
# thread; 16 lanes x 2: 18.7, 16 x 1 and 8 x 4 slower too): ``F32_HEAD`` is on at both
# levels except on Zen 4/5 (``_ZEN_AVX512``).
#
# Each loop step (one 64-byte line of float32) also prefetches the line L1_AHEAD bytes
# ahead into L1: the hardware prefetchers alone left the loads
# waiting on DRAM, and the arithmetic did not overlap them (Zen 2, 64x256x56x56 one
# thread 11.9 GB/s, about 1 / (1/32 + 1/18.6): the in-cache speed and the read speed in
# series). Two threads, GB/s: no prefetch 21.6, 512 B ahead 23.3, 1024 26.0-26.7, 1536
# 27.1-27.6, 2048 24.1-24.9, 3072 24.6-25.9 (256x3x224x224: 22.4 -> 27.6-28.9). A
# prefetch is a hint: past the end of the array it reads nothing and cannot fault.
F32_HEAD = SIMD_LEVEL == "avx2" or (SIMD_LEVEL == "avx512" and not _ZEN_AVX512)
F32_LANES = 8
F32_ACC = 2  # 2 x (2 + 2 + 1 + 1) = 12 of AVX2's 16 ymm registers
F32_STEP = F32_LANES * F32_ACC  # elements per loop step
_VF32P = ir.VectorType(ir.FloatType(), F32_LANES)
_VF64P = ir.VectorType(ir.DoubleType(), F32_LANES)


def _shifted_sums_sig(r, k, n):
    """The signature of the shifted-sums kernels (``f32_shifted_sums``,
    ``row_shifted_sums``): ``r`` 1-d float32 or float16 bits (uint16); else None."""
    if not (isinstance(r, types.Array) and r.ndim == 1
            and r.dtype in (types.float32, types.uint16)):
        return None
    return types.Tuple((types.float64, types.float64, types.float32, types.float32))(r, k, n)


def _shifted_args(context, builder, signature, args, lanes):
    """A shifted-sums kernel's arguments: the array, the shift (float64), the count
    (int64), and the ``lanes``-wide float64 FMA intrinsic."""
    vt = ir.VectorType(ir.DoubleType(), lanes)
    return (context.make_array(signature.args[0])(context, builder, args[0]),
            context.cast(builder, args[1], signature.args[1], types.float64),
            context.cast(builder, args[2], signature.args[2], types.int64),
            _declare(builder, f"llvm.fma.v{lanes}f64", vt, [vt] * 3))


def _splat(builder, value, vt):
    """A vector of type ``vt`` with ``value`` in every lane."""
    vec = builder.insert_element(ir.Constant(vt, None), value, _I32(0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(_I32, vt.count),
                                                        [0] * vt.count))


def _half_to_f32(builder, raw, n):
    """The float32 lanes of the ``n`` float16 bit patterns ``raw`` (F16C), kept apart
    from any later float64 conversion by an empty inline asm: LLVM would fold the two
    into one ``vcvtph2pd`` on AVX-512 FP16 targets, and on an Intel host with it (a
    Sapphire Rapids-class Xeon) the channels-last float16 chunk ran at 4.6 G values/s
    per core with ``vcvtph2pd`` against 6.3 with ``vcvtph2ps`` + ``vcvtps2pd`` (one
    thread, in L1; design.md)."""
    vt = ir.VectorType(_F32, n)
    f = builder.fpext(builder.bitcast(raw, ir.VectorType(ir.HalfType(), n)), vt)
    return builder.asm(ir.FunctionType(vt, [vt]), "", "=v,0", [f], False)


def _load_f32(builder, ptr, n, half):
    """``n`` float32 lanes from ``ptr``: float32 values, or float16 bits (``half``)
    converted (F16C)."""
    if half:
        vt = ir.VectorType(_I16, n)
        raw = builder.load(builder.bitcast(ptr, vt.as_pointer()), align=2, typ=vt)
        return _half_to_f32(builder, raw, n)
    vt = ir.VectorType(ir.FloatType(), n)
    return builder.load(builder.bitcast(ptr, vt.as_pointer()), align=4, typ=vt)


def _shifted_step(builder, fma, xv, ks, slots):
    """Add the float32 lanes ``xv`` into the accumulators ``slots`` = (sum of d, sum of
    d*d, min, max) with ``d = float64(xv) - ks`` (float64 lanes)."""
    s, q, lo, hi = slots
    d = builder.fsub(builder.fpext(xv, ks.type), ks)
    builder.store(builder.fadd(builder.load(s), d), s)
    builder.store(builder.call(fma, [d, d, builder.load(q)]), q)
    cur = builder.load(lo)
    builder.store(builder.select(builder.fcmp_ordered("<", xv, cur), xv, cur), lo)
    cur = builder.load(hi)
    builder.store(builder.select(builder.fcmp_ordered(">", xv, cur), xv, cur), hi)


@intrinsic
def f32_shifted_sums(typingctx, r, k, nsteps):
    """``(sum of d, sum of d*d, min, max)`` over ``r[: nsteps * F32_STEP]`` with
    ``d = float64(x) - k`` (exact for float32 x and a float32-valued k) and min/max in
    float32; ``r`` is float32 or float16 bits (uint16), 1-d with unit stride. A NaN
    leaves min/max unspecified and makes the sums NaN (the caller redoes such blocks)."""
    sig = _shifted_sums_sig(r, k, nsteps)
    if sig is None:
        return None
    half = r.dtype == types.uint16

    def codegen(context, builder, signature, args):
        arr, kd, steps, fma = _shifted_args(context, builder, signature, args, F32_LANES)

        ks = _splat(builder, kd, _VF64P)
        inits = (ir.Constant(_VF64P, [0.0] * F32_LANES), ir.Constant(_VF64P, [0.0] * F32_LANES),
                 ir.Constant(_VF32P, [float("inf")] * F32_LANES),
                 ir.Constant(_VF32P, [float("-inf")] * F32_LANES))
        acc = [tuple(cgutils.alloca_once_value(builder, v) for v in inits)
               for _ in range(F32_ACC)]
        ahead = ir.Constant(_I64, L1_AHEAD // (2 if half else 4))
        with cgutils.for_range(builder, steps) as loop:
            base = builder.mul(loop.index, ir.Constant(_I64, F32_STEP))
            _prefetch(builder, builder.gep(arr.data, [builder.add(base, ahead)]), 3)  # L1
            for a, (s, q, lo, hi) in enumerate(acc):
                ptr = builder.gep(arr.data, [builder.add(base, ir.Constant(_I64, F32_LANES * a))])
                _shifted_step(builder, fma, _load_f32(builder, ptr, F32_LANES, half), ks,
                              (s, q, lo, hi))
        # the accumulators folded in a fixed order, then their lanes one by one
        s, q, lo, hi = (builder.load(v) for v in acc[0])
        for a in range(1, F32_ACC):
            s2, q2, lo2, hi2 = (builder.load(v) for v in acc[a])
            s = builder.fadd(s, s2)
            q = builder.fadd(q, q2)
            lo = builder.select(builder.fcmp_ordered("<", lo2, lo), lo2, lo)
            hi = builder.select(builder.fcmp_ordered(">", hi2, hi), hi2, hi)
        sd = builder.extract_element(s, _I32(0))
        sq = builder.extract_element(q, _I32(0))
        mn = builder.extract_element(lo, _I32(0))
        mx = builder.extract_element(hi, _I32(0))
        for lane in range(1, F32_LANES):
            sd = builder.fadd(sd, builder.extract_element(s, _I32(lane)))
            sq = builder.fadd(sq, builder.extract_element(q, _I32(lane)))
            v = builder.extract_element(lo, _I32(lane))
            mn = builder.select(builder.fcmp_ordered("<", v, mn), v, mn)
            v = builder.extract_element(hi, _I32(lane))
            mx = builder.select(builder.fcmp_ordered(">", v, mx), v, mx)
        return context.make_tuple(builder, signature.return_type, [sd, sq, mn, mx])

    return sig, codegen


# ---------------------------------------------------------------------------------------
# Short channels-first rows (CNN feature maps of 7x7 to 28x28, read in row groups by
# cpu_stats._group_pass): one row's shifted sums per call.
#
# LLVM's loop for ``_f32_shifted_pass`` steps 64 values at a time (4 x 16 lanes) on
# AVX-512, so a 49-value row ran wholly in its scalar remainder. Here whole vectors of
# ROW_LANES values go through one set of vector accumulators, reduced at the end of the
# row as a tree of halves (a chain of 15 lane-by-lane adds per sum would cost more than
# the row); the caller adds the last ``n % ROW_LANES`` values one by one.
ROW_LANES = CL_LANES  # 16 on AVX-512, 8 on AVX2
ROW_MAX_VECTORS = 8  # rows of 2 to 7 whole vectors take it (design.md)
_VF64R = ir.VectorType(_F64, ROW_LANES)


def _tree(builder, v, n, op):
    """``op`` over the ``n`` lanes of ``v`` as a tree of halves: a scalar. (Two
    reductions sharing one tree, their halves side by side in one vector, measured
    slower: the two-source shuffles cost more than the steps they save.)"""
    while n > 1:
        lo, hi = _halves(builder, v, n)
        v = op(lo, hi)
        n //= 2
    return builder.extract_element(v, _I32(0))


@intrinsic
def row_shifted_sums(typingctx, r, k, nvec):
    """``(sum of d, sum of d*d, min, max)`` over ``r[: nvec * ROW_LANES]`` with
    ``d = float64(x) - k`` and min/max in float32 (``nvec >= 1``); ``r`` is float32 or
    float16 bits (uint16), 1-d with unit stride. NaN: as ``f32_shifted_sums``."""
    sig = _shifted_sums_sig(r, k, nvec)
    if sig is None:
        return None
    half = r.dtype == types.uint16

    def codegen(context, builder, signature, args):
        arr, kd, nv, fma = _shifted_args(context, builder, signature, args, ROW_LANES)

        def load(index):
            return _load_f32(builder, builder.gep(arr.data, [index]), ROW_LANES, half)

        ks = _splat(builder, kd, _VF64R)
        first = load(ir.Constant(_I64, 0))
        d0 = builder.fsub(builder.fpext(first, _VF64R), ks)
        slots = (cgutils.alloca_once_value(builder, d0),
                 cgutils.alloca_once_value(builder, builder.fmul(d0, d0)),
                 cgutils.alloca_once_value(builder, first),
                 cgutils.alloca_once_value(builder, first))
        with cgutils.for_range(builder, builder.sub(nv, ir.Constant(_I64, 1))) as loop:
            off = builder.mul(builder.add(loop.index, ir.Constant(_I64, 1)),
                              ir.Constant(_I64, ROW_LANES))
            _shifted_step(builder, fma, load(off), ks, slots)
        s, q, lo, hi = slots

        def vmin(a, b):
            return builder.select(builder.fcmp_ordered("<", b, a), b, a)

        def vmax(a, b):
            return builder.select(builder.fcmp_ordered(">", b, a), b, a)

        out = [_tree(builder, builder.load(s), ROW_LANES, builder.fadd),
               _tree(builder, builder.load(q), ROW_LANES, builder.fadd),
               _tree(builder, builder.load(lo), ROW_LANES, vmin),
               _tree(builder, builder.load(hi), ROW_LANES, vmax)]
        return context.make_tuple(builder, signature.return_type, out)

    return sig, codegen


# ---------------------------------------------------------------------------------------
# Channels-last uint8 (HWC images): exact integer sums per byte position.
#
# The caller (cpu_stats._stats_channels_last_u8) reads vectors that all have the same
# channel at each byte position: ``step = 64 - 64 % C`` bytes apart (whole pixels; the
# sums keep the first ``keep = step`` positions) for small C, else vector k of every
# period of P = C / gcd(C, 64) vectors (pass k of P, ``step`` = the period). The kernels
# keep positional accumulators; the caller folds the positions into channels.
#
# The positions ``p >= keep`` of a vector are bytes of the next one: their positional
# sums are dropped at the end, so no vector is masked. ``u8_cl_pass``, per 64-byte
# vector, 12 vector operations (16 without VNNI, where each vpmaddwd and its add are two):
# * sums in 16-bit lanes: the even bytes (a mask) and the odd bytes (a 16-bit shift)
#   added to two <32 x i16> accumulators, flushed into int64 every U8CL_FLUSH vectors
#   (255 * 256 < 2**16);
# * squares with ``vpmaddwd`` in 32-bit lanes, whose pairs of 16-bit halves mix byte
#   positions 4i and 4i+2 (even) or 4i+1 and 4i+3 (odd): the even and odd words
#   squared give x[4i]**2 + x[4i+2]**2 and x[4i+1]**2 + x[4i+3]**2, and the bytes 4i+2
#   and 4i+3 alone (a 32-bit mask, a 32-bit shift) squared give the second terms, which
#   are subtracted at the end;
# * ``vpminub``/``vpmaxub`` by position.
# The previous form (four byte phases of 32-bit lanes: a shift or mask, an add and a
# vpmaddwd with its add each) took 20 operations and ran at 22 GB/s per core from L2.

U8CL_MAX_ITERATIONS = 32768  # each uint32 lane of squares gains at most 2 * 255**2 each
U8CL_FLUSH = 256  # vectors between flushes of the 16-bit sums
# vectors per step, each with squares accumulators of its own: the fused vpdpwssd
# (VNNI) has a latency of several cycles, and one chain per accumulator would be the
# bottleneck; without VNNI the vpmaddwd and its add are independent, and AVX2's 16
# registers hold one set
U8CL_UNROLL = 2 if SIMD_LEVEL == "avx512" else 1
# bytes per vector: 64 on AVX-512; 32 on AVX2, whose 16 registers hold the positional
# accumulators of 32 bytes (8) but not of 64 (16, and the loop spilled)
U8CL_VEC = 64 if SIMD_LEVEL == "avx512" else 32
U8CL_LANES = 4 * 64  # the int64 results: min, max, sums, squares, by byte position


def _u8_store(builder, res, index, vec, width):
    """Store a <width x iN> vector, zero-extended to int64, at ``res[index:]``."""
    v64 = ir.VectorType(_I64, width)
    ptr = builder.bitcast(builder.gep(res.data, [ir.Constant(_I64, index)]), v64.as_pointer())
    builder.store(builder.zext(vec, v64) if vec.type != v64 else vec, ptr, align=8)


def _keep_mask(builder, kept, width, ty):
    """A <width x ty> of all-ones in the lanes below ``kept`` (i64), zeros elsewhere."""
    pos = ir.Constant(ir.VectorType(_I64, width), list(range(width)))
    splat = builder.insert_element(ir.Constant(ir.VectorType(_I64, width), None), kept,
                                   ir.Constant(_I32, 0))
    splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(_I32, width),
                                                             [0] * width))
    return builder.sext(builder.icmp_signed("<", pos, splat), ir.VectorType(ty, width))


def _u8_load(builder, ary, off, ahead, vt=_V64I8, flip=False):
    """The vector (``vt``) at byte ``off`` of ``ary``, prefetching (into L2) ``ahead``
    bytes on (and into L1 ``L1_AHEAD`` bytes on); with ``flip``, each byte's top bit
    flipped (int8 read as uint8 ``v + 128``)."""
    _prefetch(builder, builder.gep(ary.data, [builder.add(off, ahead)]), 2)
    if L1_AHEAD:  # and into L1, nearer
        _prefetch(builder, builder.gep(ary.data, [builder.add(off, ir.Constant(_I64, L1_AHEAD))]),
                  3)
    ptr = builder.bitcast(builder.gep(ary.data, [off]), vt.as_pointer())
    v = builder.load(ptr, align=1, typ=vt)
    return builder.xor(v, ir.Constant(vt, [-128] * vt.count)) if flip else v


def _u8_pass_signature(arr, start, nper, step, keep, ahead, out):
    """The typing of the uint8 channels-last passes (None: not theirs); int8 input is
    read as uint8 ``v + 128`` (``_u8_load``'s flip)."""
    if not (isinstance(arr, types.Array) and arr.dtype in (types.uint8, types.int8)
            and isinstance(out, types.Array) and out.dtype == types.int64):
        return None
    return types.void(arr, start, nper, step, keep, ahead, out)


def _u8_pass_args(context, builder, signature, args):
    """The arguments of a uint8 channels-last pass in LLVM: the input and output array
    structs, then ``start, nper, step, keep, ahead`` as int64."""
    sa = signature.args
    ary = context.make_array(sa[0])(context, builder, args[0])
    res = context.make_array(sa[6])(context, builder, args[6])
    ints = (context.cast(builder, args[i], sa[i], types.int64) for i in (1, 2, 3, 4, 5))
    return (ary, res, *ints)


@intrinsic
def u8_cl_pass(typingctx, arr, start, nper, step, keep, ahead, out):
    """Reduce the vectors at ``arr[start + j * step : ... + U8CL_VEC]`` for ``j < nper``
    (``nper <= U8CL_MAX_ITERATIONS``) into ``out`` (int64, ``U8CL_LANES``), by byte
    position p < U8CL_VEC: minima at ``out[p]``, maxima at ``out[64 + p]``, sums at
    ``out[128 + p]`` and sums of squares at ``out[192 + p]``. The sums leave out the
    positions ``p >= keep`` (the next vector's first bytes, when ``step < U8CL_VEC``);
    the minima and maxima take them. Each load prefetches the byte ``ahead`` bytes
    further (the next block's; 0: none)."""
    sig = _u8_pass_signature(arr, start, nper, step, keep, ahead, out)
    if sig is None:
        return None

    def codegen(context, builder, signature, args):
        ary, res, first, n, step, kept, dist = _u8_pass_args(context, builder, signature,
                                                             args)
        wd = U8CL_VEC  # bytes per vector; words, dwords:
        vb, vw, vd = (ir.VectorType(t, wd // k) for t, k in ((_I8, 1), (_I16, 2), (_I32, 4)))
        keep_mask = _keep_mask(builder, kept, wd, _I64)
        umin = _declare(builder, f"llvm.umin.v{wd}i8", vb, [vb, vb])
        umax = _declare(builder, f"llvm.umax.v{wd}i8", vb, [vb, vb])
        if wd == 64:
            def pmaddwd(x):
                return _pmaddwd(builder, x, x)
        else:
            madd = _declare(builder, "llvm.x86.avx2.pmadd.wd", vd, [vw, vw])

            def pmaddwd(x):
                return builder.call(madd, [x, x])
        vsum = ir.VectorType(_I64, wd // 2)
        # squares: even words, byte 4i+2 alone, odd words, byte 4i+3 alone
        acc_q = [cgutils.alloca_once_value(builder, ir.Constant(vd, None))
                 for _ in range(4 * U8CL_UNROLL)]
        acc_s = [cgutils.alloca_once_value(builder, ir.Constant(vsum, None)) for _ in range(2)]
        acc_w = [cgutils.alloca_once(builder, vw) for _ in range(2)]  # 16-bit sums
        acc_lo = cgutils.alloca_once_value(builder, ir.Constant(vb, [255] * wd))
        acc_hi = cgutils.alloca_once_value(builder, ir.Constant(vb, None))
        low_byte = ir.Constant(vw, [0xFF] * (wd // 2))
        third_byte = ir.Constant(vd, [0xFF0000] * (wd // 4))
        flush = ir.Constant(_I64, U8CL_FLUSH)
        nchunks = builder.udiv(builder.add(n, ir.Constant(_I64, U8CL_FLUSH - 1)), flush)

        def vector(j, q4):  # one vector's work, its squares into the accumulators q4
            v = _u8_load(builder, ary, builder.add(first, builder.mul(j, step)), dist, vb,
                         signature.args[0].dtype == types.int8)
            v16 = builder.bitcast(v, vw)
            v32 = builder.bitcast(v, vd)
            even = builder.and_(v16, low_byte)  # bytes 2i, zero-extended in 16-bit lanes
            odd = builder.lshr(v16, ir.Constant(vw, [8] * (wd // 2)))  # bytes 2i+1
            for w, x in zip(acc_w, (even, odd), strict=True):
                builder.store(builder.add(builder.load(w), x), w)
            b2 = builder.bitcast(builder.and_(v32, third_byte), vw)  # bytes 4i+2
            b3 = builder.bitcast(builder.lshr(v32, ir.Constant(vd, [24] * (wd // 4))),
                                 vw)  # bytes 4i+3
            for q, x in zip(q4, (even, b2, odd, b3), strict=True):
                builder.store(builder.add(builder.load(q), pmaddwd(x)), q)
            builder.store(builder.call(umin, [builder.load(acc_lo), v]), acc_lo)
            builder.store(builder.call(umax, [builder.load(acc_hi), v]), acc_hi)

        unroll = ir.Constant(_I64, U8CL_UNROLL)
        with cgutils.for_range(builder, nchunks) as chunk:
            j0 = builder.mul(chunk.index, flush)
            left = builder.sub(n, j0)
            count = builder.select(builder.icmp_unsigned("<", left, flush), left, flush)
            for w in acc_w:
                builder.store(ir.Constant(vw, None), w)
            whole = builder.udiv(count, unroll)
            with cgutils.for_range(builder, whole) as loop:
                j = builder.add(j0, builder.mul(loop.index, unroll))
                for u in range(U8CL_UNROLL):
                    vector(builder.add(j, ir.Constant(_I64, u)), acc_q[4 * u: 4 * u + 4])
            with cgutils.for_range(builder, builder.urem(count, unroll)) as loop:
                vector(builder.add(j0, builder.add(builder.mul(whole, unroll), loop.index)),
                       acc_q[:4])
            for s, w in zip(acc_s, acc_w, strict=True):
                builder.store(builder.add(builder.load(s), builder.zext(builder.load(w), vsum)),
                              s)

        _u8_store(builder, res, 0, builder.load(acc_lo), wd)
        _u8_store(builder, res, 64, builder.load(acc_hi), wd)
        # sums: position 2i is even word i, 2i+1 odd word i
        half, quarter = wd // 2, wd // 4
        inter = ir.Constant(ir.VectorType(_I32, wd), [k // 2 + half * (k % 2) for k in range(wd)])
        sums = builder.shuffle_vector(builder.load(acc_s[0]), builder.load(acc_s[1]), inter)
        _u8_store(builder, res, 128, builder.and_(sums, keep_mask), wd)
        # squares (uint32: at most U8CL_MAX_ITERATIONS * 2 * 255**2 < 2**32) by position
        vq = ir.VectorType(_I64, quarter)
        qs = [builder.zext(builder.load(q), vq) for q in acc_q]
        for u in range(1, U8CL_UNROLL):
            qs[:4] = [builder.add(a, b) for a, b in zip(qs[:4], qs[4 * u: 4 * u + 4], strict=True)]
        qe, q2, qo, q3 = qs[:4]
        parts = (builder.sub(qe, q2), builder.sub(qo, q3), q2, q3)  # bytes 4i, +1, +2, +3
        pair = ir.Constant(ir.VectorType(_I32, half), [k // 2 + quarter * (k % 2)
                                                       for k in range(half)])
        lo = builder.shuffle_vector(parts[0], parts[1], pair)
        hi = builder.shuffle_vector(parts[2], parts[3], pair)
        # lo holds (4i, 4i+1) at 2i, 2i+1; hi holds (4i+2, 4i+3): interleave pairs
        order = [half * ((k % 4) // 2) + 2 * (k // 4) + k % 2 for k in range(wd)]
        squares = builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_I32, wd), order))
        _u8_store(builder, res, 192, builder.and_(squares, keep_mask), wd)
        return context.get_dummy_value()

    return sig, codegen


# Channels-last uint8 with AVX-512 VNNI (Ice Lake, Cascade Lake, Zen 4 and later): four
# vectors of one phase, ``a b c d`` (same channels at each byte position), transposed by
# byte and word unpacks (``vpunpck*``, within 128-bit lanes) into four vectors whose
# 32-bit lanes hold ``(a[p], b[p], c[p], d[p])`` for one position p each; then one
# ``vpdpbusd`` (unsigned bytes times signed bytes, four products summed into an int32
# lane) against ones gives the sums, and one against ``x - 128`` (a sign flip) gives
# ``x * (x - 128)``, so that ``x**2 = x * (x - 128) + 128 x``. Per vector: two unpacks,
# a flip, two ``vpdpbusd``, ``vpminub``/``vpmaxub``: 7 operations instead of 12.

_NO_VNNI_AVX512_CPUS = {"skylake-avx512", "cannonlake", "x86-64-v4"}


def target_vnni(cpu_name: str | None = None, cpu_features: str | None = None,
                host: str | None = None) -> bool:
    """Whether numba's compile target has AVX-512 VNNI (read as :func:`target_level`)."""
    if target_level(cpu_name, cpu_features, host) != "avx512":
        return False
    features = _numba_features(cpu_features, host)
    if features is not None:
        return "avx512vnni" in features
    return bool(cpu_name) and cpu_name not in _NO_VNNI_AVX512_CPUS


HAVE_VNNI = SIMD_LEVEL == "avx512" and target_vnni(getattr(config, "CPU_NAME", None),
                                                   getattr(config, "CPU_FEATURES", None))


def _unpack(builder, a, b, lanes, high):
    """``vpunpckl*``/``vpunpckh*`` of two 512-bit vectors of ``lanes`` elements:
    per 128-bit lane, the low (or high) halves of ``a`` and ``b`` interleaved."""
    per = lanes // 4  # elements per 128-bit lane
    base = per // 2 if high else 0
    mask = [(lane * per + base + i // 2) + (lanes if i % 2 else 0)
            for lane in range(4) for i in range(per)]
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, lanes), mask))


# position of the byte that lane ``4 L + i`` of transposed vector k holds: 16 L + 4 k + i
_T_POSITION = [[16 * (d // 4) + 4 * k + d % 4 for d in range(16)] for k in range(4)]


@intrinsic
def u8_cl_pass_vnni(typingctx, arr, start, nper, step, keep, ahead, out):
    """:func:`u8_cl_pass` with VNNI (the same arguments and results); ``nper`` at most
    ``U8CL_MAX_ITERATIONS``."""
    sig = _u8_pass_signature(arr, start, nper, step, keep, ahead, out)
    if sig is None:
        return None

    def codegen(context, builder, signature, args):
        ary, res, first, n, step, kept, dist = _u8_pass_args(context, builder, signature,
                                                             args)
        keep_mask = _keep_mask(builder, kept, 64, _I64)
        umin = _declare(builder, "llvm.umin.v64i8", _V64I8, [_V64I8, _V64I8])
        umax = _declare(builder, "llvm.umax.v64i8", _V64I8, [_V64I8, _V64I8])
        dpbusd = _declare(builder, "llvm.x86.avx512.vpdpbusd.512", _V16I32,
                          [_V16I32, _V16I32, _V16I32])
        acc_s = [cgutils.alloca_once_value(builder, ir.Constant(_V16I32, None)) for _ in range(4)]
        acc_q = [cgutils.alloca_once_value(builder, ir.Constant(_V16I32, None)) for _ in range(4)]
        acc_lo = cgutils.alloca_once_value(builder, ir.Constant(_V64I8, [255] * 64))
        acc_hi = cgutils.alloca_once_value(builder, ir.Constant(_V64I8, None))
        ones = ir.Constant(_V16I32, [0x01010101] * 16)
        flip = ir.Constant(_V16I32, [-0x7F7F7F80] * 16)  # 0x80808080: x - 128 as int8
        zero = ir.Constant(_V64I8, None)

        def load(j):
            v = _u8_load(builder, ary, builder.add(first, builder.mul(j, step)), dist, _V64I8,
                         signature.args[0].dtype == types.int8)
            builder.store(builder.call(umin, [builder.load(acc_lo), v]), acc_lo)
            builder.store(builder.call(umax, [builder.load(acc_hi), v]), acc_hi)
            return v

        def group(a, b, c, d):
            ab = [builder.bitcast(_unpack(builder, a, b, 64, h), _V32I16) for h in (False, True)]
            cd = [builder.bitcast(_unpack(builder, c, d, 64, h), _V32I16) for h in (False, True)]
            for k in range(4):
                t = builder.bitcast(_unpack(builder, ab[k // 2], cd[k // 2], 32, k % 2 == 1),
                                    _V16I32)
                s, q = acc_s[k], acc_q[k]
                builder.store(builder.call(dpbusd, [builder.load(s), t, ones]), s)
                builder.store(builder.call(dpbusd, [builder.load(q), t, builder.xor(t, flip)]),
                              q)

        four = ir.Constant(_I64, 4)
        whole = builder.udiv(n, four)
        with cgutils.for_range(builder, whole) as loop:
            j = builder.mul(loop.index, four)
            group(*(load(builder.add(j, ir.Constant(_I64, u))) for u in range(4)))
        with cgutils.for_range(builder, builder.urem(n, four)) as loop:  # 0-3 vectors left
            group(load(builder.add(builder.mul(whole, four), loop.index)), zero, zero, zero)

        _u8_store(builder, res, 0, builder.load(acc_lo), 64)
        _u8_store(builder, res, 64, builder.load(acc_hi), 64)
        v64i64 = ir.VectorType(_I64, 64)
        order = [0] * 64  # by position, from the four accumulators one after the other
        for k in range(4):
            for d in range(16):
                order[_T_POSITION[k][d]] = 16 * k + d
        mask = ir.Constant(ir.VectorType(_I32, 64), order)

        def by_position(accs):
            wide = [builder.sext(builder.load(a), ir.VectorType(_I64, 16)) for a in accs]
            v32 = [_concat(builder, wide[0], wide[1], 16), _concat(builder, wide[2], wide[3], 16)]
            return builder.shuffle_vector(v32[0], v32[1], mask)

        sums = by_position(acc_s)
        squares = builder.add(by_position(acc_q),
                              builder.mul(sums, ir.Constant(v64i64, [128] * 64)))
        _u8_store(builder, res, 128, builder.and_(sums, keep_mask), 64)
        _u8_store(builder, res, 192, builder.and_(squares, keep_mask), 64)
        return context.get_dummy_value()

    return sig, codegen


u8_cl_pass_best = u8_cl_pass_vnni if HAVE_VNNI else u8_cl_pass  # what cpu_stats calls
