"""nbbn: exact streaming per-channel statistics and BatchNorm-style normalization.

Kernels are compiled by Numba on first use (and cached on disk), never at import.
"""

from __future__ import annotations

from ._images import ImageSource
from .batchnorm import BatchNorm
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    FitInterrupted,
    ImageError,
    MissingExtraError,
)
from .normalizer import Normalizer, normalize
from .pipeline import fit, transform
from .running_stats import RunningStats, channel_stats

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "BatchNorm",
    "CheckpointError",
    "FitInterrupted",
    "ImageError",
    "ImageSource",
    "MissingExtraError",
    "Normalizer",
    "RunningStats",
    "channel_stats",
    "fit",
    "normalize",
    "transform",
    "__version__",
]
