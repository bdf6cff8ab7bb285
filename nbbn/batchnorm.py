"""``BatchNorm``: torch.nn.BatchNorm{1,2,3}d semantics on numpy arrays, any channel axis."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from . import backends
from ._layout import Checked, channel_vector, check_channel_axis
from ._torch_arrays import check_no_grad, host_values
from ._wording import check_flag
from .normalizer import Normalizer, check_eps, finite_number
from .running_stats import RunningStats


class IncompatibleKeys(NamedTuple):
    """What :meth:`BatchNorm.load_state_dict` returns, as torch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _to_numpy(v) -> np.ndarray:
    """NumPy arrays as they are; torch tensors (any device) through ``.detach().cpu()``."""
    return np.asanyarray(host_values(v))  # (a masked array stays one: channel_vector checks)


def _torch_layout(y, out):
    """A new torch output as torch's BatchNorm lays it out: contiguous, or channels_last
    (3d) for such an input. The backends keep any input's strides, as elementwise
    operations do (``Normalizer``): the output of ``x.transpose(1, 2)`` could not be
    ``.view``-ed as torch's BatchNorm output can. (A copy, for such inputs only.)"""
    torch = sys.modules.get("torch")
    if out is not None or torch is None or not isinstance(y, torch.Tensor):
        return y
    if y.is_contiguous() or (y.dim() == 4 and y.is_contiguous(
            memory_format=torch.channels_last)) or (y.dim() == 5 and y.is_contiguous(
                memory_format=torch.channels_last_3d)):
        return y
    return y.contiguous()


def _check_momentum(momentum) -> float | None:
    """``momentum`` as a float in [0, 1], or None; TypeError for a non-number, ValueError
    otherwise. (torch takes any number; outside [0, 1] the running average is no
    average, and a momentum of 2 leaves a negative running variance, which no
    ``load_state_dict`` takes back.)"""
    if momentum is None:
        return None
    m = finite_number(momentum, "momentum", " or None")
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] (the weight of a batch in the "
                         f"running average) or None, got {momentum!r}")
    return m



_TRACKED_MAX = 2**63 - 2  # (one more step still fits torch's int64 buffer)


def _check_tracked(value) -> int:
    """``num_batches_tracked`` as an int, or ValueError: an integer in [0, 2**63 - 2]
    (torch keeps it as an int64 tensor; one more training step must still fit)."""
    if type(value) is int and 0 <= value <= _TRACKED_MAX:
        return value  # (what a training step leaves: checked without numpy)
    v = _to_numpy(value)
    if v.size != 1:
        raise ValueError(f"num_batches_tracked must be a scalar, got shape {v.shape}")
    count = v.reshape(())
    if count.dtype.kind not in "iuf" or not np.isfinite(count) \
            or count != np.floor(count) or not 0 <= int(count) <= _TRACKED_MAX:
        raise ValueError(f"num_batches_tracked must be an integer >= 0 (at most 2**63 - 2, "
                         f"torch's int64), got {value!r}")
    return int(count)


def _check_running_var(v: np.ndarray) -> None:
    """ValueError where a running variance is < 0. NaN passes: a training step on a
    batch with a NaN (``nan_policy="propagate"``, torch's behaviour) leaves one there,
    and torch's ``load_state_dict`` takes it, so a state either produced loads back
    (with a momentum in [0, 1]: torch's momentum of 2 leaves a negative variance)."""
    if (v < 0).any():
        raise ValueError(f"running_var must be >= 0 (or NaN), got {v[v < 0][:5].tolist()}")

def _state_version(d) -> int:
    """The version torch's ``state_dict`` records for a module at the top of ``d`` (its
    ``_metadata``; 2 since torch 0.4.1 added ``num_batches_tracked``), or 0 for a dict
    without one (a plain dict, nbbn's numpy state dict)."""
    meta = getattr(d, "_metadata", None)
    top = meta.get("") if isinstance(meta, Mapping) else None
    version = top.get("version") if isinstance(top, Mapping) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


class BatchNorm:
    """Batch normalization with the exact semantics of ``torch.nn.BatchNorm{1,2,3}d``.

    In training mode (the default, as for torch modules) a call normalizes with the
    batch mean and the biased batch variance, and updates the running buffers as
    ``r = (1 - momentum) * r + momentum * stat`` with the unbiased batch variance
    (``momentum=None``: cumulative average with factor ``1 / num_batches_tracked``).
    As in torch, every training call counts in ``num_batches_tracked``, an empty batch
    too (which changes nothing else). In eval mode it normalizes with the running
    buffers. Buffers and parameters are float64 numpy arrays; statistics are computed
    exactly in float64.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
        Added to the variance; must be >= 0, and > 0 to normalize with batch
        statistics (training mode, or ``track_running_stats=False``), as torch. In eval
        mode with ``eps=0`` a channel whose running variance is 0 is scaled by ``weight``
        alone (scikit-learn's rule for constant features), where torch's output is NaN
        or infinite.
    momentum : float or None, default 0.1
        The running buffers' update factor, in [0, 1] (torch takes any number; its
        momentum of 2 leaves a negative running variance); None for a cumulative
        average.
    affine : bool, default True
        Learnable-style ``weight`` (ones) and ``bias`` (zeros) parameters.
    track_running_stats : bool, default True
        Keep ``running_mean``/``running_var``/``num_batches_tracked``; without them the
        batch statistics are used in eval mode too. As torch's attribute: setting it
        to False later stops the updates, and eval mode still reads the buffers (they
        stay in the state_dict); setting it to True on a module built without them
        adds none.
    channel_axis : int or str, default 1
        ``1`` for torch's (N, C, ...) layout, ``-1`` for channels-last; a dimension name
        for xarray DataArrays.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where the kernels run; "auto" follows the input array.
    bias : bool, default True
        With ``affine=True``, ``bias=False`` keeps ``weight`` but no ``bias`` (zero), as
        torch's keyword of the same name: the state_dict then has no "bias".

    Examples
    --------
    >>> import numpy as np, nbbn
    >>> bn = nbbn.BatchNorm(3)
    >>> x = np.arange(48.0).reshape(4, 3, 2, 2)
    >>> y = bn(x)
    >>> bn.running_mean
    array([1.95, 2.35, 2.75])
    >>> bn.num_batches_tracked
    1
    """

    channel_axis = Checked(check_channel_axis, "The channel axis (an int, or a DataArray's "
                           "dimension name), checked when set.")
    backend = Checked(backends.check_name, "Where the kernels run, checked when set.")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 channel_axis: int | str = 1, backend: str = "auto", bias: bool = True) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)):
            raise TypeError(f"num_features must be a positive int, got "
                            f"{type(num_features).__name__} {num_features!r}")  # (as torch)
        if num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = check_eps(eps)
        self.momentum = _check_momentum(momentum)
        self.affine = check_flag(affine, "affine")
        self.track_running_stats = check_flag(track_running_stats, "track_running_stats")
        bias = check_flag(bias, "bias")
        self.channel_axis = channel_axis  # (checked when set: Checked)
        self.backend = backend
        self.training = True
        c = self.num_features
        self.weight: np.ndarray | None = np.ones(c) if self.affine else None
        self.bias: np.ndarray | None = np.zeros(c) if self.affine and bias else None
        # [running_mean, running_var] (2, C): float64 on the host, or a backend's buffer
        # on its device after a training step there
        self._running: Any = np.stack([np.zeros(c), np.ones(c)]) \
            if self.track_running_stats else None
        self.num_batches_tracked: int | None = 0 if self.track_running_stats else None

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> BatchNorm:
        """Set training mode (``mode=False`` is eval mode); returns ``self``. ``mode`` must
        be a bool, as torch's ``Module.train`` requires (``train("eval")`` was training)."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        self.training = mode
        return self

    def eval(self) -> BatchNorm:
        """Set eval mode; returns ``self``."""
        return self.train(False)

    # ------------------------------------------------------------------ forward
    def __call__(self, x, out=None):
        """Normalize ``x`` (and, in training mode, update the running statistics).

        Parameters
        ----------
        x : array_like
            Input with ``num_features`` channels along ``channel_axis``.
        out : array, optional
            Where to write the result (as for :meth:`Normalizer.__call__`).

        Returns
        -------
        array
            The normalized input, of the input's array type.
        """
        # eps, momentum and num_batches_tracked are plain attributes (``bn.momentum =
        # 0.01`` as in torch): checked again here, before this call changes anything
        eps, momentum = check_eps(self.eps), _check_momentum(self.momentum)
        # As torch: the running buffers are updated in training mode while
        # track_running_stats is set, and read in eval mode whenever they exist (setting
        # track_running_stats=False later only stops their updates); a module built
        # without them normalizes with batch statistics in both modes.
        step = self.training and self.track_running_stats and self._running is not None
        use_batch_stats = self.training or self._running is None
        if step:
            self.num_batches_tracked = _check_tracked(self.num_batches_tracked)
        check_no_grad(x, "input")
        # (a trainable Parameter as weight or bias: its gradient would be lost in silence)
        check_no_grad(self.weight, "weight")
        check_no_grad(self.bias, "bias")
        be = backends.resolve(self.backend, x)
        inp = be.prepare(x, self.channel_axis, "input")
        n = inp.outer * inp.inner
        if inp.channels != self.num_features:
            raise ValueError(
                f"input has {inp.channels} channels along channel_axis={self.channel_axis!r}, "
                f"expected num_features={self.num_features}"
            )
        if n == 1 and use_batch_stats:
            when = "training" if self.training else \
                "normalizing with batch statistics (no running buffers: built with " \
                "track_running_stats=False)"
            raise ValueError(f"Expected more than 1 value per channel when {when}, got "
                             f"input size {tuple(inp.array.shape)}")
        if use_batch_stats and eps == 0:
            raise ValueError("eps must be > 0 to normalize with batch statistics (training "
                             "mode, or track_running_stats=False), as torch; got eps=0.0. "
                             "eval mode with running statistics accepts eps=0")
        dst = be.prepare_out(out, inp, "input")
        weight, bias = self._affine_params()
        if step and n == 0:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked += 1  # as torch: an empty batch counts too
        if n == 0:
            return _torch_layout(be.result(dst), out)
        if not step:
            if use_batch_stats:
                be.batchnorm_train(inp, eps, weight, bias, None, 0.0, dst)
            else:
                be.batchnorm_eval(inp, eps, weight, bias, self._host_running(), dst,
                                  (id(self), "eval"))
            return _torch_layout(be.result(dst), out)
        # A training step moves num_batches_tracked and the running buffers: a failure
        # on the way (Ctrl-C in a first call's compile, a MemoryError) puts both back,
        # so a retried batch is not counted twice.
        tracked, before = self.num_batches_tracked, self._running
        assert tracked is not None
        running = be.running(before, inp)
        kept = backends.keep_running(running) if running is before else None
        try:
            self._running = running
            self.num_batches_tracked = tracked + 1  # as torch: before it looks at the batch
            factor = 1.0 / self.num_batches_tracked if momentum is None else momentum
            be.batchnorm_train(inp, eps, weight, bias, running, factor, dst)
        except BaseException:
            if kept is not None:
                backends.restore_running(running, kept)
            self._running, self.num_batches_tracked = before, tracked
            raise
        return _torch_layout(be.result(dst), out)

    def _affine_params(self) -> tuple[np.ndarray, np.ndarray]:
        """``weight`` and ``bias`` as (C,) float64 arrays (ones and zeros when absent),
        checked before a call changes any state: they are plain attributes, which a
        user may set to anything (a list, a tensor, the wrong length)."""
        c = self.num_features
        weight = np.ones(c) if self.weight is None else channel_vector(
            _to_numpy(self.weight), c, "weight")
        bias = np.zeros(c) if self.bias is None else channel_vector(
            _to_numpy(self.bias), c, "bias")
        return weight, bias

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0, in place (the
        arrays ``running_mean`` and ``running_var`` returned before are reset too, as
        torch's buffers; torch's ``reset_running_stats``: nothing without
        ``track_running_stats``)."""
        if self._running is not None and self.track_running_stats:
            running = self._host_running()
            running[0] = 0.0
            running[1] = 1.0
            self.num_batches_tracked = 0

    def reset_parameters(self) -> None:
        """:meth:`reset_running_stats`, then ``weight`` 1 and ``bias`` 0 (torch's
        ``reset_parameters``): in place, as torch resets its parameters, when they are
        writable numpy arrays of one value per channel (an array held before is reset
        too); anything else (a torch tensor, a read-only array) is replaced."""
        self.reset_running_stats()
        for name, value in (("weight", 1.0), ("bias", 0.0)):
            held = getattr(self, name)
            if held is None:
                continue
            if isinstance(held, np.ndarray) and held.flags.writeable and \
                    held.shape == (self.num_features,) and held.dtype.kind == "f":
                held[...] = value
            else:
                setattr(self, name, np.full(self.num_features, value))

    # running buffers: host arrays, or a device copy after a GPU training step
    def _host_running(self) -> np.ndarray:
        """The (2, C) running buffer on the host (brought back from a device)."""
        self._running = backends.to_host(self._running)
        return self._running

    @property
    def running_mean(self) -> np.ndarray | None:
        """Running mean per channel (float64; None without ``track_running_stats``)."""
        return None if self._running is None else self._host_running()[0]

    @running_mean.setter
    def running_mean(self, value) -> None:
        self._set_running(0, value, "running_mean")

    @property
    def running_var(self) -> np.ndarray | None:
        """Running unbiased variance per channel (float64; None without
        ``track_running_stats``)."""
        return None if self._running is None else self._host_running()[1]

    @running_var.setter
    def running_var(self, value) -> None:
        self._set_running(1, value, "running_var")

    def _set_running(self, row: int, value, name: str) -> None:
        if self._running is None:
            raise ValueError(f"this BatchNorm was built with track_running_stats=False: "
                             f"no {name}")
        v = channel_vector(_to_numpy(value), self.num_features, name)
        if row == 1:
            _check_running_var(v)
        self._host_running()[row] = v

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["_running"] = None if self._running is None else self._host_running().copy()
        return d

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(Checked.renamed(state, "channel_axis", "backend"))

    # ------------------------------------------------------------------ state
    def state_dict(self, *, tensors: bool | None = None) -> dict:
        """Copies of the parameters and buffers under torch's key names.

        Parameters
        ----------
        tensors : bool, optional
            True: torch CPU tensors (float64, ``num_batches_tracked`` int64), which
            ``torch.nn.BatchNorm2d(C).load_state_dict`` takes; False: numpy arrays.
            Default: tensors when torch has been imported in this process (as it is
            wherever a torch module is at hand), numpy arrays otherwise.

        Returns
        -------
        dict
            "weight" and "bias" (with ``affine``; no "bias" with ``bias=False``),
            "running_mean", "running_var" and "num_batches_tracked" (when the module
            has running buffers: built with ``track_running_stats``, as torch's).
        """
        if tensors or (tensors is None and sys.modules.get("torch") is not None):
            from ._torch_modules import state_tensors

            return state_tensors(self)
        d: dict[str, np.ndarray] = {}
        for key in ("weight", "bias"):  # (plain attributes: a list or a tensor, as forward)
            value = getattr(self, key)
            if value is not None:
                d[key] = channel_vector(_to_numpy(value), self.num_features, key).copy()
        if self._running is not None:
            assert self.running_mean is not None and self.running_var is not None
            d["running_mean"] = self.running_mean.copy()
            d["running_var"] = self.running_var.copy()
            # (a plain attribute, checked as a call checks it: "x" or None raised int()'s
            # error, -5 was exported and then refused by load_state_dict)
            d["num_batches_tracked"] = np.array(_check_tracked(self.num_batches_tracked),
                                                dtype=np.int64)
        return d

    def load_state_dict(self, d: dict, strict: bool = True) -> IncompatibleKeys:
        """Load parameters and buffers from numpy arrays or torch tensors (all or nothing).

        Parameters
        ----------
        d : dict
            The keys of :meth:`state_dict` (e.g. a torch ``BatchNorm2d``'s state_dict).
        strict : bool, default True
            As torch's: True refuses missing and unexpected keys (ValueError); False
            loads the keys this module has and returns the others.

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, lists of names (empty when strict).
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like (as torch's), got "
                            f"{type(d).__name__}")
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {strict!r}")
        own = self._state_keys()
        expected = set(own)
        got = set(d)
        if "num_batches_tracked" in expected and "num_batches_tracked" not in got \
                and self.track_running_stats and _state_version(d) < 2:
            # torch before 0.4.1 saved none; torch's loader then keeps the module's own
            # (only for a dict with no version 2 or later in torch's metadata, while
            # the module tracks: else the key is missing, as torch reports it)
            d = {**d, "num_batches_tracked": self.num_batches_tracked}
            got = set(d)
        missing, unexpected = sorted(expected - got), sorted(got - expected)
        if strict and (missing or unexpected):
            raise ValueError(
                f"state_dict keys do not match: missing {missing}, unexpected {unexpected}"
            )
        new: dict[str, Any] = {}
        for key in [k for k in own if k in got]:  # (the state_dict's order, whatever the hash seed)
            if key == "num_batches_tracked":
                new[key] = _check_tracked(d[key])
            else:
                new[key] = channel_vector(_to_numpy(d[key]), self.num_features, key).copy()
        if "running_var" in new:
            _check_running_var(new["running_var"])
        # the values as they are, unchecked (a weight set to a wrong length is what a
        # load may be repairing), copied (the running buffers are views of one array)
        before = {key: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                  for key in new for v in [getattr(self, key)]}
        # a writable float64 weight or bias of one value per channel is loaded in place,
        # as torch copies into its parameters (an array held before sees the new values)
        held = {key: getattr(self, key) for key in ("weight", "bias") if key in new}
        in_place = {key: a for key, a in held.items() if isinstance(a, np.ndarray)
                    and a.flags.writeable and a.dtype == np.float64
                    and a.shape == (self.num_features,)}
        try:
            for key, v in new.items():
                if key not in in_place:
                    setattr(self, key, v)
        except BaseException:  # (a setter's own check, a Ctrl-C: all or nothing)
            for key, v in before.items():
                if key not in in_place:
                    setattr(self, key, v)
            raise
        for key, a in in_place.items():  # (last: a copy into a checked array cannot fail)
            a[...] = new[key]
        return IncompatibleKeys(missing, unexpected)

    def _state_keys(self) -> list[str]:
        """The keys of :meth:`state_dict`, in its order, without reading the values."""
        keys = [k for k in ("weight", "bias") if getattr(self, k) is not None]
        if self._running is not None:
            keys += ["running_mean", "running_var", "num_batches_tracked"]
        return keys

    def load_running_stats(self, rs) -> None:
        """Set the running buffers from exact population statistics ("precise BN").

        ``running_mean = rs.mean`` and ``running_var = rs.variance(ddof=1)`` (unbiased,
        as torch stores it); ``num_batches_tracked`` is left as it is.

        Parameters
        ----------
        rs : nbbn.RunningStats
            Statistics of ``num_features`` channels, finite (at least 2 values each).

        Raises
        ------
        TypeError
            ``rs`` is not a RunningStats.
        ValueError
            No running buffers (built with ``track_running_stats=False``), another
            channel count, or
            NaN or inf statistics; the buffers are then unchanged.
        """
        if not isinstance(rs, RunningStats):
            raise TypeError(f"load_running_stats takes an nbbn.RunningStats, got "
                            f"{type(rs).__name__} (for arrays: bn.running_mean = ..., "
                            "bn.running_var = ...)")
        if self._running is None:
            raise ValueError("this BatchNorm was built with track_running_stats=False: no "
                             "running buffers")
        if rs.num_channels is None:
            raise ValueError("the RunningStats are empty (nothing was fitted): update them "
                             "before loading them")
        if rs.num_channels != self.num_features:
            raise ValueError(
                f"the RunningStats have {rs.num_channels} channels, expected {self.num_features}"
            )
        mean, var = rs.mean, rs.variance(ddof=1)
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(var)))
            raise ValueError(f"the RunningStats hold NaN or inf in channels {bad[:10].tolist()}"
                             " (fewer than 2 values, weights summing to at most 1, or NaN "
                             "or inf in the data?)")
        self.running_mean, self.running_var = mean, var

    def to_normalizer(self) -> Normalizer:
        """The frozen eval-mode normalizer (running statistics, weight, bias, eps).

        Returns
        -------
        nbbn.Normalizer
            ``(x - running_mean) / sqrt(running_var + eps) * weight + bias`` along
            ``channel_axis``, as torch's module in eval mode.

        Raises
        ------
        ValueError
            No running buffers (built with ``track_running_stats=False``: eval mode
            then normalizes with batch statistics).
        """
        if self._running is None:
            raise ValueError("this BatchNorm was built with track_running_stats=False: "
                             "eval mode uses batch statistics, there is no frozen normalizer")
        weight, bias = self._affine_params()
        return Normalizer(self.running_mean, self.running_var, eps=self.eps, weight=weight,
                          bias=bias, channel_axis=self.channel_axis, backend=self.backend)

    @classmethod
    def from_torch(cls, module, *, backend: str = "auto") -> BatchNorm:
        """A ``BatchNorm`` with the settings, state and mode of a torch module.

        Parameters
        ----------
        module : torch.nn.BatchNorm1d, BatchNorm2d, BatchNorm3d or SyncBatchNorm
            An initialized module (a lazy one after its first forward pass).
        backend : {"auto", "cpu", "cuda"}, default "auto"
            The new object's backend.

        Returns
        -------
        BatchNorm
            ``channel_axis=1``, float64 copies of the parameters and buffers.
        """
        from ._torch_modules import batchnorm_from_torch

        return batchnorm_from_torch(module, backend)

    def to_torch(self, dim: int = 2, *, dtype=None, device=None):
        """A ``torch.nn.BatchNorm{dim}d`` with this object's settings, state and mode.

        Parameters
        ----------
        dim : {1, 2, 3}, default 2
            ``BatchNorm1d`` for (N, C) or (N, C, L) input, ``BatchNorm2d`` for
            (N, C, H, W), ``BatchNorm3d`` for (N, C, D, H, W).
        dtype, device : optional
            As for the torch constructor (default float32 on the CPU); the float64
            values are rounded once to ``dtype``.

        Returns
        -------
        torch.nn.Module
            A new module (needs ``channel_axis=1``: torch reads channels on axis 1).
        """
        from ._torch_modules import batchnorm_to_torch

        return batchnorm_to_torch(self, dim, dtype, device)

    def __repr__(self) -> str:
        extra = ", bias=False" if self.affine and self.bias is None else ""
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
                f"channel_axis={self.channel_axis!r}{extra})")
