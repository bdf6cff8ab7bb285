"""Tests of the command-line entry points: ``nbbn bench``, ``--help``, usage errors.

``nbbn demo`` is tested in test_demo.py, ``info`` in test_cli_info.py, ``plot`` in
test_plot.py.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nbbn.cli import main
from nbbn.tools import bench

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    return env


# ----------------------------------------------------------------------------- help
def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("demo", "info", "plot", "bench"):
        assert cmd in out


@pytest.mark.parametrize(
    "cmd, options",
    [
        ("demo", ["--size-mb", "--seed", "--no-torch", "--layout", "--plot", "--no-plot"]),
        ("info", ["STATS"]),
        ("plot", ["STATS", "--output", "--title", "nbbn[plot]"]),
        ("bench", ["--quick", "--json", "--repeats", "--no-torch"]),
    ],
)
def test_subcommand_help(capsys, cmd, options):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for opt in options:
        assert opt in out


def test_no_subcommand_is_usage_error(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_unknown_subcommand_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2


@pytest.mark.parametrize("argv", [["demo", "--size-mb", "0"], ["bench", "--repeats", "0"],
                                  ["demo", "--size-mb", "inf"], ["demo", "--seed", "-1"],
                                  ["bench", "--wait-quiet", "nan"]])
def test_bad_values_are_rejected(capsys, argv):
    assert main(argv) == 2
    assert "must be" in capsys.readouterr().err


def test_demo_plot_must_be_a_png(capsys, tmp_path):
    """``nbbn demo --plot x.jpg`` wrote PNG bytes under a .jpg name (``nbbn plot``
    refused it): refused before the demo runs."""
    assert main(["demo", "--plot", str(tmp_path / "x.jpg")]) == 2
    assert "expected a path ending in .png" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["info", "x.npz", "--bad-flag"],
    ["plot", "x.npz", "--bad-flag"],
    ["fit", "data/", "--bad-flag", "3"],
    ["transform", "data/", "--stats", "s.npz", "-o", "y.npy", "--bad-flag"],
    ["demo", "--bad-flag"],
    ["bench", "--bad-flag"],
])
def test_unknown_option_is_reported_by_the_subcommand(capsys, argv):
    """The subcommand's own usage and ``nbbn CMD: error:``, not the top-level usage."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    cmd = argv[0]
    assert err.startswith(f"usage: nbbn {cmd} "), err
    assert f"nbbn {cmd}: error: unrecognized arguments: --bad-flag" in err, err


def test_unknown_top_level_option_is_reported_by_nbbn(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--bad-flag", "info", "x.npz"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: nbbn [-h]") and "nbbn: error: unrecognized arguments" in err


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          text=True, timeout=120, check=False)


def test_cli_module_imports_no_numba_nor_numpy():
    """cli.py's own imports: loaded without nbbn/__init__ (which imports the core)."""
    code = (
        "import sys, types; pkg = types.ModuleType('nbbn'); "
        f"pkg.__path__ = [{str(ROOT / 'nbbn')!r}]; sys.modules['nbbn'] = pkg; "
        "import nbbn.cli; nbbn.cli.build_parser().format_help(); "
        "print(sorted(m for m in ('numba', 'numpy') if m in sys.modules))"
    )
    p = _fresh_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_import_cli_is_light():
    code = (
        "import sys, nbbn.cli; "
        "print(sorted(m for m in ('torch', 'matplotlib', 'nbbn.tools', 'nbbn.plot')"
        " if m in sys.modules))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- bench
def test_bench_only_selects_shapes(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "--quick", "--no-startup", "--no-torch", "--json", str(path)]
    assert main([*args, "--only", "uint8:nhwc"]) == 0
    d = json.loads(path.read_text())
    assert {(r["dtype"], r["layout"]) for r in d["results"]} == {("uint8", "NHWC")}
    assert main([*args, "--only", "uint8:NCDHW"]) == 2
    assert "no shape is uint8:NCDHW; the bench's are " in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--backend", "cuda"]])
def test_bench_only_refuses_unknown_entries(extra, capsys, monkeypatch):
    """``--only "uint8:NHWC,bogus:xx"`` dropped the unknown entry silently, and with
    ``--backend cuda`` --only was ignored entirely. Now an unknown entry is refused with
    the pairs the bench has, and the CUDA bench runs only the shapes named."""
    if extra:
        pytest.importorskip("numba_cuda")
    from nbbn.tools import bench, bench_cuda

    got = []
    monkeypatch.setattr(bench, "run_bench", lambda shapes, **k: got.append(shapes))
    monkeypatch.setattr(bench_cuda, "run_cuda_bench", lambda **k: got.append(k["only"]))
    for only in ("uint8:NHWC,bogus:xx", "bogus:xx"):
        assert main(["bench", "--quick", *extra, "--only", only]) == 2
        cap = capsys.readouterr()
        assert cap.out == "" and len(cap.err.strip().splitlines()) == 1, cap.err
        assert "no shape is bogus:xx; the bench's are " in cap.err, cap.err
        assert "float32:NCHW" in cap.err and "uint8:NHWC" in cap.err
    assert got == []
    if extra and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":  # (3 float32 shapes)
        assert main(["bench", "--quick", *extra, "--only", "uint8:NHWC"]) == 2
        assert "the CUDA simulator runs only float32:NC, " in capsys.readouterr().err
    assert main(["bench", "--quick", *extra, "--only", "float32:nhwc"]) == 0
    capsys.readouterr()
    if extra:
        assert got == [{("float32", "NHWC")}]
    else:
        assert [s[1:3] for s in got[0]] == [("float32", "NHWC")] * 2


@pytest.mark.parametrize("argv, needle", [
    (["--sklearn", "--onnx"], "--onnx and --sklearn: each is a bench of its own"),
    (["--backend", "cuda", "--sklearn"], "--backend cuda times the CUDA kernels"),
    (["--only", "uint8:NHWC", "--tabular"], "--only picks shapes of the default bench"),
    (["--images", "0", "--tabular"], "--images and --tabular: each is a bench of its own"),
    (["--images", "0"], "--images must be at least 1, got 0"),
    (["--onnx"], "pip install 'nbbn[onnx]'"),  # onnxruntime made missing below
    (["--images"], "pip install 'nbbn[images]'"),  # and Pillow
    # (a --json in a missing folder was a traceback after the whole bench: results lost)
    (["--json", "/nonexistent-folder/x.json"], "expected a file in an existing folder"),
    (["--pipeline-gb", "nan"], "--pipeline-gb must be a size in GB above 0, got nan"),
    (["--pipeline-gb", "-1", "--tabular"], "--pipeline-gb must be a size in GB above 0"),
    (["--pipeline", "--workdir", "/nonexistent-folder"], "--workdir /nonexistent-folder: no "
     "such folder"),
    # (ignored silently where no bench took them)
    (["--pipeline-gb", "1"], "--pipeline-gb applies to --pipeline, --tabular, --dask only, "
     "not to the default bench"),
    (["--workdir", "."], "--workdir applies to --pipeline, --tabular, --dask, --distributed, "
     "--images only, not to the default bench"),
    (["--sklearn", "--pipeline-gb", "1"], "--pipeline-gb applies to --pipeline, --tabular, "
     "--dask only, not to --sklearn"),
    (["--images", "3", "--pipeline-gb", "1"], "not to --images"),
])
def test_bench_options_refused_before_anything_is_timed(argv, needle, capsys, monkeypatch):
    """Benches that do not combine, and a bench whose extra is missing: one line, exit 2,
    before any timing (a missing extra was a traceback after nbbn's side was timed)."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert main(["bench", "--quick", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1, cap.err
    assert cap.err.startswith("nbbn bench: error: ") and needle in cap.err, cap.err


def test_bench_images_of_a_cpu_time_measured_as_zero(tmp_path, monkeypatch):
    """``nbbn bench --images 1``: a fit too short for ``os.times``'s 10 ms ticks
    measured 0 CPU seconds, and the rates and ratios divided by it (ZeroDivisionError).
    Now such a rate or ratio is None in the JSON (valid JSON, no NaN) and "n/a" in the
    table."""
    pytest.importorskip("PIL")
    from nbbn.tools import bench_images

    monkeypatch.setattr(bench_images, "_cpu_seconds", lambda: 1.0)  # every time 0
    out = io.StringIO()
    res = bench_images.run_images_bench(out, quick=True, count=1, workers=1,
                                        workdir=str(tmp_path))
    assert res["rows"]["nbbn fit"]["mp_per_cpu_s"] is None
    assert res["ratios"]["fit / decode only, CPU time"] is None
    assert res["ratios"]["fit / decode only"] is not None  # (wall time: measured)
    json.dumps(res, allow_nan=False)
    assert "n/a" in out.getvalue() and list(tmp_path.iterdir()) == []


def test_a_bad_nbbn_simd_is_one_line_before_the_demo_or_bench(tmp_path):
    """``NBBN_SIMD=avx3`` was a traceback in ``nbbn bench`` and, in ``nbbn demo``, an
    error after the dataset was written that blamed "array, rows 0-2" (``nbbn warmup``
    said it in one line). Now both refuse it up front, in one line, exit 2."""
    env = {**_env(), "NBBN_SIMD": "avx3"}
    for argv in (["bench", "--quick", "--no-startup", "--no-torch"],
                 ["demo", "--size-mb", "1", "--no-plot", "--no-torch", "--workdir",
                  str(tmp_path)]):
        p = subprocess.run([sys.executable, "-m", "nbbn", *argv], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=False)
        assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
        assert p.stderr.strip() == (f"nbbn {argv[0]}: error: NBBN_SIMD must be one of "
                                    "auto, none, avx2, avx512; got 'avx3'"), p.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_tabular_quick_takes_the_pipeline_gb_size(tmp_path):
    """``--tabular --quick --pipeline-gb G`` wrote 64 MB whatever G (--pipeline and
    --dask take G with --quick too); now G sets the size there as well."""
    pytest.importorskip("pyarrow")
    from nbbn.tools import bench_tabular

    res = bench_tabular.run_tabular_bench(io.StringIO(), quick=True, repeats=1,
                                          size_gb=0.004, workdir=str(tmp_path))
    assert abs(res["bytes"] - 4e6) < 1e6, res["bytes"]
    assert list(tmp_path.iterdir()) == []


def test_bench_json_that_fails_after_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    """A ``--json`` write that failed after the run (a full disk; a folder the up-front
    check could not see through) was a traceback. Now one line naming the file, exit 2,
    after the printed table."""
    import errno

    from nbbn.tools import bench as bench_tool

    def full(path, mode="wb"):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(bench_tool, "atomic_write", full)
    monkeypatch.setattr("nbbn.cli._other_bench", lambda args: print("TABLE") or {})
    path = tmp_path / "b.json"
    assert main(["bench", "--quick", "--sklearn", "--json", str(path)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "TABLE\n" and len(cap.err.strip().splitlines()) == 1, cap.err
    assert cap.err.startswith(f"nbbn bench: error: --json {path}: the results could not "
                              "be written (No space left on device)"), cap.err


def test_bench_backend_cuda_without_a_gpu_is_refused_up_front(capsys, monkeypatch):
    """``nbbn bench --backend cuda`` without a GPU printed the CPU line, then a traceback
    ending in BackendUnavailableError (exit 1). Now: one line, exit 2, before anything;
    where the backend runs (the simulator here), the check lets it through."""
    pytest.importorskip("numba_cuda")
    from nbbn import backends
    from nbbn.cli import _check_bench_options, build_parser
    from nbbn.errors import BackendUnavailableError

    args = build_parser().parse_args(["bench", "--quick", "--backend", "cuda"])
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        _check_bench_options(args)  # (the simulator is the tests' GPU: not refused)

    def no_gpu(name, x=None):
        raise BackendUnavailableError("backend='cuda' needs a CUDA GPU: none found")

    monkeypatch.setattr(backends, "resolve", no_gpu)
    assert main(["bench", "--quick", "--backend", "cuda"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and len(cap.err.strip().splitlines()) == 1, cap.err
    assert cap.err.startswith("nbbn bench: error: --backend cuda needs a CUDA GPU"), cap.err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_outputs_that_cannot_be_written_are_refused_up_front(tmp_path, capsys, monkeypatch):
    """``--json FIFO`` (or a device: ``/dev/null`` as root) was replaced by a regular file
    after the bench; ``--json new.json/`` was an IsADirectoryError traceback after it, and
    ``--json /proc/x.json`` as root (``os.access`` says yes) a FileNotFoundError one, the
    results lost. Now each is one line, exit 2, before anything is timed; fit's -o and
    plot's -o refuse a FIFO up front too."""
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    timed = []
    monkeypatch.setattr("nbbn.cli._other_bench", lambda args: timed.append(args) or {})
    cases = [(["bench", "--quick", "--sklearn", "--json", str(fifo)], "is a FIFO"),
             (["bench", "--quick", "--json", str(tmp_path / "new.json") + os.sep],
              "ending in a separator")]
    if os.path.isdir("/proc/self") and os.getuid() == 0:  # (others are refused by os.access)
        cases.append((["bench", "--quick", "--json", "/proc/x.json"],
                      "no file can be created in the folder /proc"))
    np.save(tmp_path / "x.npy", np.ones((4, 3)))
    os.mkfifo(tmp_path / "p.png")
    os.mkfifo(tmp_path / "s.npz")
    import nbbn

    nbbn.channel_stats(np.ones((4, 3)), 1).save(tmp_path / "real.npz")
    cases += [(["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / "s.npz")], "is a FIFO"),
              (["plot", str(tmp_path / "real.npz"), "-o", str(tmp_path / "p.png")],
               "is a FIFO")]
    capsys.readouterr()  # (a cold cache: the notice of the kernel compiled just above)
    for argv, needle in cases:
        assert main(argv) == 2, argv
        # (a cold numba cache adds the notices of the kernels compiled on the way)
        err = "\n".join(ln for ln in capsys.readouterr().err.strip().splitlines()
                        if not ln.startswith("nbbn: compiling "))
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"nbbn {argv[0]}: error: ") and needle in err, err
    assert timed == [] and stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("argv, count", [(["--images"], 40), (["--images", "3"], 3)])
def test_bench_images_count_with_quick(argv, count, monkeypatch, capsys):
    """--quick sets 40 images where --images has no N; an N given wins (it was ignored)."""
    from nbbn.tools import bench_images

    got = []
    monkeypatch.setattr(bench_images, "run_images_bench", lambda *a, **k: got.append(k) or {})
    monkeypatch.setattr("nbbn.cli._check_bench_options", lambda args: None)
    assert main(["bench", "--quick", *argv]) == 0
    assert got[0]["count"] == count


def test_bench_quick_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    d = json.loads(path.read_text())

    assert {"env", "quick", "repeats", "bandwidth", "results", "small_batch", "startup"} <= set(d)
    assert d["quick"] is True
    for key in ("cpu", "cpu_count", "python", "numpy", "numba", "torch"):
        assert key in d["env"]
    assert d["env"]["numpy"] == np.__version__

    shapes = bench.QUICK_SHAPES
    assert len(d["bandwidth"]) == len(shapes)
    assert len(d["results"]) == len(shapes) * len(bench.OPS)
    bw = {(tuple(b["shape"]), b["dtype"], b["layout"]): b for b in d["bandwidth"]}
    for b in d["bandwidth"]:
        assert b["read_gbps"] > 0 and b["copy_gbps"] > 0
    for r in d["results"]:
        assert r["op"] in bench.OPS
        shape, dtype = tuple(r["shape"]), np.dtype(r["dtype"])
        assert (shape, r["dtype"], r["layout"], r["channel_axis"]) in shapes
        n = math.prod(shape)
        out_itemsize = dtype.itemsize if dtype.kind == "f" else 4
        expect_bytes = {
            "stats": n * dtype.itemsize,
            "normalizer": n * (dtype.itemsize + out_itemsize),
            "batchnorm_train": n * (2 * dtype.itemsize + out_itemsize),
        }[r["op"]]
        assert r["bytes"] == expect_bytes
        if r["time_ms"] is None:  # only allowed with an explanation
            assert r["note"]
            continue
        assert r["time_ms"] > 0
        assert math.isclose(r["gbps"], r["bytes"] / r["time_ms"] / 1e6, rel_tol=1e-9)
        b = bw[(shape, r["dtype"], r["layout"])]
        if r["op"] == "batchnorm_train":  # a read-only pass over x, then a copy-like pass
            xbytes = r["read_pass_bytes"]
            ref = r["bytes"] / (xbytes / b["read_gbps"] + (r["bytes"] - xbytes) / b["copy_gbps"])
        else:
            ref = b["read_gbps"] if r["op"] == "stats" else b["copy_gbps"]
        assert math.isclose(r["pct_bw"], 100 * r["gbps"] / ref, rel_tol=1e-9)
        assert math.isclose(r["speedup_numpy"], r["numpy_ms"] / r["time_ms"], rel_tol=1e-9)
        if d["env"]["torch"] is not None:  # torch allocates: against nbbn's allocating call
            base = r["time_ms"] if r["op"] == "stats" else r["time_alloc_ms"]
            assert math.isclose(r["speedup_torch"], r["torch_ms"] / base, rel_tol=1e-9)

    s = d["small_batch"]
    assert s["shape"] == [8, 16, 4, 4]
    for key in ("update_us", "normalizer_us", "batchnorm_train_us", "numpy_stats_us"):
        assert s[key] > 0

    for phase in ("cold", "warm"):
        st = d["startup"][phase]
        assert "error" not in st, st
        assert st["import_s"] > 0 and st["first_update_s"] > 0
        assert st["process_wall_s"] >= st["import_s"] + st["first_calls_s"]

    # the printed table has one line per result
    for op in bench.OPS:
        assert len(re.findall(rf"^{op}\s", out, re.MULTILINE)) == len(shapes)
    assert "read bw" in out and "copy bw" in out
    assert "start-up" in out and f"wrote {path}" in out


def test_bench_without_torch_custom_shapes(tmp_path):
    buf = io.StringIO()
    shapes = [((3, 5, 4, 4), "float32", "NCHW", 1), ((100, 7), "float64", "NC", -1)]
    res = bench.run_bench(
        shapes=shapes,
        repeats=1,
        json_path=tmp_path / "b.json",
        use_torch=False,
        startup=False,
        wait_quiet_s=0.2,
        file=buf,
    )
    assert res["env"]["torch"] is None
    for b in res["bandwidth"]:  # how busy the machine was is recorded with every shape
        assert "other_cpus" in b and b["waited_for_quiet_s"] <= 5
    assert res["startup"] is None
    measured = [v for v in [b["other_cpus"] for b in res["bandwidth"]]
                + [res["small_batch"]["other_cpus"]] if v is not None]
    assert res["max_other_cpus_measured"] == (max(measured) if measured else None)
    assert len(res["results"]) == 2 * len(bench.OPS)
    assert all(r["torch_ms"] is None and r["speedup_torch"] is None for r in res["results"])
    assert all(r["numpy_ms"] > 0 for r in res["results"])
    assert json.loads((tmp_path / "b.json").read_text())["results"] == json.loads(
        json.dumps(res["results"])
    )
    assert "torch not used" in buf.getvalue()


def test_bench_float64_against_torch():
    pytest.importorskip("torch")
    buf = io.StringIO()
    res = bench.run_bench(
        shapes=[((50, 3), "float64", "NC", -1), ((2, 4, 3, 5), "float64", "NHWC", -1)],
        repeats=1,
        startup=False,
        file=buf,
    )
    assert res["env"]["torch"] is not None
    for r in res["results"]:
        assert r["torch_ms"] > 0
        base = r["time_ms"] if r["op"] == "stats" else r["time_alloc_ms"]
        assert math.isclose(r["speedup_torch"], r["torch_ms"] / base, rel_tol=1e-9)


def _open_instead(monkeypatch, system_path: str, fake) -> None:
    """``open(system_path)`` reads the file ``fake`` (a host file the bench reads)."""
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        fake if str(path) == system_path else path, *a, **k))


def test_bench_hosts_record_their_huge_page_setting(monkeypatch, tmp_path):
    """A fresh output's first write costs a page fault per page, so the transparent huge
    page setting moves the normalizer's numbers: every bench's host line names it."""
    from nbbn.tools import bench_env

    rec = bench_env.cpu_record()
    assert rec["thp"] in ("always", "madvise", "never", "unknown")
    assert bench_env.cpu_line().endswith(f"; transparent huge pages: {rec['thp']}")
    fake = tmp_path / "enabled"
    fake.write_text("always madvise [never]\n")
    _open_instead(monkeypatch, "/sys/kernel/mm/transparent_hugepage/enabled", fake)
    assert bench_env.transparent_huge_pages() == "never"


# ------------------------------------------------- bench arithmetic, on made-up inputs
class _Clock:
    """A fake ``time`` for bench_timing: ``perf_counter`` reads ``now``, the calls advance it."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def taking(self, durations):
        """A call that advances the clock by the next of ``durations`` and logs its argument."""
        it = iter(durations)
        log: list = []

        def call(*args):
            log.append(args)
            self.now += next(it)

        call.log = log
        return call


def test_bench_median_time_is_the_median_after_an_untimed_warmup(monkeypatch):
    import statistics

    from nbbn.tools import bench_timing

    clock = _Clock()
    monkeypatch.setattr(bench_timing, "time", clock)
    timed = [3.0, 1.0, 2.0, 9.0, 5.0]
    fn = clock.taking([100.0, *timed])  # the warm-up call, slow (a compile), then the repeats
    made = []

    def setup():
        clock.now += 1000.0  # untimed
        made.append(len(made))
        return made[-1]

    med, times = bench_timing.median_time(fn, len(timed), setup)
    assert times == timed
    assert med == statistics.median(timed) and med != min(timed) and med != sum(timed) / 5
    assert fn.log == [(i,) for i in range(len(timed) + 1)]  # each call gets its own setup()


def test_bench_paired_pct_is_op_speed_over_kernel_speed(monkeypatch):
    import statistics

    from nbbn.tools import bench_timing

    clock = _Clock()
    monkeypatch.setattr(bench_timing, "time", clock)
    t_bw, t_op = [1.0, 2.0, 1.0], [2.0, 1.0, 4.0]
    nbytes, bw_bytes = 100, 300
    pct = bench_timing.paired_pct(clock.taking(t_op), nbytes, (clock.taking(t_bw), bw_bytes), 3)
    ratios = [(nbytes / o) / (bw_bytes / b) for o, b in zip(t_op, t_bw, strict=True)]
    assert math.isclose(pct, 100 * statistics.median(ratios), rel_tol=1e-12)
    assert pct < 100  # the op is slower than the kernel: under 100%, not over


def test_bench_ceiling_of_a_read_pass_then_a_copy_pass():
    from nbbn.tools.bench_timing import ceiling_gbps

    bw = {"read_gbps": 10.0, "copy_gbps": 5.0}
    assert ceiling_gbps(bw, "read", 0, 300) == 10.0
    assert ceiling_gbps(bw, "copy", 0, 300) == 5.0
    # 100 bytes read at 10 GB/s, then 200 bytes copied at 5: 300 bytes in 10 + 40 ns
    assert math.isclose(ceiling_gbps(bw, "mixed", 100, 300), 300 / (100 / 10 + 200 / 5))
    assert math.isclose(ceiling_gbps(bw, "mixed", 300, 300), 10.0)
    assert math.isclose(ceiling_gbps(bw, "mixed", 0, 300), 5.0)


def test_bench_bandwidth_is_the_best_repeat_of_the_bytes_moved(monkeypatch):
    """Read GB/s: the array's bytes over the fastest call; copy GB/s: bytes read plus
    bytes written; the medians too; at least 5 timed calls after a warm-up."""
    import statistics

    from nbbn.tools import bench_timing

    clock = _Clock()
    monkeypatch.setattr(bench_timing, "time", clock)
    t_read = [9.0, 4e-6, 2e-6, 8e-6, 3e-6, 5e-6]  # the warm-up first
    t_copy = [9.0, 6e-6, 7e-6, 5e-6, 9e-6, 8e-6]
    read, copy = clock.taking(t_read), clock.taking(t_copy)
    monkeypatch.setitem(bench_timing._kernels, "read", read)
    monkeypatch.setitem(bench_timing._kernels, "copy", copy)
    b = bench_timing.measure_bandwidth(4000, 8000, repeats=2)
    assert len(read.log) == len(t_read) and len(copy.log) == len(t_copy)
    assert read.log[0][0].nbytes == 4000 and copy.log[0][0].nbytes == 8000
    assert b["read_bytes"] == 4000 and b["copy_bytes"] == 2 * 8000
    assert math.isclose(b["read_gbps"], 4000 / min(t_read[1:]) / 1e9)
    assert math.isclose(b["read_ms"], min(t_read[1:]) * 1e3)
    assert math.isclose(b["read_gbps_median"], 4000 / statistics.median(t_read[1:]) / 1e9)
    assert math.isclose(b["copy_gbps"], 16000 / min(t_copy[1:]) / 1e9)
    assert math.isclose(b["copy_gbps_median"], 16000 / statistics.median(t_copy[1:]) / 1e9)


def test_bench_per_call_us_is_the_median_block_mean(monkeypatch):
    from nbbn.tools import bench_timing

    clock = _Clock()
    monkeypatch.setattr(bench_timing, "time", clock)
    warm, blocks = [1.0] * 4, [[1e-6] * 4, [4e-6, 4e-6, 2e-6, 2e-6], [2e-6, 2e-6, 2e-6, 1e-5]]
    fn = clock.taking(warm + [t for b in blocks for t in b])
    us = bench_timing.per_call_us(lambda: fn(), 3, 4)
    means = sorted(sum(b) / 4 for b in blocks)
    assert math.isclose(us, means[1] * 1e6, rel_tol=1e-9)


class _FakeMonitor:
    def report(self):
        return {"other_cpus": 0.25, "steal_cpus": 0.5}


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_bench_shape_ceiling_is_the_better_of_before_and_after(dtype, monkeypatch):
    """The bandwidth is measured before and after a shape's ops over x's bytes and the
    output's (float32 for integers); the better of the two is the ceiling of % bw."""
    from nbbn.tools.bench_timing import ceiling_gbps

    runs = [{"read_gbps": 20.0, "read_ms": 1.0, "copy_gbps": 6.0, "copy_ms": 2.0},
            {"read_gbps": 10.0, "read_ms": 3.0, "copy_gbps": 8.0, "copy_ms": 4.0}]
    asked = []

    def measure(nread, ncopy, repeats):
        asked.append((nread, ncopy, repeats))
        return dict(runs[len(asked) - 1])

    rows = [{"gbps": 4.0, "bw_kind": kind, "read_pass_bytes": rpb, "bytes": nb, "pct_bw": 1.0}
            for kind, rpb, nb in (("read", None, 96), ("copy", None, 96), ("mixed", 96, 288))]
    monkeypatch.setattr(bench, "measure_bandwidth", measure)
    monkeypatch.setattr(bench, "bench_shape", lambda spec, x, repeats, torch, bw: rows)
    monkeypatch.setattr(bench, "CpuMonitor", _FakeMonitor)
    x = np.zeros((2, 3, 4), dtype)
    bw, got = bench._measure_shape(((2, 3, 4), dtype, "NCHW", 1), x, 3, None, 0.0)
    out_bytes = x.size * (x.dtype.itemsize if x.dtype.kind == "f" else 4)
    assert asked == [(x.nbytes, out_bytes, 3)] * 2
    assert (bw["read_gbps"], bw["read_ms"]) == (20.0, 1.0)  # before was better
    assert (bw["copy_gbps"], bw["copy_ms"]) == (8.0, 4.0)  # after was better
    assert (bw["read_gbps_before"], bw["read_gbps_after"]) == (20.0, 10.0)
    assert (bw["copy_gbps_before"], bw["copy_gbps_after"]) == (6.0, 8.0)
    for r in got:
        ceiling = ceiling_gbps({"read_gbps": 20.0, "copy_gbps": 8.0}, r["bw_kind"],
                               r["read_pass_bytes"] or 0, r["bytes"])
        assert math.isclose(r["pct_bw"], 100 * 4.0 / ceiling)
        assert r["other_cpus"] == 0.75
    assert bw["other_cpus"] == 0.75


def test_bench_pairs_each_op_with_the_bytes_of_its_passes(monkeypatch):
    """% pair: stats against a read of x's bytes, the normalizer (x read, out written)
    against a copy of out's bytes (read + write), BatchNorm against both."""
    from nbbn.tools import bench_ops

    pairs = []
    monkeypatch.setattr(bench_ops, "paired_pct", lambda fn, nbytes, kernel, repeats, setup=None:
                        pairs.append((nbytes, kernel[1])) or 50.0)
    monkeypatch.setattr(bench_ops, "bw_kernels", lambda: (None, None))
    x = np.ones((2, 3, 4, 4), np.float32)
    bw = {"read_gbps": 10.0, "copy_gbps": 5.0}
    rows = bench_ops.bench_shape(((2, 3, 4, 4), "float32", "NCHW", 1), x, 1, None, bw)
    n = x.nbytes
    assert pairs == [(n, n), (2 * n, 2 * n), (3 * n, 3 * n)]
    assert [r["pct_bw_paired"] for r in rows] == [50.0] * 3
    for r in rows:
        assert math.isclose(r["gbps"], r["bytes"] / (r["time_ms"] / 1e3) / 1e9)
        ceiling = bench_ops.ceiling_gbps(bw, r["bw_kind"], n, r["bytes"])
        assert math.isclose(r["pct_bw"], 100 * r["gbps"] / ceiling)
        assert math.isclose(r["speedup_numpy"], r["numpy_ms"] / r["time_ms"])


def test_bench_shape_line_says_mb_and_before_after_in_order():
    from nbbn.tools.bench_table import shape_line

    bw = {"read_gbps": 22.0, "copy_gbps": 17.0, "read_gbps_before": 11.0, "read_gbps_after": 22.0,
          "copy_gbps_before": 17.0, "copy_gbps_after": 13.0, "other_cpus": 0.5,
          "waited_for_quiet_s": 0.0}
    line = shape_line(1, 4, ((8, 3), "float32", "NC", -1), 2_500_000, bw)
    assert line.startswith(f"[2/4] 8x3 float32 NC ({2_500_000 / 1e6:.1f} MB): read bw 22.00 GB/s,")
    assert "(read 11.0 / 22.0, copy 17.0 / 13.0)" in line
    assert "other processes used 0.50 cores" in line


def test_bench_header_names_numbas_full_target(monkeypatch):
    """The header's target is numba's as set, features and AVX switch included (two runs
    with different features must not read the same)."""
    from numba.core import config

    from nbbn.tools import bench_env
    from nbbn.tools.bench_table import print_header

    monkeypatch.setattr(config, "CPU_NAME", "skylake", raising=False)
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,-avx512f", raising=False)
    monkeypatch.setattr(config, "ENABLE_AVX", False, raising=False)
    target = bench_env.numba_target()
    assert target.split(", ") == ["skylake", "features +avx2,-avx512f", "NUMBA_ENABLE_AVX=0"]
    lines = []
    print_header(lambda *a: lines.append(" ".join(map(str, a))), bench_env.environment(None), 3,
                 False)
    assert any(line.endswith(f"(numba target: {target})") for line in lines), lines
    assert bench_env.cpu_line().count(f"(numba target: {target})") == 1


def test_bench_cpu_flags_of_arm_features(monkeypatch, tmp_path):
    """ARM's /proc/cpuinfo names them ``Features``, x86's ``flags``."""
    from nbbn.tools import bench_env

    fake = tmp_path / "cpuinfo"
    _open_instead(monkeypatch, "/proc/cpuinfo", fake)
    fake.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm sve\n")
    assert bench_env.cpu_flags() == ["asimd", "sve"]
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert bench_env.cpu_flags() == ["sse4_2", "avx", "avx2", "fma"]


def test_bench_cpu_monitor_subtracts_its_own_cpu_time(monkeypatch):
    from nbbn.tools import bench_env

    # (wall s, busy cpu s of all processes, steal s, this process's cpu s)
    samples = iter([(10.0, 100.0, 5.0, 3.0), (12.0, 104.0, 6.0, 4.0)])
    monkeypatch.setattr(bench_env.CpuMonitor, "_sample", staticmethod(lambda: next(samples)))
    r = bench_env.CpuMonitor().report()
    assert r == {"wall_s": 2.0, "own_cpus": (4.0 - 3.0) / 2, "other_cpus": (4.0 - 1.0) / 2,
                 "steal_cpus": (6.0 - 5.0) / 2}


def test_bench_table_puts_each_number_in_its_column():
    from nbbn.tools.bench_table import print_table

    row = {"op": "normalizer", "shape": [2, 3], "dtype": "float32", "layout": "NC",
           "time_ms": 1.5, "gbps": 2.25, "pct_bw": 41.0, "pct_bw_paired": 57.0,
           "numpy_ms": 4.5, "speedup_numpy": 3.0, "torch_ms": 7.5, "speedup_torch": 2.5,
           "other_cpus": 0.25, "time_alloc_ms": 3.0, "note": ""}
    lines = []
    print_table([row], lines.append)
    head, cells = lines[0].split(), lines[2].split()
    # the head's "time ms", "% bw", ... are two words each: align on the values' order
    assert cells == ["normalizer", "2x3", "float32", "NC", "1.500", "2.25", "41%", "57%",
                     "4.50", "3.0x", "7.50", "2.5x", "0.25"]
    assert head[:4] == ["op", "shape", "dtype", "layout"]
    assert "normalizer without out=" in lines[3] and "3.00 ms" in lines[3]


def test_run_bench_records_the_busiest_measured_phase(monkeypatch, tmp_path):
    """``max_other_cpus_measured``: the most cores other processes took in any shape's
    phase or the small-batch one (the worst case the rows may be slowed by)."""
    loads = iter([0.5, 2.0, None])

    def measure(spec, x, repeats, torch, wait):
        return {"other_cpus": next(loads)}, []

    class Monitor:
        def report(self):
            return {"other_cpus": 0.25, "steal_cpus": 0.5, "own_cpus": 1.0}

    monkeypatch.setattr(bench, "_measure_shape", measure)
    monkeypatch.setattr(bench, "shape_line", lambda *a: "")
    monkeypatch.setattr(bench, "CpuMonitor", Monitor)
    monkeypatch.setattr(bench, "bench_small", lambda quick, torch: {})
    monkeypatch.setattr(bench, "print_small", lambda say, small: None)
    monkeypatch.setattr("gc.collect", lambda *a: 0)  # (0.1 s a call with torch imported)
    shapes = [((2, 3), "float32", "NC", -1)] * 3
    res = bench.run_bench(shapes, 1, tmp_path / "b.json", use_torch=False, startup=False,
                          file=io.StringIO())
    assert res["small_batch"]["other_cpus"] == 0.25 + 0.5  # other processes and steal
    assert res["max_other_cpus_measured"] == max(0.5, 2.0, 0.75)
    assert json.loads((tmp_path / "b.json").read_text())["max_other_cpus_measured"] == 2.0


def test_bench_nhwc_data_is_the_nchw_array_transposed():
    """An NHWC shape after its NCHW one reuses that array's values, transposed (and copied)."""
    from nbbn.tools.bench_ops import make_data

    nchw = make_data((2, 3, 4, 5), "float32", "NCHW", seed=0)
    nhwc = make_data((2, 4, 5, 3), "float32", "NHWC", seed=1, prev=nchw)
    assert nhwc.flags.c_contiguous and not np.shares_memory(nhwc, nchw)
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
    alone = make_data((2, 4, 5, 3), "float32", "NHWC", seed=1)
    np.testing.assert_array_equal(alone, make_data((2, 3, 4, 5), "float32", "NCHW", 1)
                                  .transpose(0, 2, 3, 1))
