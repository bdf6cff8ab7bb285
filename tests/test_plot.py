"""``nbbn plot`` and ``nbbn.plot.plot_stats``: PNGs for few and many channels, clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import nbbn
from nbbn.cli import main
from nbbn.plot import (
    MANY_CHANNELS,
    PlotUnavailableError,
    plot_histogram,
    plot_stats,
    undrawn_note,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _stats(nchan: int, rng) -> nbbn.RunningStats:
    scale = np.exp(rng.normal(0, 1, nchan))
    x = rng.standard_normal((64, nchan, 8)) * scale[None, :, None] + rng.normal(0, 3, nchan)[
        None, :, None
    ]
    return nbbn.channel_stats(x, channel_axis=1)


def _check_png(path, min_bytes: int) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    from matplotlib.image import imread

    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    colors = np.unique(img.reshape(-1, img.shape[2]), axis=0)
    assert len(colors) > 50  # something was drawn: not a blank canvas
    return img


@pytest.mark.parametrize("nchan", [3, MANY_CHANNELS + 1, 512])
def test_plot_stats_writes_a_png(tmp_path, rng, nchan):
    pytest.importorskip("matplotlib")
    path = plot_stats(_stats(nchan, rng), tmp_path / "s.png")
    assert path == tmp_path / "s.png"
    img = _check_png(path, 10_000)
    if nchan > MANY_CHANNELS:  # many channels: a wider figure
        assert img.shape[1] > img.shape[0]


def test_plot_stats_options(tmp_path, rng):
    pytest.importorskip("matplotlib")
    st = _stats(3, rng)
    small = plot_stats(st, tmp_path / "a.png", title="RGB", channel_names=["R", "G", "B"], dpi=50)
    big = plot_stats(st, tmp_path / "b.png", dpi=150)
    from matplotlib.image import imread

    assert imread(small).shape[0] < imread(big).shape[0]
    with pytest.raises(ValueError, match="2 names for 3 channels"):
        plot_stats(st, tmp_path / "c.png", channel_names=["R", "G"])


def test_plot_stats_empty_and_nan(tmp_path, rng):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="no channels"):
        plot_stats(nbbn.RunningStats(), tmp_path / "e.png")
    # an all-NaN channel under nan_policy="omit" has no statistics: drawn as a gap
    x = rng.standard_normal((50, 4))
    x[:, 2] = np.nan
    st = nbbn.channel_stats(x, channel_axis=1, nan_policy="omit")
    _check_png(plot_stats(st, tmp_path / "n.png"), 5_000)
    assert undrawn_note(st) == "not drawn: channel 2 (no values)"
    x[0, 0], x[0, 3] = np.nan, np.inf
    st = nbbn.RunningStats(channel_axis=1, channel_names=list("abcd")).update(x)
    assert undrawn_note(st) == "not drawn: channels 'a' (NaN), 'c' (NaN), 'd' (infinite)"
    # names given (plot_stats's channel_names=) win over the statistics' own
    assert undrawn_note(st, list("wxyz")) == ("not drawn: channels 'w' (NaN), 'y' (NaN), "
                                              "'z' (infinite)")
    assert undrawn_note(_stats(3, rng)) is None
    # six channels are named, the rest counted
    y = rng.standard_normal((5, 9))
    y[:, :8] = np.nan
    st = nbbn.channel_stats(y, channel_axis=1, nan_policy="omit")
    assert undrawn_note(st) == ("not drawn: channels "
                                + ", ".join(f"{c} (no values)" for c in range(6))
                                + ", and 2 more")


def test_plot_values_near_the_top_of_the_range_and_weighted_counts(tmp_path, rng):
    """Channels at -1e308 and +1e308: drawn in units of 1e308 (matplotlib failed on an
    axis whose span overflows float64); a channel of infinite std is named and its
    min and max not drawn either; a weighted count is shown as it is, not truncated."""
    pytest.importorskip("matplotlib")
    st = nbbn.channel_stats(np.array([[-1e308, 1e308, 1e308], [-1e308, 1e308, -1e308]]), 1)
    assert undrawn_note(st) == "not drawn: channel 2 (infinite)"
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    markers = []
    scatter = Axes.scatter

    def spy_markers(self, x, y, **kw):
        markers.append((kw.get("label"), np.asarray(y, np.float64)))
        return scatter(self, x, y, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Axes, "scatter", spy_markers)
        _check_png(plot_stats(st, tmp_path / "top.png"), 5_000)
    assert [label for label, _ in markers] == ["min", "max"]
    for label, y in markers:  # in units of 1e308; channel 2 left blank
        want = st.min if label == "min" else st.max
        np.testing.assert_allclose(y[:2], want[:2] / 1e308, rtol=1e-12)
        assert np.isnan(y[2])

    titles = []
    orig = Figure.suptitle

    def spy(self, t, **kw):
        titles.append(t)
        return orig(self, t, **kw)

    w = nbbn.RunningStats(1).update(rng.standard_normal((2, 2)), sample_weight=[0.25, 0.5])
    # channels that counted different numbers of values: the title gives the range
    x = rng.standard_normal((50, 3))
    x[:3, 0], x[:7, 2] = np.nan, np.nan
    omit = nbbn.channel_stats(x, channel_axis=1, nan_policy="omit")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "suptitle", spy)
        plot_stats(w, tmp_path / "w.png")
        plot_stats(omit, tmp_path / "o.png")
    assert titles == ["nbbn statistics: 2 channels, 0.75 values per channel",
                      "nbbn statistics: 3 channels, 43-50 values per channel"]


def test_channels_are_labelled_with_the_statistics_names(tmp_path, rng):
    """Without ``channel_names=``, the ticks carry ``stats.channel_names`` (a table's
    columns); an argument given wins."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    st = nbbn.RunningStats(1, channel_names=["red", "green", "blue"]).update(
        rng.standard_normal((20, 3)))
    labels = []
    orig = Axes.set_xticks

    def spy(self, ticks, labels_=None, **kw):
        labels.append(None if labels_ is None else list(labels_))
        return orig(self, ticks, labels_, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Axes, "set_xticks", spy)
        plot_stats(st, tmp_path / "a.png")
        plot_stats(st, tmp_path / "b.png", channel_names=["R", "G", "B"])
    assert labels == [["red", "green", "blue"], ["R", "G", "B"]]


def test_a_16_bit_histogram_is_drawn_in_256_bins_of_256_levels(tmp_path, rng):
    """Each line is the counts summed over 256 levels, at the bins' first levels
    (0, 256, ..., 65280) on the axis of 16-bit levels."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from nbbn._histogram import Histogram

    v = rng.integers(0, 65536, (500, 2)).astype(np.uint16)
    st = nbbn.RunningStats(-1)
    st.histogram = Histogram.empty(2, np.uint16)
    st.update(v)
    lines, marks = [], []
    orig, axvline = Axes.plot, Axes.axvline

    def spy(self, x, y, *args, **kw):
        lines.append((np.asarray(x), np.asarray(y)))
        return orig(self, x, y, *args, **kw)

    def spy_marks(self, x, *args, **kw):
        marks.append((len(lines) - 1, x))  # (the channel whose line was drawn last)
        return axvline(self, x, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Axes, "plot", spy)
        mp.setattr(Axes, "axvline", spy_marks)
        plot_histogram(st, tmp_path / "h.png")
    assert len(lines) == 2
    for c, (x, y) in enumerate(lines):
        np.testing.assert_array_equal(x, np.arange(0, 65536, 256))
        np.testing.assert_array_equal(y, np.bincount(v[:, c] // 256, minlength=256))
        # the 1st, 50th and 99th percentiles of the channel, at their 16-bit levels
        np.testing.assert_allclose([m for ch, m in marks if ch == c],
                                   np.percentile(v[:, c], [1, 50, 99]), rtol=1e-12)
    _check_png(tmp_path / "h.png", 5_000)


@pytest.mark.parametrize("ratio, log", [(150, True), (50, False)])
def test_log_scales_past_two_and_three_decades(tmp_path, ratio, log):
    """The std panel is log-scaled when the stds span more than two decades, the
    histogram when its counts span more than three (ratios of 150 / 50, 1500 / 500)."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from nbbn._histogram import Histogram

    scales = []
    orig = Axes.set_yscale

    def spy(self, value, **kw):
        scales.append(value)
        return orig(self, value, **kw)

    st = nbbn.channel_stats(np.array([[-1.0, -ratio], [1.0, ratio]]), channel_axis=1)
    assert st.std.tolist() == [1.0, ratio]
    x = np.zeros((10 * ratio + 1, 1), np.uint8)
    x[0] = 1  # levels 0 and 1 counted 10 * ratio and 1 times
    hs = nbbn.RunningStats(-1)
    hs.histogram = Histogram.empty(1, np.uint8)
    hs.update(x)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Axes, "set_yscale", spy)
        plot_stats(st, tmp_path / "s.png")
        assert scales == (["log"] if log else [])
        plot_histogram(hs, tmp_path / "h.png")
    assert scales == (["log", "log"] if log else [])


def test_cli_plot_names_undrawn_channels(tmp_path, rng, capsys):
    pytest.importorskip("matplotlib")
    x = rng.standard_normal((50, 3))
    x[:, 1] = np.nan
    nbbn.channel_stats(x, channel_axis=1, nan_policy="omit").save(tmp_path / "s.stats")
    assert main(["plot", str(tmp_path / "s.stats")]) == 0
    out = capsys.readouterr().out
    assert "not drawn: channel 1 (no values)" in out
    _check_png(tmp_path / "s.png", 5_000)


def test_cli_plot(tmp_path, rng, capsys):
    pytest.importorskip("matplotlib")
    stats = tmp_path / "stats.npz"
    _stats(512, rng).save(stats)
    out = tmp_path / "many.png"
    assert main(["plot", str(stats), "-o", str(out), "--title", "512 channels"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    _check_png(out, 10_000)
    # default output: next to the stats file
    assert main(["plot", str(stats)]) == 0
    _check_png(tmp_path / "stats.png", 10_000)


def _one_error_line(capsys, *needles: str) -> str:
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("nbbn plot: error: ")
    assert "Traceback" not in cap.err
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_cli_plot_user_errors(tmp_path, rng, capsys):
    stats = tmp_path / "stats.npz"
    _stats(3, rng).save(stats)
    assert main(["plot", str(tmp_path / "missing.npz")]) == 2
    _one_error_line(capsys, "missing.npz", "no such file")
    assert main(["plot", str(stats), "-o", str(tmp_path / "nowhere" / "x.png")]) == 2
    _one_error_line(capsys, "does not exist")
    np.save(tmp_path / "array.npy", np.zeros(3))
    assert main(["plot", str(tmp_path / "array.npy")]) == 2
    _one_error_line(capsys, "not an nbbn statistics file", "this is a .npy array")


def test_cli_plot_empty_stats(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    nbbn.RunningStats().save(tmp_path / "empty.npz")
    assert main(["plot", str(tmp_path / "empty.npz")]) == 2
    _one_error_line(capsys, "no channels")


def test_missing_matplotlib_names_the_extra(tmp_path, rng, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if absent
    with pytest.raises(PlotUnavailableError, match=r"pip install 'nbbn\[plot\]'"):
        plot_stats(_stats(3, rng), tmp_path / "x.png")
    stats = tmp_path / "stats.npz"
    _stats(3, rng).save(stats)
    assert main(["plot", str(stats)]) == 2
    _one_error_line(capsys, "matplotlib", "pip install 'nbbn[plot]'")
    assert not (tmp_path / "stats.png").exists()


def test_names_with_dollars_and_a_write_cut_short(tmp_path, rng, monkeypatch, capsys):
    """Names are drawn as text: two "$" in a column name made matplotlib's mathtext
    parser fail. A write cut short (Ctrl-C) leaves the previous PNG as it was: savefig
    wrote the file in place, and a truncated one replaced the good plot. --dpi has an
    upper bound (--dpi 10000 asked matplotlib for 14 GB)."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    out = tmp_path / "s.png"
    plot_stats(_stats(3, rng), out, channel_names=["spend_$ (total_$)", "$x$", "b"])
    _check_png(out, 5_000)
    good = out.read_bytes()

    def cut_short(self, fname, **kwargs):
        fname.write(good[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", cut_short)
    with pytest.raises(KeyboardInterrupt):
        plot_stats(_stats(3, rng), out)
    assert out.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["s.png"]
    monkeypatch.undo()
    _stats(3, rng).save(tmp_path / "s.npz")
    assert main(["plot", str(tmp_path / "s.npz"), "--dpi", "10000"]) == 2
    _one_error_line(capsys, "--dpi must be from 10 to 1000, got 10000")


def test_a_folder_named_as_the_png_is_refused_before_anything_is_written(tmp_path, rng,
                                                                        capsys):
    """-o naming a folder failed with "Is a directory" naming a temporary file the user
    never saw; a folder where the histogram figure goes failed after the statistics
    figure was written. Both are refused first, naming the folder, and nothing is
    written; plot_stats and plot_histogram name the folder too."""
    pytest.importorskip("matplotlib")
    from nbbn._histogram import Histogram

    st = nbbn.RunningStats(-1)
    st.histogram = Histogram.empty(3, np.uint8)
    st.update(rng.integers(0, 256, (50, 3)).astype(np.uint8))
    st.save(tmp_path / "s.npz")
    (tmp_path / "d.png").mkdir()
    assert main(["plot", str(tmp_path / "s.npz"), "-o", str(tmp_path / "d.png")]) == 2
    _one_error_line(capsys, f"-o {tmp_path / 'd.png'} is a folder; expected the path")
    (tmp_path / "e.histogram.png").mkdir()
    assert main(["plot", str(tmp_path / "s.npz"), "-o", str(tmp_path / "e.png")]) == 2
    _one_error_line(capsys, f"{tmp_path / 'e.histogram.png'} (the histogram figure of "
                    f"{tmp_path / 'e.png'}) is a folder")
    (tmp_path / "s.png").mkdir()
    assert main(["plot", str(tmp_path / "s.npz")]) == 2
    _one_error_line(capsys, f"{tmp_path / 's.png'} is a folder")
    for draw in (plot_stats, plot_histogram):
        with pytest.raises(IsADirectoryError, match=r"d\.png is a folder; expected"):
            draw(st, tmp_path / "d.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "d.png", "e.histogram.png", "s.npz", "s.png"]


def test_the_title_is_the_histogram_figures_too(tmp_path, rng, capsys):
    """``nbbn plot --title`` titled the statistics figure only: the histogram figure
    kept its fixed title. Both now carry it (the histogram's with what is drawn)."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from nbbn._histogram import Histogram

    st = nbbn.RunningStats(-1)
    st.histogram = Histogram.empty(3, np.uint8)
    st.update(rng.integers(0, 256, (50, 3)).astype(np.uint8))
    st.save(tmp_path / "s.npz")
    titles = []
    orig = Figure.suptitle

    def spy(self, t, *args, **kw):
        titles.append(t)
        return orig(self, t, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "suptitle", spy)
        assert main(["plot", str(tmp_path / "s.npz"), "--title", "cats $1"]) == 0
    assert titles[0] == "cats $1" and titles[1].startswith("cats $1\nhistogram per channel")
    assert (tmp_path / "s.histogram.png").stat().st_size > 1000
