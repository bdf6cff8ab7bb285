"""How ``nbbn`` reports errors: one line in the command line's terms, and interruptions.

A user error of a subcommand that reads the user's files is printed as one line
``nbbn CMD: error: ...`` (exit status 2). Messages the library raised through
:mod:`nbbn._wording` name Python parameters (``resume=True``, ``batch_size``); here
they are spelled as the subcommand's options instead (``--resume``, ``--batch-size``),
found in the subcommand's parser by their ``dest``. Ctrl-C prints how far a fit got
and the exact command that resumes it.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import re
import shlex
from collections.abc import Callable, Sequence

from ._wording import Param, python_spelling, spell, spell_notes

__all__ = ["USER_DATA_COMMANDS", "USER_ERRORS", "ResultsNotWritten", "cli_speller",
           "interrupted_message", "one_line", "respelled"]

# Commands that read the user's files: their ValueError, TypeError, OSError and
# ImportError (a missing optional extra) are user errors, reported in one line.
USER_DATA_COMMANDS = ("fit", "transform", "info", "plot", "warmup")
USER_ERRORS = (ValueError, TypeError, OSError, ImportError)


class ResultsNotWritten(OSError):
    """The bench's ``--json`` could not be written after the run (its table is printed
    already): one line, exit 2, where it was a traceback."""


# How the library's Python parameter names read as options (see nbbn._wording): by
# default the subcommand's option with the same dest (batch_size -> --batch-size).
_PARAM_DESTS = {"out": "output", "stats_or_normalizer": "stats", "client": "scheduler"}


def cli_speller(sub: argparse.ArgumentParser | None) -> Callable[[Param], str]:
    """How a subcommand spells the library's parameters.

    Parameters
    ----------
    sub : argparse.ArgumentParser or None
        The subcommand's parser (None: only the library's spelling).

    Returns
    -------
    callable
        ``Param -> str``: ``--resume``, ``--batch-size 64``, ``no --key``,
        ``--key NAME``; a parameter the subcommand has no option for keeps the
        library's spelling (``key=0``).
    """
    actions = {a.dest: a for a in (sub._actions if sub is not None else [])}

    def speller(p: Param) -> str:
        action = actions.get(_PARAM_DESTS.get(p.name, p.name))
        if action is None:  # not an option of this command: the library's spelling
            return python_spelling(p)
        if not action.option_strings:  # a positional argument
            return str(p.value) if p.has_value else str(action.metavar or action.dest.upper())
        flag = action.option_strings[0]
        if p.placeholder is not None and not p.has_value:
            return f"{flag} {action.metavar or p.placeholder!s}"
        if not p.has_value:
            return flag
        if action.nargs == 0:  # an on/off flag: --resume
            return flag if p.value else f"no {flag}"
        if p.value is None:
            return f"no {flag}"
        if isinstance(p.value, (list, tuple)):  # names: comma-separated, as --columns reads them
            return _names_option(flag, [str(n) for n in p.value])
        return _option(flag, str(p.value))

    return speller


def _option(flag: str, value: str) -> str:
    """``flag value`` as typed in a shell: ``flag=value`` for a value that starts with
    '-' and is not a number (``--channel-axis -1`` reads), which argparse would take for
    an option (``--columns -x,-y``: "expected one argument")."""
    option = value.startswith("-") and not re.fullmatch(r"-\d+|-\d*\.\d+", value)
    return f"{flag}={shlex.quote(value)}" if option else f"{flag} {shlex.quote(value)}"


def _names_option(flag: str, names: list[str]) -> str:
    """The option naming the columns ``names``. A blank name is one only alone (the
    whole value is a column's name: ``--columns ''``); among others it is dropped as an
    empty entry, so the option names the others and says how to read them all."""
    blank = [n for n in names if not n.strip()]
    if not blank:
        return _option(flag, _comma_separated(names))
    if len(names) == 1:
        return _option(flag, names[0])
    kept = _option(flag, _comma_separated([n for n in names if n.strip()]))
    return (f"{kept} (which leaves out the column {blank[0]!r}: a blank name can be given "
            f"to {flag} only alone; nbbn.fit(path, columns={names!r}) reads them all)")


def _comma_separated(names: Sequence) -> str:
    """``names`` as one comma-separated CSV row (a name that holds a comma or a quote
    mark is quoted): how ``--columns`` takes a list."""
    text = io.StringIO()
    csv.writer(text, lineterminator="").writerow([str(n) for n in names])
    return text.getvalue()


def one_line(exc: BaseException, sub: argparse.ArgumentParser | None = None,
             keep: Sequence[str] = ()) -> str:
    """The error as one line in the command line's terms.

    Parameters
    ----------
    exc : BaseException
        The error.
    sub : argparse.ArgumentParser, optional
        The subcommand's parser: parameters named in the message are spelled as its
        options (``resume=True`` -> ``--resume``).
    keep : sequence of str, optional
        The command's own arguments: where the message repeats one (a path such as a
        partition folder ``workers=2``) it is not respelled.

    Returns
    -------
    str
        ``path: reason`` for an OSError with a file name, otherwise the message; its
        notes follow in parentheses; whitespace collapsed to single spaces.
    """
    speller = cli_speller(sub)
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = spell(exc, speller) or type(exc).__name__
    notes = spell_notes(exc, speller)
    if notes:
        text += " (" + " ".join(notes) + ")"
    return " ".join(_respell_literals(text, sub, speller, keep).split())


def respelled(lines: Sequence[str], sub: argparse.ArgumentParser | None,
              keep: Sequence[str] = ()) -> list[str]:
    """Messages kept as text (the reasons of ``RunningStats.skipped``) with
    ``name=value`` spelled as ``sub``'s options (``mode='RGB'`` -> ``--mode RGB``), as
    :func:`one_line` spells an error's; ``keep`` as there.

    Parameters
    ----------
    lines : sequence of str
        The messages.
    sub : argparse.ArgumentParser or None
        The subcommand's parser.
    keep : sequence of str, optional
        The command's own arguments, not respelled where a message repeats one.

    Returns
    -------
    list of str
        The messages, respelled.
    """
    speller = cli_speller(sub)
    return [_respell_literals(line, sub, speller, keep) for line in lines]


# ``name=<Python literal>`` in a message raised without nbbn._wording (nan_policy='raise'),
# after a space, a parenthesis or a quote mark, or at the start: not inside a path
_LITERAL = re.compile(r"(?<![\w/\\.=-])([a-z_]+)=('[^']*'|\"[^\"]*\"|True|False|None|"
                      r"-?\d+(?:\.\d+)?)(?![\w.])")


def _respell_literals(text: str, sub: argparse.ArgumentParser | None,
                      speller: Callable[[Param], str], keep: Sequence[str] = ()) -> str:
    """``text`` with ``name=value`` spelled as the option of ``sub`` whose dest is
    ``name`` (``nan_policy='raise'`` -> ``--nan-policy raise``); other names stay, and
    so do the strings of ``keep`` (the user's own arguments) where the text has them."""
    if sub is None:
        return text
    kept = sorted({k for k in keep if "=" in k and k in text}, key=len, reverse=True)
    if kept:  # (each one hidden behind a mark without letters while the rest is spelled)
        marks = {f"\x00{i}\x00": k for i, k in enumerate(kept)}
        for mark, k in marks.items():
            text = text.replace(k, mark)
        text = _respell_literals(text, sub, speller)
        for mark, k in marks.items():
            text = text.replace(mark, k)
        return text
    dests = {a.dest for a in sub._actions if a.option_strings}

    def repl(m: re.Match) -> str:
        name = _PARAM_DESTS.get(m.group(1), m.group(1))
        if name not in dests:
            return m.group(0)
        return speller(Param(m.group(1), ast.literal_eval(m.group(2))))

    return _LITERAL.sub(repl, text)


def interrupted_message(exc: KeyboardInterrupt, command: str, argv: list[str]) -> str:
    """How far an interrupted command got and, for a fit, the exact command that resumes it.

    Parameters
    ----------
    exc : KeyboardInterrupt
        The interruption (a :class:`~nbbn.FitInterrupted` after a fit's batch).
    command : str
        The subcommand (``"fit"``).
    argv : list of str
        The arguments after ``nbbn``, repeated in the resume command.

    Returns
    -------
    str
        The message for stderr.
    """
    from .errors import FitInterrupted

    if not isinstance(exc, FitInterrupted):
        return f"nbbn {command}: interrupted"
    unit = getattr(exc, "_unit", "rows")[:-1]  # ("images" for image files)
    rows = f"{exc.rows_done:,} {unit}{'s' * (exc.rows_done != 1)}"
    if exc.checkpoint is None:
        return (f"nbbn {command}: interrupted after {rows}; without "
                "--checkpoint the fit cannot be resumed")
    # (before a "--", after which argparse reads every word as SOURCE: a source named
    # "-x.npy" needs one, and "--resume" after it was a second source)
    sep = argv.index("--") if "--" in argv else len(argv)
    opts = argv[:sep]
    again = ["nbbn", *opts, *([] if "--resume" in opts else ["--resume"]), *argv[sep:]]
    return (f"nbbn {command}: interrupted after {rows}; progress saved in "
            f"{exc.checkpoint}. Resume with:\n  {shlex.join(again)}")
