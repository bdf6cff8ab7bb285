"""mkdocs hooks of the nbbn documentation site (``hooks:`` in mkdocs.yml).

- ``<!-- nbbn-cli-help -->`` on a page expands into the ``--help`` of ``nbbn`` and of
  every subcommand, generated from the parser the command runs
  (``nbbn.cli.build_parser``), so the CLI reference cannot drift from the code.
- The docstrings use Sphinx cross-reference roles (``:class:`~nbbn.RunningStats```),
  which mkdocstrings renders literally; the role prefix is dropped from the HTML, leaving
  the name as code.
"""

from __future__ import annotations

import argparse
import os
import re

MARKER = "<!-- nbbn-cli-help -->"
WIDTH = "88"  # argparse wraps help text to $COLUMNS - 2
# ":class:" before "<code>~nbbn.RunningStats</code>" in rendered docstrings
_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj):(<code>)~?")


def _help_sections() -> str:
    from nbbn.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        parts = ["## nbbn", "", "```text", parser.format_help().rstrip(), "```", ""]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    parts += [f"## nbbn {name}", "", "```text", sub.format_help().rstrip(),
                              "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the marker on any page with the generated help sections."""
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, _help_sections())
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    """Drop Sphinx role prefixes (``:func:``, ``:class:`` ...) that docstrings carry."""
    return _ROLE.sub(r"\1", html)
