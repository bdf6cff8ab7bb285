"""Where :func:`nbbn.transform` writes: a ``.npy`` file, a zarr array, or an array.

A writer gives, for each range of output rows, an array to normalize into
(``view(lo, hi)``), is told when those rows are done (``written``), and at the end
either ``commit()`` or ``abort()``. A ``.npy`` output is written to a temporary file in
the same folder (a :class:`nbbn._durable.Replacement`, filled through
``np.lib.format.open_memmap`` and a shared memory map) and renamed over the target
only when complete, with the permissions ``np.save`` would give it; temporary files
that a killed transform left beside the target are removed first. The written pages
are unmapped after each batch so the resident memory stays bounded. A ``.zarr`` path
is written the same way, as a folder beside the target swapped in on commit
(:class:`nbbn._durable.StoreReplacement`).
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
from pathlib import Path

import numpy as np

from ._durable import Replacement, StoreReplacement, check_file_path, remove_stale_temps
from ._pages import release_span, releaser
from ._shards_zarr_h5 import import_extra
from ._wording import Param, worded


class Writer:
    """Base: ``view``, ``written``, ``commit``, ``abort`` and the ``result`` to return."""

    result: object = None

    def view(self, lo: int, hi: int) -> np.ndarray:
        raise NotImplementedError

    def written(self, lo: int, hi: int, rows: np.ndarray) -> None:
        pass

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


class ArrayWriter(Writer):
    """Into a numpy array (or ``np.memmap``) given by the user."""

    def __init__(self, out: np.ndarray) -> None:
        self.out = self.result = out

    def view(self, lo, hi):
        return self.out[lo:hi]

    def written(self, lo, hi, rows):
        release = releaser(self.out, self.out[lo:hi])  # (an np.memmap's pages)
        if release is not None:
            release()


class NpyWriter(Writer):
    """Into a new ``.npy`` file, through a temporary file renamed at the end.

    Parameters
    ----------
    path : pathlib.Path
        The ``.npy`` file; replaced only by :meth:`commit`.
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        The array's dtype.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.result = path
        self.file = Replacement(path)  # the temporary file: self.file.path
        self.f = None
        self.mm: mmap.mmap | None = None
        self.array: np.ndarray | None = None
        try:
            m = np.lib.format.open_memmap(self.file.path, mode="w+", dtype=dtype, shape=shape)
            offset = int(m.offset)
            del m
            self.f = open(self.file.path, "r+b")  # noqa: SIM115 (closed by commit/abort)
            if math.prod(shape):
                self.mm = mmap.mmap(self.f.fileno(), 0)
                self.array = np.frombuffer(self.mm, dtype, count=math.prod(shape),
                                           offset=offset).reshape(shape)
            else:
                self.array = np.empty(shape, dtype)
        except BaseException:
            self.abort()
            raise
        self.offset = offset
        self.row_bytes = dtype.itemsize * math.prod(shape[1:])

    def view(self, lo, hi):
        assert self.array is not None
        return self.array[lo:hi]

    def written(self, lo, hi, rows):
        # shared mapping: the data stays in the page cache, only our mapping goes
        release_span(self.mm, self.offset + lo * self.row_bytes,
                     self.offset + hi * self.row_bytes)

    def _close(self) -> None:
        self.array = None
        if self.mm is not None:
            with contextlib.suppress(BufferError):
                self.mm.close()
            self.mm = None
        if self.f is not None:
            self.f.close()
            self.f = None

    def commit(self):
        if self.mm is not None:
            self.mm.flush()
        self._close()
        self.file.commit()  # fsync, rename, fsync of the folder

    def abort(self):
        self._close()
        self.file.abort()


class ZarrWriter(Writer):
    """Into a zarr array: each batch is normalized into a buffer, then assigned. A store
    that the transform creates at a path (``store``) is filled beside the target and
    swapped in on commit: a failed run leaves the old store, not one half written."""

    def __init__(self, z, store: StoreReplacement | None = None) -> None:
        self.z = self.result = z
        self.store = store
        self.buf: np.ndarray | None = None

    def view(self, lo, hi):
        shape = (hi - lo, *self.z.shape[1:])
        if self.buf is None or self.buf.shape[0] < shape[0]:
            self.buf = np.empty(shape, self.z.dtype)
        return self.buf[: hi - lo]

    def written(self, lo, hi, rows):
        self.z[lo:hi] = rows

    def commit(self):
        if self.store is not None:
            self.store.commit()
            zarr = import_extra("zarr", "zarr", "writing zarr arrays")
            self.z = self.result = zarr.open_array(str(self.store.target), mode="r+")
            self.store = None

    def abort(self):
        if self.store is not None:
            self.store.abort()
            self.store = None


def open_writer(out, shape: tuple[int, ...], dtype: np.dtype, batch_rows: int) -> Writer:
    """A writer for ``out`` (a ``.npy``/``.zarr`` path, a numpy array or a zarr array).

    Parameters
    ----------
    out : path, numpy array or zarr array
        Where to write.
    shape : tuple of int
        The output's shape (the source's).
    dtype : numpy.dtype
        The output's dtype (for a path).
    batch_rows : int
        Rows per batch (a new zarr array's chunk length).

    Returns
    -------
    Writer
        A writer to fill, then ``commit()`` or ``abort()``.

    Raises
    ------
    FileNotFoundError
        The folder of a path does not exist.
    ValueError, TypeError
        ``out`` is of another kind, shape or dtype.
    """
    if isinstance(out, (str, os.PathLike)):
        path = Path(out)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{out}: the folder {path.parent} does not exist")
        suffix = path.suffix.lower()  # (x.NPY as well: the sources read it)
        if suffix == ".npy" and path.is_dir():  # (found now, not at the final rename)
            raise IsADirectoryError(f"{out} is a folder: expected the path of the .npy "
                                    "file to write")
        if suffix == ".npy":
            check_file_path(out)
            remove_stale_temps(path)
            return NpyWriter(path, shape, dtype)
        if suffix == ".zarr":
            zarr = import_extra("zarr", "zarr", "writing zarr arrays")
            chunks = (max(1, min(batch_rows, shape[0])), *shape[1:])
            store = zarr_store_beside(path)
            try:
                # (mode "w-": into the empty folder as it is; "w" would replace the
                # folder, and with it the lock that keeps cleaners away)
                z = zarr.open_array(str(store.path), mode="w-", shape=shape, dtype=dtype,
                                    chunks=chunks)
            except BaseException:
                store.abort()
                raise
            return ZarrWriter(z, store)
        raise worded(ValueError, "{out}: expected a path ending in .npy or .zarr",
                     out=Param("out", os.fspath(out)))
    if isinstance(out, np.ndarray):
        _check_out_array(out, shape)
        return ArrayWriter(out)
    if type(out).__module__.startswith("zarr") and hasattr(out, "shape"):
        _check_out_array(out, shape)
        return ZarrWriter(out)
    raise TypeError(f"out must be a .npy or .zarr path, a numpy array or a zarr array, "
                    f"got {type(out).__name__}")


def zarr_store_beside(path: Path) -> StoreReplacement:
    """A temporary store beside the ``.zarr`` path ``path``, swapped in on commit (temporary
    stores of killed transforms removed first); an error for a folder that is not a zarr
    store, or a zarr group holding arrays or groups, whose files the swap would delete (an
    existing zarr array, or an empty group, is replaced)."""
    if path.is_dir() and any(path.iterdir()) and not any(
            (path / m).exists() for m in ("zarr.json", ".zarray", ".zgroup")):
        raise FileExistsError(f"{path} is a folder that is not a zarr store: writing the "
                              "array would delete its files; pass a new path")
    members = _group_members(path)
    if members:
        shown = ", ".join(members[:8]) + (f", ... ({len(members)} in all)"
                                          if len(members) > 8 else "")
        raise FileExistsError(f"{path} is a zarr group holding {shown}: writing the array "
                              "would delete them; pass a new path (an array of the group, "
                              f"such as {path / 'normalized.zarr'}, is written beside them)")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a zarr store (a folder): writing the "
                              "array would delete it; pass a new path")
    remove_stale_temps(path)
    return StoreReplacement(path)


def _group_members(path: Path) -> list[str]:
    """What the zarr group at ``path`` (zarr v3's ``zarr.json`` with ``node_type``
    "group", or v2's ``.zgroup``) holds besides its metadata: its arrays and groups (and
    any other file), sorted by name; empty for a zarr array, a group without members, or
    what is not a zarr group."""
    if not path.is_dir():
        return []
    meta = path / "zarr.json"
    if meta.is_file():
        try:
            group = json.loads(meta.read_text()).get("node_type") == "group"
        except (OSError, ValueError, AttributeError):
            group = False  # (not zarr's metadata: zarr says what is wrong when it opens it)
    else:
        group = (path / ".zgroup").is_file() and not (path / ".zarray").exists()
    if not group:
        return []
    return sorted(p.name for p in path.iterdir()
                  if p.name not in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata"))


def _check_out_array(out, shape: tuple[int, ...]) -> None:
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected the source's {shape}")
    dt = np.dtype(out.dtype)
    if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
        raise ValueError(f"out must have a float16/32/64 dtype, got {dt}")
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out is read-only")
