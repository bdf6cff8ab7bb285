"""Inputs built to drive the kernels' less common numerical paths.

The statistics kernels use shifted sums with a shift taken from the running mean or
the block's first value, and redo a block when the shift was far from the block mean
(see ``nbbn/backends/cpu_stats.py``). Random data rarely gets there; these inputs do,
on both layouts, with blocks and partitions large enough to be split.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import SIMULATOR
from reference import assert_stats, ref_stats, ref_stats_many, stats_rtol

import nbbn
from nbbn.backends import cpu_stats


@pytest.fixture(autouse=True)
def _not_on_simulator(request):
    """These inputs are sized to the CPU kernels' blocks (10^5-10^6 values): too large
    for the CUDA simulator; test_cuda.py drives the CUDA kernels' shift paths."""
    callspec = getattr(request.node, "callspec", None)  # absent: not parametrized
    if callspec is not None and callspec.params.get("backend") == "cuda" and SIMULATOR:
        pytest.skip("CPU block-sized inputs are too large for the CUDA simulator")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_channels_first_rows_with_far_apart_means(backend, rng, dtype):
    # Each (sample, channel) row sits at its own offset of up to 1e5 with std 1, so the
    # running-mean shift of the next block is ~1e5 std away: the redo path runs.
    n, c, length = 6, 3, cpu_stats.ROW_BLOCK + 1000
    offsets = rng.uniform(-1e5, 1e5, size=(n, c, 1))
    x = (offsets + rng.standard_normal((n, c, length))).astype(dtype)
    rs = nbbn.channel_stats(x, 1, backend=backend)
    assert_stats(rs, ref_stats(x, 1), stats_rtol(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("nchan", [3, 64, 300])
def test_channels_last_outlier_first_row(backend, rng, dtype, nchan):
    # The first row of every block is an outlier, so the block's first-row shift is
    # thousands of std from its mean; later blocks drift away from the running mean.
    rows_per_block = cpu_stats.CL_BLOCK // nchan + 1
    m = 3 * rows_per_block + 17
    x = rng.standard_normal((m, nchan)) * 3.0 + np.linspace(0, 5e4, m)[:, None]
    x[::rows_per_block] += 1e6
    x = x.astype(dtype)
    rs = nbbn.channel_stats(x, -1, backend=backend)
    assert_stats(rs, ref_stats(x, -1), stats_rtol(dtype))


@pytest.mark.parametrize("dtype, nans", [("float64", False), ("int32", False),
                                         ("float32", False), ("float64", True)])
@pytest.mark.parametrize("share", [0.003, 0.3])
def test_channels_last_retry_of_some_channels(backend, rng, dtype, nans, share):
    # A wide block of few rows (no head-rows shift: the first row is the shift) whose
    # first row is far off in some channels (their sums about it cancel about n = 300
    # times: past the float64 and integer limit, not float32's). Where those channels
    # are few (at most 1 in CL_RETRY_CHANNELS) only they are read again, strided, else
    # the whole block. A second batch, its first row far off in other channels, is
    # merged into the first one's statistics. With NaNs in the first rows (at least
    # FIRST_ROW_NAN_ROWS rows) the blocks go straight to the NaN-omitting pass, which
    # retries alike.
    nchan, m = 5000, 300
    assert m < cpu_stats.HEAD_MIN_ROWS and m > cpu_stats.RATIO_LIMIT_HIGH
    assert m >= cpu_stats.FIRST_ROW_NAN_ROWS
    assert (share * cpu_stats.CL_RETRY_CHANNELS < 1) == (share < 0.1)
    x = rng.standard_normal((2 * m, nchan)) * 4.0 + 100.0
    for row in (0, m):
        cols = rng.choice(nchan, int(share * nchan), replace=False)
        x[row, cols] += 1e4 * np.sign(rng.standard_normal(cols.size))
        if nans:  # (in the far-off channels too)
            x[row + rng.integers(1, m, cols.size), cols] = np.nan
            x[row + rng.integers(0, m, 40), rng.integers(0, nchan, 40)] = np.nan
            x[row, rng.integers(0, nchan, 3)] = np.nan
    x = np.round(x).astype(dtype) if dtype == "int32" else x.astype(dtype)
    policy = "omit" if nans else "propagate"
    rs = nbbn.channel_stats(x[:m], -1, backend=backend, nan_policy=policy)
    assert_stats(rs, ref_stats(x[:m], -1, nan_policy=policy), stats_rtol(dtype))
    rs.update(x[m:])
    assert_stats(rs, ref_stats(x, -1, nan_policy=policy), stats_rtol(dtype))


@pytest.mark.parametrize("dtype, shape", [("float64", (3, 1 << 17)), ("float64", (2, 200001)),
                                          ("float32", (4, 1 << 17)), ("float16", (3, 1 << 17)),
                                          ("int32", (3, 1 << 17)), ("float64", (3000, 50))])
def test_channels_last_scratch_keeps_nothing(rng, monkeypatch, dtype, shape):
    # The channels-last kernel's arrays for tables of SCRATCH_MIN_CHANNELS channels or
    # more come from its thread's scratch (cpu.scratch), kept between calls: a scratch
    # full of garbage, or one too short (the kernel takes new memory), gives the bits
    # of a new one. NaNs (left out and propagated) take the omitting pass's arrays too.
    # Narrower tables take no scratch. (Tables of few rows take cpu_few_rows, turned
    # off here: the kernel's scratch is the same for tables of more rows.)
    from nbbn.backends import cpu, cpu_few_rows

    monkeypatch.setattr(cpu_few_rows, "FEW_ROWS_MAX", 0)
    x = rng.standard_normal(shape) * 3.0 + 40.0
    if dtype != "int32":
        x[rng.random(shape) < 0.002] = np.nan
    x = np.round(x).astype(dtype) if dtype == "int32" else x.astype(dtype)
    assert cpu._make_plan(x[:, :, None], 0, False)[0] == "stats_channels_last"
    wide = shape[1] >= cpu_stats.SCRATCH_MIN_CHANNELS
    asked = []

    def stats(policy, scratch):
        monkeypatch.setattr(cpu, "scratch", lambda n: asked.append(n) or scratch(n))
        snap = nbbn.RunningStats(-1, nan_policy=policy, backend="cpu").update(x)._snapshot()
        return snap.ints, snap.floats

    scratches = [lambda n: np.empty(n, np.uint8), lambda n: np.full(n, 255, np.uint8),
                 lambda n: np.empty(0, np.uint8)]
    for policy in ("omit", "propagate"):
        first, *others = [stats(policy, scratch) for scratch in scratches]
        for ints, floats in others:
            np.testing.assert_array_equal(ints, first[0])
            np.testing.assert_array_equal(floats, first[1])
    assert bool(asked) == wide and all(n > 0 for n in asked)
    rows = x.astype(np.float64)
    with warnings.catch_warnings():  # (channels of NaNs only: their mean is NaN)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = np.nanmean(rows, axis=0), np.nanvar(rows, axis=0)
    got = nbbn.RunningStats(-1, nan_policy="omit", backend="cpu").update(x)
    np.testing.assert_allclose(got.mean, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.var, var, rtol=1e-10)


def test_channels_last_scratch_bound():
    # cpu.scratch's size for the channels-last kernel (cl_scratch_bytes) holds what the
    # kernel takes (else it takes new memory each call), every geometry it can have
    for nchan in (1, 2, 3, 7, 13, 30, 64, 100, 1000, 2047, 2048, 2049, 8192, 8193, 70000):
        simds = {0, cpu_stats.cl_simd(np.dtype("float32"), nchan),
                 cpu_stats.cl_simd(np.dtype("float16"), nchan)}
        for simd in simds:
            for nrows in (0, 1, 2, 5, 100, 5000, 1 << 20):
                _, _, _, slots, _, nko, ncn = cpu_stats.cl_layout(nchan, simd, nrows)
                need = cpu_stats._cl_scratch_need.py_func(slots, nchan, nko, ncn, 8)
                assert need <= cpu_stats.cl_scratch_bytes(nchan), (nchan, simd, nrows)


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float64", "int64", "uint16"])
@pytest.mark.parametrize("nchan", [1, 3, 700])
def test_channels_last_batches_of_few_rows(rng, dtype, nchan, nan_policy):
    # Batches of fewer rows than a channels-last tile holds take a tile of just their
    # rows (cpu_stats._stats_channels_last); the rows are far from the running mean,
    # so the retry runs too, and float64 batches carry NaN and inf.
    rows = [1, 2, 5, 1, 7, 3, 1]
    batches = []
    for i, n in enumerate(rows):
        x = rng.standard_normal((n, nchan)) * 3.0 + 1e6 * (i % 3)
        if dtype == "float64":
            x[0, 0] = [np.nan, np.inf, 2.0][i % 3]
        batches.append(x.astype(dtype) if dtype == "float64" else
                       np.abs(x).astype(dtype))
    rs = nbbn.RunningStats(channel_axis=-1, nan_policy=nan_policy, backend="cpu")
    for x in batches:
        rs.update(x)
    assert_stats(rs, ref_stats_many(batches, -1, nan_policy), stats_rtol(dtype))


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16"])
def test_small_integers_extremes_exact(backend, dtype):
    # The integer path sums v and v*v exactly; the extremes of the type over a full
    # block must neither overflow the accumulators nor lose the last bit.
    info = np.iinfo(dtype)
    length = cpu_stats.row_block(np.dtype(dtype)) * 2 + 5
    x = np.empty((2, 2, length), dtype)
    x[:, 0] = info.max
    x[:, 1, ::2] = info.min
    x[:, 1, 1::2] = info.max
    rs = nbbn.channel_stats(x, 1, backend=backend)
    assert_stats(rs, ref_stats(x, 1), 1e-12)
    assert rs.var[0] == 0.0


# ------------------------------------------------ channels-first short rows, in groups
def _short_rows(rng, shape, dtype, mean=5.0, std=2.0):
    return (mean + std * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", [(40000, 2, 1), (7000, 5, 3), (200, 8, 49), (66, 2, 1023),
                                   (300, 16, 16), (24, 2, 3136), (10, 2, 8191)])
def test_channels_first_short_rows_grouped(rng, monkeypatch, dtype, shape):
    # groups of ROW_BLOCK // L rows (a part group at the end; one row per group from
    # ROW_BLOCK / 2 on), all channels of a group read row by row; one group per partition
    # at most, or several. A half of at least GROUPED_MIN_ELEMENTS is a grouped call.
    calls = []
    grouped = cpu_stats.stats_channels_first_grouped
    monkeypatch.setattr(cpu_stats, "stats_channels_first_grouped",
                        lambda *a: a[-5] == 0 and calls.append(a[3]) or grouped(*a))
    x = _short_rows(rng, shape, dtype)
    expect = dtype == "float32" or cpu_stats.HAVE_SIMD
    assert cpu_stats.grouped_rows(x.dtype, False, shape) == expect
    rs = nbbn.RunningStats(channel_axis=1, backend="cpu")
    rs.update(x[: shape[0] // 2]).update(x[shape[0] // 2:])  # the running mean as shift
    assert_stats(rs, ref_stats(x, 1), stats_rtol(dtype))
    halves = [x[: shape[0] // 2], x[shape[0] // 2:]]
    assert calls == [cpu_stats.rows_per_group(shape[2]) for h in halves
                     if cpu_stats.grouped_rows(h.dtype, False, h.shape)]
    if expect and shape[2] > 1000:  # both halves of the long-row shapes
        assert len(calls) == 2


@pytest.mark.parametrize("dtype", ["float32"])  # (in the id: CI's -k filter)
@pytest.mark.parametrize("ratio", [1e3, 1e5, 1e7])
def test_channels_first_short_rows_far_from_the_shift(rng, ratio, dtype):
    # groups of rows whose means alternate between 0 and `ratio` std: each group's shift
    # (the partition's running mean) is far from its mean (the retry with the group
    # means); from 1e7 on the float32 values are whole numbers and a group cancels even
    # after the retry (the exact row-by-row redo)
    rpg = cpu_stats.rows_per_group(49)
    x = _short_rows(rng, (4 * rpg, 3, 49), np.float64, mean=0.0, std=1.0)
    x[rpg : 2 * rpg] += ratio
    x[3 * rpg :] += ratio
    x = x.astype(np.float32)
    rs = nbbn.channel_stats(x, 1, backend="cpu")
    assert_stats(rs, ref_stats(x, 1), stats_rtol("float32"))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("length", [7, 49])  # 49: the vector pass at both SIMD levels
def test_channels_first_short_rows_nan_inf_constant(rng, dtype, nan_policy, length):
    x = _short_rows(rng, (21000 // length, 4, length), dtype)
    x[5, 0, 3] = np.nan  # in a row's first vector
    x[-500 // length, 1, length - 1] = np.inf  # in the last value (49: the scalar rest)
    x[:, 2] = 1.5  # a constant channel: var exactly 0
    rs = nbbn.channel_stats(x, 1, backend="cpu", nan_policy=nan_policy)
    assert_stats(rs, ref_stats(x, 1, nan_policy=nan_policy), stats_rtol(dtype))
    assert rs.var[2] == 0.0 and rs.mean[2] == 1.5


@pytest.mark.parametrize("dtype", ["float32", "float16"])  # (ids named for CI's -k filter)
@pytest.mark.parametrize("length", [31, 32, 33, 48, 49, 63, 100, 127, 128])
def test_channels_first_short_rows_vector_pass(rng, monkeypatch, length, dtype):
    # rows of 2 to 7 whole vectors (16 lanes with AVX-512, 8 with AVX2) take the vector
    # pass, with and without a rest after the last vector; longer and shorter rows the
    # plain one. Both give the exact statistics.
    calls = []
    grouped = cpu_stats.stats_channels_first_grouped
    monkeypatch.setattr(cpu_stats, "stats_channels_first_grouped",
                        lambda *a: calls.append(a[4]) or grouped(*a))
    lanes = cpu_stats.ROW_LANES
    x = _short_rows(rng, (-(-65536 // (4 * length)), 4, length), dtype, mean=-3.0)
    if not cpu_stats.grouped_rows(x.dtype, False, x.shape):
        pytest.skip("float16 without F16C (NBBN_SIMD=none) keeps the row blocks")
    rs = nbbn.channel_stats(x, 1, backend="cpu")
    assert_stats(rs, ref_stats(x, 1), stats_rtol(dtype))
    assert calls == [cpu_stats.HAVE_SIMD and 2 <= length // lanes < cpu_stats.ROW_MAX_VECTORS]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_channels_first_short_rows_one_group_sliced(rng, monkeypatch, dtype):
    # fewer rows per channel than a group holds, and enough values for threads: the one
    # group is cut into channel slices (partitions), folded in order afterwards
    parts = []
    grouped = cpu_stats.stats_channels_first_grouped
    monkeypatch.setattr(cpu_stats, "stats_channels_first_grouped",
                        lambda *a: a[-5] == 0 and parts.append(a[-1].shape[0]) or grouped(*a))
    if not cpu_stats.grouped_rows(np.dtype(dtype), False, (40, 2048, 49)):
        pytest.skip("float16 without F16C (NBBN_SIMD=none) keeps the row blocks")
    x = _short_rows(rng, (40, 2048, 49), dtype, mean=100.0)
    x[:, ::7] += 1e3  # channels far from their neighbours' shifts
    rs = nbbn.RunningStats(channel_axis=1, backend="cpu")
    rs.update(x[:8]).update(x[8:])
    assert_stats(rs, ref_stats(x, 1), stats_rtol(dtype))
    assert parts[0] == 1  # 8 rows: too few values for threads, one partition
    assert parts[1] == 2048 * 49 * x.itemsize // cpu_stats.GROUPED_SLICE_BYTES > 1


@pytest.mark.parametrize("dtype, shape, kernel", [
    ("float32", (4, 4096, 64), "stats_channels_first_grouped"),
    ("float32", (1, 16384, 64), "stats_channels_first_grouped"),
    ("uint8", (4, 4096, 64), "stats_channels_first_int_grouped"),
    ("float64", (4, 4096, 64), "stats_channels_first_f64_grouped"),
    ("float64", (1, 4096, 300), "stats_channels_first"),
    ("float64", (3, 2000, 150), "stats_channels_first"),
    ("float32", (1, 300, 20000), "stats_channels_first"),
])
def test_partitions_read_only_their_channels(rng, monkeypatch, dtype, shape, kernel):
    # few rows of many channels: partitions that are slices of the channels (one group,
    # or the per-row kernel's units within one o) set and fold only those channels
    # (cpu_stats._open); the rest of their accumulators is filled with garbage here,
    # which a fold over channels a partition does not hold would merge. The grouped
    # kernels and whole rows give each channel's bits of a single partition.
    from nbbn.backends import cpu

    x = _short_rows(rng, shape, dtype, mean=50.0, std=20.0)
    if dtype == "float64":
        x[:, ::5] += 1e6  # channels far from the first value's shift
    if dtype != "uint8":
        x[-1, 3, -1] = np.nan
    run = cpu._run

    def garbage_first(kern, head, tail, size, chunks):
        if len(tail) == 3:
            pi, pf, cr = tail
            pi.fill(12345)
            pf.fill(np.nan)
            cr[:] = (0, pi.shape[2])
            parts.append((kern, pi.shape[0]))
        return run(kern, head, tail, size, chunks)

    parts = []
    monkeypatch.setattr(cpu, "_run", garbage_first)
    cpu._plans.clear()
    for policy in ("omit", "propagate"):
        got = nbbn.RunningStats(channel_axis=1, backend="cpu", nan_policy=policy).update(x)
        assert_stats(got, ref_stats(x, 1, nan_policy=policy), stats_rtol(dtype))
    assert parts[0][0] is getattr(cpu_stats, kernel) and parts[0][1] > 1
    monkeypatch.setattr(cpu, "MAX_PARTS", 1)
    cpu._plans.clear()
    one = nbbn.RunningStats(channel_axis=1, backend="cpu", nan_policy=policy).update(x)
    assert parts[-1][1] == 1
    if shape[2] <= cpu_stats.ROW_BLOCK:  # (longer rows: blocks merged in another order)
        np.testing.assert_array_equal(got.mean, one.mean)
        np.testing.assert_array_equal(got.var, one.var)
    cpu._plans.clear()


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16"])
def test_one_channel_rows_read_as_one_row(rng, monkeypatch, dtype):
    # (N, 1, H, W), MNIST's layout: C-contiguous, its rows are one long row; a strided
    # view keeps its rows
    shapes = []
    blocks = cpu_stats.stats_channels_first
    monkeypatch.setattr(cpu_stats, "stats_channels_first",
                        lambda *a: shapes.append(a[0].shape) or blocks(*a))
    x = rng.integers(0, 256, (3000, 1, 28, 28)).astype(dtype)
    x[7, 0, 3, 4] = 255 if dtype == "uint8" else np.nan  # a NaN: the exact redo's path
    for view in (x, x[::2]):
        rs = nbbn.channel_stats(view, 1, backend="cpu")
        assert_stats(rs, ref_stats(view, 1), stats_rtol(dtype))
    assert shapes[0] == (1, 1, x.size)
    assert (3000, 1, 784) not in shapes
    # the strided view keeps its rows: in a grouped kernel (float16 without F16C: in row
    # blocks)
    grouped = (cpu_stats.grouped_rows(np.dtype(dtype), False, (1500, 1, 784))
               or cpu_stats.int_grouped_rows(np.dtype(dtype), (1500, 1, 784)))
    assert ((1500, 1, 784) in shapes) != grouped


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
@pytest.mark.parametrize("shape", [(3000, 4, 7), (400, 3, 200), (70, 2, 1024), (40, 4, 1025)])
def test_channels_first_short_integer_rows(rng, monkeypatch, dtype, shape):
    # 8/16-bit integers with rows of up to 1024 values: exact integer sums added over a
    # group's rows (uint8 rows from 128 values through the SIMD block sums), one mean and
    # M2 per group; rows of 1025 keep the row blocks. The extremes of the type check that
    # no sum overflows.
    calls = []
    grouped = cpu_stats.stats_channels_first_int_grouped
    monkeypatch.setattr(cpu_stats, "stats_channels_first_int_grouped",
                        lambda *a: a[-5] == 0 and calls.append(a[1]) or grouped(*a))
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    x[: shape[0] // 3] = info.max
    x[shape[0] // 3 : shape[0] // 2, 1, ::2] = info.min
    rs = nbbn.RunningStats(channel_axis=1, backend="cpu")
    rs.update(x[:100]).update(x[100:])
    assert_stats(rs, ref_stats(x, 1), 1e-12)
    pieces = [x[:100].size, x[100:].size]  # one call each (thread 0) where grouped
    assert len(calls) == (sum(n >= cpu_stats.GROUPED_MIN_ELEMENTS for n in pieces)
                          if shape[2] <= cpu_stats.SHORT_ROW else 0)
    const = np.full(shape, info.max, dtype)
    rs = nbbn.channel_stats(const, 1, backend="cpu")
    assert (rs.var == 0).all() and (rs.mean == info.max).all()


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16"])
@pytest.mark.parametrize("length", [7, 300])  # uint8 300: the SIMD sums' strided rest
def test_channels_first_short_integer_rows_strided(rng, dtype, length):
    base = rng.integers(0, 250, (60000 // length, 6, 2 * length)).astype(dtype)
    x = base[::2, ::2, ::2]  # no axis with unit stride
    assert cpu_stats.int_grouped_rows(x.dtype, x.shape)
    rs = nbbn.channel_stats(x, 1, backend="cpu")
    assert_stats(rs, ref_stats(x, 1), 1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "int16"])
def test_channels_first_short_integer_rows_one_group_sliced(rng, monkeypatch, dtype):
    parts = []
    grouped = cpu_stats.stats_channels_first_int_grouped
    monkeypatch.setattr(cpu_stats, "stats_channels_first_int_grouped",
                        lambda *a: a[-5] == 0 and parts.append(a[-1].shape[0]) or grouped(*a))
    x = rng.integers(0, 200, (16, 4096, 49)).astype(dtype)
    rs = nbbn.channel_stats(x, 1, backend="cpu")
    assert_stats(rs, ref_stats(x, 1), 1e-12)
    assert parts == [4096 * 49 * x.itemsize // cpu_stats.GROUPED_SLICE_BYTES]


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("shape", [(3000, 4, 7), (300, 8, 49), (200, 3, 99), (40, 3, 100)])
def test_channels_first_short_float64_rows(rng, monkeypatch, shape, nan_policy):
    # float64 rows under F64_SHORT_ROW values: the corrected two-pass algorithm over a
    # group's rows, a few channels at a time; a channel far from zero (mean/std 1e8), one
    # with a NaN and an inf in one group, one constant; rows of 100 keep the row blocks
    calls = []
    grouped = cpu_stats.stats_channels_first_f64_grouped
    monkeypatch.setattr(cpu_stats, "stats_channels_first_f64_grouped",
                        lambda *a: a[-5] == 0 and calls.append(a[2]) or grouped(*a))
    x = rng.standard_normal(shape) * 3.0
    x[:, 0] += 1e8
    x[25, 1, 3] = np.nan  # (in the second, grouped, piece)
    x[27, 1, 2] = np.inf
    x[:, 2] = -2.5
    x[:, 1, 0] += np.arange(shape[0]) * 1e3  # rows far apart within each group
    rs = nbbn.RunningStats(channel_axis=1, backend="cpu", nan_policy=nan_policy)
    rs.update(x[:20]).update(x[20:])
    assert_stats(rs, ref_stats(x, 1, nan_policy=nan_policy), 1e-12)
    assert rs.var[2] == 0.0 and rs.mean[2] == -2.5
    grouped_piece = x[20:].size >= cpu_stats.GROUPED_MIN_ELEMENTS
    assert len(calls) == (1 if shape[2] < cpu_stats.F64_SHORT_ROW and grouped_piece else 0)


@pytest.mark.parametrize("dtype", ["float64"])  # (in the id)
def test_channels_first_short_float64_rows_sliced_and_strided(rng, dtype):
    x = rng.standard_normal((16, 4096, 49)) + 10.0  # one group, cut into channel slices
    assert_stats(nbbn.channel_stats(x, 1, backend="cpu"), ref_stats(x, 1), 1e-12)
    v = rng.standard_normal((8000, 6, 14))[::2, ::2, ::2]  # no unit-stride axis
    assert cpu_stats.f64_grouped_rows(v.dtype, v.shape)
    assert_stats(nbbn.channel_stats(v, 1, backend="cpu"), ref_stats(v, 1), 1e-12)


def test_channels_first_short_rows_strided_view(rng):
    base = _short_rows(rng, (2000, 6, 2, 25), np.float32)
    x = base[::2, ::2, 1]  # (1000, 3, 25) with no unit-stride axis to merge
    rs = nbbn.channel_stats(x, 1, backend="cpu")
    assert_stats(rs, ref_stats(x, 1), stats_rtol("float32"))


def test_channels_first_short_rows_take_the_grouped_kernel(rng, monkeypatch):
    from nbbn.backends import cpu

    calls = []
    grouped = cpu_stats.stats_channels_first_grouped
    monkeypatch.setattr(cpu_stats, "stats_channels_first_grouped",
                        lambda *a: calls.append(a[3]) or grouped(*a))
    nbbn.channel_stats(_short_rows(rng, (1024, 16, 4, 4), np.float32), 1, backend="cpu")
    assert calls == [cpu_stats.rows_per_group(16)]
    assert cpu.ks is cpu_stats
    for shape, dtype in [((4, 16, 96, 96), np.float32), ((1024, 16, 4, 4), np.float64),
                         ((8, 16, 4, 4), np.float32)]:
        nbbn.channel_stats(_short_rows(rng, shape, dtype), 1, backend="cpu")
    assert len(calls) == 1  # rows of a block or more, float64, a small batch: row blocks


# shapes for each float64 statistics path: channels-last, one long row, long
# channels-first rows, short channels-first rows (the grouped kernel), one channel
_F64_PATHS = {"channels_last": ((20000, 2), -1), "long_rows": ((3, 2, 20000), 1),
              "short_rows": ((4096, 2, 16), 1), "one_channel": ((4000, 1, 5), 1)}


@pytest.mark.parametrize("path", list(_F64_PATHS))
def test_float64_near_the_top_of_the_range(path, rng):
    """Finite values whose sum overflows float64 keep a finite, exact mean (summed
    scaled by 2^-64), and deviations or squares that overflow give an infinite
    variance, not NaN, in every kernel path; nan_policy="omit" the same with NaNs."""
    shape, axis = _F64_PATHS[path]
    x = 1e307 * (10.0 + rng.uniform(-1, 1, shape))  # 9e307 .. 1.1e308: sums overflow
    exact = np.moveaxis(np.ldexp(x, -64), axis, 0).reshape(shape[axis], -1).mean(axis=1)
    for policy in ("propagate", "omit"):
        y = x.copy()
        if policy == "omit":
            y.reshape(-1)[::7] = np.nan
        rs = nbbn.channel_stats(y, axis, nan_policy=policy)
        want = np.ldexp(np.nanmean(np.moveaxis(np.ldexp(y, -64), axis, 0).reshape(
            shape[axis], -1), axis=1), 64) if policy == "omit" else np.ldexp(exact, 64)
        np.testing.assert_allclose(rs.mean, want, rtol=1e-13)
        assert np.isposinf(rs.var).all(), rs.var
    # both signs near the top: squares and shifted deviations overflow, the sum does not
    z = x.copy()
    z.reshape(-1)[1::2] *= -1.0
    rs = nbbn.channel_stats(z, axis)
    assert np.isfinite(rs.mean).all() and np.isposinf(rs.var).all(), (rs.mean, rs.var)
    ref = np.moveaxis(np.ldexp(z, -64), axis, 0).reshape(shape[axis], -1).mean(axis=1)
    np.testing.assert_allclose(rs.mean, np.ldexp(ref, 64), rtol=1e-6, atol=1e296)


@pytest.mark.parametrize("shape, axis", [((50_000, 4), -1), ((4, 4, 12_500), 1)],
                         ids=["channels_last", "channels_first"])
def test_means_of_sums_and_deviations_that_overflow_stay_near_an_ulp(rng, shape, axis):
    """Values of both signs near the top of the range: the sums and the deviations
    from the scaled mean overflow. The deviations' sum, scaled by 2^-64, still repairs
    the mean's rounding: a few ulp (before, the mean kept the scaled sum's rounding,
    503 ulp off at 50,000 values)."""
    x = rng.choice([1e308, 1.7e308, -1e308], size=shape)
    rs = nbbn.channel_stats(x, axis)
    cols = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])
    exact = np.array([math.ldexp(math.fsum(np.ldexp(cols[:, c], -64)) / cols.shape[0], 64)
                      for c in range(shape[axis])])  # (within an ulp of the exact mean)
    ulps = np.abs(rs.mean - exact) / np.spacing(np.abs(exact))
    assert ulps.max() <= 64, ulps
    assert np.isposinf(rs.var).all(), rs.var


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_long_rows_with_scattered_nans_redo_sub_blocks(rng, dtype, nan_policy):
    """A channels-first block holding a NaN or an infinity is redone in sub-blocks of
    ``SUB_BLOCK`` values, each on the fast path where it is clean: NaNs next to
    sub-block edges, a whole sub-block of NaN, an infinity in one channel's row only,
    and rows far from the running mean, against the reference."""
    sub = cpu_stats.SUB_BLOCK
    length = cpu_stats.ROW_BLOCK + 3 * sub + 7  # (rows of two blocks, the second short)
    x = rng.standard_normal((3, 3, length)) * 2.0 + np.array([0.0, 1e3, -50.0])[:, None]
    x[1] += 5e3  # (far from the running mean of the first sample)
    for at in (sub - 1, sub, sub + 1, 2 * sub + 5, cpu_stats.ROW_BLOCK + sub):
        x[0, 0, at] = np.nan
    x[1, 1, 3 * sub:4 * sub] = np.nan  # a whole sub-block
    x[2, 2, 17] = np.inf
    x = x.astype(dtype)
    rs = nbbn.RunningStats(1, nan_policy=nan_policy, backend="cpu").update(x)
    assert_stats(rs, ref_stats_many([x], 1, nan_policy), stats_rtol(dtype))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("nchan", [3, 64, 300])
def test_channels_last_scattered_nans_redo_sub_blocks(rng, dtype, nchan, nan_policy):
    """A channels-last block in which a channel holds a NaN or an infinity is redone for
    that channel in sub-blocks of rows, each on the fast path where it is clean: NaNs
    next to sub-block edges, a whole sub-block of NaN, a block whose first row is NaN in
    a channel with no statistics yet (no running mean to shift by), a channel NaN for a
    whole block, an infinity, and blocks far from the running mean, against the
    reference."""
    simd = cpu_stats.cl_simd(np.dtype(dtype), nchan)
    k, _, rpb = cpu_stats.channels_last_geometry(nchan, simd, 0)  # (the smallest blocks)
    sub = max(4, cpu_stats.CL_SUB_ROWS // k) * k
    m = 2 * rpb + 3 * sub + 7  # (three blocks, the last short)
    assert cpu_stats.channels_last_geometry(nchan, simd, m)[2] == rpb
    x = rng.standard_normal((m, nchan)) * 2.0 + np.linspace(0.0, 40.0, nchan)
    x[rpb:] += 5e3  # (far from the running mean of the first block)
    for at in (sub - 1, sub, sub + 1, 2 * sub + 5, rpb + sub, 2 * rpb + 1):
        x[at, 0] = np.nan
    x[rpb + 2 * sub:rpb + 3 * sub, 1] = np.nan  # a whole sub-block
    x[0, 2] = np.nan  # the first block's first row: its shift is the first finite value
    x[:rpb, nchan - 1] = np.nan  # a channel without a finite value in the first block
    x[rpb + 17, 2] = -np.inf
    x = x.astype(dtype)
    rs = nbbn.RunningStats(-1, nan_policy=nan_policy, backend="cpu").update(x)
    assert_stats(rs, ref_stats(x, -1, nan_policy), stats_rtol(dtype))
    assert_non_finite_counts(rs, [x], -1)
    half = nbbn.RunningStats(-1, nan_policy=nan_policy, backend="cpu")
    for part in np.array_split(x, [rpb // 2 + 3, rpb + sub // 2]):  # blocks cut elsewhere
        half.update(part)
    assert_stats(half, ref_stats(x, -1, nan_policy), stats_rtol(dtype))
    assert_non_finite_counts(half, [x], -1)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("nchan", [3, 20])
def test_channels_last_nan_runs_take_the_omitting_pass_directly(rng, dtype, nchan,
                                                                monkeypatch):
    """Under "omit", a block after one that held a NaN goes straight to the NaN-omitting
    pass (in its partition: at most 8 partitions here, so a partition holds several
    blocks), and back to the clean pass after a block without NaN. Scattered NaNs in
    the first third, a clean stretch, then NaNs in one channel only, a channel NaN for
    whole blocks, an infinity, and a jump of the mean far from the running one (the
    omitting pass's retry), against the reference, also cut into two batches."""
    from nbbn.backends import cpu

    monkeypatch.setattr(cpu, "MAX_PARTS", 8)
    monkeypatch.setattr(cpu, "_plans", {})  # (plans made with 64 would be reused)
    simd = cpu_stats.cl_simd(np.dtype(dtype), nchan)
    rpb = cpu_stats.channels_last_geometry(nchan, simd, 1 << 30)[2]
    m = 30 * rpb + 5
    assert cpu_stats.channels_last_geometry(nchan, simd, m)[2] == rpb
    x = rng.standard_normal((m, nchan)) * 2.0 + np.linspace(-10.0, 10.0, nchan)
    third = m // 3
    x[:third][rng.random((third, nchan)) < 1e-3] = np.nan
    x[2 * third:, 0][rng.random(m - 2 * third) < 1e-2] = np.nan
    x[2 * third + rpb:2 * third + 4 * rpb, 1] = np.nan  # whole blocks of one channel
    x[2 * third + 7 * rpb + 11, 2] = np.inf
    x[2 * third + 9 * rpb + rpb // 2:, :] += 3e3  # far from the running mean mid-block
    x = x.astype(dtype)
    want = ref_stats(x, -1, "omit")
    rs = nbbn.RunningStats(-1, nan_policy="omit", backend="cpu").update(x)
    assert_stats(rs, want, stats_rtol(dtype))
    assert_non_finite_counts(rs, [x], -1)
    two = nbbn.RunningStats(-1, nan_policy="omit", backend="cpu")
    two.update(x[:third + 3 * rpb // 2]).update(x[third + 3 * rpb // 2:])
    assert_stats(two, want, stats_rtol(dtype))


def assert_non_finite_counts(rs, batches, axis):
    """``nan_count`` and ``inf_count`` against numpy's."""
    rows = [np.moveaxis(b, axis, -1).reshape(-1, b.shape[axis]) for b in batches]
    np.testing.assert_array_equal(rs.nan_count, sum(np.isnan(r).sum(0) for r in rows))
    np.testing.assert_array_equal(rs.inf_count, sum(np.isinf(r).sum(0) for r in rows))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["long rows", "short rows", "table, C=7", "table, C=64"])
def test_dense_nans_finish_blocks_exactly(rng, layout, dtype, nan_policy):
    """Where nearly every sub-block of a block holds a NaN, the kernels stop trying the
    fast path and finish the block exactly (``_sub_blocks_fail``): clean rows first (the
    sub-blocks succeed), then a NaN in every 37th value, an infinity, and a second stream
    far from the first one's mean, against the reference."""
    if layout == "long rows":
        shape, axis = (2, 3, cpu_stats.ROW_BLOCK + 3000), 1
    elif layout == "short rows":
        shape, axis = (96, 8, 16, 64), 1  # 1,024-value rows: the grouped kernel
    else:
        shape, axis = (60_000, int(layout.split("=")[1])), -1
    x = rng.standard_normal(shape) * 3.0 + 10.0
    dense = x.reshape(-1)[x.size // 5:]  # (a view: the last four fifths of memory)
    dense[::37] = np.nan
    dense[5003] = np.inf
    x = x.astype(dtype)
    second = (x * 0.5 - 7e3).astype(dtype)
    rs = nbbn.RunningStats(axis, nan_policy=nan_policy, backend="cpu").update(x).update(second)
    assert_stats(rs, ref_stats_many([x, second], axis, nan_policy), stats_rtol(dtype))
    assert_non_finite_counts(rs, [x, second], axis)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64"])
def test_one_row_written_directly_keeps_the_kernels_bits(rng, monkeypatch, dtype):
    """A single row of many channels (``cpu._one_row_stats``, channels last and first):
    the kernels' bits where every value is finite, signed zeros included; a NaN, an
    infinity or a sum that overflows leaves the row to the kernels, and so does int64
    (its mean may need a low part)."""
    from nbbn.backends import cpu, cpu_few_rows

    nchan = cpu_few_rows.ROW_CHANNELS + 3
    x = (rng.standard_normal((1, nchan)) * 50).astype(dtype)
    x[0, :2] = 0
    rows = [(x, True)]
    if x.dtype.kind == "f":
        x[0, 1] = -0.0
        for bad in (np.nan, np.inf):
            y = x.copy()
            y[0, 5] = bad
            rows.append((y, False))
        if dtype == "float64":
            y = x.copy()
            y[0, 3:5] = 1e308  # finite values whose sum is not
            rows.append((y, False))
    direct = []
    one_row = cpu._one_row_stats
    monkeypatch.setattr(cpu, "_one_row_stats", lambda r: direct.append(one_row(r)) or direct[-1])
    for row, finite in rows:
        for axis in (-1, 1):
            for policy in ("propagate", "omit"):
                direct.clear()
                got = nbbn.RunningStats(axis, nan_policy=policy, backend="cpu").update(row)
                assert [d is not None for d in direct] == ([] if dtype == "int64" else [finite])
                with monkeypatch.context() as m:
                    m.setattr(cpu_few_rows, "ROW_CHANNELS", nchan + 1)  # (the kernels)
                    m.setattr(cpu_few_rows, "FEW_ROWS_CHANNELS", nchan + 1)
                    m.setattr(cpu_few_rows, "NARROW_CHANNELS", nchan + 1)
                    want = nbbn.RunningStats(axis, nan_policy=policy, backend="cpu").update(row)
                np.testing.assert_array_equal(got._snapshot().ints, want._snapshot().ints)
                np.testing.assert_array_equal(got._snapshot().floats.view(np.int64),
                                              want._snapshot().floats.view(np.int64))


def _exact_var(column: np.ndarray) -> float:
    """The biased variance of ``column`` from exactly rounded sums (math.fsum)."""
    import math

    v = column.astype(np.float64)
    d = v - math.fsum(v) / v.size
    return (math.fsum(d * d) - math.fsum(d) ** 2 / v.size) / v.size


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("policy", ["propagate", "omit"])
def test_channels_last_float32_variance_at_mean_30_to_100_std(rng, dtype, policy):
    """A channels-last block of few channels summed each slot over 5,000-16,000 values
    in one running sum, with a float64 shift: d*d rounded with a bias that grew with
    the rows, 1.5e-13 of the variance at 20,000 rows of N(100, 1) float32 (the portable
    loops: 2e-16). The sums now run 256 tiles at a time, from a shift on the values' own
    grid (``cpu_stats.on_grid``)."""
    for loc in (10.0, 30.0, 100.0):
        x = (loc + rng.standard_normal((20000, 4))).astype(dtype)
        if policy == "omit":
            x[7, 2] = np.nan
        rs = nbbn.channel_stats(x, -1, nan_policy=policy, backend="cpu")
        for c in range(4):
            col = x[:, c][~np.isnan(x[:, c])]
            assert abs(rs.var[c] / _exact_var(col) - 1) < 2e-14, (loc, c)
