"""Everything configurable about reading a message's content, validated from a `[content]` table.

The defaults live in `policies/data/content.toml`, where governance can read them; the loader
reads that file (and an organisation's overrides) and calls `ContentRules.from_table`. A bad
table is a `PolicyError` naming the source, the dotted key and the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from itertools import islice
from typing import Any, TypeVar

import ahocorasick

from policies import scan
from policies.errors import PolicyError
from policies.identifiers import (
    IDENTIFIER_PATTERNS,
    compile_case_number_pattern,
    compile_case_number_search,
    compile_cues,
)
from policies.restricted import (
    QUOTE_WORDS,
    AgencyCheckMarks,
    LegalAdviceMarks,
    agency_check_marks,
    legal_advice_marks,
)

DEFAULT_CASE_NUMBER_PATTERN = r"[A-Z]{2}\d{2}[A-Z]\d{5}"
_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 field name: printable ASCII except ":"


def _is_header_name(value: str) -> bool:
    return _HEADER_NAME.fullmatch(value) is not None

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one message may cost; anything beyond them fails closed."""

    max_message_bytes: int = 36_700_160  # 35 MiB, the SMTP front's SIZE
    max_parts: int = 200  # MIME parts, multipart containers included
    max_depth: int = 8  # multipart / message nesting
    attachment_bytes: int = 26_214_400  # per attachment: raw size and decompressed text parts
    attachment_seconds: float = 2.0  # per attachment, measured with the injected clock
    message_seconds: float = 10.0  # all attachments of one message together
    max_pdf_pages: int = 300
    max_text_chars: int = 2_000_000  # extracted text kept per attachment
    # Containers (DESIGN ruling 22): archives, attached messages, documents' embedded objects.
    max_container_depth: int = 5  # containers inside containers, counted from the message
    max_container_files: int = 1_000  # files inside containers, one message's all together
    container_bytes: int = 104_857_600  # bytes unpacked, and text read, all together (100 MiB)
    container_seconds: float = 5.0  # to open one attached container and read all it holds


@dataclass(frozen=True)
class InformationTypeCues:
    """How one information type (an Appendix 2 row) is recognised."""

    id: str
    labels: tuple[str, ...] = ()  # phrases in the subject or an attachment's name
    keywords: tuple[str, ...] = ()  # phrases in the body or an attachment's text
    protected: bool = True  # a match makes the message protected (DESIGN ruling 2)


# For ASCII text: lower-case letters and digits kept, every other byte a space.
_ASCII_WORD_BYTES = bytes(c if chr(c) in "abcdefghijklmnopqrstuvwxyz0123456789" else 0x20
                          for c in range(256))


def normalise_words(text: str) -> str:
    """Lower-case words separated by single spaces: "Court_Report-v2.PDF" -> "court report v2 pdf".
    """
    if text.isascii():  # the same result at C speed: bytes.lower and translate, no regex per char
        words = text.encode("ascii").lower().translate(_ASCII_WORD_BYTES)
        while b"  " in words:  # each pass halves the runs of spaces; one copy alive at a time
            words = words.replace(b"  ", b" ")
        return words.strip().decode("ascii")
    return _NON_WORD.sub(" ", text.lower()).strip()


NORMALISE_SLICE = 1 << 18  # characters of text normalised at a time
_SPACE = re.compile(r"\s")


def normalised_slices(text: str, overlap_words: int,
                      size: int = NORMALISE_SLICE) -> Iterator[str]:
    """`normalise_words(text)` in pieces, so that a long text is never copied whole.

    The text is cut at a whitespace character (a word separator however it is lower-cased)
    about every `size` characters; each piece after the first begins with the last
    `overlap_words` words of the piece before, so a phrase of up to `overlap_words + 1` words
    lies whole in some piece. A text shorter than `size` is one piece.
    """
    start, carry = 0, ""
    while start < len(text):
        cut = _SPACE.search(text, start + size) if len(text) - start > size else None
        end = cut.start() if cut is not None else len(text)
        words = normalise_words(text[start:end])
        piece = f"{carry} {words}".strip() if carry else words
        yield piece
        carry = " ".join(piece.rsplit(" ", overlap_words)[1:]) if overlap_words > 0 else ""
        start = end


_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_WORD = re.compile(r"[a-z0-9]+")


def spaced_words(text: str) -> str:
    """The words of `normalise_words(text)` in the same places, every other character a space
    (not squeezed: that costs more than the rest of looking for cues in a short body)."""
    lowered = text if text.isascii() else text.lower()  # "K" (Kelvin) lower-cases to ASCII "k"
    return lowered.encode("ascii", "replace").lower().translate(_ASCII_WORD_BYTES).decode("ascii")


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A normalised phrase ("child in need plan") as a regex over the text as written: its
    words in any case, anything but letters and digits between them, and none either side.
    It matches a text exactly when `normalise_words` of the text holds the phrase as whole
    words (in ASCII text, and in any text without a character whose lower case is an ASCII
    letter: the Kelvin sign, dotted capital I; the scan engine searches those otherwise)."""
    body = "[^a-z0-9]+".join(re.escape(word) for word in phrase.split())
    pattern = re.compile(f"(?<![a-z0-9])(?:{body})(?![a-z0-9])", re.IGNORECASE)
    # Its shape for the scan engine without the lookarounds: a literal word first is what
    # Hyperscan finds fastest (a boundary character first is found everywhere).
    scan.shape_as(pattern, re.compile(body, re.IGNORECASE))
    return pattern


@dataclass(frozen=True)
class CueMatcher:
    """Which information types' phrases occur in a text, first in table order.

    Every phrase is looked for in one pass over the text (Aho-Corasick, with pyahocorasick), so
    the cost is the text's length however many phrases an organisation adds. A phrase counts
    only as whole words: neither a letter nor a digit right before or after it.

    A text read whole (up to NORMALISE_SLICE characters) is searched as `spaced_words` for each
    phrase's longest word; where one is found, the words around it are compared with the
    phrases it anchors. A longer text is normalised a slice at a time and searched for whole
    phrases. Both give `first_type`'s answer (the tests compare them).
    """

    type_ids: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...]  # normalised, per type, in the order of type_ids
    max_words: int = field(init=False, compare=False)  # words in the longest phrase
    _automaton: Any = field(init=False, repr=False, compare=False)
    _anchors: Any = field(init=False, repr=False, compare=False)
    # Each phrase as a regex over the text as written, with its type's index, in type order:
    # what the scan engine looks for in its one pass over a text (`first_type_found`).
    patterns: tuple[tuple[re.Pattern[str], int], ...] = field(init=False, repr=False,
                                                              compare=False)
    _pattern_list: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "patterns", tuple(
            (phrase_pattern(phrase), index)
            for index, phrases in enumerate(self.phrases) for phrase in phrases))
        object.__setattr__(self, "_pattern_list", tuple(p for p, _ in self.patterns))
        object.__setattr__(self, "max_words", max(
            (len(p.split()) for phrases in self.phrases for p in phrases), default=1))
        automaton = ahocorasick.Automaton()
        # Each phrase is anchored at its longest word (the least common, as a rule): anchor ->
        # (type index, the words before it, the words after it), in type order.
        anchored: dict[str, list[tuple[int, tuple[str, ...], tuple[str, ...]]]] = {}
        for index, phrases in enumerate(self.phrases):
            for phrase in phrases:
                if not automaton.exists(phrase):  # listed under two types: the first counts
                    automaton.add_word(phrase, (index, len(phrase)))
                    words = phrase.split()
                    at = words.index(max(words, key=len))
                    anchored.setdefault(words[at], []).append(
                        (index, tuple(words[:at]), tuple(words[at + 1:])))
        anchors = ahocorasick.Automaton()  # " word ": whole words only, found as such
        for word, uses in anchored.items():
            anchors.add_word(f" {word} ", (len(word), tuple(sorted(uses))))
        for built in (automaton, anchors):
            if len(built):
                built.make_automaton()
        object.__setattr__(self, "_automaton", automaton)
        object.__setattr__(self, "_anchors", anchors)

    @classmethod
    def build(cls, types: tuple[InformationTypeCues, ...], kind: str) -> CueMatcher:
        groups = [(t.id, tuple(dict.fromkeys(filter(None, map(normalise_words, getattr(t, kind))))))
                  for t in types]
        groups = [(type_id, phrases) for type_id, phrases in groups if phrases]
        return cls(tuple(type_id for type_id, _ in groups),
                   tuple(phrases for _, phrases in groups))

    def first_type_in(self, texts: Iterable[str]) -> str | None:
        """`first_type` of texts not yet normalised."""
        best = len(self.type_ids)
        for text in texts:
            if not best:
                break
            best = self._best_in(text, best)
        return self.type_ids[best] if best < len(self.type_ids) else None

    def first_type_found(self, texts: Iterable[tuple[str, scan.Found]]) -> str | None:
        """`first_type_in` of texts, each with its scan (policies/scan.py) with `patterns`
        among its gates: in a natively scanned text, only the phrases the scan saw are
        confirmed, by their regex; others are searched as `first_type_in` does."""
        best = len(self.type_ids)
        for text, found in texts:
            if not best:
                break
            seen = found.present_among(self._pattern_list)
            if seen is None:  # not scanned natively
                best = self._best_in(text, best)
                continue
            for at in sorted(seen):  # in type order: `patterns` is
                pattern, index = self.patterns[at]
                if index < best and next(found.matches(pattern), None) is not None:
                    best = index
                    break
        return self.type_ids[best] if best < len(self.type_ids) else None

    def _best_in(self, text: str, best: int) -> int:
        anchored = None
        if len(text) <= NORMALISE_SLICE:
            anchored = self._best_by_anchors(spaced_words(text), best)
        if anchored is not None:
            return anchored
        return self._best(normalised_slices(text, self.max_words - 1), best)

    def first_type(self, texts: Iterable[str]) -> str | None:
        """The type, first in table order, whose phrase occurs in any of the (normalised) texts.

        Texts are read one at a time, each in one pass, stopping once the first type is found.
        """
        best = self._best(texts, len(self.type_ids))
        return self.type_ids[best] if best < len(self.type_ids) else None

    def _best(self, texts: Iterable[str], best: int) -> int:
        """The lowest type index below `best` with a phrase in the normalised texts, or `best`."""
        for text in texts:
            if not best:
                break
            last = len(text) - 1
            for end, (index, length) in self._automaton.iter(text):
                start = end - length + 1
                if index < best and (start == 0 or text[start - 1] not in _WORD_CHARS) and (
                        end == last or text[end + 1] not in _WORD_CHARS):
                    best = index
                    if best == 0:
                        break
        return best

    def _best_by_anchors(self, spaced: str, best: int) -> int | None:
        """`_best` of one text given as `spaced_words`, found from the phrases' anchor words;
        None when anchors come so thick (a text made of cue words) that the whole-phrase
        search of the normalised text costs less."""
        padded = f" {spaced} "
        backwards: str | None = None  # the text reversed, once a phrase needs words before
        hits_left = 16 + len(spaced) // 1024
        for end, (length, uses) in self._anchors.iter(padded):  # `end`: the space after it
            hits_left -= 1
            if hits_left < 0:
                return None
            start = end - length
            for index, before, after in uses:  # in type order
                if index >= best:
                    break
                if after and tuple(m.group() for m in islice(
                        _WORD.finditer(padded, end), len(after))) != after:
                    continue
                if before:
                    backwards = backwards or padded[::-1]
                    found = islice(_WORD.finditer(backwards, len(padded) - start), len(before))
                    if tuple(m.group()[::-1] for m in found)[::-1] != before:
                        continue
                best = index
                if best == 0:
                    return 0
                break
        return best


@dataclass(frozen=True)
class HeaderSignal:
    """A header whose presence (empty `contains`) or value marks something, e.g. auto-forward."""

    header: str
    contains: str = ""


@dataclass(frozen=True)
class Markings:
    """Protective markings: they can raise protection, never lower it (DESIGN ruling 11)."""

    protective: tuple[str, ...] = ("OFFICIAL-SENSITIVE", "SECRET", "CONFIDENTIAL")
    sensitivity_header: str = "Sensitivity"
    protective_sensitivity: tuple[str, ...] = ("private", "company-confidential", "personal")
    label_headers: tuple[str, ...] = ("msip_labels",)  # Microsoft Purview: ..._Name=<label>;
    marking_headers: tuple[str, ...] = ("X-Protective-Marking",)
    subject_markings: bool = True  # "[OFFICIAL-SENSITIVE] ..." in the subject counts too


@dataclass(frozen=True)
class ContentRules:
    """The configuration of `classify_message`."""

    case_number_pattern: str = DEFAULT_CASE_NUMBER_PATTERN
    information_types: tuple[InformationTypeCues, ...] = ()
    classification_headers: tuple[str, ...] = ("X-Casegate-Classification",)
    override_header: str = "X-Casegate-Override"
    override_subject_tag: str = "override"  # "[override RULE-ID: why]" in the Subject
    date_of_birth_cues: tuple[str, ...] = ("DOB", "D.O.B", "date of birth", "born", "birth date")
    editable_types: tuple[str, ...] = ("doc", "docx", "odt", "rtf", "xls", "xlsx", "ods",
                                       "ppt", "pptx", "odp")
    images_are_unreadable: bool = True
    decorative_image_bytes: int = 65536  # inline images up to this size are signature logos
    markings: Markings = field(default_factory=Markings)
    auto_forward: tuple[HeaderSignal, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # Issue 13 (policies/restricted.py): original agency check results and legal advice.
    agency_checks: AgencyCheckMarks = field(default_factory=AgencyCheckMarks)
    legal_advice: LegalAdviceMarks = field(default_factory=LegalAdviceMarks)
    case_number_regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # The same with the separators people type inside a case number: what searches text.
    case_number_search: re.Pattern[str] = field(init=False, repr=False, compare=False)
    date_of_birth_regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # What policies/content.py gives the scan engine (policies/scan.py) for each text, made
    # once: the identifier patterns, and the patterns it only asks "present?" of.
    scan_patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    scan_gates: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    label_matcher: CueMatcher = field(init=False, repr=False, compare=False)
    keyword_matcher: CueMatcher = field(init=False, repr=False, compare=False)
    read_headers: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_headers", frozenset(name.lower() for name in (
            "Subject", "From", *self.classification_headers, self.override_header,
            self.markings.sensitivity_header, *self.markings.label_headers,
            *self.markings.marking_headers, *(signal.header for signal in self.auto_forward))))
        object.__setattr__(self, "label_matcher",
                           CueMatcher.build(self.information_types, "labels"))
        object.__setattr__(self, "keyword_matcher",
                           CueMatcher.build(self.information_types, "keywords"))
        object.__setattr__(self, "case_number_regex",
                           compile_case_number_pattern(self.case_number_pattern))
        object.__setattr__(self, "case_number_search",
                           compile_case_number_search(self.case_number_pattern))
        object.__setattr__(self, "date_of_birth_regex", compile_cues(self.date_of_birth_cues))
        object.__setattr__(self, "scan_patterns", (
            self.case_number_search, *IDENTIFIER_PATTERNS, self.date_of_birth_regex))
        object.__setattr__(self, "scan_gates", (
            *(pattern for pattern, _ in self.keyword_matcher.patterns),
            *self.agency_checks.gate.words, QUOTE_WORDS))

    @property
    def information_type_ids(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.information_types)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str,
                   base: ContentRules | None = None) -> ContentRules:
        """Validate a `[content]` table; with `base`, keys left out keep the base's values.

        Without `base` every key must be present (the packaged defaults file has them all).
        """
        return _TableReader(source, "content").rules(table, base)


class _TableReader:
    """Reads one TOML table, turning every problem into a PolicyError with the dotted key."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source = source
        self.prefix = prefix

    def fail(self, key: str, problem: str) -> PolicyError:
        dotted = f"{self.prefix}.{key}" if key else self.prefix
        return PolicyError(f"{self.source}: {dotted}: {problem}")

    def child(self, key: str) -> _TableReader:
        return _TableReader(self.source, f"{self.prefix}.{key}")

    def table(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        return value

    def check_keys(self, table: Mapping[str, Any], allowed: set[str],
                   required: bool) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(str(key), "unknown key")
        if required:
            for key in sorted(allowed - set(table)):
                raise self.fail(key, "missing")

    def typed(self, table: Mapping[str, Any], key: str, kind: type[T], default: T) -> T:
        if key not in table:
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.fail(key, f"must be {_KIND_NAMES[kind]}")
        return value

    def positive(self, table: Mapping[str, Any], key: str, kind: type[T], default: T) -> T:
        value = self.typed(table, key, kind, default)
        if value <= 0:  # type: ignore[operator]
            raise self.fail(key, "must be greater than zero")
        return value

    def strings(self, table: Mapping[str, Any], key: str, default: tuple[str, ...],
                check: Callable[[str], bool] | None = None,
                what: str = "") -> tuple[str, ...]:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        for item in value:
            if check is not None and not check(item):
                raise self.fail(key, f"{item!r} is not {what}")
        return tuple(value)

    def header(self, table: Mapping[str, Any], key: str, default: str) -> str:
        value = self.typed(table, key, str, default)
        if not _is_header_name(value):
            raise self.fail(key, f"{value!r} is not a header name")
        return value

    def subject_tag(self, table: Mapping[str, Any], default: str) -> str:
        """The word that opens an override tag in the Subject: letters, digits and hyphens."""
        value = self.typed(table, "override_subject_tag", str, default)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,30}", value):
            raise self.fail("override_subject_tag", f"{value!r} is not a word of letters, "
                            "digits and hyphens")
        return value

    # -- the sections ---------------------------------------------------------------------

    def rules(self, table: Mapping[str, Any], base: ContentRules | None) -> ContentRules:
        table = self.table(table, "")
        start = base or ContentRules()
        allowed = {f.name for f in fields(ContentRules) if f.init}
        self.check_keys(table, allowed, required=base is None)
        pattern = self.typed(table, "case_number_pattern", str, start.case_number_pattern)
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise self.fail("case_number_pattern", f"not a regular expression ({exc})") from None
        if compiled.search("") is not None:
            raise self.fail("case_number_pattern", "matches the empty string")
        return replace(
            start,
            case_number_pattern=pattern,
            information_types=self.information_types(table, start),
            classification_headers=self.strings(
                table, "classification_headers", start.classification_headers,
                _is_header_name, "a header name"),
            override_header=self.header(table, "override_header", start.override_header),
            override_subject_tag=self.subject_tag(table, start.override_subject_tag),
            date_of_birth_cues=self.strings(table, "date_of_birth_cues",
                                            start.date_of_birth_cues),
            editable_types=self.strings(table, "editable_types", start.editable_types),
            images_are_unreadable=self.typed(table, "images_are_unreadable", bool,
                                             start.images_are_unreadable),
            decorative_image_bytes=self.typed(table, "decorative_image_bytes", int,
                                              start.decorative_image_bytes),
            markings=self.child("markings").markings(table.get("markings"), start.markings,
                                                     required=base is None),
            auto_forward=self.auto_forward(table, start.auto_forward),
            limits=self.child("limits").limits(table.get("limits"), start.limits,
                                               required=base is None),
            agency_checks=agency_check_marks(table.get("agency_checks"), self.source,
                                             start.agency_checks, required=base is None),
            legal_advice=legal_advice_marks(table.get("legal_advice"), self.source,
                                            start.legal_advice, required=base is None),
        )

    def information_types(self, table: Mapping[str, Any],
                          start: ContentRules) -> tuple[InformationTypeCues, ...]:
        if "information_types" not in table:
            return start.information_types
        types = self.table(table["information_types"], "information_types")
        merged = {t.id: t for t in start.information_types}
        reader = self.child("information_types")
        for type_id, entry in types.items():
            if not _ID.fullmatch(type_id):
                raise reader.fail(type_id, "an information type id must be kebab-case")
            merged[type_id] = reader.child(type_id).cues(type_id, entry, merged.get(type_id))
        if "general" not in merged:
            raise self.fail("information_types", "the 'general' type must be defined")
        return tuple(merged.values())

    def cues(self, type_id: str, entry: object,
             previous: InformationTypeCues | None) -> InformationTypeCues:
        entry = self.table(entry, "")
        start = previous or InformationTypeCues(id=type_id)
        self.check_keys(entry, {"labels", "keywords", "protected"}, required=False)
        return InformationTypeCues(
            id=type_id,
            labels=self.strings(entry, "labels", start.labels),
            keywords=self.strings(entry, "keywords", start.keywords),
            protected=self.typed(entry, "protected", bool, start.protected),
        )

    def markings(self, value: object, start: Markings, required: bool) -> Markings:
        if value is None and not required:
            return start
        table = self.table(value, "")
        self.check_keys(table, {f.name for f in fields(Markings)}, required)
        return Markings(
            protective=self.strings(table, "protective", start.protective),
            sensitivity_header=self.header(table, "sensitivity_header",
                                           start.sensitivity_header),
            protective_sensitivity=self.strings(table, "protective_sensitivity",
                                                start.protective_sensitivity),
            label_headers=self.strings(table, "label_headers", start.label_headers,
                                       _is_header_name, "a header name"),
            marking_headers=self.strings(table, "marking_headers", start.marking_headers,
                                         _is_header_name, "a header name"),
            subject_markings=self.typed(table, "subject_markings", bool, start.subject_markings),
        )

    def auto_forward(self, table: Mapping[str, Any],
                     default: tuple[HeaderSignal, ...]) -> tuple[HeaderSignal, ...]:
        if "auto_forward" not in table:
            return default
        entries = table["auto_forward"]
        if not isinstance(entries, list):
            raise self.fail("auto_forward", "must be an array of tables ([[content.auto_forward]])")
        signals = []
        for index, entry in enumerate(entries):
            reader = self.child(f"auto_forward[{index}]")
            entry = reader.table(entry, "")
            reader.check_keys(entry, {"header", "contains"}, required=False)
            if "header" not in entry:
                raise reader.fail("header", "missing")
            signals.append(HeaderSignal(header=reader.header(entry, "header", ""),
                                        contains=reader.typed(entry, "contains", str, "")))
        return tuple(signals)

    def limits(self, value: object, start: Limits, required: bool) -> Limits:
        if value is None and not required:
            return start
        table = self.table(value, "")
        self.check_keys(table, {f.name for f in fields(Limits)}, required)
        return Limits(
            max_message_bytes=self.positive(table, "max_message_bytes", int,
                                             start.max_message_bytes),
            max_parts=self.positive(table, "max_parts", int, start.max_parts),
            max_depth=self.positive(table, "max_depth", int, start.max_depth),
            attachment_bytes=self.positive(table, "attachment_bytes", int,
                                           start.attachment_bytes),
            attachment_seconds=self.positive(table, "attachment_seconds", float,
                                             start.attachment_seconds),
            message_seconds=self.positive(table, "message_seconds", float,
                                          start.message_seconds),
            max_pdf_pages=self.positive(table, "max_pdf_pages", int, start.max_pdf_pages),
            max_text_chars=self.positive(table, "max_text_chars", int, start.max_text_chars),
            max_container_depth=self.positive(table, "max_container_depth", int,
                                              start.max_container_depth),
            max_container_files=self.positive(table, "max_container_files", int,
                                              start.max_container_files),
            container_bytes=self.positive(table, "container_bytes", int, start.container_bytes),
            container_seconds=self.positive(table, "container_seconds", float,
                                            start.container_seconds),
        )


_KIND_NAMES: dict[type, str] = {str: "a string", int: "an integer", float: "a number",
                                bool: "true or false"}
