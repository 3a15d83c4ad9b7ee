"""One normalised text for every recogniser (issue 13, item 1; DESIGN ruling 22).

A case number or personal identifier disguised with invisible characters, fullwidth or
lookalike forms, separators or line breaks is still recognised; the delivered text is the
original. Table-driven cases through the classifier, `casegate check` and the SMTP front, and
property tests that inserting such characters never hides an identifier.
"""

from __future__ import annotations

import email.policy
import json
import re
import smtplib
import time
import unicodedata
from collections.abc import AsyncIterator
from email.message import EmailMessage
from itertools import pairwise
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from policies import normalise
from policies.content import classify_message
from policies.normalise import fold, joined, quoted
from tests.fixtures_content import default_rules
from tests.gateway_harness import STAFF, Harness, running_gateway
from tests.sink import Sink

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")

RULES = default_rules()
OUTSIDE = "parent@example.org"  # a non-secure address, verified for nothing

ZWSP, SOFT_HYPHEN, RLO, VS16, WORD_JOINER = "\u200b", "\u00ad", "\u202e", "\ufe0f", "\u2060"
FORMAT_CHARACTERS = [ZWSP, SOFT_HYPHEN, RLO, VS16, WORD_JOINER, "\u200c", "\u200d", "\u200e",
                     "\u2066", "\ufeff", "\u034f", "\U000e0041", "\x00", "\x7f"]
LINE_BREAKS = ["\n", "\r\n", "\r", "\u2028", "\u2029", "\x85"]


def fullwidth(text: str) -> str:
    """ASCII letters and digits as their fullwidth forms (U+FF01 block)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


@pytest.mark.parametrize(("text", "expected"), [
    ("plain ASCII stays as it is", "plain ASCII stays as it is"),
    (f"Z{ZWSP}C12{SOFT_HYPHEN}C00123", "ZC12C00123"),
    (fullwidth("ZC12C00123"), "ZC12C00123"),
    ("Z\u0421\u0031\u0032C\u041e0123", "ZC12CO0123"),  # Cyrillic Es and O become Latin
    ("\u0661\u0662 \u0967\u0968", "12 12"),  # Arabic-Indic and Devanagari digits
    ("a\u00a0b\u2003c\u202fd", "a b c d"),  # no-break, em and narrow spaces
    ("a\u2013b\u2014c\u2212d\u2011e", "a-b-c-d-e"),  # en, em, minus, non-breaking hyphen
    ("one\r\ntwo\u2028three\rfour", "one\ntwo\nthree\nfour"),
    ("tab\there", "tab here"),
    (f"{RLO}321{VS16}", "321"),
    ("one\r\ntwo\r\n", "one\ntwo\n"),  # ASCII, CRLF throughout: one translation
    ("a\r\n\tb\x00c\x7f\r\n", "a\n bc\n"),
    ("a\r\r\nb\rc\r\n", "a\n\nb\nc\n"),  # a lone CR: a line break of its own
    ("end\r", "end\n"),
])
def test_fold(text: str, expected: str) -> None:
    assert fold(text) == expected


@given(st.text(alphabet=st.sampled_from(["a", "1", " ", "\r", "\n", "\t", "\x0b", "\x00",
                                         "\x7f", "\x1f"])))
def test_fold_of_ascii_text_replaces_crlf_then_translates(text: str) -> None:
    """For ASCII text, folding is: each CRLF becomes LF, then tab and the vertical blanks become
    a space, a CR a line break, and the other C0 controls and DEL go (whichever way `fold`
    takes to it)."""
    expected = text.replace("\r\n", "\n").translate(
        {**dict.fromkeys([*range(0x09), *range(0x0e, 0x20), 0x7f]),
         **{ord(c): to for c, to in zip("\t\x0b\x0c\r", "   \n", strict=True)}})
    assert fold(text) == expected


@pytest.mark.parametrize("over", [False, True])
def test_ascii_text_with_crlf_folds_alike_on_either_side_of_the_bytes_path(over: bool) -> None:
    """ASCII text whose every CR ends a CRLF has its CRs deleted from its bytes up to
    `_BYTES_FOLD_MAX` characters, and by str.replace past it: the same folded text."""
    line = "Call 0161 496 0732 on 03/11/2025.\r\n"
    text = line * (normalise._BYTES_FOLD_MAX // len(line) + over)
    assert (len(text) > normalise._BYTES_FOLD_MAX) == over
    assert normalise.fold_parts(text) == [text.replace("\r\n", "\n")]


# Characters whose folding depends on what is beside them (combining marks, jamo, halfwidth
# voiced marks, CRLF), and ones the table changes.
FOLD_PIECES = ["a", "\u00e9", "e\u0301", "\u0301", "\u0345", "\n", "\r", "\r\n", "\t", "\x0b",
               "\x00", " ", "1", "\u1100", "\u1161", "\u11a8", "\ufb01", "\uff11", "\u200b",
               "\u00a0", "\u2028", "\u0421", "\uff76", "\uff9e", "\u03a3", "\u2013", "\udc80"]


@pytest.mark.parametrize("slice_size", [1, 2, 3, 7, 1 << 18])
@given(st.lists(st.sampled_from(FOLD_PIECES), max_size=60).map("".join))
def test_folding_a_slice_of_lines_at_a_time_is_folding_the_whole(slice_size: int,
                                                                 text: str) -> None:
    """Text with a character other than ASCII is folded a slice of lines at a time (so that
    the text, its folded parts and the folded text are never held at once): the parts joined
    are the whole text folded at once, whatever the slice."""
    with mock.patch.object(normalise, "_FOLD_SLICE", slice_size):
        parts = normalise.fold_parts(text)
    assert "".join(parts) == (normalise._fold_other(text) if not text.isascii() else fold(text))
    assert all(part.endswith("\n") for part in parts[:-1])


@given(st.lists(st.sampled_from(FOLD_PIECES), max_size=60).map("".join),
       st.lists(st.integers(min_value=0, max_value=60), max_size=6))
def test_folding_a_text_as_it_is_decoded_is_folding_it_whole(text: str,
                                                             cuts: list[int]) -> None:
    """A body decoded a slice at a time is folded a slice of lines at a time as it comes
    (`folded_parts`): wherever the decoded pieces are cut (between a CR and its LF, inside a
    combining sequence, with no line break for several pieces), the same as folding the text
    whole."""
    ends = [0, *sorted(min(cut, len(text)) for cut in cuts), len(text)]
    pieces = [text[start:end] for start, end in pairwise(ends)]
    assert "".join(normalise.folded_parts(pieces)) == fold(text)


def reference_fold(text: str) -> str:
    """`fold` of non-ASCII text as first written: a regex and `set` over the whole text."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n"))
    table = normalise._table()
    changed = sorted(char for char in set(text) if ord(char) in table)
    if changed:
        pattern = re.compile("[" + "".join(re.escape(char) for char in changed) + "]+")
        text = pattern.sub(lambda match: match.group().translate(table), text)
    if re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text) is not None:
        text = text.translate(normalise._ASCII_STR_TABLE)
    return text


@pytest.mark.parametrize("one_by_one", [0, 8, 1000])
@given(st.one_of(st.lists(st.sampled_from(FOLD_PIECES), max_size=60).map("".join),
                 st.text(max_size=80)))
def test_folding_non_ascii_text_finds_what_to_change_at_c_speed(one_by_one: int,
                                                                text: str) -> None:
    """What non-ASCII text holds (the characters to change, tabs, other controls) is found
    from its bytes, and the characters changed one `replace` at a time when few: the same as
    the regex and `set` over the text it replaced, with few or many such characters."""
    with mock.patch.object(normalise, "_REPLACED_ONE_BY_ONE", one_by_one):
        assert normalise._fold_other(text) == reference_fold(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("no break", "no break"),
    ("ZC12\nC00123", "ZC12C00123"),  # a token broken over two lines is whole again
    ("ZC12\n\nC00123", "ZC12C00123"),
    ("end of line \nnext line", "end of line next line"),  # words stay apart
    ("943 \n476 5919", "943 476 5919"),
])
def test_joined(text: str, expected: str) -> None:
    assert joined(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("no quote here", ""),
    ("a > b and 3 > 2", ""),  # a mark only where a line starts
    ("> Case ZC12\n> C00123 is listed", "Case ZC12\nC00123 is listed"),
    ("Jo wrote:\n> one\n>> two\n > > three\n  >four\nmine\n> five", "one\ntwo\nthree\nfour\nfive"),
    (">\n> \n", "\n"),
])
def test_quoted_lines_without_their_marks(text: str, expected: str) -> None:
    assert quoted(text) == expected


def facts_of(body: str, subject: str = "Update") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(case numbers, identifier kinds) the classifier finds in a plain text message."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = STAFF
    message["To"] = OUTSIDE
    message["Subject"] = subject
    message.set_content(body)
    facts = classify_message(bytes(message), RULES, time.monotonic)
    return facts.case_numbers, facts.identifiers


@pytest.mark.parametrize(("body", "case_numbers", "identifiers"), [
    (f"Case Z{ZWSP}C12C00{ZWSP}123 is listed.", ("ZC12C00123",), ()),
    (f"Case ZC12{SOFT_HYPHEN}C00123 is listed.", ("ZC12C00123",), ()),
    (f"Case {fullwidth('ZC12C00123')} is listed.", ("ZC12C00123",), ()),
    ("Case Z\u0421\u0031\u0032C00123 is listed.", ("ZC12C00123",), ()),  # Cyrillic Es
    ("Case ZC12 C00123 is listed.", ("ZC12C00123",), ()),  # spaces where people type them
    ("Case ZC12-C00123 is listed.", ("ZC12C00123",), ()),
    ("Case zc12 c 00123 is listed.", ("ZC12C00123",), ()),
    ("Case ZC12\u00a0C00123 is listed.", ("ZC12C00123",), ()),
    ("Case ZC12\nC00123 is listed.", ("ZC12C00123",), ()),  # broken over two lines
    (f"Case {RLO}ZC12C00123 is listed.", ("ZC12C00123",), ()),
    (f"NHS 943{ZWSP}476{ZWSP}5919", (), ("nhs-number",)),
    (f"NHS {fullwidth('943 476 5919')}", (), ("nhs-number",)),
    ("NHS 943\u00a0476\u00a05919", (), ("nhs-number",)),
    (f"NI number QQ12{SOFT_HYPHEN}3456C", (), ()),  # QQ is never allocated: still nothing
    (f"NI number AB12{SOFT_HYPHEN}3456C", (), ("ni-number",)),
    (f"DOB: {fullwidth('03/04/2015')}", (), ("date-of-birth",)),
    ("born 3\u00a0April\u00a02015", (), ("date-of-birth",)),
    ("born 3 Ap\nril 2015", (), ("date-of-birth",)),
    # Wrapped by a mail client: at a space it dropped, and in a quoted reply.
    ("NHS 943 476\n5919 on file", (), ("nhs-number",)),
    ("Jo wrote:\n> Case ZC12\n> C00123 is listed.", ("ZC12C00123",), ()),
    ("Jo wrote:\n> the case ZC12C0\n> 0123 is listed.", ("ZC12C00123",), ()),
    ("Jo wrote:\n>> NHS 943 476\n>> 5919 on file", (), ("nhs-number",)),
    ("Jo wrote:\n> > NHS 943\n> > 476 5919 on file", (), ("nhs-number",)),
    # Look-alikes that must stay unrecognised: no case number was written.
    ("Room ZC12 is free at 10:00", (), ()),
    ("The invoice ZC12C0012 is short of a digit", (), ()),
])
def test_disguised_identifiers_are_recognised(body: str, case_numbers: tuple[str, ...],
                                              identifiers: tuple[str, ...]) -> None:
    assert facts_of(body) == (case_numbers, identifiers)


def test_a_disguised_case_number_in_the_subject_is_recognised() -> None:
    assert facts_of("See the attached.", subject=fullwidth("ZC12C00123"))[0] == ("ZC12C00123",)


# --- properties -------------------------------------------------------------------------

IDENTIFIERS = [
    ("ZC12C00123", "case-number"),
    ("zc12c00123", "case-number"),
    ("ZC12 C00123", "case-number"),
    ("9434765919", "nhs-number"),
    ("943 476 5919", "nhs-number"),
    ("AB123456C", "ni-number"),
    ("AB 12 34 56 C", "ni-number"),
    ("01/12345H", "pnc-id"),
    ("DOB 03/04/2015", "date-of-birth"),
    ("born 3 April 2015", "date-of-birth"),
]


def kinds_in(body: str) -> set[str]:
    case_numbers, identifiers = facts_of(f"Dear colleague, about {body} as discussed.")
    return set(identifiers) | ({"case-number"} if case_numbers else set())


def test_the_property_identifiers_are_recognised_undisguised() -> None:
    for identifier, kind in IDENTIFIERS:
        assert kind in kinds_in(identifier), identifier


@given(st.sampled_from(IDENTIFIERS), st.integers(min_value=1, max_value=20),
       st.sampled_from(FORMAT_CHARACTERS + LINE_BREAKS), st.integers(min_value=1, max_value=3))
def test_inserting_a_format_character_or_line_break_never_hides_an_identifier(
        identifier: tuple[str, str], at: int, inserted: str, times: int) -> None:
    text, kind = identifier
    position = at % len(text) or 1  # strictly inside
    assert kind in kinds_in(text[:position] + inserted * times + text[position:])


@given(st.sampled_from(IDENTIFIERS), st.lists(st.booleans(), min_size=20, max_size=20))
def test_any_mix_of_fullwidth_forms_never_hides_an_identifier(
        identifier: tuple[str, str], which: list[bool]) -> None:
    text, kind = identifier
    mixed = "".join(fullwidth(c) if wide else c for c, wide in zip(text, which, strict=False))
    assert kind in kinds_in(mixed)


@given(st.text(max_size=200))
def test_fold_is_idempotent_and_never_raises(text: str) -> None:
    once = fold(text)
    assert fold(once) == once
    assert joined(joined(once)) == joined(once)


# --- through casegate check and the SMTP front -------------------------------------------

DISGUISED = [
    f"About Z{ZWSP}C12C00123: the contact note is attached.",
    f"About ZC12{SOFT_HYPHEN}C00123: the contact note is attached.",
    f"About {fullwidth('ZC12C00123')}: the contact note is attached.",
    "About ZC12 C00123: the contact note is attached.",
]


def mail_to_outside(body: str) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = f"Jo Smith <{STAFF}>"
    message["To"] = OUTSIDE
    message["Subject"] = "Contact"
    message.set_content(body)
    return bytes(message)


@pytest.mark.parametrize("body", DISGUISED)
def test_check_refuses_a_disguised_case_number_to_an_unverified_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(mail_to_outside(body))
    code = main(["check", str(eml), "--data", str(tmp_path / "data"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["case_numbers"] == ["ZC12C00123"]
    [recipient] = out["recipients"]
    assert (recipient["action"], recipient["rule"]) == ("block", "unverified-recipient")


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def test_the_smtp_front_refuses_disguised_case_numbers_and_sends_nothing(
        gw: Harness) -> None:
    for body in DISGUISED:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await gw.run(gw.send, STAFF, [OUTSIDE], mail_to_outside(body))
        assert refused.value.smtp_code == 550, body
    assert gw.sink.messages == []
    # The same note without a case number goes, and goes as it was written.
    plain = mail_to_outside("The contact note is attached.\u200b")
    assert await gw.run(gw.send, STAFF, [OUTSIDE], plain) == {}
    (received,) = gw.sink.messages
    assert "\u200b".encode() in received.data or b"=E2=80=8B" in received.data
