"""scipy sparse matrices: ``RunningStats.update`` per column (stored entries and implicit
zeros, NaNs, weights) against exact float64 references of the dense matrix, and
``nbbn.sklearn.StandardScaler(with_mean=False)`` against scikit-learn's on sparse input."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sparse = pytest.importorskip("scipy.sparse")

from reference import assert_close, assert_stats, ref_stats  # noqa: E402

import nbbn  # noqa: E402
from nbbn._histogram import Histogram  # noqa: E402
from nbbn.backends import cpu, cpu_sparse  # noqa: E402

RTOL = 1e-13  # float64 arithmetic on exact values: no float32 slack for float32 input
FORMATS = ["csr", "csc", "coo", "csr_matrix", "csc_matrix"]


def _sparse(dense: np.ndarray, fmt: str):
    if fmt.endswith("_matrix"):
        return getattr(sparse, fmt)(dense)
    return sparse.csr_array(dense).asformat(fmt)


def _data(rng, shape=(400, 7), density=0.3, nan=0.03, dtype="float64"):
    """Sparse-looking data: most values 0, the rest around varied means (a column all
    zeros, one with no zeros, one of large mean), NaNs sprinkled in."""
    x = rng.standard_normal(shape) * np.logspace(-1, 2, shape[1]) + np.linspace(-5, 1e4, shape[1])
    x[rng.random(shape) > density] = 0.0
    x[:, 0] = 0.0
    x[:, 1] = rng.standard_normal(shape[0]) + 3.0
    if np.dtype(dtype).kind == "f" and nan:
        x[rng.random(shape) < nan] = np.nan
        x[:, 1] = np.where(np.isnan(x[:, 1]), 3.0, x[:, 1])
    return x.astype(dtype)


# the ways a CSR matrix is reduced (_csr_route); "parts_ahead": partitions by the build
# that prefetches records (_csr_parts's AHEAD builds, for records larger than L2)
ROUTES = ["csc", "blocks", "parts", "parts_ahead"]


def _force_route(mp: pytest.MonkeyPatch, route: str, block_columns: int = 2) -> None:
    """Reduce every CSR matrix by ``route`` ("blocks": columns in blocks of
    ``block_columns``, so that small matrices have several)."""
    if route == "parts_ahead":
        mp.setattr(cpu_sparse, "L2_BYTES", 0)
        route = "parts"
    mp.setattr(cpu_sparse, "_csr_route", lambda *shape: route)
    mp.setattr(cpu_sparse, "BLOCK_COLUMNS", block_columns)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_an_overflowing_m2_is_infinite_not_nan(monkeypatch, route, fmt):
    """Values beyond about 1e154: the sum of squares overflows, and the variance is inf
    (as numpy's), not the NaN of an ``inf - inf`` in a compensation; every route."""
    _force_route(monkeypatch, route)
    x = np.array([[0.0, 1.0], [1e160, 2.0], [-1e200, 3.0], [0.0, 0.0]])
    for w in (None, np.array([1.0, 2.0, 1.0, 1.0])):
        rs = nbbn.RunningStats(-1).update(getattr(sparse, f"{fmt}_matrix")(x),
                                          sample_weight=w)
        assert rs.var[0] == np.inf and np.isfinite(rs.mean[0])
        assert 0.0 < rs.var[1] < 2.0


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sums_beyond_float64s_range_keep_a_finite_mean(monkeypatch, route, fmt):
    """Stored values near +-1e308 whose sums overflow: the column is redone as dense data
    (a scaled sum): its mean finite and exact, its variance inf, as for dense input;
    NaNs skipped under "omit"; columns holding an infinity keep their inf mean."""
    _force_route(monkeypatch, route)
    x = np.zeros((400, 4))
    x[0::4, 0], x[1::4, 0] = 1.7e308, -1.7e308  # mean 0
    x[0::2, 1] = 1.5e308  # mean 7.5e307 with 200 zeros
    x[:, 2] = 1.0
    x[0::8, 3], x[1::8, 3], x[2::8, 3] = 1.6e308, 1.6e308, np.nan
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(_sparse(x, fmt))
    np.testing.assert_array_equal(rs.mean[:3], [0.0, 7.5e307, 1.0])
    np.testing.assert_allclose(rs.mean[3], 1.6e308 / 3.5, rtol=1e-15)  # 100 of 350
    assert np.isposinf(rs.var[[0, 1, 3]]).all() and rs.var[2] == 0.0
    np.testing.assert_array_equal(rs.count, [400, 400, 400, 350])
    dense = nbbn.RunningStats(-1, nan_policy="omit").update(x)
    np.testing.assert_allclose(rs.mean, dense.mean, rtol=1e-15)
    x[5, 2] = np.inf
    assert np.isposinf(nbbn.RunningStats(-1).update(_sparse(x, fmt)).mean[2])
    # weighted: the same redo with each stored value's weight, and the implicit zeros'
    # weight sum (rows of weight 0 absent), equal to the dense weighted statistics
    w = np.tile([1.0, 2.0, 0.0, 3.0, 1.0], 80)
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(_sparse(x[:, :2], fmt),
                                                         sample_weight=w)
    dense = nbbn.RunningStats(-1, nan_policy="omit").update(x[:, :2], sample_weight=w)
    np.testing.assert_allclose(rs.mean, dense.mean, rtol=1e-15)
    assert np.isfinite(rs.mean).all() and np.isposinf(rs.var).all()
    np.testing.assert_array_equal(rs.count, dense.count)
    np.testing.assert_array_equal(rs.to_dict()["weight"], dense.to_dict()["weight"])


def _weighted_ref(x: np.ndarray, w: np.ndarray, omit: bool):
    """Per-column weight sum, mean and variance with exactly rounded sums."""
    out = []
    for c in range(x.shape[1]):
        v, ww = x[:, c].astype(np.float64), w.astype(np.float64)
        keep = (~np.isnan(v) if omit else np.ones(v.shape, bool)) & (ww > 0)
        v, ww = v[keep], ww[keep]
        sw = math.fsum(ww.tolist())
        m = math.fsum((ww * v).tolist()) / sw
        out.append((sw, m, math.fsum((ww * (v - m) ** 2).tolist()) / sw))
    return [np.array(a) for a in zip(*out, strict=True)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", ["float64", "float32", "int32"])
@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_columns_match_the_dense_reference(rng, fmt, dtype, policy):
    x = _data(rng, dtype=dtype)
    rs = nbbn.RunningStats(-1, nan_policy=policy).update(_sparse(x, fmt))
    assert_stats(rs, ref_stats(x, -1, policy), rtol=RTOL)
    np.testing.assert_array_equal(rs.nan_count, np.isnan(x.astype(float)).sum(0))


def _check_csr_against_the_references(x: np.ndarray, w: np.ndarray | None, policy: str):
    """``x`` as a CSR matrix (weighted by ``w`` if given) against the dense statistics
    (counts of NaNs and infinities, min, max) and the float64 references."""
    rs = nbbn.RunningStats(-1, nan_policy=policy).update(sparse.csr_array(x), sample_weight=w)
    with np.errstate(all="ignore"):
        dense = nbbn.RunningStats(-1, nan_policy=policy).update(x, sample_weight=w)
    for name in ("nan_count", "inf_count", "min", "max"):
        np.testing.assert_array_equal(getattr(rs, name), getattr(dense, name), err_msg=name)
    if w is not None:
        with np.errstate(all="ignore"):  # (an infinity)
            wsum, mean, var = _weighted_ref(x, w, policy == "omit")
        assert_close(rs.count, wsum, rtol=1e-15, name="weight sum")
        finite = np.isfinite(var)
        assert_close(rs.mean[finite], mean[finite], rtol=1e-14,
                     atol=1e-14 * np.sqrt(var[finite]), name="mean")
        assert_close(rs.var[finite], var[finite], rtol=1e-13, name="var")
        np.testing.assert_array_equal(np.isfinite(rs.var), finite)
    else:
        with np.errstate(invalid="ignore"):
            assert_stats(rs, ref_stats(x, -1, policy), rtol=RTOL)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("policy", ["omit", "propagate"])
@pytest.mark.parametrize("weighted", [False, True])
def test_every_csr_route_matches_the_references(rng, monkeypatch, route, policy, weighted):
    x = _data(rng, (300, 9), dtype="float32")
    x[5, 4] = np.inf
    w = None
    if weighted:
        w = rng.random(300) * 3
        w[::7] = 0.0
    _force_route(monkeypatch, route)
    _check_csr_against_the_references(x, w, policy)


def test_csr_column_blocks_give_one_partitions_bits(rng, monkeypatch):
    # the blocked route adds each column's entries in row order, as one partition does:
    # the same bits for any block size and thread count
    x = _data(rng, (2000, 37), density=0.5, nan=0.01)
    s = sparse.csr_array(x)
    monkeypatch.setattr(cpu_sparse, "MAX_PARTS", 1)
    monkeypatch.setattr(cpu_sparse, "_csr_route", lambda *shape: "parts")
    one = nbbn.RunningStats(-1, nan_policy="omit").update(s)
    for block_columns, nthreads in [(1, 2), (4, 1), (4, 2), (16, 2)]:
        _force_route(monkeypatch, "blocks", block_columns)
        monkeypatch.setattr(cpu, "THREADED_MIN_ELEMENTS", 1)
        with cpu.thread_limit(nthreads):
            rs = nbbn.RunningStats(-1, nan_policy="omit").update(s)
        for name in ("count", "mean", "var", "min", "max"):
            np.testing.assert_array_equal(getattr(rs, name), getattr(one, name),
                                          err_msg=f"{name}, blocks of {block_columns}")


@pytest.mark.parametrize("weighted", [False, True])
def test_prefetching_partitions_give_the_same_bits(rng, monkeypatch, weighted):
    # the build for records larger than L2 prefetches them, and changes nothing else
    x = _data(rng, (3000, 41), density=0.3, nan=0.01)
    s = sparse.csr_array(x)
    w = rng.random(3000) * 2 if weighted else None
    runs = []
    for l2_bytes in (1 << 40, 0):
        monkeypatch.setattr(cpu_sparse, "L2_BYTES", l2_bytes)
        monkeypatch.setattr(cpu_sparse, "_csr_route", lambda *shape: "parts")
        runs.append(nbbn.RunningStats(-1, nan_policy="omit").update(s, sample_weight=w))
    for name in ("count", "mean", "var", "min", "max", "nan_count"):
        np.testing.assert_array_equal(getattr(runs[1], name), getattr(runs[0], name),
                                      err_msg=name)


@pytest.mark.parametrize("route", ["parts", "parts_ahead", "blocks"])
def test_one_pass_columns_far_from_their_first_entry_are_read_again(rng, monkeypatch,
                                                                    route):
    """Unweighted CSR partitions and column blocks sum each column in one pass around
    its first finite entry; a column whose first entry lies far from its mean (1.2e6
    among 20,000 values near 0: the sums cancel by a factor of about 20,000) is read
    again around its mean, and a column that holds an infinity in both passes. Each
    against the reference, and the partitions' bits equal to the blocks'."""
    x = _data(rng, (20000, 9), nan=0.01)
    x[0, 2] = 1234567.8901  # (column 2: its first entry, then values near 0, no zeros)
    x[1:, 2] = rng.standard_normal(19999)
    x[0, 3] = -3.3e4  # (column 3: the same below, among zeros)
    x[7, 6] = np.inf  # (column 6: two passes)
    s = sparse.csr_array(x)
    _force_route(monkeypatch, route, block_columns=4)
    monkeypatch.setattr(cpu_sparse, "MAX_PARTS", 1)
    out = {}
    for policy in ("omit", "propagate"):
        rs = nbbn.RunningStats(-1, nan_policy=policy).update(s)
        with np.errstate(invalid="ignore"):
            assert_stats(rs, ref_stats(x, -1, policy), rtol=RTOL)
        out[policy] = rs
    _force_route(monkeypatch, "parts" if route == "blocks" else "blocks", block_columns=4)
    other = nbbn.RunningStats(-1, nan_policy="omit").update(s)
    for name in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(other, name), getattr(out["omit"], name),
                                      err_msg=name)


def test_csr_routes_chosen_by_shape(monkeypatch):
    # as measured (docs/benchmarks.md, "Wide CSR matrices", "The AMD host again",
    # "Fifteenth session"; scripts/sparse_routes.py): (rows, columns, entries)
    monkeypatch.setattr(cpu_sparse, "BLOCK_COLUMNS", 4096)
    route = cpu_sparse._csr_route
    assert route(100, 100_000, 100_000) == "csc"  # one entry per column
    assert route(1_000_000, 30, 10_000_000) == "parts"  # few columns
    assert route(10_000, 10_000, 1_000_000) == "parts"  # records in cache, 2 partitions
    assert route(160, 10_000, 160_000) == "blocks"  # records in cache, one partition
    assert route(1600, 100_000, 1_600_000) == "blocks"  # rows of 1,000 entries
    assert route(6400, 100_000, 6_400_000) == "parts"  # 64 per column, two partitions
    assert route(64_000, 1_000_000, 64_000_000) == "blocks"  # two partitions too large
    # rows of 10: tocsc() below 16 entries per column, partitions from there (the one
    # pass reads a line of the record per entry); weighted (two passes), from 32
    assert route(80_000, 100_000, 800_000) == "csc"
    assert route(160_000, 100_000, 1_600_000) == "parts"
    assert route(1_600_000, 1_000_000, 16_000_000) == "parts"
    assert route(160_000, 100_000, 1_600_000, True) == "csc"
    assert route(320_000, 100_000, 3_200_000, True) == "parts"
    assert route(640_000, 100_000, 6_400_000) == "parts"  # 64 per column


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_rows_as_channels(rng, fmt):
    x = _data(rng, (9, 300))
    rs = nbbn.RunningStats(0, nan_policy="omit").update(_sparse(x, fmt))
    assert_stats(rs, ref_stats(x, 0, "omit"), rtol=RTOL)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_partitions_and_threads_do_not_change_the_bits(rng, fmt):
    # 600,000 stored values: more than one partition and the thread pool (cpu_sparse)
    x = _data(rng, (60_000, 100), density=0.1, nan=0.001)
    s = _sparse(x, fmt)
    rs = nbbn.RunningStats(1, nan_policy="omit").update(s)
    assert_stats(rs, ref_stats(x, 1, "omit"), rtol=RTOL)
    with cpu.thread_limit(1):
        one = nbbn.RunningStats(1, nan_policy="omit").update(s)
    for name in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(one, name), getattr(rs, name), err_msg=name)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_weights(rng, fmt, policy):
    x = _data(rng, (500, 6))
    w = rng.random(500) * 3
    w[::7] = 0.0  # rows of weight 0 are absent
    rs = nbbn.RunningStats(-1, nan_policy=policy).update(_sparse(x, fmt), sample_weight=w)
    wsum, mean, var = _weighted_ref(x, w, policy == "omit")
    assert rs.weighted
    assert_close(rs.count, wsum, rtol=1e-14, name="weight sum")
    assert_close(rs.mean, mean, rtol=1e-14, atol=1e-14 * np.sqrt(var), name="mean")
    assert_close(rs.var, var, rtol=1e-13, name="var")
    kept = x[w > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mn = np.nanmin(kept, 0) if policy == "omit" else kept.min(0)
    np.testing.assert_array_equal(rs.min, mn)


def test_integer_weights_equal_repeated_rows(rng):
    x = _data(rng, (200, 5), nan=0)
    w = rng.integers(0, 4, 200)
    rs = nbbn.RunningStats(-1).update(sparse.csr_array(x), sample_weight=w)
    ref = ref_stats(np.repeat(x, w, axis=0), -1)
    np.testing.assert_array_equal(rs.count, ref.count)
    assert_close(rs.mean, ref.mean, rtol=RTOL, atol=RTOL * ref.std, name="mean")
    assert_close(rs.var, ref.var, rtol=RTOL, name="var")


def test_weighted_zeros_of_tiny_weight_next_to_large_ones():
    # the zeros' weight is the total less the stored rows' weight: both summed as
    # double-doubles, so a zero of weight 1e-20 among weights of 1 still counts
    x = np.array([[1.0], [2.0], [0.0]])
    w = np.array([1.0, 1.0, 1e-20])
    rs = nbbn.RunningStats(-1).update(sparse.csr_array(x), sample_weight=w)
    assert rs.count[0] == 2.0 + 1e-20
    assert rs.min[0] == 0.0
    assert_close(rs.mean, [3.0 / (2.0 + 1e-20)], rtol=1e-16, name="mean")


def test_duplicates_are_summed_and_int64_indices_read():
    coo = sparse.coo_array((np.array([1.0, 2.0, 5.0]), (np.array([0, 0, 1]), np.array([0, 0, 1]))),
                           shape=(3, 2))
    rs = nbbn.RunningStats(-1).update(coo)
    assert_stats(rs, ref_stats(coo.toarray(), -1), rtol=RTOL)
    csr = sparse.csr_array(coo)
    wide = sparse.csr_array((csr.data, csr.indices.astype(np.int64), csr.indptr.astype(np.int64)),
                            shape=csr.shape)
    assert wide.indices.dtype == np.int64
    np.testing.assert_array_equal(nbbn.RunningStats(-1).update(wide).mean, rs.mean)


def test_infinities_as_numpy(rng):
    x = np.zeros((6, 3))
    x[1, 0] = np.inf
    x[2, 0] = 4.0
    x[1, 1] = np.inf
    x[2, 1] = -np.inf
    x[3, 2] = 1.0
    rs = nbbn.RunningStats(-1).update(sparse.csc_array(x))
    with np.errstate(invalid="ignore"):
        assert_close(rs.mean, x.mean(0), rtol=1e-15, name="mean")  # inf, NaN exactly
    np.testing.assert_array_equal(rs.inf_count, [1, 2, 0])
    assert np.isnan(rs.var[:2]).all()
    assert_close(rs.var[2], np.var(x[:, 2]), rtol=1e-15, name="var")


def test_sparse_and_dense_batches_merge(rng):
    a, b = _data(rng, (300, 4)), _data(rng, (200, 4))
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(sparse.csr_array(a)).update(b)
    assert_stats(rs, ref_stats(np.concatenate([a, b]), -1, "omit"), rtol=RTOL)


def test_empty_and_all_zero_matrices():
    rs = nbbn.RunningStats(-1).update(sparse.csr_array((0, 3)))
    assert rs.num_channels == 3  # an empty batch fixes the channel count
    rs.update(sparse.csr_array((5, 3)))
    np.testing.assert_array_equal(rs.count, [5, 5, 5])
    np.testing.assert_array_equal(rs.mean, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(rs.var, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(rs.max, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("make, kwargs, exc, match", [
    (lambda: sparse.csr_array(np.ones((4, 3))), {"backend": "cuda"}, TypeError, "CPU backend"),
    (lambda: sparse.csr_array(np.ones((4, 3))), {"channel_axis": 2}, ValueError,
     "does not fit a sparse"),
    (lambda: sparse.csr_array(np.ones((4, 3), np.complex128)), {}, TypeError, "complex"),
    pytest.param(lambda: sparse.csr_array(np.ones((4, 3), np.longdouble)), {}, TypeError,
                 "float16/32/64", marks=pytest.mark.skipif(
                     np.dtype(np.longdouble).itemsize == 8, reason="longdouble is float64")),
    (lambda: sparse.coo_array(np.ones(4)), {}, ValueError, "1-d sparse"),
    (lambda: sparse.csr_array(np.ones((4, 5))), {}, ValueError, "5 channels"),
    (lambda: sparse.csr_array(np.array([[np.nan, 1.0, 2.0]])), {"nan_policy": "raise"},
     ValueError, "NaN"),
])
def test_bad_input_leaves_the_state_unchanged(rng, make, kwargs, exc, match):
    x = _data(rng, (50, 3), nan=0)
    axis = kwargs.pop("channel_axis", -1)
    rs = nbbn.RunningStats(-1, **kwargs)
    if kwargs.get("backend") != "cuda":
        rs.update(x)
    before = rs.to_dict()
    rs.channel_axis = axis
    with pytest.raises(exc, match=match):
        rs.update(make())
    rs.channel_axis = -1
    after = rs.to_dict()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def _malformed(fmt: str, indices=None, indptr=None) -> sparse.csr_array:
    """A (4, 3) matrix in ``fmt`` ("csr" or "csc") whose arrays were then replaced,
    as scipy allows after construction without checking them."""
    x = sparse.csr_array(np.arange(1.0, 13.0).reshape(4, 3)).asformat(fmt)
    if indices is not None:
        x.indices = np.asarray(indices, x.indices.dtype)
    if indptr is not None:
        x.indptr = np.asarray(indptr, x.indptr.dtype)
    return x


# the kernels trust the index arrays: a wrong one would read or write outside them
# (scipy's own x.sum(0) crashes the process on some of these)
MALFORMED = {
    "index past the end": ("csr", [0, 1, 2, 0, 1, 5, 0, 1, 2, 0, 1, 2], None,
                           r"0 to 5, expected 0 to 2"),
    "negative index": ("csr", [0, 1, 2, -1, 1, 2, 0, 1, 2, 0, 1, 2], None, r"-1 to 2"),
    "huge unsorted index": ("csr", [0, 1, 2, 10**7, 1, 0, 0, 1, 2, 0, 1, 2], None,
                            r"column indices run from 0 to 10000000"),
    "row index of a CSC": ("csc", [0, 1, 2, 3, 0, 1, 2, 9, 0, 1, 2, 3], None,
                           r"row indices run from 0 to 9, expected 0 to 3"),
    "indptr falls": ("csr", None, [0, 3, 9, 6, 12], r"rise from 0 to at most 12.* fall"),
    "indptr past the entries": ("csr", None, [0, 3, 6, 9, 15], r"0\.\.15"),
    "indptr not from 0": ("csr", None, [1, 3, 6, 9, 12], r"1\.\.12"),
    "indptr too short": ("csr", None, [0, 3, 6, 12], r"indptr of 5 offsets"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_matrices_are_refused_not_read(rng, case):
    fmt, indices, indptr, match = MALFORMED[case]
    bad = _malformed(fmt, indices, indptr)
    rs = nbbn.RunningStats(-1).update(_data(rng, (20, 3), nan=0))
    before = rs.to_dict()
    with pytest.raises(ValueError, match="malformed " + fmt.upper() + " matrix: .*" + match):
        rs.update(bad)
    for k, v in before.items():
        np.testing.assert_array_equal(rs.to_dict()[k], v, err_msg=k)
    if fmt == "csr":  # the scaler's sparse transform reads the same arrays (scipy's
        # checks, through scikit-learn's validation, catch some indptr errors first)
        sc = StandardScaler(with_mean=False).fit(_malformed("csr"))
        with pytest.raises(ValueError, match="malformed CSR matrix|index pointer"):
            sc.transform(bad)
    assert nbbn.RunningStats(-1).update(_malformed(fmt)).count.tolist() == [4, 4, 4]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("itype", [">i4", ">i8"])
def test_byte_swapped_index_arrays_are_read(rng, monkeypatch, route, fmt, itype):
    """Index arrays assigned byte-swapped (``X.indices = X.indices.astype('>i4')``:
    scipy converts only those given to its constructors) are read in native order, by
    the checks, the statistics (weighted too, duplicates summed) and the scaler's
    transform in place (mutant: numba's TypingError, "non-precise type pyobject"); a
    wrong index among them is still refused."""
    _force_route(monkeypatch, route)
    x = _data(rng, (60, 5), nan=0)

    def swapped(m):
        m.indices, m.indptr = m.indices.astype(itype), m.indptr.astype(itype)
        return m

    s = swapped(_sparse(x, fmt))
    w = rng.random(60)
    assert_stats(nbbn.RunningStats(-1).update(s), ref_stats(x, -1), rtol=RTOL)
    dense = nbbn.RunningStats(-1).update(x, sample_weight=w)
    weighted = nbbn.RunningStats(-1).update(s, sample_weight=w)
    np.testing.assert_allclose(weighted.var, dense.var, rtol=1e-12)
    dup = swapped(sparse.csr_array((np.array([1.0, 2.0]), np.array([1, 1]), np.array([0, 2])),
                                   shape=(1, 2)))
    np.testing.assert_array_equal(nbbn.RunningStats(-1).update(dup).mean, [0.0, 3.0])
    scaler = StandardScaler(with_mean=False).fit(s)
    np.testing.assert_allclose(scaler.var_, x.var(axis=0), rtol=1e-12)
    t = swapped(sparse.csr_matrix(x))
    scaler.transform(t, copy=False)
    np.testing.assert_allclose(t.toarray(), x / scaler.scale_, rtol=1e-15)
    s.indices[3] = 99
    with pytest.raises(ValueError, match="malformed"):
        nbbn.RunningStats(-1).update(s)


def test_weight_and_histogram_errors(rng):
    s = sparse.csr_array(_data(rng, (10, 3), nan=0))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        nbbn.RunningStats(-1).update(s, sample_weight=np.ones(9))
    with pytest.raises(ValueError, match="but axis 0 is the channel axis here"):
        nbbn.RunningStats(0).update(s, sample_weight=np.ones(3))
    rs = nbbn.RunningStats(-1)
    rs.histogram = Histogram(np.zeros((3, 256), np.int64))
    with pytest.raises(ValueError, match="histogram"):
        rs.update(s)


_VALUES = st.sampled_from([0.0, 0.0, 0.0, 1.5, -2.0, 1e3, 7.25, np.nan, np.inf, -np.inf])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 12).flatmap(lambda n: st.tuples(
           st.lists(st.lists(_VALUES, min_size=3, max_size=3), min_size=n, max_size=n),
           st.lists(st.integers(0, 3), min_size=n, max_size=n))),
       st.sampled_from(["csr", "csc"]), st.sampled_from(["omit", "propagate"]),
       st.booleans(), st.sampled_from(["auto", *ROUTES]))
def test_any_small_matrix_as_its_dense_form(rows_and_weights, fmt, policy, weighted, route):
    """Empty columns and matrices, all-NaN or all-zero columns, infinities of one or both
    signs, rows of weight 0: the statistics of the sparse form are those of the dense,
    whichever way a CSR matrix is reduced."""
    rows, w = rows_and_weights
    x = np.array(rows, np.float64).reshape(len(rows), 3)
    w = np.array(w, np.float64) if weighted else None
    rs = nbbn.RunningStats(-1, nan_policy=policy)
    ref = nbbn.RunningStats(-1, nan_policy=policy)
    with np.errstate(all="ignore"), pytest.MonkeyPatch.context() as mp:
        if route != "auto":
            _force_route(mp, route)
        rs.update(_sparse(x, fmt), sample_weight=w)
        ref.update(x, sample_weight=w)
    if ref.num_channels is None:
        assert rs.num_channels is None
        return
    for name in ("count", "nan_count", "inf_count", "min", "max"):
        np.testing.assert_array_equal(getattr(rs, name), getattr(ref, name), err_msg=name)
    with np.errstate(all="ignore"):
        for name in ("mean", "var"):
            assert_close(getattr(rs, name), getattr(ref, name), rtol=1e-14, atol=1e-12,
                         name=name)


def test_the_normalizer_refuses_sparse_input_clearly():
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=-1)
    with pytest.raises(TypeError, match=r"scipy sparse matrix \(csr_array\).*toarray"):
        norm(sparse.csr_array(np.ones((2, 3))))


# ---------------------------------------------------------------- the scikit-learn scaler

sk = pytest.importorskip("sklearn.preprocessing")
from nbbn.sklearn import StandardScaler  # noqa: E402


class _MyCsrMatrix(sparse.csr_matrix):
    """A subclass of a scipy sparse class, which scipy's issparse (and scikit-learn) take."""


class _MyCsrArray(sparse.csr_array):
    pass


@pytest.mark.parametrize("cls", [_MyCsrMatrix, _MyCsrArray])
def test_subclasses_of_sparse_classes_are_sparse(cls):
    """An instance of a subclass of a scipy sparse class is read as sparse (mutant: only
    a class defined in scipy.sparse was, and a subclass went down the dense path, where
    numpy read it as an object array); the normalizer and fit refuse it as sparse."""
    x = _data(np.random.default_rng(3), (50, 4))
    rs = nbbn.RunningStats(-1).update(cls(x))
    assert_stats(rs, ref_stats(x, -1), rtol=RTOL)
    scaler = StandardScaler(with_mean=False).fit(cls(np.nan_to_num(x)))
    np.testing.assert_allclose(scaler.var_, np.nan_to_num(x).var(axis=0), rtol=1e-12)
    norm = nbbn.Normalizer(np.zeros(4), np.ones(4), channel_axis=-1)
    with pytest.raises(TypeError, match=rf"scipy sparse matrix \({cls.__name__}\)"):
        norm(cls(x))
    for source in (cls(x), [cls(x)]):
        with pytest.raises(TypeError, match=r"scipy sparse .*RunningStats\(channel_axis"):
            nbbn.fit(source, -1, progress=False)




@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scaler_matches_scikit_learn_on_sparse_splits(rng, fmt, weighted, dtype):
    x = _data(rng, (600, 6), dtype=dtype)
    s = _sparse(x, fmt)
    w = rng.random(600) * 2 if weighted else None
    ours, theirs = StandardScaler(with_mean=False), sk.StandardScaler(with_mean=False)
    for part in np.array_split(np.arange(600), 4):
        sw = None if w is None else w[part]
        ours.partial_fit(s[part], sample_weight=sw)
        theirs.partial_fit(s[part], sample_weight=sw)
    # scikit-learn sums float32 data (and weights) in float32: held to an exact reference
    # instead, and to scikit-learn at its own precision
    tol = 1e-12 if dtype == "float64" else 1e-6
    wsum, mean, var = _weighted_ref(x, np.ones(600) if w is None else w, omit=True)
    assert_close(np.asarray(ours.n_samples_seen_, float), wsum, rtol=1e-14,
                 name="n_samples_seen_")
    assert_close(np.asarray(ours.n_samples_seen_, float), np.asarray(theirs.n_samples_seen_, float),
                 rtol=tol, name="n_samples_seen_ (scikit-learn)")
    assert_close(ours.mean_, mean, rtol=1e-14, atol=1e-14 * np.sqrt(var), name="mean_")
    assert_close(ours.var_, var, rtol=1e-13, name="var_")
    assert_close(ours.var_, theirs.var_, rtol=tol, name="var_ (scikit-learn)")
    for method in ("transform", "inverse_transform"):
        got, exp = getattr(ours, method)(s), getattr(theirs, method)(s)
        assert sparse.issparse(got) and got.format == "csr" and got.dtype == exp.dtype
        assert_close(got.toarray(), exp.toarray(), rtol=1e-6 if dtype == "float32" else 1e-12,
                     name=method)


def test_scaler_sparse_equals_dense_and_copy_false_writes_in_place(rng):
    x = _data(rng, (300, 5))
    dense = StandardScaler(with_mean=False).fit(x)
    s = sparse.csr_array(x)
    sc = StandardScaler(with_mean=False).fit(s)
    assert_close(sc.var_, dense.var_, rtol=RTOL, name="var_")
    assert_close(sc.transform(s).toarray(), dense.transform(x), rtol=2 * RTOL, name="transform")
    data = s.data.copy()
    out = sc.transform(s, copy=False)
    assert out.data is s.data or np.shares_memory(out.data, s.data)
    assert not np.array_equal(s.data, data, equal_nan=True)


def test_scaler_on_a_dataframe_of_sparse_columns_as_scikit_learn(rng):
    """scikit-learn's validation turns a DataFrame of sparse columns into CSR: fit,
    transform, inverse_transform and fit_transform all take it, as scikit-learn's."""
    pd = pytest.importorskip("pandas")
    from sklearn.preprocessing import StandardScaler as SkScaler

    x = np.where(rng.random((40, 3)) < 0.6, 0.0, rng.normal(3, 2, (40, 3)))
    df = pd.DataFrame.sparse.from_spmatrix(sparse.csr_matrix(x), columns=["a", "b", "c"])
    ours, theirs = StandardScaler(with_mean=False).fit(df), SkScaler(with_mean=False).fit(df)
    for method in ("transform", "inverse_transform"):
        got, want = getattr(ours, method)(df), getattr(theirs, method)(df)
        assert type(got) is type(want)
        assert_close(got.toarray(), want.toarray(), rtol=RTOL, name=method)
    got = StandardScaler(with_mean=False).fit_transform(df)
    assert_close(got.toarray(), theirs.transform(df).toarray(), rtol=RTOL, name="fit_transform")


def test_scaler_refuses_centering_and_infinities_keeping_its_fit(rng):
    x = _data(rng, (100, 4), nan=0)
    s = sparse.csr_array(x)
    sc = StandardScaler().fit(x)
    mean = sc.mean_.copy()
    for call in (lambda: sc.partial_fit(s), lambda: sc.fit(s), lambda: sc.transform(s),
                 lambda: sc.inverse_transform(s)):
        with pytest.raises(ValueError, match="Cannot (un)?center sparse matrices"):
            call()
    np.testing.assert_array_equal(sc.mean_, mean)
    bad = x.copy()
    bad[3, 2] = np.inf
    nc = StandardScaler(with_mean=False).fit(s)
    with pytest.raises(ValueError, match=r"infinity \(1 values, in features 2\)"):
        nc.transform(sparse.csr_array(bad))
    with pytest.raises(ValueError, match="infinity"):
        nc.fit(sparse.csr_array(bad))
    assert_close(nc.var_, StandardScaler(with_mean=False).fit(s).var_, rtol=0, name="var_")


def test_a_failed_fit_keeps_the_earlier_fit(rng):
    x = rng.standard_normal((50, 3))
    sc = StandardScaler().fit(x)
    saved = {k: getattr(sc, k) for k in ("mean_", "var_", "scale_", "n_samples_seen_",
                                         "n_features_in_")}
    bad = rng.standard_normal((20, 5))
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        sc.fit(bad)
    for k, v in saved.items():
        np.testing.assert_array_equal(getattr(sc, k), v, err_msg=k)
    np.testing.assert_array_equal(sc.transform(x), StandardScaler().fit(x).transform(x))


def test_a_sparse_npz_without_scipy_names_the_extra(tmp_path, monkeypatch):
    """Without scipy, a scipy sparse .npz is refused when the source is opened, naming
    the extra that installs it (it was "pip install scipy", after a progress bar)."""
    path = tmp_path / "m.npz"
    sparse.save_npz(path, sparse.random(20, 4, density=0.3, format="csr", random_state=0))
    monkeypatch.setitem(sys.modules, "scipy.sparse", None)  # import raises ImportError
    with pytest.raises(nbbn.MissingExtraError, match=r"pip install 'nbbn\[sparse\]'"):
        nbbn.fit(str(path), progress=False)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_implicit_zeros_weight_keeps_the_low_part_of_the_total(fmt):
    """Under "omit", a weighted column's implicit zeros weigh the total weight of the
    rows without a NaN less the stored entries': its low part dropped, a weight of 1
    beside 1e16 gave the variance a negative sign (-2.5e-15 against 2.5e-15)."""
    x = np.array([[5.0], [0.0], [np.nan]])
    w = np.array([1e16, 1.0, 1.0])
    make = sparse.csr_array if fmt == "csr" else sparse.csc_array
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(make(x), sample_weight=w)
    dense = nbbn.RunningStats(-1, nan_policy="omit").update(x, sample_weight=w)
    np.testing.assert_allclose(rs.var, dense.var, rtol=1e-12)
    assert rs.var[0] > 0


# ------------------------------------------- cpu_sparse: bounds, weights, threads (mutants)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_a_columns_weight_is_the_total_rounded_once(monkeypatch, route, fmt):
    """A column without a NaN weighs the total weight, summed as a double-double and
    rounded once (math.fsum): weights 1, 2**-53, 2**-53 sum to 1 + 2**-52, which a
    float sum (or the double-double's high part alone) makes 1."""
    _force_route(monkeypatch, route)
    x = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 3.0]])
    w = np.array([1.0, 2.0**-53, 2.0**-53])
    rs = nbbn.RunningStats(-1).update(_sparse(x, fmt), sample_weight=w)
    np.testing.assert_array_equal(rs.count, [math.fsum(w.tolist())] * 2)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_a_redone_columns_weight_is_the_total_rounded_once(monkeypatch, route, fmt):
    """A column redone as dense data (sums beyond float64's range) keeps the total
    weight rounded once, as every other column (mutant: it took the redo's merge of
    the zeros' and stored rows' weights, 5.23 beside 5.2299999999999995, and the
    scaler's ``n_samples_seen_`` became a per-feature array)."""
    _force_route(monkeypatch, route)
    x = np.zeros((7, 2))
    x[:3, 0] = [1.7e308, -1.7e308, 1.7e308]
    x[:, 1] = np.arange(7.0)
    w = np.array([1.9, 1.9, 0.1, 0.2, 0.3, 0.7, 0.13])
    rs = nbbn.RunningStats(-1).update(_sparse(x, fmt), sample_weight=w)
    dense = nbbn.RunningStats(-1).update(x, sample_weight=w)
    np.testing.assert_array_equal(rs.count, [math.fsum(w.tolist())] * 2)
    np.testing.assert_array_equal(rs.count, dense.count)
    assert np.isfinite(rs.mean[0]) and np.isposinf(rs.var[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (the overflowing variance)
        scaler = StandardScaler(with_mean=False).fit(_sparse(x, fmt), sample_weight=w)
    assert np.ndim(scaler.n_samples_seen_) == 0


@pytest.mark.parametrize("route", ROUTES)
def test_implicit_zeros_weight_keeps_the_stored_rows_low_part_on_every_route(monkeypatch,
                                                                           route):
    """``test_implicit_zeros_weight_keeps_the_low_part_of_the_total`` (a 3x1 matrix goes
    through tocsc()) on each CSR route: the stored rows' weight 1e16 + 1 (a NaN's row)
    is a double-double in the partitions' and blocks' records too."""
    _force_route(monkeypatch, route)
    x = np.array([[5.0], [0.0], [np.nan]])
    w = np.array([1e16, 1.0, 1.0])
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(sparse.csr_array(x), sample_weight=w)
    dense = nbbn.RunningStats(-1, nan_policy="omit").update(x, sample_weight=w)
    np.testing.assert_allclose(rs.var, dense.var, rtol=1e-12)
    np.testing.assert_array_equal(rs.count, dense.count)
    assert rs.var[0] > 0


@pytest.mark.parametrize("policy", ["omit", "propagate"])
@pytest.mark.parametrize("weighted", [False, True])
def test_many_csr_partitions_match_the_references(rng, monkeypatch, policy, weighted):
    """CSR partitions of a few entries (of rows, weighted) each: every entry in exactly
    one partition, an infinity's and a far first entry's columns read again."""
    monkeypatch.setattr(cpu_sparse, "MIN_PART_ENTRIES", 1)
    monkeypatch.setattr(cpu_sparse, "PART_ENTRIES_PER_COLUMN", 1)
    monkeypatch.setattr(cpu_sparse, "_csr_route", lambda *shape: "parts")
    x = _data(rng, (300, 7))
    x[5, 4] = np.inf
    x[0, 5], x[1:, 5] = 3.0e6, rng.standard_normal(299)
    w = None
    if weighted:
        w = rng.random(300) * 3
        w[::7] = 0.0
    _check_csr_against_the_references(x, w, policy)


@pytest.mark.parametrize("policy", ["omit", "propagate"])
def test_column_blocks_on_two_threads_read_columns_again(rng, monkeypatch, policy):
    """Unweighted blocks of one column on two threads: the second thread's cursors skip
    the first's blocks, and its columns read again (an infinity, a far first entry)
    start from the block's own entries."""
    x = _data(rng, (200, 6), nan=0.02)
    x[3, 1], x[9, 3] = np.inf, -np.inf
    x[0, 5] = 1e6
    _force_route(monkeypatch, "blocks", block_columns=1)
    monkeypatch.setattr(cpu, "THREADED_MIN_ELEMENTS", 1)
    with cpu.thread_limit(2):
        rs = nbbn.RunningStats(-1, nan_policy=policy).update(sparse.csr_array(x))
    with np.errstate(invalid="ignore"):
        assert_stats(rs, ref_stats(x, -1, policy), rtol=RTOL)


def test_scale_columns_in_several_row_partitions(rng, monkeypatch):
    monkeypatch.setattr(cpu_sparse, "MIN_PART_ENTRIES", 1)  # a partition per row or two
    x = _data(rng, (50, 6), nan=0)
    s = sparse.csr_array(x)
    f = rng.random(6) + 0.5
    cpu_sparse.scale_columns(s, f)
    np.testing.assert_array_equal(s.toarray(), x * f)


def test_csr_route_thresholds_at_their_bounds(monkeypatch):
    """Each threshold of ``_csr_route`` at its bound (a route is a choice of speed, not
    of results: this pins the measured bounds)."""
    monkeypatch.setattr(cpu_sparse, "BLOCK_COLUMNS", 4096)
    route = cpu_sparse._csr_route
    assert route(10, 100, 400) == "parts"  # 4 entries per column: not tocsc()
    assert route(10, 100, 399) == "csc"
    assert route(1000, 10_000, 640_000) == "parts"  # 64 per column, records fit
    assert route(1000, 10_000, 639_999) == "blocks"
    assert route(1000, 131_072, 8_388_608) == "parts"  # two partitions: 32 MiB exactly
    assert route(1000, 131_073, 8_388_672) == "blocks"
    assert route(4000, 100_000, 400_000) == "blocks"  # 4 entries per row of each block
    assert route(4001, 100_000, 400_000) == "csc"
    assert route(160_000, 100_000, 1_599_999) == "csc"  # short rows: 16 per column
    assert route(320_000, 100_000, 3_199_999, True) == "csc"  # weighted: 32


@pytest.mark.parametrize("route", ["csc", "parts", "blocks"])
def test_unsigned_integer_matrices_have_correctly_rounded_means(rng, monkeypatch, route):
    """uint32 entries (as int32's in test_mean_rounding): read as integers, and their
    columns centred on integers, so each mean is the exact one rounded once."""
    from fractions import Fraction

    _force_route(monkeypatch, route)
    d = rng.integers(0, 2**32, size=(301, 24), dtype=np.uint32)
    d[:, ::3] = rng.integers(2**31, 2**31 + 3, size=(301, 8), dtype=np.uint32)
    d *= rng.random(d.shape) < 0.5
    rs = nbbn.RunningStats(-1).update(sparse.csr_array(d))
    want = np.array([float(Fraction(int(s), 301)) for s in d.astype(np.int64).sum(0)])
    np.testing.assert_array_equal(rs.mean, want)


@pytest.mark.parametrize("route", ["blocks", "parts"])
def test_weighted_columns_far_from_zero_are_centred_on_their_first_entry(rng, monkeypatch,
                                                                          route):
    """The weighted passes sum ``w (x - shift)`` around each column's first finite entry,
    then the deviations from that first mean: columns of values near 1e8 with a spread
    of 1 keep their variance to float64 precision (mutant: the shift taken at the second
    entry, the first summed around 0, left the first mean 1e8 / n off and the second
    pass's sums cancelling: a variance off by about 1e-6 of itself)."""
    x = 1e8 + rng.standard_normal((400, 3))
    w = rng.integers(1, 4, 400).astype(np.float64)
    _force_route(monkeypatch, route)
    rs = nbbn.RunningStats(-1).update(sparse.csr_array(x), sample_weight=w)
    sw, mean, var = _weighted_ref(x, w, omit=False)
    np.testing.assert_array_equal(rs.count, sw)
    np.testing.assert_allclose(rs.mean, mean, rtol=1e-15)
    np.testing.assert_allclose(rs.var, var, rtol=1e-11)


@pytest.mark.parametrize("route", ROUTES)
def test_overflowing_sums_with_nans_omitted_are_redone(monkeypatch, route):
    """A column whose stored values' sums overflow and which holds NaNs: under "omit"
    it is redone as dense data too (mutant: only columns without a NaN were), its mean
    finite and equal to the dense input's; under "propagate" it stays NaN."""
    _force_route(monkeypatch, route)
    x = np.zeros((400, 2))
    x[0::4, 0], x[1::4, 0], x[2::8, 0] = 1.7e308, -1.7e308, np.nan  # mean 0 of 350
    x[:, 1] = 2.0
    s = sparse.csr_array(x)
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(s)
    dense = nbbn.RunningStats(-1, nan_policy="omit").update(x)
    np.testing.assert_array_equal(rs.mean, [0.0, 2.0])
    np.testing.assert_array_equal(rs.mean, dense.mean)
    np.testing.assert_array_equal(rs.count, [350, 400])
    assert np.isposinf(rs.var[0]) and rs.var[1] == 0.0
    assert np.isnan(nbbn.RunningStats(-1).update(s).mean[0])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_duplicates_of_compressed_input_are_summed_on_a_copy(fmt):
    """A CSR or CSC matrix built with a repeated entry (scipy's meaning: their sum) is
    read as its sum (mutant: duplicates left as two values of one row), and the user's
    matrix keeps its entries (the sum is taken on a copy). A COO matrix's duplicates are
    summed by scipy's own conversion, so only compressed input reaches the check."""
    data, idx, ptr = np.array([1.0, 2.0, 5.0, 7.0]), np.array([0, 0, 1, 1]), np.array([0, 3, 4])
    m = getattr(sparse, f"{fmt}_array")((data, idx, ptr), shape=(2, 2))
    assert not m.has_canonical_format
    dense = m.toarray()  # (scipy sums the duplicates)
    rs = nbbn.RunningStats(-1).update(m)
    assert_stats(rs, ref_stats(dense, -1), rtol=RTOL)
    np.testing.assert_array_equal(m.data, data)
    assert not m.has_canonical_format


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("weighted", [False, True])
def test_nans_omitted_need_no_dense_redo(rng, monkeypatch, route, weighted):
    """Columns with NaNs, under "omit", come out of the sparse kernels finite: none is
    redone as dense data (mutant: the CSC kernel's second pass summed the NaNs, and the
    redo for overflowed sums repaired every such column, at the dense kernels' cost)."""
    _force_route(monkeypatch, route)
    x = _data(rng, (300, 6), nan=0.05)
    x[7::40] = np.nan  # (a NaN in every column)
    prepared = []
    real = cpu.prepare
    monkeypatch.setattr(cpu, "prepare", lambda *a, **k: prepared.append(1) or real(*a, **k))
    w = rng.integers(0, 3, 300).astype(np.float64) if weighted else None
    rs = nbbn.RunningStats(-1, nan_policy="omit").update(sparse.csr_array(x),
                                                          sample_weight=w)
    assert prepared == []
    assert np.isfinite(rs.mean).all() and np.isfinite(rs.var).all()
    if weighted:  # an infinity in a row of weight 0 is absent, from both passes
        x[3] = np.inf
        w[3] = 0.0
        rs = nbbn.RunningStats(-1, nan_policy="omit").update(sparse.csr_array(x),
                                                              sample_weight=w)
        assert prepared == [] and not rs.inf_count.any()
        assert np.isfinite(rs.mean).all() and np.isfinite(rs.var).all()
