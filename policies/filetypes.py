"""What an attachment really is, from its bytes: the name and Content-Type are only claims.

A DOCX renamed `.pdf` is still an editable document (RRP 4.3), and a PDF renamed `.txt` still
needs its text extracted. Detection reads signatures ("magic bytes") and, for ZIP containers,
the names of the parts inside, which is what tells OOXML and ODF documents apart; for OLE2
compound files (legacy Office, Outlook .msg, embedded objects), the streams inside.
"""

from __future__ import annotations

import io
import re
import zipfile

import olefile

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
# Containers (DESIGN ruling 22): opened, and what they hold classified (policies.containers).
EML = "eml"  # an RFC 5322 message saved as a file
MSG = "msg"  # an Outlook message (OLE2)
OLE_PACKAGE = "ole-package"  # an embedded OLE object carrying a file (Package, CONTENTS)
# Archives casegate does not open: they cannot be checked, so they count as unopened.
UNOPENABLE_ARCHIVES = ("7z", "rar", "gzip", "bzip2", "xz", "zstd", "cab", "tar")

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
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"MSCF\x00\x00\x00\x00", "cab"),
)
_TAR_MAGIC = (257, b"ustar")  # at this offset in a tar header
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
        return _ole2_kind(data, filename)
    if kind != UNKNOWN:
        return kind
    if data[_TAR_MAGIC[0]:_TAR_MAGIC[0] + len(_TAR_MAGIC[1])] == _TAR_MAGIC[1]:
        return "tar"
    if _looks_like_text(data):
        if _looks_like_message(data, filename):
            return EML
        return HTML if _looks_like_html(data) else TEXT
    return UNKNOWN


def _by_signature(data: bytes) -> str:
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:12].startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data[:3] == b"BZh" and data[4:10] == b"1AY&SY":  # "BZh", the block size, a block's magic
        return "bzip2"
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


# Streams at the root of an OLE2 file that say what it is.
_OLE2_MAIN_STREAMS = (("worddocument", "doc"), ("workbook", "xls"), ("book", "xls"),
                      ("powerpoint document", "ppt"))
_OLE2_PAYLOADS = frozenset({"\x01ole10native", "contents", "package"})


def _ole2_kind(data: bytes, filename: str) -> str:
    """Which OLE2 format: from the streams inside when they say, else from the name's extension
    (an encrypted OOXML file is OLE2 too; "doc" when nothing tells, failing closed as editable).
    """
    extension = filename.rpartition(".")[2].lower() if "." in filename else ""
    by_name = _OLE2_EXTENSIONS.get(extension, "doc")
    try:  # a file object, never bytes: olefile takes short bytes for a path to open
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            names = {path[0].lower() for path in ole.listdir(streams=True, storages=True)}
    except Exception:  # not an OLE2 file olefile can read: whatever it is, the name decides
        return by_name
    if "__properties_version1.0" in names and any(n.startswith("__substg1.0_") for n in names):
        return MSG
    for stream, kind in _OLE2_MAIN_STREAMS:
        if stream in names:
            return kind
    if names & _OLE2_PAYLOADS:
        return OLE_PACKAGE
    return by_name


# A header field's first line, as in an RFC 5322 message: a name, a colon.
_HEADER_LINE = re.compile(rb"[!-9;-~]+:[^\r\n]*")
_MESSAGE_HEADERS = (b"date", b"message-id", b"mime-version", b"received", b"subject")


def _looks_like_message(data: bytes, filename: str) -> bool:
    """A message saved as a file (.eml): a header block of fields, with From and one of the
    fields every client writes. A text that merely starts "Subject: ..." is not enough."""
    if filename.lower().endswith(".eml"):
        return True
    head = data[:_TEXT_SAMPLE]
    newline = head.find(b"\n")
    first = (head if newline < 0 else head[:newline]).removesuffix(b"\r")
    if first[:1] not in (b" ", b"\t") and not _HEADER_LINE.fullmatch(first):
        return False  # (a CSV's or a letter's first line: the search below tries every byte)
    end = re.search(rb"\r?\n\r?\n", head)
    if end is None:
        return False
    names = set()
    for line in re.split(rb"\r?\n", head[:end.start()]):
        if line[:1] in (b" ", b"\t"):
            continue  # a folded field's continuation
        if not _HEADER_LINE.fullmatch(line):
            return False
        names.add(line.partition(b":")[0].lower())
    return b"from" in names and any(name in names for name in _MESSAGE_HEADERS)


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


def is_unopenable_archive(kind: str) -> bool:
    """Whether a detected type is an archive casegate does not open (7z, rar, gzip, ...)."""
    return kind in UNOPENABLE_ARCHIVES


def is_image(kind: str) -> bool:
    """Whether a detected type is a picture (no text to read without OCR)."""
    return kind in IMAGE_TYPES
