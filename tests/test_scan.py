"""The scan engines (policies/scan.py) report the same candidates, and the same decisions.

Hyperscan finds where each identifier's shape ends; the exact pattern then runs only around
those ends. The pure-Python engine searches with the exact patterns. A text, a pattern and the
spans of its matches: the two must agree for every pattern the recognisers use, on generated
text made of the pieces identifiers are made of, and on a seeded corpus of longer texts.
"""

from __future__ import annotations

import random
import re
import threading
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import cases, identifiers, normalise, restricted, scan
from policies.content_rules import ContentRules
from policies.identifiers import (
    compile_case_number_search,
    compile_cues,
    find_case_numbers,
    identifier_kinds,
    scan_text,
)
from tests import caseregistry
from tests.fixtures_content import default_rules

RULES = ContentRules()
CUES = RULES.date_of_birth_regex
PATTERNS = (RULES.case_number_search, *identifiers.IDENTIFIER_PATTERNS, CUES,
            compile_case_number_search(r"[A-Z]{2}\d{2}[A-Z]\d{5}|\d{4}-\d{6}"),
            compile_case_number_search(r"FD\d{2}P\d{5}"))
NATIVE = pytest.mark.skipif(scan.HYPERSCAN not in scan.available(),
                            reason="the hyperscan wheel is not installed here")

# The pieces identifiers, dates and the text around them are made of, and a few non-ASCII
# characters: some the patterns cannot match (é, ’), some they can (a Kelvin sign, Arabic
# digits), which send the text to the exact search.
PIECES = ["0", "1", "4", "9", "12", "943", "476", "5919", "9434765919", "ZC12C00123", "zc",
          "QQ", "AB", "12 34 56", "C", "D", "A", "/", "-", " ", "  ", "\n", " \n", "\n\n",
          ".", ",", ":", "DOB", "dob:", "born", "date of\nbirth", "01/0012345Z", "2001/",
          "3rd", "Apr", "March", "2015", "14/03/2015", "X", "x", "_", "é", "’", "\u212a",
          "\u0661", "FD12P00123", "1234-567890"]
texts = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def spans(text: str, engine: str) -> list[list[tuple[int, int]]]:
    found = scan.search(text, PATTERNS, identifiers.anchored_finditer, engine)
    return [[m.span() for m in found.matches(p)] for p in PATTERNS]


def decisions(text: str) -> tuple[list[str], set[str]]:
    found = scan_text(text, (RULES.case_number_search, *identifiers.IDENTIFIER_PATTERNS, CUES))
    return (list(find_case_numbers(text, RULES.case_number_search, RULES.case_number_regex,
                                   found)),
            identifier_kinds(text, CUES, found=found))


def test_every_pattern_the_recognisers_use_has_a_native_shape() -> None:
    """Only the cues, whose white space runs are unbounded, are a gate; none falls back."""
    widths = {p.pattern: scan.shape(p) for p in PATTERNS}
    assert all(shape is not None for shape in widths.values())
    assert [p for p in PATTERNS if scan.shape(p)[1] is None] == [CUES]  # type: ignore[index]


NO_SHAPE = "no shape"


@pytest.mark.parametrize(("pattern", "expected"), [
    (r"(?<=\d)X\d", 2),  # a lookbehind that is not one character: dropped
    (r"[^\d]\d{3}", 4),  # a negated class that excludes "?" is fine
    (r"\d{2,}", None),  # unbounded: a gate
    (r"\w\d{4}", NO_SHAPE),  # \w matches letters of every script
    (r"é\d{4}", NO_SHAPE),  # a non-ASCII literal
    (r"(?i:a)\d{4}", NO_SHAPE),  # inline flags
    (r"[^?]\d", NO_SHAPE),  # "?" stands for every non-ASCII character
    (r"x?", NO_SHAPE),  # matches the empty text
])
def test_shapes_of_other_patterns(pattern: str, expected: int | str | None) -> None:
    translated = scan.shape(re.compile(pattern))
    if expected == NO_SHAPE:
        assert translated is None
    else:
        assert translated is not None
        assert translated[1] == expected


@NATIVE
@given(texts)
def test_the_engines_report_the_same_candidates(text: str) -> None:
    assert spans(text, scan.HYPERSCAN) == spans(text, scan.RE)


@NATIVE
def test_the_engines_agree_on_a_seeded_corpus() -> None:
    """Longer texts (up to 20,000 pieces), where windows merge and overlap."""
    rng = random.Random(14)
    for _ in range(30):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 20_000)))
        assert spans(text, scan.HYPERSCAN) == spans(text, scan.RE)
        _assert_engines_decide_alike(text)


@NATIVE
@given(texts)
def test_the_engines_decide_alike(text: str) -> None:
    _assert_engines_decide_alike(text)


def _assert_engines_decide_alike(text: str) -> None:
    with scan.use_engine(scan.HYPERSCAN):
        native = decisions(text)
    with scan.use_engine(scan.RE):
        python = decisions(text)
    assert native == python


@NATIVE
def test_a_text_without_a_shape_costs_no_exact_search() -> None:
    """Postfix's smtp-source body: a digit at the start of every line, no identifier."""
    body = "".join(f"{i % 10}{'X' * 77}\n" for i in range(2000))
    found = scan.search(body, PATTERNS, identifiers.anchored_finditer, scan.HYPERSCAN)
    assert [found.present(p) for p in PATTERNS] == [False] * len(PATTERNS)
    assert [list(found.matches(p)) for p in PATTERNS] == [[]] * len(PATTERNS)


@NATIVE
def test_too_many_ends_fall_back_to_the_exact_search() -> None:
    text = "9434765919 " * (scan.MAX_ENDS + 10)
    found = scan.search(text, (identifiers.IDENTIFIER_PATTERNS[0],),
                        identifiers.anchored_finditer, scan.HYPERSCAN)
    assert sum(1 for _ in found.matches(identifiers.IDENTIFIER_PATTERNS[0])) \
        == scan.MAX_ENDS + 10


@NATIVE
def test_each_thread_scans_with_its_own_scratch() -> None:
    """Hyperscan's scratch may not be shared: the gateway evaluates in worker threads."""
    text = "NHS 943 476 5919, case ZC12C00123, DOB 14/03/2015\n" * 2000
    expected = decisions(text)
    results: list[tuple[list[str], set[str]]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with_engine = [decisions(text) for _ in range(5)]
            results.extend(with_engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [expected] * 20
    assert expected[1] == {"nhs-number", "date-of-birth"}


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="not available"):
        scan.set_engine("pcre")


def test_cues_configured_with_spaces_are_a_gate() -> None:
    cues = compile_cues(("date of birth",))
    found = scan_text("date\n of   birth: 14/03/2015", (cues,))
    assert found.present(cues)
    assert [m.group() for m in found.matches(cues)] == ["date\n of   birth"]


# --- what else the one scan serves: keywords and the agency-check phrase gate --------------

CONTENT = default_rules()
MARKS = CONTENT.agency_checks
KEYWORDS = CONTENT.keyword_matcher
GATES = (*(p for p, _ in KEYWORDS.patterns), *MARKS.gate.words)
# Words of the keyword and agency-check phrases, record-field labels, quote marks, form
# choices and separators: texts where phrases, glued words and removed labels meet.
_PHRASES = [*MARKS.outcomes, *MARKS.origin_marks, *MARKS.handing_over, *MARKS.results,
            *MARKS.titles, *(p for phrases in KEYWORDS.phrases for p in phrases)]
WORDS = sorted({w for p in _PHRASES for w in p.split()} | {"&", "s", "Result:", "Offence:",
                                                             "> ", "yes / no", "trace / no trace"})
SEPARATORS = [" ", "\n", "-", ", ", "_", ":", "  \n> ", "/", "\u212a", "é"]
phrase_texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS),
                                   st.booleans()), max_size=30).map(
    lambda parts: "".join((w.upper() if up else w) + sep for w, sep, up in parts))


@NATIVE
@given(phrase_texts)
def test_keywords_the_scan_finds_are_the_matchers(text: str) -> None:
    with scan.use_engine(scan.HYPERSCAN):
        found = scan_text(text, (), GATES)
        assert KEYWORDS.first_type_found([(text, found)]) == KEYWORDS.first_type_in([text])


@NATIVE
@given(phrase_texts, st.sampled_from(["", "officer@police.example"]), st.booleans())
def test_a_closed_phrase_gate_changes_no_signal(text: str, author: str, own: bool) -> None:
    """Where the scan saw no phrase's words, reading the text without its phrases gives the
    signals reading it with them gives."""
    with scan.use_engine(scan.HYPERSCAN):
        found = scan_text(text, (), GATES)
    piece = restricted.Segment(author, "", text)
    opened = restricted._agency_signals(piece, MARKS, own, phrases=True)
    assert restricted._agency_signals(piece, MARKS, own,
                                      phrases=MARKS.gate.open(found.present)) == opened


def test_a_phrase_gate_needs_every_long_word_of_a_phrase() -> None:
    gate = restricted.PhraseGate.of({"handing": ["please find attached"], "outcome": ["no trace"]})
    assert [w.pattern for w in gate.words] == ["please", "find", "attached", "trace"]
    present = {"please", "attached"}
    assert not gate.open(lambda w: w.pattern in present)
    assert gate.open(lambda w: w.pattern in {"trace"})


@pytest.mark.parametrize("size", [1, 3, 1 << 18])
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(
    ["a", "1", "\udc80", "\u212a", "\u00e9", "\u0663", "\u00a0", "\U0001d7d8"])).map("".join)))
def test_other_characters_are_the_text_s_non_ascii_ones(size: int, text: str) -> None:
    """The distinct non-ASCII characters, read from the text's bytes a slice at a time, are
    the text's own (lone surrogates included); and whether the pure-Python engine is needed,
    found from them, is what the regex over the whole text said."""
    with mock.patch.object(scan, "_UTF8_SLICE", size):
        assert scan.other_characters(text) == {char for char in text if not char.isascii()}
    assert scan._needs_python(text) == (not text.isascii()
                                        and scan._RISKY.search(text) is not None)


@pytest.mark.parametrize("size", [1, 2, 5, 4096])
@given(st.lists(st.sampled_from(["a", "bc", "\n", "\r", "\r\n", " ", "\x0b", "\u2028", ""]),
                max_size=40).map("".join))
def test_first_lines_are_those_of_splitlines(size: int, text: str) -> None:
    assert list(restricted._first_lines((text, 0, len(text)), size)) == text.splitlines()
    body = f"x\n{text}\ny"  # a stretch of a longer text: its own lines only
    assert list(restricted._first_lines((body, 2, 2 + len(text)), size)) == text.splitlines()


BREAKS = ["\n", " \n", "\n ", "  \n\n ", "\n\n"]
broken_texts = st.lists(st.sampled_from([*PIECES, *BREAKS, *BREAKS]), max_size=40).map("".join)


@NATIVE
@given(broken_texts)
def test_a_joined_view_skipped_would_have_found_nothing_new(text: str) -> None:
    """The joined view is made only when the text's scan saw a shape with line breaks inside
    (`Found.joined_may_match`): when it did not, every case number and identifier kind the
    view holds is one the text holds as it is."""
    patterns = PATTERNS[:5]
    found = scan.search(text, patterns, identifiers.anchored_finditer, scan.HYPERSCAN,
                        broken=patterns)
    if found.joined_may_match():
        return
    whole = normalise.joined(text)
    numbers, kinds = decisions(text)
    in_view, kinds_in_view = decisions(whole)
    assert set(in_view) <= set(numbers)
    assert kinds_in_view <= kinds
    assert not list(CUES.finditer(whole)) or list(CUES.finditer(text))


# Identifiers and cues with a run of blanks and line breaks (or a blank) after any character.
WORDS = ["DOB", "D.O.B", "date of birth", "born", "birth date", "birthdate", "ZC12C00123",
         "943 476 5919", "9434765919", "QQ 12 34 56 A", "AB123456C", "01/0012345Z", "12/345Z"]
RUNS = ["", "", "", "", " ", "\n", " \n", "\n ", "  \n", "\n  ", "\n\n", " \n \n", "\n \n"]
broken_words = st.sampled_from(WORDS).flatmap(
    lambda word: st.lists(st.sampled_from(RUNS), min_size=len(word), max_size=len(word)).map(
        lambda runs: "".join(c + run for c, run in zip(word, runs, strict=True))))
FILLER = st.sampled_from(["", " ", "\n", " \n", "x", "7", "-", "/", ":", "Case "])
words_broken_anywhere = st.lists(st.one_of(broken_words, FILLER), max_size=8).map("".join)


@NATIVE
@settings(max_examples=1500)  # a miss needs a word, a run inside it and the right case
@given(words_broken_anywhere, st.sampled_from([str, str.lower, str.upper]))
def test_what_the_joined_view_adds_is_seen_by_a_broken_shape(text: str, case: Any) -> None:
    """A broken shape reports an end wherever its pattern matches in the text's joined view
    and not in the text (a cue: wherever it matches in the view at all): the shapes allow only
    a removed run after a character that cannot be a blank."""
    text = case(text)
    patterns = PATTERNS[:5]
    found = scan.search(text, patterns, identifiers.anchored_finditer, scan.HYPERSCAN,
                        broken=patterns)
    view = normalise.joined(text)
    for pattern in patterns:
        in_view = {m.group() for m in pattern.finditer(view)}
        added = in_view if pattern is CUES else in_view - {m.group()
                                                           for m in pattern.finditer(text)}
        if added:
            assert found._ends.get(scan._broken_key(pattern)), (pattern.pattern, added)


@NATIVE
def test_an_identifier_broken_over_lines_opens_the_joined_view() -> None:
    text = "NHS 943\n476 5919 and case ZC12 \nC00123"
    found = scan.search(text, PATTERNS[:5], identifiers.anchored_finditer, scan.HYPERSCAN,
                        broken=PATTERNS[:5])
    assert found.joined_may_match()
    postfix = "".join(f"{i % 10}{'X' * 77}\n" for i in range(200))
    found = scan.search(postfix, PATTERNS[:5], identifiers.anchored_finditer, scan.HYPERSCAN,
                        broken=PATTERNS[:5])
    assert not found.joined_may_match()


@NATIVE
@pytest.mark.parametrize(("text", "opens"), [
    # whole on its line, with more than its width of other characters before it
    ("Case ZC12C00123: notes for the file.\nThe visit went well.\n", False),
    ("Our reference is ZC12C00123\nThe visit went well.\n", False),
    ("The hearing (ZC12 C00123) is listed.", False),
    ("The hearing is listed under ZC12C00123", False),
    ("The hearing is listed under ZC12C00123\n", False),
    # broken over two lines: whole again in the view
    ("Our reference is ZC12\nC00123 for the file.", True),
    ("Our reference is ZC12C0\n0123 for the file.", True),
    ("Our reference is ZC12 \n  C00123 for the file.", True),  # a run with blanks: a space
    ("the NHS number 943 476 \n5919 is on file", True),
    # broken, but not whole in the view either: the run becomes a space the pattern does not
    # take there, or nothing where it needs the same separator as before (an NHS number
    # wrapped at a space is found in the text itself: its line break stands for the space)
    ("Our reference is ZC12C0\n  0123 for the file.", False),
    ("the NHS number 943 476\n5919 is on file", False),
    # whole, alone on its line: nothing before the run joins it
    ("Case number:\nZC12C00123\nThe visit went well.\n", False),
    ("See the letter\nZC12C00123 for the details.", False),
    ("\nCase number:\n\nZC12C00123\n\nVisit 12/03/2024\n", False),  # an HTML table's text
    # a run of blanks longer than the look back: cannot tell, so made
    ("ZC12\n" + " " * 5000 + "C00123", True),
    # a date-of-birth cue: the view may bring a date close enough, so always made
    ("Date of birth\n\n\n14/03/2015", True),
])
def test_a_broken_shape_opens_the_view_only_with_a_line_break_inside(text: str,
                                                                      opens: bool) -> None:
    found = scan.search(text, PATTERNS[:5], identifiers.anchored_finditer, scan.HYPERSCAN,
                        broken=PATTERNS[:5])
    assert found.joined_may_match() is opens


POSTCODE_PIECES = ["ab1", "1st", "sw1a", "1aa", "ls14ab", " ", "\n", "March", "mar", "2015",
                   "3rd", "/", "-", "12", "1", ".", ",", "X"]
ascii_texts = st.lists(st.sampled_from([*PIECES[:-4], *POSTCODE_PIECES]),
                       max_size=30).map("".join)


@NATIVE
@given(ascii_texts)
def test_an_ascii_text_without_a_date_shape_has_no_date_for_the_case_matcher(text: str) -> None:
    """The case matcher looks for dates in its own normalised text (postcodes spaced); in
    ASCII text the scan's date gate must see every one it would find."""
    found = scan.search(text, (), identifiers.anchored_finditer, scan.HYPERSCAN,
                        gates=(identifiers.DATES,))
    if not found.present(identifiers.DATES):
        assert list(identifiers.find_dates(cases.normalise(text, folded=True))) == []


def test_a_date_made_by_spacing_a_postcode_is_seen() -> None:
    text = "at ab11st March 2015"
    assert list(identifiers.find_dates(text)) == []
    assert [m.group() for m in identifiers.find_dates(cases.normalise(text))] \
        == ["1st march 2015"]
    assert scan_text(text, (), (identifiers.DATES,)).present(identifiers.DATES)


@pytest.mark.skipif(scan.HYPERSCAN not in scan.available(), reason="no native engine here")
def test_warming_compiles_every_database_a_message_needs() -> None:
    """After `content.warm(rules)` (the gateway calls it when it loads its policy) no message
    compiles a database: the first message does not pay the compile (issue 14)."""
    from policies import content

    rules = default_rules()  # a fresh policy: patterns no database was compiled for yet
    content.warm(rules)
    compiled = len(scan._DATABASES), len(scan._SMALL_DATABASES)
    with scan.use_engine(scan.HYPERSCAN):
        for body in (b"no digits here", b"DOB 01/02/2010, NHS 943 476\r\n5919",
                     b"case ZC12C\r\n00123 and 07700 900461",
                     b"a long letter\r\n" * (scan.NATIVE_LINE_ENDS // 10)):
            raw = b"From: a@b.example\r\nSubject: s\r\n\r\n" + body + b"\r\n"
            content.classify_message(raw, rules, lambda: 0.0)
            # With a case registry, the dates its matcher reads are gated by a scan too.
            content.classify_message(raw, rules, lambda: 0.0, cases=caseregistry.index())
    assert (len(scan._DATABASES), len(scan._SMALL_DATABASES)) == compiled


line_ends = st.lists(st.sampled_from(["a", "\r", "\n", "\r\n", "\r\r\n", "\n\r", " ", "\t",
                                     "\x00", "\x7f", "\x1f", "\x0b"]),
                     max_size=30).map(lambda pieces: "".join(pieces).encode("ascii"))


@pytest.mark.parametrize("engine", scan.available())
@given(line_ends)
def test_the_line_end_checks_are_their_definitions(engine: str, data: bytes) -> None:
    """`crlf_throughout` and `lone_cr_and_controls` (policies/mime.py and normalise.py ask them
    of every message) answer alike under each engine, as their definitions do; the native one
    reads data from NATIVE_LINE_ENDS bytes on (padded here, which changes no answer)."""
    crlf = data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
    lone_cr_and_controls = (re.search(rb"\r(?!\n)", data) is not None,
                            re.search(rb"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]", data) is not None)
    unsafe = re.search(rb"\r(?!\n)|(?<!\r)\n|\x00", data) is not None
    pad = b"x" * scan.NATIVE_LINE_ENDS
    with scan.use_engine(engine):
        for padded in (data, pad + data, data + pad):
            assert scan.crlf_throughout(padded) == crlf
            assert scan.lone_cr_and_controls(padded) == lone_cr_and_controls
            assert scan.unsafe_line_ends(padded) == unsafe


@pytest.mark.parametrize("engine", scan.available())
def test_the_line_end_checks_read_the_ends_of_the_data(engine: str) -> None:
    long = b"x" * scan.NATIVE_LINE_ENDS
    with scan.use_engine(engine):
        assert scan.crlf_throughout(b"") and scan.crlf_throughout(long + b"a\r\nb\r\n")
        assert not scan.crlf_throughout(b"\n" + long + b"\r\n")
        assert not scan.crlf_throughout(long + b"a\r\n\r")
        assert scan.lone_cr_and_controls(long + b"a\r") == (True, False)
        assert scan.lone_cr_and_controls(long + b"a\r\n\t") == (False, True)
        assert scan.lone_cr_and_controls(b"\x00\x7f\r\r\n" + long) == (True, True)
        assert not scan.unsafe_line_ends(long + b"a\r\n")
        assert scan.unsafe_line_ends(b"\n" + long) and scan.unsafe_line_ends(long + b"\r")
        assert scan.unsafe_line_ends(long + b"\x00\r\n")


@given(st.text(alphabet=st.sampled_from(["a", "1", " ", "\n", "-"])))
def test_the_scan_joins_a_run_as_the_joined_view_does(text: str) -> None:
    """`Found.joined_may_match` joins the runs near a broken shape's end with the rule the
    joined view uses (`scan.join_runs`): the same as `normalise.joined`, fast paths and all."""
    assert scan.join_runs(text) == normalise.joined(text)
