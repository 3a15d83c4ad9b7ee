"""The classifier's email policy: the stdlib's header parsing, done once per header per message."""

from __future__ import annotations

import email.parser
import email.policy
from email.message import EmailMessage

import pytest

from policies.email_policy import MAX_REMEMBERED_VALUE, MAX_SHARED_VALUE, for_one_message

TRICKY = [
    b"From: =?utf-8?q?Jo_Sm=C3=AFth?= <jo@cafcass.gov.uk>\r\n",
    b"To: a@example.org, \"B, the second\" <b@example.org>, group: c@example.org;\r\n",
    b"To: <a@example.org\r\n",  # a defect the parser reports
    b"Subject: =?utf-8?b?bGluZQpicmVhaw==?=\r\n",  # decodes to a value with a line feed
    b"Content-Type: multipart/mixed; boundary=\"x\"; charset*=utf-8''%C3%A9\r\n",
    b"Subject: folded\r\n over two lines\r\n",
    b"X-Classification: OFFICIAL-SENSITIVE\r\n",
]


def parse(raw: bytes, policy: email.policy.EmailPolicy[EmailMessage]) -> EmailMessage:
    message = email.parser.BytesParser(policy=policy).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def described(defects: tuple[Exception, ...]) -> list[tuple[type, str]]:
    return [(type(d), str(d)) for d in defects]


@pytest.mark.parametrize("header", TRICKY)
def test_headers_read_as_with_the_default_policy(header: bytes) -> None:
    """Each header's value, class, defects and addresses are those policy.default gives."""
    raw = header + b"\r\nbody\r\n"
    plain, remembering = parse(raw, email.policy.default), parse(raw, for_one_message())
    for (name, expected), (_, got) in zip(plain.items(), remembering.items(), strict=True):
        # The registry makes each header's class on the fly: the same class, not the same object.
        assert (str(got), type(got).__mro__[1:], described(got.defects)) == (
            str(expected), type(expected).__mro__[1:], described(expected.defects))
        assert getattr(got, "addresses", None) == getattr(expected, "addresses", None), name
    assert remembering.get_content_type() == plain.get_content_type()
    assert remembering.get_param("charset") == plain.get_param("charset")


def test_a_header_is_parsed_once_per_message_and_not_shared() -> None:
    """Reading a header twice gives the same object; another message's policy parses anew."""
    raw = b"Subject: Court report\r\n\r\nbody\r\n"
    first, second = parse(raw, for_one_message()), parse(raw, for_one_message())
    assert first["Subject"] is first["Subject"]
    assert second["Subject"] is not first["Subject"]
    assert str(second["Subject"]) == str(first["Subject"])


def test_short_mime_headers_are_parsed_once_for_every_message() -> None:
    """"text/plain; charset=us-ascii" is parsed once however many messages carry it; a long
    value (a multipart boundary of 200 characters) is parsed per message."""
    raw = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nbody\r\n"
    first, second = parse(raw, for_one_message()), parse(raw, for_one_message())
    assert second["Content-Type"] is first["Content-Type"]
    assert second.get_param("charset") == "us-ascii"
    long = b'Content-Type: multipart/mixed; boundary="' + b"b" * MAX_SHARED_VALUE + b'"\r\n\r\n'
    first, second = parse(long, for_one_message()), parse(long, for_one_message())
    assert first["Content-Type"] is first["Content-Type"]
    assert second["Content-Type"] is not first["Content-Type"]


def test_long_values_are_not_remembered() -> None:
    """A value longer than one SMTP line is parsed on every read (the memory stays bounded)."""
    raw = b"Subject: " + b"x " * MAX_REMEMBERED_VALUE + b"\r\n\r\nbody\r\n"
    message = parse(raw, for_one_message())
    assert message["Subject"] is not message["Subject"]
    assert message["Subject"] == parse(raw, email.policy.default)["Subject"]
