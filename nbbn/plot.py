"""``nbbn plot``: a PNG of per-channel statistics (matplotlib, optional extra ``nbbn[plot]``).

matplotlib is imported on first use only, and only its object-oriented API with the Agg
canvas is used (no pyplot, no global backend state), so plotting works on a machine
without a display and inside other programs that use matplotlib themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["MANY_CHANNELS", "PlotUnavailableError", "plot_histogram", "plot_stats"]

# Up to this many channels the top panel draws one error bar per channel with every
# channel labelled; above it, a line with a shaded +-std band and thinned tick labels.
MANY_CHANNELS = 48


class PlotUnavailableError(ImportError):
    """matplotlib is not installed (install the ``nbbn[plot]`` extra)."""


def _matplotlib():
    """The ``Figure`` class and ``MaxNLocator``, or a clear error naming the extra."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise PlotUnavailableError(
            "plotting needs matplotlib, which is not installed: pip install 'nbbn[plot]'"
            f" (import failed: {exc})"
        ) from None
    return Figure, MaxNLocator


def plot_stats(
    stats,
    path,
    *,
    title: str | None = None,
    channel_names: Sequence[str] | None = None,
    dpi: int = 120,
) -> Path:
    """Write a PNG of the per-channel mean, standard deviation, minimum and maximum.

    The top panel shows the mean of each channel with ``mean +- std`` (population
    standard deviation) and the minimum and maximum as markers; the bottom panel shows
    the standard deviation alone (log scale when it spans more than two decades).
    Channels whose mean or std is not finite are left blank and named under the title
    (:func:`undrawn_note`). Up to
    ``MANY_CHANNELS`` channels are drawn as error bars with every channel labelled, more
    as lines with a shaded band and thinned tick labels, so 3 and 512 channels both read.

    Parameters
    ----------
    stats : RunningStats
        The statistics to draw (at least one channel).
    path : str or os.PathLike
        The PNG file to write (its folder must exist).
    title : str, optional
        Figure title; default: the number of channels and values per channel.
    channel_names : sequence of str, optional
        Tick labels of the channels (drawn when there are at most ``MANY_CHANNELS``);
        default ``stats.channel_names`` (a table's column names).
    dpi : int, default 120
        Resolution of the PNG.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    PlotUnavailableError
        matplotlib is not installed.
    ValueError
        ``stats`` holds no channels.
    IsADirectoryError
        ``path`` is a folder.
    """
    _check_target(path)
    nchan = stats.num_channels
    if not nchan:
        raise ValueError("the statistics hold no channels (no data was fitted): nothing to plot")
    if channel_names is None:
        channel_names = stats.channel_names
    if channel_names is not None and len(channel_names) != nchan:
        raise ValueError(f"channel_names has {len(channel_names)} names for {nchan} channels")
    Figure, MaxNLocator = _matplotlib()
    mean, std, lo, hi = stats.mean, stats.std, stats.min, stats.max
    count = stats.count
    drawn = np.isfinite(mean) & np.isfinite(std)  # the others are named, not drawn
    mean, std, lo, hi = (np.where(drawn, a, np.nan) for a in (mean, std, lo, hi))
    mean, std, unit = _in_drawable_units(mean, std, lo, hi)
    lo, hi = lo / unit, hi / unit
    ch = np.arange(nchan)
    many = nchan > MANY_CHANNELS

    width = 6.4 if not many else min(16.0, 6.4 + nchan / 80)
    fig = Figure(figsize=(width, 5.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    if many:
        top.fill_between(ch, mean - std, mean + std, color="C0", alpha=0.25, lw=0,
                         label="mean ± std")
        top.plot(ch, mean, color="C0", lw=1.2, label="mean")
        top.plot(ch, lo, color="C2", lw=0.6, alpha=0.8, label="min")
        top.plot(ch, hi, color="C3", lw=0.6, alpha=0.8, label="max")
        bottom.plot(ch, std, color="C1", lw=1.0)
        top.xaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
        top.set_xlim(-0.5, nchan - 0.5)
    else:
        top.errorbar(ch, mean, yerr=std, fmt="o", color="C0", capsize=6 if nchan <= 8 else 3,
                     ms=6, lw=1.5, label="mean ± std")
        top.scatter(ch, lo, marker="v", color="C2", zorder=3, label="min")
        top.scatter(ch, hi, marker="^", color="C3", zorder=3, label="max")
        bottom.bar(ch, std, color="C1", width=0.6)
        # (names are data: a "$" in one is drawn as it is, not read as mathtext)
        top.set_xticks(ch, None if channel_names is None else
                       [str(name).replace("$", r"\$") for name in channel_names])
        if nchan > 16:
            bottom.tick_params(axis="x", labelrotation=90, labelsize=7)
        top.set_xlim(-0.6, nchan - 0.4)

    finite_std = std[np.isfinite(std) & (std > 0)]
    if finite_std.size and finite_std.max() / finite_std.min() > 100:
        bottom.set_yscale("log")
    top.set_ylabel("value" if unit == 1.0 else f"value (x {unit:.0e})")
    top.grid(True, axis="y", alpha=0.3)
    handles = dict(zip(*reversed(top.get_legend_handles_labels()), strict=True))
    order = [k for k in ("mean ± std", "mean", "min", "max") if k in handles]
    fig.legend([handles[k] for k in order], order, loc="outside lower center", fontsize=8,
               ncols=4, frameon=False)
    bottom.set_ylabel("std" if unit == 1.0 else f"std (x {unit:.0e})")
    bottom.set_xlabel("channel")
    bottom.grid(True, axis="y", alpha=0.3)
    if title is None:
        counts = np.unique(count)
        per = f"{_count(counts[0])} values per channel" if counts.size == 1 else (
            f"{_count(count.min())}-{_count(count.max())} values per channel")
        title = f"nbbn statistics: {nchan} channel{'s' if nchan != 1 else ''}, {per}"
    note = undrawn_note(stats, channel_names)
    fig.suptitle(title if note is None else f"{title}\n{note}", fontsize=11,
                 parse_math=False)
    return _save(fig, path, dpi)


def _check_target(path) -> None:
    """IsADirectoryError when ``path`` is a folder (before drawing: the rename at the
    end failed, naming the temporary file beside it)."""
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected the path of the PNG to "
                                "write, such as stats.png")


def _save(fig, path, dpi: int) -> Path:
    """``fig`` as a PNG at ``path``, written to a temporary file and renamed when
    complete (a Ctrl-C during the write left a truncated PNG in place of the old one)."""
    from ._durable import atomic_write

    path = Path(path)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=dpi, format="png")
    return path


def _count(v) -> str:
    """A count with thousands separators; a weighted count (a weight sum) as the
    reports show it."""
    from .report import _count as as_reported

    return f"{int(v):,}" if float(v).is_integer() else as_reported(v)


def _in_drawable_units(mean, std, lo, hi):
    """``(mean, std, unit)`` with the values divided by ``unit``, a power of ten chosen
    when they reach 1e150: matplotlib cannot lay out an axis whose span overflows
    float64 (values near +-1e308), and ``mean + std`` could overflow too."""
    finite = [np.abs(a[np.isfinite(a)]) for a in (mean, std, lo, hi)]
    big = max((float(a.max()) for a in finite if a.size), default=0.0)
    unit = 10.0 ** math.floor(math.log10(big)) if big >= 1e150 else 1.0
    return mean / unit, std / unit, unit


def undrawn_note(stats, channel_names: Sequence[str] | None = None) -> str | None:
    """"not drawn: ..." naming the channels whose mean or std is not finite (no values
    counted, a NaN, an infinity), which the plot leaves blank; None when every channel
    is drawn."""
    mean, std, count = stats.mean, stats.std, stats.count
    bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std)))
    if not bad.size:
        return None
    names = channel_names if channel_names is not None else stats.channel_names

    def why(c: int) -> str:
        label = f"{names[c]!r}" if names is not None else str(c)
        reason = ("no values" if count[c] == 0 else "NaN" if np.isnan(mean[c])
                  else "infinite")
        return f"{label} ({reason})"

    shown = ", ".join(why(int(c)) for c in bad[:6]) + (
        f", and {bad.size - 6} more" if bad.size > 6 else "")
    return f"not drawn: channel{'s' if bad.size > 1 else ''} {shown}"


def plot_histogram(stats, path, *, title: str | None = None, dpi: int = 120) -> Path:
    """Write a PNG of the per-channel histograms of ``stats.histogram`` (exact counts).

    One line per channel (log-scaled counts when they span more than three decades),
    with the 1st, 50th and 99th percentiles marked. 16-bit histograms are drawn summed
    into 256 bins of 256 levels each (the file keeps every level).

    Parameters
    ----------
    stats : RunningStats
        Statistics with a histogram (a fit of images with ``histogram=True``).
    path : str or os.PathLike
        The PNG file to write.
    title : str, optional
        Figure title, above the line that says what is drawn (as :func:`plot_stats`'s
        ``title``; ``nbbn plot --title`` titles both figures).
    dpi : int, default 120
        Resolution of the PNG.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    hist = stats.histogram
    if hist is None:
        raise ValueError("the statistics hold no histogram (fit images with histogram=True)")
    _check_target(path)
    Figure, _ = _matplotlib()
    counts = hist.counts
    step = counts.shape[1] // 256
    shown = counts.reshape(counts.shape[0], 256, step).sum(axis=2)
    levels = np.arange(256) * step
    colors = {3: ("C3", "C2", "C0"), 4: ("C3", "C2", "C0", "0.4")}.get(
        hist.num_channels, tuple(f"C{i % 10}" for i in range(hist.num_channels)))
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    pct = hist.percentile([1, 50, 99])
    for c in range(hist.num_channels):
        ax.plot(levels, shown[c], color=colors[c], lw=1.0, label=f"channel {c}")
        for v in pct[:, c]:
            ax.axvline(v, color=colors[c], lw=0.6, ls=":")
    positive = shown[shown > 0]
    if positive.size and positive.max() / positive.min() > 1000:
        ax.set_yscale("log")
    ax.set_xlabel(f"level ({hist.bits}-bit)" + ("" if step == 1 else f", bins of {step}"))
    ax.set_ylabel("count")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    what = "histogram per channel (dotted: 1st, 50th, 99th percentiles)"
    fig.suptitle(f"nbbn {what}" if title is None else f"{title}\n{what}", fontsize=11,
                 parse_math=False)
    return _save(fig, path, dpi)
