"""Run ``nbbn`` with every durable rename delayed, to widen the window of a file write.

Usage: ``python tests/slow_writes.py SECONDS ARGS...`` runs ``nbbn ARGS...`` (as
``nbbn.cli.main``) after wrapping ``nbbn._durable._rename`` (the ``os.replace`` that
commits a checkpoint, statistics file or ``.npy`` output) so that it sleeps SECONDS
first: the temporary file then stays on disk long enough for a test to SIGKILL the
process in the middle of a write. A helper of the tests, not collected by pytest.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    from nbbn import _durable
    from nbbn.cli import main as nbbn_main

    delay = float(argv[0])
    rename = _durable._rename

    def slow_rename(src: str, dst: str) -> None:
        time.sleep(delay)
        rename(src, dst)

    _durable._rename = slow_rename
    return nbbn_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
