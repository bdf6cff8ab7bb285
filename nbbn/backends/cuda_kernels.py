"""``@cuda.jit`` kernels: per-channel statistics, their merge, and the affine map.

Imported only by :mod:`nbbn.backends.cuda`, never by ``import nbbn``. Every kernel
uses shared memory and ``syncthreads`` only (no warp shuffles, ballots or
``syncwarp``), so the same code runs on a GPU and under Numba's CUDA simulator.
Accumulators are created with explicit types (``numba.float64(0)``): the simulator
runs kernel bodies as numpy code, where ``0.0 + float32`` would silently stay float32.

Statistics are computed in two launches:

1. ``partial_cf`` / ``partial_cl`` (channels-first (O, C, I) / channels-last (M, C)):
   each block reduces a fixed, contiguous part of a channel's values. Each thread
   sweeps its values (the sweeps of :func:`_float_sweep` or :func:`_exact_sweep`), then the block's
   threads are merged with Chan's formula in a shared-memory tree and thread 0 writes
   the block's (count, mean, M2, min, max, NaN count, inf count) to a (C, parts)
   workspace.
2. ``finalize`` (one block per channel) merges the channel's parts in a fixed tree,
   applies the NaN/inf rules of the CPU backend, writes the batch statistics and, when
   asked, merges them into the running state with the same formula (``finalize_bn``
   instead produces BatchNorm's affine parameters and updates its running buffers).

How a thread accumulates depends on the input dtype (a *family*, :func:`family`):

* ``"float32"`` (float16 and float32 input) and ``"float64"`` (float64, and the 32- and
  64-bit integers, read through float64 as on the CPU): ``d = v - k`` and ``d * d`` are
  summed in float64 with the thread's own shift ``k``, its first finite value. Because
  ``k`` is one of the values summed, ``sum(d*d) / M2 <= n + 1`` for the thread's ``n``
  values; but the sums' own rounding, about ``n`` float64 ulps of ``sum(d*d)``, then
  counts ``n + 1`` times in M2: a first value far out (an outlier, or the first of a
  skewed run) left 1e-10 of relative error in float64 variances, 2026-12-08. So a
  float64 thread whose ``sum(d*d)`` exceeds ``16 * M2`` (the CPU's
  ``RATIO_LIMIT_HIGH``) reads its values again around its first mean
  (:func:`poorly_shifted`, :func:`recentred`), as the CPU kernels redo such a block;
  a float32 thread keeps its sums (float64 sums of float32 data: ``n * (n + 1)`` ulps
  of float64 stay below float32's precision for the values a thread reads). A float64
  thread whose sums overflowed (finite values near 1e308) sweeps its values again
  scaled by 2^-64 (:func:`overflowed`, :func:`rescale`), as the CPU kernels redo such a
  block: a finite mean and an infinite M2. Values come in
  groups of ``unroll`` loads; a group whose values are all finite (the common case)
  takes a branch-free path with min/max in the input's precision, a group with a NaN
  or an infinity takes the careful per-value path that counts them.
* ``"bf16"`` (bfloat16, passed as its uint16 bits): the ``"float32"`` sweep with each
  value decoded on load (a bfloat16 widens exactly to float32).
* ``"exact8"`` / ``"exact16"`` (8- and 16-bit integers): integer sums of ``v`` and
  ``v * v``, exact, in 32-bit registers flushed to 64-bit totals every ``CHUNK`` values
  per thread; the thread's M2 is ``(n * sum(v*v) - sum(v)**2) / n``, computed exactly
  in int64 and rounded once.

Indices into the data are unsigned: Numba adds a negative-index wraparound to every
signed index, which here cost more instructions than the statistics themselves.
Results are reproducible: the partitioning depends only on the shape and the launch
configuration, and every merge happens in a fixed order.

The kernels are built by :func:`make_kernels` for a block size (a compile-time
constant of the shared arrays: 256 threads on a GPU, fewer in tests under the
simulator, where each thread is a Python thread) and a family.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda
from numba.cuda import libdevice

from .. import _merge
from .._policy import POLICY_OMIT

CHUNK = 4096  # values per thread between flushes of the 32-bit integer sums


def family(dtype: np.dtype) -> str:
    """The kernel family that reads ``dtype`` (see the module docstring)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return "float64" if dtype.itemsize == 8 else "float32"
    if dtype.itemsize == 1:
        return "exact8"
    if dtype.itemsize == 2:
        return "exact16"
    return "float64"


def unroll(dtype: np.dtype) -> int:
    """Loads in flight per thread and loop step for the statistics: 64 bytes, 4 to 16
    loads (float32: 16 loads took 0.81-0.98x the time of 8 on an H200, docs/benchmarks.md)."""
    return max(4, min(16, 64 // np.dtype(dtype).itemsize))


def affine_unroll(dtype: np.dtype) -> int:
    """Loads in flight per thread for the affine map: 32 bytes, 4 to 8 values (they are
    held as float64 until stored)."""
    return max(4, min(8, 32 // np.dtype(dtype).itemsize))


# ------------------------------------------------------------- shared device helpers
# The merge arithmetic (nbbn/_merge.py) compiled as device functions: the same source as
# the CPU kernels' (numba-cuda compiles @njit functions for a GPU only with a device
# present, so the CPU build could not be compiled to PTX without a card).
#
# On a GPU, ``two_prod`` is ``cuda.fma``'s, as the CPU build's is ``fma64``'s: numba-cuda
# passes no ``-fma`` option to NVVM without ``fastmath``, and NVVM then contracts
# multiplies and adds into FMAs (its default), which can break Dekker's split (``t -
# (t - a)`` with ``t = SPLIT * a`` fused on one side only), where an explicit FMA's
# error term is exact whatever the compiler does. The simulator runs ``cuda.fma`` as
# ``a * b + c``, rounded twice: there, Dekker's product (no contraction in Python).


def _two_prod_device(a, b):
    """``(p, e)``: ``p = fl(a * b)`` and its error ``e = a * b - p``, exact by one FMA.
    ``p`` is libdevice's ``dmul_rn`` (``mul.rn.f64``): a plain ``mul.f64`` lets ptxas
    fuse it into a later ``a - p`` or ``p - t``, which would spoil the error term."""
    af = numba.float64(a)
    bf = numba.float64(b)
    p = libdevice.dmul_rn(af, bf)
    return p, cuda.fma(af, bf, -p)


_SIMULATOR = bool(getattr(numba.config, "ENABLE_CUDASIM", 0))
_merge_dev = _merge.build(
    cuda.jit(device=True),
    two_prod=None if _SIMULATOR else cuda.jit(device=True, inline=True)(_two_prod_device))
dd_mean = _merge_dev.dd_mean
dd_quot = _merge_dev.dd_quot
chan_merge = _merge_dev.chan_merge
nan_min = _merge_dev.nan_min
nan_max = _merge_dev.nan_max
store_stats = _merge_dev.store


@cuda.jit(device=True, inline=True)
def accumulate(v, k, nf, s1, s2, mn, mx, nnan, ninf):
    """Add one float64 value the careful way: finite values to the shifted sums (the
    first one becomes the shift), NaN and inf to their counts, inf to min/max."""
    if math.isfinite(v):
        if nf == 0:
            k = v
        d = v - k
        return k, nf + 1, s1 + d, s2 + d * d, min(mn, v), max(mx, v), nnan, ninf
    if math.isnan(v):
        return k, nf, s1, s2, mn, mx, nnan + 1, ninf
    return k, nf, s1, s2, min(mn, v), max(mx, v), nnan, ninf + 1


@cuda.jit(device=True, inline=True)
def shifted_to_m2(k, nf, s1, s2):
    """(mean, mean_lo, M2) of ``nf`` finite values from their sums shifted by ``k``."""
    if nf == 0:
        return numba.float64(0), numba.float64(0), numba.float64(0)
    fn = numba.float64(nf)
    if s2 == math.inf:  # M2's overflow (s1^2 / n <= s2): inf, not inf - inf = NaN
        m2 = s2
    else:
        m2 = s2 - s1 * (s1 / fn)
        if m2 < 0.0:
            m2 = numba.float64(0)
    hi, lo = dd_quot(k, s1, fn)
    return hi, lo, m2


@cuda.jit(device=True, inline=True)
def apply_policy(policy, nf, mean, mlo, m2, mn, mx, nnan, ninf):
    """Batch statistics from the finite part plus the NaN/inf counts (CPU rules).

    Under "omit" NaNs are skipped; otherwise a NaN counts as a value and makes the
    mean, M2, min and max NaN. Infinities count as values, make the mean +-inf (NaN for
    both signs) and M2 NaN; min and max include them.
    """
    cnt = nf + ninf
    if policy != POLICY_OMIT:
        cnt += nnan
        if nnan > 0:
            return cnt, math.nan, numba.float64(0), math.nan, math.nan, math.nan
    if ninf > 0:
        pos = mx == math.inf
        neg = mn == -math.inf
        if pos and neg:
            mean = math.nan
        elif pos:
            mean = math.inf
        else:
            mean = -math.inf
        return cnt, mean, numba.float64(0), math.nan, mn, mx
    return cnt, mean, mlo, m2, mn, mx


# ------------------------------------------------------------------------ bfloat16
# bfloat16 arrives as its uint16 bits (the top half of a float32); the "bf16" family
# and the affine kernels built with ``bf16_in``/``bf16_out`` decode on load and encode on
# store, as the CPU kernels do (nbbn/backends/cpu_numerics.py).
@cuda.jit(device=True, inline=True)
def bf16_to_f32(h):
    """The float32 value (exact) of the bfloat16 whose uint16 bits are ``h``."""
    return numba.uint32(numba.uint32(h) << numba.uint32(16)).view(np.float32)


@cuda.jit(device=True, inline=True)
def f32_to_bf16(v):
    """The bfloat16 bits of ``v`` as torch rounds: to float32, then to nearest even
    (overflow to inf; any NaN becomes 0x7FC0). uint64 arithmetic: no wraparound."""
    u = numba.uint64(numba.float32(v).view(np.uint32))
    bits = (u + numba.uint64(0x7FFF) + ((u >> numba.uint64(16)) & numba.uint64(1))) >> (
        numba.uint64(16))
    if (u & numba.uint64(0x7FFFFFFF)) > numba.uint64(0x7F800000):
        bits = numba.uint64(0x7FC0)
    return numba.uint16(bits)


# --------------------------------------------------------------- per-thread sweeps
def _float_sweep(native, U, bf16=False, scaled=False):
    """init/sweep/finish for the float families: values read as ``native`` (float32 or
    float64), ``U`` loads per group; ``bf16``: the array holds bfloat16 bits (read as
    float32, exactly); ``scaled``: float64 values read times 2^-64 (exact above the
    subnormals), for the redo of a thread whose sums overflowed (:func:`rescale`)."""
    big = native(math.inf)

    if bf16:
        @cuda.jit(device=True, inline=True)
        def load(a, i):
            return bf16_to_f32(a[i])
    elif scaled:
        @cuda.jit(device=True, inline=True)
        def load(a, i):
            return native(a[i]) * TWO_M64
    else:
        @cuda.jit(device=True, inline=True)
        def load(a, i):
            return native(a[i])

    @cuda.jit(device=True, inline=True)
    def init():
        # (shift, finite count, sum d, sum d*d, fast min, fast max, careful min,
        #  careful max, NaNs, infs)
        return (numba.float64(0), numba.int64(0), numba.float64(0), numba.float64(0),
                big, -big, numba.float64(math.inf), numba.float64(-math.inf),
                numba.int64(0), numba.int64(0))

    @cuda.jit(device=True, inline=True)
    def take(vals, nvalid, acc):
        """Add ``vals[:nvalid]``; ``vals[nvalid:]`` hold the shift (d = 0, and a value
        already seen, so min and max are unchanged)."""
        k, nf, s1, s2, mn, mx, mnc, mxc, nnan, ninf = acc
        ok = nf > 0
        for u in range(U):
            ok = ok & math.isfinite(vals[u])
        if ok:  # all finite and the shift is set: no branch per value
            for u in range(U):
                d = numba.float64(vals[u]) - k
                s1 += d
                s2 += d * d
                mn = min(mn, vals[u])
                mx = max(mx, vals[u])
            nf += nvalid
        else:
            for u in range(U):  # constant bounds keep vals in registers
                if u < nvalid:
                    k, nf, s1, s2, mnc, mxc, nnan, ninf = accumulate(
                        numba.float64(vals[u]), k, nf, s1, s2, mnc, mxc, nnan, ninf)
        return k, nf, s1, s2, mn, mx, mnc, mxc, nnan, ninf

    @cuda.jit(device=True, inline=True)
    def sweep(a, i, end, step, acc):
        """Accumulate ``a[i], a[i + step], ...`` below ``end`` (uint64 indices), ``U``
        loads in flight; the last, partial group masked rather than one load at a time."""
        vals = cuda.local.array(U, native)
        span = step * numba.uint64(U - 1)
        while i + span < end:
            for u in range(U):
                vals[u] = load(a, i)
                i += step
            acc = take(vals, U, acc)
        if i < end:
            kn = native(acc[0])
            nvalid = 0
            for u in range(U):
                if i < end:
                    vals[u] = load(a, i)
                    nvalid += 1
                else:
                    vals[u] = kn
                i += step
            acc = take(vals, nvalid, acc)
        return acc

    @cuda.jit(device=True, inline=True)
    def finish(acc):
        """(finite count, mean, mean_lo, M2, min, max, NaNs, infs) of the thread's values."""
        k, nf, s1, s2, mn, mx, mnc, mxc, nnan, ninf = acc
        mean, mlo, m2 = shifted_to_m2(k, nf, s1, s2)
        return (nf, mean, mlo, m2, min(mnc, numba.float64(mn)), max(mxc, numba.float64(mx)),
                nnan, ninf)

    return init, sweep, finish


def _exact_sweep(bits, U):
    """init/sweep/finish for 8- and 16-bit integers: exact integer sums."""
    acc_t = numba.int32 if bits == 8 else numba.int64  # holds CHUNK values' sum of squares
    # n * sum(v*v) and sum(v)**2 fit in int64 below this count (v*v < 2**(2 * bits))
    exact_below = 2 ** ((62 - 2 * bits) // 2)

    @cuda.jit(device=True, inline=True)
    def init():
        # (count, sum v, sum v*v, min, max)
        return (numba.int64(0), numba.int64(0), numba.int64(0), numba.int32(2**31 - 1),
                numba.int32(-(2**31)))

    @cuda.jit(device=True, inline=True)
    def take(vals, a1, a2, mn, mx):
        for u in range(U):
            v = vals[u]
            a1 = acc_t(a1 + v)
            a2 = acc_t(a2 + numba.int64(v) * v)  # int64: a 16-bit square overflows int32
            mn = min(mn, v)
            mx = max(mx, v)
        return a1, a2, mn, mx

    @cuda.jit(device=True, inline=True)
    def sweep(a, i, end, step, acc):
        """As the float sweep; the sums of a chunk of ``CHUNK`` values per thread are
        kept in ``acc_t`` and then added to the int64 totals."""
        n, t1, t2, mn, mx = acc
        vals = cuda.local.array(U, numba.int32)
        span = step * numba.uint64(U - 1)
        while i < end:
            stop = min(end, i + step * numba.uint64(CHUNK))
            a1 = acc_t(0)
            a2 = acc_t(0)
            while i + span < stop:
                for u in range(U):
                    vals[u] = numba.int32(a[i])
                    i += step
                a1, a2, mn, mx = take(vals, a1, a2, mn, mx)
                n += U
            if i < stop:  # the masked last group: missing values repeat the first one,
                v0 = numba.int32(a[i])  # which is then taken out of the sums again
                nvalid = 0
                for u in range(U):
                    if i < stop:
                        vals[u] = numba.int32(a[i])
                        nvalid += 1
                        i += step  # stops at stop: the next chunk starts there
                    else:
                        vals[u] = v0
                a1, a2, mn, mx = take(vals, a1, a2, mn, mx)
                extra = numba.int32(U - nvalid)
                a1 = acc_t(a1 - extra * v0)
                a2 = acc_t(a2 - numba.int64(extra) * v0 * v0)
                n += nvalid
            t1 += numba.int64(a1)
            t2 += numba.int64(a2)
        return n, t1, t2, mn, mx

    @cuda.jit(device=True, inline=True)
    def finish(acc):
        n, t1, t2, mn, mx = acc
        if n == 0:
            return (numba.int64(0), numba.float64(0), numba.float64(0), numba.float64(0),
                    numba.float64(math.inf), numba.float64(-math.inf), numba.int64(0),
                    numba.int64(0))
        fn = numba.float64(n)
        q = t1 // n  # the mean as exact quotient plus the remainder's share
        hi, lo = dd_quot(numba.float64(q), numba.float64(t1 - q * n), fn)
        if n < exact_below:
            m2 = numba.float64(n * t2 - t1 * t1) / fn
        else:  # (a thread of 2**15 16-bit values or more: the default launch on a large
            # channel; this was t2 - t1 * (t1 / n) in float64, off by 5e-5 relative)
            # the sum of squares around the integer nearest the mean, exact in int64
            # while t2 is: with t1 = c * n + r, |r| <= n / 2, sum (v - c)**2 =
            # t2 - c * (t1 + r), and M2 = that - r * r / n, which cancels by at most
            # half (a few ulp in all)
            r = t1 - q * n
            c = q
            if 2 * r > n:
                c += 1
                r -= n
            m2 = numba.float64(t2 - c * (t1 + r)) - numba.float64(r * r) / fn
            if m2 < 0.0:
                m2 = numba.float64(0)
        return (n, hi, lo, m2, numba.float64(mn), numba.float64(mx), numba.int64(0),
                numba.int64(0))

    return init, sweep, finish


TWO_M64 = 2.0 ** -64
TWO_64 = 2.0 ** 64
TWO_128 = 2.0 ** 128


@cuda.jit(device=True, inline=True)
def overflowed(res):
    """True when a thread's finite values gave a non-finite mean: float64 values near
    1e308 whose shifted sums overflowed (float32 and integer values cannot)."""
    return res[0] > 0 and not math.isfinite(res[1])


@cuda.jit(device=True, inline=True)
def rescale(res, scaled):
    """The thread's result with the mean and M2 of its redo on values scaled by 2^-64
    (``scaled``), scaled back: a finite mean, and an M2 that is inf where it is beyond
    float64's range; counts, min and max stay those of the first sweep."""
    nf, _, _, _, mn, mx, nnan, ninf = res
    return (nf, scaled[1] * TWO_64, scaled[2] * TWO_64, scaled[3] * TWO_128, mn, mx,
            nnan, ninf)


RATIO_LIMIT = 16.0
"""A float64 thread whose ``sum(d*d)`` is above this times its M2 is read again around
its mean (the CPU's ``RATIO_LIMIT_HIGH``)."""


@cuda.jit(device=True, inline=True)
def poorly_shifted(acc, res):
    """True when a thread's shift ``k`` (its first finite value) was far from its mean:
    ``sum(d*d)`` above ``RATIO_LIMIT`` times M2, so the sums' rounding counts that many
    times over in M2 (finite sums only: an overflow is :func:`overflowed`'s)."""
    s2 = acc[3]
    return res[0] > 1 and math.isfinite(s2) and s2 > RATIO_LIMIT * res[3]


@cuda.jit(device=True, inline=True)
def _never(acc, res):
    return False


@cuda.jit(device=True, inline=True)
def sweep_at(a, i, end, step, acc):
    """The redo of a poorly shifted float64 thread: its finite values' count and sums
    shifted by ``acc[0]`` (its first mean), one value at a time (rare: no unrolling);
    NaNs and infinities skipped, their counts and min/max being the first sweep's."""
    k, nf, s1, s2 = acc
    while i < end:
        v = numba.float64(a[i])
        if math.isfinite(v):
            d = v - k
            s1 += d
            s2 += d * d
            nf += 1
        i += step
    return k, nf, s1, s2


@cuda.jit(device=True, inline=True)
def at_mean(res):
    """The accumulator :func:`sweep_at` starts from: the thread's first mean as shift."""
    return res[1], numba.int64(0), numba.float64(0), numba.float64(0)


@cuda.jit(device=True, inline=True)
def recentred(res, acc):
    """The thread's result with the mean and M2 of its redo around its first mean
    (``acc``, from :func:`sweep_at`); counts, min and max stay the first sweep's."""
    k, nf, s1, s2 = acc
    mean, mlo, m2 = shifted_to_m2(k, nf, s1, s2)
    return (res[0], mean, mlo, m2, res[4], res[5], res[6], res[7])


def _family_sweep(fam: str, U: int):
    if fam == "float32":
        return _float_sweep(numba.float32, U)
    if fam == "float64":
        return _float_sweep(numba.float64, U)
    if fam == "bf16":
        return _float_sweep(numba.float32, U, bf16=True)
    if fam == "exact8":
        return _exact_sweep(8, U)
    if fam == "exact16":
        return _exact_sweep(16, U)
    raise ValueError(f"unknown kernel family {fam!r}")


# ------------------------------------------------------------------ block reduction
def _block_helpers(T: int):
    @cuda.jit(device=True, inline=True)
    def block_reduce(t, lanes, rows, si, sf):
        """Merge the ``rows`` entries of each of ``lanes`` lanes (entry r of lane l is
        ``t = r * lanes + l``) into entry 0 of the lane, in a fixed tree order."""
        step = 1
        while step < rows:
            cuda.syncthreads()
            r = t // lanes
            if t < lanes * rows and r % (2 * step) == 0 and r + step < rows:
                u = t + step * lanes
                si[0, t], sf[0, t], sf[1, t], sf[2, t] = chan_merge(
                    si[0, t], sf[0, t], sf[1, t], sf[2, t], si[0, u], sf[0, u], sf[1, u],
                    sf[2, u])
                sf[3, t] = min(sf[3, t], sf[3, u])
                sf[4, t] = max(sf[4, t], sf[4, u])
                si[1, t] += si[1, u]
                si[2, t] += si[2, u]
            step *= 2
        cuda.syncthreads()

    @cuda.jit(device=True, inline=True)
    def store_thread(t, res, si, sf):
        nf, mean, mlo, m2, mn, mx, nnan, ninf = res
        store_stats(si, sf, t, nf, mean, mlo, m2, mn, mx, nnan, ninf)

    @cuda.jit(device=True, inline=True)
    def channel_parts(c, pi, pf, si, sf):
        """Merge channel c's parts (pi int64 (3, C, parts) [finite count, NaNs, infs],
        pf float64 (5, C, parts) [mean, mean_lo, M2, min, max]) with the block's T
        threads: thread
        t takes parts t, t + T, ... in order, then a fixed tree. Entry 0 of (si, sf)
        holds the result after the call."""
        t = cuda.threadIdx.x
        nf = numba.int64(0)
        mean = numba.float64(0)
        mlo = numba.float64(0)
        m2 = numba.float64(0)
        mn = numba.float64(math.inf)
        mx = numba.float64(-math.inf)
        nnan = numba.int64(0)
        ninf = numba.int64(0)
        p = t
        while p < pi.shape[2]:
            nf, mean, mlo, m2 = chan_merge(nf, mean, mlo, m2, pi[0, c, p], pf[0, c, p],
                                           pf[1, c, p], pf[2, c, p])
            mn = min(mn, pf[3, c, p])
            mx = max(mx, pf[4, c, p])
            nnan += pi[1, c, p]
            ninf += pi[2, c, p]
            p += T
        store_thread(t, (nf, mean, mlo, m2, mn, mx, nnan, ninf), si, sf)
        block_reduce(t, 1, T, si, sf)

    return block_reduce, store_thread, channel_parts


@cuda.jit(device=True, inline=True)
def row_span(nrows, p, nparts, r, base, st):
    """Flat (start, end) uint64 indices of row ``r`` and the end of part ``p`` of
    ``nparts`` over ``nrows`` rows ``st`` items apart, from ``base``."""
    m0 = numba.uint64((nrows * p) // nparts + r)
    m1 = numba.uint64((nrows * (p + 1)) // nparts)
    stride = numba.uint64(st)
    return base + m0 * stride, base + m1 * stride


@cuda.jit(device=True, inline=True)
def write_part(pi, pf, c, p, t, si, sf):
    """Copy thread ``t``'s entry of (si, sf) to part ``p`` of channel ``c``."""
    for j in range(3):
        pi[j, c, p] = si[j, t]
    for j in range(5):
        pf[j, c, p] = sf[j, t]


def _span_cf(sweep, T: int):
    """A device function: thread ``t``'s accumulator ``acc`` after the values ``j0 <= o
    * I + i < j1`` of channel ``c`` of x (O, C, I), row by row, swept by ``sweep``."""
    @cuda.jit(device=True, inline=True)
    def span(x, c, j0, j1, t, acc):
        length = x.shape[2]
        o = j0 // length
        while o * length < j1:
            lo = max(j0 - o * length, 0)
            hi = min(j1 - o * length, length)
            acc = sweep(x[o, c], numba.uint64(lo + t), numba.uint64(hi), numba.uint64(T),
                        acc)
            o += 1
        return acc
    return span


def make_kernels(threads: int, fam: str = "float64", unroll: int = 4) -> SimpleNamespace:
    """Compile-on-first-use statistics kernels for blocks of ``threads`` threads (a power
    of two), for inputs of family ``fam``, ``unroll`` loads per thread and step."""
    T = threads
    init, sweep, finish = _family_sweep(fam, unroll)
    # float64 input: a thread whose sums overflowed redoes its values scaled by 2^-64
    # (a constant, so the other families compile no redo)
    REDO = fam == "float64"
    sweep_scaled = _float_sweep(numba.float64, unroll, scaled=True)[1] if REDO else sweep
    span_cf, span_cf_scaled = _span_cf(sweep, T), _span_cf(sweep_scaled, T)
    # float64 input: a thread whose shift was far from its mean reads its values again
    # around that mean (poorly_shifted)
    # (another family's accumulator has another layout: its test is a constant False)
    span_cf_at = _span_cf(sweep_at, T)
    recentre = poorly_shifted if REDO else _never
    block_reduce, store_thread, _ = _block_helpers(T)

    @cuda.jit
    def partial_cf(x, nparts, pi, pf):
        """Block b reduces part ``b % nparts`` of channel ``b // nparts`` of x (O, C, I):
        the values ``j0 <= o * I + i < j1`` of the channel, row by row."""
        si = cuda.shared.array((3, T), numba.int64)  # per thread: [count, NaNs, infs]
        sf = cuda.shared.array((5, T), numba.float64)  # [mean, mean_lo, M2, min, max]
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        c = b // nparts
        p = b - c * nparts
        length = x.shape[2]
        total = x.shape[0] * length
        j0 = (total * p) // nparts
        j1 = (total * (p + 1)) // nparts
        acc = span_cf(x, c, j0, j1, t, init())
        res = finish(acc)
        if REDO and overflowed(res):
            res = rescale(res, finish(span_cf_scaled(x, c, j0, j1, t, init())))
        elif recentre(acc, res):
            res = recentred(res, span_cf_at(x, c, j0, j1, t, at_mean(res)))
        store_thread(t, res, si, sf)
        block_reduce(t, 1, T, si, sf)
        if t == 0:
            write_part(pi, pf, c, p, 0, si, sf)

    @cuda.jit
    def partial_cl(xf, nrows, nchan, s0, s1, nparts, lanes, pi, pf):
        """Channels-last data (M, C) seen through a flat 1-d array ``xf`` (value (m, c) at
        ``m * s0 + c * s1``): block b covers channels ``(b // nparts) * lanes`` + [0,
        lanes) over row part ``b % nparts``; thread t reads channel ``t % lanes`` of rows
        ``t // lanes``, ``+ rows``, ... so each thread keeps to one channel and a warp
        reads consecutive addresses. Flat indices let the compiler step a pointer
        instead of multiplying a row index by a stride for every value."""
        si = cuda.shared.array((3, T), numba.int64)
        sf = cuda.shared.array((5, T), numba.float64)
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        tile = b // nparts
        p = b - tile * nparts
        rows = T // lanes
        lane = t % lanes
        r = t // lanes
        c = tile * lanes + lane
        acc = init()
        if r < rows and c < nchan:
            start, end = row_span(nrows, p, nparts, r, numba.uint64(c * s1), s0)
            acc = sweep(xf, start, end, numba.uint64(rows * s0), acc)
        res = finish(acc)
        if REDO and overflowed(res):
            start, end = row_span(nrows, p, nparts, r, numba.uint64(c * s1), s0)
            res = rescale(res, finish(sweep_scaled(xf, start, end,
                                                   numba.uint64(rows * s0), init())))
        elif recentre(acc, res):
            start, end = row_span(nrows, p, nparts, r, numba.uint64(c * s1), s0)
            res = recentred(res, sweep_at(xf, start, end, numba.uint64(rows * s0),
                                          at_mean(res)))
        store_thread(t, res, si, sf)
        block_reduce(t, lanes, rows, si, sf)
        if r == 0 and c < nchan:
            write_part(pi, pf, c, p, t, si, sf)

    @cuda.jit
    def partial_rows(xf, nrows, nchan, inner, s0, s1, s2, nparts, pi, pf):
        """Channels-first data (O, C, I) with short rows (I < T), value (o, c, i) at
        ``xf[o * s0 + c * s1 + i * s2]``: block b reduces the rows of part ``b % nparts``
        of channel ``b // nparts``; thread t reads position ``t % I`` of rows ``t // I``,
        ``+ T // I``, ..., so ``(T // I) * I`` threads work instead of I."""
        si = cuda.shared.array((3, T), numba.int64)
        sf = cuda.shared.array((5, T), numba.float64)
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        c = b // nparts
        p = b - c * nparts
        rows = T // inner
        r = t // inner
        i = t - r * inner
        acc = init()
        if r < rows:
            start, end = row_span(nrows, p, nparts, r, numba.uint64(c * s1 + i * s2), s0)
            acc = sweep(xf, start, end, numba.uint64(rows * s0), acc)
        res = finish(acc)
        if REDO and overflowed(res):
            start, end = row_span(nrows, p, nparts, r, numba.uint64(c * s1 + i * s2), s0)
            res = rescale(res, finish(sweep_scaled(xf, start, end,
                                                   numba.uint64(rows * s0), init())))
        elif recentre(acc, res):
            start, end = row_span(nrows, p, nparts, r, numba.uint64(c * s1 + i * s2), s0)
            res = recentred(res, sweep_at(xf, start, end, numba.uint64(rows * s0),
                                          at_mean(res)))
        store_thread(t, res, si, sf)
        block_reduce(t, 1, T, si, sf)
        if t == 0:
            write_part(pi, pf, c, p, 0, si, sf)

    return SimpleNamespace(threads=T, family=fam, unroll=unroll, partial_cf=partial_cf,
                           partial_cl=partial_cl, partial_rows=partial_rows)


# ------------------------------------------------------------- per-channel kernels
@cuda.jit(device=True, inline=True)
def merge_into_state(si, sf, c, cnt, mean, mlo, m2, mn, mx, nnan, ninf):
    """Merge one channel's statistics into the state: int64 (3, C) [count, NaN, inf] and
    float64 (5, C) [mean, mean_lo, M2, min, max]."""
    si[0, c], sf[0, c], sf[1, c], sf[2, c] = chan_merge(si[0, c], sf[0, c], sf[1, c],
                                                        sf[2, c], cnt, mean, mlo, m2)
    sf[3, c] = nan_min(sf[3, c], mn)
    sf[4, c] = nan_max(sf[4, c], mx)
    si[1, c] += nnan
    si[2, c] += ninf


def make_channel_kernels(threads: int) -> SimpleNamespace:
    """The kernels that finish the statistics: blocks of ``threads`` that each merge the
    parts of one channel at a time."""
    T = threads
    _, store_thread, channel_parts = _block_helpers(T)

    @cuda.jit
    def finalize(policy, pi, pf, bi, bf, merge, si, sf):
        """Batch statistics per channel into (bi, bf); with ``merge``, also into the state
        (si, sf). Block b takes channels b, b + gridDim.x, ..."""
        ti = cuda.shared.array((3, T), numba.int64)
        tf = cuda.shared.array((5, T), numba.float64)
        c = cuda.blockIdx.x
        while c < pi.shape[1]:  # the same for all threads of a block
            channel_parts(c, pi, pf, ti, tf)
            if cuda.threadIdx.x == 0:
                cnt, mean, mlo, m2, mn, mx = apply_policy(
                    policy, ti[0, 0], tf[0, 0], tf[1, 0], tf[2, 0], tf[3, 0], tf[4, 0],
                    ti[1, 0], ti[2, 0])
                nnan = ti[1, 0]
                ninf = ti[2, 0]
                res = (cnt, mean, mlo, m2, mn, mx, nnan, ninf)
                store_thread(c, res, bi, bf)  # the same layout
                if merge:
                    merge_into_state(si, sf, c, cnt, mean, mlo, m2, mn, mx, nnan, ninf)
            cuda.syncthreads()  # entry 0 is read before the next channel overwrites it
            c += cuda.gridDim.x

    @cuda.jit
    def finalize_bn(pi, pf, eps, wb, params, update, factor, running):
        """BatchNorm training step, block b for channels b, b + gridDim.x, ...: batch mean
        and biased variance to the affine parameters ``params = [mean, weight /
        sqrt(var + eps), bias]`` (float64 (3, C)), from ``wb = [weight, bias]``; with
        ``update``, ``running = [mean, var]`` moves by ``factor`` towards the batch mean
        and unbiased variance."""
        ti = cuda.shared.array((3, T), numba.int64)
        tf = cuda.shared.array((5, T), numba.float64)
        c = cuda.blockIdx.x
        while c < pi.shape[1]:
            channel_parts(c, pi, pf, ti, tf)
            if cuda.threadIdx.x == 0:
                cnt, mean, _, m2, mn, mx = apply_policy(
                    0, ti[0, 0], tf[0, 0], tf[1, 0], tf[2, 0], tf[3, 0], tf[4, 0], ti[1, 0],
                    ti[2, 0])
                n = numba.float64(cnt)
                params[0, c] = mean
                params[1, c] = wb[0, c] / math.sqrt(m2 / n + eps)
                params[2, c] = wb[1, c]
                if update:
                    keep = 1.0 - factor
                    running[0, c] = keep * running[0, c] + factor * mean
                    running[1, c] = keep * running[1, c] + factor * (m2 / (n - 1.0))
            cuda.syncthreads()
            c += cuda.gridDim.x

    return SimpleNamespace(threads=T, finalize=finalize, finalize_bn=finalize_bn)


# --------------------------------------------------------------------------- affine
def make_affine_kernels(unroll: int, bf16_in: bool = False,
                        bf16_out: bool = False) -> SimpleNamespace:
    """``out = (x - a[c]) * s[c] + b[c]`` in float64, ``params = [a, s, b]`` (float64
    (3, C)). Each thread loads ``unroll`` values before it stores any: the compiler may
    not move a load above a store to ``out``, which could alias ``x``. ``bf16_in`` /
    ``bf16_out``: x / out hold bfloat16 bits (uint16), decoded / encoded as torch does."""
    U = unroll

    if bf16_in:
        @cuda.jit(device=True, inline=True)
        def load(x, i):
            return numba.float64(bf16_to_f32(x[i]))
    else:
        @cuda.jit(device=True, inline=True)
        def load(x, i):
            return numba.float64(x[i])

    if bf16_out:
        @cuda.jit(device=True, inline=True)
        def store(out, k, v):
            out[k] = f32_to_bf16(v)
    else:
        @cuda.jit(device=True, inline=True)
        def store(out, k, v):
            out[k] = v

    @cuda.jit(device=True, inline=True)
    def map_flat(x, i, end, step, out, k, kstep, ac, sc, bc):
        """out[k] = f(x[i]) for i = i, i + step, ... below end and k = k, k + kstep, ...
        (uint64, 1-d views); the last group masked rather than one load at a time."""
        vals = cuda.local.array(U, numba.float64)
        span = step * numba.uint64(U - 1)
        while i + span < end:
            for u in range(U):
                vals[u] = load(x, i)
                i += step
            for u in range(U):
                store(out, k, (vals[u] - ac) * sc + bc)
                k += kstep
        if i < end:
            j = i
            for u in range(U):
                if j < end:
                    vals[u] = load(x, j)
                j += step
            for u in range(U):
                if i < end:
                    store(out, k, (vals[u] - ac) * sc + bc)
                i += step
                k += kstep

    @cuda.jit
    def affine_cf(x, params, out, bpr, span):
        """Input x (O, C, I): block = (row (o, c), chunk of ``span`` values of a row)."""
        blk = cuda.blockIdx.x
        row = blk // bpr
        q = blk - row * bpr
        nchan = x.shape[1]
        o = row // nchan
        c = row - o * nchan
        lo = q * span + cuda.threadIdx.x
        hi = min(x.shape[2], (q + 1) * span)
        step = numba.uint64(cuda.blockDim.x)
        map_flat(x[o, c], numba.uint64(lo), numba.uint64(hi), step, out[o, c],
                 numba.uint64(lo), step, params[0, c], params[1, c], params[2, c])

    @cuda.jit
    def affine_cl(xf, xs0, xs1, params, of, os0, os1, nrows, nchan, nparts, lanes):
        """Channels-last (M, C) through flat 1-d arrays (value (m, c) of x at ``m * xs0 +
        c * xs1``, of out at ``m * os0 + c * os1``): thread t keeps to channel ``t %
        lanes`` (see partial_cl)."""
        blk = cuda.blockIdx.x
        t = cuda.threadIdx.x
        tile = blk // nparts
        p = blk - tile * nparts
        rows = cuda.blockDim.x // lanes
        lane = t % lanes
        r = t // lanes
        c = tile * lanes + lane
        if r >= rows or c >= nchan:
            return
        start, end = row_span(nrows, p, nparts, r, numba.uint64(c * xs1), xs0)
        ostart, _ = row_span(nrows, p, nparts, r, numba.uint64(c * os1), os0)
        map_flat(xf, start, end, numba.uint64(rows * xs0), of, ostart,
                 numba.uint64(rows * os0), params[0, c], params[1, c], params[2, c])

    @cuda.jit
    def affine_rows(xf, xs0, xs1, xs2, params, of, os0, os1, os2, nrows, inner, nparts):
        """Channels-first (O, C, I) with short rows (I < threads), through flat 1-d
        arrays (strides in items): block b maps the rows of part ``b % nparts`` of
        channel ``b // nparts``, thread t position ``t % I`` of rows ``t // I``, ``+
        threads // I``, ... (see partial_rows)."""
        blk = cuda.blockIdx.x
        t = cuda.threadIdx.x
        c = blk // nparts
        p = blk - c * nparts
        rows = cuda.blockDim.x // inner
        r = t // inner
        i = t - r * inner
        if r >= rows:
            return
        start, end = row_span(nrows, p, nparts, r, numba.uint64(c * xs1 + i * xs2), xs0)
        ostart, _ = row_span(nrows, p, nparts, r, numba.uint64(c * os1 + i * os2), os0)
        map_flat(xf, start, end, numba.uint64(rows * xs0), of, ostart,
                 numba.uint64(rows * os0), params[0, c], params[1, c], params[2, c])

    return SimpleNamespace(unroll=U, bf16_in=bf16_in, bf16_out=bf16_out, affine_cf=affine_cf,
                           affine_cl=affine_cl, affine_rows=affine_rows)
