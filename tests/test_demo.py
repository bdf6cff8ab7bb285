"""``nbbn demo`` end to end at a small size: shards on disk, nbbn.fit, table, plot, cleanup."""

from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbbn
from nbbn.cli import main
from nbbn.tools import demo

ROOT = Path(__file__).resolve().parents[1]


def _vec(text: str, label: str) -> np.ndarray:
    """The numbers printed after ``label:`` on its line."""
    m = re.search(re.escape(label) + r":\s*(.*)$", text, re.MULTILINE)
    assert m, f"no line {label!r} in output:\n{text}"
    return np.array([float(t) for t in m.group(1).split()])


def _reference(size_mb: float, seed: int, layout: str) -> dict[str, np.ndarray]:
    """float64 statistics of the demo's shards, regenerated and reduced with plain numpy."""
    side, sizes = demo.geometry(int(size_mb * 1e6))
    rng = np.random.default_rng(seed)
    x = np.concatenate([demo.make_shard(rng, n, side, layout) for n in sizes])
    x = np.moveaxis(x, 1 if layout == "nchw" else -1, 0).reshape(demo.CHANNELS, -1)
    x = x.astype(np.float64)
    return {
        "count": np.full(demo.CHANNELS, x.shape[1]),
        "mean": x.mean(axis=1),
        "var": x.var(axis=1),
        "min": x.min(axis=1),
        "max": x.max(axis=1),
    }


def test_geometry_spans_several_shards():
    side, sizes = demo.geometry(2_000_000)
    assert side == 32 and len(sizes) >= 3 and sizes[-1] < sizes[0]
    side, sizes = demo.geometry(int(demo.DEFAULT_SIZE_MB * 1e6))
    assert side == 224 and 100e6 < sum(sizes) * 3 * 224 * 224 <= 400e6


def test_reference_from_histograms_is_exact():
    rng = np.random.default_rng(1)
    x = demo.make_shard(rng, 5, 16, "nhwc")
    hist = np.stack([np.bincount(x[..., c].ravel(), minlength=256) for c in range(3)])
    ref = demo.reference_from_histograms(hist)
    flat = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_array_equal(ref["count"], len(flat))
    np.testing.assert_allclose(ref["mean"], flat.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(ref["var"], flat.var(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(ref["min"], flat.min(axis=0))
    np.testing.assert_array_equal(ref["max"], flat.max(axis=0))


def test_demo_cli_end_to_end(tmp_path, capsys):
    png = tmp_path / "demo.png"
    work = tmp_path / "work"
    work.mkdir()
    argv = ["demo", "--size-mb", "2", "--seed", "3", "--no-progress", "--plot", str(png),
            "--workdir", str(work)]
    assert main(argv) == 0
    out = capsys.readouterr().out

    ref = _reference(2, 3, "nchw")
    m = re.search(r"writing (\d+) shards", out)
    assert m and int(m.group(1)) == len(demo.geometry(2_000_000)[1])
    np.testing.assert_allclose(_vec(out, "reference mean"), ref["mean"], rtol=1e-10)
    np.testing.assert_allclose(_vec(out, "reference std"), np.sqrt(ref["var"]), rtol=1e-10)
    m = re.search(r"max relative error: mean (\S+), var (\S+);", out)
    assert m, out
    assert 0 <= float(m.group(1).rstrip(",")) <= 1e-12
    assert 0 <= float(m.group(2)) <= 1e-12
    assert "counts equal, min/max exact -> OK" in out
    m = re.search(r"= ([0-9.]+) GB/s", out)
    assert m and float(m.group(1)) > 0
    # the table printed by the report formatter carries every channel's count
    for c in range(demo.CHANNELS):
        assert str(int(ref["count"][c])) in out
    # ready-to-paste lists, in ToTensor() units
    m = re.search(r"mean=\[(.*?)\], std=\[(.*?)\]", out)
    assert m
    np.testing.assert_allclose([float(v) for v in m.group(1).split(",")], ref["mean"] / 255,
                               rtol=1e-5)
    # the plot was written, and the temporary dataset folder removed
    assert f"plot: wrote {png}" in out
    assert png.stat().st_size > 10_000
    assert list(work.iterdir()) == []
    assert re.search(r"^removed .*nbbn-demo-", out, re.MULTILINE)

    # the walk-through: running_mean = 0.1 x batch mean, running_var = 0.9 + 0.1 x unbiased var
    bm = _vec(out, "batch mean")
    bv = _vec(out, "batch var, unbiased (ddof=1)")
    x = np.random.default_rng(3).standard_normal((4, 3, 2, 2)).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(bm, x.mean(axis=(0, 2, 3)), atol=1e-9)
    np.testing.assert_allclose(bv, x.var(axis=(0, 2, 3), ddof=1), atol=1e-9)
    np.testing.assert_allclose(_vec(out, "running_mean  nbbn"), 0.1 * bm, atol=1e-9)
    np.testing.assert_allclose(_vec(out, "running_var   nbbn"), 0.9 + 0.1 * bv, atol=1e-9)
    if "running_mean  torch" in out:
        np.testing.assert_allclose(_vec(out, "running_mean  torch"), 0.1 * bm, atol=1e-6)
    assert "walk-through OK" in out
    assert out.rstrip().endswith("demo OK")


def test_run_demo_nhwc_returns_measured_results(tmp_path):
    buf = io.StringIO()
    res = demo.run_demo(1, seed=5, layout="nhwc", plot=None, progress=False,
                        workdir=tmp_path, use_torch=False, file=buf)
    assert res["ok"], buf.getvalue()
    assert res["shards"] >= 3 and res["layout"] == "nhwc"
    ref = _reference(1, 5, "nhwc")
    np.testing.assert_array_equal(res["count"], ref["count"])
    np.testing.assert_allclose(res["mean"], ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(res["var"], ref["var"], rtol=1e-12)
    np.testing.assert_array_equal(res["min"], ref["min"])
    np.testing.assert_array_equal(res["max"], ref["max"])
    assert res["gbps"] > 0 and res["plot"] is None
    assert res["gbps"] == pytest.approx(res["bytes"] / res["fit_seconds"] / 1e9)  # GB = 1e9 B
    assert "torch not used" in buf.getvalue() and "channel_axis=-1" in buf.getvalue()
    assert list(tmp_path.iterdir()) == []


def test_demo_reports_a_wrong_library(tmp_path, monkeypatch, capsys):
    # a BatchNorm with the wrong momentum must make the demo fail, not print OK
    monkeypatch.setattr(nbbn, "BatchNorm", functools.partial(nbbn.BatchNorm, momentum=0.2))
    argv = ["demo", "--size-mb", "0.5", "--no-torch", "--no-plot", "--no-progress",
            "--workdir", str(tmp_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "walk-through FAIL" in out
    assert "demo FAILED" in out


@pytest.mark.parametrize("key, change", [
    ("var", lambda v: v * (1 + 1e-9)),  # (the tolerance is 1e-12)
    ("mean", lambda v: v * (1 + 1e-9)),
    ("min", lambda v: v - 1),
    ("max", lambda v: v + 1),
    ("count", lambda v: v + 1),
])
def test_demo_fails_on_each_statistic_off_the_reference(tmp_path, monkeypatch, key, change):
    """Each of the five statistics is compared with the float64 reference: one that
    differs makes the demo fail."""
    real = demo.reference_from_histograms

    def off(hist):
        ref = real(hist)
        ref[key] = change(ref[key])
        return ref

    monkeypatch.setattr(demo, "reference_from_histograms", off)
    buf = io.StringIO()
    res = demo.run_demo(0.05, plot=None, progress=False, workdir=tmp_path, use_torch=False,
                        file=buf)
    assert not res["ok"] and res["walkthrough"]["ok"]
    assert "-> FAIL" in buf.getvalue() and "demo FAILED" in buf.getvalue()


def test_walkthrough_fails_when_torch_disagrees(monkeypatch):
    """nbbn is checked against torch's BatchNorm2d too, not only against the formula."""
    torch = pytest.importorskip("torch")
    assert demo._walkthrough(0, True, lambda *a: None)["ok"]
    monkeypatch.setattr(torch.nn, "BatchNorm2d",
                        functools.partial(torch.nn.BatchNorm2d, momentum=0.2))
    walk = demo._walkthrough(0, True, lambda *a: None)
    assert walk["max_abs_diff_torch"] > 1e-5 and not walk["ok"]


def test_demo_goes_on_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if absent
    png = tmp_path / "x.png"
    argv = ["demo", "--size-mb", "0.5", "--no-torch", "--no-progress", "--plot", str(png),
            "--workdir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "plot skipped" in out and "pip install 'nbbn[plot]'" in out
    assert not png.exists()
    assert out.rstrip().endswith("demo OK")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--size-mb", "-1"], "--size-mb must be positive"),
        (["--workdir", "/nonexistent/nbbn"], "no such folder"),
        (["--plot", "/nonexistent/nbbn/x.png"], "does not exist"),
        # (an OverflowError traceback; 1e13 a MemoryError one)
        (["--size-mb", "1e300"], "--size-mb 1e+300 is more than the"),
    ],
)
def test_demo_user_errors(capsys, argv, needle):
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nbbn demo: error: ") and needle in err[0]


def test_demo_subprocess_with_progress_bar(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    p = subprocess.run(
        [sys.executable, "-m", "nbbn", "demo", "--size-mb", "1", "--no-torch",
         "--workdir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.rstrip().endswith("demo OK")
    assert (tmp_path / demo.DEFAULT_PLOT).stat().st_size > 10_000  # default: the current dir
    assert [f.name for f in tmp_path.iterdir()] == [demo.DEFAULT_PLOT]


def test_demo_interrupted_during_the_fit(tmp_path, monkeypatch, capsys):
    from nbbn import FitInterrupted

    real_fit = nbbn.fit

    def fit(source, *args, **kw):
        if isinstance(source, str):  # the shards (the warm-up fits arrays)
            raise FitInterrupted(nbbn.RunningStats(), Path(kw["checkpoint"]), 7)
        return real_fit(source, *args, **kw)

    monkeypatch.setattr(nbbn, "fit", fit)
    argv = ["demo", "--size-mb", "0.5", "--no-torch", "--no-progress", "--workdir", str(tmp_path)]
    assert main(argv) == 130
    cap = capsys.readouterr()
    assert cap.err.strip() == "nbbn demo: interrupted"  # no "--resume": the checkpoint is gone
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM")
@pytest.mark.parametrize("argv", [
    ["demo", "--size-mb", "200", "--no-torch", "--no-plot", "--no-progress"],
    ["bench", "--quick", "--pipeline", "--no-torch"],
])
def test_sigterm_removes_the_temporary_folder(tmp_path, argv):
    """SIGTERM (``kill``, ``timeout``) killed the demo and the benches at once, leaving
    their temporary folder (96 MB of the demo's shards, 267 MB of --pipeline's files);
    Ctrl-C removed it. Now SIGTERM unwinds as Ctrl-C does: the folder goes, exit 143."""
    import signal
    import time

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "nbbn", *argv, "--workdir", str(work)],
                         cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(work.iterdir()) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert p.poll() is None, "ended before its folder was made"
        time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 143, err
    assert err.strip().endswith(f"nbbn {argv[0]}: terminated (SIGTERM)"), err
    assert list(work.iterdir()) == []


def test_demo_plot_folder_or_separator_refused_before_the_data(tmp_path, capsys):
    """``--plot d.png`` naming a folder was found after the dataset was written and
    fitted ("Is a directory ... try --workdir DIR"); ``--plot x.png/`` quietly wrote
    x.png. Both are refused up front now, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "d.png").mkdir()
    for plot, needle in ((tmp_path / "d.png", "is a folder"),
                         (f"{tmp_path / 'x.png'}{os.sep}", "ending in a separator")):
        argv = ["demo", "--size-mb", "1", "--no-torch", "--no-progress", "--workdir",
                str(work), "--plot", str(plot)]
        assert main(argv) == 2
        cap = capsys.readouterr()
        assert cap.out == "" and cap.err.startswith("nbbn demo: error: --plot "), cap.err
        assert needle in cap.err and len(cap.err.strip().splitlines()) == 1, cap.err
    assert list(work.iterdir()) == [] and not (tmp_path / "x.png").exists()


def test_demo_into_a_closed_pipe_ends_quietly(tmp_path):
    """``nbbn demo | head -1`` ended "nbbn demo: error: [Errno 32] Broken pipe (try
    --workdir ...)", exit 2: the demo's OSError handler caught it before ``main``, which
    ends a closed pipe with status 0 (as for ``nbbn bench | head``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    p = subprocess.Popen([sys.executable, "-m", "nbbn", "demo", "--size-mb", "1", "--no-torch",
                          "--no-progress", "--no-plot", "--workdir", str(tmp_path)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().startswith("nbbn demo: writing")
    p.stdout.close()
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "Broken pipe" not in err and "error" not in err, err
    assert list(tmp_path.iterdir()) == []
