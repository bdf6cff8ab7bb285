"""Inputs built to drive the kernels' less common numerical paths.

The statistics kernels use shifted sums with a shift taken from the running mean or
the block's first value, and redo a block when the shift was far from the block mean
(see ``nbbn/backends/cpu_stats.py``). Random data rarely gets there; these inputs do,
on both layouts, with blocks and partitions large enough to be split.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SIMULATOR
from reference import assert_stats, ref_stats, stats_rtol

import nbbn
from nbbn.backends import cpu_stats


@pytest.fixture(autouse=True)
def _not_on_simulator(request):
    """These inputs are sized to the CPU kernels' blocks (10^5-10^6 values): too large
    for the CUDA simulator; test_cuda.py drives the CUDA kernels' shift paths."""
    if request.node.callspec.params.get("backend") == "cuda" and SIMULATOR:
        pytest.skip("CPU block-sized inputs are too large for the CUDA simulator")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_channels_first_rows_with_far_apart_means(backend, rng, dtype):
    # Each (sample, channel) row sits at its own offset of up to 1e5 with std 1, so the
    # running-mean shift of the next block is ~1e5 std away: the redo path runs.
    n, c, length = 6, 3, cpu_stats.ROW_BLOCK + 1000
    offsets = rng.uniform(-1e5, 1e5, size=(n, c, 1))
    x = (offsets + rng.standard_normal((n, c, length))).astype(dtype)
    rs = nbbn.channel_stats(x, 1, backend=backend)
    assert_stats(rs, ref_stats(x, 1), stats_rtol(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
@pytest.mark.parametrize("nchan", [3, 64, 300])
def test_channels_last_outlier_first_row(backend, rng, dtype, nchan):
    # The first row of every block is an outlier, so the block's first-row shift is
    # thousands of std from its mean; later blocks drift away from the running mean.
    rows_per_block = cpu_stats.CL_BLOCK // nchan + 1
    m = 3 * rows_per_block + 17
    x = rng.standard_normal((m, nchan)) * 3.0 + np.linspace(0, 5e4, m)[:, None]
    x[::rows_per_block] += 1e6
    x = x.astype(dtype)
    rs = nbbn.channel_stats(x, -1, backend=backend)
    assert_stats(rs, ref_stats(x, -1), stats_rtol(dtype))


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16"])
def test_small_integers_extremes_exact(backend, dtype):
    # The integer path sums v and v*v exactly; the extremes of the type over a full
    # block must neither overflow the accumulators nor lose the last bit.
    info = np.iinfo(dtype)
    length = cpu_stats.row_block(np.dtype(dtype)) * 2 + 5
    x = np.empty((2, 2, length), dtype)
    x[:, 0] = info.max
    x[:, 1, ::2] = info.min
    x[:, 1, 1::2] = info.max
    rs = nbbn.channel_stats(x, 1, backend=backend)
    assert_stats(rs, ref_stats(x, 1), 1e-12)
    assert rs.var[0] == 0.0
