"""Searching only near digits finds exactly what searching the whole text finds."""

from __future__ import annotations

import re
import tracemalloc
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import identifiers
from policies.content_rules import DEFAULT_CASE_NUMBER_PATTERN
from policies.identifiers import (
    compile_case_number_pattern,
    digit_anchored,
    find_case_numbers,
    near_digits,
)

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")

# Configured patterns an organisation might write; None: searched in full, not near digits.
PATTERNS = {
    DEFAULT_CASE_NUMBER_PATTERN: 10,
    r"\d{4}-\d{6}": 11,
    r"[A-Z]{2} ?\d{2} ?[A-Z] ?\d{5}": 13,
    r"(?:ZC|LV)\d{2}[A-Z]\d{5}|FD\d{2}P\d{5}": 10,
    r"CASE-[0-9]+": None,  # unbounded width
    r"[A-Z]{3}-[A-Z]{4}": None,  # no digit needed
    r"ZC\d{2}(?=C)C\d{5}": None,  # a lookaround of its own
    r"(?:\d{2}|XX)[A-Z]\d?": None,  # one branch needs no digit
    r"[^A-Z]{2}\d{3}": 5,  # a negated class is not a digit, but \d{3} is
    r"٣\d": 2,  # a non-ASCII digit literal
}


def naive(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [re.sub(r"\s+", "", m.group(0)).upper() for m in pattern.finditer(text)]


@pytest.mark.parametrize(("configured", "width"), PATTERNS.items())
def test_width_is_decided_from_the_pattern(configured: str, width: int | None) -> None:
    """Near-digit search is used only where every match holds a digit within a known width."""
    assert digit_anchored(compile_case_number_pattern(configured)) == width


def test_a_pattern_not_from_the_compiler_is_searched_in_full() -> None:
    """Only patterns with the compiler's own lookarounds are searched near digits."""
    assert digit_anchored(re.compile(r"\d{4}")) is None


# Text made of the characters that matter: letters, digits (ASCII and not), spaces, line ends.
TEXT = st.text(alphabet="ZCLVFDPXAzc0123456789٣ -\r\n_.", max_size=400)


@given(TEXT, st.sampled_from(sorted(PATTERNS)))
def test_same_matches_as_a_full_search(text: str, configured: str) -> None:
    """For any text and configured pattern, the case numbers and their order are unchanged."""
    pattern = compile_case_number_pattern(configured)
    assert list(find_case_numbers(text, pattern)) == naive(text, pattern)


@given(st.lists(st.sampled_from(["ZC12C00123", "zc99x12345", "XZC12C00123", "1", "22", " ",
                                 "\r\n", "ab", "ZC12C0012", "ZC12C001234", "LV21P00456_x"]),
                max_size=60),
       st.integers(min_value=0, max_value=3))
def test_same_matches_around_slice_boundaries(pieces: list[str], pad: int) -> None:
    """Matches that straddle the slices of the digit scan are still found once."""
    pattern = compile_case_number_pattern(DEFAULT_CASE_NUMBER_PATTERN)
    filler = "x" * (identifiers._SCAN_SLICE - 6 - pad)  # the pieces straddle a slice boundary
    text = filler + " " + "".join(pieces)
    found = [m.group(0) for m in near_digits(text, pattern, 10)]
    assert found == [m.group(0) for m in pattern.finditer(text)]


def test_a_text_without_digits_is_not_searched_at_all() -> None:
    """Prose with no digit yields nothing, as the full search does."""
    pattern = compile_case_number_pattern(DEFAULT_CASE_NUMBER_PATTERN)
    assert list(find_case_numbers("No case numbers here. " * 1000, pattern)) == []


NINO_TEXT = st.text(alphabet="ABCEGHJKTWZab0123456789 D-\r\n", max_size=300)


@given(NINO_TEXT)
def test_ni_numbers_found_as_by_a_full_search(text: str) -> None:
    """The NI number search, near digits, answers as a search of the whole text."""
    full = any(m.group(1).upper() not in identifiers._NINO_UNALLOCATED_PREFIXES
               for m in identifiers._NINO.finditer(text))
    assert identifiers.has_ni_number(text) == full


DATE_PIECES = ["3", "03", "14", "2015", "15", "123", "/", "-", ".", ",", " ", "  ", "\t", "\r\n",
               "\x0b", "\x1c", "st", "nd", "th", "Jan", "january", "SEPT", "Sep", "september",
               "Mar.", "may", "Dec", "x", "ref", "DOB", "born", "(", "o"]


@given(st.lists(st.sampled_from(DATE_PIECES), max_size=40).map("".join))
def test_dates_found_where_they_can_start_are_those_of_a_full_search(text: str) -> None:
    """Dates tried only at digit runs and month names before them: the same matches."""
    found = [(m.span(), m.group(0)) for m in identifiers.find_dates(text)]
    assert found == [(m.span(), m.group(0)) for m in identifiers._DATE_PATTERN.finditer(text)]


@pytest.mark.parametrize("size", [1, 2, 5, 13])
@given(st.lists(st.sampled_from([*DATE_PIECES, "      ", "\n\n\n\n", "03/04/2015", "1-2-15",
                                  "2015-1-3", "3rd Jan 2015", "Jan 3, 2015", "Sep.  14\n2015",
                                  "14TH  march 2016", "december\x1c1, 1999"]), max_size=40)
       .map("".join))
def test_dates_found_a_slice_at_a_time_are_those_of_a_full_search(size: int,
                                                                  text: str) -> None:
    """Where a date may start is read a slice of the text at a time, each reading on past its
    end by what a start needs (blanks however many, after a month name): with slices of 1 to
    13 characters, the same matches as a full search."""
    with mock.patch.object(identifiers, "_DATE_SLICE", size):
        found = [(m.span(), m.group(0)) for m in identifiers.find_dates(text)]
    assert found == [(m.span(), m.group(0)) for m in identifiers._DATE_PATTERN.finditer(text)]


@pytest.mark.parametrize("date", ["13th" + " " * 40 + "March 2015",
                                  "Sept. 13th," + " " * 40 + "2015", "Jan 3" + "\n" * 30 + "2015"])
def test_a_date_whose_blanks_run_past_what_a_slice_reads_is_found(date: str) -> None:
    """A slice reads a few characters past its end: where a date's day (and ordinal) lies
    across that end and its blanks run on past what is read, it may still be a date, and is
    tried. Every place of the day against the slice's end, for slices of 1 to 13 characters."""
    for pad in range(16):
        text = "x" * pad + " " + date + " and 3 more"
        expected = [m.span() for m in identifiers._DATE_PATTERN.finditer(text)]
        assert len(expected) == 1
        for size in range(1, 14):
            with mock.patch.object(identifiers, "_DATE_SLICE", size):
                assert [m.span() for m in identifiers.find_dates(text)] == expected, (pad, size)


def test_a_table_of_numbers_has_a_place_a_date_may_start_only_at_its_dates() -> None:
    """Each date-like start is a step of Python, so the places tried are those where a whole
    date's shape begins: in a table of payments, the dates only, not every number that a
    separator or a blank follows (its amounts' "." and its last column's line break)."""
    rows = "".join(f"2026-0{m}-1{m},13:0{m},INV-24591{m},0161 496 979{m},07700 90043{m},"
                   f"{m}1.5{m},34.30,5{m}.81,3{m}\n" for m in range(1, 10)).rstrip()
    starts = list(identifiers._date_starts(rows))
    assert [rows[s:s + 10] for s in starts] == [f"2026-0{m}-1{m}" for m in range(1, 10)]
    assert [m.group() for m in identifiers.find_dates(rows)] \
        == [m.group() for m in identifiers._DATE_PATTERN.finditer(rows)]


@given(st.lists(st.sampled_from([*DATE_PIECES, "\u00e9", "\u0663", "\u017fept"]), max_size=30)
       .map("".join))
def test_dates_in_non_ascii_text_are_searched_in_full(text: str) -> None:
    """Text that is not ASCII (other digits, letters that match month names) gets the full
    search, with the same answer."""
    found = [m.span() for m in identifiers.find_dates(text)]
    assert found == [m.span() for m in identifiers._DATE_PATTERN.finditer(text)]


@pytest.mark.parametrize("text", [
    "born Sept. 3rd, 2015 in Leeds", "DOB: 3 September 2015", "on Mar.\t14,  2015 at 10",
    "x3 May 2015", "Jan 3 2015 and 2015-01-03 and 03/01/15", "ref 123/04/2015",
    "december\x1c1, 1999", "Sep  31 2015", "2015-1-3.", "1st jan\r\n2020",
])
def test_month_and_number_forms_found_as_by_a_full_search(text: str) -> None:
    """Each written form of a date: the same matches, at the same places."""
    found = [m.span() for m in identifiers.find_dates(text)]
    expected = [m.span() for m in identifiers._DATE_PATTERN.finditer(text)]
    assert found == expected and (expected or text.startswith(("x3", "ref")))


def test_the_places_a_date_may_start_are_not_held_for_the_whole_text() -> None:
    """`find_dates` tries the date pattern at the places a date may start, found a slice at a
    time and given as they are found: held for a whole text of dates, a list and a set of
    them were 16 times the text (0.8 times a text of case notes)."""
    text = "03/04/2015 and 14 March 2016, " * 35_000  # 1 MB, three or four starts in each
    found = 0
    tracemalloc.start()
    try:
        for _ in identifiers.find_dates(text):
            found += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == 70_000
    assert peak < 0.3 * len(text), f"{peak / len(text):.2f}x the text"
