"""The mean of integers comes back correctly rounded: numpy's ``mean`` bit for bit.

A stream of integers (uint8 images, int16 audio, integers stored as float) has an exact
sum, and numpy's mean of it is that sum divided once. nbbn's mean is a double-double
(``nbbn/_merge.py``): the block means keep their quotient's remainder (``dd_quot``) and
Chan's merge keeps the rounding errors of its difference, product and quotient, so the
float64 mean it reports is the exact mean rounded once. Before, the block quotient and
the merge each rounded, and about one channel in 40 came back an ulp off numpy's.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import skip_large_for_simulator

import nbbn

# (shape, channel axis, dtype, value range): channels-first and channels-last, short and
# long rows, blocks split into partitions on the CPU, 8- to 64-bit integers, and
# integers held as float32 and float64 (the floating kernels' shifted sums; float64
# channels-first blocks of integers centre on an integer). Not float64 tables of 2-64
# rows and 64 or more channels (cpu_few_rows), nor float64 channels-first rows shorter
# than 100 (the grouped kernel): there integers held as float64 come back within about
# 2**-52 of their spread, as numpy's mean of float data (docs/numerics.md)
CASES = [
    ((12, 37, 301), 1, "uint8", (0, 256)),
    ((40, 17, 9, 3), -1, "uint8", (0, 256)),
    ((5000, 8), -1, "int16", (-30000, 30000)),
    ((6, 40, 2000), 1, "float32", (0, 256)),
    ((3000, 45), -1, "float32", (-1000, 1000)),
    ((9, 33, 401), 1, "int32", (-(2 ** 20), 2 ** 20)),
    ((9, 33, 401), 1, "int64", (-(2 ** 40), 2 ** 40)),
    ((2500, 30), -1, "float64", (0, 10 ** 6)),
    ((4, 23, 7), 1, "uint8", (0, 256)),  # small enough for the CUDA simulator
    # float64 channels-first: long rows (block_fast) and one column (read as one long
    # row); int64 channels-last up to 2**40 (the centre on an integer: around the
    # unrounded one, values of 2**40 were an ulp off)
    ((6, 40, 2000), 1, "float64", (-1000, 1000)),
    ((3000, 1), -1, "float64", (-1000, 1000)),
    ((3000, 8), -1, "int64", (-(2 ** 40), 2 ** 40)),
    # integers held as float64 in channels-last blocks, up to 2**39 (cpu_stats.centre:
    # around the unrounded mean, from 2**37 the deviations rounded; up to 838 ulp off)
    ((5000, 8), -1, "float64", (-(2 ** 39), 2 ** 39)),
    ((7, 5, 4, 3), -1, "uint8", (0, 256)),  # channels-last, small for the simulator too
]
# tables of few rows and many channels (cpu_few_rows): were up to 989 ulp off
FEW_ROWS_CASES = [
    ((29, 70), -1, "int32", (-(2 ** 31), 2 ** 31)),
    ((13, 300), -1, "float32", (-(2 ** 20), 2 ** 20)),
    ((5, 256), -1, "uint16", (0, 2 ** 16)),
    ((4, 96), -1, "float16", (-2048, 2048)),
]
CASES += FEW_ROWS_CASES


def _exact_means(batches, axis):
    x = np.concatenate(batches, axis=0)
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    sums = x.astype(np.int64).sum(axis=axes)
    n = x.size // x.shape[axis]
    return np.array([float(Fraction(int(s), n)) for s in sums])


@pytest.mark.parametrize("shape, axis, dtype, bounds", CASES,
                         ids=[f"{c[2]}-{'x'.join(map(str, c[0]))}" for c in CASES])
def test_integer_means_are_correctly_rounded(backend, rng, shape, axis, dtype, bounds):
    skip_large_for_simulator(backend, 3 * int(np.prod(shape)))
    if backend == "cuda" and (shape, axis, dtype, bounds) in FEW_ROWS_CASES:
        pytest.skip("a CPU kernel's case (cpu_few_rows); 4-22 s each on the simulator")
    batches = [rng.integers(*bounds, size=(shape[0] + k,) + shape[1:]).astype(dtype)
               for k in range(3)]
    rs = nbbn.RunningStats(axis, backend=backend)
    for b in batches:  # three batches: block means and merges
        rs.update(b)
    want = _exact_means(batches, axis)
    off = np.flatnonzero(rs.mean != want)
    assert off.size == 0, f"channels {off[:5]}: {rs.mean[off[:5]]} != {want[off[:5]]}"
    if dtype in ("uint8", "int16", "int32"):  # numpy's mean of an exact integer sum agrees
        whole = np.concatenate(batches, axis=0)
        axes = tuple(i for i in range(whole.ndim) if i != axis % whole.ndim)
        assert np.array_equal(rs.mean, whole.mean(axis=axes))


# weighted (``sample_weight``): channels-first runs long and short (``_weighted_stats``),
# tables and channels-last rows (``_weighted_rows``), 8- to 64-bit integers; the
# kernels centre integers on an integer, where around the unrounded mean int32 means
# came back up to 63 ulp off
WEIGHTED_CASES = [
    ((40, 3, 300), 1, "int32", (-(2 ** 30), 2 ** 30)),
    ((60, 4, 5), 1, "uint8", (0, 256)),
    ((300, 6), -1, "int32", (-(2 ** 30), 2 ** 30)),
    ((200, 5, 3), -1, "int16", (-30000, 30000)),
    ((300, 4), -1, "int64", (-(2 ** 40), 2 ** 40)),
    ((150, 4), -1, "uint16", (0, 2 ** 16)),
]


@pytest.mark.parametrize("quarters", [False, True], ids=["integers", "quarters"])
@pytest.mark.parametrize("shape, axis, dtype, bounds", WEIGHTED_CASES,
                         ids=[f"{c[2]}-{'x'.join(map(str, c[0]))}" for c in WEIGHTED_CASES])
def test_weighted_integer_means_are_correctly_rounded(rng, shape, axis, dtype, bounds,
                                                      quarters):
    """Integer weights (and quarters of them: a power of two apart) of integers give
    the exact weighted mean rounded once, over three batches (merged)."""
    rs = nbbn.RunningStats(axis)
    sums = np.zeros(shape[axis], dtype=object)
    total = 0
    for k in range(3):
        n = shape[0] + k
        if k == 1:  # values next to one another: a mean far from 0 next to the spread
            base = int(rng.integers(bounds[0], bounds[1] - 3))
            x = (base + rng.integers(0, 3, size=(n,) + shape[1:])).astype(dtype)
        else:
            x = rng.integers(*bounds, size=(n,) + shape[1:]).astype(dtype)
        w = rng.integers(0, 7, size=n)
        w[0] = 1
        rs.update(x, sample_weight=w / 4 if quarters else w)
        xm = np.moveaxis(x, axis, -1).reshape(n, -1, shape[axis]).astype(np.int64)
        sums += (xm * w[:, None, None]).sum(axis=(0, 1)).astype(object)
        total += int(w.sum()) * xm.shape[1]
    want = np.array([float(Fraction(int(s), total)) for s in sums])
    off = np.flatnonzero(rs.mean != want)
    assert off.size == 0, f"channels {off[:5]}: {rs.mean[off[:5]]} != {want[off[:5]]}"


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("route", ["csc", "parts", "blocks"])
def test_sparse_integer_means_are_correctly_rounded(rng, route, weighted):
    """scipy sparse matrices of integers (stored entries and implicit zeros), by each
    of the CSR reductions (``cpu_sparse``), centre on integers too: before, 16-31
    columns in 64 came back an ulp or more off the exact mean."""
    sparse = pytest.importorskip("scipy.sparse")
    from nbbn.backends import cpu_sparse

    n, c = 301, 24
    d = rng.integers(-(2 ** 30), 2 ** 30, size=(n, c))
    d[:, ::3] = rng.integers(2 ** 29, 2 ** 29 + 3, size=(n, c // 3))  # near one value
    d *= rng.random((n, c)) < 0.5
    w = rng.integers(0, 5, size=n)
    w[0] = 1
    ww = w if weighted else np.ones(n, np.int64)
    sums, total = (d * ww[:, None]).sum(axis=0), int(ww.sum())
    want = np.array([float(Fraction(int(s), total)) for s in sums])
    st = cpu_sparse.reduce(sparse.csr_array(d.astype(np.int32)), 0,
                           w.astype(np.float64) if weighted else None, route)
    off = np.flatnonzero(st.floats[0] != want)
    assert off.size == 0, f"columns {off[:5]}: {st.floats[0][off[:5]]} != {want[off[:5]]}"


def test_merged_states_keep_the_rounding(rng):
    """States merged with ``+`` in a tree (as nbbn.fit's workers and nbbn.dask merge
    them) give the exact mean rounded once, whatever the split points."""
    x = rng.integers(0, 1000, size=(997, 64)).astype(np.float64)
    want = _exact_means([x], -1)
    for _ in range(5):
        cuts = np.sort(rng.choice(np.arange(1, x.shape[0]), size=6, replace=False))
        parts = [nbbn.RunningStats(-1).update(p) for p in np.split(x, cuts)]
        while len(parts) > 1:
            parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i]
                     for i in range(0, len(parts), 2)]
        assert np.array_equal(parts[0].mean, want)


def test_merges_of_tiny_weights_keep_the_move():
    """Weighted merges whose product of weight and difference underflows: the single
    rounding of the old merge, not a mean left where the heavier part's was (weights
    of 1e-140 merged 1e-300 and 0 into 1e-300 instead of 5e-301)."""
    w = 1e-140
    a = nbbn.RunningStats(-1).update(np.array([[1e-300]]), sample_weight=[w])
    b = nbbn.RunningStats(-1).update(np.array([[0.0]]), sample_weight=[w])
    assert (a + b).mean[0] == 5e-301
    rs = nbbn.RunningStats(-1)
    rs.update(np.array([[1e-160]] * 64), sample_weight=np.full(64, 2.0 ** -499))
    rs.update(np.array([[3e-160]] * 64), sample_weight=np.full(64, 2.0 ** -499))
    assert rs.mean[0] == 2e-160


def test_dask_means_are_correctly_rounded(rng):
    da = pytest.importorskip("dask.array")
    import nbbn.dask

    x = rng.integers(0, 100, size=(401, 24)).astype(np.float64)
    st = nbbn.dask.channel_stats(da.from_array(x, chunks=(37, 24)), channel_axis=1)
    assert np.array_equal(st.compute().mean, _exact_means([x], -1))


def _cancelling_batches(rng, channels):
    """Three int8 batches of 3 rows whose sum is 0 in every channel: thirds such as
    -242/3 in the batch means, which a double-double holds to about 2**-106."""
    a = rng.integers(-60, 61, size=(2, 3, channels))
    rest = -a.sum(axis=(0, 1))
    last = np.stack([rest // 3, rest // 3, rest - 2 * (rest // 3)])
    assert np.abs(last).max() <= 127
    return [a[0].astype(np.int8), a[1].astype(np.int8), last.astype(np.int8)]


@pytest.mark.parametrize("channels", [1, 64])
def test_means_that_cancel_to_zero_are_zero(backend, rng, channels):
    """A merged mean whose exact value is 0 is 0.0, as numpy's (the batches' thirds left
    -3.9e-31): one channel (chan_merge) and 64 (the CPU's vectorized merge), updates in
    a row and states merged with ``+`` in both orders."""
    if backend == "cuda" and channels > 1:  # (29 s on the simulator)
        pytest.skip("the vectorized merge of many channels is the CPU's")
    for _ in range(4 if backend == "cpu" else 2):
        batches = _cancelling_batches(rng, channels)
        rs = nbbn.RunningStats(-1, backend=backend)
        for b in batches:
            rs.update(b)
        parts = [nbbn.RunningStats(-1, backend=backend).update(b) for b in batches]
        for st in (rs, parts[0] + parts[1] + parts[2], (parts[0] + parts[2]) + parts[1]):
            assert np.array_equal(st.mean, np.zeros(channels)), st.mean
            assert np.array_equal(st.mean, np.concatenate(batches).mean(axis=0))


def test_chan_merge_flushes_a_cancelled_mean(rng):
    """``chan_merge`` itself flushes a mean that cancels to 0: on the CPU the merges of
    the test above take the vectorized loop (which copies the flush), and chan_merge
    only its rare channels (counts past 2**52, non-finite terms) and the CUDA kernels'.
    The batches' exact (count, mean as hi + lo, M2), merged in turn, as compiled for the
    CPU and as plain Python; about one case in five left a mean near -1e-31 unflushed."""
    from nbbn import _merge
    from nbbn.backends import cpu_numerics

    def part(b):
        mean = Fraction(int(b.sum()), b.size)
        hi = float(mean)
        return b.size, hi, float(mean - Fraction(hi)), float(
            sum((Fraction(int(v)) - mean) ** 2 for v in b.ravel()))

    for merge in (cpu_numerics.chan_merge, _merge.build(lambda f: f).chan_merge):
        for _ in range(40):
            parts = [part(b) for b in _cancelling_batches(rng, 1)]
            n, hi, lo, m2 = parts[0]
            for p in parts[1:]:
                n, hi, lo, m2 = merge(n, hi, lo, m2, *p)
            assert (n, hi, lo) == (9, 0.0, 0.0) and m2 > 0


def test_small_means_of_floats_are_kept():
    """The flush of a cancelled mean (``_merge.ZERO_FLUSH``, 2**-90 of the spread)
    leaves small means that the data hold: 1 merged with (-1, 3e-20) is 1e-20."""
    a = nbbn.RunningStats(-1).update(np.array([[1.0]]))
    b = nbbn.RunningStats(-1).update(np.array([[-1.0], [3e-20]]))
    assert (a + b).mean[0] == pytest.approx(1e-20, rel=1e-15)
    assert (b + a).mean[0] == pytest.approx(1e-20, rel=1e-15)
    # weighted: a tiny standard deviation next to a large part's mean (a first version
    # scaled the flush by the parts' means too, and this mean came back 0)
    rs = nbbn.RunningStats(-1).update(np.array([[0.0]]), sample_weight=[1.0])
    rs.update(np.array([[1e10]]), sample_weight=[1e-30])
    assert rs.mean[0] == pytest.approx(1e-20, rel=1e-15)


@pytest.mark.parametrize("data", ["quarters", "tight", "normal"])
def test_float16_channels_first_blocks(rng, data):
    """float16 channels-first blocks, also on the portable path (CI's generic pass: the
    ids hold "float16"): the mean exact and the variance to a few ulp. On the
    portable path blocks centred on an integer (a spread of 1e-4 at 0.3 had a variance
    5e5 ulp off); centred on the unrounded mean, quarters' means were 1972 ulp off."""
    from fractions import Fraction

    shape = (2, 4, 4000)
    if data == "quarters":
        x = rng.integers(-100, 100, shape) / 4
    elif data == "tight":
        x = 0.3 + rng.integers(0, 4, shape) * 2.0 ** -12
    else:
        x = rng.normal(3.0, 1.0, shape)
    x = x.astype(np.float16)
    rs = nbbn.RunningStats(1).update(x)
    for c in range(shape[1]):
        v = [Fraction(float(t)) for t in x[:, c].ravel()]
        mean = sum(v) / len(v)
        var = sum((t - mean) ** 2 for t in v) / len(v)
        assert rs.mean[c] == float(mean), c
        assert rs.var[c] == pytest.approx(float(var), rel=4e-15, abs=0.0), c


def test_fortran_ordered_tables(rng):
    """A Fortran-ordered float64 table (a pandas DataFrame's ``to_numpy()``) is read as
    channels-first rows: integers in it came back hundreds of ulp off numpy's mean
    (the blocks' unrounded centre); now numpy's bit for bit, also through the
    scikit-learn scaler."""
    x = np.asfortranarray(rng.integers(-1000, 1000, size=(2001, 5)).astype(np.float64))
    assert np.array_equal(nbbn.RunningStats(-1).update(x).mean, x.mean(axis=0))
    pytest.importorskip("sklearn")
    from nbbn.sklearn import StandardScaler

    assert np.array_equal(StandardScaler().fit(x).mean_, x.mean(axis=0))


@pytest.mark.parametrize("dtype", ["int64", "float64"])
@pytest.mark.parametrize("shape", [(100_000, 2), (4, 256, 256, 2)], ids=["table", "image"])
def test_long_channels_last_blocks_of_wide_integers(shape, dtype):
    """Channels-last blocks of tens of thousands of rows of few channels: a partition's
    first shift (the mean of its head rows) is about a quarter of a standard deviation
    off, and the sum of a block's deviations from it passed 2**53 for values of 2**40
    and rounded (168 ulp off the exact mean in a (100000, 2) int64 table, also as
    float64; in one batch, not in several). Such a block is summed again around its own
    mean (``cpu_stats.sum_rounds``): the exact mean rounded once, for any batching."""
    x = np.random.default_rng(0).integers(-(2 ** 40), 2 ** 40, size=shape).astype(dtype)
    want = _exact_means([x.reshape(-1, 2)], -1)
    whole = nbbn.channel_stats(x, channel_axis=-1).mean
    assert np.array_equal(whole, want), (whole - want) / np.spacing(want)
    rs = nbbn.RunningStats(-1)
    for part in np.array_split(x, 3):
        rs.update(part)
    assert np.array_equal(rs.mean, want)


def test_long_channels_last_blocks_of_wide_integers_with_nans():
    """The same with NaNs left out (``nan_policy="omit"``: the NaN-omitting pass's
    blocks): 3 of 6 channels came back off before."""
    for seed in range(3):
        x = np.random.default_rng(seed).integers(-(2 ** 40), 2 ** 40,
                                                 size=(100_000, 2)).astype(np.float64)
        x[np.random.default_rng(seed + 9).integers(0, 100_000, 50), 0] = np.nan
        got = nbbn.channel_stats(x, channel_axis=-1, nan_policy="omit").mean
        for c in range(2):
            v = x[:, c][~np.isnan(x[:, c])]
            assert got[c] == _exact_means([v[:, None]], -1)[0], (seed, c)
