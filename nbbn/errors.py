"""The exceptions nbbn raises on purpose, all exported from ``nbbn``.

Bad input (a wrong dtype, shape, axis or parameter) raises the built-in ``TypeError`` or
``ValueError`` with a message that says what was expected and what came; these classes
are for the cases a caller may want to catch by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["BackendUnavailableError", "CheckpointError", "FitInterrupted", "ImageError",
           "MissingExtraError"]


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (missing GPU, driver or package)."""


class MissingExtraError(ImportError):
    """An optional dependency needed for this kind of data is not installed.

    The message names the ``pip install 'nbbn[extra]'`` command that installs it.
    """


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: corrupt, truncated, too new, or for other data."""


class ImageError(ValueError):
    """An image file cannot be decoded, or does not fit the others; the message names it."""


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`nbbn.fit` after a whole batch; the progress was saved.

    Attributes
    ----------
    stats : RunningStats
        The statistics of the rows counted before the interruption.
    checkpoint : pathlib.Path or None
        The checkpoint written (None if ``fit`` had no ``checkpoint``).
    rows_done : int
        Rows counted (images, for image files), including those of earlier runs of a
        resumed fit.
    on_cluster : bool
        The checkpoint holds parts counted out of order (a fit with ``client=...``): it
        resumes on a cluster only, as the message says.
    """

    def __init__(self, stats: Any, checkpoint: Path | None, rows_done: int,
                 unit: str = "rows", on_cluster: bool = False) -> None:
        self.stats = stats
        self.checkpoint = checkpoint
        self.rows_done = rows_done
        self.on_cluster = on_cluster
        self._unit = unit  # ("images" for image files: each is one row of the fit)
        if checkpoint is not None:
            client = "client=..., " if on_cluster else ""
            msg = (f"fit interrupted after {rows_done:,} {unit}; checkpoint saved to "
                   f"{checkpoint}. Resume with nbbn.fit(<same source>, {client}"
                   f"checkpoint={str(checkpoint)!r}, resume=True)")
            if on_cluster:
                msg += (" on a cluster: it holds parts of the source counted out of order, "
                        "which a fit without client refuses")
        else:
            msg = (f"fit interrupted after {rows_done:,} {unit}; no checkpoint was set, so it "
                   "cannot be resumed (the partial statistics are in this exception's .stats; "
                   "pass checkpoint=PATH to make a fit resumable)")
        super().__init__(msg)

    def __reduce__(self):
        # pickled (a fit stopped in a process pool's worker, dask, joblib) and copied with
        # its three attributes: the default rebuilt it from the message alone and failed,
        # and the pool reported a broken process instead
        return type(self), (self.stats, self.checkpoint, self.rows_done, self._unit,
                            self.on_cluster)
