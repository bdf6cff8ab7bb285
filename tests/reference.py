"""Slow, obviously-correct float64 references for the nbbn tests, plus comparison helpers.

Nothing here uses nbbn. Every statistic is computed per channel with plain numpy on a
float64 copy of the data: the channel axis is moved to the front, each channel is
reduced with an exactly rounded sum (``math.fsum``) for the mean and a second pass
over the deviations for the variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FLOAT_DTYPES = ["float16", "float32", "float64"]
INT_DTYPES = ["uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"]
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES

EPS64 = np.finfo(np.float64).eps


def stats_rtol(dtype) -> float:
    """Relative tolerance on mean/var/std for statistics of input of ``dtype``.

    The issue asks for <= 1e-6 for float32 input and <= 1e-12 for float64 input. Every
    other dtype converts exactly to float64 (float16, integers up to 2**53; larger
    integers are rounded identically by numpy and the implementation), so the float64
    bound applies, except float16 which we hold to the float32 bound.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return 1e-6
    return 1e-12


# --------------------------------------------------------------------------- statistics


@dataclass
class RefStats:
    count: np.ndarray  # int64 (C,)
    mean: np.ndarray  # float64 (C,)
    var: np.ndarray  # float64 (C,), ddof = 0
    min: np.ndarray
    max: np.ndarray

    @property
    def std(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.sqrt(self.var)

    @property
    def m2(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return self.var * self.count

    @property
    def num_channels(self) -> int:
        return int(self.count.shape[0])

    def variance(self, ddof: int = 0) -> np.ndarray:
        out = np.full(self.count.shape, np.nan)
        ok = self.count - ddof > 0
        with np.errstate(invalid="ignore"):
            out[ok] = self.m2[ok] / (self.count[ok] - ddof)
        return out


def channel_rows(x, channel_axis: int) -> np.ndarray:
    """(C, M) float64 copy of ``x`` with the channel axis first (native byte order)."""
    x = np.asarray(x)
    moved = np.moveaxis(x, channel_axis, 0)
    return np.array(moved, dtype=np.float64).reshape(moved.shape[0], -1)


def _one_channel(v: np.ndarray, nan_policy: str):
    if nan_policy == "omit":
        v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return 0, np.nan, np.nan, np.nan, np.nan
    with np.errstate(all="ignore"):
        if np.all(np.isfinite(v)) and v.min() == v.max():
            return n, float(v[0]), 0.0, float(v[0]), float(v[0])  # constant: exactly
        if np.all(np.isfinite(v)):  # (fsum / n rounds, and 3 x 683.4378 / 3 != 683.4378)
            mean = math.fsum(v.tolist()) / n
        else:
            mean = float(np.sum(v)) / n  # inf or nan, as numpy
        d = v - mean
        q = float(np.sum(d * d))
        c = float(np.sum(d))  # (the corrected two-pass: repairs the mean's rounding, which
        # at 1e9 + 1e-4 noise left the variance 2e-6 off, relative)
        var = (q - c * (c / n) if math.isfinite(q) and math.isfinite(c) else q) / n
        return n, mean, var, float(np.min(v)), float(np.max(v))


def ref_stats_rows(rows: np.ndarray, nan_policy: str = "propagate") -> RefStats:
    """Statistics of a (C, M) float64 array, one row per channel: ``_one_channel`` of
    each row, its steps taken for all rows at once where no NaN is left out (a row's
    numpy sums along the contiguous last axis are the 1-d sums of ``_one_channel``, bit
    for bit; ``tests/test_reference.py`` checks it). Row by row, 33,000 channels took 6 s
    of a slow CI host."""
    if nan_policy not in ("propagate", "omit", "raise"):
        raise ValueError(nan_policy)
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    c, m = rows.shape
    count = np.full(c, m, np.int64)
    mean, var = np.full(c, np.nan), np.full(c, np.nan)
    lo, hi = np.full(c, np.nan), np.full(c, np.nan)
    alone = np.isnan(rows).any(axis=1) if nan_policy == "omit" else np.zeros(c, bool)
    for i in np.flatnonzero(alone):  # NaNs left out: row by row
        count[i], mean[i], var[i], lo[i], hi[i] = _one_channel(rows[i], nan_policy)
    take = ~alone
    if m == 0 or not take.any():
        count[take] = 0
        return RefStats(count=count, mean=mean, var=var, min=lo, max=hi)
    r = rows[take]
    with np.errstate(all="ignore"):
        rmin, rmax = r.min(axis=1), r.max(axis=1)
        lo[take], hi[take] = rmin, rmax
        finite = np.isfinite(r).all(axis=1)
        const = finite & (rmin == rmax)
        mu = np.sum(r, axis=1) / m  # (inf or nan rows, as numpy)
        exact = finite & ~const
        mu[exact] = [math.fsum(v) / m for v in r[exact].tolist()]
        mu[const] = r[const, 0]
        d = r - mu[:, None]
        q = np.sum(d * d, axis=1)
        cs = np.sum(d, axis=1)
        fine = np.isfinite(q) & np.isfinite(cs)
        v = q.copy()
        v[fine] = q[fine] - cs[fine] * (cs[fine] / m)
        v /= m
        v[const] = 0.0
    mean[take], var[take] = mu, v
    return RefStats(count=count, mean=mean, var=var, min=lo, max=hi)


def ref_stats_rows_slow(rows: np.ndarray, nan_policy: str = "propagate") -> RefStats:
    """``ref_stats_rows`` row by row (``_one_channel``): its definition."""
    if nan_policy not in ("propagate", "omit", "raise"):
        raise ValueError(nan_policy)
    res = [_one_channel(rows[i], nan_policy) for i in range(rows.shape[0])]
    return RefStats(*(np.array([r[k] for r in res], dtype=np.int64 if k == 0 else np.float64)
                      for k in range(5)))


def ref_stats(x, channel_axis: int = 1, nan_policy: str = "propagate") -> RefStats:
    """Reference per-channel statistics of one array."""
    return ref_stats_rows(channel_rows(x, channel_axis), nan_policy)


def ref_stats_many(batches, channel_axis: int = 1, nan_policy: str = "propagate") -> RefStats:
    """Reference statistics of the concatenation of several batches (the whole stream)."""
    rows = np.concatenate([channel_rows(b, channel_axis) for b in batches], axis=1)
    return ref_stats_rows(rows, nan_policy)


# --------------------------------------------------------------------------- normalizer


def _bshape(ndim: int, channel_axis: int, c: int):
    shape = [1] * ndim
    shape[channel_axis] = c
    return tuple(shape)


def ref_out_dtype(dtype) -> np.dtype:
    """Output dtype of the normalizer: the floating input dtype, float32 for integers."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.newbyteorder("=")
    return np.dtype(np.float32)


def ref_normalize(x, mean, var, weight=None, bias=None, eps=1e-5, channel_axis=1):
    """float64 ``(x - mean) / sqrt(var + eps) * weight + bias`` along ``channel_axis``."""
    x64 = np.array(x, dtype=np.float64)
    c = np.asarray(mean).shape[0]
    shape = _bshape(x64.ndim, channel_axis, c)
    m = np.asarray(mean, dtype=np.float64).reshape(shape)
    v = np.asarray(var, dtype=np.float64).reshape(shape)
    w = np.ones(shape) if weight is None else np.asarray(weight, np.float64).reshape(shape)
    b = np.zeros(shape) if bias is None else np.asarray(bias, np.float64).reshape(shape)
    with np.errstate(all="ignore"):
        return (x64 - m) / np.sqrt(v + eps) * w + b


def ref_inverse(y, mean, var, weight=None, bias=None, eps=1e-5, channel_axis=1):
    """float64 ``(y - bias) / weight * sqrt(var + eps) + mean``."""
    y64 = np.array(y, dtype=np.float64)
    c = np.asarray(mean).shape[0]
    shape = _bshape(y64.ndim, channel_axis, c)
    m = np.asarray(mean, dtype=np.float64).reshape(shape)
    v = np.asarray(var, dtype=np.float64).reshape(shape)
    w = np.ones(shape) if weight is None else np.asarray(weight, np.float64).reshape(shape)
    b = np.zeros(shape) if bias is None else np.asarray(bias, np.float64).reshape(shape)
    with np.errstate(all="ignore"):
        return (y64 - b) / w * np.sqrt(v + eps) + m


# --------------------------------------------------------------------------- batchnorm


class RefBatchNorm:
    """Pure numpy model of ``torch.nn.BatchNorm{1,2,3}d`` with float64 buffers."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, channel_axis=1):
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.channel_axis = channel_axis
        self.training = True
        self.weight = np.ones(num_features) if affine else None
        self.bias = np.zeros(num_features) if affine else None
        if track_running_stats:
            self.running_mean = np.zeros(num_features)
            self.running_var = np.ones(num_features)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def __call__(self, x):
        x = np.asarray(x)
        use_batch = self.training or self.running_mean is None
        if use_batch:
            st = ref_stats(x, self.channel_axis)
            mean, var = st.mean, st.var
            if self.training and self.running_mean is not None:
                self.num_batches_tracked += 1
                f = (1.0 / self.num_batches_tracked) if self.momentum is None else self.momentum
                n = st.count
                self.running_mean = (1 - f) * self.running_mean + f * mean
                self.running_var = (1 - f) * self.running_var + f * (var * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        y = ref_normalize(x, mean, var, self.weight, self.bias, self.eps, self.channel_axis)
        return y


# --------------------------------------------------------------------------- data


def random_array(rng, shape, dtype, channel_axis=1, spread=True) -> np.ndarray:
    """Random data of ``dtype``; channels get different locations and scales.

    Integer data covers each dtype's full range (different sub-ranges per channel);
    float data is normal with per-channel offsets so that channel mix-ups show.
    """
    dtype = np.dtype(dtype)
    out = np.empty(shape, dtype=dtype)
    if out.size == 0:
        return out
    om = np.moveaxis(out, channel_axis, 0)
    c = om.shape[0]
    for i in range(c):
        if dtype.kind == "f":
            scale = 1.0 + (i % 3)
            loc = (2.0 * i - c) if spread else 0.0
            if dtype.itemsize == 2:
                loc = loc / 8.0
            om[i] = (rng.standard_normal(om[i].shape) * scale + loc).astype(dtype)
        else:
            ii = np.iinfo(dtype)
            span = int(ii.max) - int(ii.min)
            lo = int(ii.min) + (i % 4) * (span // 8)
            hi = lo + span // 2 + (i % 2) * (span // 8)
            om[i] = rng.integers(lo, hi, size=om[i].shape, dtype=dtype, endpoint=True)
    return out


# --------------------------------------------------------------------------- assertions


def assert_close(got, exp, rtol=0.0, atol=0.0, name="value"):
    """Elementwise ``|got - exp| <= atol + rtol * |exp|``; NaN must match NaN, inf must match.

    ``atol`` may be an array broadcastable to ``exp``.
    """
    got = np.asarray(got, dtype=np.float64)
    exp = np.asarray(exp, dtype=np.float64)
    assert got.shape == exp.shape, f"{name}: shape {got.shape} != expected {exp.shape}"
    gn, en = np.isnan(got), np.isnan(exp)
    bad = gn != en
    both = ~(gn | en)
    ginf, einf = np.isinf(got), np.isinf(exp)
    bad |= both & (ginf | einf) & (got != exp)
    fin = both & ~ginf & ~einf
    with np.errstate(all="ignore"):
        tol = np.broadcast_to(np.asarray(atol, dtype=np.float64), exp.shape) + rtol * np.abs(exp)
        err = np.abs(got - exp)
    bad |= fin & ~(err <= tol)
    if bad.any():
        idx = np.argwhere(bad)[:5]
        details = "; ".join(
            f"[{', '.join(map(str, i))}] got {got[tuple(i)]!r} expected {exp[tuple(i)]!r}"
            for i in idx
        )
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} elements differ "
            f"(rtol={rtol}, atol max={np.max(tol) if tol.size else 0}): {details}"
        )


def assert_stats(rs, ref: RefStats, rtol: float, mean_atol=None):
    """Compare a RunningStats-like object to a RefStats.

    count, min and max must be exact. mean: ``|err| <= rtol * (|mean| + std)`` (a relative
    bound on the spread, since a mean near zero has no relative precision). var and std:
    relative ``rtol`` with no absolute slack (so a constant channel must give 0 exactly).
    """
    count = np.asarray(rs.count)
    assert count.dtype == np.int64, f"count dtype {count.dtype}, expected int64"
    np.testing.assert_array_equal(count, ref.count, err_msg="count")
    for name in ("mean", "var", "std", "min", "max"):
        arr = np.asarray(getattr(rs, name))
        assert arr.dtype == np.float64, f"{name} dtype {arr.dtype}, expected float64"
        assert arr.shape == ref.count.shape, f"{name} shape {arr.shape}"
    np.testing.assert_array_equal(np.asarray(rs.min), ref.min, err_msg="min")
    np.testing.assert_array_equal(np.asarray(rs.max), ref.max, err_msg="max")
    with np.errstate(invalid="ignore"):
        scale = np.abs(ref.mean) + ref.std
    if mean_atol is None:
        mean_atol = np.where(np.isfinite(scale), rtol * scale, 0.0)
    assert_close(rs.mean, ref.mean, rtol=rtol, atol=mean_atol, name="mean")
    assert_close(rs.var, ref.var, rtol=rtol, name="var")
    assert_close(rs.std, ref.std, rtol=rtol, name="std")


def assert_ulps(y, ref64, ulps=1.0, name="output"):
    """``y`` (float16/32) within ``ulps`` ulp of ``ref64`` rounded to y's dtype."""
    y = np.asarray(y)
    dt = y.dtype.newbyteorder("=")
    with np.errstate(all="ignore"):
        r = np.asarray(ref64, dtype=np.float64).astype(dt)
        spacing = np.spacing(np.abs(r)).astype(np.float64)
    assert_close(y.astype(np.float64), r.astype(np.float64), atol=ulps * spacing, name=name)


def assert_output(y, ref64, name="output"):
    """Normalizer output check: float64 at rtol=atol=1e-12, narrower floats within 1 ulp."""
    y = np.asarray(y)
    if y.dtype.itemsize == 8:
        assert_close(y, ref64, rtol=1e-12, atol=1e-12, name=name)
    else:
        assert_ulps(y, ref64, 1.0, name=name)


# --------------------------------------------------------------------------- layouts

# name -> (base shape builder, base channel axis, view function, view channel axis)
# The data is generated on a C-contiguous base with per-channel offsets along the base's
# channel axis, then viewed; the view's channel axis is where that base axis ends up.
LAYOUTS = {
    "channels_first": (lambda c: (4, c, 5, 6), 1, lambda a: a, 1),
    "channels_last": (lambda c: (4, 5, 6, c), 3, lambda a: a, -1),
    "channels_last_pos_axis": (lambda c: (4, 5, 6, c), 3, lambda a: a, 3),
    "channels_first_neg_axis": (lambda c: (4, c, 5, 6), 1, lambda a: a, -3),
    "axis0": (lambda c: (c, 4, 7), 0, lambda a: a, 0),
    "middle_of_5d": (lambda c: (2, 3, c, 4, 5), 2, lambda a: a, 2),
    "one_d": (lambda c: (c,), 0, lambda a: a, 0),
    "one_d_neg_axis": (lambda c: (c,), 0, lambda a: a, -1),
    "two_d": (lambda c: (9, c), 1, lambda a: a, 1),
    "two_d_axis0": (lambda c: (c, 9), 0, lambda a: a, 0),
    "two_d_fortran": (lambda c: (9, c), 1, np.asfortranarray, 1),  # pandas' to_numpy()
    "three_d_ncl": (lambda c: (5, c, 11), 1, lambda a: a, 1),
    "three_d_nlc": (lambda c: (5, 11, c), 2, lambda a: a, -1),
    "strided": (lambda c: (8, 2 * c, 10, 12), 1, lambda a: a[::2, ::2, ::3, 1::2], 1),
    "strided_channels_last": (lambda c: (8, 10, 12, c + 2), 3, lambda a: a[1::2, ::3, :, 1:-1], 3),
    "nhwc_transposed_to_nchw": (lambda c: (4, 5, 6, c), 3, lambda a: a.transpose(0, 3, 1, 2), 1),
    "nchw_transposed_to_nhwc": (lambda c: (4, c, 5, 6), 1, lambda a: a.transpose(0, 2, 3, 1), -1),
    "full_transpose": (lambda c: (4, c, 5, 6), 1, lambda a: a.T, 2),
    "fortran_order": (lambda c: (4, c, 5, 6), 1, np.asfortranarray, 1),
    "negative_strides": (lambda c: (4, c, 5, 6), 1, lambda a: a[::-1, :, ::-1, ::-2], 1),
    "negative_channel_stride": (lambda c: (4, c, 5, 6), 1, lambda a: a[:, ::-1], 1),
    "negative_channels_last": (lambda c: (4, 5, 6, c), 3, lambda a: a[::-1, :, :, ::-1], -1),
    "broadcast_zero_strides": (
        lambda c: (1, c, 1, 6), 1, lambda a: np.broadcast_to(a, (4, a.shape[1], 5, 6)), 1
    ),
}


def make_layout(name, rng, dtype, c):
    """(array view, channel_axis) for the named layout with ``c`` channels."""
    shape_fn, base_axis, view, axis = LAYOUTS[name]
    base = random_array(rng, shape_fn(c), dtype, channel_axis=base_axis)
    x = view(base)
    assert x.shape[axis] == c, (name, x.shape, axis)
    return x, axis
