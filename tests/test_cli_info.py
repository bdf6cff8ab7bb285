"""``nbbn info``: the table, the format version, the paste lists, and one-line user errors."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nbbn
from nbbn.cli import main
from nbbn.info import normalize_lists, paste_number
from nbbn.running_stats import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[1]


def _lists(text: str) -> list[tuple[list[float], list[float]]]:
    """Every ``mean=[...], std=[...]`` pair in ``text``, evaluated as Python would."""
    pairs = []
    for m in re.finditer(r"mean=(\[.*?\]), std=(\[.*?\])", text):
        pairs.append(tuple(eval(g, {"float": float}) for g in m.groups()))
    return pairs


@pytest.fixture
def uint8_stats(tmp_path, rng):
    x = rng.integers(10, 250, size=(16, 3, 8, 8), dtype=np.uint8)
    path = tmp_path / "stats.npz"
    nbbn.channel_stats(x, channel_axis=1).save(path)
    return path, x


def test_info_table_version_and_lists(uint8_stats, capsys):
    path, x = uint8_stats
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"format version {FORMAT_VERSION}" in out
    assert "3 channels" in out and "channel_axis=1" in out and "nan_policy='propagate'" in out
    x64 = x.astype(np.float64)
    mean, std = x64.mean(axis=(0, 2, 3)), x64.std(axis=(0, 2, 3))

    header = re.search(r"^\s*channel\s+count\s+mean\s+std\s+min\s+max\s*$", out, re.MULTILINE)
    assert header, out
    rows = out[header.end():].strip().splitlines()[:3]
    for c, line in enumerate(rows):
        ch, count, m, s, lo, hi = line.split()
        assert (int(ch), int(count)) == (c, x[:, c].size)
        assert math.isclose(float(m), mean[c], rel_tol=1e-5)
        assert math.isclose(float(s), std[c], rel_tol=1e-5)
        assert (float(lo), float(hi)) == (x[:, c].min(), x[:, c].max())

    (m_plain, s_plain), (m_255, s_255) = _lists(out)  # pixel units, then / 255
    # rounded at the 6th significant digit of the std: within 5e-6 std
    assert np.all(np.abs(np.array(m_plain) - mean) <= 5e-6 * std)
    np.testing.assert_allclose(s_plain, std, rtol=5e-6)
    assert np.all(np.abs(np.array(m_255) - mean / 255) <= 5e-6 * std / 255)
    np.testing.assert_allclose(s_255, std / 255, rtol=5e-6)
    assert "ToTensor()" in out


@pytest.mark.parametrize("scale", [1.0, 100.0])  # (around 0; percentages in [0, 100])
def test_info_float_data_has_no_255_lists(tmp_path, rng, capsys, scale):
    x = rng.standard_normal((100, 4)) if scale == 1 else rng.uniform(0, scale, (100, 4))
    path = tmp_path / "f.npz"
    nbbn.channel_stats(x, channel_axis=-1).save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert len(_lists(out)) == 1 and "ToTensor()" not in out
    assert "channel_axis=-1" in out


def test_info_many_channels_summarized(tmp_path, rng, capsys):
    x = rng.standard_normal((20, 3000)) + np.arange(3000)
    path = tmp_path / "many.npz"
    nbbn.channel_stats(x, channel_axis=1).save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3000 channels" in out
    assert re.search(r"^3000 channels \(\d+ not shown\)", out, re.MULTILINE)  # summary line
    table_lines = [ln for ln in out.splitlines() if re.match(r"^\s+\d+\s+20\s", ln)]
    assert 2 <= len(table_lines) <= 64  # the table is shortened, the lists are complete
    (means, stds), = _lists(out)
    assert len(means) == len(stds) == 3000


def test_info_lists_of_very_many_channels_left_out(tmp_path, rng, capsys):
    """Beyond PASTE_CHANNELS the paste lists are not printed (a million features wrote
    37.7 MB, nearly all of it two lines), and the output says where they are."""
    from nbbn.info import PASTE_CHANNELS

    n = PASTE_CHANNELS + 1
    nbbn.channel_stats(rng.standard_normal((3, n)), 1).save(tmp_path / "wide.npz")
    assert main(["info", str(tmp_path / "wide.npz")]) == 0
    out = capsys.readouterr().out
    assert f"Normalize lists: not printed for {n} channels (more than {PASTE_CHANNELS})" in out
    assert "mean=[" not in out and max(len(line) for line in out.splitlines()) < 200


def test_info_nan_and_empty(tmp_path, rng, capsys):
    x = rng.standard_normal((30, 3))
    x[:, 1] = np.nan
    path = tmp_path / "nan.npz"
    nbbn.channel_stats(x, channel_axis=1, nan_policy="omit").save(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NaNs seen: 30 in 1 channel (" in out
    (means, stds), = _lists(out)  # an empty channel pastes as float("nan")
    assert math.isnan(means[1]) and math.isnan(stds[1]) and not math.isnan(means[0])

    nbbn.RunningStats().save(tmp_path / "empty.npz")
    assert main(["info", str(tmp_path / "empty.npz")]) == 0
    assert "0 channels" in capsys.readouterr().out


def test_paste_number_keeps_the_digits_that_matter():
    assert paste_number(0.48500001, 0.229) == "0.485"
    assert paste_number(123.675, 58.395) == "123.675"
    # a mean of 1e4 std keeps digits down to the 6th of the std
    assert paste_number(1000.0123456789, 0.1) == "1000.012346"
    assert paste_number(-1000.0123456789, 0.9) == "-1000.012346"  # 0.900000
    assert paste_number(-1000.0123456789, 1.1) == "-1000.01235"  # 1.10000
    assert paste_number(0.001234567, 100.0) == "0.001"  # the 6th digit of 100.000
    for v, s in [(1000.0123456789, 0.1), (3.3333333, 7.77777), (-5.0e-3, 1.0e-9)]:
        assert abs(float(paste_number(v, s)) - v) <= 5e-6 * s
    assert paste_number(0.0, 1.0) == "0.0"
    assert paste_number(float("nan"), 1.0) == 'float("nan")'
    assert paste_number(float("inf"), float("inf")) == 'float("inf")'
    assert paste_number(2.5e-7, 2.5e-7) == "2.5e-07"


def test_normalize_lists_divides(rng):
    st = nbbn.channel_stats(rng.integers(0, 256, size=(50, 3), dtype=np.uint8), channel_axis=1)
    (m, s), = _lists(normalize_lists(st, divide_by=255))
    assert np.all(np.abs(np.array(m) - st.mean / 255) <= 5e-6 * st.std / 255)
    np.testing.assert_allclose(s, st.std / 255, rtol=5e-6)


def _damage(path: Path, how: str) -> None:
    """Turn a good stats file at ``path`` into a bad one (or none)."""
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "corrupt":  # one byte flipped in the middle
        b = bytearray(data)
        b[len(b) // 2] ^= 0xFF
        path.write_bytes(bytes(b))
    elif how == "truncated":
        path.write_bytes(data[:200])
    elif how == "text":
        path.write_text("hello")
    elif how == "foreign-npz":
        np.savez(path, x=np.zeros(3))
    elif how == "directory":
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize(
    "how, needle",
    [
        ("missing", "no such file"),
        ("corrupt", "stats.npz"),
        ("truncated", "not a readable nbbn statistics file"),
        ("text", "not an nbbn statistics file"),
        ("foreign-npz", "not an nbbn statistics file"),
        ("directory", "this is a folder"),
    ],
)
def test_info_user_errors_exit_2_one_line(tmp_path, rng, capsys, how, needle):
    path = tmp_path / "stats.npz"
    nbbn.channel_stats(rng.standard_normal((10, 3)), 1).save(path)
    _damage(path, how)
    assert main(["info", str(path)]) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("nbbn info: error: ") and needle in lines[0]
    assert "Traceback" not in cap.err and cap.out == ""


@pytest.mark.parametrize("field, value, needle", [
    ("count", np.array([2**64 - 1, 2], np.uint64), "count must hold non-negative integers"),
    ("version", np.asarray("1.0"), "version must be an integer"),
    ("mean", np.array(["a", "b"]), "mean must hold numbers, got dtype <U1"),
])
def test_a_file_with_a_valid_checksum_but_bad_fields(tmp_path, rng, capsys, field, value,
                                                     needle):
    """A hand-edited file (or a buggy writer's), its checksum valid: refused in one line
    naming the file and the field (a uint64 count of 2**64 - 1 was shown as -1)."""
    from nbbn._statsfile import write_stats

    d = nbbn.channel_stats(rng.standard_normal((10, 2)), 1).to_dict()
    d[field] = value
    path = tmp_path / "forged.npz"
    write_stats(path, d)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: RunningStats {needle}"):
        nbbn.RunningStats.load(path)
    assert main(["info", str(path)]) == 2
    assert needle in capsys.readouterr().err


def test_info_npy_file_is_refused(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    assert main(["info", str(tmp_path / "a.npy")]) == 2
    assert "expected an .npz archive" in capsys.readouterr().err


def _saved(save, *args, **kw) -> bytes:
    """What ``np.save``/``np.savez`` write, as bytes (to put under any file name)."""
    buf = io.BytesIO()
    save(buf, *args, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("content, came", [
    (b"remember to fit the data\n", "this is a text file"),
    (_saved(np.save, np.zeros((4, 3))), "this is a .npy array"),
    (_saved(np.save, np.array([{}, []], dtype=object)), "this is a .npy array"),
    (_saved(np.savez, x=np.zeros(3), labels=np.arange(2)),
     "a zip/.npz archive without the format marker, holding [x, labels]"),
    (b"", "this is an empty file"),
    (bytes(range(256)), "a file of another format"),
], ids=["text", "npy", "object-npy", "foreign-npz", "empty", "binary"])
def test_not_a_statistics_file_says_what_came(tmp_path, capsys, content, came):
    """The message names what was expected and what came, never numpy's pickle text."""
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        nbbn.RunningStats.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not an nbbn statistics file (expected an .npz archive "
                          "written by `nbbn fit -o` or RunningStats.save"), msg
    assert came in msg and "pickle" not in msg
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nbbn info: error: ") and came in err and "pickle" not in err
    assert err.count("\n") == 1


def test_a_checkpoint_is_not_a_statistics_file(tmp_path, capsys, rng):
    x = rng.standard_normal((20, 3))
    nbbn.fit(x, checkpoint=tmp_path / "fit.ckpt", progress=False)
    assert main(["info", str(tmp_path / "fit.ckpt")]) == 2
    assert "this is an nbbn checkpoint" in capsys.readouterr().err


def test_info_subprocess_exit_status(tmp_path, uint8_stats):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    cmd = [sys.executable, "-m", "nbbn", "info"]
    p = subprocess.run([*cmd, str(uint8_stats[0])], env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "mean=[" in p.stdout
    p = subprocess.run([*cmd, str(tmp_path / "nope.npz")], env=env, capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "no such file" in p.stderr and p.stdout == ""


def test_paste_number_edges():
    """Up to 17 significant digits; a std of 0 (no log10 of it)."""
    v = 1e10 + 0.123456789
    assert paste_number(v, 1e-5) == repr(v)
    assert paste_number(3.0, 0.0) == "3.0"
    from nbbn.info import describe

    st = nbbn.channel_stats(np.array([[3.0, 1.0], [3.0, 2.0]]), 1)
    assert "mean=[3.0, 1.5], std=[0.0, 0.5]" in describe(st)


def test_8bit_detection_edges():
    """The ``ToTensor()`` line for 0..255 whole numbers only: 0/255 yes, a 0/1 mask no,
    fractional minima no."""
    from nbbn.info import describe

    def n255(x):
        return describe(nbbn.channel_stats(x, 1)).count("ToTensor()")

    assert n255(np.array([[0, 255], [255, 0]], dtype=np.uint8)) == 1
    assert n255(np.array([[0, 1], [1, 0]], dtype=np.uint8)) == 0
    assert n255(np.array([[0.5, 3.0], [3.0, 0.5]])) == 0
    # dark 16-bit pixels (0..199) fitted with a histogram: its depth says 16 bits, which
    # ToTensor() does not divide by 255 (the line was printed)
    from nbbn._histogram import Histogram

    for dtype, lines in ((np.uint16, 0), (np.uint8, 1)):
        px = np.arange(200, dtype=dtype).reshape(100, 2)
        st = nbbn.channel_stats(px, -1)
        st.histogram = Histogram.of(px)
        assert describe(st).count("ToTensor()") == lines


def test_paste_lists_printed_up_to_paste_channels():
    from nbbn.info import PASTE_CHANNELS, describe

    text = describe(nbbn.channel_stats(np.arange(2.0 * PASTE_CHANNELS).reshape(2, -1), 1))
    assert "mean=[" in text and "not printed" not in text


def test_skipped_files_listed_without_a_histogram():
    from nbbn.info import describe

    st = nbbn.channel_stats(np.ones((2, 3)), 1)
    st.skipped = ["a.png: not an image file"]
    assert "1 file was skipped by the fit:\n  a.png: not an image file" in describe(st)


def test_skipped_files_listed_up_to_twenty():
    """Twenty skipped files are all listed; past twenty, the first twenty and a count
    of the rest (mutants: 21 listed; "... and 0 more" after exactly 20)."""
    from nbbn._histogram import describe_skipped

    st = nbbn.channel_stats(np.ones((2, 3)), 1)
    st.skipped = [f"f{k}.png: bad" for k in range(20)]
    lines = describe_skipped(st)
    assert lines[-1] == "  f19.png: bad" and "more" not in "\n".join(lines)
    st.skipped.append("f20.png: bad")
    assert describe_skipped(st)[-2:] == ["  f19.png: bad", "  ... and 1 more"]


def test_percentiles_are_printed_with_their_fraction(tmp_path, capsys):
    """The table of exact percentiles printed 6 significant digits: 16413.012 as 16413
    and 65484.997 as 65485, a level no value has. Now 8 digits, the columns aligned."""
    from nbbn._histogram import PERCENTILES, Histogram

    x = np.array([[16413, 0], [16417, 1], [65484, 2], [65485, 65535]], np.uint16)
    st = nbbn.RunningStats(-1)
    st.histogram = Histogram.empty(2, np.uint16)
    st.update(x).save(tmp_path / "s.npz")
    assert main(["info", str(tmp_path / "s.npz")]) == 0
    text = capsys.readouterr().out
    table = text.split("method):\n")[1].splitlines()
    assert len({len(line) for line in table}) == 1, table  # (aligned)
    want = np.percentile(x, PERCENTILES, axis=0)
    for line, row in zip(table[1:], want, strict=True):
        printed = [float(v) for v in line.split()[1:]]
        np.testing.assert_allclose(printed, row, rtol=1e-12)
    assert "  16413.012" in text and "  65484.997" in text
