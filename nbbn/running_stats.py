"""``RunningStats``: exact pooled per-channel statistics over a stream of batches."""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import backends
from ._histogram import Histogram
from ._interrupt import deferred_sigint
from ._labels import (
    check_columns,
    check_coords,
    check_names,
    kept_coord,
    shown,
    table_columns,
)
from ._layout import Checked, check_channel_axis
from ._policy import check_policy, policy_code
from ._statsfile import FORMAT_NAME, read_stats, write_stats
from ._weights import check_sample_weight, nonfinite_in_absent_rows, nonfinite_in_sparse_rows
from .backends._stats import COUNT_LIMIT, BatchStats, count_limit_error

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
    channel_axis : int or str, default 1
        The axis that indexes channels (``1`` for NCHW/NCL, ``-1`` for channels-last), or
        a dimension name for xarray DataArrays (``"band"``).
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        "propagate": a NaN makes its channel's mean, variance, min and max NaN (as numpy
        and torch). "omit": NaNs are skipped per channel, so counts may differ between
        channels (as scikit-learn's ``StandardScaler``). "raise": a batch holding a NaN
        or an infinity (in a row of weight 0 too) raises ``ValueError`` and is not
        applied.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Where the kernels run; "auto" follows the input array.
    channel_names : sequence of str, optional
        A name per channel (a table's column names); see :attr:`channel_names`.

    Attributes
    ----------
    histogram : Histogram or None
        Exact per-channel counts of every level, kept by a fit of images with
        ``histogram=True`` (:class:`~nbbn.ImageSource`; ``histogram.percentile(q)``).
        :meth:`update` goes on counting into it (uint8 and uint16 numpy batches);
        saved and loaded with the statistics; merging keeps it only when both sides
        have one.
    skipped : list of str
        ``"file: reason"`` for each file a fit left out (``on_error="skip"``).

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

    channel_axis = Checked(check_channel_axis, "The channel axis (an int, or a DataArray's "
                           "dimension name), checked when set.")
    backend = Checked(backends.check_name, "Where the kernels run, checked when set.")
    nan_policy = Checked(check_policy, "What a NaN does (\"propagate\", \"omit\", "
                         "\"raise\"), checked when set.")

    def __init__(self, channel_axis: int | str = 1, *, nan_policy: str = "propagate",
                 backend: str = "auto", channel_names: Sequence[str] | None = None) -> None:
        self.channel_axis = channel_axis  # (checked when set: Checked)
        self._names: tuple[str, ...] | None = check_names(channel_names, None)
        self._given_names = self._names  # (what reset() keeps: not a batch's columns)
        self.nan_policy = nan_policy  # (checked when set: Checked)
        self.backend = backend
        # BatchStats on the host, or a backend's state on its device
        self._state: Any = None
        self._host_cache: tuple | None = None
        self._lock: Any = threading.Lock()
        _live.add(self)  # (its lock is taken over a fork: _before_fork)
        self._histogram: Histogram | None = None
        self.skipped: list[str] = []
        # (dimension name, coordinate or None) of the channels of an xarray input
        self._channel_coord: tuple | None = None

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict:
        with self._lock:  # (the histogram of the same batches as the statistics)
            return self._fields(self._read_locked(BatchStats.copy, None))

    def _fields(self, st: BatchStats | None) -> dict:
        """What ``__setstate__`` takes, with ``st`` as the state."""
        return {"channel_axis": self.channel_axis, "nan_policy": self.nan_policy,
                "backend": self.backend, "state": st, "channel_names": self._names,
                "channel_coord": self._channel_coord, "given_names": self._given_names,
                "histogram": None if self.histogram is None else self.histogram.copy(),
                "skipped": list(self.skipped)}

    def __setstate__(self, d: dict) -> None:
        self.__init__(d["channel_axis"], nan_policy=d["nan_policy"],  # type: ignore[misc]
                      backend=d["backend"], channel_names=d.get("channel_names"))
        self._state = d["state"]
        # (unchecked: a copy or pickle holds what the object held, an old one too)
        self._histogram, self.skipped = d.get("histogram"), list(d.get("skipped", []))
        self._channel_coord = d.get("channel_coord")
        self._given_names = d.get("given_names", self._names)

    # ------------------------------------------------------------------ updating
    def update(self, batch, sample_weight=None) -> RunningStats:
        """Merge the statistics of ``batch`` (any ndim >= 1) into the running state.

        The update applies whole or not at all: on any error the state is unchanged.
        Several threads may call ``update`` on one object at once; the kernels run
        outside the state's lock (and release the GIL) and only the final merge is
        serialized, except for a wide table of few rows, which one thread merges into
        the state as it reads it, under the lock, while no other thread holds it (the
        others compute theirs outside it).

        Parameters
        ----------
        batch : array_like
            Values along ``channel_axis`` are channels; every other axis is reduced. A
            numpy array (any dtype of float16/32/64 or integers, any strides), a device
            array (torch CUDA tensor, CuPy, Numba) for the CUDA backend, a dask array
            (reduced chunk by chunk on the active dask scheduler), an xarray DataArray, or
            a scipy sparse matrix or array (its columns are the channels, or its rows
            with ``channel_axis=0``; the zeros it does not store count as zeros; CPU).
            An empty batch counts nothing; the first one fixes the channel count. A
            pandas or polars DataFrame (``channel_axis`` -1 or 1): the first batch's
            columns become :attr:`channel_names`, and a batch whose columns differ from
            them (another order too) is refused.
        sample_weight : array_like of shape (N,), optional
            Frequency weights, one per row along axis 0 (finite, >= 0): a row of weight
            ``k`` counts as ``k`` copies of itself, a row of weight 0 as absent (a batch
            of weights all 0 counts nothing, as an empty one). The
            statistics become weighted (``count`` reports the sum of the weights, as
            scikit-learn's ``n_samples_seen_``). Booleans weigh 0 and 1. Host (numpy,
            torch CPU, scipy sparse) batches only: not a device or dask array.

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
            of range, or (``nan_policy="raise"``) it holds a NaN or an infinity, or the
            statistics keep a :attr:`histogram` that ``batch`` cannot be counted in;
            ``sample_weight`` has another shape than (N,), a negative or non-finite
            weight, a sum beyond float64's range, or ``channel_axis`` is 0.
        BackendUnavailableError
            ``sample_weight`` with a device array (no weighted GPU kernels) or a dask
            array (no weighted dask reduction), before the weights are read.
        """
        return self._update(batch, None, sample_weight)

    def _update(self, batch, counts, sample_weight=None) -> RunningStats:
        """:meth:`update`; ``counts``: the batch's histogram counts if computed elsewhere."""
        if backends.is_sparse(batch):
            return self._update_sparse(batch, sample_weight)
        columns = table_columns(batch, self.channel_axis)
        check_columns(self._names, columns, "the batch")  # (again under the lock)
        return self._update_arrays(batch, counts, sample_weight, columns)

    def _update_arrays(self, batch, counts, sample_weight, columns) -> RunningStats:
        be = backends.resolve(self.backend, batch)
        inp = be.prepare(batch, self.channel_axis, "batch")
        self._check_channels(inp.channels, "batch")
        # (again under the lock; here first, so that a DataArray of other labels is
        # refused before its data is read: a dask-backed one was computed whole)
        check_coords(self._channel_coord, getattr(inp, "channel_coord", None), "the batch",
                     dims=getattr(batch, "dims", None))
        weight = None
        if sample_weight is not None:
            if self.histogram is not None:
                raise ValueError("sample_weight with statistics that keep a histogram: the "
                                 "histogram counts values, not weights")
            inner = getattr(inp, "be", be)  # (an xarray DataArray's: of its data)
            if not (getattr(be, "WEIGHTS", True) and getattr(inner, "WEIGHTS", True)):
                # (before the all-zero return below: zero weights on a device or dask
                # batch were taken, where any other raised; and before the weights are
                # read: a dask array of weights was computed, then refused)
                be.reduce_weighted(inp, policy_code(self.nan_policy), np.empty(0))
            weight = check_sample_weight(sample_weight, inp.array.shape[0], inp.axis,
                                         self.channel_axis, inp.array.ndim)
            _check_weight_per_channel(weight, inp.size, inp.channels)
        if self.nan_policy == "raise" and weight is not None and not weight.all():
            nan, inf, bad = nonfinite_in_absent_rows(inp, weight)
            if bad.size:
                raise ValueError(_nonfinite_message(nan, inf, bad, " in rows of weight 0 "
                                                    "(absent from the statistics, but "
                                                    "'raise' checks the batch whole)"))
        if inp.size == 0 or (weight is not None and not weight.any()):
            # (all weights 0: nothing is counted, as for an empty batch)
            return self._keep_channels(inp.channels,
                                       getattr(inp, "channel_coord", self._channel_coord),
                                       columns)
        if self.histogram is not None and counts is None:
            counts = _histogram_counts(self.histogram, batch, self.channel_axis)
        if weight is None and self._merge_in_place(be, inp, counts, columns):
            return self
        if weight is None:
            part = be.reduce(inp, policy_code(self.nan_policy))
        else:
            part = be.reduce_weighted(inp, policy_code(self.nan_policy), weight)
        return self._commit(be, part, inp.channels, counts,
                            getattr(inp, "channel_coord", self._channel_coord), columns)

    def _commit(self, be, part, nchan: int, counts, coord, columns=None) -> RunningStats:
        """Merge a batch's statistics ``part`` (of backend ``be``) into the state;
        ``columns``: a DataFrame batch's column names (see :meth:`_first_names`)."""
        if self.nan_policy == "raise":
            self._raise_on_nonfinite(be.summary(part))
        with self._lock:
            def merge():
                if getattr(self._state, "weight", None) is not None:
                    # a weighted state is merged on the host (device states hold none)
                    return _host_merge(self._state, be.summary(part))
                return be.merge(self._state, part)

            self._merge_locked(nchan, coord, columns, counts, merge)
        return self

    def _merge_in_place(self, be, inp, counts, columns) -> bool:
        """A batch the backend merges into the state as it computes it (``reduce_into``:
        a wide table of few rows, whose statistics are as large as the table), under
        the lock, when no other thread holds it (they compute their batches outside it:
        this one then does too); False, nothing changed, where it does not."""
        find = getattr(be, "in_place_table", None)
        if find is None or self._state is None or self.nan_policy == "raise":
            return False  # ("raise": the batch is checked before the state changes)
        policy = policy_code(self.nan_policy)
        table = find(inp, policy)
        if table is None:
            return False
        # Ctrl-C is held back until the merge has ended: it runs on several threads, into
        # the state itself, and an interrupt between the chunks left the worker's channels
        # merged and the caller's not (or, just after the acquire, the lock held forever)
        with deferred_sigint():
            if not self._lock.acquire(blocking=False):
                return False
            try:
                return self._merge_locked(
                    inp.channels, getattr(inp, "channel_coord", self._channel_coord),
                    columns, counts, lambda: be.reduce_into(table, policy, self._state))
            finally:
                self._lock.release()

    def _merge_locked(self, nchan: int, coord, columns, counts, merge) -> bool:
        """Under the lock: the checks another thread may have changed the answer to, the
        new state ``merge()`` returns (None: it merged nothing, and False is returned),
        and what follows a merge."""
        self._check_channels(nchan, "batch")  # another thread may have started
        check_coords(self._channel_coord, coord, "the batch")
        names = self._first_names(columns)
        self._host_cache = None
        before = _counted(self._state)
        try:
            state = merge()
            if state is None:
                return False
            self._state = state
        except BaseException:
            # A KeyboardInterrupt can arrive just after a merge into the state in place
            # returned (a compiled merge is never stopped halfway): the batch is then in
            # the state, and the rest of the commit follows it.
            if before is None or _counted(self._state) == before:
                raise
            self._committed(counts, coord, names)
            raise
        self._committed(counts, coord, names)
        return True

    def _committed(self, counts, coord, names) -> None:
        """What follows a batch's merge into the state (under the lock)."""
        self._host_cache = None
        if counts is not None and self.histogram is not None:
            self.histogram.counts += counts
        self._channel_coord = kept_coord(self._channel_coord, coord)
        if names is not None:
            self._names = names

    def _first_names(self, columns: tuple[str, ...] | None) -> tuple[str, ...] | None:
        """Under the lock: a DataFrame batch's ``columns`` checked against the channel
        names (two threads' first batches may order them differently), and returned when
        they are to name the channels: the first batch's, as ``nbbn.fit`` of a table
        names them (assigned by the caller once the batch is merged)."""
        check_columns(self._names, columns, "the batch")
        if columns is None or self._state is not None or self._names is not None:
            return None
        return None if any(c.endswith("\x00") for c in columns) else columns

    def _keep_channels(self, nchan: int, coord, columns=None) -> RunningStats:
        """After a batch that counts nothing: the first one with channels fixes the
        channel count (statistics of no data, count 0), so that a later batch of another
        count is refused as after any other batch."""
        if nchan == 0 or self._state is not None:
            return self  # (a batch of another count was refused by _check_channels)
        with self._lock:
            self._check_channels(nchan, "batch")
            check_coords(self._channel_coord, coord, "the batch")
            names = self._first_names(columns)
            hist = self._histogram
            if self._state is None and hist is not None and hist.num_channels != nchan:
                # (the statistics took the batch's channel count and the histogram kept
                # its own: save wrote a file that load refused)
                raise ValueError(f"batch has {nchan} channels, but these statistics keep a "
                                 f"histogram of {hist.num_channels} channels")
            if self._state is None:
                self._state = BatchStats.empty(nchan)
                self._host_cache = None
                self._channel_coord = coord
                if names is not None:
                    self._names = names
        return self

    def _update_sparse(self, batch, sample_weight) -> RunningStats:
        """:meth:`update` of a scipy sparse matrix: its columns (rows for
        ``channel_axis=0``) are the channels, on the CPU."""
        from .backends import cpu_sparse

        if self.backend == "cuda":
            raise TypeError("batch is a scipy sparse matrix, which the CPU backend reduces, "
                            "but backend='cuda' was asked for: use backend='auto' or 'cpu'")
        if not isinstance(self.channel_axis, int) or self.channel_axis not in (-2, -1, 0, 1):
            raise ValueError(f"channel_axis={self.channel_axis!r} does not fit a sparse "
                             "matrix: expected -1 or 1 (columns are channels), or 0 or -2 "
                             "(rows)")
        if self.histogram is not None:
            raise ValueError("a sparse batch with statistics that keep a histogram: the "
                             "histogram counts dense values; pass batch.toarray()")
        x = cpu_sparse.as_compressed(batch)
        axis = self.channel_axis % 2
        if axis == 0:
            x = x.T  # CSR <-> CSC, no copy: the rows become the columns
        self._check_channels(x.shape[1], "batch")
        weight = None
        if sample_weight is not None:
            weight = check_sample_weight(sample_weight, x.shape[0], axis, self.channel_axis)
        if self.nan_policy == "raise" and weight is not None and not weight.all():
            # (as for a dense batch: "raise" checks the batch whole, also the rows of
            # weight 0 the kernel skips; a sparse one took their NaNs)
            nan, inf, bad = nonfinite_in_sparse_rows(x, np.flatnonzero(weight == 0))
            if bad.size:
                raise ValueError(_nonfinite_message(nan, inf, bad, " in rows of weight 0 "
                                                    "(absent from the statistics, but "
                                                    "'raise' checks the batch whole)"))
        if x.shape[0] == 0 or x.shape[1] == 0 or (weight is not None and not weight.any()):
            return self._keep_channels(x.shape[1], self._channel_coord)
        be = backends.resolve("cpu")
        part = cpu_sparse.reduce(x, policy_code(self.nan_policy), weight)
        return self._commit(be, part, x.shape[1], None, self._channel_coord)

    def _read(self, take, empty):
        """``take(st)``: new arrays (or numbers) from the state as host statistics, taken
        under the lock, since updates merge into a host state in place; ``empty`` before
        the first batch. A device state's host copy is cached while the state does not
        change. (Each read used to copy the whole host state first: 67 MB for 2**20
        features, three times per ``nbbn.sklearn`` ``partial_fit``.)"""
        with self._lock:
            return self._read_locked(take, empty)

    def _read_locked(self, take, empty):
        """:meth:`_read` with the lock held by the caller."""
        st = self._state
        if st is None:
            return empty
        cached = self._host_cache
        if cached is None or cached[0] is not st:
            cached = self._host_cache = (st, backends.to_host(st))
        return take(cached[1])

    @staticmethod
    def _raise_on_nonfinite(st: BatchStats) -> None:
        bad = np.flatnonzero((st.nan > 0) | (st.inf > 0))
        if bad.size:
            raise ValueError(_nonfinite_message(int(st.nan.sum()), int(st.inf.sum()), bad))

    def _check_channels(self, nchan: int, what: str) -> None:
        state = self._state
        if self._names is None and state is not None and state.num_channels == nchan:
            return  # the common case, in fewer steps
        names = self._names
        if names is not None and len(names) != nchan:
            raise ValueError(f"{what} has {nchan} channels along channel_axis="
                             f"{self.channel_axis}, but channel_names has {len(names)} names "
                             f"{shown(names)}")
        state = self._state
        if state is not None and state.num_channels != nchan:
            raise ValueError(
                f"{what} has {nchan} channels along channel_axis={self.channel_axis!r}, "
                f"but the running statistics have {state.num_channels} channels"
            )

    def reset(self) -> None:
        """Forget all data (``num_channels`` becomes None again), and what came with it:
        channel names taken from a batch's columns, a DataArray's channel coordinate
        (names given to the constructor, set on :attr:`channel_names`, read by
        :meth:`from_dict` or :meth:`load`, or given to either side of a merge stay)."""
        with self._lock:
            self._state = None
            self._host_cache = None
            self.histogram, self.skipped = None, []
            self._names, self._channel_coord = self._given_names, None

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

        Raises
        ------
        ValueError
            Other channel counts, names or channel coordinates, or statistics of another
            ``nan_policy`` that counted NaNs (into "raise": NaNs or infinities), which
            that policy treated otherwise.
        """
        if not isinstance(other, RunningStats):
            raise TypeError(f"can only merge a RunningStats, got {type(other).__name__}")
        out = RunningStats(self.channel_axis, nan_policy=self.nan_policy, backend=self.backend)
        with self._lock:  # (each side's histogram of the same batches as its statistics)
            a = self._read_locked(BatchStats.copy, None)
            a_hist = _copied(self._histogram)
        with other._lock:  # ``other`` is read under its lock, and copied only if kept
            b = None if other._state is None else backends.to_host(other._state)
            if b is not None:
                self._check_mergeable(other, b)
            b_hist = _copied(other._histogram)
            nothing = (_nothing(a), _nothing(b))  # (before a, a copy, is merged into)
            weighted = _weighted(a) or _weighted(b)
            state = a if b is None else b.copy() if a is None else _host_merge(a, b)
        first = a if a is not None else b
        nchan = None if first is None else first.num_channels
        out._names = check_names(_merged_names(self._names, other._names), nchan)
        out._given_names = _merged_names(self._given_names, other._given_names)
        # (the sum of two histograms of their statistics is one of the merge's: not
        # checked again, which sums every bin, and copies a GPU state to the host)
        hist = None if weighted else _merged_extras(nothing[0], a_hist, nothing[1], b_hist,
                                                    nchan)
        out._state = state
        out._histogram, out.skipped = hist, self.skipped + other.skipped
        out._channel_coord = kept_coord(self._channel_coord, other._channel_coord)
        return out

    def __add__(self, other: RunningStats) -> RunningStats:
        if not isinstance(other, RunningStats):
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other) -> RunningStats:
        """``0 + stats``: ``sum(list_of_stats)`` starts from 0 (a new object, as ``+``)."""
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self.merge(RunningStats(self.channel_axis, nan_policy=self.nan_policy,
                                           backend=self.backend))
        return NotImplemented

    def __iadd__(self, other: RunningStats) -> RunningStats:
        if not isinstance(other, RunningStats):
            return NotImplemented
        names = _merged_names(self._names, other._names)
        given = _merged_names(self._given_names, other._given_names)
        with other._lock:  # (its histogram of the same batches as its statistics)
            b = other._read_locked(BatchStats.copy, None)
            b_hist = _copied(other._histogram)
        # Ctrl-C is held back until the whole merge is assigned: the statistics are
        # merged in place, and an interrupt just after left them holding ``other``
        # without its histogram, names or skipped files (a retry counted it twice)
        with deferred_sigint(), self._lock:
            if b is not None:
                self._check_mergeable(other, b)
            mine = self._state
            nchan = b.num_channels if b is not None else \
                None if mine is None else mine.num_channels
            names = check_names(names, nchan)
            # (weighted statistics keep no histogram: one side weighted, the merge too)
            weighted = _weighted(None if mine is None else backends.to_host(mine)) or \
                _weighted(b)
            hist = None if weighted else _merged_extras(
                counted_nothing(self), self._histogram, _nothing(b), b_hist, nchan)
            stopped = None
            if b is not None:  # (the last step that can fail: nothing is assigned before)
                before = _counted(mine)
                try:
                    self._state = b if mine is None else _host_merge(mine, b)
                except BaseException as exc:
                    # (as update's: an interrupt just after the merge into the state in
                    # place returned; the rest of the merge follows it, then it is raised)
                    if before is None or _counted(mine) == before:
                        raise
                    stopped = exc
                self._host_cache = None
            self._names, self._given_names = names, given
            self._histogram = hist  # (consistent by construction, as merge's)
            self.skipped = self.skipped + other.skipped
            self._channel_coord = kept_coord(self._channel_coord, other._channel_coord)
            if stopped is not None:
                raise stopped
        return self

    def _check_mergeable(self, other: RunningStats, b: BatchStats) -> None:
        """Before a merge of ``other`` (its host state ``b``): the same channel count,
        channel coordinate and treatment of its NaNs, or ValueError."""
        self._check_channels(b.num_channels, "the other RunningStats")
        check_coords(self._channel_coord, other._channel_coord, "the other RunningStats")
        _check_policies(self.nan_policy, other.nan_policy, b)

    def _snapshot(self) -> BatchStats | None:
        """An independent host copy of the state (None when empty)."""
        return self._read(BatchStats.copy, None)

    def _shared_copy(self) -> RunningStats:
        """A copy (as ``copy.copy``) whose state is a read-only view of this one's host
        state, not a copy of it. Its updates never write into it: a merge as the batch
        is read (``cpu.reduce_into``) writes a new state from it, tile by tile, and any
        other merge (``cpu.merge``) copies it first. This one must not be updated in
        place while the copy reads it: ``nbbn.sklearn``'s ``partial_fit`` merges each
        batch into such a copy and replaces ``stats_`` by it, never updating ``stats_``
        itself (a (4, 1048576) float32 batch 1.12-1.25x faster than into ``copy.copy``:
        benchmarks.md, "Twenty-fourth session")."""
        out = type(self).__new__(type(self))
        out.__setstate__(self._fields(self._read(BatchStats.read_only, None)))
        return out

    # ------------------------------------------------------------------ results
    @property
    def histogram(self) -> Histogram | None:
        """The exact per-channel counts of every level (see the class's Attributes), or
        None. Assigning checks it against the statistics: a :class:`Histogram` of their
        channels whose bins sum to each channel's number of values (``count``, unless
        the statistics are weighted, which keep no histogram: ``sample_weight`` is
        refused with one) (``Histogram.empty(C, dtype)`` before the first update), or
        None to drop it; anything else is refused and nothing changes (a histogram set
        after an update was saved, and ``load`` refused the file)."""
        return self._histogram

    @histogram.setter
    def histogram(self, hist: Histogram | None) -> None:
        if hist is not None:
            if not isinstance(hist, Histogram):
                raise TypeError(f"RunningStats.histogram takes a Histogram or None, got "
                                f"{type(hist).__name__}")
            st = self._state  # (not under the lock: a merge assigns while it holds it)
            host = None if st is None else backends.to_host(st)
            if host is not None and host.weight is not None:
                # (update refuses weights with a histogram; a histogram assigned after
                # weighted data was kept, its percentiles unweighted beside a weighted
                # mean, and saved)
                raise ValueError(f"{_WEIGHTED_HISTOGRAM}. Nothing was changed")
            count = np.zeros(0, np.int64) if host is None else host.count
            try:
                _check_histogram(hist, count)
            except ValueError as e:
                raise ValueError(f"{e}; set the histogram before the first update "
                                 "(Histogram.empty(C, dtype)) or leave it None. Nothing "
                                 "was changed.") from None
        self._histogram = hist

    @property
    def channel_names(self) -> tuple[str, ...] | None:
        """A name per channel (a tuple of str), or None when the channels have no names.

        :func:`nbbn.fit` sets it to the column names of a table (Parquet, CSV, a
        DataFrame) or the data variables of an ``xarray.Dataset``, and :meth:`update` to
        the columns of a first batch that is a DataFrame; a DataFrame batch with other
        columns is then refused, by ``update`` and by :meth:`to_normalizer`'s
        normalizer (whose :attr:`~nbbn.Normalizer.channel_names` they become). It is saved with the
        statistics, shown by ``nbbn info``, and kept by merging: merging statistics whose
        names differ is a ``ValueError``; statistics without names take the other's.
        Assigning checks that there is one str per channel (any sequence; None clears it).
        """
        return self._names

    @channel_names.setter
    def channel_names(self, names: Sequence[str] | None) -> None:
        self._names = self._given_names = check_names(names, self.num_channels)

    @property
    def num_channels(self) -> int | None:
        """Number of channels, or None before the first update (an empty batch of C
        channels, shape (0, C) for example, sets it too, with counts 0)."""
        st = self._state
        return None if st is None else st.num_channels

    def _field(self, name: str) -> np.ndarray:
        return self._read(lambda st: getattr(st, name).copy(), np.zeros(
            0, np.int64 if name in ("count", "nan", "inf") else np.float64))

    @property
    def count(self) -> np.ndarray:
        """Values counted per channel (int64; NaNs excluded under ``nan_policy="omit"``).

        Once weighted data was merged (``update(x, sample_weight=w)``), the weighted
        count: the sum of the weights of the values counted (float64), as
        scikit-learn's ``n_samples_seen_``.
        """
        return self._read(lambda st: (st.count if st.weight is None else st.weight).copy(),
                          np.zeros(0, np.int64))

    @property
    def weighted(self) -> bool:
        """True once weighted data (``sample_weight``) was merged into the statistics."""
        return self._read(lambda st: st.weight is not None, False)

    @property
    def nan_count(self) -> np.ndarray:
        """NaNs seen per channel (int64), whatever the policy; not weighted (a NaN in a row
        of weight 3 counts once, where ``count`` of weighted statistics is the weight sum)."""
        return self._field("nan")

    @property
    def inf_count(self) -> np.ndarray:
        """Infinities seen per channel (int64), whatever the policy; not weighted."""
        return self._field("inf")

    def _masked(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        values = values.astype(np.float64, copy=True)
        values[~valid] = np.nan
        return values

    @property
    def mean(self) -> np.ndarray:
        """Per-channel mean (float64; NaN for channels with no values)."""
        return self._read(lambda st: self._masked(st.mean, st.count > 0), np.zeros(0))

    def variance(self, ddof: int = 0) -> np.ndarray:
        """Per-channel variance ``M2 / (count - ddof)``; ``ddof=1`` is the unbiased one.

        Parameters
        ----------
        ddof : int or float, default 0
            Delta degrees of freedom, >= 0 (numpy's ``var(ddof=...)``).

        Returns
        -------
        numpy.ndarray
            float64 (C,); NaN for channels with ``count <= ddof``. For weighted statistics
            ``count`` is the sum of the weights (frequency weights, as
            ``numpy.cov(fweights=...)``). Empty before the first batch.
        """
        if isinstance(ddof, (str, bytes)) or not isinstance(ddof, (int, float, np.number)):
            raise TypeError(f"ddof must be a number, got {type(ddof).__name__}")
        if not ddof >= 0:  # (checked whatever the state, so an empty one says so too)
            raise ValueError(f"ddof must be >= 0, got {ddof}")
        try:
            dof = float(ddof)
        except OverflowError:  # (a Python int past float64's range: 10**400)
            raise ValueError("ddof must be a number within float64's range, got an integer "
                             "too large for float64") from None

        def take(st: BatchStats) -> np.ndarray:
            denom = st.weight_sum() - dof
            out = np.full(st.count.shape, np.nan)
            np.divide(st.m2, denom, out=out, where=denom > 0)
            return out

        return self._read(take, np.zeros(0))

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
        return self._read(lambda st: self._masked(st.min, st.count > 0), np.zeros(0))

    @property
    def max(self) -> np.ndarray:
        """Per-channel maximum (float64; NaN for channels with no values)."""
        return self._read(lambda st: self._masked(st.max, st.count > 0), np.zeros(0))

    def to_normalizer(self, eps: float = 1e-5, weight=None, bias=None):
        """The frozen normalizer ``(x - mean) / sqrt(var + eps) * weight + bias``.

        Parameters
        ----------
        eps : float, default 1e-5
            Added to the (biased) variance, >= 0.
        weight, bias : array_like, optional
            Per-channel scale and shift after normalizing (ones and zeros by default).

        Returns
        -------
        nbbn.Normalizer
            With this object's ``channel_axis``, backend and channel names.

        Raises
        ------
        ValueError
            The statistics counted no value yet.
        """
        from .normalizer import Normalizer

        if counted_nothing(self):
            why = ("no update yet" if self._state is None else
                   "the batches so far held no values, or only NaNs skipped under "
                   "nan_policy='omit'")
            raise ValueError(f"to_normalizer() needs statistics of some values, but these "
                             f"counted none ({why}): call update() with data first")
        norm = Normalizer(self.mean, self.var, eps=eps, weight=weight, bias=bias,
                          channel_axis=self.channel_axis, backend=self.backend,
                          channel_names=self._names)
        norm._channel_coord = self._channel_coord  # a DataArray input's labels, checked
        return norm

    def to_xarray(self, dim: str | None = None):
        """The statistics as an ``xarray.Dataset`` over the channel dimension.

        Variables ``count``, ``mean``, ``var``, ``std``, ``min``, ``max``,
        ``nan_count``; the channel coordinate of the first xarray input that had one
        (the labels of later inputs, and of merged statistics, are checked against it
        and never replace it).

        Parameters
        ----------
        dim : str, optional
            The channel dimension's name. Default: that of the first xarray input with
            a channel coordinate (else of the first xarray input), ``channel_axis`` when
            it is a name, else ``"channel"``.

        Returns
        -------
        xarray.Dataset
            Needs xarray (``pip install 'nbbn[xarray]'``).
        """
        from ._xarray import stats_dataset

        return stats_dataset(self, dim, self._channel_coord)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """The state as plain numpy arrays and scalars (see :meth:`from_dict`)."""
        extras: dict = {}
        with self._lock:  # the statistics and the histogram of the same batches
            state = self._state
            st = BatchStats.empty(0) if state is None else backends.to_host(state).copy()
            if self.histogram is not None:
                extras["histogram"] = self.histogram.counts.copy()
            if self.skipped:
                extras["skipped"] = np.array(self.skipped, dtype=str)
            names = self._names
        weight = {} if st.weight is None else {"weight": st.weight}
        return extras | {
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
            **({} if names is None else {"channel_names": np.asarray(names, dtype=np.str_)}),
            **weight,
        }

    @classmethod
    def from_dict(cls, d: dict, *, backend: str = "auto") -> RunningStats:
        """Rebuild a ``RunningStats`` from :meth:`to_dict` output (validated).

        Parameters
        ----------
        d : mapping
            The dict of :meth:`to_dict` (or a loaded ``.npz`` of it).
        backend : {"auto", "cpu", "cuda"}, default "auto"
            The backend of the rebuilt statistics.

        Returns
        -------
        RunningStats

        Raises
        ------
        TypeError
            ``d`` is not a mapping.
        ValueError
            Missing or inconsistent fields, or a newer format version.
        """
        # (a mapping, an open .npz, or what reads as one: [] and `in`; not a sequence,
        # whose [] and `in` read items, nor a path)
        if isinstance(d, (str, bytes, os.PathLike, list, tuple, np.ndarray)) or not (
                isinstance(d, Mapping) or (hasattr(d, "__getitem__")
                                           and hasattr(d, "__contains__"))):
            hint = (": for a statistics file, use RunningStats.load(path)"
                    if isinstance(d, (str, os.PathLike)) else "")
            raise TypeError(f"from_dict takes the dict of RunningStats.to_dict(), got "
                            f"{type(d).__name__}{hint}")
        missing = [k for k in ("version", "channel_axis", "nan_policy", *_ARRAY_FIELDS)
                   if k not in d]
        if missing:
            raise ValueError(f"RunningStats data is missing the fields {missing}")
        stored = np.asarray(d["version"])
        if stored.ndim or stored.dtype.kind not in "iu":
            raise ValueError(f"RunningStats version must be an integer, got {stored!r}")
        version = int(stored)
        if version < 1:
            raise ValueError(f"RunningStats version must be >= 1, got {version}")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"RunningStats data has format version {version}, newer than this nbbn "
                f"supports ({FORMAT_VERSION}); upgrade nbbn"
            )
        axis = np.asarray(d["channel_axis"])  # a dimension name (str) for xarray data
        if axis.ndim or axis.dtype.kind not in "iuU":
            raise ValueError(f"RunningStats channel_axis must be an int or a dimension name, "
                             f"got {axis!r}")
        rs = cls(str(axis) if axis.dtype.kind == "U" else int(axis),
                 nan_policy=str(np.asarray(d["nan_policy"])), backend=backend)
        arrays = [np.asarray(d[k]) for k in _ARRAY_FIELDS]
        # (empty fields of no channels have no dtype to speak of: a state sent through
        # JSON comes back with [] for each, which numpy reads as float64)
        arrays = [a.astype(np.int64 if k in ("count", "nan_count", "inf_count")
                           else np.float64) if a.size == 0 and a.dtype.kind in "fiu" else a
                  for k, a in zip(_ARRAY_FIELDS, arrays, strict=True)]
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1 or arrays[0].ndim != 1:
            raise ValueError(f"RunningStats arrays must all have one shape (C,), got {shapes}")
        count = arrays[0]
        for k, a in zip(_ARRAY_FIELDS, arrays, strict=True):
            if k in ("count", "nan_count", "inf_count") and (
                    a.dtype.kind not in "iu" or (a < 0).any()
                    or (a.size and int(a.max()) > COUNT_LIMIT)):
                raise ValueError(f"RunningStats {k} must hold non-negative integers of at "
                                 "most 2**62 (nbbn's limit per channel)")
            if a.dtype.kind not in "iuf":
                raise ValueError(f"RunningStats {k} must hold numbers, got dtype {a.dtype}")
            if k == "m2" and (a.dtype.kind != "f" or (a < 0).any()):  # (NaN: "propagate")
                raise ValueError("RunningStats m2 must hold floats >= 0 (or NaN)")
        # mean_lo (the rest of the mean below float64's rounding) came after the first
        # files were written; files without it read as exact float64 means
        mean_lo = np.asarray(d.get("mean_lo", np.zeros_like(arrays[1], np.float64)))
        if mean_lo.shape != count.shape or mean_lo.dtype.kind != "f":
            raise ValueError(f"RunningStats mean_lo must hold floats of shape {count.shape}, "
                             f"got {mean_lo.dtype} {mean_lo.shape}")
        if "channel_names" in d:  # optional: older files have none
            names = np.asarray(d["channel_names"])
            if names.dtype.kind != "U" or names.ndim != 1 or (
                    count.shape[0] and names.shape != count.shape):  # (empty: any number)
                raise ValueError(f"RunningStats channel_names must be {count.shape[0]} str, "
                                 f"got dtype {names.dtype} and shape {names.shape}")
            # (kept by reset(), as names given to the constructor: the file does not
            # say where they came from)
            rs._names = rs._given_names = check_names(tuple(str(n) for n in names), None)
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
            with np.errstate(invalid="ignore"):
                bad = np.flatnonzero((count > 0) & (mn > mx))
            if bad.size:
                raise ValueError(f"RunningStats min exceeds max in channels "
                                 f"{bad[:10].tolist()}, which hold values")
            # a NaN min or max comes only from a NaN, an infinite one from an infinity
            held = count > 0
            for what, bad in (("NaN", held & (np.isnan(mn) | np.isnan(mx)) & (nnan == 0)),
                              ("infinite", held & (np.isinf(mn) | np.isinf(mx)) & (ninf == 0))):
                if bad.any():
                    raise ValueError(f"RunningStats min or max is {what} in channels "
                                     f"{np.flatnonzero(bad)[:10].tolist()}, where no "
                                     f"{'NaN' if what == 'NaN' else 'infinity'} was counted")
            # a NaN mean comes only from a NaN or from infinities of both signs, and the
            # rest of a finite mean is finite: else the next update is NaN throughout
            with np.errstate(invalid="ignore"):
                bad = np.flatnonzero(((count > 0) & np.isnan(mean) & (nnan == 0) & (ninf == 0))
                                     | (np.isfinite(mean) & ~np.isfinite(mean_lo)))
            if bad.size:
                raise ValueError(f"RunningStats mean or mean_lo is NaN or infinite in channels "
                                 f"{bad[:10].tolist()}, where no NaN or infinity was counted")
            # an infinite mean comes only from an infinity; the counts of NaNs (which
            # "propagate" counts as values) and infinities are among the values counted;
            # one value has M2 0; the rest of the mean is below its last bit (a larger
            # one moved the mean only at the next update)
            with np.errstate(invalid="ignore"):
                spacing = np.spacing(np.abs(mean))
                for what, wrong in (
                        ("an infinite mean where no infinity was counted",
                         held & np.isinf(mean) & (ninf == 0)),
                        ("more infinities (or, with nan_policy 'propagate', NaNs and "
                         "infinities) than values counted",
                         (ninf + (nnan if rs.nan_policy == "propagate" else 0)) > count),
                        ("an M2 other than 0 for a single value",
                         (count == 1) & np.isfinite(m2) & (m2 != 0)),
                        ("a mean_lo above the last bit of its mean",
                         np.isfinite(mean) & (np.abs(mean_lo) > spacing))):
                    if wrong.any():
                        raise ValueError(f"RunningStats has {what} in channels "
                                         f"{np.flatnonzero(wrong)[:10].tolist()}")
            if weight is not None and ((weight > 0) != (count > 0)).any():
                raise ValueError("RunningStats weight must be > 0 exactly where count is")
            # a channel of no values holds none: its other fields are the empty ones
            # (a hand-made dict's leaked into the next merge: a min of 1 in statistics
            # of 10 alone); the NaNs an "omit" skipped stay counted
            if not held.all():
                mean, mean_lo, m2, mn, mx = (np.array(a, np.float64)
                                             for a in (mean, mean_lo, m2, mn, mx))
                mean[~held], mean_lo[~held], m2[~held] = 0.0, 0.0, 0.0
                mn[~held], mx[~held] = np.inf, -np.inf
            rs._state = BatchStats.from_fields(count=count, mean=mean, mean_lo=mean_lo, m2=m2,
                                               min=mn, max=mx, nan=nnan, inf=ninf,
                                               weight=weight)
        if "histogram" in d and weight is not None:
            # (a file of weighted statistics with a histogram, which nbbn wrote before
            # 2026-12-08: its statistics are kept, the histogram dropped)
            warnings.warn(f"{_WEIGHTED_HISTOGRAM}: the histogram of these statistics is "
                          "dropped", RuntimeWarning, stacklevel=3)
        elif "histogram" in d:
            hist = Histogram(d["histogram"])
            _check_histogram(hist, count)
            rs._histogram = hist
        rs.skipped = [str(s) for s in np.asarray(d.get("skipped", []))]
        return rs

    def save(self, path) -> None:
        """Write the state to an ``.npz`` file atomically (temp file, fsync, rename).

        The file carries the format name and version and a SHA-256 checksum of its
        contents, checked by :meth:`load`.

        Parameters
        ----------
        path : str or os.PathLike
            The file; an existing one is replaced whole or not at all.

        Raises
        ------
        ValueError
            ``path`` is named as a text file (``.json``, ``.csv``, ...): the file is an
            ``.npz`` archive whatever its name.
        """
        write_stats(path, self.to_dict())

    @classmethod
    def load(cls, path, *, backend: str = "auto") -> RunningStats:
        """Read a file written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.npz`` file.
        backend : {"auto", "cpu", "cuda"}, default "auto"
            The backend of the loaded statistics.

        Returns
        -------
        RunningStats

        Raises
        ------
        ValueError
            A corrupt or foreign file (checksum, format name or version, fields).
        """
        d = read_stats(path)
        try:
            return cls.from_dict(d, backend=backend)
        except ValueError as exc:  # (the file, not only the field)
            raise ValueError(f"{os.fspath(path)}: {exc}") from None

    def __repr__(self) -> str:
        names = "" if self._names is None else f", channel_names={shown(self._names)}"
        count = self.count.tolist()  # (a dimension name quoted; a long count cut, with "...")
        counts = str(count) if len(count) <= 8 else f"{str(count[:8])[:-1]}, ...]"
        return (f"RunningStats(channel_axis={self.channel_axis!r}, "
                f"nan_policy={self.nan_policy!r}, num_channels={self.num_channels}{names}, "
                f"count={counts})")


# Every RunningStats alive, for the fork hooks below. A fork copies a lock held by
# another thread (an update's merge, which runs the whole kernel under it for a wide
# table of few rows) into the child held for good: the child's first use of the object
# waited forever (a DataLoader worker forked while a thread updated it: 10 of 10).
_live: weakref.WeakSet[RunningStats] = weakref.WeakSet()
_held_for_fork: list[RunningStats] = []
FORK_WAIT_S = 10.0  # how long a fork waits for an update in progress to end


class _ForkedMidUpdate:
    """The lock of a RunningStats that an update held when the process forked (one that
    did not end within ``FORK_WAIT_S``, or held by the forking thread itself): its state
    in the child may be half-merged, so every use raises instead of reading it."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        raise RuntimeError(
            "this RunningStats was being updated by another thread when the process "
            "forked, and its state in this process may be half-merged: fork (or start "
            "DataLoader workers) while no thread updates it, or use the 'spawn' start "
            "method")

    def release(self) -> None:
        pass

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        pass


def _before_fork() -> None:
    """Hold every RunningStats' lock over a fork, waiting for updates in progress to
    end (up to ``FORK_WAIT_S`` each), so that the child gets whole states."""
    for rs in list(_live):
        # (a state that was mid-update at an earlier fork stays refused; its lock
        # raised here, and the states after it were refused in the new child too)
        if not isinstance(rs._lock, _ForkedMidUpdate) and rs._lock.acquire(
                timeout=FORK_WAIT_S):
            _held_for_fork.append(rs)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop()._lock.release()


def _after_fork_in_child() -> None:
    """A free lock for each state that was whole at the fork; one that refuses every use
    for a state an update still held."""
    whole = {id(rs) for rs in _held_for_fork}
    _held_for_fork.clear()
    for rs in list(_live):
        rs._lock = threading.Lock() if id(rs) in whole else _ForkedMidUpdate()


if hasattr(os, "register_at_fork"):  # (not on Windows, which does not fork)
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _merged_names(a: tuple[str, ...] | None, b: tuple[str, ...] | None
                  ) -> tuple[str, ...] | None:
    """The channel names of a merge: equal names, or one side's when the other has none."""
    if a is not None and b is not None and a != b:
        diff = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                    min(len(a), len(b)))
        raise ValueError(f"cannot merge statistics of different channels: channel_names "
                         f"{shown(a)} and {shown(b)} (first difference at channel {diff})")
    return a if a is not None else b


def _check_policies(mine: str, theirs: str, b: BatchStats) -> None:
    """ValueError when statistics of another ``nan_policy`` hold values that policy
    treated otherwise: NaNs skipped ("omit") or made NaN ("propagate") cannot be turned
    into the other's, and "raise" statistics hold no NaN or infinity. Without such
    values the policies agree, and the merge is exact."""
    if mine == theirs:
        return
    bad = b.nan > 0
    if mine == "raise":
        bad = bad | (b.inf > 0)
    if bad.any():
        chans = np.flatnonzero(bad)[:8].tolist()
        raise ValueError(
            f"cannot merge statistics of nan_policy={theirs!r} that counted NaN"
            f"{' or infinite' if mine == 'raise' else ''} values (channels {chans}) into "
            f"statistics of nan_policy={mine!r}, which treats them otherwise: merge "
            "statistics of one policy. The statistics were not changed.")


def _counted(state) -> int | None:
    """The first channel's count plus its NaN and infinity counts (NaNs and infinities
    can be in the count as well: only its change matters), which a merge of any batch
    with values changes; None for a device state (merged into a new host state, never
    in place). Three scalar reads, not a sum over the channels: it runs on every
    update."""
    if not isinstance(state, BatchStats):
        return None
    ints = state.ints
    return int(ints[0, 0]) + int(ints[1, 0]) + int(ints[2, 0])


def _histogram_counts(hist: Histogram, batch, channel_axis: int | str) -> np.ndarray:
    """The histogram counts of ``batch``, or ValueError when it cannot be counted."""
    if not isinstance(batch, np.ndarray) or not isinstance(channel_axis, int) or \
            batch.dtype.kind != "u" or batch.dtype.itemsize != hist.bits // 8:
        # (either byte order: a big-endian uint16 is counted as its values)
        raise ValueError(f"these statistics keep a {hist.bits}-bit histogram (a fit of images "
                         f"with histogram=True), so update() takes uint{hist.bits} numpy "
                         f"arrays only, got {type(batch).__name__} {getattr(batch, 'dtype', '')};"
                         " set .histogram = None first to drop it")
    part = Histogram.empty(hist.num_channels, batch.dtype)
    part.add(np.moveaxis(batch, channel_axis, -1))
    return part.counts


def _copied(hist: Histogram | None) -> Histogram | None:
    return None if hist is None else hist.copy()


def _merged_extras(a_nothing: bool, a_hist: Histogram | None, b_nothing: bool,
                   b_hist: Histogram | None, nchan: int | None) -> Histogram | None:
    """The histogram of merged statistics (whether each side counted no value, their
    histograms, the merge's channel count): the sum, when both sides have one (a side
    that saw no value, or only empty batches, keeps the other's); ValueError for a
    histogram kept with statistics of another channel count (one set before any data,
    merged with statistics of empty batches of other channels: load refused the file)."""
    if b_nothing:  # (a copy: the merge is a new object, neither input changes)
        out = _copied(a_hist)
    elif a_nothing:
        out = _copied(b_hist)
    elif a_hist is None or b_hist is None:
        return None
    else:
        out = a_hist.copy()
        out += b_hist
    if out is not None and nchan is not None and out.num_channels != nchan:
        raise ValueError(f"the histogram of {out.num_channels} channels cannot be kept with "
                         f"statistics of {nchan} channels: merge statistics of the same "
                         "channels, or set .histogram = None first to drop it")
    return out


def _weighted(st: BatchStats | None) -> bool:
    """Whether the host state ``st`` holds weighted statistics."""
    return st is not None and st.weight is not None


def _nothing(st: BatchStats | None) -> bool:
    """Whether the host state ``st`` counted no value (:func:`counted_nothing`)."""
    return st is None or not st.ints[0].any()


_WEIGHTED_HISTOGRAM = ("statistics of weighted data (sample_weight) cannot keep a histogram: "
                       "it counts values, not weights")


def _check_histogram(hist: Histogram, count: np.ndarray) -> None:
    """ValueError unless ``hist`` counts the values of statistics of counts ``count``:
    their channels, each channel's bins summing to its count (the check of
    :meth:`RunningStats.from_dict` and of assigning :attr:`RunningStats.histogram`)."""
    if count.shape[0] == 0 and not hist.counts.any():
        return  # (a histogram set before any data: its channels are its own)
    if hist.num_channels != count.shape[0]:
        raise ValueError(f"RunningStats histogram has {hist.num_channels} channels, the "
                         f"statistics {count.shape[0]}: expected a histogram of their "
                         "channels")
    # (a bin counts values of its channel: one above the count is a damaged file, and
    # could pass int64 in a merge whose counts are within the limit)
    if (hist.counts > count.astype(np.int64)[:, None]).any():
        raise ValueError("RunningStats histogram has a bin above its channel's count")
    _check_histogram_sums(hist.counts, count)  # (every value counted is in one bin)


def _check_histogram_sums(hist: np.ndarray, count: np.ndarray) -> None:
    """ValueError unless each channel's bins sum to its count (a float64 sum first: an
    int64 sum of 65,536 bins of up to 2**62 could wrap)."""
    rough = hist.sum(axis=1, dtype=np.float64)
    sums = hist.sum(axis=1) if (rough < 2.0 ** 62 * 1.5).all() else rough
    bad = np.flatnonzero(sums != count.astype(np.int64))
    if bad.size:
        c = int(bad[0])
        raise ValueError(f"RunningStats histogram counts {int(sums[c])} values in channel "
                         f"{c}, the statistics {int(count[c])}: expected its bins to sum "
                         "to each channel's count")


def counted_nothing(rs: RunningStats) -> bool:
    """Whether ``rs`` counted no value: no update yet, only empty batches, or only NaNs
    skipped (read without its lock, which a caller may hold). Such statistics normalize
    nothing (``to_normalizer``, ``nbbn.transform``), give precise BN nothing to write,
    and leave a merge's histogram to the other side."""
    st = rs._state
    return _nothing(None if st is None else backends.to_host(st))


def _check_weight_per_channel(weight: np.ndarray, size: int, nchan: int) -> None:
    """ValueError when a channel's weighted count in this batch would overflow float64:
    each row's weight counts once per value of the channel in that row (an (N, C, H, W)
    batch: H * W times), which the per-row sum check does not see."""
    per_row = size // max(1, nchan * weight.shape[0])
    with np.errstate(over="ignore"):
        total = float(weight.sum()) * per_row
    if not np.isfinite(total):
        raise ValueError(f"the weighted count would overflow float64: the weights sum to "
                         f"{float(weight.sum())!r}, and each counts {per_row} values per "
                         "channel; scale them down. Nothing was changed.")


def _host_merge(a, b: BatchStats) -> BatchStats:
    """``b`` merged into ``a`` (a state of any backend, replaced by host statistics);
    ValueError, nothing changed, when a count would pass :data:`COUNT_LIMIT` (states
    loaded with counts near it: real data never gets there)."""
    a_ints = backends.to_host(a).ints
    # (counts are >= 0: no overflow here; the largest counts first, which is enough
    # unless a count nears the limit: two reductions, not two temporaries of the state)
    if int(b.ints.max(initial=0)) > COUNT_LIMIT - int(a_ints.max(initial=0)) and (
            b.ints > COUNT_LIMIT - a_ints).any():
        raise count_limit_error(a_ints, b.ints)
    return backends.resolve("cpu").merge(a, b)


def channel_stats(x, channel_axis: int | str = 1, *, nan_policy: str = "propagate",
                  backend: str = "auto") -> RunningStats:
    """Per-channel statistics of one array, as a :class:`RunningStats`.

    Equivalent to ``RunningStats(channel_axis, nan_policy=..., backend=...).update(x)``.

    Parameters
    ----------
    x : array_like
        The data (numpy, a CPU or CUDA tensor, a device array, a DataFrame, ...).
    channel_axis : int or str, default 1
        The channel axis (a dimension name for a DataArray).
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        As for :class:`RunningStats`.
    backend : {"auto", "cpu", "cuda"}, default "auto"

    Returns
    -------
    RunningStats
    """
    return RunningStats(channel_axis, nan_policy=nan_policy, backend=backend).update(x)


def _nonfinite_message(nan: int, inf: int, bad: np.ndarray, where: str = "") -> str:
    """``nan_policy="raise"``'s refusal of a batch holding ``nan`` NaNs and ``inf``
    infinities in the channels ``bad``."""
    shown = ", ".join(str(c) for c in bad[:10]) + (", ..." if bad.size > 10 else "")
    return (f"nan_policy='raise': the batch holds {nan} NaN and {inf} infinite values "
            f"(channels {shown}){where}; expected finite values only. The running "
            "statistics were not changed.")

