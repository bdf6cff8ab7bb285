"""Source adapters of ``nbbn.fit``: every kind of source gives the statistics of its data.

The expected statistics come from the float64 reference (``reference.ref_stats_many``)
on the concatenated data; the batch boundaries (batch sizes that do not divide the
shard lengths, shards of different lengths, empty shards) must not matter.
"""

from __future__ import annotations

import os
import sys
import zipfile

import numpy as np
import pytest
from reference import assert_stats, ref_stats, ref_stats_many, stats_rtol

import nbbn
from nbbn import MissingExtraError
from nbbn.sources import Position, Slot, open_source


def check(stats, parts, channel_axis=1, nan_policy="propagate"):
    """``stats`` equals the reference statistics of the concatenation of ``parts``."""
    parts = [np.asarray(p) for p in parts if np.asarray(p).size]
    ref = ref_stats_many(parts, channel_axis, nan_policy)
    rtol = stats_rtol(parts[0].dtype)
    np.testing.assert_array_equal(stats.count, ref.count)
    np.testing.assert_allclose(stats.mean, ref.mean, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(stats.var, ref.var, rtol=rtol * 10, atol=1e-12)
    np.testing.assert_array_equal(stats.min, ref.min)
    np.testing.assert_array_equal(stats.max, ref.max)


def fit(src, **kw):
    kw.setdefault("progress", False)
    return nbbn.fit(src, **kw)


@pytest.fixture
def data(rng):
    return (rng.standard_normal((203, 3, 5)) * 3 + 7).astype(np.float32)


BATCH_SIZES = [1, 7, 64, 1000, None]


# ------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_numpy_array(data, batch_size):
    check(fit(data, batch_size=batch_size), [data])


def test_memmap_and_channels_last(tmp_path, rng):
    x = rng.integers(0, 256, (97, 4, 4, 3), dtype=np.uint8)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    mm[:] = x
    mm.flush()
    check(fit(mm, channel_axis=-1, batch_size=10), [x], channel_axis=-1)
    check(fit(np.load(tmp_path / "x.npy", mmap_mode="r"), channel_axis=-1), [x], -1)


def test_torch_tensor_source(data):
    torch = pytest.importorskip("torch")
    check(fit(torch.from_numpy(data), batch_size=50), [data])


# -------------------------------------------------------------------------- files
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_npy_file(tmp_path, data, batch_size):
    np.save(tmp_path / "x.npy", data)
    check(fit(tmp_path / "x.npy", batch_size=batch_size), [data])


def test_npy_fortran_order_and_big_endian(tmp_path, data):
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    check(fit(str(tmp_path / "f.npy"), batch_size=9), [data])
    np.save(tmp_path / "b.npy", data.astype(">f4"))
    check(fit(str(tmp_path / "b.npy"), batch_size=9), [data])


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("batch_size", [7, None])
def test_npz_member_streamed(tmp_path, data, compressed, batch_size):
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "x.npz", images=data, labels=np.arange(len(data)))
    check(fit(tmp_path / "x.npz", key="images", batch_size=batch_size), [data])
    save(tmp_path / "one.npz", data)  # a single member needs no key
    check(fit(tmp_path / "one.npz", batch_size=batch_size), [data])


def test_npz_shards_whose_batches_grow(tmp_path, rng):
    """A short first batch, then longer ones and wider rows: the reused batch buffers
    grow."""
    parts = [rng.integers(-9, 9, (3, 2)).astype(np.int8), rng.standard_normal((25, 2))]
    for i, p in enumerate(parts):
        np.savez(tmp_path / f"{i}.npz", p)
    for bs in (10, None):
        check(fit(tmp_path, batch_size=bs), parts)


def test_npz_fortran_member(tmp_path, data):
    np.savez(tmp_path / "f.npz", a=np.asfortranarray(data))
    check(fit(tmp_path / "f.npz", batch_size=11), [data])


def test_an_npz_member_that_ends_early_names_the_file(tmp_path, data, monkeypatch):
    """zipfile's EOFError (a member shorter than its stored size) is a ValueError naming
    the file, as a bad checksum is."""
    np.savez_compressed(tmp_path / "x.npz", data)

    def ended(self, b):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(zipfile.ZipExtFile, "readinto", ended)
    with pytest.raises(ValueError, match=r"x\.npz\[arr_0\]: the file is corrupt \(Compressed"):
        fit(tmp_path / "x.npz")


def test_npz_errors_name_the_members(tmp_path, data):
    np.savez(tmp_path / "x.npz", images=data, labels=np.arange(3))
    with pytest.raises(ValueError, match=r"holds 2 arrays.*images.*key="):
        fit(tmp_path / "x.npz")
    with pytest.raises(ValueError, match=r"no array 'nope'"):
        fit(tmp_path / "x.npz", key="nope")


def test_scipy_sparse_npz_shards(tmp_path, rng):
    """Files of scipy.sparse.save_npz (CSR and CSC) fit as their dense forms, the zeros
    counted; batches are sized by the stored bytes; transform refuses them."""
    sparse = pytest.importorskip("scipy.sparse")
    mats = [sparse.random_array((400, 6), density=d, format=f, rng=rng)
            for d, f in ((0.2, "csr"), (0.5, "csc"), (0.05, "csr"))]
    for i, m in enumerate(mats):
        sparse.save_npz(tmp_path / f"s{i}.npz", m)
    dense = np.concatenate([m.toarray() for m in mats])
    for batch_size in (None, 37):
        rs = fit(tmp_path, channel_axis=-1, batch_size=batch_size, progress=False)
        assert_stats(rs, ref_stats(dense, -1), rtol=1e-13)
    src = open_source(tmp_path, channel_axis=-1)
    stored = max(m.nnz * (m.dtype.itemsize + m.indices.dtype.itemsize) / 400 for m in mats)
    assert src.row_bytes == int(np.ceil(stored)) < 6 * 8
    odd = sparse.random_array((7, 6), density=3 / 42, format="csr", rng=rng)  # 3 values
    sparse.save_npz(tmp_path.parent / "odd.npz", odd)
    stored = odd.nnz * (odd.dtype.itemsize + odd.indices.dtype.itemsize)
    assert open_source(tmp_path.parent / "odd.npz").row_bytes == -(-stored // 7)  # rounded up
    with pytest.raises(ValueError, match=r"s0.npz is a scipy sparse matrix.*with_mean=False"):
        nbbn.transform(tmp_path, rs, tmp_path.parent / "out.npy", channel_axis=-1,
                       progress=False)
    assert not (tmp_path.parent / "out.npy").exists()


@pytest.mark.parametrize("fmt", ["coo", "coo_coords", "bsr", "dia"])
def test_scipy_sparse_npz_of_every_format(tmp_path, rng, fmt):
    """save_npz files in scipy's other formats fit as their dense forms too (a COO's
    indices as row/col, or as the coords newer scipy writes); a key (which would read
    scipy's storage as rows) is refused."""
    sparse = pytest.importorskip("scipy.sparse")
    m = sparse.random_array((60, 6), density=0.3, format="csr", rng=rng).asformat(
        fmt[:3])
    if fmt == "coo_coords":
        np.savez(tmp_path / "m.npz", coords=np.stack(m.coords), format=b"coo",
                 shape=m.shape, data=m.data, _is_array=True)
    else:
        sparse.save_npz(tmp_path / "m.npz", m)
    assert_stats(fit(tmp_path / "m.npz", channel_axis=-1, progress=False),
                 ref_stats(m.toarray(), -1), rtol=1e-13)
    with pytest.raises(ValueError, match="is a scipy sparse matrix .* without key='data'"):
        fit(tmp_path / "m.npz", channel_axis=-1, key="data", progress=False)
    # in memory: one update counts it; a fit says so
    for src in (m, [m, m]):
        with pytest.raises(TypeError, match=r"scipy sparse .*RunningStats\(channel_axis=-1\)"):
            fit(src, channel_axis=-1, progress=False)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "dia"])
def test_scipy_sparse_npz_of_byte_swapped_arrays(tmp_path, rng, fmt):
    """A save_npz file whose data (and indices) are byte-swapped ('>f8', '>i4': a
    big-endian host's) fits as its dense form (mutant: scipy's load_npz kept the
    swapped data, and its row slices failed with "scipy.sparse does not support dtype
    >f8", naming no file; a COO or BSR one was not even built)."""
    sparse = pytest.importorskip("scipy.sparse")
    m = sparse.random_array((60, 6), density=0.3, format="csr", rng=rng).asformat(fmt)
    sparse.save_npz(tmp_path / "n.npz", m, compressed=False)
    with np.load(tmp_path / "n.npz") as z:
        members = {k: z[k].astype(z[k].dtype.newbyteorder(">")) if z[k].dtype.kind in "fiu"
                   else z[k] for k in z.files}
    np.savez(tmp_path / "be.npz", **members)
    assert_stats(fit(tmp_path / "be.npz", channel_axis=-1, batch_size=7, progress=False),
                 ref_stats(m.toarray(), -1), rtol=1e-13)


def test_a_scipy_sparse_npz_of_bools_is_refused_as_a_matrix(tmp_path):
    """A save_npz file of bool (or complex) values is refused as a bool array is, naming
    the file as a sparse matrix (mutant: the message named scipy's storage member,
    "m.npz[data] must have ..."); the source is not opened."""
    sparse = pytest.importorskip("scipy.sparse")
    for dtype, kind in ((bool, "bool"), (complex, "complex128")):
        sparse.save_npz(tmp_path / "m.npz", sparse.csr_array(np.eye(3, dtype=dtype)))
        with pytest.raises(TypeError, match=rf"m\.npz, a scipy sparse matrix, must have a "
                           rf"real floating .* got dtype {kind}") as err:
            fit(tmp_path / "m.npz", channel_axis=-1, progress=False)
        assert "[data]" not in str(err.value)


def test_folder_of_shards(tmp_path, rng):
    """Sorted by name, .npy and .npz mixed, empty shards, different row counts."""
    parts = [rng.integers(-50, 50, (n, 2, 3)).astype(np.int16) for n in (5, 0, 17, 1, 30)]
    d = tmp_path / "shards"
    d.mkdir()
    for i, p in enumerate(parts):
        if i % 2:
            np.savez(d / f"part_{i:02d}.npz", p)
        else:
            np.save(d / f"part_{i:02d}.npy", p)
    np.save(d / "part_99.npy", np.zeros((0,), np.float64))  # empty, any shape
    (d / "README.txt").write_text("not a shard")
    for bs in (1, 4, 16, None):
        check(fit(d, batch_size=bs), parts)
    check(fit(str(d / "part_0*"), batch_size=4), parts)  # a glob
    check(fit([d / "part_00.npy", d / "part_02.npy"]), [parts[0], parts[2]])  # a list


def test_shard_channel_mismatch_names_the_shard(tmp_path, rng):
    d = tmp_path / "s"
    d.mkdir()
    np.save(d / "a.npy", rng.standard_normal((4, 3, 2)))
    np.save(d / "b.npy", rng.standard_normal((4, 4, 2)))
    with pytest.raises(ValueError, match=r"b\.npy has 4 channels along channel_axis=1.*a\.npy"):
        fit(d)
    np.save(d / "b.npy", rng.standard_normal((4, 3, 5)))
    with pytest.raises(ValueError, match=r"b\.npy has shape \(4, 3, 5\).*same shape after axis 0"):
        fit(d)


def test_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        fit(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match="matches no"):
        fit(str(tmp_path / "*.npy"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .npy or .npz"):
        fit(tmp_path / "empty")
    (tmp_path / "junk.npy").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a .npy"):
        fit(tmp_path / "junk.npy")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(TypeError, match="string"):
        fit(tmp_path / "s.npy")
    np.save(tmp_path / "t.npy", np.zeros((100, 3)))
    (tmp_path / "t.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated"):
        fit(tmp_path / "t.npy")
    np.save(tmp_path / "u.npy", np.zeros((100, 3)))  # short of its last byte only
    (tmp_path / "u.npy").write_bytes((tmp_path / "u.npy").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"u\.npy: not a readable .*truncated"):
        fit(tmp_path / "u.npy")


def test_npy_format_version_3_is_read(tmp_path, data):
    """.npy format 3.0 (2.0 with a UTF-8 header) was refused as unsupported, in an .npy
    file and an .npz member, while np.load reads it."""
    fmt = np.lib.format
    with open(tmp_path / "v3.npy", "wb") as f:
        fmt.write_array(f, data, version=(3, 0))
    with zipfile.ZipFile(tmp_path / "v3.npz", "w") as z, z.open("a.npy", "w") as f:
        fmt.write_array(f, data, version=(3, 0))
    check(fit(tmp_path / "v3.npy", batch_size=7), [data])
    check(fit(tmp_path / "v3.npz", key="a", batch_size=7), [data])


# ---------------------------------------------------------------- zarr and HDF5
def test_zarr_sources(tmp_path, data):
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, dtype=data.dtype,
                        chunks=(16, 3, 5))
    z[:] = data
    check(fit(tmp_path / "a.zarr", batch_size=10), [data])
    check(fit(z, batch_size=None), [data])
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("x", shape=data.shape, dtype=data.dtype, chunks=(50, 3, 5))[:] = data
    check(fit(tmp_path / "g.zarr", key="x", batch_size=33), [data])
    with pytest.raises(ValueError, match=r"group with the arrays \[.x.\]"):
        fit(tmp_path / "g.zarr")
    # a key that names nothing was ignored for a zarr array, path or object (a checkpoint
    # would record it); refused as for a .npy file
    for src in (tmp_path / "a.zarr", z):
        with pytest.raises(ValueError, match=r"key='q' was given, but the source is the "
                                             r"zarr [aA]rray"):
            fit(src, key="q")


def test_a_zarr_folder_that_is_no_store_and_a_zarr_zip_store(tmp_path, data):
    """A folder named *.zarr without zarr's metadata passed zarr's GroupNotFoundError
    through; a zarr ZipStore (z.zarr.zip) was read as an .npz ("holds 0 arrays")."""
    zarr = pytest.importorskip("zarr")
    (tmp_path / "no.zarr").mkdir()
    with pytest.raises(ValueError, match=r"no\.zarr: not a zarr store \(no zarr\.json, "
                                         r"\.zarray, \.zgroup at its top level\)"):
        fit(tmp_path / "no.zarr")
    np.save(tmp_path / "no.zarr" / "a.npy", data)
    with pytest.raises(ValueError, match=r"it holds \.npy/\.npz files, such as a\.npy: pass "
                                         r"a glob, .*no\.zarr/\*\.npy"):
        fit(tmp_path / "no.zarr")
    check(fit(str(tmp_path / "no.zarr" / "*.npy")), [data])
    store = zarr.storage.ZipStore(str(tmp_path / "a.zarr.zip"), mode="w")
    zarr.create_array(store, shape=data.shape, chunks=(16, 3, 5), dtype=data.dtype)[:] = data
    store.close()
    store = zarr.storage.ZipStore(str(tmp_path / "g.zarr.zip"), mode="w")
    g = zarr.open_group(store, mode="w")
    g.create_array("x", shape=data.shape, chunks=(16, 3, 5), dtype=data.dtype)[:] = data
    store.close()
    check(fit(tmp_path / "a.zarr.zip", batch_size=10), [data])
    check(fit(tmp_path / "g.zarr.zip", key="x"), [data])
    with pytest.raises(ValueError, match=r"g.zarr.zip is a group with the arrays \['x'\]"):
        fit(tmp_path / "g.zarr.zip")
    # (arrays in subgroups: the message listed ['sub'], and key="sub" was refused)
    nested = zarr.open_group(tmp_path / "nested.zarr", mode="w")
    nested.create_group("sub").create_array("arr", shape=data.shape, dtype=data.dtype)[:] = data
    for key in (None, "sub"):
        with pytest.raises(ValueError, match=r"the arrays \['sub/arr'\]"):
            fit(tmp_path / "nested.zarr", key=key)
    check(fit(tmp_path / "nested.zarr", key="sub/arr"), [data])
    with pytest.raises(ValueError, match=r"key='x' was given, but the source is the zarr "
                                         r"array .*a\.zarr\.zip"):
        fit(tmp_path / "a.zarr.zip", key="x")
    with open_source(tmp_path / "a.zarr.zip") as src:
        assert src.fingerprint()["shards"][0]["path"] == str(tmp_path / "a.zarr.zip")


def test_hdf5_sources(tmp_path, data):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["grp/x"] = data
        f["y"] = np.arange(5.0)
    check(fit(f"{tmp_path / 'a.h5'}:grp/x", batch_size=10), [data])
    check(fit(tmp_path / "a.h5", key="grp/x"), [data])
    with pytest.raises(ValueError, match="holds 2 datasets"):
        fit(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5", "r") as f:
        check(fit(f["grp/x"], batch_size=64), [data])
        with pytest.raises(ValueError, match=r"key='x' was given, but the source is the h5py "
                                             r"Dataset /grp/x, an array"):
            fit(f["grp/x"], key="x")  # (was ignored)
        check(fit(f, key="grp/x"), [data])
    with pytest.raises(ValueError, match=r"key='y' was given, but the path .*a\.h5:grp/x "
                                         r"names its dataset already"):
        fit(f"{tmp_path / 'a.h5'}:grp/x", key="y")  # (was ignored: grp/x was read)
    with h5py.File(tmp_path / "none.h5", "w") as f:
        f.create_group("empty")
    errors = []  # (kept, as a notebook keeps the last one: its frames hold their locals)
    for path, key, match in ((tmp_path / "a.h5", "grp", r"a\.h5:/grp is a group, not an "
                                                        r"array; it holds the datasets \['x'\]"),
                             (tmp_path / "none.h5", None, r"none\.h5 holds 0 datasets \[\]")):
        with pytest.raises(ValueError, match=match) as e:
            fit(path, key=key)
        errors.append(e)
        with h5py.File(path, "w") as f:  # the refusal closed the file: writable again
            f["z"] = np.ones((2, 3))
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f["x"] = np.full((4, 3), np.nan)
    with pytest.raises(ValueError, match=r"nan\.h5:/x, rows 0-4: nan_policy='raise'") as e:
        fit(tmp_path / "nan.h5", nan_policy="raise")  # an error while reading: closed too
    errors.append(e)
    with h5py.File(tmp_path / "nan.h5", "w") as f:
        f["x"] = np.ones((4, 3))


def test_hdf5_errors_name_the_dataset(tmp_path):
    """"f.h5:grp" was "f.h5/grp is a group" and "f.h5:/" "f.h5// is a group"; a missing
    dataset listed the top-level names only; with key= the 1-d and axis errors named
    the file."""
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "f.h5"
    with h5py.File(p, "w") as f:
        f["grp/x"] = np.ones((4, 3))
        f["grp/sub/y"] = np.ones((4, 3))
        f["one"] = np.arange(5.0)
    for src, kw, match in (
            (f"{p}:grp", {}, r"f\.h5:/grp is a group, not an array; it holds the datasets "
                             r"\['sub/y', 'x'\]"),
            (f"{p}:/", {}, r"f\.h5:/ is a group, not an array; it holds the datasets "
                           r"\['grp/sub/y', 'grp/x', 'one'\]"),
            (f"{p}:grp/z", {}, r"f\.h5 has no array 'grp/z'; it holds \['grp/sub/y', "
                               r"'grp/x', 'one'\]"),
            (p, {"key": "one"}, r"f\.h5:/one is 1-d"),
            (p, {"key": "grp/x", "channel_axis": 5}, r"for the 2-d data of .*f\.h5:/grp/x")):
        with pytest.raises(ValueError, match=match):
            fit(src, **kw)


def test_an_hdf5_dataset_of_a_null_dataspace_is_refused(tmp_path):
    """``f["e"] = h5py.Empty("f4")``: its shape is None, a raw TypeError ('NoneType'
    object is not iterable)."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["e"] = h5py.Empty("f4")
    for src, kw in ((tmp_path / "e.h5", {"key": "e"}), (f"{tmp_path / 'e.h5'}:e", {}),
                    (tmp_path / "e.h5", {})):
        with pytest.raises(ValueError, match=r"e\.h5:/e: an HDF5 dataset with a null "
                                             r"dataspace \(h5py\.Empty, dtype float32\)"):
            fit(src, **kw)
    with h5py.File(tmp_path / "e.h5", "r") as f:
        with pytest.raises(ValueError, match="h5py Dataset /e: an HDF5 dataset with a null"):
            fit(f["e"])
    with h5py.File(tmp_path / "e.h5", "w") as f:  # (closed after the refusals)
        f["x"] = np.ones((2, 3))


def test_an_hdf5_file_with_a_user_block_is_read(tmp_path, data):
    """HDF5's signature may follow a user block (at byte 512, 1024, ...): such a file was
    refused as "not a .npy, .npz or HDF5 file" unless named as file.h5:dataset."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "ub.h5", "w", userblock_size=1024) as f:
        f["x"] = data
    assert (tmp_path / "ub.h5").read_bytes()[:4] != b"\x89HDF"
    check(fit(tmp_path / "ub.h5"), [data])
    check(fit(tmp_path / "ub.h5", key="x"), [data])
    check(fit([tmp_path / "ub.h5"], key="x"), [data])


def test_folders_and_globs_of_hdf5_files(tmp_path, data):
    """With key=, a folder of .h5 files, an empty folder or a glob of no files was refused
    as "the source is image files" (the CLI said the folder holds nothing it reads); a
    glob of .h5 files matched "no .npy or .npz file" where a list of them was read; and
    "f.nc:x" was "no such file or folder" though key= reads an .nc file."""
    h5py = pytest.importorskip("h5py")
    d = tmp_path / "h5"
    d.mkdir()
    (tmp_path / "empty").mkdir()
    parts = [data[:100], data[100:]]
    for i, part in enumerate(parts):
        with h5py.File(d / f"s{i}.h5", "w") as f:
            f["x"] = part
    for kw in ({"key": "x"}, {"columns": ["x"]}, {}):
        with pytest.raises(FileNotFoundError, match=r"holds no \.npy or \.npz files.* it "
                                                    r"holds HDF5 files, such as s0\.h5.*"
                                                    r"pass a glob, .*h5/\*\.h5, or a list"):
            fit(d, **kw)
    with pytest.raises(FileNotFoundError, match="empty: the folder holds no .npy or .npz"):
        fit(tmp_path / "empty", key="x")
    with pytest.raises(FileNotFoundError, match=r"the pattern matches no image file"):
        fit(str(tmp_path / "missing" / "*.png"), key="x")
    check(fit(str(d / "s*.h5"), key="x", batch_size=30), parts)
    check(fit(str(d / "s*.h5")), parts)  # (one dataset in each)
    with pytest.raises(FileNotFoundError, match=r"matches no \.npy, \.npz or HDF5 file"):
        fit(str(d / "t*.h5"), key="x")
    with h5py.File(tmp_path / "f.nc", "w") as f:
        f["x"] = data
    check(fit(f"{tmp_path / 'f.nc'}:x"), [data])
    check(fit(tmp_path / "f.nc", key="x"), [data])


def test_a_glob_or_folder_of_several_kinds_is_refused(tmp_path):
    """A glob matching images, .npy shards and tables read one kind and left the others
    out silently (tables won over shards, shards over images); a folder holding shards
    and tables read the shards. Now an error naming the kinds, as for Parquet and CSV."""
    pytest.importorskip("pyarrow")
    PIL_Image = pytest.importorskip("PIL.Image")
    import pandas as pd

    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", np.ones((4, 3)))
    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(tmp_path / "c.parquet")
    for pattern, kinds in (("*", "3 kinds"), ("[ab].*", "2 kinds"), ("[bc].*", "2 kinds")):
        with pytest.raises(ValueError, match=rf"the pattern matches files of {kinds} "):
            fit(str(tmp_path / pattern))
    with pytest.raises(ValueError, match=r"the folder holds files of 2 kinds \(\.npy/\.npz "
                                         r"shards: 1 .*b\.npy\); Parquet/CSV tables: 1"):
        fit(tmp_path)
    assert fit(str(tmp_path / "b.*")).count.tolist() == [4, 4, 4]
    assert fit(str(tmp_path / "*.png")).count.tolist() == [16, 16, 16]
    assert fit(str(tmp_path / "*.parquet")).count.tolist() == [2]


@pytest.mark.parametrize("module, extra", [("zarr", "zarr"), ("h5py", "hdf5")])
def test_missing_extra_names_it(tmp_path, monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    if module == "zarr":
        (tmp_path / "a.zarr").mkdir()
        path = tmp_path / "a.zarr"
    else:
        path = tmp_path / "a.h5"
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(MissingExtraError, match=rf"pip install 'nbbn\[{extra}\]'"):
        fit(path)


# ---------------------------------------------------------------------- iterables
@pytest.mark.parametrize("batch_size", [None, 5])
def test_generator_of_arrays(rng, batch_size):
    parts = [rng.standard_normal((n, 2, 3)) for n in (10, 0, 3, 25)]
    check(fit((p for p in parts), batch_size=batch_size), parts)


def test_iterable_tuples_dicts_and_key(rng):
    parts = [rng.standard_normal((n, 3)) for n in (4, 9)]
    pairs = [(p, np.zeros(len(p))) for p in parts]
    check(fit(pairs, key=0), parts)
    check(fit([{"x": p} for p in parts], key="x"), parts)
    with pytest.raises(ValueError, match="key=0"):
        fit(pairs)


def test_torch_dataloader(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((70, 3, 4, 4)).astype(np.float32)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.arange(70))
    loader = torch.utils.data.DataLoader(ds, batch_size=16)
    check(fit(loader, key=0), [x])
    check(fit(loader, key=0, batch_size=5), [x])


def test_iterable_shape_mismatch_names_the_item(rng):
    parts = [rng.standard_normal((3, 2)), rng.standard_normal((3, 5))]
    with pytest.raises(ValueError, match=r"item 1 has 5 channels"):
        fit(iter(parts))


def test_iterable_non_numeric_item():
    with pytest.raises(TypeError, match=r"item 1.*string"):
        fit(iter([np.zeros((2, 2)), np.array([["a", "b"]])]))


# -------------------------------------------------------------- positions, fingerprint
def test_batches_from_a_position(tmp_path, rng):
    parts = [rng.standard_normal((n, 2)) for n in (5, 7)]
    for i, p in enumerate(parts):
        np.save(tmp_path / f"{i}.npy", p)
    src = open_source(tmp_path)
    slots = iter(Slot, None)
    got = [(b.shard, b.start, b.stop) for b in src.batches(3, Position(0, 3), lambda: next(slots))]
    assert got == [(0, 3, 5), (1, 0, 3), (1, 3, 6), (1, 6, 7)]
    first = next(src.batches(3, Position(1, 6), lambda: next(slots)))
    np.testing.assert_array_equal(first.data, parts[1][6:])
    # inside a zip member (streamed in order): the reader seeks to the row
    for compress in (np.savez, np.savez_compressed):
        compress(tmp_path / "z.npz", x=parts[1])
        got = [b.data.copy() for b in open_source(tmp_path / "z.npz", key="x").batches(
            2, Position(0, 3), lambda: next(slots))]
        np.testing.assert_array_equal(np.concatenate(got), parts[1][3:])


def test_fingerprint_follows_the_files(tmp_path, data):
    np.save(tmp_path / "x.npy", data)
    fp = open_source(tmp_path / "x.npy").fingerprint()
    (shard,) = fp["shards"]
    assert shard["path"] == os.path.abspath(tmp_path / "x.npy")
    assert shard["shape"] == list(data.shape) and shard["dtype"] == "float32"
    assert open_source(tmp_path / "x.npy").fingerprint() == fp
    os.utime(tmp_path / "x.npy", ns=(1, 1))
    assert open_source(tmp_path / "x.npy").fingerprint() != fp
    assert open_source(iter([data])).fingerprint() is None
    # an .npz rewritten with the same array, its mtime restored: its size tells
    np.savez(tmp_path / "z.npz", data)
    fp = open_source(tmp_path / "z.npz").fingerprint()
    st = os.stat(tmp_path / "z.npz")
    np.savez_compressed(tmp_path / "z.npz", data)
    os.utime(tmp_path / "z.npz", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert open_source(tmp_path / "z.npz").fingerprint() != fp
    # two memory maps of one file, of one shape, at different offsets
    maps = [np.memmap(tmp_path / "x.npy", data.dtype, "r", offset=128 + k * 60, shape=(10, 3, 5))
            for k in (0, 1)]
    assert open_source(maps[0]).fingerprint() != open_source(maps[1]).fingerprint()


def test_zarr_fingerprint_follows_every_file_of_the_store(tmp_path, data):
    """A zarr store's fingerprint: the newest mtime of any of its files, and their total
    size (a chunk rewritten, its mtime restored)."""
    zarr = pytest.importorskip("zarr")
    z = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=data.shape,
                        dtype=data.dtype, chunks=(16, 3, 5))
    z[:] = data
    files = [os.path.join(d, n) for d, _, names in os.walk(tmp_path / "a.zarr") for n in names]
    assert len(files) > 2
    for f in files:
        os.utime(f, ns=(10**18, 10**18))
    fp = open_source(tmp_path / "a.zarr").fingerprint()
    os.utime(files[0], ns=(2 * 10**18, 2 * 10**18))  # the first file walked: the newest
    assert open_source(tmp_path / "a.zarr").fingerprint() != fp
    os.utime(files[0], ns=(10**18, 10**18))
    assert open_source(tmp_path / "a.zarr").fingerprint() == fp
    chunk = max(files, key=os.path.getsize)
    with open(chunk, "ab") as f:
        f.write(b"x")
    os.utime(chunk, ns=(10**18, 10**18))
    assert open_source(tmp_path / "a.zarr").fingerprint() != fp


def test_fingerprints_follow_links_to_the_data(tmp_path, data):
    """An HDF5 external link, a virtual dataset, a zarr store whose array folder is a
    link: only the file (or folder) named was fingerprinted, so a resume after the data
    was rewritten where it really lives was accepted, and mixed old and new rows."""
    h5py = pytest.importorskip("h5py")
    zarr = pytest.importorskip("zarr")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"] = data
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["x"] = h5py.ExternalLink("d.h5", "/x")
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    layout[:] = h5py.VirtualSource("d.h5", "x", shape=data.shape)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_virtual_dataset("x", layout)
    g = zarr.open_group(str(tmp_path / "real.zarr"), mode="w")
    g.create_array("x", shape=data.shape, chunks=(16, 3, 5), dtype=data.dtype)[:] = data
    zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    os.symlink(tmp_path / "real.zarr" / "x", tmp_path / "s.zarr" / "x")
    os.symlink(tmp_path / "s.zarr", tmp_path / "real.zarr" / "x" / "up")  # (a loop: once)
    sources = [(f"{tmp_path / 'm.h5'}:x", {}), (f"{tmp_path / 'v.h5'}:x", {}),
               (tmp_path / "s.zarr", {"key": "x"})]

    def fingerprints():
        fps = []
        for src, kw in sources:
            with open_source(src, **kw) as s:
                fps.append(s.fingerprint())
        with h5py.File(tmp_path / "m.h5", "r") as f:  # (an h5py dataset given)
            fps.append(open_source(f["x"]).fingerprint())
        return fps

    cwd = os.getcwd()
    os.chdir(tmp_path)  # (the virtual source's relative name, from here as from v.h5)
    try:
        for src, kw in sources:
            check(fit(src, **kw), [data])
        before = fingerprints()
        with h5py.File(tmp_path / "d.h5", "r+") as f:
            f["x"][0] += 1
        zarr.open_group(str(tmp_path / "real.zarr"), mode="r+")["x"][0] += 1
        for p in (tmp_path / "d.h5", *(tmp_path / "real.zarr" / "x" / "c").rglob("*")):
            os.utime(p, ns=(2 * 10**18, 2 * 10**18))
        after = fingerprints()
    finally:
        os.chdir(cwd)
    for src, a, b in zip([*sources, "h5py dataset"], before, after, strict=True):
        assert a != b, src


def test_a_recursive_glob_of_shards_reads_every_level(tmp_path):
    """``d/**/*.npy`` read the files one level down only (glob without recursive=True),
    where an image glob reads every level: files left out, silently."""
    for i, sub in enumerate(["", "s", "s/t"]):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / sub / f"x{i}.npy", np.full((4, 3), float(i)))
    rs = nbbn.fit(str(tmp_path / "**" / "*.npy"), progress=False)
    assert rs.count.tolist() == [12] * 3 and rs.mean.tolist() == [1.0] * 3


def test_a_folder_with_shards_in_subfolders_too_is_refused(tmp_path):
    """A folder is read from its top level: shards nested in subfolders were left out,
    silently (statistics of fewer shards). Now an error naming the subfolders and the
    globs that read them or not; hidden folders and other files do not count."""
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    for sub in ("s", "s/t", "u"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / sub / "b.npy", np.ones((4, 3)))
    (tmp_path / ".cache").mkdir()
    np.save(tmp_path / ".cache" / "c.npy", np.ones((4, 3)))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.txt").write_text("not a shard")
    with pytest.raises(ValueError, match=r"at its top level and in subfolders \(\['s', "
                                         r"'s/t', 'u'\]\).*top level only.*Pass a glob: "
                                         r".*\*\*/\*\.npy for every level, or .*/\*\.npy"):
        fit(tmp_path)
    assert fit(str(tmp_path / "**" / "*.npy")).count.tolist() == [16] * 3
    assert fit(str(tmp_path / "*.npy")).count.tolist() == [4] * 3
    for sub in ("s/t", "s", "u"):
        (tmp_path / sub / "b.npy").unlink()
    assert fit(tmp_path).count.tolist() == [4] * 3  # (subfolders of no shards, hidden ones)
    pytest.importorskip("pyarrow")
    import pandas as pd

    d = tmp_path / "tables"
    (d / "year=2021").mkdir(parents=True)
    for path in (d / "p.parquet", d / "year=2021" / "p.parquet"):
        pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"holds Parquet/CSV tables at its top level and in "
                                         r"subfolders \(\['year=2021'\]\).*\*\*/\*\.parquet"):
        fit(d)


def test_a_folder_of_a_table_that_holds_images_is_refused(tmp_path, capsys):
    """Kaggle's layout, ``labels.csv`` beside ``train/*.png``, was read as a table in
    silence: the statistics of the CSV's columns, no image read. Now an error naming
    both kinds and the glob for each. A folder of ``.npy`` shards with a picture in it
    (a plot, a preview) is read as its shards, as before."""
    PIL_Image = pytest.importorskip("PIL.Image")
    from nbbn.cli import main

    kag = tmp_path / "kag"
    (kag / "train").mkdir(parents=True)
    (kag / "labels.csv").write_text("a,b\n1,2\n3,4\n")
    for name in ("x.png", "y.png"):
        PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(kag / "train" / name)
    with pytest.raises(ValueError, match=r"holds Parquet/CSV tables at its top level "
                                         r"\(labels\.csv\) and image files \(such as "
                                         r".*train/x\.png\).*Pass a glob: .*kag/\*\*/\*\.png "
                                         r"for the images, or .*kag/\*\.csv for the tables"):
        fit(kag)
    assert main(["fit", str(kag), "--no-progress"]) == 2
    assert "and image files (such as" in capsys.readouterr().err
    assert fit(str(kag / "**" / "*.png")).count.tolist() == [32] * 3
    d = tmp_path / "shards"
    (d / "plots").mkdir(parents=True)
    np.save(d / "a.npy", np.ones((4, 3)))
    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "plots" / "t.png")
    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "preview.png")
    assert fit(d).count.tolist() == [4] * 3
    t = tmp_path / "hidden"
    (t / ".thumbs").mkdir(parents=True)
    (t / "labels.csv").write_text("a,b\n1,2\n3,4\n")
    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(t / ".thumbs" / "t.png")
    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(t / "._a.png")
    pytest.importorskip("pyarrow")
    assert fit(t).count.tolist() == [2, 2]  # (hidden ones aside)
    assert fit(str(kag / "*.csv")).count.tolist() == [2, 2]


def test_upper_case_shard_names_in_a_folder(tmp_path):
    """``X.NPY`` read as a file but not in a folder ("holds no .npy or .npz files")."""
    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    os.rename(tmp_path / "x.npy", tmp_path / "X.NPY")
    np.save(tmp_path / "y.npy", np.zeros((4, 3)))
    rs = nbbn.fit(tmp_path, progress=False)
    assert rs.count.tolist() == [8] * 3 and rs.mean.tolist() == [0.5] * 3
