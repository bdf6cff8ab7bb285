"""Ctrl-C during :func:`nbbn.fit`: stop after the current batch, never inside one.

(And SIGTERM while the demo or a bench holds a temporary folder: :class:`sigterm_unwinds`
turns it into an exception, so that the folder is removed.)

While a batch is being applied the statistics and the position in the source must
change together, so :class:`SigintGuard` turns SIGINT into a flag the fit checks after
each batch (then it writes a checkpoint and raises ``FitInterrupted``). While the fit
waits for the reader nothing is half-done, so Ctrl-C raises ``KeyboardInterrupt`` at
once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

try:  # (the C module under ``signal``: its calls take 0.3 us, the wrappers' 2-3 us)
    import _signal as _sig
except ImportError:  # pragma: no cover - an interpreter without it
    _sig = signal  # type: ignore[misc]

__all__ = ["SigintGuard", "Terminated", "deferred_sigint", "sigterm_unwinds"]

SIGTERM_STATUS = 128 + 15
"""The exit status after SIGTERM (143: as a shell reports a process the signal killed)."""


class deferred_sigint:  # noqa: N801 (used as a function: ``with deferred_sigint():``)
    """Hold Ctrl-C back for a short step that must end whole (a merge into a state in
    place, run on several threads, and the lock around it; the steps of a durable
    file's write that must end together, ``_durable``): SIGINT only sets a flag
    while inside, and the handler that was in place runs at the exit (raising
    ``KeyboardInterrupt`` for Python's own). In the main thread only (signals are
    handled there); elsewhere, or when SIGINT is ignored, this does nothing."""

    __slots__ = ("_old", "_signum")

    def __enter__(self) -> None:
        self._old = None
        self._signum = None
        if threading.current_thread() is threading.main_thread():
            old = _sig.getsignal(_sig.SIGINT)
            if callable(old):
                self._old = old
                _sig.signal(_sig.SIGINT, self._hold)

    def _hold(self, signum, frame) -> None:
        self._signum = signum

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            _sig.signal(_sig.SIGINT, self._old)
            if self._signum is not None:
                self._old(self._signum, None)


class SigintGuard:
    """Turn Ctrl-C into a flag while a batch is computed, so the state and position agree.

    Use as a context manager around the fit's loop; set :attr:`waiting` to True while
    nothing is half-done (Ctrl-C then raises ``KeyboardInterrupt`` at once) and read
    :attr:`pending` after each batch. Outside the main thread (or when SIGINT is
    ignored) this does nothing.

    Attributes
    ----------
    pending : bool
        Ctrl-C was pressed while a batch was being applied.
    waiting : bool
        Set by the caller: True while nothing is half-done.
    """

    def __init__(self) -> None:
        self.pending = False
        self.waiting = False
        self._old: Any = None

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            old = signal.getsignal(signal.SIGINT)
            if old is not signal.SIG_IGN and old is not None:
                self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame) -> None:
        self.pending = True
        if self.waiting:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class Terminated(SystemExit):
    """SIGTERM, raised by :class:`sigterm_unwinds`: a ``SystemExit`` with the status
    :data:`SIGTERM_STATUS`, so that the ``finally`` blocks on the way run (and no
    ``except Exception`` stops it) and the process exits as one the signal killed."""

    def __init__(self) -> None:
        super().__init__(SIGTERM_STATUS)


class sigterm_unwinds(contextlib.ContextDecorator):  # noqa: N801 (a decorator, as a function)
    """While inside (or in the function decorated), SIGTERM (``kill``, ``timeout``)
    raises :class:`Terminated` in the main thread instead of killing the process at
    once: the demo and the benches remove their temporary folders (their ``finally``
    blocks), as after Ctrl-C. A second SIGTERM while unwinding is held back, so the
    removal ends. Only where SIGTERM has its default action, in the main thread; the
    previous handler is restored at the exit."""

    def __enter__(self) -> None:
        self._old: Any = None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._raised = False
            self._old = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame) -> None:
        if not self._raised:
            self._raised = True
            raise Terminated

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None
