"""The single-part path of the classifier answers exactly as the full stdlib parse does.

Most mail is one text/plain or text/html body; `policies.content` reads such a message's body
without the stdlib's line-by-line parse. These properties compare the two paths on generated
messages, hostile ones included, and an HTML body's text and tags, read a piece at a time from
its bytes, with those of its markup as decoded.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import extract, normalise
from policies.content import _BodyRead, _classify, _single_text_part
from policies.content_rules import (
    CueMatcher,
    InformationTypeCues,
    normalise_words,
    normalised_slices,
    spaced_words,
)
from tests.fixtures_content import SteppingClock, default_rules
from tests.html_reference import whole_tags

RULES = default_rules()
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

HEADER_LINES = [
    b"From: Jo Smith <jo.smith@cafcass.gov.uk>",
    b"To: parent@example.org",
    b"Subject: Court report ZC12C00123",
    b"Subject: =?utf-8?q?Care_plan?=",
    b"Content-Type: text/plain; charset=utf-8",
    b"Content-Type: text/plain; charset=iso-8859-1",
    b"Content-Type: text/plain; charset=no-such-charset",
    b"Content-Type: text/html; charset=us-ascii",
    b"Content-Type: text",
    b"Content-Type: application/pdf",
    b"Content-Type: multipart/mixed; boundary=x",
    b"Content-Type: message/rfc822",
    b"Content-Disposition: attachment; filename=a.txt",
    b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Transfer-Encoding: 7bit",
    b"Content-Transfer-Encoding: 8bit",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding:  7bit ",
    b"Content-Transfer-Encoding: x-unknown",
    b"Sensitivity: Private",
    b"X-Casegate-Override: rule-id; because of x y z",
    b" folded continuation",
    b"not a header line",
    b"From nobody Mon Jan  1 00:00:00 2024",
    b"Bad Name: x",
    b": no field name",
    b"Subject:no space",
    b"X-\xff: eight-bit name",
    b"Subject: caf\xc3\xa9 eight-bit value",
    b"\tfolded with a tab",
    b"Comments: x: y: z",
    b"",
]
BODY_PIECES = [
    b"Dear parent,", b"Case ZC12C00123 is listed.", b"DOB 01/02/2014", b"care plan",
    b"=\r\n", b"=3D", b"=C3=A9", b"caf\xc3\xa9", b"\xff\xfe", b".", b"<p>Court <b>report</b></p>",
    b"Call 020 7946 0018", b"AB 12 34 56 C", b"", b"\r", b"\n", b"\x00", b"--x", b"--x--",
]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A header block and a body from pieces that matter, with CRLF or hostile line ends."""
    head = draw(st.lists(st.sampled_from(HEADER_LINES), min_size=0, max_size=8))
    body = draw(st.lists(st.sampled_from(BODY_PIECES), max_size=20))
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]))
    raw = b"\r\n".join(head) + end + b"\r\n" + b"\r\n".join(body)
    if draw(st.booleans()):
        raw += b"\r\n"
    return raw


@SETTINGS
@given(messages())
def test_single_part_path_gives_the_full_parse_answer(raw: bytes) -> None:
    """Same facts, whichever path a message takes."""
    fast = _classify(raw, RULES, SteppingClock())
    full = _classify(raw, RULES, SteppingClock(), single_part=False)
    assert fast == full


def test_a_message_opening_with_a_blank_line_and_eight_bit_text_is_parsed() -> None:
    """Its headers are read as body, and the skeleton's token beside 8-bit bytes made the
    stdlib's `get_payload` raise, so the message was unparseable (found by the property test
    above, run without CI's fixed examples): it now takes the full parse."""
    raw = b"\r\nSubject: caf\xc3\xa9 eight-bit value\r\n\r\nDear parent,\r\n"
    facts = _classify(raw, RULES, SteppingClock())
    assert "unparseable" not in facts.malformed
    assert facts == _classify(raw, RULES, SteppingClock(), single_part=False)


def test_plain_and_quoted_printable_bodies_take_the_single_part_path() -> None:
    """The common shapes really are read without the full parse (the property above is not
    vacuous), and a multipart message is not."""
    head = b"From: a@cafcass.gov.uk\r\nContent-Type: text/plain; charset=utf-8\r\n"
    assert _single_text_part(head + b"\r\nhello\r\n") is not None
    qp = head + b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nplan\r\n"
    part = _single_text_part(qp)
    assert part is not None and bytes(part.data) == "café plan\r\n".encode()
    multipart = b"From: a@cafcass.gov.uk\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    assert _single_text_part(multipart + b"--x\r\n\r\nhi\r\n--x--\r\n") is None
    assert _single_text_part(b"From: a@cafcass.gov.uk\nSubject: bare LF\n\nhi\n") is None


QP_BITS = ["caf=C3=A9", "=3D", "=\r\n", "=\n", "\r\n", "\n", "=", "==", "=4", "= ", " ", "x" * 90,
           "plan", "<p>", "</p>", "&amp;"]


@SETTINGS
@given(st.lists(st.sampled_from(QP_BITS), max_size=40).map("".join), st.integers(1, 40))
def test_a_quoted_printable_body_decoded_a_slice_at_a_time_is_decoded_whole(
        body: str, piece: int) -> None:
    """A quoted-printable body decoded a slice of whole lines at a time (slices of 1 to 40
    bytes, lines of up to 90) is the body decoded whole, soft line breaks and stray "="
    included."""
    head = (b"From: a@cafcass.gov.uk\r\nContent-Type: text/html\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    part = _single_text_part(head + body.encode())
    assert part is not None
    saved, extract.HTML_PIECE = extract.HTML_PIECE, piece
    try:
        assert b"".join(part.slices()) == part.data
    finally:
        extract.HTML_PIECE = saved


HTML_BITS = ["<p>", "</p>", "<b>", "<td>", "<!--", "-->", ">", "<", "&", "&#13;", "&#x0d;",
             "&amp;", "&nbsp;", "&#90;", "ZC12", "C00123", " ", "\r\n", "\r", "\n", "\t",
             "\x00", "é", "\u200b", '<img alt="DOB 01/02/2014">']


@SETTINGS
@given(st.lists(st.sampled_from(HTML_BITS), max_size=40).map("".join))
def test_an_html_body_gives_its_text_and_its_tags(markup: str) -> None:
    """An HTML body's texts are the text of its markup as decoded, folded as it comes, and
    the tags that text leaves out (attribute values with them), read from its bytes a piece
    at a time."""
    part = EmailMessage()
    part["Content-Type"] = "text/html; charset=utf-8"
    text, tags = _BodyRead.of(part, markup.encode()).texts()
    assert text.folded and text.text == normalise.fold(extract.html_to_text(markup))
    assert tags.text == whole_tags(markup)


@SETTINGS
@given(st.lists(st.sampled_from(HTML_BITS), max_size=40).map("".join),
       st.sampled_from(["utf-8", "iso-8859-1", "utf-16", "x-no-such-charset"]))
def test_a_plain_body_gives_its_text_decoded_and_folded(text: str, charset: str) -> None:
    """A plain body's text is its bytes decoded (errors replaced; an unknown charset read as
    UTF-8), ASCII whole, other text folded a slice at a time as it is decoded: the same
    text, folded, as decoding it whole."""
    part = EmailMessage()
    part["Content-Type"] = f"text/plain; charset={charset}"
    codec = "utf-8" if charset == "x-no-such-charset" else charset
    data = text.encode(codec, errors="replace")
    with mock.patch.object(extract, "HTML_PIECE", 3):  # slices of 3 bytes
        (read,) = _BodyRead.of(part, data).texts()
    decoded = str(data, codec, errors="replace")
    assert (normalise.fold(read.text) if not read.folded else read.text) == normalise.fold(decoded)
    assert read.folded == (not decoded.isascii() or codec == "utf-16")


MATCHER = CueMatcher.build((
    InformationTypeCues("court-report", keywords=("court report", "report to the court")),
    InformationTypeCues("care-plan", keywords=("care plan",)),
    InformationTypeCues("letter", keywords=("letter",)),
), "keywords")
WORDS = st.text(alphabet="abcdeflnoprtu _-.\r\n\tCÉΣ", max_size=300)


@given(WORDS, st.integers(min_value=1, max_value=40))
def test_sliced_normalisation_finds_the_same_type(text: str, size: int) -> None:
    """Cutting the text into slices never loses or invents a phrase."""
    whole = MATCHER.first_type([normalise_words(text)])
    sliced = MATCHER.first_type(normalised_slices(text, MATCHER.max_words - 1, size))
    assert sliced == whole


@given(WORDS, st.integers(min_value=1, max_value=40))
def test_slices_hold_every_word_in_order(text: str, size: int) -> None:
    """The slices, without their carried-over words, are the whole normalised text."""
    pieces = list(normalised_slices(text, 0, size))
    assert " ".join(p for p in pieces if p) == normalise_words(text)


def reference_first_type(matcher: CueMatcher, texts: list[str]) -> str | None:
    """The information type as one whole-word regex per phrase finds it, in table order."""
    for type_id, phrases in zip(matcher.type_ids, matcher.phrases, strict=True):
        for phrase in phrases:
            pattern = re.compile(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])")
            if any(pattern.search(text) for text in texts):
                return type_id
    return None


PHRASE_TEXT = st.lists(st.sampled_from(["court", "report", "reports", "to", "the", "care",
                                        "plan", "letter", "newsletter", "letters", " ", "x1",
                                        "courtreport", "caf\u00e9"]),
                       max_size=30).map(" ".join)


@given(st.lists(PHRASE_TEXT, max_size=3))
def test_one_pass_phrase_search_agrees_with_a_regex_per_phrase(texts: list[str]) -> None:
    """The Aho-Corasick search finds the same first type as a whole-word regex per phrase."""
    normalised = [normalise_words(t) for t in texts]
    assert MATCHER.first_type(normalised) == reference_first_type(MATCHER, normalised)
    raw = [t.replace(" ", "-") for t in texts]  # whole-word rules hold on texts not normalised
    assert MATCHER.first_type(raw) == reference_first_type(MATCHER, raw)


def test_packaged_phrases_are_found_in_table_order() -> None:
    """With the packaged tables, each type's own first phrase finds that type or an earlier one
    (a phrase may also belong to an earlier type), and the search agrees with the reference."""
    for matcher in (RULES.keyword_matcher, RULES.label_matcher):
        for index, phrases in enumerate(matcher.phrases):
            text = f"see the {phrases[0]} today"
            found = matcher.first_type([text])
            assert found == reference_first_type(matcher, [text])
            assert found is not None and matcher.type_ids.index(found) <= index


PACKAGED_WORDS = sorted({word for matcher in (RULES.keyword_matcher, RULES.label_matcher)
                         for phrases in matcher.phrases for phrase in phrases
                         for word in phrase.split()})
MIXED_TEXT = st.lists(st.sampled_from(["court", "Court", "REPORT", "report", "to", "the", "care",
                                       "plan", "letter", "newsletter", "x1", "caf\u00e9", "\u212a",
                                       "\u0130", "-", ".", "  ", "\r\n", "\t", "report-to"])
                      | st.sampled_from(PACKAGED_WORDS).map(str.upper)
                      | st.sampled_from(PACKAGED_WORDS), max_size=30).map(" ".join)


@SETTINGS
@given(st.lists(MIXED_TEXT, max_size=3))
def test_search_by_first_words_agrees_with_the_normalised_search(texts: list[str]) -> None:
    """`first_type_in` (first words, on the text as `spaced_words`) finds the type the search
    of the normalised text finds, upper case, other scripts and runs of separators included."""
    for matcher in (MATCHER, RULES.keyword_matcher, RULES.label_matcher):
        expected = matcher.first_type([normalise_words(t) for t in texts])
        assert matcher.first_type_in(texts) == expected


def test_spaced_words_are_the_normalised_words() -> None:
    text = "Court_Report-v2.PDF \u212a\u0130 caf\u00e9  \r\n x"
    assert spaced_words(text).split() == normalise_words(text).split()
    assert len(spaced_words("Court report")) == len("Court report")


def test_a_text_made_of_cue_words_is_searched_whole_phrase_at_a_time() -> None:
    """Anchors found at every other word: the search gives up on them (bounded work) and the
    normalised search answers, the same answer."""
    text = " ".join(reversed(PACKAGED_WORDS)) * 20 + " court report"
    for matcher in (RULES.keyword_matcher, RULES.label_matcher):
        assert matcher._best_by_anchors(spaced_words(text), len(matcher.type_ids)) is None
        assert matcher.first_type_in([text]) == matcher.first_type([normalise_words(text)])
