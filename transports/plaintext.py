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

import functools
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from string import Template

WIDTH = 78  # RFC 5322 2.1.1: lines SHOULD be no more than 78 characters
_ALONE = re.compile(r"\s*\$(?:\w+|\{\w+\})\s*")


def fill_and_flow(template: Template, values: Mapping[str, object]) -> str:
    """`template` filled with `values` (a missing value is a KeyError), paragraphs re-wrapped."""
    strings = {key: str(value) for key, value in values.items()}
    lines: list[str] = []
    for block in _blocks((type(template), template.template)):
        if block.lines is not None:  # nothing to fill in: wrapped once, when first used
            lines.extend(block.lines)
        elif block.prose:
            lines.extend(_wrapped(block.template.substitute(strings)))
        else:
            lines.append(block.template.substitute(strings))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Block:
    """A paragraph of prose (its lines joined by spaces), or a line kept as it is."""

    template: Template
    prose: bool
    lines: tuple[str, ...] | None  # the block done, when it names no value


@functools.lru_cache(maxsize=64)
def _blocks(kind_and_source: tuple[type[Template], str]) -> tuple[_Block, ...]:
    """A template's paragraphs and kept lines (by its class and text), read once per template:
    reading and wrapping them again for each mail took most of the time of a portal
    notification's body (59 -> 25 us)."""
    kind, source = kind_and_source
    blocks: list[_Block] = []
    prose: list[str] = []

    def block(text: str, is_prose: bool) -> _Block:
        template = kind(text)
        if template.get_identifiers():
            return _Block(template, is_prose, None)
        done = template.substitute({})
        return _Block(template, is_prose, tuple(_wrapped(done)) if is_prose else (done,))

    for line in source.splitlines():
        if is_prose(line):
            prose.append(line.strip())
            continue
        if prose:
            blocks.append(block(" ".join(prose), True))
            prose.clear()
        blocks.append(block(line if line.strip() else "", False))
    if prose:
        blocks.append(block(" ".join(prose), True))
    return tuple(blocks)


def _wrapped(filled: str) -> list[str]:
    """A filled paragraph's lines: at most WIDTH characters, broken only at spaces."""
    return textwrap.wrap(filled, WIDTH, break_long_words=False, break_on_hyphens=False) or [""]


def is_prose(line: str) -> bool:
    """Whether a template line belongs to a paragraph that may be re-wrapped."""
    return (bool(line.strip()) and not line[0].isspace() and _ALONE.fullmatch(line) is None
            and any(ch.isalnum() for ch in line))
