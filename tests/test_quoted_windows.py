"""A reply's quoted lines read a window at a time find what they find read whole (issue 14,
point 4).

`normalise.quoted_windows` gives the quoted view of a text (`normalise.quoted`) as runs of
whole lines, each repeating the end of the ones before it; `policies.content` looks for case
numbers and identifier kinds in each window and its joined view. These tests check the
windows' shape, and that with windows of 1 to 64 characters of text (and the overlap the
policy's patterns call for) nothing the whole view finds is missed, and nothing is added when
no window is cut where the joined view glues two lines together. With the overlap shrunk
from 4096 to 30 characters, the property test fails (a date of birth wrapped 35 characters
after its cue is missed); from 45 up, it passes.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import content, normalise, scan
from policies.identifiers import pnc_check_letter
from policies.normalise import quoted, quoted_windows
from tests.fixtures_content import default_rules

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")

RULES = default_rules()
OVERLAP = content._quoted_overlap(RULES.scan_patterns)
WHOLE = 1 << 40  # a window larger than any text: the quoted view whole
SETTINGS = settings(max_examples=150)


def blank_free(text: str) -> int:
    """How many characters of `text` are neither a blank nor a line break."""
    return len(text) - text.count(" ") - text.count("\n")


def spans(windows: list[str], whole: str) -> list[tuple[int, int]]:
    """Where each window lies in the quoted view `whole`, as (start, end) offsets: asserts
    that the first starts the view, that each is a run of whole lines that starts no later
    than the one before it ends and ends after it, and that the last ends with the view. (The
    first such place: tests give texts where a window holds a line found nowhere else, or
    starts the view.)"""
    found: list[tuple[int, int]] = []
    for window in windows:
        done = found[-1][1] if found else 0
        at = whole.find(window)
        while at >= 0 and not (lined(whole, at, window) and at <= done
                               and (at + len(window) > done or not found)):
            at = whole.find(window, at + 1)
        assert at >= 0 and (found or at == 0), (window, whole)
        found.append((at, at + len(window)))
    assert not found or found[-1][1] == len(whole)
    return found


def lined(whole: str, at: int, window: str) -> bool:
    """Whether `window` at `at` in `whole` starts and ends with a line."""
    end = at + len(window)
    return (at == 0 or whole[at - 1] == "\n") and (end == len(whole) or whole[end] == "\n")


def tag(number: int) -> str:
    """A word of letters only, other for every number: makes a line unlike any other."""
    return "q" + "".join(chr(ord("a") + int(digit)) for digit in str(number))


# --- the windows' shape ---------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "", "no quote here", "a > b and 3 > 2", "mine\n\nand mine >\n", "x\n" * 200,
])
def test_a_text_with_no_quoted_line_gives_no_window(text: str) -> None:
    """A mark counts only where a line starts."""
    assert list(quoted_windows(text, 1, 8)) == []


@pytest.mark.parametrize("text", [
    "> Case ZC12\n> C00123 is listed",
    "Jo wrote:\n> one\n>> two\n > > three\n  >four\nmine\n> five",
    ">\n> \n",
    "> only",
])
def test_a_short_text_gives_one_window_the_quoted_view(text: str) -> None:
    """A text of at most `size` characters (and `size // 64` lines) is one window."""
    assert list(quoted_windows(text, 64 * 64, OVERLAP or 0)) == [quoted(text)]


MARKS = ["> ", ">", ">> ", "> > ", "  > ", ">>>"]
LINE_TEXTS = ["", " ", "a", "word word", "ends with a space ", " starts with one", "x" * 70,
              "NHS 943 476", "5919", "> inner mark"]


@st.composite
def quoted_texts(draw: st.DrawFn) -> str:
    """Lines quoted with assorted marks, some not quoted, some blank; each quoted line unlike
    any other (blank ones by their number of blanks), so that a window is found in one place."""
    lines = draw(st.lists(st.tuples(st.sampled_from(["", *MARKS, *MARKS]),
                                    st.sampled_from(LINE_TEXTS)), max_size=30))
    unique = [mark + (text + " " + tag(number) if text.strip() else " " * (2 * number + 2))
              for number, (mark, text) in enumerate(lines)]
    return "\n".join(unique) + draw(st.sampled_from(["", "\n"]))


@SETTINGS
@given(quoted_texts(), st.integers(1, 64), st.integers(0, 40))
def test_windows_are_runs_of_whole_quoted_lines(text: str, size: int, overlap: int) -> None:
    """Every window is a run of whole lines of the quoted view, the runs reach its end in
    order, and each repeats the fewest lines of the ones before it that hold `overlap`
    characters other than blanks and line breaks (every line before it, when those hold
    fewer; the last line, when `overlap` is 0)."""
    whole = quoted(text)
    windows = list(quoted_windows(text, size, overlap))
    assert bool(windows) == any(re.match(r" *>", line) for line in text.split("\n"))
    placed = spans(windows, whole)
    for (start, _), (_, before) in zip(placed[1:], placed, strict=False):
        assert start == 0 or blank_free(whole[start:before]) >= overlap
        second = whole.find("\n", start) + 1  # where the repeated lines' second starts
        assert second > before or blank_free(whole[second:before]) < overlap


def test_short_lines_are_read_fewer_to_a_window() -> None:
    """A window holds the quoted lines of at most `size // 64` lines of text (each line found
    is an object of its own, many times the size of a short line)."""
    text = "".join(f"> {tag(number)}\n" for number in range(1000))
    whole = quoted(text)
    windows = list(quoted_windows(text, 64 * 10, 0))
    placed = spans(windows, whole)
    assert len(windows) > 50
    news = [whole[max(start, before):end].strip("\n").count("\n") + 1
            for (start, end), (_, before) in zip(placed, [(0, 0), *placed], strict=False)]
    assert max(news) <= 10


# --- what the windows find ------------------------------------------------------------------

PNC = f"01/12345{pnc_check_letter('01', '12345')}"
# Lines of a quoted identifier, wrapped as mail clients wrap them, and near misses.
SNIPPETS: list[list[str]] = [
    ["NHS 943 476", "5919 on file"],
    ["NHS 943 ", "476", "5919"],
    ["NHS 943", "476 5919"],
    ["Case ZC12", "C00123 is listed"],
    ["the case ZC12C0", "0123 is listed"],
    ["Case ZC12 ", "C00123"],
    ["FD24P01234 too"],
    ["date of birth:", "3 May", "2015"],
    ["date of", "birth 03/04/2015"],
    # A date wrapped inside (whole in the joined quoted view only) 35 characters after its cue.
    ["Her date of birth:", "(recorded-on-the-", "family-court-file)", "03/04/", "2015"],
    ["born on", "", "12/03/2010"],
    ["DOB 29/02/20", "01"],
    ["NI AB 12 34", "56 C"],
    ["PNC " + PNC[:6], PNC[6:]],
    ["ZC12C0012 is short", "12/03/2024 visit", "NHS 943 476 5918"],
    ["943 476", "59", "19"],
]
FILLER = "the family meeting went well and the children are settled at school "
UNQUOTED = ["Jo wrote:", "", "mine 943 476 5919", "On Monday:"]


@st.composite
def replies(draw: st.DrawFn) -> str:
    """A reply: quoted identifiers wrapped over lines, between quoted prose of up to 3,000
    characters (so that windows repeat only part of what came before; each line of it unlike
    any other, so that a window is found in one place), blank quoted lines, nested marks and
    lines that are not quoted; half of them with a blank at the end of every line."""
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 10))):
        filler = FILLER * draw(st.sampled_from([0, 1, 10, 30, 60, 100]))
        lines.extend(f"> {filler[at:at + 600].strip()} {tag(len(lines))}"
                     for at in range(0, len(filler), 600))
        kind = draw(st.sampled_from(["snippet", "snippet", "snippet", "blank", "unquoted"]))
        if kind == "blank":
            lines.append(draw(st.sampled_from([">", "> ", ">>"])))
        elif kind == "unquoted":
            lines.append(draw(st.sampled_from(UNQUOTED)))
        else:
            mark = draw(st.sampled_from(MARKS))
            lines.extend(mark + line for line in draw(st.sampled_from(SNIPPETS)))
    if draw(st.booleans()):  # format=flowed: a blank ends every line, none is glued to the next
        lines = [line + " " for line in lines]
    return "\n".join(lines)


def identifiers_of(text: str, window: int) -> tuple[set[str], set[str]]:
    """The case numbers and identifier kinds `content` finds in a body, its quoted lines
    read `window` characters of text at a time."""
    folded = normalise.fold(text)
    texts = [content._Text(content._Source.BODY, folded)]
    numbers, kinds = content._identifiers(texts, RULES, [content._scan(folded, RULES)],
                                          window)
    return set(numbers), kinds


def glued_edges(text: str, size: int) -> bool:
    """Whether a window is cut from the quoted view where the joined view glues the lines on
    either side of the cut together (a run of line breaks with no blank at either end): a
    window may find more there, as its first or last token is cut short. (True as well when
    a window but the first is found in the view twice: where it was cut is unknown. With the
    policy's overlap, a window repeats all before it or holds prose found nowhere else.)"""
    return cut_where_glued(quoted(text), list(quoted_windows(text, size, OVERLAP or 0)))


def cut_where_glued(whole: str, windows: list[str]) -> bool:
    """`glued_edges` of windows of the text `whole`."""
    if any(whole.count(window) > 1 for window in windows[1:]):
        return True
    placed = spans(windows, whole)
    edges = [*(start - 1 for start, _ in placed if start > 0),
             *(end for _, end in placed if end < len(whole))]
    for edge in edges:
        low, high = edge, edge + 1
        while low > 0 and whole[low - 1] in " \n":
            low -= 1
        while high < len(whole) and whole[high] in " \n":
            high += 1
        if whole[low:high].strip(" ") == whole[low:high]:
            return True
    return False


def test_the_default_policy_reads_the_quoted_view_in_windows() -> None:
    """Every identifier pattern of the default policy has a bounded reach."""
    assert OVERLAP == 4096


@settings(max_examples=200)
@given(replies(), st.integers(1, 64))
def test_windows_find_all_the_whole_view_finds(text: str, size: int) -> None:
    """With windows of 1 to 64 characters of text, every case number and identifier kind
    found in the whole quoted view is found; and no other, unless a window was cut where the
    joined view glues two lines together."""
    whole = identifiers_of(text, WHOLE)
    windowed = identifiers_of(text, size)
    assert whole[0] <= windowed[0] and whole[1] <= windowed[1], (whole, windowed)
    if not glued_edges(text, size):
        assert windowed == whole


def test_a_match_across_a_window_is_found_in_the_next() -> None:
    """A case number and a date of birth wrapped across the line where a window ends, far
    into a long reply, and a cue a few lines before its date."""
    prose = "\n".join(f"> {FILLER}" for _ in range(200))
    text = (f"Jo wrote:\n{prose}\n> Case ZC12\n> C00123 and the date of\n> birth\n>\n"
            f"> 03/04/2015\n{prose}")
    for size in (1, 7, 64, 1000):
        assert identifiers_of(text, size) == ({"ZC12C00123"}, {"date-of-birth"})


# --- a reach that is not bounded: read whole ------------------------------------------------

@pytest.mark.parametrize(("pattern", "width"), [
    (r"x\s+y", 2),  # blanks and line breaks are not counted
    (r"\d{3}[ \n]{0,9}\d{4}", 7),
    (r"(?<![A-Za-z0-9])ZC\d{2}(?![A-Za-z0-9])", 6),  # lookarounds read a character each
    (r"(a)\1", 2),
    (r"x+", None),  # unbounded
    (r"\s+x", None),  # may start with a blank, which could lie before the window
    (r"(?:x|\n)y", None),
    (r".x", None),
    (r"(?<=a)b", None),  # must see a character before it: at a window's start it sees none
])
def test_solid_width(pattern: str, width: int | None) -> None:
    """Characters other than blanks and line breaks a match spans, or None when a window
    could miss a match however much it repeats."""
    assert scan.solid_width(re.compile(pattern)) == width


def test_an_unbounded_case_number_pattern_reads_the_quoted_view_whole() -> None:
    """A configured case-number pattern whose matches have no bounded width: the quoted view
    is read whole, and a number wrapped over 70 quoted lines (longer than any window could
    repeat) is found whole."""
    rules = replace(RULES, case_number_pattern=r"ZC\d+")
    assert content._quoted_overlap(rules.scan_patterns) is None
    digits = "1234567" * 700
    wrapped = "\n".join("> " + digits[at:at + 70] for at in range(0, len(digits), 70))
    folded = normalise.fold(f"Jo wrote:\n> Case ZC\n{wrapped} is listed")
    texts = [content._Text(content._Source.BODY, folded)]
    numbers, _ = content._identifiers(texts, rules, [content._scan(folded, rules)], 1)
    assert "ZC" + digits in numbers


# --- the text's own joined view, a window at a time -----------------------------------------

@st.composite
def bodies(draw: st.DrawFn) -> str:
    """A body that quotes nothing: identifiers wrapped over lines between prose of up to
    1,800 characters (each line unlike any other), half of them with a blank at the end of
    every line (format=flowed)."""
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 10))):
        filler = FILLER * draw(st.sampled_from([0, 1, 10, 30]))
        lines.extend(f"{filler[at:at + 600].strip()} {tag(len(lines))}"
                     for at in range(0, len(filler), 600))
        lines.extend(draw(st.sampled_from(SNIPPETS)))
    if draw(st.booleans()):
        lines = [line + " " for line in lines]
    return "\n".join(lines)


@settings(max_examples=200)
@given(bodies(), st.integers(1, 64))
def test_the_joined_view_read_in_windows_finds_all_the_whole_view_finds(text: str,
                                                                         size: int) -> None:
    """A text's own joined view read a window of a few characters of it at a time
    (`normalise.text_windows`, a quarter of the quoted view's windows): every case number and
    identifier kind the whole joined view finds is found; no other, unless a window was cut
    where the joined view glues two lines together."""
    whole = identifiers_of(text, WHOLE)
    windowed = identifiers_of(text, size)
    assert whole[0] <= windowed[0] and whole[1] <= windowed[1], (whole, windowed)
    folded = normalise.fold(text)
    if not cut_where_glued(folded, list(normalise.text_windows(folded, max(1, size // 4),
                                                                OVERLAP or 0))):
        assert windowed == whole


@settings(max_examples=300)
@given(st.sampled_from(SNIPPETS), st.integers(0, 40), st.integers(0, 40), st.integers(1, 64),
       st.booleans())
def test_one_wrapped_identifier_anywhere_is_found_by_the_joined_view_windows(
        snippet: list[str], before: int, after: int, size: int, flowed: bool) -> None:
    """One identifier wrapped over lines, with prose lines (each unlike any other) before and
    after it, and nothing else in the body that a kind could be found from twice: the windows
    of the text's own joined view find every case number and kind the whole view finds (a
    window that repeats too little of the lines before it misses the cue or the first lines of
    one: the test above, with several in one body, can find the kind from another)."""
    lines = [f"{FILLER[:40].strip()} {tag(n)}" for n in range(before)] + snippet
    lines += [f"{FILLER[20:60].strip()} {tag(1000 + n)}" for n in range(after)]
    text = "\n".join(line + " " for line in lines) if flowed else "\n".join(lines)
    whole = identifiers_of(text, WHOLE)
    windowed = identifiers_of(text, size)
    assert whole[0] <= windowed[0] and whole[1] <= windowed[1], (whole, windowed)


def test_a_long_text_is_one_window_per_stretch_and_a_short_one_is_itself() -> None:
    """Windows are runs of whole lines repeating at least the overlap before them; a text no
    longer than a window is the one window."""
    short = "a\nb 12\n"
    assert list(normalise.text_windows(short, 100, 8)) == [short]
    text = "".join(f"{tag(number)} 12 34\n" for number in range(500))
    windows = list(normalise.text_windows(text, 300, 50))
    placed = spans(windows, text)
    assert len(windows) > 10
    for (start, _), (_, before) in zip(placed[1:], placed, strict=False):
        assert blank_free(text[start:before]) >= 50
