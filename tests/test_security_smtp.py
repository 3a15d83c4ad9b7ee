"""The SMTP boundary under attack: paths that hide an address, header-only addresses, Bcc,
pipelined transactions, and hostile input (SECURITY.md items 4, 8, 10, 12; CVE-2023-27043).

Every test drives the real gateway over real sockets (STARTTLS with a certificate made in the
test, AUTH) with a real upstream sink, and looks at what the sink received.
"""

from __future__ import annotations

import base64
import smtplib
import socket
from collections.abc import AsyncIterator
from email.utils import parseaddr
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter
from gateway.smtp.data import MAX_HEADER_BYTES
from tests.gateway_harness import (
    CLIENT_TIMEOUT,
    OTHER_STAFF,
    STAFF,
    Harness,
    message,
    running_gateway,
)
from tests.sink import Sink

COLLEAGUE = "colleague@cafcass.gov.uk"
MAX_SIZE = 1_000_000

# RCPT paths that a lax parser reads as a different (here: secure) address, or that hide a
# route, a comment or a list. Each must be refused; none may become a recipient.
HIDING_PATHS = [
    "<jo@nhs.net)<victim@evil.example>>",  # CVE-2023-27043: parseaddr reads jo@nhs.net
    "jo@nhs.net)<victim@evil.example>",
    '<"jo@nhs.net"@evil.example>',  # quoted local part holding a secure address
    "<jo@nhs.net@evil.example>",
    "<@nhs.net:victim@evil.example>",  # source route (aiosmtpd's parser drops it)
    "<@a.example,@nhs.net:victim@evil.example>",
    "<victim%nhs.net@evil.example>",  # percent hack
    "<evil.example!victim@nhs.net>",  # bang path
    "<victim@[127.0.0.1]>",  # address literal
    "<jo(@nhs.net)@evil.example>",  # comment inside the path
    "<jo@evil.example (jo@nhs.net)>",  # comment after the address
    "< victim@nhs.net >",  # spaces inside the angle brackets
    "<a@nhs.net,b@evil.example>",  # a list
    "<jo@nhs.net>,<b@evil.example>",
    "<victim@nhs.net\x0b>",  # a control character
    "<victim@nhs.nеt>",  # Cyrillic "е" in the secure domain: a homograph
]


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink, max_message_size=MAX_SIZE,
                               max_recipients=5) as harness:
        yield harness


def _conversation(gw: Harness, wire: bytes) -> list[tuple[int, bytes]]:
    """Authenticate, send `wire` (ending in QUIT) in one write, and read every reply."""
    replies: list[tuple[int, bytes]] = []
    with gw.connect() as client:
        client.send(wire)
        while not replies or replies[-1][0] != 221:
            try:
                replies.append(client.getreply())
            except smtplib.SMTPServerDisconnected:
                break
    return replies


def _transaction(sender: str, recipients: list[str], data: bytes) -> bytes:
    """One whole SMTP transaction as a pipelining client (or an attacker) writes it."""
    lines = [f"MAIL FROM:<{sender}>".encode()]
    lines += [f"RCPT TO:<{r}>".encode() for r in recipients]
    lines += [b"DATA"]
    return b"\r\n".join(lines) + b"\r\n" + data + b".\r\n"


async def test_paths_that_hide_another_address_never_become_recipients(gw: Harness) -> None:
    """Every RCPT path with a route, comment, quote, literal, list or misparse is refused."""
    assert parseaddr("jo@nhs.net)<victim@evil.example>")[1] == "jo@nhs.net"  # unpatched

    def talk() -> tuple[dict[str, tuple[int, bytes]], dict[str, tuple[int, bytes]]]:
        answers: dict[str, tuple[int, bytes]] = {}
        with gw.connect() as client:
            assert client.mail(STAFF)[0] == 250
            for path in HIDING_PATHS:
                client.send(f"RCPT TO:{path}\r\n".encode())
                answers[path] = client.getreply()
            client.rset()
            refused = client.sendmail(STAFF, [COLLEAGUE], message())
        return answers, refused

    answers, refused = await gw.run(talk)
    accepted = {path: reply for path, reply in answers.items() if reply[0] < 500}
    assert accepted == {}
    assert refused == {}
    assert [m.rcpt_tos for m in gw.sink.messages] == [(COLLEAGUE,)]


async def test_mail_from_with_a_source_route_is_refused(gw: Harness) -> None:
    """A sender path with a source route is refused, not simplified to the login's address."""

    def talk() -> int:
        with gw.connect() as client:
            return client.docmd(f"MAIL FROM:<@evil.example:{STAFF}>")[0]

    assert await gw.run(talk) == 553


async def test_unreadable_paths_are_refused_not_deferred(gw: Harness) -> None:
    """A path the parser cannot read at all (a lone "<") is a 553, not a "try later"."""

    def talk() -> tuple[int, int]:
        with gw.connect() as client:
            return client.docmd("MAIL FROM:<")[0], client.docmd("MAIL FROM:<<>")[0]

    assert await gw.run(talk) == (553, 553)


async def test_malformed_path_refusal_says_what_to_do_and_names_the_rule(gw: Harness) -> None:
    """The 553 for a disguised path carries the invalid-address rule's sentence, and its audit
    event names the rule (with the rule's citation)."""

    def talk() -> tuple[int, bytes]:
        with gw.connect() as client:
            return client.docmd(f"MAIL FROM:<@evil.example:{STAFF}>")

    code, text = await gw.run(talk)
    rule = gw.app.policy.rule("invalid-address")
    assert code == 553 and text.startswith(b"5.1.3 ")
    assert rule.sentence.split(".")[0].encode() in text.replace(b"\n5.1.3 ", b" ")
    events = [e for e in gw.app.audit.iterate(EventFilter()) if e.kind == "protocol-refusal"]
    assert events and events[-1].rule == "invalid-address"
    assert events[-1].citation == rule.citation


async def test_header_only_addresses_never_become_recipients(gw: Harness) -> None:
    """To, Cc, Bcc and Resent-* addresses that are not in the envelope receive nothing."""
    outsiders = ["mum@example.org", "dad@example.net", "judge@nhs.net", "hidden@example.com",
                 "resent@example.org", "folded@example.org"]
    data = message(to=[COLLEAGUE, "mum@example.org"], extra_headers=[
        "Cc: dad@example.net, judge@nhs.net",
        "Bcc: hidden@example.com",
        "Resent-To: resent@example.org",
        "Resent-Bcc:",
        " folded@example.org",
    ])
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
    [received] = gw.sink.messages
    assert received.rcpt_tos == (COLLEAGUE,)
    head = received.data.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nbcc" not in head and b"resent-bcc" not in head
    for gone in ("hidden@example.com", "folded@example.org"):
        assert gone.encode() not in received.data
    [decision] = [e for e in gw.app.audit.iterate(EventFilter()) if e.kind == "decision"]
    assert list(decision.recipients) == [COLLEAGUE]
    assert not set(outsiders) & set(decision.recipients)


async def test_resent_bcc_never_leaves_a_split_copy(gw: Harness) -> None:
    """On a split (protected mail to two external recipients) no copy carries Bcc fields."""
    first, second = "clerk@court.nhs.net", "officer@met.pnn.police.uk"
    gw.verify(first)
    gw.verify(second)
    data = message(to=[first, second], subject="Report ZC12C00123", extra_headers=[
        "Bcc: hidden@example.com", "Resent-Bcc: resent-hidden@example.com",
    ])
    assert await gw.run(gw.send, STAFF, [first, second], data) == {}
    assert sorted(m.rcpt_tos for m in gw.sink.messages) == [(first,), (second,)]
    for received in gw.sink.messages:
        assert b"hidden@example.com" not in received.data
        head = received.data.split(b"\r\n\r\n", 1)[0]
        names = {line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")
                 if line[:1] not in (b" ", b"\t")}  # not a check on values: the decision id
        assert not {b"bcc", b"resent-bcc"} & names  # is random hex and may spell "bcc"


async def test_data_after_a_refused_mail_is_not_a_message(gw: Harness) -> None:
    """Pipelined DATA after a refused MAIL is read as commands; smuggled ones are checked."""
    smuggled = (f"MAIL FROM:<{OTHER_STAFF}>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
                "stolen\r\n").encode()
    wire = _transaction(OTHER_STAFF, [COLLEAGUE], smuggled) + b"QUIT\r\n"
    replies = await gw.run(_conversation, gw, wire)
    codes = [code for code, _ in replies]
    assert codes[:6] == [553, 503, 503, 553, 503, 503]
    assert 250 not in codes and 354 not in codes
    assert gw.sink.messages == []


async def test_every_pipelined_transaction_gets_the_sender_checks(gw: Harness) -> None:
    """After a refused and an accepted transaction, a third with a foreign sender is refused."""
    protected = message(to=["mum@example.org"], subject="Report ZC12C00123")
    wire = (_transaction(STAFF, ["mum@example.org"], protected)
            + _transaction(STAFF, [COLLEAGUE], message())
            + f"MAIL FROM:<{OTHER_STAFF}>\r\nRCPT TO:<{COLLEAGUE}>\r\nQUIT\r\n".encode())
    replies = await gw.run(_conversation, gw, wire)
    codes = [code for code, _ in replies]
    assert codes == [250, 250, 354, 550, 250, 250, 354, 250, 553, 503, 221]
    [received] = gw.sink.messages
    assert received.mail_from == STAFF and received.rcpt_tos == (COLLEAGUE,)


async def test_recipient_limit_counts_only_accepted_recipients(gw: Harness) -> None:
    """The sixth accepted recipient gets 452; refused ones do not use up the limit."""
    accepted = [f"person{i}@cafcass.gov.uk" for i in range(6)]
    wire = (f"MAIL FROM:<{STAFF}>\r\nRCPT TO:<IMCEAFAX-+441234567890@cafcass.gov.uk>\r\n".encode()
            + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in accepted) + b"RSET\r\nQUIT\r\n")
    codes = [code for code, _ in await gw.run(_conversation, gw, wire)]
    assert codes[0] == 250 and codes[1] >= 550
    assert codes[2:8] == [250] * 5 + [452]
    assert gw.sink.messages == []


def _hostile_exchanges(gw: Harness) -> list[bytes]:
    """Send one hostile input per connection; return every reply text the gateway gave."""
    texts: list[bytes] = []
    hostile = [
        b"MAIL FROM:<\xff\xfe@\xc0.example>\r\n",
        b"MAIL FROM:<" + b"a" * 5000 + b"@example.org>\r\n",
        b"MAIL FROM:<jo\x00@example.org>\r\n",
        b"AUTH PLAIN !!!not-base64!!!\r\n",
        b"EHLO " + b"x" * 3000 + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",  # a TLS hello inside TLS
        b"MAIL FROM:<" + STAFF.encode() + b"> SIZE=99999999999999999999999\r\n",
        b"DATA\r\n",
    ]
    for wire in hostile:
        try:
            with gw.connect(login=None if wire.startswith(b"AUTH") else STAFF) as client:
                client.send(wire)
                texts.append(client.getreply()[1])
        except smtplib.SMTPServerDisconnected:
            texts.append(b"")
    # A client that vanishes in the middle of DATA.
    client = gw.connect()
    try:
        client.mail(STAFF)
        client.rcpt(COLLEAGUE)
        client.docmd("DATA")
        client.send(b"From: <" + STAFF.encode() + b">\r\n\r\nhalf a mess")
    finally:
        client.close()  # no QUIT: it would be read as part of the data
    # Plain bytes that are not SMTP at all, on a raw socket.
    with socket.create_connection((gw.host, gw.gateway.smtp_port), CLIENT_TIMEOUT) as raw:
        raw.recv(1024)
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        texts.append(raw.recv(4096))
    return texts


async def test_gateway_survives_hostile_input_and_never_shows_internals(gw: Harness) -> None:
    """Garbage, overlong and binary commands, a dropped DATA: replies stay plain, mail flows."""
    texts = await gw.run(_hostile_exchanges, gw)
    for text in texts:
        for internal in (b"Traceback", b".py", b"Exception", b"object at", b"sqlite"):
            assert internal not in text, text
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], message()) == {}
    assert [m.rcpt_tos for m in gw.sink.messages] == [(COLLEAGUE,)]


async def test_over_nested_mime_is_refused_whole(gw: Harness) -> None:
    """A message nested deeper than the MIME limit is refused, even to a colleague."""
    entity = b"Content-Type: text/plain\r\n\r\nhello"
    for level in range(40):
        boundary = f"n{level}".encode()
        entity = (b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n--"
                  + boundary + b"\r\n" + entity + b"\r\n--" + boundary + b"--")
    head = message().split(b"Content-Type:", 1)[0]
    code, text = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE],
                              head + entity + b"\r\n.\r\n")
    assert code == 550 and b"could not read this message safely" in text
    assert gw.sink.messages == []



async def test_oversized_header_block_is_refused_before_parsing(gw: Harness) -> None:
    """A header block over the limit is 552 and nothing is sent; a large one under it goes."""
    folded = b"Cc: " + b",\r\n ".join(b"a%d@example.org" % i for i in range(15_000)) + b"\r\n"
    assert len(folded) > MAX_HEADER_BYTES
    head, body = message().split(b"\r\n\r\n", 1)
    code, text = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE],
                              head + b"\r\n" + folded + b"\r\n" + body + b".\r\n")
    assert code == 552 and b"header too large" in text
    assert gw.sink.messages == []
    [event] = [e for e in gw.app.audit.iterate(EventFilter()) if e.kind == "refusal"]
    assert event.rule == "message-format" and event.recipients == (COLLEAGUE,)
    assert event.metadata["reply"] == "552" and event.sender == STAFF
    roomy = b"Cc: " + b",\r\n ".join(b"a%d@example.org" % i for i in range(2_000)) + b"\r\n"
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], head + b"\r\n" + roomy + b"\r\n" + body) == {}
    assert [m.rcpt_tos for m in gw.sink.messages] == [(COLLEAGUE,)]


@pytest.mark.parametrize("exchange", [
    [b"AUTH LOGIN", b"am8uc21pdGhAY2FmY2Fzcy5nb3YudWs=", b"d3Jvbmc="],  # wrong password
    [b"AUTH PLAIN " + base64.b64encode(b"\x00" + STAFF.encode() + b"\x00wrong")],
    [b"AUTH PLAIN " + base64.b64encode(b"no-separators-at-all")],
    [b"AUTH PLAIN", b"*"],  # the client cancels
    [b"AUTH LOGIN", b"*"],
])
async def test_every_failed_auth_exchange_gets_a_prompt_reply(gw: Harness,
                                                             exchange: list[bytes]) -> None:
    """Wrong, malformed and cancelled AUTH exchanges of both mechanisms are answered, not hung."""

    def talk() -> int:
        with gw.connect(login=None) as client:
            assert client.sock is not None
            client.sock.settimeout(5)
            code = 0
            for line in exchange:
                client.send(line + b"\r\n")
                code = client.getreply()[0]
            return code

    code = await gw.run(talk)
    assert code in (501, 535)
