"""Non-temporal ("streaming") stores for the affine kernels' large outputs.

An ordinary store to a line that is not in the cache first reads the line from memory
(read for ownership), so writing an output that does not fit the last-level cache
costs a read and a write per line: a uint8 -> float32 normalizer moves 1 byte in and
4 out per element, and its memory traffic is 9 bytes, not 5. A non-temporal store
writes whole lines past the caches, without the read: the kernels compute a chunk
into a small cache-resident buffer, then :func:`stream_copy` moves it to the output
with 64-byte non-temporal stores (the chunk's unaligned head and tail with ordinary
stores), and :func:`stream_fence` orders them before the kernel returns (non-temporal
stores are weakly ordered: another thread could otherwise read the output before they
land). The caller (``cpu._run_affine``) streams only outputs larger than the
last-level cache (:data:`STREAM_MIN_BYTES`), not aliasing the input: a smaller output
is better left in the cache for whoever reads it next.

Both are LLVM IR on generic types (``!nontemporal`` stores of <8 x i64>), which LLVM
lowers to ``vmovntdq`` on x86 (zmm or ymm by target) and to the target's own form
elsewhere; the fence is ``sfence`` on x86 and a sequentially consistent fence on other
machines.
"""

from __future__ import annotations

import os
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
LINE_BYTES = 64  # bytes per non-temporal store: one cache line
_V8I64 = ir.VectorType(_I64, 8)
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _llc_bytes() -> int:
    """The last-level cache's size (Linux/glibc sysconf), else 32 MiB."""
    for name in ("SC_LEVEL3_CACHE_SIZE", "SC_LEVEL2_CACHE_SIZE"):
        try:
            size = os.sysconf(name)
        except (ValueError, OSError, AttributeError):
            continue
        if size and size > 0:
            return int(size)
    return 32 << 20


STREAM_MIN_BYTES = max(8 << 20, _llc_bytes())  # outputs at least this large are streamed
STREAM_CHUNK_BYTES = 2048  # bytes per buffered chunk: whole lines, L1-resident with the parameters


@intrinsic
def stream_copy(typingctx, src, dst, start):
    """``dst[start : start + src.size] = src`` (1-d C-contiguous arrays of one dtype):
    the 64-byte-aligned lines of the destination with non-temporal stores, the rest
    with ordinary ones."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.dtype == dst.dtype and isinstance(start, types.Integer)):
        return None
    sig = types.void(src, dst, start)

    def codegen(context, builder, signature, args):
        s_arr = context.make_array(signature.args[0])(context, builder, args[0])
        d_arr = context.make_array(signature.args[1])(context, builder, args[1])
        first = context.cast(builder, args[2], signature.args[2], types.int64)
        itemsize = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        nbytes = builder.mul(s_arr.nitems, ir.Constant(_I64, itemsize))
        sp = builder.bitcast(s_arr.data, _I8.as_pointer())
        dp = builder.gep(builder.bitcast(d_arr.data, _I8.as_pointer()),
                         [builder.mul(first, ir.Constant(_I64, itemsize))])
        # bytes before the first aligned line (at most all of them)
        mis = builder.and_(builder.sub(ir.Constant(_I64, 0), builder.ptrtoint(dp, _I64)),
                           ir.Constant(_I64, LINE_BYTES - 1))
        head = builder.select(builder.icmp_unsigned("<", mis, nbytes), mis, nbytes)
        cgutils.raw_memcpy(builder, dp, sp, head, 1)
        lines = builder.udiv(builder.sub(nbytes, head), ir.Constant(_I64, LINE_BYTES))
        meta = builder.module.add_metadata([ir.Constant(_I32, 1)])
        with cgutils.for_range(builder, lines) as loop:
            off = builder.add(head, builder.mul(loop.index, ir.Constant(_I64, LINE_BYTES)))
            v = builder.load(builder.bitcast(builder.gep(sp, [off]), _V8I64.as_pointer()),
                             align=1, typ=_V8I64)
            st = builder.store(v, builder.bitcast(builder.gep(dp, [off]),
                                                  _V8I64.as_pointer()), align=LINE_BYTES)
            st.set_metadata("nontemporal", meta)
        done = builder.add(head, builder.mul(lines, ir.Constant(_I64, LINE_BYTES)))
        cgutils.raw_memcpy(builder, builder.gep(dp, [done]), builder.gep(sp, [done]),
                           builder.sub(nbytes, done), 1)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def stream_fence(typingctx):
    """Order the non-temporal stores before any later store (``sfence`` on x86)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse.sfence")
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen
