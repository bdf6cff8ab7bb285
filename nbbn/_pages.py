"""Pages of a caller's ``np.memmap`` released once a batch is done with them.

``nbbn.fit`` and ``nbbn.transform`` given an ``np.memmap`` object (rather than its
path) read, or write, it batch by batch; without a hint every page they touched stays
mapped, and the resident set grows to the file's size. ``madvise(MADV_DONTNEED)``
drops the mapping's pages wholly inside a batch's bytes: the data stay in the page
cache (a read-only or shared mapping; dirty shared pages are written back as ever),
and a later access faults them back in. A copy-on-write map (mode ``"c"``) holds
private changes that this would discard: it is left alone.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable

import numpy as np

__all__ = ["release_span", "releaser"]


def release_span(mm: mmap.mmap | None, lo: int, hi: int) -> None:
    """Drop ``mm``'s pages wholly inside the bytes ``[lo, hi)`` from this process (a
    page shared with the next batch stays); nothing on a closed map or without
    ``madvise``."""
    page = mmap.PAGESIZE
    a, b = lo // page * page, hi // page * page
    if b > a and mm is not None and not mm.closed and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED, a, b - a)


def releaser(array, part: np.ndarray) -> Callable[[], None] | None:
    """A function that releases the pages of ``part`` (a C-contiguous slice of
    ``array``), or None where there is nothing to release safely: ``array`` is not a
    read-only or shared ``np.memmap``, or the platform has no ``madvise``."""
    mm = getattr(array, "_mmap", None)  # numpy's own mapping of an np.memmap
    if not (isinstance(array, np.memmap) and getattr(array, "mode", None) in ("r", "r+", "w+")
            and isinstance(mm, mmap.mmap) and hasattr(mm, "madvise")
            and part.size and part.flags.c_contiguous):
        return None
    try:
        base = np.frombuffer(mm, np.uint8, count=1).ctypes.data
    except (ValueError, TypeError, BufferError):  # (a closed or empty map)
        return None
    lo = part.ctypes.data - base
    hi = lo + part.nbytes
    if not 0 <= lo < hi <= len(mm):
        return None
    return lambda: release_span(mm, lo, hi)
