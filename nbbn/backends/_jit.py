"""Compiling one kernel source under a name of its own.

numba's on-disk cache names its index after the Python function (module, qualified
name, first line) and keys the entries by signature, not by compile options or by the
module globals a kernel's code was specialized on. Two dispatchers built from one
function object would share the index, and whichever build was cached first would be
loaded by both. :func:`tagged` therefore compiles a copy of the function whose name
carries a tag (the SIMD level the code was generated for): one cache index per tag.
The name also carries :data:`SOURCE_TAG`, a hash of the kernel sources: the cache
checks only the kernel's own file, and a kernel inlines helpers from other modules.
"""

from __future__ import annotations

import contextlib
import hashlib
import types
import warnings
from pathlib import Path

import numba


def _source_tag() -> str:
    """8 hex digits of a hash of every source a kernel's machine code depends on: the
    backends' modules (the kernels and the helpers they inline), ``_merge`` and
    ``_policy``. numba's cache checks only the stamp of the kernel's own file, so a
    changed helper (``cpu_numerics``, ``cpu_simd``) would otherwise load the old build."""
    here = Path(__file__).parent
    digest = hashlib.sha1()
    for path in [*sorted(here.glob("*.py")), here.parent / "_merge.py",
                 here.parent / "_policy.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


SOURCE_TAG = _source_tag()

if getattr(numba.config, "DISABLE_JIT", False):  # the kernels use numba's overloads and intrinsics
    from ..errors import BackendUnavailableError  # (a RuntimeError)

    raise BackendUnavailableError("nbbn's kernels run only compiled by numba, and "
                                  "NUMBA_DISABLE_JIT is set: unset it (or set it to 0) to "
                                  "use nbbn")


def _renamed(fn, suffix: str, constants: dict | None = None):
    glob = fn.__globals__ if not constants else {**fn.__globals__, **constants}
    copy = types.FunctionType(fn.__code__, glob, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__doc__ = fn.__doc__
    copy.__module__ = fn.__module__
    return copy


def tagged(fn, tag: str, constants: dict | None = None, **options):
    """``numba.njit(**options)`` of a copy of ``fn`` named ``<name>_<tag>_<SOURCE_TAG>``:
    one cache index per tag and per version of the kernel sources.

    ``constants`` replace module globals of the copy (numba freezes globals at compile
    time, so a ``if FLAG:`` on one of them is pruned): one source, two kernels. Give each
    such build a tag of its own, since the cache does not see the globals.
    """
    suffix = (f"_{tag}" if tag else "") + f"_{SOURCE_TAG}"
    copy = _renamed(fn, suffix, constants)
    try:
        return _guarded(numba.njit(**options)(copy))
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        if not options.get("cache"):
            raise
        global no_cache
        if not no_cache:  # once per process, not once per kernel
            no_cache = True
            warnings.warn(NO_CACHE_WARNING.format(exc), RuntimeWarning, stacklevel=2)
        return numba.njit(**{**options, "cache": False})(copy)


def _guarded(dispatcher):
    """``dispatcher`` with its disk cache's reads and writes guarded: a cache folder
    that fails after it was opened (a full disk, another user's files in a shared
    folder, a truncated or corrupt entry) raised from the first call of the kernel
    (numba lets such errors through). A failed read is a miss (the kernel is
    compiled), a failed write is skipped; either warns once per process. Writes hold a
    lock shared with other processes (:func:`_saving`)."""
    cache = getattr(dispatcher, "_cache", None)
    load, save = getattr(cache, "load_overload", None), getattr(cache, "save_overload", None)
    if load is None or save is None or type(cache).__name__ == "NullCache":
        return dispatcher

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception as exc:  # (EOFError, UnpicklingError, OSError, ...)
            _cache_failed("read", cache, exc)
            return None

    def save_overload(sig, data):
        try:
            with _saving(cache):
                save(sig, data)
        except Exception as exc:
            _cache_failed("written", cache, exc)

    cache.load_overload, cache.save_overload = load_overload, save_overload
    return dispatcher


@contextlib.contextmanager
def _saving(cache):
    """An exclusive lock, across processes, on a file beside the kernel's cache index,
    held while an entry is saved (POSIX ``flock``; elsewhere, or where the file cannot
    be opened or locked, numba's own unlocked save).

    numba saves an entry by reading the index, taking the first unused data-file
    number, writing the index, then the data file. Two processes saving two signatures
    of one kernel at once (dask workers, DataLoader workers or test workers compiling
    in one cache folder) both took the same number: the index kept one of the two
    entries, and could name the other signature's machine code for it, which a later
    process would load and call with the wrong types."""
    path = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    try:
        import fcntl

        lock = open(path + ".lock", "a")  # noqa: SIM115 - closed below
    except (ImportError, OSError, TypeError):  # (not POSIX; no index path; unwritable)
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            locked = True
        except OSError:  # a file system without locks (some NFS mounts): unlocked
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _cache_failed(what: str, cache, exc: BaseException) -> None:
    global cache_failed
    if not cache_failed:  # once per process, not once per kernel
        cache_failed = True
        warnings.warn(CACHE_FAILED_WARNING.format(
            what=what, path=getattr(cache, "cache_path", "?"),
            error=f"{type(exc).__name__}: {exc}"), RuntimeWarning, stacklevel=3)


cache_failed = False  # True once a read or write of numba's disk cache failed
CACHE_FAILED_WARNING = (
    "nbbn: numba's kernel cache in {path} could not be {what} ({error}); the kernels "
    "concerned are compiled in this process instead. Delete that folder, or set "
    "NUMBA_CACHE_DIR to another writable one, to cache them again.")

no_cache = False  # True once a kernel was built without numba's disk cache
NO_CACHE_WARNING = (
    "nbbn: numba has no writable folder to cache compiled kernels in ({}); kernels "
    "are compiled again in every process (seconds on first use). Set NUMBA_CACHE_DIR to a "
    "writable folder to keep them."
)
"""A read-only install (a container's read-only file system, a package folder the user
cannot write, with no writable home folder) ran no kernel at all: numba's
``cache=True`` raises when neither ``__pycache__`` beside the module nor its user-wide
cache folder can be written. The kernels are then built without a disk cache."""


def cached(**options):
    """Decorator: ``numba.njit(cache=True, **options)`` through :func:`tagged`, for the
    kernels that are not built per SIMD level. Their code still reads float16 through
    F16C or through the portable decoder (``cpu_numerics.to_float64``, by
    ``HAVE_SIMD``), so the portable build is tagged "portable": an ``NBBN_SIMD=none``
    run loaded the F16C build that an earlier run of the same host had cached."""
    def decorate(fn):
        from .cpu_simd import HAVE_SIMD  # (loaded by then: the kernels' helpers import it)

        return tagged(fn, "" if HAVE_SIMD else "portable", cache=True, **options)
    return decorate
