"""The reader thread of :func:`nbbn.fit` and :func:`nbbn.transform`.

:class:`Prefetcher` runs a source's batch generator in a thread of its own while the
calling thread computes on the previous batch (the kernels release the GIL). At most
``depth`` batches exist at a time: each holds a :class:`~nbbn._shards.Slot` (its buffer)
from a free list, returned by :meth:`Prefetcher.release` once the batch has been used,
so memory stays at ``depth`` batches whatever the source's size. An error in the
reader reaches the caller at the next :meth:`Prefetcher.get`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator

from ._shards import Slot
from .sources import Acquire, Batch

__all__ = ["READ_AHEAD", "Prefetcher"]

READ_AHEAD = 2
"""Batches alive at once: the one being computed on and the one being read."""

_END = object()


class _Stopped(BaseException):
    """Raised inside the reader's generator when the pipeline is shutting down."""


class _Failed:
    """An error of the reader, handed to the main thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher:
    """Run a batch generator in a reader thread with at most ``depth`` batches alive.

    Parameters
    ----------
    make : callable
        ``make(acquire)`` returns the batch generator; the generator calls
        ``acquire()`` before reading each batch, which blocks until a slot is free.
    depth : int, default READ_AHEAD
        Batches alive at once.
    """

    def __init__(self, make: Callable[[Acquire], Generator[Batch, None, None]],
                 depth: int = READ_AHEAD) -> None:
        self._free: queue.Queue[Slot] = queue.Queue()
        for _ in range(depth):
            self._free.put(Slot())
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._gen = make(self._acquire)
        self._thread = threading.Thread(target=self._run, name="nbbn-reader", daemon=True)
        self._thread.start()

    def _acquire(self) -> Slot:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return self._free.get(timeout=0.05)
            except queue.Empty:
                continue

    def _run(self) -> None:
        try:
            for batch in self._gen:
                self._ready.put(batch)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._ready.put(_Failed(exc))
            return
        finally:
            self._gen.close()
        self._ready.put(_END)

    def get(self) -> Batch | None:
        """The next batch, None at the end.

        Returns
        -------
        Batch or None
            The next batch in source order; None once the source is exhausted.

        Raises
        ------
        BaseException
            The error the reader met (again at every later call).
        """
        item = self._ready.get()
        if item is _END:
            self._ready.put(_END)
            return None
        if isinstance(item, _Failed):
            self._ready.put(item)
            raise item.exc
        return item

    def release(self, batch: Batch) -> None:
        """The batch has been used: drop it and let the reader fill its slot again.

        Parameters
        ----------
        batch : Batch
            A batch returned by :meth:`get`.
        """
        slot = batch.slot
        batch.slot = None
        batch.done()
        if slot is not None:
            self._free.put(slot)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the reader and drop the batches it read ahead.

        Parameters
        ----------
        timeout : float, default 5.0
            Seconds to wait for the thread; a reader stuck in a user's iterable is left
            behind (it is a daemon thread).
        """
        self._stop.set()
        self._thread.join(timeout)
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Batch):
                item.done()
