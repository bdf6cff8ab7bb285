"""The reader thread of ``nbbn.fit`` and ``nbbn.transform`` (``nbbn._reader``): its
batches' resources are released however the pipeline ends. Edges found by mutation
testing (round 7)."""

from __future__ import annotations

import numpy as np

from nbbn._reader import Prefetcher
from nbbn.sources import Batch


def test_close_releases_the_batches_read_ahead():
    """``close`` drops the batches the reader read ahead and the caller never got:
    their cleanup (an open file, mapped pages) runs, not only that of the batches
    used."""
    cleaned = []

    def make(acquire):
        # (the second batch takes no slot: it is read whenever ``close`` comes, and the
        # reader then ends, so ``close`` finds it queued)
        for k in range(2):
            slot = acquire() if k == 0 else None
            yield Batch(np.zeros(4), 0, 4 * k, 4 * k + 4, 32, slot=slot,
                        cleanup=lambda k=k: cleaned.append(k))

    pf = Prefetcher(make, depth=2)
    first = pf.get()
    pf.release(first)
    assert cleaned == [0]
    pf.close()
    assert cleaned == [0, 1]
