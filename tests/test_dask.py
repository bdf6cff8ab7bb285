"""Dask arrays: statistics as one dask reduction, lazy outputs, transform through dask.

Each statistics test runs on the synchronous and threaded schedulers and on a
``LocalCluster`` of 2 worker processes x 1 thread (module-scoped: started once), and
compares with the in-memory path (same kernels, other merge order: 1e-12) and the
float64 reference.
"""

from __future__ import annotations

import functools
import pickle
import sys

import numpy as np
import pytest
from reference import assert_stats, random_array, ref_stats, stats_rtol

import nbbn
import nbbn.dask

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

SCHEDULERS = ["sync", "threads", "cluster"]


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", worker_dashboard_address=None) as c, \
            distributed.Client(c, set_as_default=False) as cl:
        yield cl


@pytest.fixture(params=SCHEDULERS)
def scheduler(request):
    """Run the test's dask computations on this scheduler."""
    if request.param == "cluster":
        cl = request.getfixturevalue("client")
        with dask.config.set(scheduler=cl):
            yield request.param
    else:
        with dask.config.set(scheduler="synchronous" if request.param == "sync" else "threads"):
            yield request.param


def _same_stats(rs, ref, rtol=1e-12):
    """``rs`` equals the in-memory ``ref`` (counts, min, max exactly; mean/var 1e-12)."""
    np.testing.assert_array_equal(rs.count, ref.count)
    np.testing.assert_array_equal(rs.nan_count, ref.nan_count)
    np.testing.assert_array_equal(rs.min, ref.min)
    np.testing.assert_array_equal(rs.max, ref.max)
    fin = np.isfinite(ref.mean)
    np.testing.assert_array_equal(rs.mean[~fin], ref.mean[~fin])  # NaN, inf
    scale = np.abs(ref.mean[fin]) + ref.std[fin]
    assert (np.abs(rs.mean[fin] - ref.mean[fin]) <= rtol * scale).all()
    np.testing.assert_allclose(rs.var, ref.var, rtol=rtol, atol=0)


# channels-last chunks split the channel axis (2 + 1)
LAYOUTS = {"nchw": ((6, 3, 4, 5), 1, (2, 3, 2, 5)), "nhwc": ((6, 4, 5, 3), -1, (4, 2, 5, 2))}


# ------------------------------------------------------------------ statistics
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "uint8", "int16"])
def test_stats_dtypes_layouts(scheduler, dtype, layout, rng):
    shape, axis, chunks = LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    dx = da.from_array(x, chunks=chunks)
    rs = nbbn.channel_stats(dx, axis)
    _same_stats(rs, nbbn.channel_stats(x, axis))
    assert_stats(rs, ref_stats(x, axis), stats_rtol(dtype))
    lazy = nbbn.dask.channel_stats(dx, axis)
    _same_stats(lazy.compute(), rs, rtol=0)


@pytest.mark.parametrize("nan_policy", ["propagate", "omit", "raise"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_policies(scheduler, nan_policy, layout, rng):
    shape, axis, chunks = LAYOUTS[layout]
    x = random_array(rng, shape, "float32", channel_axis=axis)
    dx = da.from_array(x, chunks=chunks)
    clean = nbbn.RunningStats(axis, nan_policy=nan_policy).update(dx)
    _same_stats(clean, nbbn.channel_stats(x, axis, nan_policy=nan_policy))
    x = x.copy()
    x.reshape(-1)[::7] = np.nan
    x.reshape(-1)[3] = np.inf
    dx = da.from_array(x, chunks=chunks)
    if nan_policy == "raise":
        before = clean.to_dict()
        with pytest.raises(ValueError, match="nan_policy='raise'"):
            clean.update(dx)
        for k, v in before.items():  # the state is as it was
            np.testing.assert_array_equal(clean.to_dict()[k], v)
        with pytest.raises(ValueError, match="nan_policy='raise'"):
            nbbn.dask.channel_stats(dx, axis, nan_policy="raise").compute()
        return
    rs = nbbn.RunningStats(axis, nan_policy=nan_policy).update(dx)
    _same_stats(rs, nbbn.channel_stats(x, axis, nan_policy=nan_policy))
    _same_stats(nbbn.dask.channel_stats(dx, axis, nan_policy=nan_policy).compute(), rs, 0)


def test_float32_cancellation(scheduler, rng):
    """The issue's case: float32, mean 1e4, std 1, chunks of 100,000 rows, where dask's
    own var keeps float32 chunk moments; held to 1e-12 against float64 (here 400,000
    rows: the same chunking, a fifth of the data)."""
    x = (1e4 + rng.standard_normal((400_000, 3))).astype(np.float32)
    ref = np.var(x.astype(np.float64), axis=0)
    rs = nbbn.channel_stats(da.from_array(x, chunks=(100_000, 3)), -1)
    assert np.abs(rs.var / ref - 1).max() < 1e-12


@pytest.mark.parametrize("chunks", [
    ((1, 2, 3), (3,), (1, 3, 1), (5,)),          # uneven
    ((3, 3), (1, 2), (4, 1), (2, 3)),             # chunks split the channel axis
    ((0, 4, 0, 2), (3,), (0, 5), (5,)),           # empty chunks
    ((6,), (3,), (5,), (5,)),                     # a single chunk
    ((6,), (1, 0, 2), (5,), (5,)),                # a zero-width chunk of channels
])
def test_chunkings(scheduler, chunks, rng):
    x = random_array(rng, (6, 3, 5, 5), "float64", channel_axis=1)
    dx = da.from_array(x, chunks=chunks)
    _same_stats(nbbn.channel_stats(dx, 1), nbbn.channel_stats(x, 1))
    _same_stats(nbbn.dask.channel_stats(dx, 1, split_every=2).compute(),
                nbbn.channel_stats(x, 1))


def test_zarr_chunks(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    x = random_array(rng, (10, 4, 3), "uint8", channel_axis=-1)
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, dtype=x.dtype,
                        chunks=(3, 4, 3))
    z[...] = x
    _same_stats(nbbn.channel_stats(da.from_zarr(str(tmp_path / "x.zarr")), -1),
                nbbn.channel_stats(x, -1))


def test_update_merges_into_state(rng):
    a = random_array(rng, (8, 3), "float32", channel_axis=1)
    b = random_array(rng, (5, 3), "float32", channel_axis=1)
    rs = nbbn.RunningStats(1).update(a).update(da.from_array(b, chunks=2))
    _same_stats(rs, nbbn.channel_stats(np.concatenate([a, b]), 1))
    with pytest.raises(ValueError, match="4 channels"):
        rs.update(da.zeros((2, 4), chunks=1))


# ------------------------------------------------------------------ laziness
_calls: list[int] = []


def _counted(block):
    _calls.append(1)
    return block


def test_graphs_compute_nothing(rng):
    _calls.clear()
    x = random_array(rng, (8, 3, 4), "float32", channel_axis=1)
    dx = da.from_array(x, chunks=(2, 2, 4)).map_blocks(_counted, dtype=x.dtype,
                                                        meta=np.empty((0, 0, 0), x.dtype))
    lazy = nbbn.dask.channel_stats(dx, 1)
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3))
    y = norm(dx)
    z = nbbn.normalize(dx, np.zeros(3), np.ones(3))
    bn = nbbn.BatchNorm(3).eval()
    w = bn(dx)
    inv = norm.inverse(y)
    assert _calls == []
    from dask.delayed import Delayed

    assert isinstance(lazy, Delayed)
    for out in (y, z, w, inv):
        assert isinstance(out, da.Array) and out.chunks == dx.chunks
    with dask.config.set(scheduler="synchronous"):
        rs, = dask.compute(lazy)
    assert _calls and rs.count.tolist() == [32, 32, 32]


@pytest.mark.parametrize("dtype", ["float32", "uint8", "float64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_lazy_normalizer_equals_eager(scheduler, dtype, layout, rng):
    shape, axis, chunks = LAYOUTS[layout]
    x = random_array(rng, shape, dtype, channel_axis=axis)
    c = x.shape[axis]
    norm = nbbn.Normalizer(rng.normal(size=c), rng.uniform(1, 2, c), weight=rng.normal(size=c),
                           bias=rng.normal(size=c), channel_axis=axis)
    dx = da.from_array(x, chunks=chunks)
    y = norm(dx)
    want = norm(x)
    assert y.dtype == want.dtype
    np.testing.assert_array_equal(y.compute(), want)
    if dtype != "uint8":
        np.testing.assert_array_equal(norm.inverse(y).compute(), norm.inverse(want))


def test_batchnorm(scheduler, rng):
    x = random_array(rng, (6, 3, 4, 5), "float32", channel_axis=1)
    dx = da.from_array(x, chunks=(2, 2, 4, 5))
    lazy_bn, bn = nbbn.BatchNorm(3), nbbn.BatchNorm(3)
    y = lazy_bn(dx)  # training: the statistics are computed now, the output is lazy
    want = bn(x)
    np.testing.assert_allclose(lazy_bn.running_var, bn.running_var, rtol=1e-12)
    np.testing.assert_allclose(y.compute(), want, rtol=1e-5, atol=1e-6)
    lazy_bn.eval()
    bn.eval()
    np.testing.assert_allclose(lazy_bn(dx).compute(), bn(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ transform
@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_transform_dask_source(scheduler, suffix, tmp_path, rng):
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    x = random_array(rng, (9, 3, 4), "uint8", channel_axis=1)
    rs = nbbn.channel_stats(x, 1)
    out = tmp_path / f"out{suffix}"
    got = nbbn.transform(da.from_array(x, chunks=((2, 4, 3), 2, 4)), rs, out)
    want = rs.to_normalizer()(x)
    data = np.load(got) if suffix == ".npy" else np.asarray(got[...])
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, want)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left


def test_transform_into_arrays(scheduler, rng):
    """A numpy ``out`` is written on every scheduler: on worker processes the slabs are
    computed there and written here (tasks would write into copies of ``out``)."""
    x = random_array(rng, (7, 3), "float64", channel_axis=1)
    rs = nbbn.channel_stats(x, 1)
    out = np.zeros((7, 3))
    assert nbbn.transform(da.from_array(x, chunks=3), rs, out) is out
    np.testing.assert_array_equal(out, rs.to_normalizer()(x))


def test_slabs_written_here_cover_every_row(monkeypatch, rng):
    from nbbn import dask as nbbn_dask

    x = random_array(rng, (23, 3, 2), "float32", channel_axis=1)
    y = da.from_array(x, chunks=((5, 1, 7, 4, 6), 3, 2))
    for budget in (1, 6 * 24, 13 * 24, 1 << 30):  # one chunk, ~1-2 chunks, all
        out = np.full(x.shape, np.nan, np.float32)
        nbbn_dask._store_here(y, out, budget)
        np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("src", ["uint16", "float16"])
def test_transform_computes_in_the_output_dtype(src, tmp_path, rng):
    """A float64 output is computed in float64 from the source, as the eager path does
    (not normalized to float32 or float16 first and cast)."""
    x = random_array(rng, (20, 3, 4), src, channel_axis=1)
    rs = nbbn.channel_stats(x, 1)
    eager = nbbn.transform(x, rs, tmp_path / "e.npy", dtype="float64", progress=False)
    lazy = nbbn.transform(da.from_array(x, chunks=7), rs, tmp_path / "k.npy", dtype="float64")
    np.testing.assert_array_equal(np.load(lazy), np.load(eager))
    # an out= array's dtype is the output's without dtype=: it was computed in float32
    # and stored into the float64 array (1e-7 off)
    out = np.empty(x.shape, np.float64)
    nbbn.transform(da.from_array(x, chunks=7), rs, out)
    np.testing.assert_array_equal(out, np.load(eager))


# ------------------------------------------------------------------ errors, workers
def test_bad_input_is_refused_before_computing():
    with pytest.raises(TypeError, match="dtype bool"):
        nbbn.channel_stats(da.zeros((4, 3), dtype=bool, chunks=2), 1)
    with pytest.raises(TypeError, match="dtype bool"):
        nbbn.dask.channel_stats(da.zeros((4, 3), dtype=bool, chunks=2), 1)
    with pytest.raises(ValueError, match="out of range"):
        nbbn.dask.channel_stats(da.zeros((4, 3), chunks=2), 2)
    with pytest.raises(TypeError, match="dimension name"):
        nbbn.channel_stats(da.zeros((4, 3), chunks=2), "band")
    with pytest.raises(ValueError, match="out= is not supported"):
        nbbn.normalize(da.zeros((4, 3), chunks=2), np.zeros(3), np.ones(3), out=np.empty((4, 3)))
    x = da.arange(12.0, chunks=4).reshape(4, 3)
    unknown = x[x[:, 0] > 3]  # rows of unknown count
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        nbbn.channel_stats(unknown, 1)
    with pytest.raises(ValueError, match="key='x' was given, but the source is an array"):
        nbbn.fit(x, key="x", progress=False)  # (a key names nothing in an array)


def test_scipy_sparse_chunks_are_refused_with_how_to_convert_them():
    """A dask array of scipy sparse chunks: every entry point says so and how to convert
    them, before computing (mutants: update called its chunk a batch that only update
    reads, and fit read it as dtype object); a chunk that its array's meta did not
    announce is refused when the reduction reads it. The state is untouched."""
    sparse = pytest.importorskip("scipy.sparse")
    a = da.from_array(sparse.csr_matrix(np.eye(4)), chunks=(2, 4), asarray=False)
    hidden = da.from_array(np.eye(4), chunks=(2, 4)).map_blocks(sparse.csr_matrix,
                                                               meta=np.empty((0, 0)))
    match = r"dask array of scipy sparse chunks \(csr_matrix\).*b\.toarray\(\)"
    rs = nbbn.RunningStats(-1)
    calls = [lambda: rs.update(a), lambda: nbbn.fit(a, -1, progress=False),
             lambda: nbbn.dask.channel_stats(a, -1), lambda: nbbn.channel_stats(a, -1),
             lambda: nbbn.Normalizer(np.zeros(4), np.ones(4), channel_axis=-1)(a),
             lambda: rs.update(hidden)]
    for call in calls:
        with pytest.raises(TypeError, match=match):
            call()
    assert rs.count.size == 0
    dense = a.map_blocks(lambda b: b.toarray(), dtype=a.dtype)
    np.testing.assert_array_equal(rs.update(dense).mean, [0.25] * 4)


def test_gpu_chunks_are_refused_with_one_answer():
    """A dask array of GPU chunks: backend "auto" said "backend='cpu' was asked for: use
    backend='auto' or 'cuda'", and "cuda" said "use backend='auto' or 'cpu'", each
    sending the caller to the other; all now say the chunks are not read and how to
    move them, before computing (or when a chunk its meta hid is read)."""
    pytest.importorskip("numba.cuda")
    from numba import cuda

    def to_device(b):
        return cuda.to_device(np.ascontiguousarray(b))

    host = da.from_array(np.arange(24.0).reshape(6, 4), chunks=(3, 2))
    shown = host.map_blocks(to_device, meta=to_device(np.empty((0, 0))))
    hidden = host.map_blocks(to_device, meta=np.empty((0, 0)))
    match = r"dask array of GPU chunks .*which nbbn does not read.*cupy\.asnumpy"
    rs = nbbn.RunningStats(1)
    for call in (lambda: rs.update(shown), lambda: nbbn.RunningStats(1, backend="cuda")
                 .update(shown), lambda: nbbn.dask.channel_stats(shown, 1),
                 lambda: rs.update(hidden),
                 lambda: nbbn.Normalizer(np.zeros(4), np.ones(4))(hidden).compute()):
        with pytest.raises(TypeError, match=match):
            call()
    assert rs.count.size == 0


def test_chunk_functions_pickle_by_reference():
    from nbbn.backends import dask as bd

    f = functools.partial(bd._chunk_stats, caxis=1, policy=0)
    assert len(pickle.dumps(f)) < 300  # a reference to the module-level function


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(nbbn.MissingExtraError, match=r"nbbn\[dask\]"):
        nbbn.dask.channel_stats(np.zeros((2, 3)), 1)


def test_workers_respect_their_threads(client, rng):
    """A task runs the kernels on its worker thread alone (no nested pool threads)."""
    def probe():
        import threading

        from nbbn.backends import cpu

        before = threading.active_count()
        with cpu.serial():
            cpu.reduce(cpu.prepare(np.ones((1 << 21, 2), np.float32), 1, "x"), 0)
        return threading.active_count() - before

    assert set(client.run(probe).values()) == {0}



def test_fit_reads_each_chunk_once(rng):
    """``nbbn.fit`` of a dask array follows its axis-0 chunks: a batch per block of rows
    (the default), so no chunk is computed twice; the statistics equal the reference."""
    x = random_array(rng, (50, 3, 4, 4), "float32", channel_axis=1)
    _calls.clear()
    dx = da.from_array(x, chunks=(15, 2, 4, 4)).map_blocks(
        _counted, dtype=x.dtype, meta=np.empty((0, 0, 0, 0), x.dtype))
    with dask.config.set(scheduler="synchronous"):
        rs = nbbn.fit(dx, progress=False)
    assert len(_calls) == 8  # 4 blocks of rows x 2 channel chunks, each once
    assert_stats(rs, ref_stats(x, 1), 1e-12)
    assert "4 chunks of rows" in nbbn.sources.open_source(dx).description


def test_lazy_outputs_do_not_follow_later_changes(rng):
    """A BatchNorm trained (or its bias edited) after a lazy output was built: the
    output is what it was when built (its parameters are copied into the graph)."""
    x = rng.normal(3, 2, (8, 3, 10, 10))
    dx = da.from_array(x, chunks=(4, 3, 10, 10))
    bn = nbbn.BatchNorm(3)
    bn(x)
    bn.eval()
    expected = bn(x)
    y = bn(dx)
    bn.train()
    bn(x + 100.0)
    bn.bias[:] = 7.0
    np.testing.assert_array_equal(y.compute(), expected)


@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0)])
def test_an_array_of_no_values_fixes_the_channel_count_as_eagerly(shape):
    """The lazy statistics of a zero-size array had no channel count (the eager ones:
    3 channels of count 0), so a later batch of another count was not refused."""
    lazy = nbbn.dask.channel_stats(da.zeros(shape, chunks=2), 1).compute()
    eager = nbbn.channel_stats(np.zeros(shape), 1)
    assert lazy.num_channels == eager.num_channels == 3
    np.testing.assert_array_equal(lazy.count, eager.count)
    with pytest.raises(ValueError, match="channels"):
        lazy.update(np.zeros((2, 4, 1)))


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float64"])
def test_the_lazy_map_of_no_values_has_the_eager_dtype(dtype):
    """An array of no values is never mapped: its lazy result is the input cast to the
    output dtype the eager map gives (float32 for uint8, the input's for floats)."""
    eager = nbbn.normalize(np.zeros((0, 3), dtype), np.zeros(3), np.ones(3))
    lazy = nbbn.normalize(da.zeros((0, 3), dtype=dtype, chunks=2), np.zeros(3), np.ones(3))
    assert isinstance(lazy, da.Array)
    assert lazy.dtype == eager.dtype
    assert lazy.compute().dtype == eager.dtype
    assert lazy.shape == eager.shape


class _CountingReads:
    """An array-like "file" for dask.array.from_array: counts the elements it hands out."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.elements = a, a.shape, a.dtype, a.ndim, 0

    def __getitem__(self, key):
        part = self.a[key]
        self.elements += part.size
        return part


def test_lazy_statistics_of_a_slice_read_only_the_slice(rng):
    """dask fuses a slice into the reads of its chunks (a zarr or HDF5 array reads only
    that part): the lazy statistics keep that optimization. Keeping the array's task
    keys instead read whole chunks, 8x the elements here."""
    base = rng.normal(size=(4000, 3, 16)).astype(np.float32)
    src = _CountingReads(base)
    x = da.from_array(src, chunks=(500, 3, 16))
    src.elements = 0  # (from_array reads an empty slice for its meta)
    lazy = nbbn.dask.channel_stats(x[:, :, :2], channel_axis=1)
    assert src.elements == 0
    stats = lazy.compute()
    assert src.elements == base[:, :, :2].size
    assert_stats(stats, ref_stats(base[:, :, :2], 1), stats_rtol("float32"))


def test_a_fit_error_names_the_dask_arrays_own_rows():
    """Each chunk of rows is a shard named ``rows a:b``: the message said ``rows 10:20,
    rows 0-10`` (the chunk, then the rows within it) where numpy's says ``rows 10-20``."""
    x = np.zeros((101, 3, 6))
    x[15, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"^a dask array, rows 10-20: nan_policy='raise'"):
        nbbn.fit(da.from_array(x, chunks=(10, 3, 6)), channel_axis=-1, nan_policy="raise",
                 progress=False)


def test_a_cluster_fit_of_a_dask_array_points_to_the_dask_reduction():
    from nbbn._distributed import shard_recipe
    from nbbn.sources import open_source

    src = open_source(da.from_array(np.ones((20, 3)), chunks=(10, 3)), channel_axis=1)
    with pytest.raises(TypeError, match=r"a dask array is computed by its own scheduler: "
                                        r"use nbbn.dask.channel_stats"):
        shard_recipe(src.shards[0])


def test_channel_stats_of_a_dataframe_and_an_object_array():
    """A pandas DataFrame gave dask's raw AttributeError ('DataFrame' object has no
    attribute 'dtype'), an object array dask's NotImplementedError about rechunking;
    now host array-likes are read as nbbn reads them."""
    pd = pytest.importorskip("pandas")
    import nbbn.dask

    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3, 5, 7]})
    got = nbbn.dask.channel_stats(frame, 1).compute()
    np.testing.assert_allclose(got.mean, [7 / 3, 5.0], rtol=1e-15)
    with pytest.raises(TypeError, match="x must have a real floating .* got dtype object"):
        nbbn.dask.channel_stats(np.ones((3, 2), object), 1)


def test_two_lazy_statistics_of_one_array_are_two_objects(rng):
    """Each lazy reduction is its own task (``pure=False``): computed together, two of
    the same array are two states, and updating one leaves the other."""
    x = da.from_array(rng.standard_normal((8, 3)), chunks=4)
    a, b = dask.compute(nbbn.dask.channel_stats(x, -1), nbbn.dask.channel_stats(x, -1))
    assert a is not b
    a.update(np.ones((2, 3)))
    assert int(b.count[0]) == 8


def test_transform_of_chunks_whose_last_is_the_longest(tmp_path, rng):
    """Chunks (3, 3, 4): written through a regular rechunk, no dask warning."""
    pytest.importorskip("zarr")
    x = rng.standard_normal((10, 3, 4)).astype(np.float32)
    rs = nbbn.channel_stats(x, 1)
    got = nbbn.transform(da.from_array(x, chunks=((3, 3, 4), 3, 4)), rs, tmp_path / "o.zarr")
    np.testing.assert_array_equal(np.asarray(got[...]), rs.to_normalizer()(x))


# ------------------------------------------------- edges found by mutation testing
def test_each_slab_is_computed_and_written_once(rng):
    from nbbn import dask as nbbn_dask

    writes = []

    class Recording(np.ndarray):
        def __setitem__(self, key, value):
            writes.append((int(key.start), int(key.stop)))
            super().__setitem__(key, value)

    x = random_array(rng, (23, 3, 2), "float32", channel_axis=1)
    y = da.from_array(x, chunks=((5, 1, 7, 4, 6), 3, 2))
    out = np.full(x.shape, np.nan, np.float32).view(Recording)
    nbbn_dask._store_here(y, out, 6 * 24)  # 6 rows a slab, whole chunks
    assert writes == [(0, 6), (6, 13), (13, 17), (17, 23)]
    np.testing.assert_array_equal(np.asarray(out), x)


def test_a_zarr_out_is_written_in_whole_zarr_chunks(tmp_path, rng, monkeypatch):
    import dask

    zarr = pytest.importorskip("zarr")
    x = rng.standard_normal((12, 3)).astype(np.float32)
    rs = nbbn.channel_stats(x, 1)
    z = zarr.create_array(store=str(tmp_path / "o.zarr"), shape=x.shape, chunks=(4, 3),
                          dtype="f4")
    rows = []
    setitem = type(z).__setitem__
    monkeypatch.setattr(type(z), "__setitem__",
                        lambda self, key, value: rows.append(key[0]) or setitem(self, key, value))
    with dask.config.set(scheduler="synchronous"):
        nbbn.transform(da.from_array(x, chunks=(3, 3)), rs, z)
    assert rows and all(r.start % 4 == 0 and (r.stop % 4 == 0 or r.stop == 12) for r in rows)
    np.testing.assert_array_equal(z[...], rs.to_normalizer()(x))


def _boom(block):
    raise RuntimeError("boom")


def test_a_failed_transform_keeps_the_old_npy_and_leaves_no_temporary(tmp_path, rng):
    import dask

    x = rng.standard_normal((6, 3)).astype(np.float32)
    rs = nbbn.channel_stats(x, 1)
    bad = da.from_array(x, chunks=3).map_blocks(_boom, dtype=x.dtype,
                                                meta=np.empty((0, 0), np.float32))
    out = tmp_path / "o.npy"
    np.save(out, np.zeros(2))
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="boom"):
        nbbn.transform(bad, rs, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npy"]
    np.testing.assert_array_equal(np.load(out), np.zeros(2))


def test_chunk_tasks_run_their_kernels_serially(rng, monkeypatch):
    import dask

    from nbbn.backends import cpu

    calls = []
    serial = cpu.serial
    monkeypatch.setattr(cpu, "serial", lambda: calls.append(1) or serial())
    x = da.from_array(rng.standard_normal((6, 3)), chunks=(2, 3))
    with dask.config.set(scheduler="synchronous"):
        rs = nbbn.dask.channel_stats(x, 1).compute()
        assert len(calls) == 3  # one per chunk
        rs.to_normalizer()(x).compute()
    assert len(calls) == 6


def test_split_every_shapes_the_tree():
    x = da.from_array(np.ones((16, 3)), chunks=(1, 3))
    tasks = {k: len(dict(nbbn.dask.channel_stats(x, 1, split_every=k).__dask_graph__()))
             for k in (2, 16)}
    assert tasks[2] > tasks[16]


def _counting_frame(pdf, npartitions: int, meta=None):
    """A dask DataFrame of ``pdf`` in ``npartitions`` that records the length of each
    partition computed, and that list."""
    dd = pytest.importorskip("dask.dataframe")
    calls: list[int] = []

    def seen(part):
        calls.append(len(part))
        return part

    return dd.from_pandas(pdf, npartitions=npartitions).map_partitions(
        seen, meta=pdf.iloc[:0] if meta is None else meta), calls


def test_lazy_statistics_of_dataframes_stay_lazy_and_keep_the_column_names():
    """``nbbn.dask.channel_stats`` of a dask DataFrame computed every partition while the
    graph was built (``np.asarray`` of it), and the statistics of any DataFrame came
    without its column names, so a normalizer of them took reordered columns by
    position. Now: nothing computed before ``compute``, names as ``update`` gives."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    pdf = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10) * 3,
                        "c": np.arange(10, dtype=np.int16)})
    ddf, calls = _counting_frame(pdf, 3)
    calls.clear()
    lazy = nbbn.dask.channel_stats(ddf, -1)
    assert calls == []
    eager = nbbn.RunningStats(-1).update(pdf)
    for rs in (lazy.compute(), nbbn.dask.channel_stats(pdf, 1).compute()):
        assert rs.channel_names == eager.channel_names == ("a", "b", "c")
        np.testing.assert_allclose(rs.mean, eager.mean, rtol=1e-15)
        np.testing.assert_allclose(rs.var, eager.var, rtol=1e-15)
        assert rs.count.tolist() == [10] * 3
        with pytest.raises(ValueError, match=r"fitted on \['a', 'b', 'c'\]"):
            rs.to_normalizer()(pdf[["b", "a", "c"]])
    assert sorted(calls) == [3, 3, 4]
    with pytest.raises(ValueError, match="columns: channel_axis must be 1 or -1, got 0"):
        nbbn.dask.channel_stats(ddf, 0)
    with pytest.raises(TypeError, match=r"columns \{'s': '.*'\} that are not integer"):
        nbbn.dask.channel_stats(dd.from_pandas(pdf.assign(s="x"), npartitions=2), -1)


def test_nullable_columns_of_a_dask_dataframe_are_read_as_pandas_reads_them():
    """Nullable and Arrow numeric columns (``Int64``, ``Float32``, ``float64[pyarrow]``),
    which ``update`` of a pandas DataFrame reads as float64 with ``pd.NA`` as NaN: a
    dask DataFrame of them was computed whole, then refused (``update``), or refused
    (``nbbn.dask.channel_stats``). Now read as pandas, lazily by ``channel_stats``; a
    column of no numbers is refused before any partition is computed."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("dask.dataframe")
    pdf = pd.DataFrame({"a": [1.0, 2, 3, 4, 5], "b": pd.array([1, 2, None, 4, 7], "Int64"),
                        "c": pd.array([1.5, 2, 3, 4, 0], "Float32"),
                        "d": pd.array([1.0, 2, 3, None, 1], "float64[pyarrow]")})
    ddf, calls = _counting_frame(pdf, 2)
    for policy in ("propagate", "omit"):
        eager = nbbn.RunningStats(1, nan_policy=policy).update(pdf)
        calls.clear()
        lazy = nbbn.dask.channel_stats(ddf, -1, nan_policy=policy)
        assert calls == []
        for rs in (lazy.compute(), nbbn.RunningStats(1, nan_policy=policy).update(ddf)):
            assert rs.channel_names == eager.channel_names == ("a", "b", "c", "d")
            np.testing.assert_allclose(rs.mean, eager.mean, rtol=1e-15)
            np.testing.assert_allclose(rs.var, eager.var, rtol=1e-15)
            np.testing.assert_array_equal(rs.nan_count, eager.nan_count)
    bad, calls = _counting_frame(
        pdf.assign(t=pd.array([True, None, False, True, True], "boolean")), 2,
        meta=pdf.iloc[:0].assign(t=pd.array([], "boolean")))
    rs = nbbn.RunningStats(1)
    with pytest.raises(TypeError, match=r"column 't' \(boolean\)"):
        rs.update(bad)
    with pytest.raises(TypeError, match=r"columns \{'t': 'boolean'\} that are not integer"):
        nbbn.dask.channel_stats(bad, -1)
    assert calls == [] and rs.num_channels is None


def test_a_dask_series_is_refused_by_the_lazy_statistics_with_what_to_pass():
    # channel_stats(series, -1) failed with an AttributeError ('Float64DType' object has
    # no attribute 'items'), channel_stats(series, 0) said a DataFrame's channels are
    # its columns
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    ddf = dd.from_pandas(pd.DataFrame({"a": [1.0, 2, 3, 4]}), npartitions=2)
    for axis in (-1, 0, 1):
        with pytest.raises(TypeError, match=r"not a dask Series: pass series.to_frame\(\)"):
            nbbn.dask.channel_stats(ddf.a, axis)
    rs = nbbn.dask.channel_stats(ddf.a.to_frame(), -1).compute()
    assert rs.mean.tolist() == [2.5] and rs.channel_names == ("a",)


def test_fit_and_transform_of_a_dask_dataframe_say_what_to_pass(tmp_path):
    # fit iterated over the column names ("item 0 must have a real floating ... dtype
    # <U1", or "item 0 of the iterable is 0-d"), fit(columns=) said "the source is not a
    # table", transform "cannot write an iterable source"
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    pdf = pd.DataFrame({"a": [1.0, 2, 3, 4], "b": [1.0, 2, 3, 5]})
    ddf, calls = _counting_frame(pdf, 2)
    numbered = dd.from_pandas(pd.DataFrame(np.ones((4, 2))), npartitions=1)
    rs = nbbn.fit(pdf, progress=False)
    what = r"do not read a dask (DataFrame|Series).*nbbn.dask.channel_stats\(ddf, -1\).*" \
           r"astype\('float64'\).to_dask_array\(lengths=True\)"
    for call in (lambda: nbbn.fit(ddf, progress=False),
                 lambda: nbbn.fit(ddf, columns=["a"], progress=False),
                 lambda: nbbn.fit(numbered, progress=False),
                 lambda: nbbn.fit(ddf.a, progress=False),
                 lambda: nbbn.transform(ddf, rs, tmp_path / "y.npy", progress=False)):
        with pytest.raises(TypeError, match=what):
            call()
    assert calls == [] and list(tmp_path.iterdir()) == []
    got = nbbn.fit(ddf.to_dask_array(lengths=True), progress=False)  # as the error says
    np.testing.assert_allclose(got.mean, rs.mean, rtol=1e-15)
    # (a nullable column: without the astype the dask array is of dtype object)
    nullable = dd.from_pandas(pdf.astype({"a": "Int64"}), npartitions=2)
    got = nbbn.fit(nullable.astype("float64").to_dask_array(lengths=True), progress=False)
    np.testing.assert_allclose(got.mean, rs.mean, rtol=1e-15)


@pytest.mark.parametrize("axis", [0, -2])
def test_an_in_memory_table_along_another_axis_is_refused_as_channel_stats_refuses_it(axis):
    # nbbn.dask.channel_stats(df, 0) gave one channel per row, unnamed
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    for table in (df, pa.Table.from_pandas(df)):
        with pytest.raises(ValueError, match="channels are its columns: channel_axis must be "
                                             f"1 \\(or -1, the same axis\\), got {axis}"):
            nbbn.channel_stats(table, axis)
        with pytest.raises(ValueError, match="channels are its columns: channel_axis must be "
                                             f"1 \\(or -1, the same axis\\), got {axis}"):
            nbbn.dask.channel_stats(table, axis)
    assert nbbn.dask.channel_stats(df, -1).compute().channel_names == ("a", "b")


def _first_fails_others_lag(block, block_info=None):
    import time

    if block_info[0]["chunk-location"][0] == 0:
        raise RuntimeError("boom")
    time.sleep(0.3)
    return block


def test_a_failed_threaded_transform_to_zarr_leaves_no_temporary_store(tmp_path, rng):
    # the threaded scheduler raises the first error while its threads still run the
    # other tasks: their chunks were written after the temporary store was removed,
    # which recreated its folders (".o.zarr.XXXX.nbbn-tmp/c/..." was left behind)
    import time

    import dask

    zarr = pytest.importorskip("zarr")
    x = rng.standard_normal((8, 3)).astype(np.float32)
    rs = nbbn.channel_stats(x, 1)
    out = tmp_path / "o.zarr"
    nbbn.transform(da.from_array(x, chunks=(2, 3)), rs, out)
    bad = da.from_array(x * 2, chunks=(2, 3)).map_blocks(
        _first_fails_others_lag, dtype=x.dtype, meta=np.empty((0, 0), np.float32))
    with dask.config.set(scheduler="threads", num_workers=4), \
            pytest.raises(RuntimeError, match="boom"):
        nbbn.transform(bad, rs, out)
    time.sleep(1.0)  # (the lagging tasks end)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[...],
                                  rs.to_normalizer()(x))


def test_a_bfloat16_tensor_is_read_as_channel_stats_reads_it():
    """nbbn.dask.channel_stats refused a bfloat16 CPU tensor ("convert it first"), which
    nbbn.channel_stats reads: its values are float32's, exactly."""
    torch = pytest.importorskip("torch")
    t = torch.tensor(np.random.default_rng(3).normal(5.0, 2.0, (40, 3)), dtype=torch.bfloat16)
    lazy = nbbn.dask.channel_stats(t, 1).compute()
    eager = nbbn.channel_stats(t, 1)
    np.testing.assert_allclose(lazy.mean, eager.mean, rtol=1e-15)
    np.testing.assert_allclose(lazy.var, eager.var, rtol=1e-13)
    np.testing.assert_array_equal(lazy.min, eager.min)
