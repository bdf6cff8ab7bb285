"""Data sources for :func:`nbbn.fit` and :func:`nbbn.transform`: batches along axis 0.

:func:`open_source` turns what the user passes into a :class:`Source`: a list of
*shards* (one array, or one file of a sharded dataset), each read in batches of rows
along axis 0. Every batch carries its position (shard index and row range), so a fit can
stop after any batch and resume exactly there, and file sources have a fingerprint
(path, size, modification time, shape and dtype of each shard) that a checkpoint
records and a resume compares.

How each kind is read:

* numpy arrays (and ``np.memmap``): batches are views, nothing is copied.
* ``.npy`` files: memory-mapped; a batch is a view of the mapping (no copy). Before a
  batch is handed out the reader asks the kernel to read its pages ahead
  (``posix_fadvise``), and after it has been used its pages are unmapped again
  (``madvise(MADV_DONTNEED)``; the data stays in the page cache), so the resident
  memory stays at about two batches whatever the file size.
* ``.npz`` files: the member named by ``key`` is *streamed*: zip members cannot be
  memory-mapped, so rows are read (and, for a compressed file, decompressed) in order
  into a reused buffer, one batch at a time; the member is never read whole. A resume
  inside a compressed member decompresses up to the resume point again. Fortran-ordered
  members (whose rows are not contiguous) are the exception: they are read whole.
* ``.npz`` files written by ``scipy.sparse.save_npz`` (CSR or CSC; no ``key``): the
  matrix is loaded whole (its format has no row-wise access) as CSR, a batch is a CSR
  slice of rows, and its statistics count the zeros it does not store; batches are
  sized by the stored bytes per row. ``transform`` refuses them (its output is dense).
* image files (a folder without ``.npy``/``.npz`` files, searched recursively; a glob or
  list of JPEG, PNG, WebP, TIFF, BMP or GIF files): see :class:`nbbn.ImageSource`.
* directories and globs: the ``.npy``/``.npz`` files (and, for a glob, HDF5 files:
  one dataset of each, as in a list), sorted by name, read one after the other;
  shards of no rows are skipped; every other shard must have the same shape after
  axis 0 (the row count may differ). A folder is read from its top level: one
  whose subfolders (other than hidden ones) hold more shards (or tables, for a folder
  of tables) is a ``ValueError`` naming them, as they would be left out; a glob
  (``DIR/**/*.npy``: every level) reads them. A glob that matches files of several kinds
  (images, ``.npy``/``.npz`` shards, Parquet/CSV tables), or a folder whose top level
  holds both shards and tables, is a ``ValueError`` naming them: one kind per source.
  So is a folder whose top level holds tables and which holds image files (at any
  level, hidden names aside: ``labels.csv`` beside ``train/*.png``), with the globs
  that read one kind or the other; a folder of shards with pictures in it is read as
  its shards.
* a ``key`` or ``columns`` that names nothing in the source (a zarr array, an h5py
  dataset, a ``file.h5:dataset`` path, image files, an :class:`~nbbn.ImageSource`) is a
  ``ValueError``, never ignored.
* dask arrays, and xarray DataArrays whose data is one (:class:`ChunkedSource`): a
  shard per block of rows of the axis-0 chunks, so no chunk is computed twice; a
  DataArray keeps its channel coordinate (``channel_coord``). A dask array is
  identified by its dask name only: its data cannot be checked on resume. A dask
  DataFrame or Series is a ``TypeError`` naming what to pass instead.
* zarr arrays and paths (``pip install nbbn[zarr]``), h5py datasets and
  ``file.h5:dataset`` paths (``pip install nbbn[hdf5]``): batches are read by slicing.
  A file is read as HDF5 by its signature, whatever its name, after a user block too
  (:func:`is_hdf5_file`); a zip file that holds a zarr store (a ``ZipStore``) as the
  store.
* any other iterable of arrays (a generator, a torch ``DataLoader``): each item is a
  batch (split into ``batch_size`` rows when one is given), or a sample counted as a
  batch of one with ``batched=False`` (``nbbn._datasets``: torch Datasets, whose items
  are samples); items may differ in shape, not in their channel count; ``key`` picks an
  element of tuple or dict items (``key=0`` for the ``x`` of ``(x, y)``). CPU torch
  tensors become numpy arrays without a copy (bfloat16 tensors stay tensors, which the
  CPU kernels read natively); CUDA tensors and other device arrays are passed on as
  they are. Items must be fresh arrays: the next item is fetched while the current
  one is used. An iterable has no fingerprint; instead a digest of the items' shapes,
  dtypes and first rows is kept, and a resume re-iterates it from the start, skips the
  items already counted and refuses to continue if their digest differs (a shuffled or
  different iterable).
* tables (Parquet and CSV files, folders and globs of them, pandas and polars
  DataFrames, Arrow tables, ``xarray.Dataset``): their numeric columns are the
  channels, read as ``(rows, C)`` batches (:mod:`nbbn._tabular`).
"""

from __future__ import annotations

import glob
import hashlib
import math
import numbers
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._labels import check_coords, frame_columns, shown
from ._layout import check_dense_chunks, is_dask_frame, is_sparse
from ._shards import (
    ArrayShard,
    Shard,
    Slot,
    _is_device_array,
    _is_torch,
    as_batch_array,
)
from ._shards_npy import NpyShard, NpzShard, SparseNpzShard, is_sparse_npz
from ._shards_zarr_h5 import (
    container_shard,
    describe_container,
    hdf5_shard,
    is_zarr_zip,
    zarr_shard,
    zarr_zip_shard,
)
from ._torch_arrays import host_values, is_tensor
from ._wording import Param, files_label, worded
from .backends import is_dask_array, is_xarray
from .errors import CheckpointError

__all__ = ["BATCH_BYTES", "Batch", "IterableSource", "Position", "Slot", "Source",
           "open_source"]

BATCH_BYTES = 64 * 2**20
"""Target size of one batch when ``batch_size`` is not given (64 MiB)."""

SHARD_SUFFIXES = (".npy", ".npz")
HDF5_SUFFIXES = (".h5", ".hdf5", ".he5")
_GLOB_CHARS = "*?["


# --------------------------------------------------------------------------- batches
@dataclass
class Position:
    """Where a pass over a source stands: the next row to read is ``row`` of ``shard``.

    ``digest`` is, for iterable sources only, the digest of the items up to and
    including ``shard`` (see the module docstring); None otherwise.
    """

    shard: int = 0
    row: int = 0
    digest: str | None = None


@dataclass
class Batch:
    """Rows ``start:stop`` of shard number ``shard``, as an array in ``data``."""

    data: Any
    shard: int
    start: int
    stop: int
    nbytes: int
    digest: str | None = None
    slot: Slot | None = None
    cleanup: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        """Rows in this batch."""
        return self.stop - self.start

    def done(self) -> None:
        """Drop the data (and release mapped pages); call once the batch has been used."""
        self.data = None
        if self.cleanup is not None:
            self.cleanup()
            self.cleanup = None


Acquire = Callable[[], Slot]


# ---------------------------------------------------------------------------- source
class Source:
    """Shards read one after the other along axis 0 (see :func:`open_source`).

    Attributes
    ----------
    shards : list of Shard
    description : str
        What the source is, for messages.
    channel_coord : tuple or None
        ``(dimension, labels)`` of the channels of an xarray DataArray source (of its
        items, for an iterable: set by the first labelled item), else None.
    """

    channel_coord: tuple | None = None
    read_ahead = 2
    """Batches alive at once in ``nbbn.fit`` and ``nbbn.transform``: the one computed on
    and the one being read (``_reader.Prefetcher``'s depth)."""

    def __init__(self, shards: list[Shard], description: str, channel_axis=None) -> None:
        self.shards = shards
        self.description = description
        self.row_shape, self.dtype = _common_row_shape(shards, channel_axis)

    @property
    def rows(self) -> int | None:
        """Total rows (None when unknown, as for an iterable)."""
        return sum(s.rows for s in self.shards)

    @property
    def nbytes(self) -> int | None:
        """Bytes of all shards (None when unknown)."""
        return sum(s.rows * s.row_bytes for s in self.shards)

    @property
    def row_bytes(self) -> int | None:
        """Bytes of one row (None before the row shape is known): the largest of the
        shards' (a sparse shard's is its stored bytes per row)."""
        if self.row_shape is None or self.dtype is None:
            return None
        dense = math.prod(self.row_shape) * self.dtype.itemsize
        return max([s.row_bytes for s in self.shards if s.size] or [dense])

    def default_batch_size(self) -> int | None:
        """Rows per batch for about :data:`BATCH_BYTES` per batch."""
        rb = self.row_bytes
        return max(1, BATCH_BYTES // max(1, rb)) if rb is not None else None

    def empty_batch(self):
        """A batch of no rows, ``(0, *row_shape)``, that fixes the channel count of a fit
        of a source with no rows (as ``RunningStats.update`` of it does); None when the
        row shape is not known or is ``()`` (1-d data: no channel axis). A fit of a
        ``(0, 3)`` array gave statistics of no channels, which merged with any."""
        if not self.row_shape or self.dtype is None:
            return None
        return np.empty((0, *self.row_shape), self.dtype)

    def shard_offsets(self) -> list[int]:
        """The global index of each shard's first row."""
        out, total = [], 0
        for s in self.shards:
            out.append(total)
            total += s.rows
        return out

    def close(self) -> None:
        """Close the files the shards hold open."""
        for s in self.shards:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def fingerprint(self) -> dict | None:
        """Per-shard identity (path, size, mtime_ns, shape, dtype) for checkpoint checks."""
        return {"kind": type(self).__name__, "shards": [s.fingerprint() for s in self.shards]}

    def batches(self, batch_size: int | None, start: Position, acquire: Acquire
                ) -> Generator[Batch, None, None]:
        """Yield batches of ``batch_size`` rows from ``start`` on (batches never span shards).

        ``acquire()`` is called before each batch is read and blocks while the allowed
        number of batches is in use; the slot it returns travels with the batch.

        Parameters
        ----------
        batch_size : int or None
            Rows per batch (None: about :data:`BATCH_BYTES` per batch).
        start : Position
            The first row to read.
        acquire : callable
            Returns the :class:`Slot` of the next batch.

        Yields
        ------
        Batch
            The rows, their shard and row range, and their slot.
        """
        bs = batch_size or self.default_batch_size() or 1
        if start.shard > len(self.shards) or (
                start.shard < len(self.shards) and start.row > self.shards[start.shard].rows):
            raise ValueError(f"position {start} is beyond the end of {self.description}")
        for index in range(start.shard, len(self.shards)):
            shard = self.shards[index]
            row = start.row if index == start.shard else 0
            if shard.size == 0 or row >= shard.rows:
                continue
            reader = shard.open()
            try:
                while row < shard.rows:
                    stop = min(row + bs, shard.rows)
                    slot = acquire()
                    data, cleanup = reader.read(row, stop, slot)
                    yield Batch(data, index, row, stop, (stop - row) * shard.row_bytes,
                                slot=slot, cleanup=cleanup)
                    row = stop
            finally:
                reader.close()


class IterableSource(Source):
    """Any iterable of arrays; items are batches, or samples when not ``batched`` (see the
    module docstring). Items may differ in shape; only their channel count must agree.

    The next item is asked for only once the batches of the previous one have been
    used (``read_ahead`` 1, as a ``for`` loop asks): a generator may reuse one buffer
    for its items (``readinto``, h5py's ``read_direct``). Asked for one item ahead, such
    a generator overwrote the item being counted, and the statistics came back wrong,
    and different from run to run."""

    read_ahead = 1

    def __init__(self, iterable, key=None, description: str | None = None,
                 channel_axis=None, batched: bool = True) -> None:
        self.iterable = iterable
        self.key = key
        self.batched = batched
        self._first: Shard | None = None
        self._empty: Shard | None = None  # the first item of no rows
        self.channel_axis = channel_axis
        self.shards = []
        self.description = description or f"an iterable ({type(iterable).__name__})"
        self.row_shape, self.dtype = None, None
        self.channel_names: tuple[str, ...] | None = None  # (the first labelled item's)
        self._labelled = 0

    @property
    def rows(self) -> int | None:
        """Rows of all shards (None: an iterable's length is not known)."""
        return None

    @property
    def nbytes(self) -> int | None:
        """Bytes of all shards (None when unknown)."""
        return None

    def default_batch_size(self) -> int | None:
        """None: each item of an iterable is a batch."""
        return None

    def fingerprint(self) -> dict | None:
        """None: an iterable is checked by a digest of its items instead."""
        return None

    def empty_batch(self):
        """The first item of no rows, when no item had rows (see ``Source.empty_batch``)."""
        if self._first is not None or self._empty is None:
            return None
        return np.empty((0, *self._empty.row_shape), self._empty.dtype)

    def batches(self, batch_size, start, acquire):
        """Each item as a batch (split into ``batch_size`` rows when given), from ``start``."""
        digest = hashlib.sha256()
        self._first = self._empty = None
        index = -1
        items = iter(self.iterable)
        slot = None
        while True:
            if slot is None:  # (waits until the previous item's batches are used)
                slot = acquire()
            try:
                item = next(items)
            except StopIteration:
                break
            index += 1
            arr = self._array(item, index)
            _digest_item(digest, arr, index)
            if index < start.shard:
                continue
            if (index == start.shard and start.digest is not None
                    and digest.hexdigest() != start.digest):
                raise CheckpointError(
                    f"{self.description} does not yield the items it yielded when the "
                    f"checkpoint was written (their shapes, dtypes or first rows differ in "
                    f"items 0-{index}): the checkpoint cannot be resumed with it"
                )
            slot = yield from self._item_batches(arr, index, start, batch_size,
                                                 digest.hexdigest(), acquire, slot)
            arr = item = None
        if (start.shard or start.row) and index < start.shard:
            raise CheckpointError(
                f"{self.description} ended after {index + 1} items, but the checkpoint is at "
                f"item {start.shard}: it is not the iterable the checkpoint was written for"
            )

    def _array(self, item, index: int):
        """The array of one item (``key`` applied), a sample as a batch of one; a
        DataFrame's or DataArray's channel labels checked against the first item's."""
        item = _pick(item, self.key, index)
        self._check_labels(item, index)
        arr = as_batch_array(item, f"item {index}")
        if not self.batched:
            from ._datasets import as_sample

            arr = as_sample(arr)
        return arr

    def _check_labels(self, item, index: int) -> None:
        """Keep the first labelled item's column names (``channel_names``) or channel
        coordinate (``channel_coord``), and refuse an item labelled otherwise: its
        channels would be counted by position, so a DataFrame with its columns in
        another order pooled "w" into "h" in silence."""
        names = frame_columns(item)
        if names is not None:
            if self.channel_names is None:
                self.channel_names, self._labelled = names, index
            elif names != self.channel_names:
                hint = ("select them in that order first: df[[...]]" if sorted(names) ==
                        sorted(self.channel_names) else "every item must have them")
                raise ValueError(
                    f"item {index} of {self.description} has the columns {shown(names)}, "
                    f"but item {self._labelled} had {shown(self.channel_names)}: channels "
                    f"are counted by position, so the columns must agree ({hint})")
        coord = _data_array_coord(item, self.channel_axis)
        if coord is not None and coord[1] is not None:
            if self.channel_coord is None:
                self.channel_coord, self._labelled = coord, index
            else:
                check_coords(self.channel_coord, coord, f"item {index} of {self.description}",
                             f"item {self._labelled}'s labels", unchanged=False)

    def _item_batches(self, arr, index: int, start, batch_size, hexdigest: str, acquire,
                      slot=None):
        """The batches of item ``index`` (its channel count checked against the first's);
        ``slot``: one acquired already, taken by the first batch. Returns the slot when
        no batch took it (an empty item, or one read before the checkpoint's row)."""
        shard = ArrayShard(arr, f"item {index}")
        ref = self._first if self._first is not None else self._empty
        if ref is not None and (shard.size or shard.row_shape):
            # (an empty item too, as RunningStats.update refuses a batch of no rows with
            # other channels: (2, 4, 0) after (2, 3, 1) items was taken)
            _check_same_channels(ref, shard, self.channel_axis)
        if shard.size:
            if self._first is None:
                self._first = shard
        elif self._empty is None and shard.row_shape:
            self._empty = shard  # (for empty_batch: the channels of an iterable of no rows)
        row = start.row if index == start.shard else 0
        bs = batch_size or shard.rows
        while shard.size and row < shard.rows:
            stop = min(row + bs, shard.rows)
            if slot is None:
                slot = acquire()
            data = arr if (row, stop) == (0, shard.rows) else arr[row:stop]
            yield Batch(data, index, row, stop, (stop - row) * shard.row_bytes,
                        digest=hexdigest, slot=slot)
            data = slot = None
            row = stop
        return slot


def _digest_item(h, arr, index: int | None = None) -> None:
    if len(arr.shape) == 0:  # (checked here: this reads the first row before the batch)
        where = "an item" if index is None else f"item {index}"
        raise ValueError(f"{where} of the iterable is 0-d (a scalar, dtype {arr.dtype}): "
                         "expected an array with at least 1 dimension (rows along axis 0)")
    h.update(repr((tuple(int(n) for n in arr.shape), str(arr.dtype))).encode())
    if math.prod(arr.shape):
        h.update(_first_row_bytes(arr))


def _first_row_bytes(arr) -> bytes:
    """The bytes of ``arr[:1]`` on the host: a numpy array's, a tensor's (a CPU bfloat16
    one, which batches keep as a tensor, or a device tensor), a CuPy or numba device
    array's (copied). Only numpy arrays were hashed: a shuffled bfloat16 loader resumed
    a checkpoint of another order, counting some rows twice."""
    if isinstance(arr, np.ndarray):
        return np.ascontiguousarray(arr[:1]).tobytes()
    if is_tensor(arr):  # (on the host; bfloat16 widened to float64, exactly)
        return np.ascontiguousarray(host_values(arr[:1])).tobytes()
    for to_host in ("get", "copy_to_host"):  # (CuPy, numba device arrays)
        if callable(getattr(arr, to_host, None)):
            return np.ascontiguousarray(getattr(arr[:1], to_host)()).tobytes()
    return b""


def _data_array_coord(x, channel_axis) -> tuple | None:
    """``(dimension, labels or None)`` of the channel axis of an xarray DataArray ``x``,
    None for anything else or an axis not known (or out of range)."""
    if not is_xarray(x) or not isinstance(channel_axis, (int, np.integer)) or \
            isinstance(channel_axis, bool):
        return None
    from .backends.xarray import channel_coord

    return channel_coord(x, int(channel_axis))


def _pick(item, key, index: int):
    """The object in one item of an iterable (``key`` selects in tuples, lists, dicts)."""
    if isinstance(item, (tuple, list)):
        shapes = [tuple(v.shape) if hasattr(v, "shape") else None for v in item]
        if len(item) > 2 and all(sh is not None and len(sh) >= 2 for sh in shapes) and (
                key is None or len({len(sh) for sh in shapes if sh is not None}) == 1):
            # not (x, y): samples collated as a list (collate_fn=list, images of several
            # sizes), whose element 0 is one sample, not the batch: key=0 would misread it.
            # Arrays of different ranks with a key are fields of one batch (image, mask,
            # depth from the default collate), which key picks from
            raise ValueError(
                f"item {index} of the iterable is a {type(item).__name__} of {len(item)} "
                f"arrays of shapes {shapes[:3]}{', ...' if len(item) > 3 else ''}: a batch "
                "collated as a list of samples; pass the samples one by one "
                "(DataLoader(batch_size=None) or the Dataset itself). If it is one batch "
                "of several arrays of one rank, pass an iterable of the array to count "
                "(e.g. (b[0] for b in loader))")
        if len(item) > 2 and all(isinstance(v, (tuple, list, dict)) for v in item):
            # samples of (x, y) or dicts collated as a list (collate_fn=list): key=0 read
            # sample 0, its x and y pooled as the batch's rows
            kinds = sorted({type(v).__name__ for v in item})
            raise ValueError(
                f"item {index} of the iterable is a {type(item).__name__} of {len(item)} "
                f"{' and '.join(kinds)}s (samples such as (x, y)): a batch collated as a "
                "list of samples; pass the samples one by one (DataLoader(batch_size=None) "
                "or the Dataset itself), or collate them into arrays (DataLoader's default "
                "collate_fn)")
        if item and all(isinstance(v, numbers.Number) or (isinstance(v, np.generic)
                                                          and not isinstance(v, np.void))
                        for v in item):
            # a row of numbers: the source is nested lists, which key=0 would not mend
            raise ValueError(
                f"item {index} of the iterable is a {type(item).__name__} of {len(item)} "
                "numbers: nested lists are read as an iterable of batches; pass the data as "
                "an array (numpy.asarray(...)), whose rows lie along axis 0")
        if key is None:
            raise worded(ValueError, "item {index} of the iterable is a {kind} of {n} elements "
                         "(e.g. (x, y) from a DataLoader); pass {key} to pick x", index=index,
                         kind=type(item).__name__, n=len(item), key=Param("key", 0))
        try:  # (a position; the CLI's --key gives it as text)
            pos = None if isinstance(key, bool) else int(key)
        except (TypeError, ValueError):
            pos = None
        if pos is None or not -len(item) <= pos < len(item):
            raise worded(ValueError, "{key} picks nothing in item {index} of the iterable, "
                         "a {kind} of {n} elements: expected a position from 0 to {last}",
                         key=Param("key", key), index=index, kind=type(item).__name__,
                         n=len(item), last=len(item) - 1)
        item = item[pos]
    elif isinstance(item, dict):
        if key is None:
            raise worded(ValueError, "item {index} of the iterable is a dict with keys {keys}; "
                         "name the array with {key}", index=index, keys=list(item),
                         key=Param("key", placeholder="..."))
        if key not in item:
            raise worded(ValueError, "{key} is not among the keys {keys} of item {index} of "
                         "the iterable", key=Param("key", key), keys=list(item), index=index)
        item = item[key]
    elif key is not None:
        raise worded(ValueError, "{key} was given but item {index} is a {kind}, not a tuple, "
                     "list or dict", key=Param("key", key), index=index,
                     kind=type(item).__name__)
    return item


def _common_row_shape(shards: list[Shard], channel_axis) -> tuple:
    """The shape after axis 0 shared by all shards with rows, and their common dtype (a
    shard of rows without values, (4, 3, 0) beside (2, 3, 2), was left unchecked: its
    rows were counted in the source's, and transform wrote them unwritten)."""
    ref: Shard | None = None
    dtypes = []
    for s in shards:
        if s.rows == 0:
            continue
        dtypes.append(s.dtype)
        if ref is None:
            ref = s
        else:
            _check_same_rows(ref, s, channel_axis)
    if ref is None:
        if not shards:
            return None, None
        s0 = shards[0]
        return s0.row_shape, s0.dtype
    return ref.row_shape, np.result_type(*dtypes)


def _check_same_channels(ref: Shard, s: Shard, channel_axis) -> None:
    """Items of an iterable may differ in shape (images of different sizes), not in their
    channel count along ``channel_axis``."""
    shape, ref_shape = (s.rows, *s.row_shape), (ref.rows, *ref.row_shape)
    if channel_axis is None or not all(-len(t) <= channel_axis < len(t)
                                       for t in (shape, ref_shape)):
        return  # the fit reports an axis out of range for the item itself
    n, ref_n = shape[channel_axis], ref_shape[channel_axis]
    if n != ref_n:
        raise worded(ValueError, "{name} has {n} channels along {axis} (shape {shape}), but "
                     "{ref} has {ref_n} (shape {ref_shape}); every item must have the same "
                     "channels", name=s.name, n=n, axis=Param("channel_axis", channel_axis),
                     shape=shape, ref=ref.name, ref_n=ref_n, ref_shape=ref_shape)


def _check_same_rows(ref: Shard, s: Shard, channel_axis) -> None:
    if s.row_shape == ref.row_shape:
        return
    shape, ref_shape = (s.rows, *s.row_shape), (ref.rows, *ref.row_shape)
    if channel_axis is not None and len(shape) == len(ref_shape):
        ax = channel_axis % len(shape) if -len(shape) <= channel_axis < len(shape) else None
        if ax is not None and ax > 0 and shape[ax] != ref_shape[ax]:
            raise worded(ValueError, "shard {name} has {n} channels along {axis} (shape "
                         "{shape}), but {ref} has {ref_n} (shape {ref_shape}); every shard "
                         "must have the same channels", name=s.name, n=shape[ax],
                         axis=Param("channel_axis", channel_axis), shape=shape, ref=ref.name,
                         ref_n=ref_shape[ax], ref_shape=ref_shape)
    raise ValueError(
        f"shard {s.name} has shape {shape}, but {ref.name} has shape {ref_shape}: every shard "
        "must have the same shape after axis 0 (only the number of rows may differ)")


# ----------------------------------------------------------------------- open_source
def open_source(source, *, key=None, channel_axis: int | None = None,
                columns=None) -> Source:
    """Describe ``source`` as a :class:`Source` (see the module docstring for the kinds).

    Parameters
    ----------
    source : array, path, list of paths, zarr array, h5py dataset or iterable of arrays
        A path may name a ``.npy``, ``.npz``, HDF5 (``file.h5:dataset``) file, a zarr
        store, a directory of ``.npy``/``.npz`` shards, or a glob pattern of them.
    key : str or int, optional
        The array in an ``.npz`` file, an HDF5 file or a zarr group, or the element of
        tuple/dict items of an iterable (``key=0`` for ``(x, y)`` batches).
    channel_axis : int, optional
        Only used to word the error when shards differ in their channel count.
    columns : sequence of str or str, optional
        The columns of a table to read (Parquet, CSV, DataFrames, Arrow tables,
        ``xarray.Dataset``; see :mod:`nbbn._tabular`); default every numeric column.

    Returns
    -------
    Source
        The shards of ``source`` (an :class:`IterableSource` for an iterable).

    Raises
    ------
    FileNotFoundError
        A path does not exist or a glob matches nothing.
    ValueError, TypeError
        The data cannot be read as numeric arrays, or shards do not match.
    MissingExtraError
        zarr or h5py is needed and not installed.
    """
    from ._images import ImageSource, looks_like_images
    from ._tabular import open_any

    if isinstance(source, Source):
        if isinstance(source, ImageSource):  # (nbbn fit opens one before nbbn.fit)
            _refuse_for_images(key, columns)
        return source
    if isinstance(source, (str, os.PathLike)):
        _check_one_kind(os.fspath(source))
        _check_nested(os.fspath(source))

    if is_dask_frame(source):  # (it was iterated over its column names, or refused
        # as "not a table" with columns=, or as an iterable by transform)
        raise TypeError(
            f"nbbn.fit and nbbn.transform do not read a dask {type(source).__name__} (the "
            "row counts of its partitions are not known): for its statistics, use "
            "nbbn.dask.channel_stats(ddf, -1) (lazy; its columns the channels, named); to "
            "fit or transform it, pass ddf[columns].astype('float64').to_dask_array("
            "lengths=True) (a dask array: its columns by position; the lengths are "
            "computed first; without astype nullable columns such as Int64 give dtype "
            "object)")
    _refuse_a_column(source)
    if looks_like_images(source):  # image files: a folder, glob, list or file
        if key is not None or columns is not None:
            # a folder or glob of no images says so first (an empty folder, a folder of
            # HDF5 files, "missing/*.png" were refused for the key given, as image files)
            from ._images import _list_images

            _list_images(source)
        _refuse_for_images(key, columns)
        return ImageSource(source)
    if (table := open_any(source, columns, key)) is not None:
        return table
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), key, channel_axis)
    if isinstance(source, (list, tuple)) and source and all(
            isinstance(p, (str, os.PathLike)) for p in source):
        paths = [os.fspath(p) for p in source]
        return Source(_file_shards(paths, key), f"{len(paths)} files", channel_axis)
    module = type(source).__module__
    array_like = (isinstance(source, np.ndarray) or _is_torch(source)
                  or _is_device_array(source) or module.startswith("dask.array"))
    if key is not None and array_like:
        raise _unused_key(key, "an array")
    if isinstance(source, np.ndarray) or _is_torch(source) or _is_device_array(source):
        return Source([ArrayShard(as_batch_array(source, "source"))], "an array", channel_axis)
    if module.startswith("dask.array") and hasattr(source, "chunks"):
        return ChunkedSource(source, channel_axis)
    if module.startswith(("zarr", "h5py")):
        if key is not None and hasattr(source, "shape"):
            raise _unused_key(key, f"the {describe_container(source)}, an array")
        return Source([container_shard(source, key)], describe_container(source),
                      channel_axis)
    if is_sparse(source):
        as_batch_array(source, "source")  # TypeError: how to count it instead
    if all(hasattr(source, a) for a in ("shape", "dtype", "__getitem__")):
        data = getattr(source, "data", None) if is_xarray(source) else None
        if is_dask_array(data):  # a dask-backed DataArray: read along its chunks
            src: Source = ChunkedSource(data, channel_axis,
                                        f"a {type(source).__name__} of a dask array")
        else:
            src = Source([ArrayShard(source)], f"a {type(source).__name__}", channel_axis)
        src.channel_coord = _data_array_coord(source, channel_axis)
        return src
    if hasattr(source, "__iter__"):
        if isinstance(source, (bytes, dict)):
            raise TypeError(f"cannot read batches from a {type(source).__name__}")
        return IterableSource(source, key, channel_axis=channel_axis)
    raise TypeError(
        f"cannot read batches from a {type(source).__name__}: expected an array, a path "
        "(.npy, .npz, .h5, .zarr, a folder or glob of shards), a zarr array, an h5py dataset "
        "or an iterable of arrays")


def _refuse_a_column(source) -> None:
    """TypeError for a polars Series or a pyarrow Array or ChunkedArray: one column, 1-d
    as a pandas Series (whose refusal says so); they failed inside numpy ("Cannot
    interpret 'Float64' as a data type") or were iterated as items of dtype object."""
    import sys

    module = type(source).__module__.split(".")[0]
    pa = sys.modules.get("pyarrow")
    if module == "polars" and type(source).__name__ == "Series":
        table = "series.to_frame() (a table: its name is the channel's)"
    elif pa is not None and isinstance(source, (pa.Array, pa.ChunkedArray)):
        table = "pyarrow.table({'name': arr}) (a table: its column is the channel)"
    else:
        return
    what = f"a {module} {type(source).__name__}"
    raise TypeError(f"{what} is 1-d: batches are taken along axis 0, so there is no channel "
                    f"axis; pass {table}, or its values as (N, 1) for a single channel "
                    "(.to_numpy().reshape(-1, 1))")


def _check_one_kind(path: str) -> None:
    """ValueError when a glob matches files of several kinds nbbn reads (images,
    ``.npy``/``.npz`` shards, Parquet/CSV tables), or a folder's top level holds both
    shards and tables: one kind was read and the others left out silently (which one
    depended on the order of the checks)."""
    from ._images import _is_image_name
    from ._tabular import _table_kind

    if os.path.isdir(path):
        with os.scandir(path) as it:
            found = [e.path for e in it if e.is_file() and folder_file_kind(e.name)]
    elif not os.path.exists(path) and any(ch in path for ch in _GLOB_CHARS):
        found = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    else:
        return
    kinds: dict[str, list[str]] = {}
    for p in sorted(found):
        kind = (".npy/.npz shards" if p.lower().endswith(SHARD_SUFFIXES) else
                "Parquet/CSV tables" if _table_kind(p) else
                "images" if _is_image_name(p) else None)
        if kind is not None:
            kinds.setdefault(kind, []).append(p)
    if len(kinds) > 1:
        what = "the pattern matches" if not os.path.isdir(path) else "the folder holds"
        listed = "; ".join(f"{k}: {len(v)} ({v[0]}{', ...' if len(v) > 1 else ''})"
                           for k, v in kinds.items())
        raise ValueError(f"{path}: {what} files of {len(kinds)} kinds ({listed}); nbbn "
                         "reads one kind per source; fit them separately (a narrower "
                         "pattern, or a list of files of one kind)")


def folder_file_kind(name: str) -> str | None:
    """What a file named ``name`` in a folder is read as: "shards" (``.npy``/``.npz``),
    "tables" (Parquet/CSV), or None. A hidden name (a leading dot, as macOS's
    AppleDouble ``._part-0.parquet``) is neither, as a ``*`` glob skips it; nor, for a
    table, is a name with a leading underscore (``_SUCCESS``, ``_metadata``, a writer's
    ``_tmp.parquet``), as pyarrow's dataset discovery (so pandas and dask) skips it. A
    shard's leading underscore is kept: a glob matches it."""
    from ._tabular import _table_kind

    if name.startswith("."):
        return None
    if name.lower().endswith(SHARD_SUFFIXES):
        return "shards"
    return "tables" if _table_kind(name) and not name.startswith("_") else None


def folder_kind(path: str) -> tuple[list[str], bool, str]:
    """The shard and table files at the top of the folder ``path`` (sorted names), whether
    they are shards (else tables: one kind, ``_check_one_kind``), and that kind in
    words; ``([], False, "")`` when there are none."""
    with os.scandir(path) as it:
        top = sorted(e.name for e in it if e.is_file() and folder_file_kind(e.name))
    if not top:
        return [], False, ""
    shards = top[0].lower().endswith(SHARD_SUFFIXES)
    return top, shards, ".npy/.npz shards" if shards else "Parquet/CSV tables"


def _check_nested(path: str) -> None:
    """ValueError when the top level of the folder ``path`` holds shards (or tables) and
    its subfolders (not hidden ones) hold more of them, or when it holds tables and
    image files (at its top level or below; hidden names aside: Kaggle's ``labels.csv``
    beside ``train/*.png``, read as the table in silence): a folder of shards is read
    from its top level, so those would be left out silently (images are searched
    recursively: a folder of images is never a folder of shards). A folder of ``.npy``
    shards with a picture in it (a plot, a preview) is read as the shards. One walk: it
    stops at the first image file, or once enough subfolders of shards are found to
    name."""
    from ._images import _is_image_name
    from ._tabular import glob_suffix

    if not os.path.isdir(path):
        return
    top, shards, kind = folder_kind(path)
    if not top:
        return
    suffix = glob_suffix(top[0])
    nested: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        image = None if shards else next(
            (f for f in sorted(files) if _is_image_name(f) and not f.startswith(".")), None)
        if image is not None:
            found = os.path.join(root, image)
            listed = f"{top[0]}{', ...' if len(top) > 1 else ''}"
            raise ValueError(
                f"{path}: the folder holds {kind} at its top level ({listed}) and image "
                f"files (such as {found}); nbbn reads one kind per "
                f"source, and would read the {kind.split()[-1]} only. Pass a glob: "
                f"{os.path.join(path, '**', '*' + os.path.splitext(image)[1])} for the images, "
                f"or {os.path.join(path, '*' + suffix)} for the {kind.split()[-1]}")
        if root != path and any(folder_file_kind(f) == ("shards" if shards else "tables")
                                for f in files):
            nested.append(os.path.relpath(root, path))
            if len(nested) > 3:  # (enough to name)
                break
    if nested:
        raise ValueError(f"{path}: the folder holds {kind} at its top level and in "
                         f"subfolders ({shown(tuple(nested), 3)}), but a folder is read from "
                         "its top level only: those would be left out. Pass a glob: "
                         f"{os.path.join(path, '**', '*' + suffix)} for every level, or "
                         f"{os.path.join(path, '*' + suffix)} for the top level only")


class ChunkedSource(Source):
    """A dask array read along its chunks: one shard per block of rows of its axis-0
    chunks, a batch per block by default, so each chunk is computed once (on the active
    dask scheduler) and never twice for two batches."""

    def __init__(self, x, channel_axis=None, what: str = "a dask array") -> None:
        check_dense_chunks(x, "the source")
        if any(math.isnan(n) for n in x.shape):
            raise ValueError(f"{what} with unknown chunk sizes: call "
                             "x.compute_chunk_sizes() first")
        self.array = x  # (nbbn.transform writes it through dask)
        bounds = np.cumsum((0,) + tuple(x.chunks[0]))
        shards: list[Shard] = [
            ArrayShard(x[a:b], f"rows {a}:{b}", files={"dask_name": x.name, "rows": [a, b]})
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]
        for s, a in zip(shards, bounds[:-1].tolist(), strict=True):
            s.part_of = ("a dask array", a)
        super().__init__(shards or [ArrayShard(x)],
                         f"{what} in {len(shards)} chunks of rows", channel_axis)

    def default_batch_size(self) -> int | None:
        """The largest block of rows: a batch never cuts a chunk."""
        return max((s.rows for s in self.shards), default=1) or 1


def _open_path(path: str, key, channel_axis) -> Source:
    if not os.path.exists(path):
        if any(ch in path for ch in _GLOB_CHARS):
            # (** as images; HDF5 files as in a list: each one dataset, named by key)
            paths = sorted(p for p in glob.glob(path, recursive=True)
                           if p.lower().endswith(SHARD_SUFFIXES + HDF5_SUFFIXES)
                           and os.path.isfile(p))
            if not paths:
                raise FileNotFoundError(_matches_nothing(path))
            return Source(_file_shards(paths, key), files_label(path, len(paths)), channel_axis)
        h5path, sep, dataset = path.rpartition(":")
        if sep and os.path.isfile(h5path) and (h5path.lower().endswith(HDF5_SUFFIXES)
                                                or is_hdf5_file(h5path)):
            if key is not None:
                raise worded(ValueError, "{key} was given, but the path {path} names its "
                             "dataset already: give one or the other", key=Param("key", key),
                             path=path)
            return Source([hdf5_shard(h5path, dataset)], path, channel_axis)
        raise FileNotFoundError(f"{path}: no such file or folder")
    p = Path(path)
    if p.is_dir():
        if is_zarr_store(path):
            shard = zarr_shard(path, key)
            if key is not None and shard.name == path:
                raise _unused_key(key, f"the zarr array {path}")
            return Source([shard], path, channel_axis)
        paths = sorted(str(q) for q in p.iterdir()  # (hidden names aside, as a glob)
                       if folder_file_kind(q.name) == "shards" and q.is_file())
        if not paths:
            raise FileNotFoundError(f"{path}: the folder holds no .npy or .npz files")
        return Source(_file_shards(paths, key), files_label(path, len(paths)), channel_axis)
    shards = _file_shards([path], key)
    # with a key, the array it names ("f.h5:/x", "f.npz[x]"): the 1-d and axis errors
    # named the file
    return Source(shards, shards[0].name if key is not None else path, channel_axis)


def _matches_nothing(pattern: str) -> str:
    """The error of a glob that matches no file nbbn reads: what it was expected to
    match, as its suffix says (a Parquet, CSV or TSV file, else .npy/.npz shards), and
    the folders it matches instead (Spark's ``out/*.parquet`` folders of part files)."""
    from ._tabular import _table_kind, glob_suffix

    low = pattern.lower()
    kind = _table_kind(pattern)
    what = ("no Parquet file" if kind == "parquet" else
            "no TSV file" if low.endswith((".tsv", ".tsv.gz")) else
            "no CSV file" if kind == "csv" else "no .npy, .npz or HDF5 file")
    matched = glob.glob(pattern, recursive=True)
    folders = sorted(p for p in matched if os.path.isdir(p))
    if not folders:
        return f"{pattern}: the pattern matches {what}" + compressed_tables_note(
            (p for p in matched if os.path.isfile(p)), "matches")
    top = folder_kind(folders[0])[0]
    such = f", such as {os.path.join(pattern, '*' + glob_suffix(top[0]))}" if top else ""
    return (f"{pattern}: the pattern matches {what}, only folders ({shown(tuple(folders), 3)}), "
            f"and a glob is read as files: pass a glob of the files in them{such}, or one "
            "folder alone")


def is_zarr_store(path) -> bool:
    """Whether the folder ``path`` is read as a zarr store, one shard (whose fingerprint
    covers every file in it): a name ending in ``.zarr``, or zarr's metadata at its top."""
    p = Path(path)
    return p.is_dir() and (p.suffix == ".zarr" or any(
        (p / m).exists() for m in (".zarray", "zarr.json", ".zgroup")))


def _refuse_for_images(key, columns) -> None:
    """ValueError for a ``key`` or ``columns`` given with image files (an ImageSource
    too): they name nothing in an image, and a checkpoint would record them."""
    if key is not None:
        raise _unused_key(key, "image files")
    if columns is not None:
        raise worded(ValueError, "{columns} was given, but the source is image files: "
                     "columns choose a table's channels", columns=Param("columns", columns))


def _unused_key(key, what: str) -> BaseException:
    """The error for a ``key`` that names nothing in the source (it is not ignored: a
    checkpoint would record it)."""
    return worded(ValueError, "{key} was given, but the source is {what}: a key names an "
                  "array in an .npz or HDF5 file or a zarr group, or an element of an "
                  "iterable's items", key=Param("key", key), what=what)


_COMPRESSIONS = (".bz2", ".xz", ".zst", ".zstd", ".lz4", ".zip", ".7z", ".gz", ".z")


def compressed_table_error(path: str) -> str | None:
    """The refusal of a CSV/TSV or Parquet file compressed in a way nbbn does not read
    (``.csv.bz2``, ``.tsv.xz``, ``.csv.zst``...), None for any other name: such a file was
    refused as "not a .npy, .npz or HDF5 file" (a ``.csv.zip`` read as an .npz archive of
    no arrays), and a folder or glob of them as holding nothing nbbn reads."""
    stem, ext = os.path.splitext(path.lower())
    kind = os.path.splitext(stem)[1]
    if ext not in _COMPRESSIONS or kind not in (".csv", ".tsv", ".parquet", ".pq"):
        return None
    if kind in (".csv", ".tsv"):
        return (f"{path}: a {ext}-compressed {kind[1:].upper()} file, which nbbn does not "
                "read: it reads .csv and .csv.gz (.tsv and .tsv.gz) files; decompress it "
                "first (or recompress it with gzip)")
    return (f"{path}: a {ext}-compressed Parquet file, which nbbn does not read: "
            "decompress it first (Parquet compresses its columns itself)")


def compressed_tables_note(paths, verb: str = "holds") -> str:
    """For the error of a folder or glob that holds nothing nbbn reads: why its first
    compressed table (:func:`compressed_table_error`) is not read; "" when none is."""
    for path in sorted(paths):
        error = compressed_table_error(path)
        if error is not None:
            return f"; it {verb} compressed tables, such as {error}"
    return ""


def _refuse_compressed_table(path: str) -> None:
    """ValueError for a table compressed in a way nbbn does not read."""
    error = compressed_table_error(path)
    if error is not None:
        raise ValueError(error)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5_file(path: str) -> bool:
    """Whether the file ``path`` is an HDF5 file: its signature at byte 0, or at 512,
    1024, 2048... (after a user block, ``h5py.File(..., userblock_size=512)``), where
    HDF5 looks for it. Such a file was refused as "not a .npy, .npz or HDF5 file"."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            offset = 0
            while offset + len(_HDF5_SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def _file_shards(paths: list[str], key) -> list[Shard]:
    shards: list[Shard] = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        _refuse_compressed_table(path)
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"\x93NUMPY"):
            shards.append(NpyShard(path))
        elif magic.startswith(b"PK") and is_zarr_zip(path):  # (a zarr ZipStore)
            shards.append(zarr_zip_shard(path, key))
        elif magic.startswith(b"PK"):
            sparse = is_sparse_npz(path)
            if sparse and key is not None:
                raise worded(ValueError, "{path} is a scipy sparse matrix (scipy.sparse."
                             "save_npz): its members are scipy's storage, not arrays of rows; "
                             "read it without {key}", path=path, key=Param("key", key))
            shards.append(SparseNpzShard(path) if sparse
                          else NpzShard(path, None if key is None else str(key)))
        elif is_hdf5_file(path):
            shards.append(hdf5_shard(path, key))
        else:
            raise ValueError(
                f"{path}: not a .npy, .npz or HDF5 file (expected numpy's .npy/.npz format)")
    if key is not None and shards and all(isinstance(sh, NpyShard) for sh in shards):
        raise _unused_key(key, ".npy files" if len(shards) > 1 else "a .npy file")
    return shards
