"""The statistics file: ``RunningStats.save``/``load`` (``nbbn fit -o``, ``nbbn info``).

An ``.npz`` archive (no pickles) holding the :meth:`RunningStats.to_dict` entries, whose
``format`` entry names it, and a ``checksum`` entry: SHA-256 over every other entry
(name, dtype, shape and bytes), checked on reading. Written atomically by
:mod:`nbbn._durable` (temporary file, fsync, rename), which also removes the
temporary files a killed save left beside it.

Reading looks at the first bytes before ``np.load``, so a file of another kind (text,
a ``.npy`` array, an HDF5 file, an empty file) is named for what it is rather than
reported with numpy's message about pickles.
"""

from __future__ import annotations

import os

import numpy as np

from ._durable import checksum, remove_stale_temps, write_checked_npz

__all__ = ["FORMAT_NAME", "check_stats_name", "checksum", "file_kind", "fitted_file",
           "read_stats", "write_stats"]

FORMAT_NAME = "nbbn.RunningStats"
EXPECTED = "an .npz archive written by `nbbn fit -o` or RunningStats.save"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


class _Foreign(Exception):
    """An archive that is not a statistics file (raised and caught inside read_stats)."""


def file_kind(head: bytes) -> str | None:
    """What a file is that does not start like a zip archive, from its first bytes.

    Parameters
    ----------
    head : bytes
        The file's first bytes (64 are plenty).

    Returns
    -------
    str or None
        None for a zip archive (an ``.npz``); otherwise a description such as
        ``"an empty file"``, ``"a .npy array"``, ``"a text file"``.
    """
    if head.startswith(_ZIP_MAGIC):
        return None
    if not head:
        return "an empty file"
    if head.startswith(_NPY_MAGIC):
        return "a .npy array (one array, not an archive of statistics)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n\f" for c in text):
        return "a text file"
    return f"a file of another format (it starts with the bytes {head[:8].hex(' ')})"


_FITTED = {"nbbn.RunningStats": "an nbbn statistics file", "nbbn.Checkpoint": "an nbbn checkpoint"}


def fitted_file(path) -> str | None:
    """What ``path`` is when it is one of nbbn's fitted files (a statistics file, a
    checkpoint; by their ``format`` entry, whatever the name), else None (no file, or
    any other content). A writer about to replace ``path`` asks first: a transform's
    output named like the statistics file it reads replaced them."""
    import stat
    import zipfile

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # (opening a FIFO waits for a writer)
            return None
        with open(path, "rb") as f:
            if not f.read(4).startswith(_ZIP_MAGIC):
                return None
        with zipfile.ZipFile(path) as z, z.open("format.npy") as m:
            fmt = np.lib.format.read_array(m, allow_pickle=False)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return _FITTED.get(str(fmt)) if fmt.shape == () and fmt.dtype.kind == "U" else None


def _check_path(path) -> None:
    """TypeError unless ``path`` is a str or an os.PathLike."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"the statistics file's path must be a str or os.PathLike, got "
                        f"{type(path).__name__}")
    if not os.fspath(path):  # (save("") renamed a temporary file onto ".": EBUSY)
        raise ValueError("the statistics file's path is empty: name the .npz file")


_TEXT_SUFFIXES = (".json", ".csv", ".tsv", ".txt", ".yaml", ".yml", ".toml")
"""Names of text formats: a statistics file (a zip archive) named so would be opened
as text by whatever reads it next."""


def check_stats_name(path, what: str) -> None:
    """ValueError when ``path`` is named as a text file (``.json``, ``.csv``, ...): the
    statistics file is an ``.npz`` archive whatever its name, and such a name is read
    by editors and JSON or CSV readers as text. ``what`` names ``path`` in the message."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in _TEXT_SUFFIXES:
        raise ValueError(f"{what} {os.fspath(path)}: the statistics are written as an .npz "
                         f"archive, not as {suffix[1:].upper()} text; name the file .npz "
                         "(`nbbn info` prints them as text)")


def write_stats(path, d: dict) -> None:
    """Write the entries ``d`` (from ``to_dict``) and their checksum to ``path`` atomically.

    Temporary files that earlier saves to ``path`` left (a killed process) are removed
    first. The file gets the permissions ``open()`` would give it (see
    :mod:`nbbn._durable`).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file to write; its folder must exist.
    d : dict
        The :meth:`RunningStats.to_dict` entries.

    Raises
    ------
    ValueError
        ``path`` is named as a text file (``.json``, ``.csv``, ...).
    FileNotFoundError
        The folder of ``path`` does not exist.
    OSError
        The file cannot be written; an old file at ``path`` is kept.
    """
    _check_path(path)
    check_stats_name(path, "save to")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{os.fspath(path)} is a folder: name the .npz file to "
                                "write, e.g. stats.npz inside it")
    remove_stale_temps(path)
    write_checked_npz(path, d)


def read_stats(path) -> dict:
    """The checked entries of a file written by :func:`write_stats`.

    Parameters
    ----------
    path : str or os.PathLike
        The statistics file.

    Returns
    -------
    dict
        Its entries, ``checksum`` included.

    Raises
    ------
    FileNotFoundError
        There is no file at ``path``.
    ValueError
        The file is not an nbbn statistics file (another kind of file, an ``.npz``
        without the format marker), is truncated or corrupt, or fails its checksum.
    """
    _check_path(path)  # (an int was read as a file descriptor)
    not_ours = f"{path}: not an nbbn statistics file (expected {EXPECTED}"
    if os.path.isdir(path):
        raise ValueError(f"{not_ours}; this is a folder)")
    with open(path, "rb") as f:  # closed on every error (np.load leaks it on some)
        kind = file_kind(f.read(64))
        if kind is not None:
            raise ValueError(f"{not_ours}; this is {kind})")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as z:
                if "format" not in z.files:
                    shown = ", ".join(z.files[:8]) + (", ..." if len(z.files) > 8 else "")
                    raise _Foreign(f"{not_ours}; this is a zip/.npz archive without the "
                                   f"format marker, holding [{shown}])")
                d = {k: z[k] for k in z.files}
        except _Foreign as exc:
            raise ValueError(str(exc)) from None
        except Exception as exc:  # zipfile, zlib and numpy raise many kinds
            raise ValueError(f"{path}: not a readable nbbn statistics file, truncated or "
                             f"corrupt ({type(exc).__name__}: {exc})") from exc
    fmt = np.asarray(d.get("format", "")).tolist()  # (a str, or a foreign file's bytes)
    fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else str(fmt)
    if fmt != FORMAT_NAME:
        what = "an nbbn checkpoint" if fmt == "nbbn.Checkpoint" else f"format {fmt!r}"
        raise ValueError(f"{not_ours}; this is {what}, expected format {FORMAT_NAME!r})")
    if "checksum" not in d or str(d["checksum"]) != checksum(d):
        raise ValueError(f"{path}: checksum mismatch, the file is corrupt")
    return d
