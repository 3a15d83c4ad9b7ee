"""Recognising, by what they are, the two kinds of information that may not leave as they are.

* **Original agency check results** (RRP App. 2, last row; RRP 4.7; DESIGN ruling 13): what the
  police, a local authority or a health body sent Cafcass in answer to its safeguarding checks.
  They may move inside the agency, never outside it, by any channel.
* **Privileged legal advice to Cafcass** (RRP Appendix 1, "Legal advice"; DESIGN ruling 20): it
  may go only to the lawyers the organisation instructs.

The explicit classification header names either type, and stays the strongest signal; this
module finds them when nobody said so. It works in two steps, because the text is read during
classification but the organisation's lists (which domains are police, local authority and
health; the legal team's addresses; the instructed lawyers' domains; the agency's own domains)
belong to the policy:

1. `scan` (called by policies/content.py on every text it read) finds `TextSignal`s, each with
   the author of the text it came from: "" for the sender's own words and attachments, the From
   address of an attached message (message/rfc822) for everything inside it, and, inside a body,
   the address of an inline forward or a quoted reply ("From: ... Sent: ... Subject:",
   "On ... wrote:"), which `segments` cuts out. "?" is an author whose address is not shown
   (Exchange writes colleagues by display name only).
2. `refine` (called by the engine) weighs the signals against the lists, and names the type.

How the agency-check signals were chosen. Ordinary case mail talks about checks all the time
("we have requested police checks", "the LA checks are outstanding") and Cafcass's own
safeguarding letters summarise their results ("the police told us that Mr X has a conviction"),
which Appendix 2 lets go to families and the court. What only an *original* carries is where it
came from and the form it came in: police, local-authority and health systems and references
(PNC ID, occurrence number, Police National Database, Liquidlogic, health visiting service), the
handling caveats agencies attach ("not to be disclosed without the consent of the police"), the
framing of an answer ("in response to your request", "systems searched"), and record fields
("Offence:", "Disposal:", "Date checked:"). So:

* a text is an original result (`check-document`) when it carries two such origin marks, or one
  with two outcomes or record fields, or three record fields with an outcome; any author;
* a text *reports* checks (`check-report`) when it speaks of checks or records and gives an
  outcome ("no trace", "known to children's social care", "convictions"); that is a result only
  when its author is a police, local-authority or health address (`refine`);
* the sender's own words *hand over* a result (`check-presented`) when a handing-over phrase
  ("please find attached", "below are") comes right before a result's name ("the police check
  results", "the PNC print"), with no "request", "form" or "summary" beside it.

tests/corpus_checks.py generates ordinary mail that mentions checks and realistic results; the
false-positive and detection figures of these rules on it are in tests/test_restricted_corpus.py
and `bench/bench_agency_checks.py`.

Legal advice is recognised from a marking ("legally privileged", "privileged and confidential",
"legal advice") in a subject or a heading (one of the first lines of a text, short enough to be
a heading: firms' disclaimers at the foot of an email are sentences, and are not headings), and
not right after a word that makes it a topic ("seek legal advice", "independent legal advice");
from the legal team's addresses as sender or as author of a forwarded message; and from the
header. A marking in text written by an outside address that is neither the legal team nor an
instructed lawyer (another party's solicitor's banner, quoted in a reply) is their privilege,
not Cafcass's, and does not count.

Pure: no I/O. Every pass over a text is linear in its length.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import Message
from itertools import accumulate
from typing import Any

import ahocorasick

from policies import normalise
from policies.errors import PolicyError
from policies.model import MessageFacts, TextSignal

AGENCY_CHECK_RESULT = "agency-check-result"
LEGAL_ADVICE = "legal-advice"

# Signal kinds.
CHECK_DOCUMENT = "check-document"
CHECK_PRESENTED = "check-presented"
CHECK_REPORT = "check-report"
LEGAL_MARKING = "legal-marking"

OWN = ""  # the author of the sender's own words and of attachments not inside another message
UNKNOWN = "?"  # an author named without an address

# Where a text came from, as policies/content.py names its sources.
SUBJECT = "subject"
ATTACHMENT_NAME = "attachment-name"

_MAX_SEGMENTS = 200  # inline forwards and quotes cut out of one body; the rest is one segment
_HEADER_WINDOW = 8  # lines after "From:" in which the rest of a forwarded header block must come


# ----------------------------------------------------------------------------------------------
# Configuration: [content.agency_checks] and [content.legal_advice]
# ----------------------------------------------------------------------------------------------


def words(text: str) -> str:
    """Lower-case letters and digits, every run of anything else one space; "&" is "and"; a
    plural "s" dropped (from words of more than three letters not ending in "ss"), so that
    "child in need plans" matches "child in need plan". Phrases and texts alike go through it.

    "Children’s Social Care" -> "children s social care"; "Privileged & Confidential" ->
    "privileged and confidential".
    """
    if len(text) <= _WORDS_SLICE:  # a line, a heading, a phrase: most calls
        return _slice_words(text).strip(" ")
    return "".join(_words_pieces([(text, 0, len(text))]))


# A stretch of a string, `text[start:end]`, read where it is: a long quoted reply's segment is
# not copied (issue 14: a quoted reply's memory).
Span = tuple[str, int, int]


def _whole(text: str) -> Span:
    return text, 0, len(text)


def _words_pieces(spans: Iterable[Span]) -> list[str]:
    """`words` of the spans' text, one after another, as pieces (`_words_stream`): joined,
    they are `words` of the text joined."""
    return list(_words_stream(spans))


def _words_stream(spans: Iterable[Span]) -> Iterator[str]:
    """`words` of the spans' text as pieces, given as they are written. Read a slice at a
    time (`_word_slices`, cut after a blank, so no word lies across a cut), each slice written
    by `_slice_words`; a space that ends one piece and starts the next is kept once, and the
    ends are stripped (a piece is given once the next says whether its end is the text's).
    Never the whole text twice: the pieces are all that grows, and only if they are kept."""
    held = ""  # the last piece written (none is empty)
    for chunk in _word_slices(spans):
        written = _slice_words(chunk)
        if written[:1] == " " and (not held or held[-1] == " "):
            written = written[1:]
        if written:
            if held:
                yield held
            held = written
    if held[-1:] == " ":
        held = held[:-1]
    if held:
        yield held


def _word_slices(spans: Iterable[Span]) -> Iterator[str]:
    """The spans' text, one after another, in slices of about `_WORDS_SLICE` characters, each
    ending just after a space or a line break (the last at the text's end): `words` of the
    slices, a run of spaces at each cut squeezed, is `words` of the text. A word longer than
    a slice is carried on until a blank ends it."""
    carry = ""
    for text, start, end in spans:
        while start < end:
            stop = min(end, start + _WORDS_SLICE)
            piece = text[start:stop]
            start = stop
            cut = max(piece.rfind(" "), piece.rfind("\n"))
            if cut == -1:
                carry += piece
                continue
            yield carry + piece[:cut + 1]
            carry = piece[cut + 1:]
    if carry:
        yield carry


def _slice_words(text: str) -> str:
    """`words` of one slice of a text, its ends not stripped: lower-cased, every run of other
    characters one space, plurals dropped. An ASCII slice in bytes at C speed: lower-cased and
    every other character a space in one `translate`, runs of spaces squeezed by `replace`
    (each pass halves them: faster here than a regex or split and join)."""
    if not text.isascii():
        lowered = text.lower().replace("&", " and ")
        return _PLURAL.sub("", _NOT_WORD.sub(" ", lowered))
    data = text.encode("ascii")
    if b"&" in data:
        data = data.replace(b"&", b" and ")
    data = data.translate(_ASCII_WORDS)
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return _PLURAL_BYTES.sub(b"", data).decode("ascii")


# Characters of text `words` reads at a time: `re.sub` holds every piece between two of its
# matches as an object of its own, several times the text for prose, so a long text is
# written a slice at a time (64K characters: 0.54x a 1 MB text of case notes for a moment,
# once its words were no longer held whole; 16K: 0.17x, as fast).
_WORDS_SLICE = 1 << 14


class _Padded:
    """" " + `words` + " " of a long text, as the parts `_padded_parts` gave, read as one
    string (its length and slices) by `_handed_over`: joined, the parts and the text would be
    held at once, twice a long quoted reply."""

    def __init__(self, pieces: list[str]) -> None:
        self._pieces = pieces
        self._starts = list(accumulate((len(p) for p in pieces), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, wanted: slice) -> str:
        start, stop, _ = wanted.indices(len(self))
        found = []
        index = bisect_right(self._starts, start) - 1
        while start < stop:
            offset = self._starts[index]
            found.append(self._pieces[index][start - offset:stop - offset])
            start = self._starts[index + 1]
            index += 1
        return "".join(found)


def _padded_words(spans: Iterable[Span]) -> str | _Padded:
    """" " + `words` of the spans' text + " ", held (`_handed_over` reads it where it likes):
    joined when short, else the parts read as one string."""
    parts = list(_padded_parts(spans))
    return "".join(parts) if sum(map(len, parts)) <= _WORDS_SLICE else _Padded(parts)


def _padded_parts(spans: Iterable[Span]) -> Iterator[str]:
    """" " + `words` of the spans' text + " ", as parts given one after another as they are
    written, for `_parts_hits` to read without the padded text ever whole."""
    pieces = _words_stream(spans)
    held = " " + next(pieces, "")  # the padding, then the last piece written
    for piece in pieces:
        yield held
        held = piece
    yield held + " "


def _singular(word: str) -> str:
    """One word as `words` leaves it."""
    return word[:-1] if len(word) > 3 and word[-1] == "s" and word[-2] != "s" else word


# The "s" ending a word of more than three letters, not "ss" (found from the "s": fast).
_PLURAL = re.compile(r"s(?= |$)(?<=[a-z0-9]{2}[a-rt-z0-9]s)")
_PLURAL_BYTES = re.compile(_PLURAL.pattern.encode("ascii"))
# Lower-case letters and digits as they are, upper-case letters lower-cased, the rest spaces.
_ASCII_WORDS = bytes(ord(chr(c).lower()) if chr(c) in "abcdefghijklmnopqrstuvwxyz0123456789"
                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ" else 0x20 for c in range(256))


_NOT_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class AgencyCheckMarks:
    """The phrases that tell an original agency check result from talk about checks."""

    outcomes: tuple[str, ...] = ()  # what a check found ("no trace", "convictions")
    origin_marks: tuple[str, ...] = ()  # what only an agency's original carries
    caveats: tuple[str, ...] = ()  # handling caveats: together one origin mark at most
    letterheads: tuple[str, ...] = ()  # the teams that answer checks: together one at most
    titles: tuple[str, ...] = ()  # a result's name as the heading of a document it heads
    record_fields: tuple[str, ...] = ()  # a result's fields, at a line start before a colon
    handing_over: tuple[str, ...] = ()  # "please find attached": the sender gives something
    results: tuple[str, ...] = ()  # what a result is called ("the police check results")
    not_handed: tuple[str, ...] = ()  # words beside a result's name that make it something else
    _automaton: Any = field(init=False, repr=False, compare=False)
    _fields: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # The characters a label begins with (lower-case ASCII): `_sub_fields` skips a line that
    # begins with another ASCII character without trying `_fields` on it.
    _field_starts: frozenset[str] = field(init=False, repr=False, compare=False)
    # `titles` and `not_handed` as `words` writes them, made once (read for every text)
    title_words: frozenset[str] = field(init=False, repr=False, compare=False)
    not_handed_words: frozenset[str] = field(init=False, repr=False, compare=False)
    # The words of the phrases, each a pattern the scan engine (policies/scan.py) looks for in
    # each text's single pass, and each phrase as the set of its words' indexes (`PhraseGate`).
    gate: PhraseGate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "title_words", frozenset(words(t) for t in self.titles))
        object.__setattr__(self, "not_handed_words",
                           frozenset(words(w) for w in self.not_handed))
        groups = {"outcome": self.outcomes,
                  "origin": self.origin_marks, "caveat": self.caveats,
                  "letterhead": self.letterheads,
                  "handing": self.handing_over,
                  "result": self.results}
        object.__setattr__(self, "_automaton", _automaton(groups))
        object.__setattr__(self, "gate", PhraseGate.of(groups))
        # A label's words as written ("Date of conviction"), each with or without a plural
        # "s", with any spaces or punctuation between them (a label is matched in the raw text).
        labels = sorted({tuple(_NOT_WORD.split(f.lower().replace("&", " and ")))
                         for f in self.record_fields}, key=len, reverse=True)
        alternatives = "|".join(r"[^\w\n]+".join(re.escape(_singular(w)) + "s?"
                                                  for w in label if w)
                                for label in labels if any(label)) or "(?!)"
        object.__setattr__(self, "_field_starts", frozenset(
            next(w for w in label if w)[0] for label in labels if any(label)))
        object.__setattr__(self, "_fields", re.compile(
            r"^[ \t>|*]*(" + alternatives + r")(?:[ \t]*\(s\))?[ \t]*:[ \t]*(.*)$",
            re.I | re.M))


@dataclass(frozen=True)
class LegalAdviceMarks:
    """The markings of privileged legal advice, and where they count."""

    markings: tuple[str, ...] = ()
    not_after: tuple[str, ...] = ()  # a word right before a marking that makes it a topic
    heading_lines: int = 3  # the first non-empty lines of a text that may be its heading
    heading_words: int = 10  # a longer line is a sentence, not a heading
    _automaton: Any = field(init=False, repr=False, compare=False)
    not_after_words: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_automaton", _automaton({"marking": self.markings}))
        object.__setattr__(self, "not_after_words", frozenset(words(w) for w in self.not_after))


def _automaton(groups: Mapping[str, Iterable[str]]) -> Any:
    """One Aho-Corasick automaton for every phrase of every group: " phrase " -> its groups.

    The text is searched as " " + words(text) + " ", so a phrase only matches whole words.
    """
    phrases: dict[str, set[str]] = {}
    for group, listed in groups.items():
        for phrase in listed:
            normal = words(phrase)
            if normal:
                phrases.setdefault(normal, set()).add(group)
    automaton = ahocorasick.Automaton()
    for normal, found_in in phrases.items():
        automaton.add_word(f" {normal} ", (normal, frozenset(found_in)))
    if len(automaton):
        automaton.make_automaton()
    return automaton


_GATE_WORD = 3
# Three-letter words in every text: looking for them says nothing and costs the scan engine.
_GATE_COMMON = frozenset({"all", "any", "are", "but", "can", "did", "for", "had", "has", "her",
                          "his", "its", "may", "new", "non", "not", "now", "off", "one", "our",
                          "out", "own", "per", "see", "she", "the", "two", "via", "was", "who",
                          "you"})


@dataclass(frozen=True)
class PhraseGate:
    """Whether a text may hold one of the phrases `_automaton(groups)` looks for, from which
    of the phrases' words occur in it: every word of some phrase must (lower-cased, anywhere).

    Sound because every word the automaton reads is, lower-cased, part of the text: `words`
    only lower-cases, turns other characters into spaces and drops a final "s" (the phrases'
    words are written the same way, so a word's stem is in the text), and what
    `_agency_signals` removes first (quote marks, a field's name, a form's open choices) is
    removed at a line's start or replaced by a space, so that no word is glued from two. "and"
    is not looked for ("&" writes it), nor, in a phrase with a longer word, words shorter than
    `_GATE_WORD` letters ("s", "no") or common three-letter ones (`_GATE_COMMON`: "the",
    "our"): in every text, and slow to look for. Other three-letter words are looked for:
    "PNC number" must not open on every text that says "number". Non-ASCII
    letters that lower-case to ASCII ones (the Kelvin sign) are the scan engine's business: it
    answers "present" for a text with one.
    """

    words: tuple[re.Pattern[str], ...] = ()
    phrases: tuple[frozenset[int], ...] = ()
    # The phrases by their first word: only those whose first word is present are compared.
    _by_first: Mapping[int, tuple[frozenset[int], ...]] = field(init=False, repr=False,
                                                               compare=False)

    def __post_init__(self) -> None:
        by_first: dict[int, list[frozenset[int]]] = {}
        for phrase in self.phrases:
            by_first.setdefault(min(phrase, default=-1), []).append(phrase)
        object.__setattr__(self, "_by_first", {i: tuple(p) for i, p in by_first.items()})

    @classmethod
    def of(cls, groups: Mapping[str, Iterable[str]]) -> PhraseGate:
        index: dict[str, int] = {}
        phrases: set[frozenset[int]] = set()
        for listed in groups.values():
            for phrase in listed:
                looked_for = [w for w in words(phrase).split() if w != "and"]
                telling = [w for w in looked_for
                           if len(w) >= _GATE_WORD and w not in _GATE_COMMON]
                if telling:
                    looked_for = telling
                phrases.add(frozenset(index.setdefault(w, len(index)) for w in looked_for))
        return cls(tuple(re.compile(re.escape(w), re.IGNORECASE) for w in index),
                   tuple(sorted(phrases, key=sorted)))

    def open(self, present: Callable[[re.Pattern[str]], bool]) -> bool:
        """Whether a phrase may be in a text, given which of `words` may be in it."""
        return self.open_among({i for i, word in enumerate(self.words) if present(word)})

    def open_among(self, present: set[int] | None) -> bool:
        """`open`, given the indexes of the `words` that may be in a text (None: all)."""
        if present is None or -1 in self._by_first:  # a phrase of "and" only: always open
            return True
        return any(phrase <= present for first in present
                   for phrase in self._by_first.get(first, ()))


_HITS_SLICE = 1 << 14  # characters of text given to the automaton at a time


def _hits(automaton: Any, padded: str) -> Iterator[tuple[int, int, str, frozenset[str]]]:
    """(start, end, phrase, groups) of every phrase in a padded text; start/end exclude the
    padding spaces, so `padded[start:end] == phrase` (`_parts_hits` of the one part)."""
    return _parts_hits(automaton, (padded,))


def _parts_hits(automaton: Any, parts: Iterable[str]
                ) -> Iterator[tuple[int, int, str, frozenset[str]]]:
    """`_hits` of the padded text the parts make, one after another.

    pyahocorasick copies the text it searches at 4 bytes a character, so a long text is fed
    in slices of `_HITS_SLICE`: each slice reports the phrases that end in its own stretch of
    the text, and is read after the last characters before it, as many as the longest phrase
    (the automaton is then in the state a single pass would have it in): so no phrase is lost
    or found twice at a slice's edge, and the phrases come in the same order as from one
    pass."""
    if not len(automaton):
        return
    before = ""  # the slice before this one, then as much of its end as the longest phrase
    own_from = 0  # where the slice starts in the padded text
    overlap: int | None = None  # the longest phrase (asked for once a second slice comes)
    for part in parts:
        for at in range(0, len(part), _HITS_SLICE):
            own = part[at:at + _HITS_SLICE]
            if own_from:
                if overlap is None:
                    overlap = automaton.get_stats()["longest_word"]
                before = before[max(0, len(before) - overlap):]
            piece = before + own
            begin = own_from - len(before)
            for last, (phrase, groups) in automaton.iter(piece):
                if begin + last >= own_from:  # an earlier slice reported the others
                    end = begin + last  # the index of the trailing space
                    yield end - len(phrase), end, phrase, groups
            own_from += len(own)
            before = piece


class _Reader:
    """Validates one of this module's tables; every problem names the source and dotted key."""

    def __init__(self, source: str, prefix: str, table: object) -> None:
        self.source, self.prefix = source, prefix
        if not isinstance(table, Mapping):
            raise self.fail("", "must be a table")
        self.table: Mapping[str, Any] = table

    def fail(self, key: str, problem: str) -> PolicyError:
        dotted = f"{self.prefix}.{key}" if key else self.prefix
        return PolicyError(f"{self.source}: {dotted}: {problem}")

    def check_keys(self, allowed: Iterable[str], required: bool) -> None:
        allowed = set(allowed)
        for key in self.table:
            if key not in allowed:
                raise self.fail(str(key), "unknown key")
        if required:
            for key in sorted(allowed - set(self.table)):
                raise self.fail(key, "missing")

    def phrases(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and words(v)
                                                  for v in value):
            raise self.fail(key, "must be a list of phrases with letters or digits in them")
        return tuple(value)

    def count(self, key: str, default: int) -> int:
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.fail(key, "must be a whole number of at least 1")
        return value


_AGENCY_KEYS = ("outcomes", "origin_marks", "caveats", "letterheads", "titles",
                "record_fields", "handing_over",
                "results", "not_handed")


def agency_check_marks(table: object, source: str, base: AgencyCheckMarks | None,
                       required: bool) -> AgencyCheckMarks:
    """`[content.agency_checks]` validated; keys left out keep `base`'s values."""
    start = base or AgencyCheckMarks()
    if table is None and not required:
        return start
    reader = _Reader(source, "content.agency_checks", table)
    reader.check_keys(_AGENCY_KEYS, required)
    return AgencyCheckMarks(**{key: reader.phrases(key, getattr(start, key))
                               for key in _AGENCY_KEYS})


def legal_advice_marks(table: object, source: str, base: LegalAdviceMarks | None,
                       required: bool) -> LegalAdviceMarks:
    """`[content.legal_advice]` validated; keys left out keep `base`'s values."""
    start = base or LegalAdviceMarks()
    if table is None and not required:
        return start
    reader = _Reader(source, "content.legal_advice", table)
    reader.check_keys(("markings", "not_after", "heading_lines", "heading_words"), required)
    return LegalAdviceMarks(
        markings=reader.phrases("markings", start.markings),
        not_after=reader.phrases("not_after", start.not_after),
        heading_lines=reader.count("heading_lines", start.heading_lines),
        heading_words=reader.count("heading_words", start.heading_words),
    )


# ----------------------------------------------------------------------------------------------
# Authors: attached messages, inline forwards and quoted replies
# ----------------------------------------------------------------------------------------------

_ADDRESS = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_BRACKETED = re.compile(r"<\s*(?:mailto:)?([^<>\s@]+@[^<>\s]+?)\s*>", re.I)


def address_in(value: str) -> str:
    """The address a From value names (the bracketed one first), lower-cased; UNKNOWN if none."""
    bracketed = _BRACKETED.search(value)
    if bracketed is not None and _ADDRESS.fullmatch(bracketed.group(1)):
        return bracketed.group(1).lower()
    bare = _ADDRESS.search(value)
    return bare.group().lower() if bare is not None else UNKNOWN


def message_author(message: Message) -> str:
    """The From address of an attached message, read from its raw value (no address parser)."""
    for name, raw in message.raw_items():
        if name.lower() == "from":
            return address_in(str(raw))
    return UNKNOWN


def part_authors(message: Message, max_parts: int, max_depth: int) -> dict[int, str]:
    """id(part) -> the author of the innermost attached message holding it (only parts inside
    one), walking the tree as policies/mime.walk does, within the same limits."""
    authors: dict[int, str] = {}
    stack: list[tuple[Message, int, str]] = [(message, 0, OWN)]
    visited = 0
    while stack and visited < max_parts:
        part, depth, author = stack.pop()
        visited += 1
        if author != OWN:
            authors[id(part)] = author
        if depth >= max_depth or not part.is_multipart():
            continue
        children = part.get_payload()
        if not isinstance(children, list):
            continue
        inner = part.get_content_maintype() == "message"
        for child in reversed(children):
            if isinstance(child, Message):
                stack.append((child, depth + 1, message_author(child) if inner else author))
    return authors


_FROM_LINE = re.compile(r"[ \t>]*\**[ \t]*from\**[ \t]*:\**[ \t]*(.*)", re.I)
_HEADER_LINE = re.compile(r"[ \t>]*\**[ \t]*(sent|date|to|cc|subject)\**[ \t]*:\**[ \t]*(.*)",
                          re.I)
_WROTE = re.compile(r"[ \t>]*on\b.{0,300}\bwrote:?[ \t]*", re.I)


@dataclass(frozen=True)
class Segment:
    """A stretch of a body written by one author, `body[start:end]` (None: to its end), read
    where it is; `subject` from its forwarded header block."""

    author: str
    subject: str
    body: str
    start: int = 0
    end: int | None = None

    @property
    def span(self) -> Span:
        return self.body, self.start, len(self.body) if self.end is None else self.end

    @property
    def text(self) -> str:
        """The stretch as a string of its own: the body itself when it is all of it."""
        return self.body[self.start:self.end]


def segments(text: str, author: str = OWN, quotes: bool = True) -> list[Segment]:
    """The body cut at each inline forward or quoted reply, with who wrote each piece; each
    piece a stretch of the body, not a copy (a long quoted reply is most of its body).
    `quotes` False says the text holds neither "from" nor "wrote" in any case (the scan
    engine's `QUOTE_WORDS`): then it is one piece, found without reading it."""
    candidates = _candidate_lines(text) if quotes else []
    if not candidates:  # most bodies: one author, found at C speed
        return [Segment(author, "", text)] if not _blank(text) else []
    if candidates is _EVERY_LINE:
        return _segments_by_line(text, author)
    found: list[Segment] = []
    current_author, current_subject, start = author, "", 0
    for at in candidates:
        if at < start or len(found) >= _MAX_SEGMENTS:
            continue  # inside the header block just read
        block = _block_at(text, at)
        if block is None:
            continue
        new_author, subject, body_from = block
        found.append(Segment(current_author, current_subject, text, start, max(start, at - 1)))
        current_author, current_subject, start = new_author, subject, body_from
    end = len(text) - text.endswith("\n")  # as "\n".join(text.splitlines()[line:]) ends
    found.append(Segment(current_author, current_subject, text, start, max(start, end)))
    return [s for s in found if s.subject or not _blank_span(s.span)]


def _block_at(text: str, at: int) -> tuple[str, str, int] | None:
    """(author, subject, where its text begins) for the forwarded header block or the
    "... wrote:" line beginning at `at`, a line's start; else None."""
    lines: list[tuple[int, str]] = []  # (start, line) of the line at `at` and a few after
    line_start = at
    while line_start <= len(text) and len(lines) <= _HEADER_WINDOW:
        line_end = text.find("\n", line_start)
        line_end = len(text) if line_end == -1 else line_end
        if not lines and line_end - at >= 1000:
            return None  # no header, nor a line saying who wrote what follows
        lines.append((line_start, text[line_start:line_end]))
        line_start = line_end + 1
    block = (_forward_block([line for _, line in lines], 0)
             or _reply_line(lines[0][1], 0))
    if block is None:
        return None
    author, subject, after = block
    return author, subject, lines[after][0] if after < len(lines) else min(line_start,
                                                                            len(text))


def _segments_by_line(text: str, author: str) -> list[Segment]:
    """`segments` of a text with line breaks other than "\n" (not folded: folded text has
    none), walking every line; each piece a copy."""
    lines = text.splitlines()
    found: list[Segment] = []
    current_author, current_subject, start = author, "", 0
    for index, line in enumerate(lines):
        if index < start or len(found) >= _MAX_SEGMENTS or len(line) >= 1000:
            continue
        block = _forward_block(lines, index) or _reply_line(line, index)
        if block is None:
            continue
        new_author, subject, body_from = block
        found.append(Segment(current_author, current_subject, "\n".join(lines[start:index])))
        current_author, current_subject, start = new_author, subject, body_from
    found.append(Segment(current_author, current_subject, "\n".join(lines[start:])))
    return [s for s in found if s.text.strip() or s.subject]


def _blank(text: str) -> bool:
    """`not text.strip()`, without copying the text."""
    return not text or text.isspace()


def _blank_span(span: Span) -> bool:
    """`_blank` of a stretch of a text, without copying it."""
    text, start, end = span
    return _NOT_BLANK.search(text, start, end) is None


_NOT_BLANK = re.compile(r"\S")


def _first_lines(span: Span, size: int = 4096) -> Iterator[str]:
    """`text[start:end].splitlines()`, lazily: for reading the first lines of a long text
    without splitting all of it. A line that may go on past the part split so far is held
    back."""
    text, start, end = span
    done = 0
    while True:
        lines = text[start:min(end, start + size)].splitlines()
        if size >= end - start:
            yield from lines[done:]
            return
        yield from lines[done:-1]
        done = max(done, len(lines) - 1)
        size *= 4


def _candidate_lines(text: str) -> list[int]:
    """Where the lines begin that may open a forwarded header block ("From:" after blanks or
    quote marks) or end a quoted reply's line ("... wrote:"), in order; `_EVERY_LINE` when the
    text has line breaks other than "\n" (folded text has none). The two words are found with
    str.find in the text lower-cased: C speed, and no regex tried at every position. Text with
    other than ASCII is lower-cased a slice of lines at a time: `str.lower` holds four bytes
    for each character it may write, three for each character of such a text."""
    starts: list[int] = []
    seen = False  # either word
    slices = (normalise.line_slices(text, _LOWER_SLICE) if not text.isascii()
              else [(0, len(text))])
    for offset, end in slices:
        lowered = text[offset:end].lower()
        if len(lowered) != end - offset:
            return _EVERY_LINE  # ("İ" lower-cases to two characters)
        for word, opens in (("from", True), ("wrote", False)):
            at = lowered.find(word)
            seen = seen or at != -1
            while at != -1:
                line_start = lowered.rfind("\n", 0, at) + 1
                line_end = lowered.find("\n", at)
                line_end = len(lowered) if line_end == -1 else line_end
                if (_BEFORE_FROM.fullmatch(lowered, line_start, at) if opens
                        else _AFTER_WROTE.fullmatch(lowered, at + len(word), line_end)):
                    starts.append(offset + line_start)
                at = lowered.find(word, at + len(word))
    if not seen:
        return []
    if any(mark in text for mark in _OTHER_BREAKS):
        return _EVERY_LINE
    return sorted(set(starts))


_LOWER_SLICE = 1 << 16  # characters of non-ASCII text `_candidate_lines` lower-cases at a time
# What a forward or a reply is found from (`_candidate_lines`), for the scan engine.
QUOTE_WORDS = re.compile("from|wrote", re.IGNORECASE)
_BEFORE_FROM = re.compile(r"[ \t>]*\**[ \t]*")
_AFTER_WROTE = re.compile(r":?[ \t]*")
_EVERY_LINE: list[int] = [-1]  # a marker: walk every line
_OTHER_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _forward_block(lines: Sequence[str], index: int) -> tuple[str, str, int] | None:
    """(author, subject, first line after the block) for a "From:" line that opens a header
    block (Sent/Date/To/Cc/Subject lines follow within a few lines), else None."""
    match = _FROM_LINE.fullmatch(lines[index])
    if match is None:
        return None
    subject, last, seen = "", index, 0
    for at in range(index + 1, min(len(lines), index + 1 + _HEADER_WINDOW)):
        header = _HEADER_LINE.fullmatch(lines[at])
        if header is not None:
            seen += 1
            last = at
            if header.group(1).lower() == "subject":
                subject = header.group(2)
        elif lines[at].strip() and seen:
            break
    if not seen:
        return None
    return address_in(match.group(1)), subject, last + 1


def _reply_line(line: str, index: int) -> tuple[str, str, int] | None:
    if _WROTE.fullmatch(line) is None:
        return None
    return address_in(line), "", index + 1


# ----------------------------------------------------------------------------------------------
# Scanning texts
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One text classification read, where it came from and who wrote it."""

    source: str  # policies/content.py's source names: subject, body, attachment-name, ...
    text: str
    author: str = OWN
    # False when the scan engine saw no word of `AgencyCheckMarks.gate` in the text: then no
    # phrase is in it, and only a document's title and record fields are read.
    phrases: bool = True
    # False when the scan engine saw neither "from" nor "wrote" (`QUOTE_WORDS`): a body
    # without either holds no inline forward or quoted reply.
    quotes: bool = True


@dataclass(frozen=True)
class Scan:
    """What `scan` found: the signals, and every author of a forwarded or quoted text."""

    signals: tuple[TextSignal, ...]
    authors: tuple[str, ...]


def scan(units: Iterable[Unit], agency: AgencyCheckMarks, legal: LegalAdviceMarks) -> Scan:
    """The signals of every text, each with its author (bodies cut into `segments`)."""
    read: list[tuple[Unit, list[Segment]]] = []
    for unit in units:
        if unit.source in (SUBJECT, ATTACHMENT_NAME):
            pieces = [Segment(unit.author, unit.text, "")]
        elif unit.source == "body":
            pieces = segments(unit.text, unit.author, unit.quotes)
        else:
            pieces = [Segment(unit.author, "", unit.text)]
        read.append((unit, pieces))
    signals: dict[TextSignal, None] = {}
    authors: dict[str, None] = {}
    for unit, pieces in read:
        if unit.author != OWN:
            authors.setdefault(unit.author)
        if unit.source == ATTACHMENT_NAME and _titled(_whole(unit.text), agency):
            signals.setdefault(TextSignal(CHECK_DOCUMENT, unit.author))  # "PNC_print.pdf"
        for piece in pieces:
            if piece.author != OWN:
                authors.setdefault(piece.author)
            for kind in _agency_signals(piece, agency, own=unit.source == "body",
                                        phrases=unit.phrases):
                signals.setdefault(TextSignal(kind, piece.author))
            if _legal_marking(piece, legal):
                author = _subject_author(unit, read) if unit.source == SUBJECT else piece.author
                signals.setdefault(TextSignal(LEGAL_MARKING, author))
    return Scan(tuple(signals), tuple(authors))


_REPLY_PREFIX = re.compile(r"\s*(?:(?:re|fw|fwd|aw|wg|tr)\s*(?:\[\d+\])?\s*:\s*)+", re.I)


def _subject_author(subject: Unit, read: Sequence[tuple[Unit, list[Segment]]]) -> str:
    """Who wrote a subject: a reply or forward ("RE: Legal advice") keeps the subject of the
    message it quotes, so its author is that message's; any other subject is the sender's."""
    prefix = _REPLY_PREFIX.match(subject.text)
    if prefix is None:
        return subject.author
    wanted = words(subject.text[prefix.end():])
    for unit, pieces in read:
        if unit.source == SUBJECT:
            continue
        if unit.author != OWN and _BREAK_INSIDE.search(unit.text) is None \
                and words(_REPLY_PREFIX.sub("", unit.text, count=1)) == wanted:
            return unit.author  # the Subject of an attached message
        for piece in pieces:
            if piece.author != OWN and words(_REPLY_PREFIX.sub("", piece.subject,
                                                               count=1)) == wanted:
                return piece.author
    return subject.author


# A line break with text before and after it: `"\n" in text.strip()`, without a copy.
_BREAK_INSIDE = re.compile(r"\S\s*\n\s*\S")


def _agency_signals(piece: Segment, marks: AgencyCheckMarks, own: bool,
                    phrases: bool = True) -> list[str]:
    """The agency-check signals of one text (see the module docstring for the rules).

    Without `phrases` (no phrase in the text) every signal needs a title: an origin mark
    (at most the title, then) with two record fields. A text without one has none."""
    if not phrases and ((own and piece.author == OWN) or not _titled(piece.span, marks)):
        return []
    # The subject and the text, each read where it is (a long quoted reply is not copied).
    text = [_whole(f"{piece.subject}\n"), piece.span] if piece.subject else [piece.span]
    if all(_blank_span(span) for span in text):
        return []
    # Quote marks ("> ") are left in: the record fields' pattern skips them at a line's start,
    # and `words` makes them spaces (a copy of the text without them was one more copy of a
    # long quoted reply; tests/test_restricted_fast.py compares).
    text = _without_choices(text)  # "trace / no trace" boxes
    fields: set[str] = set()  # record fields filled in
    answered = 0  # filled in with an outcome ("Result: No trace")

    def value_only(match: re.Match[str]) -> str:
        nonlocal answered
        value = match.group(2)
        if _filled(value):
            fields.add(words(match.group(1)))
            answered += any("outcome" in groups for *_, groups in
                            _hits(marks._automaton, f" {words(value)} "))
        return value  # a field's name is not an outcome: "Information held: Yes / No"

    # Only the first fields are read one by one: beyond them a record has said what it is.
    # The phrases are found in the words as they are written (`_padded_parts`): held whole,
    # they were the text again beside it (1 MB of case notes: 1.26x for a moment, the peak of
    # its classification). They are written again, and held, only for `_handed_over`, when a
    # handing-over phrase and a result are both there.
    spans = _sub_fields(marks._fields, value_only, text, marks._field_starts)
    found: dict[str, set[str]] = {}
    handing: list[int] = []  # where each handing-over phrase ends
    results: list[tuple[int, int]] = []
    for start, end, phrase, groups in _parts_hits(marks._automaton, _padded_parts(spans)):
        for group in groups:
            found.setdefault(group, set()).add(phrase)
        if "handing" in groups:
            handing.append(end)
        if "result" in groups and handing:  # (one before any handing-over counts for none)
            results.append((start, end))
    origin = len(found.get("origin", ())) + (not (own and piece.author == OWN)
                                              and _titled(piece.span, marks))
    marked = origin + bool(found.get("caveat")) + bool(found.get("letterhead"))
    outcome = len(found.get("outcome", ()))
    kinds = []
    if ((origin >= 2 and outcome + len(fields) >= 1)
            or (marked and (len(fields) >= 2 or answered))
            or (len(fields) >= 3 and outcome)):
        kinds.append(CHECK_DOCUMENT)
    handed = bool(handing and results) and _handed_over(_padded_words(spans), handing,
                                                         results, marks)
    if own and piece.author == OWN and handed:
        kinds.append(CHECK_PRESENTED)
    if piece.author != OWN and (outcome or handed):
        kinds.append(CHECK_REPORT)
    return kinds


_MAX_FIELDS = 200
_FIELD_MARKS = " \t>|*"  # what `_fields` skips at a line's start, before a label


def _sub_fields(fields: re.Pattern[str], value_only: Callable[[re.Match[str]], str],
                text: list[Span], starts: frozenset[str] | None = None) -> list[Span]:
    """`fields.sub(value_only, text, count=_MAX_FIELDS)` of the spans' text (no line lies
    across two), as spans: a field's value a string of its own, the rest read where it is.
    The pattern is tried only at the start of lines that hold a ":" (every field does), found
    with str.find: C speed on prose; and, given the `starts` of its labels, not on a line
    whose first character is an ASCII one that no label starts with (in any case) nor a quote
    or list mark the pattern skips."""
    found: list[Span] = []
    replaced = 0
    for within, start, end in text:
        done = start
        colon = within.find(":", start, end)
        while colon != -1 and replaced < _MAX_FIELDS:
            line_start = max(start, within.rfind("\n", start, colon) + 1)
            line_end = within.find("\n", colon, end)
            line_end = end if line_end == -1 else line_end
            first = within[line_start:line_start + 1]
            match = (fields.match(within, line_start, end)
                     if line_start >= done and (starts is None or not first.isascii()
                                                or first.lower() in starts
                                                or first in _FIELD_MARKS)
                     else None)
            if match is not None:
                found += [(within, done, match.start()), _whole(value_only(match))]
                done = match.end()
                replaced += 1
            colon = within.find(":", max(line_end, done), end)
        found.append((within, done, end))
    return found
_TITLE_LINES, _TITLE_WORDS = 3, 8


def _titled(text: Span, marks: AgencyCheckMarks) -> bool:
    """Whether one of the first lines of a document (not the sender's own words, where a
    heading may name what is being chased) is a result's name: "SAFEGUARDING CHECKS RESULT",
    "Police National Computer - extract"; a line naming a request or a form is not."""
    titles, blocked = marks.title_words, marks.not_handed_words
    seen = 0
    for line in _first_lines(text):
        heading = words(line).split()
        if not heading:
            continue
        seen += 1
        if seen > _TITLE_LINES:
            break
        if len(heading) > _TITLE_WORDS or not blocked.isdisjoint(heading):
            continue
        for size in range(len(heading), 0, -1):
            if " ".join(heading[:size]) in titles or " ".join(heading[-size:]) in titles:
                return True
    return False


# Choices on a blank form: "Yes / No", "Y/N", "trace / no trace", "known / not known".
_CHOICES = re.compile(r"\b(?:yes|y)[ \t]*/[ \t]*(?:no|n)\b"
                      r"|\b([a-z]+(?: [a-z]+)?)[ \t]*/[ \t]*not? \1\b", re.I)
_PLACEHOLDER = re.compile(r"[\W_]*(?:(?:tbc|n/?a|to be (?:completed|confirmed)\b.*|"
                          r"delete as appropriate.*)[\W_]*)?", re.I)


_CHOICE_HINT = re.compile(r"/[ \t]*no?t?\b", re.I)


def _without_choices(text: list[Span]) -> list[Span]:
    """The spans' text (no line lies across two) with the open choices of a blank form
    blanked, looking only at lines with one: each such line a string of its own, the rest
    read where it is."""
    found: list[Span] = []
    for within, start, end in text:
        last = start
        for hint in _CHOICE_HINT.finditer(within, start, end):
            line_start = max(start, within.rfind("\n", start, hint.start()) + 1)
            if line_start < last:
                continue
            line_end = within.find("\n", hint.end(), end)
            line_end = end if line_end == -1 else line_end
            found += [(within, last, line_start),
                      _whole(_CHOICES.sub(" ", within[line_start:line_end]))]
            last = line_end
        found.append((within, last, end))
    return found


def _filled(value: str) -> bool:
    """Whether a record field has a value: not empty, underscores, a choice left open or
    "to be completed" (a blank form asks, a result answers)."""
    return _PLACEHOLDER.fullmatch(_CHOICES.sub(" ", value)) is None


_GAP_WORDS = 3  # words allowed between "please find attached" and "the police check results"


def _handed_over(padded: str | _Padded, handing: list[int], results: list[tuple[int, int]],
                 marks: AgencyCheckMarks) -> bool:
    """A handing-over phrase followed, within a few words, by a result's name, with nothing
    beside it that makes it a request, a form or a summary."""
    if not handing or not results:
        return False
    blocked = marks.not_handed_words
    for end in handing:
        for start, result_end in results:
            if start < end:
                continue
            between = padded[end:start].split()
            if len(between) > _GAP_WORDS:
                continue
            after = padded[result_end:result_end + 60].split()[:2]
            if blocked.isdisjoint(between) and blocked.isdisjoint(after):
                return True
    return False


def _legal_marking(piece: Segment, marks: LegalAdviceMarks) -> bool:
    headings = [piece.subject] if piece.subject else []
    lines = 0
    for line in _first_lines(piece.span):
        if lines >= marks.heading_lines:
            break
        if not line.strip():
            continue
        lines += 1
        if len(words(line).split()) <= marks.heading_words:
            headings.append(line)
    blocked = marks.not_after_words
    for heading in headings:
        padded = f" {words(heading)} "
        for start, _end, _phrase, _groups in _hits(marks._automaton, padded):
            before = padded[:start].split()[-1:]
            if blocked.isdisjoint(before):
                return True
    return False


def by_text(information_type: str, signals: Iterable[TextSignal]) -> tuple[str, str | None]:
    """The information type once the signals that need no organisation's list are weighed
    (called by classification), and the protected reason that gives (None: unchanged).

    An original check result in any text, or handed over in the sender's words, is one
    whoever wrote it; a legal-advice marking counts here only in the sender's own words. The
    engine's `refine` weighs the rest (authors against the organisation's lists).
    """
    kinds = {s.kind for s in signals if s.kind != LEGAL_MARKING or s.author == OWN}
    if information_type != AGENCY_CHECK_RESULT:
        if CHECK_DOCUMENT in kinds:
            return AGENCY_CHECK_RESULT, "case-document"
        if CHECK_PRESENTED in kinds:  # the sender's own words say what it is, as a label does
            return AGENCY_CHECK_RESULT, "label"
    if information_type not in (AGENCY_CHECK_RESULT, LEGAL_ADVICE) and LEGAL_MARKING in kinds:
        return LEGAL_ADVICE, "label"
    return information_type, None


# ----------------------------------------------------------------------------------------------
# Deciding the type: the signals against the organisation's lists (called by the engine)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The organisation's lists `refine` weighs signals against (policy.toml)."""

    internal: tuple[str, ...] = ()  # [domains] internal
    check_agencies: tuple[str, ...] = ()  # [domains] check_agencies: police, LA, health
    instructed_lawyers: tuple[str, ...] = ()  # [domains] instructed_lawyers
    legal_team: tuple[str, ...] = ()  # [legal] team_addresses, lower-case

    def is_instructed_lawyer(self, domain: str) -> bool:
        return _under(domain, self.instructed_lawyers)


def _under(domain: str, suffixes: Iterable[str]) -> bool:
    """`domain` is one of `suffixes` or below one, at a label boundary (DESIGN ruling 1)."""
    domain = domain.lower().rstrip(".")
    return any(domain == s or domain.endswith("." + s) for s in suffixes)


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


def restricted_type(facts: MessageFacts, sender: str, sources: Sources) -> str | None:
    """agency-check-result, legal-advice or None: what the message is, whatever else it is.

    A check result wins over legal advice: it may not leave at all, legal advice may go to the
    instructed lawyers.
    """
    if facts.information_type == AGENCY_CHECK_RESULT or _is_check_result(facts, sources):
        return AGENCY_CHECK_RESULT
    if facts.information_type == LEGAL_ADVICE or _is_legal_advice(facts, sender, sources):
        return LEGAL_ADVICE
    return None


def _is_check_result(facts: MessageFacts, sources: Sources) -> bool:
    for signal in facts.signals:
        if signal.kind in (CHECK_DOCUMENT, CHECK_PRESENTED):
            return True
        if signal.kind == CHECK_REPORT:
            domain = _domain(signal.author)
            if (domain and _under(domain, sources.check_agencies)
                    and not _under(domain, sources.internal)):
                return True
    return False


def _is_legal_advice(facts: MessageFacts, sender: str, sources: Sources) -> bool:
    team = set(sources.legal_team)
    if sender.lower() in team or not team.isdisjoint(facts.forwarded_from):
        return True
    for signal in facts.signals:
        if signal.kind != LEGAL_MARKING:
            continue
        author, domain = signal.author, _domain(signal.author)
        if (author in (OWN, UNKNOWN) or author in team or _under(domain, sources.internal)
                or _under(domain, sources.instructed_lawyers)):
            return True
    return False


def refine(facts: MessageFacts, sender: str, sources: Sources) -> MessageFacts:
    """`facts` with the information type a restricted type when the signals say so."""
    found = restricted_type(facts, sender, sources)
    if found is None or found == facts.information_type:
        return facts
    reason = "case-document" if found == AGENCY_CHECK_RESULT else "label"
    return replace(facts, information_type=found, protected=True,
                   protected_reasons=tuple(dict.fromkeys((*facts.protected_reasons, reason))))
