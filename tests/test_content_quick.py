"""A quick reading (`classify_message(..., quick=True)`): the gateway decides a small message
on its event loop unless it holds a file that needs a reader of its own.

Where a quick reading answers, its answer is the full reading's; where it cannot, it says so
(TakesLonger) before reading anything, and never answers wrongly or hides the file.
"""

from __future__ import annotations

import time

import pytest

from policies.content import classify_message
from policies.errors import TakesLonger
from tests.containerkit import make_zip
from tests.fixtures_content import (
    OLE2_HEADER,
    PNG_HEADER,
    TOP_HEADERS,
    build_message,
    default_rules,
    make_docx,
    make_pdf,
    multipart,
)

RULES = default_rules()
CSV = b"date,phone,amount\r\n14/03/2025,020 7946 0018,1200.50\r\n" * 20
EML = build_message("An attached message.", subject="Inner")

QUICK = [
    ("no attachment", build_message("Hello, about case FD24P01234.")),
    ("a CSV table", build_message("See the table.", attachments=[("t.csv", "text/csv", CSV)])),
    ("an HTML body", build_message(None, html="<p>Case FD24P01234</p>")),
    ("an HTML file", build_message("x", attachments=[("a.html", "text/html", b"<p>hi</p>")])),
    ("an image", build_message("x", attachments=[("p.png", "image/png", PNG_HEADER)])),
    ("an empty file", build_message("x", attachments=[("e.txt", "text/plain", b"")])),
    ("a file of no known type",
     build_message("x", attachments=[("b.bin", "application/octet-stream", bytes(range(256)))])),
]
SLOW = [
    ("a PDF", "application/pdf", "r.pdf", make_pdf(["Case FD24P01234"])),
    ("a Word document", "application/vnd.openxmlformats-officedocument."
     "wordprocessingml.document", "r.docx", make_docx()),
    ("a zip archive", "application/zip", "r.zip", make_zip([("a.txt", b"hello")])),
    ("a message saved as a file", "application/octet-stream", "m.eml", EML),
    ("an OLE2 file", "application/msword", "r.doc", OLE2_HEADER),
    ("a PDF declared as CSV", "text/csv", "t.csv", make_pdf(["Case FD24P01234"])),
]


@pytest.mark.parametrize(("what", "raw"), QUICK, ids=[q[0] for q in QUICK])
def test_a_quick_reading_answers_as_the_full_one(what: str, raw: bytes) -> None:
    quick = classify_message(raw, RULES, time.monotonic, quick=True)
    assert quick == classify_message(raw, RULES, time.monotonic), what


@pytest.mark.parametrize(("what", "declared", "name", "data"), SLOW, ids=[s[0] for s in SLOW])
def test_a_file_that_needs_its_own_reader_takes_longer(what: str, declared: str, name: str,
                                                       data: bytes) -> None:
    """By what the file is, not what it is called: a PDF sent as text/csv is still a PDF."""
    raw = build_message("See attached.", attachments=[(name, declared, data)])
    with pytest.raises(TakesLonger):
        classify_message(raw, RULES, time.monotonic, quick=True)
    full = classify_message(raw, RULES, time.monotonic)
    assert full.attachments, what  # the full reading sees the file


def forwarding(inner: bytes) -> bytes:
    return TOP_HEADERS + multipart("b", [
        b"Content-Type: text/plain\r\n\r\nForwarded below.",
        b"Content-Type: message/rfc822\r\n\r\n" + inner])


def test_a_forwarded_message_is_read_quickly_unless_it_holds_such_a_file() -> None:
    """A message/rfc822 part is MIME structure, walked like the message itself."""
    forwarded = forwarding(build_message("About case FD24P01234.", subject="Inner"))
    quick = classify_message(forwarded, RULES, time.monotonic, quick=True)
    assert quick == classify_message(forwarded, RULES, time.monotonic)
    assert quick.case_numbers == ("FD24P01234",)
    holding = forwarding(build_message(
        "x", attachments=[("r.pdf", "application/pdf", make_pdf(["x"]))]))
    with pytest.raises(TakesLonger):
        classify_message(holding, RULES, time.monotonic, quick=True)


def test_a_file_behind_a_quick_one_still_takes_longer() -> None:
    """The first file read quickly does not let a later one through."""
    raw = build_message("x", attachments=[("t.csv", "text/csv", CSV),
                                          ("r.pdf", "application/pdf", make_pdf(["x"]))])
    with pytest.raises(TakesLonger):
        classify_message(raw, RULES, time.monotonic, quick=True)


def test_a_malformed_message_is_answered_quickly_and_fails_closed() -> None:
    """TakesLonger is the only thing that escapes; a parser's failure stays the closed answer."""
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding:" \
          b" base64\r\n\r\n!!!!\r\n--b"
    quick = classify_message(raw, RULES, time.monotonic, quick=True)
    assert quick == classify_message(raw, RULES, time.monotonic)
    assert quick.malformed
