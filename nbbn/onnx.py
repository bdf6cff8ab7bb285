"""ONNX export of nbbn's normalizers: :func:`to_onnx` and the skl2onnx converter.

``import nbbn`` does not import this module; it needs the ``onnx`` extra
(``pip install "nbbn[onnx]"``: onnx, onnxruntime, skl2onnx), imported on first use.

The usual ONNX forms of ``(x - mean) / std`` (``Sub``/``Div``, ``ai.onnx.ml`` Scaler,
``BatchNormalization``, the folded ``x * a + b``) round the mean to float32 and lose
accuracy as mean/std grows: about 5e-4 absolute at mean/std 1e4, 3e-3 or worse at 1e6.
``form="exact"`` splits the mean into a float32 ``hi + lo`` pair and subtracts both
before scaling, which keeps every output within about 2 float32 ulp of the float64
result (up to 2.7 measured, at mean/std near 1; docs/sklearn.md, "ONNX", has the
measured table and the cases above 2 ulp).
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from . import __version__
from ._layout import check_axis, normalize_axis
from ._onnx_graphs import Affine, Graph, batchnorm, check_range, counter, exact
from ._shards_zarr_h5 import import_extra
from .batchnorm import BatchNorm
from .normalizer import Normalizer

__all__ = ["FORMS", "register_skl2onnx", "to_onnx"]

FORMS = ("exact", "batchnorm")
MIN_OPSET = 15  # Shape(start=...) and BatchNormalization's float32 parameters of a float16 x
_DTYPES = {np.dtype(np.float16): "FLOAT16", np.dtype(np.float32): "FLOAT",
           np.dtype(np.float64): "DOUBLE"}


def _onnx():
    return import_extra("onnx", "onnx", "ONNX export")


# ---------------------------------------------------------------- what is exported
def affine_of(obj) -> tuple[Affine, int | str]:
    """The map ``y = (x - mean) * scale + bias`` of a :class:`~nbbn.Normalizer`, a
    :class:`~nbbn.BatchNorm` in eval mode or a fitted scikit-learn-style
    ``StandardScaler`` (``mean_``, ``scale_``, ``with_mean``, ``with_std``; nbbn's or
    scikit-learn's), and the object's channel axis. TypeError or ValueError otherwise."""
    if isinstance(obj, BatchNorm):
        if obj.training:
            raise ValueError("the BatchNorm is in training mode, whose output uses each "
                             "batch's statistics; call .eval() before exporting it")
        # (eval mode reads the running buffers whenever they exist, as torch: a module
        # whose track_running_stats was set to False after training has them)
        if obj.running_mean is None:
            raise ValueError("the BatchNorm was built with track_running_stats=False and "
                             "has no running statistics: in eval mode it uses each batch's "
                             "statistics, which a fixed graph cannot hold")
        obj = obj.to_normalizer()
    if isinstance(obj, Normalizer):
        aff = Affine(obj.mean.copy(), obj.scale.copy(), obj.bias.copy())
        axis = obj.channel_axis
    elif all(hasattr(obj, a) for a in ("with_mean", "with_std", "transform")):
        if not hasattr(obj, "n_features_in_"):
            raise _not_fitted(f"this {type(obj).__name__} is not fitted yet: call fit first")
        c = int(obj.n_features_in_)
        for flag, name in (("with_mean", "mean_"), ("with_std", "scale_")):
            if getattr(obj, flag) and getattr(obj, name, None) is None:  # (set_params)
                raise ValueError(f"this {type(obj).__name__} has {flag}=True but was fitted "
                                 f"with {flag}=False ({name} is None): call fit again")
        mean = np.asarray(obj.mean_, np.float64) if obj.with_mean else np.zeros(c)
        scale = 1.0 / np.asarray(obj.scale_, np.float64) if obj.with_std else np.ones(c)
        aff = Affine(mean.reshape(c), scale.reshape(c), np.zeros(c))
        axis = check_axis(getattr(obj, "channel_axis", -1))
    else:
        raise TypeError("to_onnx exports an nbbn.Normalizer, an nbbn.BatchNorm in eval mode "
                        "or a fitted StandardScaler (nbbn.sklearn's or scikit-learn's), "
                        f"got {type(obj).__name__}")
    for name in ("mean", "scale", "bias"):  # NaN (an all-NaN feature) exports as it is
        v = getattr(aff, name)
        if np.isinf(v).any():
            bad = np.flatnonzero(np.isinf(v))[:5].tolist()
            raise ValueError(f"the {name} to export is infinite in channels {bad}: the "
                             "graph would give NaN where nbbn gives an infinity")
    return aff, axis


def _check_args(dtype, opset, form) -> tuple[np.dtype, int]:
    try:  # (np.dtype(None) is float64: None is refused, not read as that)
        dt = None if dtype is None else np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in _DTYPES:
        got = repr(dtype) if dt is None else str(dt)
        raise TypeError(f"dtype must be float16, float32 or float64, got {got}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    try:
        if isinstance(opset, (bool, np.bool_)):
            raise TypeError
        opset = operator.index(opset)
    except TypeError:
        raise TypeError(f"opset must be an int, got {type(opset).__name__}") from None
    top = _onnx().defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset must be between {MIN_OPSET} and {top} (this onnx package's "
                         f"newest), got {opset}")
    return dt, opset


def _default_ndim(obj, axis: int) -> int:
    """The input rank when ``ndim`` is not given: 4 for a Normalizer or BatchNorm
    (images), 2 for a scaler whose features are axis 1 of 2-d data. A scaler fitted
    with another ``channel_axis`` was fitted on N-d data whose rank it does not record
    (``n_features_in_`` is the channel count; ``partial_fit`` takes batches of any
    rank): ValueError naming ``ndim`` (ndim=2 put the features of channel_axis=-2 on
    axis 0, the samples axis, silently, and refused channel_axis=2 as out of range)."""
    if isinstance(obj, (BatchNorm, Normalizer)):
        return 4
    if axis in (0, 1, -1):  # (0: an axis given as channel_axis=0, the same at any rank)
        return 2
    raise ValueError(
        f"the {type(obj).__name__}'s features are on channel_axis={axis}, not axis 1 of "
        "2-d input (to_onnx's default ndim=2 for a scaler), and a scaler does not record the "
        "rank of the data it was fitted on: pass ndim, the rank of the model's input "
        f"(at least {axis + 1 if axis >= 0 else 1 - axis} for channel_axis={axis}, "
        "axis 0 being the samples)")


# ---------------------------------------------------------------- layouts
def _batchnorm_graph(g: Graph, x: str, aff: Affine, p: int, ndim: int,
                     param_dtype: np.dtype) -> str:
    """BatchNormalization wants (N, C, ...): axis 1 as it is, a last axis through a
    ``(-1, C)`` view of the input and back (Reshape: no copy in onnxruntime)."""
    if p == 1:
        return batchnorm(g, x, aff, param_dtype)
    if p == ndim - 1:
        rows = g.op("Reshape", [x, g.const("rows_shape", np.array([-1, aff.channels], np.int64))],
                    "rows")
        # allowzero: a 0 in the input's shape is a size 0, not "copy this dimension"
        return g.op("Reshape", [batchnorm(g, rows, aff, param_dtype),
                                g.op("Shape", [x], "input_shape")], "unrows", allowzero=1)
    raise ValueError("form='batchnorm' needs the channels on axis 1 (N, C, ...) or on the "
                     f"last axis, got channel_axis={p} of {ndim}-d input")


# ---------------------------------------------------------------- public
def to_onnx(obj, *, channel_axis: int | None = None, ndim: int | None = None,
            dtype: Any = np.float32, opset: int = 17, form: str = "exact"):
    """Export a normalizer as an ONNX model: ``y = (x - mean) / std * weight + bias``.

    Parameters
    ----------
    obj : Normalizer, BatchNorm or StandardScaler
        An :class:`nbbn.Normalizer`, an :class:`nbbn.BatchNorm` in eval mode, or a fitted
        ``nbbn.sklearn.StandardScaler`` (scikit-learn's own ``StandardScaler`` works too).
    channel_axis : int, optional
        The channel axis of the model's input; default: the object's (-1 for a scaler
        without one).
    ndim : int, optional
        The input's rank (default: 2 for a scaler, 4 for a Normalizer or BatchNorm:
        images, (N, C, H, W) or (N, H, W, C)); required for a scaler whose features are
        not axis 1 or -1 (it does not record the rank of the data it was fitted on). The
        sizes of every axis but the channel axis are dynamic; the runtime checks the
        channel count.
    dtype : {float32, float16, float64}, default float32
        The model's input and output type. A float16 model computes in float32 inside
        (``Cast`` in and out; ``form="batchnorm"``: a float16 BatchNormalization with
        float32 parameters), a float64 model in float64.
    opset : int, default 17
        The ``ai.onnx`` opset (15 or newer).
    form : {"exact", "batchnorm"}, default "exact"
        "exact": ``Sub(x, hi)``, ``Sub(., lo)``, ``Mul(., scale)`` with the bias folded
        into the mean in float64 and the mean split into float32 ``hi + lo``: within about
        2 float32 ulp of the float64 result at any mean/std (measured: at most 2.11 from
        mean/std 1e2 up, at the inputs next to the mean; up to 2.7 at mean/std 0.5 to 10,
        where ``x - hi`` is rounded too; see the docs). Two-node forms with the same
        roundings exist (``Sub`` then ``ai.onnx.ml`` Scaler, ``Sum`` then ``Mul``) but
        are not faster in onnxruntime (docs/sklearn.md, "Speed"). "batchnorm": one
        ``BatchNormalization`` (``var = 1``, ``epsilon = 0``) for runtimes that fuse it
        into a preceding convolution; it rounds the mean to float32 (its error grows with
        mean/std, see the docs' table); channels on axis 1 or last only.

    Returns
    -------
    onnx.ModelProto
        A checked model with input ``"x"`` and output ``"y"``.

    Raises
    ------
    MissingExtraError
        The onnx package is not installed (``pip install "nbbn[onnx]"``).

    Examples
    --------
    >>> import numpy as np, nbbn, nbbn.onnx
    >>> norm = nbbn.Normalizer([1e6 + 0.1, 2.0], [4.0, 1.0], eps=0.0, channel_axis=-1)
    >>> model = nbbn.onnx.to_onnx(norm)
    >>> [n.op_type for n in model.graph.node]
    ['Sub', 'Sub', 'Mul']
    """
    onnx = _onnx()
    helper = onnx.helper
    dt, opset = _check_args(dtype, opset, form)
    aff, own_axis = affine_of(obj)
    axis = own_axis if channel_axis is None else check_axis(channel_axis)
    if isinstance(axis, str):
        raise TypeError(f"the {type(obj).__name__}'s channel_axis is the dimension name "
                        f"{axis!r}: an ONNX graph needs the axis number (pass channel_axis=N)")
    default = ndim is None
    if ndim is None:
        ndim = _default_ndim(obj, axis)
    if isinstance(ndim, bool) or not isinstance(ndim, (int, np.integer)):
        raise TypeError(f"ndim must be a positive int, got {type(ndim).__name__} {ndim!r}")
    if ndim < 1:
        raise ValueError(f"ndim must be a positive int, got {ndim!r}")
    ndim = int(ndim)
    try:
        p = normalize_axis(axis, ndim)
    except ValueError as e:
        if not default:
            raise
        least = axis + 1 if axis >= 0 else -axis
        raise ValueError(f"{e}; ndim={ndim} is to_onnx's default for a "
                         f"{type(obj).__name__}: pass ndim, the rank of the model's input "
                         f"(at least {least} for channel_axis={axis})") from None
    g = Graph(counter())
    g.fresh("x")  # the names of the input and output are taken
    g.fresh("y")
    x = "x"
    compute = np.dtype(np.float32) if dt == np.float16 else dt
    if form == "batchnorm":  # (a float16 model: float16 x, float32 parameters)
        check_range(aff, compute, ("mean", "scale", "bias"))
        y = _batchnorm_graph(g, x, aff, p, ndim, compute)
    else:
        if compute != dt:
            x = g.op("Cast", [x], "x_float32", to=onnx.TensorProto.FLOAT)
        y = exact(g, x, aff, (aff.channels,) + (1,) * (ndim - p - 1), compute)
        if compute != dt:
            y = g.op("Cast", [y], "y_float16", to=onnx.TensorProto.FLOAT16)
    if g.nodes and g.nodes[-1][2] == [y]:
        g.nodes[-1] = (*g.nodes[-1][:2], ["y"], *g.nodes[-1][3:])
    else:  # nothing to compute: an identity map
        g.nodes.append(("Identity", [y], ["y"], {}, ""))
    elem = getattr(onnx.TensorProto, _DTYPES[dt])
    shape = [aff.channels if i == p else ("N" if i == 0 else f"d{i}") for i in range(ndim)]
    nodes = [helper.make_node(op, ins, outs, name=f"{op}_{i}", domain=dom or None, **attrs)
             for i, (op, ins, outs, attrs, dom) in enumerate(g.nodes)]
    graph = helper.make_graph(
        nodes, f"nbbn_{form}",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)],
        [onnx.numpy_helper.from_array(v, k) for k, v in g.constants.items()],
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="nbbn",
                              producer_version=__version__,
                              doc_string=f"nbbn.onnx.to_onnx(form={form!r}) of {obj!r}")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------- skl2onnx
def _convert(scope, op, container) -> None:
    """skl2onnx converter: the exact graph in the output's float type (float64: ``Sub``,
    ``Mul`` in float64). Integer inputs are cast to it, and several inputs (skl2onnx
    gives a DataFrame one per column) are cast and joined along the features first, as
    skl2onnx's own scaler converter does."""
    from skl2onnx.common.data_types import guess_numpy_type, guess_proto_type

    aff, axis = affine_of(op.raw_operator)
    if axis not in (-1, 1):
        raise ValueError(f"a pipeline's data are 2-d (samples, features): channel_axis must "
                         f"be -1 or 1, got {axis}")
    _check_input_shapes(op.inputs, aff.channels, type(op.raw_operator).__name__)
    dt = np.dtype(guess_numpy_type(op.outputs[0].type))
    dt = dt if dt == np.float64 else np.dtype(np.float32)
    proto = guess_proto_type(op.outputs[0].type)
    g = Graph(scope.get_unique_variable_name)
    xs = []
    for v in op.inputs:
        x = v.full_name
        if guess_proto_type(v.type) != proto:
            x = g.op("Cast", [x], "cast", to=proto)
        xs.append(x)
    x = xs[0] if len(xs) == 1 else g.op("Concat", xs, "features", axis=1)
    y = exact(g, x, aff, (aff.channels,), dt)
    for name, v in g.constants.items():
        container.add_initializer(name, proto, list(v.shape), v.ravel().tolist())
    for i, (op_type, ins, outs, attrs, dom) in enumerate(g.nodes):
        if i == len(g.nodes) - 1:
            outs = [op.outputs[0].full_name]
        container.add_node(op_type, ins, outs, op_domain=dom,
                           name=scope.get_unique_operator_name(op_type), **attrs)
    if not g.nodes:
        container.add_node("Identity", [y], [op.outputs[0].full_name],
                           name=scope.get_unique_operator_name("Identity"))


def _check_input_shapes(inputs, channels: int, name: str) -> None:
    """ValueError unless skl2onnx's inputs are 2-d and their known widths sum to the
    fitted features: the converter's (C,) constants broadcast along the last axis, so
    (N, C, H, W) input fitted with channel_axis=1 gave wrong numbers, silently, where W
    was C (nbbn.onnx.to_onnx exports N-d models)."""
    shapes = [getattr(v.type, "shape", None) for v in inputs]
    for shape in shapes:
        if shape is not None and len(shape) != 2:
            raise ValueError(f"skl2onnx converts {name} for 2-d (samples, features) input, "
                             f"got a {len(shape)}-d input {list(shape)}: export N-d models "
                             "with nbbn.onnx.to_onnx(scaler, ndim=...)")
    widths = [None if shape is None else shape[1] for shape in shapes]
    known = [int(w) for w in widths if isinstance(w, (int, np.integer))]
    if len(known) == len(widths) and sum(known) != channels:
        raise ValueError(f"{name} was fitted on {channels} features, the input to convert "
                         f"has {sum(known)}")


def register_skl2onnx(estimator: type | None = None) -> None:
    """Register nbbn's converter with skl2onnx, so that ``skl2onnx.to_onnx(pipeline, X)``
    converts pipelines that contain nbbn's ``StandardScaler`` (with the exact graph).

    Parameters
    ----------
    estimator : type, optional
        The estimator class to register (default ``nbbn.sklearn.StandardScaler``); any
        transformer class (with a ``transform`` method) with fitted ``mean_``,
        ``scale_``, ``with_mean``, ``with_std`` and ``n_features_in_`` attributes
        converts the same way (a class without ``with_mean`` and ``with_std``, as
        parameters or class attributes, is refused: TypeError). Registering
        scikit-learn's own ``StandardScaler`` replaces skl2onnx's converter for it in
        this process (with its options, such as ``div``).

    Raises
    ------
    MissingExtraError
        skl2onnx is not installed (``pip install "nbbn[onnx]"``).
    """
    skl2onnx = import_extra("skl2onnx", "onnx", "converting pipelines with skl2onnx")
    from skl2onnx.shape_calculators.scaler import calculate_sklearn_scaler_output_shapes

    if estimator is None:
        from . import sklearn  # type: ignore[attr-defined]

        estimator = sklearn.StandardScaler
    if not isinstance(estimator, type):
        raise TypeError("register_skl2onnx takes the estimator's class (e.g. "
                        f"StandardScaler), got an instance of {type(estimator).__name__}")
    _check_scaler_class(estimator)
    skl2onnx.update_registered_converter(
        estimator, f"Nbbn{estimator.__name__}", calculate_sklearn_scaler_output_shapes,
        _convert)


def _check_scaler_class(estimator: type) -> None:
    """TypeError unless ``estimator`` is a StandardScaler class (nbbn's or
    scikit-learn's, or a subclass) or another transformer with ``with_mean`` and
    ``with_std`` (parameters of its ``__init__``, as scikit-learn's estimators take
    them, or class attributes): another scaler (``RobustScaler``: ``center_``,
    ``with_centering``) was registered, and then every conversion of it failed in
    :func:`affine_of`, far from the call that caused it."""
    import inspect

    from sklearn.preprocessing import StandardScaler as SklearnScaler

    from .sklearn import StandardScaler

    if issubclass(estimator, (StandardScaler, SklearnScaler)):
        return
    try:
        params = set(inspect.signature(estimator.__init__).parameters)
    except (TypeError, ValueError):  # (no signature: a builtin's)
        params = set()
    missing = [a for a in ("with_mean", "with_std") if a not in params
               and not hasattr(estimator, a)]
    if missing or not callable(getattr(estimator, "transform", None)):
        lacks = ", ".join(missing) if missing else "transform"
        raise TypeError(
            "register_skl2onnx takes a StandardScaler class (nbbn.sklearn's or "
            "scikit-learn's) or another transformer with with_mean and with_std whose fit "
            f"sets mean_, scale_ and n_features_in_; got {estimator.__name__}, without "
            f"{lacks}: nothing was registered")


def _not_fitted(message: str) -> ValueError:
    """scikit-learn's ``NotFittedError`` (a ValueError), as its estimators raise, for an
    estimator of a scikit-learn-style API; a plain ValueError without scikit-learn."""
    try:
        from sklearn.exceptions import NotFittedError
    except ImportError:
        return ValueError(message)
    return NotFittedError(message)
