"""The progress bar of :func:`nbbn.fit` and :func:`nbbn.transform`, and their status lines.

tqdm is imported only when a bar is shown. The bar counts bytes (so its rate reads in
GB/s) and shows the rows done as a postfix; on a terminal it redraws every 0.2 s,
into a log file every 5 s.
"""

from __future__ import annotations

import sys

__all__ = ["Progress", "say"]


def say(enabled: bool, msg: str) -> None:
    """Print ``nbbn: msg`` to stderr when ``enabled`` (the fit's ``progress``).

    Parameters
    ----------
    enabled : bool
        Print or not.
    msg : str
        The line, without the ``nbbn:`` prefix.
    """
    if not enabled or sys.stderr is None:  # (None: file descriptor 2 closed, `2>&-`)
        return
    tq = sys.modules.get("tqdm")
    if tq is not None and getattr(tq.tqdm, "_instances", None):
        tq.tqdm.write(f"nbbn: {msg}", file=sys.stderr)  # above a running bar, not over it
    else:
        print(f"nbbn: {msg}", file=sys.stderr, flush=True)


def counted(n: int, unit: str = "rows") -> str:
    """``n`` with its unit, singular for one: ``"3 images"``, ``"1 image"``, ``"1,024 rows"``.

    Parameters
    ----------
    n : int
        How many.
    unit : str, default "rows"
        The plural ("rows", or "images" for image files: one row each).

    Returns
    -------
    str
    """
    return f"{n:,} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


class Progress:
    """A tqdm bar counting bytes (so its rate reads in GB/s) with rows as a postfix.

    Parameters
    ----------
    enabled : bool
        False: every method does nothing (and tqdm is not imported).
    desc : str
        The bar's label (``"nbbn fit"``).
    total_bytes : int or None
        The bytes to go through (None: unknown, as for an iterable).
    initial_bytes, rows : int
        Bytes and rows already done (a resumed fit).
    unit : str, default "B"
        What the bar counts: bytes ("B", with rows as a postfix), or items of another
        unit (``"batch"``: no postfix, no unit scaling).
    noun : str, default "rows"
        What the postfix counts: "images" for image files (one row each).
    """

    def __init__(self, enabled: bool, desc: str, total_bytes: int | None, initial_bytes: int,
                 rows: int, unit: str = "B", noun: str = "rows") -> None:
        self.bar = None
        self.noun = noun
        self.rows = unit == "B"
        if not enabled or sys.stderr is None:  # (None: no stderr, `2>&-`: no bar)
            return
        from tqdm import tqdm

        tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.bar = tqdm(total=total_bytes, initial=initial_bytes, desc=desc, unit=unit,
                        unit_scale=self.rows, unit_divisor=1000, file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.2 if tty else 5.0, smoothing=0.1)
        if self.rows:
            self.bar.set_postfix_str(counted(rows, noun), refresh=False)

    def update(self, nbytes: int, rows: int) -> None:
        """Count ``nbytes`` more bytes; ``rows`` is the new total of rows.

        Parameters
        ----------
        nbytes : int
            Bytes of the batch just done (units, when the bar does not count bytes).
        rows : int
            Rows done in all.
        """
        if self.bar is not None:
            if self.rows:
                self.bar.set_postfix_str(counted(rows, self.noun), refresh=False)
            self.bar.update(nbytes)

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
