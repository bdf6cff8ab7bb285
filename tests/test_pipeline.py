"""``nbbn.fit`` and ``nbbn.transform`` end to end: results, outputs, memory, progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from reference import ref_normalize, ref_stats_many, stats_rtol

import nbbn

ROOT = Path(__file__).resolve().parents[1]


def fit(src, **kw):
    kw.setdefault("progress", False)
    return nbbn.fit(src, **kw)


def transform(src, stats, out, **kw):
    kw.setdefault("progress", False)
    return nbbn.transform(src, stats, out, **kw)


def same_bits(a: nbbn.RunningStats, b: nbbn.RunningStats) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return all(np.asarray(da[k]).tobytes() == np.asarray(db[k]).tobytes() for k in da)


# ---------------------------------------------------------------------------- fit
def test_fit_equals_updates_in_the_same_batches(tmp_path, rng):
    """The pipeline applies exactly the batches a hand-written loop would, in order."""
    x = (rng.standard_normal((1001, 3, 7)) * 5 + 100).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    by_hand = nbbn.RunningStats(1)
    for i in range(0, len(x), 64):
        by_hand.update(x[i:i + 64])
    assert same_bits(fit(tmp_path / "x.npy", batch_size=64), by_hand)
    ref = ref_stats_many([x])
    stats = fit(tmp_path / "x.npy")
    np.testing.assert_allclose(stats.mean, ref.mean, rtol=stats_rtol(x.dtype))
    np.testing.assert_allclose(stats.var, ref.var, rtol=10 * stats_rtol(x.dtype))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_fit_nan_policy(tmp_path, rng, nan_policy):
    x = rng.standard_normal((50, 2, 3))
    x[7, 1, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    stats = fit(tmp_path / "x.npy", batch_size=8, nan_policy=nan_policy)
    ref = ref_stats_many([x], 1, nan_policy)
    np.testing.assert_array_equal(stats.count, ref.count)
    np.testing.assert_allclose(stats.mean, ref.mean, rtol=1e-12, equal_nan=True)
    assert stats.nan_count.tolist() == [0, 1]


def test_fit_of_a_generator_that_reuses_its_buffer(rng):
    """A generator that fills one buffer for every item (``readinto``, h5py's
    ``read_direct``) is read as a ``for`` loop reads it: the next item is asked for once
    the previous one is counted. Asked for one item ahead, it overwrote the item being
    counted: a mean of 3.0-4.0 for 2.5, different from run to run."""
    chunks = [rng.normal(i, 1.0, (20_000, 4)).astype(np.float32) for i in range(6)]

    def reader():
        buf = np.empty_like(chunks[0])
        for c in chunks:
            buf[...] = c
            yield buf

    want = nbbn.RunningStats(-1)
    for item in reader():
        want.update(item)
    for batch_size in (None, 7_000):
        got = nbbn.fit(reader(), progress=False, batch_size=batch_size)
        assert np.array_equal(got.mean, want.mean)
        assert np.array_equal(got.min, want.min) and np.array_equal(got.max, want.max)


def test_key_picks_from_a_batch_of_arrays_of_several_ranks(rng):
    """``key=0`` on (image, mask, depth) batches of a default-collated DataLoader: the
    ranks differ, so the item is one batch of several fields (it was refused as a list
    of samples, and the advice given did not help)."""
    batches = [[rng.normal(size=(4, 3, 8, 8)), rng.integers(0, 2, (4, 8, 8)),
                rng.random((4, 1, 8, 8))] for _ in range(3)]
    got = nbbn.fit(batches, key=0, progress=False)
    want = nbbn.RunningStats(1)
    for b in batches:
        want.update(b[0])
    assert np.array_equal(got.mean, want.mean) and np.array_equal(got.var, want.var)


def test_the_first_items_shape_is_said_not_the_first_batchs(capsys):
    """With batch_size splitting the items, the status line gave the first batch's
    shape as the first item's."""
    nbbn.fit(iter([np.ones((6, 3)), np.ones((5, 3))]), batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "the first of shape (6, 3)" in err, err


def test_fit_of_nested_lists_says_to_pass_an_array():
    """Nested lists of numbers: told to pass an array (they were told key=0, which then
    failed on a 0-d item)."""
    for kw in ({}, {"key": 0}):
        with pytest.raises(ValueError, match=r"list of 2 numbers.*numpy.asarray"):
            nbbn.fit([[1.0, 2.0], [3.0, 4.0]], progress=False, **kw)


def test_fit_nan_policy_raise_names_the_rows(rng):
    x = rng.standard_normal((30, 2))
    x[17, 0] = np.nan
    with pytest.raises(ValueError, match=r"rows 16-24: nan_policy='raise'"):
        fit(x, batch_size=8, nan_policy="raise")


def test_fit_argument_errors(rng):
    x = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="axis 0 of the 2-d data"):
        fit(x, channel_axis=0)
    with pytest.raises(ValueError, match="out of range"):
        fit(x, channel_axis=2)
    with pytest.raises(ValueError, match="is 1-d"):
        fit(np.arange(5.0), channel_axis=-1)
    # the items of an iterable are checked as they come (their shape is not known before)
    with pytest.raises(ValueError, match=r"item 0, rows 0-10: channel_axis=0 is axis 0"):
        fit(iter([x]), channel_axis=0)
    with pytest.raises(ValueError, match=r"item 0, rows 0-5: .* is 1-d"):
        fit(iter([np.arange(5.0)]), channel_axis=-1)
    with pytest.raises(ValueError, match="batch_size"):
        fit(x, batch_size=0)
    with pytest.raises(ValueError, match="nan_policy"):
        fit(x, nan_policy="skip")
    with pytest.raises(ValueError, match="resume=True needs checkpoint"):
        fit(x, resume=True)
    with pytest.raises(ValueError, match="checkpoint_interval must be >= 0, got nan"):
        fit(x, checkpoint_interval=float("nan"))  # (would never write a checkpoint)
    with pytest.raises(TypeError, match="cannot read batches from a int"):
        fit(3)


def test_fit_empty_sources(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    assert fit(iter([])).num_channels is None
    assert fit(np.zeros((0,))).num_channels is None  # (1-d: no channel axis to fix)
    x = np.ones((4, 3), np.float32)
    for stats in (nbbn.RunningStats(), nbbn.RunningStats().update(np.zeros((0, 3)))):
        with pytest.raises(ValueError, match="statistics are empty"):
            transform(x, stats, np.empty_like(x))


def test_a_source_of_no_rows_fixes_the_channel_count(tmp_path, capsys):
    """A fit of a (0, C) source gave statistics of no channels (count []), where
    RunningStats.update of the same gives C channels of count 0 (docs/design.md): they
    merged with statistics of any channel count, and `--format json` said 0 channels."""
    h5py = pytest.importorskip("h5py")
    from nbbn.cli import main

    e = np.zeros((0, 3), np.float32)
    np.save(tmp_path / "e.npy", e)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["x"] = e
    four = nbbn.RunningStats().update(np.ones((5, 4)))
    for src in (e, tmp_path / "e.npy", f"{tmp_path / 'e.h5'}:x", iter([e]), [e[:0], e]):
        stats = fit(src, batch_size=1) if isinstance(src, np.ndarray) else fit(src)
        assert stats.num_channels == 3 and stats.count.tolist() == [0, 0, 0], src
        with pytest.raises(ValueError, match="4 channels .* have 3 channels"):
            stats.merge(four)
    assert fit(np.zeros((0, 3, 4)), channel_axis=-1).num_channels == 4
    with pytest.raises(ValueError, match="channel_axis=5 is out of range"):
        fit(e, channel_axis=5)  # (checked as for rows)
    assert main(["fit", str(tmp_path / "e.npy"), "--format", "json", "--no-progress"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_channels"] == 3 and d["count"] == [0, 0, 0]
    assert main(["fit", str(tmp_path / "e.npy"), "--no-progress"]) == 0
    assert "no data: the statistics are empty" in capsys.readouterr().out  # (no NaN rows)


def test_reader_error_reaches_the_caller_and_names_the_shard(tmp_path, rng):
    d = tmp_path / "d"
    d.mkdir()
    np.save(d / "a.npy", rng.standard_normal((20, 2)))
    np.savez_compressed(d / "b.npz", rng.standard_normal((4000, 2)))
    data = (d / "b.npz").read_bytes()
    (d / "b.npz").write_bytes(data[:40] + bytes(len(data) - 80) + data[-40:])  # zeroed inside
    with pytest.raises(Exception, match=r"b\.npz"):
        fit(d, batch_size=5)


def test_progress_bar_on_stderr(tmp_path, capsys, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((100, 3)))
    nbbn.fit(tmp_path / "x.npy", progress=True)
    err = capsys.readouterr().err
    assert "nbbn fit" in err and "100%" in err and "100 rows" in err


def test_import_nbbn_imports_no_optional_library():
    code = ("import sys, nbbn; print(sorted(m for m in ('tqdm', 'zarr', 'h5py', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    assert out.strip() == "[]"


# -------------------------------------------------------------------------- memory
def test_memory_stays_bounded(tmp_path, rng):
    """A file 16x the batch: numpy allocations stay at two batches (npy and npz).

    An .npy batch is a view of the mapping (nothing allocated); an .npz member is read
    into two reused batch buffers, through pieces of at most 1 MiB.
    """
    x = rng.standard_normal((8192, 4, 256)).astype(np.float32)  # 32 MiB
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    batch_rows = 512
    batch_bytes = batch_rows * 4 * 256 * 4  # 2 MiB
    for path in ("x.npy", "x.npz"):
        fit(tmp_path / path, batch_size=8192)  # compile outside the measurement
        tracemalloc.start()
        try:
            fit(tmp_path / path, batch_size=batch_rows)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2 * batch_bytes + 2**20 + 2**18, (path, peak, batch_bytes)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_resident_memory_stays_bounded(tmp_path):
    """The mapped pages of a .npy are released after each batch (resident set, not malloc)."""
    code = r"""
import sys, numpy as np, nbbn
path = sys.argv[1]
x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(2048, 16, 1024))
x[:] = 1.5
x.flush(); del x
# the kernels of a batch of this shape compiled (and their memory) before the count
nbbn.fit(np.ones((64, 16, 1024), np.float32), batch_size=64, progress=False)
def status(k):
    for line in open("/proc/self/status"):
        if line.startswith(k + ":"):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
nbbn.fit(path, batch_size=64, progress=False)
print(status("VmHWM") - before)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.npy")],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    grew = int(out.split()[-1])
    batch = 64 * 16 * 1024 * 4  # 4 MiB; the file is 128 MiB
    assert grew < 3 * batch + 24 * 2**20, grew


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_resident_memory_of_a_fortran_ordered_npy_stays_bounded(tmp_path):
    """A Fortran-ordered .npy (np.save of a transposed array) stayed mapped whole: its
    rows are spread over the columns, and no page was released (800 MB file: 855 MB
    resident). Now the mapping is released as the columns move on: the file pages
    mapped at once stay at a few batches, whatever the file's size."""
    code = r"""
import re, sys, threading, time, numpy as np, nbbn
path = sys.argv[1]
x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(1 << 21, 32),
                              fortran_order=True)
x[:] = np.arange(32, dtype=np.float32)
x.flush(); del x
warm = np.asfortranarray(np.ones((65536, 32), np.float32))  # (the same kernels, compiled)
nbbn.fit(warm, -1, batch_size=65536, progress=False)
def file_pages():
    return int(re.search(r"RssFile:\s+(\d+)", open("/proc/self/status").read()).group(1)) << 10
before, peak, done = file_pages(), [0], []
def watch():
    while not done:
        peak[0] = max(peak[0], file_pages())
        time.sleep(0.001)
watcher = threading.Thread(target=watch)
watcher.start()
rs = nbbn.fit(path, -1, batch_size=65536, progress=False)
done.append(1)
watcher.join()
assert (rs.mean == np.arange(32)).all() and rs.count[0] == 1 << 21
print(peak[0] - before)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.npy")],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    grew = int(out.split()[-1])
    assert grew < 2**27, grew  # the file is 256 MiB, a batch 8 MiB (measured: ~50 MiB)


# ----------------------------------------------------------------------- transform
@pytest.mark.parametrize("dtype_in, dtype_out, want",
                         [("float32", None, "float32"), ("uint8", None, "float32"),
                          ("float64", None, "float64"), ("uint8", "float16", "float16"),
                          ("float32", "float64", "float64")])
def test_transform_npy_equals_normalizer(tmp_path, rng, dtype_in, dtype_out, want):
    x = (rng.standard_normal((203, 3, 4)) * 30 + 100).clip(0, 255).astype(dtype_in)
    np.save(tmp_path / "x.npy", x)
    stats = fit(x)
    out = transform(tmp_path / "x.npy", stats, tmp_path / "y.npy", batch_size=50,
                    dtype=dtype_out)
    assert out == tmp_path / "y.npy"
    y = np.load(out)
    assert y.dtype == np.dtype(want)
    norm = stats.to_normalizer()
    expect = norm(x, out=np.empty(x.shape, want))
    np.testing.assert_array_equal(y, expect)
    close = ref_normalize(x, stats.mean, stats.var).astype(want)
    np.testing.assert_allclose(y, close, rtol=2e-3 if want == "float16" else 1e-6, atol=1e-6)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".nbbn-tmp")]


def test_transform_into_upper_case_npy(tmp_path, rng):
    """An output named x.NPY is a .npy file (the sources read .NPY shards too); it was
    refused as "expected a path ending in .npy or .zarr"."""
    x = rng.standard_normal((20, 3))
    out = transform(x, fit(x), tmp_path / "Y.NPY")
    np.testing.assert_array_equal(np.load(out), fit(x).to_normalizer()(x))


def test_transform_shards_into_one_file_and_channels_last(tmp_path, rng):
    parts = [rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8) for n in (9, 0, 30)]
    d = tmp_path / "d"
    d.mkdir()
    for i, p in enumerate(parts):
        np.save(d / f"{i}.npy", p)
    stats = fit(d, channel_axis=-1)
    y = np.load(transform(d, stats, tmp_path / "y.npy", batch_size=7))
    x = np.concatenate(parts)
    np.testing.assert_array_equal(y, stats.to_normalizer()(x))


def test_transform_of_a_glob_writes_the_shards_in_name_order(tmp_path, rng):
    """A glob's files are read sorted by name, as a folder's (glob.glob gives them in
    the folder's order, which is not)."""
    names = ["e", "b", "d", "a", "c", "f"]
    parts = {n: rng.standard_normal((3, 2)) + i for i, n in enumerate(names)}
    for n in names:
        np.save(tmp_path / f"{n}.npy", parts[n])
    x = np.concatenate([parts[n] for n in sorted(names)])
    norm = nbbn.Normalizer([0.0, 0.0], [1.0, 1.0], eps=0.0)
    y = transform(str(tmp_path / "*.npy"), norm, np.empty_like(x), batch_size=2)
    np.testing.assert_array_equal(y, x)


def test_transform_of_float32_and_float64_shards_is_float64(tmp_path, rng):
    """The output dtype is the shards' common one, not the first shard's."""
    parts = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((5, 3))]
    for i, part in enumerate(parts):
        np.save(tmp_path / f"{i}.npy", part)
    stats = nbbn.channel_stats(np.concatenate(parts))
    out = np.load(transform(tmp_path, stats, tmp_path.parent / "y.npy", batch_size=3))
    assert out.dtype == np.float64
    want = ref_normalize(np.concatenate([p.astype(np.float64) for p in parts]),
                         stats.mean, stats.var)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_transform_outputs_array_zarr_and_normalizer(tmp_path, rng):
    x = rng.standard_normal((77, 2, 5)).astype(np.float32)
    norm = nbbn.Normalizer([1.0, -1.0], [4.0, 0.25], weight=[2.0, 1.0], bias=[0.5, 0.0])
    out = np.empty_like(x)
    assert transform(x, norm, out, batch_size=10) is out
    np.testing.assert_array_equal(out, norm(x))
    with pytest.raises(ValueError, match="a Normalizer keeps its own"):
        transform(x, norm, out, eps=1.0)  # (it was ignored, eps=-1 too)
    zarr = pytest.importorskip("zarr")
    z = transform(x, norm, tmp_path / "y.zarr", batch_size=10)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "y.zarr"), mode="r")[:],
                                  norm(x))
    assert z.shape == x.shape
    nbbn.channel_stats(x).save(tmp_path / "s.npz")
    y = transform(x, str(tmp_path / "s.npz"), np.empty_like(x), eps=0.0)
    np.testing.assert_array_equal(y, nbbn.channel_stats(x).to_normalizer(eps=0.0)(x))


def test_transform_refuses_to_overwrite_its_input(tmp_path, rng):
    x = rng.standard_normal((20, 3))
    np.save(tmp_path / "x.npy", x)
    stats = fit(x)
    with pytest.raises(ValueError, match="does not overwrite its own input"):
        transform(tmp_path / "x.npy", stats, tmp_path / "x.npy")
    os.link(tmp_path / "x.npy", tmp_path / "link.npy")
    with pytest.raises(ValueError, match="does not overwrite its own input"):
        transform(tmp_path / "x.npy", stats, tmp_path / "link.npy")
    with pytest.raises(ValueError, match="shares memory"):
        transform(x, stats, x)
    with pytest.raises(ValueError, match="shares memory"):
        transform(x, stats, x[:, :])
    # another handle of the input's file: a second memory map, a zarr array
    for src in (tmp_path / "x.npy", np.load(tmp_path / "x.npy", mmap_mode="r")):
        with pytest.raises(ValueError, match="does not overwrite its own input"):
            transform(src, stats, np.load(tmp_path / "x.npy", mmap_mode="r+"))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, dtype=x.dtype)
    z[:] = x
    with pytest.raises(ValueError, match="does not overwrite its own input"):
        transform(tmp_path / "x.zarr", stats,
                  zarr.open_array(str(tmp_path / "x.zarr"), mode="r+"))
    np.testing.assert_array_equal(z[:], x)


def test_transform_refuses_a_dtype_the_array_out_does_not_have(rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    stats = fit(x)
    with pytest.raises(ValueError, match="the array out is float32, not float16"):
        transform(x, stats, np.empty_like(x), dtype="float16")
    assert transform(x, stats, np.empty_like(x), dtype="float32").dtype == np.float32


def test_transform_errors(tmp_path, rng):
    x = rng.standard_normal((20, 3))
    stats = fit(x)
    with pytest.raises(ValueError, match="has 4 channels.*statistics have 3"):
        transform(np.zeros((5, 4)), stats, np.empty((5, 4)))
    with pytest.raises(ValueError, match="float16, float32 or float64"):
        transform(x, stats, tmp_path / "y.npy", dtype="int8")
    with pytest.raises(ValueError, match=r"\.npy or \.zarr"):
        transform(x, stats, tmp_path / "y.bin")
    with pytest.raises(ValueError, match="shape"):
        transform(x, stats, np.empty((19, 3)))
    with pytest.raises(TypeError, match="iterable"):
        transform(iter([x]), stats, tmp_path / "y.npy")
    with pytest.raises(ValueError, match="empty"):
        transform(x, nbbn.RunningStats(), tmp_path / "y.npy")
    assert not os.path.exists(tmp_path / "y.npy")


def test_transform_failure_leaves_no_partial_output(tmp_path, rng):
    x = rng.standard_normal((40, 3))
    d = tmp_path / "d"
    d.mkdir()
    np.save(d / "a.npy", x)
    np.savez_compressed(d / "b.npz", rng.standard_normal((4000, 3)))
    data = (d / "b.npz").read_bytes()
    (d / "b.npz").write_bytes(data[:40] + bytes(len(data) - 80) + data[-40:])
    with pytest.raises(Exception, match=r"b\.npz"):
        transform(d, fit(x), tmp_path / "y.npy", batch_size=8)
    assert os.listdir(tmp_path) == ["d"]


# ---------------------------------------------------------------------- benchmark
def test_pipeline_benchmark_smoke(tmp_path):
    """``nbbn bench --pipeline`` runs end to end on tiny files (timings not checked)."""
    import io

    from nbbn.tools.bench_pipeline import run_pipeline_bench

    out = io.StringIO()
    res = run_pipeline_bench(out, quick=True, repeats=1, size_gb=0.004, workdir=str(tmp_path))
    assert [c["case"] for c in res["cases"]] == ["float32 .npy", "uint8, 100 .npy shards"]
    for c in res["cases"]:
        assert c["fit_gbps"] > 0 and c["memory_gbps"] > 0 and c["peak_rss"] > 0
    assert "ratio" in out.getvalue() and os.listdir(tmp_path) == []


def test_a_key_that_names_nothing_is_refused(tmp_path, rng):
    """``key`` names an array of a container or an element of an item: given for an
    array or .npy files it is an error, not ignored (a checkpoint would record it)."""
    x = rng.standard_normal((4, 3))
    np.save(tmp_path / "a.npy", x)
    for src, what in ((x, "an array"), (tmp_path / "a.npy", "a .npy file"),
                      (tmp_path, "a .npy file")):  # (a folder of one)
        with pytest.raises(ValueError, match=f"key='x' was given, but the source is {what}"):
            fit(src, key="x")
    np.savez(tmp_path / "b.npz", x=x)
    assert fit(tmp_path / "b.npz", key="x").count[0] == 4
    # a folder of .npy and .npz shards: the key names the .npz files' array
    assert fit(tmp_path, key="x").count[0] == 8


def test_errors_found_before_any_work(tmp_path, rng):
    """A folder named as the output, a 0-d item of an iterable: said up front, naming
    what is wrong."""
    x = rng.standard_normal((6, 3))
    (tmp_path / "o.npy").mkdir()
    with pytest.raises(IsADirectoryError, match="o.npy is a folder"):
        transform(x, fit(x), tmp_path / "o.npy")
    with pytest.raises(ValueError, match="item 1 of the iterable is 0-d"):
        fit([x, np.float64(3.0)])


def test_transform_refuses_the_file_of_a_view_of_a_view_of_a_memory_map(tmp_path, rng):
    """``np.asarray(mm)[2:]`` is a view of a plain view of the memory map: only the
    first ``.base`` was looked at, so its file was written over while it was read."""
    x = rng.standard_normal((20, 3))
    path = tmp_path / "x.npy"
    np.save(path, x)
    stats = fit(x)
    mm = np.load(path, mmap_mode="r")
    for source in (mm, mm[2:], np.asarray(mm), np.asarray(mm)[2:], np.asarray(mm)[2:][::2]):
        with pytest.raises(ValueError, match="is the input"):
            transform(source, stats, path)
    np.testing.assert_array_equal(np.load(path), x)


def test_transform_never_writes_over_or_into_its_input(tmp_path, rng):
    """Outputs that would destroy the input are refused before anything is written: a
    zarr group holding the input array, the store of a dask array read from zarr, an
    array of the input's store, memory shared with a DataFrame's or DataArray's values,
    an existing folder that is not a zarr store; and named statistics applied to other
    columns than theirs."""
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    pd = pytest.importorskip("pandas")
    xr = pytest.importorskip("xarray")
    x = rng.standard_normal((40, 3)) * 2 + 5
    stats = fit(x)
    g = tmp_path / "g.zarr"
    zarr.open_group(str(g), mode="w").create_array("raw", shape=x.shape, dtype="f8")[:] = x
    for source, out, match in (
            (g / "raw", g, "holds"),
            (da.from_zarr(str(g / "raw")), g / "raw", "is the input|is inside"),
            (g / "raw", zarr.open_array(str(g / "raw")), "is inside|is the input")):
        with pytest.raises(ValueError, match=match):
            transform(source, stats, out)
        np.testing.assert_array_equal(zarr.open_array(str(g / "raw"))[:], x)
    for source, kw in ((g / "raw", {}), (g, {"key": "raw"}),
                       (zarr.open_array(str(g / "raw")), {})):  # a sibling array: allowed
        transform(source, stats, g / "other.zarr", **kw)
        np.testing.assert_array_equal(zarr.open_array(str(g / "raw"))[:], x)
    for wrap in (lambda a: pd.DataFrame(a, copy=False), xr.DataArray):
        b = x.copy()
        with pytest.raises(ValueError, match="shares memory"):
            transform(wrap(b[:-1]), stats, b[1:])
        np.testing.assert_array_equal(b, x)
    notes = tmp_path / "notes.zarr"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a zarr store"):
        transform(x, stats, notes)
    assert (notes / "keep.txt").read_text() == "mine"
    df = pd.DataFrame({"a": x[:, 0], "b": x[:, 1]})
    named = fit(df)
    with pytest.raises(ValueError, match=r"fitted on the columns \['a', 'b'\], but columns"):
        transform(df, named, tmp_path / "y.npy", columns=["b", "a"])
    assert not (tmp_path / "y.npy").exists()


def test_transform_refuses_a_new_output_the_next_fit_would_read(tmp_path, rng):
    """``transform("shards", st, "shards/norm.npy")`` was written, and the next fit of
    the folder counted the normalized rows as data (twice the count), and the same
    transform was refused on its second run (its output had become an input). A new
    output that the next fit would read (at the folder's top level, matched by the glob,
    or in a subfolder of a folder of shards) is refused before anything is read, as
    ``nbbn fit -o`` is; beside the folder, or a sibling ``.zarr``, it is written."""
    x = rng.standard_normal((10, 3))
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "a.npy", x)
    (shards / "sub").mkdir()
    stats = fit(shards)
    for source, out, match in ((shards, shards / "norm.npy", "at the folder's top level"),
                               (str(shards / "*.npy"), shards / "n.npy", "the pattern"),
                               (shards, shards / "sub" / "n.npy", "would refuse the folder")):
        with pytest.raises(ValueError, match=match):
            transform(source, stats, out)
        # (refused before the statistics are read: a missing file is not reached)
        with pytest.raises(ValueError, match="next fit"):
            transform(source, tmp_path / "missing.npz", out)
        assert not os.path.exists(out)
    assert sorted(os.listdir(shards)) == ["a.npy", "sub"] and not os.listdir(shards / "sub")
    assert fit(shards).count.tolist() == [10, 10, 10]
    transform(shards, stats, tmp_path / "norm.npy")
    transform(shards, stats, shards / "norm.zarr")  # (not read by a folder of shards)
    assert fit(shards).count.tolist() == [10, 10, 10]
    # a .npy among tables is not read as data: the next fit refuses the two kinds (the
    # message said "would be read as data ... a file of that kind")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame(x, columns=["a", "b", "c"]).to_parquet(tables / "p.parquet")
    with pytest.raises(ValueError, match=r"would make the next fit of .*tables refuse the "
                       r"folder, whose top level would hold two kinds of files \(Parquet/CSV "
                       r"tables and n.npy\)"):
        transform(tables, stats, tables / "n.npy")
    assert os.listdir(tables) == ["p.parquet"]


def test_transform_refuses_a_zarr_group_holding_arrays(tmp_path, rng):
    """``transform(x, st, "data.zarr")`` into an existing zarr group deleted the arrays it
    held (``train``, ``labels``), eagerly and through dask. Refused now, naming them, as
    an existing folder that is not a zarr store is; a v2 group too. An existing zarr
    array (and an empty group) is still replaced, and an array in the group is written
    beside the others."""
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    x = rng.standard_normal((4, 3))
    stats = fit(x)
    data = tmp_path / "data.zarr"
    g = zarr.open_group(str(data), mode="w")
    g.create_array("train", shape=(100, 3), dtype="f8")[:] = 1.0
    g.create_array("labels", shape=(100,), dtype="i8")[:] = 2
    v2 = tmp_path / "v2.zarr"
    zarr.open_group(str(v2), mode="w", zarr_format=2).create_array(
        "a", shape=(5,), dtype="f8")[:] = 3.0
    for source in (x, da.from_array(x, chunks=2)):
        with pytest.raises(FileExistsError, match=r"data.zarr is a zarr group holding "
                           r"labels, train: writing the array would delete them"):
            transform(source, stats, data)
        with pytest.raises(FileExistsError, match="zarr group holding a:"):
            transform(source, stats, v2)
    g = zarr.open_group(str(data), mode="r")
    assert sorted(g.array_keys()) == ["labels", "train"]
    np.testing.assert_array_equal(g["train"][:], 1.0)
    assert zarr.open_group(str(v2), mode="r")["a"][0] == 3.0
    transform(x, stats, data / "normalized.zarr")  # (the advice: an array of the group)
    assert sorted(zarr.open_group(str(data), mode="r").array_keys()) == [
        "labels", "normalized.zarr", "train"]
    arr = tmp_path / "arr.zarr"
    zarr.open_array(str(arr), mode="w", shape=(2,), dtype="i8")[:] = 7
    empty = tmp_path / "empty.zarr"
    zarr.open_group(str(empty), mode="w")
    for out in (arr, empty):
        transform(x, stats, out)
        np.testing.assert_allclose(zarr.open_array(str(out))[:], stats.to_normalizer()(x))


def test_stale_temps_of_a_linked_output_are_removed(tmp_path, rng):
    """A link's file is replaced beside the file it points to, and a killed run's
    temporary file there is removed by the next write (docs/cli.md)."""
    x = rng.standard_normal((10, 3))
    real = tmp_path / "real"
    real.mkdir()
    np.save(real / "y.npy", np.zeros(1))
    (tmp_path / "y.npy").symlink_to(real / "y.npy")
    stale = real / ".y.npy.1b82d3e8.nbbn-tmp"
    stale.write_bytes(b"half a file")
    transform(x, fit(x), tmp_path / "y.npy")
    assert not stale.exists() and (tmp_path / "y.npy").is_symlink()
    assert np.load(real / "y.npy").shape == x.shape


def test_transform_refuses_a_shard_of_rows_without_values(tmp_path):
    """A (4, 3, 0) shard beside (2, 3, 2) ones was left out of the shape check: its rows
    were counted, and transform wrote 4 rows it never computed (zeros, or what ``out``
    held)."""
    np.save(tmp_path / "a.npy", np.ones((2, 3, 2)))
    np.save(tmp_path / "b.npy", np.zeros((4, 3, 0)))
    norm = nbbn.Normalizer([0.0, 0, 0], [1.0, 1, 1], eps=0)
    with pytest.raises(ValueError, match=r"has shape \(4, 3, 0\), but .* every shard must"):
        nbbn.transform(tmp_path, norm, tmp_path.parent / "o.npy", progress=False)


def test_transform_of_integer_shards_of_several_dtypes_is_float32(tmp_path):
    """int64 with uint64 shards (whose common dtype is float64) gave float64 output;
    integer input gives float32, as documented, whatever the integer dtypes."""
    np.save(tmp_path / "a.npy", np.ones((2, 3), np.int64))
    np.save(tmp_path / "b.npy", np.full((2, 3), 3, np.uint64))
    norm = nbbn.Normalizer([0.0, 0, 0], [1.0, 1, 1], eps=0)
    out = np.load(nbbn.transform(tmp_path, norm, tmp_path.parent / "o.npy", progress=False))
    assert out.dtype == np.float32 and out[:, 0].tolist() == [1, 1, 3, 3]


# ------------------------------------------------------------ iterables and datasets
def test_a_key_that_picks_nothing_is_named():
    """key= out of range or not a position gave a raw IndexError, or int()'s message; a
    key missing from a dict item was told to name the array with key=..."""
    items = [(np.ones((4, 3)), np.arange(4))]
    with pytest.raises(ValueError, match=r"key=2 picks nothing in item 0 of the iterable, "
                                         r"a tuple of 2 elements: expected a position "
                                         r"from 0 to 1"):
        fit(items, key=2)
    with pytest.raises(ValueError, match="key='image' picks nothing in item 0"):
        fit(items, key="image")
    np.testing.assert_array_equal(fit(items, key="0").count, [4, 4, 4])  # (the CLI's text)
    with pytest.raises(ValueError, match=r"key='img' is not among the keys \['image'\] of "
                                         r"item 0"):
        fit([{"image": np.ones((4, 3))}], key="img")


def test_a_map_style_dataset_without_torch_is_read_as_samples():
    """Any object with __getitem__ and __len__ (Python's sequence protocol, as torch's
    map-style Dataset) is a Dataset of samples: it was refused, with a message that said
    it was read in batches."""

    class Samples:
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return np.full((3, 4, 4), float(i))

    for batched in (None, False):
        rs = fit(Samples(), batched=batched)
        np.testing.assert_array_equal(rs.count, [160] * 3)
        np.testing.assert_array_equal(rs.mean, [4.5] * 3)
    with pytest.raises(ValueError, match=r"batched=True was given for a Dataset \(Samples\)"):
        fit(Samples(), batched=True)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes: Python 3.11")
def test_an_error_after_a_checkpoint_write_still_says_resume(tmp_path):
    """checkpoint_interval=0 writes after every batch: an error then found nothing new
    to write, and left out the note that the checkpoint holds the rows before it."""
    data = np.ones((40, 3), np.float32)

    def batches():
        for i in range(0, 40, 4):
            if i == 20:
                raise RuntimeError("boom")
            yield data[i:i + 4]

    with pytest.raises(RuntimeError, match="boom") as e:
        fit(batches(), checkpoint=tmp_path / "g.ckpt", checkpoint_interval=0)
    assert "the statistics of the 20 rows before the error were saved to" in " ".join(
        e.value.__notes__)


# ------------------------------------------------- edges found by mutation testing
def _stats(x):
    return nbbn.RunningStats(-1).update(x)


def test_transform_refuses_an_out_with_more_rows(rng):
    x = rng.standard_normal((20, 3))
    with pytest.raises(ValueError, match="shape"):
        nbbn.transform(x, _stats(x), np.zeros((25, 3)), progress=False)
    zarr = pytest.importorskip("zarr")
    with pytest.raises(ValueError, match="shape"):
        nbbn.transform(x, _stats(x), zarr.zeros((25, 3), dtype="f8"), progress=False)


def test_transform_into_a_float16_array(rng):
    x = rng.standard_normal((20, 3)).astype(np.float16)
    out, stats = np.empty_like(x), _stats(x)
    assert nbbn.transform(x, stats, out, progress=False) is out
    np.testing.assert_array_equal(out, stats.to_normalizer()(x))


def test_transform_to_an_npy_path_that_is_a_folder(tmp_path, rng):
    x = rng.standard_normal((20, 3))
    (tmp_path / "y.npy").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        nbbn.transform(x, _stats(x), tmp_path / "y.npy", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["y.npy"]


def test_transform_into_an_empty_folder_named_zarr(tmp_path, rng):
    pytest.importorskip("zarr")
    x = rng.standard_normal((20, 3))
    (tmp_path / "y.zarr").mkdir()
    z = nbbn.transform(x, _stats(x), tmp_path / "y.zarr", progress=False)
    np.testing.assert_array_equal(z[:], _stats(x).to_normalizer()(x))


def test_transform_to_zarr_with_a_short_first_batch(tmp_path, rng):
    pytest.importorskip("zarr")
    d = tmp_path / "d"
    d.mkdir()
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((20, 2))
    np.save(d / "a.npy", a)
    np.save(d / "b.npy", b)
    x = np.concatenate([a, b])
    z = nbbn.transform(d, _stats(x), tmp_path / "y.zarr", batch_size=10, progress=False)
    np.testing.assert_array_equal(z[:], _stats(x).to_normalizer()(x))


def test_a_failed_npy_open_leaves_no_temporary_file(tmp_path, rng, monkeypatch):
    x = rng.standard_normal((20, 3))

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "open_memmap", fail)
    with pytest.raises(OSError, match="disk full"):
        nbbn.transform(x, _stats(x), tmp_path / "y.npy", progress=False)
    assert os.listdir(tmp_path) == []


def test_a_failed_zarr_create_leaves_no_temporary_store(tmp_path, rng, monkeypatch):
    zarr = pytest.importorskip("zarr")
    x = rng.standard_normal((20, 3))

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(zarr, "open_array", fail)
    with pytest.raises(OSError, match="disk full"):
        nbbn.transform(x, _stats(x), tmp_path / "y.zarr", progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("items", [
    [np.ones((2, 3, 1)), np.ones((2, 4, 0))],  # an empty item after
    [np.zeros((0, 3)), np.ones((2, 4))],  # an empty item first
    [np.ones((2, 3)), np.zeros((0, 4))],
])
def test_an_empty_item_of_other_channels_is_refused(items):
    """An iterable's item of no values skipped the channel check: (2, 4, 0) after
    (2, 3, 1) items was taken, and (0, 3) then (2, 4) gave 4 channels, where
    RunningStats.update refuses a batch of other channels whether it holds values or
    not."""
    with pytest.raises(ValueError, match=r"item 1 has 4 channels along channel_axis=1 "
                                         r".*but item 0 has 3 .*every item must have the "
                                         r"same channels"):
        nbbn.fit(items, progress=False)
    with pytest.raises(ValueError):
        rs = nbbn.RunningStats(1)
        for x in items:
            rs.update(x)
