"""Input validation and the canonical (outer, channels, inner) view of an N-d array.

Every kernel sees a 3-d array ``(O, C, I)``: the axes before ``channel_axis`` merged
into O, the axes after it merged into I. For a contiguous array (channels-first or
channels-last, any ndim) that view is free. When the strides do not allow a view, the
array is cut into slabs along one axis and each slab is copied to a contiguous buffer
of bounded size, so a strided view of a memory map never turns into one huge copy.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._torch_arrays import host_view, is_cpu_tensor, is_tensor, plain_numpy

SLAB_BYTES = 64 * 2**20  # upper bound of one contiguous copy made for a non-viewable input


def check_dtype(dtype: np.dtype, what: str = "input") -> None:
    """Accept real floating (16/32/64-bit) and integer dtypes; TypeError otherwise."""
    ok = (dtype.kind == "f" and dtype.itemsize in (2, 4, 8)) or dtype.kind in "iu"
    if not ok:
        raise TypeError(
            f"{what} must have a real floating (float16/32/64) or integer dtype, "
            f"got dtype {dtype} ({_kind_name(dtype)})"
        )


def _kind_name(dtype: np.dtype) -> str:
    if dtype.kind == "V" and type(dtype).__module__.startswith("ml_dtypes"):
        # (JAX's bfloat16 and float8 arrays: numpy reads them as opaque 2- or 1-byte
        # items; torch bfloat16 tensors are read as such)
        torch = ", or a torch bfloat16 tensor" if dtype.name == "bfloat16" else ""
        return (f"an ml_dtypes float, which nbbn does not read from numpy: pass "
                f"x.astype(np.float32){torch}")
    names = {"b": "boolean", "c": "complex", "O": "object", "U": "string", "S": "bytes",
             "M": "datetime", "m": "timedelta", "V": "void/structured", "f": "float"}
    return names.get(dtype.kind, dtype.kind)


def is_device_array(x) -> bool:
    """True for arrays in GPU memory: anything with ``__cuda_array_interface__`` (CuPy,
    torch CUDA tensors, numba device arrays) and numba's device arrays under the CUDA
    simulator, which lack that attribute but carry the ``__cuda_ndarray__`` marker."""
    if is_tensor(x):  # one property read (torch's interface property raises on the CPU)
        return x.is_cuda
    return bool(getattr(type(x), "__cuda_ndarray__", False)) or hasattr(
        x, "__cuda_array_interface__")


def as_array(x, what: str = "input") -> np.ndarray:
    """``np.asarray`` without copying (memmaps become plain views), plus the dtype check."""
    if isinstance(x, np.ndarray):
        check_no_mask(x, what)
        arr = x.view(np.ndarray) if type(x) is not np.ndarray else x
    elif is_cpu_tensor(x):
        arr, bf16 = host_view(x, what)
        if bf16:
            # numpy has no bfloat16: the backends read its bits through host_view
            raise TypeError(f"{what} is a bfloat16 tensor, which has no numpy dtype: "
                            "convert it first (.float())")
    elif is_device_array(x):
        raise TypeError(
            f"{what} is a GPU array ({type(x).__name__}) but backend='cpu' was asked for: "
            "use backend='auto' or 'cuda', or copy it to the host first"
        )
    elif is_sparse(x):
        raise TypeError(
            f"{what} is a scipy sparse matrix ({type(x).__name__}); only statistics "
            "(RunningStats.update) read sparse input, a map of it would store every zero: "
            "pass x.toarray(), or scale sparse columns with "
            "nbbn.sklearn.StandardScaler(with_mean=False)"
        )
    else:
        if _is_pil_image(x):
            raise _pil_error(x, what)
        if isinstance(x, (list, tuple)):  # (np.asarray drops the masks of its items)
            _check_items_unmasked(x, what)
        # (polars and pyarrow tables convert dates, durations and bools to numbers, or
        # fail in numpy's promotion: their columns are checked first)
        if not type(x).__module__.startswith("pandas") and (bad := _non_numeric_columns(x)):
            raise _columns_error(x, bad, what)
        if is_dask_frame(x):  # (its columns checked above, before anything is computed)
            x = x.compute()  # as pandas: nullable columns read as float64, pd.NA as NaN
        try:
            # (asanyarray: an object whose __array__ gives a masked array keeps its mask
            # until it is checked, below; np.asarray dropped it)
            arr = np.asanyarray(x)
        except ValueError as exc:  # numpy's words for a ragged nested list
            raise ValueError(f"{what} is not an array: numpy could not read the "
                             f"{type(x).__name__} as one ({exc})") from None
        except TypeError as exc:  # (numpy's DTypePromotionError: mixed kinds)
            raise TypeError(f"{what} is not an array of numbers: numpy could not read the "
                            f"{type(x).__name__} as one ({exc})") from None
        if type(arr) is not np.ndarray:
            check_no_mask(arr, f"{what} (a {type(x).__name__} read through its __array__)")
            arr = arr.view(np.ndarray)
        if arr.dtype.kind == "O":
            arr = _nullable_pandas(x, arr)
        if arr.dtype.kind == "O" and (bad := _non_numeric_columns(x)):
            raise _columns_error(x, bad, what)
        if arr.dtype.kind == "O":
            raise TypeError(f"{what} must have a real floating (float16/32/64) or integer "
                            f"dtype, but numpy reads the {type(x).__name__} as dtype object "
                            "(it holds None, mixed types, or integers beyond int64/uint64)")
    check_dtype(arr.dtype, what)
    return arr


def _is_pil_image(x) -> bool:
    return type(x).__module__.startswith("PIL.") and hasattr(x, "getbands")


def _pil_error(x, what: str) -> TypeError:
    """A PIL image is refused, not read through ``np.asarray``: its axes are (H, W, C),
    not the (C, H, W) of a sample (a Dataset's rows became its channels), and a palette
    image's values are indices, not colours."""
    width, height = x.size
    return TypeError(
        f"{what} is a PIL image (mode {x.mode!r}, {width}x{height}), which nbbn does not read "
        "as an array: np.asarray gives (H, W, C) with no channel axis chosen (and palette "
        "indices for mode 'P'). In a Dataset add a transform such as "
        "torchvision.transforms.PILToTensor() (uint8 (C, H, W), exact; channel_axis=1), or "
        "pass np.asarray(image.convert('RGB')) with channel_axis=-1; a folder of image "
        "files is read by nbbn.fit(folder) directly")


def _check_items_unmasked(items, what: str, depth: int = 0) -> None:
    """:func:`check_no_mask` of every array in a (nested) list or tuple: np.asarray reads
    the values under their masks (a list of lists of masked rows was accepted); and no
    PIL image among them (:func:`_pil_error`)."""
    for item in items:
        if isinstance(item, np.ndarray):
            check_no_mask(item, f"an item of {what}")
        elif isinstance(item, (list, tuple)) and depth < 64:  # (numpy's most dimensions)
            _check_items_unmasked(item, what, depth + 1)
        elif _is_pil_image(item):
            raise _pil_error(item, f"an item of {what}")


def _nullable_pandas(x, arr: np.ndarray) -> np.ndarray:
    """A pandas DataFrame or Series of numeric nullable columns (``Int64``, ``Float64``,
    ``float64[pyarrow]``), which numpy reads as objects, as float64 with ``pd.NA`` as
    NaN (what ``nbbn.fit`` and ``nbbn.sklearn.StandardScaler`` read of it); ``arr`` for
    anything else."""
    if not type(x).__module__.startswith("pandas") or _non_numeric_columns(x):
        return arr
    return x.to_numpy(dtype=np.float64, na_value=np.nan)


def is_dask_frame(x) -> bool:
    """True for a dask DataFrame or Series (their columns have pandas dtypes; tested
    without importing dask)."""
    return type(x).__module__.startswith(("dask", "dask_expr")) and hasattr(
        x, "to_dask_array") and hasattr(x, "compute") and hasattr(x, "dtype" if getattr(
            x, "ndim", 2) == 1 else "dtypes")


def _columns_error(x, bad: list[str], what: str) -> TypeError:
    return TypeError(f"{what} must hold numbers, but the {type(x).__name__} has the "
                     f"column{'s' * (len(bad) > 1)} {', '.join(bad[:8])}: select the "
                     "numeric columns (bool ones as .astype(float))")


def polars_numeric(t) -> bool:
    """Whether a polars dtype is an integer or floating type numpy has (Int128 and
    UInt128 have no numpy dtype)."""
    return hasattr(t, "is_integer") and (t.is_integer() or t.is_float()) \
        and "128" not in str(t)


def arrow_numeric(t) -> bool:
    """Whether an Arrow type is an integer or floating one."""
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t)


def pandas_values_dtype(dt):
    """The dtype of a pandas column's values: a categorical's categories' (it is read
    as its values, NaN for a missing one, as numpy and a Parquet file of it read it),
    else ``dt``."""
    cats = getattr(dt, "categories", None)  # (a CategoricalDtype's; None: not one)
    return dt if cats is None else cats.dtype


def _pandas_numeric(dt) -> bool:
    dt = pandas_values_dtype(dt)
    return getattr(dt, "kind", "O") in "iuf" and str(dt).lower() != "boolean"


def _non_numeric_columns(x) -> list[str]:
    """A pandas, dask, polars or pyarrow table's (or column's) columns that hold no numbers, as
    "name (dtype)" (bool, date, time and duration ones included); empty for anything
    else."""
    module = type(x).__module__
    if module.startswith(("pandas", "polars")) or is_dask_frame(x):
        numeric = polars_numeric if module.startswith("polars") else _pandas_numeric
        pairs: Any = (zip(x.columns, x.dtypes, strict=True) if hasattr(x, "columns")
                      and getattr(x, "ndim", 2) == 2  # (a dask Series has .columns)
                      else [(getattr(x, "name", None), getattr(x, "dtype", None))])
    elif module.startswith("pyarrow") and (hasattr(x, "schema") or hasattr(x, "type")):
        numeric = arrow_numeric
        pairs = (zip(x.schema.names, x.schema.types, strict=True) if hasattr(x, "schema")
                 else [(None, x.type)])
    else:
        return []
    return [f"{name!r} ({dt})" for name, dt in pairs if not numeric(dt)]


def check_no_mask(x, what: str, fix: str | None = None) -> None:
    """TypeError for a numpy masked array with masked elements: its values there are
    whatever the data holds, and reading them as values would count them. A masked
    array without a masked element (as netCDF readers return) is read as its data.
    ``fix``: the advice, where the data's (fill with NaN, compress) does not apply."""
    if type(x) is np.ndarray or not isinstance(x, np.ndarray):
        return
    if isinstance(x, np.ma.MaskedArray) and np.ma.getmask(x) is not np.ma.nomask \
            and np.ma.getmask(x).any():
        k = int(np.ma.count_masked(x))
        raise TypeError(
            f"{what} is a numpy masked array with {k} masked element{'s' * (k != 1)}, "
            "which nbbn would read as values: " + (fix or (
                "for statistics that skip them, pass x.filled(np.nan) with "
                "nan_policy='omit' (floating data), or x.compressed() for a single "
                "channel; to normalize, pass x.filled(value) or x.data (their outputs "
                "are then of those values)")))


def is_sparse(x) -> bool:
    """True for a scipy sparse matrix or array, or an instance of a subclass of one, as
    scipy's ``issparse`` (and scikit-learn) take them; tested without importing scipy
    (where ``scipy.sparse`` is not imported, nothing is one). The class's own module
    alone was tested: a subclass went down the dense path, where numpy read it as an
    object array."""
    if "scipy.sparse" not in sys.modules or not hasattr(x, "tocsr"):
        return False
    return any(k.__module__.startswith("scipy.sparse") for k in type(x).__mro__)


def native_order(a):
    """``a`` in native byte order: as it is, or a converted copy where it is byte-swapped
    (a sparse matrix's assigned ``X.indices = X.indices.astype('>i4')``, which numba
    does not type: "non-precise type pyobject"; a ``save_npz`` member of a big-endian
    host, which scipy's slicing refused)."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or dtype.isnative:
        return a
    return a.astype(dtype.newbyteorder("="))


def check_dense_chunks(x, what: str = "input") -> None:
    """TypeError for a dask array whose chunks are scipy sparse matrices (its ``_meta``
    one, as ``dask.array.from_array(m, asarray=False)`` makes): the chunk kernels read
    dense blocks, and such a chunk was refused as a batch of ``update`` ("only
    statistics (RunningStats.update) read sparse input", to a caller of ``update``) or
    read as an object array. Nothing is computed."""
    meta = getattr(x, "_meta", None)
    if is_sparse(meta):
        raise TypeError(sparse_chunks_message(what, meta))
    if meta is not None and is_device_array(meta):
        raise TypeError(device_chunks_message(what, meta))


def device_chunks_message(what: str, chunk) -> str:
    """The error of a dask array of GPU chunks (CuPy, a Numba device array): its
    reduction and maps run on the host, and such a chunk was refused as "backend='cpu'
    was asked for: use backend='auto' or 'cuda'", while backend='cuda' answered "use
    backend='auto' or 'cpu'" for the dask array, each sending the caller to the other."""
    return (f"{what} is a dask array of GPU chunks ({type(chunk).__name__}), which nbbn "
            "does not read (its dask reductions and maps run on the host, whatever the "
            "backend): move them to the host with x.map_blocks(cupy.asnumpy), or pass "
            "each chunk (a device array) to a RunningStats of backend='cuda'")


def sparse_chunks_message(what: str, chunk) -> str:
    """The error of a dask array of scipy sparse chunks (``chunk`` one of them, or its
    meta)."""
    return (f"{what} is a dask array of scipy sparse chunks ({type(chunk).__name__}), "
            "which nbbn does not read: convert them to dense chunks with "
            "x.map_blocks(lambda b: b.toarray(), dtype=x.dtype), or count a sparse "
            "matrix's statistics in one call, nbbn.RunningStats(channel_axis=-1)."
            "update(m)")


MAX_AXES = 64
"""numpy's limit on an array's dimensions (``NPY_MAXDIMS`` of numpy 2; torch's is lower)."""


def check_axis(channel_axis) -> int:
    """``channel_axis`` as a Python int; TypeError for anything but an integer, and
    ValueError for one that is no axis of any array (``10**20`` was taken, and saved
    into a file that ``load`` called corrupt: an object array)."""
    if not isinstance(channel_axis, (int, np.integer)) or isinstance(channel_axis, bool):
        raise TypeError(f"channel_axis must be an int, got {type(channel_axis).__name__}")
    if not -MAX_AXES <= channel_axis < MAX_AXES:
        raise ValueError(f"channel_axis={channel_axis} is no axis of any array: arrays have "
                         f"at most {MAX_AXES} dimensions (numpy's limit), so a channel axis "
                         f"lies in {-MAX_AXES}..{MAX_AXES - 1}")
    return int(channel_axis)


def check_channel_axis(channel_axis) -> int | str:
    """``channel_axis`` as a Python int, or a dimension name (str) for xarray inputs."""
    return channel_axis if isinstance(channel_axis, str) else check_axis(channel_axis)


class Checked:
    """A data attribute checked when it is set (``channel_axis``, ``backend``), held as
    ``_name``: a plain attribute took ``n.backend = "gpu"`` or ``n.channel_axis = 1.5``
    and failed only at the next call, far from the line that set it."""

    def __init__(self, check, doc: str = "") -> None:
        self.check, self.__doc__ = check, doc

    def __set_name__(self, owner, name: str) -> None:
        self.name, self.slot = name, "_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else obj.__dict__[self.slot]

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.slot] = self.check(value)

    @staticmethod
    def renamed(state: dict, *names: str) -> dict:
        """A pickle's ``state`` from before these attributes were checked (the plain
        names) under the held names."""
        for name in names:
            if name in state:
                state["_" + name] = state.pop(name)
        return state


def normalize_axis(channel_axis: int | str, ndim: int) -> int:
    """Return ``channel_axis`` as a non-negative axis of an ``ndim``-d array, or raise."""
    if ndim < 1:
        raise ValueError("expected an array with at least 1 dimension, got a 0-d array (a scalar)")
    if isinstance(channel_axis, str):
        raise TypeError(
            f"channel_axis={channel_axis!r} is a dimension name, but the input has no named "
            "dimensions (only an xarray DataArray has them): pass the axis as an int")
    channel_axis = check_axis(channel_axis)
    if not -ndim <= channel_axis < ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for an array with ndim={ndim} "
            f"(valid: {-ndim} to {ndim - 1})"
        )
    return int(channel_axis) % ndim


class Canonical:
    """An input array seen as (O, C, I) pieces, ready for a kernel.

    ``array`` is the validated input in its original shape, ``axis`` the non-negative
    channel axis, and ``outer * channels * inner`` its size. For a torch CPU tensor,
    ``tensor`` is the caller's tensor and ``array`` the numpy array over its memory
    (uint16 bits when ``bf16``: the input is bfloat16).
    """

    __slots__ = ("array", "axis", "outer", "channels", "inner", "tensor", "bf16")

    def __init__(self, array: np.ndarray, axis: int, outer: int, channels: int, inner: int,
                 tensor=None, bf16: bool = False):
        self.tensor = tensor
        self.bf16 = bf16
        self.array = array
        self.axis = axis
        self.outer = outer
        self.channels = channels
        self.inner = inner

    @property
    def size(self) -> int:
        return self.outer * self.channels * self.inner

    def view3(self) -> np.ndarray | None:
        """The (O, C, I) view of the input, or None when its strides do not allow one."""
        a = self.array
        if a.flags.c_contiguous and a.dtype.isnative:  # never a copy
            return a.reshape(self.outer, self.channels, self.inner)
        if not a.dtype.isnative:
            return None
        try:
            return a.reshape((self.outer, self.channels, self.inner), copy=False)
        except ValueError:
            return None

    def transposed(self) -> tuple[Canonical, tuple[int, ...]] | None:
        """``(t, perm)``: the input seen through ``array.transpose(perm)``, its axes in the
        order they lie in memory (strides decreasing; the channel axis follows), when
        the array has no (O, C, I) view but that permutation has one: a Fortran-ordered
        array (``perm`` reversed), rows of one (a batch of a Fortran-ordered file), an
        NHWC view of NCHW memory (``x.transpose(0, 2, 3, 1)``) or any other permuted
        view of contiguous memory. Statistics do not depend on the order of the reduced
        axes, and an elementwise map written through ``out.transpose(perm)`` is the same
        map; else None. Also taken where the (O, C, I) view exists but does not
        :func:`stream <streams>`: a torch ``channels_last`` tensor with
        ``channel_axis=1`` is read as the channels-last rows it lies in."""
        a = self.array
        if a.ndim < 3 or not a.dtype.isnative or ((v := self.view3()) is not None
                                                  and streams(v)):
            return None
        perm = tuple(sorted(range(a.ndim), key=lambda k: -abs(a.strides[k])))
        if perm == tuple(range(a.ndim)):
            return None
        p = a.transpose(perm)
        axis = perm.index(self.axis)
        t = Canonical(p, axis, *_split_shape(p.shape, axis), self.tensor, self.bf16)
        v = t.view3()
        # only a view the kernels stream (a swapped-axes array's permutation can have
        # neither contiguous inner runs nor contiguous rows, and crawl)
        return (t, perm) if v is not None and streams(v) else None

    def pieces(self, slabs: bool = False,
               item_bytes: int | None = None) -> Iterator[tuple[np.ndarray, tuple]]:
        """Yield ``(x3, index)``: 3-d pieces covering the input, and where each came from.

        One piece (a view) when possible and ``slabs`` is not asked for; otherwise slabs
        of at most ``SLAB_BYTES`` (counting ``item_bytes`` per element, by default the
        input's item size: a caller that makes a wider temporary per slab says so), cut
        along the non-channel axes (the first one, then, where one index of it is
        bigger, the next ones too), each a view where it has an (O, C, I) view and a
        contiguous copy otherwise. ``index`` (slices, one per leading axis) selects the
        slab in the original array, for writing results back.
        """
        v = None if slabs else self.view3()
        if v is not None:
            yield v, (Ellipsis,)
            return
        a = self.array
        if a.ndim == 1:  # (C,): one piece, the channels themselves
            yield np.ascontiguousarray(a, a.dtype.newbyteorder("=")).reshape(1, -1, 1), (
                Ellipsis,)
            return
        native = a.dtype.newbyteorder("=")
        for index in slab_index(a.shape, self.axis, item_bytes or a.itemsize):
            slab = a[index]
            shape3 = _split_shape(slab.shape, self.axis)
            x3 = None
            if slab.dtype.isnative:  # (a view where the slab has one: no copy)
                with contextlib.suppress(ValueError):
                    x3 = slab.reshape(shape3, copy=False)
            if x3 is None or copied_rows(x3):  # (rows with gaps: gathered, not crawled)
                x3 = np.ascontiguousarray(slab, dtype=native).reshape(shape3)
            del slab
            yield x3, index
            del x3  # (before the next copy: one slab at a time)


def streams(v: np.ndarray) -> bool:
    """Whether the kernels read an (O, C, I) view at their speed: contiguous inner runs
    (I > 1), or contiguous rows of channels (I = 1). A channels-first view whose inner
    runs have gaps (a torch ``channels_last`` tensor read with ``channel_axis=1``) or
    channels-last rows with gaps do not."""
    _, c, i = v.shape
    size = v.itemsize
    return v.strides[2] == size if i > 1 else (c == 1 or v.strides[1] == size)


def slab_index(shape: tuple[int, ...], axis: int, item_bytes: int,
               limit: int | None = None) -> Iterator[tuple[slice, ...]]:
    """Slices that cut an array of ``shape`` into slabs of at most ``limit`` bytes
    (``SLAB_BYTES``) holding every channel (``axis`` is never cut): steps along the
    first non-channel axis, and where one index of an axis is bigger than ``limit``,
    each index on its own and the next axes cut the same way. A slab bigger than
    ``limit`` remains only where the channels alone of one position are."""
    limit = SLAB_BYTES if limit is None else limit

    def cut(d: int, prefix: tuple[slice, ...], rest: int) -> Iterator[tuple[slice, ...]]:
        # ``rest``: bytes per index of axis d-1's slab (channels included where fixed)
        if d == len(shape):
            yield prefix
            return
        if d == axis:
            yield from cut(d + 1, (*prefix, slice(None)), rest)
            return
        per_index = rest // max(1, shape[d])
        if rest <= limit:
            yield (*prefix, slice(None))  # (everything from d on fits)
        elif per_index <= limit or not any(k != axis for k in range(d + 1, len(shape))):
            step = max(1, limit // max(1, per_index))
            for start in range(0, shape[d], step):
                yield (*prefix, slice(start, start + step))
        else:
            for i in range(shape[d]):
                yield from cut(d + 1, (*prefix, slice(i, i + 1)), per_index)

    yield from cut(0, (), item_bytes * math.prod(shape))


def copied_rows(x3: np.ndarray) -> bool:
    """True for an (O, C, 1) view whose channel rows are neither contiguous rows nor
    contiguous columns (``x[:, ::2]``, ``x[::-1]``, RGBA's ``x[..., :3]``): the
    channels-last kernels read contiguous rows, and one element per channels-first row
    would crawl, so the CPU backend reads such a view as a wider contiguous table or
    gathers it in contiguous slabs."""
    if x3.shape[2] != 1 or x3.shape[0] < 2 or x3.flags.c_contiguous:
        return False
    rows = x3[:, :, 0]
    return not (rows.flags.c_contiguous or rows.flags.f_contiguous)


def _split_shape(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def canonical(x, channel_axis: int | str, what: str = "input") -> Canonical:
    """Validate ``x`` and describe it as (O, C, I) around ``channel_axis`` (a torch CPU
    tensor as the array over its memory, bfloat16 as its uint16 bits)."""
    if type(x) is np.ndarray and type(channel_axis) is int and -x.ndim <= channel_axis < x.ndim:
        # the common case first, checked in fewer steps (small batches: ~1 us a call)
        check_dtype(x.dtype, what)
        axis = channel_axis % x.ndim
        o, c, i = _split_shape(x.shape, axis)
        return Canonical(x, axis, o, c, i)
    tensor, bf16 = None, False
    if is_tensor(x):
        view = plain_numpy(x)
        if view is not None:
            tensor, x = x, view
        elif x.is_cpu:
            tensor = x
            x, bf16 = host_view(x, what)
    arr = as_array(x, what)
    axis = normalize_axis(channel_axis, arr.ndim)
    o, c, i = _split_shape(arr.shape, axis)
    return Canonical(arr, axis, o, c, i, tensor, bf16)


def channel_vector(v, n: int | None, name: str) -> np.ndarray:
    """A per-channel parameter as a float64 (C,) array; ValueError on a wrong shape,
    TypeError for what holds no real number per channel (complex, strings, dates, a
    masked array with masked elements)."""
    if type(v) is np.ndarray and v.dtype == np.float64 and v.ndim == 1 and (
            n is None or v.shape[0] == n):
        return v.copy()  # (what the steps below give it, in a third of their time)
    if isinstance(v, np.ma.MaskedArray) and np.ma.getmask(v).any():
        raise TypeError(f"{name} is a numpy masked array with masked elements, but a "
                        f"per-channel parameter needs a value for every channel: pass "
                        f"{name}.filled(value)")
    try:
        a = np.asarray(v)
    except ValueError as exc:  # (a ragged nested list: numpy's words alone)
        raise ValueError(f"{name} must be one number per channel, got a "
                         f"{type(v).__name__} numpy cannot read as an array ({exc})") from None
    if a.dtype.kind not in "biufO":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.dtype.kind == "O":  # (a list mixing numbers and None, strings, Decimals, ...)
        bad = [e for e in a.ravel() if not isinstance(e, numbers.Real)]
        if bad:
            raise TypeError(f"{name} must hold real numbers, got {bad[0]!r} "
                            f"({type(bad[0]).__name__})")
    try:
        with np.errstate(over="ignore"):
            wide, a = a, a.astype(np.float64)
    except OverflowError:  # (a Python int past float64's range: 10**400)
        raise ValueError(f"{name} must hold finite numbers, got an integer too large for "
                         f"float64") from None
    if wide.dtype.kind == "f" and wide.dtype.itemsize > 8 and (
            np.isfinite(wide) & ~np.isfinite(a)).any():  # (a longdouble became infinite)
        raise ValueError(f"{name} must hold finite numbers, got a {wide.dtype} value "
                         "beyond float64's range")
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        want = f"shape ({n},)" if n is not None else "a 1-d array"
        raise ValueError(f"{name} must be {want}, got shape {a.shape}")
    return a
