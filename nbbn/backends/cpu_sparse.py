"""Statistics of scipy sparse matrices (CSR and CSC) per column, and their column scaling.

A sparse matrix is its stored entries plus implicit zeros. Each column's statistics
are those of its stored entries, reduced as nbbn reduces weighted data (two passes,
around a shift, the column's first finite entry, then around the first pass's mean, so
no sum of raw values is formed; see ``cpu_weighted``; unweighted CSR partitions and
column blocks in one pass around the shift, with compensated sums, reading again only
the columns whose sums cancel or that met an infinity), merged with Chan's formula
with a part of ``z`` zeros (mean 0, M2 0), where ``z`` is the number of rows (the
weight of the rows) that store nothing in the column. The zero weight of weighted
data is the total weight minus the weight of the rows that store an entry, both summed
as double-doubles, so no rounding is left in it. A stored NaN is a NaN (skipped under
"omit"), not a zero; duplicate entries are summed first (scipy's ``sum_duplicates``),
as the matrix means.

CSC matrices are reduced column by column. A CSR matrix is reduced one of three ways,
chosen by its shape (``_csr_route``): through scipy's ``tocsc()``; in partitions of its
entries (of its rows, when weighted), each holding a record per column (two cache
lines, see ``RECORD``; the partition count is bounded so that these stay under
``WORKSPACE_BYTES``), merged in partition order; or, when it has many columns, in
blocks of ``BLOCK_COLUMNS`` columns whose records stay in the cache, each block read
row by row. Partitions and blocks are fixed by the shape, so the result does not depend
on the thread count.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numba
import numpy as np

from .._layout import native_order
from .._merge import store_record
from .._policy import POLICY_OMIT
from ._jit import cached, tagged
from ._stats import BatchStats
from .cpu import MAX_PARTS, _readonly, _run, threads
from .cpu_numerics import chan_merge, merge_max, merge_min, two_sum
from .cpu_simd import prefetch_line
from .cpu_weighted import (
    BLOCK,
    grid_centre,
    kahan_add,
    shifted_moments,
    with_scaled_weights,
)

__all__ = ["as_compressed", "reduce", "scale_columns"]

WORKSPACE_BYTES = 32 << 20  # per-partition column statistics of a CSR reduction
MIN_PART_ENTRIES = 1 << 17  # a partition holds at least this many stored entries
PART_ENTRIES_PER_COLUMN = 32  # and, in a CSR matrix, this many per column: a record
# costs as much to set up and finish as dozens of entries cost to add
BLOCK_COLUMNS = 4096  # a CSR reduction's column block: its records (512 KiB) stay in L2
ENTRIES_AHEAD = 32  # a partition's pass prefetches the record of the entry this many on
# (the AHEAD builds of _csr_parts, for records of more than L2_BYTES: below, the prefetches
# cost 12-23%; above, 1.04-1.08x at 1-1.2 MiB and 3.8-4.1x at 12 MiB on the AMD host;
# 16 entries on gave 1.23-1.31x less at 12 MiB, 64 no more than 32)
ROWS_AHEAD = 16  # a block pass prefetches the entries of the row this many rows on
BLOCK_ROW_ENTRIES = 4  # and its rows hold this many of its entries on average
CSC_ENTRIES_PER_COLUMN = 4  # below: a CSR matrix goes through tocsc() (_csr_route)
SHORT_ROWS_CSC_BELOW = {False: 16, True: 32}  # by weighted: entries per column below
# which a CSR matrix of many columns in short rows goes through tocsc() (_csr_route)
COLUMN_ENTRIES = 8  # a column's own work (its shift, merge with the zeros, store) costs
# about as much as this many stored entries (for the partitions and the thread pool)
ENTRY_WORK = 8  # a stored entry's two passes cost as much as this many dense elements
# (for the thread pool's threshold, cpu.THREADED_MIN_ELEMENTS)


def _l2_bytes(default: int = 1 << 20) -> int:
    """Bytes of L2 cache per core of this host (Linux's sysfs; ``default`` elsewhere)."""
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
        except (OSError, ValueError):
            break
    return default


L2_BYTES = _l2_bytes()


@cached(nogil=True)
def _column_sums(w):  # pragma: no cover - compiled
    """``(hi, lo, npos)``: the sum of ``w`` as a double-double and its count of > 0."""
    hi = 0.0
    lo = 0.0
    npos = 0
    for i in range(w.shape[0]):
        if w[i] > 0.0:
            npos += 1
            hi, e = two_sum(hi, w[i])
            lo += e
    return hi, lo, npos


# Constants of each build (tagged): a build compiles only its own branch. WEIGHTED: the
# weighted builds of _csc_columns, _csr_parts and _csr_blocks (each of the latter two
# holds both passes; built for a run-time flag, the first unweighted call on column
# blocks compiled for 9.4 s, now 5.4 s). AHEAD: the _csr_parts builds that prefetch
WEIGHTED = False
AHEAD = False


@numba.njit(fastmath=False, inline="always")
def _kahan_entry(total, comp, x):  # pragma: no cover - compiled
    """``kahan_add`` without its guard for an overflowed sum (which cost the record
    passes 16-22%, once per entry): a sum of squares that overflows becomes NaN here
    (``inf - inf`` in the compensation), and ``_close`` reads that NaN as inf (no NaN
    value reaches the second pass)."""
    y = x - comp
    t = total + y
    return t, (t - total) - y


def _csc_columns(indptr, indices, data, w, policy, integral, total_hi, total_lo, npos, t, nt,
                 nparts, si, sf, sw):  # pragma: no cover - compiled
    """Columns of the partitions ``p = t, t + nt, ...`` of ``nparts`` (contiguous column
    blocks) of a CSC matrix, stored entries and zeros, into ``si``, ``sf``, ``sw``; rows
    weighted by ``w`` in the ``WEIGHTED`` build.

    Two passes over each column's entries: the first takes the shift (the first finite
    entry) when it comes, as ``_first_pass`` does, and skips NaNs, whose statistics
    under "propagate" are set at the end. Written for columns of a few entries (a wide
    batch), whose loop exits a processor cannot predict: one loop per pass, no flag
    tested in them (``WEIGHTED`` is a constant of each build), the common case tested
    first, and the body here rather than in an inlined helper (measured 1.3x slower).
    The first version (a loop to find the shift, a runtime ``weighted``) took 1.3-1.9x
    as long on columns of 0.5 to 16 entries (``scripts/sparse_csc_kernel.py``;
    docs/benchmarks.md, "The AMD host again")."""
    ncols = indptr.shape[0] - 1
    omit = policy == POLICY_OMIT
    for p in range(t, nparts, nt):
        for c in range(p * ncols // nparts, (p + 1) * ncols // nparts):
            k0 = indptr[c]
            k1 = indptr[c + 1]
            if k0 == k1:  # (most columns of a wide batch): the zeros alone
                n, wsum, hi, lo, m2, mn, mx = _with_zeros(
                    0, 0.0, 0.0, 0.0, 0.0, np.inf, -np.inf, npos, WEIGHTED, total_hi,
                    total_lo, 0.0, 0.0, True)
                _store(si, sf, c, n, hi, lo, m2, mn, mx, 0, 0)
                sw[c] = wsum
                continue
            nfin = 0
            nnan = 0
            ninf = 0
            sh = 0.0  # the stored rows' weight, and the counted values' (double-doubles)
            sl = 0.0
            wh = 0.0
            wl = 0.0
            shift = 0.0
            s1 = 0.0
            ws = 0.0  # (WEIGHTED: the weight summed into s1, and the shift's)
            wbest = 0.0
            mn = np.inf
            mx = -np.inf
            for k in range(k0, k1):
                wr = w[indices[k]] if WEIGHTED else 1.0
                if wr == 0.0:
                    continue
                if WEIGHTED:
                    sh, e = two_sum(sh, wr)
                    sl += e
                v = numba.float64(data[k])
                if math.isfinite(v):
                    if nfin == 0:
                        shift = v  # (an infinity before it is infinite after any shift)
                        wbest = wr
                    elif WEIGHTED and wr > wbest and math.isfinite(s1):
                        # the shift moves to the entry of the largest weight, as the
                        # dense kernels' (cpu_weighted._first_finite): s1 rebased
                        s1 += ws * (shift - v)
                        shift = v
                        wbest = wr
                    nfin += 1
                elif math.isnan(v):
                    nnan += 1
                    if WEIGHTED and not omit:  # (counted under "propagate")
                        wh, e = two_sum(wh, wr)
                        wl += e
                    continue
                else:
                    ninf += 1
                if WEIGHTED:
                    wh, e = two_sum(wh, wr)
                    wl += e
                    ws += wr
                s1 += wr * (v - shift)
                mn = min(mn, v)  # (v is not NaN: no need for merge_min's test)
                mx = max(mx, v)
            stored = nfin + ninf + nnan
            n = nfin + ninf if omit else stored
            wsum = wh + wl if WEIGHTED else numba.float64(n)
            shift, delta = grid_centre(shift, s1 / wsum if wsum > 0.0 else 0.0, integral)
            # the squares in blocks of BLOCK, whose sums are added with Kahan's
            # compensation: rounding independent of the column's length; the
            # deviations with it per entry (one entry far from the mean, 1e6 among
            # values near 3, made a plain block sum round at 1e-10 on every other
            # term: up to 5.4 units of 2^-52 of the mean)
            q = 0.0
            qc = 0.0
            qp = 0.0
            e1 = 0.0
            e1c = 0.0
            inblock = 0
            for k in range(k0, k1):
                wr = w[indices[k]] if WEIGHTED else 1.0
                v = numba.float64(data[k])
                if wr == 0.0 or math.isnan(v):
                    continue
                d = (v - shift) - delta
                qp += wr * d * d
                e1, e1c = _kahan_entry(e1, e1c, wr * d)
                inblock += 1
                if inblock == BLOCK:
                    q, qc = kahan_add(q, qc, qp)
                    qp = 0.0
                    inblock = 0
            q, qc = kahan_add(q, qc, qp)
            hi, lo, m2 = shifted_moments(shift, wsum, delta, q - qc, e1 - e1c)
            if nnan > 0 and not omit:  # "propagate": a NaN makes all NaN
                hi = m2 = mn = mx = math.nan
                lo = 0.0
            n, wsum, hi, lo, m2, mn, mx = _with_zeros(n, wsum, hi, lo, m2, mn, mx,
                                                      npos - stored, WEIGHTED, total_hi,
                                                      total_lo, sh, sl, nnan == 0)
            _store(si, sf, c, n, hi, lo, m2, mn, mx, nnan, ninf)
            sw[c] = wsum


@numba.njit(fastmath=False)
def _with_zeros(n, wsum, hi, lo, m2, mn, mx, zeros, weighted, total_hi, total_lo, sh, sl,
                whole):  # pragma: no cover - compiled
    """A column's stored-entry statistics merged with its ``zeros`` implicit zeros (their
    weight: the total weight minus the stored rows' ``sh + sl``). A column that counted
    every row (``whole``: no NaN) gets the total weight as its weight, bit for bit (the
    merged sum could differ from it in the last bits, column by column, and scikit-learn's
    ``n_samples_seen_`` became a per-feature array). Scalars only: a compiled callee
    that takes arrays costs their reference counts on every call."""
    if zeros > 0:
        if weighted:
            s, e = two_sum(total_hi, -sh)
            wz = s + ((e + total_lo) - sl)
        else:
            wz = numba.float64(zeros)
        wsum, hi, lo, m2 = chan_merge(wsum, hi, lo, m2, wz, 0.0, 0.0, 0.0)
        n += zeros
        mn = merge_min(mn, 0.0)
        mx = merge_max(mx, 0.0)
    if weighted and whole:
        # (the double-double rounded once: the exact total correctly rounded, which the
        # dense path's float sum equals for integer weights, not always for others:
        # 1, 2**-53, 2**-53 give 1 + 2**-52 here, 1.0 there and in scikit-learn)
        wsum = total_hi + total_lo
    return n, wsum, hi, lo, m2, mn, mx


# column c of the statistics layout (BatchStats), inlined: the per-column loops call it
# once per column, and a compiled callee that takes arrays costs their reference counts
_store = numba.njit(fastmath=False, inline="always")(store_record)

# the CSC kernel's two builds (after the helpers it calls: the weighted build's globals
# are a copy of the module's, taken here)
_csc_unweighted = tagged(_csc_columns, "", cache=True, nogil=True)
_csc_weighted = tagged(_csc_columns, "weighted", {"WEIGHTED": True}, cache=True, nogil=True)


# A column's record in a CSR partition: two 64-byte cache lines of float64 (counts are
# exact below 2**53), one per pass, so that an entry touches one line in each.
# Line A, the first pass: FIN finite entries, SHIFT1 the first of them, S1 the sum of
# w (x - shift) (then WSUM, the counted values' weight), NANS, INFS, SW the stored
# rows' weight (a double-double, for the zeros' weight), NAN_W the NaNs' weight.
# Line B, the second pass: SHIFT, DELTA (the first pass's mean as a double-double,
# ``cpu_weighted.grid_centre``), Q and E, the sums of w d^2 and w d of the deviations d
# from that mean (QC, EC: Kahan's compensations),
# MIN, MAX. After the partition, SHIFT, DELTA and Q hold the mean hi, lo and M2.
# The unweighted one pass (``_single_entry``) touches line B alone for a finite entry:
# it sums around SHIFT, the first finite entry, and counts in SINGLE_FIN (DELTA's slot,
# moved to FIN by ``_single_flags``); NaNs and infinities are counted in line A. (With
# the count in line A, each entry read two lines: the partitions of 100,000 and
# 1,000,000 columns took 1.2-1.5x as long; docs/benchmarks.md, "Fifteenth session".)
FIN, SHIFT1, S1, NANS, INFS, SW_HI, SW_LO, NAN_W = range(8)
WSUM = S1
SHIFT, DELTA, Q, QC, E, EC, MIN, MAX = range(8, 16)
SINGLE_FIN = DELTA
RECORD = 16
_LINE = 8  # float64 per cache line


@numba.njit(fastmath=False, inline="always")
def _first_pass(recs, p, c, v, wr, weighted):  # pragma: no cover - compiled
    """Entry ``v`` of weight ``wr`` into line A of column ``c``'s record in partition
    ``p``: counts, weights and ``sum w (x - shift)``, the shift being the column's
    first finite entry, taken when it comes (an infinity before it is infinite after
    any shift). ``weighted`` is a constant at each call: a flag that varies at run time
    (the NaN policy, once) made the loop five times slower, so the policy is applied
    after it."""
    if weighted:
        sh, e = two_sum(recs[p, c, SW_HI], wr)
        recs[p, c, SW_HI] = sh
        recs[p, c, SW_LO] += e
    if math.isfinite(v):
        fin = recs[p, c, FIN]
        if fin == 0.0:
            recs[p, c, SHIFT1] = v
        elif weighted:
            # the shift moves to an entry that outweighs all before it together (S1
            # rebased; line A holds no room for the largest weight): a first entry of
            # tiny weight far from the mean (1e92 weighted 1e-136 beside -5.6e32
            # weighted 8e59) made M2 cancel to 0 (cpu_weighted._first_finite)
            before = (recs[p, c, SW_HI] - wr) + recs[p, c, SW_LO] - recs[p, c, NAN_W]
            if wr > before and math.isfinite(recs[p, c, S1]):
                recs[p, c, S1] += before * (recs[p, c, SHIFT1] - v)
                recs[p, c, SHIFT1] = v
        recs[p, c, FIN] = fin + 1.0
    elif math.isnan(v):
        recs[p, c, NANS] += 1.0
        recs[p, c, NAN_W] += wr  # counted under "propagate" (see _csr_parts)
        return
    else:
        recs[p, c, INFS] += 1.0
    recs[p, c, S1] += wr * (v - recs[p, c, SHIFT1])


@numba.njit(fastmath=False, inline="always")
def _second_pass(recs, p, c, v, wr):  # pragma: no cover - compiled
    """Entry ``v`` (not NaN) into line B: the deviations from the first pass's mean
    (compensated sums: a partition may hold a long column), min and max."""
    d = (v - recs[p, c, SHIFT]) - recs[p, c, DELTA]
    recs[p, c, Q], recs[p, c, QC] = _kahan_entry(recs[p, c, Q], recs[p, c, QC], wr * d * d)
    recs[p, c, E], recs[p, c, EC] = _kahan_entry(recs[p, c, E], recs[p, c, EC], wr * d)
    recs[p, c, MIN] = min(recs[p, c, MIN], v)
    recs[p, c, MAX] = max(recs[p, c, MAX], v)


@numba.njit(fastmath=False, inline="always")
def _open_first(recs, p, c):  # pragma: no cover - compiled
    """Line A of column ``c``'s record in partition ``p``, empty."""
    for f in range(_LINE):
        recs[p, c, f] = 0.0


@numba.njit(fastmath=False, inline="always")
def _open_second(recs, p, c, weighted, integral):  # pragma: no cover - compiled
    """Between the passes: the counted weight and the first pass's mean (``SHIFT`` +
    ``DELTA``; ``cpu_weighted.grid_centre``) into the record, line B emptied."""
    if weighted:  # the stored rows' weight less the NaNs'
        sh, e = two_sum(recs[p, c, SW_HI], -recs[p, c, NAN_W])
        wsum = sh + (e + recs[p, c, SW_LO])
    else:
        wsum = recs[p, c, FIN] + recs[p, c, INFS]
    recs[p, c, SHIFT], recs[p, c, DELTA] = grid_centre(
        recs[p, c, SHIFT1], recs[p, c, S1] / wsum if wsum > 0.0 else 0.0, integral)
    recs[p, c, WSUM] = wsum
    for f in range(Q, MIN):
        recs[p, c, f] = 0.0
    recs[p, c, MIN] = np.inf
    recs[p, c, MAX] = -np.inf


@numba.njit(fastmath=False, inline="always")
def _empty(recs, p, c):  # pragma: no cover - compiled
    """Whether the first pass met no entry of column ``c`` (each entry counts once, as
    finite, infinite or NaN): the column's statistics are its zeros'."""
    return recs[p, c, FIN] + recs[p, c, INFS] + recs[p, c, NANS] == 0.0


@numba.njit(fastmath=False, inline="always")
def _close(recs, p, c, omit, weighted):  # pragma: no cover - compiled
    """After the second pass: the mean (hi, lo) and M2 into SHIFT, DELTA and Q (a NaN
    sum of squares is an overflowed one: ``_kahan_entry``)."""
    q = recs[p, c, Q] - recs[p, c, QC]
    hi, lo, m2 = shifted_moments(recs[p, c, SHIFT], recs[p, c, WSUM], recs[p, c, DELTA],
                                 math.inf if math.isnan(q) else q,
                                 recs[p, c, E] - recs[p, c, EC])
    if not omit and recs[p, c, NANS] > 0.0:  # "propagate": a NaN makes all NaN
        hi = lo = m2 = math.nan
        recs[p, c, MIN] = recs[p, c, MAX] = math.nan
        recs[p, c, WSUM] += recs[p, c, NAN_W] if weighted else recs[p, c, NANS]
    recs[p, c, SHIFT] = hi
    recs[p, c, DELTA] = lo
    recs[p, c, Q] = m2


SINGLE_RATIO = 128.0  # a one-pass column whose sums cancel past this is read again
# around its mean (M2 * SINGLE_RATIO < Q: its first entry more than about 11 standard
# deviations from the mean). With the compensated Q and E, M2 = Q - E^2 / n is off by
# at most about 3 * 2**-53 * Q / M2 (4e-14 at this ratio); measured far below that
# (2e-16 at Q / M2 = 2e5), so the second pass is a bound rather than a need


@numba.njit(fastmath=False, inline="always")
def _open_single(recs, p, c):  # pragma: no cover - compiled
    """Both lines of column ``c``'s record in partition ``p``, empty, for the one-pass
    reduction (line B's sums around ``SHIFT``, the first finite entry; ``DELTA`` 0)."""
    for f in range(RECORD):
        recs[p, c, f] = 0.0
    recs[p, c, MIN] = np.inf
    recs[p, c, MAX] = -np.inf


@numba.njit(fastmath=False, inline="always")
def _single_entry(recs, p, c, v):  # pragma: no cover - compiled
    """Entry ``v`` into column ``c``'s record in one pass: counts, and for a finite
    value the compensated sums of ``d = x - shift`` and ``d*d`` around the column's
    first finite entry, min and max. Returns whether ``v`` is infinite."""
    if math.isfinite(v):
        fin = recs[p, c, SINGLE_FIN]
        if fin == 0.0:
            recs[p, c, SHIFT] = v
        recs[p, c, SINGLE_FIN] = fin + 1.0
        d = v - recs[p, c, SHIFT]
        recs[p, c, Q], recs[p, c, QC] = _kahan_entry(recs[p, c, Q], recs[p, c, QC], d * d)
        recs[p, c, E], recs[p, c, EC] = _kahan_entry(recs[p, c, E], recs[p, c, EC], d)
        recs[p, c, MIN] = min(recs[p, c, MIN], v)
        recs[p, c, MAX] = max(recs[p, c, MAX], v)
        return False
    if math.isnan(v):
        recs[p, c, NANS] += 1.0
        recs[p, c, NAN_W] += 1.0
        return False
    recs[p, c, INFS] += 1.0
    return True


@numba.njit(fastmath=False, inline="always")
def _single_cancels(recs, p, c):  # pragma: no cover - compiled
    """Whether column ``c``'s one-pass sums cancel (or overflowed): it is read again
    around its mean. Else its record is set as the two passes leave it before
    ``_close`` (the counted weight, ``DELTA`` 0)."""
    n = recs[p, c, FIN]
    recs[p, c, WSUM] = n
    if n == 0.0:
        return False
    q = recs[p, c, Q] - recs[p, c, QC]
    e = recs[p, c, E] - recs[p, c, EC]
    return not (math.isfinite(q) and math.isfinite(e)) or (q - e * (e / n)) * SINGLE_RATIO < q


@numba.njit(fastmath=False, inline="always")
def _single_flags(recs, p, ncols, again, integral):  # pragma: no cover - compiled
    """After one pass, the columns ``c < ncols`` of partition (or block slot) ``p`` to
    read again, in ``again[c]``: 2 for a column that met an infinity (its line A
    emptied: both passes define its statistics, ``_first_pass`` then
    ``_second_pass``), 1 for one whose sums cancel (``_single_cancels``: a first entry
    far from the mean; its record set for a second pass around the mean, as the two
    passes read every column), else 0. Returns how many are read again."""
    redo = 0
    for c in range(ncols):
        recs[p, c, FIN] = recs[p, c, SINGLE_FIN]  # (the layout of the two passes)
        recs[p, c, SINGLE_FIN] = 0.0
        if recs[p, c, INFS] > 0.0:
            again[c] = 2
            _open_first(recs, p, c)
        elif _single_cancels(recs, p, c):
            again[c] = 1
            e = recs[p, c, E] - recs[p, c, EC]
            recs[p, c, SHIFT], recs[p, c, DELTA] = grid_centre(
                recs[p, c, SHIFT], e / recs[p, c, FIN], integral)
            for f in range(Q, MIN):
                recs[p, c, f] = 0.0
        else:
            again[c] = 0
            continue
        redo += 1
    return redo


def _csr_parts(indptr, indices, data, w, policy, integral, t, nt, nparts, recs
               ):  # pragma: no cover - compiled
    """The stored entries of the partitions ``p = t, t + nt, ...`` of ``nparts`` of a
    CSR matrix into the column records ``recs[p]`` (fields above). Unweighted, a
    partition is a range of entries (the rows do not matter); weighted, of rows.

    Four builds, ``_csr_parts_builds[WEIGHTED, AHEAD]``. In the ``AHEAD`` builds (for
    records too large for the cache), each entry prefetches the record line of the
    entry ``ENTRIES_AHEAD`` on: each entry's read-modify-write of its record otherwise
    waits for memory, and ahead of time these waits overlap (3.8-4.1x on the AMD host:
    docs/benchmarks.md). A run-time flag instead cost 10% where it was off, and the
    prefetch in an inlined helper half the gain."""
    nrows = indptr.shape[0] - 1
    nnz = np.int64(indptr[nrows])
    ncols = recs.shape[1]
    omit = policy == POLICY_OMIT
    flat = recs.reshape(-1)
    again = np.zeros(0 if WEIGHTED else ncols, np.uint8)
    for p in range(t, nparts, nt):
        r0 = p * nrows // nparts
        r1 = (p + 1) * nrows // nparts
        k0 = p * nnz // nparts
        k1 = (p + 1) * nnz // nparts
        kend = indptr[r1]
        if not WEIGHTED:
            # one pass (the sums around each column's first finite entry), then the
            # columns whose sums cancel and those that met an infinity again
            # (_single_flags), which are rare: every other column is read once
            for c in range(ncols):
                _open_single(recs, p, c)
            ninf = 0
            for k in range(k0, k1):
                if AHEAD and k + ENTRIES_AHEAD < k1:
                    prefetch_line(flat, (p * ncols + indices[k + ENTRIES_AHEAD]) * RECORD
                                  + _LINE)
                ninf += _single_entry(recs, p, indices[k], numba.float64(data[k]))
            if _single_flags(recs, p, ncols, again, integral):
                if ninf:
                    for k in range(k0, k1):
                        c = indices[k]
                        if again[c] == 2:
                            _first_pass(recs, p, c, numba.float64(data[k]), 1.0, False)
                    for c in range(ncols):
                        if again[c] == 2:
                            _open_second(recs, p, c, False, integral)
                for k in range(k0, k1):
                    c = indices[k]
                    v = numba.float64(data[k])
                    if again[c] and not math.isnan(v):
                        _second_pass(recs, p, c, v, 1.0)
            for c in range(ncols):
                _close(recs, p, c, omit, False)
        else:
            # weighted: two passes over the rows of positive weight
            for c in range(ncols):
                _open_first(recs, p, c)
            for r in range(r0, r1):
                if w[r] > 0.0:
                    for k in range(indptr[r], indptr[r + 1]):
                        if AHEAD and k + ENTRIES_AHEAD < kend:
                            prefetch_line(flat,
                                          (p * ncols + indices[k + ENTRIES_AHEAD]) * RECORD)
                        _first_pass(recs, p, indices[k], numba.float64(data[k]), w[r], True)
            for c in range(ncols):
                _open_second(recs, p, c, True, integral)
            for r in range(r0, r1):
                if w[r] > 0.0:
                    for k in range(indptr[r], indptr[r + 1]):
                        if AHEAD and k + ENTRIES_AHEAD < kend:
                            prefetch_line(flat, (p * ncols + indices[k + ENTRIES_AHEAD])
                                          * RECORD + _LINE)
                        v = numba.float64(data[k])
                        if not math.isnan(v):
                            _second_pass(recs, p, indices[k], v, w[r])
            for c in range(ncols):
                _close(recs, p, c, omit, True)

# its four builds (after the helpers it calls: a build's globals are a copy), by
# (weighted, ahead)
_csr_parts_builds = {
    (weighted, ahead): tagged(_csr_parts, tag, {"WEIGHTED": weighted, "AHEAD": ahead},
                              cache=True, nogil=True)
    for (weighted, ahead), tag in {(False, False): "", (False, True): "ahead",
                                   (True, False): "weighted",
                                   (True, True): "weighted_ahead"}.items()}


@numba.njit(fastmath=False, inline="always")
def _merge_column(recs, p0, p1, c, j, omit, weighted, total_hi, total_lo, npos, si, sf,
                  sw):  # pragma: no cover - compiled
    """Column ``c``'s records of the partitions ``p0 <= p < p1`` merged in partition
    order, with the zeros, into column ``j`` of ``si``, ``sf``, ``sw``."""
    n = 0
    nnan = 0
    ninf = 0
    stored = 0
    wsum = 0.0
    hi = 0.0
    lo = 0.0
    m2 = 0.0
    mn = np.inf
    mx = -np.inf
    sh = 0.0
    sl = 0.0
    for p in range(p0, p1):
        nnan += np.int64(recs[p, c, NANS])
        ninf += np.int64(recs[p, c, INFS])
        fin = np.int64(recs[p, c, FIN])
        stored += fin + np.int64(recs[p, c, INFS] + recs[p, c, NANS])
        n += fin + np.int64(recs[p, c, INFS] + (0.0 if omit else recs[p, c, NANS]))
        if p == p0:
            wsum, hi, lo, m2 = (recs[p, c, WSUM], recs[p, c, SHIFT], recs[p, c, DELTA],
                                recs[p, c, Q])
        else:
            wsum, hi, lo, m2 = chan_merge(wsum, hi, lo, m2, recs[p, c, WSUM],
                                          recs[p, c, SHIFT], recs[p, c, DELTA],
                                          recs[p, c, Q])
        mn = merge_min(mn, recs[p, c, MIN])
        mx = merge_max(mx, recs[p, c, MAX])
        sh, e = two_sum(sh, recs[p, c, SW_HI])
        sl += e + recs[p, c, SW_LO]
    n, wsum, hi, lo, m2, mn, mx = _with_zeros(n, wsum, hi, lo, m2, mn, mx, npos - stored,
                                              weighted, total_hi, total_lo, sh, sl, nnan == 0)
    _store(si, sf, j, n, hi, lo, m2, mn, mx, nnan, ninf)
    sw[j] = wsum


@cached(nogil=True)
def _csr_merge(recs, omit, weighted, total_hi, total_lo, npos, si, sf, sw
               ):  # pragma: no cover - compiled
    """The partitions' column records merged in partition order, with the zeros."""
    for c in range(recs.shape[1]):
        _merge_column(recs, 0, recs.shape[0], c, c, omit, weighted, total_hi, total_lo,
                      npos, si, sf, sw)


@numba.njit(fastmath=False, inline="always")
def _block_pass(indptr, indices, data, w, recs, cursors, t, c0, c1, second
                ):  # pragma: no cover - compiled
    """A weighted pass over the entries of columns ``c0 <= c < c1``, row by row from
    each row's cursor (rows of weight 0 skipped): the first (``_first_pass``; the cursor
    first moved past the entries of the other threads' blocks) or the ``second``
    (``_second_pass``; the cursor then moved past the block). ``second`` is a constant
    at each call (see ``_first_pass``); unweighted blocks take ``_block_single``."""
    nrows = indptr.shape[0] - 1
    for r in range(nrows):
        if r + ROWS_AHEAD < nrows:  # the row ROWS_AHEAD on: its entries' lines
            ka = cursors[t, r + ROWS_AHEAD]
            prefetch_line(indices, ka)
            prefetch_line(data, ka)
        wr = w[r]
        if not wr > 0.0:
            continue
        k = cursors[t, r]
        end = indptr[r + 1]
        if not second:
            while k < end and indices[k] < c0:
                k += 1
            cursors[t, r] = k
        while k < end and indices[k] < c1:
            v = numba.float64(data[k])
            if not second:
                _first_pass(recs, t, indices[k] - c0, v, wr, True)
            elif not math.isnan(v):
                _second_pass(recs, t, indices[k] - c0, v, wr)
            k += 1
        if second:
            cursors[t, r] = k


@numba.njit(fastmath=False, inline="always")
def _block_single(indptr, indices, data, recs, cursors, starts, t, c0, c1
                  ):  # pragma: no cover - compiled
    """The unweighted one pass (``_single_entry``) over the entries of columns
    ``c0 <= c < c1``, row by row, each row's cursor first moved to the block's entries
    (as ``_block_pass``'s first pass), where ``starts`` keeps it, then past them.
    Returns the count of infinities met."""
    nrows = indptr.shape[0] - 1
    ninf = 0
    for r in range(nrows):
        if r + ROWS_AHEAD < nrows:  # the row ROWS_AHEAD on: its entries' lines
            ka = cursors[t, r + ROWS_AHEAD]
            prefetch_line(indices, ka)
            prefetch_line(data, ka)
        k = cursors[t, r]
        end = indptr[r + 1]
        while k < end and indices[k] < c0:
            k += 1
        starts[t, r] = k
        while k < end and indices[k] < c1:
            ninf += _single_entry(recs, t, indices[k] - c0, numba.float64(data[k]))
            k += 1
        cursors[t, r] = k
    return ninf


@numba.njit(fastmath=False, inline="always")
def _block_again(indptr, indices, data, recs, starts, t, c0, c1, again, first
                 ):  # pragma: no cover - compiled
    """After ``_block_single`` and ``_single_flags``, over the block's entries row by
    row from ``starts``: the ``first`` pass of the columns that met an infinity
    (``again == 2``), or the second pass of every column read again."""
    for r in range(indptr.shape[0] - 1):
        k = starts[t, r]
        end = indptr[r + 1]
        while k < end and indices[k] < c1:
            c = indices[k] - c0
            if first:
                if again[c] == 2:
                    _first_pass(recs, t, c, numba.float64(data[k]), 1.0, False)
            elif again[c]:
                v = numba.float64(data[k])
                if not math.isnan(v):
                    _second_pass(recs, t, c, v, 1.0)
            k += 1


@numba.njit(fastmath=False, inline="always")
def _finish_block(recs, t, c0, c1, omit, weighted, total_hi, total_lo, npos, si, sf, sw
                  ):  # pragma: no cover - compiled
    """A column block's records closed and merged with the zeros into ``si``, ``sf``,
    ``sw`` (a column without entries: the zeros alone)."""
    for c in range(c1 - c0):
        if _empty(recs, t, c):  # (many, in a wide batch): the zeros alone
            n, wsum, hi, lo, m2, mn, mx = _with_zeros(
                0, 0.0, 0.0, 0.0, 0.0, np.inf, -np.inf, npos, weighted, total_hi,
                total_lo, 0.0, 0.0, True)
            _store(si, sf, c0 + c, n, hi, lo, m2, mn, mx, 0, 0)
            sw[c0 + c] = wsum
        else:
            _close(recs, t, c, omit, weighted)
            _merge_column(recs, t, t + 1, c, c0 + c, omit, weighted, total_hi,
                          total_lo, npos, si, sf, sw)


def _csr_blocks(indptr, indices, data, w, policy, integral, total_hi, total_lo, npos,
                t, nt, nblocks, recs, cursors, starts, si, sf, sw
                ):  # pragma: no cover - compiled
    """The column blocks ``b = t, t + nt, ...`` of ``nblocks`` of a CSR matrix (blocks
    of ``recs.shape[1]`` columns), each in two passes over its entries row by row
    (unweighted: one, and a second for the columns it marks, as ``_csr_parts``) into
    this thread's records ``recs[t]`` (few enough to stay in the cache), then merged
    with the zeros into ``si``, ``sf``, ``sw``. ``cursors[t, r]``: where row ``r``'s
    entries of the block begin (a row's column indices are sorted); ``starts[t, r]``
    keeps that place while the unweighted one pass moves the cursor past the block,
    for the columns it reads again (none, mostly: a second sweep over the block's
    entries only to move the cursors took 1.1-1.5x as long at 100,000 and 1,000,000
    columns). Every column's entries are added in row order, as in a CSR reduction in
    one partition, whatever the blocks and threads. Two builds,
    ``_csr_blocks_builds[WEIGHTED]``."""
    ncols = si.shape[1]
    bsize = recs.shape[1]
    omit = policy == POLICY_OMIT
    for r in range(indptr.shape[0] - 1):
        cursors[t, r] = indptr[r]
    again = np.zeros(bsize, np.uint8)
    for b in range(t, nblocks, nt):
        c0 = b * bsize
        c1 = min(ncols, c0 + bsize)
        if not WEIGHTED:  # one pass, as a partition's (_csr_parts): the same bits
            for c in range(c1 - c0):
                _open_single(recs, t, c)
            ninf = _block_single(indptr, indices, data, recs, cursors, starts, t, c0, c1)
            if _single_flags(recs, t, c1 - c0, again, integral):
                if ninf:
                    _block_again(indptr, indices, data, recs, starts, t, c0, c1, again,
                                 True)
                    for c in range(c1 - c0):
                        if again[c] == 2:
                            _open_second(recs, t, c, False, integral)
                _block_again(indptr, indices, data, recs, starts, t, c0, c1, again, False)
            _finish_block(recs, t, c0, c1, omit, False, total_hi, total_lo, npos, si,
                          sf, sw)
        else:  # weighted: two passes
            for c in range(c1 - c0):
                _open_first(recs, t, c)
            _block_pass(indptr, indices, data, w, recs, cursors, t, c0, c1, False)
            for c in range(c1 - c0):
                if not _empty(recs, t, c):
                    _open_second(recs, t, c, True, integral)
            _block_pass(indptr, indices, data, w, recs, cursors, t, c0, c1, True)
            _finish_block(recs, t, c0, c1, omit, True, total_hi, total_lo, npos, si, sf,
                          sw)


# its two builds, by weighted
_csr_blocks_builds = {
    weighted: tagged(_csr_blocks, tag, {"WEIGHTED": weighted}, cache=True, nogil=True)
    for weighted, tag in ((False, ""), (True, "weighted"))}


_workspace = threading.local()  # .flat: this thread's records, kept when small enough


def _records(nparts: int, ncols: int) -> np.ndarray:
    """Uninitialized (nparts, ncols, RECORD) records, each starting a cache line: the
    calling thread's buffer of the last call when it is large enough (a new one would
    cost its page faults, more than the work of a small batch), kept up to
    ``WORKSPACE_BYTES``."""
    need = nparts * ncols * RECORD + _LINE
    flat = getattr(_workspace, "flat", None)
    if flat is None or flat.size < need:
        flat = np.empty(need)
        if flat.nbytes <= WORKSPACE_BYTES + 8 * _LINE:
            _workspace.flat = flat
    skip = (-flat.ctypes.data // 8) % _LINE
    return flat[skip:skip + nparts * ncols * RECORD].reshape(nparts, ncols, RECORD)


@cached(nogil=True)
def _scale_csr(indptr, indices, data, factor, t, nt, nparts):  # pragma: no cover
    """``data[k] *= factor[indices[k]]`` (float64 products) for the row partitions
    ``p = t, t + nt, ...`` of ``nparts``."""
    nrows = indptr.shape[0] - 1
    for p in range(t, nparts, nt):
        for k in range(indptr[p * nrows // nparts], indptr[(p + 1) * nrows // nparts]):
            data[k] = numba.float64(data[k]) * factor[indices[k]]


def as_compressed(x, what: str = "batch"):
    """``x`` (a 2-d scipy sparse matrix or array) as CSR or CSC (other formats become
    CSR) without duplicate entries (summed, on a copy), or an error saying what was
    expected."""
    if getattr(x, "ndim", 2) != 2:
        raise ValueError(f"{what} is a {x.ndim}-d sparse array; expected a 2-d sparse "
                         "matrix or array (rows, columns)")
    if x.format not in ("csr", "csc"):
        x = x.tocsr()
    kind = x.dtype.kind
    if kind not in "fiu" or (kind == "f" and x.dtype.itemsize > 8):
        raise TypeError(f"{what} is a sparse matrix of dtype {x.dtype}; expected real "
                        "floating (float16/32/64) or integer values, as for dense input")
    check_structure(x, what, indices=False)  # (offsets before scipy's own scans read them)
    if not x.has_canonical_format:
        x = x.copy()
        x.sum_duplicates()
    check_structure(x, what, offsets=False)  # (checked above; sum_duplicates keeps them)
    return x


@cached(nogil=True)
def _falls(indptr):  # pragma: no cover - compiled
    """Whether an offset of ``indptr`` is below the one before it."""
    for r in range(indptr.shape[0] - 1):
        if indptr[r + 1] < indptr[r]:
            return True
    return False


@cached(nogil=True)
def _index_range(indices, nnz):  # pragma: no cover - compiled
    """The least and greatest of ``indices[:nnz]`` (one vectorized read: faster than
    the first and last entries of each sorted row, a branch and two loads a row)."""
    lo, hi = np.int64(indices[0]), np.int64(indices[0])
    for k in range(nnz):
        lo = min(lo, np.int64(indices[k]))
        hi = max(hi, np.int64(indices[k]))
    return lo, hi


def check_structure(x, what: str = "batch", offsets: bool = True,
                    indices: bool = True) -> None:
    """ValueError unless the CSR or CSC matrix ``x`` is well formed as far as the
    kernels read it: ``indptr`` of (major + 1) non-decreasing offsets from 0 within
    ``indices`` and ``data`` (one length), and with ``indices`` each within the minor
    size. scipy checks no index at construction, and a kernel that trusted a wrong one
    would read or write outside its arrays. The check reads ``indptr`` and ``indices``
    once (1-2 ms for 10,000,000 entries: 3-5% of the statistics' time); ``offsets`` or
    ``indices`` False leaves out that part, checked elsewhere."""
    major, minor = x.shape if x.format == "csr" else x.shape[::-1]
    ptr, ind, data = native_order(x.indptr), native_order(x.indices), x.data
    minor_name = "column" if x.format == "csr" else "row"
    if ptr.ndim != 1 or ind.ndim != 1 or data.ndim != 1 or ptr.shape[0] != major + 1 \
            or ind.shape != data.shape:
        raise ValueError(
            f"{what} is a malformed {x.format.upper()} matrix: expected indptr of "
            f"{major + 1} offsets and indices and data of one length, got indptr of shape "
            f"{ptr.shape}, indices {ind.shape}, data {data.shape} "
            "(scipy's check_format(full_check=True) says more)")
    falls = offsets and ptr[0] == 0 and ptr[-1] <= ind.shape[0] and _falls(ptr)
    if offsets and (ptr[0] != 0 or ptr[-1] > ind.shape[0] or falls):
        raise ValueError(
            f"{what} is a malformed {x.format.upper()} matrix: expected indptr to rise "
            f"from 0 to at most {ind.shape[0]} (the stored entries), got "
            f"{ptr[0]}..{ptr[-1]}{' with a fall' if falls else ''} "
            "(scipy's check_format(full_check=True) says more)")
    if not indices or not ptr[-1]:
        return
    lo, hi = _index_range(ind, int(ptr[-1]))
    if lo < 0 or hi >= minor:
        raise ValueError(
            f"{what} is a malformed {x.format.upper()} matrix: its {minor_name} indices run "
            f"from {lo} to {hi}, expected 0 to {minor - 1} (its shape is {x.shape}; "
            "scipy's check_format(full_check=True) says more)")


def _entries(x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``indptr``, ``indices`` (as one integer type, in native byte order) and ``data``
    (float32 or float64), read-only: the types the kernels are compiled for."""
    data = x.data
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(np.float64)  # exact for integers below 2**53 and float16
    itype = np.result_type(x.indptr.dtype, x.indices.dtype).newbyteorder("=")
    return (_readonly(x.indptr.astype(itype, copy=False)),
            _readonly(x.indices.astype(itype, copy=False)), _readonly(data))


def _parts(units: int, entries: int, cap: int = MAX_PARTS) -> int:
    """Partitions for ``entries`` stored values in ``units`` (rows, columns): a power of
    two, so that they share out evenly over 2, 4, 8, ... threads (three partitions on
    two threads leave one thread a third of the time idle)."""
    n = int(max(1, min(cap, units, entries // MIN_PART_ENTRIES)))
    return 1 << (n.bit_length() - 1)


def _csr_route(nrows: int, ncols: int, nnz: int, weighted: bool = False) -> str:
    """How a CSR matrix is reduced (measured in docs/benchmarks.md, "Sparse matrices",
    and ``scripts/sparse_routes.py``):

    - ``"csc"``: through scipy's ``tocsc()``, when it holds few entries per column
      (records per column would cost more than its entries), or many columns (their
      records do not stay in the cache) in rows too short for column blocks;
    - ``"blocks"``: in column blocks (``_csr_blocks``) whose records stay in the cache,
      when its rows hold a few entries of each block;
    - ``"parts"``: in partitions of its entries (``_csr_parts``), each with a record
      per column: few columns, or enough entries per column for two partitions whose
      records fit ``WORKSPACE_BYTES`` (those larger than L2 prefetched: faster than
      blocks from 64 entries per column), or many entries per column in short rows.

    The unweighted one pass reads one line of a record per entry, the weighted passes
    one line each: in short rows, unweighted partitions are faster than ``tocsc()``
    from fewer entries per column (``SHORT_ROWS_CSC_BELOW``).
    """
    nblocks = -(-ncols // BLOCK_COLUMNS)
    if nnz < CSC_ENTRIES_PER_COLUMN * ncols:
        return "csc"
    if nblocks == 1 or (2 * ncols * RECORD * 8 <= WORKSPACE_BYTES
                        and nnz >= 2 * PART_ENTRIES_PER_COLUMN * ncols):
        return "parts"
    if nnz >= BLOCK_ROW_ENTRIES * nrows * nblocks:
        return "blocks"
    return "csc" if nnz < SHORT_ROWS_CSC_BELOW[weighted] * ncols else "parts"


def reduce(x, policy: int, weight: np.ndarray | None = None, route: str | None = None
           ) -> BatchStats:
    """Per-column statistics of a CSR or CSC matrix (:func:`as_compressed`), with
    ``weight`` (float64 (rows,), checked) per row or unweighted; a CSR matrix by
    ``route`` ("csc", "blocks" or "parts", for ``nbbn warmup``), else by its shape.
    The weights are scaled by a power of two for the sums, as dense ones
    (``cpu_weighted.with_scaled_weights``)."""
    if weight is not None:
        return with_scaled_weights(lambda w: _reduce(x, policy, w, route), weight, policy)
    return _reduce(x, policy, None, route)


def _reduce(x, policy: int, weight: np.ndarray | None, route: str | None) -> BatchStats:
    nrows, ncols = x.shape
    nnz = int(x.indptr[-1])
    weighted = weight is not None
    if x.format == "csc":
        route = "csc"
    elif route is None:
        route = _csr_route(nrows, ncols, nnz, weighted)
    if route == "csc" and x.format == "csr":
        x = x.tocsc()
    integral = x.data.dtype.kind in "biu"  # (centred on integers: cpu_weighted.grid_centre)
    indptr, indices, data = _entries(x)
    w = np.ones(0) if weight is None else _readonly(weight)
    if weighted:
        total_hi, total_lo, npos = _column_sums(w)
    else:
        total_hi, total_lo, npos = float(nrows), 0.0, nrows
    out = BatchStats.uninitialized(ncols)
    sw = np.empty(ncols)
    work = nnz + COLUMN_ENTRIES * ncols  # in stored entries
    if route == "csc":
        nparts = _parts(ncols, work)
        _run(_csc_weighted if weighted else _csc_unweighted,
             (indptr, indices, data, w, policy, integral, total_hi, total_lo, npos),
             (nparts, out.ints, out.floats, sw), work * ENTRY_WORK, nparts)
    elif route == "blocks":
        nblocks = -(-ncols // BLOCK_COLUMNS)
        slots = min(threads(), nblocks)
        recs = _records(slots, BLOCK_COLUMNS)
        cursors = np.empty((slots, nrows), np.int64)
        starts = np.empty((0, 0) if weighted else (slots, nrows), np.int64)
        _run(_csr_blocks_builds[weighted], (indptr, indices, data, w, policy, integral,
                                            total_hi, total_lo, npos),
             (nblocks, recs, cursors, starts, out.ints, out.floats, sw),
             work * ENTRY_WORK, slots)  # (at most ``slots`` threads: a slot each)
    else:
        # enough entries per partition for its records, and all of them together no
        # larger than WORKSPACE_BYTES
        per_part = max(1, ncols * 8 * RECORD)
        cap = min(MAX_PARTS, WORKSPACE_BYTES // per_part,
                  nnz // (PART_ENTRIES_PER_COLUMN * ncols))
        nparts = _parts(nrows if weighted else nnz, nnz, max(1, cap))
        recs = _records(nparts, ncols)
        ahead = ncols * RECORD * 8 > L2_BYTES
        _run(_csr_parts_builds[weighted, ahead], (indptr, indices, data, w, policy, integral),
             (nparts, recs),
             nnz * ENTRY_WORK, nparts)
        _csr_merge(recs, policy == POLICY_OMIT, weighted, total_hi, total_lo, npos,
                   out.ints, out.floats, sw)
    if weighted:
        out.weight = sw
    _redo_overflowed(x, policy, out, weight)
    return out


def _redo_overflowed(x, policy: int, out: BatchStats, weight: np.ndarray | None) -> None:
    """Columns of finite values whose mean or M2 came out NaN or infinite (sums beyond
    float64's range, near 1e308) again through the dense kernels, which redo such a
    block with a scaled sum: a finite mean and an infinite variance, as for dense input.
    ``weight``: the rows' weights (``out`` is weighted), or None. A column's weight is
    kept as the kernel gave it (no value enters it): the batch's total, rounded once,
    where no NaN was left out (the merge of the redone parts rounded it again, and
    scikit-learn's ``n_samples_seen_`` became a per-feature array)."""
    mean, m2 = out.floats[0], out.floats[2]
    finite_data = (out.ints[2] == 0) & ((out.ints[1] == 0) | (policy == POLICY_OMIT))
    bad = np.flatnonzero(finite_data & ~(np.isfinite(mean) & (m2 == m2)))
    if not bad.size:
        return
    from . import cpu

    xc = x if x.format == "csc" else x.tocsc()
    indptr, rows, data = _entries(xc)
    for j in bad.tolist():
        vals = np.ascontiguousarray(data[indptr[j]:indptr[j + 1]])[:, np.newaxis]
        can = cpu.prepare(vals, -1, "batch")
        z = BatchStats.empty(1)  # the implicit zeros: count, min and max set, the rest 0
        if weight is None:
            part = cpu.reduce(can, policy)
            z.ints[0, 0] = x.shape[0] - vals.shape[0]
        else:
            stored = np.zeros(x.shape[0], np.bool_)
            stored[rows[indptr[j]:indptr[j + 1]]] = True
            part = cpu.reduce_weighted(can, policy, weight[stored])
            zw = weight[~stored]
            z.ints[0, 0] = np.count_nonzero(zw)  # (a row of weight 0 is absent)
            z.weight = np.array([zw.sum()])
        if z.ints[0, 0]:
            z.floats[3:, 0] = 0.0
            part = cpu.merge(z, part)
        out.ints[:, j], out.floats[:, j] = part.ints[:, 0], part.floats[:, 0]


def scale_columns(x, factor: np.ndarray) -> None:
    """``x``'s stored values times ``factor[column]`` in place (a CSR matrix of float32
    or float64; the products are rounded once, from float64)."""
    check_structure(x, "X")
    indptr, indices, _ = _entries(x)
    nnz = int(indptr[-1])
    nparts = _parts(x.shape[0], nnz)
    _run(_scale_csr, (indptr, indices, x.data, np.ascontiguousarray(factor, np.float64)),
         (nparts,), nnz, nparts)
