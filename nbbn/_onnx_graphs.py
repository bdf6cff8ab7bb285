"""The ONNX graphs of a per-channel affine map ``y = (x - mean) * scale + bias``, as lists
of nodes and constants (numpy only; :mod:`nbbn.onnx` turns them into an ``onnx.GraphProto``
and the skl2onnx converter into its container's nodes).

``exact`` is the graph of ``to_onnx(form="exact")``: the bias is folded into the mean in
float64 (``shift = mean - bias / scale``; an ``Add`` of the bias instead in a channel of
scale 0 or whose shift is beyond float32), the shift is split into float32 ``hi + lo``
(``hi = float32(shift)``, ``lo = float32(shift - hi)``), and the graph is ``Sub(x, hi)``,
``Sub(., lo)``, ``Mul(., float32(scale))``. Near the mean ``x - hi`` is exact (Sterbenz),
and the remaining three roundings keep the result within about 2 float32 ulp of the
float64 map (docs/sklearn.md, "ONNX"). ``batchnorm`` is one ``BatchNormalization``. The other
builders are the usual forms, kept for the accuracy table and the bench: ``subdiv``
(skl2onnx's float64 form and its ``div`` option), ``scaler`` (``ai.onnx.ml`` Scaler,
skl2onnx's float32 form), ``folded`` (``x * a + b``); ``sub_scaler`` and ``sum_mul`` are
two-node graphs with the exact form's roundings, kept for the bench (neither is faster in
onnxruntime: docs/sklearn.md, "ONNX").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Affine:
    """``y = (x - mean) * scale + bias`` per channel, float64 vectors of shape (C,)."""

    mean: np.ndarray
    scale: np.ndarray
    bias: np.ndarray

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return self.mean.shape[0]


@dataclass
class Graph:
    """Nodes ``(op_type, inputs, outputs, attributes, domain)`` and constants, named
    through ``fresh`` (a counter by default; skl2onnx's scope in its converter)."""

    fresh: Callable[[str], str]
    nodes: list[tuple[str, list[str], list[str], dict[str, Any], str]] = field(
        default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def const(self, hint: str, value: np.ndarray) -> str:
        """A new constant; returns its name."""
        name = self.fresh(hint)
        self.constants[name] = np.ascontiguousarray(value)
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None,
           domain: str = "", **attrs: Any) -> str:
        """A new node with one output; returns the output's name."""
        out = self.fresh(hint or op_type.lower())
        self.nodes.append((op_type, inputs, [out], attrs, domain))
        return out


def counter() -> Callable[[str], str]:
    """A ``fresh`` for a graph of its own: ``hint``, then ``hint_1``, ``hint_2``, ..."""
    seen: dict[str, int] = {}

    def fresh(hint: str) -> str:
        n = seen.get(hint, 0)
        seen[hint] = n + 1
        return hint if n == 0 else f"{hint}_{n}"

    return fresh


def check_range(aff: Affine, dtype: np.dtype, names: tuple[str, ...], **more: np.ndarray
                ) -> None:
    """ValueError when a constant (``aff``'s ``names``, then ``more``) overflows ``dtype``:
    in the graph it would be an infinity, and the outputs NaN or infinite where nbbn's
    own are finite. NaN passes: it is NaN in any dtype. Also a nonzero scale below
    ``dtype``'s normal range: a subnormal constant keeps few bits (91 float32 ulp at
    1e-40) and one below 1.4e-45 is 0 (outputs of 0 where nbbn's are 3e-23); except
    in a channel whose bias is far above its scale (``mean - bias / scale`` beyond
    ``dtype``'s range, where :func:`exact` keeps the bias apart: bias 1 at weight
    1e-39), whose outputs are mostly that bias and were exported exactly."""
    if np.dtype(dtype) == np.float64:
        return
    top = float(np.finfo(dtype).max)
    for name, v in [(n, getattr(aff, n)) for n in names] + list(more.items()):
        big = np.abs(v) > top
        if big.any():
            raise ValueError(f"the {name} to export is beyond {np.dtype(dtype)}'s range in "
                             f"channels {np.flatnonzero(big)[:5].tolist()}: export a float64 "
                             "model")
        small = (v != 0) & (np.abs(v) < float(np.finfo(dtype).tiny))
        if name == "scale":
            small &= ~_bias_apart(aff, dtype)
        if name == "scale" and small.any():
            raise ValueError(f"the scale to export is below {np.dtype(dtype)}'s normal range "
                             f"({np.finfo(dtype).tiny:.3g}) in channels "
                             f"{np.flatnonzero(small)[:5].tolist()} (a weight far below the "
                             "standard deviation): as a constant it would lose its precision "
                             "or be 0; export a float64 model")


def _folded(aff: Affine) -> np.ndarray:
    """The shift ``mean - bias / scale`` with the bias folded into the mean (``mean``
    where the scale is 0), in float64; infinite where it overflows."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return aff.mean - aff.bias / np.where(aff.scale == 0, 1.0, aff.scale)


def _bias_apart(aff: Affine, dtype: np.dtype) -> np.ndarray:
    """The channels whose folded shift is beyond ``dtype``'s range (a bias far above its
    scale), where :func:`exact` keeps the bias apart, its own ``Add``."""
    return np.abs(_folded(aff)) > float(np.finfo(dtype).max)


def _shaped(v: np.ndarray, cshape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return np.asarray(v).astype(dtype).reshape(cshape)


def exact(g: Graph, x: str, aff: Affine, cshape: tuple[int, ...], dtype: np.dtype) -> str:
    """The exact form in ``dtype`` (float32: split mean; float64: ``Sub(x, mean)``,
    ``Mul(., scale)``, ``Add(., bias)``); a step whose constant changes nothing is left
    out. ``x`` is of ``dtype``; returns the output's name."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return _steps(g, x, aff.mean, None, aff.scale, aff.bias, cshape, dtype)
    # The bias is kept apart (its own ``Add``) in a channel whose folded shift is beyond
    # ``dtype``'s range (a bias far above its scale: bias 1 at weight 1e-39, whose map
    # is finite; it was refused), and in a channel of scale 0 (weight 0), whose shift is
    # ``mean * 0``: 0, or NaN for a NaN mean, whose outputs nbbn's ``(x - mean) * 0 +
    # bias`` gives as NaN (a shift of 0 gave the bias). An infinite input stays NaN
    # (``inf * 0``).
    zero = aff.scale == 0
    apart = zero | _bias_apart(aff, dtype)
    shift = np.where(zero, aff.mean * 0.0, np.where(apart, aff.mean, _folded(aff)))
    bias = np.where(apart, aff.bias, 0.0)
    check_range(aff, dtype, ("scale",), mean=shift, bias=bias)
    hi = shift.astype(dtype).astype(np.float64)
    lo = shift - hi  # exact in float64: hi is shift rounded to fewer bits
    return _steps(g, x, hi, lo, aff.scale, bias, cshape, dtype)


def _steps(g: Graph, x: str, hi: np.ndarray, lo: np.ndarray | None, scale: np.ndarray,
           bias: np.ndarray, cshape: tuple[int, ...], dtype: np.dtype) -> str:
    """``Sub(x, hi)``, ``Sub(., lo)``, ``Mul(., scale)``, ``Add(., bias)``, each left out
    when its constant (in ``dtype``) is all zeros (all ones for the scale)."""
    y = x
    for op, name, v, neutral, out in (("Sub", "shift_hi", hi, 0.0, "centered_hi"),
                                      ("Sub", "shift_lo", lo, 0.0, "centered"),
                                      ("Mul", "scale", scale, 1.0, "scaled"),
                                      ("Add", "bias", bias, 0.0, "shifted")):
        if v is None:
            continue
        c = _shaped(v, cshape, dtype)
        if (c != neutral).any():
            y = g.op(op, [y, g.const(name, c)], out)
    return y


def batchnorm(g: Graph, x: str, aff: Affine, param_dtype: Any = np.float32) -> str:
    """One ``BatchNormalization`` (channels on axis 1) computing the map:
    ``mean``, ``scale`` and ``bias`` as they are, ``var = 1`` and ``epsilon = 0``, so
    ``1 / sqrt(var + epsilon)`` is exactly 1 in any runtime; the parameters are
    ``param_dtype`` (float32 for a float16 input, as opset 15 allows)."""
    c = aff.channels
    ins = [x, g.const("bn_scale", aff.scale.astype(param_dtype)),
           g.const("bn_bias", aff.bias.astype(param_dtype)),
           g.const("bn_mean", aff.mean.astype(param_dtype)),
           g.const("bn_var", np.ones(c, param_dtype))]
    return g.op("BatchNormalization", ins, "normalized", epsilon=0.0)


# ---------------------------------------------------------------- the usual forms
def subdiv(g: Graph, x: str, aff: Affine, cshape: tuple[int, ...], dtype: np.dtype) -> str:
    """``Sub(x, mean)``, ``Div(., std)`` with ``std = 1 / scale`` (bias 0 assumed)."""
    y = g.op("Sub", [x, g.const("mean", _shaped(aff.mean, cshape, dtype))])
    return g.op("Div", [y, g.const("std", _shaped(1.0 / aff.scale, cshape, dtype))])


def scaler(g: Graph, x: str, aff: Affine) -> str:
    """``ai.onnx.ml`` Scaler ``(x - offset) * scale`` (2-d input, bias 0 assumed)."""
    return g.op("Scaler", [x], domain="ai.onnx.ml",
                offset=aff.mean.astype(np.float32).tolist(),
                scale=aff.scale.astype(np.float32).tolist())


def folded(g: Graph, x: str, aff: Affine, cshape: tuple[int, ...], dtype: np.dtype) -> str:
    """``Mul(x, scale)``, ``Add(., bias - mean * scale)`` (the folded form)."""
    y = g.op("Mul", [x, g.const("scale", _shaped(aff.scale, cshape, dtype))])
    b = aff.bias - aff.mean * aff.scale
    return g.op("Add", [y, g.const("offset", _shaped(b, cshape, dtype))])


def exact_div(g: Graph, x: str, aff: Affine, cshape: tuple[int, ...], dtype: np.dtype) -> str:
    """The issue's split-mean form ``Sub(x, hi)``, ``Sub(., lo)``, ``Div(., std)`` (bias 0
    assumed): the same passes as :func:`exact`, a little less accurate (``Div`` by a
    rounded std puts its largest relative errors where the output's ulp is smallest)."""
    hi = aff.mean.astype(dtype)
    y = g.op("Sub", [x, g.const("shift_hi", _shaped(hi, cshape, dtype))])
    y = g.op("Sub", [y, g.const("shift_lo", _shaped(aff.mean - hi, cshape, dtype))])
    return g.op("Div", [y, g.const("std", _shaped(1.0 / aff.scale, cshape, dtype))])


def sub_batchnorm(g: Graph, x: str, aff: Affine) -> str:
    """Two passes instead of three: ``Sub(x, hi)``, then one ``BatchNormalization`` with
    ``bias = float32(-lo * scale)`` (bias 0 assumed). onnxruntime computes it as
    ``(x - hi) * scale + bias``, which rounds ``(x - hi) * scale`` before the ``lo`` term
    is added: where they cancel (x next to the mean) the error grows past 2 ulp."""
    hi = aff.mean.astype(np.float32)
    t = g.op("Sub", [x, g.const("shift_hi", hi)])
    nb = Affine(np.zeros_like(aff.mean), aff.scale, -(aff.mean - hi) * aff.scale)
    return batchnorm(g, t, nb)



def _split(aff: Affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 ``hi``, ``lo`` and ``scale`` of the split mean (bias 0 assumed)."""
    hi = aff.mean.astype(np.float32)
    return hi, (aff.mean - hi).astype(np.float32), aff.scale.astype(np.float32)


def sub_scaler(g: Graph, x: str, aff: Affine) -> str:
    """Two nodes computing what :func:`exact` computes: ``Sub(x, hi)``, then ``ai.onnx.ml``
    Scaler with ``offset = lo`` and ``scale``, which onnxruntime evaluates per element as
    ``float32((t - offset) * scale)``: bit for bit the three-node graph, but one call per
    element through a ``std::function`` with an index modulo, so slower (docs/sklearn.md).
    2-d ``(N, C)`` input only (onnxruntime takes the features from axis 1 and indexes them
    as if they were last); bias 0 assumed."""
    hi, lo, scale = _split(aff)
    t = g.op("Sub", [x, g.const("shift_hi", hi)], "centered_hi")
    return g.op("Scaler", [t], domain="ai.onnx.ml", offset=lo.tolist(), scale=scale.tolist())


def sum_mul(g: Graph, x: str, aff: Affine, cshape: tuple[int, ...], dtype: np.dtype) -> str:
    """Two nodes computing what :func:`exact` computes: ``Sum(x, -hi, -lo)``, then
    ``Mul(., scale)``. onnxruntime adds a variadic ``Sum``'s inputs left to right, one pass
    each (``(x + -hi) + -lo``, which rounds as ``(x - hi) - lo``), without its thread pool:
    the same three passes (docs/sklearn.md). Bias 0 assumed."""
    hi, lo, scale = _split(aff)
    t = g.op("Sum", [x, g.const("neg_shift_hi", _shaped(-hi, cshape, dtype)),
                     g.const("neg_shift_lo", _shaped(-lo, cshape, dtype))], "centered")
    return g.op("Mul", [t, g.const("scale", _shaped(scale, cshape, dtype))])
