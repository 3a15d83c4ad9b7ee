"""What an attachment really is, from its bytes: the name and Content-Type are only claims.

A DOCX renamed `.pdf` is still an editable document (RRP 4.3), and a PDF renamed `.txt` still
needs its text extracted. Detection reads signatures ("magic bytes") and, for ZIP containers,
the names of the parts inside, which is what tells OOXML and ODF documents apart.
"""

from __future__ import annotations

import io
import zipfile

# Detected types, as they appear in model.Attachment.detected_type.
PDF = "pdf"
DOCX = "docx"
XLSX = "xlsx"
PPTX = "pptx"
ODT = "odt"
ODS = "ods"
ODP = "odp"
ZIP = "zip"
OLE2 = "ole2"  # refined to doc/xls/ppt/msg below when the name agrees
RTF = "rtf"
TEXT = "text"
HTML = "html"
IMAGE_TYPES = ("png", "jpeg", "gif", "tiff", "bmp", "webp")
UNKNOWN = "unknown"
EMPTY = "empty"

# Signatures at offset 0, most specific first.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", OLE2),
    (b"{\\rtf", RTF),
    (b"PK\x03\x04", ZIP),
    (b"PK\x05\x06", ZIP),  # empty archive
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
)
_PDF_SEARCH_WINDOW = 1024  # readers accept "%PDF-" anywhere in the first kilobyte

# Inside a ZIP: which part marks which document type.
_OOXML_MAIN_PARTS = (
    ("word/document.xml", DOCX),
    ("xl/workbook.xml", XLSX),
    ("ppt/presentation.xml", PPTX),
)
_ODF_MIMETYPES = {
    b"application/vnd.oasis.opendocument.text": ODT,
    b"application/vnd.oasis.opendocument.spreadsheet": ODS,
    b"application/vnd.oasis.opendocument.presentation": ODP,
}
# OLE2 is one container for several formats; the name's extension picks which, if it agrees.
_OLE2_EXTENSIONS = {"doc": "doc", "dot": "doc", "xls": "xls", "ppt": "ppt", "msg": "msg"}
_TEXT_SAMPLE = 8192


def detect_type(data: bytes, filename: str = "") -> str:
    """The real type of an attachment's bytes; `filename` only refines an OLE2 container."""
    if not data:
        return EMPTY
    kind = _by_signature(data)
    if kind == ZIP:
        return _zip_kind(data)
    if kind == OLE2:
        extension = filename.rpartition(".")[2].lower() if "." in filename else ""
        return _OLE2_EXTENSIONS.get(extension, "doc")
    if kind != UNKNOWN:
        return kind
    if _looks_like_text(data):
        return HTML if _looks_like_html(data) else TEXT
    return UNKNOWN


def _by_signature(data: bytes) -> str:
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:12].startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if b"%PDF-" in data[:_PDF_SEARCH_WINDOW]:
        return PDF
    return UNKNOWN


def _zip_kind(data: bytes) -> str:
    """OOXML and ODF documents are ZIP archives; the parts inside say which."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            for part, kind in _OOXML_MAIN_PARTS:
                if part in names:
                    return kind
            if "mimetype" in names:
                info = archive.getinfo("mimetype")
                if info.file_size <= 100:
                    return _ODF_MIMETYPES.get(archive.read(info).strip(), ZIP)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            NotImplementedError, RuntimeError):
        return ZIP
    return ZIP


def _looks_like_text(data: bytes) -> bool:
    """No NUL bytes and decodable as UTF-8 (or overwhelmingly printable Latin-1)."""
    sample = data[:_TEXT_SAMPLE]
    if not sample or b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 4:  # a multi-byte character cut by the sample
            return True
    controls = sum(1 for b in sample if b < 32 and b not in b"\t\r\n\f")
    return controls * 20 < len(sample)


def _looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in head


def is_image(kind: str) -> bool:
    """Whether a detected type is a picture (no text to read without OCR)."""
    return kind in IMAGE_TYPES
