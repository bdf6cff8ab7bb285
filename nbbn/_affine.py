"""The per-channel affine map ``out = (x - a[c]) * s[c] + b[c]``: its parameters, its
output dtype and the checks of a caller's ``out=`` array, shared by every backend.

The normalizer is ``a = mean, s = weight / sqrt(var + eps), b = bias``; its inverse
``a = bias, s = 1 / s, b = mean``; BatchNorm's forward the same map with the batch's or
the running statistics.
"""

from __future__ import annotations

import numpy as np


def affine_scale(weight: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    """``weight / sqrt(var + eps)`` in float64; a channel with ``var + eps == 0`` gets
    ``weight`` (its standard deviation taken as 1, scikit-learn's rule for constant
    features), so ``eps=0`` maps a constant channel to ``bias`` instead of inf or NaN."""
    std = np.sqrt(np.asarray(var, np.float64) + eps)
    std[std == 0] = 1.0
    return weight / std


def batchnorm_step(mean: np.ndarray, m2: np.ndarray, n: int, weight: np.ndarray,
                   bias: np.ndarray, eps: float, running: np.ndarray | None,
                   factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BatchNorm's training step on host batch statistics (``n`` values per channel):
    ``running`` ((2, C) mean and unbiased variance, or None) updated in place with
    momentum ``factor``; returns the affine parameters ``(mean, scale, bias)`` that
    normalize with the biased variance."""
    if running is not None:
        keep = 1.0 - factor
        running[0] = keep * running[0] + factor * mean
        running[1] = keep * running[1] + factor * (m2 / (n - 1))
    return mean, affine_scale(weight, m2 / n, eps), bias


def result_dtype(dtype: np.dtype) -> np.dtype:
    """Output dtype for an input dtype: floating stays (native order), integer gives float32."""
    if dtype.kind == "f":
        return dtype.newbyteorder("=")
    return np.dtype(np.float32)


def check_out(shape: tuple[int, ...], dtype: np.dtype, writeable: bool,
              expected: tuple[int, ...], what: str) -> None:
    """Validate a caller's ``out=`` array (described by its shape, dtype and whether it
    can be written) against the input it is for; ValueError saying what was expected."""
    if tuple(shape) != tuple(expected):
        raise ValueError(f"out must have the shape of {what} {tuple(expected)}, "
                         f"got {tuple(shape)}")
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise ValueError(f"out must have a float16/32/64 dtype (bfloat16 too for a torch "
                         f"tensor), got {dtype}")
    if not writeable:
        raise ValueError("out is read-only")
