"""The affine kernels called chunk by chunk, as nbbn's threads call them: every chunk
count writes each output element exactly once, with the bits of one chunk; the builds
that count infinities count each once; the build with the L1 prefetch and the one
without give the same bits (the host decides which one runs, ``cpu_simd``)."""

from __future__ import annotations

import numpy as np
import pytest

from nbbn.backends import cpu
from nbbn.backends import cpu_normalize as kn
from nbbn.backends._jit import tagged

# (O, C, L): rows of one element, 7 x 7 maps, rows of a prefetch span and a bit, rows cut
# into several units (ROW_BLOCK), one row
SHAPES = [(3, 5, 1), (4, 6, 49), (2, 3, kn.PREFETCH_SPAN + 33), (1, 2, kn.ROW_BLOCK * 2 + 5),
          (1, 1, 3)]


def _inputs(rng, shape, dtype):
    x = (rng.standard_normal(shape) * 30 + 7).astype(dtype)
    c = shape[1]
    a, s, b = rng.uniform(-5, 5, c), rng.uniform(0.1, 3, c), rng.uniform(-1, 1, c)
    ro = x.view()
    ro.setflags(write=False)
    return ro, a, s, b


def _chunks(kernel, x, a, s, b, nt, out_dtype=np.float32):
    """Each chunk's output (NaN where it wrote nothing) and its count."""
    outs, counts = [], []
    for t in range(nt):
        out = np.full(x.shape, np.nan, out_dtype)
        ninf = np.zeros(nt, np.int64)
        kernel(x, None, a, s, b, out, None, False, t, nt, ninf)
        outs.append(out)
        counts.append(int(ninf[t]))
    return outs, counts


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nt", [1, 2, 3, 7, 40])
def test_channels_first_chunks_cover_every_element_once(rng, shape, nt):
    x, a, s, b = _inputs(rng, shape, np.float32)
    whole = np.empty(x.shape, np.float32)
    kn.affine_channels_first(x, None, a, s, b, whole, None, False, 0, 1, cpu._NO_COUNT)
    expected = ((x.astype(np.float64) - a[:, None]) * s[:, None] + b[:, None]).astype(np.float32)
    np.testing.assert_allclose(whole, expected, rtol=2e-7, atol=1e-30)
    outs, _ = _chunks(kn.affine_channels_first, x, a, s, b, nt)
    written = np.stack([~np.isnan(o) for o in outs])
    np.testing.assert_array_equal(written.sum(0), 1)  # each element by exactly one chunk
    merged = np.where(written, np.stack(outs), 0).sum(0, dtype=np.float32)
    np.testing.assert_array_equal(merged, whole)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nt", [1, 3, 40])
def test_channels_first_counts_each_infinity_once(rng, shape, nt):
    x, a, s, b = _inputs(rng, shape, np.float64)
    x = np.array(x)
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, 9), replace=False)
    flat[picks] = np.where(np.arange(picks.size) % 2, np.inf, -np.inf)
    flat[picks[:1]] = np.nan  # not infinite: not counted
    x.setflags(write=False)
    outs, counts = _chunks(kn.affine_channels_first_inf, x, a, s, b, nt, np.float64)
    assert sum(counts) == picks.size - 1
    written = np.stack([o == o for o in outs]).any(0) | np.isnan(x)  # (NaN in, NaN out)
    assert written.all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_channels_first_with_and_without_the_prefetch(rng, shape, dtype):
    x, a, s, b = _inputs(rng, shape, dtype)
    other = tagged(kn._affine_channels_first, "test_ahead",
                   {"AHEAD": 0 if kn.AHEAD else 1536}, **kn._OPTS)
    half = True if dtype == "float16" else None
    data = x.view(np.uint16) if half else x
    got = []
    for kernel in (kn.affine_channels_first, other):
        out = np.empty(x.shape, np.float32)
        kernel(data, half, a, s, b, out, None, False, 0, 1, cpu._NO_COUNT)
        got.append(out)
    np.testing.assert_array_equal(got[0], got[1])


@pytest.mark.parametrize("nt", [1, 3, 4])
def test_copy_rows_chunks_copy_every_row_once(rng, nt):
    """``copy_rows`` chunk by chunk (rows that the chunks do not divide evenly), from
    rows with gaps into a slab and back out, as the layouts' slabs use it."""
    src = rng.integers(1, 1 << 31, (10, 8), dtype=np.uint32)[::-1, ::2]
    dst = np.zeros((10, 4), np.uint32)
    for t in range(nt):
        kn.copy_rows(src, dst, t, nt)
    np.testing.assert_array_equal(dst, src)
    back = np.zeros((10, 8), np.uint32)
    for t in range(nt):
        kn.copy_rows(dst, back[:, 1::2], t, nt)
    np.testing.assert_array_equal(back[:, 1::2], src)
    assert not back[:, ::2].any()
