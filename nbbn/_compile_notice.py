"""One line on stderr when numba compiles one of nbbn's kernels (not when it loads one).

The first use of a kernel family for an input type costs a compilation of a second or
two (then it is cached on disk). The command line says so, so that a slow first batch
is not read as slow speed::

    nbbn: compiling the statistics kernel for float32 channels-first input (once; cached)

It listens to numba's ``numba:compile`` event, which numba fires only on a cache miss;
loads from the disk cache stay silent. Only the top-level kernels are named (the
functions they call compile inside them), and each family and input type once per
process. :func:`announce_compiles` is called by the CLI's computing subcommands.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import TextIO

_FAMILIES = {
    "_stats_channels_first": "statistics kernel for {} channels-first input",
    "_stats_channels_first_grouped": "statistics kernel for {} channels-first input "
                                     "with short rows",
    "_stats_channels_first_int_grouped": "statistics kernel for {} channels-first input "
                                         "with short rows",
    "_stats_channels_first_f64_grouped": "statistics kernel for {} channels-first input "
                                         "with short rows",
    "_weighted_stats": "weighted statistics kernel for {} input",
    "_stats_channels_last": "statistics kernel for {} channels-last input",
    "_stats_channels_last_u8": "statistics kernel for {} channels-last input",
    "_stats_byte_rows": "statistics kernel for {} channels-last input with many channels",
    "stats_few_rows": "statistics kernel for {} channels-last input of few rows",
    "fold": "statistics merge",
    "_affine_channels_first": "normalizer kernel for {} channels-first input",
    "_affine_channels_last": "normalizer kernel for {} channels-last input",
    "_affine_channels_first_inf": "normalizer kernel (counting infinities) for {} "
                                  "channels-first input",
    "_affine_channels_last_inf": "normalizer kernel (counting infinities) for {} "
                                 "channels-last input",
    # sparse matrices (cpu_sparse: builds tagged by weighting and prefetch)
    **dict.fromkeys(("_csr_parts", "_csr_parts_ahead", "_csr_blocks", "_csr_merge"),
                    "statistics kernel for sparse CSR input"),
    **dict.fromkeys(("_csr_parts_weighted", "_csr_parts_weighted_ahead",
                     "_csr_blocks_weighted"),
                    "weighted statistics kernel for sparse CSR input"),
    "_csc_columns": "statistics kernel for sparse CSC input",
    "_csc_columns_weighted": "weighted statistics kernel for sparse CSC input",
    "_scale_csr": "normalizer kernel for sparse input",
    **dict.fromkeys(("_falls", "_index_range"), "check of a sparse matrix's indices"),
    "_scaler_fitted": "StandardScaler's fitted attributes",
    "count_levels_rgb": "histogram kernel for {} RGB pixels",
    "count_levels": "histogram kernel for {} pixels",
}
_installed = False
_lock = threading.Lock()


def _family(name: str) -> str | None:
    """The family text of a kernel name (``<family>[_<SIMD level>]_<source tag>``, see
    ``backends._jit.tagged``)."""
    name = re.sub(r"_[0-9a-f]{8}$", "", name)
    # the SIMD level of the per-level kernels, "portable" of the others' build without
    # F16C (_jit.cached); the *_inf kernels end "_inf_<level>"
    for level in ("_avx512", "_avx2", "_none", "_portable"):
        if name.endswith(level):
            name = name[: -len(level)]
            break
    return _FAMILIES.get(name)


def describe(name: str, args: tuple) -> str | None:
    """The words for a compilation of the kernel ``name`` for numba argument types
    ``args`` (None for functions that are not one of nbbn's top-level kernels)."""
    text = _family(name)
    if text is None:
        return None
    dtype = str(getattr(args[0], "dtype", "")) if args else ""
    # float16 arrives as uint16 bits with a ``half`` flag (the second or third argument:
    # ``_stats_channels_last`` takes the channel count first); one build serves both
    # when the flag is a run-time bool
    flags = {str(a) for a in args[1:3]}
    if dtype == "uint16" and "Literal[bool](True)" in flags:
        dtype = "float16"
    elif dtype == "uint16" and "bool" in flags:
        dtype = "float16 or uint16"
    return text.format(dtype or "?")


def announce_compiles(file: TextIO | None = None) -> None:
    """Print one line per kernel family and input type that numba compiles from now on
    in this process (idempotent; a no-op where numba's event API is missing)."""
    global _installed
    with _lock:
        if _installed:
            return
        try:
            from numba.core import event
        except ImportError:  # pragma: no cover - numba without the event API
            return
        seen: set[str] = set()

        class _Notice(event.Listener):
            def on_start(self, ev) -> None:
                data = ev.data or {}
                dispatcher = data.get("dispatcher")
                name = getattr(getattr(dispatcher, "py_func", None), "__name__", "")
                words = describe(name, tuple(data.get("args", ())))
                if words is not None and words not in seen:
                    seen.add(words)
                    from .backends import _jit

                    # (a cache that failed after it was opened: its warning said so,
                    # and this said "once; cached" in every later process too)
                    how = ("not cached: no writable folder" if _jit.no_cache else
                           "not cached: the cache failed" if _jit.cache_failed else
                           "once; cached")
                    print(f"nbbn: compiling the {words} ({how})",
                          file=file or sys.stderr, flush=True)

            def on_end(self, ev) -> None:
                pass

        event.register("numba:compile", _Notice())
        _installed = True
