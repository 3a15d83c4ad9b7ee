"""`attachment_parts` numbers a copy's attachments exactly as `read_message` does (the portal
stores the numbers at delivery and serves attachments by them when the copy is read), while
parsing only the message's skeleton."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest

from tests.portalweb import ATTACHMENT, protected_message
from transports.portal import attachment_parts, read_message


def _forwarded() -> bytes:
    outer = EmailMessage(policy=SMTP_POLICY)
    outer["Subject"] = "Fwd"
    outer.set_content("See below.\nNote: the report is attached.\n--\nJo\n")
    inner = EmailMessage(policy=SMTP_POLICY)
    inner["Subject"] = "Inner"
    inner.set_content("Inner text")
    inner.add_attachment(ATTACHMENT, maintype="application", subtype="pdf", filename="a.pdf")
    outer.add_attachment(inner)
    outer.add_attachment(b"x" * 5000, maintype="image", subtype="png", filename="i.png")
    return outer.as_bytes()


RAW = (
    b"Subject: raw\r\nContent-Type: multipart/alternative; boundary=\"q\"\r\n\r\n"
    b"preamble line\r\n--q\r\nContent-Type: text/plain\r\n\r\nFrom here: on\r\n"
    b"--not the boundary\r\n\t folded-looking body\r\n--q\r\nContent-Type: text/html\r\n\r\n"
    b"<p>x</p>\r\n--q\r\nContent-Type: application/pdf\r\nbroken header line\r\n"
    b"Content-Disposition: attachment\r\n\r\nQUJD\r\n--q--\r\nepilogue\r\n"
)

MESSAGES = {
    "protected": protected_message(),
    "with html": protected_message(html="<p>Hello</p>"),
    "forwarded message": _forwarded(),
    "hand-written, malformed": RAW,
    "no header": b"\r\nbody only\r\n",
    "single part": b"Subject: s\r\n\r\nJust text: with a colon\r\n",
    "bare LF (full parse)": RAW.replace(b"\r\n", b"\n"),
    "html only": b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>x</p>\r\n",
    "text as attachment": b"Content-Type: text/plain\r\nContent-Disposition: attachment\r\n"
                          b"\r\nx\r\n",
    "a PDF alone": b"Content-Type: application/pdf\r\n\r\nJVBERi0=\r\n",
    "two types": b"Content-Type: text/plain\r\nContent-Type: image/png\r\n\r\nx\r\n",
    "folded type": b"Content-Type:\r\n text/plain\r\n\r\nx\r\n",
    "type after a broken line": b"Subject: s\r\nbroken\r\nContent-Type: image/png\r\n\r\nx\r\n",
}


@pytest.mark.parametrize("data", MESSAGES.values(), ids=MESSAGES.keys())
def test_the_numbers_are_those_of_the_full_parse(data: bytes) -> None:
    """The same part numbers as `read_message(data).attachment_parts()`."""
    assert attachment_parts(data) == read_message(data).attachment_parts()
