"""The personal-identifier and case-number detectors, each with valid and invalid cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import identifiers
from policies.content_rules import DEFAULT_CASE_NUMBER_PATTERN, ContentRules
from policies.identifiers import (
    MAX_CANDIDATES,
    compile_case_number_pattern,
    compile_cues,
    find_case_numbers,
    has_date_of_birth,
    has_nhs_number,
    has_ni_number,
    has_pnc_id,
    identifier_kinds,
    nhs_number_valid,
    ni_number_valid,
    pnc_id_valid,
)
from tests.fixtures_content import default_rules

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")

CASE = compile_case_number_pattern(DEFAULT_CASE_NUMBER_PATTERN)
CUES = compile_cues(("DOB", "D.O.B", "date of birth", "born", "birth date"))


@pytest.mark.parametrize(("text", "expected"), [
    ("Case ZC12C00123 listed", ["ZC12C00123"]),
    ("lower case zc12c00123 too", ["ZC12C00123"]),
    ("file name ZC12C00123_report.pdf", ["ZC12C00123"]),
    ("(ZC12C00123)", ["ZC12C00123"]),
    ("ZC12C00123 and LV21P00456 and ZC12C00123 again", ["ZC12C00123", "LV21P00456",
                                                          "ZC12C00123"]),
    ("XZC12C00123 is inside a longer word", []),
    ("ZC12C001234 has six digits at the end", []),
    ("Z12C00123 has one letter", []),
    ("ZC1CC00123 has a letter for a digit", []),
])
def test_default_case_number_pattern(text: str, expected: list[str]) -> None:
    """Two letters, two digits, a letter, five digits; never inside a longer word."""
    assert list(find_case_numbers(text, CASE)) == expected


def test_configured_case_number_pattern() -> None:
    """An organisation's own pattern replaces the family court's."""
    base = default_rules()
    rules = ContentRules.from_table({"case_number_pattern": r"\d{4}-\d{6}"}, "org.toml", base)
    assert list(find_case_numbers("ref 2024-000123 and ZC12C00123", rules.case_number_regex)) \
        == ["2024-000123"]


@pytest.mark.parametrize(("digits", "valid"), [
    ("9434765919", True),
    ("4010232137", True),
    ("9434765918", False),  # wrong check digit
    ("9434765910", False),
    ("0000000060", False),  # check digit would be 10: never issued
    ("0000000000", False),  # passes the arithmetic, never issued
    ("943476591", False),  # nine digits
    ("94347659190", False),  # eleven digits
    ("943476591X", False),
])
def test_nhs_number_check_digit(digits: str, valid: bool) -> None:
    """Modulus 11 with weights 10..2; a remainder giving 10 is invalid."""
    assert nhs_number_valid(digits) is valid


@pytest.mark.parametrize(("text", "found"), [
    ("NHS number 943 476 5919.", True),
    ("NHS: 943-476-5919", True),
    ("nhs 9434765919", True),
    ("943 476 5918", False),
    ("phone 01943 476 5919", False),  # part of a longer number
    ("943 4765 919", False),  # not 3-3-4
    ("943 476-5919", False),  # mixed separators
    # wrapped at one of its spaces by a mail client that dropped the space (folded text)
    ("NHS 943 476\n5919 on file", True),
    ("NHS 943\n476 5919 on file", True),
    ("NHS 943\n476\n5919 on file", True),
    # or kept it at the end of the line (as format=flowed does), at one break and not the other
    ("NHS 943 \n476\n5919 on file", True),
    ("NHS 943\n476 \n5919 on file", True),
    ("NHS 943 \n476 5919 on file", True),
    ("943 476\n5918", False),  # the check digit still counts
    ("943 \n476\n5918", False),
    ("943  476 5919", False),  # two spaces are not a separator
    ("943 \n\n476 5919", False),  # a paragraph between them
    ("943 \n476-5919", False),  # a space and a hyphen
    ("943 476\n\n5919", False),  # a paragraph between them
    ("943-476\n5919", False),  # a hyphen and a space
])
def test_nhs_number_in_text(text: str, found: bool) -> None:
    """An NHS number is found spaced 3-3-4 or unspaced, only with a valid check digit; a line
    break, with or without a space before it, stands for a space."""
    assert has_nhs_number(text) is found


@pytest.mark.parametrize(("value", "valid"), [
    ("AB123456C", True),
    ("AB 12 34 56 C", True),
    ("ab123456d", True),
    ("JG103759A", True),
    ("DA123456A", False),  # D never first
    ("FA123456A", False),
    ("QQ123456C", False),  # Q never first (HMRC's own example number)
    ("AO123456A", False),  # O never second
    ("AV123456A", False),
    ("BG123456A", False),  # unallocated prefixes
    ("GB123456A", False),
    ("NK123456A", False),
    ("KN123456A", False),
    ("NT123456A", False),
    ("TN123456A", False),
    ("ZZ123456A", False),
    ("AB123456E", False),  # suffix A-D only
    ("AB12345C", False),
])
def test_ni_number_prefix_rules(value: str, valid: bool) -> None:
    """HMRC's prefix rules and suffix letter decide what is a National Insurance number."""
    assert ni_number_valid(value) is valid


def test_ni_number_in_text() -> None:
    """A National Insurance number is found in running text, never inside a longer token."""
    assert has_ni_number("Her NI number is AB 12 34 56 C.")
    assert not has_ni_number("invoice XAB123456C")
    assert not has_ni_number("ref QQ 12 34 56 C")


@pytest.mark.parametrize(("value", "valid"), [
    ("01/12345H", True),
    ("2001/0012345H", True),
    ("2001/12345h", True),
    ("01/12345G", False),  # wrong check letter
    ("01/12345I", False),  # I is never a check letter
    ("01/123456789H", False),  # serial longer than seven digits
    ("123/12345H", False),
])
def test_pnc_id_check_letter(value: str, valid: bool) -> None:
    """YY/NNNNNNN with its modulus-23 check letter."""
    assert pnc_id_valid(value) is valid


def test_pnc_id_in_text() -> None:
    """A PNC id is found in text, and a date-like or wrong one is not."""
    assert has_pnc_id("PNC ID 01/12345H recorded")
    assert not has_pnc_id("PNC ID 01/12345G recorded")
    assert not has_pnc_id("on 12/03/2015")


@pytest.mark.parametrize(("text", "found"), [
    ("Child: Amy, DOB: 03/04/2015", True),
    ("D.O.B. 3.4.15", True),
    ("Date of birth - 12th March 2016", True),
    ("born on March 12, 2016 in Leeds", True),
    ("date of birth: 2015-04-03", True),
    ("The hearing is on 03/04/2025", False),  # a date without a cue
    ("born 31 February 2015", False),  # not a real date
    ("DOB: " + "x" * 60 + " 03/04/2015", False),  # too far from the cue
    ("stubborn 03/04/2015", False),  # "born" inside a word is no cue
])
def test_date_of_birth_needs_a_cue(text: str, found: bool) -> None:
    """A real date within a few words after a DOB cue; a date alone is not a date of birth."""
    assert has_date_of_birth(text, CUES) is found


def test_identifier_kinds_reports_kinds_only() -> None:
    """The kinds present are reported, never the values."""
    text = "DOB 01/02/2014, NHS 943 476 5919, NI AB123456C, PNC 01/12345H"
    assert identifier_kinds(text, CUES) == {"date-of-birth", "nhs-number", "ni-number", "pnc-id"}
    assert identifier_kinds("nothing personal here 12/03/2025", CUES) == set()


def test_too_many_failing_candidates_fail_closed() -> None:
    """Past the candidate limit, a text counts as holding the identifier (bounded work)."""
    invalid = "943 476 5918 " * (MAX_CANDIDATES + 1)
    assert has_nhs_number(invalid)
    assert not has_nhs_number("943 476 5918 " * 100)
    impossible = "DOB 31/02/2015. " * (MAX_CANDIDATES + 1)
    assert has_date_of_birth(impossible, CUES)
    assert not has_date_of_birth("DOB 31/02/2015. " * 100, CUES)


@given(st.lists(st.sampled_from(["DOB", "dob:", "D.O.B.", "born", "xborn", "reborn", "Born",
                                 "date  of\nbirth", "birthdate", "birth date", "3/4/2015",
                                 "Ünïcode", "words", " ", "\n", "-"]), max_size=30))
def test_date_of_birth_cues_are_found_as_the_cue_pattern_finds_them(pieces: list[str]) -> None:
    """The lower-case finder in front of the cue pattern changes nothing it finds."""
    text = " ".join(pieces)
    cues = default_rules().date_of_birth_regex
    assert [m.span() for m in identifiers._find_cues(text, cues)] \
        == [m.span() for m in cues.finditer(text)]
