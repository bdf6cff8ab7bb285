"""Sample weights: the checks of ``RunningStats.update(x, sample_weight=w)`` (numpy only).

Weights are frequency weights, one per row along axis 0: a row of weight ``k`` counts
as ``k`` copies of itself (so integer weights equal repeated rows), a row of weight 0
as absent. The weighted kernels are in :mod:`nbbn.backends.cpu_weighted`.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._layout import check_no_mask
from ._torch_arrays import host_values

WEIGHT_MIN = 2.0 ** -500
WEIGHT_MAX = 2.0 ** 500
"""The range of a non-zero weight: weights of 5e307 made a variance of 1.6 come back inf,
and weights of 1e-305 one of 9e-23 come back 0 (the sums of ``w * d**2`` left float64)."""


def check_sample_weight(sample_weight, nrows: int, channel_axis: int, given=None,
                        ndim: int | None = None) -> np.ndarray:
    """``sample_weight`` as a float64 (N,) array, or an error saying what was expected.

    Parameters
    ----------
    sample_weight : array_like
        One weight per row along axis 0: 0, or between 2**-500 and 2**500
        (:data:`WEIGHT_MIN`, :data:`WEIGHT_MAX`; booleans weigh 0 and 1).
    nrows : int
        The batch's length along axis 0.
    channel_axis : int
        The batch's channel axis, non-negative (it must not be axis 0).
    given, ndim : optional
        The ``channel_axis`` the caller gave (a dimension name, a negative axis) and the
        batch's dimensions, for the error when the channel axis is axis 0.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(nrows,)``, C-contiguous (a copy).
    """
    if channel_axis == 0:
        said = "" if given is None or given == 0 else f" (channel_axis={given!r})"
        fix = ("a 1-d batch is one row of channels: pass x[None] with one weight"
               if ndim == 1 else
               "transpose the batch to put its rows first (a DataArray: "
               "da.transpose(rows_dim, channel_dim))" if isinstance(given, str) else
               "the weighted rows must come first: pass np.moveaxis(x, 0, -1) with "
               "channel_axis=-1 (x.T for a (C, N) batch)")
        raise ValueError(f"sample_weight weighs the rows along axis 0, but axis 0 is the "
                         f"channel axis here{said}; {fix}")
    # (the data's advice, filled(np.nan), does not apply: a NaN weight is refused)
    check_no_mask(sample_weight, "sample_weight",
                  "pass sample_weight.filled(0) to leave those rows out")
    w = np.asarray(host_values(sample_weight))
    if w.dtype.kind == "O" and all(isinstance(v, numbers.Real) for v in w.flat):
        try:  # (Python numbers in an object array, as scikit-learn)
            w = w.astype(np.float64)
        except OverflowError:  # (an int past float64's range)
            raise ValueError("sample_weight must be finite and >= 0 (frequency weights), got "
                             "an integer too large for float64") from None
    if w.dtype.kind not in "biuf":  # (booleans weigh 0 and 1, as in scikit-learn)
        raise TypeError(f"sample_weight must hold real numbers (bool, integer or floating), "
                        f"got dtype {w.dtype}")
    if w.shape != (nrows,):
        raise ValueError(f"sample_weight must have shape ({nrows},): one weight per row along "
                         f"axis 0 of the batch; got shape {w.shape}")
    w = np.array(w, np.float64, order="C")
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"sample_weight must be finite and >= 0 (frequency weights), got "
                         f"{w[i]!r} at row {i}")
    pos = w[w > 0]
    if pos.size and not (WEIGHT_MIN <= pos.min() and pos.max() <= WEIGHT_MAX):
        i = int(np.flatnonzero((w > 0) & ((w < WEIGHT_MIN) | (w > WEIGHT_MAX)))[0])
        raise ValueError(f"sample_weight must be 0 or between 2**-500 and 2**500, got {w[i]!r} "
                         f"at row {i}: the weighted sums (count, sum(w * (x - mean)**2)) would "
                         "underflow or overflow float64. Frequency weights may be rescaled: "
                         "the mean and variance do not change, the count scales with them")
    return w  # (at most 2**500 a row: the sum is finite)


def nonfinite_in_absent_rows(can, weight: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The NaNs and infinities in the rows of weight 0 of a host input ``can`` (a
    ``_layout.Canonical``, or an object holding one as ``data``: an xarray input), and
    the channels holding them: the kernels skip those rows, so ``nan_policy="raise"``
    took a NaN there (scikit-learn validates ``X`` whole). ``(0, 0, [])`` for a device
    input (weights are refused there) or integers."""
    can = getattr(can, "data", can)
    a = getattr(can, "array", None)
    if not isinstance(a, np.ndarray) or (a.dtype.kind not in "fc" and not can.bf16):
        return 0, 0, np.zeros(0, np.intp)
    rows = a[np.flatnonzero(weight == 0)]
    if can.bf16:  # (the bits of bfloat16 values: the float32 of the same top half)
        rows = (rows.astype(np.uint32) << 16).view(np.float32)
    rows = np.moveaxis(rows, can.axis, -1).reshape(-1, can.channels)
    nan, inf = np.isnan(rows), np.isinf(rows)
    return int(nan.sum()), int(inf.sum()), np.flatnonzero((nan | inf).any(axis=0))


def nonfinite_in_sparse_rows(x, rows: np.ndarray) -> tuple[int, int, np.ndarray]:
    """:func:`nonfinite_in_absent_rows` of a scipy sparse matrix ``x`` (rows the samples,
    columns the channels): the NaNs and infinities stored in its ``rows``, and the
    channels holding them."""
    if x.dtype.kind not in "fc" or rows.size == 0:
        return 0, 0, np.zeros(0, np.intp)
    part = x[rows].tocoo()
    nan, inf = np.isnan(part.data), np.isinf(part.data)
    return int(nan.sum()), int(inf.sum()), np.unique(part.col[nan | inf]).astype(np.intp)
