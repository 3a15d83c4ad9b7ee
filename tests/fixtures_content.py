"""Builders for the content tests: messages, PDFs and office documents made in code.

Nothing here is a stand-in for our own code: these are real files and real messages, built
with pypdf, zipfile and the stdlib email package, for `classify_message` to read.
"""

from __future__ import annotations

import io
import tomllib
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from email.message import EmailMessage
from email.policy import SMTP
from importlib import resources

from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from policies.content_rules import ContentRules


def default_rules(**limits: float) -> ContentRules:
    """The packaged defaults (policies/data/content.toml), with some limits changed."""
    text = resources.files("policies").joinpath("data/content.toml").read_text("utf-8")
    rules = ContentRules.from_table(tomllib.loads(text)["content"], "content.toml")
    return replace(rules, limits=replace(rules.limits, **limits)) if limits else rules


class SteppingClock:
    """A clock that moves on by `step` seconds every time it is read."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: Sequence[str], password: str | None = None, padding: int = 0,
             embedded: bytes | None = None) -> bytes:
    """A PDF with one page per string, each drawn in Helvetica; optionally encrypted.

    `padding` adds that many bytes of comment-free filler operators to each page's content,
    to make a large file whose text is still the given strings; `embedded` is attached to the
    PDF as a file (a PDF portfolio).
    """
    writer = PdfWriter()
    font = DictionaryObject({
        NameObject("/Type"): NameObject("/Font"),
        NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    })
    font_ref = writer._add_object(font)
    for text in pages:
        page = writer.add_blank_page(width=595, height=842)
        lines = "".join(f"({_pdf_escape(line)}) Tj 0 -14 Td " for line in text.split("\n"))
        filler = "q Q " * (padding // 4)
        stream = DecodedStreamObject()
        stream.set_data(f"{filler}BT /F1 11 Tf 72 770 Td {lines}ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject({
            NameObject("/Font"): DictionaryObject({NameObject("/F1"): font_ref}),
        })
    if embedded is not None:
        writer.add_attachment("inner.docx", embedded)
    if password is not None:
        writer.encrypt(user_password=password, owner_password=password + "-owner",
                       algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def docx_xml(paragraphs: Iterable[Sequence[str]]) -> str:
    """word/document.xml with one paragraph per sequence of runs."""
    body = "".join(
        "<w:p>" + "".join(f"<w:r><w:t>{run}</w:t></w:r>" for run in runs) + "</w:p>"
        for runs in paragraphs
    )
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            f'<w:document xmlns:w="{_W}"><w:body>{body}</w:body></w:document>')


def make_docx(paragraphs: Iterable[Sequence[str]] = (("Hello",),),
              document_xml: str | bytes | None = None,
              extra_parts: Mapping[str, bytes] | None = None) -> bytes:
    """A minimal DOCX (ZIP of OOXML parts); each paragraph is a sequence of runs.

    `extra_parts` adds more entries, e.g. word/media/image1.png or word/embeddings/x.bin.
    """
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        archive.writestr("word/document.xml",
                         document_xml if document_xml is not None else docx_xml(paragraphs))
        for name, data in (extra_parts or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


def make_zip_bomb_docx(decompressed_bytes: int) -> bytes:
    """A DOCX whose document.xml inflates to `decompressed_bytes` from a few kilobytes."""
    head = f'<w:document xmlns:w="{_W}"><w:body><w:p><w:r><w:t>'.encode()
    filler = b" " * decompressed_bytes
    return make_docx(document_xml=head + filler + b"</w:t></w:r></w:p></w:body></w:document>")


def make_odt(text: str) -> bytes:
    """A minimal OpenDocument text: the mimetype entry first, then content.xml."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr(
            "content.xml",
            '<?xml version="1.0"?><office:document-content '
            'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
            'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0">'
            f"<office:body><office:text><text:p>{text}</text:p></office:text></office:body>"
            "</office:document-content>",
        )
    return out.getvalue()


OLE2_HEADER = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504
PNG_HEADER = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40


def build_message(
    body: str | None = "Hello,\n\nPlease see below.\n",
    subject: str = "Update",
    attachments: Sequence[tuple[str, str, bytes]] = (),
    headers: Sequence[tuple[str, str]] = (),
    html: str | None = None,
    sender: str = '"Jo Bloggs" <jo.bloggs@cafcass.gov.uk>',
) -> bytes:
    """An RFC 5322 message with CRLF line endings, as an SMTP client would send it.

    `attachments` are (filename, content type, bytes); `html` adds an HTML alternative (or
    makes the only body when `body` is None).
    """
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = "someone@example.org"
    message["Subject"] = subject
    for name, value in headers:
        message[name] = value
    if body is not None:
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


def multipart(boundary: str, parts: Sequence[bytes], content_type: str = "multipart/mixed",
              preamble: bytes = b"") -> bytes:
    """A multipart entity written by hand, for nesting and malformed-structure tests."""
    out = [f"Content-Type: {content_type}; boundary=\"{boundary}\"\r\n\r\n".encode(), preamble]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode() + part + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


TOP_HEADERS = (b"From: Jo Bloggs <jo.bloggs@cafcass.gov.uk>\r\nTo: someone@example.org\r\n"
               b"Subject: Update\r\nMIME-Version: 1.0\r\n")
