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

What a match says (DESIGN ruling 17; `tests/cases/case_registry.toml` shows each):
* a recorded person's full name (all its tokens in order, or first and last name, or "last,
  first"), within one sentence, ties the message to the person's case;
* a confidential detail (all its tokens in order, whatever spacing, punctuation, line breaks
  and postcode spacing lie between them) ties the message to its case;
* a recorded date of birth ties it when a date-of-birth cue ("DOB", "born") stands just before
  it, or when it stands next to the first name of the person born then. A date alone does not:
  with thousands of people recorded, nearly every recent date is somebody's birthday;
* a first name alone never ties. With a relationship word naming the person ("Ellie's mum",
  "father of Ellie", "brother Jack") it ties when that first name is recorded in one case
  only, or with another first name of the same case close by ("Ellie and her brother Jack")
  when only one case has both. A first name is also counted for a case the message is tied to
  in another way (another person's full name, a confidential detail, a date of birth);
* a full name or cued date of birth recorded in several cases ties the case that something
  else in the message also names (another person's first name, a date of birth); when nothing
  does, the message is protected but tied to none (`possible_cases`);
* the sender's own display name is not taken for a recorded person's (a member of staff who
  shares a name with a party, or is one, signs their mail).

Matches carry case numbers, person and detail ids and kinds: never the matched text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    spaced canonically. A long text a slice of lines at a time: each step a copy of the whole
    text, it held 4 times a long ASCII text and 12 times one with an accented letter."""
    text = text if folded else fold(text)
    if len(text) <= _NORMALISE_SLICE:
        return _normalised(text)
    return "".join(list(_normalised_pieces(text)))


def _normalised_pieces(folded: str) -> Iterator[str]:
    """`normalise` of folded text a piece of about `_NORMALISE_SLICE` characters at a time:
    joined, the pieces are the normalised text. A piece ends where a token has just ended (at a
    blank after a letter or digit, as `_token_slices` cuts), so that the pieces can be read
    for tokens one after another as they come, and the normalised text is never whole
    (`CaseIndex._scan`). Normalising a piece is normalising that stretch of the whole: case
    folding, decomposition and the apostrophes go a character at a time, and a postcode that
    a blank parts is spaced already (its substitution changes nothing)."""
    for start, end in _token_cuts(folded, _NORMALISE_SLICE):
        yield _normalised(folded[start:end])


_NORMALISE_SLICE = 1 << 16  # characters of a text normalised at a time


def _normalised(text: str) -> str:
    """`normalise` of folded text."""
    text = text.casefold()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text.translate(_APOSTROPHES)
                                                        .translate(_LETTERS)))
    if identifiers.has_digit(text):
        text = _spaced_postcodes(text)
    return text


def _spaced_postcodes(text: str) -> str:
    """`_POSTCODE.sub(r"\1 \2", text)` of case-folded text, the pattern tried only where a
    postcode may start: every postcode has an ASCII letter just before a digit in its first
    three characters, so it starts at that letter or the one before. Those places are found
    at C speed over the characters written as their classes. The substitution tried its
    lookbehind at every character, whatever the text: 37 ms for a 2 MB table of numbers,
    which holds no postcode, and 2 ms for 100 KB of prose with a case number in it ("zc12...",
    a letter before a digit, as in every case number). Text with many of them (one in 256
    characters or more) is substituted whole, at C speed."""
    classes = text.encode("ascii", "replace").translate(_LETTER_DIGIT_CLASSES)
    pairs = classes.count(b"a0")
    if pairs > len(text) >> 8:
        return _POSTCODE.sub(r"\1 \2", text)
    parts: list[str] = []
    done = 0  # where the text is copied to; a postcode starts at or after it
    pair = classes.find(b"a0")
    while pair >= 0:
        for start in (pair - 1, pair):
            found = _POSTCODE.match(text, start) if start >= done else None
            if found is not None:  # (its lookbehind sees the text before `start`)
                parts += (text[done:start], found.group(1), " ", found.group(2))
                done = found.end()
                break
        pair = classes.find(b"a0", pair + 1)
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


# A lower-case ASCII letter as "a", a digit as "0", anything else as " " (`_spaced_postcodes`).
_LETTER_DIGIT_CLASSES = bytes(
    0x61 if 0x61 <= c <= 0x7A else 0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))


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
_SHA256_BLOCK = 64  # bytes: SHA-256's block, what HMAC pads its key to
_DOB_DOMAIN = b"dob\x00"
_LRU_TOKENS = 1 << 16  # distinct tokens remembered across messages (about 10 MB at most)


class RecordKey:
    """Keyed hashing (HMAC-SHA256, key 32 bytes) of normalised forms: what the store keeps."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a record key is 32 bytes")
        self._key = key
        # HMAC's two keyed SHA-256 states, made once (RFC 2104: the key padded to the block
        # and XORed with 0x36 inside, 0x5c outside), the token domain already in the inner
        # one: a token's HMAC is then two copies and two digests. `hmac.digest` set the key
        # up again for every token (OpenSSL 3: 1.7 us a token, 0.6 us this way); a table of
        # numbers has tens of thousands of tokens a message that no earlier one had.
        padded = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded) + _TOKEN_DOMAIN)
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
        self.token: Callable[[str], bytes] = functools.lru_cache(maxsize=_LRU_TOKENS)(
            self._token)
        self.date_of_birth: Callable[[date], bytes] = functools.lru_cache(maxsize=4096)(
            self._date_of_birth)

    def _token(self, token: str) -> bytes:
        """HMAC-SHA256(key, _TOKEN_DOMAIN + token), from the keyed states made once."""
        inner = self._inner.copy()
        inner.update(token.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def name(self, full_name: str) -> tuple[bytes, ...]:
        """One keyed hash per normalised name token, in order."""
        found = [t for t in tokens(full_name) if t != POSSESSIVE]
        if len(found) < 2:
            raise ValueError("a name needs at least two words (a first name and a surname)")
        return tuple(self.token(t) for t in found)

    def _date_of_birth(self, value: date) -> bytes:
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
    """What the registry recognised in a message: metadata only.

    `people` and `details` are tied to their case. `possible_cases` are the cases of a recorded
    person named in full (or by a cued date of birth) when that name or date belongs to people
    of several cases and nothing else in the message says which: the message is protected, but
    not tied to one case.
    """

    people: tuple[PersonMatch, ...] = ()
    details: tuple[DetailMatch, ...] = ()
    possible_cases: tuple[str, ...] = ()

    NONE: ClassVar[CaseMatches]

    @property
    def case_numbers(self) -> tuple[str, ...]:
        """The cases the message is tied to, in order."""
        found = dict.fromkeys(p.case_number for p in self.people)
        found.update(dict.fromkeys(d.case_number for d in self.details))
        return tuple(found)

    def __bool__(self) -> bool:
        return bool(self.people or self.details or self.possible_cases)


CaseMatches.NONE = CaseMatches()


# --- the index ---------------------------------------------------------------------------

# Words that name a relation of a person: "Ellie's mum", "father of Ellie", "brother Jack".
RELATIONSHIP_WORDS = frozenset({
    "mum", "mummy", "mom", "mam", "mother", "dad", "daddy", "father", "parent", "parents",
    "sister", "brother", "sibling", "siblings", "stepmother", "stepfather", "stepmum",
    "stepdad", "stepsister", "stepbrother", "grandmother", "grandfather", "grandma", "grandad",
    "granddad", "grandpa", "gran", "granny", "nan", "nana", "nanny", "grandparent",
    "grandparents", "aunt", "auntie", "aunty", "uncle", "cousin", "carer", "carers", "guardian",
    "son", "daughter", "child", "children", "baby", "niece", "nephew", "partner",
    "boyfriend", "girlfriend", "stepson", "stepdaughter", "stepchild",
})
_RELATION_LINKS = frozenset({"of", "to", "for"})  # "mother of Ellie", "carer to Ellie"

# Between two tokens: nothing but blanks, single line breaks and other punctuation (0), a comma
# (1), or the end of a sentence or a blank line (2). A name does not run across a sentence.
_SAME = 0
_COMMA = 1
_BREAK = 2
_HARD = re.compile(r"[.!?;:]|\n\s*\n")
# A word with what stands before it: the separator, then the token (see _TOKEN).
_GAP_TOKEN = re.compile(r"([^\w']*)(" + _TOKEN.pattern + ")")
DOB_NEAR_TOKENS = 3  # a date of birth counts next to its person's name within this many words
PAIR_WINDOW = 8  # two first names of one case count within this many words of each other


def _gap_kind(gap: str) -> int:
    """The kind of a separator as `_GAP_TOKEN` reads it, or as `_ascii_gaps_and_words` writes
    it (white space as letters; a letter never stands in a separator the regex reads)."""
    if "U" in gap:
        gap = gap[gap.rindex("U") + 1:]  # "_" ends what the regex takes for the separator
    if _GAP_HARD.search(gap):
        return _BREAK
    return _COMMA if "," in gap else _SAME


_GAP_HARD = re.compile(r"[.!?;:]|[\nN][\sNW]*[\nN]")  # _HARD, in both ways of writing a separator


class CaseIndex:
    """Immutable; built once per registry version (the store caches it like Registry.active).

    Everything is looked up by keyed hash: a name form (all its tokens, first and last, or last
    and first) to the people with it, a first name to the cases with someone of that first
    name, a detail's token sequence to the details, a date of birth to the people born then.
    """

    EMPTY: ClassVar[CaseIndex]

    def __init__(self, key: RecordKey | None, people: tuple[CasePerson, ...],
                 details: tuple[ConfidentialDetail, ...],
                 shields: tuple[ShieldedCase, ...]) -> None:
        self._key = key
        self.people = tuple(p for p in people if len(p.name) >= 2)
        self.details = tuple(d for d in details if d.text)
        self._shields = {s.case_number: s for s in shields}
        # Cases by number, and the people of each (indexes into self.people).
        self._case_ids: dict[str, int] = {}
        self._case_numbers: list[str] = []
        self._case_people: list[list[int]] = []
        self._person_case: list[int] = []
        # Name forms: (tokens) -> people; first token -> lengths of forms starting with it.
        self._names: dict[tuple[bytes, ...], list[int]] = {}
        self._name_lengths: dict[bytes, set[int]] = {}
        self._reversed: set[tuple[bytes, ...]] = set()  # "last, first": a comma may part them
        self._first_cases: dict[bytes, set[int]] = {}
        self._details: dict[tuple[bytes, ...], list[int]] = {}
        self._detail_lengths: dict[bytes, set[int]] = {}
        self._detail_pairs: set[tuple[bytes, ...]] = set()  # the first two tokens of each
        self._dobs: dict[bytes, list[int]] = {}
        # What a token's hash may start or be: bit flags, one lookup per distinct token.
        self._flags: dict[bytes, int] = {}
        self._build()

    @classmethod
    def build(cls, key: RecordKey, people: Iterable[CasePerson],
              details: Iterable[ConfidentialDetail],
              shields: Iterable[ShieldedCase]) -> CaseIndex:
        return cls(key, tuple(people), tuple(details), tuple(shields))

    def _case_id(self, case_number: str) -> int:
        found = self._case_ids.get(case_number)
        if found is None:
            found = self._case_ids[case_number] = len(self._case_people)
            self._case_people.append([])
            self._case_numbers.append(case_number)
        return found

    def _build(self) -> None:
        for i, person in enumerate(self.people):
            case = self._case_id(person.case_number)
            self._case_people[case].append(i)
            self._person_case.append(case)
            name = person.name
            forms = [name, (name[0], name[-1]), (name[-1], name[0])]
            self._reversed.add(forms[2])
            for form in dict.fromkeys(forms):
                self._names.setdefault(form, []).append(i)
                self._name_lengths.setdefault(form[0], set()).add(len(form))
                self._flags[form[0]] = self._flags.get(form[0], 0) | _NAME_START
            self._first_cases.setdefault(name[0], set()).add(case)
            self._flags[name[0]] = self._flags.get(name[0], 0) | _FIRST_NAME
            if person.date_of_birth is not None:
                self._dobs.setdefault(person.date_of_birth, []).append(i)
        for i, detail in enumerate(self.details):
            self._case_id(detail.case_number)
            self._details.setdefault(detail.text, []).append(i)
            self._detail_lengths.setdefault(detail.text[0], set()).add(len(detail.text))
            self._detail_pairs.add(detail.text[:2])
            self._flags[detail.text[0]] = self._flags.get(detail.text[0], 0) | _DETAIL_START
            if len(detail.text) == 1:
                self._flags[detail.text[0]] |= _DETAIL_ONE
            else:
                self._flags[detail.text[1]] = self._flags.get(detail.text[1], 0) | _DETAIL_SECOND
        # Tokens a window of a text holds on each side of its own (`_token_windows`): a name
        # form or a detail that begins by its first or after its last, and the first names
        # a relationship word names and those close to them (`_scan_window`).
        longest = max((n for lengths in (*self._name_lengths.values(),
                                         *self._detail_lengths.values()) for n in lengths),
                      default=1)
        self._margin = longest + PAIR_WINDOW + 2

    @property
    def is_empty(self) -> bool:
        return not (self.people or self.details)

    def shielded(self, case_number: str) -> ShieldedCase | None:
        return self._shields.get(case_number)

    def match(self, texts: Iterable[str], *, dob_cues: re.Pattern[str] | None = None,
              sender_name: str = "", dated: Sequence[bool] | None = None) -> CaseMatches:
        """What the registry recognises in these texts (one pass over each). The texts are
        folded already (`policies.normalise.fold`), as classification reads them.

        `dob_cues` is the policy's date-of-birth cue pattern (ContentRules.date_of_birth_regex):
        a recorded date of birth just after a cue counts on its own. `sender_name` is the
        display name of the message's From: the sender's own name (in a signature) is not taken
        for a recorded person's, so that staff who share a name with a party, or who are a
        party themselves, can still write about other things. `dated[i]` False says text i
        holds no date (the scan engine's answer, policies/scan.py): its dates are not looked for.
        """
        if self._key is None or self.is_empty:
            for _ in texts:  # read nothing, but consume a generator as callers expect
                pass
            return CaseMatches.NONE
        found = _Found(ignored=self._own_name(sender_name))
        for index, text in enumerate(texts):
            self._scan(text, found, dob_cues, dated is None or dated[index])
        return self._conclude(found)

    def _own_name(self, sender_name: str) -> frozenset[tuple[bytes, ...]]:
        """The name forms of the sender's display name ("Jo Bloggs", "Bloggs, Jo")."""
        assert self._key is not None
        words = [w for w in tokens(sender_name) if w != POSSESSIVE]
        if len(words) < 2:
            return frozenset()
        hashes = tuple(self._key.token(w) for w in words)
        return frozenset({hashes, (hashes[0], hashes[-1]), (hashes[-1], hashes[0])})

    # -- one text, one pass ------------------------------------------------------------------

    def _scan(self, text: str, found: _Found, dob_cues: re.Pattern[str] | None,
              dated: bool = True) -> None:
        """One text, read a window of tokens at a time (`_token_windows`) from its normalised
        pieces as they are made: the tokens of a long text, each a string of its own, were
        many times the text, and the normalised text, whole and in its parts at once beside
        the folded text, twice it (1 MB of case notes: 3.04x the message beside it). Its dates
        are found in the folded text when it is ASCII (`_ascii_around` normalises what is
        read around each), else in the normalised text."""
        assert self._key is not None
        seen = _Seen()
        for window in _token_windows(_normalised_pieces(text), self._margin):
            distinct = self._hash_words(window.words, seen)
            self._scan_window(window, found, seen, distinct)
        if not (self._dobs and dated):
            return
        if text.isascii():
            if identifiers.has_digit(text):
                self._scan_dates(text, found, dob_cues, seen.hashes, _ascii_around)
            return
        normalised = normalise(text, folded=True)
        if identifiers.has_digit(normalised):
            self._scan_dates(normalised, found, dob_cues, seen.hashes, _as_it_is)

    def _hash_words(self, words: list[str], seen: _Seen) -> set[str]:
        """The window's distinct words; those not seen in the text's last window or flagged in
        an earlier one are hashed (remembered across messages by RecordKey) and, when the index
        flags them, kept in `seen`. Hashed a window at a time, the words common to every window
        of a long text were hashed again in each, a step of Python for each."""
        assert self._key is not None
        distinct = set(words)
        new = list(distinct.difference(seen.flags, seen.recent))
        seen.recent = distinct
        hashes = list(map(self._key.token, new))
        bits = list(map(self._flags.get, hashes, itertools.repeat(0)))
        for word, h, flags in itertools.compress(zip(new, hashes, bits, strict=True), bits):
            seen.flags[word] = flags
            seen.hashes[word] = h
            if flags & (_NAME_START | _DETAIL_ONE):
                seen.starts.add(word)
            if flags & _DETAIL_START:
                seen.detail_starts.add(word)
            if flags & _DETAIL_SECOND:
                seen.detail_seconds.add(word)
        return distinct

    def _scan_window(self, window: _Window, found: _Found, seen: _Seen,
                     distinct: set[str]) -> None:
        """What starts in the window's own tokens: the names, details and first names there,
        and the first names its relationship words name. The tokens around them are read for
        what they need (a name form begun before, a first name near a relationship word), so
        that the windows find together what one pass over all the tokens found."""
        assert self._key is not None
        words, own_from, own_to = window.words, window.own_from, window.own_to
        gaps = _Gaps(window.gaps)
        flagged, hashes = seen.flags, seen.hashes
        in_full_name: set[int] = set()
        own: set[int] = set()
        firsts: dict[int, bytes] = {}  # position -> hash of first names not in a full name
        for i in _starts(words, distinct, seen):
            bits = flagged[words[i]]
            h = hashes[words[i]]
            reported = own_from <= i < own_to
            if bits & _NAME_START:
                self._full_names(words, i, h, gaps, found, in_full_name, own, reported)
            if bits & _DETAIL_START and reported:
                self._details_at(words, i, h, hashes, found)
            if bits & _FIRST_NAME and i not in own:
                firsts[i] = h
                if reported:
                    found.first_seen.setdefault(h, False)
        for i in in_full_name:
            firsts.pop(i, None)
        # Relationship words, and the first names they name.
        if RELATIONSHIP_WORDS.isdisjoint(distinct):
            return
        for j in itertools.compress(range(own_from, own_to),
                                    map(RELATIONSHIP_WORDS.__contains__,
                                        itertools.islice(words, own_from, own_to))):
            for i in _named_by_relation(words, j, gaps):
                word = words[i]
                if flagged.get(word, 0) & _FIRST_NAME and i not in own:
                    h = hashes[word]
                elif i == j - 1 and len(word) > 2 and word.endswith("s"):
                    h = self._key.token(word[:-1])  # "Ellies mum"
                    if not self._flags.get(h, 0) & _FIRST_NAME:
                        continue
                else:
                    continue
                found.first_seen[h] = True
                # Another first name close by: "Ellie and her brother Jack".
                for k in range(max(0, i - PAIR_WINDOW), i + PAIR_WINDOW + 1):
                    g = firsts.get(k)
                    if g is not None and g != h and gaps.within(min(i, k), abs(i - k) + 1,
                                                                _COMMA):
                        found.pairs.add((h, g) if h < g else (g, h))

    def _full_names(self, words: list[str], i: int, h: bytes, gaps: _Gaps, found: _Found,
                    in_full_name: set[int], own: set[int], reported: bool) -> None:
        """The name forms that start at word i (within one sentence; "last, first" may have
        its comma); `reported` False: only where they lie (a window's token before its own)."""
        assert self._key is not None
        lengths = self._name_lengths[h]
        following = list(map(self._key.token, words[i + 1:i + max(lengths)]))
        for n in lengths:
            if i + n > len(words):
                continue
            form = (h, *following[:n - 1])
            people = self._names.get(form)
            if people and gaps.within(i, n, _COMMA if form in self._reversed else _SAME):
                if form in found.ignored:
                    own.update(range(i, i + n))
                elif reported:
                    found.full.append(tuple(people))
                in_full_name.update(range(i, i + n))

    def _details_at(self, words: list[str], i: int, h: bytes, hashes: dict[str, bytes],
                    found: _Found) -> None:
        """The details that start at word i. One of two tokens or more is looked for only where
        its first two are (a table's numbers start many addresses: "14", "2")."""
        assert self._key is not None
        second = hashes.get(words[i + 1]) if i + 1 < len(words) else None
        for n in self._detail_lengths[h]:
            if n == 1:
                found.details.update(self._details.get((h,), ()))
            elif (i + n <= len(words) and second is not None
                  and (h, second) in self._detail_pairs):
                form = (h, second, *map(self._key.token, words[i + 2:i + n]))
                found.details.update(self._details.get(form, ()))

    def _scan_dates(self, text: str, found: _Found, dob_cues: re.Pattern[str] | None,
                    hashes: dict[str, bytes], around: _Around) -> None:
        """Recorded dates of birth, in any format the date finder reads: after a cue, and next
        to the first name of a person born then. `hashes` are those of the text's words that
        the index flags: a first name is one of them. `around` gives the normalised text a
        date is read in for its cue and its neighbouring words."""
        born: dict[str, _Born | None] = {}  # a date as written -> who was born then
        present = set(hashes.values())
        for match in identifiers.find_dates(text):
            written = match.group()
            if written in born:
                people = born[written]
            else:
                if len(born) >= _DATES_REMEMBERED:
                    born.clear()
                people = born[written] = self._born_on(match, present)
                if people is not None:
                    found.dob_any.update(people.all)
            if people is None:
                continue
            near_text, start, end = around(text, match.start(), match.end())
            if dob_cues is not None and identifiers.cue_before(near_text, start, dob_cues):
                found.dob_cued.append(people.all)
            if people.named:
                near = {hashes.get(w) for w in _words_near(near_text, start, end)}
                found.dob_near.update(p for p in people.named if self.people[p].name[0] in near)

    def _born_on(self, match: re.Match[str], present: set[bytes]) -> _Born | None:
        """The people born on the date of a `find_dates` match, and those of them whose first
        name is `present` (hashed), or None (no such date, or nobody born then)."""
        assert self._key is not None
        value = identifiers.date_of(match)
        if value is None:
            return None
        people = self._dobs.get(self._key.date_of_birth(value))
        if not people:
            return None
        return _Born(tuple(people), [p for p in people if self.people[p].name[0] in present])

    # -- from what was seen to what it means ----------------------------------------------

    def _conclude(self, found: _Found) -> CaseMatches:
        """Which people and cases the hits of a message name (see the module's docstring)."""
        people, person_case = self.people, self._person_case
        tied: dict[int, Signal] = {}  # person -> why
        tied_cases: set[int] = set()

        def tie(person: int, signal: Signal) -> None:
            tied.setdefault(person, signal)
            tied_cases.add(person_case[person])

        # Names and cued dates of birth: of people of one case, they tie it; of several, they
        # wait for something else in the message to say which.
        ambiguous: list[tuple[tuple[int, ...], Signal]] = []
        for group, signal in [*((g, Signal.FULL_NAME) for g in found.full),
                              *((g, Signal.DATE_OF_BIRTH) for g in found.dob_cued)]:
            if len({person_case[p] for p in group}) == 1:
                for p in group:
                    tie(p, signal)
            else:
                ambiguous.append((group, signal))
        for p in sorted(found.dob_near):  # a date of birth next to its person's first name
            tie(p, Signal.DATE_OF_BIRTH)
        tied_cases.update(self._case_ids[self.details[d].case_number] for d in found.details)
        # A first name with a relationship word, when only one case has that first name; two
        # first names close together, one with a relationship word, of one case only.
        for h, related in found.first_seen.items():
            cases = self._first_cases[h]
            if related and len(cases) == 1:
                self._tie_first_names(next(iter(cases)), {h}, Signal.FIRST_NAME_RELATIONSHIP,
                                      tie)
        for h1, h2 in found.pairs:
            cases = self._first_cases[h1] & self._first_cases[h2]
            if len(cases) == 1:
                self._tie_first_names(next(iter(cases)), {h1, h2},
                                      Signal.FIRST_NAME_RELATIONSHIP, tie)
        # An ambiguous name or date is settled by another sign of one of its cases.
        possible: set[int] = set()
        for group, signal in ambiguous:
            cases = {person_case[p] for p in group}
            settled = {c for c in cases
                       if c in tied_cases or self._corroborated(c, group, found)}
            for p in group:
                if person_case[p] in settled:
                    tie(p, signal)
            if not settled:
                possible |= cases
        # The other people of a case the message is about, named by first name or date of birth.
        for case in sorted(tied_cases):
            for p in self._case_people[case]:
                seen = found.first_seen.get(people[p].name[0])
                if seen is not None:
                    tie(p, Signal.FIRST_NAME_RELATIONSHIP if seen else Signal.FIRST_NAME_WITH_CASE)
                elif p in found.dob_any:
                    tie(p, Signal.DATE_OF_BIRTH)
        return CaseMatches(
            people=tuple(PersonMatch(people[p].case_number, people[p].person_id,
                                     people[p].role, signal)
                         for p, signal in sorted(tied.items())),
            details=tuple(DetailMatch(d.case_number, d.detail_id, d.kind, d.may_go_to)
                          for d in (self.details[i] for i in sorted(found.details))),
            possible_cases=tuple(sorted(self._case_numbers[c] for c in possible - tied_cases)),
        )

    def _tie_first_names(self, case: int, first_names: set[bytes], signal: Signal,
                         tie: Callable[[int, Signal], None]) -> None:
        for p in self._case_people[case]:
            if self.people[p].name[0] in first_names:
                tie(p, signal)

    def _corroborated(self, case: int, group: tuple[int, ...], found: _Found) -> bool:
        """Whether another person of the case is named by first name, or anyone of it by date
        of birth, in the message."""
        return any((p not in group and self.people[p].name[0] in found.first_seen)
                   or p in found.dob_any
                   for p in self._case_people[case])


_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
_NAME_START = 1
_DETAIL_START = 2
_FIRST_NAME = 4
_DETAIL_ONE = 8  # a detail of this one token
_DETAIL_SECOND = 16  # the second token of a detail of two or more


@dataclass
class _Found:
    """Raw hits of one message, by index into the index's people and details."""

    ignored: frozenset[tuple[bytes, ...]] = frozenset()  # the sender's own name forms

    full: list[tuple[int, ...]] = field(default_factory=list)  # people of one name form each
    details: set[int] = field(default_factory=set)
    first_seen: dict[bytes, bool] = field(default_factory=dict)  # first name -> related?
    pairs: set[tuple[bytes, bytes]] = field(default_factory=set)
    dob_cued: list[tuple[int, ...]] = field(default_factory=list)
    dob_near: set[int] = field(default_factory=set)
    dob_any: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class _Born:
    """The people born on a date (indexes into the index's people), and those of them whose
    first name is in the text."""

    all: tuple[int, ...]
    named: list[int]


# Dates a text's scan remembers, as written, then forgets (in a table of payments each of a few
# hundred dates was worked out again on every row). The same text is the same date: `date_of`
# reads the groups of a match, and the date pattern parts a given text into groups one way only
# (its forms do not share a text: digits and separators, or a month name).
_DATES_REMEMBERED = 1 << 12


@dataclass
class _Seen:
    """What is known of a text's words as its windows are read: the words the index flags,
    with their flags and hashes (all that is kept of them from one window to the next: the
    hashes of all of them, as many as a long text of names has distinct words, were 3x a 1 MB
    one), grouped by what they may start, and the last window's distinct words (hashed)."""

    flags: dict[str, int] = field(default_factory=dict)
    hashes: dict[str, bytes] = field(default_factory=dict)
    starts: set[str] = field(default_factory=set)  # a name, or a detail of one token
    detail_starts: set[str] = field(default_factory=set)
    detail_seconds: set[str] = field(default_factory=set)
    recent: set[str] = field(default_factory=set)


def _starts(words: list[str], distinct: set[str], seen: _Seen) -> list[int]:
    """The positions, in order, of the words that may start a name, a first name or a detail:
    found at C speed (a step of Python for each flagged token was most of the matcher's time on
    a table of numbers, which start many addresses). A word that starts only details of two
    tokens or more counts where the word after it is the second token of one, so only in a
    window that holds both (a table's numbers start addresses, and its rows rarely hold a
    street's name: three passes over its every word found nothing, 37 ms of the 127 the
    matcher spent on the words of a 2 MB one)."""
    found: list[int] = []
    if not seen.starts.isdisjoint(distinct):
        found = list(itertools.compress(range(len(words)), map(seen.starts.__contains__, words)))
    if not (seen.detail_starts.isdisjoint(distinct) or seen.detail_seconds.isdisjoint(distinct)):
        pairs = itertools.compress(range(len(words) - 1), map(
            operator.and_, map(seen.detail_starts.__contains__, words),
            map(seen.detail_seconds.__contains__, itertools.islice(words, 1, None))))
        found = sorted({*found, *pairs})
    return found


@dataclass
class _Window:
    """Consecutive tokens of a text, the separator before each, and which of them are the
    window's own (`own_from` to `own_to`): the others are there to be read around them."""

    gaps: list[str]
    words: list[str]
    own_from: int
    own_to: int


def _token_windows(pieces: Iterable[str], margin: int) -> Iterator[_Window]:
    """The tokens of a normalised text, given as pieces that each end where a token has just
    ended (`_normalised_pieces`; `_GAP_TOKEN`, apostrophes inside a word dropped as `_words`
    does) in windows: each window's own tokens follow the last one's, with `margin` tokens on
    each side (fewer at the text's ends). The tokens of a long text, each a string and a
    separator in a pair, were 27 times the text (a 2 MB message of case notes); a window holds
    about `_WINDOW_TOKENS`."""
    gaps: list[str] = []
    words: list[str] = []
    own_from = 0
    slices = (part for piece in pieces for part in _token_slices(piece))
    for more_gaps, more_words in slices:
        gaps += more_gaps
        words += more_words
        if len(words) - own_from >= _WINDOW_TOKENS + margin:
            own_to = len(words) - margin
            yield _Window(gaps, words, own_from, own_to)
            drop = max(0, own_to - margin)
            gaps, words, own_from = gaps[drop:], words[drop:], own_to - drop
    yield _Window(gaps, words, own_from, len(words))


def _token_slices(normalised: str) -> Iterator[tuple[list[str], list[str]]]:
    """(separators, tokens) of a normalised text, a slice of about `_TOKEN_SLICE` characters
    at a time. A slice ends at a blank after a letter or digit, where a token has just ended
    and the separator after it begins: no token or separator lies across a cut."""
    apostrophes = "'" in normalised
    for start, end in _token_cuts(normalised, _TOKEN_SLICE):
        part = normalised[start:end]
        if part.isascii():
            yield _ascii_gaps_and_words(part)
        else:
            pairs = _GAP_TOKEN.findall(part)
            words = list(map(_SECOND, pairs))
            if apostrophes:
                words = [w if "'" not in w or w == POSSESSIVE else w.replace("'", "")
                         for w in words]
            yield list(map(_FIRST, pairs)), words


def _token_cuts(text: str, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of slices of about `size` characters of the text, each ending at a blank
    after a letter or digit (the last at the text's end): where a token has just ended and
    the separator after it begins, so that no token or separator lies across a cut."""
    start = 0
    while start < len(text):
        cut = _TOKEN_END.search(text, start + size)
        end = len(text) if cut is None else cut.start()
        yield start, end
        start = end


def _ascii_gaps_and_words(text: str) -> tuple[list[str], list[str]]:
    """`_GAP_TOKEN.findall(text)` of ASCII text as (separators, tokens), apostrophes inside a
    word dropped, at C speed: the regex took most of the matcher's time on long texts (a step
    of its engine for each character). Runs of letters, digits and apostrophes are the words
    (`str.split` of the text with every other character made a blank), and the runs between
    them the separators (the same, letters, digits and apostrophes made blanks); white space
    in a separator is written as a letter, a line break "N", other white space "W", and "_"
    as "U" (`_gap_kind` reads them so). A word with an apostrophe is read by the regex."""
    words = text.translate(_ASCII_WORDS).split()
    gaps = text.translate(_ASCII_SEPARATORS).split()
    if text[:1] in _WORD_CHARACTERS:
        gaps.insert(0, "")  # the first word has nothing before it
    del gaps[len(words):]  # nor does anything follow the last
    if "'" in text:
        return _apostrophe_words(gaps, words)
    return gaps, words


def _apostrophe_words(gaps: list[str], runs: list[str]) -> tuple[list[str], list[str]]:
    """The tokens of runs of letters, digits and apostrophes (and the separator before each
    run): a run with an apostrophe read by `_TOKEN` ("ellie's" is "ellie" and "'s", "o'brien"
    "obrien", "'" nothing). Its first token has the separator before the run when it starts
    the run, and nothing before it otherwise, as `_GAP_TOKEN` reads them; the others nothing."""
    marked = list(itertools.compress(range(len(runs)),
                                     map(operator.contains, runs, itertools.repeat("'"))))
    if not marked:
        return gaps, runs
    out_gaps: list[str] = []
    out_words: list[str] = []
    done = 0
    for i in marked:
        out_gaps += gaps[done:i]
        out_words += runs[done:i]
        found = _TOKEN.findall(runs[i])
        if found:
            out_gaps.append(gaps[i] if _TOKEN.match(runs[i]) else "")
            out_gaps += [""] * (len(found) - 1)
            out_words += [w if w == POSSESSIVE else w.replace("'", "") for w in found]
        done = i + 1
    out_gaps += gaps[done:]
    out_words += runs[done:]
    return out_gaps, out_words


_WORD_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'")
_ASCII_WORDS = str.maketrans({c: " " for c in map(chr, range(128)) if c not in _WORD_CHARACTERS})
_ASCII_SEPARATORS = str.maketrans(
    {c: " " if c in _WORD_CHARACTERS else "N" if c == "\n" else "W" if c.isspace()
     else "U" if c == "_" else c for c in map(chr, range(128))})


_TOKEN_SLICE = 1 << 14  # characters of normalised text read for tokens at a time
_WINDOW_TOKENS = 1 << 11  # tokens of its own a window holds (and its margins)
_TOKEN_END = re.compile(r"(?<=[^\W_])\s")


class _Gaps:
    """The kind of separator before each token, worked out only where asked."""

    def __init__(self, gaps: list[str]) -> None:
        self._gaps = gaps
        self._kinds: dict[str, int] = {}

    def before(self, i: int) -> int:
        """The separator between token i - 1 and token i."""
        gap = self._gaps[i]
        kind = self._kinds.get(gap)
        if kind is None:
            kind = self._kinds[gap] = _gap_kind(gap)
        return kind

    def within(self, i: int, n: int, allowed: int) -> bool:
        """Whether tokens i .. i+n-1 are parted by nothing stronger than `allowed`."""
        return all(self.before(j) <= allowed for j in range(i + 1, i + n))


def _named_by_relation(words: list[str], j: int, gaps: _Gaps) -> list[int]:
    """The words a relationship word at j may name: "Ellie's mum", "Ellies mum", "mother of
    Ellie", "carer to Ellie", "brother Jack" (within a sentence)."""
    found = []
    if j >= 1 and words[j - 1] != POSSESSIVE and gaps.before(j) == _SAME:
        found.append(j - 1)
    if j >= 2 and words[j - 1] == POSSESSIVE and gaps.within(j - 2, 3, _SAME):
        found.append(j - 2)
    if j + 1 < len(words) and gaps.before(j + 1) <= _COMMA:
        found.append(j + 1)
    if j + 2 < len(words) and words[j + 1] in _RELATION_LINKS and gaps.within(j, 3, _SAME):
        found.append(j + 2)
    return found


# The normalised text a date found at (start, end) of a text is read in, and where it lies
# there: (text, start, end).
_Around = Callable[[str, int, int], tuple[str, int, int]]


def _as_it_is(text: str, start: int, end: int) -> tuple[str, int, int]:
    """A date of a normalised text is read in that text."""
    return text, start, end


def _ascii_around(text: str, start: int, end: int) -> tuple[str, int, int]:
    """What the whole of an ASCII folded text, normalised, holds around a date found at
    `start`..`end` of it, for as far as `cue_before` and `_words_near` read (`_AROUND` on each
    side), and where the date lies in that. The stretch before the date is normalised from
    `_AROUND` characters before it: only a postcode its start cuts could come out otherwise
    than in the whole, and that lies further back than anything read. The date is only
    lower-cased: no postcode lies in a date or runs into one (a date follows a character that
    is neither a letter nor a digit, holds no letter just before a digit, and ends with its
    year's digits). The stretch after it is normalised from the year's last digit on, so that
    a postcode glued to the date is not spaced, as in the whole. Spacing adds characters, so
    what is read lies within."""
    before = _normalised(text[max(0, start - _AROUND):start])
    after = _normalised(text[end - 1:end + _AROUND])[1:]
    return before + text[start:end].lower() + after, len(before), len(before) + end - start


# Characters of folded text normalised on each side of a date (`_ascii_around`): more than
# `cue_before` reads before it (DOB_WINDOW and a cue, 80, and one more for the cue's
# lookbehind) by more than a postcode's length, and more than `_words_near` reads (60).
_AROUND = 100


def _words_near(text: str, start: int, end: int) -> list[str]:
    """The few words just before and just after a date, within its sentence."""
    before = text[max(0, start - 60):start]
    cut = [m.end() for m in _HARD.finditer(before)]
    after = text[end:end + 60]
    stop = _HARD.search(after)
    return (_words(before[cut[-1] if cut else 0:])[-DOB_NEAR_TOKENS:]
            + _words(after[:stop.start() if stop else len(after)])[:DOB_NEAR_TOKENS])


CaseIndex.EMPTY = CaseIndex(None, (), (), ())
