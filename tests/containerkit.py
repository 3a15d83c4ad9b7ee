"""Containers made in code for the tests: zip archives (honest and hostile), messages saved as
.eml files, messages forwarded inside messages, Office documents with embedded objects.

Every builder writes real bytes with the stdlib (zipfile, email) or tests.olekit; hostile
archives are honest ones with fields patched afterwards, as an attacker's tool would write them.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Sequence

from pypdf import PdfWriter

from tests.fixtures_content import build_message, make_docx
from tests.olekit import make_cfb

Files = Sequence[tuple[str, bytes]]


def make_zip(files: Files, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return out.getvalue()


def nested_zip(levels: int, innermost: Files) -> bytes:
    """`innermost` zipped, that zip zipped, ... `levels` archives in all."""
    data = make_zip(innermost)
    for level in range(levels - 1):
        data = make_zip([(f"level{level}.zip", data)])
    return data


def wide_zip(width: int, levels: int, leaf: bytes = b"page text " * 100) -> bytes:
    """42.zip in small: `width` copies of the archive below at each of `levels` levels."""
    data = make_zip([(f"{i}.txt", leaf) for i in range(width)])
    for level in range(levels - 1):
        data = make_zip([(f"{level}-{i}.zip", data) for i in range(width)])
    return data


def _patch(data: bytes, signature: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Set a field of every local header or central directory entry (found by signature)."""
    patched = bytearray(data)
    at = patched.find(signature)
    while at != -1:
        struct.pack_into(fmt, patched, at + offset, value)
        at = patched.find(signature, at + 4)
    return bytes(patched)


_LOCAL, _CENTRAL = b"PK\x03\x04", b"PK\x01\x02"


def encrypted_zip(files: Files) -> bytes:
    """A zip whose entries say they are encrypted (general purpose flag bit 0), as a password-
    protected archive from any zip tool does; the bytes behind them do not matter."""
    data = make_zip(files, zipfile.ZIP_STORED)
    data = _patch(data, _LOCAL, 6, "<H", 0x1)
    return _patch(data, _CENTRAL, 8, "<H", 0x1)


def declared_size_zip(declared: int, actual: bytes = b"small") -> bytes:
    """A zip whose one entry declares `declared` bytes uncompressed (central directory and
    local header) while holding `actual`."""
    data = make_zip([("big.txt", actual)])
    data = _patch(data, _LOCAL, 22, "<I", declared)
    return _patch(data, _CENTRAL, 24, "<I", declared)


def deflate_bomb(size: int) -> bytes:
    """A zip of one file of `size` zero bytes, honestly declared, compressed about 1000:1."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("zeros.txt", "w", force_zip64=True) as stream:
        chunk = b"\x00" * (1 << 20)
        for _ in range(size // len(chunk)):
            stream.write(chunk)
    return out.getvalue()


def lying_bomb(declared: int, actual: int) -> bytes:
    """A zip of one deflated file that inflates to `actual` bytes but declares `declared`."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = compressor.compress(b"\x00" * actual) + compressor.flush()
    data = make_zip([("zeros.txt", b"\x00" * declared)])  # the right layout, then swapped
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.infolist()[0]
    header_end = info.header_offset + 30 + len(info.filename) + len(info.extra)
    old_end = header_end + info.compress_size
    swapped = data[:header_end] + body + data[old_end:]
    swapped = _patch(swapped, _LOCAL, 18, "<I", len(body))
    grown = len(body) - info.compress_size
    swapped = _patch(swapped, _CENTRAL, 20, "<I", len(body))
    # The end of central directory record gives the directory's offset: it moved by `grown`.
    end = swapped.rfind(b"PK\x05\x06")
    (offset,) = struct.unpack_from("<I", swapped, end + 16)
    patched = bytearray(swapped)
    struct.pack_into("<I", patched, end + 16, offset + grown)
    return bytes(patched)


def encrypted_ooxml() -> bytes:
    """A password-protected Word document as Office writes it: an OLE2 file holding
    EncryptionInfo and EncryptedPackage streams ([MS-OFFCRYPTO])."""
    return make_cfb({"EncryptionInfo": b"\x04\x00\x04\x00\x40\x00\x00\x00" + b"\x00" * 200,
                     "EncryptedPackage": struct.pack("<Q", 5000) + b"\x5a" * 5008})


def odt_with(parts: dict[str, bytes], text: str = "Cover note") -> bytes:
    """An OpenDocument text with `parts` added ("Object 1" for an OLE object, "Object 2/..."
    for an embedded ODF object)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", _odf_content(text))
        for name, data in parts.items():
            archive.writestr(name, data)
    return out.getvalue()


def odf_object(text: str) -> bytes:
    """The content.xml of an embedded ODF object (a chart, a formula) holding `text`."""
    return _odf_content(text).encode()


def _odf_content(text: str) -> str:
    return ('<?xml version="1.0"?><office:document-content '
            'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
            'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0">'
            f"<office:body><office:text><text:p>{text}</text:p></office:text></office:body>"
            "</office:document-content>")


def pdf_with_zeros_attached(size: int) -> bytes:
    """A one-page PDF with a file of `size` zero bytes attached, compressed (a PDF bomb)."""
    writer = PdfWriter()
    writer.add_blank_page(width=100, height=100)
    stored = writer.add_attachment("zeros.txt", b"\x00" * size).pdf_object["/EF"].raw_get("/F")
    writer._objects[stored.idnum - 1] = stored.get_object().flate_encode()
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_with(parts: dict[str, bytes], text: str = "Cover note") -> bytes:
    """A DOCX with `parts` added (word/embeddings/..., word/media/...)."""
    return make_docx([[text]], extra_parts=parts)


# --- messages inside messages -------------------------------------------------------------

_HEAD = ("From: Jo Bloggs <jo.bloggs@cafcass.gov.uk>\r\nTo: someone@example.org\r\n"
         "MIME-Version: 1.0\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n")


def forwarded_chain(levels: int, innermost: bytes) -> bytes:
    """`innermost` (a whole message) forwarded as an attachment (message/rfc822), that message
    forwarded again, ... `levels` times."""
    data = innermost
    for level in range(levels):
        boundary = f"fw{level}"
        data = (f"{_HEAD}Subject: FW: level {level}\r\n"
                f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
                f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
                f"--{boundary}\r\nContent-Type: message/rfc822\r\n"
                "Content-Disposition: attachment\r\n\r\n").encode() + data + (
                f"\r\n--{boundary}--\r\n").encode()
    return data


def eml_chain(levels: int, innermost: bytes) -> bytes:
    """`innermost` saved as a .eml file and attached (application/octet-stream, 8bit, so the
    size grows only linearly), that message saved and attached, ... `levels` times."""
    data = innermost
    for level in range(levels):
        boundary = f"eml{level}"
        data = (f"{_HEAD}Subject: level {level}\r\n"
                f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
                f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nAttached.\r\n"
                f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                "Content-Transfer-Encoding: 8bit\r\n"
                f"Content-Disposition: attachment; filename=\"level{level}.eml\"\r\n\r\n"
                ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return data


def inner_message(body: str = "Please see attached.", subject: str = "Inner",
                  attachments: Sequence[tuple[str, str, bytes]] = ()) -> bytes:
    return build_message(body, subject=subject, attachments=attachments)
