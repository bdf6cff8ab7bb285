"""Compiling one kernel source for two targets: serial and ``parallel=True``.

numba's on-disk cache names its index after the Python function (module, qualified
name, first line) and keys the entries by signature, not by compile options. Two
dispatchers built from one function object would share the index, and whichever
build was cached first would be loaded by both: a "parallel" kernel silently running
on one thread. Each build therefore gets its own copy of the function with its own
qualified name, hence its own cache index.
"""

from __future__ import annotations

import types

import numba


def _renamed(fn, suffix: str):
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__doc__ = fn.__doc__
    copy.__module__ = fn.__module__
    return copy


def serial_and_parallel(fn, *, tag: str = "", **options):
    """``(serial, parallel)`` dispatchers of ``fn``, each with a cache of its own; a
    ``tag`` (a compile-time choice baked into the code, such as the SIMD level) goes
    into the names too, so builds for different choices never share a cache entry."""
    prefix = f"_{tag}" if tag else ""
    serial = numba.njit(**options)(_renamed(fn, prefix + "_serial"))
    parallel = numba.njit(parallel=True, **options)(_renamed(fn, prefix + "_parallel"))
    return serial, parallel
