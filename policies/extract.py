"""Text out of attachments, within a budget of bytes, pages, characters and time.

Whatever cannot be read completely within its budget is reported unreadable, and the caller
counts it as protected (DESIGN ruling 2: fail closed). Time is measured with the injected clock
between units of work (PDF pages, XML parts, batches of XML elements); a single unit is bounded
by the byte and parsing limits instead.

Files embedded in a document (an Office document's embedded objects, a PDF's attached files)
are handed back unread as `Extraction.embedded`: policies.content classifies each as if it had
been attached itself, within the container budgets (DESIGN ruling 22).
"""

from __future__ import annotations

import codecs
import html
import io
import math
import re
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from xml.etree.ElementTree import Element

import olefile
import pypdf
from defusedxml.ElementTree import iterparse

from policies import filetypes
from policies.content_rules import Limits

Clock = Callable[[], float]


@dataclass(frozen=True)
class Extraction:
    """The text read from one attachment, and whether all of it could be read."""

    text: str
    readable: bool
    encrypted: bool = False
    embedded: tuple[tuple[str, bytes], ...] = ()  # files inside the document: (name, bytes)
    # Files inside that could not all be taken out: why (a policies.containers reason).
    unopened: str = ""


UNREADABLE = Extraction("", readable=False)
ENCRYPTED = Extraction("", readable=False, encrypted=True)


class _OverBudget(Exception):
    """Raised inside extraction when a byte, character or time budget runs out."""


@dataclass
class _Budget:
    """What one attachment may still spend: time until `deadline`, and characters."""

    limits: Limits
    clock: Clock
    deadline: float
    chars: int = 0

    @classmethod
    def start(cls, limits: Limits, clock: Clock, not_after: float) -> _Budget:
        return cls(limits, clock, min(clock() + limits.attachment_seconds, not_after))

    def tick(self) -> None:
        if self.clock() > self.deadline:
            raise _OverBudget("time")

    def take(self, text: str) -> str:
        self.chars += len(text)
        if self.chars > self.limits.max_text_chars:
            raise _OverBudget("characters")
        return text


def extract_text(kind: str, data: bytes, limits: Limits, clock: Clock, *,
                 images_are_unreadable: bool = True, not_after: float = math.inf) -> Extraction:
    """Read the text of an attachment whose real type is `kind` (see policies.filetypes).

    `not_after` is the message's own deadline: an attachment never gets more time than is left.
    """
    if kind == filetypes.EMPTY:
        return Extraction("", readable=True)
    if len(data) > limits.attachment_bytes or clock() > not_after:
        return UNREADABLE
    reader = _READERS.get(kind)
    if reader is None:
        if filetypes.is_image(kind) and not images_are_unreadable:
            return Extraction("", readable=True)
        return ENCRYPTED if kind in _OLE2_KINDS and _ole2_encrypted(data) else UNREADABLE
    budget = _Budget.start(limits, clock, not_after)
    try:
        return reader(kind, data, budget)
    except _OverBudget:
        return UNREADABLE
    except Exception:
        # Damaged or hostile content makes the parsers raise almost anything (pypdf, zipfile,
        # expat, defusedxml): whatever cannot be read counts as protected.
        return UNREADABLE


# --- plain text and HTML ------------------------------------------------------------------

_DECODE_BYTES = 1024 * 1024  # what `_utf8_pieces` decodes at a time


def _text(_kind: str, data: bytes, budget: _Budget) -> Extraction:
    return Extraction(budget.take(_utf8_within(data, budget)), readable=True)


def _utf8_within(data: bytes, budget: _Budget) -> str:
    """`data.decode("utf-8", errors="replace")`, or `_OverBudget` as soon as it is seen to
    hold more characters than the budget has left: a file far over the budget is not decoded
    whole first (its text beside its bytes, issue 14)."""
    left = budget.limits.max_text_chars - budget.chars
    if len(data) <= left:  # never more characters than bytes
        return data.decode("utf-8", errors="replace")
    pieces: list[str] = []
    count = 0
    for piece in _utf8_pieces(data):
        count += len(piece)
        if count > left:
            raise _OverBudget("characters")
        pieces.append(piece)
    return "".join(pieces)


def _utf8_pieces(data: bytes) -> Iterator[str]:
    """`data.decode("utf-8", errors="replace")`, _DECODE_BYTES at a time."""
    return decoded_pieces(byte_slices(data, _DECODE_BYTES), "utf-8")


def decoded_pieces(slices: Iterable[bytes | memoryview], encoding: str) -> Iterator[str]:
    """The slices of some bytes decoded one after another, errors replaced: joined, the bytes
    decoded whole (a character cut between two slices is read whole). An unknown encoding is
    read as UTF-8."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for piece in slices:
        yield decoder.decode(piece)
    yield decoder.decode(b"", final=True)


def byte_slices(data: bytes | memoryview, size: int | None = None) -> Iterator[memoryview]:
    """`data` `size` bytes at a time (HTML_PIECE when not given), without copying it."""
    size = size or HTML_PIECE
    with memoryview(data) as view:
        for start in range(0, len(view), size):
            yield view[start:start + size]


def _html(_kind: str, data: bytes, budget: _Budget) -> Extraction:
    """An HTML file's text, decoded and taken out a piece at a time: one far over the character
    budget is found so before it is decoded whole."""
    chunks = (piece[start:start + HTML_PIECE] for piece in _utf8_pieces(data)
              for start in range(0, len(piece), HTML_PIECE))
    texts: list[str] = []
    for text in _html_texts(_html_pieces(chunks)):
        texts.append(budget.take(text))
    return Extraction("".join(texts), readable=True)


# A tag (group 1): from a "<" to the next ">", with no "<" between (linear); its name (group 2)
# the letters and digits after "<", blanks and a "/". A block tag separates words, so it
# becomes a line break; an inline one (b, span, a) does not: "ZC12<b>C00123".
_TAG = re.compile(r"(<\s*/?\s*([a-zA-Z0-9]*)[^<>]*>)")
_BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "td", "th", "table", "h1", "h2", "h3",
                         "h4", "h5", "h6", "blockquote", "pre", "hr", "title", "body"})
_COMMENT_MARKS = re.compile(r"<!--|-->")


def _without_tags(markup: str, tags: list[str] | None = None) -> str:
    """The markup with each tag a line break (a block tag) or nothing; with `tags`, the tags
    themselves added to it, one a line. One split, then the names looked at in a list: a
    substitution calling back for each tag took most of the time of an HTML body."""
    parts = _TAG.split(markup)  # text, tag, name, text, tag, name, ..., text
    if tags is not None:
        tags.append("\n".join(parts[1::3]))
    pieces = parts[0::3]
    joined = [""] * (2 * len(pieces) - 1)
    joined[0::2] = pieces
    joined[1::2] = ["\n" if name.lower() in _BLOCK_TAGS else "" for name in parts[2::3]]
    return "".join(joined)


def html_to_text(markup: str) -> str:
    """The text of an HTML document, comments included (they are sent too), tags removed.

    Deliberately not a full parser: linear on hostile input. An email's HTML body is read with
    its tags as well (`html_text_and_tags`), so attribute values are not missed there.

    A long document is read a piece at a time (`_html_pieces`), with the same result: done
    whole, each substitution's list of pieces (one string per tag and between tags) held
    about 4.3x the markup at its peak; a piece at a time it is the text and one piece's work.
    """
    chunks = (markup[start:start + HTML_PIECE] for start in range(0, len(markup), HTML_PIECE))
    return "".join(_html_texts(_html_pieces(chunks)))


HTML_PIECE = 1 << 16  # characters of markup `html_to_text` hands on at a time (an HTML body: bytes)


@dataclass
class TextPieces:
    """A document's text, and an HTML document's tags (`html_text_and_tags`), in pieces not
    yet joined."""

    text: list[str]
    tags: list[str]

    def joined(self) -> tuple[str, str]:
        """The text (of HTML: `html_to_text`'s) and the tags, each piece let go once joined."""
        text = "".join(self.text)
        self.text.clear()
        tags = "\n".join(piece for piece in self.tags if piece)
        self.tags.clear()
        return text, tags


def html_text_and_tags(slices: Iterable[bytes | memoryview], encoding: str,
                       keep: Callable[[Iterable[str]], list[str]] = list) -> TextPieces:
    """The text of an HTML document's bytes, given in slices (`html_to_text` of them decoded,
    with errors replaced), and its tags (every tag `html_to_text` removes, one a line,
    comment marks left out: what the markup holds beside its text, attribute values first),
    read a piece at a time, so that the markup is never whole in memory. They come in pieces,
    for the caller to join once it has let go of the bytes; the text's pieces as `keep`
    writes them as they come (the classifier's: folded). An unknown encoding is read as
    UTF-8."""
    tags: list[str] = []
    text = keep(_html_texts(_html_pieces(decoded_pieces(slices, encoding)), tags))
    return TextPieces(text, tags)


def _html_texts(pieces: Iterable[str], tags: list[str] | None = None) -> Iterator[str]:
    """The text of each piece of markup (`_html_pieces`), in order: joined, the text of the
    whole. The end of a piece's text where a character reference may go on (`_reference_start`)
    is held back and read with the next piece's. With `tags`, each piece's tags (one a line)
    are added to it."""
    pending = ""
    for piece in pieces:
        text = pending + _without_tags(_COMMENT_MARKS.sub(" ", piece), tags)
        cut = _reference_start(text)
        yield html.unescape(text[:cut])
        pending = text[cut:]
    yield html.unescape(pending)


def _html_pieces(chunks: Iterable[str]) -> Iterator[str]:
    """The markup given in `chunks`, cut again so that each piece but the last ends just after
    a ">" that does not end "-->" (the last such ">" of a chunk): no tag (it holds no ">") or
    comment mark lies across such a cut, and the ">" is still there once the comment marks are
    replaced. A character reference can (the tags removed on either side may join one:
    "&am<b>p;"): `_html_texts` carries it over."""
    held: list[str] = []  # the markup since the last cut
    before = ""  # its last two characters
    for chunk in chunks:
        end = chunk.rfind(">")
        while end != -1 and _two_before(before, chunk, end) == "--":
            end = chunk.rfind(">", 0, end)
        if end == -1:
            held.append(chunk)
        else:
            held.append(chunk[:end + 1])
            yield "".join(held)
            held = [chunk[end + 1:]]
        before = (before + chunk[-2:])[-2:]
    yield "".join(held)


def _two_before(before: str, chunk: str, end: int) -> str:
    """The two characters before chunk[end], `before` being the two before the chunk."""
    return chunk[end - 2:end] if end >= 2 else (before + chunk[:end])[-2:]


# What `html.unescape` reads as a character reference (its own pattern).
_REFERENCE = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


def _reference_start(text: str) -> int:
    """Where the character reference that may go on past the end of `text` begins (its "&"),
    or len(text) when none may: `html.unescape` reads the two sides of that point alike."""
    amp = text.rfind("&")
    if amp == -1:
        return len(text)
    found = _REFERENCE.match(text, amp)
    if found is None:  # "&", "&#" and "&#x" may yet begin one
        return amp if len(text) - amp <= 3 else len(text)
    return amp if found.end() == len(text) else len(text)


# --- RTF ----------------------------------------------------------------------------------

_RTF_HEX = re.compile(r"\\'([0-9a-fA-F]{2})")
_RTF_CONTROL = re.compile(r"\\[a-zA-Z]+-?\d* ?|\\[^a-zA-Z']|[{}]")


def _rtf(_kind: str, data: bytes, budget: _Budget) -> Extraction:
    source = data.decode("latin-1")
    if "\\object" in source or "\\objdata" in source:
        return UNREADABLE  # an embedded OLE object: a document inside the document
    text = _RTF_CONTROL.sub("", _RTF_HEX.sub(lambda m: chr(int(m.group(1), 16)), source))
    return Extraction(budget.take(text), readable=True)


# --- PDF ----------------------------------------------------------------------------------

# The clock is only read between pages, so one page's work is bounded by its size instead:
# pypdf refuses a content stream of more tokens than this (a dense page of text has a few
# thousand; this many take pypdf about two seconds to lay out), and the PDF is unreadable.
PDF_TOKENS_PER_STREAM = 50_000

def _pdf(_kind: str, data: bytes, budget: _Budget) -> Extraction:
    limits = budget.limits
    with pypdf.apply_configuration(
        maximum_declared_stream_length=limits.attachment_bytes,
        zlib_maximum_output_length=limits.attachment_bytes,
        lzw_maximum_output_length=limits.attachment_bytes,
        run_length_maximum_output_length=limits.attachment_bytes,
        brotli_maximum_output_length=limits.attachment_bytes,
        stream_decoding_work_maximum_length=4 * limits.attachment_bytes,
        stream_parsing_work_maximum_count=PDF_TOKENS_PER_STREAM,
        jbig2dec_binary=None,  # never start a helper program
        disable_legacy_handling=True,
    ):
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        # Encrypted with an empty user password, a PDF opens for anyone (only its permissions
        # are restricted): it is read. One that needs a password cannot be.
        if reader.is_encrypted and not reader.decrypt(""):
            return ENCRYPTED
        budget.tick()
        embedded = _embedded_files(reader, budget)
        if isinstance(embedded, str):  # files inside the PDF that could not all be taken out
            return Extraction("", readable=False, unopened=embedded)
        pages = reader.pages
        if len(pages) > limits.max_pdf_pages:
            return UNREADABLE
        texts = []
        for page in pages:
            budget.tick()
            texts.append(budget.take(page.extract_text() or ""))
        budget.tick()
    text = "\n".join(texts)
    if not text.strip():
        return UNREADABLE  # pages without text: a scan, which only a person can read
    return Extraction(text, readable=True, embedded=embedded)


def _embedded_files(reader: pypdf.PdfReader,
                    budget: _Budget) -> tuple[tuple[str, bytes], ...] | str:
    """The files attached to the PDF (its EmbeddedFiles name tree); or why they could not all
    be taken out: "unsupported" when the tree is deeper than pypdf reads (two levels) or holds
    none it finds, "bytes" when they are over the attachment's byte budget."""
    names = reader.root_object.get("/Names")
    tree = names.get_object().get("/EmbeddedFiles") if names is not None else None
    if tree is None:
        return ()
    kids = tree.get_object().get("/Kids")
    if kids is not None and any("/Kids" in kid.get_object() for kid in kids.get_object()):
        return "unsupported"
    found: list[tuple[str, bytes]] = []
    remaining = budget.limits.attachment_bytes
    for entry in reader.attachment_list:
        budget.tick()
        try:
            content = entry.content
        except pypdf.errors.LimitReachedError:  # inflating past the configured output limit
            return "bytes"
        remaining -= len(content)
        if remaining < 0:
            return "bytes"
        found.append((entry.name, content))
    return tuple(found) if found else "unsupported"  # a tree of no files found: fail closed


# --- OOXML and ODF (ZIP containers of XML) -----------------------------------------------

_XML_PARTS = {
    filetypes.DOCX: re.compile(
        r"word/(document|header\d*|footer\d*|footnotes|endnotes|comments)\.xml|docProps/core\.xml"),
    filetypes.XLSX: re.compile(r"xl/(sharedStrings|worksheets/sheet\d+)\.xml|docProps/core\.xml"),
    filetypes.PPTX: re.compile(
        r"ppt/(slides/slide\d+|notesSlides/notesSlide\d+)\.xml|docProps/core\.xml"),
    # with the text of the ODF objects embedded in it (a chart, a formula)
    filetypes.ODT: re.compile(r"content\.xml|styles\.xml|meta\.xml|(Object \d+/)+content\.xml"),
}
_XML_PARTS[filetypes.ODS] = _XML_PARTS[filetypes.ODP] = _XML_PARTS[filetypes.ODT]
MAX_ZIP_ENTRIES = 5_000
# Files inside the document (OLE objects, embedded packages, alternative-format chunks, an ODF
# document's OLE objects): handed back to be classified as attachments (DESIGN ruling 22).
_EMBEDDED_PARTS = re.compile(
    r"(word|xl|ppt)/embeddings/.*|word/afchunk.*|(Object \d+/)*Object \d+", re.IGNORECASE)
_PICTURE_PARTS = re.compile(r"(word|xl|ppt)/media/.*|Pictures/.*")
# Any other part that is not XML (embedded fonts, printer settings, thumbnails) is looked at:
# a document, an archive or text put among the parts is handed back like an embedded object.
_STRUCTURE_PARTS = re.compile(r".*\.(xml|rels)|mimetype", re.IGNORECASE)
_PEEK_BYTES = 1024
_NOT_HIDDEN = frozenset({filetypes.UNKNOWN, filetypes.EMPTY, *filetypes.IMAGE_TYPES})
_ENCRYPTED_ENTRY = 0x1
# Elements whose text is one run of words: paragraphs, cells, shared strings, titles.
_BLOCK_ELEMENTS = frozenset({"p", "h", "si", "c", "tc", "title", "subject", "description",
                             "keywords", "creator"})
_ELEMENTS_PER_TICK = 2_000


def _office(kind: str, data: bytes, budget: _Budget) -> Extraction:
    wanted = _XML_PARTS[kind]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_ENTRIES:
            return UNREADABLE
        if any(info.flag_bits & _ENCRYPTED_ENTRY for info in entries):
            return ENCRYPTED
        remaining = budget.limits.attachment_bytes
        texts: list[str] = []
        embedded: list[tuple[str, bytes]] = []
        for info in entries:
            is_xml = wanted.fullmatch(info.filename) is not None
            if info.is_dir() or (not is_xml and not _EMBEDDED_PARTS.fullmatch(info.filename)
                                 and not _hidden_file(archive, info, budget)):
                continue
            budget.tick()
            with archive.open(info) as stream:
                content = stream.read(remaining + 1)  # never trust the declared size: zip bombs
            remaining -= len(content)
            if remaining < 0:
                return UNREADABLE
            if is_xml:
                texts.extend(_xml_text(content, budget))
            else:
                embedded.append((info.filename.rpartition("/")[2], content))
        has_pictures = any(_PICTURE_PARTS.fullmatch(info.filename) for info in entries)
    text = "\n".join(texts)
    if has_pictures and not text.strip() and not embedded:
        return UNREADABLE  # only pictures: a scan pasted into a document
    return Extraction(text, readable=True, embedded=tuple(embedded))


def _hidden_file(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> bool:
    """Whether a part the document format does not explain is a file hidden in the document
    (a PDF, an archive, an Office file, text): its first bytes say."""
    if _STRUCTURE_PARTS.fullmatch(info.filename) or _PICTURE_PARTS.fullmatch(info.filename):
        return False
    budget.tick()
    with archive.open(info) as stream:
        head = stream.read(_PEEK_BYTES)
    return filetypes.detect_type(head, info.filename) not in _NOT_HIDDEN


def _xml_text(xml: bytes, budget: _Budget) -> Iterator[str]:
    """The text of one XML part, a line per block element; DTDs and entities are refused."""
    count = 0
    for _event, element in iterparse(io.BytesIO(xml), events=("end",), forbid_dtd=True,
                                     forbid_entities=True, forbid_external=True):
        count += 1
        if count % _ELEMENTS_PER_TICK == 0:
            budget.tick()
        if _local_name(element) in _BLOCK_ELEMENTS:
            yield budget.take("".join(element.itertext()))
            element.clear()


def _local_name(element: Element) -> str:
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


# --- OLE2 (legacy Office): not read; an encrypted OOXML file is one of these ---------------

_OLE2_KINDS = frozenset({"doc", "xls", "ppt", "msg"})
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_WORD_FIB_FLAGS = struct.Struct("<H")  # [MS-DOC] FibBase at offset 0x0A: fEncrypted is 0x0100
_BIFF_RECORD = struct.Struct("<HH")  # [MS-XLS] a record's type and size
_BIFF_FILEPASS = 0x002F  # the workbook is encrypted
_BIFF_RECORDS_READ = 64  # FILEPASS follows the first BOF closely


def _ole2_encrypted(data: bytes) -> bool:
    """Whether a legacy Office file needs a password: an encrypted OOXML package (its
    EncryptedPackage stream), an encrypted Word document, workbook or presentation."""
    if _ENCRYPTED_PACKAGE in data:
        return True
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            if ole.exists("EncryptedSummary"):  # [MS-PPT] CryptoAPI-encrypted presentation
                return True
            if ole.exists("WordDocument") and ole.get_size("WordDocument") >= 12:
                with ole.openstream("WordDocument") as stream:
                    (flags,) = _WORD_FIB_FLAGS.unpack_from(stream.read(12), 0x0A)
                return bool(flags & 0x0100)
            for name in ("Workbook", "Book"):
                if ole.exists(name):
                    with ole.openstream(name) as stream:
                        return _biff_filepass(stream)
    except Exception:  # not an OLE2 file olefile can read: unreadable, not known encrypted
        return False
    return False


def _biff_filepass(stream: io.BytesIO) -> bool:
    for _ in range(_BIFF_RECORDS_READ):
        header = stream.read(_BIFF_RECORD.size)
        if len(header) < _BIFF_RECORD.size:
            return False
        kind, size = _BIFF_RECORD.unpack(header)
        if kind == _BIFF_FILEPASS:
            return True
        stream.seek(size, io.SEEK_CUR)
    return False


_READERS: dict[str, Callable[[str, bytes, _Budget], Extraction]] = {
    filetypes.TEXT: _text,
    filetypes.HTML: _html,
    filetypes.RTF: _rtf,
    filetypes.PDF: _pdf,
    filetypes.DOCX: _office,
    filetypes.XLSX: _office,
    filetypes.PPTX: _office,
    filetypes.ODT: _office,
    filetypes.ODS: _office,
    filetypes.ODP: _office,
}
