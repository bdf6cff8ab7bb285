"""``nbbn.fit`` and ``nbbn.transform``: whole datasets in constant memory, resumable.

A reader thread (:mod:`nbbn._reader`) produces the batches of a
:mod:`source <nbbn.sources>` (mapping pages, decompressing, slicing zarr/HDF5, pulling
from an iterable) while the calling thread computes on the previous batch; the kernels
release the GIL. At most two batches exist at a time (one in use, one read ahead), so
memory stays at about two batches. An iterable is asked for its next item only once the
previous one is counted, as a ``for`` loop asks (a generator may reuse its buffer).

Batches are applied in source order by one thread, so the merge order is fixed: a fit
resumed from a checkpoint (:mod:`nbbn.checkpoint`) gives the same bits as an
uninterrupted one (same batch size, same backend). Ctrl-C (:mod:`nbbn._interrupt`)
stops after the current batch, writes a checkpoint and raises :class:`FitInterrupted`,
whose message says how to resume. Errors that name a parameter are raised through
:mod:`nbbn._wording`, so that ``nbbn fit`` can name its options instead.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._affine import result_dtype
from ._datasets import default_batched, open_items
from ._durable import check_file_path, remove_stale_temps
from ._interrupt import SigintGuard
from ._labels import check_columns, check_coords, kept_coord
from ._layout import check_axis
from ._outputs import Writer, open_writer
from ._progress import Progress, counted, say
from ._reader import Prefetcher
from ._shards_npy import SparseNpzShard
from ._statsfile import fitted_file
from ._torch_arrays import host_view
from ._wording import Param, add_note, check_flag, worded
from .backends import is_dask_array, is_xarray
from .checkpoint import (
    Checkpoint,
    check_fingerprint,
    encode_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from .errors import CheckpointError, FitInterrupted, ImageError
from .normalizer import Normalizer
from .running_stats import RunningStats, counted_nothing
from .sources import Batch, ChunkedSource, IterableSource, Position, Source, open_source

CHECKPOINT_INTERVAL_S = 5.0
"""Default seconds between two checkpoint writes of :func:`fit`."""

__all__ = ["CHECKPOINT_INTERVAL_S", "FitInterrupted", "fit", "refuse_own_input",
           "transform"]

_RESUME = Param("resume", True)


# ------------------------------------------------------------------------- checks
def _check_batch_size(batch_size) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise worded(TypeError, "{batch_size} must be a positive integer, got {got!r}",
                     batch_size=Param("batch_size"), got=batch_size)
    if batch_size < 1:
        raise worded(ValueError, "{batch_size} must be a positive integer, got {got!r}",
                     batch_size=Param("batch_size"), got=batch_size)
    return int(batch_size)


def _check_source_axis(src: Source, channel_axis: int, ndim: int | None = None, *,
                       from_stats: bool = False) -> None:
    """``channel_axis`` must exist in the data and not be axis 0 (the batch axis).
    ``from_stats``: the axis is the statistics' own, not one the caller passed (the
    messages say so, and name the parameter that reads the data otherwise)."""
    if ndim is None:
        if hasattr(src, "check_channel_axis"):  # an ImageSource: (1, H, W, C) batches
            return src.check_channel_axis(channel_axis)
        if src.row_shape is None or not (src.row_shape or any(s.size for s in src.shards)):
            return  # (nothing, or 1-d data of no rows, known; (0, C) is checked as (N, C))
        ndim = 1 + len(src.row_shape)
    if ndim < 2:
        table = ("pass series.to_frame() (a table: its name is the channel's), or "
                 if str(src.description).endswith("Series") else "")
        raise ValueError(
            f"{src.description} is 1-d: batches are taken along axis 0, so there is no channel "
            f"axis; {table}reshape the data to (N, 1) for a single channel")
    axis: Param | str = Param("channel_axis", channel_axis)
    hint = ""
    if from_stats:
        axis = f"the statistics' channel axis {channel_axis}"
        hint = "; pass {param} to read this data's channels on another axis"
    if not -ndim <= channel_axis < ndim:
        raise worded(ValueError, "{axis} is out of range for the {ndim}-d data of {what} "
                     "(valid: {lo} to {hi})" + hint, axis=axis, ndim=ndim,
                     what=src.description, lo=-ndim, hi=ndim - 1,
                     param=Param("channel_axis", placeholder="N"))
    if channel_axis % ndim == 0:
        raise worded(ValueError, "{axis} is axis 0 of the {ndim}-d data, the axis batches are "
                     "taken along; the channels must be on another axis (1 for (N, C, ...), "
                     "-1 for (N, ..., C))" + hint, axis=axis, ndim=ndim,
                     param=Param("channel_axis", placeholder="N"))
    names = getattr(src, "channel_names", None)
    if names is not None and channel_axis % ndim != ndim - 1:  # a table: columns are channels
        raise worded(ValueError, "the channels of {what} are its columns {names}, on the last "
                     "axis of its {ndim}-d batches; pass {last} (or leave the default for a "
                     "2-d table), not {axis}", what=src.description, names=list(names[:8]),
                     ndim=ndim, last=Param("channel_axis", -1), axis=axis)


@contextlib.contextmanager
def _naming_rows(src: Source, batch: Batch) -> Iterator[None]:
    """A ValueError or TypeError of a batch's computation says which shard and rows."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if type(exc) not in (ValueError, TypeError):  # a subclass keeps its own message
            raise
        shard = src.shards[batch.shard] if batch.shard < len(src.shards) else None
        name = f"item {batch.shard}" if shard is None else shard.name
        start = 0
        if shard is not None and shard.part_of is not None:  # (the whole array's rows)
            name, start = shard.part_of
        raise worded(type(exc), "{name}, rows {start}-{stop}: {error}", name=name,
                     start=start + batch.start, stop=start + batch.stop, error=exc) from exc


# ---------------------------------------------------------------------------- fit
@dataclass(frozen=True)
class FitSettings:
    """The validated arguments of one :func:`fit` call.

    Attributes
    ----------
    channel_axis : int
    nan_policy : str
    batch_size : int or None
        None: the checkpoint's, or about 64 MiB per batch.
    key : str, int or None
    backend : str
    progress : bool
    checkpoint : pathlib.Path or None
    resume : bool
    interval : float
        Seconds between checkpoint writes.
    batched : bool
        The items of an iterable are batches (False: samples).
    """

    channel_axis: int
    nan_policy: str
    batch_size: int | None
    key: Any
    backend: str
    progress: bool
    checkpoint: Path | None
    resume: bool
    interval: float
    batched: bool = True


# ---------------------------------------------------------------------------- fit
def fit(source, channel_axis: int | str | None = None, *, batch_size: int | None = None,
        nan_policy: str = "propagate", progress: bool = True, checkpoint=None,
        resume: bool = False, key=None, backend: str = "auto",
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S, client=None,
        batched: bool | None = None, columns=None) -> RunningStats:
    """Per-channel statistics of a whole dataset, read in batches along axis 0.

    Parameters
    ----------
    source : array, path, zarr array, h5py dataset, table, iterable of arrays or Dataset
        See :func:`nbbn.sources.open_source`: a numpy array or memmap; a ``.npy``
        (memory-mapped), ``.npz`` (member ``key``), HDF5 (``file.h5:dataset``) or zarr
        path; a folder or glob of ``.npy``/``.npz`` shards; a zarr array or h5py
        dataset; an iterable of arrays (e.g. a torch DataLoader; ``key=0`` for ``(x, y)``;
        the next item is asked for once the previous one is counted, so a generator may
        yield one buffer refilled);
        a torch ``Dataset`` (its items are samples; see ``batched``); a table (see
        ``columns``); image files (a folder, glob or list; :class:`~nbbn.ImageSource`).
    channel_axis : int or str, optional
        The channel axis of the data (not 0: batches are taken along axis 0). Default
        1, and -1 for images (:class:`~nbbn.ImageSource`, read as ``(1, H, W, C)``). A
        dimension name for an xarray DataArray (its number is kept).
    batch_size : int, optional
        Rows per batch; default about 64 MiB of data per batch (for an iterable: each
        item as it comes). A resumed fit uses the checkpoint's batch size. Refused for
        image files, each of which is one batch.
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
        A dask array is identified by its dask name only (``da.from_zarr`` derives it
        from the path, not the data): nbbn cannot check its data, so a change to rows
        already counted goes unseen; fit the path instead to have its files checked.
        If the file does not exist yet the fit starts from the beginning, so one command
        line serves for the first run and every restart.
    key : str or int, optional
        The array in an ``.npz``/HDF5 file or zarr group, or the element of the items of
        an iterable.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        Passed to :class:`~nbbn.RunningStats`.
    checkpoint_interval : float, default 5.0
        Seconds between checkpoint writes (0: after every batch).
    client : distributed.Client, str or None, optional
        Spread the source's files (or zarr/HDF5 chunks) over the workers of a
        ``dask.distributed`` cluster: a ``Client``, a scheduler address, or ``"local"`` for
        a ``LocalCluster`` of one single-threaded worker process per CPU (``pip install
        'nbbn[dask]'``). Each worker reads its own parts; the statistics equal a fit
        without ``client`` to 1e-12 relative (the merge order differs). See "Fitting
        files on a cluster" in the documentation.
    batched : bool, optional
        Whether the items of an iterable are batches (True) or samples without a batch
        axis (False; each counted as a batch of one, so ``channel_axis`` keeps its
        meaning: 1 for CHW samples, -1 for HWC). Default: samples for a torch ``Dataset``
        (map-style, read in order by a few threads, or iterable), batches for a
        ``DataLoader`` (samples when its ``batch_size`` is None) and for any other
        iterable. ``batched=True`` with a Dataset is refused. Items may differ in shape
        (images of different sizes); only their channel count must agree. The channel
        count found is printed when ``progress`` is on, and shown by the result's repr.
    columns : sequence of str, optional
        For a table (a Parquet or CSV file, folder or glob, a pandas/polars DataFrame, an
        Arrow table, an ``xarray.Dataset``): the columns to read, default every numeric
        one. A table's columns are its channels and its rows the samples: the default
        ``channel_axis=1`` (or -1) is its column axis, and any other axis is an error.
        The column names become :attr:`RunningStats.channel_names`.

    Returns
    -------
    RunningStats
        The statistics of every row of the source; bit for bit the same whether or not
        the fit was interrupted and resumed (without ``client``).

    Raises
    ------
    FitInterrupted
        On Ctrl-C, after the current batch and the checkpoint write.
    CheckpointError
        The checkpoint exists without ``resume``, or is corrupt, truncated, from a newer
        nbbn, or for another source or other settings.
    """
    if channel_axis is None:
        from ._images import looks_like_images

        channel_axis = -1 if looks_like_images(source) else 1
    channel_axis = check_axis(_dim_axis(source, channel_axis))
    batch_size = _check_batch_size(batch_size)
    resume = check_flag(resume, "resume")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise worded(TypeError, "{checkpoint} must be a path (str or os.PathLike), got "
                     "{kind} {got!r}", checkpoint=Param("checkpoint"),
                     kind=type(checkpoint).__name__, got=checkpoint)
    if resume and checkpoint is None:
        raise worded(ValueError, "{resume} needs {checkpoint} (the file to resume from)",
                     resume=_RESUME, checkpoint=Param("checkpoint", placeholder="PATH"))
    from ._images import ImageSource

    given = source.location if isinstance(source, ImageSource) else source
    if checkpoint is not None:
        check_file_path(checkpoint)
        if os.path.isdir(checkpoint):  # (it was "exists; pass resume", then a raw error)
            raise worded(IsADirectoryError, "{checkpoint} is a folder: name the checkpoint "
                         "file to write, {where}",
                         checkpoint=Param("checkpoint", os.fspath(checkpoint)),
                         where=_checkpoint_place(given, os.fspath(checkpoint)))
    if checkpoint is not None and isinstance(given, (str, os.PathLike)) and (
            why := written_into_input(os.fspath(given), os.fspath(checkpoint))):
        raise worded(ValueError, "{checkpoint} {why}",
                     checkpoint=Param("checkpoint", os.fspath(checkpoint)), why=why)
    if isinstance(checkpoint_interval, bool) or not isinstance(
            checkpoint_interval, (int, float, np.integer, np.floating)):
        raise worded(TypeError, "{interval} must be a number of seconds, got {got!r}",
                     interval=Param("checkpoint_interval"), got=checkpoint_interval)
    if not checkpoint_interval >= 0:
        raise worded(ValueError, "{interval} must be >= 0, got {got!r}",
                     interval=Param("checkpoint_interval"), got=checkpoint_interval)
    RunningStats(channel_axis, nan_policy=nan_policy, backend=backend)  # validate names
    batched = default_batched(source, batched)
    if not batched and batch_size is not None:
        raise worded(ValueError, "{batch_size} does not apply to samples ({batched}): each "
                     "sample is counted as it comes", batch_size=Param("batch_size", batch_size),
                     batched=Param("batched", False))
    cfg = FitSettings(channel_axis, nan_policy, batch_size, key, backend,
                      check_flag(progress, "progress"),
                      None if checkpoint is None else Path(checkpoint), resume,
                      float(checkpoint_interval), batched)
    src = open_source(source, key=key, channel_axis=channel_axis, columns=columns) \
        if batched else open_items(source, key=key, channel_axis=channel_axis,
                                   batched=False)
    try:
        if batch_size is not None and hasattr(src, "check_channel_axis"):  # an ImageSource
            raise worded(ValueError, "{batch_size} was given, but the source is image files: "
                         "each image is one batch of shape (1, H, W, C), whatever its size",
                         batch_size=Param("batch_size", batch_size))
        _check_source_axis(src, channel_axis)
        if client is not None and getattr(src, "channel_names", None) is not None:
            raise worded(TypeError, "a fit on a cluster ({client}) does not read tables "
                         "yet; fit {what} without it", client=Param("client",
                                                                    placeholder="..."),
                         what=src.description)
        if client is not None:
            if hasattr(src, "check_channel_axis"):  # an ImageSource
                raise ValueError(f"{src.description}: image files are decoded by threads of "
                                 "this process (ImageSource(workers=N)), not on a cluster; "
                                 "fit them without client")
            from ._distributed import fit_on_cluster

            return fit_on_cluster(src, cfg, client)
        run = _FitRun(src, cfg)
        run.start()
        return run.run()
    finally:
        src.close()


class _FitRun:
    """One fit: the statistics, the position and the counters, and its checkpoint writes."""

    def __init__(self, src: Source, cfg: FitSettings) -> None:
        self.src, self.cfg = src, cfg
        self.stats = RunningStats(cfg.channel_axis, nan_policy=cfg.nan_policy,
                                  backend=cfg.backend,
                                  channel_names=getattr(src, "channel_names", None))
        self.stats._channel_coord = getattr(src, "channel_coord", None)  # a DataArray's labels
        self.pos = Position()
        self.rollback: _Rollback | None = None
        self.channels_said = False
        self.rows_done = self.bytes_done = 0
        self.saved_rows: int | None = None  # the rows the checkpoint file holds, if any
        self.fingerprint = src.fingerprint() if cfg.checkpoint is not None else None
        self.fingerprint_bytes = None if cfg.checkpoint is None else \
            encode_fingerprint(self.fingerprint)  # (once: it is most of each write)
        self.settings = {"channel_axis": cfg.channel_axis, "nan_policy": cfg.nan_policy,
                         "key": _saved_key(cfg.key, cfg.checkpoint),
                         "batch_size": cfg.batch_size or src.default_batch_size(),
                         "batched": cfg.batched}

    def start(self) -> None:
        """Take the state of an existing checkpoint (``resume``), or check it may be made."""
        path, cfg = self.cfg.checkpoint, self.cfg
        if path is None:
            return
        if path.exists():
            if not cfg.resume:
                raise worded(CheckpointError, "checkpoint {path} already exists (it may hold "
                             "the progress of an interrupted fit); pass {resume} to continue "
                             "it, or delete it to start over", path=path, resume=_RESUME)
            ck = load_checkpoint(path, backend=cfg.backend)
            shards = getattr(self.src, "shards", None)
            row_shape = getattr(shards[0], "row_shape", None) if shards else None
            ndim = None if row_shape is None else 1 + len(row_shape)  # (images: any size)
            self.settings = _resumed_settings(ck, self.settings, cfg.batch_size, path, ndim,
                                              _keyed_by_dataset(self.fingerprint))
            self.resume_from(ck, path)
        else:
            if not path.parent.is_dir():
                raise FileNotFoundError(f"checkpoint {path}: the folder {path.parent} does "
                                        "not exist")
            check_writable_folder(path, "checkpoint")
            if cfg.resume:
                say(cfg.progress, f"no checkpoint at {path} yet; starting from the beginning")
        remove_stale_temps(path)

    def resume_from(self, ck: Checkpoint, path: Path) -> None:
        """Take the statistics and position of ``ck``, after checking the source."""
        if ck.extra.get("parts_done"):
            raise CheckpointError(
                f"checkpoint {path} was written by a distributed fit that counted parts of the "
                "source out of order; resume it on a cluster (client=..., nbbn fit --workers N "
                "or --scheduler ADDRESS)")
        check_fingerprint(ck.fingerprint, self.fingerprint, path, ck.position["shard"])
        if ck.stats.num_channels is not None or ck.stats.skipped:
            self.stats = ck.stats  # else: nothing counted yet, keep the table's names
            self.stats._channel_coord = kept_coord(self.stats._channel_coord,
                                                   getattr(self.src, "channel_coord", None))
        self.rows_done, self.bytes_done = ck.rows_done, ck.bytes_done
        self.saved_rows = ck.rows_done
        self.pos = Position(ck.position["shard"], ck.position["row"],
                            ck.position.get("digest"))
        if hasattr(self.src, "resume_pixels"):  # (images: depth and mode counted)
            self.src.resume_pixels(ck.settings.get("pixels"))
        done = " (complete; only shards added since are read)" if ck.complete else ""
        say(self.cfg.progress, f"resuming from {path} after "
            f"{counted(self.rows_done, self._unit())}{done}")

    def write(self, complete: bool = False) -> None:
        """Write the checkpoint: the statistics so far and the next row to read. Inside a
        shard whose data is checked only at its end (a zip member, whose CRC is checked
        with its last bytes), the state from before that shard: a checkpoint never holds
        rows that a later checksum error would disown (``_Rollback``).

        Parameters
        ----------
        complete : bool, default False
            The whole source has been counted.
        """
        rb = self._inside_unchecked()
        stats, pos, rows, nbytes = (rb.stats, rb.pos, rb.rows_done, rb.bytes_done) if rb \
            else (self.stats, self.pos, self.rows_done, self.bytes_done)
        shards = self.src.shards
        name = shards[pos.shard].name if pos.shard < len(shards) else None
        position = {"shard": pos.shard, "row": pos.row, "name": name, "digest": pos.digest}
        settings = self.settings
        pixels = getattr(self.src, "pixels_counted", None)  # (an ImageSource's)
        if pixels is not None and pixels():
            settings = {**settings, "pixels": pixels()}
        save_checkpoint(self.cfg.checkpoint, Checkpoint(
            stats, position, self.fingerprint, settings, rows, nbytes, complete,
            fingerprint_bytes=self.fingerprint_bytes))
        self.saved_rows = rows

    def _inside_unchecked(self) -> _Rollback | None:
        """The state before the current shard when the position is inside a shard whose
        data is checked only at its end (None otherwise)."""
        rb, pos = self.rollback, self.pos
        if rb is not None and rb.shard == pos.shard and \
                pos.row < getattr(self.src.shards[pos.shard], "rows", pos.row + 1):
            return rb
        return None

    def apply(self, batch: Batch) -> None:
        """Count one batch and move the position past it.

        Parameters
        ----------
        batch : Batch
            The next batch of the source.
        """
        if batch.start == 0 and _checked_at_end(self.src, batch.shard):
            # the state before a shard whose data is checked only at its end (_Rollback)
            self.rollback = _Rollback(batch.shard, copy.deepcopy(self.stats), self.pos,
                                      self.rows_done, self.bytes_done)
        with _naming_rows(self.src, batch):
            if isinstance(self.src, IterableSource):
                _check_source_axis(self.src, self.cfg.channel_axis, batch.data.ndim)
                self._take_labels()
            account = getattr(batch, "account", None)  # an image: pixels, histogram, skips
            if account is not None:
                account(self.stats)
            else:
                self.stats.update(batch.data)
            if not self.channels_said and isinstance(self.src, IterableSource):
                self.channels_said = True
                what = "batches" if self.cfg.batched else "samples"
                first = self.src._first  # (the first item's, not the batch's: batch_size
                # splits items, and the first batch of a (6, 3) item was called (4, 3))
                shape = (tuple(batch.data.shape)[1:] if first is None else first.row_shape)
                if self.cfg.batched:
                    shape = ((batch.rows if first is None else first.rows),) + shape
                say(self.cfg.progress, f"{self.src.description}: {self.stats.num_channels} "
                    f"channels along channel_axis={self.cfg.channel_axis} (items read as "
                    f"{what}, the first of shape {shape})")
        self.pos = Position(batch.shard, batch.stop, batch.digest)
        self.rows_done += batch.rows
        self.bytes_done += batch.nbytes

    def _take_labels(self) -> None:
        """An iterable's item labels (``IterableSource._check_labels``, which checks
        them against its first labelled item's) as the statistics' names and channel
        coordinate, checked against those of a resumed checkpoint."""
        names, coord = getattr(self.src, "channel_names", None), self.src.channel_coord
        if names is not None and names != self.stats.channel_names:
            check_columns(self.stats.channel_names, names, self.src.description,
                          "the checkpoint's statistics")
            self.stats.channel_names = names
        if coord is not None:
            check_coords(self.stats._channel_coord, coord, self.src.description,
                         "the checkpoint's statistics")
            self.stats._channel_coord = kept_coord(self.stats._channel_coord, coord)

    def run(self) -> RunningStats:
        """Read and count every batch from the position on; checkpoint as configured.

        Returns
        -------
        RunningStats
            The statistics of the whole source.

        Raises
        ------
        FitInterrupted
            Ctrl-C, after the current batch (and the checkpoint write).
        """
        cfg, src, start = self.cfg, self.src, self.pos
        bs = self.settings["batch_size"]
        bar = Progress(cfg.progress, "nbbn fit", src.nbytes, self.bytes_done, self.rows_done,
                       noun=self._unit())
        guard = SigintGuard()
        pf = None
        last_write = time.monotonic()
        dirty = interrupted = in_batch = False
        try:
            with guard:
                guard.waiting = True  # nothing applied yet: Ctrl-C may stop at once
                pf = Prefetcher(lambda acquire: src.batches(bs, start, acquire),
                                src.read_ahead)
                while True:
                    guard.waiting = True
                    batch = pf.get()
                    guard.waiting = False
                    if batch is None:
                        break
                    in_batch = True
                    self.apply(batch)
                    dirty, in_batch = True, False
                    pf.release(batch)
                    bar.update(batch.nbytes, self.rows_done)
                    if guard.pending:
                        interrupted = True
                        break
                    if cfg.checkpoint is not None and time.monotonic() - last_write >= \
                            cfg.interval:
                        self.write()
                        dirty, last_write = False, time.monotonic()
                        if guard.pending:  # (Ctrl-C during the write: before the next
                            interrupted = True  # read, which a slow source may block)
                            break
        except KeyboardInterrupt:
            if in_batch:  # not from our guard (another thread's fit): the batch may be half-done
                raise
            interrupted = True  # while waiting for the reader: nothing is half-applied
        except BaseException as exc:
            # (written again when nothing changed since the last write: the note that
            # resume=True continues is added whenever the checkpoint holds rows; not
            # after an iterable refused at its resume position, another than the one
            # checkpointed: the file stays as it was, and no resume with it continues)
            refused = isinstance(exc, CheckpointError) and not dirty
            if cfg.checkpoint is not None and (dirty or self.rows_done > 0) and not refused:
                self._save_after_error(exc)
            raise
        finally:
            # Stopping the reader waits for a slow source (up to 5 s): a second Ctrl-C
            # meanwhile is deferred, as in a batch, so that the checkpoint is written
            # and FitInterrupted raised (it was a bare KeyboardInterrupt, all lost).
            with SigintGuard():
                if pf is not None:
                    pf.close()
                bar.close()
        return self.finish(interrupted)

    def finish(self, interrupted: bool) -> RunningStats:
        """The end of a run: after Ctrl-C, the checkpoint written and ``FitInterrupted``
        raised; else the checkpoint marked complete and the statistics returned."""
        cfg = self.cfg
        if interrupted:
            if cfg.checkpoint is not None:
                self.write()
            # (then the statistics the checkpoint holds; without one, all of them)
            rb = self._inside_unchecked() if cfg.checkpoint is not None else None
            raise FitInterrupted(rb.stats if rb else self.stats, cfg.checkpoint,
                                 rb.rows_done if rb else self.rows_done, self._unit(),
                                 self._on_cluster_only())
        if self.stats.num_channels is None and (empty := self.src.empty_batch()) is not None:
            # a source of no rows: its shape after axis 0 fixes the channel count, as
            # RunningStats.update of a (0, C) batch does (they were None, and merged with
            # statistics of any channel count)
            self.stats.update(empty)
        if cfg.checkpoint is not None:
            self.write(complete=True)
        return self.stats

    def _on_cluster_only(self) -> bool:
        """Whether the checkpoint written resumes on a cluster only (out of order parts)."""
        return False

    def _unit(self) -> str:
        """What a fit's rows are in messages: images for image files (one row each)."""
        return "images" if hasattr(self.src, "check_channel_axis") else "rows"

    def _save_after_error(self, exc: BaseException) -> None:
        """Keep the rows counted before an error; a note on ``exc`` says so. Inside a
        shard whose data is checked only at its end (a zip member: a bad CRC surfaces
        with its last rows), the rows from before that shard."""
        rb = self._inside_unchecked()
        try:
            self.write()  # (inside such a shard: the state before it)
        except Exception as again:  # noqa: BLE001 - the original error matters more
            if self.saved_rows is not None and again is not exc:
                # (the write itself failed: a folder made read-only, a full disk) the
                # file as last written stays whole (written beside it, then renamed)
                add_note(exc, "nbbn: the checkpoint {path} could not be written again "
                         "({why}); it holds the statistics of the {rows:,} " + self._unit()
                         + " of its last save, which {resume} continues",
                         path=self.cfg.checkpoint, why=f"{type(again).__name__}: {again}",
                         rows=self.saved_rows, resume=_RESUME)
            return
        where = ("before {shard} were saved to {path} (the rows read from it are not kept: "
                 "its checksum is checked only at its end)") if rb else \
            "before the error were saved to {path}"
        then = "; {resume} continues"
        if isinstance(exc, ImageError) and getattr(self.src, "on_error", None) == "raise":
            # (the file that stopped the fit stops a resume again, unless skipped)
            then += " with {skip} to leave the file out ({resume} alone stops on it again)"
        add_note(exc, "nbbn: the statistics of the {rows:,} " + self._unit() + " " + where
                 + then,
                 rows=rb.rows_done if rb else self.rows_done,
                 path=self.cfg.checkpoint, resume=_RESUME, skip=Param("on_error", "skip"),
                 shard=self.src.shards[self.pos.shard].name if rb else "")


def _checked_at_end(src, shard: int) -> bool:
    """Whether shard ``shard`` of ``src`` is checked only once read to its end."""
    shards = getattr(src, "shards", ())
    return shard < len(shards) and bool(getattr(shards[shard], "checked_at_end", False))


@dataclass
class _Rollback:
    """A fit's state before shard ``shard``, whose data is checked only once read to its
    end (``Shard.checked_at_end``): an error inside it saves this state, so that rows read
    before a bad checksum surfaced are not kept."""

    shard: int
    stats: RunningStats
    pos: Position
    rows_done: int
    bytes_done: int


def _checkpoint_place(source, folder: str) -> str:
    """Where to write a checkpoint, for the error of a ``checkpoint`` that is a folder:
    ``fit.ckpt`` inside it, unless the source would refuse that file (a zarr store
    given as its own checkpoint folder, whose advice, a file inside the store, was
    then refused as "inside the zarr store fitted"): beside the source then."""
    inside = os.path.join(folder, "fit.ckpt")
    if not isinstance(source, (str, os.PathLike)) or \
            not written_into_input(os.fspath(source), inside):
        return "e.g. fit.ckpt inside it"
    top = os.path.abspath(os.fspath(source)).rstrip(os.sep)
    beside = os.path.join(os.path.dirname(top), "fit.ckpt")
    return f"outside {os.fspath(source)}, the source (e.g. {beside})"


def written_into_input(source: str, path: str, checkpointed: bool = True) -> str | None:
    """Why a file written at ``path`` (a checkpoint, ``nbbn fit -o``, a new output of
    ``transform``) would change what the next fit of ``source`` reads, in words that
    follow the path in a message (the advice included); None when it would not. It
    would:

    * be inside ``source``, a zarr store (read as one shard, whose fingerprint covers
      every file in it), whatever its name: the checkpoint, of this fit or the next,
      would match no fit of the store (a file beside the checkpoint in a store without
      one is not refused: ``checkpointed`` False);
    * be read as data: a file ending in .npy/.npz/.parquet/.csv/... at the top of the
      folder ``source``, an image file anywhere below it when it is read as images
      (searched recursively), or a file of any of those kinds the glob ``source``
      matches (one of another kind than the pattern's files makes the next fit refuse
      the mix);
    * make the next fit refuse the folder ``source`` (``sources._check_nested``): a
      shard (table) in a subfolder of a folder whose top level holds shards (tables),
      or an image file in a folder of tables."""
    from ._images import _SHARD_SUFFIXES, _is_image_name, looks_like_images
    from .sources import folder_file_kind, is_zarr_store

    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if os.path.isdir(source) and is_zarr_store(source):
        top = os.path.realpath(source)
        if checkpointed and (folder == top or folder.startswith(os.path.join(top, ""))):
            return (f"is inside {source}, the zarr store fitted: a checkpoint records "
                    "every file of the store (it is read as one shard), so a file written "
                    "there changes it and no resume would match; write it outside the store")
        return None
    if os.path.isdir(source) and (why := _refused_nested(source, folder, path)):
        return why
    globbed = not os.path.isdir(source) and any(ch in source for ch in "*?[")
    if globbed and (_is_image_name(path) or path.lower().endswith(_SHARD_SUFFIXES)) \
            and _glob_matches(source, path):
        # (a file of the pattern's kind is read as data; one of another kind makes the
        # next fit refuse the mix: sources._check_one_kind)
        return (f"is matched by the pattern {source}: the next fit of it would read it as "
                "data, or refuse a second kind of file (shards, tables, images); write it "
                "outside the pattern")
    images = _is_image_name(path) and looks_like_images(source)
    if not images and not folder_file_kind(os.path.basename(path)):
        return None  # (a hidden or _-prefixed name is not read: sources.folder_file_kind)
    said = f"would be read as data of {source} by the next fit of it"
    if os.path.isdir(source):
        top = os.path.realpath(source)
        if not images and folder == top:
            from .sources import folder_kind

            names, shards, words = folder_kind(source)
            if names and (folder_file_kind(os.path.basename(path)) == "shards") != shards:
                # (a .npy among tables is not read as data: the next fit refuses the mix)
                return (f"would make the next fit of {source} refuse the folder, whose top "
                        f"level would hold two kinds of files ({words} and "
                        f"{os.path.basename(path)}); write it outside the folder")
        if folder == top or (images and folder.startswith(os.path.join(top, ""))):
            where = ("an image file below the folder of images, which is searched "
                     "recursively" if images else "a file of that kind at the folder's top "
                     "level")
            return f"{said} ({where}); write it outside the folder"
    return None


def _refused_nested(source: str, folder: str, path: str) -> str | None:
    """Why a file written at ``path`` (in the real folder ``folder``) would make the next
    fit refuse the folder ``source``, as ``sources._check_nested`` does: a shard (table)
    in a subfolder of a folder whose top level holds shards (tables), hidden subfolders
    aside, or an image file (not hidden) at the top of a folder of tables or in one of
    its subfolders; None otherwise."""
    from ._images import _is_image_name
    from .sources import folder_file_kind, folder_kind

    top = os.path.realpath(source)
    if folder != top and not folder.startswith(os.path.join(top, "")):
        return None
    rel = os.path.relpath(folder, top)
    parts = [] if folder == top else rel.split(os.sep)
    if any(p.startswith(".") for p in parts):  # (not looked in)
        return None
    found, shards, kind = folder_kind(source)  # (the rules of _check_nested's walk)
    if not found:
        return None
    name = os.path.basename(path)
    if parts and folder_file_kind(name) == ("shards" if shards else "tables"):
        return (f"is in the subfolder {rel} of {source}, whose top level holds {kind}: "
                f"the next fit of {source} would refuse the folder (it is read from its "
                f"top level only, and {kind.split()[-1]} in its subfolders would be left "
                "out); write it outside the folder")
    if not shards and _is_image_name(name) and not name.startswith("."):
        return (f"is an image file in {source}, whose top level holds {kind}: the next "
                f"fit of {source} would refuse a folder of tables and images; write it "
                "outside the folder")
    return None


def _glob_matches(pattern: str, path: str) -> bool:
    """Whether ``glob.glob(pattern, recursive=True)`` lists ``path`` (were it there):
    name by name, ``**`` for any number of folders (none included), ``*`` within one
    name, hidden names only for a pattern that starts with a dot."""
    import fnmatch

    pat = os.path.abspath(pattern).split(os.sep)
    parts = os.path.abspath(path).split(os.sep)

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if pat[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1)
                       if not any(d.startswith(".") for d in parts[j:k]))
        return j < len(parts) and fnmatch.fnmatch(parts[j], pat[i]) and (
            pat[i].startswith(".") or not parts[j].startswith(".")) and match(i + 1, j + 1)

    return match(0, 0)


def check_writable_folder(path, what: str, step: str = "the fit") -> None:
    """PermissionError, before a fit (``step``), when the folder of ``path`` (a file to be written
    after it, or during it) does not let this process create files, or ``path`` is a
    file this process may not write (it would be refused after the fit); OSError when
    a temporary file cannot be created there after all (root, to whom ``os.access``
    says yes, in /proc or on a read-only mount), or ``path`` is a device, a FIFO or a
    socket; an IsADirectoryError for a path that ends in a separator."""
    try:
        check_file_path(path)
    except IsADirectoryError:
        raise
    except OSError as exc:  # (a device, a FIFO, a socket: named with the option)
        raise OSError(f"{what} {exc}") from None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: the folder {folder} is not writable (checked "
                              f"before {step}, not after it)")
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        raise PermissionError(f"{what} {path}: the file is read-only (checked before "
                              f"{step}, not after it)")
    from ._durable import Replacement

    try:  # (os.access says yes to root everywhere: /proc, a read-only mount; try it)
        Replacement(path).abort()
    except OSError as exc:
        raise OSError(f"{what} {path}: no file can be created in the folder {folder} "
                      f"({exc.strerror or exc}; checked before {step}, not after it)"
                      ) from None


def _saved_key(key, checkpoint):
    """``key`` as the checkpoint saves it (JSON): numpy integers and strings as Python's;
    TypeError up front for a key JSON cannot hold, rather than at the first write."""
    if isinstance(key, np.integer):
        return int(key)
    if isinstance(key, np.str_):
        return str(key)
    if checkpoint is not None and key is not None and (
            not isinstance(key, (int, str)) or isinstance(key, bool)):
        raise TypeError(f"key={key!r} cannot be saved in a checkpoint: with checkpoint=, "
                        f"key must be an int or a str, got {type(key).__name__}")
    return key


def _axis_in(axis, ndim: int):
    """An int axis of ``ndim``-d data as a non-negative one; any other value as it is."""
    if isinstance(axis, int) and not isinstance(axis, bool) and -ndim <= axis < ndim:
        return axis % ndim
    return axis


def _keyed_by_dataset(fingerprint: dict | None) -> bool:
    """Whether every shard of a source's fingerprint names its HDF5 dataset (``f.h5:x``
    and ``f.h5`` with ``key="x"``: one dataset, which the fingerprint compares)."""
    shards = (fingerprint or {}).get("shards") or []
    return bool(shards) and all("dataset" in sh for sh in shards)


def _resumed_settings(ck: Checkpoint, settings: dict, batch_size, path,
                      ndim: int | None = None, key_in_data: bool = False) -> dict:
    """The checkpoint's settings, after checking that this call agrees with them (a
    channel axis by the axis it names in ``ndim``-d data: -3 and 1 of 4-d data agree).
    ``key_in_data``: the fingerprint names the datasets read (HDF5), so the key is not
    compared as a setting: "r.h5:g/x" and key="g/x" are spellings of one dataset (the
    fingerprint refuses another), and one refused the other's checkpoint."""
    saved = dict(ck.settings)
    saved.setdefault("batched", True)  # checkpoints from before samples were read
    for name in ("channel_axis", "nan_policy", "key", "batched"):
        if name == "key" and key_in_data:
            continue
        a, b = saved.get(name), settings[name]
        if name == "channel_axis" and ndim:
            a, b = _axis_in(a, ndim), _axis_in(b, ndim)
        if a != b:
            raise worded(CheckpointError, "checkpoint {path} was written with {saved}, but this "
                         "fit has {given}; use the same settings to resume", path=path,
                         saved=Param(name, saved.get(name)), given=Param(name, settings[name]))
    if batch_size is not None and saved.get("batch_size") != batch_size:
        raise worded(CheckpointError, "checkpoint {path} was written with {saved}, but {given} "
                     "was given; resume with the same batch size (or none) so the result is "
                     "the same as an uninterrupted fit", path=path,
                     saved=Param("batch_size", saved.get("batch_size")),
                     given=Param("batch_size", batch_size))
    return saved


# ------------------------------------------------------------------------ transform
def transform(source, stats_or_normalizer, out, *, channel_axis: int | str | None = None,
              batch_size: int | None = None, progress: bool = True, dtype=None, key=None,
              eps: float | None = None, columns=None):
    """Normalize a whole dataset batch by batch into ``out``.

    Parameters
    ----------
    source
        As for :func:`fit`, except iterables and torch Datasets and DataLoaders (refused:
        pass an array or files, or normalize each batch with the Normalizer).
    stats_or_normalizer : RunningStats, Normalizer or path
        A :class:`~nbbn.RunningStats` (applied as ``(x - mean) / sqrt(var + eps)``), a
        :class:`~nbbn.Normalizer`, or a statistics file written by ``RunningStats.save``.
    out : path, numpy array or zarr array
        A path ending in ``.npy`` (written through a temporary file in the same folder and
        renamed when complete) or ``.zarr`` (an existing zarr array there is replaced; a
        zarr group holding arrays is refused), or an existing array of the source's shape
        with a float16/32/64 dtype. Must not be the source itself, nor a new file that
        the next fit of a folder or glob ``source`` would read as its data (such as a
        ``.npy`` at the folder's top level), as for ``nbbn fit -o``.
    channel_axis : int or str, optional
        The source's channel axis; default that of the statistics or normalizer. A
        dimension name (given, or the statistics') for an xarray DataArray source.
    batch_size : int, optional
        Rows per batch (default about 64 MiB of input per batch).
    progress : bool, default True
        Show a progress bar.
    dtype : dtype, optional
        Output dtype for a path ``out`` (float16/32/64). Default: the input's dtype when
        it is floating, float32 for integer input (as :class:`~nbbn.Normalizer`), for
        integer files of several dtypes and a table's integer columns of any mix of
        integer dtypes and nullable ones too (where ``Normalizer(df)`` differs: it
        reads int64 beside uint64 columns, and nullable columns with missing values,
        as float64, and gives float64).
    key : str, optional
        The array in an ``.npz``/HDF5 file or zarr group.
    eps : float, optional
        Added to the variance when ``stats_or_normalizer`` is statistics (default 1e-5).
        A :class:`~nbbn.Normalizer` keeps its own ``eps``: giving one with it is an error
        (it was ignored).
    columns : sequence of str or str, optional
        For a table: the columns to read, in the order of the statistics' channels.
        Default: the statistics' :attr:`~nbbn.RunningStats.channel_names` (the columns
        they were fitted on, whatever the table's column order), or every numeric column
        for statistics without names. A name the table lacks is an error.

    Returns
    -------
    pathlib.Path or array
        ``Path(out)`` for a ``.npy`` path, otherwise the array written.

    Raises
    ------
    ValueError, TypeError
        The source, statistics, output or dtype do not fit together (channels, shape,
        dtype), ``out`` is the source itself or would be read as its data by the next
        fit, or the source is an iterable.
    """
    progress = check_flag(progress, "progress")
    refuse_written_into_source(source, out)
    if isinstance(out, (str, os.PathLike)) and (kind := fitted_file(out)):
        # (the statistics file read, or a checkpoint: a name ending in .npy is allowed)
        raise worded(ValueError, "{out} is {kind}: the normalized data would replace what "
                     "was fitted; write them to another path", out=Param("out", os.fspath(out)),
                     kind=kind)
    if isinstance(stats_or_normalizer, (str, Path)):
        stats_or_normalizer = RunningStats.load(stats_or_normalizer)
    named = getattr(stats_or_normalizer, "channel_axis", None) if channel_axis is None \
        else channel_axis
    if isinstance(named, str) and is_xarray(source):  # (the statistics' dimension name too)
        channel_axis = _dim_axis(source, named)
    names = getattr(stats_or_normalizer, "channel_names", None)
    norm = _as_normalizer(stats_or_normalizer, channel_axis, eps)
    batch_size = _check_batch_size(batch_size)
    axis = norm.channel_axis
    src = _open_for_transform(source, key, axis if isinstance(axis, int) else None, columns,
                              names)
    try:
        # a DataArray's channel labels against the statistics' (as the normalizer checks
        # a DataArray batch: the batches here are its numpy rows)
        check_coords(norm._channel_coord, getattr(src, "channel_coord", None), src.description,
                     dims=getattr(source, "dims", None))
        sparse = [s.name for s in src.shards if isinstance(s, SparseNpzShard)]
        if sparse:
            raise ValueError(f"{sparse[0]} is a scipy sparse matrix: nbbn transform writes "
                             "dense arrays, in which the normalized zeros would all be stored; "
                             "fit its statistics (nbbn fit), and scale it with "
                             "nbbn.sklearn.StandardScaler(with_mean=False)")
        shape, out_dtype = _output_of(src, norm, dtype, from_stats=channel_axis is None)
        _refuse_own_input(src, out, source)
        given = getattr(out, "dtype", None)
        if dtype is not None and not isinstance(out, (str, os.PathLike)) and (
                given is not None and np.dtype(given) != out_dtype):
            raise worded(ValueError, "{dtype} is the dtype of a path's output; the array out "
                         "is {given}, not {want}: leave {dtype} out, or pass an array of it",
                         dtype=Param("dtype"), given=np.dtype(given), want=out_dtype)
        if isinstance(src, ChunkedSource):  # a dask array (a DataArray's too): written
            # through dask, chunk by chunk
            from .dask import transform as dask_transform

            if given is not None and not isinstance(out, (str, os.PathLike)):
                out_dtype = np.dtype(given)  # (computed in an out= array's dtype, as eagerly:
                # float32 stored into a float64 array was 1e-7 off)
            return dask_transform(src.array, norm, out, out_dtype)
        bs = batch_size or src.default_batch_size() or 1
        writer = open_writer(out, shape, out_dtype, bs)
        return _write_all(src, norm, writer, bs, progress)
    finally:
        src.close()


def refuse_written_into_source(source, out) -> None:
    """Raise ValueError when ``out``, a path that does not exist yet, would be read as
    data of the path ``source`` by its next fit (or make it refuse the folder):
    ``written_into_input``, as for ``nbbn fit -o``. Checked before anything is read or
    written. An ``out`` that exists and is one of the source's files is refused as its
    input (``_refuse_own_input``), once the source is open.

    Parameters
    ----------
    source : object
        The transform's source; only a path (folder, glob, file) is checked.
    out : object
        The transform's output; only a path is checked.

    Raises
    ------
    ValueError
        The next fit of ``source`` would read ``out`` as data, or refuse the folder.
    """
    if not isinstance(source, (str, os.PathLike)) or not isinstance(out, (str, os.PathLike)):
        return
    if os.path.exists(out):
        return
    why = written_into_input(os.fspath(source), os.fspath(out), checkpointed=False)
    if why is not None:
        from ._images import looks_like_images

        if looks_like_images(os.fspath(source)):  # (refused once open: transform does not
            return  # write images, which says more than where its output would go)
        raise worded(ValueError, "{out} {why}", out=Param("out", os.fspath(out)), why=why)


def _open_for_transform(source, key, axis, columns, names) -> Source:
    """The source of a transform: a table's columns are those given, else the statistics'
    channel names (in their order), else every numeric column."""
    from ._datasets import data_kind, torch_data_kind
    from ._tabular import looks_like_table

    kind = data_kind(source)
    if kind is not None:  # (a map-style one was "cannot read batches ... or an iterable
        # of arrays", and the iterable kinds were refused after being opened)
        torch_kind = {"loader": "DataLoader", "iterable": "IterableDataset",
                      "map": "Dataset"}[kind]
        what = f"a torch {torch_kind}" if torch_data_kind(source) else "a map-style dataset"
        items = "batches" if kind == "loader" else "samples"
        raise TypeError(
            f"transform does not take {what} ({type(source).__name__}): it writes the rows "
            "of an array or of files, whose number is known up front, into one output. "
            "Pass the data as an array or files (.npy, a folder of shards, .zarr), or loop "
            f"over its {items} and normalize each with the Normalizer "
            "(norm = stats.to_normalizer(); y = norm(x))")
    if columns is not None or names is None or not looks_like_table(source):
        src = open_source(source, key=key, channel_axis=axis, columns=columns)
        chosen = getattr(src, "channel_names", None)
        if columns is not None and names is not None and chosen is not None and \
                tuple(chosen) != tuple(names):
            src.close()
            raise worded(ValueError, "the statistics were fitted on the columns {names}, but "
                         "{columns} names {chosen}: each column is normalized with the "
                         "statistics of its position, so they must match (leave {columns} "
                         "out to read the statistics' columns)", names=list(names[:12]),
                         columns=Param("columns"), chosen=list(chosen[:12]))
        return src
    try:
        return open_source(source, key=key, channel_axis=axis, columns=list(names))
    except ValueError as exc:
        if type(exc) is not ValueError:
            raise
        raise worded(ValueError, "the statistics were fitted on the columns {names}, which "
                     "transform reads from the table in that order: {error}",
                     names=list(names[:12]), error=exc) from exc


def _dim_axis(source, channel_axis):
    """The number of the dimension named ``channel_axis`` of an xarray DataArray
    ``source`` (``RunningStats`` takes the name: fit and transform read the DataArray's
    rows as numpy arrays, which have numbers only); any other axis as it is."""
    if isinstance(channel_axis, str) and is_xarray(source):
        from .backends.xarray import channel_index

        return channel_index(source, channel_axis)
    return channel_axis


def _as_normalizer(obj, channel_axis, eps) -> Normalizer:
    if isinstance(obj, RunningStats):
        if counted_nothing(obj):
            raise ValueError("the statistics are empty (they counted no values): fit some "
                             "data first")
        ca = obj.channel_axis if channel_axis is None else check_axis(channel_axis)
        norm = Normalizer(obj.mean, obj.var, eps=1e-5 if eps is None else eps,
                          channel_axis=ca, backend=obj.backend)
        norm._channel_coord = obj._channel_coord  # (checked against a DataArray source's)
        return norm
    if isinstance(obj, Normalizer):
        if eps is not None:
            raise ValueError(f"eps={eps!r} applies to statistics; a Normalizer keeps its own "
                             f"(eps={obj.eps!r}): build a new Normalizer for another eps")
        if channel_axis is None or check_axis(channel_axis) == obj.channel_axis:
            return obj
        norm = Normalizer(obj.mean, obj.var, eps=obj.eps, weight=obj.weight, bias=obj.bias,
                          channel_axis=channel_axis, backend=obj.backend)
        norm._channel_coord = obj._channel_coord
        return norm
    raise TypeError(f"stats_or_normalizer must be a RunningStats, a Normalizer or a path to a "
                    f"statistics file, got {type(obj).__name__}")


def _output_of(src: Source, norm: Normalizer, dtype, *,
               from_stats: bool = False) -> tuple[tuple[int, ...], np.dtype]:
    """The output's shape and dtype, after checking that the source and statistics agree."""
    if isinstance(src, IterableSource):
        raise TypeError(f"transform does not take {src.description}: it writes the rows of "
                        "an array or of files, whose number is known up front, into one "
                        "output. Pass the data as an array or files (.npy, a folder of "
                        "shards, .zarr), or loop over its batches and normalize each with "
                        "the Normalizer (norm = stats.to_normalizer(); y = norm(x))")
    if hasattr(src, "check_channel_axis"):  # an ImageSource
        raise TypeError(f"transform does not write images ({src.description}): apply the "
                        "Normalizer to each decoded image yourself")
    if src.rows is None:  # a CSV file
        tsv = [str(sh.name).lower().endswith((".tsv", ".tsv.gz")) for sh in src.shards]
        sep = ", sep='\\t'" if any(tsv) else ""  # (a .tsv file is tab-separated)
        kind = "a TSV file" if all(tsv) else "a CSV or TSV file" if any(tsv) else "a CSV file"
        mixed = " for a .tsv file, without sep for a .csv file" if sep and not all(tsv) else ""
        raise TypeError(f"transform cannot write {src.description}: its number of rows is "
                        f"not known up front ({kind} is read as a stream); convert it to "
                        f"Parquet first (pandas.read_csv(path{sep}).to_parquet("
                        f"'data.parquet'){mixed}), or pass it read into a DataFrame")
    if src.row_shape is None or src.dtype is None:
        raise ValueError(f"{src.description} holds no data")
    axis = norm.channel_axis
    if isinstance(axis, str):  # (statistics fitted on a DataArray; the rows here are numpy)
        raise worded(TypeError, "the channel axis of the statistics is the dimension name "
                     "{name!r}, but transform reads {what} as arrays without dimension names: "
                     "pass {axis}, the number of its channel axis", name=axis,
                     what=src.description, axis=Param("channel_axis", placeholder="N"))
    _check_source_axis(src, axis, from_stats=from_stats)
    shape = (src.rows, *src.row_shape)
    nchan = shape[axis % len(shape)]
    if nchan != norm.num_channels:
        raise worded(ValueError, "{what} has {nchan} channels along {axis} (rows of shape "
                     "{row_shape}), but the statistics have {want}", what=src.description,
                     nchan=nchan, axis=f"the statistics' channel axis {axis}" if from_stats
                     else Param("channel_axis", norm.channel_axis),
                     row_shape=src.row_shape, want=norm.num_channels)
    kinds = {k for s in src.shards if s.rows for k in getattr(s, "kinds", s.dtype.kind)}
    # (integer shards of several dtypes: float32, as for one; their common dtype, such
    # as int64 with uint64's float64, is what batches across them are read in; so for a
    # table's integer columns, whose row dtype is that common one)
    source_dtype = np.dtype(np.int64) if kinds and kinds <= {"i", "u"} else np.dtype(src.dtype)
    want = "{dtype} must be float16, float32 or float64, got {got}"
    try:
        out_dtype = result_dtype(source_dtype) if dtype is None else np.dtype(dtype)
    except TypeError:  # (numpy's "data type 'float8' not understood")
        raise worded(TypeError, want, dtype=Param("dtype"), got=repr(dtype)) from None
    if out_dtype.kind != "f" or out_dtype.itemsize not in (2, 4, 8):
        named = isinstance(dtype, str) and dtype != out_dtype.name  # ('f16': float128)
        raise worded(ValueError, want, dtype=Param("dtype"),
                     got=f"{dtype!r} ({out_dtype})" if named else out_dtype)
    return shape, out_dtype


def _write_all(src: Source, norm: Normalizer, writer: Writer, bs: int, progress: bool):
    """Normalize every batch into ``writer``; commit at the end, abort on any error."""
    offsets = src.shard_offsets()
    rows = 0
    bar = pf = None
    try:
        bar = Progress(progress, "nbbn transform", src.nbytes, 0, 0)
        pf = Prefetcher(lambda acquire: src.batches(bs, Position(), acquire), src.read_ahead)
        while (batch := pf.get()) is not None:
            lo = offsets[batch.shard] + batch.start
            hi = lo + batch.rows
            dst = writer.view(lo, hi)
            with _naming_rows(src, batch):
                norm(batch.data, out=dst)
            writer.written(lo, hi, dst)
            rows += batch.rows
            pf.release(batch)
            bar.update(batch.nbytes, rows)
        pf.close()
        writer.commit()
    except BaseException:
        if pf is not None:
            pf.close()
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return writer.result


def _input_files(src: Source) -> Iterator[tuple[str, str]]:
    """``(name, path)`` of every file ``src`` reads (image files included)."""
    paths = getattr(src, "paths", None)  # an ImageSource: its list of files
    if paths is not None:
        yield from ((path, path) for path in paths)
        return
    shards = getattr(src, "shards", [])
    for i, fp in enumerate((src.fingerprint() or {}).get("shards", [])):
        if fp.get("path") is not None:
            # a zarr array: its own folder in the store (fingerprinted as the whole store),
            # so that a sibling array of the same group may be written
            arr = getattr(shards[i], "array", None) if i < len(shards) else None
            own = _file_of(arr) if type(arr).__module__.startswith("zarr") else None
            yield fp.get("name") or fp["path"], own or fp["path"]


def refuse_own_input(src: Source, out, verb: str = "transform") -> None:
    """Raise ValueError when the path ``out`` is one of the files ``src`` reads.

    Parameters
    ----------
    src : Source
        The opened source.
    out : path
        Where the command writes (``transform``'s output, ``nbbn fit -o``).
    verb : str, default "transform"
        The command, for the message.

    Raises
    ------
    ValueError
        ``out`` is (or is a link to, or a hard link of) a file of the source.
    """
    for name, path in _input_files(src):
        _refuse_path(path, name, out, verb)


def _refuse_path(path, name: str, out, verb: str) -> None:
    """ValueError when ``out`` is the input file ``path`` (a link or a hard link of it
    too), or a folder holding it (a zarr group, written anew), or inside it (an array
    of the input's zarr store)."""
    target, real = os.path.realpath(out), os.path.realpath(path)
    same = real == target
    if not same and os.path.exists(out):
        try:
            same = os.path.samefile(path, out)
        except OSError:
            same = False
    if same:
        raise worded(ValueError, "{out} is the input {name}: {verb} does not "
                     "overwrite its own input; write to another path",
                     out=Param("out", os.fspath(out)), name=name, verb=verb)
    shown = name if os.path.realpath(name) == real else f"{real} (of the input {name})"
    for outer, inner, what in ((target, real, "holds"), (real, target, "is inside")):
        if inner.startswith(outer.rstrip(os.sep) + os.sep):
            raise worded(ValueError, "{out} {what} {shown}: {verb} does not write over or "
                         "into its own input; write outside it",
                         out=Param("out", os.fspath(out)), what=what, shown=shown, verb=verb)


def _file_of(arr) -> str | None:
    """The file behind an array: a numpy memory map's, or a zarr array's in a local store
    (its folder: the store's, joined with the array's path in it); None for anything
    else."""
    name = getattr(arr, "filename", None)  # np.memmap (of a view too: its base's)
    base = arr
    while name is None and isinstance(base, np.ndarray) and base.base is not None:
        base = base.base  # (np.asarray(mm)[2:]: a view of a view of the memory map)
        name = getattr(base, "filename", None)
    if name is None and type(arr).__module__.startswith("zarr"):
        store = getattr(arr, "store", None)
        root = getattr(store, "root", None)  # a LocalStore
        if root is None:  # an FsspecStore on local files (dask's from_zarr opens one)
            root = getattr(store, "path", None)
            root = root if isinstance(root, str) and os.path.isabs(root) else None
        if root is not None:
            name = os.path.join(os.fspath(root), getattr(arr, "path", "") or "")
    return None if name is None else os.fspath(name)


def _backing(obj, depth: int = 0) -> Iterator[Any]:
    """The arrays that hold the data of ``obj``: numpy arrays (memory maps too), zarr
    arrays; seen through CPU tensors, pandas and xarray objects and the arrays a dask
    graph was built from (none for what holds no such array)."""
    if depth > 3 or obj is None:
        return
    if isinstance(obj, np.ndarray):
        yield obj
        return
    module = type(obj).__module__
    if module.startswith("zarr"):
        yield obj
    elif module.startswith("torch") and getattr(obj, "is_cpu", False):
        yield host_view(obj, "source")[0]
    elif module.startswith("pandas") and hasattr(obj, "iloc"):
        frame = obj.to_frame() if obj.ndim == 1 else obj
        for col in range(frame.shape[1]):  # (numpy columns: views of their blocks)
            yield from _backing(np.asarray(frame.iloc[:, col]), depth + 1)
    elif module.startswith("xarray"):
        variables = obj.data_vars.values() if hasattr(obj, "data_vars") else [obj]
        for v in variables:
            yield from _backing(v.data, depth + 1)
    elif is_dask_array(obj):
        # the graph's source arrays: from_array/from_zarr keep the array in a layer of
        # one key (the graph is not materialized: a big one would take seconds)
        graph = obj.__dask_graph__()
        for layer in getattr(graph, "layers", {"": graph}).values():
            if getattr(layer, "is_materialized", lambda: True)() and len(layer) <= 16:
                for v in layer.values():
                    if isinstance(v, np.ndarray) or type(v).__module__.startswith("zarr"):
                        yield v


def _refuse_own_input(src: Source, out, source=None) -> None:
    """Raise ValueError when ``out`` is (or shares memory with, or is another handle of
    the file of) one of the inputs: the files ``src`` reads, and the arrays behind the
    caller's ``source`` (a dask graph's, a DataFrame's)."""
    inputs = [a for shard in src.shards for a in _backing(getattr(shard, "array", None))]
    inputs += list(_backing(source))
    # a path, or the file of an array out (a second memory map or zarr handle of an input)
    out_path = out if isinstance(out, (str, os.PathLike)) else _file_of(out)
    if out_path is not None:
        files = list(_input_files(src))
        files += [(p, p) for p in map(_file_of, inputs) if p is not None]
        for name, path in files:
            _refuse_path(path, name, out_path, "transform")
    out_arrays = [] if isinstance(out, (str, os.PathLike)) else list(_backing(out))
    for a in inputs:
        if any(a is o or (isinstance(a, np.ndarray) and isinstance(o, np.ndarray)
                          and np.may_share_memory(a, o)) for o in out_arrays):
            raise ValueError("out shares memory with the input array: transform does not "
                             "overwrite its own input; pass a separate output array")
