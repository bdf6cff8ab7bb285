"""``nbbn.fit`` and ``nbbn.transform``: whole datasets in constant memory, resumable.

A reader thread produces the batches of a :mod:`source <nbbn.sources>` (mapping pages,
decompressing, slicing zarr/HDF5, pulling from an iterable) while the calling thread
computes on the previous batch; the kernels release the GIL. At most two batches exist
at a time (one in use, one read ahead), so memory stays at about two batches.

Batches are applied in source order by one thread, so the merge order is fixed: a fit
resumed from a checkpoint gives the same bits as an uninterrupted one (same batch size,
same backend). Ctrl-C stops after the current batch, writes a checkpoint and raises
:class:`FitInterrupted`, whose message says how to resume.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path

import numpy as np

from ._durable import remove_stale_temps
from ._layout import check_axis, normalize_axis
from .checkpoint import Checkpoint, check_fingerprint, load_checkpoint, save_checkpoint
from .errors import CheckpointError, FitInterrupted
from .normalizer import Normalizer, result_dtype
from .running_stats import RunningStats, _check_policy
from .sources import Acquire, Batch, IterableSource, Position, Slot, Source, open_source

CHECKPOINT_INTERVAL_S = 5.0
"""Default seconds between two checkpoint writes of :func:`fit`."""

READ_AHEAD = 2
"""Batches alive at once: the one being computed on and the one being read."""

__all__ = ["CHECKPOINT_INTERVAL_S", "FitInterrupted", "fit", "transform"]


# ------------------------------------------------------------------------ machinery
class _Stopped(BaseException):
    """Raised inside the reader's generator when the pipeline is shutting down."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


class _Prefetcher:
    """Run a batch generator in a reader thread with at most ``depth`` batches alive."""

    def __init__(self, make: Callable[[Acquire], Generator[Batch, None, None]],
                 depth: int = READ_AHEAD):
        self._free: queue.Queue[Slot] = queue.Queue()
        for _ in range(depth):
            self._free.put(Slot())
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._gen = make(self._acquire)
        self._thread = threading.Thread(target=self._run, name="nbbn-reader", daemon=True)
        self._thread.start()

    def _acquire(self) -> Slot:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return self._free.get(timeout=0.05)
            except queue.Empty:
                continue

    def _run(self) -> None:
        try:
            for batch in self._gen:
                self._ready.put(batch)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._ready.put(_Failed(exc))
            return
        finally:
            self._gen.close()
        self._ready.put(_END)

    def get(self) -> Batch | None:
        """The next batch, None at the end; re-raises an error of the reader."""
        item = self._ready.get()
        if item is _END:
            self._ready.put(_END)
            return None
        if isinstance(item, _Failed):
            self._ready.put(item)
            raise item.exc
        return item

    def release(self, batch: Batch) -> None:
        """The batch has been used: drop it and let the reader fill its slot again."""
        slot = batch.slot
        batch.slot = None
        batch.done()
        if slot is not None:
            self._free.put(slot)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)  # a reader stuck in a user iterable is left (daemon)
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Batch):
                item.done()


class _SigintGuard:
    """Turn Ctrl-C into a flag while a batch is computed, so the state and position agree.

    While the main thread waits for the reader, nothing is half-done, so Ctrl-C raises
    KeyboardInterrupt at once. Outside the main thread (or with a custom SIGINT
    handler installed) this does nothing.
    """

    def __init__(self) -> None:
        self.pending = False
        self.waiting = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            old = signal.getsignal(signal.SIGINT)
            if old is not signal.SIG_IGN and old is not None:
                self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.pending = True
        if self.waiting:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class _Progress:
    """A tqdm bar counting bytes (so its rate reads in GB/s) with rows as a postfix."""

    def __init__(self, enabled: bool, desc: str, total_bytes: int | None, initial_bytes: int,
                 rows: int) -> None:
        self.bar = None
        if not enabled:
            return
        from tqdm import tqdm

        tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.bar = tqdm(total=total_bytes, initial=initial_bytes, desc=desc, unit="B",
                        unit_scale=True, unit_divisor=1000, file=sys.stderr, dynamic_ncols=True,
                        mininterval=0.2 if tty else 5.0, smoothing=0.1)
        self.bar.set_postfix_str(f"{rows:,} rows", refresh=False)

    def update(self, nbytes: int, rows: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rows:,} rows", refresh=False)
            self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _say(enabled: bool, msg: str) -> None:
    if enabled:
        print(f"nbbn: {msg}", file=sys.stderr, flush=True)


def _check_batch_size(batch_size) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return int(batch_size)


def _check_source_axis(src: Source, channel_axis: int, ndim: int | None = None) -> None:
    """``channel_axis`` must exist in the data and not be axis 0 (the batch axis)."""
    if ndim is None:
        if src.row_shape is None or not any(s.size for s in src.shards):
            return
        ndim = 1 + len(src.row_shape)
    if ndim < 2:
        raise ValueError(
            f"{src.description} is 1-d: batches are taken along axis 0, so there is no channel "
            "axis; reshape the data to (N, 1) for a single channel")
    axis = normalize_axis(channel_axis, ndim)
    if axis == 0:
        raise ValueError(
            f"channel_axis={channel_axis} is axis 0 of the {ndim}-d data, the axis batches are "
            "taken along; the channels must be on another axis (1 for (N, C, ...), -1 for "
            "(N, ..., C))")


def _batch_error(src: Source, batch: Batch, exc: Exception) -> Exception:
    """The same error, saying which shard and rows it came from."""
    name = src.shards[batch.shard].name if batch.shard < len(src.shards) else \
        f"item {batch.shard}"
    if type(exc) in (ValueError, TypeError):
        return type(exc)(f"{name}, rows {batch.start}-{batch.stop}: {exc}")
    return exc


# ---------------------------------------------------------------------------- fit
def fit(source, channel_axis: int = 1, *, batch_size: int | None = None,
        nan_policy: str = "propagate", progress: bool = True, checkpoint=None,
        resume: bool = False, key=None, backend: str = "auto",
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S) -> RunningStats:
    """Per-channel statistics of a whole dataset, read in batches along axis 0.

    Parameters
    ----------
    source : array, path, zarr array, h5py dataset or iterable of arrays
        See :func:`nbbn.sources.open_source`: a numpy array or memmap; a ``.npy``
        (memory-mapped), ``.npz`` (member ``key``), HDF5 (``file.h5:dataset``) or zarr
        path; a folder or glob of ``.npy``/``.npz`` shards; a zarr array or h5py
        dataset; an iterable of arrays (e.g. a torch DataLoader; ``key=0`` for ``(x, y)``).
    channel_axis : int, default 1
        The channel axis of the data (not 0: batches are taken along axis 0).
    batch_size : int, optional
        Rows per batch; default about 64 MiB of data per batch (for an iterable: each
        item as it comes). A resumed fit uses the checkpoint's batch size.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        As in :class:`~nbbn.RunningStats`.
    progress : bool, default True
        Show a progress bar (tqdm, on stderr) with bytes, GB/s, rows and ETA.
    checkpoint : path, optional
        Write the statistics so far, the position in the source and the source's
        fingerprint to this file every ``checkpoint_interval`` seconds, on an error,
        on Ctrl-C and at the end (atomically). Without ``resume``, an existing file is
        refused (it may hold the progress of an interrupted fit).
    resume : bool, default False
        Continue from ``checkpoint``: its statistics and position are used. The shards
        already counted must be unchanged (path, size, modification time, shape, dtype);
        shards not read yet may have changed or been added and are read as they are now.
        If the file does not exist yet the fit starts from the beginning, so one command
        line serves for the first run and every restart.
    key : str or int, optional
        The array in an ``.npz``/HDF5 file or zarr group, or the element of the items of
        an iterable.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Passed to :class:`~nbbn.RunningStats`.
    checkpoint_interval : float, default 5.0
        Seconds between checkpoint writes (0: after every batch).

    Returns
    -------
    RunningStats
        The statistics of every row of the source; bit for bit the same whether or not
        the fit was interrupted and resumed.

    Raises
    ------
    FitInterrupted
        On Ctrl-C, after the current batch and the checkpoint write.
    CheckpointError
        The checkpoint exists without ``resume``, or is corrupt, truncated, from a newer
        nbbn, or for another source or other settings.
    """
    channel_axis = check_axis(channel_axis)
    _check_policy(nan_policy)
    batch_size = _check_batch_size(batch_size)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH (the file to resume from)")
    if not checkpoint_interval >= 0:
        raise ValueError(f"checkpoint_interval must be >= 0, got {checkpoint_interval!r}")
    RunningStats(channel_axis, nan_policy=nan_policy, backend=backend)  # validate names
    src = open_source(source, key=key, channel_axis=channel_axis)
    try:
        return _fit(src, channel_axis, batch_size, nan_policy, progress,
                    None if checkpoint is None else Path(checkpoint), resume, key, backend,
                    float(checkpoint_interval))
    finally:
        src.close()


def _fit(src: Source, channel_axis, batch_size, nan_policy, progress, ckpt_path, resume, key,
         backend, interval) -> RunningStats:
    _check_source_axis(src, channel_axis)
    stats = RunningStats(channel_axis, nan_policy=nan_policy, backend=backend)
    start = Position()
    rows_done = bytes_done = 0
    fingerprint = src.fingerprint() if ckpt_path is not None else None
    settings = {"channel_axis": channel_axis, "nan_policy": nan_policy,
                "key": key, "batch_size": batch_size or src.default_batch_size()}
    if ckpt_path is not None:
        if ckpt_path.exists():
            if not resume:
                raise CheckpointError(
                    f"checkpoint {ckpt_path} already exists (it may hold the progress of an "
                    "interrupted fit); pass resume=True (--resume) to continue it, or delete it "
                    "to start over")
            ck = load_checkpoint(ckpt_path, backend=backend)
            settings = _resumed_settings(ck, settings, batch_size, ckpt_path)
            check_fingerprint(ck.fingerprint, fingerprint, ckpt_path, ck.position["shard"])
            stats, rows_done, bytes_done = ck.stats, ck.rows_done, ck.bytes_done
            start = Position(ck.position["shard"], ck.position["row"],
                             ck.position.get("digest"))
            done = " (complete; only shards added since are read)" if ck.complete else ""
            _say(progress, f"resuming from {ckpt_path} after {rows_done:,} rows{done}")
        else:
            if not ckpt_path.parent.is_dir():
                raise FileNotFoundError(f"checkpoint {ckpt_path}: the folder "
                                        f"{ckpt_path.parent} does not exist")
            if resume:
                _say(progress, f"no checkpoint at {ckpt_path} yet; starting from the beginning")
        remove_stale_temps(ckpt_path)

    pos = start

    def write(complete: bool = False) -> None:
        name = src.shards[pos.shard].name if pos.shard < len(src.shards) else None
        position = {"shard": pos.shard, "row": pos.row, "name": name, "digest": pos.digest}
        save_checkpoint(ckpt_path, Checkpoint(stats, position, fingerprint, settings,
                                              rows_done, bytes_done, complete))

    bs = settings["batch_size"]
    iterable = isinstance(src, IterableSource)
    bar = _Progress(progress, "nbbn fit", src.nbytes, bytes_done, rows_done)
    guard = _SigintGuard()
    pf = None
    last_write = time.monotonic()
    dirty = interrupted = in_batch = False
    try:
        with guard:
            guard.waiting = True  # nothing applied yet: Ctrl-C may stop at once
            pf = _Prefetcher(lambda acquire: src.batches(bs, start, acquire))
            while True:
                guard.waiting = True
                batch = pf.get()
                guard.waiting = False
                if batch is None:
                    break
                in_batch = True
                try:
                    if iterable:
                        _check_source_axis(src, channel_axis, batch.data.ndim)
                    stats.update(batch.data)
                except Exception as exc:
                    in_batch = False
                    new = _batch_error(src, batch, exc)
                    if new is exc:
                        raise
                    raise new from exc
                pos = Position(batch.shard, batch.stop, batch.digest)
                rows_done += batch.rows
                bytes_done += batch.nbytes
                dirty = True
                in_batch = False
                pf.release(batch)
                bar.update(batch.nbytes, rows_done)
                if guard.pending:
                    interrupted = True
                    break
                if ckpt_path is not None and time.monotonic() - last_write >= interval:
                    write()
                    dirty = False
                    last_write = time.monotonic()
    except KeyboardInterrupt:
        if in_batch:  # not from our guard (another thread's fit): the batch may be half-done
            raise
        interrupted = True  # while waiting for the reader: nothing is half-applied
    except BaseException as exc:
        if ckpt_path is not None and dirty:
            try:
                write()
                if hasattr(exc, "add_note"):
                    exc.add_note(f"nbbn: the statistics of the {rows_done:,} rows before the "
                                 f"error were saved to {ckpt_path}; resume=True continues")
            except Exception:  # noqa: BLE001, S110 - the original error matters more
                pass
        raise
    finally:
        if pf is not None:
            pf.close()
        bar.close()
    if interrupted:
        if ckpt_path is not None:
            write()
        raise FitInterrupted(stats, ckpt_path, rows_done)
    if ckpt_path is not None:
        write(complete=True)
    return stats


def _resumed_settings(ck: Checkpoint, settings: dict, batch_size, path) -> dict:
    """The checkpoint's settings, after checking that this call agrees with them."""
    saved = dict(ck.settings)
    for name in ("channel_axis", "nan_policy", "key"):
        if saved.get(name) != settings[name]:
            raise CheckpointError(
                f"checkpoint {path} was written with {name}={saved.get(name)!r}, but this fit "
                f"has {name}={settings[name]!r}; use the same settings to resume")
    if batch_size is not None and saved.get("batch_size") != batch_size:
        raise CheckpointError(
            f"checkpoint {path} was written with batch_size={saved.get('batch_size')}, but "
            f"batch_size={batch_size} was given; resume with the same batch size (or none) "
            "so the result is the same as an uninterrupted fit")
    return saved


# ------------------------------------------------------------------------ transform
def transform(source, stats_or_normalizer, out, *, channel_axis: int | None = None,
              batch_size: int | None = None, progress: bool = True, dtype=None, key=None,
              eps: float = 1e-5):
    """Normalize a whole dataset batch by batch into ``out``.

    Parameters
    ----------
    source
        As for :func:`fit`, except iterables (their length is not known up front).
    stats_or_normalizer : RunningStats, Normalizer or path
        A :class:`~nbbn.RunningStats` (applied as ``(x - mean) / sqrt(var + eps)``), a
        :class:`~nbbn.Normalizer`, or a statistics file written by ``RunningStats.save``.
    out : path, numpy array or zarr array
        A path ending in ``.npy`` (written through a temporary file in the same folder and
        renamed when complete) or ``.zarr``, or an existing array of the source's shape
        with a float16/32/64 dtype. Must not be the source itself.
    channel_axis : int, optional
        The source's channel axis; default that of the statistics or normalizer.
    batch_size : int, optional
        Rows per batch (default about 64 MiB of input per batch).
    progress : bool, default True
        Show a progress bar.
    dtype : dtype, optional
        Output dtype for a path ``out`` (float16/32/64). Default: the input's dtype when
        it is floating, float32 for integer input (as :class:`~nbbn.Normalizer`).
    key : str, optional
        The array in an ``.npz``/HDF5 file or zarr group.
    eps : float, default 1e-5
        Added to the variance when ``stats_or_normalizer`` is statistics.

    Returns
    -------
    pathlib.Path or array
        ``Path(out)`` for a ``.npy`` path, otherwise the array written.
    """
    norm = _as_normalizer(stats_or_normalizer, channel_axis, eps)
    batch_size = _check_batch_size(batch_size)
    src = open_source(source, key=key, channel_axis=norm.channel_axis)
    try:
        return _transform(src, norm, out, batch_size, progress, dtype)
    finally:
        src.close()


def _as_normalizer(obj, channel_axis, eps) -> Normalizer:
    if isinstance(obj, (str, Path)):
        obj = RunningStats.load(obj)
    if isinstance(obj, RunningStats):
        if obj.num_channels is None:
            raise ValueError("the statistics are empty: fit some data first")
        ca = obj.channel_axis if channel_axis is None else check_axis(channel_axis)
        return Normalizer(obj.mean, obj.var, eps=eps, channel_axis=ca, backend=obj.backend)
    if isinstance(obj, Normalizer):
        if channel_axis is None or check_axis(channel_axis) == obj.channel_axis:
            return obj
        return Normalizer(obj.mean, obj.var, eps=obj.eps, weight=obj.weight, bias=obj.bias,
                          channel_axis=channel_axis, backend=obj.backend)
    raise TypeError(f"stats_or_normalizer must be a RunningStats, a Normalizer or a path to a "
                    f"statistics file, got {type(obj).__name__}")


def _transform(src: Source, norm: Normalizer, out, batch_size, progress, dtype):
    from ._outputs import open_writer

    if isinstance(src, IterableSource):
        raise TypeError("transform cannot write an iterable source: the number of rows must be "
                        "known up front; apply the Normalizer to each batch yourself")
    if src.row_shape is None or src.dtype is None:
        raise ValueError(f"{src.description} holds no data")
    _check_source_axis(src, norm.channel_axis)
    shape = (src.rows, *src.row_shape)
    nchan = shape[normalize_axis(norm.channel_axis, len(shape))]
    if nchan != norm.num_channels:
        raise ValueError(f"{src.description} has {nchan} channels along channel_axis="
                         f"{norm.channel_axis} (rows of shape {src.row_shape}), but the "
                         f"statistics have {norm.num_channels}")
    out_dtype = result_dtype(np.dtype(src.dtype)) if dtype is None else np.dtype(dtype)
    if out_dtype.kind != "f" or out_dtype.itemsize not in (2, 4, 8):
        raise ValueError(f"dtype must be float16, float32 or float64, got {out_dtype}")
    _refuse_own_input(src, out)
    bs = batch_size or src.default_batch_size() or 1
    writer = open_writer(out, shape, out_dtype, bs)
    offsets = src.shard_offsets()
    bar = _Progress(progress, "nbbn transform", src.nbytes, 0, 0)
    pf = _Prefetcher(lambda acquire: src.batches(bs, Position(), acquire))
    rows = 0
    try:
        while (batch := pf.get()) is not None:
            lo = offsets[batch.shard] + batch.start
            hi = lo + batch.rows
            dst = writer.view(lo, hi)
            try:
                norm(batch.data, out=dst)
            except Exception as exc:
                new = _batch_error(src, batch, exc)
                if new is exc:
                    raise
                raise new from exc
            writer.written(lo, hi, dst)
            rows += batch.rows
            pf.release(batch)
            bar.update(batch.nbytes, rows)
        pf.close()
        writer.commit()
    except BaseException:
        pf.close()
        writer.abort()
        raise
    finally:
        bar.close()
    return writer.result


def _refuse_own_input(src: Source, out) -> None:
    """Raise ValueError when ``out`` is (or shares memory with) one of the inputs."""
    import os

    if isinstance(out, (str, os.PathLike)):
        target = os.path.realpath(out)
        for fp in (src.fingerprint() or {}).get("shards", []):
            path = fp.get("path")
            if path is None:
                continue
            same = os.path.realpath(path) == target
            if not same and os.path.exists(out):
                try:
                    same = os.path.samefile(path, out)
                except OSError:
                    same = False
            if same:
                raise ValueError(f"out={str(out)!r} is the input {fp.get('name')}: transform "
                                 "does not overwrite its own input; write to another path")
        return
    for shard in src.shards:
        a = getattr(shard, "array", None)
        if a is out or (isinstance(a, np.ndarray) and isinstance(out, np.ndarray)
                        and np.may_share_memory(a, out)):
            raise ValueError("out shares memory with the input array: transform does not "
                             "overwrite its own input; pass a separate output array")
