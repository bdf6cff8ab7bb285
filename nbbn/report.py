"""Text reports of a :class:`~nbbn.RunningStats`: the per-channel table and JSON.

Used by ``nbbn fit`` and ``nbbn info``.
"""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["format_json", "format_table"]

_COLUMNS = ("channel", "count", "mean", "std", "min", "max")


def _num(v: float, digits: int = 6) -> str:
    return "nan" if math.isnan(v) else f"{v:.{digits}g}"


def _apart(lo: float, hi: float) -> tuple[str, str]:
    """``lo`` and ``hi`` with 6 significant digits, or as many more as tell them apart
    (min 1e15 + 1 and max 1e15 + 5 both read "1e+15")."""
    for digits in (6, 9, 12, 17):
        a, b = _num(lo, digits), _num(hi, digits)
        if a != b or lo == hi or math.isnan(lo) or math.isnan(hi):
            break
    return a, b


def _printable(name: str) -> str:
    """A channel name as one table cell: control characters (a newline in a column
    name broke the table's lines) escaped as Python writes them."""
    return name if name.isprintable() else repr(name)[1:-1]


def channel_count(stats) -> int:
    """The channels of the statistics: those counted, or, when none was (a table of
    columns and no rows), those named; 0 for statistics of nothing."""
    return stats.num_channels or len(getattr(stats, "channel_names", None) or ())


def no_data(stats) -> bool:
    """Whether the statistics saw no value at all, not even a NaN: no channels, or the
    channels of a source of no rows (a ``(0, C)`` array, a table of no rows), counts 0.
    Tables and ``nbbn info`` say "no data" for them rather than rows of NaN."""
    return not stats.num_channels or not (np.any(stats.count) or np.any(stats.nan_count)
                                          or np.any(stats.inf_count))


def format_table(stats, max_rows: int = 32) -> str:
    """The per-channel count, mean, std (ddof=0), min and max as an aligned text table.

    Parameters
    ----------
    stats : RunningStats
    max_rows : int, default 32
        With more channels than this, only the first and last ``max_rows // 2`` rows are
        shown, followed by a summary line (ranges of the mean and std over all channels).

    Returns
    -------
    str
        The table, ending with a newline; "no data" when the statistics are empty.
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) \
            or max_rows < 2:
        raise ValueError(f"max_rows must be an int >= 2 (the first and last rows are "
                         f"shown), got {max_rows!r}")
    n = stats.num_channels or 0
    if no_data(stats):
        return "no data: the statistics are empty\n"
    count, mean, std = stats.count, stats.mean, stats.std
    mn, mx, nan, inf = stats.min, stats.max, stats.nan_count, stats.inf_count
    show_nan, show_inf = bool(nan.any()), bool(inf.any())
    names = getattr(stats, "channel_names", None)
    if n > max_rows:
        half = max(1, max_rows // 2)
        shown = list(range(half)) + [-1] + list(range(n - half, n))
    else:
        shown = list(range(n))
    header = [*_COLUMNS, *(("nan",) if show_nan else ()), *(("inf",) if show_inf else ())]
    if names is not None:
        header.insert(1, "name")
    rows = []
    for c in shown:
        if c < 0:
            rows.append(["..."] + [""] * (len(header) - 1))
            continue
        row = [str(c), _count(count[c]), _num(mean[c]), _num(std[c]), *_apart(mn[c], mx[c])]
        if show_nan:
            row.append(str(int(nan[c])))
        if show_inf:
            row.append(str(int(inf[c])))
        if names is not None:
            row.insert(1, _printable(names[c]))
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    just = ["ljust" if h == "name" else "rjust" for h in header]
    lines = ["  ".join(getattr(h, j)(w) for h, w, j in zip(header, widths, just, strict=True))
             .rstrip()]
    lines += ["  ".join(getattr(v, j)(w) for v, w, j in zip(r, widths, just, strict=True))
              .rstrip() for r in rows]
    if n > max_rows:
        lines.append(_summary(stats, len(shown) - 1))
    return "\n".join(lines) + "\n"


def _summary(stats, shown: int) -> str:
    """The line after a shortened table: ranges over all channels."""
    n, count = stats.num_channels, stats.count
    mean, std, mn, mx = stats.mean, stats.std, stats.min, stats.max
    with np.errstate(invalid="ignore"):
        def rng(a):
            ok = a[~np.isnan(a)]
            return f"{_num(ok.min())} .. {_num(ok.max())}" if ok.size else "nan"

        return (f"{n} channels ({n - shown} not shown): count {_count(count.min())} .. "
                f"{_count(count.max())}, mean {rng(mean)}, std {rng(std)}, min {rng(mn)}, "
                f"max {rng(mx)}")


def _count(v) -> str:
    """A count: an integer, or the weight sum of weighted statistics as it is."""
    return str(int(v)) if float(v).is_integer() else _num(float(v))


def _clean(a: np.ndarray) -> list:
    """A JSON-safe list (JSON has no non-finite numbers): NaN becomes null, +inf and -inf
    the strings "Infinity" and "-Infinity" (which ``float()``, numpy and JavaScript's
    ``Number()`` read back as infinities)."""
    out = []
    for v in a.tolist():
        if isinstance(v, float) and not math.isfinite(v):
            v = None if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
        out.append(v)
    return out


def _percentiles(hist) -> dict:
    """``{"0.1": [per channel], ...}``: the percentiles ``nbbn info`` prints."""
    from ._histogram import PERCENTILES

    return {f"{q:g}": _clean(row) for q, row in zip(PERCENTILES, hist.percentile(PERCENTILES),
                                                    strict=True)}


def format_json(stats) -> str:
    """The statistics as a JSON object (NaN as null, infinities as "Infinity" and
    "-Infinity").

    Keys: ``num_channels``, ``channel_axis``, ``nan_policy``, ``channel_names`` (only
    when the channels have names), and per-channel lists ``count``, ``mean``, ``var``
    (ddof=0), ``std`` (ddof=0), ``min``, ``max``, ``nan_count``, ``inf_count``; and
    ``skipped``, the files the fit skipped with why (``on_error="skip"``), only when
    there were any, as the text table lists them; ``percentiles``, only for statistics
    with a histogram: the exact percentiles ``nbbn info`` prints, an object whose keys
    are the percentiles ("0.1", "1", ..., "50", ..., "99.9") and whose values are lists
    per channel (null for a channel of no values).
    Statistics that name their channels but counted no rows (a table of columns and
    no rows) list those channels with count 0 and null statistics.
    """
    n = channel_count(stats)
    names: tuple | None = getattr(stats, "channel_names", None)
    unread = not stats.num_channels and n > 0  # (a table of columns but no rows)

    def field(name: str, fill: float) -> np.ndarray:
        return np.full(n, fill) if unread else getattr(stats, name)

    d = {
        "num_channels": n,
        "channel_axis": stats.channel_axis,
        "nan_policy": stats.nan_policy,
        **({} if names is None else {"channel_names": list(names)}),
        "count": [int(v) if float(v).is_integer() else float(v)
                  for v in field("count", 0)],
        **{key: _clean(field(key, np.nan)) for key in ("mean", "var", "std", "min", "max")},
        "nan_count": [int(v) for v in field("nan_count", 0)],
        "inf_count": [int(v) for v in field("inf_count", 0)],
        **({"skipped": list(stats.skipped)} if getattr(stats, "skipped", None) else {}),
        **({} if getattr(stats, "histogram", None) is None else
           {"percentiles": _percentiles(stats.histogram)}),
    }
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items())
    return "{\n" + body + "\n}"
