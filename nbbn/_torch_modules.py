"""nbbn objects as torch modules and back: ``Normalizer.to_torch``, ``BatchNorm.from_torch``,
``BatchNorm.to_torch`` and the tensors of ``BatchNorm.state_dict``.

Imported only by :mod:`nbbn.torch` and by those methods, never by ``import nbbn``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import MissingExtraError

try:
    import torch
except ImportError as exc:  # pragma: no cover - torch comes with the test extra
    raise MissingExtraError(
        "nbbn's PyTorch interop needs torch: pip install 'nbbn[torch]'") from exc

from ._layout import channel_vector, check_axis  # noqa: E402
from ._torch_arrays import rounded_once  # noqa: E402
from .batchnorm import BatchNorm  # noqa: E402
from .normalizer import Normalizer  # noqa: E402

__all__ = ["NormalizerModule", "batchnorm_from_torch", "batchnorm_to_torch", "state_tensors"]

_TORCH_BN = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}


class NormalizerModule(torch.nn.Module):
    """A frozen :class:`nbbn.Normalizer` as a torch module (``Normalizer.to_torch()``).

    ``y = ((x - mean) - mean_lo) * scale + bias`` per channel, the mean subtracted first
    (as nbbn does) and split into two numbers of the buffers' dtype (``mean`` rounded,
    ``mean_lo`` the rest), so that a float32 module keeps about float32's relative
    precision of ``x - mean`` even when ``|mean| >> std``. The arithmetic runs in the
    buffers' dtype, float32 for float16 and bfloat16 buffers (an input of 65520 or more
    was an infinity in float16 before its mean was subtracted)
    (``Normalizer.to_torch(dtype=torch.float64)`` for float64: a float32 module's
    ``.double()`` keeps its float32-rounded numbers); the output has the input's dtype
    when that is floating, the buffers' dtype otherwise (nbbn's rule). ``.half()``,
    ``.bfloat16()`` and ``.to(dtype)`` check the numbers against the new dtype's range,
    as ``to_torch(dtype=...)`` does (the module unchanged on an error), split the mean
    again into ``mean`` and ``mean_lo`` of that dtype and round the scale and bias once;
    so does ``load_state_dict`` of a state of another dtype (its ``mean`` and
    ``mean_lo`` were each cast, the split lost). Works with ``torch.jit.script`` and
    ``torch.export.export``.

    Parameters
    ----------
    mean, scale, bias : numpy.ndarray, shape (C,)
        float64 per-channel mean, ``weight / sqrt(var + eps)`` and bias.
    channel_axis : int
        The channel axis of the inputs (negative counts from the end).
    dtype : torch.dtype, optional
        The buffers' dtype (default ``torch.get_default_dtype()``).
    device : torch.device or str, optional
        The buffers' device.
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                 channel_axis: int, dtype: torch.dtype | None = None,
                 device: Any = None) -> None:
        super().__init__()
        dtype = _float_dtype(dtype)
        device = _device(device)
        # (checked as Normalizer checks them: a (1,) scale was applied to every channel,
        # a channel_axis of 1.7 cut to 1, and a 0-d mean built a module repr could not show)
        mean = channel_vector(mean, None, "mean")
        scale = channel_vector(scale, mean.shape[0], "scale")
        bias = channel_vector(bias, mean.shape[0], "bias")
        channel_axis = check_axis(channel_axis)
        _check_range(dtype, {"mean": mean, "scale": scale, "bias": bias})
        self.channel_axis = int(channel_axis)
        # (new tensors: the caller's arrays are never shared)
        for name, t in _buffers(mean, scale, bias, dtype).items():
            self.register_buffer(name, t.to(device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` along ``channel_axis``."""
        if not isinstance(x, torch.Tensor):  # (a numpy array: AttributeError 'dim')
            raise TypeError("the module takes a torch tensor; use the nbbn.Normalizer "
                            "itself for numpy arrays")
        if x.is_complex():  # (its real part was normalized, with torch's warning only)
            raise TypeError("the input must be a real floating or integer tensor, got a "
                            "complex one")
        if x.dtype == torch.bool:
            raise TypeError("the input must be a real floating or integer tensor, got a "
                            "bool one")
        axis = self.channel_axis
        if axis < 0:
            axis = axis + x.dim()
        if axis < 0 or axis >= x.dim():
            raise ValueError("the input has " + str(x.dim()) + " dimensions, so it has no "
                             "channel_axis=" + str(self.channel_axis))
        if x.shape[axis] != self.mean.shape[0]:  # type: ignore[union-attr]
            # (else a 1-channel input, or module, broadcast against the other silently)
            raise ValueError("the input has " + str(x.shape[axis]) + " channels along "
                             "channel_axis=" + str(self.channel_axis) + ", the module "
                             "normalizes " + str(self.mean.shape[0]))  # type: ignore[union-attr]
        shape = [1] * x.dim()
        shape[axis] = -1
        dt = self.mean.dtype  # type: ignore[union-attr]
        ct = torch.float32 if dt == torch.float16 or dt == torch.bfloat16 else dt
        mean = self.mean.view(shape).to(ct)  # type: ignore[operator]
        lo = self.mean_lo.view(shape).to(ct)  # type: ignore[operator]
        scale = self.scale.view(shape).to(ct)  # type: ignore[operator]
        bias = self.bias.view(shape).to(ct)  # type: ignore[operator]
        y = ((x.to(ct) - mean) - lo) * scale + bias
        if x.is_floating_point():
            return y.to(x.dtype)
        return y.to(dt)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """``.to()``, ``.half()``, ``.cuda()``...: a new floating dtype is checked first
        (each number within its range) and gets the mean split again (``mean_lo``)."""
        old = self.mean.dtype  # type: ignore[union-attr]
        new = fn(torch.empty(0, dtype=old, device=self.mean.device)).dtype  # type: ignore[union-attr]
        if new == old or not new.is_floating_point:  # (a move: a meta module's to_empty)
            return super()._apply(fn, recurse)
        mean = (self.mean.double() + self.mean_lo.double()).cpu().numpy()  # type: ignore[union-attr]
        scale = self.scale.double().cpu().numpy()  # type: ignore[union-attr]
        bias = self.bias.double().cpu().numpy()  # type: ignore[union-attr]
        _check_range(new, {"mean": mean, "scale": scale, "bias": bias})
        out = super()._apply(fn, recurse)
        self._assign(mean, scale, bias, new)
        return out

    def _assign(self, mean: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                dtype: torch.dtype) -> None:
        """The buffers from float64 numbers, each rounded once to ``dtype`` (torch's
        float64 to float16 cast rounds twice), the mean split again."""
        device = self.mean.device  # type: ignore[union-attr,has-type]
        new = {name: t.to(device) for name, t in _buffers(mean, scale, bias, dtype).items()}
        self.mean, self.mean_lo = new["mean"], new["mean_lo"]
        self.scale, self.bias = new["scale"], new["bias"]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,  # type: ignore[no-untyped-def]
                              missing_keys, unexpected_keys, error_msgs):
        """A state of another floating dtype (a float64 module's, loaded into a float32
        one): its ``mean + mean_lo`` split again for this dtype, and its scale and bias
        rounded once, after a range check (torch's copy kept the rounded ``mean`` and a
        ``mean_lo`` of about 0: 4e-3 of error where the module gives 1e-7)."""
        keys = [prefix + k for k in ("mean", "mean_lo", "scale", "bias")]
        given = [state_dict.get(k) for k in keys]
        dt = self.mean.dtype  # type: ignore[union-attr]
        # (assign=True keeps the state's own tensors and dtype, as torch documents)
        if not local_metadata.get("assign_to_params_buffers", False) and all(
                isinstance(t, torch.Tensor) and t.is_floating_point() and
                t.shape == self.mean.shape for t in given) and any(  # type: ignore[union-attr]
                t.dtype != dt for t in given):
            mean, lo, scale, bias = (t.detach().double().cpu().numpy() for t in given)
            try:
                _check_range(dt, {"mean": mean + lo, "scale": scale, "bias": bias})
            except ValueError as exc:  # (reported as torch reports a size mismatch: the
                error_msgs.append(f"{prefix or 'the module'}: {exc}")  # others load)
                return
            state_dict = dict(state_dict)  # (torch's copy, not changed for the caller)
            state_dict.update({prefix + name: t for name, t in
                               _buffers(mean + lo, scale, bias, dt).items()})
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        n = len(self.mean)  # type: ignore[arg-type]
        return f"num_channels={n}, channel_axis={self.channel_axis}"


def _check_range(dtype: torch.dtype, arrays: dict[str, np.ndarray], *,
                 where: str = "channels",
                 advice: str | None = None) -> None:
    """ValueError when a finite number is beyond ``dtype``'s range (an infinity in the
    buffer: NaN outputs where nbbn's are finite); an array of more than one axis is
    reported by its first axis (a layer's weight: by output channel). An infinity given
    stays one (a channel of infinite values: nbbn's outputs are not finite either; it
    was refused with the advice to use the dtype asked for)."""
    top = float(torch.finfo(dtype).max)
    if advice is None:  # (it said "torch.float32 or torch.float64" to a float32 module)
        wider = [str(t) for t in (torch.float32, torch.float64) if torch.finfo(t).max > top]
        advice = f"use a wider dtype ({' or '.join(wider)})"
    for name, v in arrays.items():
        big = np.isfinite(v) & (np.abs(v) > top)
        if big.ndim > 1:
            big = big.reshape(len(big), -1).any(axis=1)
        if big.any():
            raise ValueError(f"the {name} is beyond {dtype}'s range in {where} "
                             f"{np.flatnonzero(big)[:5].tolist()}: {advice}")


def _buffers(mean64: np.ndarray, scale64: np.ndarray, bias64: np.ndarray,
             dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A module's buffers from float64 numbers, CPU tensors of ``dtype``, each rounded
    once (torch's float64 to float16 cast rounds twice): ``mean`` rounded and
    ``mean_lo`` the rest, ``scale``, ``bias``."""
    hi = rounded_once(mean64, dtype)
    with np.errstate(invalid="ignore"):  # (an infinite mean: its rest is 0, not NaN)
        rest = np.where(np.isinf(mean64), 0.0, mean64 - hi.double().numpy())
    return {"mean": hi, "mean_lo": rounded_once(rest, dtype),
            "scale": rounded_once(scale64, dtype), "bias": rounded_once(bias64, dtype)}


def normalizer_to_torch(norm: Normalizer, dtype: torch.dtype | None = None,
                        device: Any = None) -> NormalizerModule:
    """The module of :meth:`nbbn.Normalizer.to_torch`."""
    if isinstance(norm.channel_axis, str):
        raise TypeError(
            f"this Normalizer's channel_axis is the dimension name {norm.channel_axis!r}: a "
            "torch module needs an int axis (set norm.channel_axis to the axis number first)")
    return NormalizerModule(norm.mean, norm.scale, norm.bias, norm.channel_axis, dtype, device)


def _is_bn(module: Any) -> bool:
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def check_initialized(module: torch.nn.Module, what: str) -> None:
    """ValueError for a lazy module whose parameters or buffers are not created yet."""
    if isinstance(module, torch.nn.modules.lazy.LazyModuleMixin) \
            and module.has_uninitialized_params():
        raise ValueError(
            f"{what} is an uninitialized lazy module ({type(module).__name__}): run one "
            "forward pass first so that its number of channels is known"
        )


def _float_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` (None: torch's default), or TypeError unless a floating torch dtype."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype (torch.float32, "
                        f"torch.float64, ...), got {dtype!r}")
    return dtype


def _device(device: Any) -> torch.device | None:
    """``device`` as a torch.device (None stays None), or TypeError: ``Tensor.to(1.5)``
    read a number, or a dtype passed as the device, as a dtype (float64 buffers)."""
    if device is None or isinstance(device, torch.device):
        return device
    if isinstance(device, bool) or not isinstance(device, (str, int)):
        raise TypeError(f"device must be a torch.device, a str such as 'cuda:0' or a GPU "
                        f"index, got {type(device).__name__} {device!r}")
    return torch.device(device)


def batchnorm_from_torch(module: Any, backend: str = "auto") -> BatchNorm:
    """The :class:`nbbn.BatchNorm` of :meth:`nbbn.BatchNorm.from_torch`."""
    if not _is_bn(module):
        raise TypeError("expected a torch BatchNorm1d/2d/3d or SyncBatchNorm module, "
                        f"got {type(module).__name__}")
    check_initialized(module, "module")
    has_bias = module.bias is not None
    # (the buffers exist when the module was built with track_running_stats; the flag
    # may have been set to False since, which only stops their updates)
    bn = BatchNorm(module.num_features, eps=module.eps, momentum=module.momentum,
                   affine=module.affine, track_running_stats=module.running_mean is not None,
                   channel_axis=1, backend=backend, bias=has_bias or not module.affine)
    if module.affine and module.weight is None:  # (torch's forward reads ones; nbbn's too)
        bn.weight = None
    bn.load_state_dict(module.state_dict())
    bn.track_running_stats = bool(module.track_running_stats)
    return bn.train(module.training)


def batchnorm_to_torch(bn: BatchNorm, dim: int = 2, dtype: torch.dtype | None = None,
                       device: Any = None) -> torch.nn.Module:
    """The module of :meth:`nbbn.BatchNorm.to_torch`."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim not in _TORCH_BN:
        raise (ValueError if isinstance(dim, (int, np.integer)) and not isinstance(dim, bool)
               else TypeError)(f"dim must be 1, 2 or 3 (BatchNorm1d/2d/3d), got {dim!r}")
    if bn.channel_axis != 1:
        raise ValueError(
            f"torch BatchNorm modules read channels on axis 1; this BatchNorm has "
            f"channel_axis={bn.channel_axis} (move the channel axis of your input to 1)"
        )
    kwargs: dict[str, Any] = {"device": _device(device), "dtype": dtype}
    if bn.affine and bn.bias is None:
        kwargs["bias"] = False
    state = state_tensors(bn)
    if bn.affine and "weight" not in state:  # (bn.weight = None: forward reads ones)
        state = {"weight": torch.ones(bn.num_features, dtype=torch.float64)} | state
    top = _float_dtype(dtype)
    _check_range(top, {k: v.numpy() for k, v in state.items() if v.is_floating_point()})
    module = _TORCH_BN[dim](bn.num_features, eps=bn.eps, momentum=bn.momentum,
                            affine=bn.affine, track_running_stats="running_mean" in state,
                            **kwargs)
    if top in (torch.float16, torch.bfloat16):  # (load_state_dict would round twice)
        state = {k: rounded_once(v.numpy(), top) if v.is_floating_point() else v
                 for k, v in state.items()}
    module.load_state_dict(state)
    module.track_running_stats = bool(bn.track_running_stats)
    return module.train(bn.training)


def state_tensors(bn: BatchNorm) -> dict[str, torch.Tensor]:
    """``bn``'s state dict as CPU tensors: float64 parameters and buffers, an int64
    ``num_batches_tracked`` (what torch's ``load_state_dict`` takes)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in bn.state_dict(tensors=False).items():
        out[key] = torch.from_numpy(np.array(value, copy=True))
    return out
