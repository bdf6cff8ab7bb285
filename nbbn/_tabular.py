"""Tables as sources of :func:`nbbn.fit`: columns are channels, rows are samples.

A table's numeric columns are its channels and its rows its samples, so a table is
read as a ``(rows, C)`` array with the channels on the last axis (``channel_axis`` 1
or -1; :func:`nbbn.fit` refuses any other). The column names travel with the source
(:attr:`TableSource.channel_names`) and end up in :attr:`RunningStats.channel_names`.

Kinds (:func:`open_table`, :func:`open_table_path`):

* pandas and polars DataFrames, pyarrow Tables and RecordBatches: read in slices; a
  column without missing values is read without a copy.
* ``xarray.Dataset``: its data variables are the channels; they must share their
  dimensions, and batches are taken along the first one (``(n, ..., C)`` batches).
* Parquet files (and folders or globs of them): one shard per row group, so a checkpoint
  records the row group and the row in it; only the selected columns are read, and
  :data:`READ_AHEAD_ROW_GROUPS` row groups are read at once by a small thread pool
  while the statistics of the previous one are computed (pyarrow releases the GIL and
  decodes the columns of a row group in parallel in its own pool).
* CSV/TSV files (``.csv``, ``.tsv``, ``.csv.gz``): streamed by ``pyarrow.csv.open_csv``
  in blocks; the numeric columns (as inferred from the first block) are read as float64,
  so that a later decimal point or empty field in an integer column is not an error.

Only integer and floating columns are channels; any other column (strings, booleans,
dates, decimals) is refused by name unless ``columns=`` leaves it out. Missing values
(nulls, ``pd.NA``) become NaN, which ``nan_policy`` then treats; an integer column with
missing values is read as float64 for the batches that hold them.

Each batch is built in a reused buffer of shape ``(C, rows)``, one copy per column,
and handed on as its ``(rows, C)`` transposed view, which the CPU kernels read as
channels-first data without another copy. pyarrow (Parquet, CSV, Arrow tables) is the
``tabular`` extra; pandas, polars and xarray objects are read without it.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._labels import repeated, shown
from ._layout import arrow_numeric, pandas_values_dtype, polars_numeric
from ._shards import Shard, file_fingerprint
from ._shards_zarr_h5 import import_extra
from ._wording import Param, files_label, worded
from .sources import BATCH_BYTES, Acquire, Batch, Position, Source

__all__ = ["CSV_SUFFIXES", "PARQUET_SUFFIXES", "READ_AHEAD_ROW_GROUPS", "TableSource",
           "is_table", "looks_like_table", "open_any", "open_table", "open_table_path",
           "select_columns"]

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
READ_AHEAD_ROW_GROUPS = 2
"""Parquet row groups read at once (and held in memory) ahead of the computation."""
PARQUET_THREADS = True
"""Whether pyarrow decodes the columns of one row group in parallel (its own pool)."""
CSV_BLOCK_BYTES = 16 * 2**20
"""Bytes of CSV text parsed per block (pyarrow's default is 1 MB)."""

# A piece: ``rows`` rows of every selected column, as arrays of shape (rows, ...).
Piece = tuple[int, list[Any]]


def _need_pyarrow(what: str):
    return import_extra("pyarrow", "tabular", what)


# ----------------------------------------------------------------------- the source
class TableShard(Shard):
    """A part of a table read as one unit: a whole frame, a Parquet row group, a CSV file.

    ``rows`` is None while unknown (a CSV file); ``pieces(start)`` yields the rows from
    ``start`` on as :data:`Piece` s. ``kinds``: the dtype kinds of its columns (integer
    columns of int64 and uint64 are read as float64, ``dtype``, but are integers:
    transform's default output is float32 for them, as for integer arrays).
    """

    def __init__(self, name: str, rows: int | None, row_shape: tuple[int, ...],
                 dtype: np.dtype, pieces: Callable[[int], Iterator[Piece]],
                 identity: dict, kinds: frozenset[str] | None = None) -> None:
        self.name = name
        self.rows = rows  # type: ignore[assignment]
        self.row_shape = row_shape
        self.dtype = dtype
        self.pieces = pieces
        self._identity = identity
        self.kinds = frozenset(dtype.kind) if kinds is None else kinds

    @property
    def size(self) -> int:
        """Values in the shard (one row's worth when the row count is not known)."""
        return (1 if self.rows is None else self.rows) * math.prod(self.row_shape)

    def fingerprint(self) -> dict:
        """Name, shape, dtype and the shard's identity (file, row group, columns)."""
        return {"name": self.name, "shape": [self.rows, *self.row_shape],
                "dtype": str(self.dtype), **self._identity}


class TableSource(Source):
    """A table, or several, read as ``(rows, ..., C)`` batches (see the module docstring).

    Attributes
    ----------
    channel_names : tuple of str
        The columns (data variables) read, in channel order.
    """

    def __init__(self, shards: list[TableShard], description: str,
                 channel_names: Sequence[str],
                 reader: _RowGroupReader | None = None) -> None:
        self.shards: list[TableShard] = list(shards)  # type: ignore[assignment]
        self.description = description
        self.channel_names = tuple(channel_names)
        self._reader = reader
        first = self.shards[0] if self.shards else None
        self.row_shape = None if first is None else first.row_shape
        # every file's, as for arrays: transform's default output holds them all (an
        # int64 file before a float64 one made it float32)
        used = [s.dtype for s in self.shards if s.rows != 0] or [s.dtype for s in self.shards]
        self.dtype = np.result_type(*used) if used else None

    @property
    def rows(self) -> int | None:
        """Total rows (None when a CSV file's row count is not known yet)."""
        rows = [s.rows for s in self.shards]
        return None if any(r is None for r in rows) else sum(rows)  # type: ignore[misc]

    @property
    def nbytes(self) -> int | None:
        """Bytes of all batches (None when the row count is not known)."""
        rows, rb = self.rows, self.row_bytes
        return None if rows is None or rb is None else rows * rb

    def batches(self, batch_size: int | None, start: Position, acquire: Acquire
                ) -> Generator[Batch, None, None]:
        """Yield batches of ``batch_size`` rows (default about 64 MiB) from ``start`` on.

        Batches never span shards; one may join several pieces (CSV blocks, DataFrame
        slices). Parameters and yields as :meth:`nbbn.sources.Source.batches`.
        """
        bs = batch_size or self.default_batch_size() or 1
        if start.shard > len(self.shards):
            raise ValueError(f"position {start} is beyond the end of {self.description}")
        for index in range(start.shard, len(self.shards)):
            shard = self.shards[index]
            row = start.row if index == start.shard else 0
            if shard.rows is not None and row > shard.rows:
                raise ValueError(f"position {start} is beyond the end of {shard.name}")
            if self._reader is not None:
                pieces = _skip_rows(self._reader.pieces(index), row)
            else:
                pieces = shard.pieces(row)
            pending: list[list[Any]] = []
            n, first = 0, row
            for k, arrays in pieces:
                off = 0
                while off < k:
                    take = min(k - off, bs - n)
                    pending.append([a[off:off + take] for a in arrays])
                    n, off = n + take, off + take
                    if n == bs:
                        yield self._batch(pending, n, index, first, acquire)
                        pending, first, n = [], first + n, 0
            if n:
                yield self._batch(pending, n, index, first, acquire)

    def _batch(self, pending: list[list[Any]], n: int, index: int, first: int,
               acquire: Acquire) -> Batch:
        """Copy the pending pieces into a slot as one ``(n, ..., C)`` batch."""
        slot = acquire()
        nchan = len(self.channel_names)
        rest = tuple(self.row_shape[:-1]) if self.row_shape else ()
        dtype = np.result_type(*(a.dtype for p in pending for a in p))
        buf = slot.array((nchan, n, *rest), dtype)
        at = 0
        for p in pending:
            k = len(p[0])
            for c, a in enumerate(p):
                np.copyto(buf[c, at:at + k], np.asarray(a), casting="same_kind")
            at += k
        data = np.moveaxis(buf, 0, -1)
        nbytes = n * (self.row_bytes or 0)  # in the units of ``nbytes`` (the schema's dtype)
        return Batch(data, index, first, first + n, nbytes, slot=slot)

    def close(self) -> None:
        """Stop the row groups still being read ahead (files are opened per pass)."""
        if self._reader is not None:
            self._reader.close()


def _skip_rows(pieces: Iterator[Piece], row: int) -> Iterator[Piece]:
    """``pieces`` without their first ``row`` rows."""
    for k, arrays in pieces:
        if row >= k:
            row -= k
            continue
        yield (k - row, [a[row:] for a in arrays]) if row else (k, arrays)
        row = 0


# ------------------------------------------------------------------ choosing columns
def select_columns(kinds: dict[str, str | None], columns, what: str) -> list[str]:
    """The columns to read: ``columns``, or every numeric column; errors name the others.

    Parameters
    ----------
    kinds : dict
        Every column's name and, for a column that is not numeric, a description of its
        type (None for an integer or floating column), in table order.
    columns : sequence of str or None
        The caller's choice (None: all numeric columns, and no other column allowed).
    what : str
        The table, for messages.

    Returns
    -------
    list of str
        The selected column names.

    Raises
    ------
    ValueError
        A named column does not exist or is not numeric, a name repeats, none is left, or
        (``columns=None``) the table has non-numeric columns.
    """
    numeric = [c for c, k in kinds.items() if k is None]
    other = {c: k for c, k in kinds.items() if k is not None}
    if columns is None:
        if other and not numeric:
            listed = ", ".join(f"{c!r} ({k})" for c, k in list(other.items())[:8])
            raise ValueError(f"{what} has no numeric column (its columns: {listed}"
                             f"{', ...' if len(other) > 8 else ''}): only integer and "
                             "floating columns can be channels" + _separator_hint(kinds, what))
        if other:
            shown = ", ".join(f"{c!r} ({k})" for c, k in list(other.items())[:8])
            more = ", ..." if len(other) > 8 else ""
            few = 0 < len(numeric) <= 12  # (then named in full: a list to paste)
            raise worded(ValueError, "{what} has non-numeric columns {shown}: only integer "
                         "and floating columns can be channels; pass {columns} to "
                         + ("read the numeric ones" if few else
                            "choose among the numeric ones {numeric}"), what=what,
                         shown=shown + more, numeric=_names(numeric),
                         columns=Param("columns", numeric) if few else Param("columns"))
        chosen = numeric
    else:
        if isinstance(columns, str):
            columns = split_columns(columns, kinds)
        _check_columns_type(columns)
        chosen = [str(c) for c in columns]
        if not chosen:  # (not "no numeric column": the table may have some)
            raise worded(ValueError, "{columns} is empty: name at least one column ({what}'s "
                         "numeric columns: {numeric})", columns=Param("columns"), what=what,
                         numeric=_names(numeric))
        missing = [c for c in chosen if c not in kinds]
        if missing:
            raise ValueError(f"{what} has no column {_names(missing)} (its columns: "
                             f"{_names(list(kinds))})")
        if len(set(chosen)) != len(chosen):
            raise worded(ValueError, "{columns} names a column twice: {chosen}",
                         columns=Param("columns"), chosen=_names(chosen))
        bad = {c: other[c] for c in chosen if c in other}
        if bad:
            raise ValueError(f"{what}: column {_names(list(bad))} is not numeric ("
                             + ", ".join(bad.values()) + ("); the numeric columns are "
                                                          f"{_names(numeric)}" if numeric else
                                                          "), and it has no numeric column")
                             + _separator_hint(kinds, what))
    if not chosen:
        raise ValueError(f"{what} has no numeric column to read (its columns: "
                         f"{_names(list(kinds))})")
    return chosen


def _separator_hint(kinds: dict[str, str | None], what: str) -> str:
    """For a CSV file read as one column whose name holds a ';' or a tab (another
    separator than the file's): what nbbn reads; "" otherwise."""
    if _table_kind(what) != "csv" or len(kinds) != 1:
        return ""
    name = next(iter(kinds))
    tsv = what.lower().endswith((".tsv", ".tsv.gz"))
    sep = next((s for s in (";", "\t", "|", ",") if s in name and s != ("\t" if tsv else ",")),
               None)
    if sep is None:
        return ""
    said = "a tab" if sep == "\t" else repr(sep)
    tsv_name = ".tsv.gz" if what.lower().endswith(".gz") else ".tsv"
    hint = (f"; rename it {tsv_name}" if sep == "\t" and not tsv else
            f"; rewrite it first: pandas.read_csv(path, sep={sep!r}).to_parquet(...)")
    return (f"; its one column's name {name!r} holds {said}: nbbn reads a .csv file as "
            f"comma-separated and a .tsv file as tab-separated, so this one was read as a "
            f"single column{hint}")


def _check_columns_type(columns) -> None:
    """TypeError for a ``columns`` that is no sequence of names: a set (its order, the
    channels', changes from run to run, as pandas refuses a set as an indexer) or what
    is not iterable."""
    if isinstance(columns, (set, frozenset)):
        raise worded(TypeError, "{columns} takes the column names in the order of the "
                     "channels, but got a {kind}, whose order changes from run to run: pass "
                     "a list in the order wanted (sorted(...) for sorted names)",
                     columns=Param("columns"), kind=type(columns).__name__)
    try:
        iter(columns)
    except TypeError:
        raise worded(TypeError, "{columns} takes a list of column names (or a str of "
                     "comma-separated names), but got {value} ({kind})",
                     columns=Param("columns"), value=repr(columns)[:60],
                     kind=type(columns).__name__) from None


def same_columns(kinds: dict[str, str | None], chosen: list[str], columns, path: str,
                 first: str) -> None:
    """Check a later file of a folder or list against the first one's ``chosen``
    columns: they must be there and numeric, and without ``columns`` (every column
    read) the file may hold no other (it would be left out silently, or not, depending
    on which file sorts first).

    Raises
    ------
    ValueError
        A chosen column is missing or not numeric, or (``columns=None``) ``path`` has
        columns that ``first`` has not.
    """
    select_columns(kinds, chosen, path)
    extra = [c for c in kinds if c not in set(chosen)]
    if columns is None and extra:
        raise worded(ValueError, "{path} has columns {extra} that {first} has not: the "
                     "files must hold the same columns, or pass {columns} to choose "
                     "those to read", path=path, extra=_names(extra), first=first,
                     columns=Param("columns"))


def split_columns(text: str, kinds) -> list[str]:
    """The column names in ``text``: the whole of it when a column has that name,
    otherwise its comma-separated names, read as a CSV row so that a name holding a
    comma can be quoted (``'"c,d", e'``); a name is stripped of surrounding blanks
    unless a column has the name with them."""
    if text in kinds:
        return [text]
    parsed = []
    for skip in (False, True):  # (a quote after a blank: '"a, b", "c,d"')
        row = next(csv.reader([text], skipinitialspace=skip), [])
        parsed.append([c if c in kinds else c.strip() for c in row if c.strip()])
        if all(c in kinds for c in parsed[-1]):
            return parsed[-1]
    return parsed[0]


def _names(names: Sequence[str]) -> str:
    return shown(tuple(names), 12)


def _check_unique(names: list[str], what: str) -> None:
    dup = repeated(names)
    if dup:
        raise ValueError(f"{what} has several columns named {_names(dup)}; column names must "
                         "be unique to name the channels")


def _arrow_kind(t) -> str | None:
    """None for an integer or floating Arrow type, else its name."""
    return None if arrow_numeric(t) else str(t)


def _arrow_numpy(column) -> np.ndarray:
    """An Arrow array as numpy: no copy without nulls; nulls become NaN (float64 for ints)."""
    return column.to_numpy(zero_copy_only=False)


def _row_dtype(dtypes: list[np.dtype]) -> np.dtype:
    return np.result_type(*dtypes) if dtypes else np.dtype(np.float64)


def _slices(rows: int, row_bytes: int, read: Callable[[int, int], list[Any]]
            ) -> Callable[[int], Iterator[Piece]]:
    """``pieces(start)`` for an in-memory table: slices of about 64 MiB."""
    step = max(1, BATCH_BYTES // max(1, row_bytes))

    def pieces(start: int) -> Iterator[Piece]:
        for lo in range(start, rows, step):
            hi = min(lo + step, rows)
            yield hi - lo, read(lo, hi)
    return pieces


# ------------------------------------------------------------------ in-memory tables
def open_any(source, columns=None, key=None) -> TableSource | None:
    """``source`` as a :class:`TableSource` when it is a table (in memory or on disk).

    Parameters
    ----------
    source : object
        What :func:`nbbn.sources.open_source` was given.
    columns : sequence of str or str, optional
        The columns to read (a str is split at commas; quote a name that holds one,
        ``'"c,d",e'``).
    key : optional
        Must be None for a table (``columns`` chooses its data).

    Returns
    -------
    TableSource or None
        None when ``source`` is not a table and ``columns`` is None.

    Raises
    ------
    ValueError
        ``columns`` was given for a source that is not a table, or ``key`` for a table.
    """
    table = None
    if isinstance(source, (str, os.PathLike)):
        table = open_table_path(os.fspath(source), columns)
    elif _table_path_list(source):
        paths = [os.fspath(p) for p in source]
        folders = [p for p in paths if os.path.isdir(p)]
        if folders:  # (Spark writes a "x.parquet" folder of part files)
            from .sources import folder_kind

            more = f" (and {len(folders) - 1} more)" if len(folders) > 1 else ""
            top = folder_kind(folders[0])[0]
            such = "" if not top else ", such as " + os.path.join(
                os.path.dirname(folders[0]), "*" + glob_suffix(folders[0]),
                "*" + glob_suffix(top[0]))
            raise IsADirectoryError(
                f"{folders[0]}{more}: a folder, in a list of files; pass a folder alone (its "
                f"tables are read), or a glob of the files in the folders{such}")
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such file")
        table = _open_files(paths, columns, f"{len(paths)} files")
    elif is_table(source):
        table = open_table(source, columns)
    if table is None and columns is not None:
        raise worded(ValueError, "{columns} was given, but the source is not a table (Parquet, "
                     "CSV, a DataFrame, an Arrow table or an xarray.Dataset)",
                     columns=Param("columns", columns))
    if table is not None and key is not None:
        raise worded(ValueError, "{key} was given, but {what} is a table: choose its columns "
                     "with {columns}", key=Param("key", key), what=table.description,
                     columns=Param("columns"))
    return table


def is_table(obj) -> bool:
    """True for a pandas/polars DataFrame, a pyarrow Table/RecordBatch or an xarray Dataset.

    Looks at the type's module and name only: nothing is imported.
    """
    kind = type(obj)
    module = kind.__module__.split(".")[0]
    return (module, kind.__name__) in {("pandas", "DataFrame"), ("polars", "DataFrame"),
                                       ("pyarrow", "Table"), ("pyarrow", "RecordBatch"),
                                       ("xarray", "Dataset")}


def open_table(obj, columns=None) -> TableSource:
    """A DataFrame, Arrow table or ``xarray.Dataset`` as a :class:`TableSource`.

    Parameters
    ----------
    obj : pandas.DataFrame, polars.DataFrame, pyarrow.Table, pyarrow.RecordBatch or
        xarray.Dataset
        The table (:func:`is_table` is True for it).
    columns : sequence of str, optional
        The columns (data variables) to read; default every numeric one.

    Returns
    -------
    TableSource
        One shard, read in slices.

    Raises
    ------
    ValueError
        See :func:`select_columns`; column names repeat; an ``xarray.Dataset``'s variables
        differ in their dimensions.
    """
    module = type(obj).__module__.split(".")[0]
    if module == "pandas":
        return _pandas(obj, columns)
    if module == "polars":
        return _polars(obj, columns)
    if module == "xarray":
        return _xarray(obj, columns)
    return _arrow_table(obj, columns, f"a pyarrow {type(obj).__name__}")


def _frame_source(what: str, rows: int, names: list[str], dtypes: list[np.dtype],
                  read: Callable[[int, int], list[Any]], row_shape=None) -> TableSource:
    row_shape = (len(names),) if row_shape is None else row_shape
    dtype = _row_dtype(dtypes)
    row_bytes = math.prod(row_shape) * dtype.itemsize
    shard = TableShard(what, rows, row_shape, dtype, _slices(rows, row_bytes, read),
                       {"columns": names}, frozenset(dt.kind for dt in dtypes))
    return TableSource([shard], what, names)


def _pandas(df, columns) -> TableSource:
    what = "a pandas DataFrame"
    names = [str(c) for c in df.columns]
    _check_unique(names, what)
    kinds = {}
    for name, dt in zip(names, df.dtypes, strict=True):
        vt = pandas_values_dtype(dt)  # (a categorical's categories': read as its values)
        ok = getattr(vt, "kind", "O") in "iuf" and str(vt) != "bool"
        kinds[name] = None if ok else f"dtype {dt}" + (f" of {vt}" if vt is not dt else "")
    chosen = select_columns(kinds, columns, what)
    series = [df.iloc[:, names.index(c)] for c in chosen]

    def numpy_dtype(dt) -> np.dtype:
        """A column's values as numpy holds them: a nullable dtype's ``numpy_dtype``, a
        sparse dtype's ``subtype`` (read dense), a categorical's categories' dtype, else
        the dtype itself."""
        dt = pandas_values_dtype(dt)
        return np.dtype(getattr(dt, "numpy_dtype", None) or getattr(dt, "subtype", None)
                        or dt)

    def column(s) -> np.ndarray:
        if s.hasnans:  # pd.NA or NaN: NaN in float64 (nullable Int64 has no other way)
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        return s.to_numpy(dtype=numpy_dtype(s.dtype))

    dtypes = [numpy_dtype(s.dtype) for s in series]
    return _frame_source(what, len(df), chosen, dtypes,
                         lambda lo, hi: [column(s.iloc[lo:hi]) for s in series])


def _polars(df, columns) -> TableSource:
    what = "a polars DataFrame"
    names = list(df.columns)
    kinds = {n: None if polars_numeric(t) else f"dtype {t}"
             for n, t in zip(names, df.dtypes, strict=True)}
    chosen = select_columns(kinds, columns, what)
    series = [df.get_column(c) for c in chosen]
    dtypes = [np.dtype(s.slice(0, 0).to_numpy().dtype) for s in series]
    return _frame_source(what, df.height, chosen, dtypes,
                         lambda lo, hi: [s.slice(lo, hi - lo).to_numpy() for s in series])


def _arrow_table(table, columns, what: str) -> TableSource:
    _need_pyarrow(f"reading {what}")
    names = list(table.schema.names)
    _check_unique(names, what)
    kinds = {n: _arrow_kind(t) for n, t in zip(names, table.schema.types, strict=True)}
    chosen = select_columns(kinds, columns, what)
    table = table.select(chosen)
    dtypes = [np.dtype(t.to_pandas_dtype()) for t in table.schema.types]

    def read(lo: int, hi: int) -> list[Any]:
        part = table.slice(lo, hi - lo)
        return [_arrow_numpy(part.column(i)) for i in range(len(chosen))]
    return _frame_source(what, table.num_rows, chosen, dtypes, read)


def _xarray(ds, columns) -> TableSource:
    what = "an xarray.Dataset"
    names = [str(v) for v in ds.data_vars]
    kinds = {n: None if ds[n].dtype.kind in "iuf" else f"dtype {ds[n].dtype}" for n in names}
    chosen = select_columns(kinds, columns, what)
    arrays = [ds[c] for c in chosen]
    dims = {a.dims for a in arrays}
    if len(dims) != 1 or not next(iter(dims)):
        shown = ", ".join(f"{c!r} {a.dims}" for c, a in zip(chosen, arrays, strict=True))
        raise ValueError(f"{what}: the data variables read as channels must have the same "
                         f"dimensions, in the same order, and at least one; got {shown}")
    shape = arrays[0].shape
    data = [a.data for a in arrays]  # numpy (or dask) arrays, sliced per piece
    return _frame_source(what, shape[0], chosen, [np.dtype(a.dtype) for a in arrays],
                         lambda lo, hi: [d[lo:hi] for d in data],
                         row_shape=(*shape[1:], len(chosen)))


# ---------------------------------------------------------------------- files on disk
def _table_kind(path: str) -> str | None:
    low = path.lower()
    if low.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(CSV_SUFFIXES):
        return "csv"
    return None


def open_table_path(path: str, columns=None) -> TableSource | None:
    """A Parquet/CSV file, or a folder or glob of them, as a :class:`TableSource`.

    Parameters
    ----------
    path : str
        A ``.parquet``/``.pq`` or ``.csv``/``.tsv``/``.csv.gz`` file, a folder holding such
        files (and no ``.npy``/``.npz`` shards), or a glob pattern matching them.
    columns : sequence of str or str, optional
        The columns to read (a str is split at commas; quote a name that holds one,
        ``'"c,d",e'``); default every numeric column.

    Returns
    -------
    TableSource or None
        None when ``path`` is not a table (the caller tries the other kinds).

    Raises
    ------
    MissingExtraError
        pyarrow is not installed.
    ValueError
        Parquet and CSV files are mixed, the files differ in their columns, or the
        columns are not numeric (see :func:`select_columns`).
    """
    paths = _table_paths(path)
    if not paths:
        return None
    return _open_files(paths, columns, path if len(paths) == 1 else files_label(path, len(paths)))


def _table_paths(path: str) -> list[str]:
    """The Parquet/CSV files ``path`` names (a file, a folder, a glob); [] if not a table."""
    from .sources import folder_file_kind

    if os.path.isdir(path):  # (hidden and _-prefixed names aside, as pyarrow's datasets)
        kinds = {str(q): folder_file_kind(q.name) for q in Path(path).iterdir() if q.is_file()}
        if "shards" in kinds.values():
            return []
        return sorted(f for f, k in kinds.items() if k == "tables")
    if os.path.exists(path):
        return [path] if _table_kind(path) else []
    if any(ch in path for ch in "*?["):
        return sorted(p for p in glob.glob(path, recursive=True)  # (** as images)
                      if os.path.isfile(p) and _table_kind(p))
    return []


def glob_suffix(name: str) -> str:
    """The ending of a shard or table file's name that a glob of its kind names:
    ``.csv.gz`` for a compressed table, else its suffix."""
    return "".join(Path(name).suffixes[-2:]) if name.lower().endswith(".gz") else \
        Path(name).suffix


def nested_tables_note(path: str) -> str:
    """For the error of a folder that holds nothing nbbn reads: a note when its
    subfolders hold Parquet or CSV files (a partitioned dataset, ``year=2020/...``),
    which a folder is not searched for; "" otherwise."""
    from .sources import folder_file_kind

    for root, dirs, files in os.walk(path):
        dirs.sort()
        tables = sorted(f for f in files if folder_file_kind(f) == "tables")
        if root != path and tables:
            rel = os.path.relpath(root, path)
            depth = "*/" * (rel.count(os.sep) + 1)
            suffix = glob_suffix(tables[0])
            return (f"; its subfolders hold Parquet or CSV files ({rel}), but tables are "
                    f"read from a folder's top level only: pass a glob such as "
                    f"{os.path.join(path, depth)}*{suffix}")
    return ""


def looks_like_table(source) -> bool:
    """Whether :func:`open_any` reads ``source`` as a table (nothing is read or imported).

    Parameters
    ----------
    source : object
        What :func:`nbbn.sources.open_source` is given.

    Returns
    -------
    bool
        True for a DataFrame, an Arrow table, an ``xarray.Dataset``, a list of Parquet or
        CSV paths, or a path, folder or glob of such files.
    """
    if isinstance(source, (str, os.PathLike)):
        return bool(_table_paths(os.fspath(source)))
    if isinstance(source, (list, tuple)):
        return _table_path_list(source)
    return is_table(source)


def _table_path_list(source) -> bool:
    """Whether ``source`` is a non-empty list or tuple of Parquet or CSV paths."""
    return isinstance(source, (list, tuple)) and bool(source) and all(
        isinstance(p, (str, os.PathLike)) and _table_kind(os.fspath(p)) for p in source)


def _open_files(paths: list[str], columns, what: str) -> TableSource:
    kinds = {_table_kind(p) for p in paths}
    if len(kinds) > 1:
        raise ValueError(f"{what} mixes Parquet and CSV files; fit them separately")
    if kinds == {"parquet"}:
        return _parquet(paths, columns, what)
    return _csv(paths, columns, what)


def _parquet(paths: list[str], columns, what: str) -> TableSource:
    _need_pyarrow("reading Parquet files")
    import pyarrow.parquet as pq

    shards: list[TableShard] = []
    chosen: list[str] | None = None
    files: list[str] = []
    for path in paths:
        try:
            meta = pq.ParquetFile(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path}: not a readable Parquet file, truncated or corrupt "
                             f"({exc})") from exc
        schema = meta.schema_arrow
        names = list(schema.names)
        _check_unique(names, path)
        kinds = {n: _arrow_kind(t) for n, t in zip(names, schema.types, strict=True)}
        if columns is None:  # a stored pandas index is no channel (as pd.read_parquet)
            index = _pandas_index_columns(schema)
            kinds = {n: k for n, k in kinds.items() if n not in index}
        if chosen is None:
            chosen = select_columns(kinds, columns, path)
        else:  # the same columns, numeric, in every file
            same_columns(kinds, chosen, columns, path, paths[0])
        dtypes = [np.dtype(schema.field(c).type.to_pandas_dtype()) for c in chosen]
        ident = {**file_fingerprint(path), "columns": chosen}
        for g in range(meta.metadata.num_row_groups):
            rows = meta.metadata.row_group(g).num_rows
            shards.append(TableShard(f"{path} row group {g}", rows, (len(chosen),),
                                     _row_dtype(dtypes), _no_direct_read,
                                     {**ident, "row_group": g},
                                     frozenset(dt.kind for dt in dtypes)))
            files.append(path)
    assert chosen is not None
    groups = [int(s.fingerprint()["row_group"]) for s in shards]
    reader = _RowGroupReader(files, groups, chosen)
    return TableSource(shards, what, chosen, reader=reader)


def _pandas_index_columns(schema) -> set[str]:
    """The columns holding a pandas index (``index_columns`` of the pandas metadata)."""
    import json

    meta = (schema.metadata or {}).get(b"pandas")
    if meta is None:
        return set()
    try:
        index = json.loads(meta).get("index_columns", [])
    except (ValueError, AttributeError):  # not pandas' JSON: no index to drop
        return set()
    return {c for c in index if isinstance(c, str)}  # a RangeIndex is a dict, not stored


def _no_direct_read(start: int) -> Iterator[Piece]:  # pragma: no cover - never called
    raise AssertionError("Parquet row groups are read through the source's read-ahead")


class _RowGroupReader:
    """Reads row groups ahead, ``READ_AHEAD_ROW_GROUPS`` at once, in a thread pool.

    ``pieces(index)`` returns the rows of shard ``index`` and starts the reads of the
    next shards; reading shard ``index`` again (a new pass) starts over.
    """

    def __init__(self, files: list[str], groups: list[int], columns: list[str]) -> None:
        self.files, self.groups, self.columns = files, groups, columns
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future] = {}

    def _read(self, index: int):
        import pyarrow.parquet as pq

        cache = getattr(self._local, "files", None)
        if cache is None:
            cache = self._local.files = {}
        path = self.files[index]
        pf = cache.get(path)
        if pf is None:
            cache.clear()
            pf = cache[path] = pq.ParquetFile(path)
        table = pf.read_row_group(self.groups[index], columns=self.columns,
                                  use_threads=PARQUET_THREADS)
        # the top-level columns by name: a dotted name ("a.b") also matches the field b
        # of a struct column a, which pyarrow then returns as well
        return table.select(self.columns)

    def pieces(self, index: int) -> Iterator[Piece]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READ_AHEAD_ROW_GROUPS, "nbbn-parquet")
        for old in [i for i in self._ahead if i < index]:
            self._ahead.pop(old).cancel()
        for i in range(index, min(index + READ_AHEAD_ROW_GROUPS, len(self.groups))):
            if i not in self._ahead:
                self._ahead[i] = self._pool.submit(self._read, i)
        try:
            table = self._ahead.pop(index).result()
        except Exception as exc:
            raise ValueError(f"{self.files[index]}, row group {self.groups[index]}: cannot "
                             f"read it ({type(exc).__name__}: {exc})") from exc
        if index + 1 == len(self.groups):
            self.close()
        return _record_batches(table)

    def close(self) -> None:
        """Cancel the reads not started and let the pool's threads end."""
        for f in self._ahead.values():
            f.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def _record_batches(table) -> Iterator[Piece]:
    for rb in table.to_batches():
        if rb.num_rows:
            yield rb.num_rows, [_arrow_numpy(rb.column(i)) for i in range(rb.num_columns)]


def _csv(paths: list[str], columns, what: str) -> TableSource:
    _need_pyarrow("reading CSV files")
    import pyarrow as pa
    import pyarrow.csv as pacsv

    shards: list[TableShard] = []
    chosen: list[str] | None = None
    for path in paths:
        tsv = path.lower().endswith((".tsv", ".tsv.gz"))
        parse = pacsv.ParseOptions(delimiter="\t" if tsv else ",")
        read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
        header_only = False
        try:
            with _csv_stream(path) as f, pacsv.open_csv(f, read_options=read,
                                                        parse_options=parse) as r:
                schema = r.schema
        except (pa.ArrowInvalid, OSError) as exc:
            names, header_only = _header_line(path, "\t" if tsv else ","), True
            if names is None:
                raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
            schema = pa.schema([(n, pa.null()) for n in names])  # (no rows to read)
        names = list(schema.names)
        _check_unique(names, path)
        # numeric as inferred from the first block; an all-empty column (null) counts too
        kinds = {n: None if pa.types.is_null(t) else _arrow_kind(t)
                 for n, t in zip(names, schema.types, strict=True)}
        if chosen is None:
            chosen = select_columns(kinds, columns, path)
        else:
            same_columns(kinds, chosen, columns, path, paths[0])
        convert = pacsv.ConvertOptions(include_columns=chosen,
                                       column_types={c: pa.float64() for c in chosen})
        shards.append(TableShard(path, None, (len(chosen),), np.dtype(np.float64),
                                 _no_rows if header_only else
                                 _csv_pieces(path, read, parse, convert),
                                 {**file_fingerprint(path), "columns": chosen}))
    assert chosen is not None
    return TableSource(shards, what, chosen)


def _csv_stream(path: str):
    """The file at ``path`` as pyarrow reads it, decompressed for a ``.gz`` name in any
    case (``.CSV.GZ``: pyarrow's own test of the suffix is case-sensitive, and it parsed
    the compressed bytes as text)."""
    import pyarrow as pa

    return pa.input_stream(path, compression="gzip" if path.lower().endswith(".gz") else None)


def _no_rows(start: int) -> Iterator[Piece]:
    """The pieces of a CSV file that is a header alone: none."""
    return iter(())


def _header_line(path: str, delimiter: str) -> list[str] | None:
    """The column names of a CSV file that is its header alone without a line end
    (``a,b``, which pyarrow reads as an empty file); None for any other file."""
    import csv
    import gzip

    if os.path.getsize(path) > 1 << 16:
        return None
    opener: Any = gzip.open if path.lower().endswith(".gz") else open  # (as .csv)
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            text = f.read(1 << 16)
    except (OSError, EOFError, UnicodeDecodeError):  # (not gzip, truncated: pyarrow's error)
        return None
    if not text or "\n" in text or "\r" in text:
        return None
    return next(csv.reader([text], delimiter=delimiter))


def _csv_pieces(path: str, read, parse, convert) -> Callable[[int], Iterator[Piece]]:
    """The data rows from row ``start`` on. The rows before it are read and dropped here:
    pyarrow's ``skip_rows_after_names`` counts the empty lines its parser skips, so a
    resume of a file with empty lines counted rows twice."""
    def pieces(start: int) -> Iterator[Piece]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        row, skip = start, start
        try:
            with _csv_stream(path) as f, pacsv.open_csv(f, read_options=read,
                                                        parse_options=parse,
                                                        convert_options=convert) as r:
                for rb in r:
                    if skip:
                        drop = min(skip, rb.num_rows)
                        rb, skip = rb.slice(drop), skip - drop
                    if rb.num_rows:
                        yield rb.num_rows, [_arrow_numpy(rb.column(i))
                                            for i in range(rb.num_columns)]
                        row += rb.num_rows
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{path}, after data row {row}: {exc}") from exc
    return pieces
