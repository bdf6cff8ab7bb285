"""The CPU backend's dispatcher (``nbbn.backends.cpu``): the kernel plans it keeps, the
routes it picks by layout and size, and the merges of their results. Edges found by
mutation testing (round 7)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from reference import (
    assert_close,
    assert_stats,
    assert_ulps,
    ref_normalize,
    ref_stats,
    stats_rtol,
)

import nbbn
from nbbn import _layout

RNG = np.random.default_rng(20261207)


def _check(rs, x, axis):
    assert_stats(rs, ref_stats(x, axis % x.ndim), stats_rtol(x.dtype))


def test_a_plan_is_not_reused_for_the_same_shape_with_other_strides():
    """Short float32 rows take whole-vector reads only where their elements are
    contiguous: a piece of the same shape with gaps between its elements (read after
    the contiguous one) gets a plan of its own, and its gaps are not read."""
    base = RNG.standard_normal((512, 4, 32)).astype(np.float32) * 3 + 5
    wide = np.repeat(base, 2, axis=2)
    wide[..., 1::2] = 1e6  # (the gaps: in any statistic that reads them)
    for x in (base, wide[..., ::2]):
        _check(nbbn.RunningStats(1, backend="cpu").update(x), x, 1)


def test_two_partitions_are_both_merged():
    """A piece of 2-3 ``MIN_PART_ELEMENTS`` elements is cut into exactly two
    partitions: the statistics fold both (the first alone is a partial result)."""
    from nbbn.backends import cpu

    n = 5 * cpu.MIN_PART_ELEMENTS // 2
    x = RNG.standard_normal((n // 4, 4)) * 2 + 3
    x[-1] = 50.0  # (the last rows, in the second partition only)
    for rs in (nbbn.RunningStats(-1, backend="cpu").update(x),
               nbbn.RunningStats(0, backend="cpu").update(x.T.copy())):
        _check(rs, x, -1)


@pytest.mark.parametrize("nan", [True, False])
@pytest.mark.parametrize("policy", ["propagate", "omit"])
def test_a_single_row_with_a_nan_or_an_infinity_is_not_written_directly(policy, nan):
    """A single row of many channels is written directly (count 1, mean/min/max the
    value) only where every value is finite: a NaN or an infinity (alone too) goes to
    the kernels, which count it (and skip the NaN under "omit")."""
    x = RNG.standard_normal((1, 1024)).astype(np.float32)
    x[0, 3], x[0, 7] = np.nan if nan else 1.0, np.inf
    rs = nbbn.RunningStats(-1, nan_policy=policy, backend="cpu").update(x)
    assert_stats(rs, ref_stats(x, -1, policy), 1e-7)
    assert rs.nan_count.tolist() == [int(nan and c == 3) for c in range(1024)]
    assert rs.inf_count.tolist() == [int(c == 7) for c in range(1024)]


def test_an_out_on_the_inputs_memory_in_another_layout_goes_through_a_temporary(monkeypatch):
    """``out=x.T`` starts where ``x`` does, with its item size, but not its strides: a
    map in place (here in slabs of 8 rows) would overwrite inputs before they are read,
    so it is written through a temporary (only the same memory in the same layout is
    mapped in place)."""
    monkeypatch.setattr(_layout, "SLAB_BYTES", 8 * 64 * 8)
    x = RNG.standard_normal((64, 64)) * 3 + 1
    want = ref_normalize(x, np.linspace(-1, 1, 64), np.linspace(0.5, 2, 64), eps=0.0,
                         channel_axis=-1)
    norm = nbbn.Normalizer(np.linspace(-1, 1, 64), np.linspace(0.5, 2, 64), eps=0.0,
                           channel_axis=-1, backend="cpu")
    y = norm(x, out=x.T)
    assert_close(y, want, rtol=1e-15, atol=1e-15)


def test_a_fortran_table_is_read_as_channels_first_rows_without_a_copy():
    """A table stored column by column (pandas' ``to_numpy()``) reaches the statistics
    as (N, C, 1) rows with F-contiguous columns: it is read as (1, C, N) channels-first
    rows in place, not copied whole into C order."""
    t = np.asfortranarray(RNG.standard_normal((65536, 32)).astype(np.float32))  # 8 MiB
    update = nbbn.RunningStats(-1, backend="cpu").update
    for _ in range(2):  # (compiling first: the compiler's allocations are not the call's)
        update(t)
    tracemalloc.start()
    try:
        rs = update(t)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < t.nbytes // 8
    _check(rs, np.concatenate([t, t, t]), -1)


def test_a_permuted_input_into_a_new_or_matching_out_is_mapped_in_memory_order(monkeypatch):
    """A torch channels_last layout read with ``channel_axis=1`` into a new output or
    an out= laid out as itself is mapped in memory order (channels-last rows the
    kernels read at their speed), not through its channels-first view, whose inner
    runs have gaps."""
    from nbbn.backends import cpu

    x = RNG.standard_normal((4, 8, 8, 3)).astype(np.float32).transpose(0, 3, 1, 2)
    mean, var = np.array([0.5, -1.0, 2.0]), np.array([1.0, 4.0, 0.25])
    norm = nbbn.Normalizer(mean, var, channel_axis=1, backend="cpu")
    want = ref_normalize(x, mean, var, eps=norm.eps, channel_axis=1)
    seen = []
    run = cpu._run_affine

    def spy(x3, *args, **kwargs):
        seen.append(_layout.streams(x3))
        return run(x3, *args, **kwargs)

    monkeypatch.setattr(cpu, "_run_affine", spy)
    for out in (np.empty_like(x), None):
        assert_ulps(norm(x, out=out), want, ulps=1.0)
    assert seen == [True, True]


def test_reversed_channels_last_rows_are_read_in_place(monkeypatch):
    """Rows in reverse order (``x[::-1]``, also with gaps) are read in place as the
    table they span, the order of the rows not mattering: no slabs are gathered."""
    from nbbn.backends import cpu

    def no_slabs(*args, **kwargs):
        raise AssertionError("gathered through slabs")

    monkeypatch.setattr(cpu, "_row_slabs", no_slabs)
    t = RNG.standard_normal((300, 10)).astype(np.float32) * 3 + 7
    for x in (t[::-1], t[::-1, ::2]):
        _check(nbbn.RunningStats(-1, backend="cpu").update(x), x, -1)


def test_every_caller_gives_the_channels_first_map_one_type_of_parameters(monkeypatch):
    """A Normalizer's frozen parameters (and scikit-learn's, its Normalizer's) are
    read-only arrays; BatchNorm's (train and eval), dask's and xarray's came writable,
    another numba type: a second build of the channels-first affine kernel for each
    dtype (3-4 s each, 12 of the suite's 47 builds). Each reaches the kernel read-only
    now (here: a Normalizer, BatchNorm in both modes, scikit-learn's transform)."""
    import numba

    from nbbn.backends import cpu, cpu_normalize
    from nbbn.sklearn import StandardScaler

    kernels = (cpu_normalize.affine_channels_first, cpu_normalize.affine_channels_first_inf)
    seen = []
    run = cpu._run

    def spy(kernel, head, *args, **kwargs):
        if kernel in kernels:
            seen.append(tuple(numba.typeof(p).mutable for p in head[2:5]))
        return run(kernel, head, *args, **kwargs)

    monkeypatch.setattr(cpu, "_run", spy)
    x = RNG.standard_normal((4, 3, 5, 5)).astype(np.float32)
    nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=1, backend="cpu")(x)
    bn = nbbn.BatchNorm(3, backend="cpu")
    bn(x)  # training
    bn.eval()
    bn(x)
    table = np.asfortranarray(RNG.standard_normal((50, 3)))  # (channels-first rows)
    StandardScaler().fit(table).transform(table)
    assert len(seen) == 4
    assert seen == [(False, False, False)] * 4
