"""Durable files: every file nbbn writes for the user is the old one or the new one, whole.

Statistics files (``RunningStats.save``, ``nbbn fit -o``), checkpoints, the ``.npy``
output of ``nbbn.transform`` and the bench's JSON are all written through a
:class:`Replacement`:

1. A temporary file is created in the target's folder, named
   ``.{name}.{8 hex digits}.nbbn-tmp`` (:data:`TMP_SUFFIX`; one pattern for every
   writer, so :func:`remove_stale_temps` finds what a killed writer left).
2. The writer fills it, by path (a memory map) or through :meth:`Replacement.open`.
3. :meth:`Replacement.commit` ``fsync``-s the file, renames it over the target with
   ``os.replace`` (atomic on POSIX and Windows), then ``fsync``-s the folder (best
   effort: a no-op where folders cannot be opened). After a crash or a power loss the
   target is the old file or the new one, never a mix. :meth:`Replacement.abort` (or an
   error inside ``with``) removes the temporary file and leaves the target as it was.

Permissions: the temporary file is created with ``os.open(..., 0o666)``, so the kernel
applies the process's umask exactly as it does for ``open(path, "w")`` or ``np.save``
(0644 under umask 022, 0600 under 077; a folder's default ACL applies too).
``tempfile.mkstemp`` would give 0600 whatever the umask. The umask itself is never
read: reading it portably means ``os.umask(x)`` followed by ``os.umask(old)``, which
changes a process-wide setting for a moment and races with other threads creating
files. When the target already exists its permission bits are copied to the new file,
as writing over it with ``open`` would keep them.

Special files: a target that is a device, a FIFO or a socket (a link to one included)
is refused before anything is written (:func:`check_file_path`): the rename would
replace it with a regular file.

Ctrl-C: creating and locking the temporary file, the close after the rename and an
abort's remove and close run under :class:`~nbbn._interrupt.deferred_sigint` (an
interrupt between them would leave a file or a descriptor to no one);
:func:`write_checked_npz` holds it back for its whole (small) write.

A writer holds an exclusive ``flock`` on its temporary file until the rename (where
``fcntl`` exists), so :func:`remove_stale_temps` removes the files of writers that
died, never the one a live writer in another process is filling.

A zarr store is a folder, which ``os.replace`` cannot put over a non-empty one:
:class:`StoreReplacement` fills a temporary folder of the same name pattern and, on
commit, swaps it with the target in one ``renameat2(RENAME_EXCHANGE)`` (Linux), then
removes the old store. Where the exchange is missing (another OS, a file system
without it) the old store is first renamed aside, so a crash between the two renames
leaves the target missing (the new store and the old one both beside it, under
temporary names).

:func:`checksum` is the SHA-256 that statistics files and checkpoints carry over their
``.npz`` entries, and :func:`write_checked_npz` writes such a file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._interrupt import deferred_sigint

if TYPE_CHECKING:
    from typing_extensions import Self

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there anyway
    fcntl = None  # type: ignore[assignment]

__all__ = ["TMP_SUFFIX", "Replacement", "StoreReplacement", "atomic_write", "check_file_path",
           "checksum", "remove_stale_temps", "write_checked_npz"]

TMP_SUFFIX = ".nbbn-tmp"
"""The suffix of every temporary file nbbn writes (``.{name}.{random}.nbbn-tmp``)."""

_ATTEMPTS = 100


def check_file_path(path: str | os.PathLike[str]) -> None:
    """IsADirectoryError for a file's path that ends in a separator (``"out/"``), as
    ``open(path, "w")`` gives: ``Path()`` drops the separator, and the file would be
    written under the folder's name. OSError for an existing target (a link followed)
    that is a device, a FIFO or a socket: the rename would replace it with a regular
    file (``/dev/null`` itself, as root), and a FIFO's reader would never get the data."""
    name = os.fspath(path)
    seps = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if isinstance(name, str) and name.endswith(seps):
        raise IsADirectoryError(errno.EISDIR, "a file's path, ending in a separator, "
                                "names a folder", name)
    kind = _special_kind(path)
    if kind is not None:
        raise OSError(f"{os.fsdecode(name)} is {kind}, not a regular file: nbbn writes a "
                      "new file and renames it over the target, which would replace it; "
                      "name a regular file")


def _special_kind(path: str | os.PathLike[str]) -> str | None:
    """What the existing ``path`` (a link followed) is when it is neither a regular file
    nor a folder: "a device", "a FIFO (named pipe)", "a socket"; None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def _temp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def _temp_pattern(name: str) -> re.Pattern[str]:
    """Temporary names of ``name``: the random part has no dot, so ``a.npz``'s pattern does
    not match the temporary files of ``a.npz.bak`` (``tempfile``'s names of earlier nbbn
    versions, ``[a-z0-9_]{8}``, match too)."""
    return re.compile(rf"\.{re.escape(name)}\.\w+{re.escape(TMP_SUFFIX)}\Z")


def _rename(src: str, dst: str) -> None:
    """The rename that commits a file. One function, so that a test can slow it down to
    hit the write window (see tests/slow_writes.py)."""
    os.replace(src, dst)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _existing_mode(path: Path) -> int | None:
    """The permission bits of the regular file at ``path``, None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _lock(fd: int, path: str) -> bool:
    """Take the writer's lock on a new temporary file; False if a cleaner removed it first."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a cleaner looks at this very file
    except OSError:  # a file system without locks
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False


class Replacement:
    """A temporary file beside ``target`` that replaces it on :meth:`commit`.

    Use it as a context manager (commit on success, abort on an error) or call
    :meth:`commit` / :meth:`abort` yourself; both may be called more than once.

    Parameters
    ----------
    target : str or os.PathLike
        The file to write. Its folder must exist.

    Attributes
    ----------
    target : pathlib.Path
        The file replaced on commit.
    path : pathlib.Path
        The temporary file, empty at first, to be filled by the caller (by path, or
        through :meth:`open`).

    Raises
    ------
    FileNotFoundError
        The folder of ``target`` does not exist.
    OSError
        The temporary file cannot be created (permissions, disk full), or ``target``
        is a device, a FIFO or a socket (only a regular file is replaced).
    """

    _FOLDER = False  # (the target is a file; StoreReplacement's is a folder)

    def __init__(self, target: str | os.PathLike[str]) -> None:
        if not self._FOLDER:
            check_file_path(target)
        # a link is followed (as ``cp`` and ``open`` follow it): its file is replaced,
        # the link kept, where a rename onto the link would replace the link itself
        self.target = Path(os.path.realpath(target) if os.path.islink(target) else target)
        folder = self.target.parent
        mode = _existing_mode(self.target)
        if mode is not None and not os.access(self.target, os.W_OK):
            # (as open(target, "w") refuses it; the rename would be allowed, and the copied
            # mode made the temporary file itself unwritable)
            raise PermissionError(errno.EACCES, "the file is read-only: nbbn does not "
                                  "replace a file it may not write", str(self.target))
        self._fd: int | None = None
        try:  # (Ctrl-C held back: raised between the creation and self._fd, it would
            # leave the file and its descriptor to no one; raised at the end, it aborts)
            with deferred_sigint():
                self.path = self._create_locked(folder)
                if mode is not None:
                    with contextlib.suppress(OSError):
                        os.chmod(self.path, mode)
        except BaseException:
            self.abort()
            raise

    def _create_locked(self, folder: Path) -> Path:
        """Create and lock a temporary file of a free name in ``folder`` (``self._fd``)."""
        for _ in range(_ATTEMPTS):
            tmp = folder / _temp_name(self.target.name)
            try:
                fd = self._create(tmp)
            except FileExistsError:
                continue
            except FileNotFoundError:
                if not folder.is_dir():
                    raise FileNotFoundError(
                        f"{self.target}: the folder {folder} does not exist") from None
                raise
            except OSError as exc:  # name the target, not the temporary file
                raise type(exc)(exc.errno, exc.strerror, str(self.target)) from None
            if _lock(fd, str(tmp)):
                self._fd = fd
                return tmp
            os.close(fd)
        raise FileExistsError(  # pragma: no cover - 100 collisions of 32 random bits
            f"{self.target}: no free temporary name in {folder}")

    @staticmethod
    def _create(tmp: Path) -> int:
        """Create the temporary file (``O_EXCL``); its descriptor."""
        return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                       0o666)

    def open(self, mode: str = "wb") -> IO[Any]:
        """The temporary file opened for writing from its start (close it before commit).

        Parameters
        ----------
        mode : {"wb", "w"}, default "wb"
            Binary, or text in UTF-8.

        Returns
        -------
        file object
            A new handle on the temporary file; closing it keeps the lock.
        """
        if mode not in ("wb", "w"):
            raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
        return open(self.path, mode, encoding=None if "b" in mode else "utf-8")

    def commit(self) -> None:
        """``fsync`` the temporary file, rename it over the target, ``fsync`` the folder.

        Raises
        ------
        OSError
            The data cannot be made durable or the rename fails; the temporary file is
            removed and the target left as it was.
        """
        if self._fd is None:
            return
        try:
            old = self._put_in_place()
        except BaseException:
            self.abort()
            raise
        with deferred_sigint():  # (in place now: Ctrl-C waits for the rest)
            os.close(self._fd)
            self._fd = None
            _fsync_dir(self.target.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def _put_in_place(self) -> Path | None:
        """``fsync`` the temporary file and rename it over the target; where an old
        version went when it must still be removed (None: the rename replaced it)."""
        assert self._fd is not None
        os.fsync(self._fd)
        _rename(str(self.path), str(self.target))
        return None

    def abort(self) -> None:
        """Remove the temporary file; the target stays as it was."""
        if self._fd is None:
            return
        with deferred_sigint():
            with contextlib.suppress(OSError):
                _remove(str(self.path))
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class StoreReplacement(Replacement):
    """A temporary folder beside ``target`` (a zarr store) that replaces it on
    :meth:`commit` (swapped in, then the old store removed); :meth:`abort` removes it.
    As :class:`Replacement` otherwise: the same names, lock, and context manager.

    Parameters
    ----------
    target : str or os.PathLike
        The folder to write. Its parent must exist.

    Attributes
    ----------
    target, path : pathlib.Path
        The folder replaced on commit, and the temporary one to fill.
    """

    _FOLDER = True

    @staticmethod
    def _create(tmp: Path) -> int:
        os.mkdir(tmp)
        if fcntl is None:  # (no folder descriptors, nor locks, on Windows)
            return os.open(os.devnull, os.O_RDONLY)
        return os.open(tmp, os.O_RDONLY)  # (the descriptor the writer's lock is on)

    def _put_in_place(self) -> Path | None:
        """Flush the store's files and folders, then swap it in (the folder must be the
        one created and locked: a writer that replaced it, as zarr's ``mode="w"``
        does, would have written where a cleaner could remove it)."""
        assert self._fd is not None
        if fcntl is not None and not os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
            raise OSError(f"{self.target}: the temporary store {self.path.name} was replaced "
                          "while it was written; nothing was changed")
        _fsync_tree(self.path)
        if not os.path.lexists(self.target):
            _rename(str(self.path), str(self.target))
            return None
        if _exchange(str(self.path), str(self.target)):
            return self.path  # (it holds the old store now)
        aside = self.target.parent / _temp_name(self.target.name)
        old = None if fcntl is None else os.open(self.target, os.O_RDONLY)
        try:  # (locked, so that a cleaner leaves the old store alone while it is aside)
            if old is not None:
                _lock(old, str(self.target))
            _rename(str(self.target), str(aside))
            try:
                _rename(str(self.path), str(self.target))
            except BaseException:
                _rename(str(aside), str(self.target))
                raise
        finally:
            if old is not None:
                os.close(old)
        return aside


def _fsync_tree(folder: Path) -> None:
    """``fsync`` every file under ``folder``, then the folders, deepest first (what the
    swap of a store makes visible must be on disk before it)."""
    for root, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _exchange(a: str, b: str) -> bool:
    """Swap the paths ``a`` and ``b`` atomically (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False where that call is missing or refused (then nothing
    moved)."""
    libc = _libc()
    if libc is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                      rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


@functools.cache
def _libc():
    """The C library when it has ``renameat2`` (glibc 2.28+), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    fn.restype = ctypes.c_int
    return libc


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``target`` through a file object; it is replaced only when the block ends well.

    Parameters
    ----------
    target : str or os.PathLike
        The file to write (its folder must exist).
    mode : {"wb", "w"}, default "wb"
        Binary, or text in UTF-8.

    Yields
    ------
    file object
        The temporary file, open for writing.

    Raises
    ------
    FileNotFoundError
        The folder of ``target`` does not exist.
    IsADirectoryError
        ``target`` is a folder (checked first: the rename at the end failed, naming the
        temporary file).
    """
    if os.path.isdir(target):
        raise IsADirectoryError(f"{os.fspath(target)} is a folder; expected the path of a "
                                "file to write")
    with Replacement(target) as rep, rep.open(mode) as f:
        yield f


def remove_stale_temps(target: str | os.PathLike[str]) -> list[str]:
    """Delete the temporary files (and store folders) of ``target`` that dead writers
    left; return their paths.

    A temporary file or folder that a live writer holds locked is left alone.

    Parameters
    ----------
    target : str or os.PathLike
        The file whose temporary files (``.{name}.*.nbbn-tmp`` beside it) are removed.

    Returns
    -------
    list of str
        The files removed.
    """
    # a link's writes go beside the file it points to (Replacement), and so do their temps
    target = Path(os.path.realpath(target) if os.path.islink(target) else target)
    folder = target.parent
    pattern = _temp_pattern(target.name)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        if pattern.match(name) is None:
            continue
        path = os.path.join(folder, name)
        if fcntl is None:  # (an open file cannot be deleted there; a folder can, so
            if not os.path.isdir(path):  # a store, which has no lock, is left alone)
                with contextlib.suppress(OSError):
                    _remove(path)
                    removed.append(path)
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # gone already, or not ours to judge
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live writer
            os.close(fd)
            continue
        except OSError:  # a file system without locks: it was a temporary file all the same
            pass
        try:
            _remove(path)
            removed.append(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _remove(path: str) -> None:
    """Remove a temporary file, or a temporary folder (a zarr store) with its content."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def checksum(d: dict) -> str:
    """SHA-256 over the entries of ``d`` except ``"checksum"`` (names, dtypes, shapes, bytes).

    Parameters
    ----------
    d : dict
        ``.npz`` entries: names to arrays (or values ``np.asarray`` takes).

    Returns
    -------
    str
        The hexadecimal digest.
    """
    import numpy as np

    h = hashlib.sha256()
    for key in sorted(k for k in d if k != "checksum"):
        a = np.ascontiguousarray(np.asarray(d[key]))
        h.update(key.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_checked_npz(target: str | os.PathLike[str], entries: dict) -> None:
    """Write ``entries`` and their :func:`checksum` (entry ``"checksum"``) as an ``.npz``.

    Atomically, through a :class:`Replacement`: ``target`` is the old file or the new
    one, never a mix. Ctrl-C is held back until the file is in place (these files are
    small: statistics, checkpoints), then raised: an interrupt inside ``np.savez``
    would surface as zipfile's ``ValueError`` and leave the temporary file behind.

    Parameters
    ----------
    target : str or os.PathLike
        The file to write (its folder must exist).
    entries : dict
        Names to arrays; no object arrays (the file is read without pickles).

    Raises
    ------
    FileNotFoundError
        The folder of ``target`` does not exist.
    OSError
        The file cannot be written; the old one is kept.
    """
    import numpy as np

    entries = {**entries, "checksum": np.asarray(checksum(entries))}
    with deferred_sigint(), atomic_write(target) as f:
        np.savez(f, **entries)
