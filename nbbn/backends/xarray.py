"""xarray ``DataArray`` inputs: unwrapped, run on the backend of their data, rewrapped.

A ``DataArray`` is a conversion, not a way of computing: :func:`prepare` finds the
channel axis (an int, or a dimension name such as ``"band"``), takes ``.data`` (numpy,
dask, or a device array) and prepares it on the backend that ``backend="auto"`` picks
for it; every other operation is that backend's. :func:`result` gives a ``DataArray``
back with the input's dims, coords, attrs and name (lazy when the data is dask). The
channel coordinate, when the channel dimension has one, travels with the prepared
input (``channel_coord``) so ``RunningStats`` can label its statistics
(:meth:`~nbbn.RunningStats.to_xarray`). xarray itself is never imported here: the
output is built with the input's own ``copy(data=...)``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from .._layout import check_axis

name = "xarray"


def channel_index(x, channel_axis: int | str) -> int:
    """The channel axis of the DataArray ``x`` as an int (a name looked up in its dims)."""
    dims = tuple(x.dims)
    if isinstance(channel_axis, str):
        if channel_axis not in dims:
            raise ValueError(f"channel_axis={channel_axis!r} is not a dimension of the "
                             f"DataArray (its dims: {dims})")
        return dims.index(channel_axis)
    return check_axis(channel_axis)


def channel_coord(x, axis: int) -> tuple[Any, Any] | None:
    """``(dimension name, coordinate values or None)`` of the channel dimension (None
    when ``axis`` is out of range: the data's backend says so). The name as xarray
    holds it (any hashable, not only a str); a ``pandas.MultiIndex`` stays one, so
    ``to_xarray`` gives back its levels."""
    if not -x.ndim <= axis < x.ndim:
        return None
    dim = x.dims[axis]
    if dim not in x.coords:
        return dim, None
    index = x.indexes.get(dim)
    if index is not None and getattr(index, "nlevels", 1) > 1:
        return dim, index.copy()
    return dim, np.asarray(x.coords[dim].values)


class XInput:
    """A prepared DataArray: the data's backend ``be`` and its prepared input ``data``,
    the DataArray as a template for outputs, and the channel coordinate; ``array``,
    ``outer``, ``channels``, ``inner`` and ``size`` are the prepared data's."""

    __slots__ = ("be", "data", "template", "channel_coord")

    def __init__(self, be: Any, data: Any, template: Any, coord) -> None:
        self.be = be
        self.data = data
        self.template = template
        self.channel_coord = coord

    array = property(lambda self: self.data.array)
    outer = property(lambda self: self.data.outer)
    channels = property(lambda self: self.data.channels)
    inner = property(lambda self: self.data.inner)
    size = property(lambda self: self.data.size)
    axis = property(lambda self: self.data.axis)


class _Part:
    __slots__ = ("be", "part")

    def __init__(self, be: Any, part: Any) -> None:
        self.be = be
        self.part = part


class _Out:
    __slots__ = ("be", "dst", "template")

    def __init__(self, be: Any, dst: Any, template: Any) -> None:
        self.be = be
        self.dst = dst
        self.template = template


def prepare(x, channel_axis: int | str, what: str) -> XInput:
    """Validate a DataArray and prepare its data on the backend that fits the data."""
    from . import resolve

    axis = channel_index(x, channel_axis)
    data = x.data
    be = resolve("auto", data)
    inner = be.prepare(data, axis, what)
    return XInput(be, inner, x, channel_coord(x, axis))


def reduce(inp: XInput, policy: int) -> _Part:
    """The data's statistics on its backend."""
    return _Part(inp.be, inp.be.reduce(inp.data, policy))


def reduce_weighted(inp: XInput, policy: int, weight: np.ndarray) -> _Part:
    """The data's weighted statistics on its backend."""
    return _Part(inp.be, inp.be.reduce_weighted(inp.data, policy, weight))


def summary(part: _Part):
    """The statistics as host arrays."""
    return part.be.summary(part.part)


def merge(state, part: _Part):
    """Merged into ``state`` by the data's backend."""
    return part.be.merge(state, part.part)


def prepare_out(out, inp: XInput, what: str) -> _Out:
    """The caller's ``out`` (a DataArray's data, or an array of the data's kind)."""
    if out is not None and hasattr(out, "dims") and hasattr(out, "variable"):
        out = out.data
    return _Out(inp.be, inp.be.prepare_out(out, inp.data, what), inp.template)


def params(a: np.ndarray, s: np.ndarray, b: np.ndarray, inp: XInput, owner: Hashable):
    """The data backend's parameters."""
    return inp.be.params(a, s, b, inp.data, owner)


def affine(inp: XInput, params, out: _Out) -> None:
    """The data backend's affine map."""
    inp.be.affine(inp.data, params, out.dst)


def result(out: _Out):
    """A DataArray with the input's dims, coords, attrs and name around the output, and
    no ``encoding``: the input's (a packed int16 ``scale_factor``, a ``_FillValue``)
    would quantize the normalized values when saved, and xarray's own arithmetic drops
    it too."""
    y = out.template.copy(deep=False, data=out.be.result(out.dst))
    y.encoding = {}
    return y


def running(buffer, inp: XInput):
    """The data backend's running buffer."""
    return inp.be.running(buffer, inp.data)


def batchnorm_train(inp: XInput, eps: float, weight: np.ndarray, bias: np.ndarray,
                    running, factor: float, out: _Out) -> None:
    """The data backend's BatchNorm training step."""
    inp.be.batchnorm_train(inp.data, eps, weight, bias, running, factor, out.dst)


def batchnorm_eval(inp: XInput, eps: float, weight: np.ndarray, bias: np.ndarray,
                   running: np.ndarray, out: _Out, owner: Hashable) -> None:
    """The data backend's BatchNorm eval map."""
    inp.be.batchnorm_eval(inp.data, eps, weight, bias, running, out.dst, owner)
