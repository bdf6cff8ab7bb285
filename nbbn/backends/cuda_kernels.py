"""``@cuda.jit`` kernels: per-channel statistics, their merge, and the affine map.

Imported only by :mod:`nbbn.backends.cuda`, never by ``import nbbn``. Every kernel
uses shared memory and ``syncthreads`` only (no warp shuffles, ballots or
``syncwarp``), so the same code runs on a GPU and under Numba's CUDA simulator.
Accumulators are created with explicit types (``numba.float64(0)``): the simulator
runs kernel bodies as numpy code, where ``0.0 + float32`` would silently stay float32.

Statistics are computed in two launches:

1. ``partial_cf`` / ``partial_cl`` (channels-first (O, C, I) / channels-last (M, C)):
   each block reduces a fixed, contiguous part of a channel's values. Each thread
   accumulates ``d = v - k`` and ``d * d`` in float64 with its own shift ``k``, the
   first finite value it reads; because ``k`` is one of the values summed,
   ``sum(d*d) / M2 <= n + 1`` for the thread's ``n`` values, so the shifted formula
   loses at most ``log10(n + 1)`` of float64's 16 digits (about 2.5 for the ~250 values
   a thread reads), whatever the mean. Threads are then merged with Chan's formula in a
   shared-memory tree, and thread 0 writes the block's (count, mean, M2, min, max, NaN
   count, inf count) to a (C, parts) workspace.
2. ``finalize`` (one thread per channel) merges the parts in a fixed order, applies
   the NaN/inf rules of the CPU backend, writes the batch statistics and, when asked,
   merges them into the running state with the same formula (``finalize_bn`` instead
   produces BatchNorm's affine parameters and updates its running buffers).

Results are reproducible: the partitioning depends only on the shape and the launch
configuration, and every merge happens in a fixed order.

The kernels are built by :func:`make_kernels` for a given block size, a compile-time
constant of the shared arrays (256 threads on a GPU, fewer in tests under the
simulator, where each thread is a Python thread).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numba
from numba import cuda

POLICY_OMIT = 1  # same values as cpu_stats.POLICY_*
UNROLL = 4  # loads in flight per thread and loop step


@cuda.jit(device=True, inline=True)
def chan_merge(na, ma, m2a, nb, mb, m2b):
    """Chan's exact merge of two (count, mean, M2) triples, as ``_numerics.chan_merge``.

    A CUDA copy rather than a call of the ``@njit`` original: numba-cuda compiles
    ``@njit`` functions for the GPU only with a device present, so kernels calling them
    could not be compiled to PTX without a card (``scripts/cuda_ptx_check.py``).
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
    else:  # infinite means: inf for one sign, NaN for opposite signs (as numpy)
        mean = ma * (numba.float64(na) / numba.float64(n)) + mb * fb
    return n, mean, m2a + m2b + d * d * numba.float64(na) * fb


@cuda.jit(device=True, inline=True)
def nan_min(a, b):
    """``min`` that propagates NaN (as ``np.minimum``)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a <= b else b


@cuda.jit(device=True, inline=True)
def nan_max(a, b):
    """``max`` that propagates NaN (as ``np.maximum``)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return a if a >= b else b


@cuda.jit(device=True, inline=True)
def accumulate(v, k, nf, s1, s2, mn, mx, nnan, ninf):
    """Add one value: finite values to the shifted sums, NaN and inf to their counts."""
    if math.isfinite(v):
        if nf == 0:
            k = v
        d = v - k
        return k, nf + 1, s1 + d, s2 + d * d, min(mn, v), max(mx, v), nnan, ninf
    if math.isnan(v):
        return k, nf, s1, s2, mn, mx, nnan + 1, ninf
    return k, nf, s1, s2, min(mn, v), max(mx, v), nnan, ninf + 1


@cuda.jit(device=True, inline=True)
def accumulate4(v0, v1, v2, v3, k, nf, s1, s2, mn, mx, nnan, ninf):
    """``accumulate`` four values, loaded together for memory-level parallelism."""
    k, nf, s1, s2, mn, mx, nnan, ninf = accumulate(v0, k, nf, s1, s2, mn, mx, nnan, ninf)
    k, nf, s1, s2, mn, mx, nnan, ninf = accumulate(v1, k, nf, s1, s2, mn, mx, nnan, ninf)
    k, nf, s1, s2, mn, mx, nnan, ninf = accumulate(v2, k, nf, s1, s2, mn, mx, nnan, ninf)
    return accumulate(v3, k, nf, s1, s2, mn, mx, nnan, ninf)


@cuda.jit(device=True, inline=True)
def empty_accumulator():
    """(shift, finite count, shifted sum, shifted sum of squares, min, max, NaNs, infs)."""
    return (numba.float64(0), numba.int64(0), numba.float64(0), numba.float64(0),
            numba.float64(math.inf), numba.float64(-math.inf), numba.int64(0), numba.int64(0))


@cuda.jit(device=True, inline=True)
def shifted_to_m2(k, nf, s1, s2):
    """(mean, M2) of ``nf`` finite values from their sums shifted by ``k``."""
    if nf == 0:
        return numba.float64(0), numba.float64(0)
    fn = numba.float64(nf)
    m2 = s2 - s1 * (s1 / fn)
    if m2 < 0.0:
        m2 = numba.float64(0)
    return k + s1 / fn, m2


@cuda.jit(device=True, inline=True)
def apply_policy(policy, nf, mean, m2, mn, mx, nnan, ninf):
    """Batch statistics from the finite part plus the NaN/inf counts (CPU rules).

    Under "omit" NaNs are skipped; otherwise a NaN counts as a value and makes the
    mean, M2, min and max NaN. Infinities count as values, make the mean +-inf (NaN for
    both signs) and M2 NaN; min and max include them.
    """
    cnt = nf + ninf
    if policy != POLICY_OMIT:
        cnt += nnan
        if nnan > 0:
            return cnt, math.nan, math.nan, math.nan, math.nan
    if ninf > 0:
        pos = mx == math.inf
        neg = mn == -math.inf
        if pos and neg:
            mean = math.nan
        elif pos:
            mean = math.inf
        else:
            mean = -math.inf
        return cnt, mean, math.nan, mn, mx
    return cnt, mean, m2, mn, mx


def make_kernels(threads: int) -> SimpleNamespace:
    """Compile-on-first-use kernels for blocks of ``threads`` threads (a power of two)."""
    T = threads

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
                si[0, t], sf[0, t], sf[1, t] = chan_merge(si[0, t], sf[0, t], sf[1, t],
                                                          si[0, u], sf[0, u], sf[1, u])
                sf[2, t] = min(sf[2, t], sf[2, u])
                sf[3, t] = max(sf[3, t], sf[3, u])
                si[1, t] += si[1, u]
                si[2, t] += si[2, u]
            step *= 2
        cuda.syncthreads()

    @cuda.jit(device=True, inline=True)
    def store_thread(t, k, nf, s1, s2, mn, mx, nnan, ninf, si, sf):
        mean, m2 = shifted_to_m2(k, nf, s1, s2)
        si[0, t] = nf
        si[1, t] = nnan
        si[2, t] = ninf
        sf[0, t] = mean
        sf[1, t] = m2
        sf[2, t] = mn
        sf[3, t] = mx

    @cuda.jit(device=True, inline=True)
    def write_part(pi, pf, c, p, t, si, sf):
        for j in range(3):
            pi[j, c, p] = si[j, t]
        for j in range(4):
            pf[j, c, p] = sf[j, t]

    @cuda.jit
    def partial_cf(x, nparts, pi, pf):
        """Block b reduces part ``b % nparts`` of channel ``b // nparts`` of x (O, C, I)."""
        si = cuda.shared.array((3, T), numba.int64)  # per thread: [count, NaNs, infs]
        sf = cuda.shared.array((4, T), numba.float64)  # per thread: [mean, M2, min, max]
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        c = b // nparts
        p = b - c * nparts
        length = x.shape[2]
        total = x.shape[0] * length
        j0 = (total * p) // nparts
        j1 = (total * (p + 1)) // nparts
        k, nf, s1, s2, mn, mx, nnan, ninf = empty_accumulator()
        o = j0 // length
        while o * length < j1:
            lo = max(j0 - o * length, 0)
            hi = min(j1 - o * length, length)
            i = lo + t
            while i + (UNROLL - 1) * T < hi:
                v0 = numba.float64(x[o, c, i])
                v1 = numba.float64(x[o, c, i + T])
                v2 = numba.float64(x[o, c, i + 2 * T])
                v3 = numba.float64(x[o, c, i + 3 * T])
                k, nf, s1, s2, mn, mx, nnan, ninf = accumulate4(v0, v1, v2, v3, k, nf, s1, s2,
                                                                mn, mx, nnan, ninf)
                i += UNROLL * T
            while i < hi:
                v0 = numba.float64(x[o, c, i])
                k, nf, s1, s2, mn, mx, nnan, ninf = accumulate(v0, k, nf, s1, s2, mn, mx,
                                                               nnan, ninf)
                i += T
            o += 1
        store_thread(t, k, nf, s1, s2, mn, mx, nnan, ninf, si, sf)
        block_reduce(t, 1, T, si, sf)
        if t == 0:
            write_part(pi, pf, c, p, 0, si, sf)

    @cuda.jit
    def partial_cl(x, nparts, lanes, pi, pf):
        """Channels-last x (M, C): block b covers channels ``(b // nparts) * lanes`` + [0,
        lanes) over row part ``b % nparts``; thread t reads channel ``t % lanes`` of rows
        ``t // lanes``, ``+ rows``, ... so each thread keeps to one channel and a warp
        reads consecutive addresses."""
        si = cuda.shared.array((3, T), numba.int64)  # per thread: [count, NaNs, infs]
        sf = cuda.shared.array((4, T), numba.float64)  # per thread: [mean, M2, min, max]
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        tile = b // nparts
        p = b - tile * nparts
        nrows = x.shape[0]
        nchan = x.shape[1]
        rows = T // lanes
        lane = t % lanes
        r = t // lanes
        c = tile * lanes + lane
        k, nf, s1, s2, mn, mx, nnan, ninf = empty_accumulator()
        if r < rows and c < nchan:
            m = (nrows * p) // nparts + r
            m1 = (nrows * (p + 1)) // nparts
            while m + (UNROLL - 1) * rows < m1:
                v0 = numba.float64(x[m, c])
                v1 = numba.float64(x[m + rows, c])
                v2 = numba.float64(x[m + 2 * rows, c])
                v3 = numba.float64(x[m + 3 * rows, c])
                k, nf, s1, s2, mn, mx, nnan, ninf = accumulate4(v0, v1, v2, v3, k, nf, s1, s2,
                                                                mn, mx, nnan, ninf)
                m += UNROLL * rows
            while m < m1:
                v0 = numba.float64(x[m, c])
                k, nf, s1, s2, mn, mx, nnan, ninf = accumulate(v0, k, nf, s1, s2, mn, mx,
                                                               nnan, ninf)
                m += rows
        store_thread(t, k, nf, s1, s2, mn, mx, nnan, ninf, si, sf)
        block_reduce(t, lanes, rows, si, sf)
        if r == 0 and c < nchan:
            write_part(pi, pf, c, p, t, si, sf)

    return SimpleNamespace(threads=T, partial_cf=partial_cf, partial_cl=partial_cl)


@cuda.jit(device=True, inline=True)
def merge_parts(c, pi, pf):
    """Merge channel c's parts in order: (nf, mean, M2, min, max, NaN count, inf count).

    ``pi`` is int64 (3, C, parts) [finite count, NaN count, inf count] and ``pf``
    float64 (4, C, parts) [mean, M2, min, max], as the partial kernels write them.
    """
    nf = numba.int64(0)
    mean = numba.float64(0)
    m2 = numba.float64(0)
    mn = numba.float64(math.inf)
    mx = numba.float64(-math.inf)
    nnan = numba.int64(0)
    ninf = numba.int64(0)
    for p in range(pi.shape[2]):
        nf, mean, m2 = chan_merge(nf, mean, m2, pi[0, c, p], pf[0, c, p], pf[1, c, p])
        mn = min(mn, pf[2, c, p])
        mx = max(mx, pf[3, c, p])
        nnan += pi[1, c, p]
        ninf += pi[2, c, p]
    return nf, mean, m2, mn, mx, nnan, ninf


@cuda.jit(device=True, inline=True)
def merge_into_state(si, sf, c, cnt, mean, m2, mn, mx, nnan, ninf):
    """Merge one channel's statistics into the state: int64 (3, C) [count, NaN, inf] and
    float64 (4, C) [mean, M2, min, max]."""
    si[0, c], sf[0, c], sf[1, c] = chan_merge(si[0, c], sf[0, c], sf[1, c], cnt, mean, m2)
    sf[2, c] = nan_min(sf[2, c], mn)
    sf[3, c] = nan_max(sf[3, c], mx)
    si[1, c] += nnan
    si[2, c] += ninf


@cuda.jit
def finalize(policy, pi, pf, bi, bf, merge, si, sf):
    """Batch statistics per channel into (bi, bf); with ``merge``, also into (si, sf)."""
    c = cuda.grid(1)
    if c >= pi.shape[1]:
        return
    nf, mean, m2, mn, mx, nnan, ninf = merge_parts(c, pi, pf)
    cnt, mean, m2, mn, mx = apply_policy(policy, nf, mean, m2, mn, mx, nnan, ninf)
    bi[0, c] = cnt
    bi[1, c] = nnan
    bi[2, c] = ninf
    bf[0, c] = mean
    bf[1, c] = m2
    bf[2, c] = mn
    bf[3, c] = mx
    if merge:
        merge_into_state(si, sf, c, cnt, mean, m2, mn, mx, nnan, ninf)


@cuda.jit
def merge_state(si, sf, bi, bf):
    """Merge batch statistics (bi, bf) into the state (si, sf), one thread per channel."""
    c = cuda.grid(1)
    if c >= si.shape[1]:
        return
    merge_into_state(si, sf, c, bi[0, c], bf[0, c], bf[1, c], bf[2, c], bf[3, c], bi[1, c],
                     bi[2, c])


@cuda.jit
def finalize_bn(pi, pf, eps, wb, params, update, factor, running):
    """BatchNorm training step: batch mean and biased variance to the affine parameters
    ``params = [mean, weight / sqrt(var + eps), bias]`` (float64 (3, C)), from
    ``wb = [weight, bias]``; with ``update``, ``running = [mean, var]`` moves by
    ``factor`` towards the batch mean and unbiased variance."""
    c = cuda.grid(1)
    if c >= pi.shape[1]:
        return
    nf, mean, m2, mn, mx, nnan, ninf = merge_parts(c, pi, pf)
    cnt, mean, m2, mn, mx = apply_policy(0, nf, mean, m2, mn, mx, nnan, ninf)
    n = numba.float64(cnt)
    params[0, c] = mean
    params[1, c] = wb[0, c] / math.sqrt(m2 / n + eps)
    params[2, c] = wb[1, c]
    if update:
        keep = 1.0 - factor
        running[0, c] = keep * running[0, c] + factor * mean
        running[1, c] = keep * running[1, c] + factor * (m2 / (n - 1.0))


@cuda.jit
def affine_cf(x, params, out, bpr, span):
    """out[o, c, i] = (x - a[c]) * s[c] + b[c] in float64, with ``params = [a, s, b]``
    (float64 (3, C)); block = (row, span chunk)."""
    blk = cuda.blockIdx.x
    row = blk // bpr
    q = blk - row * bpr
    nchan = x.shape[1]
    o = row // nchan
    c = row - o * nchan
    length = x.shape[2]
    ac = params[0, c]
    sc = params[1, c]
    bc = params[2, c]
    step = cuda.blockDim.x
    i = q * span + cuda.threadIdx.x
    hi = min(length, (q + 1) * span)
    while i < hi:
        out[o, c, i] = (numba.float64(x[o, c, i]) - ac) * sc + bc
        i += step


@cuda.jit
def affine_cl(x, params, out, nparts, lanes):
    """Channels-last x (M, C): thread t keeps to channel ``t % lanes`` (see partial_cl)."""
    blk = cuda.blockIdx.x
    t = cuda.threadIdx.x
    tile = blk // nparts
    p = blk - tile * nparts
    nrows = x.shape[0]
    nchan = x.shape[1]
    rows = cuda.blockDim.x // lanes
    lane = t % lanes
    r = t // lanes
    c = tile * lanes + lane
    if r >= rows or c >= nchan:
        return
    ac = params[0, c]
    sc = params[1, c]
    bc = params[2, c]
    m = (nrows * p) // nparts + r
    m1 = (nrows * (p + 1)) // nparts
    while m < m1:
        out[m, c] = (numba.float64(x[m, c]) - ac) * sc + bc
        m += rows
