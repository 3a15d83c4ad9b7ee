"""The case registry's matcher as it was before it was made faster (policies/cases.py at
b13e82d), frozen: tests/test_case_matcher.py checks that today's `CaseIndex.match` answers as
this one does. Only its docstrings are left out; the date finder is the regex itself (what
`identifiers.find_dates` finds), and the date helpers it called are copied as they were."""

from __future__ import annotations

import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from policies import identifiers
from policies.cases import (
    CaseMatches,
    CasePerson,
    ConfidentialDetail,
    DetailMatch,
    PersonMatch,
    RecordKey,
    ShieldedCase,
    Signal,
)
from policies.normalise import fold, line_slices


def _has_digit(text: str) -> bool:
    return re.search(r"\d", text) is not None


def _date_of(match: re.Match[str]) -> date | None:
    form = next(i for i in "1234" if match.group(f"y{i}") is not None)
    day, month_text, year_text = (match.group(f"{k}{form}") for k in "dmy")
    month = (identifiers._MONTHS.get(month_text.lower(), 0) if month_text.isalpha()
             else int(month_text))
    year = int(year_text)
    if len(year_text) == 2:
        year += 2000 if year < 50 else 1900
    try:
        return date(year, month, int(day))
    except ValueError:
        return None


def _cue_before(text: str, start: int, cues: re.Pattern[str]) -> bool:
    window_start = max(0, start - identifiers.DOB_WINDOW - 40)
    return any(start - identifiers.DOB_WINDOW <= cue.end() <= start
               for cue in cues.finditer(text, window_start, start))


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
    text = text if folded else fold(text)
    if len(text) <= _NORMALISE_SLICE:
        return _normalised(text)
    return "".join([_normalised(text[start:end])
                    for start, end in line_slices(text, _NORMALISE_SLICE)])


_NORMALISE_SLICE = 1 << 16  # characters of a text normalised at a time


def _normalised(text: str) -> str:
    text = text.casefold()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text.translate(_APOSTROPHES)
                                                        .translate(_LETTERS)))
    if _has_digit(text):
        text = _POSTCODE.sub(r"\1 \2", text)
    return text


def tokens(text: str, *, folded: bool = False) -> list[str]:
    return _words(normalise(text, folded=folded))


def _words(normalised: str) -> list[str]:
    found = _TOKEN.findall(normalised)
    if "'" in normalised and any("'" in t for t in found):
        found = [t if t == POSSESSIVE else t.replace("'", "") for t in found]
    return found


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
    if _HARD.search(gap):
        return _BREAK
    return _COMMA if "," in gap else _SAME


class ReferenceIndex:

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
              shields: Iterable[ShieldedCase]) -> ReferenceIndex:
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
        if self._key is None or self.is_empty:
            for _ in texts:  # read nothing, but consume a generator as callers expect
                pass
            return CaseMatches.NONE
        found = _Found(ignored=self._own_name(sender_name))
        for index, text in enumerate(texts):
            self._scan(text, found, dob_cues, dated is None or dated[index])
        return self._conclude(found)

    def _own_name(self, sender_name: str) -> frozenset[tuple[bytes, ...]]:
        assert self._key is not None
        words = [w for w in tokens(sender_name) if w != POSSESSIVE]
        if len(words) < 2:
            return frozenset()
        hashes = tuple(self._key.token(w) for w in words)
        return frozenset({hashes, (hashes[0], hashes[-1]), (hashes[-1], hashes[0])})

    # -- one text, one pass ------------------------------------------------------------------

    def _scan(self, text: str, found: _Found, dob_cues: re.Pattern[str] | None,
              dated: bool = True) -> None:
        assert self._key is not None
        normalised = normalise(text, folded=True)
        # The words the index flags, with their flags and hashes: all that is kept of the
        # text's words from one window to the next (the hashes of all of them, as many as a
        # long text of names has distinct words, were 3x a 1 MB one).
        flagged: dict[str, int] = {}
        flagged_hashes: dict[str, bytes] = {}
        for window in _token_windows(normalised, self._margin):
            hashes = self._hash_words(window.words, flagged, flagged_hashes)
            self._scan_window(window, found, hashes, flagged)
        if self._dobs and dated and _has_digit(normalised):
            self._scan_dates(normalised, found, dob_cues, flagged_hashes)

    def _hash_words(self, words: list[str], flagged: dict[str, int],
                    flagged_hashes: dict[str, bytes]) -> dict[str, bytes]:
        assert self._key is not None
        token_hash = self._key.token
        flags = self._flags
        hashes: dict[str, bytes] = {}
        for word in set(words):
            h = hashes[word] = token_hash(word)
            bits = flags.get(h, 0)
            if bits:
                flagged[word] = bits
                flagged_hashes[word] = h
        return hashes

    def _scan_window(self, window: _Window, found: _Found, hashes: dict[str, bytes],
                     flagged: dict[str, int]) -> None:
        assert self._key is not None
        words, own_from, own_to = window.words, window.own_from, window.own_to
        gaps = _Gaps(window.gaps)
        in_full_name: set[int] = set()
        own: set[int] = set()
        firsts: dict[int, bytes] = {}  # position -> hash of first names not in a full name
        for i in [i for i, w in enumerate(words) if w in flagged]:
            bits = flagged[words[i]]
            h = hashes[words[i]]
            reported = own_from <= i < own_to
            if bits & _NAME_START:
                self._full_names(words, i, h, hashes, gaps, found, in_full_name, own, reported)
            if bits & _DETAIL_START and reported:
                # A detail of two tokens or more is looked for only where its first two are
                # (a table's numbers start many addresses: "14", "2").
                pair = tuple(hashes[w] for w in words[i:i + 2])
                for n in self._detail_lengths[h]:
                    if i + n <= len(words) and (n == 1 or pair in self._detail_pairs):
                        form = tuple(hashes[w] for w in words[i:i + n])
                        found.details.update(self._details.get(form, ()))
            if bits & _FIRST_NAME and i not in own:
                firsts[i] = h
                if reported:
                    found.first_seen.setdefault(h, False)
        for i in in_full_name:
            firsts.pop(i, None)
        # Relationship words, and the first names they name.
        for j in [j for j in range(own_from, own_to) if words[j] in RELATIONSHIP_WORDS]:
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

    def _full_names(self, words: list[str], i: int, h: bytes, hashes: dict[str, bytes],
                    gaps: _Gaps, found: _Found, in_full_name: set[int], own: set[int],
                    reported: bool) -> None:
        for n in self._name_lengths[h]:
            if i + n > len(words):
                continue
            form = tuple(hashes[w] for w in words[i:i + n])
            people = self._names.get(form)
            if people and gaps.within(i, n, _COMMA if form in self._reversed else _SAME):
                if form in found.ignored:
                    own.update(range(i, i + n))
                elif reported:
                    found.full.append(tuple(people))
                in_full_name.update(range(i, i + n))

    def _scan_dates(self, text: str, found: _Found, dob_cues: re.Pattern[str] | None,
                    hashes: dict[str, bytes]) -> None:
        assert self._key is not None
        present: set[bytes] | None = None
        for match in identifiers.DATES.finditer(text):
            value = _date_of(match)
            if value is None:
                continue
            people = self._dobs.get(self._key.date_of_birth(value))
            if not people:
                continue
            found.dob_any.update(people)
            if dob_cues is not None and _cue_before(text, match.start(), dob_cues):
                found.dob_cued.append(tuple(people))
            if present is None:
                present = set(hashes.values())
            named = [p for p in people if self.people[p].name[0] in present]
            if named:
                near = {hashes.get(w) for w in _words_near(text, match.start(), match.end())}
                found.dob_near.update(p for p in named if self.people[p].name[0] in near)

    # -- from what was seen to what it means ----------------------------------------------

    def _conclude(self, found: _Found) -> CaseMatches:
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
        return any((p not in group and self.people[p].name[0] in found.first_seen)
                   or p in found.dob_any
                   for p in self._case_people[case])


_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
_NAME_START = 1
_DETAIL_START = 2
_FIRST_NAME = 4


@dataclass
class _Found:

    ignored: frozenset[tuple[bytes, ...]] = frozenset()  # the sender's own name forms

    full: list[tuple[int, ...]] = field(default_factory=list)  # people of one name form each
    details: set[int] = field(default_factory=set)
    first_seen: dict[bytes, bool] = field(default_factory=dict)  # first name -> related?
    pairs: set[tuple[bytes, bytes]] = field(default_factory=set)
    dob_cued: list[tuple[int, ...]] = field(default_factory=list)
    dob_near: set[int] = field(default_factory=set)
    dob_any: set[int] = field(default_factory=set)


@dataclass
class _Window:

    gaps: list[str]
    words: list[str]
    own_from: int
    own_to: int


def _token_windows(normalised: str, margin: int) -> Iterator[_Window]:
    gaps: list[str] = []
    words: list[str] = []
    own_from = 0
    for more_gaps, more_words in _token_slices(normalised):
        gaps += more_gaps
        words += more_words
        if len(words) - own_from >= _WINDOW_TOKENS + margin:
            own_to = len(words) - margin
            yield _Window(gaps, words, own_from, own_to)
            drop = max(0, own_to - margin)
            gaps, words, own_from = gaps[drop:], words[drop:], own_to - drop
    yield _Window(gaps, words, own_from, len(words))


def _token_slices(normalised: str) -> Iterator[tuple[list[str], list[str]]]:
    start = 0
    apostrophes = "'" in normalised
    while start < len(normalised):
        cut = _TOKEN_END.search(normalised, start + _TOKEN_SLICE)
        end = len(normalised) if cut is None else cut.start()
        pairs = _GAP_TOKEN.findall(normalised, start, end)
        words = list(map(_SECOND, pairs))
        if apostrophes:
            words = [w if "'" not in w or w == POSSESSIVE else w.replace("'", "") for w in words]
        yield list(map(_FIRST, pairs)), words
        start = end


_TOKEN_SLICE = 1 << 14  # characters of normalised text read for tokens at a time
_WINDOW_TOKENS = 1 << 11  # tokens of its own a window holds (and its margins)
_TOKEN_END = re.compile(r"(?<=[^\W_])\s")


class _Gaps:

    def __init__(self, gaps: list[str]) -> None:
        self._gaps = gaps
        self._kinds: dict[str, int] = {}

    def before(self, i: int) -> int:
        gap = self._gaps[i]
        kind = self._kinds.get(gap)
        if kind is None:
            kind = self._kinds[gap] = _gap_kind(gap)
        return kind

    def within(self, i: int, n: int, allowed: int) -> bool:
        return all(self.before(j) <= allowed for j in range(i + 1, i + n))


def _named_by_relation(words: list[str], j: int, gaps: _Gaps) -> list[int]:
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


def _words_near(text: str, start: int, end: int) -> list[str]:
    before = text[max(0, start - 60):start]
    cut = [m.end() for m in _HARD.finditer(before)]
    after = text[end:end + 60]
    stop = _HARD.search(after)
    return (_words(before[cut[-1] if cut else 0:])[-DOB_NEAR_TOKENS:]
            + _words(after[:stop.start() if stop else len(after)])[:DOB_NEAR_TOKENS])


