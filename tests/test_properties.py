"""Hypothesis properties: batching, order and merge trees do not change the statistics."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from reference import EPS64, assert_close, ref_stats

import nbbn

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FLOATS = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def datasets(draw, max_rows=40, max_channels=4):
    """An (N, C) float64 dataset with N >= 1, channel axis 1."""
    c = draw(st.integers(1, max_channels))
    n = draw(st.integers(1, max_rows))
    return draw(hnp.arrays(np.float64, (n, c), elements=FLOATS))


@st.composite
def split_points(draw, n):
    """Sorted cut points 0 = p0 < p1 < ... < pk = n (non-empty pieces)."""
    if n == 1:
        return [0, 1]
    inner = draw(st.lists(st.integers(1, n - 1), unique=True, max_size=min(8, n - 1)))
    return [0, *sorted(inner), n]


def _tolerances(data):
    """Tolerances for float64 data of this spread (see test docstrings)."""
    ref = ref_stats(data, 1)
    maxabs = np.max(np.abs(data), axis=0)
    # Means of sub-batches carry rounding of a few ulp of max|x|; the merged variance
    # inherits it through the mean differences, so it gets an absolute slack of
    # ~eps * max|x| * std on top of the 1e-12 relative bound (0 for constant channels).
    # Subnormal values carry an absolute, not a relative, precision: a few ulps of the
    # smallest subnormal (4.9e-324) are the floor of any computed mean.
    tiny = 8 * np.finfo(np.float64).smallest_subnormal
    mean_atol = 64 * EPS64 * maxabs + tiny
    var_atol = 256 * EPS64 * maxabs * ref.std + tiny
    return ref, mean_atol, var_atol


def _check(rs, ref, mean_atol, var_atol, what):
    np.testing.assert_array_equal(rs.count, ref.count, err_msg=f"{what}: count")
    np.testing.assert_array_equal(rs.min, ref.min, err_msg=f"{what}: min")
    np.testing.assert_array_equal(rs.max, ref.max, err_msg=f"{what}: max")
    assert_close(rs.mean, ref.mean, rtol=1e-12, atol=mean_atol, name=f"{what}: mean")
    assert_close(rs.var, ref.var, rtol=1e-12, atol=var_atol, name=f"{what}: var")


def _build_tree(draw, parts):
    """Merge a list of RunningStats with a random binary tree (random split, random side)."""
    if len(parts) == 1:
        return parts[0]
    k = draw(st.integers(1, len(parts) - 1))
    left = _build_tree(draw, parts[:k])
    right = _build_tree(draw, parts[k:])
    op = draw(st.sampled_from(["merge", "add", "iadd", "merge_rev"]))
    if op == "merge":
        return left.merge(right)
    if op == "merge_rev":
        return right.merge(left)
    if op == "add":
        return left + right
    left += right
    return left


@SETTINGS
@given(data=datasets(), d=st.data())
def test_any_split_any_order(data, d, backend):
    """update() over any split of the rows, in any order, gives the statistics of the whole."""
    ref, mean_atol, var_atol = _tolerances(data)
    cuts = d.draw(split_points(data.shape[0]))
    pieces = [data[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    order = d.draw(st.permutations(range(len(pieces))))
    rs = nbbn.RunningStats(1, backend=backend)
    for i in order:
        rs.update(pieces[i])
    _check(rs, ref, mean_atol, var_atol, "split")


@SETTINGS
@given(data=datasets(), d=st.data())
def test_any_merge_tree(data, d, backend):
    """channel_stats of the pieces merged along any binary tree give the whole's statistics."""
    ref, mean_atol, var_atol = _tolerances(data)
    cuts = d.draw(split_points(data.shape[0]))
    pieces = [data[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    order = d.draw(st.permutations(range(len(pieces))))
    parts = [nbbn.channel_stats(pieces[i], 1, backend=backend) for i in order]
    _check(_build_tree(d.draw, parts), ref, mean_atol, var_atol, "tree")


@SETTINGS
@given(a=datasets(max_channels=3), b=datasets(max_channels=3), c=datasets(max_channels=3))
def test_merge_commutative_associative(a, b, c, backend):
    nch = min(a.shape[1], b.shape[1], c.shape[1])
    a, b, c = a[:, :nch], b[:, :nch], c[:, :nch]
    sa, sb, sc = (nbbn.channel_stats(x, 1, backend=backend) for x in (a, b, c))
    whole = np.concatenate([a, b, c])
    ref, mean_atol, var_atol = _tolerances(whole)
    ab, ba = sa.merge(sb), sb.merge(sa)
    ref_ab, mab, vab = _tolerances(np.concatenate([a, b]))
    _check(ab, ref_ab, mab, vab, "a+b")
    np.testing.assert_array_equal(ab.count, ba.count)
    np.testing.assert_array_equal(ab.min, ba.min)
    np.testing.assert_array_equal(ab.max, ba.max)
    assert_close(ab.mean, ba.mean, rtol=1e-12, atol=mab, name="commutative mean")
    assert_close(ab.var, ba.var, rtol=1e-12, atol=vab, name="commutative var")
    left = (sa + sb) + sc
    right = sa + (sb + sc)
    _check(left, ref, mean_atol, var_atol, "(a+b)+c")
    _check(right, ref, mean_atol, var_atol, "a+(b+c)")
    assert_close(left.mean, right.mean, rtol=1e-12, atol=mean_atol, name="associative mean")
    assert_close(left.var, right.var, rtol=1e-12, atol=var_atol, name="associative var")


@SETTINGS
@given(data=datasets(), policy=st.sampled_from(["propagate", "omit", "raise"]),
       axis=st.sampled_from([0, 1, -1]), nan_rows=st.integers(0, 3), d=st.data())
def test_dict_and_file_round_trip_exact(data, policy, axis, nan_rows, d, backend):
    if policy != "raise" and nan_rows:
        data = data.copy()
        data[:nan_rows, 0] = np.nan
    rs = nbbn.RunningStats(axis, nan_policy=policy, backend=backend)
    cuts = d.draw(split_points(data.shape[0]))
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        piece = data[a:b] if axis != 0 else np.ascontiguousarray(data[a:b].T)
        rs.update(piece)
    d1 = rs.to_dict()
    back = nbbn.RunningStats.from_dict(d1)
    _assert_exact(back, rs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rs.npz")
        rs.save(path)
        loaded = nbbn.RunningStats.load(path)
    _assert_exact(loaded, rs)
    d2 = loaded.to_dict()
    assert set(d1) == set(d2)
    for k in d1:
        np.testing.assert_array_equal(np.asarray(d1[k]), np.asarray(d2[k]), err_msg=k)


def _assert_exact(a, b):
    assert a.channel_axis == b.channel_axis and a.nan_policy == b.nan_policy
    assert a.num_channels == b.num_channels
    for name in ("count", "mean", "var", "std", "min", "max"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    np.testing.assert_array_equal(a.variance(ddof=1), b.variance(ddof=1))
