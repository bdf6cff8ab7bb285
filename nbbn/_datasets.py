"""Datasets and samples for :func:`nbbn.fit`: what an iterable's items are, and map-style
Datasets read in order by worker threads.

An item is a *batch* (its axis 0 is the batch axis) or a *sample* (no batch axis; it is
counted as a batch of one, so ``channel_axis`` keeps its meaning in the batched layout:
1 is C for CHW samples, -1 for HWC). ``batched=None`` (the default) picks what the
source says it yields: a torch ``DataLoader`` yields batches (samples when its automatic
batching is off, ``batch_size=None``), a torch ``Dataset`` yields samples (as does any
other map-style dataset: ``__getitem__`` and ``__len__``, not iterable, no ``shape``),
and any other iterable is read as batches. A Dataset with ``batched=True`` is refused,
so a Dataset is never read with its first sample axis as the batch axis.

Map-style Datasets (``__getitem__`` and ``__len__``) are read by :class:`DatasetSource`:
``dataset[i]`` for ``i = 0, 1, ...`` in order, fetched ahead by ``DATASET_WORKERS``
threads. Threads rather than a DataLoader that nbbn would build: they need no torch (any
sequence with ``__getitem__``/``__len__`` works), keep the order without a sampler, and
share the dataset without pickling it into worker processes; decoders (Pillow,
simplejpeg, h5py reads) release the GIL while they work. A resume starts at the item
after the last one counted, without reading the items before it; the checkpoint keeps
a digest of the Dataset's length, its first item and the last item counted, which a
resume compares (another or reordered Dataset is refused).

torch is never imported here: a torch object can only exist once the caller imported it.
"""

from __future__ import annotations

import hashlib
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ._wording import Param, worded
from .errors import CheckpointError
from .sources import IterableSource, Source, _digest_item

__all__ = ["DATASET_WORKERS", "DatasetSource", "as_sample", "data_kind", "default_batched",
           "open_items", "torch_data_kind"]

DATASET_WORKERS = 4
"""Threads that fetch the items of a map-style Dataset ahead of the computation."""


def torch_data_kind(source) -> str | None:
    """"loader", "map" (map-style Dataset), "iterable" (IterableDataset) or None."""
    torch = sys.modules.get("torch")
    data = getattr(getattr(torch, "utils", None), "data", None) if torch is not None else None
    if data is None:
        return None
    if isinstance(source, data.DataLoader):
        return "loader"
    if isinstance(source, data.IterableDataset):
        return "iterable"
    if isinstance(source, data.Dataset):
        return "map"
    return None


def data_kind(source) -> str | None:
    """:func:`torch_data_kind`, and "map" for any other map-style dataset: an object
    with ``__getitem__`` and ``__len__`` that is neither iterable nor array-like (no
    ``shape``), as Python's sequence protocol and torch's map-style Dataset read."""
    kind = torch_data_kind(source)
    if kind is None and hasattr(source, "__getitem__") and hasattr(source, "__len__") \
            and not hasattr(source, "__iter__") and not hasattr(source, "shape"):
        return "map"
    return kind


def default_batched(source, batched: bool | None) -> bool:
    """Whether the items of ``source`` are batches: ``batched``, checked, or the default
    for the source's kind (see the module docstring)."""
    kind = data_kind(source)
    if batched is None:
        if kind == "loader":
            return not (source.batch_size is None and source.batch_sampler is None)
        return kind not in ("map", "iterable")
    if not isinstance(batched, bool):
        raise TypeError(f"batched must be True, False or None, got {batched!r}")
    if batched and kind in ("map", "iterable"):
        raise worded(ValueError, "{batched} was given for a Dataset "
                     "({name}), whose items are samples: each sample would be read as a "
                     "batch, its first axis as the batch axis (wrong statistics). Pass the "
                     "Dataset as it is (samples), or a DataLoader over it for batches",
                     batched=Param("batched", True), name=type(source).__name__)
    return batched


def as_sample(arr):
    """A sample as a batch of one: ``arr`` with a leading axis of length 1 (no copy)."""
    if isinstance(arr, np.ndarray):
        return arr[np.newaxis]
    if hasattr(arr, "unsqueeze"):  # a torch tensor
        return arr.unsqueeze(0)
    return arr.reshape((1, *arr.shape))


def open_items(source, *, key, channel_axis, batched: bool) -> Source:
    """The source of an iterable or Dataset whose items are batches or samples."""
    if data_kind(source) == "map":
        return DatasetSource(source, key, channel_axis=channel_axis)
    if not hasattr(source, "__iter__") or isinstance(source, (str, bytes, dict, np.ndarray)):
        raise worded(TypeError, "{batched} applies to iterables and Datasets; {kind} is read "
                     "in batches along its axis 0 (its rows are the samples)",
                     batched=Param("batched", False), kind=f"a {type(source).__name__}")
    return IterableSource(source, key, channel_axis=channel_axis, batched=batched)


class DatasetSource(IterableSource):
    """A map-style Dataset: ``dataset[i]`` for ``i`` in order, each item one sample.

    Samples are fetched ahead by worker threads (as a DataLoader's workers fetch them),
    so batches are read ahead too: a Dataset returns a new sample for each index."""

    read_ahead = 2

    def __init__(self, dataset, key=None, channel_axis=None) -> None:
        super().__init__(dataset, key, f"a {type(dataset).__name__} of {len(dataset):,} "
                         "samples", channel_axis, batched=False)
        self._head: Any = None

    def batches(self, batch_size, start, acquire):
        """Each sample from ``start`` on (the items before it are not read again)."""
        self._first = None
        n = len(self.iterable)
        # (a position at sample n is past the end of a Dataset of n samples: the
        # checkpoint counted a sample this one does not have; only an empty Dataset's
        # start, (0, 0), is at its end)
        if start.shard > n or (start.shard == n and (n or start.row)):
            raise CheckpointError(
                f"{self.description} has {n} samples, but the checkpoint is at sample "
                f"{start.shard}: it is not the Dataset the checkpoint was written for")
        self._head = None
        if start.digest is not None and (start.shard or start.row):
            arr = self._array(self.iterable[start.shard], start.shard)
            if self.digest_at(start.shard, arr) != start.digest:
                raise CheckpointError(
                    f"{self.description} does not hold the samples it held when the "
                    f"checkpoint was written (its length, first sample or sample "
                    f"{start.shard} differ): the checkpoint cannot be resumed with it")
        for index, item in self.items(start.shard):
            arr = self._array(item, index)
            yield from self._item_batches(arr, index, start, batch_size,
                                          self.digest_at(index, arr), acquire)
            arr = item = None

    def items(self, start: int) -> Iterator[tuple[int, Any]]:
        """``(i, dataset[i])`` from ``i = start`` on, fetched ahead by worker threads."""
        ds = self.iterable
        n = len(ds)
        pending: deque[Future] = deque()
        nxt = start
        with ThreadPoolExecutor(DATASET_WORKERS, thread_name_prefix="nbbn-data") as pool:
            try:
                for index in range(start, n):
                    while nxt < n and len(pending) < 2 * DATASET_WORKERS:
                        pending.append(pool.submit(ds.__getitem__, nxt))
                        nxt += 1
                    yield index, pending.popleft().result()
            finally:
                for f in pending:
                    f.cancel()

    def digest_at(self, index: int, arr) -> str:
        """The digest kept after sample ``index``: of the Dataset's length, its first
        sample and sample ``index`` (see the module docstring)."""
        if self._head is None:
            h = hashlib.sha256(repr(len(self.iterable)).encode())
            _digest_item(h, arr if index == 0 else self._array(self.iterable[0], 0))
            self._head = h
        h = self._head.copy()
        _digest_item(h, arr)
        return h.hexdigest()
