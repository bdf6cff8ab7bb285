"""``nbbn info``: describe a statistics file, with ready-to-paste normalization lists."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["describe", "file_version", "normalize_lists", "paste_number"]

# Significant digits kept for a pasted standard deviation (a relative error <= 5e-6).
PASTE_DIGITS = 6


def paste_number(value: float, scale: float) -> str:
    """``value`` as a Python literal, rounded at the 6th significant digit of ``scale``.

    A mean is rounded relative to its channel's standard deviation (``scale``), not to
    itself: the rounding error is at most 5e-6 std, so pasting never moves a normalized
    output by more than that. A mean of 1000.0123 with std 0.1 keeps 1000.01230, where
    6 digits of its own (1000.01) would shift the outputs by 0.02. A standard deviation
    (``scale`` = itself) keeps 6 significant digits. Non-finite values are written
    ``float("nan")`` / ``float("inf")`` so that they still paste.
    """
    value = float(value)
    if not math.isfinite(value):
        return f'float("{value}")'
    if value == 0 or not (math.isfinite(scale) and scale > 0):
        digits = PASTE_DIGITS
    else:
        last = math.floor(math.log10(scale)) - PASTE_DIGITS + 1  # exponent of the last digit
        digits = math.floor(math.log10(abs(value))) - last + 1
    return repr(float(f"{value:.{min(max(digits, 1), 17)}g}"))


PASTE_CHANNELS = 4096  # nbbn info prints the Normalize lists up to this many channels


def normalize_lists(stats, *, divide_by: float = 1.0) -> str:
    """``mean=[...], std=[...]`` for ``torchvision.transforms.Normalize`` (population std).

    ``divide_by=255`` gives the lists for 8-bit data that ``ToTensor()`` scales to [0, 1].
    """
    mean = stats.mean / divide_by
    std = stats.std / divide_by
    m = ", ".join(paste_number(v, s) for v, s in zip(mean, std, strict=True))
    s = ", ".join(paste_number(v, v) for v in std)
    return f"mean=[{m}], std=[{s}]"


def _looks_8bit(stats) -> bool:
    """True when every channel's values lie in [0, 255], some exceed 1 and every minimum
    and maximum is a whole number (pixel data; float data that happens to lie in
    [0, 255], such as percentages, has fractional extremes), unless a 16-bit histogram
    says the pixels were 16-bit (dark 16-bit images lie in [0, 255] too, and
    ``ToTensor`` does not divide those by 255)."""
    if stats.histogram is not None and stats.histogram.bits != 8:
        return False
    lo, hi = stats.min, stats.max
    return bool(
        lo.size and np.all(np.isfinite(lo) & np.isfinite(hi)) and lo.min() >= 0
        and hi.max() <= 255 and hi.max() > 1
        and np.all(lo == np.floor(lo)) and np.all(hi == np.floor(hi))
    )


def file_version(path) -> int:
    """The format version recorded in a statistics file (already validated by ``load``)."""
    with np.load(path, allow_pickle=False) as z:
        return int(z["version"])


def describe(stats, path=None, *, version: int | None = None) -> str:
    """The text ``nbbn info`` prints: a header, the per-channel table and the paste lists."""
    from .report import channel_count, format_table, no_data

    nchan = channel_count(stats)  # (a table of no rows: its columns, as fit's JSON says)
    where = f"{Path(path)}: " if path is not None else ""
    ver = f"format version {version}, " if version is not None else ""
    plural = "s" if nchan != 1 else ""
    lines = [
        f"{where}nbbn.RunningStats {ver}{nchan} channel{plural}, "
        + f"channel_axis={stats.channel_axis}, nan_policy={stats.nan_policy!r}"
    ]
    if no_data(stats):  # (the files a fit skipped are why, when every file was)
        from ._histogram import describe_skipped

        lines.append("no data: the statistics are empty")
        return "\n".join(lines + describe_skipped(stats))
    lines += ["", format_table(stats).rstrip("\n"), ""]
    nan = stats.nan_count
    if nan.any():
        nnan = int(np.count_nonzero(nan))
        lines.append(f"NaNs seen: {int(nan.sum())} in {nnan} channel{'s' * (nnan != 1)}"
                     f" (nan_policy={stats.nan_policy!r})")
    if nchan > PASTE_CHANNELS:  # (1M features printed two lines of 20 MB)
        lines.append(f"torchvision.transforms.Normalize lists: not printed for {nchan} "
                     f"channels (more than {PASTE_CHANNELS}); in Python: "
                     "nbbn.RunningStats.load(STATS).mean and .std")
        return "\n".join(lines + _extras(stats))
    lines.append("torchvision.transforms.Normalize, population std (ddof=0):")
    lines.append("  " + normalize_lists(stats))
    if _looks_8bit(stats):
        lines.append("for 8-bit data that ToTensor() scales to [0, 1] (the values above / 255):")
        lines.append("  " + normalize_lists(stats, divide_by=255.0))
    return "\n".join(lines + _extras(stats))


def _extras(stats) -> list[str]:
    """The histogram's percentiles and the files a fit skipped, when there are any."""
    if stats.histogram is None and not stats.skipped:
        return []
    from ._histogram import describe_extras

    return describe_extras(stats)
