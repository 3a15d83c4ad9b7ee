"""The case registry as the matcher sees it: keyed hashes of people, details and shields.

Issue 16, DESIGN rulings 17-19. Staff record the people of a case (name, role, date of birth),
confidential details (an address, a school, a GP practice...) with who may receive them, and
shielded cases with who may handle them. The store keeps none of those texts: `RecordKey` turns
each into keyed hashes (HMAC-SHA256, one per normalised token), as exact-data-match products do,
and `CaseIndex` holds the hashes in dictionaries keyed by token-hash sequences.

Matching (`CaseIndex.match`) reads each text once: the text is normalised and split into tokens,
each distinct token is hashed once (and remembered across messages in a small LRU), and the
sequence of token hashes is walked once, looking up names and details by their first token.
The cost does not grow with the number of people recorded, only with the length of the text.

What a match says:
* a recorded person's full name (all its tokens in order, or first and last name, or "last,
  first") ties the message to the person's case;
* a confidential detail (all its tokens in order: an address matches across line breaks,
  punctuation and postcode spacing) ties the message to its case;
* a first name ties it only with another signal of the same case: a relationship word naming
  the person ("Ellie's mum", "father of Ellie", "brother Jack"), another name of the case
  (another person's full name or a recorded surname), a confidential detail or a recorded date
  of birth of the case;
* a recorded date of birth ties it when a date-of-birth cue ("DOB", "born") stands just before
  it and the date belongs to people of one case only, or when a name of the same case is there.

Matches carry case numbers, person and detail ids and kinds: never the matched text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import ClassVar

from policies import identifiers
from policies.normalise import fold


class PersonRole(StrEnum):
    """Who a recorded person is in the case."""

    CHILD = "child"
    PARTY = "party"
    OTHER = "other"


class DetailKind(StrEnum):
    """What a confidential detail is: the refusal names the kind, never the text (RRP 2.2)."""

    ADDRESS = "address"
    SCHOOL = "school"
    NURSERY = "nursery"
    GP = "gp"
    PLACEMENT = "placement"
    OTHER = "other"


class Signal(StrEnum):
    """Why a person of a case was recognised (what the audit trail may say)."""

    FULL_NAME = "full-name"
    DATE_OF_BIRTH = "date-of-birth"
    FIRST_NAME_RELATIONSHIP = "first-name-relationship"
    FIRST_NAME_WITH_CASE = "first-name-with-case"


# --- normalisation -----------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u0060": "'",
                              "\u00b4": "'", "\u2032": "'"})
# Letters NFKD does not take apart, written as their base letters.
_LETTERS = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae",
                          "œ": "oe", "ı": "i", "ŀ": "l", "ħ": "h"})
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
# A UK postcode written without its space ("ls14ab"): spaced canonically ("ls1 4ab").
_POSTCODE = re.compile(r"(?<![^\W_])([a-z]{1,2}[0-9][a-z0-9]?) ?([0-9][a-z]{2})(?![^\W_])")
# A word (letters and digits, apostrophes inside kept), or a possessive "'s" as its own token.
_TOKEN = re.compile(r"[^\W_]+(?:'(?!s(?![^\W_]))[^\W_]+)*|'s(?![^\W_])")
POSSESSIVE = "'s"


def normalise(text: str, *, folded: bool = False) -> str:
    """The text as the matcher compares it: folded (`policies.normalise.fold`, unless the
    caller says it already is), case-folded, accents removed, apostrophes unified, UK postcodes
    spaced canonically."""
    text = (text if folded else fold(text)).casefold()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text.translate(_APOSTROPHES)
                                                        .translate(_LETTERS)))
    if identifiers.has_digit(text):
        text = _POSTCODE.sub(r"\1 \2", text)
    return text


def tokens(text: str, *, folded: bool = False) -> list[str]:
    """The tokens of a text after `normalise`: words without their punctuation, a possessive
    "'s" as a token of its own, apostrophes inside a word dropped ("O'Brien" is "obrien")."""
    return _words(normalise(text, folded=folded))


def _words(normalised: str) -> list[str]:
    found = _TOKEN.findall(normalised)
    if "'" in normalised and any("'" in t for t in found):
        found = [t if t == POSSESSIVE else t.replace("'", "") for t in found]
    return found


# --- keyed hashing -----------------------------------------------------------------------

_TOKEN_DOMAIN = b"token\x00"
_DOB_DOMAIN = b"dob\x00"
_LRU_TOKENS = 1 << 16  # distinct tokens remembered across messages (about 10 MB at most)


class RecordKey:
    """Keyed hashing (HMAC-SHA256, key 32 bytes) of normalised forms: what the store keeps."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a record key is 32 bytes")
        self._key = key
        self.token: Callable[[str], bytes] = functools.lru_cache(maxsize=_LRU_TOKENS)(
            self._token)

    def _token(self, token: str) -> bytes:
        return hmac.digest(self._key, _TOKEN_DOMAIN + token.encode("utf-8"), hashlib.sha256)

    def name(self, full_name: str) -> tuple[bytes, ...]:
        """One keyed hash per normalised name token, in order."""
        found = [t for t in tokens(full_name) if t != POSSESSIVE]
        if len(found) < 2:
            raise ValueError("a name needs at least two words (a first name and a surname)")
        return tuple(self.token(t) for t in found)

    def date_of_birth(self, value: date) -> bytes:
        return hmac.digest(self._key, _DOB_DOMAIN + value.isoformat().encode("ascii"),
                           hashlib.sha256)

    def detail(self, text: str) -> tuple[bytes, ...]:
        """Keyed hashes of the detail's normalised tokens."""
        found = tokens(text)
        if not found:
            raise ValueError("a confidential detail needs some text")
        return tuple(self.token(t) for t in found)


# --- what the store hands over -----------------------------------------------------------

@dataclass(frozen=True)
class CasePerson:
    case_number: str
    person_id: str
    role: PersonRole
    name: tuple[bytes, ...]  # RecordKey.name
    date_of_birth: bytes | None  # RecordKey.date_of_birth
    initials: str  # what staff see of the name


@dataclass(frozen=True)
class ConfidentialDetail:
    case_number: str
    detail_id: str
    kind: DetailKind
    text: tuple[bytes, ...]  # RecordKey.detail
    may_go_to: tuple[str, ...]  # lower-case addresses or domains


@dataclass(frozen=True)
class ShieldedCase:
    case_number: str
    access: tuple[str, ...]  # lower-case staff addresses


# --- what a match finds ------------------------------------------------------------------

@dataclass(frozen=True)
class PersonMatch:
    case_number: str
    person_id: str
    role: PersonRole
    signal: Signal


@dataclass(frozen=True)
class DetailMatch:
    case_number: str
    detail_id: str
    kind: DetailKind
    may_go_to: tuple[str, ...]


@dataclass(frozen=True)
class CaseMatches:
    """What the registry recognised in a message: metadata only."""

    people: tuple[PersonMatch, ...] = ()
    details: tuple[DetailMatch, ...] = ()

    NONE: ClassVar[CaseMatches]

    @property
    def case_numbers(self) -> tuple[str, ...]:
        """The cases the message is tied to, in order of first recognition."""
        found = dict.fromkeys(p.case_number for p in self.people)
        found.update(dict.fromkeys(d.case_number for d in self.details))
        return tuple(found)

    def __bool__(self) -> bool:
        return bool(self.people or self.details)


CaseMatches.NONE = CaseMatches()


# --- the index ---------------------------------------------------------------------------

# Words that name a relation of a person: "Ellie's mum", "father of Ellie", "brother Jack".
RELATIONSHIP_WORDS = frozenset({
    "mum", "mummy", "mom", "mam", "mother", "dad", "daddy", "father", "parent", "parents",
    "sister", "brother", "sibling", "siblings", "half", "stepmother", "stepfather", "stepmum",
    "stepdad", "stepsister", "stepbrother", "grandmother", "grandfather", "grandma", "grandad",
    "granddad", "grandpa", "gran", "granny", "nan", "nana", "nanny", "grandparent",
    "grandparents", "aunt", "auntie", "aunty", "uncle", "cousin", "carer", "carers", "guardian",
    "son", "daughter", "child", "children", "baby", "niece", "nephew", "partner", "ex",
    "boyfriend", "girlfriend", "stepson", "stepdaughter", "stepchild",
})
_RELATION_LINKS = frozenset({"of", "to", "for"})  # "mother of Ellie", "carer to Ellie"


@dataclass(frozen=True)
class _Person:
    index: int
    person: CasePerson


@dataclass
class _Tables:
    names: dict[tuple[bytes, ...], list[int]] = field(default_factory=dict)
    name_lengths: dict[bytes, set[int]] = field(default_factory=dict)
    first_names: dict[bytes, list[int]] = field(default_factory=dict)
    surnames: dict[bytes, set[str]] = field(default_factory=dict)
    details: dict[tuple[bytes, ...], list[int]] = field(default_factory=dict)
    detail_lengths: dict[bytes, set[int]] = field(default_factory=dict)
    dobs: dict[bytes, list[int]] = field(default_factory=dict)


class CaseIndex:
    """Immutable; built once per registry version (the store caches it like Registry.active)."""

    EMPTY: ClassVar[CaseIndex]

    def __init__(self, key: RecordKey | None, people: tuple[CasePerson, ...],
                 details: tuple[ConfidentialDetail, ...],
                 shields: tuple[ShieldedCase, ...]) -> None:
        self._key = key
        self.people = people
        self.details = details
        self._shields = {s.case_number: s for s in shields}
        self._tables = _Tables()
        self._build()

    @classmethod
    def build(cls, key: RecordKey, people: Iterable[CasePerson],
              details: Iterable[ConfidentialDetail],
              shields: Iterable[ShieldedCase]) -> CaseIndex:
        return cls(key, tuple(people), tuple(details), tuple(shields))

    def _build(self) -> None:
        t = self._tables
        for i, person in enumerate(self.people):
            name = person.name
            if len(name) < 2:
                continue
            forms = {name, (name[0], name[-1]), (name[-1], name[0])}
            for form in forms:
                t.names.setdefault(form, []).append(i)
                t.name_lengths.setdefault(form[0], set()).add(len(form))
            t.first_names.setdefault(name[0], []).append(i)
            for surname in name[1:]:
                t.surnames.setdefault(surname, set()).add(person.case_number)
            if person.date_of_birth is not None:
                t.dobs.setdefault(person.date_of_birth, []).append(i)
        for i, detail in enumerate(self.details):
            if not detail.text:
                continue
            t.details.setdefault(detail.text, []).append(i)
            t.detail_lengths.setdefault(detail.text[0], set()).add(len(detail.text))

    @property
    def is_empty(self) -> bool:
        return not (self.people or self.details)

    def shielded(self, case_number: str) -> ShieldedCase | None:
        return self._shields.get(case_number)

    def match(self, texts: Iterable[str], *,
              dob_cues: re.Pattern[str] | None = None) -> CaseMatches:
        """What the registry recognises in these texts (one pass over each). The texts are
        folded already (`policies.normalise.fold`), as classification reads them.

        `dob_cues` is the policy's date-of-birth cue pattern (ContentRules.date_of_birth_regex):
        a recorded date of birth just after a cue counts on its own.
        """
        if self._key is None or self.is_empty:
            for _ in texts:  # read nothing, but consume a generator as callers expect
                pass
            return CaseMatches.NONE
        found = _Found()
        for text in texts:
            self._scan(text, found, dob_cues)
        return self._conclude(found)

    def _scan(self, text: str, found: _Found, dob_cues: re.Pattern[str] | None) -> None:
        assert self._key is not None
        t = self._tables
        normalised = normalise(text, folded=True)
        words = _words(normalised)
        if not words:
            return
        token_hash = self._key.token
        hashes = {w: token_hash(w) for w in set(words)}
        seq = [hashes[w] for w in words]
        for i, h in enumerate(seq):
            lengths = t.name_lengths.get(h)
            if lengths is not None:
                for n in lengths:
                    for p in t.names.get(tuple(seq[i:i + n]), ()):
                        found.full.add(p)
            lengths = t.detail_lengths.get(h)
            if lengths is not None:
                for n in lengths:
                    for d in t.details.get(tuple(seq[i:i + n]), ()):
                        found.details.add(d)
            cases = t.surnames.get(h)
            if cases is not None:
                found.surname_cases.update(cases)
            people = t.first_names.get(h)
            if people is None and words[i].endswith("s") and _relation_after(words, i):
                people = t.first_names.get(token_hash(words[i][:-1]))  # "Ellies mum"
            if people is not None:
                related = _relation_after(words, i) or _relation_before(words, i)
                for p in people:
                    found.first.add(p)
                    if related:
                        found.related.add(p)
        if t.dobs and identifiers.has_digit(text):
            self._scan_dates(normalised, found, dob_cues)

    def _scan_dates(self, text: str, found: _Found, dob_cues: re.Pattern[str] | None) -> None:
        assert self._key is not None
        for match in identifiers.find_dates(text):
            value = identifiers.date_of(match)
            if value is None:
                continue
            people = self._tables.dobs.get(self._key.date_of_birth(value))
            if not people:
                continue
            cued = dob_cues is not None and identifiers.cue_before(text, match.start(), dob_cues)
            for p in people:
                (found.dob_cued if cued else found.dob).add(p)

    def _conclude(self, found: _Found) -> CaseMatches:
        people = self.people
        strong: dict[int, Signal] = {p: Signal.FULL_NAME for p in sorted(found.full)}
        detail_cases = {self.details[d].case_number for d in found.details}
        # A cued date of birth alone ties when its people are of one case only.
        cued_cases = {people[p].case_number for p in found.dob_cued}
        if len(cued_cases) == 1:
            for p in sorted(found.dob_cued):
                strong.setdefault(p, Signal.DATE_OF_BIRTH)
        full_cases = {people[p].case_number for p in strong}
        # The first names recognised, by case, for "another name of the case".
        first_by_case: dict[str, set[int]] = {}
        for p in found.first:
            first_by_case.setdefault(people[p].case_number, set()).add(p)
        for p in sorted(found.first):
            if p in strong:
                continue
            case = people[p].case_number
            if p in found.related:
                strong[p] = Signal.FIRST_NAME_RELATIONSHIP
            elif (case in full_cases or case in detail_cases or case in found.surname_cases
                  or any(people[q].case_number == case for q in found.dob | found.dob_cued)):
                strong[p] = Signal.FIRST_NAME_WITH_CASE
        # An uncued date of birth counts with a name of its case.
        named_cases = {people[p].case_number for p in strong} | detail_cases
        for p in sorted(found.dob | found.dob_cued):
            if p not in strong and people[p].case_number in named_cases:
                strong[p] = Signal.DATE_OF_BIRTH
        return CaseMatches(
            people=tuple(PersonMatch(people[p].case_number, people[p].person_id,
                                     people[p].role, signal)
                         for p, signal in sorted(strong.items())),
            details=tuple(DetailMatch(d.case_number, d.detail_id, d.kind, d.may_go_to)
                          for d in (self.details[i] for i in sorted(found.details))),
        )


@dataclass
class _Found:
    """Raw hits of one message, by index into the index's people and details."""

    full: set[int] = field(default_factory=set)
    first: set[int] = field(default_factory=set)
    related: set[int] = field(default_factory=set)
    dob: set[int] = field(default_factory=set)
    dob_cued: set[int] = field(default_factory=set)
    details: set[int] = field(default_factory=set)
    surname_cases: set[str] = field(default_factory=set)


def _relation_after(words: list[str], i: int) -> bool:
    """"Ellie's mum", "Ellies mum", "James' dad" (the apostrophe is dropped)."""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if nxt == POSSESSIVE:
        nxt = words[i + 2] if i + 2 < len(words) else ""
    return nxt in RELATIONSHIP_WORDS


def _relation_before(words: list[str], i: int) -> bool:
    """"father of Ellie", "carer to Ellie", "brother Jack", "mum's Sarah" is not one."""
    if i >= 1 and words[i - 1] in RELATIONSHIP_WORDS:
        return True
    return i >= 2 and words[i - 1] in _RELATION_LINKS and words[i - 2] in RELATIONSHIP_WORDS


CaseIndex.EMPTY = CaseIndex(None, (), (), ())
