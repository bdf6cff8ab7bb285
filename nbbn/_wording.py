"""Error messages that name a parameter, in Python's spelling or the command line's.

``nbbn.fit`` says "pass resume=True to continue it"; through ``nbbn fit`` the same
error must say "pass --resume". So the library raises such errors with :func:`worded`:
a message template whose parameter slots hold :class:`Param` objects. The exception's
text (``str(exc)``) is the Python spelling; the template and its fields travel with it
(attribute ``nbbn_wording``), and :func:`spell` renders them again with another
spelling, which the CLI does with its own option names (``nbbn.cli``). Notes added
with :func:`add_note` are kept the same way, and an error re-raised with context
(:func:`worded` with the original exception as a field) keeps its wording inside.

Errors raised without this module are rendered as they are, ``str(exc)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "add_note", "files_label", "python_spelling", "spell", "spell_notes",
           "worded"]

_NOTHING: Any = object()


@dataclass(frozen=True)
class Param:
    """A parameter named in a message, with the value it had or should have.

    Parameters
    ----------
    name : str
        The Python parameter name (``"batch_size"``).
    value : object, optional
        Its value in the message: ``Param("resume", True)`` reads ``resume=True`` in
        Python, ``--resume`` on the command line. Without a value (and without a
        placeholder) only the name is meant: ``batch_size`` / ``--batch-size``.
    placeholder : str, optional
        A value to be filled in by the user: ``Param("checkpoint", placeholder="PATH")``
        reads ``checkpoint=PATH``; the command line uses its option's own metavar.
    """

    name: str
    value: Any = _NOTHING
    placeholder: str | None = None

    @property
    def has_value(self) -> bool:
        """Whether the message names a value (not only the parameter).

        Returns
        -------
        bool
            True when ``value`` was given.
        """
        return self.value is not _NOTHING


def python_spelling(p: Param) -> str:
    """``name=value!r``, ``name=PLACEHOLDER`` or ``name``: how Python callers write it.

    Parameters
    ----------
    p : Param
        The parameter.

    Returns
    -------
    str
        The Python spelling.
    """
    if p.has_value:
        return f"{p.name}={p.value!r}"
    if p.placeholder is not None:
        return f"{p.name}={p.placeholder}"
    return p.name


def _render(template: str, fields: dict[str, Any], speller: Callable[[Param], str]) -> str:
    values = {}
    for k, v in fields.items():
        if isinstance(v, Param):
            v = speller(v)
        elif isinstance(v, BaseException):
            v = spell(v, speller)
        values[k] = v
    return template.format(**values)


def worded(exc_type: type[BaseException], template: str, **fields: Any) -> BaseException:
    """An exception whose message names parameters, renderable in another spelling.

    Parameters
    ----------
    exc_type : type
        The exception class; it is called with the message alone.
    template : str
        A ``str.format`` template; its fields may be :class:`Param` objects (rendered
        per spelling), exceptions (rendered with their own wording) or plain values.
    **fields
        The template's fields.

    Returns
    -------
    BaseException
        ``exc_type(message)`` in the Python spelling, carrying the template and fields.
    """
    exc = exc_type(_render(template, fields, python_spelling))
    exc.nbbn_wording = (template, fields)  # type: ignore[attr-defined]
    return exc


def add_note(exc: BaseException, template: str, **fields: Any) -> None:
    """Add a note (Python 3.11+; a no-op before) that :func:`spell` renders again.

    Parameters
    ----------
    exc : BaseException
        The exception to annotate.
    template : str
        As for :func:`worded`.
    **fields
        The template's fields.
    """
    if not hasattr(exc, "add_note"):
        return
    text = _render(template, fields, python_spelling)
    exc.add_note(text)
    notes = getattr(exc, "nbbn_notes", {})
    notes[text] = (template, fields)
    exc.nbbn_notes = notes  # type: ignore[attr-defined]


def spell(exc: BaseException, speller: Callable[[Param], str]) -> str:
    """The message of ``exc`` with its parameters spelled by ``speller``.

    Parameters
    ----------
    exc : BaseException
        Any exception; one not made by :func:`worded` gives ``str(exc)``.
    speller : callable
        ``Param -> str``, e.g. the command line's ``--batch-size 64``.

    Returns
    -------
    str
        The message.
    """
    wording = getattr(exc, "nbbn_wording", None)
    if wording is None:
        return str(exc)
    template, fields = wording
    return _render(template, fields, speller)


def spell_notes(exc: BaseException, speller: Callable[[Param], str]) -> list[str]:
    """The notes of ``exc``, those added by :func:`add_note` spelled by ``speller``.

    Parameters
    ----------
    exc : BaseException
        Any exception.
    speller : callable
        As for :func:`spell`.

    Returns
    -------
    list of str
        The notes in order (empty without notes).
    """
    known = getattr(exc, "nbbn_notes", {})
    out = []
    for note in getattr(exc, "__notes__", None) or ():
        if note in known:
            template, fields = known[note]
            out.append(_render(template, fields, speller))
        else:
            out.append(str(note))
    return out


def files_label(path: str, n: int) -> str:
    """A source's name in messages: ``path (3 files)``, ``path (1 file)``."""
    return f"{path} ({n} file{'s' * (n != 1)})"


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool: True, False, numpy's bools, and the integers 0 and 1;
    TypeError for anything else (``bool("False")`` is True: a flag given as a string,
    or None, was read by its truthiness).

    Parameters
    ----------
    value : object
        The flag given.
    name : str
        The parameter's Python name, for the message (spelled as an option on the
        command line).

    Returns
    -------
    bool
    """
    import numpy as np

    if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise worded(TypeError, "{flag} must be True or False, got {got!r}",
                 flag=Param(name), got=value)
