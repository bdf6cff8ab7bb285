"""``RunningStats``: exact pooled per-channel statistics over a stream of batches."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import backends
from ._layout import check_axis
from ._policy import check_policy, policy_code
from ._statsfile import FORMAT_NAME, read_stats, write_stats
from ._weights import check_sample_weight
from .backends._stats import BatchStats

FORMAT_VERSION = 1
_ARRAY_FIELDS = ("count", "mean", "m2", "min", "max", "nan_count", "inf_count")


class RunningStats:
    """Exact per-channel count, mean, variance, min and max over a stream of batches.

    Each :meth:`update` reduces a batch over every axis except ``channel_axis`` and
    merges the batch's statistics into a float64 state with Chan's pairwise formula,
    so the result equals the statistics of the concatenated data up to rounding,
    however the data was split (unlike an exponential moving average).

    A ``RunningStats`` can be pickled and deep-copied (the copy is independent), so
    worker processes can send their statistics back to be merged with ``+``.

    Parameters
    ----------
    channel_axis : int, default 1
        The axis that indexes channels (``1`` for NCHW/NCL, ``-1`` for channels-last).
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        "propagate": a NaN makes its channel's mean, variance, min and max NaN (as numpy
        and torch). "omit": NaNs are skipped per channel, so counts may differ between
        channels (as scikit-learn's ``StandardScaler``). "raise": a batch holding a NaN
        or an infinity raises ``ValueError`` and is not applied.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where the kernels run; "auto" follows the input array.

    Examples
    --------
    >>> import numpy as np, nbbn
    >>> rs = nbbn.RunningStats(channel_axis=1)
    >>> for batch in np.split(np.arange(24.0).reshape(4, 3, 2), 2):
    ...     _ = rs.update(batch)
    >>> rs.mean
    array([ 9.5, 11.5, 13.5])
    >>> rs.count
    array([8, 8, 8])
    """

    def __init__(self, channel_axis: int = 1, *, nan_policy: str = "propagate",
                 backend: str = "auto") -> None:
        self.channel_axis = check_axis(channel_axis)
        self.nan_policy = check_policy(nan_policy)
        self.backend = backends.check_name(backend)
        # BatchStats on the host, or a backend's state on its device
        self._state: Any = None
        self._host_cache: tuple | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        st = self._snapshot()
        return {"channel_axis": self.channel_axis, "nan_policy": self.nan_policy,
                "backend": self.backend, "state": st}

    def __setstate__(self, d: dict) -> None:
        self.__init__(d["channel_axis"], nan_policy=d["nan_policy"],  # type: ignore[misc]
                      backend=d["backend"])
        self._state = d["state"]

    # ------------------------------------------------------------------ updating
    def update(self, batch, sample_weight=None) -> RunningStats:
        """Merge the statistics of ``batch`` (any ndim >= 1) into the running state.

        The update applies whole or not at all: on any error the state is unchanged.
        Several threads may call ``update`` on one object at once; the kernels run
        outside the state's lock (and release the GIL) and only the final merge is
        serialized.

        Parameters
        ----------
        batch : array_like
            Values along ``channel_axis`` are channels; every other axis is reduced. A
            numpy array (any dtype of float16/32/64 or integers, any strides), or a device
            array (torch CUDA tensor, CuPy, Numba) for the CUDA backend.
        sample_weight : array_like of shape (N,), optional
            Frequency weights, one per row along axis 0 (finite, >= 0): a row of weight
            ``k`` counts as ``k`` copies of itself, a row of weight 0 as absent. The
            statistics become weighted (``count`` reports the sum of the weights, as
            scikit-learn's ``n_samples_seen_``). CPU backend only.

        Returns
        -------
        RunningStats
            ``self``, so that calls can be chained.

        Raises
        ------
        TypeError
            ``batch`` has a dtype that is not real floating or integer.
        ValueError
            ``batch`` has a channel count other than the state's, ``channel_axis`` is out
            of range, or (``nan_policy="raise"``) it holds a NaN or an infinity;
            ``sample_weight`` has another shape than (N,), a negative or non-finite
            weight, or ``channel_axis`` is 0.
        BackendUnavailableError
            ``sample_weight`` with a device array (no weighted GPU kernels).
        """
        be = backends.resolve(self.backend, batch)
        inp = be.prepare(batch, self.channel_axis, "batch")
        self._check_channels(inp.channels, "batch")
        weight = None
        if sample_weight is not None:
            weight = check_sample_weight(sample_weight, inp.array.shape[0], inp.axis)
        if inp.size == 0:
            return self
        if weight is None:
            part = be.reduce(inp, policy_code(self.nan_policy))
        else:
            part = be.reduce_weighted(inp, policy_code(self.nan_policy), weight)
        if self.nan_policy == "raise":
            self._raise_on_nonfinite(be.summary(part))
        with self._lock:
            self._check_channels(inp.channels, "batch")  # another thread may have started
            if getattr(self._state, "weight", None) is not None:
                # a weighted state is merged on the host (device states hold no weights)
                self._state = _host_merge(self._state, be.summary(part))
            else:
                self._state = be.merge(self._state, part)
            self._host_cache = None
        return self

    def _host(self) -> BatchStats | None:
        """The state as host arrays for reading (cached while the state does not change)."""
        st = self._state
        if st is None:
            return None
        cached = self._host_cache
        if cached is None or cached[0] is not st:
            with self._lock:
                st = self._state
                cached = self._host_cache = (st, backends.to_host(st))
        return cached[1]

    @staticmethod
    def _raise_on_nonfinite(st: BatchStats) -> None:
        bad = np.flatnonzero((st.nan > 0) | (st.inf > 0))
        if bad.size:
            shown = ", ".join(str(c) for c in bad[:10]) + (", ..." if bad.size > 10 else "")
            raise ValueError(
                f"nan_policy='raise': the batch holds {int(st.nan.sum())} NaN and "
                f"{int(st.inf.sum())} infinite values (channels {shown}); expected finite "
                "values only. The running statistics were not changed."
            )

    def _check_channels(self, nchan: int, what: str) -> None:
        state = self._state
        if state is not None and state.num_channels != nchan:
            raise ValueError(
                f"{what} has {nchan} channels along channel_axis={self.channel_axis}, "
                f"but the running statistics have {state.num_channels} channels"
            )

    def reset(self) -> None:
        """Forget all data (``num_channels`` becomes None again)."""
        with self._lock:
            self._state = None
            self._host_cache = None

    # ------------------------------------------------------------------ merging
    def merge(self, other: RunningStats) -> RunningStats:
        """A new ``RunningStats`` with the exact statistics of both inputs' data.

        Parameters
        ----------
        other : RunningStats
            Statistics with the same channel count (or none).

        Returns
        -------
        RunningStats
            New statistics with ``self``'s settings; neither input changes.
        """
        if not isinstance(other, RunningStats):
            raise TypeError(f"can only merge a RunningStats, got {type(other).__name__}")
        out = RunningStats(self.channel_axis, nan_policy=self.nan_policy, backend=self.backend)
        a, b = self._snapshot(), other._snapshot()
        if b is not None:
            self._check_channels(b.num_channels, "the other RunningStats")
        out._state = b if a is None else a if b is None else _host_merge(a, b)
        return out

    def __add__(self, other: RunningStats) -> RunningStats:
        if not isinstance(other, RunningStats):
            return NotImplemented
        return self.merge(other)

    def __iadd__(self, other: RunningStats) -> RunningStats:
        if not isinstance(other, RunningStats):
            return NotImplemented
        b = other._snapshot()
        if b is None:
            return self
        with self._lock:
            self._check_channels(b.num_channels, "the other RunningStats")
            self._state = b if self._state is None else _host_merge(self._state, b)
            self._host_cache = None
        return self

    def _snapshot(self) -> BatchStats | None:
        """An independent host copy of the state (None when empty)."""
        st = self._host()
        with self._lock:
            return None if st is None else st.copy()

    # ------------------------------------------------------------------ results
    @property
    def num_channels(self) -> int | None:
        """Number of channels, or None before the first non-empty update."""
        st = self._state
        return None if st is None else st.num_channels

    def _field(self, name: str) -> np.ndarray:
        st = self._host()
        if st is None:
            return np.zeros(0, np.int64 if name in ("count", "nan", "inf") else np.float64)
        return getattr(st, name).copy()

    @property
    def count(self) -> np.ndarray:
        """Values counted per channel (int64; NaNs excluded under ``nan_policy="omit"``).

        Once weighted data was merged (``update(x, sample_weight=w)``), the weighted
        count: the sum of the weights of the values counted (float64), as
        scikit-learn's ``n_samples_seen_``.
        """
        st = self._host()
        if st is not None and st.weight is not None:
            return st.weight.copy()
        return self._field("count")

    @property
    def weighted(self) -> bool:
        """True once weighted data (``sample_weight``) was merged into the statistics."""
        st = self._host()
        return st is not None and st.weight is not None

    @property
    def nan_count(self) -> np.ndarray:
        """NaNs seen per channel (int64), whatever the policy."""
        return self._field("nan")

    @property
    def inf_count(self) -> np.ndarray:
        """Infinities seen per channel (int64), whatever the policy."""
        return self._field("inf")

    def _masked(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        values = values.astype(np.float64, copy=True)
        values[~valid] = np.nan
        return values

    @property
    def mean(self) -> np.ndarray:
        """Per-channel mean (float64; NaN for channels with no values)."""
        st = self._host()
        if st is None:
            return np.zeros(0)
        return self._masked(st.mean, st.count > 0)

    def variance(self, ddof: int = 0) -> np.ndarray:
        """Per-channel variance ``M2 / (count - ddof)``; ``ddof=1`` is the unbiased one.

        Channels with ``count <= ddof`` give NaN. For weighted statistics ``count`` is the
        sum of the weights (frequency weights, as ``numpy.cov(fweights=...)``).
        """
        st = self._host()
        if st is None:
            return np.zeros(0)
        if ddof < 0:
            raise ValueError(f"ddof must be >= 0, got {ddof}")
        denom = st.weight_sum() - ddof
        valid = denom > 0
        out = np.full(st.count.shape, np.nan)
        np.divide(st.m2, denom, out=out, where=valid)
        return out

    @property
    def var(self) -> np.ndarray:
        """Per-channel population variance (ddof=0, float64)."""
        return self.variance(0)

    @property
    def std(self) -> np.ndarray:
        """Per-channel population standard deviation (ddof=0, float64)."""
        return np.sqrt(self.variance(0))

    @property
    def min(self) -> np.ndarray:
        """Per-channel minimum (float64; NaN for channels with no values)."""
        st = self._host()
        return np.zeros(0) if st is None else self._masked(st.min, st.count > 0)

    @property
    def max(self) -> np.ndarray:
        """Per-channel maximum (float64; NaN for channels with no values)."""
        st = self._host()
        return np.zeros(0) if st is None else self._masked(st.max, st.count > 0)

    def to_normalizer(self, eps: float = 1e-5, weight=None, bias=None):
        """The frozen normalizer ``(x - mean) / sqrt(var + eps) * weight + bias``."""
        from .normalizer import Normalizer

        if self._state is None:
            raise ValueError("to_normalizer() needs statistics: call update() with data first")
        return Normalizer(self.mean, self.var, eps=eps, weight=weight, bias=bias,
                          channel_axis=self.channel_axis, backend=self.backend)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """The state as plain numpy arrays and scalars (see :meth:`from_dict`)."""
        st = self._snapshot() or BatchStats.empty(0)
        weight = {} if st.weight is None else {"weight": st.weight}
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "channel_axis": self.channel_axis,
            "nan_policy": self.nan_policy,
            "count": st.count,
            "mean": st.mean,
            "mean_lo": st.mean_lo,
            "m2": st.m2,
            "min": st.min,
            "max": st.max,
            "nan_count": st.nan,
            "inf_count": st.inf,
            **weight,
        }

    @classmethod
    def from_dict(cls, d: dict, *, backend: str = "auto") -> RunningStats:
        """Rebuild a ``RunningStats`` from :meth:`to_dict` output (validated)."""
        missing = [k for k in ("version", "channel_axis", "nan_policy", *_ARRAY_FIELDS)
                   if k not in d]
        if missing:
            raise ValueError(f"RunningStats data is missing the fields {missing}")
        version = int(np.asarray(d["version"]))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"RunningStats data has format version {version}, newer than this nbbn "
                f"supports ({FORMAT_VERSION}); upgrade nbbn"
            )
        rs = cls(int(np.asarray(d["channel_axis"])), nan_policy=str(np.asarray(d["nan_policy"])),
                 backend=backend)
        arrays = [np.asarray(d[k]) for k in _ARRAY_FIELDS]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1 or arrays[0].ndim != 1:
            raise ValueError(f"RunningStats arrays must all have one shape (C,), got {shapes}")
        count = arrays[0]
        if count.dtype.kind not in "iu" or (count < 0).any():
            raise ValueError("RunningStats count must hold non-negative integers")
        # mean_lo (the rest of the mean below float64's rounding) came with nbbn 0.2;
        # files without it read as exact float64 means
        mean_lo = np.asarray(d.get("mean_lo", np.zeros_like(arrays[1], np.float64)))
        if mean_lo.shape != count.shape:
            raise ValueError(f"RunningStats mean_lo must have shape {count.shape}, "
                             f"got {mean_lo.shape}")
        # weight (the weight sums of weighted statistics) is present only when weighted
        weight = d.get("weight")
        if weight is not None:
            weight = np.asarray(weight)
            if (weight.shape != count.shape or weight.dtype.kind != "f"
                    or not np.isfinite(weight).all() or (weight < 0).any()):
                raise ValueError(f"RunningStats weight must hold finite non-negative floats "
                                 f"of shape {count.shape}, got {weight.dtype} {weight.shape}")
        if count.shape[0] > 0:
            count, mean, m2, mn, mx, nnan, ninf = arrays
            rs._state = BatchStats.from_fields(count=count, mean=mean, mean_lo=mean_lo, m2=m2,
                                               min=mn, max=mx, nan=nnan, inf=ninf,
                                               weight=weight)
        return rs

    def save(self, path) -> None:
        """Write the state to an ``.npz`` file atomically (temp file, fsync, rename).

        The file carries the format name and version and a SHA-256 checksum of its
        contents, checked by :meth:`load`.
        """
        write_stats(path, self.to_dict())

    @classmethod
    def load(cls, path, *, backend: str = "auto") -> RunningStats:
        """Read a file written by :meth:`save`; a corrupt or foreign file raises ValueError."""
        return cls.from_dict(read_stats(path), backend=backend)

    def __repr__(self) -> str:
        return (f"RunningStats(channel_axis={self.channel_axis}, nan_policy={self.nan_policy!r},"
                f" num_channels={self.num_channels}, count={self.count.tolist()[:8]})")


def _host_merge(a, b: BatchStats) -> BatchStats:
    """``b`` merged into ``a`` (a state of any backend, replaced by host statistics)."""
    return backends.resolve("cpu").merge(a, b)


def channel_stats(x, channel_axis: int = 1, *, nan_policy: str = "propagate",
                  backend: str = "auto") -> RunningStats:
    """Per-channel statistics of one array, as a :class:`RunningStats`.

    Equivalent to ``RunningStats(channel_axis, nan_policy=...).update(x)``.
    """
    return RunningStats(channel_axis, nan_policy=nan_policy, backend=backend).update(x)
