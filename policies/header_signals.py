"""What a message's headers say about it: explicit classification, protective markings,
auto-forwarding, the sender's overrides and display name, and header values with line breaks.

Header values are read through the stdlib's header registry (policy.default), never through
`email.utils` parsing (SECURITY.md: the interpreter predates CVE-2023-27043).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from functools import lru_cache

from policies import email_policy
from policies.content_rules import ContentRules, HeaderSignal, Markings
from policies.model import Override

_OVERRIDE = re.compile(r"\s*([a-z0-9]+(?:-[a-z0-9]+)*)\s*;\s*(\S.*?)\s*", re.DOTALL | re.I)
MIN_JUSTIFICATION = 10  # characters: "ok" is not an explanation (RRP 1.2)
MAX_JUSTIFICATION = 500  # characters kept for the audit trail
_PURVIEW_NAME = re.compile(r"MSIP_Label_[^;=]*_Name=([^;]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Headers:
    """The top-level headers the classifier reads, decoded once: lower-cased name -> values,
    in order; and whether any header at all decodes to a value with a line break."""

    values: Mapping[str, tuple[str, ...]]
    display_name: str  # of the first From address, or ""
    line_break: bool

    @classmethod
    def of(cls, message: EmailMessage, read: Collection[str]) -> Headers:
        """The headers named in `read` (lower-cased), decoded. Every other header is decoded
        only when its value could decode to something with a line break in it (parsing an
        address list costs more than the rest of classifying a short message)."""
        collected: dict[str, list[str]] = {}
        display_name = ""
        line_break = False
        for name, raw in message.raw_items():
            key = name.lower()
            if key not in read and not may_decode_to_line_break(raw):
                continue
            text, first_name = decoded(name, raw)
            line_break = line_break or "\r" in text or "\n" in text
            if key not in read:
                continue
            collected.setdefault(key, []).append(text)
            if key == "from" and not display_name:
                display_name = first_name
        return cls({k: tuple(v) for k, v in collected.items()}, display_name, line_break)

    def get(self, name: str) -> tuple[str, ...]:
        """Every value of a header, decoded, as text (only the headers this was made to read)."""
        return self.values.get(name.lower(), ())

    def has_line_break(self) -> bool:
        """Whether a decoded value carries CR or LF (CVE-2024-6923: refuse, never relay)."""
        return self.line_break


def decoded(name: str, raw: str) -> tuple[str, str]:
    """A header's value decoded to text by the header registry, and the display name of its
    first address (empty for a header that holds no addresses). Raises what the registry
    raises on hostile input."""
    if len(raw) > email_policy.MAX_REMEMBERED_VALUE:
        return _decode(name, raw)
    return _remembered_decode(name, raw)


def _decode(name: str, raw: str) -> tuple[str, str]:
    value = email_policy.DECODING.header_fetch_parse(name, raw)
    addresses = getattr(value, "addresses", ())
    return str(value), addresses[0].display_name if addresses else ""


# The same values come again and again: each sender's From, "MIME-Version: 1.0", a thread's
# Subject. Parsing one From costs as much as the rest of deciding on a short message, so a
# bounded number of short values are remembered (only the strings, not the parse trees).
_remembered_decode = lru_cache(maxsize=4096)(_decode)


def may_decode_to_line_break(raw: str) -> bool:
    """Whether the header registry could decode this raw value to text with CR or LF in it.

    Folding is undone before decoding (every CR and LF of the raw value is dropped), so a line
    break can only come from decoding: an RFC 2047 encoded word ("=?"), or an RFC 2231
    parameter ("name*=", percent-escapes, or a charset such as UTF-7 that spells CR in plain
    letters). A value with none of these three marks cannot decode to a line break.
    """
    return "=?" in raw or "*" in raw or "%" in raw


@dataclass(frozen=True)
class Classification:
    """The explicit classification header: a known information type, or unknown values."""

    information_type: str | None
    labels: tuple[str, ...]


def explicit_classification(headers: Headers, rules: ContentRules) -> Classification:
    """The first known information type named by a classification header."""
    known = set(rules.information_type_ids)
    found: str | None = None
    labels: list[str] = []
    for name in rules.classification_headers:
        for value in headers.get(name):
            type_id = value.strip().lower()
            if type_id in known:
                labels.append(f"classification:{type_id}")
                found = found or type_id
            else:
                labels.append("classification:unknown")
    return Classification(found, tuple(dict.fromkeys(labels)))


def _squash(text: str) -> str:
    """Upper-case letters and digits only, so "Official Sensitive" == "OFFICIAL-SENSITIVE"."""
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def _marking_label(text: str, markings: Markings) -> str | None:
    squashed = _squash(text)
    for marking in markings.protective:
        if _squash(marking) in squashed:
            return marking.lower().replace(" ", "-")
    return None


def protective_labels(headers: Headers, markings: Markings) -> tuple[str, ...]:
    """Protective markings present: Sensitivity, Purview labels, marking headers, subject."""
    labels: list[str] = []
    for value in headers.get(markings.sensitivity_header):
        sensitivity = value.strip().lower()
        if sensitivity in markings.protective_sensitivity:
            labels.append(f"sensitivity:{sensitivity}")
    for name in markings.label_headers:
        for value in headers.get(name):
            names = _PURVIEW_NAME.findall(value) or [value]
            for purview in filter(None, (_marking_label(n, markings) for n in names)):
                labels.append(f"purview:{purview}")
    for name in markings.marking_headers:
        for value in headers.get(name):
            marking = _marking_label(value, markings)
            if marking:
                labels.append(f"marking:{marking}")
    if markings.subject_markings:
        for value in headers.get("Subject"):
            marking = _marking_label(value, markings)
            if marking:
                labels.append(f"subject:{marking}")
    return tuple(dict.fromkeys(labels))


def is_auto_forwarded(headers: Headers, signals: tuple[HeaderSignal, ...]) -> bool:
    """Whether a header shows the message was forwarded by a rule rather than by a person."""
    for signal in signals:
        for value in headers.get(signal.header):
            if signal.contains.lower() in value.lower():
                return True
    return False


def overrides(headers: Headers, header: str, subject_tag: str = "") -> tuple[Override, ...]:
    """Overrides the sender recorded: `RULE-ID; justification` in the override header, and
    `[TAG RULE-ID: justification]` in the Subject when `subject_tag` is set (plain Outlook
    cannot add a header). Malformed ones are ignored; the engine checks the rule and length.
    """
    found = []
    for value in headers.get(header):
        match = _OVERRIDE.fullmatch(value)
        if match and len(match.group(2)) >= MIN_JUSTIFICATION:
            justification = match.group(2)[:MAX_JUSTIFICATION]
            found.append(Override(rule_id=match.group(1).lower(), justification=justification))
    if subject_tag:
        for value in headers.get("Subject"):
            found.extend(subject_overrides(value, subject_tag))
    return tuple(dict.fromkeys(found))


@lru_cache(maxsize=8)
def _tag_pattern(tag: str) -> re.Pattern[str]:
    """`[TAG RULE-ID: justification]`, any case, any whitespace (folds included) around parts.

    The justification runs to the first `]`. A tag with a short or empty justification still
    matches, so it is removed from the Subject and the engine can say why it was not applied.
    """
    return re.compile(
        r"\[\s*" + re.escape(tag) + r"\s+([a-z0-9]+(?:-[a-z0-9]+)*)\s*:([^\[\]]*)\]",
        re.IGNORECASE,
    )


def subject_overrides(subject: str, tag: str) -> tuple[Override, ...]:
    """The overrides tagged in one decoded Subject value, in order, without repeats."""
    found = []
    for match in _tag_pattern(tag).finditer(subject):
        justification = " ".join(match.group(2).split())[:MAX_JUSTIFICATION]
        found.append(Override(rule_id=match.group(1).lower(), justification=justification))
    return tuple(dict.fromkeys(found))


def strip_subject_tags(subject: str, tag: str) -> str:
    """`subject` without its override tags; everything else is kept exactly.

    The whitespace around a tag becomes one space between the words it separated, or nothing
    at either end, so no fold is left without the text it continued.
    """
    pattern = re.compile(r"\s*" + _tag_pattern(tag).pattern + r"\s*", re.IGNORECASE)
    pieces: list[str] = []
    last = 0
    for match in pattern.finditer(subject):
        pieces.append(subject[last:match.start()])
        at_edge = match.start() == 0 or match.end() == len(subject)
        pieces.append("" if at_edge else " ")
        last = match.end()
    pieces.append(subject[last:])
    return "".join(pieces)
