"""What one large message costs in memory on its way through the gateway (issue 14, point 4).

The gateway runs in-process under tracemalloc; the upstream is `tests.discard_sink` in a
process of its own and the client sends a message built before measuring, over a plain socket
(a trusted relay peer), so the traced peak is the gateway's alone. SQLite's own allocations
(the portal's store) are not traced: its high-water mark is read from the library itself and
added. Reading, deciding, copying, sealing, storing and relaying the message stay within
2.5x its size, all of it (issue 14 asks for 3x); the policy's evaluation (one at a time
gateway-wide: `Stages.evaluations`), measured by itself on the same bytes, within 1x beside
the message.
"""

from __future__ import annotations

import _sqlite3
import base64
import ctypes
import gc
import os
import quopri
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.stages.decision import decide
from gateway.stages.message import Submission
from policies import content
from policies.content import classify_message
from policies.content_rules import ContentRules
from policies.model import MessageFacts
from policies.normalise import fold
from tests.discard_sink import DiscardSink
from tests.fixtures_content import SteppingClock, default_rules
from tests.gateway_harness import STAFF, Harness, running_gateway

SIZE = 8 * 1024 * 1024
CASE = "FD24P01234"
MUM = "mum@example.org"
COLLEAGUE = "colleague@cafcass.gov.uk"
SLACK = 1024 * 1024  # the gateway's own fixed overhead for one message (logs, events, ...)
RULES: ContentRules = default_rules()
BOUND = 2.5  # issue 14 asks for 3x at most; what the gateway holds, measured: 2.1x and 2.3x

# The SQLite library Python's sqlite3 module uses (looked up through the module itself).
_SQLITE = ctypes.CDLL(_sqlite3.__file__)
_SQLITE.sqlite3_memory_used.restype = ctypes.c_int64
_SQLITE.sqlite3_memory_highwater.restype = ctypes.c_int64
_SQLITE.sqlite3_memory_highwater.argtypes = (ctypes.c_int,)


def sqlite_peak_from_now() -> int:
    """SQLite's memory in use now, its high-water mark reset to it."""
    used = int(_SQLITE.sqlite3_memory_used())
    _SQLITE.sqlite3_memory_highwater(1)
    return used


def sqlite_peak_above(start: int) -> int:
    return int(_SQLITE.sqlite3_memory_highwater(0)) - start


def large_message(to: str, subject: str) -> bytes:
    """About SIZE bytes: a short text and a base64 attachment of random bytes."""
    head = (f"From: Jo Smith <{STAFF}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{os.urandom(8).hex()}@cafcass.gov.uk>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
            "Content-Type: text/plain\r\n\r\nPlease see the scan.\r\n--b1\r\n"
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="scan.bin"\r\n\r\n').encode()
    body = base64.encodebytes(os.urandom(SIZE * 3 // 4)).replace(b"\n", b"\r\n")
    return head + body + b"--b1--\r\n"


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def relay(gw: Harness, to: str, wire: bytes) -> int:
    with gw.connect(tls=False, login=None) as client:
        assert client.mail(STAFF)[0] == 250
        assert client.rcpt(to)[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(wire)
        return client.getreply()[0]


async def peak_of(gw: Harness, to: str, subject: str) -> tuple[int, int, int]:
    """(peak above the start while the gateway takes the message, Python's and SQLite's
    added, the evaluation's own peak on the same bytes, the message's size)."""
    data = large_message(to, subject)
    wire = data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    stored = sqlite_peak_from_now()
    assert await gw.run(relay, gw, to, wire) == 250
    whole = tracemalloc.get_traced_memory()[1] - start + sqlite_peak_above(stored)
    submission = Submission(sender=STAFF, recipients=(to,), raw=data, user=None, peer="127.0.0.1")
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    await decide(gw.gateway.stages, submission)
    return whole, tracemalloc.get_traced_memory()[1] - start, len(data)


@pytest.mark.parametrize(("to", "subject"), [(COLLEAGUE, "Office move"),
                                              (MUM, f"Report {CASE}")], ids=["plain", "portal"])
async def test_one_message_costs_at_most_two_and_a_half_times_its_size(
        tmp_path: Path, traced: None, to: str, subject: str) -> None:
    """Plain relay and the portal path (sealed and stored in SQLite): within 2.5x, all of it."""
    async with DiscardSink() as sink:
        upstream = (f'[upstream]\nhost = "{sink.host}"\nport = {sink.port}\ntls = "none"\n'
                    "timeout = 60.0\n")
        async with running_gateway(tmp_path, None, extra_config=upstream,
                                   relay_from=["127.0.0.1/32"],
                                   max_message_size=4 * SIZE) as gw:
            gw.verify(MUM, CASE)
            await peak_of(gw, to, subject)  # first use: caches, pools, lazy imports
            whole, evaluation, size = await peak_of(gw, to, subject)
    assert evaluation <= size, evaluation / size  # 0.75x: the attachment decoded
    assert whole <= BOUND * size + SLACK, (whole / size, evaluation / size)  # 2.1x, 2.3x


def quoted_printable_message(html: bool) -> bytes:
    """About SIZE bytes: one quoted-printable body, prose (a "=" on every line) or a table."""
    if html:
        row = "<tr><td>Visit 12/03/2024</td><td>Room 4 = 01632 960 123</td></tr>\n"
        text = "<table>\n" + row * (SIZE // len(row)) + "</table>\n"
    else:
        line = "The family meeting went well = the children are settled at school now.\n"
        text = line * (SIZE // len(line))
    kind = "html" if html else "plain"
    head = (f"From: {STAFF}\r\nTo: {COLLEAGUE}\r\nSubject: Notes\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/{kind}; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode()
    return head + quopri.encodestring(text.encode()).replace(b"\n", b"\r\n")


@pytest.mark.parametrize(("html", "bound"), [(False, 2.2), (True, 2.0)], ids=["text", "html"])
def test_a_decoded_body_is_let_go_before_its_text_is_read(traced: None, html: bool,
                                                          bound: float) -> None:
    """A quoted-printable body's decoded bytes are not held while its text is folded and
    scanned, and an HTML body is decoded a slice of lines at a time, its text and tags taken
    out as it is: beside the message, the classification holds 1.97x (text; 2.81x before)
    and 1.81x (HTML; 2.29x when its markup was decoded whole, folded and scanned, 3.62x
    before its text was taken out a piece at a time)."""
    raw = quoted_printable_message(html)
    facts, peak = classification_peak(raw)
    assert not facts.malformed
    assert peak <= bound * len(raw), peak / len(raw)


@pytest.mark.parametrize("first", [f"Case {CASE}: notes for the file.\n",
                                   f"Case number:\n{CASE}\n"], ids=["after-a-word", "alone"])
def test_a_case_number_whole_on_its_line_makes_no_joined_view(traced: None,
                                                              first: str) -> None:
    """A text with a case number (and dates and phone numbers) on lines of their own, none
    broken over two lines, is not read a second time with its line breaks joined: beside the
    message, 2.00x measured (2.97x when any case number made the joined view)."""
    line = "The family meeting on 12/03/2024 went well; ring 01632 960 123 most evenings.\n"
    raw = one_body_message("text/plain", first + line * (SIZE // len(line)))
    facts, peak = classification_peak(raw)
    assert facts.case_numbers == (CASE,)
    assert peak <= 2.2 * len(raw), peak / len(raw)


TAB_ROW = "12/03/2024\t09:30\tvisit at home\t01632 960 123\tnotes\n"
OUTLOOK_LINE = ("The family meeting on 12/03/2024 went well \u2013 the children\u2019s school is "
                "near Zo\u00eb\u2019s.\n")


@pytest.mark.parametrize(("content_type", "line", "bound"), [
    ("text/plain", TAB_ROW, 2.2),
    ("text/plain", TAB_ROW.replace("visit", "visite chez Zo\u00eb"), 2.2),
    ("text/plain", OUTLOOK_LINE, 2.2),
    ("text/html", f"<p>{OUTLOOK_LINE.strip()}</p>\n", 2.0),
], ids=["tabs", "tabs-and-an-accent", "outlook", "outlook-html"])
def test_a_body_is_folded_beside_no_other_copy_of_it(traced: None, content_type: str,
                                                     line: str, bound: float) -> None:
    """Beside the message, the classification holds (measured):
    - a table pasted as text (tab-separated, CRLF line ends), folded in one translation:
      2.00x (3.94x when its carriage returns were removed, then its tabs translated in bytes);
    - the same with an accented letter on every line, folded a slice of lines at a time, the
      original let go before the folded slices are joined: 2.00x (3.87x folded whole: the
      CRLFs replaced, then the tabs translated, each a copy beside the original);
    - a UTF-8 body with a dash and an apostrophe as Outlook types them (– ’: past U+00FF, so
      Python holds such a text at two bytes a character), decoded and folded a slice at a
      time, the typographic marks made ASCII: 2.00x (8.31x decoded whole, then folded);
    - an HTML body of such text, folded a piece at a time as it is taken out of the markup:
      1.83x (3.60x when its text was joined, two bytes a character, then folded; 7.96x
      before the folding went by slices)."""
    text = line * (SIZE // len(line))
    if content_type == "text/html":
        text = f"<html><body>{text}</body></html>"
    raw = one_body_message(content_type, text)
    facts, peak = classification_peak(raw)
    assert not facts.malformed
    assert peak <= bound * len(raw), peak / len(raw)


def test_an_html_body_is_never_whole_in_memory(traced: None) -> None:
    """A 7bit HTML body (a table) is decoded and read a piece at a time: its text, and its
    tags for their attribute values, are all that is kept of it; the markup is never whole in
    memory. Beside the message, the classification holds 1.78x measured (2.29x when the
    markup was decoded whole, folded, scanned and kept beside its text; 2.64x before that).
    The case number is whole in the text only."""
    row = ("<tr><td>Visit 12/03/2024</td><td>Room 4, 01632 960 123</td>"
           "<td>notes &amp; plan</td></tr>\n")
    markup = (f"<html><body><p>Case <b>{CASE[:4]}</b>{CASE[4:]}: notes for the file.</p>"
              "<table>\n" + row * (SIZE // len(row)) + "</table></body></html>\n")
    raw = one_body_message("text/html", markup)
    facts, peak = classification_peak(raw)
    assert facts.case_numbers == (CASE,)
    assert peak <= 2.0 * len(raw), peak / len(raw)


def test_a_quoted_reply_is_not_copied_for_its_words(traced: None) -> None:
    """A plain-text reply quoting a long text ("> " on every line) is read by the agency-check
    reader as another author's words (`restricted.words`). Its plural pass held every piece
    between two matches as an object of its own, and the text was copied without its quote
    marks first: 7.23x beside the message measured, 3.95x with the pass a slice at a time and
    the marks left in; 2.00x now that the quoted segment is a stretch of the body, its words
    pieces never joined, and its quoted lines read for identifiers a window at a time. The
    case number and the NHS number wrapped in the quote are found (`normalise.quoted_windows`)."""
    line = "The family meeting on 12/03/2024 went well; the children are settled at school.\n"
    text = (f"Thanks, see below.\n\nOn Monday Jo wrote:\n> Case {CASE[:4]}\n> {CASE[4:]} and"
            " NHS 943 476\n> 5919\n" + "".join("> " + line for _ in range(SIZE // len(line))))
    raw = one_body_message("text/plain", text)
    facts, peak = classification_peak(raw)
    assert facts.case_numbers == (CASE,) and facts.identifiers == ("nhs-number",)
    assert peak <= 2.2 * len(raw), peak / len(raw)


@pytest.mark.parametrize(("line", "bound"), [
    ("The family meeting on 12/03/2024 went well; the children are settled at school.\n", 0.8),
    ("ab\n> 12\n", 0.3),
], ids=["prose", "short-lines"])
def test_a_quoted_replys_identifiers_are_looked_for_a_window_at_a_time(
        traced: None, line: str, bound: float) -> None:
    """The identifiers in a reply's quoted lines are looked for in a window of about 1 MiB of
    its text at a time (normalise.quoted_windows), not in its quoted lines made one text:
    beside the body's text and its scan, the identifier stage holds 0.56x measured for prose
    (2.90x with the quoted lines whole) and 0.11x for lines of two characters (12.4x: each
    line found was an object of its own, all at once). The case number and the NHS number
    wrapped in the quote are found."""
    quote = "".join("> " + line for _ in range(SIZE // len(line)))
    text = fold(f"Thanks, see below.\n\nOn Monday Jo wrote:\n> Case {CASE[:4]}\n> {CASE[4:]} "
                f"and NHS 943 476\n> 5919\n{quote}")
    texts = [content._Text(content._Source.BODY, text)]
    scans = [content._scan(text, RULES)]
    content._identifiers(texts, RULES, scans)  # first use: the scan databases
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    numbers, kinds = content._identifiers(texts, RULES, scans)
    peak = tracemalloc.get_traced_memory()[1] - start
    assert numbers == (CASE,) and kinds == {"nhs-number"}
    assert peak <= bound * len(text), peak / len(text)


def one_body_message(content_type: str, text: str) -> bytes:
    """A message whose one body is `text` (7bit, its line ends made CRLF)."""
    head = (f"From: {STAFF}\r\nTo: {COLLEAGUE}\r\nSubject: Notes\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {content_type}; charset=utf-8\r\n\r\n")
    return head.encode() + text.replace("\n", "\r\n").encode()


def classification_peak(raw: bytes) -> tuple[MessageFacts, int]:
    """`classify_message` of `raw` (after a first call, for the scan databases), and its
    traced peak beyond what was in use before it."""
    classify_message(raw, RULES, SteppingClock())
    gc.collect()
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    facts = classify_message(raw, RULES, SteppingClock())
    return facts, tracemalloc.get_traced_memory()[1] - start
