"""Plain-text email bodies from templates: fill in the values, then re-flow each paragraph.

Templates (built-in or an organisation's own) may be wrapped anywhere, and the names, dates
and links filled into them have any length, so `fill_and_flow` re-wraps every paragraph after
filling it: lines of at most `WIDTH` characters, broken only at spaces, so a long link or
address is never split (it may stand alone on a longer line). Lines that are not prose are
kept as they are, each filled on its own:

- a line that starts with a space or tab (an indented code, say);
- a line that is only a placeholder (`$link`, `$text`: a link, or text written by someone
  else, which is never re-wrapped);
- a line without letters or digits (a ruler such as `-----`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from string import Template

WIDTH = 78  # RFC 5322 2.1.1: lines SHOULD be no more than 78 characters
_ALONE = re.compile(r"\s*\$(?:\w+|\{\w+\})\s*")


def fill_and_flow(template: Template, values: Mapping[str, object]) -> str:
    """`template` filled with `values` (a missing value is a KeyError), paragraphs re-wrapped."""
    strings = {key: str(value) for key, value in values.items()}
    kind = type(template)
    lines: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            filled = kind(" ".join(prose)).substitute(strings)
            lines.extend(textwrap.wrap(filled, WIDTH, break_long_words=False,
                                       break_on_hyphens=False) or [""])
            prose.clear()

    for line in template.template.splitlines():
        if is_prose(line):
            prose.append(line.strip())
            continue
        flush()
        lines.append(kind(line).substitute(strings) if line.strip() else "")
    flush()
    return "\n".join(lines) + "\n"


def is_prose(line: str) -> bool:
    """Whether a template line belongs to a paragraph that may be re-wrapped."""
    return (bool(line.strip()) and not line[0].isspace() and _ALONE.fullmatch(line) is None
            and any(ch.isalnum() for ch in line))
