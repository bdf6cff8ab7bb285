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
    assert "matches no shape" in capsys.readouterr().err


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


def test_bench_hosts_record_their_huge_page_setting(monkeypatch, tmp_path):
    """A fresh output's first write costs a page fault per page, so the transparent huge
    page setting moves the normalizer's numbers: every bench's host line names it."""
    from nbbn.tools import bench_env

    rec = bench_env.cpu_record()
    assert rec["thp"] in ("always", "madvise", "never", "unknown")
    assert bench_env.cpu_line().endswith(f"; transparent huge pages: {rec['thp']}")
    fake = tmp_path / "enabled"
    fake.write_text("always madvise [never]\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        fake if str(path).endswith("transparent_hugepage/enabled") else path, *a, **k))
    assert bench_env.transparent_huge_pages() == "never"
