"""Compiling one kernel source under a name of its own.

numba's on-disk cache names its index after the Python function (module, qualified
name, first line) and keys the entries by signature, not by compile options or by the
module globals a kernel's code was specialized on. Two dispatchers built from one
function object would share the index, and whichever build was cached first would be
loaded by both. :func:`tagged` therefore compiles a copy of the function whose name
carries a tag (the SIMD level the code was generated for): one cache index per tag.
"""

from __future__ import annotations

import types

import numba


def _renamed(fn, suffix: str, constants: dict | None = None):
    glob = fn.__globals__ if not constants else {**fn.__globals__, **constants}
    copy = types.FunctionType(fn.__code__, glob, fn.__name__ + suffix,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__doc__ = fn.__doc__
    copy.__module__ = fn.__module__
    return copy


def tagged(fn, tag: str, constants: dict | None = None, **options):
    """``numba.njit(**options)`` of a copy of ``fn`` named ``<name>_<tag>``.

    ``constants`` replace module globals of the copy (numba freezes globals at compile
    time, so a ``if FLAG:`` on one of them is pruned): one source, two kernels. Give each
    such build a tag of its own, since the cache does not see the globals.
    """
    return numba.njit(**options)(_renamed(fn, f"_{tag}", constants))
