"""Tests of the command-line entry points: ``nbbn demo``, ``nbbn bench``, ``--help``."""

from __future__ import annotations

import functools
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

import nbbn
from nbbn import bench, demo
from nbbn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    return env


def _vec(text: str, label: str) -> np.ndarray:
    """The numbers printed after ``label:`` on its line."""
    m = re.search(re.escape(label) + r":\s*(.*)$", text, re.MULTILINE)
    assert m, f"no line {label!r} in output:\n{text}"
    return np.array([float(t) for t in m.group(1).split()])


# ----------------------------------------------------------------------------- help
def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "bench" in out


@pytest.mark.parametrize(
    "cmd, options",
    [
        ("demo", ["--size-mb", "--seed", "--no-torch"]),
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


@pytest.mark.parametrize("argv", [["demo", "--size-mb", "0"], ["bench", "--repeats", "0"]])
def test_bad_values_are_rejected(capsys, argv):
    assert main(argv) == 2
    assert "must be" in capsys.readouterr().err


def test_import_cli_is_light():
    code = (
        "import sys, nbbn.cli; "
        "print(sorted(m for m in ('torch', 'nbbn.demo', 'nbbn.bench') if m in sys.modules))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- demo
def _reference_stats(size_mb: float, seed: int):
    """Per-channel float64 mean/std/min/max of the demo's stream, computed independently."""
    h, w, sizes = demo._geometry(int(size_mb * 1e6))
    rng = np.random.default_rng(seed)
    x = np.concatenate([demo._make_batch(rng, n, h, w) for n in sizes]).astype(np.float64)
    axes = (0, 2, 3)
    return {
        "count": x.size // x.shape[1],
        "mean": x.mean(axis=axes),
        "std": x.std(axis=axes),
        "min": x.min(axis=axes),
        "max": x.max(axis=axes),
    }


def test_demo_in_process(capsys):
    assert main(["demo", "--size-mb", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out

    # the per-channel table agrees with an independent float64 computation
    ref = _reference_stats(2, 3)
    header = re.search(r"^\s*channel\s+count\s+mean\s+std\s+min\s+max\s*$", out, re.MULTILINE)
    assert header, out
    rows = out[header.end() :].strip().splitlines()[: demo.CHANNELS]
    for c, line in enumerate(rows):
        ch, count, mean, std, mn, mx = line.split()
        assert int(ch) == c
        assert int(count) == ref["count"]
        assert math.isclose(float(mean), ref["mean"][c], rel_tol=1e-9)
        assert math.isclose(float(std), ref["std"][c], rel_tol=1e-8)
        assert math.isclose(float(mn), ref["min"][c], rel_tol=1e-7)
        assert math.isclose(float(mx), ref["max"][c], rel_tol=1e-7)

    # accuracy and throughput lines carry measured numbers within the contract
    m = re.search(r"max relative error: mean (\S+), var (\S+) ", out)
    assert m, out
    assert 0 <= float(m.group(1)) <= 1e-6
    assert 0 <= float(m.group(2)) <= 1e-6
    m = re.search(r"= ([0-9.]+) GB/s", out)
    assert m and float(m.group(1)) > 0

    # the walk-through: running_mean = 0.1 x batch mean, running_var = 0.9 + 0.1 x unbiased var
    bm = _vec(out, "batch mean")
    bv = _vec(out, "batch var, unbiased (ddof=1)")
    rm = _vec(out, "running_mean  nbbn")
    rv = _vec(out, "running_var   nbbn")
    x = np.random.default_rng(3).standard_normal((4, 3, 2, 2)).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(bm, x.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(bv, x.var(axis=(0, 2, 3), ddof=1), atol=1e-9)
    assert bm.shape == rm.shape == rv.shape == (3,)
    np.testing.assert_allclose(rm, 0.1 * bm, atol=1e-9)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * bv, atol=1e-9)
    np.testing.assert_allclose(_vec(out, "running_mean  0.1 x batch mean"), 0.1 * bm, atol=1e-9)
    if "running_mean  torch" in out:  # torch is a test dependency, but stay honest if absent
        np.testing.assert_allclose(_vec(out, "running_mean  torch"), rm, atol=1e-6)
        np.testing.assert_allclose(_vec(out, "running_var   torch"), rv, atol=1e-6)
    assert "walk-through OK" in out
    assert out.rstrip().endswith("demo OK")


def test_demo_returns_measured_results():
    buf = io.StringIO()
    res = demo.run_demo(total_bytes=1_000_000, seed=5, use_torch=False, file=buf)
    assert res["ok"]
    assert res["batches"] >= 2  # really a stream, not one array
    ref = _reference_stats(1, 5)
    np.testing.assert_array_equal(res["count"], ref["count"])
    np.testing.assert_allclose(res["mean"], ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(res["var"], ref["std"] ** 2, rtol=1e-9)
    np.testing.assert_array_equal(res["min"], ref["min"])
    np.testing.assert_array_equal(res["max"], ref["max"])
    assert res["gbps"] > 0 and res["update_seconds"] > 0
    assert "torch not used" in buf.getvalue()


def test_demo_reports_a_wrong_library(monkeypatch, capsys):
    # a BatchNorm with the wrong momentum must make the demo fail, not print OK
    monkeypatch.setattr(nbbn, "BatchNorm", functools.partial(nbbn.BatchNorm, momentum=0.2))
    assert main(["demo", "--size-mb", "0.5", "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "walk-through FAIL" in out
    assert "demo FAILED" in out


def test_demo_subprocess_python_m():
    p = subprocess.run(
        [sys.executable, "-m", "nbbn", "demo", "--size-mb", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "channel" in p.stdout and "count" in p.stdout
    rm = _vec(p.stdout, "running_mean  nbbn")
    bm = _vec(p.stdout, "batch mean")
    np.testing.assert_allclose(rm, 0.1 * bm, atol=1e-9)
    assert p.stdout.rstrip().endswith("demo OK")


# ---------------------------------------------------------------------------- bench
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
        ref = b["read_gbps"] if r["op"] == "stats" else b["copy_gbps"]
        assert math.isclose(r["pct_bw"], 100 * r["gbps"] / ref, rel_tol=1e-9)
        assert math.isclose(r["speedup_numpy"], r["numpy_ms"] / r["time_ms"], rel_tol=1e-9)
        if d["env"]["torch"] is not None:
            assert math.isclose(r["speedup_torch"], r["torch_ms"] / r["time_ms"], rel_tol=1e-9)

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
        assert math.isclose(r["speedup_torch"], r["torch_ms"] / r["time_ms"], rel_tol=1e-9)
