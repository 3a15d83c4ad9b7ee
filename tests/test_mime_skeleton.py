"""The parse from a message's skeleton (policies.mime.parse_skeleton) is the stdlib's full
parse: the same tree, headers, defects and bodies, and so the same MessageFacts.

Compared on every message the MIME and content tests use (their parametrized bytes), the
generated corpus of agency mail, and Hypothesis-generated multipart messages built from the
lines that matter to the parser (boundaries, near-boundaries, blank lines, header-like lines,
"From ", folded lines, 8-bit bytes, bare CR and LF).
"""

from __future__ import annotations

import email.feedparser
from collections.abc import Iterator
from email.message import Message
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import email_policy, mime, scan
from policies.content import _classify, _parse_whole
from policies.model import MessageFacts
from tests import (
    test_content,
    test_content_properties,
    test_content_single_part,
    test_header_reading,
    test_portal_parts,
)
from tests.corpus_checks import corpus
from tests.fixtures_content import default_rules
from transports.portal import attachment_parts, read_message

RULES = default_rules()
SETTINGS = settings(max_examples=500, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _clock() -> float:
    return 0.0  # no budget runs out in either reading


def _shape(message: Message) -> list[tuple[Any, ...]]:
    """Everything the parser built, part by part."""
    return [(list(part._headers), part._payload if isinstance(part._payload, str)  # type: ignore[attr-defined]
             else len(part._payload), part.preamble, part.epilogue,  # type: ignore[attr-defined]
             [type(d).__name__ for d in part.defects], part.get_unixfrom())
            for part in message.walk()]


def _facts(raw: bytes, skeleton: bool) -> MessageFacts | str:
    """The facts of one reading, or the error it raised: `classify` turns any error into a
    protected, malformed message (fail closed), so both readings must raise alike (the stdlib
    header parser raises IndexError on a bare CR inside an angle address, for one)."""
    try:
        return _classify(raw, RULES, _clock, single_part=False, skeleton=skeleton)
    except Exception as exc:
        return type(exc).__name__


def _assert_same(raw: bytes) -> None:
    fast = mime.parse_skeleton(raw, email_policy.for_one_message())
    if fast is not None:
        assert _shape(fast) == _shape(_parse_whole(raw, email_policy.for_one_message()))
    assert _facts(raw, skeleton=True) == _facts(raw, skeleton=False)


def _parametrized_bytes(module: ModuleType) -> Iterator[bytes]:
    """Every bytes value in the module's parametrized tests (and its MESSAGES, if any)."""
    def found(value: object) -> Iterator[bytes]:
        if isinstance(value, bytes) and value:
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from found(item)
        elif hasattr(value, "values") and callable(value.values):
            for item in value.values():
                yield from found(item)
        elif type(value).__name__ == "ParameterSet":
            yield from found(value.values)  # type: ignore[attr-defined]

    for name in dir(module):
        item = getattr(module, name)
        if name.isupper():
            yield from found(item)
        for mark in getattr(item, "pytestmark", ()):
            if mark.name == "parametrize":
                yield from found(mark.args[1])


MIME_TESTS = list(dict.fromkeys(
    raw for module in (test_content, test_content_properties, test_content_single_part,
                       test_header_reading, test_portal_parts)
    for raw in _parametrized_bytes(module)))
MULTIPART = b"Content-Type: multipart/mixed; boundary=b1\r\n"


def test_the_corpora_hold_multipart_messages_read_from_their_skeleton() -> None:
    """The comparison below is not empty: most of these messages take the skeleton."""
    assert len(MIME_TESTS) > 20
    assert sum(mime.parse_skeleton(raw, email_policy.for_one_message()) is not None
               for raw in MIME_TESTS) > 10


@pytest.mark.parametrize("raw", MIME_TESTS)
def test_the_mime_tests_messages_read_alike(raw: bytes) -> None:
    _assert_same(raw)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_agency_corpus_reads_alike(seed: int) -> None:
    samples = corpus(seed, negatives=60, positives=30)
    assert any(mime.parse_skeleton(s.raw, email_policy.for_one_message()) is not None
               for s in samples)
    for sample in samples:
        _assert_same(sample.raw)


def test_the_header_test_is_the_parsers() -> None:
    assert mime._HEADER_LINE.pattern == email.feedparser.headerRE.pattern  # type: ignore[attr-defined]


def test_the_delivery_report_takes_the_full_parse() -> None:
    raw = (b"From: a@b.example\r\nContent-Type: multipart/report; boundary=r\r\n\r\n--r\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
           b"Final-Recipient: rfc822; y\r\nnot a field\r\n\r\nAction: failed\r\n--r--\r\n")
    assert mime.parse_skeleton(raw, email_policy.for_one_message()) is None
    _assert_same(raw)


@pytest.mark.parametrize(("body", "skeleton"), [
    (b"one\r\ntwo\r\n", True),
    (b"one\rtwo\n\r\n", False),  # as many CRs as LFs, but a bare CR and a bare LF
    (b"one\r\r\n\n", False),
    (b"one\r\ntwo\r", False),
])
@pytest.mark.parametrize("engine", scan.available())
def test_only_a_message_crlf_throughout_is_read_from_its_skeleton(body: bytes, skeleton: bool,
                                                                  engine: str) -> None:
    """Under each scan engine (`scan.crlf_throughout` says which messages are CRLF throughout)."""
    raw = b"From: a@b.example\r\n" + MULTIPART + b"\r\n--b1\r\n\r\n" + body + b"--b1--\r\n"
    with scan.use_engine(engine):
        assert (mime.parse_skeleton(raw, email_policy.for_one_message()) is not None) == skeleton
        _assert_same(raw)


# --- generated messages -------------------------------------------------------------------

BODY_LINES = [
    b"", b"Plain text of the letter.", b"Time: 14:30, ref SR/2025/0481", b"--", b"-- ",
    b"--b1", b"--b1--", b"--b1 ", b"--b2", b"--b2--", b"--b1x", b"From here on",
    b"From nobody", b" folded-looking", b"\tindented", b"Content-Type: text/html",
    b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=", b"QUJD", b"caf\xc3\xa9 8-bit \xff",
    b"ZC12C00123 born 01/02/2010 NHS 943 476 5919", b"=3D=20soft=", b"a:b", b":",
]
PART_HEADERS = [
    b"Content-Type: text/plain", b"Content-Type: text/html; charset=utf-8",
    b"Content-Type: text/csv; name=\"a.csv\"", b"Content-Disposition: attachment; filename=a.txt",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Transfer-Encoding: 7bit", b"Content-Type: application/pdf",
    b"Content-Type: message/rfc822", b"Content-Type: multipart/mixed; boundary=b2",
    b"Content-Type: multipart/alternative; boundary=\"b1\"", b"Subject: inner ZC12C00123",
    b"From: Inner <in@example.org>", b" folded", b"not a header", b"From x",
]


@st.composite
def _parts(draw: st.DrawFn, depth: int = 0) -> bytes:
    headers = draw(st.lists(st.sampled_from(PART_HEADERS), max_size=3))
    lines = draw(st.lists(st.sampled_from(BODY_LINES), max_size=8))
    body = b"\r\n".join(lines)
    if depth < 2 and draw(st.booleans()):
        boundary = draw(st.sampled_from([b"b1", b"b2"]))
        headers.append(b"Content-Type: multipart/mixed; boundary=" + boundary)
        inner = draw(st.lists(_parts(depth + 1), max_size=3))
        body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in inner)
        if draw(st.booleans()):
            body += b"--" + boundary + b"--\r\n" + b"\r\n".join(lines)
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    top = b"From: Jo <jo.smith@cafcass.gov.uk>\r\nSubject: s\r\n"
    raw = top + MULTIPART + b"\r\n" + b"\r\n".join(draw(st.lists(st.sampled_from(BODY_LINES),
                                                                  max_size=3)))
    for part in draw(st.lists(_parts(), min_size=1, max_size=4)):
        raw += b"\r\n--b1\r\n" + part
    if draw(st.booleans()):
        raw += b"\r\n--b1--\r\n" + draw(st.sampled_from([b"", b"epilogue\r\n", b"--b1\r\n"]))
    else:
        raw += b"\r\n"
    odd = draw(st.sampled_from([b"", b"", b"", b"", b"\r", b"\n", b"\r\r\n"]))
    if odd:  # a bare CR or LF somewhere: the full parse
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + odd + raw[at:]
    return raw


@SETTINGS
@given(_messages())
def test_generated_multipart_messages_read_alike(raw: bytes) -> None:
    _assert_same(raw)



@SETTINGS
@given(_messages())
def test_the_portal_numbers_generated_messages_as_the_full_parse(raw: bytes) -> None:
    """transports/portal.py numbers a copy's parts from the same skeleton (without bodies)."""
    assert attachment_parts(raw) == read_message(raw).attachment_parts()


# -- decoding a part's body (policies.mime.decoded_payload) ----------------------------------

_BASE64_LINES = st.lists(st.sampled_from([
    "QUJD", "QUJDRA==", "QUJDREU=", "QQ==", "QUI=", "QUJDREVG", "", "=", "==", "===", "Q", "QU",
    "QUJ", "Q=Q=", "QUJD!", "QU JD", "QUJD\t", "\u00e9QUJD", "QUJD\udce9", "-", "QUJD===",
]), max_size=8)


@SETTINGS
@given(_BASE64_LINES, st.sampled_from(["\r\n", "\n", "\r", ""]),
       st.sampled_from(["base64", "BASE64", " base64", "7bit", "quoted-printable"]))
def test_a_body_decodes_as_the_stdlib_decodes_it(lines: list[str], end: str, cte: str) -> None:
    """`decoded_payload` gives what `get_payload(decode=True)` gives, with the same defects,
    for valid and broken base64 (padding, stray characters, 8-bit text) and other encodings."""
    def part() -> Message:
        made = Message(policy=email_policy.for_one_message())
        made["Content-Transfer-Encoding"] = cte
        made.set_payload(end.join(lines) + end)
        return made

    def outcome(read: Any) -> object:
        try:
            return read()
        except UnicodeError as exc:  # 8-bit text beside surrogates: the stdlib's own error
            return type(exc)

    ours, theirs = part(), part()
    assert outcome(lambda: mime.decoded_payload(ours)) == outcome(
        lambda: theirs.get_payload(decode=True))
    assert mime.defect_codes(ours) == mime.defect_codes(theirs)  # type: ignore[arg-type]
