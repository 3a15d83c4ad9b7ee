"""Hostile DATA: SMTP smuggling forms, NUL, oversize and over-long lines (SECURITY.md 1, 2, 12)."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink

COLLEAGUE = "colleague@cafcass.gov.uk"
MAX_SIZE = 20_000

HEAD = (b"From: <jo.smith@cafcass.gov.uk>\r\nTo: <colleague@cafcass.gov.uk>\r\n"
        b"Subject: test\r\n\r\n")
SMUGGLED = (b"MAIL FROM:<jo.smith@cafcass.gov.uk>\r\nRCPT TO:<victim@example.org>\r\n"
            b"DATA\r\nFrom: jo.smith@cafcass.gov.uk\r\n\r\nsmuggled\r\n.\r\n")


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink, max_message_size=MAX_SIZE) as harness:
        yield harness


@pytest.mark.parametrize(
    "end_of_data",
    [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r"],
    ids=["lf-dot-lf", "lf-dot-crlf", "crlf-dot-lf", "cr-dot-cr", "cr-dot-crlf", "crlf-dot-cr"],
)
async def test_smuggling_forms_are_refused_and_nothing_leaves(
    gw: Harness, end_of_data: bytes
) -> None:
    """A fake end of data hidden behind bare CR or LF is refused, and nothing is smuggled."""
    wire = HEAD + b"first part" + end_of_data + SMUGGLED
    code, text = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE], wire)
    assert code == 554 and b"bare CR or LF" in text
    assert gw.sink.messages == []


async def test_nul_in_data_is_refused(gw: Harness) -> None:
    """A NUL byte in the message is refused."""
    code, _ = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE], HEAD + b"a\x00b\r\n.\r\n")
    assert code == 554
    assert gw.sink.messages == []


async def test_dot_stuffed_lines_are_relayed_exactly(gw: Harness) -> None:
    """Dot-stuffing is undone once on the way in and redone on the way out: same bytes arrive."""
    body = b"line one\r\n.\r\n..two dots\r\n.MAIL FROM:<x@example.org>\r\nend\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    code, _ = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE], HEAD + stuffed + b".\r\n")
    assert code == 250
    (received,) = gw.sink.messages
    assert received.data.endswith(b"\r\n\r\n" + body)
    assert b"\r" not in received.data.replace(b"\r\n", b"")
    assert b"\n" not in received.data.replace(b"\r\n", b"")


async def test_oversize_message_gets_552_and_nothing_leaves(gw: Harness) -> None:
    """SIZE is announced in EHLO and enforced while streaming: 552, nothing relayed."""

    def talk() -> tuple[str, tuple[int, bytes]]:
        with gw.connect() as client:
            features = client.ehlo_resp.decode() if client.ehlo_resp else ""
            client.mail(STAFF)
            client.rcpt(COLLEAGUE)
            client.docmd("DATA")
            client.send(HEAD + (b"x" * 70 + b"\r\n") * (MAX_SIZE // 70 + 10) + b".\r\n")
            return features, client.getreply()

    features, (code, _) = await gw.run(talk)
    assert f"SIZE {MAX_SIZE}" in features
    assert code == 552
    assert gw.sink.messages == []


async def test_declared_oversize_is_refused_at_mail(gw: Harness) -> None:
    """MAIL FROM with SIZE= over the limit is refused before any data."""

    def talk() -> int:
        with gw.connect() as client:
            return client.mail(STAFF, [f"SIZE={MAX_SIZE + 1}"])[0]

    assert await gw.run(talk) == 552


async def test_overlong_line_is_refused(gw: Harness) -> None:
    """A line longer than RFC 5321's 1000 octets is refused, nothing relayed."""
    wire = HEAD + b"y" * 2000 + b"\r\n.\r\n"
    code, _ = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE], wire)
    assert code == 500
    assert gw.sink.messages == []


async def test_gateway_survives_and_serves_after_hostile_input(gw: Harness) -> None:
    """After a refused smuggling attempt the same gateway still delivers ordinary mail."""
    await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE], HEAD + b"x\n.\n" + SMUGGLED)
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], message()) == {}
    assert len(gw.sink.messages) == 1


async def test_empty_message_is_refused(gw: Harness) -> None:
    """An empty message is a permanent refusal, not a retry loop."""
    code, _ = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE], b".\r\n")
    assert code == 554
    assert gw.sink.messages == []


async def test_failure_while_deciding_is_451_and_nothing_leaves(gw: Harness) -> None:
    """With the audit store unavailable nothing can be recorded, so nothing is sent: 451."""
    gw.app.audit.close()
    with capture_logs() as logs:
        code, text = await gw.run(gw.send_raw_data, STAFF, [COLLEAGUE], message() + b".\r\n")
    assert code == 451 and b"Traceback" not in text and b"Error" not in text
    assert gw.sink.messages == []
    (failed,) = [e for e in logs if e["event"] == "message-failed"]
    assert failed["error"] and failed["sender"] == STAFF
    assert "Meeting" not in repr(logs) and "call me" not in repr(logs)  # no subject, no body


async def test_idle_client_is_disconnected(tmp_path: Path, sink: Sink) -> None:
    """A client that says nothing is told 421 4.4.2 and disconnected after smtp.idle_timeout."""
    async with running_gateway(tmp_path, sink, idle_timeout=0.3) as gw:

        def wait_for_close() -> bytes:
            with socket.create_connection((gw.host, gw.gateway.smtp_port), timeout=10) as conn:
                reader = conn.makefile("rb")
                assert reader.readline().startswith(b"220 ")
                return reader.read()  # blocks until the gateway closes the connection

        assert await gw.run(wait_for_close) == (
            b"421 4.4.2 Idle for too long; closing the connection\r\n")


async def test_the_idle_timer_does_not_run_while_the_gateway_works(tmp_path: Path,
                                                                    sink: Sink) -> None:
    """The idle timeout is the client's silence, not the gateway's work: an upstream that
    answers the end of data later than `smtp.idle_timeout` still gets the client its 250."""
    async with running_gateway(tmp_path, sink, idle_timeout=0.5) as gw:
        sink.late_reply(delay=1.5, times=1)  # three times the idle timeout
        assert await gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"],
                            message(to=["colleague@cafcass.gov.uk"])) == {}


async def test_a_client_sending_its_data_slowly_is_not_idle(tmp_path: Path,
                                                             sink: Sink) -> None:
    """Each piece of a message's data starts the idle timer again: a message that takes
    longer than `smtp.idle_timeout` to arrive, a piece at a time, is taken; a client that
    falls silent in the middle of its data is told 421 4.4.2 and closed."""
    async with running_gateway(tmp_path, sink, idle_timeout=1.0) as gw:

        def send_slowly(stall: bool) -> bytes:
            data = message(to=["colleague@cafcass.gov.uk"],
                           body="\r\n".join(f"Note {n} of the visit." for n in range(25)))
            with gw.connect() as client:
                assert client.mail(STAFF)[0] == 250
                assert client.rcpt("colleague@cafcass.gov.uk")[0] == 250
                assert client.docmd("DATA")[0] == 354
                for line in data.splitlines(keepends=True)[:-1]:
                    client.send(line)
                    time.sleep(0.1)  # the client's pace: 3 s for the whole, 0.1 s between
                if stall:
                    return client.sock.recv(1024)  # says nothing more: the gateway ends it
                client.send(data.splitlines(keepends=True)[-1] + b".\r\n")
                code, _ = client.getreply()
                return str(code).encode()

        assert await gw.run(send_slowly, False) == b"250"
        assert await gw.run(send_slowly, True) == (
            b"421 4.4.2 Idle for too long; closing the connection\r\n")
    assert len(sink.messages) == 1

