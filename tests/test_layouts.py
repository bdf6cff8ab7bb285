"""Strided, reversed and Fortran-ordered inputs: exact results, no whole-input copies.

Channels-last rows with gaps (``x[:, ::2]``, RGBA's ``x[..., :3]``, ``x[::-1]``) and
Fortran-ordered N-d arrays used to be copied whole (a strided view of a memory map
became one big copy) or mapped at a crawl; they are now read in place (statistics)
or in bounded slabs (the affine map). The CPU backend's own paths: the CUDA backend
copies host input to the device anyway.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from reference import assert_close, assert_ulps, ref_normalize, ref_stats, stats_rtol

import nbbn
from nbbn import _layout

RNG = np.random.default_rng(20261203)
_T2 = RNG.standard_normal((300, 10)).astype(np.float32) * 3 + 7
_NCHW = RNG.standard_normal((6, 5, 7, 9)) * 2 - 1
_U8 = RNG.integers(0, 256, (5, 7, 9, 4), dtype=np.uint8)

CASES = {
    "table[:, ::2]": (_T2[:, ::2], -1),
    "table[:, 1::2]": (_T2[:, 1::2], -1),  # (the last row's gap lies past the view)
    "table[:, :6]": (_T2[:, :6], -1),
    "table[::-1]": (_T2[::-1], -1),
    "table[::-3, ::2]": (_T2[::-3, ::2], -1),
    "table[:, ::4] (wide gaps: slabs)": (_T2[:, ::4], -1),
    "table F[::2]": (np.asfortranarray(_T2)[::2], -1),
    "nhwc[:, :, ::2]": (_NCHW.transpose(0, 2, 3, 1)[:, :, ::2], -1),
    "rgba[..., :3]": (_U8[..., :3], -1),
    "rgba[..., 1:]": (_U8[..., 1:], -1),
    "nchw F": (np.asfortranarray(_NCHW), 1),
    "nchw F[1:5]": (np.asfortranarray(_NCHW)[1:5], 1),
    "nchw F, axis 0": (np.asfortranarray(_NCHW), 0),
    "nchw F, axis 2": (np.asfortranarray(_NCHW), 2),
    "nhwc F float32": (np.asfortranarray(_NCHW.transpose(0, 2, 3, 1).astype(np.float32)), -1),
    "uint8 F": (np.asfortranarray(_U8), -1),
    "float16 F": (np.asfortranarray(_NCHW.astype(np.float16)), 1),
    # float16 rows with gaps: gathered as their bits (numba has no float16)
    "float16 table[:, :6]": (_T2.astype(np.float16)[:, :6], -1),
    "float16 table[::-1]": (_T2.astype(np.float16)[::-1], -1),
    "float16 table[:, ::-1]": (_T2.astype(np.float16)[:, ::-1], -1),
    "float16 table[:, ::4]": (_T2.astype(np.float16)[:, ::4], -1),
    ">f4 table[:, ::2]": (_T2.astype(">f4")[:, ::2], -1),
    # a swapped-axes array (read in memory order; its transpose's view would walk one
    # element per channel)
    "nhwc swapped": (_NCHW.transpose(0, 2, 3, 1).swapaxes(0, 1), -1),
    # permuted views of contiguous memory, read in memory order (2026-12-04)
    "nhwc view of nchw": (_NCHW.transpose(0, 2, 3, 1), -1),
    "nchw view of nhwc (torch channels_last)": (
        np.ascontiguousarray(_NCHW.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2), 1),
    "cnhw view of nchw": (_NCHW.transpose(1, 0, 2, 3), 0),
    "uint8 nchw view of nhwc": (_U8.transpose(0, 3, 1, 2), 1),
    "float32 nhwc view of nchw[1:5]": (_NCHW.astype(np.float32)[1:5].transpose(0, 2, 3, 1),
                                       -1),
}


@pytest.mark.parametrize("policy", ["propagate", "omit"])
@pytest.mark.parametrize("name", list(CASES))
def test_statistics(name, policy):
    x, axis = CASES[name]
    rs = nbbn.RunningStats(axis, nan_policy=policy, backend="cpu").update(x)
    ref = ref_stats(x, axis % x.ndim)
    np.testing.assert_array_equal(rs.count, ref.count)
    np.testing.assert_array_equal(rs.min, ref.min)
    np.testing.assert_array_equal(rs.max, ref.max)
    rtol = stats_rtol(x.dtype)
    assert_close(rs.mean, ref.mean, rtol=rtol, atol=rtol, name="mean")
    assert_close(rs.var, ref.var, rtol=rtol, name="var")


@pytest.mark.parametrize("out_kind", ["new", "C", "F", "float64", ">f4", "strided"])
@pytest.mark.parametrize("name", list(CASES))
def test_normalizer(name, out_kind):
    x, axis = CASES[name]
    mean, var = np.linspace(-1, 1, x.shape[axis]), np.linspace(0.5, 2, x.shape[axis])
    norm = nbbn.Normalizer(mean, var, eps=0.0, channel_axis=axis, backend="cpu")
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    if out_kind == "new":
        y = norm(x)
    else:
        out = {"C": lambda: np.empty(x.shape, dtype),
               "F": lambda: np.empty(x.shape, dtype, order="F"),
               "float64": lambda: np.empty(x.shape, np.float64),
               ">f4": lambda: np.empty(x.shape, ">f4"),
               "strided": lambda: np.empty(x.shape[:-1] + (2 * x.shape[-1],), dtype)[..., ::2],
               }[out_kind]()
        y = norm(x, out=out)
        assert y is out
    want = ref_normalize(x, mean, var, eps=0.0, channel_axis=axis)
    if y.dtype.itemsize == 8:
        assert_close(y, want, rtol=1e-15, atol=1e-15)
    else:
        assert_ulps(y, want, ulps=1.0)


@pytest.mark.parametrize("name", ["table[:, ::2]", "rgba[..., :3]", "nchw F", "table[::-1]",
                                  "float16 table[::-1]"])
def test_batchnorm(name):
    x, axis = CASES[name]
    bn = nbbn.BatchNorm(x.shape[axis], channel_axis=axis, backend="cpu")
    y = bn(x)
    ref = ref_stats(x, axis % x.ndim)
    assert_close(bn.running_mean, 0.1 * ref.mean, rtol=1e-12, atol=1e-15)
    want = ref_normalize(x, ref.mean, ref.var, eps=bn.eps, channel_axis=axis)
    if y.dtype.itemsize == 8:
        assert_close(y, want, rtol=1e-13, atol=1e-13)
    else:
        assert_ulps(y, want, ulps=2.0)


def test_transposed_route_only_where_it_streams():
    t = np.zeros((40, 40, 16), np.float32)
    assert _layout.canonical(np.asfortranarray(t), -1).transposed() is not None
    batch = np.asfortranarray(np.zeros((10, 3, 8, 8), np.float32))[2:6]  # (rows of one)
    assert _layout.canonical(batch, 1).transposed() is not None
    assert _layout.canonical(t.transpose(1, 0, 2), -1).view3() is None
    # a swapped-axes view of contiguous memory is read in memory order (it crawled
    # through ``a.T`` before 2026-12-04); one with gaps in its inner runs is not
    assert _layout.canonical(t.transpose(1, 0, 2), -1).transposed()[1] == (1, 0, 2)
    assert _layout.canonical(t[:, :, ::2].transpose(1, 0, 2), -1).transposed() is None
    # permuted views are read in memory order: an NHWC view of NCHW memory, and a
    # channels_last tensor's memory read with channel_axis=1, whose (O, C, I) view
    # exists but has gaps in its inner runs
    nchw = np.zeros((4, 3, 8, 8), np.float32)
    t, perm = _layout.canonical(nchw.transpose(0, 2, 3, 1), -1).transposed()
    assert perm == (0, 3, 1, 2) and t.axis == 1 and t.view3().flags.c_contiguous
    nhwc = np.zeros((4, 8, 8, 3), np.float32)
    channels_last = _layout.canonical(nhwc.transpose(0, 3, 1, 2), 1)
    assert channels_last.view3() is not None and not _layout.streams(channels_last.view3())
    t, perm = channels_last.transposed()
    assert perm == (0, 2, 3, 1) and t.axis == 3 and t.view3().shape == (256, 3, 1)
    assert _layout.canonical(nchw, 1).transposed() is None  # (streams as it is)


def test_slabs_are_never_rows_with_gaps(monkeypatch):
    # such a view would be mapped one element per row (9x slower, found in review)
    monkeypatch.setattr(_layout, "SLAB_BYTES", 1 << 12)
    x = np.zeros((2, 4096, 8), np.float32)[:, :4000, ::2]
    for x3, _ in _layout.canonical(x, -1).pieces(slabs=True):
        assert not _layout.copied_rows(x3)


@pytest.mark.parametrize("seed", range(4))
def test_slab_index_covers_every_element_once_within_the_bound(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        ndim = int(rng.integers(1, 5))
        shape = tuple(int(n) for n in rng.integers(0, 7, ndim))
        axis, limit = int(rng.integers(0, ndim)), int(rng.integers(1, 200))
        item = int(rng.choice([1, 2, 4, 8]))
        cover = np.zeros(shape, np.int64)
        for index in _layout.slab_index(shape, axis, item, limit):
            slab = cover[index]
            assert slab.shape[axis] == shape[axis]  # (every channel in every slab)
            assert slab.size * item <= max(limit, shape[axis] * item), (shape, axis, limit)
            cover[index] += 1
        assert (cover == 1).all(), (shape, axis, limit)


def _peak(f, *args, **kwargs) -> int:
    for _ in range(2):  # (compiling first, a merge too: the compiler's allocations are
        f(*args, **kwargs)  # not the call's)
    tracemalloc.start()
    try:
        f(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_no_whole_copies(monkeypatch):
    # numpy reports its allocations to tracemalloc: with 64 KiB slabs, a 4 MB strided
    # input may cost a slab or two, never a copy of itself (as it did)
    monkeypatch.setattr(_layout, "SLAB_BYTES", 1 << 16)
    t = RNG.standard_normal((65536, 32)).astype(np.float32)  # 8 MiB
    rgba = RNG.integers(0, 256, (256, 256, 64, 4), dtype=np.uint8)  # 16 MiB
    cases = [(t[:, ::2], -1), (t[::-1], -1), (t[:, ::4], -1), (rgba[..., :3], -1),
             (np.asfortranarray(t.reshape(64, 8, 32, 128)), 1)]
    for x, axis in cases:
        c = x.shape[axis]
        assert _peak(nbbn.RunningStats(axis, backend="cpu").update, x) < 1 << 18
        norm = nbbn.Normalizer(np.zeros(c), np.ones(c), channel_axis=axis, backend="cpu")
        out = np.empty(x.shape, np.float32)
        assert _peak(norm, x, out=out) < 1 << 19
        assert_ulps(out, ref_normalize(x, np.zeros(c), np.ones(c), channel_axis=axis), 1.0)
        bad_out = np.empty(x.shape, ">f4")  # (no kernel writes it: temporaries)
        assert _peak(norm, x, out=bad_out) < 1 << 19
        np.testing.assert_array_equal(bad_out, out)
        gapped_out = np.empty(x.shape[:-1] + (2 * x.shape[-1],), np.float32)[..., ::2]
        assert _peak(norm, x, out=gapped_out) < 1 << 19  # (scattered slab by slab)
        np.testing.assert_array_equal(gapped_out, out)
    # one index along the first axis bigger than a slab: cut along the next axes
    one = RNG.standard_normal((1, 3, 512, 512)).astype(np.float32)[:, :, ::2, ::2]  # 3 MiB
    assert _peak(nbbn.RunningStats(1, backend="cpu").update, one) < 1 << 18
    assert_close(nbbn.RunningStats(1, backend="cpu").update(one).mean,
                 ref_stats(one, 1).mean, rtol=1e-6, atol=1e-6)
    norm = nbbn.Normalizer(np.zeros(3), np.ones(3), channel_axis=1, backend="cpu")
    out = np.empty(one.shape, ">f4")
    assert _peak(norm, np.ascontiguousarray(one), out=out) < 1 << 19
    assert_ulps(out, ref_normalize(one, np.zeros(3), np.ones(3), channel_axis=1), 1.0)
    # temporaries wider than the input (uint8 into float64) count at their own size
    u8 = RNG.integers(0, 256, (8192, 64), dtype=np.uint8)[:, :48]
    norm = nbbn.Normalizer(np.zeros(48), np.ones(48), channel_axis=-1, backend="cpu")
    for out in (np.empty((8192, 96))[:, ::2], np.empty(u8.shape, ">f8")):
        assert _peak(norm, u8, out=out) < 1 << 19
        assert_close(out, ref_normalize(u8, np.zeros(48), np.ones(48), channel_axis=-1),
                     rtol=1e-15, atol=1e-15)
    from nbbn._histogram import Histogram

    h = Histogram.empty(3, np.uint8)
    assert _peak(h.add, rgba[..., :3]) < 1 << 18  # (added three times)
    assert h.counts.sum() == 3 * 3 * rgba[..., 0].size
    np.testing.assert_array_equal(h.counts[1],
                                  3 * np.bincount(rgba[..., 1].ravel(), minlength=256))


# ------------------------------------------------- an np.memmap given as an array
def _mapped_rss(path) -> int:
    """Resident bytes of this process's mappings of ``path`` (Linux)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = len(head) >= 6 and head[-1] == str(path)
            elif inside and head and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def test_memmap_pages_released_by_fit_and_transform(tmp_path):
    import os

    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("needs Linux's /proc/self/smaps")
    src = tmp_path / "x.npy"
    x = np.lib.format.open_memmap(src, "w+", np.float32, (4096, 4, 256))  # 16 MiB
    x[...] = RNG.standard_normal(x.shape, dtype=np.float32)
    x.flush()
    del x
    x = np.load(src, mmap_mode="r")
    rs = nbbn.fit(x, 1, batch_size=256, progress=False)
    assert _mapped_rss(src) < x.nbytes // 4  # (every page was touched; 16 MiB before)
    ref = ref_stats(np.asarray(x), 1)
    assert_close(rs.mean, ref.mean, rtol=1e-6, atol=1e-6)
    dst = tmp_path / "y.npy"
    out = np.lib.format.open_memmap(dst, "w+", np.float32, x.shape)
    nbbn.transform(x, rs, out, batch_size=256, progress=False)
    assert _mapped_rss(dst) < out.nbytes // 4
    out.flush()
    want = np.asarray(rs.to_normalizer()(np.asarray(x)))
    np.testing.assert_array_equal(np.load(dst), want)  # (nothing written was lost)
    np.testing.assert_array_equal(out, want)


def test_memmap_release_skips_copy_on_write(tmp_path):
    from nbbn._pages import releaser

    path = tmp_path / "c.npy"
    np.save(path, np.arange(4096 * 4, dtype=np.float64).reshape(-1, 4))
    cow = np.load(path, mmap_mode="c")
    cow[:] = -1.0  # private changes: releasing the pages would lose them
    assert releaser(cow, cow[:2048]) is None
    assert releaser(np.load(path, mmap_mode="r")[:, ::2], np.load(path)[:, ::2]) is None
    assert releaser(np.zeros(8), np.zeros(8)) is None
    ro = np.load(path, mmap_mode="r")
    release = releaser(ro, ro[:2048])
    assert release is not None
    release()
    np.testing.assert_array_equal(ro[:3], np.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize("axis", [0, -1])
def test_reversed_single_row(axis, backend):
    # a (1, 4) row of a reversed array keeps a negative stride on its length-1 axis,
    # which numpy calls C-contiguous: the CUDA backend's device copy kept it and refused
    # the array as "a negative or zero row stride"
    x = np.arange(8.0).reshape(2, 4)[::-1][:1]
    assert x.strides[0] < 0
    rs = nbbn.RunningStats(axis, backend=backend).update(x)
    np.testing.assert_array_equal(rs.mean, x.mean(axis=1 - axis % 2))
    norm = nbbn.Normalizer(np.zeros(x.shape[axis]), np.ones(x.shape[axis]), eps=0.0,
                           channel_axis=axis, backend=backend)
    np.testing.assert_array_equal(norm(x), x)
    one = np.arange(8.0).reshape(2, 4)[::-1, ::-1][:1, :1]
    assert nbbn.RunningStats(-1, backend=backend).update(one).mean.tolist() == [7.0]


def test_permuted_inputs_take_no_slabs_where_a_view_streams(monkeypatch):
    """A torch channels_last layout read with channel_axis=1 into a C-ordered out= keeps
    its channels-first view (the permuted route would write the output through slabs,
    25-30% slower, found in review); a new output or a matching out= takes the
    permuted route. No case goes through slabs."""
    from nbbn.backends import cpu

    x = RNG.standard_normal((4, 8, 8, 3)).astype(np.float32).transpose(0, 3, 1, 2)
    norm = nbbn.Normalizer([0.5, -1.0, 2.0], [1.0, 4.0, 0.25], channel_axis=1, backend="cpu")
    want = ref_normalize(x, np.array([0.5, -1.0, 2.0]), np.array([1.0, 4.0, 0.25]),
                         eps=norm.eps, channel_axis=1)

    def no_slabs(*args, **kwargs):
        raise AssertionError("written through slabs")

    monkeypatch.setattr(cpu, "_affine_slabs", no_slabs)
    for out in (np.empty(x.shape, np.float32), np.empty_like(x), None):
        y = norm(x, out=out)
        assert_ulps(y, want, ulps=1.0)


def test_permuted_inputs_into_outs_with_no_view_read_the_input_in_memory_order(monkeypatch):
    """Where the output has an (O, C, I) view in neither order (Fortran, byte-swapped),
    the slabs read the input in memory order, not through its view with gaps (3-22x
    slower, found in review)."""
    from nbbn.backends import cpu

    x = RNG.standard_normal((4, 8, 8, 3)).astype(np.float32).transpose(0, 3, 1, 2)
    norm = nbbn.Normalizer([0.5, -1.0, 2.0], [1.0, 4.0, 0.25], channel_axis=1, backend="cpu")
    want = ref_normalize(x, np.array([0.5, -1.0, 2.0]), np.array([1.0, 4.0, 0.25]),
                         eps=norm.eps, channel_axis=1)
    seen = []
    slabs = cpu._affine_slabs

    def spy(can, *args, **kwargs):
        seen.append(can.array.flags.c_contiguous)
        return slabs(can, *args, **kwargs)

    monkeypatch.setattr(cpu, "_affine_slabs", spy)
    for out in (np.empty(x.shape, np.float32, order="F"), np.empty(x.shape, ">f4")):
        y = norm(x, out=out)
        assert_ulps(y, want, ulps=1.0)
    assert seen == [True, True]


# ------------------------------------------------- edges found by mutation testing
@pytest.mark.parametrize("order", ["C", "F"])
def test_big_endian_tables(order):
    x = np.asarray(np.arange(12.0).reshape(4, 3), order=order)
    be = x.astype(">f8")
    np.testing.assert_array_equal(nbbn.channel_stats(be, -1).mean, x.mean(0))
    norm = nbbn.Normalizer(np.zeros(3), np.full(3, 4.0), eps=0.0)
    np.testing.assert_array_equal(norm(be), x / 2)


def test_a_strided_big_endian_vector_of_channels():
    x = np.arange(6, dtype=">f8")[::2]
    norm = nbbn.Normalizer(np.zeros(3), np.full(3, 4.0), eps=0.0, channel_axis=0)
    np.testing.assert_array_equal(norm(x), [0.0, 1.0, 2.0])


def test_slabs_are_as_big_as_the_bound_allows():
    from nbbn._layout import slab_index

    assert len(list(slab_index((2, 4, 3), 2, 1, limit=7))) == 4  # 2 rows x 3 per slab


def test_memmap_release_refuses_a_part_outside_the_map(tmp_path):
    """``releaser`` gives a release only for bytes inside the array's own mapping: a
    part that lies elsewhere (another array) gets None, not an madvise of addresses
    outside the map."""
    from nbbn._pages import releaser

    path = tmp_path / "r.npy"
    np.save(path, np.arange(4096 * 4, dtype=np.float64).reshape(-1, 4))
    ro = np.load(path, mmap_mode="r")
    assert releaser(ro, np.zeros(2048)) is None
