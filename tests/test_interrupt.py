"""Ctrl-C during a fit (``_interrupt``): deferred inside a batch, at once while waiting,
and left alone when SIGINT is ignored."""

from __future__ import annotations

import os
import signal

import pytest

from nbbn._interrupt import SigintGuard, deferred_sigint

pytestmark = pytest.mark.skipif(os.name != "posix",
                                reason="os.kill(SIGINT) interrupts the process itself on POSIX")


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # (Python runs the handler at the next bytecode)


@pytest.fixture
def sigint_ignored():
    """SIGINT ignored, as in a background job started without job control."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def test_the_guard_defers_ctrl_c_in_a_batch_and_raises_it_while_waiting():
    before = signal.getsignal(signal.SIGINT)
    with SigintGuard() as guard:
        try:
            _ctrl_c()
            pending = guard.pending
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C while a batch is applied raised instead of setting the flag")
        assert pending
        guard.waiting = True
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()
            guard.pending = guard.pending  # (a bytecode for the handler to run at)
    assert signal.getsignal(signal.SIGINT) is before


def test_the_guard_leaves_an_ignored_sigint_ignored(sigint_ignored):
    """A fit started with SIGINT ignored (``nohup``, a background job) is not stopped by
    a SIGINT: the guard installs no handler of its own."""
    with SigintGuard() as guard:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        _ctrl_c()
        assert not guard.pending
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_deferred_step_leaves_an_ignored_sigint_ignored(sigint_ignored):
    with deferred_sigint():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_the_guard_in_another_thread_does_nothing():
    """Signals are handled in the main thread only (``signal.signal`` raises elsewhere):
    a fit run in a worker thread goes without the guard."""
    import threading

    before = signal.getsignal(signal.SIGINT)
    errors = []

    def guarded() -> None:
        try:
            with SigintGuard() as guard:
                assert signal.getsignal(signal.SIGINT) is before and not guard.pending
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=guarded)
    thread.start()
    thread.join()
    assert errors == [] and signal.getsignal(signal.SIGINT) is before


def test_sigterm_unwinds_inside_and_the_old_handler_comes_back():
    """SIGTERM killed the demo and the benches at once, leaving their temporary folders:
    inside ``sigterm_unwinds`` it raises ``Terminated`` (a SystemExit, status 143), so
    ``finally`` blocks run; the default action is back afterwards, and an ignored
    SIGTERM stays ignored."""
    from nbbn._interrupt import Terminated, sigterm_unwinds

    cleaned = []
    with pytest.raises(Terminated) as info, sigterm_unwinds():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            cleaned.append("not reached")
        finally:
            cleaned.append("finally")
    assert cleaned == ["finally"] and info.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with sigterm_unwinds():
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)
