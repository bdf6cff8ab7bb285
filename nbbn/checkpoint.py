"""Checkpoint files of :func:`nbbn.fit`: the statistics so far and where the fit stands.

A checkpoint is an ``.npz`` file (no pickles) holding

* ``format`` (``"nbbn.Checkpoint"``) and ``version`` (:data:`FORMAT_VERSION`);
* ``stats.<field>``: the :meth:`RunningStats.to_dict` state (count, mean, M2, min, max,
  NaN and infinity counts per channel, channel_axis, nan_policy);
* ``meta``: a JSON text with the position (next shard and row), the fit's settings
  (batch size, key), the rows and bytes done and whether the fit is complete;
* ``fingerprint``: the source's fingerprint, a JSON text as UTF-8 bytes (``uint8``).
  It is encoded once per fit (:func:`encode_fingerprint`), not at every write: over
  thousands of shards it is most of the file. Version 1 files held it in ``meta``;
  they are read as before;
* ``checksum``: SHA-256 over every other entry (name, dtype, shape and bytes).

It is written atomically by :mod:`nbbn._durable`: a temporary file in the same folder,
flushed and ``fsync``-ed, renamed over the old checkpoint with ``os.replace``, then the
folder is ``fsync``-ed; so after a crash (SIGKILL, power loss) the checkpoint is the old
one or the new one, never a mix. Loading refuses, with a :class:`CheckpointError` that says which,
a file that is truncated or corrupt, has a wrong checksum, is from a newer nbbn, or
lacks fields.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._durable import checksum, write_checked_npz
from ._statsfile import file_kind
from .errors import CheckpointError
from .running_stats import RunningStats

FORMAT_NAME = "nbbn.Checkpoint"
FORMAT_VERSION = 2
_META_FIELDS = ("position", "settings", "rows_done", "bytes_done", "complete")


@dataclass
class Checkpoint:
    """The content of a checkpoint file.

    Attributes
    ----------
    stats : RunningStats
        The statistics of every row before ``position``.
    position : dict
        ``{"shard": int, "row": int, "name": str, "digest": str or None}``: the next row
        to read.
    fingerprint : dict or None
        The source's fingerprint (None for an iterable source).
    settings : dict
        ``batch_size``, ``key``, ``channel_axis`` and ``nan_policy`` of the fit.
    rows_done, bytes_done : int
        Rows and bytes counted so far.
    complete : bool
        True once the whole source has been counted.
    extra : dict
        Further metadata: ``parts_done`` for a distributed fit (rows after ``position``
        already counted, see :mod:`nbbn._distributed`).
    fingerprint_bytes : numpy.ndarray or None
        ``encode_fingerprint(fingerprint)``, where the writer keeps it between writes
        (None: encoded by :func:`save_checkpoint`).
    """

    stats: RunningStats
    position: dict
    fingerprint: dict | None
    settings: dict
    rows_done: int = 0
    bytes_done: int = 0
    complete: bool = False
    extra: dict = field(default_factory=dict)
    fingerprint_bytes: np.ndarray | None = field(default=None, repr=False, compare=False)


def encode_fingerprint(fingerprint: dict | None) -> np.ndarray:
    """The ``fingerprint`` entry of a checkpoint: ``fingerprint``'s JSON text as UTF-8
    bytes (a read-only ``uint8`` array, to be kept for every write of a fit)."""
    encoded = np.frombuffer(json.dumps(fingerprint, sort_keys=True).encode(), np.uint8)
    encoded.flags.writeable = False
    return encoded


def save_checkpoint(path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder).

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file; its folder must exist.
    ckpt : Checkpoint
        What to write.

    Raises
    ------
    FileNotFoundError
        The folder of ``path`` does not exist.
    OSError
        The file cannot be written; the previous checkpoint is kept.
    """
    entries: dict[str, Any] = {
        "format": np.asarray(FORMAT_NAME),
        "version": np.asarray(FORMAT_VERSION),
    }
    for k, v in ckpt.stats.to_dict().items():
        entries[f"stats.{k}"] = np.asarray(v)
    meta = {
        "position": ckpt.position,
        "settings": ckpt.settings,
        "rows_done": int(ckpt.rows_done),
        "bytes_done": int(ckpt.bytes_done),
        "complete": bool(ckpt.complete),
        "written_unix": time.time(),
        **ckpt.extra,
    }
    entries["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    fp = ckpt.fingerprint_bytes
    entries["fingerprint"] = encode_fingerprint(ckpt.fingerprint) if fp is None else fp
    write_checked_npz(path, entries)


def load_checkpoint(path, *, backend: str = "auto") -> Checkpoint:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.
    backend : {"auto", "cpu", "cuda"}, default "auto"
        The backend of the statistics returned.

    Returns
    -------
    Checkpoint
        The statistics, position, fingerprint and settings it holds.

    Raises
    ------
    FileNotFoundError
        There is no file at ``path``.
    CheckpointError
        The file is truncated or corrupt (not a readable zip, wrong checksum), is not an
        nbbn checkpoint, has a newer format version, or lacks fields.
    """
    where = f"checkpoint {path}"
    with open(path, "rb") as f:  # our own handle: np.load leaks its own on some errors
        kind = file_kind(f.read(64))
        if kind == "an empty file":
            raise CheckpointError(f"{where} is empty: truncated or corrupt; delete it to start "
                                  "the fit over")
        if kind is not None:
            raise CheckpointError(f"{where} is not an nbbn checkpoint (expected an .npz "
                                  f"archive written by nbbn.fit; this is {kind})")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception as exc:  # zipfile, zlib and numpy raise many kinds
            raise CheckpointError(
                f"{where} is truncated or corrupt and cannot be read ({type(exc).__name__}: "
                f"{exc}); delete it to start the fit over") from exc
    fmt = str(d.get("format", ""))
    if fmt != FORMAT_NAME:
        what = "a statistics file" if fmt == "nbbn.RunningStats" else "not an nbbn checkpoint"
        raise CheckpointError(f"{where} is {what} (format {fmt!r}, expected {FORMAT_NAME!r})")
    v = np.asarray(d.get("version", ""))
    if v.shape or v.dtype.kind not in "iu":  # (a text or fraction: hand-made, not ours)
        raise CheckpointError(f"{where} has no valid format version (expected an integer, "
                              f"got {v.tolist()!r})")
    version = int(v)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format version {version}, newer than this nbbn reads "
            f"({FORMAT_VERSION}); upgrade nbbn to resume it")
    missing = [k for k in ("meta", "checksum") if k not in d]
    if missing:
        raise CheckpointError(f"{where} is missing the fields {missing}")
    if str(d["checksum"]) != checksum(d):
        raise CheckpointError(
            f"{where} is corrupt: its SHA-256 checksum does not match its content; "
            "delete it to start the fit over")
    try:
        meta = json.loads(str(d["meta"]))
    except ValueError as exc:
        raise CheckpointError(f"{where} has unreadable metadata ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where} has unreadable metadata (expected a JSON object, "
                              f"got {type(meta).__name__})")
    missing = [k for k in _META_FIELDS if k not in meta]
    if "fingerprint" not in (meta if version < 2 else d):  # (version 1: in the meta text)
        missing.append("fingerprint")
    if missing:
        raise CheckpointError(f"{where} is missing the fields {missing}")
    try:
        fingerprint = meta["fingerprint"] if version < 2 else \
            json.loads(np.asarray(d["fingerprint"], np.uint8).tobytes().decode())
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where} has an unreadable fingerprint ({exc})") from exc
    stats_d = {k[len("stats."):]: v for k, v in d.items() if k.startswith("stats.")}
    try:
        stats = RunningStats.from_dict(stats_d, backend=backend)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where} holds invalid statistics: {exc}") from exc
    pos = meta["position"]
    if not (isinstance(pos, dict) and _count(pos.get("shard")) and _count(pos.get("row"))):
        raise CheckpointError(f"{where} has an invalid position {pos!r}")
    bad = [k for k in ("rows_done", "bytes_done") if not _count(meta[k])]
    bad += [] if isinstance(meta["settings"], dict) else ["settings"]
    bad += [] if isinstance(meta["complete"], bool) else ["complete"]
    if bad:
        raise CheckpointError(f"{where} has invalid metadata: "
                              + ", ".join(f"{k}={meta[k]!r}" for k in bad))
    extra = {k: v for k, v in meta.items()
             if k not in (*_META_FIELDS, "fingerprint", "written_unix")}
    return Checkpoint(stats, pos, fingerprint, meta["settings"],
                      int(meta["rows_done"]), int(meta["bytes_done"]), bool(meta["complete"]),
                      extra)


def _count(v) -> bool:
    """Whether a JSON value is a count: an int >= 0 (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# the kinds of source a fingerprint names (Source subclasses), as messages say them
_KINDS = {"Source": "arrays or array files (.npy, .npz, HDF5, zarr)",
          "ChunkedSource": "a dask array", "TableSource": "a table (Parquet, CSV, a DataFrame)",
          "ImageSource": "image files"}

# fingerprint keys added after checkpoints were written without them: a saved shard
# without one is not compared on it (ImageSource's resolved JPEG decoder, 2026-12-06)
_ADDED_LATER = frozenset({"jpeg_decoder"})

# the keys of a shard's fingerprint that are settings of the fit (an ImageSource's
# options, a table's columns, an .npz file's key), not properties of the data ("size"
# only in an ImageSource's: a file's is its byte count)
_SETTINGS = frozenset({"mode", "size", "histogram", "jpeg_decoder", "columns", "key"})

# the key that says which file a shard is, compared before the others (not its name,
# which may hold a count: an ImageSource's list, whose digest says more)
_IDENTITY = ("path",)


def _spelled(kind, x: dict, y: dict) -> set[str]:
    """The keys not compared: a shard's name where the path as typed makes it (``d``,
    ``d/``, ``./d`` or the absolute path: one file) and an absolute path or an image
    list's digest says which file it is. A resume of ``nbbn fit d/`` refused the
    checkpoint of ``nbbn fit d``."""
    files = ("path" in x and "path" in y) or kind == "ImageSource"
    return {"name"} if files else set()


def check_fingerprint(saved: dict | None, current: dict | None, path, read_upto: int,
                      counted: set[int] | None = None) -> None:
    """Raise CheckpointError naming the first difference in the shards already read.

    Shards ``0 .. read_upto`` (the last one possibly in part) have been counted, so they
    must be unchanged; shards after them may differ or be new, since they will be read
    as they are now (e.g. a corrupt shard that stopped the fit, since replaced).

    Parameters
    ----------
    saved, current : dict or None
        The fingerprint in the checkpoint and that of the source now (None: an iterable).
    path : str or os.PathLike
        The checkpoint, for the message.
    read_upto : int
        The shard the checkpoint's position is in.
    counted : set of int, optional
        The shards with counted rows, where not all of ``0 .. read_upto`` are (a
        distributed fit's parts); only those are compared, each at its number.

    Raises
    ------
    CheckpointError
        The source is of another kind, has fewer shards than were counted, or a counted
        shard changed.
    """
    where = f"checkpoint {path}"
    if current is not None:
        current = json.loads(json.dumps(current))  # the types a saved fingerprint has
    if saved is None and current is None:
        return
    if saved is None or current is None:
        kinds = ("an iterable", "files or arrays")
        was, now = kinds if saved is None else kinds[::-1]
        raise CheckpointError(f"{where} was written for {was}, but the source is {now}")
    if saved.get("kind") != current.get("kind"):
        was, now = (_KINDS.get(str(f.get("kind")), str(f.get("kind"))) for f in (saved, current))
        raise CheckpointError(f"{where} was written for a different kind of source: {was}, "
                              f"but the source is {now}; refusing to resume")
    a, b = saved.get("shards", []), current.get("shards", [])
    n = min(read_upto + 1, len(a))
    idx = list(range(n)) if counted is None else sorted(i for i in counted if i < n)
    for i in idx if counted is not None else ():
        if (moved := _shifted(i, a[i], a, b)) is not None:
            raise CheckpointError(f"{where} does not match the source: {moved}; refusing "
                                  "to resume")
    if len(b) < n:
        paths = {f.get("path") for f in b}
        gone = next((a[i] for i in idx if a[i].get("path") is not None
                     and a[i]["path"] not in paths), None)
        note = "" if gone is None else \
            f" (it counted {_shown(gone)}, which is no longer among the data)"
        what = f"{n} shards" if counted is None else f"rows of shard {n - 1}"
        raise CheckpointError(
            f"{where} has counted {what}, but the source now has only {len(b)}{note}: "
            "the data changed (or this is another source); refusing to resume")
    for i in idx:
        x, y = a[i], b[i]
        if (other := _other_file(i, x, y, a, [a[k] for k in idx], b)) is not None:
            raise CheckpointError(f"{where} does not match the source: {other}; refusing "
                                  "to resume")
        # the file first: a file's mtime was blamed (keys in alphabetical order) when the
        # shard was another file
        ignored = _spelled(saved.get("kind"), x, y)
        for k in (*_IDENTITY, *sorted((set(x) | set(y)) - set(_IDENTITY) - ignored)):
            if k in _ADDED_LATER and k not in x:
                continue  # a checkpoint from before the key: not recorded, not compared
            # (not the data: a setting; "size" is a file's byte count but for images)
            if x.get(k) != y.get(k) and k in _SETTINGS and (
                    k != "size" or saved.get("kind") == "ImageSource"):
                from ._wording import Param, worded

                raise worded(CheckpointError, "{where} was written with {saved}, but this fit "
                             "has {given}: a setting changed, not the data; use the same "
                             "settings to resume", where=where, saved=Param(k, x.get(k)),
                             given=Param(k, y.get(k)))
            if x.get(k) != y.get(k):
                raise CheckpointError(
                    f"{where} does not match the source: shard {i} ({y.get('name')}), already "
                    f"counted, now has {k} {y.get(k)!r}, but the checkpoint recorded "
                    f"{x.get(k)!r}{_files_then_and_now(k, x, y)}; the data changed (or this "
                    "is another source); refusing to resume")


def _shown(shard: dict) -> str:
    """A shard of a fingerprint as messages name it: its name (as given), else its path."""
    return str(shard.get("name") or shard.get("path"))


def _shifted(i: int, x: dict, saved: list, current: list) -> str | None:
    """For a checkpoint that counted shard ``i``, ``x``, but not every shard before it
    (a distributed fit's): why that file, still among the data, is another shard now (a
    file before it that was not counted is gone, or a new one sorts before it); None
    when it is shard ``i`` still, is gone, or is not a file."""
    now = [f.get("path") for f in current]
    px = x.get("path")
    if px is None or px not in now or (i < len(now) and now[i] == px):
        return None
    j = now.index(px)
    was = {f.get("path") for f in saved}
    gone = next((f for f in saved[:i] if f.get("path") not in now), None)
    new = next((f for f in current[:j] if f.get("path") not in was), None)
    if gone is not None:
        why = (f"{_shown(gone)}, before it, is no longer among the data (removed, renamed "
               "or moved)")
    elif new is not None:
        why = f"{_shown(new)} is new and sorts before it"
    else:
        return None
    return (f"it counted {_shown(x)} as shard {i}, which is shard {j} now: {why}; the rows "
            "a distributed fit counted are recorded by shard number, so no file may be "
            "added or removed before them")


def _other_file(i: int, x: dict, y: dict, saved: list, counted: list,
                current: list) -> str | None:
    """Why shard ``i`` of the source, ``y``, is another file than the one the checkpoint
    counted there, ``x`` (None when both are the same file, or not files): the counted
    file is gone, a new one sorts before it, the files moved, or none of the files
    counted is among the data (another folder)."""
    px, py = x.get("path"), y.get("path")
    if px is None or py is None or px == py:
        return None
    now = {f.get("path") for f in current}
    if px not in now and not any(f.get("path") in now for f in counted) and \
            os.path.dirname(px) != os.path.dirname(py):
        return (f"shard {i} is {_shown(y)}, but the checkpoint counted {_shown(x)} there, "
                "and none of the files it counted is among the data (a checkpoint of "
                "another folder?)")
    if px not in now:
        return (f"the checkpoint counted {_shown(x)}, which is no longer among the data "
                f"(removed, renamed or moved; shard {i} is now {_shown(y)})")
    if py not in {f.get("path") for f in saved}:
        return (f"{_shown(y)} is new and sorts before files already counted (it is shard "
                f"{i} now, where the checkpoint counted {_shown(x)})")
    return (f"shard {i} is now {_shown(y)}, but the checkpoint counted {_shown(x)} there "
            "(the files are in another order)")


def _files_then_and_now(key: str, saved: dict, current: dict) -> str:
    """For a changed digest of a list of files (an ImageSource's): how many files the
    checkpoint recorded and the source has now ("" for any other key)."""
    if key != "digest" or "files" not in saved or "files" not in current:
        return ""
    a, b = saved["files"], current["files"]
    if a == b:
        return (f" (a list of {a} files then and now: a file was renamed, replaced, "
                "rewritten or touched)")
    return f" (a list of {a} files then, {b} now)"
