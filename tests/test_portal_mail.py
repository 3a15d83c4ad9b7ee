"""The portal's mails written directly (`mail_bytes`) are byte for byte what the email package
writes (`_mail(...).as_bytes()`), and anything that needs quoting, encoding or folding goes
through the email package."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import transports.portal as portal

NOW = datetime(2026, 12, 6, 23, 6, 18, tzinfo=UTC)
BODY = "jo.smith@cafcass.gov.uk at Cafcass has sent you a secure message.\n\nOpen it here:\n" \
       "https://casegate.example/portal/abc_DEF-123\n\nThe end.\n"
CASES = {
    "notification": ("jo.smith@cafcass.gov.uk", "mum@example.org",
                     "Secure message from jo.smith@cafcass.gov.uk", BODY),
    "odd but plain address": ("o'neil+x@cafcass.gov.uk", "a.b-c@sub.example.org", "Hi", BODY),
    "quoted local part": ('"jo smith"@cafcass.gov.uk', "mum@example.org", "Hi", BODY),
    "double dot": ("jo..smith@cafcass.gov.uk", "mum@example.org", "Hi", BODY),
    "non-ASCII subject": ("jo@cafcass.gov.uk", "mum@example.org", "Re: Zoë's report", BODY),
    "encoded-word lookalike": ("jo@cafcass.gov.uk", "mum@example.org", "=?utf-8?q?x?=", BODY),
    "long subject": ("jo@cafcass.gov.uk", "mum@example.org", "Secure message " * 8, BODY),
    "spaces in subject": ("jo@cafcass.gov.uk", "mum@example.org", " two  spaces ", BODY),
    "long body line": ("jo@cafcass.gov.uk", "mum@example.org", "Hi", "x" * 79 + "\n"),
    "non-ASCII body": ("jo@cafcass.gov.uk", "mum@example.org", "Hi", "Zoë\n"),
    "no final newline": ("jo@cafcass.gov.uk", "mum@example.org", "Hi", "one\ntwo"),
    "empty body": ("jo@cafcass.gov.uk", "mum@example.org", "Hi", ""),
    "international address": ("jo@cafcass.gov.uk", "zoë@example.org", "Hi", BODY),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_written_directly_or_not_the_bytes_are_the_email_packages(
        case: tuple[str, str, str, str]) -> None:
    """Same bytes as `_mail(...).as_bytes()` (the Message-ID fixed for both), or the same
    error."""
    sender, to, subject, body = case
    try:
        expected = portal._mail(sender, to, subject, body, NOW,
                                "<fixed@cafcass.gov.uk>").as_bytes()
    except ValueError as refused:  # an address the email package will not write
        with pytest.raises(type(refused)):
            portal.mail_bytes(sender, to, subject, body, NOW, "<fixed@cafcass.gov.uk>")
        return
    assert portal.mail_bytes(sender, to, subject, body, NOW, "<fixed@cafcass.gov.uk>") == expected


def test_a_line_break_in_a_header_value_is_refused() -> None:
    """As `_mail` does, whichever way the mail would be written."""
    with pytest.raises(ValueError, match="line break"):
        portal.mail_bytes("jo@cafcass.gov.uk", "mum@example.org", "Hi\r\nBcc: x@y.z", BODY, NOW)
