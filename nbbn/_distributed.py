"""``nbbn.fit(source, client=...)``: the parts of a file source counted on dask.distributed.

The source's shards are cut into *pieces* and the pieces grouped into *parts*
(:func:`plan_parts`): a ``.npz`` member is one piece (it can only be streamed from its
start), a ``.npy`` file is cut into row ranges of about the part size, a zarr array or
HDF5 dataset into row ranges made of whole chunks along axis 0; consecutive small
pieces (small files) are grouped until a part holds about the part size, which is
:data:`PART_BYTES` or less, so that every worker thread gets about four parts. Each
part is one task, :func:`count_part`: the worker opens the files itself (the client
sends small recipes: paths, never data), reads the rows in batches of the fit's batch
size, and returns a record with a
:class:`~nbbn.RunningStats` of a few hundred bytes. The client merges the records as
they complete (Chan's merge, exact float64), so the merge order follows the
completion order: the result equals a single-process fit to about 1e-16 relative, not
bit for bit.

A task runs its kernels on the worker thread alone (``cpu.thread_limit(1)``): a worker
runs as many tasks at once as it has threads, so its thread count is the number of
cores it uses (``dask worker --nthreads``; ``LocalCluster(threads_per_worker=...)``).
Kernels are module-level functions cached on disk, so each worker process compiles a
kernel at most once (none when the cache already holds it); the record of a process's
first part carries the cost of its first call and the kernels it compiled, which the
fit reports per worker.

Checkpoints hold the statistics of the parts merged so far and which rows they cover:
``position`` (everything before it is counted, as in a single-process checkpoint) and
``parts_done`` in the metadata (the row ranges after it that are counted too). A
resumed fit plans parts for the remaining rows only. A checkpoint whose
``parts_done`` is empty is an ordinary one: either kind of fit resumes it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._interrupt import SigintGuard
from ._progress import Progress, counted, say
from ._shards import ArrayShard, Shard, Slot
from ._shards_npy import NpyShard, NpzShard, SparseNpzShard
from ._shards_zarr_h5 import _zarr_local_root, import_extra
from .checkpoint import Checkpoint, check_fingerprint, save_checkpoint
from .errors import CheckpointError
from .pipeline import FitSettings, _FitRun
from .running_stats import RunningStats
from .sources import IterableSource, Position, Source

__all__ = ["PART_BYTES", "Counted", "Part", "connect", "count_part", "fit_on_cluster",
           "local_client", "plan_parts", "shard_recipe", "usable_cpus"]

PART_BYTES = 256 * 2**20
"""Target size of one part (one task on a worker): 256 MiB."""


# --------------------------------------------------------------------------- parts
MIN_PART_BYTES = 16 * 2**20
"""Parts are made smaller than :data:`PART_BYTES` to give each worker thread about four,
but not smaller than this (16 MiB)."""


@dataclass(frozen=True)
class Part:
    """One task: rows ``start:stop`` of shard ``shard`` for each ``(shard, start, stop)``
    of ``pieces`` (``nbytes`` of data in all)."""

    pieces: tuple[tuple[int, int, int], ...]
    nbytes: int

    @property
    def rows(self) -> int:
        """Rows in all pieces."""
        return sum(stop - start for _, start, stop in self.pieces)


def _rows_per_part(shard: Shard, part_bytes: int) -> int:
    """The rows of one piece: the whole shard (npz, scipy sparse npz), or at least
    ``part_bytes`` in whole chunks (zarr/HDF5) or rows (npy)."""
    if isinstance(shard, (NpzShard, SparseNpzShard)):  # read whole (or streamed) anyway
        return max(1, shard.rows)
    chunk = 1
    if isinstance(shard, ArrayShard):
        chunks = getattr(shard.array, "chunks", None)
        if chunks:
            chunk = max(1, int(chunks[0]))
    return max(1, -(-part_bytes // max(1, shard.row_bytes * chunk))) * chunk


class Counted:
    """The rows already counted: all before ``pos``, plus row ranges after it.

    Parameters
    ----------
    pos : Position
        Every row before it is counted.
    ranges : list of [shard, start, stop], optional
        Further counted rows (a distributed checkpoint's ``parts_done``).
    """

    def __init__(self, pos: Position | None = None, ranges=()) -> None:
        self.pos = pos or Position()
        self.ranges: dict[int, list[tuple[int, int]]] = {}
        for s, lo, hi in ranges:
            self.add(int(s), int(lo), int(hi))

    def add(self, shard: int, start: int, stop: int) -> None:
        """Mark rows ``start:stop`` of ``shard`` counted.

        Parameters
        ----------
        shard, start, stop : int
            The shard's index and the row range.
        """
        self.ranges.setdefault(shard, []).append((start, stop))

    def _merged(self, shard: int, first: int) -> list[tuple[int, int]]:
        """The counted ranges of ``shard`` from row ``first`` on, sorted and joined."""
        out: list[tuple[int, int]] = []
        for lo, hi in sorted(self.ranges.get(shard, [])):
            lo = max(lo, first)
            if hi <= lo:
                continue
            if out and lo <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        return out

    def _first(self, shard: int) -> int | None:
        """The first row of ``shard`` not counted by the prefix (None: before it)."""
        if shard < self.pos.shard:
            return None
        return self.pos.row if shard == self.pos.shard else 0

    def remaining(self, shard: int, rows: int) -> list[tuple[int, int]]:
        """The row ranges of ``shard`` (of ``rows`` rows) not counted yet.

        Parameters
        ----------
        shard, rows : int
            The shard's index and its row count.

        Returns
        -------
        list of (int, int)
            ``(start, stop)`` ranges, in order.
        """
        first = self._first(shard)
        if first is None:
            return []
        out, row = [], first
        for lo, hi in self._merged(shard, first):
            if lo > row:
                out.append((row, min(lo, rows)))
            row = max(row, hi)
        if row < rows:
            out.append((row, rows))
        return [(lo, hi) for lo, hi in out if hi > lo]

    def normalized(self, shards: list[Shard]) -> tuple[Position, list[list[int]]]:
        """The longest counted prefix as a position, and the ranges counted after it.

        Parameters
        ----------
        shards : list of Shard
            The source's shards (their row counts; empty shards count as read).

        Returns
        -------
        tuple
            ``(Position, [[shard, start, stop], ...])``.
        """
        s, r = self.pos.shard, self.pos.row
        while s < len(shards):
            for lo, hi in self._merged(s, r):
                if lo <= r:
                    r = max(r, hi)
            if shards[s].size and r < shards[s].rows:
                break
            s, r = s + 1, 0
        rest = [[k, lo, hi] for k in sorted(self.ranges) if k >= s
                for lo, hi in self._merged(k, r if k == s else 0)]
        return Position(s, r), rest

    def last_shard(self) -> int:
        """The highest shard index with counted rows (for the fingerprint check)."""
        return max([self.pos.shard, *self.ranges])

    def shards(self) -> set[int]:
        """The indices of the shards with counted rows."""
        return set(range(self.pos.shard + (self.pos.row > 0))) | set(self.ranges)


def plan_parts(src: Source, counted: Counted | None = None,
               part_bytes: int | None = None) -> list[Part]:
    """The parts of ``src`` still to count, in source order.

    Parameters
    ----------
    src : Source
        The source (its shards and their row counts).
    counted : Counted, optional
        Rows already counted (a resumed fit); none by default.
    part_bytes : int, optional
        Target bytes per part; default :data:`PART_BYTES`.

    Returns
    -------
    list of Part
        Pieces are row ranges inside one shard, cut at multiples of the shard's piece
        size (so zarr/HDF5 pieces hold whole chunks); empty shards have none.
        Consecutive pieces are grouped into one part until it reaches ``part_bytes``.
    """
    counted = counted or Counted()
    target = PART_BYTES if part_bytes is None else part_bytes
    parts: list[Part] = []
    group: list[tuple[int, int, int]] = []
    size = 0
    for i, shard in enumerate(src.shards):
        if shard.size == 0:
            continue
        step = _rows_per_part(shard, target)
        for lo, hi in counted.remaining(i, shard.rows):
            row = lo
            while row < hi:
                stop = min(hi, (row // step + 1) * step)
                group.append((i, row, stop))
                size += (stop - row) * shard.row_bytes
                if size >= target:
                    parts.append(Part(tuple(group), size))
                    group, size = [], 0
                row = stop
    if group:
        parts.append(Part(tuple(group), size))
    return parts


# ------------------------------------------------------------------------- recipes
def _file_id(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.abspath(path), st.st_size, st.st_mtime_ns


def shard_recipe(shard: Shard) -> tuple:
    """What a worker needs to open ``shard`` itself: paths and names, never data.

    Parameters
    ----------
    shard : Shard
        A shard of a file source.

    Returns
    -------
    tuple
        ``("file", shard, file_id)`` for ``.npy``/``.npz``, ``("hdf5", path, dataset,
        file_id)``, ``("zarr", root, array_path)``.

    Raises
    ------
    TypeError
        The shard is not read from files (an in-memory array).
    ValueError
        An HDF5 dataset whose file this process holds open for writing.
    """
    if isinstance(shard, (NpyShard, NpzShard, SparseNpzShard)):
        return ("file", shard, _file_id(shard.path))
    if isinstance(shard, ArrayShard):
        a = shard.array
        module = type(a).__module__
        if module.startswith("h5py"):
            if a.file.mode != "r":  # ("r+" for a file opened with "w", "a" or "r+")
                raise ValueError(
                    f"a fit on a cluster (client=...) has each worker open its own files, "
                    f"but {a.file.filename} is open for writing in this process (h5py mode "
                    f"{a.file.mode!r}): HDF5 locks it against the workers, which would not "
                    "see its unflushed writes either; close it, or reopen it read-only "
                    "(h5py.File(path, 'r'))")
            return ("hdf5", a.file.filename, a.name, _file_id(a.file.filename))
        if module.startswith("zarr"):
            root = _zarr_local_root(a)
            if root is not None:
                return ("zarr", os.path.abspath(root), str(getattr(a, "path", "") or ""))
        if module.startswith("dask"):
            raise TypeError("a fit on a cluster (client=...) has each worker read its own "
                            "files; a dask array is computed by its own scheduler: use "
                            "nbbn.dask.channel_stats(x) (lazy) or nbbn.channel_stats(x) on "
                            "the cluster's client instead")
        name = getattr(a, "filename", None)
        if name is not None:  # a memory map: its workers would read the file itself
            raise TypeError(f"a fit on a cluster (client=...) has each worker open its own "
                            f"files; {shard.name} is a memory map of {name}: pass that "
                            "path instead")
    raise TypeError(
        f"a fit on a cluster (client=...) has each worker read its own files, but "
        f"{shard.name} is not read from a file (an in-memory array, or a zarr store that is "
        "not a local folder); pass .npy/.npz files, a folder or glob of them, a zarr store "
        "or an HDF5 file:dataset, or fit without client")


def _open_recipe(recipe: tuple) -> Shard:
    """The shard a recipe describes, opened on this machine (checked against the client's)."""
    kind = recipe[0]
    if kind in ("file", "hdf5") and _file_id(recipe[-1][0]) != tuple(recipe[-1]):
        path = recipe[-1][0]
        raise FileNotFoundError(
            f"{path}: this worker sees a different file (size or modification time) than the "
            "client did; the workers must read the same files (a shared file system)")
    if kind == "file":
        return recipe[1]
    if kind == "hdf5":
        from ._shards_zarr_h5 import hdf5_shard

        try:
            return hdf5_shard(recipe[1], recipe[2])
        except BlockingIOError as exc:  # (HDF5's file lock; its message names no file)
            raise BlockingIOError(
                exc.errno, f"{recipe[1]}: this worker cannot open the HDF5 file, which "
                "another process holds open for writing (HDF5 locks it): close it there, "
                f"or reopen it read-only ({exc})") from None
    zarr = import_extra("zarr", "zarr", "reading zarr stores")
    node = zarr.open_array(store=recipe[1], path=recipe[2], mode="r")
    return ArrayShard(node, f"{recipe[1]}/{recipe[2]}".rstrip("/"))


# ------------------------------------------------------------------- on a worker
_listen_lock = threading.Lock()
_listening = False
_compiles = threading.local()  # .n: nbbn kernels numba compiled in this thread


def _count_compiles() -> None:
    """Count numba's compilations of nbbn kernels per thread (cache loads are not)."""
    global _listening
    with _listen_lock:
        if _listening:
            return
        _listening = True
    from numba.core import event

    from ._compile_notice import describe

    class _Counter(event.Listener):
        def on_start(self, ev) -> None:
            data = ev.data or {}
            name = getattr(getattr(data.get("dispatcher"), "py_func", None), "__name__", "")
            if describe(name, tuple(data.get("args", ()))) is not None:
                _compiles.n = getattr(_compiles, "n", 0) + 1

        def on_end(self, ev) -> None:
            pass

    event.register("numba:compile", _Counter())


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def count_part(pieces: list[tuple[tuple, int, int]], opts: dict) -> dict:
    """One task, on a worker: the statistics of rows ``start:stop`` of some shards.

    Parameters
    ----------
    pieces : list of (recipe, start, stop)
        A shard's recipe (from :func:`shard_recipe`) and the rows to read of it.
    opts : dict
        ``channel_axis``, ``nan_policy``, ``backend``, ``batch_size`` of the fit.

    Returns
    -------
    dict
        ``stats`` (a :class:`~nbbn.RunningStats`), ``rows``, ``worker``, ``seconds``,
        ``first_call_s`` (the part's first ``update``: on a fresh worker process this
        includes loading the kernels from the disk cache, or compiling them) and
        ``compiled`` (the kernels numba compiled for this part).

    Raises
    ------
    ValueError, TypeError
        Bad data, with the shard and rows in the message.
    """
    from .backends import cpu

    _count_compiles()
    compiled = getattr(_compiles, "n", 0)
    t0 = time.perf_counter()
    first_call = None
    stats = RunningStats(opts["channel_axis"], nan_policy=opts["nan_policy"],
                         backend=opts["backend"])
    slot = Slot()
    rows = 0
    for recipe, start, stop in pieces:
        shard = _open_recipe(recipe)
        reader = shard.open()
        try:
            row = start
            while row < stop:
                end = min(row + opts["batch_size"], stop)
                data, cleanup = reader.read(row, end, slot)
                t = time.perf_counter()
                try:
                    with cpu.thread_limit(1):
                        stats.update(data)
                except (ValueError, TypeError) as exc:
                    if type(exc) not in (ValueError, TypeError):
                        raise
                    raise type(exc)(f"{shard.name}, rows {row}-{end}: {exc}") from None
                finally:
                    data = None
                    if cleanup is not None:
                        cleanup()
                if first_call is None:
                    first_call = time.perf_counter() - t
                row = end
        finally:
            reader.close()
            shard.close()
        rows += stop - start
    return {"stats": stats, "rows": rows, "worker": _worker_name(),
            "seconds": time.perf_counter() - t0, "first_call_s": first_call,
            "compiled": getattr(_compiles, "n", 0) - compiled}


# ---------------------------------------------------------------------- clients
def _distributed_module():
    return import_extra("distributed", "dask", "a fit on a cluster")


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def local_client(n_workers: int | None = None) -> Iterator[Any]:
    """A ``LocalCluster`` of single-threaded worker processes and its ``Client``.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes; default one per usable CPU.

    Yields
    ------
    distributed.Client
        Closed, with the cluster, on exit.
    """
    distributed = _distributed_module()
    n = usable_cpus() if n_workers is None else int(n_workers)
    if n < 1:
        raise ValueError(f"the number of workers must be at least 1, got {n}")
    with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


@contextlib.contextmanager
def connect(client) -> Iterator[Any]:
    """A ``distributed.Client`` for what ``fit(client=...)`` was given.

    Parameters
    ----------
    client : distributed.Client, cluster, str
        A client (used as it is), a cluster object, a scheduler address, or ``"local"``.

    Yields
    ------
    distributed.Client
        Clients made here are closed on exit (a ``"local"`` cluster too).

    Raises
    ------
    MissingExtraError
        distributed is not installed.
    TypeError
        ``client`` is none of these.
    """
    distributed = _distributed_module()
    if isinstance(client, distributed.Client):
        if client.status in ("closing", "closed"):
            raise ValueError(f"the distributed.Client is {client.status}: pass an open "
                             "client (or a scheduler address, or 'local')")
        yield client
    elif isinstance(client, str) and client == "local":
        with local_client() as c:
            yield c
    elif isinstance(client, str) or hasattr(client, "scheduler_address"):
        if isinstance(client, str):
            _check_address(client)
        with distributed.Client(client, set_as_default=False) as c:
            yield c
    else:
        raise TypeError("client must be a distributed.Client, a cluster, a scheduler address "
                        f"('tcp://host:8786') or 'local', got {type(client).__name__}")


def _result(fut):
    """A part's result; a worker that died while counting it (distributed's
    ``KilledWorker``, after its retries) as a ``ConnectionError`` (an OSError, which the
    command line reports in one line), the progress saved as after any error."""
    try:
        return fut.result()
    except Exception as exc:
        if type(exc).__name__ != "KilledWorker":
            raise
        raise ConnectionError(f"a worker died while counting a part of the source, and "
                              f"the scheduler gave the part up ({exc})") from exc


def _check_address(address: str) -> None:
    """ValueError for a scheduler address distributed cannot parse (it would retry for
    its whole connect timeout, a minute, before failing)."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        protocol, location = parse_address(address)
        if protocol in ("tcp", "tls", "ws", "wss", "ucx"):
            parse_host_port(location)
    except ValueError as exc:
        raise ValueError(f"scheduler address {address!r}: {exc} (expected "
                         "'tcp://host:8786', a 'host:port', or 'local')") from None


# ---------------------------------------------------------------------- the fit
def fit_on_cluster(src: Source, cfg: FitSettings, client) -> RunningStats:
    """:func:`nbbn.fit` with ``client``: the source's parts counted by the workers.

    Parameters
    ----------
    src : Source
        An open file source (not an iterable, not an in-memory array).
    cfg : FitSettings
        The fit's validated arguments.
    client : distributed.Client, cluster, str
        See :func:`connect`.

    Returns
    -------
    RunningStats
        The statistics of the whole source.

    Raises
    ------
    TypeError
        The source is not read from files.
    FitInterrupted
        Ctrl-C; the parts merged so far are in the checkpoint.
    """
    if isinstance(src, IterableSource):
        raise TypeError("a fit on a cluster (client=...) has each worker read its own files; "
                        f"{src.description} cannot be split between workers: fit it without "
                        "client")
    recipes = [shard_recipe(s) if s.size else None for s in src.shards]
    run = _ClusterRun(src, cfg, recipes)
    run.start()  # checkpoint errors before any cluster starts
    with connect(client) as c:
        return run.run_on(c)


class _ClusterRun(_FitRun):
    """A fit whose parts are counted on workers; the checkpoint records which."""

    def __init__(self, src: Source, cfg: FitSettings, recipes: list) -> None:
        super().__init__(src, cfg)
        self.recipes = recipes
        self.counted = Counted()
        self.workers: dict[str, dict] = {}
        self.out_of_order = False  # the checkpoint last written has parts_done

    def resume_from(self, ck: Checkpoint, path: Path) -> None:
        """Take the statistics, position and ``parts_done`` of ``ck``."""
        ranges = ck.extra.get("parts_done") or []
        if not (isinstance(ranges, list) and all(
                isinstance(r, list) and len(r) == 3 and all(isinstance(v, int) for v in r)
                for r in ranges)):
            raise CheckpointError(f"checkpoint {path} has invalid parts_done {ranges!r}")
        self.pos = Position(ck.position["shard"], ck.position["row"])
        self.counted = Counted(self.pos, ranges)
        # counted shards must be unchanged; the others (one that failed, say) may change
        check_fingerprint(ck.fingerprint, self.fingerprint, path, self.counted.last_shard(),
                          self.counted.shards())
        self.stats, self.rows_done, self.bytes_done = ck.stats, ck.rows_done, ck.bytes_done
        self.saved_rows = ck.rows_done
        done = " (complete; only shards added since are read)" if ck.complete else ""
        say(self.cfg.progress, f"resuming from {path} after "
            f"{counted(self.rows_done, self._unit())}{done}")

    def write(self, complete: bool = False) -> None:
        """Write the checkpoint: the statistics so far and the rows they cover."""
        shards = self.src.shards
        pos, ranges = self.counted.normalized(shards)
        name = shards[pos.shard].name if pos.shard < len(shards) else None
        position = {"shard": pos.shard, "row": pos.row, "name": name, "digest": None}
        save_checkpoint(self.cfg.checkpoint, Checkpoint(
            self.stats, position, self.fingerprint, self.settings, self.rows_done,
            self.bytes_done, complete, {"parts_done": ranges},
            fingerprint_bytes=self.fingerprint_bytes))
        self.saved_rows = self.rows_done
        self.out_of_order = bool(ranges)

    def _on_cluster_only(self) -> bool:
        """Whether the checkpoint last written has rows counted out of order."""
        return self.cfg.checkpoint is not None and self.out_of_order

    def take(self, part: Part, rec: dict) -> None:
        """Merge one part's record into the statistics and mark its rows counted."""
        self.stats += rec["stats"]
        for shard, start, stop in part.pieces:
            self.counted.add(shard, start, stop)
        self.rows_done += part.rows
        self.bytes_done += part.nbytes
        w = self.workers.setdefault(rec["worker"], {"parts": 0, "seconds": 0.0, "compiled": 0,
                                                    "first_call_s": rec["first_call_s"]})
        w["parts"] += 1
        w["seconds"] += rec["seconds"]
        w["compiled"] += rec["compiled"]

    def run_on(self, client) -> RunningStats:
        """Count every remaining part on ``client``'s workers; checkpoint as configured.

        Parameters
        ----------
        client : distributed.Client
            The cluster.

        Returns
        -------
        RunningStats
            The statistics of the whole source.
        """
        from distributed import as_completed

        cfg = self.cfg
        nthreads = client.nthreads()
        if not nthreads:
            raise ConnectionError(f"the cluster at {client.scheduler.address} has no "
                                  "workers: start some (dask worker ADDRESS), or use "
                                  "--workers N for a local cluster")
        left = sum(p.nbytes for p in plan_parts(self.src, self.counted))
        target = min(PART_BYTES, max(MIN_PART_BYTES, left // (4 * sum(nthreads.values()))))
        parts = plan_parts(self.src, self.counted, target)
        opts = {"channel_axis": cfg.channel_axis, "nan_policy": cfg.nan_policy,
                "backend": cfg.backend, "batch_size": self.settings["batch_size"]}
        say(cfg.progress, f"{len(parts)} part{'s' * (len(parts) != 1)} on "
            f"{len(nthreads)} worker{'s' * (len(nthreads) != 1)} "
            f"({sum(nthreads.values())} threads) at {client.scheduler.address}")
        bar = Progress(cfg.progress, "nbbn fit", self.src.nbytes, self.bytes_done,
                       self.rows_done, noun=self._unit())
        guard = SigintGuard()
        pending: dict = {}
        last_write = time.monotonic()
        dirty = interrupted = in_part = False
        try:
            with guard:
                guard.waiting = True
                pending = {client.submit(count_part, [(self.recipes[s], lo, hi)
                                                      for s, lo, hi in p.pieces],
                                         opts, pure=False): p for p in parts}
                for fut in as_completed(list(pending), loop=client.loop):
                    rec = _result(fut)
                    guard.waiting, in_part = False, True
                    part = pending.pop(fut)
                    self.take(part, rec)
                    dirty, in_part = True, False
                    guard.waiting = True
                    bar.update(part.nbytes, self.rows_done)
                    if guard.pending:
                        interrupted = True
                        break
                    if cfg.checkpoint is not None and \
                            time.monotonic() - last_write >= cfg.interval:
                        self.write()
                        dirty, last_write = False, time.monotonic()
        except KeyboardInterrupt:
            if in_part:
                raise
            interrupted = True
        except BaseException as exc:
            if in_part:  # the statistics and the rows counted may disagree: save nothing
                raise
            dirty = self._take_finished(pending) or dirty
            # (written again when nothing changed since the last write, as in one process:
            # the note that resume=True continues is added whenever the checkpoint holds rows)
            if cfg.checkpoint is not None and (dirty or self.rows_done > 0):
                self._save_after_error(exc)
            raise
        finally:
            if pending:
                client.cancel(list(pending))
            bar.close()
        self._report()
        return self.finish(interrupted)

    def _take_finished(self, pending: dict) -> bool:
        """After an error: merge the parts that finished meanwhile (True if any)."""
        took = False
        for fut, part in list(pending.items()):
            if fut.status == "finished":
                try:
                    rec = fut.result(timeout=10)
                except Exception:  # noqa: BLE001 - the first error is the one raised
                    continue
                self.take(part, rec)
                del pending[fut]
                took = True
        return took

    def _report(self) -> None:
        """One line per worker: parts counted, its first call's cost, kernels compiled."""
        for name, w in sorted(self.workers.items()):
            n = w["compiled"]
            how = f"{n} kernel{'s' * (n != 1)} compiled" if n else "no kernel compiled"
            say(self.cfg.progress, f"worker {name}: {w['parts']} part"
                f"{'s' * (w['parts'] != 1)} in {w['seconds']:.2f} s; "
                f"first call {w['first_call_s']:.2f} s ({how})")

