"""``.npy`` and ``.npz`` shards: memory-mapped files and streamed zip members.

* :class:`NpyShard`: a ``.npy`` file, memory-mapped; a batch is a view of the mapping.
  Before a batch is handed out the kernel is asked to read its pages ahead
  (``posix_fadvise``), and after it has been used its pages are unmapped again
  (``madvise(MADV_DONTNEED)``; the data stays in the page cache), so the resident
  memory stays at about two batches whatever the file size. A Fortran-ordered file's
  rows are spread over its columns: its whole mapping is released each time every
  column has moved on by a page or more (resident: two batches, or two pages a column).
* :class:`NpzShard`: one member of a ``.npz`` file, read (and decompressed) in order
  into the batch's :class:`~nbbn._shards.Slot`, never whole; Fortran-ordered members
  are the exception (their rows are not contiguous) and are read whole.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np

from ._layout import check_dtype, native_order
from ._pages import release_span
from ._shards import Shard, ShardReader, file_fingerprint
from ._shards_zarr_h5 import import_extra
from ._wording import Param, worded


class NpyShard(Shard):
    """A ``.npy`` file, memory-mapped; batches are views whose pages are released after use."""

    def __init__(self, path: str) -> None:
        self.path = self.name = path
        # only the header is read here (np.load(mmap_mode="r") would map the file just to
        # parse it); the data is mapped when the shard is read
        with open(path, "rb") as f:
            shape, fortran, self.dtype = _read_npy_header(f, path)
            self.offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        if len(shape) < 1:
            raise ValueError(f"{path}: holds a 0-d array (a scalar); expected rows along axis 0")
        self.rows, self.row_shape = shape[0], shape[1:]
        need = self.offset + self.size * self.dtype.itemsize
        if size < need:
            raise ValueError(f"{path}: not a readable .npy file (the file has {size} bytes, its "
                             f"header promises {need}: truncated?)")
        self.fortran = bool(fortran and len(shape) > 1)

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), **file_fingerprint(self.path)}

    def open(self) -> ShardReader:
        return _NpyReader(self)


class _NpyReader(ShardReader):
    def __init__(self, shard: NpyShard) -> None:
        self.s = shard
        self.f = open(shard.path, "rb")  # noqa: SIM115 (closed by close())
        self.mm: mmap.mmap | None = None
        self.array: np.ndarray | None = None
        self.kept_from = 0  # (Fortran order: the first row whose pages may be mapped)
        if shard.size:
            # copy-on-write (never written): writable views use the same compiled kernels
            # as in-memory arrays (numba compiles read-only arrays separately)
            self.mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_COPY)
            # frombuffer keeps the buffer exported while any view lives, so close() cannot
            # unmap memory a batch still uses (np.ndarray(buffer=...) would not)
            flat = np.frombuffer(self.mm, shard.dtype, count=shard.size, offset=shard.offset)
            shape = (shard.rows, *shard.row_shape)
            self.array = (flat.reshape(shape[::-1]).T if shard.fortran else flat.reshape(shape))

    def _span(self, start: int, stop: int) -> tuple[int, int]:
        rb = self.s.row_bytes
        return self.s.offset + start * rb, self.s.offset + stop * rb

    def read(self, start, stop, slot):
        assert self.array is not None
        if self.s.fortran:  # rows are not contiguous in the file: no read-ahead hint
            return self.array[start:stop], lambda: self._release_columns(stop)
        lo, hi = self._span(start, stop)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.f.fileno(), lo, hi - lo, os.POSIX_FADV_WILLNEED)
        return self.array[start:stop], lambda: self._release(lo, hi)

    def _release(self, lo: int, hi: int) -> None:
        """Unmap the pages wholly inside [lo, hi): they leave our resident set, not the cache."""
        release_span(self.mm, lo, hi)

    def _release_columns(self, stop: int) -> None:
        """Fortran order, after the rows before ``stop`` were used: unmap the whole array
        once every column has moved on by a page since the last time (a row's values lie
        one per column, so a batch's rows touch a few pages of each column; a batch
        still in use, or the next one read ahead, faults its pages back from the page
        cache: the mapping is never written). It stayed mapped, the whole file resident
        (an 800 MB file: 855 MB)."""
        mm = self.mm
        if mm is not None and not mm.closed and \
                (stop - self.kept_from) * self.s.dtype.itemsize >= mmap.PAGESIZE:
            release_span(mm, 0, len(mm))
            self.kept_from = stop

    def close(self) -> None:
        self.array = None
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # a view is still alive somewhere; the GC unmaps it later
                pass
        self.f.close()


@contextlib.contextmanager
def _corrupt_as_value_error(name: str) -> Iterator[None]:
    """A zip member's data that fails its CRC or does not inflate as a ValueError naming
    the file (the command line reports it in one line)."""
    try:
        yield
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ValueError(f"{name}: the file is corrupt ({exc})") from exc


_SCIPY_SPARSE_KEYS = {"format", "shape", "data"}  # save_npz's members, and one of these:
_SCIPY_INDEX_KEYS = ({"indices", "indptr"}, {"row", "col"}, {"coords"}, {"offsets"})
_SCIPY_FORMATS = ("csr", "csc", "coo", "bsr", "dia")


def is_sparse_npz(path: str) -> bool:
    """True for a ``.npz`` file written by ``scipy.sparse.save_npz`` (any of its
    formats: CSR, CSC, COO, BSR, DIA)."""
    try:
        with zipfile.ZipFile(path) as zf:
            keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except zipfile.BadZipFile:
        return False
    return _SCIPY_SPARSE_KEYS <= keys and any(k <= keys for k in _SCIPY_INDEX_KEYS)


class SparseNpzShard(Shard):
    """A scipy sparse matrix saved by ``scipy.sparse.save_npz`` (CSR, CSC, COO, BSR or
    DIA): rows of ``shape[1]`` columns. It has no row-wise access on disk, so a reader
    loads it whole (as CSR); a batch is a CSR slice of rows, whose statistics count the
    zeros it does not store (:meth:`nbbn.RunningStats.update`). ``row_bytes`` is the
    stored bytes per row (values and indices), so batches and progress follow the
    file's real size, not the dense one."""

    def __init__(self, path: str) -> None:
        self.path = self.name = path
        try:
            with zipfile.ZipFile(path) as zf:
                keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
                fmt = _small_member(zf, "format").item()
                fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
                shape = tuple(int(n) for n in _small_member(zf, "shape").reshape(-1))
                with zf.open("data.npy") as f:
                    # (its dtype named as the matrix's, not scipy's storage member:
                    # a bool matrix is refused as a bool array is)
                    stored_shape, _, self.dtype = _read_npy_header(
                        f, f"{path}[data]", f"{path}, a scipy sparse matrix,")
                index = next((k for k in ("indices", "col", "coords", "offsets")
                              if k in keys), None)
                isize = 8
                if index is not None:
                    with zf.open(index + ".npy") as f:
                        isize = _read_npy_header(f, f"{path}[{index}]")[2].itemsize
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable scipy sparse .npz file ({exc})") from exc
        if fmt not in _SCIPY_FORMATS or len(shape) != 2:
            raise ValueError(f"{path}: a scipy sparse matrix of format {fmt!r} and shape "
                             f"{shape}; expected a 2-d matrix of format "
                             f"{', '.join(_SCIPY_FORMATS)}")
        # (checked here, when the source is opened: not after a progress bar is drawn)
        import_extra("scipy.sparse", "sparse", f"reading {path}, a scipy sparse matrix")
        self.format = fmt
        self.rows, self.row_shape = int(shape[0]), (int(shape[1]),)
        self.stored = math.prod(stored_shape)
        self._row_bytes = max(1, -(-self.stored * (self.dtype.itemsize + isize)
                                   // max(1, self.rows)))

    @property
    def row_bytes(self) -> int:
        return self._row_bytes

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), **file_fingerprint(self.path), "sparse": self.format}

    def open(self) -> ShardReader:
        return _SparseReader(self)


def _small_member(zf: zipfile.ZipFile, key: str) -> np.ndarray:
    with zf.open(key + ".npy") as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _load_csr(sparse, path: str, fmt: str):
    """The matrix of a ``save_npz`` file of format ``fmt`` (checked) as CSR, its arrays
    in native byte order. scipy's ``load_npz`` keeps byte-swapped data (``'>f8'``: a
    file of a big-endian host, or of a matrix built on such an array), which its own
    slicing then refused ("scipy.sparse does not support dtype >f8", naming no file),
    and builds no COO or BSR matrix of it; so the members are read here, in native
    byte order (:func:`~nbbn._layout.native_order`), and given to the constructors ``load_npz`` uses
    (the ``_matrix`` classes: the batches are read alike as arrays or matrices)."""
    with np.load(path, allow_pickle=False) as z:
        m = {k: native_order(z[k]) for k in z.files if k not in ("format", "_is_array")}
    shape = tuple(int(n) for n in m["shape"].reshape(-1))
    if fmt == "dia":
        args: tuple = (m["data"], m["offsets"])
    elif fmt == "coo":
        args = (m["data"], tuple(m["coords"]) if "coords" in m else (m["row"], m["col"]))
    else:  # csr, csc, bsr
        args = (m["data"], m["indices"], m["indptr"])
    return getattr(sparse, f"{fmt}_matrix")(args, shape=shape).tocsr()


class _SparseReader(ShardReader):
    def __init__(self, shard: SparseNpzShard) -> None:
        sparse = import_extra("scipy.sparse", "sparse", f"reading {shard.path}")
        with _corrupt_as_value_error(shard.path):
            self.matrix = _load_csr(sparse, shard.path, shard.format)

    def read(self, start, stop, slot):
        return self.matrix[start:stop], None

    def close(self) -> None:
        self.matrix = None


class NpzShard(Shard):
    """One member of a ``.npz`` file, streamed in order (zip members cannot be mapped)."""

    checked_at_end = True  # zipfile checks the member's CRC when it reads its last bytes

    def __init__(self, path: str, key: str | None) -> None:
        self.path = path
        try:
            with zipfile.ZipFile(path) as zf:
                members = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
                if key is None:
                    if len(members) != 1:
                        raise worded(ValueError, "{path} holds {n} arrays {members}; name one "
                                     "with {key}", path=path, n=len(members), members=members,
                                     key=Param("key", placeholder="..."))
                    key = members[0]
                if key not in members:
                    raise ValueError(f"{path} has no array {key!r}; it holds {members}")
                with zf.open(key + ".npy") as f:
                    shape, fortran, dtype = _read_npy_header(f, f"{path}[{key}]")
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
        self.key = str(key)
        self.name = f"{path}[{key}]"
        if len(shape) < 1:
            raise ValueError(f"{self.name}: holds a 0-d array (a scalar); expected rows")
        self.rows, self.row_shape = shape[0], tuple(shape[1:])
        self.dtype = dtype
        self.fortran = bool(fortran and len(shape) > 1)

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), **file_fingerprint(self.path), "key": self.key}

    def open(self) -> ShardReader:
        return _NpzReader(self)


def _read_npy_header(f, name: str, what: str | None = None
                     ) -> tuple[tuple[int, ...], bool, np.dtype]:
    """The shape, Fortran order and dtype of the ``.npy`` array ``f`` (``name``, in
    errors), its dtype checked as ``what`` (default ``name``)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            # 3.0 is 2.0 with a UTF-8 header (non-ASCII field names of a structured
            # dtype, which check_dtype refuses): the same layout, so the same reader;
            # it was refused as unsupported, while np.load reads it
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise ValueError(f"{name}: not a readable .npy array ({exc})") from exc
    check_dtype(dtype, name if what is None else what)
    return tuple(int(n) for n in shape), bool(fortran), dtype


_READ_PIECE = 2**20


class _NpzReader(ShardReader):
    def __init__(self, shard: NpzShard) -> None:
        self.s = shard
        self.zf = zipfile.ZipFile(shard.path)
        self.f = self.zf.open(shard.key + ".npy")
        _read_npy_header(self.f, shard.name)
        self.data_start = self.f.tell()
        self.row = 0
        self.whole: np.ndarray | None = None
        if shard.fortran:  # rows are not contiguous: read the member whole, once
            self.f.seek(0)
            with _corrupt_as_value_error(shard.name):
                self.whole = np.lib.format.read_array(self.f, allow_pickle=False)

    def read(self, start, stop, slot):
        if self.whole is not None:
            return self.whole[start:stop], None
        if start != self.row:
            self.f.seek(self.data_start + start * self.s.row_bytes)
        out = slot.array((stop - start, *self.s.row_shape), self.s.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        got = 0
        while got < len(view):
            # in pieces: a zip member's readinto() goes through a bytes object of that size
            with _corrupt_as_value_error(self.s.name):
                n = self.f.readinto(view[got:got + _READ_PIECE])
            if not n:
                raise ValueError(f"{self.s.name}: the file ends early (truncated?)")
            got += n
        self.row = stop
        return out, None

    def close(self) -> None:
        self.whole = None
        self.f.close()
        self.zf.close()
