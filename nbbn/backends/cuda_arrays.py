"""Device arrays in and out: Numba device arrays, CuPy arrays, torch CUDA tensors.

Inputs are wrapped, without a copy, as Numba device arrays through
``__cuda_array_interface__`` (Numba's own device arrays, which under the simulator
have no such attribute, are taken as they are). The wrapper remembers the input's
kind and stream, so that outputs are allocated as the same kind of array and the
kernels run on the stream the input library uses. A numpy input (``backend="cuda"``
with host data) is copied to the device, and results are copied back to numpy.

bfloat16 tensors (CUDA, or CPU with ``backend="cuda"``) are seen as their uint16 bits
(``x.view(torch.int16)``, relabelled unsigned) with ``bf16`` set: the kernels decode
them on load and write bfloat16 outputs as bits, rounded as torch rounds.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
from numba import cuda
from numba.core import config

from .._layout import check_dtype, is_device_array, normalize_axis

SIMULATOR = bool(getattr(config, "ENABLE_CUDASIM", 0))

_streams: dict[int, object] = {}  # external streams by handle, created once


def is_numba_device_array(x) -> bool:
    """True for Numba's own device arrays (also under the simulator)."""
    return bool(getattr(type(x), "__cuda_ndarray__", False))


def _kind(x) -> str:
    if is_numba_device_array(x):
        return "numba"
    module = type(x).__module__.split(".")[0]
    return module if module in ("torch", "cupy") else "cai"


def _stream_of(desc: dict):
    handle = desc.get("stream")
    if handle is None or SIMULATOR:
        return 0
    stream = _streams.get(handle)
    if stream is None:
        stream = _streams[handle] = cuda.external_stream(handle)
    return stream


def is_bf16_tensor(x) -> bool:
    """True for a torch bfloat16 tensor (any device)."""
    return str(getattr(x, "dtype", "")) == "torch.bfloat16"


def as_device(x):
    """``(device array, stream, kind)`` for a device input, without copying it (a
    bfloat16 tensor as the uint16 array of its bits)."""
    if is_numba_device_array(x):
        return x, x.stream, "numba"
    if getattr(x, "requires_grad", False):  # a torch tensor: its values, not its graph
        x = x.detach()
    if is_bf16_tensor(x):  # no such dtype in numba: its bits, which the kernels decode
        x = x.view(sys.modules["torch"].int16)
        desc = dict(x.__cuda_array_interface__, typestr="<u2")
    else:
        desc = x.__cuda_array_interface__
    dev = cuda.from_cuda_array_interface(desc, owner=x, sync=False)
    return dev, _stream_of(desc), _kind(x)


def shape_of(dev) -> tuple[int, ...]:
    """The shape of a device array as a tuple of Python ints."""
    return tuple(int(n) for n in dev.shape)


@functools.lru_cache(maxsize=256)
def _view_strides(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int,
                  new_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The strides of a reshape without a copy, or None (numpy works them out on a
    stand-in array that has no data; cached, as a batch stream repeats one layout)."""
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.dtype(f"V{itemsize}")), shape,
                                            strides)
    try:
        return probe.reshape(new_shape, copy=False).strides
    except ValueError:
        return None


def reshaped(dev, shape: tuple[int, ...]):
    """A view of ``dev`` with a new shape, or None when its strides do not allow one."""
    if SIMULATOR:
        try:
            return type(dev)(dev._ary.reshape(shape, copy=False), stream=dev.stream)
        except ValueError:
            return None
    dtype = np.dtype(dev.dtype)
    strides = _view_strides(shape_of(dev), tuple(int(s) for s in dev.strides),
                            dtype.itemsize, shape)
    if strides is None:
        return None
    return type(dev)(shape, strides, dtype, stream=dev.stream, gpu_data=dev.gpu_data)


def flat_view(v):
    """``(flat, strides)`` for a device array ``v`` of shape (M, ...): a 1-d unit-stride
    array over ``v``'s memory, with ``v[m, j, ...]`` at ``flat[m * s0 + j * s1 + ...]``
    (strides in items); None when a stride is negative, not a whole number of items, or
    0 along the first axis (M > 1). The kernels step along the first axis."""
    item = np.dtype(v.dtype).itemsize
    shape = shape_of(v)
    # (the stride of a length-1 axis is never stepped: a reversed one, -4, was refused)
    byte_strides = tuple(0 if n == 1 else int(s) for n, s in zip(shape, v.strides,
                                                                  strict=True))
    if any(s < 0 or s % item for s in byte_strides):
        return None
    strides = [s // item for s in byte_strides]
    if shape[0] <= 1:
        strides[0] = max(strides[0], 1)  # a single row: any positive step reads it once
    elif strides[0] == 0:
        return None
    span = 0 if 0 in shape else 1 + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    if SIMULATOR:
        base = np.lib.stride_tricks.as_strided(v._ary, shape=(span,), strides=(item,))
        return type(v)(base, stream=v.stream), tuple(strides)
    flat = type(v)((span,), (item,), v.dtype, stream=v.stream, gpu_data=v.gpu_data)
    return flat, tuple(strides)


class DeviceInput:
    """A validated input on the device, seen as (outer, channels, inner) around its axis.

    ``array`` is what the user passed, ``dev`` its Numba device array (for a numpy input,
    a device copy), ``kind`` one of "numba", "torch", "cupy", "cai" or "numpy" (any host
    data: numpy, a CPU tensor, a list); ``bf16``:
    ``dev`` holds bfloat16 bits (uint16); ``host``: for host data, the numpy array the
    CPU backend would read (its layout is that of the CPU backend's new output).
    """

    __slots__ = ("array", "dev", "kind", "stream", "axis", "outer", "channels", "inner",
                 "view3", "flat3", "bf16", "host")

    def __init__(self, array, dev, kind, stream, axis, outer, channels, inner,
                 bf16: bool = False):
        self.bf16 = bf16
        self.host: np.ndarray | None = None
        self.view3 = None
        self.flat3 = None
        self.array = array
        self.dev = dev
        self.kind = kind
        self.stream = stream
        self.axis = axis
        self.outer = outer
        self.channels = channels
        self.inner = inner

    @property
    def size(self) -> int:
        """Number of values."""
        return self.outer * self.channels * self.inner

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the device array."""
        return shape_of(self.dev)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the device array."""
        return np.dtype(self.dev.dtype)

    @property
    def channels_last(self) -> bool:
        """True when the channel axis is the last one (inner == 1)."""
        return self.inner == 1

    def view(self):
        """The (O, C, I) view, or (M, C) when the channel axis is the last one; None
        when the strides allow no such view."""
        if self.view3 is None:
            shape = (self.outer, self.channels) if self.channels_last else (
                self.outer, self.channels, self.inner)
            self.view3 = reshaped(self.dev, shape)
        return self.view3

    def flat(self):
        """``(flat, strides)`` (see :func:`flat_view`) of :meth:`view`, or None."""
        if self.flat3 is None:
            v = self.view()
            self.flat3 = None if v is None else flat_view(v)
        return self.flat3

    def viewable(self) -> bool:
        """True when the kernels can read the input in place."""
        if self.channels_last:
            return self.flat() is not None
        return self.view() is not None

    def checked_flat(self):
        """:meth:`flat`, or ValueError saying why the kernels cannot read the input."""
        f = self.flat()
        if f is None:
            self.checked_view()
            raise ValueError(
                f"this {self.kind} device array (shape {self.shape}, strides "
                f"{tuple(self.dev.strides)}) has a negative stride (a reversed axis) or "
                "a zero stride along its rows; pass a contiguous device array")
        return f

    def checked_view(self):
        """:meth:`view`, or ValueError saying why the kernels cannot read the input."""
        v = self.view()
        if v is None:
            raise ValueError(
                f"this {self.kind} device array (shape {self.shape}, strides "
                f"{tuple(self.dev.strides)}) cannot be seen as (outer, channel, inner) "
                "without a copy; pass a contiguous device array"
            )
        return v


def canonical(x, channel_axis: int, what: str = "input") -> DeviceInput:
    """Validate ``x`` (a device array, or host data to be copied) for the CUDA kernels."""
    bf16 = is_bf16_tensor(x)
    if is_device_array(x):
        dev, stream, kind = as_device(x)
        check_dtype(np.dtype(dev.dtype), what)
    else:
        from .._layout import as_array
        from .._torch_arrays import host_view

        host = host_view(x, what)[0] if bf16 else as_array(x, what)  # bfloat16: its bits
        normalize_axis(channel_axis, host.ndim)  # (a 0-d input: ascontiguousarray makes it 1-d)
        given = host
        host = np.ascontiguousarray(host, dtype=host.dtype.newbyteorder("="))
        # numpy calls an array C-contiguous whatever the strides of its length-1 axes
        # (a reversed (1, C) row keeps a negative one), and the device copy keeps them:
        # the flat view's strides are the plain ones
        host = host.reshape(-1).reshape(host.shape)
        stream, kind = 0, "numpy"
        dev = cuda.to_device(host)
    shape = shape_of(dev)
    axis = normalize_axis(channel_axis, len(shape))
    can = DeviceInput(x, dev, kind, stream, axis, math.prod(shape[:axis]), shape[axis],
                      math.prod(shape[axis + 1 :]), bf16)
    if kind == "numpy":
        can.host = given
    if can.size and not can.viewable():
        if kind not in ("torch", "cupy"):  # refused before anything changes
            can.checked_flat() if can.channels_last else can.checked_view()
        # strides that no (O, C, I) view expresses: the library's own device copy
        y = x.contiguous() if kind == "torch" else __import__("cupy").ascontiguousarray(x)
        can.dev = as_device(y)[0]
        can.view3 = can.flat3 = None
    return can


def expanded(shape: tuple[int, ...], strides) -> bool:
    """True for a stride of 0 along an axis of more than one element (an expanded
    tensor, a broadcast array): a new output for it is C-contiguous, as the CPU
    backend's (``_torch_arrays.empty_tensor_out``: numpy's order="K" puts such axes
    innermost, an order no torch layout has)."""
    return any(int(st) == 0 and n > 1 for st, n in zip(strides, shape, strict=True))


@functools.lru_cache(maxsize=256)
def _strides_like(shape: tuple[int, ...], strides: tuple[int, ...],
                  itemsize: int) -> tuple[int, ...]:
    """The strides of a new dense array laid out as one of ``strides`` (numpy's
    ``empty_like``, order="K": its axes in the order of their strides; numpy works the
    order out on a stand-in of two elements an axis that it never reads)."""
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.dtype(f"V{itemsize}")),
                                            (2,) * len(shape), strides)
    order = np.argsort([-s for s in np.empty_like(probe).strides], kind="stable")
    out = [0] * len(shape)
    step = itemsize
    for i in order[::-1]:
        out[i] = step
        step *= shape[i]
    return tuple(out)


def _dense_like(can: DeviceInput, dtype: np.dtype):
    """A new Numba device array of ``dtype`` laid out as the input (see :func:`expanded`)."""
    shape = can.shape
    if can.size == 0 or expanded(shape, can.dev.strides):
        return cuda.device_array(shape, dtype, stream=can.stream)
    strides = _strides_like(shape, tuple(int(s) for s in can.dev.strides), dtype.itemsize)
    base = cuda.device_array(can.size, dtype, stream=can.stream)
    if SIMULATOR:
        return type(base)(np.lib.stride_tricks.as_strided(base._ary, shape, strides),
                          stream=can.stream)
    return type(base)(shape, strides, dtype, stream=can.stream, gpu_data=base.gpu_data)


def _writable(can: DeviceInput, dev) -> bool:
    """True when the kernels can write ``dev`` as the output of ``can``."""
    shape = (can.outer, can.channels) if can.channels_last else (
        can.outer, can.channels, can.inner)
    v = reshaped(dev, shape)
    return v is not None and (not can.channels_last or flat_view(v) is not None)


def empty_like_input(can: DeviceInput, dtype: np.dtype, bf16: bool = False):
    """``(user array, device array)``: a new output of the input's kind and shape, laid
    out as the input (a channels_last tensor gives a channels_last output, a Fortran-
    ordered array a Fortran-ordered one; an expanded input, or one whose layout the
    kernels could not write, a C-contiguous one) (``bf16``: a bfloat16 tensor, its
    device array the uint16 bits; torch input only)."""
    shape = can.shape
    x = can.array
    if can.kind == "torch":
        import torch

        dt = {2: torch.float16, 4: torch.float32, 8: torch.float64}[dtype.itemsize]
        if bf16:
            dt = torch.bfloat16
        if not expanded(shape, x.stride()):
            out = torch.empty_like(x, dtype=dt, requires_grad=False)
            dev = as_device(out)[0]
            if not can.size or _writable(can, dev):
                return out, dev
        out = torch.empty(shape, dtype=dt, device=x.device)
        return out, as_device(out)[0]
    if can.kind == "cupy":
        import cupy

        if not expanded(shape, x.strides):
            out = cupy.empty_like(x, dtype)
            dev = as_device(out)[0]
            if not can.size or _writable(can, dev):
                return out, dev
        out = cupy.empty(shape, dtype)
        return out, as_device(out)[0]
    dev = _dense_like(can, dtype)
    if can.size and not _writable(can, dev):
        dev = cuda.device_array(shape, dtype, stream=can.stream)
    return dev, dev


def user_out(out, can: DeviceInput, what: str):
    """``(user array, device array)`` for a user's ``out=`` (validated: a host ``out``
    for host input, a device one for device input; elements that do not overlap; a
    device ``out`` the kernels can write in place)."""
    from .._torch_arrays import check_no_grad, check_out_overlap, host_view, is_cpu_tensor

    if can.kind == "numpy":
        if is_cpu_tensor(out):  # a host tensor (bfloat16: the uint16 bits on the device)
            check_no_grad(out, "out")
            arr, bf16 = host_view(out, "out")
            check_out_overlap(arr, "out")
            return out, cuda.device_array(arr.shape, np.uint16 if bf16 else arr.dtype)
        if not isinstance(out, np.ndarray):
            raise ValueError(f"out must be a numpy array or a CPU tensor for a host {what}, "
                             f"got {type(out).__name__}")
        if not out.flags.writeable:
            raise ValueError("out is read-only")
        check_out_overlap(out, "out")
        dev = cuda.device_array(out.shape, out.dtype.newbyteorder("="))
        return out, dev
    if not is_device_array(out):
        raise ValueError(
            f"out must be a device array for a device {what}, got {type(out).__name__}")
    dev = as_device(out)[0]
    check_out_overlap(dev, "out")
    return out, dev


def overlaps(a, b) -> bool:
    """True when two device arrays may share memory but are not the same view."""
    if SIMULATOR:
        same = (a._ary.__array_interface__["data"][0] == b._ary.__array_interface__["data"][0]
                and a._ary.strides == b._ary.strides)
        return np.may_share_memory(a._ary, b._ary) and not same
    pa = a.__cuda_array_interface__["data"][0]
    pb = b.__cuda_array_interface__["data"][0]
    if pa == pb and tuple(a.strides) == tuple(b.strides):
        return False
    lo_a, hi_a = byte_extent(pa, shape_of(a), tuple(a.strides), np.dtype(a.dtype).itemsize)
    lo_b, hi_b = byte_extent(pb, shape_of(b), tuple(b.strides), np.dtype(b.dtype).itemsize)
    return lo_a < hi_b and lo_b < hi_a


def byte_extent(ptr: int, shape: tuple[int, ...], strides: tuple[int, ...],
                itemsize: int) -> tuple[int, int]:
    """The addresses ``[lo, hi)`` an array touches: its pointer is its first element,
    which a negative stride puts above others (``alloc_size`` from the pointer up missed
    the memory below it: a reversed input's overlap with ``out`` went unseen)."""
    if 0 in shape:
        return ptr, ptr
    lo = ptr + sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s < 0)
    hi = ptr + sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s > 0)
    return lo, hi + itemsize
