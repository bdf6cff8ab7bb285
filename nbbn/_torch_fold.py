"""Folding per-channel affine maps into torch's Conv/Linear layers, in float64:
``fold_normalizer`` (a normalizer before the layer) and ``fuse_bn`` (a BatchNorm after it).

Both build a new layer of the original's class, dtype and device; the arithmetic runs
on float64 copies of the weights and is rounded once to the layer's dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._affine import affine_scale
from ._torch_arrays import rounded_once
from ._torch_modules import (
    BatchNorm,
    Normalizer,
    _check_range,
    _is_bn,
    check_initialized,
    torch,
)
from ._wording import check_flag

__all__ = ["fold_normalizer", "fuse_bn"]

_CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def _check_layer(layer: Any) -> None:
    if type(layer) not in (*_CONV, torch.nn.Linear):
        raise TypeError("expected a torch.nn.Conv1d/2d/3d or Linear layer, "
                        f"got {type(layer).__name__}")
    check_initialized(layer, "layer")


def _f64(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def _new_layer(layer: Any, weight: np.ndarray, bias: np.ndarray) -> Any:
    """A copy of ``layer``'s configuration with the given float64 weight and bias."""
    w = layer.weight
    # a number finite in float64 but beyond the layer's dtype would be stored as inf
    # (inf or NaN outputs where the unfused layers give finite ones: a float16
    # BatchNorm of running variance 1e-6, weight 100, eps 0); non-finite ones are the
    # layer's own
    _check_range(w.dtype, {f"folded {k}": np.where(np.isfinite(v), v, 0.0)
                           for k, v in (("weight", weight), ("bias", bias))},
                 where="output channels",
                 advice="it would be stored as inf; fold in a wider dtype (.float() on both "
                        "modules first); nothing was changed")
    kw: dict[str, Any] = {"device": w.device, "dtype": w.dtype}
    if isinstance(layer, torch.nn.Linear):
        new = torch.nn.Linear(layer.in_features, layer.out_features, bias=True, **kw)
    else:
        new = type(layer)(layer.in_channels, layer.out_channels, layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                          groups=layer.groups, bias=True, padding_mode=layer.padding_mode, **kw)
    with torch.no_grad():
        new.weight.copy_(rounded_once(weight, w.dtype))
        new.bias.copy_(rounded_once(bias, w.dtype))
    new.weight.requires_grad_(w.requires_grad)
    # (a frozen layer stays frozen: its new bias trains only if its bias, or its weight
    # when it had none, did)
    old_bias = layer.bias if layer.bias is not None else w
    new.bias.requires_grad_(old_bias.requires_grad)
    return new.train(layer.training)


def _has_zero_padding(layer: Any) -> bool:
    if isinstance(layer, torch.nn.Linear) or layer.padding_mode != "zeros":
        return False
    if isinstance(layer.padding, str):
        return layer.padding == "same" and any(k > 1 for k in layer.kernel_size)
    return any(p > 0 for p in layer.padding)


def fold_normalizer(layer: Any, normalizer: Any, *, strict: bool = True) -> Any:
    """A new layer equal to ``layer(normalizer(x))`` that takes the raw input ``x``.

    With ``normalizer`` the map ``n(x) = (x - mean) * scale + bias`` on the layer's input
    channels, the new weight is ``W * scale`` (per input channel) and the new bias
    ``b + sum(W * (bias - scale * mean))``, computed in float64 and rounded once to the
    layer's dtype.

    Padding caveat: a Conv with zero padding pads the *normalized* input with zeros, that
    is the raw value ``mean - bias / scale`` per channel; the folded conv pads the *raw*
    input with zeros. The outputs differ wherever the kernel overlaps the padding (the
    border). Non-zero padding modes ("reflect", "replicate", "circular") copy input values,
    which commutes with the per-channel map, so they fold exactly.

    Parameters
    ----------
    layer : torch.nn.Conv1d, Conv2d, Conv3d or Linear
        The layer that reads the normalized input (a Conv's input channels on axis 1, a
        Linear's features on the last axis).
    normalizer : nbbn.Normalizer or nbbn.BatchNorm
        With ``channel_axis=1`` for a Conv (``1`` or ``-1`` for a Linear) and as many
        channels as the layer's inputs (a BatchNorm: its eval-mode map,
        ``to_normalizer()``).
    strict : bool, default True
        Refuse (ValueError) a Conv with zero padding unless the normalizer maps 0 to 0;
        ``strict=False`` folds anyway (exact away from the borders only).

    Returns
    -------
    torch.nn.Module
        A new layer of the same class, dtype, device and mode, with a bias.
    """
    _check_layer(layer)
    strict = check_flag(strict, "strict")  # (strict=None turned the check off)
    if isinstance(normalizer, BatchNorm):
        normalizer = normalizer.to_normalizer()  # its eval-mode map
    elif not isinstance(normalizer, Normalizer):
        raise TypeError(
            f"normalizer must be an nbbn.Normalizer or nbbn.BatchNorm, got "
            f"{type(normalizer).__name__}" + (
                " (a torch BatchNorm: nbbn.BatchNorm.from_torch(bn) first)" if _is_bn(normalizer)
                else ""))
    is_linear = isinstance(layer, torch.nn.Linear)
    n_in = layer.in_features if is_linear else layer.in_channels
    _check_axis(normalizer.channel_axis, layer, "the normalizer", "reads")
    if normalizer.num_channels != n_in:
        raise ValueError(f"the normalizer has {normalizer.num_channels} channels, the layer "
                         f"{n_in} input channels")
    scale = np.asarray(normalizer.scale, np.float64)
    shift = normalizer.bias - scale * normalizer.mean  # n(x) = scale * x + shift
    if strict and _has_zero_padding(layer) and np.any(shift != 0):
        raise ValueError(
            "the conv pads with zeros: after folding the padded zeros are raw zeros, which "
            "the normalizer maps to bias - scale * mean, not to 0, so the border outputs "
            "would differ. Use a padding_mode other than 'zeros', padding=0, or "
            "strict=False to fold anyway (exact away from the borders)"
        )
    w = _f64(layer.weight)
    assert w is not None
    b = _f64(layer.bias)
    b = np.zeros(w.shape[0]) if b is None else b
    groups = 1 if is_linear else layer.groups
    per_group = n_in // groups
    out_per_group = w.shape[0] // groups
    # input channel read by (output o, weight column j): (o // out_per_group) * per_group + j
    cols = (np.arange(w.shape[0])[:, None] // out_per_group) * per_group + np.arange(per_group)
    extra = (1,) * (w.ndim - 2)
    s = scale[cols].reshape(w.shape[:2] + extra)
    t = shift[cols].reshape(w.shape[:2] + extra)
    new_w = w * s
    new_b = b + (w * t).reshape(w.shape[0], -1).sum(axis=1)
    return _new_layer(layer, new_w, new_b)


def _check_axis(axis: Any, layer: Any, what: str, verb: str) -> None:
    """ValueError unless ``axis`` is where ``layer`` reads (or writes) its channels: axis
    1 of a Conv (or its negative twin: -3 for a Conv2d's (N, C, H, W)), the last axis (1
    or -1) of a Linear's (N, C) features."""
    is_linear = isinstance(layer, torch.nn.Linear)
    ndim = layer.weight.dim()  # (a Conv's input and output have as many axes as its weight)
    given = axis
    if not is_linear and isinstance(axis, int) and not isinstance(axis, bool) \
            and -ndim <= axis < 0:
        axis += ndim
    if axis not in ((1, -1) if is_linear else (1,)):
        raise ValueError(
            f"{what} has channel_axis={given!r}, but {type(layer).__name__} {verb} "
            + ("features on the last axis (use 1 or -1)" if is_linear
               else "channels on axis 1 (use channel_axis=1)"))


def fuse_bn(layer: Any, bn: Any) -> Any:
    """A new layer equal to ``bn(layer(x))`` with ``bn`` in eval mode, computed in float64.

    ``W' = W * s`` and ``b' = (b - running_mean) * s + beta`` per output channel, with
    ``s = gamma / sqrt(running_var + eps)`` (``s = gamma`` where ``running_var + eps`` is
    0, possible with ``eps=0``: nbbn's scale-1 rule, where torch's module would divide
    by 0). (torch's ``fuse_conv_bn_weights`` does the same in the parameters' dtype.)

    Parameters
    ----------
    layer : torch.nn.Conv1d, Conv2d, Conv3d or Linear
        The layer before the BatchNorm.
    bn : torch BatchNorm1d/2d/3d, SyncBatchNorm, or nbbn.BatchNorm
        In eval mode, with running statistics, ``num_features`` equal to the layer's
        output channels.

    Returns
    -------
    torch.nn.Module
        A new layer of the layer's class, dtype, device and mode, with a bias.
    """
    _check_layer(layer)
    if _is_bn(bn):
        check_initialized(bn, "bn")
        mean, var = _f64(bn.running_mean), _f64(bn.running_var)
        gamma, beta = _f64(bn.weight), _f64(bn.bias)
    elif isinstance(bn, BatchNorm):
        _check_axis(bn.channel_axis, layer, "bn", "writes")
        mean, var = bn.running_mean, bn.running_var
        gamma, beta = bn._affine_params()  # (checked as bn(x) checks them: any array kind)
    else:
        raise TypeError(f"expected a BatchNorm module, got {type(bn).__name__}")
    if bn.training:
        raise ValueError("fuse_bn folds the eval-mode BatchNorm (running statistics): "
                         "call bn.eval() first")
    if mean is None or var is None:
        raise ValueError("bn has track_running_stats=False: no running statistics to fold")
    w = _f64(layer.weight)
    assert w is not None
    if bn.num_features != w.shape[0]:
        raise ValueError(f"bn has {bn.num_features} channels, the layer {w.shape[0]} outputs")
    c = w.shape[0]
    gamma = np.ones(c) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros(c) if beta is None else np.asarray(beta, np.float64)
    s = affine_scale(gamma, var, bn.eps)  # (var + eps == 0, with eps=0: scale gamma)
    b = _f64(layer.bias)
    b = np.zeros(c) if b is None else b
    new_w = w * s.reshape((c,) + (1,) * (w.ndim - 1))
    new_b = (b - mean) * s + beta
    return _new_layer(layer, new_w, new_b)
