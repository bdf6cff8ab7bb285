"""The progress bar and status lines of ``nbbn.fit`` and ``nbbn.transform`` (``_progress``)."""

from __future__ import annotations

import io
import sys

import pytest

from nbbn._progress import Progress, say

pytest.importorskip("tqdm")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_lines_only_when_enabled(capsys):
    """``progress=False`` silences the status lines as well as the bar."""
    say(False, "reading x.npy")
    assert capsys.readouterr().err == ""
    say(True, "reading x.npy")
    assert capsys.readouterr().err == "nbbn: reading x.npy\n"


@pytest.mark.parametrize("stream,interval", [(io.StringIO, 5.0), (_Terminal, 0.2)])
def test_the_bar_redraws_rarely_into_a_log_file(monkeypatch, stream, interval):
    """On a terminal the bar redraws every 0.2 s; into a log file (stderr redirected)
    every 5 s, so that the log does not fill with bars."""
    monkeypatch.setattr(sys, "stderr", stream())
    bar = Progress(True, "nbbn fit", 1000, 0, 0)
    assert bar.bar.mininterval == interval
    bar.close()


def test_a_resumed_bar_starts_at_the_bytes_and_rows_done(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = Progress(True, "nbbn fit", 1000, 400, 40)
    assert bar.bar.n == 400
    bar.update(100, 50)
    bar.close()
    out = sys.stderr.getvalue()
    assert " 50%" in out and "50 rows" in out


def test_bytes_are_counted_in_powers_of_1000(monkeypatch):
    """The rate reads in GB/s, not GiB/s: the bar's prefixes are decimal."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = Progress(True, "nbbn fit", 2_000_000, 0, 0)
    bar.update(1_500_000, 12_345)
    bar.close()
    out = sys.stderr.getvalue()
    assert "1.50M/2.00M" in out and "12,345 rows" in out


def test_a_status_line_goes_above_a_running_bar(monkeypatch):
    """A status line printed while the bar runs (a skipped file) clears the bar's line
    first, rather than being appended to the bar."""
    import re

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = Progress(True, "nbbn fit", 1000, 0, 0)
    bar.update(100, 10)
    say(True, "skipped a.npy")
    bar.close()
    assert "nbbn: skipped a.npy" in re.split(r"[\r\n]", sys.stderr.getvalue())
