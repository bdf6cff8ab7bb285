"""The statistics file: ``RunningStats.save``/``load`` (``nbbn fit -o``, ``nbbn info``).

An ``.npz`` archive (no pickles) holding the :meth:`RunningStats.to_dict` entries, whose
``format`` entry names it, and a ``checksum`` entry: SHA-256 over every other entry
(name, dtype, shape and bytes), checked on reading.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_NAME = "nbbn.RunningStats"


def checksum(d: dict) -> str:
    """SHA-256 over the entries of ``d`` except ``"checksum"`` (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for key in sorted(k for k in d if k != "checksum"):
        a = np.ascontiguousarray(np.asarray(d[key]))
        h.update(key.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_stats(path, d: dict) -> None:
    """Write the entries ``d`` (from ``to_dict``) and their checksum to ``path`` atomically."""
    d = {**d, "checksum": checksum(d)}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **d)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
