"""xarray outputs of statistics: :meth:`RunningStats.to_xarray` (xarray imported here,
on first use; ``pip install 'nbbn[xarray]'``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._shards_zarr_h5 import import_extra

__all__ = ["stats_dataset"]


def stats_dataset(rs: Any, dim: str | None, coord: tuple | None):
    """``rs``'s statistics as an ``xarray.Dataset`` over the channel dimension.

    Parameters
    ----------
    rs : RunningStats
        The statistics.
    dim : str or None
        The channel dimension's name; None: ``coord``'s, a named ``channel_axis``, or
        ``"channel"``.
    coord : tuple or None
        ``(dimension name, coordinate values or None)`` of the first xarray input with
        a channel coordinate, else of the first xarray input (``kept_coord``).

    Returns
    -------
    xarray.Dataset
        ``count``, ``mean``, ``var``, ``std``, ``min``, ``max``, ``nan_count`` over
        ``dim``, with the coordinate when its length matches; attrs ``channel_axis``
        and ``nan_policy``.
    """
    if dim is not None and not isinstance(dim, str):
        raise TypeError(f"dim must be a dimension name (str) or None, got "
                        f"{type(dim).__name__}")
    xr = import_extra("xarray", "xarray", "RunningStats.to_xarray()")
    if dim is None:
        dim = coord[0] if coord else (rs.channel_axis if isinstance(rs.channel_axis, str)
                                      else "channel")
    fields = {"count": rs.count, "mean": rs.mean, "var": rs.var, "std": rs.std,
              "min": rs.min, "max": rs.max, "nan_count": rs.nan_count}
    coords: Any = {}
    if coord is not None and coord[1] is not None and len(coord[1]) == len(rs.count):
        labels = coord[1]
        if getattr(labels, "nlevels", 1) > 1:  # a pandas.MultiIndex: its levels kept
            coords = xr.Coordinates.from_pandas_multiindex(labels, dim)
        else:
            coords[dim] = np.asarray(labels)
    return xr.Dataset({k: ((dim,), v) for k, v in fields.items()}, coords=coords,
                      attrs={"channel_axis": rs.channel_axis, "nan_policy": rs.nan_policy})
