"""``BatchNorm``: torch.nn.BatchNorm{1,2,3}d semantics on numpy arrays, any channel axis."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import backends
from ._layout import canonical, channel_vector, check_axis
from .backends.cpu_stats import POLICY_PROPAGATE
from .normalizer import Normalizer, affine_scale, check_eps, prepare_out, result_dtype

_STATE_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _to_numpy(v) -> np.ndarray:
    """numpy arrays as they are; torch tensors (any device) through ``.detach().cpu()``."""
    if hasattr(v, "detach") and hasattr(v, "cpu"):
        v = v.detach().cpu().numpy()
    return np.asarray(v)


class BatchNorm:
    """Batch normalization with the exact semantics of ``torch.nn.BatchNorm{1,2,3}d``.

    In training mode (the default, as for torch modules) a call normalizes with the
    batch mean and the biased batch variance, and updates the running buffers as
    ``r = (1 - momentum) * r + momentum * stat`` with the unbiased batch variance
    (``momentum=None``: cumulative average with factor ``1 / num_batches_tracked``).
    In eval mode it normalizes with the running buffers. Buffers and parameters are
    float64 numpy arrays; statistics are computed exactly in float64.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
        Added to the variance; must be > 0.
    momentum : float or None, default 0.1
    affine : bool, default True
        Learnable-style ``weight`` (ones) and ``bias`` (zeros) parameters.
    track_running_stats : bool, default True
        Keep ``running_mean``/``running_var``/``num_batches_tracked``; without them the
        batch statistics are used in eval mode too.
    channel_axis : int, default 1
        ``1`` for torch's (N, C, ...) layout, ``-1`` for channels-last.
    backend : {"auto", "cpu", "cuda"}, default "auto"
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 channel_axis: int = 1, backend: str = "auto") -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) \
                or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = check_eps(eps, strict=True)
        if momentum is not None:
            momentum = float(momentum)
            if not math.isfinite(momentum):
                raise ValueError(f"momentum must be a finite number or None, got {momentum}")
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.channel_axis = check_axis(channel_axis)
        self.backend = backends.check_name(backend)
        self.training = True
        self._running_dev = None
        self.weight = np.ones(self.num_features) if self.affine else None
        self.bias = np.zeros(self.num_features) if self.affine else None
        if self.track_running_stats:
            self._running_mean: np.ndarray | None = np.zeros(self.num_features)
            self._running_var: np.ndarray | None = np.ones(self.num_features)
            self.num_batches_tracked: int | None = 0
        else:
            self._running_mean = self._running_var = None
            self.num_batches_tracked = None

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> BatchNorm:
        """Set training mode (``mode=False`` is eval mode); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> BatchNorm:
        """Set eval mode; returns ``self``."""
        return self.train(False)

    # ------------------------------------------------------------------ forward
    def __call__(self, x, out=None):
        """Normalize ``x`` (and, in training mode, update the running statistics)."""
        backend = backends.resolve(self.backend, x)
        if backend.name == "cuda":
            return self._forward_device(backend, x, out)
        can = canonical(x, self.channel_axis, "input")
        self._check_input(can.channels, can.outer * can.inner, can.array.shape)
        out = prepare_out(out, can.array, "input")
        weight, bias = self._affine_params()
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats:
            mean, var = self.running_mean, self.running_var
        else:
            n = can.outer * can.inner
            if n == 0:
                return out
            st = backend.batch_stats(can, POLICY_PROPAGATE)
            mean = st.mean
            var = st.m2 / n
            if self.training and self.track_running_stats:
                self._update_running(mean, st.m2 / (n - 1))
        scale = affine_scale(weight, var, self.eps)
        if can.size:
            backend.affine(can, mean, scale, bias, out)
        return out

    def _check_input(self, nchan: int, n: int, shape) -> None:
        if nchan != self.num_features:
            raise ValueError(
                f"input has {nchan} channels along channel_axis={self.channel_axis}, "
                f"expected num_features={self.num_features}"
            )
        if n == 1 and (self.training or not self.track_running_stats):
            raise ValueError(
                "Expected more than 1 value per channel when training, got input size "
                f"{tuple(shape)}"
            )

    def _affine_params(self) -> tuple[Any, Any]:
        weight = self.weight if self.affine else np.ones(self.num_features)
        bias = self.bias if self.affine else np.zeros(self.num_features)
        return weight, bias

    def _forward_device(self, backend, x, out):
        """The forward pass on the GPU; the running buffers stay on the device between
        training steps and come back to the host when read."""
        can = backend.canonical(x, self.channel_axis, "input")
        self._check_input(can.channels, can.outer * can.inner, can.shape)
        target, dev = backend.prepare_out(out, can, result_dtype(can.dtype), "input")
        weight, bias = self._affine_params()
        if can.size == 0:
            return backend.result(target, dev, can)
        if self.training or not self.track_running_stats:
            running, factor = None, 0.0
            if self.training and self.track_running_stats:
                assert self.num_batches_tracked is not None
                if self._running_dev is None:
                    self._running_dev = backend.to_device(
                        np.stack([self._running_mean, self._running_var]), can.stream)
                running = self._running_dev
                self.num_batches_tracked += 1
                factor = 1.0 / self.num_batches_tracked if self.momentum is None \
                    else self.momentum
            backend.batchnorm_train(can, self.eps, weight, bias, running, factor, dev)
        else:
            scale = affine_scale(weight, self.running_var, self.eps)
            params = backend.cached_params(self.running_mean, scale, bias, can.stream)
            backend.affine(can, params, dev)
        return backend.result(target, dev, can)

    # running buffers: host arrays, or a device copy after a GPU training step
    @property
    def running_mean(self) -> np.ndarray | None:
        self._pull_running()
        return self._running_mean

    @running_mean.setter
    def running_mean(self, value) -> None:
        self._pull_running()
        self._running_mean = value

    @property
    def running_var(self) -> np.ndarray | None:
        self._pull_running()
        return self._running_var

    @running_var.setter
    def running_var(self, value) -> None:
        self._pull_running()
        self._running_var = value

    def _pull_running(self) -> None:
        dev = self.__dict__.get("_running_dev")
        if dev is not None:
            from .backends import cuda

            host = cuda.to_host(dev)
            self._running_dev = None
            self._running_mean, self._running_var = host[0].copy(), host[1].copy()

    def _update_running(self, batch_mean: np.ndarray, batch_var_unbiased: np.ndarray) -> None:
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked += 1
        f = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        self.running_mean = (1.0 - f) * self.running_mean + f * batch_mean
        self.running_var = (1.0 - f) * self.running_var + f * batch_var_unbiased

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Copies of the parameters and buffers under torch's key names."""
        d: dict[str, np.ndarray] = {}
        if self.affine:
            assert self.weight is not None and self.bias is not None
            d["weight"] = self.weight.copy()
            d["bias"] = self.bias.copy()
        if self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None
            d["running_mean"] = self.running_mean.copy()
            d["running_var"] = self.running_var.copy()
            d["num_batches_tracked"] = np.array(self.num_batches_tracked, dtype=np.int64)
        return d

    def load_state_dict(self, d: dict) -> None:
        """Load parameters and buffers from numpy arrays or torch tensors (all or nothing)."""
        expected = set(self.state_dict())
        got = set(d)
        if got != expected:
            raise ValueError(
                f"state_dict keys do not match: missing {sorted(expected - got)}, "
                f"unexpected {sorted(got - expected)}"
            )
        new: dict[str, Any] = {}
        for key in expected:
            v = _to_numpy(d[key])
            if key == "num_batches_tracked":
                if v.size != 1:
                    raise ValueError(f"num_batches_tracked must be a scalar, got shape {v.shape}")
                new[key] = int(v.reshape(()))
            else:
                new[key] = channel_vector(v, self.num_features, key).copy()
        if "running_var" in new and (new["running_var"] < 0).any():
            raise ValueError("running_var must be >= 0")
        for key, v in new.items():
            setattr(self, key, v)

    def load_running_stats(self, rs) -> None:
        """Set the running buffers from exact population statistics ("precise BN").

        ``running_mean = rs.mean`` and ``running_var = rs.variance(ddof=1)`` (unbiased,
        as torch stores it); ``num_batches_tracked`` is left as it is.
        """
        if not self.track_running_stats:
            raise ValueError("this BatchNorm has track_running_stats=False: no running buffers")
        if rs.num_channels != self.num_features:
            raise ValueError(
                f"the RunningStats have {rs.num_channels} channels, expected {self.num_features}"
            )
        mean, var = rs.mean, rs.variance(ddof=1)
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise ValueError("the RunningStats hold NaN or inf (a channel with < 2 values?)")
        self.running_mean, self.running_var = mean, var

    def to_normalizer(self) -> Normalizer:
        """The frozen eval-mode normalizer (running statistics, weight, bias, eps)."""
        if not self.track_running_stats:
            raise ValueError("track_running_stats=False: eval mode uses batch statistics, "
                             "there is no frozen normalizer")
        return Normalizer(self.running_mean, self.running_var, eps=self.eps, weight=self.weight,
                          bias=self.bias, channel_axis=self.channel_axis, backend=self.backend)

    def __repr__(self) -> str:
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
                f"channel_axis={self.channel_axis})")
