"""Shards: one array of a source, and how its rows are read (see :mod:`nbbn.sources`).

A :class:`Shard` knows its rows, row shape, dtype and fingerprint; ``open()`` gives a
:class:`ShardReader` whose ``read(start, stop, slot)`` returns the rows and a cleanup
function to call once they have been used.

This module holds the base classes, :class:`Slot` (a reused batch buffer) and
:class:`ArrayShard` (anything sliceable: numpy, zarr, h5py, device arrays). The file
shards are in :mod:`nbbn._shards_npy` (``.npy`` memory maps, streamed ``.npz``
members) and :mod:`nbbn._shards_zarr_h5` (zarr stores and HDF5 files, opened as
``ArrayShard``).
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ._layout import as_array, check_dtype, check_no_mask, is_sparse
from ._pages import releaser
from ._torch_arrays import host_view
from .backends import is_dask_array, is_xarray


class Slot:
    """A reusable batch buffer; at most a fixed number exist, which bounds memory."""

    def __init__(self) -> None:
        self._buf: np.ndarray | None = None

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialized array of ``shape`` and ``dtype`` in this slot's buffer.

        Parameters
        ----------
        shape : tuple of int
            The array's shape.
        dtype : numpy.dtype
            Its dtype.

        Returns
        -------
        numpy.ndarray
            A view of the buffer (grown when too small); valid until the next call.
        """
        nbytes = math.prod(shape) * dtype.itemsize
        if self._buf is None or self._buf.nbytes < nbytes:
            self._buf = None
            self._buf = np.empty(max(nbytes, 1), np.uint8)
        return self._buf[:nbytes].view(dtype).reshape(shape)


# ---------------------------------------------------------------------------- shards
class Shard:
    """One array of a source: ``rows`` rows of shape ``row_shape`` and dtype ``dtype``."""

    name: str
    rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype
    # its data is checked only once read to the end (a zip member's CRC): rows read
    # before that are not trusted until then (a fit that fails inside such a shard
    # keeps the statistics from before it)
    checked_at_end: bool = False
    # a block of a larger array (a dask array's chunk of rows): the array's name, and
    # the row of the array the shard starts at, so that messages name the array's rows
    part_of: tuple[str, int] | None = None

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    @property
    def size(self) -> int:
        return self.rows * math.prod(self.row_shape)

    def fingerprint(self) -> dict:
        return {"name": self.name, "shape": [self.rows, *self.row_shape], "dtype": str(self.dtype)}

    def open(self) -> ShardReader:
        raise NotImplementedError

    def close(self) -> None:
        """Close files this shard holds open (an HDF5 file)."""


class ShardReader:
    """An open shard: ``read(start, stop, slot)`` gives rows and a cleanup function."""

    def read(self, start: int, stop: int, slot: Slot) -> tuple[Any, Callable[[], None] | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def file_fingerprint(path: str) -> dict:
    """The identity of a file for a checkpoint: absolute path, size, ``mtime_ns``.

    Parameters
    ----------
    path : str
        The file.

    Returns
    -------
    dict
        ``{"path", "size", "mtime_ns"}``.
    """
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _view_of_file(a: np.memmap) -> dict:
    """Which bytes of its file a memory-mapped array views: ``offset``, where its first
    element lies (``np.memmap.offset`` is the mapping's, which every slice keeps, so
    ``mm[0:10]`` and ``mm[5:15]`` looked the same), and ``strides`` unless C-contiguous
    (``mm.T`` starts where ``mm`` does)."""
    view: dict = {"offset": int(a.offset)}
    mapped = getattr(a, "_mmap", None)
    if mapped is not None:  # numpy maps from the offset rounded down to the granularity
        start = np.frombuffer(mapped, np.uint8).ctypes.data
        view["offset"] += a.ctypes.data - start - a.offset % mmap.ALLOCATIONGRANULARITY
    if not a.flags.c_contiguous:
        view["strides"] = list(a.strides)
    return view


class ArrayShard(Shard):
    """A numpy array, or anything sliceable along axis 0 (zarr, h5py, device arrays)."""

    def __init__(self, array, name: str = "array", files: dict | None = None,
                 owner=None) -> None:
        self._owner = owner  # a file object this shard opened and must close
        shape = tuple(int(n) for n in array.shape)
        if len(shape) < 1:
            raise ValueError(f"{name}: expected an array with at least 1 dimension, got a scalar")
        self.array = array
        self.name = name
        self.rows, self.row_shape = shape[0], shape[1:]
        self.dtype = _dtype_of(array, name)
        self._files = files

    def fingerprint(self) -> dict:
        fp = super().fingerprint()
        a = self.array
        if self._files is not None:
            fp.update(self._files)
        elif isinstance(a, np.memmap) and a.filename is not None:
            fp.update(file_fingerprint(a.filename), **_view_of_file(a))
        elif isinstance(a := _in_memory(a), np.ndarray) and a.size:
            # an in-memory array has no file: its first and last rows stand in for it
            sample = np.ascontiguousarray(a[:: max(1, self.rows - 1)][:2]).tobytes()
            fp["sample_sha256"] = hashlib.sha256(sample).hexdigest()
        return fp

    def open(self) -> ShardReader:
        return _SliceReader(self.array, self.name)

    def close(self) -> None:
        if self._owner is not None:
            self._owner.close()
            self._owner = None


def _in_memory(a):
    """``a``, or the numpy array an xarray DataArray holds (its rows sampled for the
    fingerprint: a resumed fit of a DataArray with other values was accepted)."""
    if is_xarray(a) and isinstance(a.data, np.ndarray):
        return a.data
    return a


class _SliceReader(ShardReader):
    def __init__(self, array, name: str = "array") -> None:
        self.array = array
        self.name = name
        self.numpy = isinstance(array, np.ndarray) or _is_torch(array)  # bfloat16 tensors

    def read(self, start, stop, slot):
        part = self.array[start:stop]
        if not self.numpy and not _is_device_array(part):
            # zarr / h5py slices are numpy already; others may not be. A slice may be a
            # masked array (a netCDF4 variable's, a dask array's of masked chunks, whose
            # np.asarray computes it and drops the mask): masked elements are refused,
            # as in an array passed whole, not read as values
            if is_dask_array(part):
                part = part.compute()
            of = "the input" if self.name == "array" else self.name  # (the default name)
            check_no_mask(part, self.name if self.name.startswith("rows ")  # (a dask
                          else f"rows {start} to {stop} of {of}")  # array's rows)
            part = np.asarray(part)
        # an np.memmap's pages leave the resident set once the batch is done
        return part, releaser(self.array, part) if isinstance(part, np.memmap) else None


def as_batch_array(x, what: str = "batch"):
    """A numpy array for ``x``; CPU torch tensors without a copy, device arrays unchanged.

    Parameters
    ----------
    x : array-like, torch tensor or device array
        One batch.
    what : str, default "batch"
        What ``x`` is, for the dtype error.

    Returns
    -------
    array
        A numpy array (or the device array as it is).

    Raises
    ------
    TypeError
        The dtype is not a real number type.
    """
    if isinstance(x, np.ndarray):
        check_dtype(x.dtype, what)
        return x
    if _is_torch(x):
        if x.device.type == "cpu":
            arr, bf16 = host_view(x, what)
            if bf16:  # no numpy dtype: the tensor itself (RunningStats reads it natively)
                return x.detach()
            check_dtype(arr.dtype, what)
            return arr
        return x
    if _is_device_array(x):
        return x
    if is_sparse(x):
        raise TypeError(f"{what} is a scipy sparse {type(x).__name__}, which fit and "
                        "transform do not read in memory (nor in iterables of batches): "
                        "count its statistics with nbbn.RunningStats(channel_axis=-1)."
                        "update(x) (one call), and scale it with nbbn.sklearn."
                        "StandardScaler(with_mean=False)")
    # (as RunningStats.update reads it: a polars or pyarrow table's dates, durations
    # and bools refused by name, not read as numbers; a pandas table's nullable columns
    # read with pd.NA as NaN, not refused as objects; masks in lists refused)
    return as_array(x, what)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def _is_device_array(x) -> bool:
    from ._layout import is_device_array

    return is_device_array(x)


def _dtype_of(array, name: str) -> np.dtype:
    dt = array.dtype
    if _is_torch(array):
        name = str(dt).removeprefix("torch.")
        dt = np.dtype(np.uint16 if name == "bfloat16" else name)  # bfloat16: its 2 bytes
    dt = np.dtype(dt)
    check_dtype(dt, name)
    return dt

