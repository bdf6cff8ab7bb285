"""The explicit-SIMD kernels (nbbn/backends/cpu_simd.py) against exact references:
the uint8 block sums, and the channels-last float32 chunk kernel through the public API.

Runs where numba compiles for AVX-512BW or AVX2 (``cpu_simd.SIMD_LEVEL``); CI also runs
it, with the uint8/float16/float32 numerics tests, under ``NUMBA_CPU_NAME=haswell`` (the
AVX2 code, when the host can run it) and ``NUMBA_CPU_NAME=generic`` (the portable
loops). The level detection itself is tested on any host.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from reference import assert_stats, ref_stats, stats_rtol

import nbbn
from nbbn.backends import cpu_simd, cpu_stats

needs_simd = pytest.mark.skipif(not cpu_simd.HAVE_SIMD, reason="numba targets no AVX2/AVX-512")


# host feature strings as numba passes them to LLVM (every feature named, + or -)
AVX512_HOST = "+avx,+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512vnni"
AVX2_HOST = "+avx,+avx2,+fma,+f16c,-avx512f,-avx512bw,-avx512vnni"
NO_AVX_HOST = "-avx,-avx2,+fma,+f16c,-avx512f,-avx512bw"  # NUMBA_ENABLE_AVX=0 on AVX-512


@pytest.mark.parametrize("name,features,host,level", [
    (None, "+avx2,+fma,+f16c,+avx512f,+avx512bw", AVX2_HOST, "avx512"),
    (None, "+avx2,+fma,+f16c,-avx512f", AVX512_HOST, "avx2"),
    (None, "+avx2,+f16c", None, "none"),  # no FMA: the float kernel's fma would be a libm call
    (None, "+avx2,+fma", None, "none"),  # no F16C: float16 conversions would be libcalls
    # without NUMBA_CPU_FEATURES numba passes the host's features whatever the CPU name:
    # AVX-512 code for "haswell" on an AVX-512 host, none for "skylake-avx512" on an AVX2
    # host (the name's level made LLVM abort on an AVX-512 intrinsic)
    ("haswell", None, AVX512_HOST, "avx512"),
    ("skylake-avx512", None, AVX2_HOST, "avx2"),
    (None, None, AVX512_HOST, "avx512"),
    (None, None, NO_AVX_HOST, "none"),  # NUMBA_ENABLE_AVX=0 (and numba's default on some VMs)
    # entries apply in order, and removing a feature removes those that need it
    (None, "+avx2,+fma,+f16c,-avx2", None, "none"),
    (None, None, AVX512_HOST + ",-avx512f", "avx2"),
    (None, None, AVX512_HOST + ",-avx", "none"),
    (None, "-avx2,+avx2,+fma,+f16c", None, "avx2"),
    # with no features at all (NUMBA_CPU_FEATURES="", or "generic"): the name's defaults
    ("znver3", "", None, "avx2"),
    ("skylake-avx512", "", None, "avx512"),
    ("generic", "", None, "none"),
    ("neoverse-v1", "", None, "none"),
])
def test_level_follows_numba_target(name, features, host, level):
    assert cpu_simd.target_level(name, features, host) == level


@pytest.mark.parametrize("env, level, update", [
    ({"NUMBA_ENABLE_AVX": "0"}, "none", True),
    ({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx2,+fma,+f16c"}, "avx2", True),
    ({"NUMBA_CPU_NAME": "generic"}, "none", False),
])
def test_level_of_a_numba_environment(env, level, update):
    """numba's own reading of the environment (a subprocess): NUMBA_ENABLE_AVX=0 gives
    the portable loops (it reported the host's AVX-512, and LLVM aborted on the first
    uint8 update), and a uint8 update then runs. (Under the generic target the level
    alone: its update built and ran the portable kernels that NUMBA_ENABLE_AVX=0's
    update runs too, 15 s of a slow CI host.)"""
    code = ("import numpy as np, nbbn; from nbbn.backends import cpu_simd as s; "
            "x = np.arange(3000, dtype=np.uint8).reshape(-1, 3); "
            + ("m = nbbn.RunningStats(-1).update(x).mean; "
               "assert np.allclose(m, x.mean(0), rtol=1e-15, atol=0), m; " if update else "")
            + "print(s.SIMD_LEVEL)")
    # (the target of this run, e.g. CI's AVX2 pass, is not inherited: only ``env``)
    base = {k: v for k, v in os.environ.items()
            if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_ENABLE_AVX")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**base, "NBBN_SIMD": "auto", **env}, check=True)
    assert out.stdout.split() == [level], out.stderr


def test_target_cpu_name_and_the_zen2_subtraction():
    assert cpu_simd.target_cpu_name("haswell") == "haswell"
    host = cpu_simd.target_cpu_name(None)
    assert host == cpu_simd.target_cpu_name("host") and isinstance(host, str) and host
    want = cpu_simd.target_cpu_name(getattr(numba.config, "CPU_NAME", None)) in {
        "znver1", "znver2"}
    assert cpu_simd.CL_SUB == want


def test_l1_prefetch_and_f32_head_by_level_and_target():
    # both on at the AVX2 level and on non-AMD AVX-512 targets; off on Zen 4/5's
    # AVX-512 (measured there without them) and with the portable loops
    zen = cpu_simd.target_cpu_name(getattr(numba.config, "CPU_NAME", None)).startswith("znver")
    level = cpu_simd.SIMD_LEVEL
    on = level == "avx2" or (level == "avx512" and not zen)
    assert cpu_simd.F32_HEAD == on
    assert cpu_simd.L1_AHEAD == ((1536 if level == "avx2" else 3072) if on else 0)
    # the affine kernels' prefetch: off on AMD's Zen hardware whatever the target
    zen = cpu_simd.target_cpu_name("host").startswith("znver")
    assert cpu_simd.AFFINE_L1_AHEAD == (0 if zen else cpu_simd.L1_AHEAD)


def _prefetch_everywhere(a):
    """prefetch_ahead from every element of ``a``, a whole array past its end, and none."""
    for i in range(a.size + 2):
        cpu_simd.prefetch_ahead(a, i, 64, 1536)
    cpu_simd.prefetch_ahead(a, a.size + (1 << 20), a.size, 1536)
    cpu_simd.prefetch_ahead(a, 0, 0, 1536)
    cpu_simd.prefetch_line(a, a.size + (1 << 20))  # a hint: cannot fault, reads nothing


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])  # uint16: float16 bits
def test_prefetch_ahead_at_the_end_of_strided_and_empty_arrays(rng, dtype):
    # the affine kernels' L1 prefetch: from every position of a contiguous array and
    # of a strided one (not prefetched), and past the end, it never faults and leaves
    # the array as it was
    base = rng.uniform(0, 100, 4099).astype(dtype)
    keep = base.copy()
    # (with the prefetch on, 1536 bytes ahead, as on hosts that use it, whatever this one)
    everywhere = numba.njit(_prefetch_everywhere)
    for a in (base, base[::3], base[:0], base[4000:]):
        everywhere(a)
    np.testing.assert_array_equal(base, keep)


def _numba_target_level() -> str:
    """The SIMD level of numba's target in this process (without ``NBBN_SIMD``)."""
    from numba.core import config

    return cpu_simd.target_level(getattr(config, "CPU_NAME", None),
                                 getattr(config, "CPU_FEATURES", None))


@pytest.mark.parametrize("none, avx2, top", [
    ("none", "avx2", "avx512"),
    (" NONE ", "AVX2", "  "),  # case and spaces ignored; blank: auto
])
def test_nbbn_simd_caps_the_level(monkeypatch, none, avx2, top):
    host = _numba_target_level()
    monkeypatch.setenv("NBBN_SIMD", none)
    assert cpu_simd.simd_level() == "none"
    monkeypatch.setenv("NBBN_SIMD", avx2)
    assert cpu_simd.simd_level() == ("avx2" if host != "none" else "none")
    monkeypatch.setenv("NBBN_SIMD", top)
    assert cpu_simd.simd_level() == host
    monkeypatch.setenv("NBBN_SIMD", "sse9")
    with pytest.raises(ValueError, match="NBBN_SIMD"):
        cpu_simd.simd_level()


def test_kernels_named_by_level():
    """Each level's kernels have cache entries of their own."""
    from nbbn.backends._jit import SOURCE_TAG

    name = cpu_stats.stats_channels_first.py_func.__name__
    assert name.endswith(f"_{cpu_simd.SIMD_LEVEL}_{SOURCE_TAG}")
    # the kernels not built per level still decode float16 by HAVE_SIMD: the portable
    # build has a cache entry of its own (an NBBN_SIMD=none run loaded the F16C build)
    slow = cpu_stats._block_slow.py_func.__name__
    tag = "" if cpu_simd.HAVE_SIMD else "_portable"
    assert slow == f"_block_slow{tag}_{SOURCE_TAG}", slow


@numba.njit
def _sums(r):
    return cpu_simd.u8_sums(r)


def _exact(x):
    w = x.astype(np.int64)
    return int(w.sum()), int((w * w).sum()), int(w.min()), int(w.max())


# int8 takes the same sums, its bytes read as uint8 v + 128 and the results shifted back
@needs_simd
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("n", [1, 2, 63, 64, 127, 128, 129, 1000, 65536, 65536 + 77])
def test_u8_sums_exact(rng, n, dtype):
    x = rng.integers(0, 256, n, dtype=np.uint8).view(dtype)
    assert tuple(int(v) for v in _sums(x)) == _exact(x)


@needs_simd
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_u8_sums_extremes_at_the_limit(dtype):
    # MAX_BYTES of the top value: the int32 lanes of the squares are as full as they may
    # get (int8: 127 is read as 255; and -128, read as 0, for its own extreme)
    info = np.iinfo(dtype)
    for top, other in ((info.max, info.min), (info.min, info.max)):
        x = np.full(cpu_simd.MAX_BYTES, top, dtype)
        x[12345] = other
        assert tuple(int(v) for v in _sums(x)) == _exact(x)


@needs_simd
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_u8_sums_strided_and_offset(rng, dtype):
    x = rng.integers(0, 256, 70001, dtype=np.uint8).view(dtype)
    for view in (x[1:], x[::2], x[::-1], x[3:-5]):
        assert tuple(int(v) for v in _sums(view)) == _exact(view)


@needs_simd
def test_uint8_rows_use_the_wide_block():
    assert cpu_stats.row_block(np.dtype(np.uint8)) == cpu_stats.ROW_BLOCK_U8
    assert cpu_stats.row_block(np.dtype(np.int8)) == cpu_stats.ROW_BLOCK


def test_channel_stats_uint8_long_rows(rng):
    x = rng.integers(0, 256, (3, 4, cpu_stats.ROW_BLOCK_U8 + 999), dtype=np.uint8)
    x[1, 2, 5] = 0
    rs = nbbn.channel_stats(x, 1, backend="cpu")
    assert_stats(rs, ref_stats(x, 1), 1e-12)


def _rows_per_tile(nchan):
    """What ``cl_simd`` should answer for float32 (see its docstring)."""
    lanes = cpu_simd.CL_LANES
    padded = -(-nchan // lanes) * lanes
    if not cpu_simd.HAVE_SIMD or nchan > cpu_stats.CL_SIMD_MAX_CHANNELS:
        return 0
    if nchan % lanes == 0:
        return 1
    masked = nchan >= lanes and 4 * nchan >= 3 * padded
    k = lanes // math.gcd(nchan, lanes)
    tiles = k * nchan <= cpu_stats.CL_TILE_MAX
    if masked and (cpu_simd.SIMD_LEVEL == "avx512" or not tiles):
        return 1
    return k if tiles else 0


# Channel counts: one wide chunk, wide chunks plus single vectors, single vectors only,
# counts that end in a masked vector (24 with AVX-512; 30, 100, 301; AVX2 has 8 lanes),
# and counts read as tiles of k rows (17: one lane of a second vector; 13, 3, 5, 6: no
# whole vector; 2 * 8 * 3 + 37 rows: the last tile partial); 131 (k * C past
# CL_TILE_MAX on AVX-512) keeps the tile kernel.
@pytest.mark.parametrize("nchan", [16, 48, 64, 80, 256, 24, 30, 100, 301, 17, 13, 3, 5, 6,
                                   131])
def test_channels_last_float32_chunks(rng, nchan):
    assert cpu_stats.cl_simd(np.dtype(np.float32), nchan) == _rows_per_tile(nchan)
    m = 3 * cpu_simd.CL_ROWS + 37  # several row groups, a partial last one
    x = (rng.standard_normal((m, nchan)) * rng.uniform(0.1, 10, nchan)
         + rng.uniform(-100, 100, nchan)).astype(np.float32)
    x[:, 1] = 7.25  # a constant channel: var exactly 0
    x[:, 2] = 1e4 + x[:, 2] / 1e2  # mean = 1e4 x std: the shift must hold it
    x[:, -1] = -3.5  # the last channel (a masked vector's last lane) constant
    x[:, -2] = 1e5 + x[:, -2] / 1e3
    rs = nbbn.channel_stats(x, -1, backend="cpu")
    assert_stats(rs, ref_stats(x, -1), stats_rtol(np.float32))
    assert rs.var[1] == 0.0 and rs.var[-1] == 0.0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_channels_last_past_the_chunk_kernel(rng, dtype):
    # Past CL_SIMD_MAX_CHANNELS float32 and float16 tables take the tile kernel: the
    # chunk kernel's row groups would not stay in L2. Both sides of the bound, a NaN
    # in each, left out.
    top = cpu_stats.CL_SIMD_MAX_CHANNELS
    for nchan in (top, top + cpu_simd.CL_LANES):
        expected = 1 if cpu_simd.HAVE_SIMD and nchan <= top else 0
        assert cpu_stats.cl_simd(np.dtype(dtype), nchan) == expected
        x = (rng.standard_normal((70, nchan)) * 3 + 50).astype(dtype)
        x[5, 7] = np.nan
        rs = nbbn.channel_stats(x, -1, backend="cpu", nan_policy="omit")
        assert_stats(rs, ref_stats(x, -1, nan_policy="omit"), stats_rtol(dtype))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_channels_last_float32_masked_vector_nan_inf(rng, nan_policy):
    # NaN and inf in the lanes of the masked last vector, the last row of the array
    # included (its masked load must not read past the end)
    x = rng.standard_normal((5000, 30)).astype(np.float32)
    x[17, 29] = np.nan
    x[-1, 28] = np.inf
    x[-1, 29] = -7.0
    base = np.empty(x.size + 1, np.float32)[1:].reshape(x.shape)  # unaligned, ends at
    base[...] = x  # the end of its allocation
    rs = nbbn.channel_stats(base, -1, backend="cpu", nan_policy=nan_policy)
    assert_stats(rs, ref_stats(x, -1, nan_policy=nan_policy), stats_rtol(np.float32))


def test_channels_last_float32_many_blocks_and_offset_view(rng):
    # More rows than one block (CL_BLOCK elements), in several updates, from a view whose
    # data starts 4 bytes past an allocation: the vector loads are unaligned.
    nchan = 80
    rows = cpu_stats.CL_BLOCK // nchan * 2 + 300
    base = rng.standard_normal(rows * nchan + 1).astype(np.float32)
    x = base[1:].reshape(rows, nchan)
    rs = nbbn.RunningStats(channel_axis=-1, backend="cpu")
    rs.update(x[:1000]).update(x[1000:])
    assert_stats(rs, ref_stats(x, -1), stats_rtol(np.float32))


@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_channels_last_float32_nan_inf(rng, nan_policy):
    nchan = 64
    x = rng.standard_normal((700, nchan)).astype(np.float32)
    x[5, 3] = np.nan
    x[600, 3] = np.nan
    x[10, 20] = np.inf
    x[11, 21] = -np.inf
    x[::7, 40] = np.nan
    rs = nbbn.channel_stats(x, -1, nan_policy=nan_policy, backend="cpu")
    assert_stats(rs, ref_stats(x, -1, nan_policy), stats_rtol(np.float32))


# Channels-last uint8: periods of 1 (C = 1, 4, 64), 3 (C = 3, 48), 5 and 125 vectors,
# and C = 1021 whose period (1021 vectors) the SIMD kernel does not take. (C = 1000 and
# 1021 are read by cpu_byte_tables' row kernel now: the routes, tests/test_byte_tables.py.)
# int8 takes the same kernel, each byte read as uint8 v + 128 (its top bit flipped).
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("nchan", [1, 3, 4, 5, 48, 64, 1000, 1021])
def test_channels_last_uint8_periods(rng, nchan, dtype):
    assert cpu_stats.u8_cl_simd(np.dtype(dtype), nchan) == (
        cpu_simd.HAVE_SIMD and nchan != 1021)
    info = np.iinfo(dtype)
    rows = cpu_stats.U8CL_BLOCK // nchan * 2 + 333  # two blocks and a partial one
    x = rng.integers(info.min, info.max + 1, (rows, nchan), dtype=dtype)
    x[: rows // 3, 0] = info.max  # a full block of the top value: the largest lane sums
    x[rows // 2, -1] = info.min
    if nchan > 1:
        x[:, 1] = info.min  # a constant channel: variance exactly 0
    if nchan > 3:
        x[:, 2] = info.max  # ... and one of the top value: its minimum too
    rs = nbbn.channel_stats(x, -1, backend="cpu")
    assert_stats(rs, ref_stats(x, -1), 1e-12)


def test_channels_last_uint8_images_in_updates(rng):
    # HWC images, as PIL and OpenCV produce them, streamed in batches of odd sizes.
    x = rng.integers(0, 256, (7, 33, 35, 3), dtype=np.uint8)
    x[2, :, :, 1] = 17  # one image with a constant channel
    rs = nbbn.RunningStats(channel_axis=-1, backend="cpu")
    rs.update(x[:2]).update(x[2:3]).update(x[3:])
    assert_stats(rs, ref_stats(x, -1), 1e-12)


# float16 channels-last takes the chunk kernel too (through F16C, groups of
# CL_GROUP_BYTES by its own item size). One array covers wide chunks and single vectors,
# several row groups, a constant channel, a mean far from the shift (the retry), a poor
# first-row shift, and NaN/inf (the exact redo), in two updates and in one call.
@pytest.mark.parametrize("nchan", [48, 80, 12, 10])
def test_channels_last_float16_chunks(rng, nchan):
    lanes = cpu_simd.CL_LANES
    k = lanes // math.gcd(nchan, lanes)
    assert cpu_stats.cl_simd(np.dtype(np.float16), nchan) == (k if cpu_simd.HAVE_SIMD else 0)
    m = max(2 * cpu_simd.CL_ROWS, 256) + 37  # row 200 below
    x = (rng.standard_normal((m, nchan)) * rng.uniform(0.1, 10, nchan)
         + rng.uniform(-100, 100, nchan)).astype(np.float16)
    x[:, 1] = 7.25  # a constant channel: var exactly 0
    x[:, 2] = 1e3 + x[:, 2] / 1e2  # mean >> std: the shift must hold it
    x[:50, 3] = -60000  # the first rows far from the rest: K (the first row) is poor
    x[7, 5] = np.nan
    x[9, 6] = np.inf
    x[[3, 200], 7] = [np.inf, -np.inf]
    rs = nbbn.RunningStats(channel_axis=-1, backend="cpu")
    rs.update(x[:101]).update(x[101:])
    assert_stats(rs, ref_stats(x, -1), stats_rtol(np.float16))
    assert rs.var[1] == 0.0
    one = nbbn.channel_stats(x, -1, nan_policy="omit", backend="cpu")
    assert_stats(one, ref_stats(x, -1, "omit"), stats_rtol(np.float16))


def test_channels_last_float16_rgb_tiles(rng):
    # HWC float16 images (C = 3): tiles of k rows through the chunk kernel, a height
    # that leaves the last tile partial, one channel far from its shift, one constant
    x = (rng.standard_normal((4, 37, 29, 3)) * [1.0, 0.01, 3.0] + [0.5, 300.0, 0.0]).astype(
        np.float16)
    x[..., 2] = -2.5
    rs = nbbn.RunningStats(channel_axis=-1, backend="cpu")
    rs.update(x[:1]).update(x[1:])
    assert_stats(rs, ref_stats(x, -1), stats_rtol(np.float16))
    assert rs.var[2] == 0.0


def test_channels_last_float32_wide_rows_many_blocks(rng):
    # C = 1024: blocks of CL_BLOCK_ROWS rows (more than CL_BLOCK elements), two of them
    # and a partial one, each merged into the running statistics; groups of 32 rows.
    nchan = 1024
    rows = 2 * cpu_stats.CL_BLOCK_ROWS + 301
    x = (rng.standard_normal((rows, nchan)) * 3 + rng.uniform(-50, 50, nchan)).astype(np.float32)
    x[:, 5] = 1e4 + x[:, 5] / 1e2  # mean >> std
    rs = nbbn.RunningStats(channel_axis=-1, backend="cpu")
    rs.update(x[:777]).update(x[777:])
    assert_stats(rs, ref_stats(x, -1), stats_rtol(np.float32))

# --- channels-last uint8, the kernels themselves (issue 11): whole-pixel vectors and
# periods, against exact int64 references by byte position
@pytest.mark.parametrize("name,features,host,vnni", [
    (None, "+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512vnni", None, True),
    (None, "+avx2,+fma,+f16c,+avx512f,+avx512bw", None, False),
    (None, "+avx2,+fma,+f16c,+avxvnni", None, False),  # the level is avx2: no 512-bit kernel
    (None, None, AVX512_HOST, True),
    (None, None, AVX512_HOST + ",-avx512f", False),
    # the host's features rule over the name: no VNNI on a host without it
    ("icelake-server", None, AVX512_HOST.replace("+avx512vnni", "-avx512vnni"), False),
    ("znver4", "", None, True),
    ("icelake-server", "", None, True),
    ("skylake-avx512", "", None, False),
    ("znver3", "", None, False),
    ("generic", "", None, False),
])
def test_vnni_follows_numba_target(name, features, host, vnni):
    assert cpu_simd.target_vnni(name, features, host) == vnni


@numba.njit
def _u8_pass(arr, start, nper, step, keep, out):
    cpu_simd.u8_cl_pass(arr, start, nper, step, keep, 0, out)


@numba.njit
def _u8_pass_vnni(arr, start, nper, step, keep, out):
    cpu_simd.u8_cl_pass_vnni(arr, start, nper, step, keep, 0, out)


def _u8_pass_reference(x, start, nper, step, keep, width):
    """The results of a pass over vectors of ``width`` bytes, in the same layout (positions
    from ``width`` to 64 of each section: zeros)."""
    vecs = np.array([x[start + j * step: start + j * step + width] for j in range(nper)],
                    np.uint8).reshape(nper, width)
    w = vecs.astype(np.int64)
    w[:, keep:] *= 0  # the sums leave out positions >= keep; min/max take them
    lo = vecs.min(0) if nper else np.full(width, 255)
    hi = vecs.max(0) if nper else np.zeros(width)
    out = np.zeros((4, 64), np.int64)
    out[:, :width] = [lo, hi, w.sum(0), (w * w).sum(0)]
    return out.reshape(-1)


def _u8_pass_cases(width):  # (start, nper, step, keep): contiguous, whole pixels, periods
    return [
        (0, 0, width, width), (0, 1, width, width), (5, 3, width, width),
        (0, 4, width, width), (3, 5, width, width),  # VNNI groups of 4 and the rest
        (0, 255, width, width), (1, 256, width, width), (0, 257, width, width),
        (7, 515, width, width),  # the 16-bit sums flushed every 256 vectors
        (0, 37, width - 1, width - 1), (2, 41, width - 4, width - 4),
        (1, 10, width - 10, width - 10), (64, 7, 3 * width, width), (11, 6, 5 * width, width),
    ]


def _u8_kernel(vnni):
    if vnni and not cpu_simd.HAVE_VNNI:
        pytest.skip("numba targets no AVX-512 VNNI")
    return (_u8_pass_vnni, 64) if vnni else (_u8_pass, cpu_simd.U8CL_VEC)


def _sections(out, width):
    return out.reshape(4, 64)[:, :width]


@needs_simd
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("vnni", [False, True])
def test_u8_cl_pass_exact(rng, vnni, signed):
    kernel, width = _u8_kernel(vnni)
    x = rng.integers(0, 256, 40000, dtype=np.uint8)
    out = np.empty(cpu_simd.U8CL_LANES, np.int64)
    for start, nper, step, keep in _u8_pass_cases(width):
        # int8 input: the results of its bytes with the top bit flipped (v + 128)
        kernel((x ^ 0x80).view(np.int8) if signed else x, start, nper, step, keep, out)
        ref = _u8_pass_reference(x, start, nper, step, keep, width)
        np.testing.assert_array_equal(_sections(out, width), _sections(ref, width),
                                      err_msg=f"{start, nper, step, keep}")


@needs_simd
@pytest.mark.parametrize("vnni", [False, True])
def test_u8_cl_pass_largest_sums(vnni):
    # U8CL_MAX_ITERATIONS vectors of 255s (one 0): the 16-bit sums flushed at their
    # limit, the 32-bit squares as full as they may get
    kernel, width = _u8_kernel(vnni)
    n = cpu_simd.U8CL_MAX_ITERATIONS
    x = np.full(width * n, 255, np.uint8)
    x[width * 1000 + 5] = 0
    out = np.empty(cpu_simd.U8CL_LANES, np.int64)
    kernel(x, 0, n, width, width, out)
    ref = _u8_pass_reference(x, 0, n, width, width, width)
    np.testing.assert_array_equal(_sections(out, width), _sections(ref, width))
    assert out[5] == 0 and out[6] == 255 and out[64 + 5] == 255


def test_uint8_hwc_geometry():
    vec = cpu_simd.U8CL_VEC
    for nchan in (1, 2, 3, 4, 5, 7, 11, 16):
        passes, step, rpb, period = cpu_stats.u8_cl_geometry(nchan)
        assert (passes, step % nchan, (rpb * nchan) % vec) == (1, 0, 0)
        assert vec - nchan < step <= vec
    passes, step, rpb, period = cpu_stats.u8_cl_geometry(24)  # 24 = 8 * 3: a period of 3
    assert (passes, step, period, (rpb * 24) % period) == (3, 3 * vec, 3 * vec, 0)


def test_geometry_planned_in_python_matches_the_kernels():
    """The CPU backend plans channels-last blocks with the geometry functions' plain
    Python (``py_func``: a numba build of them cost every process 0.3-0.6 s at its first
    channels-last batch); the kernels call the compiled ones. Both give the same blocks."""
    for nchan in (*range(1, 70), 96, 127, 192, 255, 784, 1000, 4096, 10000):
        assert cpu_stats.u8_cl_geometry.py_func(nchan) == cpu_stats.u8_cl_geometry(nchan)
        for simd in (0, 1, 2, 4, 8, 16):
            for nrows in (0, 1, 1000, 65537, 1 << 22, 1 << 40):
                args = (nchan, simd, nrows)
                assert (cpu_stats.channels_last_geometry.py_func(*args)
                        == cpu_stats.channels_last_geometry(*args)), args


# Channels-last uint8 through the public API: every channel count the whole-pixel pass
# takes (C <= 16) and a few period counts; two blocks and a partial one; data starting
# at each offset from a 64-byte boundary that matters (the kernel aligns its vectors)
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("nchan", [1, 2, 3, 4, 5, 7, 16, 17, 24])
def test_channels_last_uint8_blocks_and_offsets(rng, nchan, dtype):
    rpb = cpu_stats.u8_cl_geometry(nchan)[2]
    rows = 2 * rpb + 77 if nchan in (3, 17) else rpb // 4 + 77  # two blocks: sizes vary
    info = np.iinfo(dtype)
    base = rng.integers(info.min, info.max + 1, rows * nchan + 128, dtype=dtype)
    aligned = (-base.ctypes.data) % 64  # the first aligned byte, one past it, one before
    for start in (aligned, aligned + 1, aligned + 63):
        x = base[start: start + rows * nchan].reshape(rows, nchan)
        x[: rows // 5, 0] = info.max  # the largest lane sums in channel 0
        rs = nbbn.channel_stats(x, -1, backend="cpu")
        assert_stats(rs, ref_stats(x, -1), 1e-12)


@pytest.mark.parametrize("rows", [1, 2, 21, 22, 85, 86, 1000])
def test_channels_last_uint8_short_rows(rng, rows):
    # fewer bytes than a vector, a vector's worth, a few vectors and a tail (C = 3)
    x = rng.integers(0, 256, (rows, 3), dtype=np.uint8)
    rs = nbbn.RunningStats(channel_axis=-1, backend="cpu").update(x[: rows // 2])
    rs.update(x[rows // 2:])
    assert_stats(rs, ref_stats(x, -1), 1e-12)


def test_channels_last_uint8_views(rng):
    # views the channels-last kernel does not take directly: strided rows, reversed
    # channels, a sliced channel range
    x = rng.integers(0, 256, (301, 40, 3), dtype=np.uint8)
    for view in (x[::2], x[:, :, ::-1], x[:, ::3, 1:], x[::-1]):
        rs = nbbn.channel_stats(view, -1, backend="cpu")
        assert_stats(rs, ref_stats(view, -1), 1e-12)


# --------------------------------------------------------------- channels-first float32 head
@numba.njit
def _head_sums(r, k, steps):
    return cpu_simd.f32_shifted_sums(r, k, steps)


@needs_simd
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_f32_shifted_sums_against_float64(rng, dtype):
    # the AVX2-level kernel itself (it compiles at either SIMD level): sums of x - k over
    # whole steps, an unaligned start, values far from k and of both signs
    base = (rng.standard_normal(40 * cpu_simd.F32_STEP + 3) * 50 + 20).astype(dtype)
    x = base[1:]
    bits = x.view(np.uint16) if dtype == "float16" else x
    k = float(np.float32(x[0]))
    steps = x.size // cpu_simd.F32_STEP
    sd, sq, mn, mx = _head_sums(bits, k, steps)
    head = x[: steps * cpu_simd.F32_STEP].astype(np.float64)
    d = head - k  # exact in float64
    assert sd == pytest.approx(d.sum(), rel=1e-14, abs=1e-14 * np.abs(d).sum())
    assert sq == pytest.approx((d * d).sum(), rel=1e-14)
    assert (mn, mx) == (head.min(), head.max())
    assert _head_sums(bits, k, 0)[:2] == (0.0, 0.0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("length", [1, 15, 16, 17, 3136, 8192 + 33])
def test_channels_first_float_rows_head_and_tail(rng, dtype, length):
    # row lengths below, at and above one step of the AVX2 head, and above one block;
    # a strided view (no head: unit stride only), a NaN in the head and one in the tail
    x = (rng.standard_normal((3, 4, length)) * 3 + 100).astype(dtype)
    rs = nbbn.channel_stats(x, 1, backend="cpu")
    assert_stats(rs, ref_stats(x, 1), stats_rtol(np.dtype(dtype)))
    view = np.repeat(x, 2, axis=2)[:, :, ::2]
    assert_stats(nbbn.channel_stats(view, 1, backend="cpu"), ref_stats(view, 1),
                 stats_rtol(np.dtype(dtype)))
    y = x.copy()
    y[0, 1, 0] = np.nan
    y[2, 3, length - 1] = np.nan
    rs = nbbn.channel_stats(y, 1, backend="cpu", nan_policy="omit")
    assert_stats(rs, ref_stats(y, 1, nan_policy="omit"), stats_rtol(np.dtype(dtype)))


# mutation round 6, simd1
@pytest.mark.parametrize("features,level", [
    ("+avx2,+fma,+f16c,+avx512f", "avx2"),  # AVX-512F without BW: the byte kernels need BW
    ("+avx2,+fma,+avx512f,+avx512bw", "none"),  # no F16C: neither level
    (AVX512_HOST + ",-sse4.2", "none"),  # a removal clears what needs it indirectly too
    (AVX2_HOST + ",-sse2", "none"),
])
def test_level_needs_every_feature_and_what_they_need(features, level):
    assert cpu_simd.target_level(None, features, None) == level
    assert cpu_simd.target_level(None, None, features) == level


def _cl_rows_reference(x, tk, nan_omit=False):
    """What the chunk kernel gives for the rows of ``x`` (M, C) float32 with the shifts
    ``tk``: each channel's sum of d = x - k added row by row in float64 (the kernel's
    order: exact, the same roundings), the sum of d * d (to rounding), min, max and
    (``nan_omit``) the count of the values kept."""
    d = x.astype(np.float64) - tk[: x.shape[1]]
    if nan_omit:
        d[np.isnan(x)] = 0.0
    sd = np.zeros(x.shape[1])
    for row in d:
        sd += row
    return sd, (d * d).sum(0), np.nanmin(x, 0), np.nanmax(x, 0), (~np.isnan(x)).sum(0)


@numba.njit
def _cl_rows(xf, nchan, nrows, tk, sd, sq, mn, mx, cn):
    cpu_simd.cl_rows_f32(xf, nchan, 0, nrows, nrows, tk, sd, sq, mn, mx, cn)


def _cl_rows_run(x, runner=None, omit=False):
    """``cl_rows_f32`` (or ``runner``) over the rows of ``x``, its accumulators padded."""
    rows, nchan = x.shape
    pad = nchan + cpu_simd.CL_LANES
    tk = np.zeros(pad)
    tk[:nchan] = x[0]
    sd, sq = np.zeros(pad), np.zeros(pad)
    mn, mx = np.full(pad, np.inf, np.float32), np.full(pad, -np.inf, np.float32)
    cn = np.zeros(pad) if omit else None
    (runner or _cl_rows)(x.reshape(-1), nchan, rows, tk, sd, sq, mn, mx, cn)
    return tk, [a[:nchan] for a in (sd, sq, mn, mx)] + ([cn[:nchan]] if omit else [])


@needs_simd
@pytest.mark.skipif(sys.platform == "win32", reason="a guard page through libc's mprotect")
def test_cl_rows_masked_tail_reads_nothing_past_the_array(rng):
    # the last row of a float32 array whose channels end in a masked vector, placed
    # right before an unreadable page: the masked-off lanes must not be loaded
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    nchan, rows = cpu_simd.CL_LANES + 3, 40
    nbytes = rows * nchan * 4
    npages = -(-nbytes // page)
    buf = mmap.mmap(-1, (npages + 1) * page)
    raw = np.frombuffer(buf, np.uint8)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    guard = raw.ctypes.data + npages * page
    if libc.mprotect(guard, page, 0) != 0:  # PROT_NONE
        pytest.skip(f"mprotect refused a guard page (errno {ctypes.get_errno()})")
    try:
        start = npages * page - nbytes
        x = raw[start: start + nbytes].view(np.float32).reshape(rows, nchan)
        x[...] = rng.standard_normal((rows, nchan)) * 5 + 3
        tk, got = _cl_rows_run(x)
        ref = _cl_rows_reference(x, tk)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-14)
        np.testing.assert_array_equal(got[2:], ref[2:4])
    finally:
        libc.mprotect(guard, page, 3)  # readable and writable again


@needs_simd
@pytest.mark.parametrize("sub", [False, True])
def test_cl_chunk_subtraction_form(rng, monkeypatch, sub):
    # ``CL_SUB`` (Zen 1/2 targets: x - k as a subtraction, not an FMA) is read when a
    # chunk kernel compiles: a fresh one built under each value gives the same sums
    monkeypatch.setattr(cpu_simd, "CL_SUB", sub)
    chunk = cpu_simd._make_cl_chunk(1)

    @numba.njit
    def run(xf, nchan, nrows, tk, sd, sq, mn, mx, cn):
        chunk(xf, nchan, 0, 0, nrows, 0, tk, sd, sq, mn, mx, cn)

    x = (rng.standard_normal((37, cpu_simd.CL_LANES)) * 4 - 20).astype(np.float32)
    tk, got = _cl_rows_run(x, run)
    ref = _cl_rows_reference(x, tk)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-14)
    np.testing.assert_array_equal(got[2:], ref[2:4])


@needs_simd
def test_cl_rows_omit_sums_and_counts(rng):
    # the NaN-omitting chunk kernel itself: a NaN adds 0 to the sums and is not counted
    # (sums left NaN would still give the right statistics, through the caller's exact
    # redo of the channel, at many times the cost); wide chunks, one vector, a masked one
    nchan = cpu_simd.CL_LANES * (cpu_simd.CL_VECTORS + 1) + 3
    x = (rng.standard_normal((50, nchan)) * 2 + 9).astype(np.float32)
    x[3, 0] = x[10, cpu_simd.CL_LANES * cpu_simd.CL_VECTORS] = x[20, nchan - 5] = np.nan
    x[7::5, -1] = np.nan
    tk, got = _cl_rows_run(x, omit=True)
    ref = _cl_rows_reference(x, tk, nan_omit=True)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-14)
    np.testing.assert_array_equal(got[2:4], ref[2:4])
    np.testing.assert_array_equal(got[4], ref[4])


# mutation round 6, simd2
@pytest.mark.parametrize("name", ["x86-64-v4", "cannonlake"])
def test_vnni_off_for_avx512_names_without_it(name):
    # AVX-512 names whose CPUs lack VNNI: with no features given, no vpdpbusd kernel
    assert cpu_simd.target_level(name, "", None) == "avx512"
    assert not cpu_simd.target_vnni(name, "", None)


@needs_simd
@pytest.mark.parametrize("sign", [-1.0, 1.0])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_f32_shifted_sums_one_signed(rng, dtype, sign):
    # values all of one sign: the min and max start from +-inf, not from 0
    x = (sign * (rng.random(3 * cpu_simd.F32_STEP) * 50 + 1)).astype(dtype)
    bits = x.view(np.uint16) if dtype == "float16" else x
    k = float(np.float32(x[1]))
    sd, sq, mn, mx = _head_sums(bits, k, 3)
    d = x.astype(np.float64) - k
    assert (mn, mx) == (x.min(), x.max())
    assert sd == pytest.approx(d.sum(), rel=1e-14, abs=1e-14 * np.abs(d).sum())
    assert sq == pytest.approx((d * d).sum(), rel=1e-14)
