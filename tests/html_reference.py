"""`policies.extract`'s HTML reading as first written, for the tests to compare with: the
whole markup at once, and a callback for each tag telling a block tag (a line break) from an
inline one (nothing)."""

from __future__ import annotations

import html
import re

from policies import extract

REFERENCE_TAG = re.compile(r"<\s*(/?)\s*([a-zA-Z0-9]*)[^<>]*>")
REFERENCE_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "td", "th", "table", "h1", "h2",
                                  "h3", "h4", "h5", "h6", "blockquote", "pre", "hr", "title",
                                  "body"})


def reference_tag_break(match: re.Match[str]) -> str:
    return "\n" if match.group(2).lower() in REFERENCE_BLOCK_TAGS else ""


def whole_html_to_text(markup: str) -> str:
    """What `html_to_text` gives, done over the whole markup at once, as first written (before
    it read long documents a piece at a time, and told tags apart without a callback)."""
    stripped = REFERENCE_TAG.sub(reference_tag_break, extract._COMMENT_MARKS.sub(" ", markup))
    return html.unescape(stripped)


def whole_tags(markup: str) -> str:
    """Every tag `whole_html_to_text` removes, one a line."""
    return "\n".join(m.group() for m in REFERENCE_TAG.finditer(
        extract._COMMENT_MARKS.sub(" ", markup)))
