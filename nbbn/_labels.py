"""Channel labels: a DataFrame's column names and a DataArray's channel coordinate.

Statistics and normalizers work by channel position; labels only guard them. A batch
whose labels disagree with those the statistics (or a normalizer made from them) were
fitted on is refused, since the channels would be pooled or normalized by position:
``update`` of a DataFrame with reordered columns pooled column "c" into "a".
"""

from __future__ import annotations

import numpy as np


def frame_columns(x) -> tuple[str, ...] | None:
    """A pandas or polars DataFrame's, or a pyarrow Table's or RecordBatch's, column
    names as str (what ``nbbn.fit`` of the table records as ``channel_names``); None for
    anything else."""
    kind = type(x).__name__
    if kind in ("Table", "RecordBatch") and type(x).__module__.startswith("pyarrow"):
        names = tuple(str(c) for c in x.column_names)
    elif kind == "DataFrame" and hasattr(x, "columns"):
        names = tuple(str(c) for c in x.columns)
    else:
        return None
    dup = repeated(names)
    if dup:  # (as nbbn.fit of the table refuses them)
        raise ValueError(f"the {kind} has several columns named {shown(dup)} (labels "
                         "compared as str): column names must be unique to name the "
                         "channels (pass .to_numpy() to read the columns by position)")
    return names


def table_columns(x, channel_axis) -> tuple[str, ...] | None:
    """``frame_columns(x)`` where a table's columns are the channels (``channel_axis``
    1 or -1), after :func:`refuse_table_axis`; None for anything else."""
    refuse_table_axis(x, channel_axis)
    return frame_columns(x) if channel_axis in (1, -1) else None


def refuse_table_axis(x, channel_axis) -> None:
    """ValueError for a table (a DataFrame, a pyarrow Table or RecordBatch) given an int
    ``channel_axis`` other than 1 or -1, as ``nbbn.fit`` refuses it: its rows were read
    as the channels, without names."""
    if channel_axis in (1, -1) or isinstance(channel_axis, str):
        return
    kind = type(x).__name__
    if (kind in ("Table", "RecordBatch") and type(x).__module__.startswith("pyarrow")) or (
            kind == "DataFrame" and hasattr(x, "columns")):
        raise ValueError(f"a {kind}'s channels are its columns: channel_axis must be 1 (or "
                         f"-1, the same axis), got {channel_axis} (pass .to_numpy() to read "
                         "its values as an array along another axis)")


def repeated(names) -> tuple[str, ...]:
    """The names that occur more than once, each once, sorted."""
    seen: set = set()
    return tuple(sorted({n for n in names if n in seen or seen.add(n)}))  # type: ignore[func-returns-value]


def check_names(names, nchan: int | None) -> tuple[str, ...] | None:
    """``names`` as a tuple of str (None stays None); one per channel when ``nchan`` is known."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise TypeError(f"channel_names must be a sequence of str (one per channel) or None, "
                        f"got {type(names).__name__}")
    out = tuple(names)
    bad = [n for n in out if not isinstance(n, str)]
    if bad:
        raise TypeError(f"channel_names must all be str, got {bad[0]!r} "
                        f"({type(bad[0]).__name__})")
    if nchan is not None and len(out) != nchan:
        raise ValueError(f"channel_names has {len(out)} names, but the statistics have "
                         f"{nchan} channels")
    dup = repeated(out)
    if dup:  # (as a DataFrame's columns must be, to name channels)
        raise ValueError(f"channel_names has several channels named {shown(dup)}: "
                         "names must be unique (a DataFrame batch could never match them)")
    nul = [n for n in out if n.endswith("\x00")]
    if nul:  # numpy's str arrays, which the statistics file keeps names in, drop them
        raise ValueError(f"channel_names cannot end in a NUL character, got {nul[0]!r}: "
                         "the statistics file would not keep it")
    return out


def check_columns(mine: tuple[str, ...] | None, theirs: tuple[str, ...] | None,
                  what: str, whose: str = "the statistics") -> None:
    """ValueError when a DataFrame's columns ``theirs`` are not the names ``mine``."""
    if mine is None or theirs is None or mine == theirs:
        return
    hint = (f"select them in that order first: df[{list(mine)!r}]" if sorted(mine) ==
            sorted(theirs) else "channels are matched by position")
    raise ValueError(f"{what} has the columns {shown(theirs)}, but {whose} were fitted on "
                     f"{shown(mine)}: {hint}. Nothing was changed.")


def check_series_indexes(**params) -> None:
    """ValueError when per-channel parameters given as pandas Series (``df.mean()``,
    ``df[cols].var()``) are indexed by different labels, or in another order: they are
    read by position, so ``Normalizer(df.mean(), df[["b", "a"]].var())`` paired a's mean
    with b's variance in silence. A Series of the default index (0, 1, ...) pairs with
    any."""
    indexed = {name: tuple(v.index.tolist()) for name, v in params.items()
               if type(v).__name__ == "Series" and type(v).__module__.startswith("pandas")
               and not _default_index(v.index)}
    if len(set(indexed.values())) > 1:
        (a, ia), *rest = indexed.items()
        b, ib = next((k, v) for k, v in rest if v != ia)
        raise ValueError(f"{a} and {b} are pandas Series indexed {shown(ia)} and "
                         f"{shown(ib)}: the channels are read by position, so they must "
                         f"be indexed alike (reorder one: {b}[{a}.index])")


def _default_index(index) -> bool:
    """Whether a pandas index is the default 0, 1, ... (``pd.Series([...])``): positions,
    not labels, so such a Series pairs with any by position."""
    return type(index).__name__ == "RangeIndex" and index.start == 0 and index.step == 1


def check_coords(mine, theirs, what: str, whose: str = "the statistics",
                 unchanged: bool = True, dims=None) -> None:
    """ValueError when ``theirs`` (a DataArray's ``(dim, values)`` channel coordinate)
    labels the channels of the same dimension otherwise than ``mine``: statistics are
    merged, and a normalizer applied, by position, which would mix channels of
    different labels. ``unchanged``: the message says that nothing was changed (not
    so in the middle of a fit). ``dims``: the DataArray's dimensions; one that holds
    ``mine``'s dimension on another axis than its channel axis (a transposed DataArray,
    read along the wrong dimension in silence when the two had one size) is refused.
    Another dimension absent from it is counted by position (a decision: a renamed
    dimension)."""
    if mine is None or theirs is None:
        return
    if dims is not None and mine[0] != theirs[0] and mine[0] in tuple(dims):
        raise ValueError(
            f"the channel axis of {what} is its dimension {theirs[0]!r}, but {whose} count "
            f"the channels of dimension {mine[0]!r}, which it holds on another axis (a "
            f"transposed DataArray?): pass channel_axis={mine[0]!r} to select it by name, "
            "or transpose it back." + (" Nothing was changed." if unchanged else ""))
    if mine[1] is None or theirs[1] is None:
        return
    if mine[0] == theirs[0] and not same_labels(mine[1], theirs[1]):
        raise ValueError(
            f"{what} has the {theirs[0]!r} coordinate {shown(tuple(theirs[1].tolist()))}, "
            f"but {whose} have {shown(tuple(mine[1].tolist()))}: channels are "
            f"matched by position, so the labels must match (reorder it with "
            f".sel({theirs[0]}=[...]) first)." + (" Nothing was changed." if unchanged else ""))


def same_labels(a, b) -> bool:
    """Whether two channel coordinates hold the same labels in the same order; NaN (and
    NaT) labels equal each other, as in xarray's indexes (``np.array_equal`` called the
    same coordinate ``[0.5, nan]`` different from itself, and refused it); in object
    labels too (``["red", nan]``, a pandas Index of strings with a missing label, was
    refused against itself): a missing label (None, NaN, NaT, ``pd.NA``) equals any
    other missing label, as pandas' ``Index.equals`` has it."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fcmM" and b.dtype.kind == a.dtype.kind:
        return bool(np.array_equal(a, b, equal_nan=True))
    if np.array_equal(a, b):
        return True
    if "O" not in (a.dtype.kind, b.dtype.kind) or a.shape != b.shape:
        return False
    for u, v in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
        if _missing(u) and _missing(v):
            continue
        try:
            if not bool(u == v):
                return False
        except (TypeError, ValueError):  # (labels whose == is not a truth value)
            return False
    return True


def _missing(v) -> bool:
    """Whether the label ``v`` is a missing value: None, a float NaN, NaT or ``pd.NA``."""
    if v is None or type(v).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(v, float):  # (numpy's float64 too)
        return v != v
    if isinstance(v, (np.floating, np.complexfloating, complex)):
        return bool(np.isnan(v))
    if isinstance(v, (np.datetime64, np.timedelta64)):
        return bool(np.isnat(v))
    return False


def kept_coord(mine, theirs):
    """The channel coordinate of statistics ``mine`` after a batch (or other
    statistics) with ``theirs`` was merged in (after :func:`check_coords`): the first
    labels stay. Without this, a batch with no labels, or labels of another dimension
    (an integer channel axis), replaced them, and a later batch with the channels in
    another order was pooled by position unchecked."""
    if mine is not None and mine[1] is not None:
        return mine
    if theirs is not None and theirs[1] is not None:
        return theirs
    return mine if mine is not None else theirs


def shown(names: tuple, limit: int = 8) -> str:
    """``names`` for a message, shortened after ``limit``."""
    more = ", ..." if len(names) > limit else ""
    return "[" + ", ".join(repr(n) for n in names[:limit]) + more + "]"
