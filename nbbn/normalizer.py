"""``Normalizer``: the frozen inference-mode map ``(x - mean) / sqrt(var + eps) * w + b``."""

from __future__ import annotations

import math

import numpy as np

from . import backends
from ._layout import canonical, channel_vector, check_axis


def result_dtype(dtype: np.dtype) -> np.dtype:
    """Output dtype for an input dtype: floating stays (native order), integer gives float32."""
    if dtype.kind == "f":
        return dtype.newbyteorder("=")
    return np.dtype(np.float32)


def check_eps(eps, *, strict: bool) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number, got {type(eps).__name__}") from None
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"eps must be finite and {bound}, got {eps!r}")
    return value


class Normalizer:
    """Apply frozen per-channel statistics: ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    The arithmetic is float64 whatever the input dtype, with the mean subtracted
    before scaling, and the result is rounded once to the output dtype; so the output
    is within an ulp or two of a float64 computation even when |mean| >> std.

    Parameters
    ----------
    mean, var : array_like, shape (C,)
        Per-channel mean and (biased or unbiased, your choice) variance; var >= 0.
    eps : float, default 1e-5
        Added to the variance; must be >= 0.
    weight, bias : array_like, shape (C,), optional
        Affine parameters (default 1 and 0).
    channel_axis : int, default 1
        The channel axis of the arrays this normalizer is applied to.
    backend : {"auto", "cpu", "cuda"}, default "auto"

    Examples
    --------
    >>> import numpy as np, nbbn
    >>> norm = nbbn.Normalizer([1.0, 2.0], [4.0, 1.0], eps=0.0)
    >>> norm(np.array([[3.0, 2.0]]))
    array([[1., 0.]])
    """

    def __init__(self, mean, var, *, eps: float = 1e-5, weight=None, bias=None,
                 channel_axis: int = 1, backend: str = "auto") -> None:
        mean = channel_vector(mean, None, "mean")
        nchan = mean.shape[0]
        var = channel_vector(var, nchan, "var")
        if (var < 0).any():
            bad = np.flatnonzero(var < 0)[:5].tolist()
            raise ValueError(f"var must be >= 0, got negative values in channels {bad}")
        self.eps = check_eps(eps, strict=False)
        self.mean = mean.copy()
        self.var = var.copy()
        self.weight = np.ones(nchan) if weight is None else channel_vector(weight, nchan, "weight")
        self.bias = np.zeros(nchan) if bias is None else channel_vector(bias, nchan, "bias")
        self.channel_axis = check_axis(channel_axis)
        self.backend = backends.check_name(backend)
        self.scale = affine_scale(self.weight, self.var, self.eps)
        with np.errstate(divide="ignore"):
            self._inv_scale = 1.0 / self.scale
        self._device_params: dict = {}  # CUDA backend: parameters kept on the device

    @property
    def num_channels(self) -> int:
        return self.mean.shape[0]

    def __call__(self, x, out=None):
        """Normalize ``x``; ``out`` (same shape, floating dtype) may be ``x`` itself."""
        return self._apply(x, out, self.mean, self.scale, self.bias, "x")

    def inverse(self, y, out=None):
        """Undo the normalization: ``x = (y - bias) / scale + mean``."""
        return self._apply(y, out, self.bias, self._inv_scale, self.mean, "y")

    def _apply(self, x, out, a, s, b, what):
        backend = backends.resolve(self.backend, x)
        if backend.name == "cuda":
            return self._apply_device(backend, x, out, a, s, b, what)
        can = canonical(x, self.channel_axis, what)
        self._check_channels(can.channels, what)
        out = prepare_out(out, can.array, what)
        if can.size:
            backend.affine(can, a, s, b, out)
        return out

    def _check_channels(self, nchan: int, what: str) -> None:
        if nchan != self.num_channels:
            raise ValueError(
                f"{what} has {nchan} channels along channel_axis={self.channel_axis}, "
                f"but the normalizer has {self.num_channels}"
            )

    def _apply_device(self, backend, x, out, a, s, b, what):
        """The map on the GPU; the output is of the input's kind (numpy for numpy input)."""
        can = backend.canonical(x, self.channel_axis, what)
        self._check_channels(can.channels, what)
        target, dev = backend.prepare_out(out, can, result_dtype(can.dtype), what)
        if can.size:
            params = self._device_params.get(what)
            if params is None:  # uploaded once per direction, reused by every call
                params = self._device_params[what] = backend.prepare_params(a, s, b)
            backend.affine(can, params, dev)
        return backend.result(target, dev, can)

    def __repr__(self) -> str:
        return (f"Normalizer(num_channels={self.num_channels}, eps={self.eps}, "
                f"channel_axis={self.channel_axis})")


def affine_scale(weight: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    """``weight / sqrt(var + eps)`` in float64 (inf where var + eps is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return weight / np.sqrt(var + eps)


def prepare_out(out, x: np.ndarray, what: str = "x") -> np.ndarray:
    """Validate a user's ``out=`` array, or allocate one of the default result dtype."""
    if out is None:
        return np.empty(x.shape, result_dtype(x.dtype))
    if not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"out must have the shape of {what} {x.shape}, got {out.shape}")
    if out.dtype.kind != "f" or out.dtype.itemsize not in (2, 4, 8):
        raise ValueError(f"out must have a float16/32/64 dtype, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def normalize(x, mean, var, weight=None, bias=None, *, eps: float = 1e-5,
              channel_axis: int = 1, out=None, backend: str = "auto"):
    """One-shot ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel.

    See :class:`Normalizer` for the parameters and the numerics.
    """
    norm = Normalizer(mean, var, eps=eps, weight=weight, bias=bias,
                      channel_axis=channel_axis, backend=backend)
    return norm(x, out=out)
