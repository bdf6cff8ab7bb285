"""Error messages spelled for Python or for the command line (``_wording``)."""

from __future__ import annotations

import sys

import pytest

from nbbn._wording import Param, add_note, spell, spell_notes, worded


def _cli(p: Param) -> str:
    return "--" + p.name.replace("_", "-")


def test_an_error_wrapped_with_context_keeps_its_own_wording():
    """``{error}`` holding a worded exception (a shard's error re-raised with the shard's
    name) is spelled by the same speller as the rest."""
    inner = worded(ValueError, "{batch_size} must be a positive integer",
                   batch_size=Param("batch_size"))
    outer = worded(ValueError, "{name}: {error}", name="a.npy", error=inner)
    assert str(outer) == "a.npy: batch_size must be a positive integer"
    assert spell(outer, _cli) == "a.npy: --batch-size must be a positive integer"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are Python 3.11+")
def test_notes_are_spelled_again_and_other_notes_kept():
    exc = ValueError("the read failed")
    add_note(exc, "nbbn: pass {resume} to continue", resume=Param("resume", True))
    exc.add_note("a note of another library")
    assert exc.__notes__[0] == "nbbn: pass resume=True to continue"
    assert spell_notes(exc, _cli) == ["nbbn: pass --resume to continue",
                                      "a note of another library"]
    assert spell_notes(ValueError("no notes"), _cli) == []
