"""The statistics file: ``RunningStats.save``/``load`` (``nbbn fit -o``, ``nbbn info``).

An ``.npz`` archive (no pickles) holding the :meth:`RunningStats.to_dict` entries, whose
``format`` entry names it, and a ``checksum`` entry: SHA-256 over every other entry
(name, dtype, shape and bytes), checked on reading. Written atomically by
:mod:`nbbn._durable` (temporary file, fsync, rename), which also removes the
temporary files a killed save left beside it.
"""

from __future__ import annotations

import zipfile

import numpy as np

from ._durable import checksum, remove_stale_temps, write_checked_npz

__all__ = ["FORMAT_NAME", "checksum", "read_stats", "write_stats"]

FORMAT_NAME = "nbbn.RunningStats"


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
    FileNotFoundError
        The folder of ``path`` does not exist.
    OSError
        The file cannot be written; an old file at ``path`` is kept.
    """
    remove_stale_temps(path)
    write_checked_npz(path, d)


def read_stats(path) -> dict:
    """The checked entries of a file written by :func:`write_stats`; ValueError otherwise."""
    try:
        with open(path, "rb") as f:  # closed on every error (np.load leaks it on some)
            z = np.load(f, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("it holds one .npy array, expected an .npz archive")
            with z:
                d = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable nbbn statistics file ({exc})") from exc
    if str(d.get("format", "")) != FORMAT_NAME:
        raise ValueError(f"{path}: not an nbbn RunningStats file (no format marker)")
    if "checksum" not in d or str(d["checksum"]) != checksum(d):
        raise ValueError(f"{path}: checksum mismatch, the file is corrupt")
    return d
