"""``nbbn fit`` and ``nbbn transform`` on the command line: output, files, exit statuses.

User errors print one line ``nbbn <cmd>: error: ...`` to stderr and exit with 2, without
a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nbbn
from nbbn.cli import main
from nbbn.report import format_table

ROOT = Path(__file__).resolve().parents[1]
SLOW_WRITES = Path(__file__).resolve().parent / "slow_writes.py"  # nbbn with slow renames


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    return env


def same_bits(a, b) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return all(np.asarray(da[k]).tobytes() == np.asarray(db[k]).tobytes() for k in da)


@pytest.fixture
def data_file(tmp_path, rng):
    x = (rng.standard_normal((300, 3, 4, 4)) * 10 + 50).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy"


# ----------------------------------------------------------------------------- fit
@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"),
                                   OSError(28, "No space left on device")])
def test_fit_saves_the_statistics_when_printing_them_fails(data_file, tmp_path,
                                                          monkeypatch, error):
    """``nbbn fit -o s.npz | head -1`` (a closed pipe) or a full disk under stdout: the
    table was printed first and the statistics were lost, with exit 0 for the pipe."""
    class Closed:
        def write(self, text):
            raise error

        def flush(self):
            pass

    out = tmp_path / "stats.npz"
    monkeypatch.setattr(sys, "stdout", Closed())
    rc = main(["fit", str(data_file), "-o", str(out), "--no-progress"])
    monkeypatch.undo()
    assert rc == (0 if isinstance(error, BrokenPipeError) else 2)
    assert same_bits(nbbn.RunningStats.load(out), nbbn.fit(data_file, progress=False))


def test_fit_with_stderr_closed(data_file, tmp_path):
    """``nbbn fit ... 2>&-`` (cron, daemons): Python's sys.stderr is then None; the
    progress bar failed (exit 1, nothing fitted), and print(file=None) put the status
    lines into the table on stdout."""
    out = tmp_path / "stats.npz"
    for extra in ([], ["--no-progress"]):
        res = subprocess.run([sys.executable, "-m", "nbbn", "fit", str(data_file), "-o",
                              str(out), *extra], stdout=subprocess.PIPE, text=True,
                             env=_env(), preexec_fn=lambda: os.close(2), timeout=600)
        assert res.returncode == 0
        assert res.stdout.splitlines()[0].split()[0] == "channel"
        assert "wrote" not in res.stdout and len(res.stdout.splitlines()) == 4
        assert same_bits(nbbn.RunningStats.load(out), nbbn.fit(data_file, progress=False))
        out.unlink()


def test_table_and_json_edges(tmp_path, capsys):
    """format_table(max_rows < 2) printed rows twice and "(-1 not shown)"; min and max
    that differ past 6 digits read the same; a newline in a column name broke the table;
    the JSON of a header-only CSV said num_channels 0 next to two channel names."""
    stats = nbbn.channel_stats(np.array([[1e15 + 1, 1.0], [1e15 + 5, 1.0]]), 1)
    with pytest.raises(ValueError, match="max_rows must be an int >= 2"):
        format_table(stats, max_rows=1)
    row = format_table(stats).splitlines()[1].split()
    assert row[-2:] == ["1000000000000001", "1000000000000005"] and row[2] == "1e+15"
    assert format_table(stats).splitlines()[2].split()[-2:] == ["1", "1"]
    pd = pytest.importorskip("pandas")
    named = nbbn.RunningStats(-1)
    named.update(pd.DataFrame({"a\nb": [1.0, 2.0], "c": [3.0, 4.0]}))
    lines = format_table(named).splitlines()
    assert len(lines) == 3 and lines[1].split()[1] == "a\\nb"
    (tmp_path / "hdr.csv").write_text("a,b\n")
    assert main(["fit", str(tmp_path / "hdr.csv"), "--format", "json", "--no-progress"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_channels"] == 2 and d["channel_names"] == ["a", "b"]
    assert d["count"] == [0, 0] and d["mean"] == [None, None]


def test_fit_prints_table_and_writes_stats(data_file, tmp_path, capsys):
    out = tmp_path / "stats.npz"
    assert main(["fit", str(data_file), "--batch-size", "64", "-o", str(out),
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    stats = nbbn.RunningStats.load(out)
    assert same_bits(stats, nbbn.fit(data_file, batch_size=64, progress=False))
    lines = captured.out.splitlines()
    assert lines[0].split() == ["channel", "count", "mean", "std", "min", "max"]
    for c in range(3):
        fields = lines[1 + c].split()
        assert int(fields[0]) == c and int(fields[1]) == 300 * 16
        np.testing.assert_allclose(float(fields[2]), stats.mean[c], rtol=1e-5)
        np.testing.assert_allclose(float(fields[3]), stats.std[c], rtol=1e-5)
    assert f"wrote {out}" in captured.err


def test_fit_json_and_options(tmp_path, rng, capsys):
    x = rng.standard_normal((40, 5, 2))
    x[3, 1, 0] = np.nan
    x[5, 2, 1] = np.inf
    np.savez(tmp_path / "d.npz", feats=x, labels=np.arange(40))
    assert main(["fit", str(tmp_path / "d.npz"), "--key", "feats", "--nan-policy", "omit",
                 "--format", "json", "--no-progress"]) == 0
    d = json.loads(capsys.readouterr().out)
    stats = nbbn.fit(x, nan_policy="omit", progress=False)
    assert d["count"] == stats.count.tolist() and d["nan_count"] == [0, 1, 0, 0, 0]
    assert d["inf_count"] == [0, 0, 1, 0, 0] and d["max"][2] == "Infinity"
    lines = format_table(stats).splitlines()
    assert lines[0].split()[-2:] == ["nan", "inf"] and lines[3].split()[-2:] == ["0", "1"]
    ok = np.isfinite(stats.mean) & np.isfinite(stats.std)
    np.testing.assert_allclose(np.array(d["mean"], dtype=object)[ok].astype(float),
                               stats.mean[ok], rtol=1e-12)
    np.testing.assert_allclose(np.array(d["std"], dtype=object)[ok].astype(float),
                               stats.std[ok], rtol=1e-12)


def test_fit_progress_bar_shows_rows_and_rate(data_file, capsys):
    assert main(["fit", str(data_file)]) == 0
    err = capsys.readouterr().err
    assert "nbbn fit" in err and "300 rows" in err and "B/s" in err


def test_fit_channels_last_folder(tmp_path, rng, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    parts = [rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8) for n in (4, 0, 9)]
    for i, p in enumerate(parts):
        np.save(d / f"{i:03d}.npy", p)
    assert main(["fit", str(d), "--channel-axis", "-1", "--no-progress", "--format",
                 "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["count"] == [13 * 25] * 3 and got["channel_axis"] == -1


# ----------------------------------------------------------------------- transform
def test_transform_writes_normalized_npy(data_file, tmp_path, capsys):
    stats_path = tmp_path / "stats.npz"
    assert main(["fit", str(data_file), "-o", str(stats_path), "--no-progress"]) == 0
    out = tmp_path / "y.npy"
    assert main(["transform", str(data_file), "--stats", str(stats_path), "-o", str(out),
                 "--dtype", "float64", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    stats = nbbn.RunningStats.load(stats_path)
    x = np.load(data_file)
    y = np.load(out)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, stats.to_normalizer()(x, out=np.empty(x.shape)))


# ----------------------------------------------------------------------- user errors
def user_error(argv, capsys, *match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    cmd = argv[0] if not argv[0].startswith("-") else argv[1]
    assert len(lines) == 1 and lines[0].startswith(f"nbbn {cmd}: error: "), err
    assert "Traceback" not in err
    for m in match:
        assert m in lines[0], err
    return lines[0]


def test_user_errors_one_line_exit_2(data_file, tmp_path, capsys, rng):
    user_error(["fit", str(tmp_path / "missing.npy")], capsys, "missing.npy", "no such file")
    (tmp_path / "junk.npy").write_bytes(b"\x00" * 64)
    user_error(["fit", str(tmp_path / "junk.npy")], capsys, "junk.npy", "not a .npy")
    user_error(["fit", str(data_file), "--channel-axis", "0"], capsys, "--channel-axis 0 is "
               "axis 0")
    user_error(["fit", str(data_file), "--channel-axis", "7"], capsys, "--channel-axis 7 is out "
               "of range")
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    user_error(["fit", str(tmp_path / "s.npy")], capsys, "string")
    (tmp_path / "bad.ckpt").write_bytes(b"PK\x03\x04garbage")
    user_error(["fit", str(data_file), "--checkpoint", str(tmp_path / "bad.ckpt"), "--resume",
                "--no-progress"], capsys, "bad.ckpt", "truncated or corrupt")
    user_error(["fit", str(data_file), "-o", str(tmp_path / "no" / "s.npz")], capsys,
               "does not exist")
    user_error(["fit", str(data_file), "--resume"], capsys, "--checkpoint")
    user_error(["fit", str(data_file), "--checkpoint-interval", "1"], capsys,
               "--checkpoint-interval applies with --checkpoint PATH")
    user_error(["transform", str(data_file), "--stats", str(tmp_path / "none.npz"), "-o",
                str(tmp_path / "y.npy")], capsys, "none.npz")
    nbbn.fit(data_file, progress=False).save(tmp_path / "stats.npz")
    user_error(["transform", str(data_file), "--stats", str(tmp_path / "stats.npz"), "-o",
                str(data_file), "--no-progress"], capsys, "own input")


# ------------------------------------------------------------ the command line's words
def test_existing_checkpoint_needs_resume_in_cli_words(data_file, tmp_path, capsys):
    """The library says resume=True, the command line --resume (never both)."""
    ck = tmp_path / "fit.ckpt"
    nbbn.fit(data_file, checkpoint=ck, progress=False)
    line = user_error(["fit", str(data_file), "--checkpoint", str(ck), "--no-progress"], capsys,
                      "already exists", "pass --resume to continue it")
    assert "resume=True" not in line
    with pytest.raises(nbbn.CheckpointError) as e:
        nbbn.fit(data_file, checkpoint=ck, progress=False)
    assert "pass resume=True to continue it" in str(e.value) and "--resume" not in str(e.value)


def test_parameter_errors_speak_options(data_file, tmp_path, capsys, rng):
    """Every error naming a parameter names the option through the CLI."""
    lines = [
        user_error(["fit", str(data_file), "--resume"], capsys,
                   "--resume needs --checkpoint PATH"),
        user_error(["fit", str(data_file), "--batch-size", "0"], capsys,
                   "--batch-size must be a positive integer, got 0"),
        user_error(["fit", str(data_file), "--checkpoint", str(tmp_path / "c.ckpt"),
                    "--checkpoint-interval", "-1"], capsys, "--checkpoint-interval must be >= 0"),
    ]
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    lines.append(user_error(["fit", str(tmp_path / "two.npz")], capsys,
                            "holds 2 arrays", "name one with --key NAME"))
    ck = tmp_path / "fit.ckpt"
    nbbn.fit(data_file, checkpoint=ck, batch_size=50, progress=False)
    lines += [
        user_error(["fit", str(data_file), "--checkpoint", str(ck), "--resume",
                    "--channel-axis", "-1", "--no-progress"], capsys,
                   "written with --channel-axis 1, but this fit has --channel-axis -1"),
        user_error(["fit", str(data_file), "--checkpoint", str(ck), "--resume",
                    "--nan-policy", "omit", "--no-progress"], capsys,
                   "written with --nan-policy propagate, but this fit has --nan-policy omit"),
        user_error(["fit", str(data_file), "--checkpoint", str(ck), "--resume",
                    "--key", "x", "--no-progress"], capsys,
                   "--key x was given, but the source is a .npy file"),
        user_error(["fit", str(data_file), "--checkpoint", str(ck), "--resume",
                    "--batch-size", "7", "--no-progress"], capsys,
                   "written with --batch-size 50, but --batch-size 7 was given"),
    ]
    nbbn.fit(data_file, progress=False).save(tmp_path / "stats.npz")
    lines += [
        user_error(["transform", str(data_file), "--stats", str(tmp_path / "stats.npz"), "-o",
                    str(data_file), "--no-progress"], capsys,
                   f"-o {data_file} is the input"),
        user_error(["transform", str(data_file), "--stats", str(tmp_path / "stats.npz"), "-o",
                    str(tmp_path / "y.txt"), "--no-progress"], capsys,
                   f"-o {tmp_path / 'y.txt'}: expected a path ending in .npy or .zarr"),
        user_error(["transform", str(data_file), "--stats", str(tmp_path / "stats.npz"), "-o",
                    str(tmp_path / "y.npy"), "--channel-axis", "2", "--no-progress"], capsys,
                   "has 4 channels along --channel-axis 2"),
    ]
    for line in lines:
        for python in ("resume=", "checkpoint=", "key=", "batch_size", "channel_axis",
                       "nan_policy", "out=", "checkpoint_interval"):
            assert python not in line, line


def test_note_after_an_error_speaks_options(tmp_path, capsys, rng):
    x = rng.standard_normal((30, 3))
    x[25, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    line = user_error(["fit", str(tmp_path / "x.npy"), "--nan-policy", "raise", "--batch-size",
                       "10", "--checkpoint", str(tmp_path / "fit.ckpt"), "--no-progress"],
                      capsys, "x.npy, rows 20-30")
    if sys.version_info >= (3, 11):  # exceptions have notes from 3.11 on
        assert "saved to" in line and "--resume continues" in line
    assert "resume=True" not in line


def test_debug_shows_the_traceback(tmp_path, capsys):
    for argv in (["--debug", "fit", str(tmp_path / "missing.npy")],
                 ["fit", str(tmp_path / "missing.npy"), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "FileNotFoundError" in err
        assert err.strip().splitlines()[-1].startswith("nbbn fit: error: ")


def test_user_error_in_a_real_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "nbbn", "fit", str(tmp_path / "nope.npy")],
                         capture_output=True, text=True, env=_env(), check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == f"nbbn fit: error: {tmp_path / 'nope.npy'}: no such file or folder"


def test_ctrl_c_prints_the_resume_command(tmp_path, rng):
    """SIGINT stops the fit with exit 130 and the exact command; running it finishes."""
    x = rng.standard_normal((20000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ck, out = tmp_path / "fit.ckpt", tmp_path / "stats.npz"
    args = ["fit", str(tmp_path / "x.npy"), "--batch-size", "100", "--checkpoint", str(ck),
            "--checkpoint-interval", "0", "-o", str(out), "--no-progress"]
    cmd = [sys.executable, str(SLOW_WRITES), "0.01", *args]  # slow checkpoint writes
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not ck.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stdout == ""
    assert "interrupted after" in stderr and "Resume with:" in stderr
    again = shlex.split(stderr.strip().splitlines()[-1])
    assert again[0] == "nbbn" and again[-1] == "--resume"
    assert again[1:-1] == args
    res = subprocess.run([sys.executable, "-m", "nbbn", *again[1:]], env=_env(),
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert same_bits(nbbn.RunningStats.load(out),
                     nbbn.fit(tmp_path / "x.npy", batch_size=100, progress=False))


# --- the CLI's wording of library errors (nbbn/_cli_errors.py) and the table's rows ---


def _sub(name):
    from nbbn.cli import _subcommand, build_parser

    return _subcommand(build_parser(), name)


@pytest.mark.parametrize("cmd, param, spelled", [
    ("fit", ("resume", True), "--resume"),
    ("fit", ("resume", False), "no --resume"),
    ("fit", ("key", None), "no --key"),
    ("fit", ("key", "a b"), "--key 'a b'"),
    ("fit", ("client", "..."), "--scheduler ADDRESS"),
    ("info", ("stats_or_normalizer", "s.npz"), "s.npz"),  # a positional
])
def test_cli_speller_spells_options(cmd, param, spelled):
    from nbbn._cli_errors import cli_speller
    from nbbn._wording import Param

    name, value = param
    p = Param(name, placeholder=value) if name == "client" else Param(name, value)
    assert cli_speller(_sub(cmd))(p) == spelled


def test_one_line_errors():
    """An OSError without a file name has no "None: "; white space collapses; a
    ``name=value`` inside a path is not respelled; kept arguments are kept whole, the
    longest first; ``out=`` is ``-o``."""
    from nbbn._cli_errors import one_line

    assert one_line(OSError(28, "No space left on device")) == \
        "[Errno 28] No space left on device"
    assert one_line(FileNotFoundError(2, "No such file", "x.npy")) == "x.npy: No such file"
    assert one_line(ValueError("bad value\n   in x.npy"), _sub("fit")) == "bad value in x.npy"
    assert one_line(ValueError("data/batch_size=3: no such file"), _sub("fit")) == \
        "data/batch_size=3: no such file"
    assert one_line(ValueError("got batch_size=3"), _sub("fit")) == "got --batch-size 3"
    assert one_line(ValueError("a=1,batch_size=2: no such file"), _sub("fit"),
                    keep=["a=1", "a=1,batch_size=2"]) == "a=1,batch_size=2: no such file"
    assert one_line(ValueError("got out='y.txt'"), _sub("transform")) == "got -o y.txt"


def test_interrupted_messages():
    """A plain Ctrl-C; a fit without a checkpoint (nothing to resume); a resumed fit
    interrupted again (``--resume`` not added twice)."""
    from nbbn._cli_errors import interrupted_message
    from nbbn.errors import FitInterrupted

    assert interrupted_message(KeyboardInterrupt(), "info", ["info", "s.npz"]) == \
        "nbbn info: interrupted"
    msg = interrupted_message(FitInterrupted(None, None, 1234), "fit", ["fit", "x.npy"])
    assert msg == ("nbbn fit: interrupted after 1,234 rows; without --checkpoint the fit "
                   "cannot be resumed")
    argv = ["fit", "x.npy", "--checkpoint", "c.ckpt", "--resume"]
    msg = interrupted_message(FitInterrupted(None, "c.ckpt", 1), "fit", argv)
    assert msg.endswith("\n  nbbn fit x.npy --checkpoint c.ckpt --resume")
    assert "after 1 row;" in msg
    # a source after "--" (a name that starts with "-"): --resume goes before it, where
    # argparse reads it as an option ("--resume" after it was a second source)
    argv = ["fit", "--checkpoint", "c.ckpt", "--", "-x.npy"]
    msg = interrupted_message(FitInterrupted(None, "c.ckpt", 1), "fit", argv)
    assert msg.endswith("\n  nbbn fit --checkpoint c.ckpt --resume -- -x.npy")


def test_unwritable_outputs_and_a_missing_checkpoint_folder_name_the_option(
        data_file, tmp_path, capsys):
    """``--checkpoint nodir/c.ckpt`` was "checkpoint nodir/c.ckpt: ..." (the Python
    parameter); transform's and plot's -o where no file can be created (as root in
    /proc) named the hidden temporary file."""
    user_error(["fit", str(data_file), "--no-progress", "--checkpoint",
                str(tmp_path / "no" / "c.ckpt")], capsys,
               f"--checkpoint {tmp_path / 'no' / 'c.ckpt'}: the folder", "does not exist")
    nbbn.fit(data_file, progress=False).save(tmp_path / "stats.npz")
    if os.geteuid() == 0:  # (os.access says yes to root: a folder where creating fails)
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc")
        folder = Path("/proc")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
    try:
        for argv, out, step in (
                (["transform", str(data_file), "--stats", str(tmp_path / "stats.npz"),
                  "--no-progress", "-o"], folder / "y.npy", "the transform"),
                (["plot", str(tmp_path / "stats.npz"), "-o"], folder / "p.png", "drawing")):
            line = user_error([*argv, str(out)], capsys, f"-o {out}: ", f"before {step}")
            assert "nbbn-tmp" not in line
    finally:
        if folder != Path("/proc"):
            folder.chmod(0o700)


def _channels(table: str) -> list[str]:
    """The channel column of the table's rows (not the header, "..." or summary)."""
    return [ln.split()[0] for ln in table.splitlines()[1:]
            if ln.split()[0].isdigit() and "channels" not in ln]


def test_table_shortened_only_beyond_max_rows():
    x = np.arange(80, dtype=np.float64).reshape(2, 40)
    full = format_table(nbbn.channel_stats(x[:, :32], 1), max_rows=32)
    assert _channels(full) == [str(c) for c in range(32)]
    assert "..." not in full and "not shown" not in full
    short = format_table(nbbn.channel_stats(x, 1), max_rows=32)
    assert _channels(short) == [str(c) for c in [*range(16), *range(24, 40)]]
    assert short.splitlines()[-1].startswith("40 channels (8 not shown)")


def test_equal_min_and_max_keep_six_digits():
    """A constant 0.1 channel reads 0.1, not 0.10000000000000001."""
    row = format_table(nbbn.channel_stats(np.full((3, 1), 0.1), 1)).splitlines()[1].split()
    assert row[-2:] == ["0.1", "0.1"]


def test_summary_ranges_skip_nan_channels():
    x = np.arange(80, dtype=np.float64).reshape(2, 40)
    x[:, 0] = np.nan
    last = format_table(nbbn.channel_stats(x, 1), max_rows=32).splitlines()[-1]
    assert "mean 21 .. 59," in last and "std 20 .. 20," in last
