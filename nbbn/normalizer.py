"""``Normalizer``: the frozen inference-mode map ``(x - mean) / sqrt(var + eps) * w + b``."""

from __future__ import annotations

import math

import numpy as np

from . import backends
from ._affine import affine_scale
from ._labels import (
    check_columns,
    check_coords,
    check_names,
    check_series_indexes,
    frame_columns,
    refuse_table_axis,
)
from ._layout import Checked, channel_vector, check_channel_axis
from ._torch_arrays import check_no_grad, host_values


def finite_number(value, name: str, allowed: str = "") -> float:
    """``value`` as a finite float; TypeError for a non-number (a string or a bool too,
    which ``float`` would take), ValueError for NaN or an infinity. ``allowed`` names what
    else the caller accepts, for the messages (" or None")."""
    try:
        if isinstance(value, (str, bytes, bool, np.bool_)):  # (True is not a number here,
            raise TypeError  # as channel_axis=True is not an axis)
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number{allowed}, got "
                        f"{type(value).__name__}") from None
    except OverflowError:  # (a Python int past float64's range: 10**400)
        raise ValueError(f"{name} must be a finite number{allowed}, got an integer too "
                         f"large for float64") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number{allowed}, got {value!r}")
    return number


def check_eps(eps) -> float:
    """``eps`` as a float; TypeError for a non-number, ValueError unless finite and
    ``>= 0``."""
    value = finite_number(eps, "eps")
    if value < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
    return value


def _frozen(values: np.ndarray) -> np.ndarray:
    """A read-only float64 copy."""
    out = np.array(values, np.float64, copy=True)
    out.flags.writeable = False
    return out


class Normalizer:
    """Apply frozen per-channel statistics: ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    The arithmetic is float64 whatever the input dtype, with the mean subtracted
    before scaling, and the result is rounded once to the output dtype; so the output
    is within an ulp or two of a float64 computation even when |mean| >> std.

    Parameters
    ----------
    mean, var : array_like, shape (C,)
        Per-channel mean and (biased or unbiased, your choice) variance; var >= 0 (NaN
        only where the mean is NaN or infinite too: a channel without statistics, or
        with NaNs or infinities in its data, whose outputs are NaN or infinite).
    eps : float, default 1e-5
        Added to the variance; must be >= 0. With ``eps=0`` (scikit-learn's
        ``StandardScaler`` has no eps) a channel whose variance is exactly 0 is scaled by
        1, as scikit-learn does for constant features: it maps to ``bias``, not inf or
        NaN. (scikit-learn also scales by 1 a near-constant feature, whose variance is
        within rounding of 0; ``nbbn.sklearn.StandardScaler`` does, this class does not.)
    weight, bias : array_like, shape (C,), optional
        Affine parameters (default 1 and 0). A finite ``weight`` whose
        ``weight / sqrt(var + eps)`` overflows float64 is refused (ValueError): every
        output of that channel would be infinite or NaN.
    channel_axis : int or str, default 1
        The channel axis of the arrays this normalizer is applied to (a dimension name
        for xarray DataArrays). Dask arrays give lazy dask arrays, DataArrays DataArrays.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where the map runs; "auto" follows the input array.
    channel_names : sequence of str, optional
        A name per channel (:meth:`RunningStats.to_normalizer` passes the statistics'
        :attr:`~nbbn.RunningStats.channel_names`): a pandas or polars DataFrame input
        must then have these columns, in this order (channels are matched by position).
        Likewise a normalizer made from statistics of DataArrays refuses a DataArray
        whose channel coordinate orders the labels otherwise.

    Attributes
    ----------
    mean, var, weight, bias : numpy.ndarray
        The parameters, float64 copies, read-only: a normalizer is frozen (build a new
        one for new numbers; ``channel_axis`` and ``backend`` may be set).
    eps : float
    scale : numpy.ndarray
        ``weight / sqrt(var + eps)`` per channel (``weight`` where ``var + eps == 0``).

    Examples
    --------
    >>> import numpy as np, nbbn
    >>> norm = nbbn.Normalizer([1.0, 2.0], [4.0, 1.0], eps=0.0)
    >>> norm(np.array([[3.0, 2.0]]))
    array([[1., 0.]])
    >>> nbbn.Normalizer([5.0], [0.0], eps=0.0)(np.array([[5.0], [6.0]]))  # constant channel
    array([[0.],
           [1.]])
    """

    channel_axis = Checked(check_channel_axis, "The channel axis (an int, or a DataArray's "
                           "dimension name), checked when set.")
    backend = Checked(backends.check_name, "Where the kernels run, checked when set.")

    _channel_coord: tuple | None = None  # (dim, labels) of the statistics' DataArrays
    _names: tuple[str, ...] | None = None

    def __init__(self, mean, var, *, eps: float = 1e-5, weight=None, bias=None,
                 channel_axis: int | str = 1, backend: str = "auto",
                 channel_names=None) -> None:
        check_series_indexes(mean=mean, var=var, weight=weight, bias=bias)
        mean = channel_vector(host_values(mean), None, "mean")
        nchan = mean.shape[0]
        var = channel_vector(host_values(var), nchan, "var")
        if (var < 0).any():
            bad = np.flatnonzero(var < 0)[:5].tolist()
            raise ValueError(f"var must be >= 0, got negative values in channels {bad}")
        # (a NaN var with a NaN or infinite mean: statistics of no values, or of NaNs or
        # infinities propagated, which give NaN outputs)
        bad = np.flatnonzero(np.isnan(var) & np.isfinite(mean))
        if bad.size:
            raise ValueError(f"var must be >= 0, got NaN in channels {bad[:5].tolist()}, "
                             "whose mean is finite")
        self._eps = check_eps(eps)
        # read-only copies: the normalizer is frozen, whatever later happens to the
        # caller's arrays (a BatchNorm's weight and bias, a torch module's parameters),
        # and its numbers are not changed behind ``scale`` (which is computed once)
        self._mean = _frozen(mean)
        self._var = _frozen(var)
        self._weight = _frozen(np.ones(nchan) if weight is None else channel_vector(
            host_values(weight), nchan, "weight"))
        self._bias = _frozen(np.zeros(nchan) if bias is None else channel_vector(
            host_values(bias), nchan, "bias"))
        self.channel_axis = channel_axis  # (checked when set: Checked)
        self.backend = backend
        self._names = check_names(channel_names, nchan)
        with np.errstate(over="ignore"):
            scale = affine_scale(self._weight, self._var, self._eps)
        bad = np.flatnonzero(np.isinf(scale) & np.isfinite(self._weight)
                             & np.isfinite(self._var))
        if bad.size:
            raise ValueError(
                f"weight / sqrt(var + eps) overflows float64 in channels "
                f"{bad[:5].tolist()} (weight {self._weight[bad[0]]:g}, var "
                f"{self._var[bad[0]]:g}, eps {self._eps:g}): the outputs would be "
                f"infinite or NaN; scale the weight down or use a larger eps")
        self._scale = _frozen(scale)
        with np.errstate(divide="ignore", over="ignore"):  # (inverse refuses those)
            self._inv_scale = _frozen(1.0 / self._scale)

    # The numbers are read-only (a new Normalizer for new numbers): an assignment or an
    # in-place write raises. Setting ``eps``, ``var`` or ``weight`` used to change
    # nothing (``scale`` was computed from them once), while ``mean`` and ``bias`` took
    # effect, and ``inverse`` kept the old ``scale``.
    mean = property(lambda self: self._mean, doc="Per-channel mean (float64, read-only).")
    var = property(lambda self: self._var, doc="Per-channel variance (float64, read-only).")
    eps = property(lambda self: self._eps, doc="Added to the variance.")
    channel_names = property(lambda self: self._names, doc="A name per channel, or None.")
    weight = property(lambda self: self._weight, doc="Per-channel weight (read-only).")
    bias = property(lambda self: self._bias, doc="Per-channel bias (read-only).")
    scale = property(lambda self: self._scale,
                     doc="``weight / sqrt(var + eps)`` per channel (read-only).")

    def __setstate__(self, state: dict) -> None:
        # a pickle's arrays come back writable: read-only again; pickles of nbbn before
        # the numbers were read-only kept them under public names
        Checked.renamed(state, "mean", "var", "eps", "weight", "bias", "scale",
                        "channel_axis", "backend")
        for name in ("_mean", "_var", "_weight", "_bias", "_scale", "_inv_scale"):
            state[name] = _frozen(state[name])
        self.__dict__.update(state)

    @property
    def num_channels(self) -> int:
        """Number of channels C."""
        return self.mean.shape[0]

    def __call__(self, x, out=None):
        """Normalize ``x``: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel.

        Parameters
        ----------
        x : array_like
            Input with ``num_channels`` channels along ``channel_axis``; a numpy array, or
            a device array for the CUDA backend.
        out : array, optional
            Where to write the result: same shape, a float16/32/64 dtype, of the input's
            kind; may be ``x`` itself. Default: a new array, of ``x``'s dtype when it is
            floating and float32 for integer input.

        Returns
        -------
        array
            ``out``, or the new array, of the input's array type.
        """
        return self._apply(x, out, self._mean, self._scale, self._bias, "x")

    def inverse(self, y, out=None):
        """Undo the normalization: ``x = (y - bias) / scale + mean``.

        Parameters
        ----------
        y : array_like
            Normalized data with ``num_channels`` channels along ``channel_axis``.
        out : array, optional
            Where to write the result (as for :meth:`__call__`; may be ``y``).

        Returns
        -------
        array
            ``out``, or a new array of the input's type (dtype as for :meth:`__call__`).

        Raises
        ------
        ValueError
            A channel's ``scale`` is 0 (its ``weight`` is 0): every input of it was
            mapped to its ``bias``, which cannot be undone (it gave NaN before).
        """
        zero = np.flatnonzero(np.isinf(self._inv_scale))  # (0, or below 1/float64 max)
        if zero.size:
            c = zero[0]
            if self._scale[c] != 0:  # (1e-310: inverse gave NaN and inf, with a warning)
                what = (f"{self._scale[c]:g} in channels {zero[:8].tolist()} (weight "
                        f"{self._weight[c]:g}, var {self._var[c]:g}): its reciprocal "
                        "overflows float64; use a larger weight")
            else:
                why = "build it with a nonzero weight there" if self._weight[c] == 0 else \
                    "an infinite variance leaves nothing to invert" if np.isinf(
                        self._var[c] + self._eps) else \
                    "weight / sqrt(var + eps) underflows to 0 there: use a larger weight"
                what = (f"0 in channels {zero[:8].tolist()} (weight {self._weight[c]:g}, "
                        f"var {self._var[c]:g}): the normalizer maps every input of them to "
                        f"the bias, which cannot be undone; {why}")
            raise ValueError(f"inverse needs a nonzero scale (weight / sqrt(var + eps)) "
                             f"with a finite reciprocal in every channel, got {what}")
        return self._apply(y, out, self._bias, self._inv_scale, self._mean, "y")

    def _apply(self, x, out, a, s, b, what):
        check_no_grad(x, what)
        refuse_table_axis(x, self.channel_axis)
        if self._names is not None and self.channel_axis in (1, -1):
            check_columns(self._names, frame_columns(x), what, "the normalizer's statistics")
        be = backends.resolve(self.backend, x)
        inp = be.prepare(x, self.channel_axis, what)
        check_coords(self._channel_coord, getattr(inp, "channel_coord", None), what,
                     "the normalizer's statistics", dims=getattr(x, "dims", None))
        if inp.channels != self.num_channels:
            raise ValueError(
                f"{what} has {inp.channels} channels along channel_axis={self.channel_axis!r}, "
                f"but the normalizer has {self.num_channels}"
            )
        dst = be.prepare_out(out, inp, what)
        if inp.size:
            be.affine(inp, be.params(a, s, b, inp, (id(self), what)), dst)
        return be.result(dst)

    def to_torch(self, *, dtype=None, device=None):
        """The normalizer as a ``torch.nn.Module`` (buffers; mean-first form).

        Parameters
        ----------
        dtype : torch.dtype, optional
            The buffers' dtype and that of the arithmetic (default float32, torch's
            default dtype); the mean is kept as two numbers of that dtype.
        device : optional
            The buffers' device.

        Returns
        -------
        nbbn.torch.NormalizerModule
            ``y = ((x - mean) - mean_lo) * scale + bias`` along ``channel_axis``;
            scriptable (``torch.jit.script``) and exportable (``torch.export``).
        """
        from ._torch_modules import normalizer_to_torch

        return normalizer_to_torch(self, dtype, device)

    def __repr__(self) -> str:
        return (f"Normalizer(num_channels={self.num_channels}, eps={self.eps}, "
                f"channel_axis={self.channel_axis!r})")


def normalize(x, mean, var, weight=None, bias=None, *, eps: float = 1e-5,
              channel_axis: int | str = 1, out=None, backend: str = "auto"):
    """One-shot ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel.

    ``Normalizer(mean, var, eps=eps, weight=weight, bias=bias,
    channel_axis=channel_axis, backend=backend)(x, out=out)``: see :class:`Normalizer`
    for the parameters and the numerics.

    Returns
    -------
    array
        ``out``, or a new array of the input's type.
    """
    norm = Normalizer(mean, var, eps=eps, weight=weight, bias=bias,
                      channel_axis=channel_axis, backend=backend)
    return norm(x, out=out)
