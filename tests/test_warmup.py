"""``nbbn warmup`` and the one-line notice of a compilation on the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nbbn._compile_notice import describe


def _nbbn(args, cache_dir):
    return _python(["-m", "nbbn", *args], cache_dir)


def _python(args, cache_dir):
    """A new Python process with ``args`` and its own numba cache folder (None: the
    suite's, as the environment gives it)."""
    env = dict(os.environ) if cache_dir is None else {
        **os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_a_dtype_or_layout_given_twice_is_one_case(capsys):
    """``--dtypes float32,float32 --layouts nhwc,nhwc`` reported "4 cases ready" (and
    warmed the one case four times)."""
    from nbbn.cli import main

    assert main(["warmup", "--dtypes", "float32,float32", "--layouts", "nhwc,NHWC"]) == 0
    out = capsys.readouterr().out
    assert "nbbn warmup: 1 case ready in " in out, out


# A second process's check that a warmup leaves nothing to build: the warmup again (all
# of it loaded from the disk cache the first process filled: no compile notice), then the
# signatures of every nbbn kernel in the process, the workload, and the signatures it
# added (numba records a signature whether it compiles it or loads it from the cache).
# The processes share the suite's kernel cache (the environment's NUMBA_CACHE_DIR, or
# numba's folder beside the sources): a kernel that a test compiled before is loaded,
# and a signature the warmup missed is found all the same. In cold caches of their own
# these tests compiled the int16 and sparse kernels that the rest of the suite compiles
# too (110 s of a slow CI host's 2,000 worker-seconds).
_AFTER_WARMUP = (
    "import gc, sys, numpy as np, nbbn\n"
    "from numba.core.dispatcher import Dispatcher\n"
    "from nbbn._compile_notice import announce_compiles\n"
    "from nbbn.cli import main\n"
    "announce_compiles(sys.stderr)\n"
    "assert main(['warmup', *sys.argv[1:]]) == 0\n"
    "def signatures():\n"
    "    return {(d.py_func.__qualname__, str(s)) for d in gc.get_objects()\n"
    "            if isinstance(d, Dispatcher) and d.py_func.__module__.startswith('nbbn')\n"
    "            for s in d.signatures}\n"
    "before = signatures()\n"
    "{workload}"
    "print('missed:', sorted(signatures() - before))\n"
)


def _after_warmup(workload: str, warmup_args: list[str]):
    """Run ``workload`` in a new process after ``nbbn warmup warmup_args`` in it: the
    process's result, and the kernel signatures the workload added to the warmup's."""
    p = _python(["-c", _AFTER_WARMUP.replace("{workload}", workload), *warmup_args], None)
    missed = [line for line in p.stdout.splitlines() if line.startswith("missed: ")]
    return p, missed[0] if missed else None


def test_warmup_compiles_once_then_loads():
    """``nbbn warmup`` of int16 NCHW and NHWC, then a new process: the warmup again
    loads everything from the disk cache (announces no compile), and a batch of 7x7
    feature maps, channels-last images, a table of few rows, weighted batches and
    RGBA's RGB read in place, then the normalizer of each layout, need no kernel
    signature the warmup did not make."""
    args = ["--dtypes", "int16", "--layouts", "nchw,nhwc"]
    first = _nbbn(["warmup", *args], None)
    assert first.returncode == 0, first.stderr
    assert "2 cases ready" in first.stdout
    workload = (
        "nbbn.RunningStats(1).update(np.ones((64, 256, 7, 7), np.int16))\n"
        "nbbn.RunningStats(-1).update(np.ones((64, 7, 7, 256), np.int16))\n"
        "nbbn.RunningStats(-1).update(np.ones((16, 4096), np.int16))\n"
        # the weighted kernels (dense NCHW, and rows for NHWC and tables), and the
        # merge of a second weighted batch
        "nbbn.RunningStats(1).update(np.ones((6, 3, 5, 5), np.int16), "
        "sample_weight=np.ones(6))\n"
        "w = np.ones(6)\n"
        "nbbn.RunningStats(-1).update(np.ones((6, 5, 5, 3), np.int16), sample_weight=w)"
        ".update(np.ones((6, 5, 5, 3), np.int16), sample_weight=w)\n"
        # RGBA's RGB, read in place: its merge compiled a variant of its own
        "nbbn.RunningStats(-1).update(np.ones((64, 7, 7, 4), np.int16)[..., :3])\n"
        "for axis, shape in ((1, (8, 16, 7, 7)), (-1, (8, 7, 7, 16))):\n"
        "    nbbn.Normalizer(np.zeros(16), np.ones(16), channel_axis=axis)(\n"
        "        np.ones(shape, np.int16))\n")
    p, missed = _after_warmup(workload, args)
    assert p.returncode == 0, p.stderr
    assert "2 cases ready" in p.stdout
    assert "compiling" not in p.stderr  # (the warmup's kernels came from the disk cache)
    assert missed == "missed: []", missed


def test_warmup_refuses_unknown_names(tmp_path):
    p = _nbbn(["warmup", "--dtypes", "complex64"], tmp_path)
    assert p.returncode == 2
    assert "nbbn warmup: error: unknown dtype or layout ['complex64']" in p.stderr


@pytest.mark.parametrize("name,args,words", [
    ("_stats_channels_first_avx2", ("array(float32, 3d, C)", "none"),
     "statistics kernel for ? channels-first input"),
    ("_stats_channels_last_u8_none", (), "statistics kernel for ? channels-last input"),
    ("_stats_channels_first_grouped_avx512_0123abcd", ("array(float32, 3d, C)", "none"),
     "statistics kernel for ? channels-first input with short rows"),
    ("fold", (), "statistics merge"),
    ("fold_portable_0123abcd", (), "statistics merge"),  # (NBBN_SIMD=none: _jit.cached)
    ("_weighted_stats_portable_0123abcd", ("array(int16, 1d, C)",),
     "weighted statistics kernel for ? input"),
    ("chan_merge", (), None),
    ("_csr_parts_weighted_ahead_0123abcd", ("array(int32, 1d, C)",),
     "weighted statistics kernel for sparse CSR input"),
    ("_csr_blocks_0123abcd", ("array(int32, 1d, C)",), "statistics kernel for sparse CSR input"),
    ("_scale_csr_portable_0123abcd", (), "normalizer kernel for sparse input"),
    ("_column_sums_0123abcd", (), None),  # (a helper of the weighted sparse kernels)
])
def test_describe_names_top_level_kernels_only(name, args, words):
    assert describe(name, args) == words


def test_describe_knows_every_kernel_as_built():
    from nbbn.backends import (
        cpu_byte_tables,
        cpu_few_rows,
        cpu_histogram,
        cpu_normalize,
        cpu_scaler,
        cpu_sparse,
        cpu_stats,
        cpu_weighted,
    )

    kernels = [cpu_stats.stats_channels_first, cpu_stats.stats_channels_last,
               cpu_few_rows.stats_few_rows,
               cpu_stats.fold, cpu_weighted._weighted_stats, cpu_byte_tables.stats_byte_rows,
               cpu_normalize.affine_channels_last, cpu_normalize.affine_channels_last_inf,
               *cpu_sparse._csr_parts_builds.values(), *cpu_sparse._csr_blocks_builds.values(),
               cpu_sparse._csr_merge, cpu_sparse._csc_unweighted, cpu_sparse._csc_weighted,
               cpu_sparse._scale_csr, cpu_sparse._falls, cpu_sparse._index_range,
               cpu_scaler._scaler_fitted,
               cpu_histogram.count_levels_rgb, cpu_histogram.count_levels]
    for kernel in kernels:
        assert describe(kernel.py_func.__name__, ()) is not None, kernel.py_func.__name__


def test_kernel_names_carry_the_source_tag():
    """Every cached kernel's name ends with the hash of the kernel sources, so a changed
    helper module (which numba's cache does not check) gets new cache entries."""
    import hashlib
    from pathlib import Path

    from nbbn.backends import _jit, cpu_histogram, cpu_normalize, cpu_stats, cpu_weighted

    here = Path(_jit.__file__).parent
    digest = hashlib.sha1()
    for path in [*sorted(here.glob("*.py")), here.parent / "_merge.py",
                 here.parent / "_policy.py"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert _jit.SOURCE_TAG == digest.hexdigest()[:8]
    kernels = [cpu_stats.fold, cpu_stats.stats_channels_first, cpu_stats._block_slow,
               cpu_normalize.affine_channels_last, cpu_normalize.affine_channels_last_inf,
               cpu_weighted._weighted_stats, cpu_histogram.count_levels]
    for k in kernels:
        assert k.py_func.__name__.endswith("_" + _jit.SOURCE_TAG), k.py_func.__name__
    assert len({k.py_func.__qualname__ for k in kernels}) == len(kernels)


def test_kernels_run_where_numba_cannot_cache(tmp_path):
    """A read-only install without a writable home folder: numba's ``cache=True`` finds no
    folder to write (here: no cache locator at all) and raised on the first kernel, so
    nothing ran. The kernels are built uncached, with one warning, and the compile
    notice does not promise a cache."""
    code = (
        "import warnings, numpy as np\n"
        "from numba.core import caching\n"
        "impl = getattr(caching, 'CacheImpl', None) or caching._CacheImpl\n"
        "impl._locator_classes = []\n"
        "import nbbn\n"
        "from nbbn._compile_notice import announce_compiles\n"
        "announce_compiles()\n"
        # channels-first (N, C, L): its kernels build in a third of the channels-last
        # kernel's time (20 s of a slow CI host)
        "x = np.random.default_rng(0).normal(3.0, 2.0, (6, 3, 10))\n"
        "m, s = x.mean((0, 2))[:, None], x.std((0, 2))[:, None]\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    rs = nbbn.RunningStats(1); rs.update(x)\n"
        "    y = nbbn.Normalizer(rs.mean, rs.var, eps=0.0, channel_axis=1)(x)\n"
        "np.testing.assert_allclose(rs.mean, m[:, 0], rtol=1e-14)\n"
        "np.testing.assert_allclose(y, (x - m) / s, rtol=1e-12, atol=1e-12)\n"
        "print(sum('no writable folder' in str(w.message) for w in caught))\n"
    )
    out = _python(["-c", code], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]
    assert "(not cached: no writable folder)" in out.stderr
    assert "(once; cached)" not in out.stderr


def test_warmup_builds_the_transform_of_scikit_learn(monkeypatch):
    """``nbbn.sklearn``'s transform takes the normalizer build that counts infinities:
    the warmup runs it for floating input (before, the first transform after a float64
    warmup compiled for 2 s), and not for integers (no infinities)."""
    from nbbn.backends import cpu, cpu_normalize
    from nbbn.tools.warmup import warmup

    counted = []
    affine = cpu.affine

    def spy(can, params, out, *, count_inf=False, **kwargs):
        counted.append((can.array.dtype, count_inf))
        return affine(can, params, out, count_inf=count_inf, **kwargs)

    monkeypatch.setattr(cpu, "affine", spy)
    warmup(["float32", "int16"], ["nhwc"])
    assert (np.dtype(np.float32), True) in counted
    assert (np.dtype(np.int16), True) not in counted
    assert cpu_normalize.affine_channels_last_inf.signatures  # built (or loaded)


def test_warmup_of_sparse_matrices_leaves_nothing_to_compile():
    """``--layouts sparse``: after it, a new process needs no kernel signature the warmup
    did not make for float32 CSR matrices by every route their shapes take (partitions,
    with records beyond L2 too, column blocks, ``tocsc()``), weighted and not, CSC
    input, and scikit-learn-style scaling (before it, the first such fit compiled for
    4-6 s per kernel)."""
    pytest.importorskip("scipy.sparse")
    args = ["--dtypes", "float32", "--layouts", "sparse"]
    first = _nbbn(["warmup", *args], None)
    assert first.returncode == 0, first.stderr
    workload = (
        "from scipy import sparse\n"
        "from nbbn.backends import cpu_sparse\n"
        "from nbbn.sklearn import StandardScaler\n"
        "wide = cpu_sparse.L2_BYTES // (cpu_sparse.RECORD * 8) + 1\n"
        "cases = [((1000, 30), 0.3), ((100, 10000), 0.1), ((100, 10000), 0.001),\n"
        "         ((130, wide), 0.5)]\n"
        "for shape, density in cases:\n"
        "    x = sparse.random(*shape, density=density, format='csr', dtype=np.float32,\n"
        "                      random_state=0)\n"
        "    w = np.linspace(0.5, 2.0, shape[0])\n"
        "    print(cpu_sparse._csr_route(*shape, x.nnz))\n"
        "    for batch in (x, x.tocsc()):\n"
        "        nbbn.RunningStats(-1).update(batch).update(batch, sample_weight=w)\n"
        "    StandardScaler(with_mean=False).fit(x).transform(x)\n")
    p, missed = _after_warmup(workload, args)
    assert p.returncode == 0, p.stderr
    routes = [line for line in p.stdout.splitlines() if line in ("parts", "blocks", "csc")]
    assert routes == ["parts", "blocks", "csc", "parts"]  # (the routes taken)
    assert "compiling" not in p.stderr, p.stderr
    assert missed == "missed: []", missed


def _add_one(x):
    return x + 1


def test_a_cache_that_fails_after_it_opened_warns_and_compiles(tmp_path, monkeypatch):
    """A truncated cache entry (EOFError from the index), or a write that fails (a full
    disk, another user's files in a shared folder) raised from the kernel's first call:
    now a warning, once, and the kernel compiled in the process."""
    import warnings

    from numba.core import config

    from nbbn.backends import _jit

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_jit, "cache_failed", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (a cache that works: no warning)
        assert _jit.tagged(_add_one, "cachetest", cache=True)(1) == 2
    indexes = list(tmp_path.rglob("*.nbi"))
    assert indexes
    for path in indexes:
        path.write_bytes(b"")  # truncated
    with pytest.warns(RuntimeWarning, match="could not be read .*EOFError"):
        assert _jit.tagged(_add_one, "cachetest", cache=True)(2) == 3
    monkeypatch.setattr(_jit, "cache_failed", False)
    kernel = _jit.tagged(_add_one, "cachetest_full", cache=True)

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kernel._cache, "_save_overload", full)
    with pytest.warns(RuntimeWarning, match="could not be written .*No space left"):
        assert kernel(3) == 4


def test_two_processes_saving_one_kernels_signatures_keep_both(tmp_path, monkeypatch):
    """numba saves a cache entry by reading the index, taking the first unused data
    file, and writing the index: two processes saving two signatures of one kernel at
    once both took file 1, and the index kept one entry (and could name the other's
    machine code for it). Two cache objects of one index stand for the processes here,
    each stopped after its read of the index until the other has read it too, or 0.5 s
    (``_saving``'s lock keeps the second from reading it before the first has saved)."""
    import threading

    from numba.core import caching, config

    from nbbn.backends import _jit

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "built"))
    built = _jit.tagged(_add_one, "savetest", cache=True)
    assert built(1) == 2 and built(1.5) == 2.5
    entries = list(built.overloads.items())  # (argument types, compile result)
    assert len(entries) == 2
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "shared"))
    savers = [_jit.tagged(_add_one, "savetest", cache=True) for _ in entries]
    both_read = threading.Barrier(2)
    save_index = caching.IndexDataCacheFile._save_index

    def after_both_read(self, overloads):
        try:
            both_read.wait(timeout=0.5)
        except threading.BrokenBarrierError:
            pass
        return save_index(self, overloads)

    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", after_both_read)
    threads = [threading.Thread(target=k._cache.save_overload, args=(args, cres))
               for k, (args, cres) in zip(savers, entries, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", save_index)
    loader = _jit.tagged(_add_one, "savetest", cache=True)
    for args, cres in entries:
        loaded = loader._cache.load_overload(args, loader.targetctx)
        assert loaded is not None, args
        assert loaded.signature == cres.signature


def test_a_cache_folder_without_locks_still_saves(tmp_path, monkeypatch):
    """Where ``flock`` fails (an NFS mount without locks: ENOLCK), the entry is saved
    unlocked, as numba alone would, without a warning."""
    import fcntl
    import warnings

    from numba.core import config

    from nbbn.backends import _jit

    def no_locks(*args):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_jit, "cache_failed", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _jit.tagged(_add_one, "nolocks", cache=True)(1) == 2
    assert list(tmp_path.rglob("*nolocks*.nbc")) and not _jit.cache_failed


def test_describe_names_float16_by_the_half_flag():
    """The flag is the third argument of ``_stats_channels_last`` (float16 channels-last
    input was announced as uint16), and one build with a run-time flag serves both."""
    from numba import types

    u16 = types.Array(types.uint16, 1, "C")
    assert describe("_stats_channels_last_avx512_0123abcd",
                    (u16, types.int64, types.boolean)) == \
        "statistics kernel for float16 or uint16 channels-last input"
    assert describe("_stats_channels_first_avx2", (types.Array(types.uint16, 3, "C"),
                                                   types.literal(True))) == \
        "statistics kernel for float16 channels-first input"
    assert describe("_stats_channels_first_avx2", (types.Array(types.float32, 3, "C"),
                                                   types.boolean)) == \
        "statistics kernel for float32 channels-first input"


def test_the_warmups_byte_table_reaches_the_byte_table_kernel():
    """(8, 256) uint8 went to the few-rows kernel (at most 64 rows), so the first MNIST
    batch after a warmup compiled the byte-table kernel."""
    from nbbn.backends import cpu_few_rows
    from nbbn.tools.warmup import WIDE_BYTES

    assert not cpu_few_rows.takes(WIDE_BYTES, np.dtype(np.uint8), False)
    assert cpu_few_rows.takes((8, 256), np.dtype(np.uint8), False)  # (the old shape)


class _Reached(Exception):
    pass


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_the_warmup_builds_the_histogram_kernels(dtype, monkeypatch):
    """``nbbn fit --histogram`` compiled its kernels on the first image after a warmup
    (and said nothing): the channels-last warmup of 8- and 16-bit pixels builds RGB's
    kernel and the one of other channel counts."""
    from nbbn.backends import cpu_histogram
    from nbbn.tools import warmup as tool

    tool._warm_histograms(np.dtype(dtype))
    for kernel in (cpu_histogram.count_levels_rgb, cpu_histogram.count_levels):
        # writable pixels and read-only ones (Pillow's np.asarray of a PNG: a second
        # signature, which the first image after a warmup compiled)
        for writable in (True, False):
            assert any(sig[0].dtype.name == dtype and sig[0].mutable == writable
                       for sig in kernel.signatures), kernel.signatures

    def reached(dt):
        raise _Reached(dt)

    monkeypatch.setattr(tool, "_warm_histograms", reached)  # the warmup's own call of it
    with pytest.raises(_Reached):
        tool.warmup([dtype], ["nhwc"])


class _SpyStats:
    """Stands for ``nbbn.RunningStats`` in a warmup: records each batch, compiles nothing."""

    log: list = []

    def __init__(self, channel_axis=None):
        self.batches = 0

    def update(self, x, sample_weight=None):
        self.batches += 1
        _SpyStats.log.append((x.dtype.name, x.shape, sample_weight is not None, self.batches))
        return self

    def to_normalizer(self):
        return _SpyNormalizer()


class _SpyNormalizer:
    mean = scale = bias = None

    def __call__(self, x):
        return x


def test_the_warmup_reaches_each_route_of_each_dtype(monkeypatch):
    """Without compiling: per dtype and layout a batch then a merge, a weighted batch, and
    a table of each routing of its own that the dtype takes (few rows of many channels;
    byte tables for uint8 and int8, of more rows than few-rows takes)."""
    import nbbn
    from nbbn.backends import cpu, cpu_byte_tables, cpu_few_rows
    from nbbn.tools import warmup as tool

    monkeypatch.setattr(_SpyStats, "log", [])
    monkeypatch.setattr(nbbn, "RunningStats", _SpyStats)
    trained = []
    monkeypatch.setattr(nbbn, "BatchNorm", lambda c, channel_axis: (
        lambda x: trained.append((x.dtype.name, channel_axis))))
    for name in ("prepare", "prepare_out", "affine"):
        monkeypatch.setattr(cpu, name, lambda *a, **k: None)
    monkeypatch.setattr(tool, "_warm_histograms", lambda *a, **k: None)
    scaler = []
    monkeypatch.setattr(tool, "_warm_scaler", lambda: scaler.append(1))
    tool.warmup(["float64"], ["nhwc"])  # (nbbn.sklearn's fit of dense float input)
    assert scaler
    tool.warmup(tool.DTYPES, ["nhwc", "nchw"])
    # BatchNorm's training forward has a kernel of its own (cpu_normalize.batchnorm_params)
    assert {(dt, axis) for dt in tool.DTYPES for _, axis in tool.LAYOUTS.values()} <= set(
        trained)
    for dtype in map(np.dtype, tool.DTYPES):
        seen = [(shape, w, k) for dt, shape, w, k in _SpyStats.log if dt == dtype.name]
        for layout, (shape, _) in tool.LAYOUTS.items():
            assert (shape, False, 2) in seen, (dtype, layout)  # a merge
            assert (shape, True, 1) in seen, (dtype, layout)  # weighted
        tables = [s for s, _, _ in seen if len(s) == 2]
        if cpu_few_rows.takes((2, 10**5), dtype, False):
            assert any(cpu_few_rows.takes(s, dtype, False) for s in tables), dtype
        if cpu_byte_tables.byte_rows(dtype, 10**5):
            assert any(cpu_byte_tables.byte_rows(dtype, s[1])
                       and not cpu_few_rows.takes(s, dtype, False) for s in tables), dtype


def _add_two(x):
    return x + 2


def test_announcing_twice_prints_each_compile_once(monkeypatch, capsys):
    """Each computing subcommand calls ``announce_compiles`` (several run in one
    process): a second call must not add a second listener, which printed each
    notice twice."""
    from nbbn import _compile_notice
    from nbbn.backends import _jit

    monkeypatch.setitem(_compile_notice._FAMILIES, "_add_two_noticetest", "test kernel for {}")
    _compile_notice.announce_compiles()
    _compile_notice.announce_compiles()
    assert _jit.tagged(_add_two, "noticetest")(np.arange(3, dtype=np.int64)).tolist() == [2, 3, 4]
    assert capsys.readouterr().err.count("nbbn: compiling the test kernel for int64") == 1


def test_the_notice_after_a_failed_cache_does_not_say_cached(monkeypatch, capsys):
    """After a cache read or write failed (its warning says the kernel is compiled in
    the process), the compile notice said "(once; cached)"."""
    from nbbn import _compile_notice
    from nbbn.backends import _jit

    monkeypatch.setitem(_compile_notice._FAMILIES, "_add_two_failedtest",
                        "failed-cache test kernel for {}")  # (each notice is printed once)
    monkeypatch.setattr(_jit, "cache_failed", True)
    monkeypatch.setattr(_jit, "no_cache", False)
    _compile_notice.announce_compiles()
    assert _jit.tagged(_add_two, "failedtest")(np.arange(2, dtype=np.int64)).tolist() == [2, 3]
    err = capsys.readouterr().err
    assert "compiling the failed-cache test kernel for int64 (not cached: the cache failed)" \
        in err


def test_numba_disable_jit_is_one_line_and_exit_2_in_the_cli(tmp_path):
    """The kernels refuse NUMBA_DISABLE_JIT when imported: ``nbbn warmup`` printed that
    RuntimeError's traceback (19 lines) and exited 1."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "nbbn", "warmup"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if not ln.startswith("nbbn: compiling ")]
    assert len(lines) == 1 and lines[0].startswith("nbbn warmup: error: nbbn's kernels run "
                                                   "only compiled by numba"), out.stderr
