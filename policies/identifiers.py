"""Detectors for the personal identifiers that make a message protected (DESIGN ruling 2).

Each detector answers one question about a piece of text: does it hold a case number, a date of
birth, an NHS number, a National Insurance number or a PNC id? Checksums are verified where the
identifier has one, so that an arbitrary ten-digit number is not taken for an NHS number.
Callers keep the kinds found, never the values (DESIGN ruling 8), except case numbers, which the
engine needs.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

from policies import scan

# Kinds, as they appear in MessageFacts.identifiers and protected_reasons.
DATE_OF_BIRTH = "date-of-birth"
NHS_NUMBER = "nhs-number"
NI_NUMBER = "ni-number"
PNC_ID = "pnc-id"

# Neither a letter nor a digit on either side: "ZC12C00123_report" still matches, "XZC12..." not.
_BEFORE = r"(?<![A-Za-z0-9])"
_AFTER = r"(?![A-Za-z0-9])"


def compile_case_number_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a configured case-number pattern, anchored so it never matches inside a word."""
    return re.compile(f"{_BEFORE}(?:{pattern}){_AFTER}", re.IGNORECASE)


def compile_case_number_search(pattern: str) -> re.Pattern[str]:
    """The pattern that finds case numbers in text: the configured one, anchored, with an
    optional space or hyphen allowed between its parts, where people type them ("ZC12 C00123",
    "ZC12-C00123"). A pattern with a top-level alternative is used as it is."""
    return compile_case_number_pattern(_with_separators(pattern))


# One top-level part of a pattern: a class, an escape, a group or one character, and its
# quantifier. Groups nest only as deep as this counts (a deeper pattern is used as it is).
_PART = re.compile(r"""
    (?: \[(?:\\.|[^\]])*\]          # a character class
      | \\.                           # an escape
      | \((?:[^()]|\([^()]*\))*\)      # a group, one level of nesting inside
      | [^|()\[\]\\]                   # one ordinary character
    )
    (?: \{\d*(?:,\d*)?\} | [*+?] )?\??  # its quantifier
""", re.VERBOSE)
_SEPARATOR = "[ -]?"


def _with_separators(pattern: str) -> str:
    parts: list[str] = []
    position = 0
    while position < len(pattern):
        match = _PART.match(pattern, position)
        if match is None:  # a top-level "|", or something this reading does not know
            return pattern
        parts.append(match.group())
        position = match.end()
    return _SEPARATOR.join(parts) if len(parts) > 1 else pattern


def find_case_numbers(text: str, pattern: re.Pattern[str],
                      canonical: re.Pattern[str] | None = None,
                      found: scan.Found | None = None) -> Iterator[str]:
    """Case numbers in the text, upper-cased with the spaces and hyphens typed inside them
    removed, in order of appearance (`pattern` from `compile_case_number_search`). A hyphen is
    kept when the `canonical` pattern (from `compile_case_number_pattern`; by default
    `pattern`) needs it.

    When every match of the pattern holds a digit within a bounded width (as the default's
    does), only the stretches of text around digits are searched (`digit_anchored`); the
    matches are the same as `pattern.finditer(text)`'s. `found` is the text's `scan_text`
    with `pattern` among its patterns (made here when not given).
    """
    for match in (found or scan_text(text, (pattern,))).matches(pattern):
        value = re.sub(r"\s+", "", match.group(0)).upper()
        if "-" in value and (canonical or pattern).fullmatch(value) is None:
            value = value.replace("-", "")
        yield value


# A text with more candidates than this (numbers that fail their check) is a data dump, not a
# letter: it counts as holding the identifier, which keeps the work per text bounded.
MAX_CANDIDATES = 10_000


def _any_valid(matches: Iterator[re.Match[str]], valid: Callable[[re.Match[str]], bool]) -> bool:
    """Whether a candidate passes its check; past MAX_CANDIDATES, yes (fail closed)."""
    for count, match in enumerate(matches):
        if count >= MAX_CANDIDATES or valid(match):
            return True
    return False


_DIGIT = re.compile(r"\d")
_ASCII_DIGITS = "0123456789"


def has_digit(text: str) -> bool:
    """Whether the text holds a decimal digit (what `\\d` matches), found at C speed: an ASCII
    one by `in`, another from the text's distinct non-ASCII characters (a regex walked each
    character of such a text in the interpreter: 70 ms for 2 MB of prose without a digit)."""
    if any(digit in text for digit in _ASCII_DIGITS):
        return True
    return not text.isascii() and any(_DIGIT.match(char) for char in scan.other_characters(text))


# --- searching only near digits -------------------------------------------------------------
#
# A regex searched over a whole text is tried at every position (about 17 ns a character for a
# case number, case-insensitively): most of the cost of a long message. Every identifier holds a
# digit, and digits are rare in prose, so a pattern whose every match holds a digit and spans at
# most `width` characters is searched only in the stretches within `width` of a digit. The
# stretches are found at C speed (`bytes.translate`, then a regex with a literal first byte),
# 256 KiB of text at a time so that the copies stay small.

_SCAN_SLICE = 1 << 18
_ASCII_DIGIT_MAP = bytes.maketrans(
    bytes(range(256)), bytes(0x30 if 0x30 <= c <= 0x39 else 0x2E for c in range(256)))


def scan_text(text: str, patterns: tuple[re.Pattern[str], ...],
              gates: tuple[re.Pattern[str], ...] = (),
              broken: tuple[re.Pattern[str], ...] = ()) -> scan.Found:
    """One pass of the scan engine (policies/scan.py) over the text for all these patterns:
    `found.matches(p)` is then `p.finditer(text)`, found only where p's shape is; for the
    `gates`, `found.present(g)` says whether g may occur; for the `broken` patterns,
    `found.joined_may_match()` whether they may match in the text's joined view."""
    return scan.search(text, patterns, anchored_finditer, gates=gates, broken=broken)


def anchored_finditer(text: str, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text)`, near digits only when `digit_anchored` allows it."""
    width = digit_anchored(pattern)
    return pattern.finditer(text) if width is None else near_digits(text, pattern, width)


def near_digits(text: str, pattern: re.Pattern[str], width: int) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text)`, for a pattern whose every match holds a digit (`\\d`) and
    spans at most `width` characters, and which looks at most one character beyond a match.

    Each stretch is searched with `endpos` at its end, where the pattern would see the text
    end; a match that reaches a stretch's end (before the text's) is dropped, and no true match
    does, since it ends within `width` of its digit. Stretches never overlap, and no match can
    span two, so the matches come out once each, in order.
    """
    for start, end in _digit_stretches(text, width):
        for match in pattern.finditer(text, start, end):
            if match.end() < end or end == len(text):
                yield match


def _digit_stretches(text: str, width: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the stretches within `width` characters of a digit, merged, in order."""
    pending: tuple[int, int] | None = None
    for first, last in _digit_runs(text, 2 * width + 1):
        start, end = max(0, first - width), min(len(text), last + width + 1)
        if pending is not None and start <= pending[1]:
            pending = (pending[0], end)
            continue
        if pending is not None:
            yield pending
        pending = (start, end)
    if pending is not None:
        yield pending


def _digit_runs(text: str, gap: int) -> Iterator[tuple[int, int]]:
    """(first digit, after the last digit) of runs of digits at most `gap` characters apart."""
    if not text.isascii():
        runs = re.compile(rf"\d(?:\D{{0,{gap}}}\d)*")
        yield from (m.span() for m in runs.finditer(text))
        return
    runs_b = re.compile(rb"0(?:\.{0,%d}0)*" % gap)
    for offset in range(0, len(text), _SCAN_SLICE):
        digits = text[offset:offset + _SCAN_SLICE].encode("ascii").translate(_ASCII_DIGIT_MAP)
        yield from ((offset + m.start(), offset + m.end()) for m in runs_b.finditer(digits))


@functools.lru_cache(maxsize=64)
def digit_anchored(pattern: re.Pattern[str]) -> int | None:
    """The width for `near_digits` of a pattern from `compile_case_number_pattern`, or None.

    None unless every match provably holds a digit, spans at most `MAX_ANCHORED_WIDTH`
    characters and looks no further than the lookarounds the compiler adds (one character
    either side): the configured part may hold no lookaround of its own. Decided from the
    regex's parse tree (`re._parser`, the stdlib's own parser); anything it cannot read is None.
    """
    text = pattern.pattern
    if not (text.startswith(_BEFORE) and text.endswith(_AFTER)):
        return None
    try:
        _parser = importlib.import_module("re._parser")  # the stdlib's (private: guarded)
        tree = _parser.parse(text[len(_BEFORE):len(text) - len(_AFTER)], pattern.flags)
        low, high = tree.getwidth()
        if low < 1 or high > MAX_ANCHORED_WIDTH or _looks_around(tree, _parser):
            return None
        return high if _requires_digit(tree, _parser) else None
    except Exception:  # an unknown shape of parse tree: search the whole text
        return None


MAX_ANCHORED_WIDTH = 64


def _looks_around(items: Any, parser: Any) -> bool:
    for op, av in items:
        if op in (parser.ASSERT, parser.ASSERT_NOT):
            return True
        if any(_looks_around(sub, parser) for sub in _subpatterns(op, av, parser)):
            return True
    return False


def _subpatterns(op: Any, av: Any, parser: Any) -> list[Any]:
    if op in (parser.MAX_REPEAT, parser.MIN_REPEAT, parser.POSSESSIVE_REPEAT):
        return [av[2]]
    if op is parser.SUBPATTERN:
        return [av[3]]
    if op is parser.BRANCH:
        return list(av[1])
    if op is parser.ATOMIC_GROUP:
        return [av]
    if op is parser.GROUPREF_EXISTS:
        return [x for x in av[1:] if x is not None]
    return []


def _requires_digit(items: Any, parser: Any) -> bool:
    """Whether every match of this sequence consumes a character only `\\d` matches."""
    return any(_item_requires_digit(op, av, parser) for op, av in items)


def _item_requires_digit(op: Any, av: Any, parser: Any) -> bool:
    if op is parser.LITERAL:
        return _DIGIT.fullmatch(chr(av)) is not None
    if op is parser.IN:
        return bool(av) and all(_member_is_digit(member_op, member_av, parser)
                                for member_op, member_av in av)
    if op in (parser.MAX_REPEAT, parser.MIN_REPEAT, parser.POSSESSIVE_REPEAT):
        return bool(av[0] >= 1 and _requires_digit(av[2], parser))
    if op is parser.SUBPATTERN:
        return _requires_digit(av[3], parser)
    if op is parser.ATOMIC_GROUP:
        return _requires_digit(av, parser)
    if op is parser.BRANCH:
        return all(_requires_digit(branch, parser) for branch in av[1])
    return False


def _member_is_digit(op: Any, av: Any, parser: Any) -> bool:
    if op is parser.LITERAL:
        return _DIGIT.fullmatch(chr(av)) is not None
    if op is parser.RANGE:
        return ord("0") <= av[0] <= av[1] <= ord("9")
    if op is parser.CATEGORY:
        return av is parser.CATEGORY_DIGIT
    return False


# --- NHS number: ten digits, 3-3-4, modulus 11 check digit --------------------------------

# The lookbehind sits after the first digit, so that the pattern starts with a digit class and
# the regex engine skips ahead to the next digit instead of trying every position (same matches).
# Spaced, the same separator twice; but a line break stands for a space, since a mail client
# that wraps a line at a space may drop the space: "943 476\n5919" is "943 476 5919" to the
# reader, and the joined view ("943 4765919") would not show it. So does a line break after a
# space (the client kept the space at the line's end, as format=flowed does), for a number
# wrapped twice, once each way ("943 \n476\n5919": the joined view reads "943 4765919").
_NHS = re.compile(r"\d(?<![\d-]\d)\d\d(?:(?: ?\n| )\d{3}(?: ?\n| )|-\d{3}-|\d{3})\d{4}(?![\d-])")
# Wider, its lookbehind at the start, for the scan engine's shape (policies/scan.py): up to two
# separators twice, which Hyperscan scans as fast as the one pattern without line breaks.
scan.shape_as(_NHS, re.compile(r"(?<![\d-])\d{3}[ \n-]{0,2}\d{3}[ \n-]{0,2}\d{4}(?![\d-])"))
_NHS_SEPARATORS = str.maketrans("", "", " \n-")


def nhs_number_valid(digits: str) -> bool:
    """Whether ten digits form an NHS number: weights 10..2, check = 11 - sum mod 11."""
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    if len(set(digits)) == 1:  # 0000000000 passes the arithmetic but is never issued
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])


def has_nhs_number(text: str, found: scan.Found | None = None) -> bool:
    """Whether the text holds a valid NHS number, spaced 3-3-4 (space or hyphen, a line break
    with or without a space before it for a space) or not."""
    return _any_valid((found or scan_text(text, (_NHS,))).matches(_NHS),
                      lambda m: nhs_number_valid(m.group().translate(_NHS_SEPARATORS)))


# --- National Insurance number: HMRC prefix rules ---------------------------------------

# First letter never D, F, I, Q, U, V; second never D, F, I, O, Q, U, V; suffix A-D.
_NINO = re.compile(
    _BEFORE
    + r"([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?(\d{2}) ?(\d{2}) ?(\d{2}) ?([A-D])"
    + _AFTER,
    re.IGNORECASE,
)
_NINO_UNALLOCATED_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def ni_number_valid(value: str) -> bool:
    """Whether a value is a National Insurance number under HMRC's allocation rules."""
    match = _NINO.fullmatch(value.strip())
    return match is not None and match.group(1).upper() not in _NINO_UNALLOCATED_PREFIXES


def has_ni_number(text: str, found: scan.Found | None = None) -> bool:
    """Whether the text holds a National Insurance number (spaced in pairs or not)."""
    return any(m.group(1).upper() not in _NINO_UNALLOCATED_PREFIXES
               for m in (found or scan_text(text, (_NINO,))).matches(_NINO))


# --- PNC id: YY/NNNNNNN + check letter ---------------------------------------------------

# (?<![\w/])(\d{2}|\d{4}), written to start with a digit class as _NHS is.
_PNC = re.compile(r"(\d(?<![\w/]\d)(?:\d|\d{3}))/(\d{1,7})([A-Za-z])(?![\w/])")
# Wider, for the scan engine's shape: ASCII word characters only at its ends (a letter of
# another script is "?" to Hyperscan, which the boundary class admits).
scan.shape_as(_PNC, re.compile(
    r"(?<![0-9A-Za-z_/])\d(?:\d|\d{3})/\d{1,7}[A-Za-z](?![0-9A-Za-z_/])"))
_PNC_CHECK_LETTERS = "ZABCDEFGHJKLMNPQRTUVWXY"  # 23 letters: no I, O or S


def pnc_check_letter(year: str, serial: str) -> str:
    """The PNC check letter: (two-digit year, serial padded to seven digits) modulo 23."""
    return _PNC_CHECK_LETTERS[int(year[-2:] + serial.zfill(7)) % 23]


def pnc_id_valid(value: str) -> bool:
    """Whether a value such as 2001/0012345Z or 01/12345Z is a PNC id with a correct check."""
    match = _PNC.fullmatch(value.strip())
    return match is not None and _pnc_match_valid(match)


def _pnc_match_valid(match: re.Match[str]) -> bool:
    year, serial, letter = match.groups()
    return pnc_check_letter(year, serial) == letter.upper()


def has_pnc_id(text: str, found: scan.Found | None = None) -> bool:
    """Whether the text holds a PNC id whose check letter is right."""
    return _any_valid((found or scan_text(text, (_PNC,))).matches(_PNC), _pnc_match_valid)


# --- Date of birth: a real date close after a cue -----------------------------------------

_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_MONTH_NAME = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORDINAL = r"(?:st|nd|rd|th)?"
_DATE = (
    rf"(?P<d1>\d{{1,2}})[/.-](?P<m1>\d{{1,2}})[/.-](?P<y1>\d{{4}}|\d{{2}})(?!\d)"  # 03/04/2015
    rf"|(?P<y2>\d{{4}})-(?P<m2>\d{{1,2}})-(?P<d2>\d{{1,2}})(?!\d)"  # 2015-04-03
    rf"|(?P<d3>\d{{1,2}}){_ORDINAL}\s+(?P<m3>{_MONTH_NAME})\.?,?\s+(?P<y3>\d{{4}})"  # 3rd Apr 2015
    rf"|(?P<m4>{_MONTH_NAME})\.?\s+(?P<d4>\d{{1,2}}){_ORDINAL},?\s+(?P<y4>\d{{4}})"  # Apr 3, 2015
)
DOB_WINDOW = 40  # characters after a cue in which the date must start


_DATE_PATTERN = re.compile(rf"(?<![A-Za-z0-9])(?=[0-9JFMASONDjfmasond])(?:{_DATE})", re.I)
# Its shape for the scan engine without the word boundary before it (a gate): a date the case
# matcher finds in its normalised text (policies/cases.py) is then one in ASCII text, whose
# only change there is a space between a postcode's halves ("ab11st March" -> "ab1 1st").
scan.shape_as(_DATE_PATTERN, re.compile(rf"(?:{_DATE})", re.I))


DATES = _DATE_PATTERN  # what the case matcher's dates are found with (`find_dates`)


def compile_cues(cues: Iterable[str]) -> re.Pattern[str]:
    """One pattern for the configured date-of-birth cues, matched as whole words."""
    alternatives = "|".join(re.escape(c).replace(r"\ ", r"\s+") for c in cues)
    return re.compile(rf"{_BEFORE}(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def _is_real_date(match: re.Match[str]) -> bool:
    """Whether a date the date pattern found exists in the calendar."""
    return date_of(match) is not None


def date_of(match: re.Match[str]) -> date | None:
    """The calendar date a match of `find_dates` names (day first), or None if none exists."""
    form = next(i for i in "1234" if match.group(f"y{i}") is not None)
    day, month_text, year_text = (match.group(f"{k}{form}") for k in "dmy")
    month = _MONTHS.get(month_text.lower(), 0) if month_text.isalpha() else int(month_text)
    year = int(year_text)
    if len(year_text) == 2:
        year += 2000 if year < 50 else 1900  # two-digit years: a child or a parent
    try:
        return date(year, month, int(day))
    except ValueError:
        return None


def cue_before(text: str, start: int, cues: re.Pattern[str]) -> bool:
    """Whether a cue ends at most DOB_WINDOW characters before `start`."""
    window_start = max(0, start - DOB_WINDOW - _LONGEST_CUE)
    return any(start - DOB_WINDOW <= cue.end() <= start
               for cue in cues.finditer(text, window_start, start))


_LONGEST_CUE = 40  # characters: a cue longer than this is not looked for in full


# The last three letters of each month name, and the names ending in them (lower case).
_MONTHS_BY_ENDING: dict[str, tuple[str, ...]] = {}
for _name in _MONTHS:
    _MONTHS_BY_ENDING[_name[-3:]] = (*_MONTHS_BY_ENDING.get(_name[-3:], ()), _name)


def find_dates(text: str) -> Iterator[re.Match[str]]:
    """`_DATE_PATTERN.finditer(text)`, trying the pattern only where a date can start.

    In ASCII text a date starts either at the first digit of a run of digits (the day or the
    year), or at a month name that is followed, through an optional "." and white space, by a
    run of digits; the pattern is matched at those places only, in order, each after the end
    of the date before, which is what `finditer` does with every position. Other text is
    searched in full.
    """
    if not text.isascii():
        yield from _DATE_PATTERN.finditer(text)
        return
    end = 0
    for start in _date_starts(text):
        if start < end:
            continue
        match = _DATE_PATTERN.match(text, start)  # its lookbehind sees the text before `start`
        if match is not None:
            yield match
            end = match.end()


def _date_starts(text: str) -> Iterator[int]:
    """Where a date may start in ASCII text, in increasing order: the first digit of a run of
    digits that the rest of a date's shape follows, and the month names before a day and a
    year. Found at C speed over the text's characters written as their classes
    (`_DATE_CLASSES`), a slice at a time. Each start is a place where the shape of a whole
    date begins (`_DATE_SHAPE`): a table's every number that a separator or a blank followed
    was a start, and a step of Python in the date pattern (a table of payments: three starts a
    row, one of them a date). Given a slice at a time too: the starts of a whole text, as a
    list and a set of numbers, held 0.8 times a text of case notes (the registry's matcher,
    1 MB: 3.11x the message beside it -> 3.93x) and 16 times one of dates."""
    last = -1
    offset = 0
    while offset < len(text):
        # A slice ends where a run of blanks and dots ends (a month name's ".", the blanks
        # after it, however many, are its own), and reads `_DATE_READ_ON` characters past that
        # end, what a start before it needs to be told (a date's numbers, an ordinal and a
        # month's first letter), and one before its start for the lookbehinds. A shape that
        # runs on past what is read, in blanks however many, counts as a date's
        # (`_DATE_SHAPE` takes the end of what is read as it would the shape's next part).
        # Each start is taken from the slice its first digit lies in: a month name before a
        # day in this slice may lie in the slice before, where nothing started after its first
        # letter (only letters, a "." and blanks lie between it and the day).
        more = _NOT_BLANK_OR_DOT.search(text, offset + _DATE_SLICE)
        stop = len(text) if more is None else more.start()
        low = max(0, offset - 1)
        classes = _run_starts(text[low:stop + _DATE_READ_ON].encode("ascii")
                              .translate(_DATE_CLASSES))
        # (finditer without an end: a match reads on past it; those starting past it dropped)
        starts: list[int] = []
        months = False
        for place, may_start, day in _date_shapes(classes, offset - low):
            at = low + place
            if at >= stop:
                break
            if may_start:  # a date may start here
                starts.append(at)
            if day:  # a day after a month name: the name's start
                word_end = _month_end(text, at)
                names = _MONTHS_BY_ENDING.get(text[max(0, word_end - 3):word_end].lower(), ())
                starts += [word_end - len(n) for n in names if len(n) <= word_end]
                months = True
        del classes
        if months:  # (a month name lies before its day, and maybe before an earlier start)
            starts = sorted(set(starts))
        if starts and starts[0] <= last:  # (a "/" just at a slice's end is read by both)
            starts = [start for start in starts if start > last]
        if starts:
            last = starts[-1]
            yield from starts
        offset = stop


def _date_shapes(classes: bytes, pos: int) -> Iterator[tuple[int, bool, bool]]:
    """Where `_DATE_SHAPE` matches in `classes` from `pos`: (place, a date may start there,
    a day after a month name lies there). The scan engine, when it is native, finds where the
    two shapes of `_DATE_SHAPES_NATIVE` start, and their lookbehinds are read here; else the
    regex engine tries `_DATE_SHAPE` at every run's first digit. (Each match is one character
    long: the matches of `finditer` are those of `match` at every place from `pos`.)"""
    places = scan.shape_starts(classes, _DATE_SHAPES_NATIVE)
    if places is None:
        for found in _DATE_SHAPE.finditer(classes, pos):
            yield found.start(), found.lastindex != _DAY_ONLY, found.lastindex is not None
        return
    for place, shapes in places:
        if place < pos:
            continue
        before = classes[place - 1] if place else 0
        may_start = bool(shapes & 1) and before != _LETTER  # (?<!a0)
        day = bool(shapes & 2) and before == _BLANK  # (?<= 0)
        if may_start or day:
            yield place, may_start, day


_LETTER, _BLANK = ord("a"), ord(" ")


def warm_dates() -> None:
    """Compile the scan engine's database for where dates may start (`_date_shapes`)."""
    scan.shape_starts(b"0/0/0D", _DATE_SHAPES_NATIVE)


def _run_starts(classes: bytes) -> bytes:
    """The classes with every digit ("0") but the first of its run made "D", at C speed: each
    "00" becomes "0D" (left to right, so a run reads "0D0D..."), then each "D0" "DD"."""
    return classes.replace(b"00", b"0D").replace(b"D0", b"DD")


def _month_end(text: str, day: int) -> int:
    """Where a month name would end before the day at `day`: back over the white space
    before the day (one character at least), and a "." just before it."""
    at = day - 1
    while at > 0 and text[at - 1].isspace():
        at -= 1
    if at > 0 and text[at - 1] == ".":
        at -= 1
    return at


_DATE_SLICE = 1 << 14  # characters `_date_starts` reads at a time (at most half as many starts)
_DATE_READ_ON = 16  # characters read past a slice's end: a date's first two numbers and more
# Each ASCII character as its class for `_date_starts`: a digit "0", a letter "a", white space
# " " (what `\s` matches), "-" itself, "/" and "." as "/", anything else "#" (a comma too).
# Then every digit but the first of its run becomes "D" (`_run_starts`).
_DATE_CLASSES = bytes(
    0x30 if chr(c).isdigit() else 0x61 if chr(c).isalpha() else 0x20 if chr(c).isspace()
    else c if chr(c) == "-" else 0x2F if chr(c) in "/." else 0x23 for c in range(256))
# Where a date's shape begins, as classes: the first digit of a date, not after a letter or a
# digit (the date pattern's lookbehind), that the rest of a date follows ("3/4/15" and
# "03.04.2015", "2015-4-3", or "3rd" then blanks and a letter, a month name's first); and a
# day after a month name (its first digit, after white space) that an ordinal, a comma, blanks
# and a year's four digits may follow ("Sept. 3rd, 2015"), from where `_month_end` reads back
# to the name's last letter. An empty group says a day is one: the first (a date may start
# there too) or the second (only a day). In blanks to the end of what is read, the rest of
# either may still follow. A match consumes the first digit only, so that a shape that is not
# a date does not hide one that begins inside it; a day has two digits at most, so a second is
# taken for good (`?+`: without it, 59 ms against 42 over a 2 MB table's classes). It starts
# with the character it finds (the regex engine skips to it at C speed; a lookbehind first
# was tried at every character).
# Written over the classes with each run of digits as "0" then "D"s: the regex engine skips to
# the first digit of a run and is tried there only (a table of payments is nearly all digits).
_DATE_AT = rb"(?=D?+(?:[-/]0D?[-/]0D|(?:aa)? +(?:a|\Z))|DDD-0)"
_DAY_AT = rb"(?<= 0)(?=D?+(?:aa)?#? +(?:0DDD|(?:0D{0,2})?\Z))"
_DATE_SHAPE = re.compile(
    rb"0(?<!a0)(?:" + _DATE_AT + rb"(?:" + _DAY_AT + rb"())?|" + _DAY_AT + rb"())")
_DAY_ONLY = 2  # the group that says a match is a day after a month name only
# The same two shapes for the scan engine, which has no lookaround: a date's and a day's, from
# a run's first digit. Possessive or not, each matches where `_DATE_SHAPE`'s does (what may
# follow "D?" never begins with a "D"); their lookbehinds are read by `_date_shapes`. Hyperscan
# finds where they start in one pass: where a date may start in 75 KB of a table of payments
# (CSV, 16,686 runs of digits) in 1.5 ms, against 2.3 ms for the regex engine trying
# `_DATE_SHAPE` at every run, and 2.8 ms at every digit before the runs were marked.
_DATE_SHAPES_NATIVE = (rb"0(?:D?(?:[-/]0D?[-/]0D|(?:aa)? +(?:a|\z))|DDD-0)",
                       rb"0D?(?:aa)?#? +(?:0DDD|(?:0D{0,2})?\z)")
_NOT_BLANK_OR_DOT = re.compile(r"[^\s.]")


def has_date_of_birth(text: str, cues: re.Pattern[str],
                      found: scan.Found | None = None) -> bool:
    """Whether a real date follows a cue such as "DOB", "date of birth" or "born" closely.

    A date on its own is not a date of birth: hearing dates and letter dates are everywhere.
    The cues are found first (one regex pass; they are rare even in text full of dates and
    numbers), then a date is looked for in the DOB_WINDOW characters after each: the dates
    `cue_before` would accept, without walking every number in the text. A text where the
    scan (`found`, the text's `scan_text` with `cues` among its patterns; made here when not
    given) sees no cue's shape is not searched at all.
    """
    if not (found or scan_text(text, (cues,))).present(cues):
        return False
    candidates = 0
    for cue in _find_cues(text, cues):
        end = cue.end()
        window = _DATE_PATTERN.finditer(text, end, end + DOB_WINDOW + _LONGEST_DATE)
        for match in window:
            if match.start() > end + DOB_WINDOW:
                break
            candidates += 1
            if candidates >= MAX_CANDIDATES or _is_real_date(match):
                return True
    return False


def _find_cues(text: str, cues: re.Pattern[str]) -> Iterator[re.Match[str]]:
    """`cues.finditer(text)`. In ASCII text the cues are first found in the lower-cased text by
    a pattern without case folding or lookarounds (a quarter of the time: the regex engine can
    skip to each cue's first letter), and each is then confirmed with `cues` itself."""
    finder = _lower_case_finder(cues)
    if finder is None or not text.isascii():
        yield from cues.finditer(text)
        return
    lowered = text.lower()
    found = finder.search(lowered)
    while found is not None:
        match = cues.match(text, found.start())
        if match is not None:
            yield match
        # After a cue, search on from its end (as finditer does); after a candidate that was
        # not one (a cue's letters inside a word), from the next character.
        found = finder.search(lowered, match.end() if match is not None else found.start() + 1)


@functools.lru_cache(maxsize=16)
def _lower_case_finder(cues: re.Pattern[str]) -> re.Pattern[str] | None:
    """The alternatives of a `compile_cues` pattern, lower-cased, without its lookarounds."""
    text = cues.pattern
    if not (text.startswith(_BEFORE) and text.endswith(_AFTER)):
        return None
    return re.compile(text[len(_BEFORE):len(text) - len(_AFTER)].lower())


# Characters a date may span, at most, as `_DATE_PATTERN` is searched after a cue (its white
# space runs are unbounded; a date spread wider than this is not read as one).
_LONGEST_DATE = 256
# Characters after a cue's end that `has_date_of_birth` reads: where a date may start, and the
# date. A window of text that holds a cue and this many characters after it decides as the
# whole text does (content's quoted view is read a window at a time).
DOB_REACH = DOB_WINDOW + _LONGEST_DATE


IDENTIFIER_PATTERNS = (_NHS, _NINO, _PNC)  # what `identifier_kinds` needs scanned, and the cues


def identifier_kinds(text: str, dob_cues: re.Pattern[str],
                     known: frozenset[str] = frozenset(),
                     found: scan.Found | None = None) -> set[str]:
    """The kinds of personal identifier present in the text (values are never returned).
    Kinds in `known` (already found elsewhere in the message) are not looked for again.
    `found` is the text's `scan_text` with IDENTIFIER_PATTERNS and `dob_cues` among its
    patterns (made here when not given): one native pass for every kind."""
    kinds: set[str] = set()
    if not has_digit(text):  # every identifier, and every date, holds at least one digit
        return kinds
    scanned = found or scan_text(text, (*IDENTIFIER_PATTERNS, dob_cues))
    detectors: tuple[tuple[str, Callable[[str], bool]], ...] = (
        (DATE_OF_BIRTH, lambda t: has_date_of_birth(t, dob_cues, scanned)),
        (NHS_NUMBER, lambda t: has_nhs_number(t, scanned)),
        (NI_NUMBER, lambda t: has_ni_number(t, scanned)),
        (PNC_ID, lambda t: has_pnc_id(t, scanned)),
    )
    for kind, found_in in detectors:
        if kind not in known and found_in(text):
            kinds.add(kind)
    return kinds
