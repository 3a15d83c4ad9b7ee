"""Real-type detection from content, and extraction within budget."""

from __future__ import annotations

import html
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import extract, filetypes
from policies.extract import PDF_TOKENS_PER_STREAM, extract_text, html_to_text
from tests.fixtures_content import (
    OLE2_HEADER,
    PNG_HEADER,
    SteppingClock,
    default_rules,
    make_docx,
    make_odt,
    make_pdf,
    make_zip_bomb_docx,
)
from tests.html_reference import whole_html_to_text, whole_tags


@pytest.mark.parametrize(("data", "name", "expected"), [
    (make_pdf(["hello"]), "notes.txt", "pdf"),
    (make_docx([["hello"]]), "report.pdf", "docx"),
    (make_odt("hello"), "letter.pdf", "odt"),
    (OLE2_HEADER, "old.doc", "doc"),
    (OLE2_HEADER, "sheet.XLS", "xls"),
    (OLE2_HEADER, "mail.msg", "msg"),
    (OLE2_HEADER, "disguised.pdf", "doc"),
    (b"{\\rtf1\\ansi hello}", "letter.txt", "rtf"),
    (PNG_HEADER, "scan.pdf", "png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "", "jpeg"),
    (b"plain words\r\nand more", "data.bin", "text"),
    (b"<!DOCTYPE html><html><body>hi</body></html>", "", "html"),
    (b"PK\x05\x06" + b"\x00" * 18, "", "zip"),
    (b"\x7fELF\x02\x01\x01" + b"\x00" * 50, "report.pdf", "unknown"),
    (bytes(range(256)) * 4, "", "unknown"),
    (b"", "empty.pdf", "empty"),
    # a message saved as a file: a header block with From and a field every client writes
    (b"From: a@example.org\r\nSubject: notes\r\n\r\nHello", "saved.txt", "eml"),
    (b"Received: by x\n\tfor y\nFrom: a@example.org\nDate: today\n\nHi", "", "eml"),
    (b" folded: first\nFrom: a@example.org\nDate: today\n\nHi", "", "eml"),
    (b"Subject: only a subject\r\n\r\nHello", "", "text"),
    (b"From: a@example.org\r\nnot a field\r\nDate: today\r\n\r\nHi", "", "text"),
    (b"From: a@example.org\r\nDate: today", "", "text"),  # no end to the header block
    (b"date,time,phone\r\n2024-01-02,09:30,0161 496 0000\r\n\r\nFrom: a\r\n", "", "text"),
    (b"plain words", "old.EML", "eml"),
])
def test_detect_type_reads_the_bytes_not_the_name(data: bytes, name: str, expected: str) -> None:
    """The type comes from the bytes; the name only picks among OLE2's formats."""
    assert filetypes.detect_type(data, name) == expected


def test_pdf_text_is_extracted() -> None:
    """A PDF's text is read page by page."""
    pdf = make_pdf(["Case ZC12C00123", "Second page"])
    result = extract_text("pdf", pdf, default_rules().limits, SteppingClock())
    assert result.readable and "ZC12C00123" in result.text and "Second page" in result.text


def test_encrypted_pdf_is_unreadable() -> None:
    """An encrypted PDF cannot be read and says it is encrypted."""
    pdf = make_pdf(["secret"], password="pw")
    result = extract_text("pdf", pdf, default_rules().limits, SteppingClock())
    assert (result.readable, result.encrypted, result.text) == (False, True, "")


def test_pdf_with_too_many_pages_is_unreadable() -> None:
    """A PDF longer than the page limit is not read (fail closed)."""
    pdf = make_pdf(["page"] * 6)
    limits = default_rules(max_pdf_pages=5).limits
    assert not extract_text("pdf", pdf, limits, SteppingClock()).readable


def test_pdf_over_time_budget_is_unreadable() -> None:
    """Reading stops when the injected clock passes the per-attachment budget."""
    pdf = make_pdf(["page"] * 4)
    limits = default_rules(attachment_seconds=2.5).limits
    assert not extract_text("pdf", pdf, limits, SteppingClock(step=1.0)).readable
    assert extract_text("pdf", pdf, limits, SteppingClock(step=0.0)).readable


def test_message_deadline_caps_attachment_time() -> None:
    """An attachment gets no time once the message's own deadline has passed."""
    clock = SteppingClock()
    result = extract_text("pdf", make_pdf(["x"]), default_rules().limits, clock,
                          not_after=clock.now - 1)
    assert not result.readable


def test_pdf_larger_than_byte_budget_is_unreadable() -> None:
    """An attachment larger than the byte budget is not parsed at all."""
    pdf = make_pdf(["x"], padding=4000)
    limits = default_rules(attachment_bytes=len(pdf) - 1).limits
    assert not extract_text("pdf", pdf, limits, SteppingClock()).readable


def test_damaged_pdf_is_unreadable() -> None:
    """A truncated PDF is unreadable rather than an error."""
    pdf = make_pdf(["hello"])
    assert not extract_text("pdf", pdf[:200], default_rules().limits, SteppingClock()).readable


def test_docx_runs_are_joined_within_a_paragraph() -> None:
    """A case number split across runs (spell-check does this) is still one word."""
    docx = make_docx([["Case ZC12", "C00123"], ["next paragraph"]])
    result = extract_text("docx", docx, default_rules().limits, SteppingClock())
    assert result.readable and "ZC12C00123" in result.text and "next paragraph" in result.text


def test_zip_bomb_docx_is_unreadable() -> None:
    """A document part that inflates beyond the byte budget is not read (zip bomb)."""
    bomb = make_zip_bomb_docx(8 * 1024 * 1024)
    assert len(bomb) < 64 * 1024
    limits = default_rules(attachment_bytes=1024 * 1024).limits
    assert not extract_text("docx", bomb, limits, SteppingClock()).readable


@pytest.mark.parametrize("xml", [
    '<?xml version="1.0"?><!DOCTYPE w [<!ENTITY a "aaaa">]><w:document '
    'xmlns:w="urn:w"><w:p><w:t>&a;</w:t></w:p></w:document>',
    '<?xml version="1.0"?><!DOCTYPE w SYSTEM "file:///etc/passwd"><w:document/>',
])
def test_docx_with_dtd_is_refused(xml: str) -> None:
    """DOCX XML has no DTD; one with a DOCTYPE or ENTITY is unreadable."""
    docx = make_docx(document_xml=xml)
    assert not extract_text("docx", docx, default_rules().limits, SteppingClock()).readable


def test_docx_with_broken_xml_is_unreadable() -> None:
    """Malformed XML inside a DOCX makes it unreadable."""
    docx = make_docx(document_xml="<w:document><w:p>")
    assert not extract_text("docx", docx, default_rules().limits, SteppingClock()).readable


def test_text_over_character_budget_is_unreadable() -> None:
    """Extracted text beyond the character budget makes the attachment unreadable."""
    docx = make_docx([["word " * 100]])
    limits = default_rules(max_text_chars=100).limits
    assert not extract_text("docx", docx, limits, SteppingClock()).readable
    assert extract_text("docx", make_docx([["short"]]), limits, SteppingClock()).readable


@pytest.mark.parametrize("text", ["a" * 99, "a" * 100, "a" * 101, "é" * 100, "é" * 101,
                                  "€" * 60 + "\udcff", "😀" * 100, "😀" * 101, "x\u00e9" * 51])
def test_a_text_file_is_read_within_the_character_budget(text: str) -> None:
    """A text file within the budget reads as its whole decoding, one over it is unreadable,
    counted in characters however many bytes each takes (also when its bytes are far more
    than the budget: it is then decoded a piece at a time, never whole)."""
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate: bytes UTF-8 refuses
    limits = default_rules(max_text_chars=100).limits
    result = extract_text("text", data, limits, SteppingClock())
    whole = data.decode("utf-8", errors="replace")
    assert result.readable == (len(whole) <= 100)
    assert result.text == (whole if len(whole) <= 100 else "")


def test_odt_text_is_extracted() -> None:
    """OpenDocument text is read from content.xml."""
    result = extract_text("odt", make_odt("DOB 01/02/2014"), default_rules().limits,
                          SteppingClock())
    assert result.readable and "01/02/2014" in result.text


@pytest.mark.parametrize("kind", ["unknown", "zip", "doc", "png"])
def test_unreadable_kinds(kind: str) -> None:
    """Unknown binaries, archives, legacy Office files and pictures cannot be read."""
    data = {"doc": OLE2_HEADER, "png": PNG_HEADER}.get(kind, b"\x00\x01\x02")
    assert not extract_text(kind, data, default_rules().limits, SteppingClock()).readable


def test_encrypted_ooxml_is_reported_encrypted() -> None:
    """A password-protected Office file is an OLE2 container with an EncryptedPackage stream."""
    data = OLE2_HEADER + "EncryptedPackage".encode("utf-16-le")
    result = extract_text("doc", data, default_rules().limits, SteppingClock())
    assert result.encrypted and not result.readable


def test_images_can_be_configured_readable() -> None:
    """An organisation may decide pictures do not protect a message."""
    result = extract_text("png", PNG_HEADER, default_rules().limits, SteppingClock(),
                          images_are_unreadable=False)
    assert result.readable


def test_rtf_text_is_extracted() -> None:
    """RTF control words are dropped and the words kept."""
    result = extract_text("rtf", rb"{\rtf1\ansi{\b Case} ZC12C00123\par DOB 01/02/2014}",
                          default_rules().limits, SteppingClock())
    assert result.readable and "ZC12C00123" in result.text


def test_html_to_text_keeps_comment_text_and_entities() -> None:
    """Tags go, entities are decoded, and text hidden in comments is still read."""
    text = html_to_text("<p>Case <b>ZC12</b>C00123</p><p>next</p><!-- DOB 01/02/2014 -->&#90;X")
    assert text.split() == ["Case", "ZC12C00123", "next", "DOB", "01/02/2014", "ZX"]


# The characters and marks where a cut between pieces could change the text: tags, comment
# marks, ">" after "--", character references begun and not ended, and digits that go on.
_MARKUP_BITS = st.sampled_from(["<", ">", "<!--", "-->", "--", "-", "!", "/", "&", "&#", "&#x",
                                "&amp", "&amp;", "&lt", "&#65;", "&#x4a", ";", "1", "9", "F",
                                "a", "p", "td", "b", " ", "\n", "\r\n", "é", "<td>", "</b>",
                                # tag names in any case, after blanks of any kind, or not quite
                                "TD", "Div", "H6", "h7", "br/", "pre1", "\u2003", "\u0130",
                                "\u212a"])


@given(st.lists(_MARKUP_BITS, max_size=60).map("".join), st.integers(1, 24))
def test_html_to_text_a_piece_at_a_time_reads_as_the_whole(markup: str, piece: int) -> None:
    """However the markup is cut into pieces, the text is the same as read whole."""
    try:
        expected: str | type[ValueError] = whole_html_to_text(markup)
    except ValueError:  # a numeric reference of more digits than int() takes: malformed
        expected = ValueError
    saved, extract.HTML_PIECE = extract.HTML_PIECE, piece
    try:
        got: str | type[ValueError] = html_to_text(markup)
    except ValueError:
        got = ValueError
    finally:
        extract.HTML_PIECE = saved
    assert got == expected


@given(st.lists(st.one_of(_MARKUP_BITS, st.sampled_from(["\xa0", "\u20ac", "<a title=\"é\">"]),
                          st.just("\udcff")), max_size=60).map("".join), st.integers(1, 24))
def test_html_text_and_tags_a_piece_at_a_time_read_as_the_whole(markup: str,
                                                                 piece: int) -> None:
    """An HTML body's bytes, decoded and read a piece at a time (pieces of 1 to 24 bytes, so
    that characters of several bytes are cut too; an invalid byte replaced), give the text of
    the whole markup decoded, and every tag that text leaves out."""
    data = markup.encode("utf-8", "surrogateescape")  # "\udcff": the invalid byte 0xff
    decoded = data.decode("utf-8", "replace")
    try:
        expected: tuple[str, str] | type[ValueError] = (whole_html_to_text(decoded),
                                                        whole_tags(decoded))
    except ValueError:  # a numeric reference of more digits than int() takes: malformed
        expected = ValueError
    saved, extract.HTML_PIECE = extract.HTML_PIECE, piece
    try:
        got: tuple[str, str] | type[ValueError] = extract.html_text_and_tags(
            extract.byte_slices(data), "utf-8").joined()
    except ValueError:
        got = ValueError
    finally:
        extract.HTML_PIECE = saved
    assert got == expected


def test_html_text_and_tags_of_an_unknown_charset_read_as_utf8() -> None:
    data = '<p title="né">Café</p>'.encode()
    text, tags = extract.html_text_and_tags(extract.byte_slices(data),
                                            "x-no-such-charset").joined()
    assert (text, tags) == ("\nCafé\n", '<p title="né">\n</p>')


def test_the_character_reference_pattern_is_html_unescapes_own() -> None:
    """Where a piece's text is cut depends on reading references exactly as `html.unescape`
    does: should Python change its pattern, this says so."""
    assert extract._REFERENCE.pattern == html._charref.pattern  # type: ignore[attr-defined]


def test_long_html_is_read_within_twice_its_size() -> None:
    """A long table's text is found holding less than twice the markup (4.3x read whole; 1.4x
    measured a piece at a time), and it is the same text."""
    row = "<tr><td>Visit 12/03/2024</td><td>Room 4, 01632 960 123</td><td>a &amp; b</td></tr>\n"
    markup = "<table>\n" + row * (4 * 1024 * 1024 // len(row)) + "</table>\n"
    expected = whole_html_to_text(markup)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        text = html_to_text(markup)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert text == expected
    assert peak < 2 * len(markup), peak / len(markup)


def test_an_html_file_is_decoded_and_read_a_piece_at_a_time_alike() -> None:
    """An HTML attachment's text, decoded a slice of bytes at a time (a character split across
    two slices included), is the text of the whole file."""
    row = "<tr><td>Visite à 12/03/2024</td><td>&eacute;t&eacute; 01632 960 123</td></tr>\n"
    markup = "<table>\n" + row * 3000 + "</table>\n"
    data = markup.encode()
    saved = extract._DECODE_BYTES, extract.HTML_PIECE
    extract._DECODE_BYTES, extract.HTML_PIECE = 4097, 1000  # odd: slices end inside characters
    try:
        result = extract_text("html", data, default_rules().limits, SteppingClock())
    finally:
        extract._DECODE_BYTES, extract.HTML_PIECE = saved
    assert result.readable and result.text == whole_html_to_text(markup)


def test_an_html_file_far_over_the_character_budget_is_not_decoded_whole() -> None:
    """Found over the budget a piece at a time: unreadable, as when it was read whole, and
    without its markup or text ever whole in memory (what is held is bounded by the budget:
    5.3 MB measured for 8 MB and for 20 MB files; 4.9x the 8 MB file when it was read whole)."""
    row = "<tr><td>Visit 12/03/2024</td><td>Room 4, 01632 960 123</td></tr>\n"
    data = ("<table>\n" + row * (8 * 1024 * 1024 // len(row)) + "</table>\n").encode()
    limits = default_rules().limits
    assert len(whole_html_to_text(data.decode())) > limits.max_text_chars
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        result = extract_text("html", data, limits, SteppingClock())
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert not result.readable
    assert peak < 0.8 * len(data), peak / len(data)


def test_pdf_without_text_is_a_scan_and_unreadable() -> None:
    """A PDF whose pages hold no text is a scan: only a person can read it."""
    result = extract_text("pdf", make_pdf(["", ""]), default_rules().limits, SteppingClock())
    assert not result.readable


def test_pdf_with_embedded_file_hands_the_file_back() -> None:
    """Files attached inside a PDF are handed back, to be classified as attachments (ruling 22)."""
    inner = make_docx([["ZC12C00123"]])
    result = extract_text("pdf", make_pdf(["cover note"], embedded=inner),
                          default_rules().limits, SteppingClock())
    assert result.readable and result.embedded == (("inner.docx", inner),)


@pytest.mark.parametrize(("paragraphs", "parts", "readable", "embedded"), [
    ([["Letter text"]], {"word/media/image1.png": PNG_HEADER}, True, ()),  # a logo
    ([[""]], {"word/media/image1.png": PNG_HEADER}, False, ()),  # only a picture: a scan
    ([["Letter text"]], {"word/embeddings/oleObject1.bin": OLE2_HEADER}, True,
     (("oleObject1.bin", OLE2_HEADER),)),
    ([["Letter text"]], {"word/afchunk.mht": b"MIME-Version: 1.0"}, True,
     (("afchunk.mht", b"MIME-Version: 1.0"),)),
    ([[""]], {"word/media/image1.emf": PNG_HEADER, "word/embeddings/a.pdf": b"%PDF-1.4"}, True,
     (("a.pdf", b"%PDF-1.4"),)),  # an object's preview picture is not a scan
])
def test_docx_pictures_and_embedded_documents(
        paragraphs: list[list[str]], parts: dict[str, bytes], readable: bool,
        embedded: tuple[tuple[str, bytes], ...]) -> None:
    """A logo does not stop a DOCX being read, a lone picture does; embedded documents are
    handed back to be classified as attachments (ruling 22)."""
    docx = make_docx(paragraphs, extra_parts=parts)
    result = extract_text("docx", docx, default_rules().limits, SteppingClock())
    assert (result.readable, result.embedded) == (readable, embedded)


def test_pdf_page_over_token_budget_is_unreadable() -> None:
    """One page too big to lay out within budget is not read (the clock cannot interrupt it)."""
    lines = PDF_TOKENS_PER_STREAM // 4 + 100  # about four tokens a line
    pdf = make_pdf(["\n".join(["x"] * lines)])
    assert not extract_text("pdf", pdf, default_rules().limits, SteppingClock()).readable
    small = make_pdf(["\n".join(["x"] * 1000)])
    assert extract_text("pdf", small, default_rules().limits, SteppingClock()).readable
