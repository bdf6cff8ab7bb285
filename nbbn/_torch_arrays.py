"""torch CPU tensors in and out of the CPU backend, without importing torch.

A CPU tensor is seen as the numpy array over its memory (``Tensor.numpy()``, no copy;
a tensor that requires grad is detached first, which shares the memory too). bfloat16
has no numpy dtype: its tensor is viewed as int16 and then as numpy uint16, the bits
the kernels decode (a bfloat16 is the top 16 bits of a float32). Outputs for tensor
inputs are new tensors (or the caller's ``out=`` tensor), written through the same kind
of view.

torch is never imported here: a tensor can only exist once the caller imported torch,
so ``sys.modules`` is where this module finds it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["TensorOutput", "check_no_grad", "empty_tensor_out", "host_view", "is_cpu_tensor",
           "is_tensor", "numpy_to_bf16_bits", "plain_numpy", "rounded_once"]


def _torch() -> Any:
    return sys.modules.get("torch")


def is_tensor(x) -> bool:
    """True for a ``torch.Tensor`` (any device)."""
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def is_cpu_tensor(x) -> bool:
    """True for a ``torch.Tensor`` in host memory."""
    return is_tensor(x) and x.is_cpu


def check_no_grad(x, what: str) -> None:
    """Refuse a tensor that requires grad while autograd records (``torch.is_grad_enabled``):
    nbbn's output would carry no gradient, silently. Statistics do not call this: they
    only read the values."""
    if type(x) is not np.ndarray and is_tensor(x) and x.requires_grad and (
            _torch().is_grad_enabled()):
        raise RuntimeError(
            f"{what} is a tensor that requires grad, but nbbn's output carries no gradient "
            "(its kernels are not part of autograd's graph). Call it under "
            "`with torch.no_grad():`, or pass `.detach()` of the tensor")


def host_values(v) -> Any:
    """Per-channel parameters or per-row weights as numpy can read them: a torch tensor
    (any device, a Parameter that requires grad too, a negative or conjugate view)
    through ``.detach().cpu()``, bfloat16 and other dtypes numpy lacks widened to
    float64; anything else as it is."""
    if not is_tensor(v):
        return v
    t = v.detach().cpu()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    try:
        return t.numpy()
    except TypeError:  # (bfloat16, float8: no numpy dtype)
        return t.double().numpy()


def check_out_overlap(arr: np.ndarray, what: str) -> None:
    """ValueError for an output whose elements overlap: a stride of 0 along an axis of
    more than one element (as ``expand`` or ``broadcast_to`` give), or strides that
    make two indices meet (``as_strided``). Each such element would be written, and in
    place normalized, more than once."""
    flags = getattr(arr, "flags", None)
    if flags is not None and (flags["C_CONTIGUOUS"] or flags["F_CONTIGUOUS"]):
        return  # (a contiguous block: every element its own bytes)
    if arr.size and any(st == 0 and n > 1 for st, n in zip(arr.strides, arr.shape,
                                                             strict=True)):
        raise ValueError(f"{what} has overlapping elements (a stride of 0: an expanded or "
                         f"broadcast view, strides {arr.strides}); pass an array that owns "
                         "each element, e.g. .contiguous() or .copy()")
    why = _elements_overlap(arr) if arr.size > 1 else None
    if why:
        verb = "may have" if why.startswith("interleaved") else "has"
        raise ValueError(f"{what} {verb} overlapping elements (shape {arr.shape}, strides "
                         f"{arr.strides}: {why}); pass an array that owns each element, "
                         "e.g. .contiguous() or .copy()")


#: Above this many elements, an output whose strides interleave is refused without
#: listing its offsets (a conservative answer for a layout only ``as_strided`` makes).
_OVERLAP_EXACT_LIMIT = 1 << 22


def _elements_overlap(arr: np.ndarray) -> str | None:
    """Why two elements of ``arr`` may share bytes, or None where none do. Axes sorted by
    stride, each must step past everything the smaller ones span (all numpy and torch
    layouts do); strides that interleave are settled by listing the offsets, up to a
    size limit."""
    itemsize = arr.dtype.itemsize
    extent = itemsize
    for st, n in sorted((abs(st), n) for st, n in zip(arr.strides, arr.shape, strict=True)
                        if n > 1):
        if st < extent:
            break
        extent += st * (n - 1)
    else:
        return None
    if arr.size > _OVERLAP_EXACT_LIMIT:
        return (f"interleaved strides, which nbbn checks element by element only up to "
                f"{_OVERLAP_EXACT_LIMIT} elements")
    offsets = np.zeros((), np.int64)
    for st, n in zip(arr.strides, arr.shape, strict=True):
        offsets = np.add.outer(offsets, np.arange(n, dtype=np.int64) * st)
    starts = np.sort(offsets, axis=None)
    if (np.diff(starts) < itemsize).any():
        return "two indices reach the same bytes"
    return None


def check_writable_bits(out, what: str) -> None:
    """ValueError for an ``out=`` tensor with torch's negative or conjugate bit set (as
    ``z.conj().imag`` gives): numpy can only reach a resolved copy of it, so a kernel
    writing there would leave the caller's tensor as it was."""
    if out.is_neg() or out.is_conj():
        raise ValueError(f"{what} is a tensor with torch's negative or conjugate bit set "
                         "(a lazy view such as z.conj().imag), which nbbn cannot write in "
                         "place; pass a plain tensor (e.g. torch.empty_like(out)) and copy")


def host_view(x, what: str) -> tuple[np.ndarray, bool]:
    """``(array, bf16)``: the numpy array over a CPU tensor's memory (detached, no copy),
    and whether it holds bfloat16 bits (then the array is their uint16 view)."""
    torch = _torch()
    t = x.detach()
    if t.is_nested:  # (its layout may read as strided; .numpy() raised torch's internal error)
        raise TypeError(f"{what} is a nested torch tensor (of tensors of different shapes): "
                        "pass its tensors one by one (x.unbind()), or x.to_padded_tensor(...)"
                        " where a padding value is right")
    if t.layout != torch.strided:
        raise TypeError(f"{what} is a torch tensor of layout {t.layout}, not a dense one: "
                        "pass x.to_dense()")
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), True
    try:
        return t.numpy(), False
    except TypeError as exc:  # a dtype numpy does not have (float8, quantized, ...)
        raise TypeError(
            f"{what} must have a real floating (float16/32/64, bfloat16) or integer dtype, "
            f"got {t.dtype}") from exc


def plain_numpy(x) -> np.ndarray | None:
    """``x.numpy()`` for the common tensor (CPU, numpy's dtype, no grad, no conjugate or
    negative bit), else None (then :func:`host_view` sorts it out). One torch call: each
    costs tens of microseconds when a large kernel has just evicted torch's code and data
    from the caches, as the previous batch's kernel has."""
    try:
        return x.numpy()
    except (RuntimeError, TypeError):
        return None


class TensorOutput:
    """An output the CPU kernels write through ``array`` (a numpy view, uint16 bits for
    bfloat16 when ``bf16``) and the caller gets back as ``target`` (a tensor); ``given``:
    the caller's own ``out=`` (autograd is told of the write: :func:`written`)."""

    __slots__ = ("array", "target", "bf16", "given")

    def __init__(self, array: np.ndarray, target: Any, bf16: bool, given: bool = False
                 ) -> None:
        self.array = array
        self.target = target
        self.bf16 = bf16
        self.given = given


def empty_tensor_out(like: np.ndarray, dtype: np.dtype | None, kind: type) -> TensorOutput:
    """A new CPU tensor of class ``kind`` (the input's: a ``torch.Tensor`` subclass stays
    one, as torch's own operations keep it, except a class that turns its
    ``__torch_function__`` off, as ``torch.nn.Parameter`` and ``torch.nn.Buffer`` do: torch
    gives plain tensors for those, and so does nbbn) laid out as ``like``, the numpy view of the
    input tensor (a channels_last tensor gives a channels_last output, as torch's own
    layers; an expanded one, with strides of 0, a C-contiguous output): of ``dtype``, or
    bfloat16 when ``dtype`` is None (``like`` then holds bfloat16 bits).

    Its memory is numpy's (``torch.from_numpy``): numpy asks Linux for transparent huge
    pages for large arrays (``madvise``), torch's CPU allocator does not, and the first
    write of a fresh output is what a normalizer's call pays for. A float32 output of
    51 MB took 3-4x as long in torch's memory (docs/benchmarks.md). What a caller can
    see: such a tensor cannot be ``resize_``-d to a larger size.
    """
    torch = _torch()
    code = np.uint16 if dtype is None else dtype
    expanded = any(st == 0 and n > 1 for st, n in zip(like.strides, like.shape, strict=True))
    # (numpy's order="K" puts axes of stride 0 innermost: a batch expanded from one
    # sample came out in an order no torch layout has, and 3x slower to write)
    arr = np.empty(like.shape, code) if expanded else np.empty_like(like, code)
    if dtype is None:  # (torch reads int16 memory in every version; the bits are the same)
        t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(arr)
    if kind is not torch.Tensor and (getattr(kind, "__torch_function__", None)
                                     is not torch._C._disabled_torch_function_impl):
        t = t.as_subclass(kind)
    return TensorOutput(arr, t, dtype is None)


def written(t) -> None:
    """Tell autograd that the tensor ``t`` was written in place (through numpy, which
    it does not see): a graph that saved ``t`` then raises at ``backward``, as after
    torch's own in-place operations, instead of computing wrong gradients."""
    _torch().autograd.graph.increment_version(t)


def numpy_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32/float64 values as bfloat16 bits (uint16), rounded as torch rounds
    (float64 to float32 first, then to nearest even; NaN as 0x7FC0)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32)
    bits = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    bits[(u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)] = 0x7FC0
    return bits


def rounded_once(a: np.ndarray, dtype) -> Any:
    """float64 values as a CPU tensor of the floating torch ``dtype``, each rounded once
    to nearest even. torch's float64 to float16/bfloat16 conversion goes through
    float32 and rounds twice (``1 + 2**-8 + 2**-30`` became bfloat16 1.0, not 1.0078125):
    here the float32 step rounds to odd (an inexact value keeps the odd one of its two
    float32 neighbours), which a rounding to 8 or 11 bits then rounds correctly."""
    torch = _torch()
    a = np.ascontiguousarray(a, np.float64)
    if dtype == torch.float64:
        return torch.from_numpy(a.copy())
    t = a.astype(np.float32)
    if dtype in (torch.float16, torch.bfloat16):
        back = t.astype(np.float64)
        with np.errstate(invalid="ignore"):
            inexact = np.isfinite(a) & (back != a)
            toward = np.where(a > back, np.float32(np.inf), np.float32(-np.inf))
        other = np.nextafter(t, toward)
        even = (t.view(np.uint32) & np.uint32(1)) == 0
        t = np.where(inexact & even, other, t)
    return torch.from_numpy(t).to(dtype)
