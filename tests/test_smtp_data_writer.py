"""The relay's own DATA writer: aiosmtplib's bytes and errors, over a real sink."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from gateway.smtp.aiosmtpd_private import command_stream
from tests.certs import ServerCert
from tests.sink import Sink, Step
from transports.aiosmtplib_private import reply_expected
from transports.base import NotReady
from transports.smtp_data_writer import (
    END_OF_DATA,
    SLICE,
    dot_stuff,
    has_unsafe_bytes,
    send_data,
)

DOTTY = [
    b"Subject: s\r\n\r\nplain\r\n",
    b".starts with a dot\r\n",
    b"Subject: s\r\n\r\n.\r\n..\r\n.x\r\nmid.dle\r\n.\r\n",
    b"Subject: s\r\n\r\nno final line ending",
    b"Subject: s\r\n\r\nends with a dot line\r\n.",
    b"",
]


def aiosmtplib_wire(data: bytes) -> bytes:
    """What aiosmtplib's SMTP.data() puts on the wire before the final ".\\r\\n"."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))


@pytest.mark.parametrize("data", DOTTY)
def test_dot_stuffing_matches_aiosmtplib(data: bytes) -> None:
    """For CRLF content, dot_stuff gives exactly the bytes aiosmtplib would have sent."""
    assert dot_stuff(data) == aiosmtplib_wire(data)


@pytest.mark.parametrize("data", [b"a\nb\r\n", b"a\rb\r\n", b"a\x00b\r\n", b"a\r\n\r"])
def test_bare_line_endings_and_nul_are_unsafe(data: bytes) -> None:
    """Bare LF, bare CR and NUL are each found; strict CRLF content is not flagged."""
    assert has_unsafe_bytes(data)
    cleaned = data.replace(b"\x00", b"").replace(b"\r", b"").replace(b"\n", b"\r\n")
    assert not has_unsafe_bytes(cleaned)


@pytest.fixture
async def client(sink: Sink) -> AsyncIterator[aiosmtplib.SMTP]:
    smtp = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=5, start_tls=False)
    await smtp.connect()
    yield smtp
    smtp.close()


async def transaction(smtp: aiosmtplib.SMTP, data: bytes) -> aiosmtplib.SMTPResponse:
    await smtp.mail("jo.smith@cafcass.gov.uk")
    await smtp.rcpt("a@example.org")
    return await send_data(smtp, data)


async def test_round_trip_through_a_real_sink(sink: Sink, client: aiosmtplib.SMTP) -> None:
    """Every dotted message arrives unchanged (a final CRLF added), one after another on one
    connection, so every reply was paired with its own command."""
    for data in DOTTY[:-1]:
        response = await transaction(client, data)
        assert response.code == 250
    received = [m.data for m in sink.messages]
    assert received == [d if d.endswith(b"\r\n") else d + b"\r\n" for d in DOTTY[:-1]]
    assert sink.connections == 1


async def test_refused_data_raises_and_connection_stays_usable(
    sink: Sink, client: aiosmtplib.SMTP
) -> None:
    """A 554 after the content is an SMTPDataError; the next transaction still works."""
    sink.fail(Step.DATA, "554 5.6.0 no thanks", times=1)
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await transaction(client, DOTTY[2])
    assert refused.value.code == 554
    await client.rset()
    assert (await transaction(client, DOTTY[0])).code == 250
    assert [m.data for m in sink.messages] == [DOTTY[0]]


async def test_drop_after_content_closes_the_connection(
    sink: Sink, client: aiosmtplib.SMTP
) -> None:
    """A connection dropped before the final reply raises and is not left open for reuse."""
    sink.drop(Step.DATA, times=1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await transaction(client, DOTTY[0])
    assert not client.is_connected
    assert sink.messages == [] and [m.data for m in sink.unanswered] == [DOTTY[0]]


async def test_end_of_data_waits_for_ready(sink: Sink, client: aiosmtplib.SMTP) -> None:
    """The content goes out at once; the end-of-data line only once `ready` is done."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(ready.set_result, None)
    await client.mail("jo.smith@cafcass.gov.uk")
    await client.rcpt("a@example.org")
    assert (await send_data(client, DOTTY[2], ready)).code == 250
    assert [m.data for m in sink.messages] == [DOTTY[2]]


@pytest.mark.parametrize("already", [True, False])
async def test_a_failed_ready_ends_the_connection_before_the_end_of_data(
        sink: Sink, client: aiosmtplib.SMTP, already: bool) -> None:
    """Nothing is accepted: the connection is closed with the data unfinished."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failure = RuntimeError("the audit trail cannot be written")
    if already:
        ready.set_exception(failure)
    else:
        asyncio.get_running_loop().call_soon(ready.set_exception, failure)
    await client.mail("jo.smith@cafcass.gov.uk")
    await client.rcpt("a@example.org")
    with pytest.raises(NotReady):
        await send_data(client, DOTTY[0], ready)
    assert not client.is_connected and sink.messages == []
    assert ready.exception() is failure  # looked at, never replaced


async def test_unsafe_content_is_refused_before_data(sink: Sink, client: aiosmtplib.SMTP) -> None:
    """Content with a bare LF raises ValueError and DATA is never sent."""
    with pytest.raises(ValueError):
        await transaction(client, b"Subject: s\r\n\r\nsmuggled\n.\nMAIL FROM:<x@y>\r\n")
    await client.rset()
    assert (await transaction(client, DOTTY[1])).code == 250
    assert [m.data for m in sink.messages] == [DOTTY[1]]


def big_message(size: int) -> bytes:
    """About `size` octets of CRLF text in which many lines start with a dot."""
    line = b".a line that starts with a dot, as quoted replies and signatures do\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


async def test_large_content_arrives_unchanged_in_slices(sink: Sink,
                                                         client: aiosmtplib.SMTP) -> None:
    """Content many slices long, dotted lines across slice boundaries, arrives byte for byte."""
    data = big_message(5 * SLICE + 12345)
    assert (await transaction(client, data)).code == 250
    assert [m.data for m in sink.messages] == [data]


async def test_large_content_over_starttls(tls_sink: Sink, server_cert: ServerCert) -> None:
    """Through TLS (the relay's usual path, with its own flow control) the slices arrive whole."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=tls_sink.port, timeout=10, start_tls=True,
                           tls_context=server_cert.client_context())
    await smtp.connect()
    try:
        data = big_message(3 * 1024 * 1024)
        assert (await transaction(smtp, data)).code == 250
        assert [m.data for m in tls_sink.messages] == [data]
    finally:
        smtp.close()


class EarlyUpstream(SMTP):
    """aiosmtpd, answering DATA's 354, reading the content's first line and then answering
    `early` (or closing) and reading no more: an upstream that refuses a message while it is
    still being sent."""

    def __init__(self, early: str | None, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.early = early
        self.release = asyncio.Event()

    async def smtp_DATA(self, arg: str) -> None:
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        await command_stream(self).readline()
        if self.early is None:
            assert self.transport is not None
            self.transport.abort()
            return
        await self.push(self.early)
        await self.release.wait()  # reads nothing more until the test ends


@pytest.fixture
async def early_upstream(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, list[Any]]]:
    """An `EarlyUpstream` on port 0 answering `request.param`; yields its port."""
    sessions: list[EarlyUpstream] = []

    def session() -> EarlyUpstream:
        sessions.append(EarlyUpstream(request.param, object(), hostname="upstream",
                                      loop=asyncio.get_running_loop()))
        return sessions[-1]

    server = await asyncio.get_running_loop().create_server(session, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], sessions
    server.close()
    for upstream in sessions:
        upstream.release.set()
        if upstream.transport is not None:
            upstream.transport.abort()
    await server.wait_closed()


@pytest.mark.parametrize(("early_upstream", "expected"), [
    ("552 5.3.4 Message too big", aiosmtplib.SMTPDataError),
    ("250 2.0.0 Too soon to be true", aiosmtplib.SMTPDataError),
    (None, aiosmtplib.SMTPServerDisconnected),
], indirect=["early_upstream"])
async def test_reply_while_content_is_sent_is_not_missed(
    early_upstream: tuple[int, list[Any]], expected: type[Exception]
) -> None:
    """An upstream that answers (or hangs up) before the content is all sent, and then reads
    no more, ends the transaction at once with its own answer, never a timeout; even a 250
    does not count as delivered, and the connection is not kept for reuse."""
    port, _ = early_upstream
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await smtp.connect()
    try:
        with pytest.raises(expected) as raised:
            await transaction(smtp, big_message(32 * 1024 * 1024))  # more than sockets buffer
        if isinstance(raised.value, aiosmtplib.SMTPDataError):
            assert raised.value.code in (552, 250)
        assert not smtp.is_connected
    finally:
        smtp.close()


async def discarding_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal SMTP server that accepts everything and keeps none of the content."""
    writer.write(b"220 discard\r\n")
    while line := await reader.readline():
        if line.upper().startswith(b"DATA"):
            writer.write(b"354 go ahead\r\n")
            tail = b""
            while not tail.endswith(b"\r\n.\r\n"):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                tail = (tail + chunk)[-5:]
        writer.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")
    writer.close()
    await writer.wait_closed()


async def test_sending_holds_a_bounded_part_of_the_content() -> None:
    """While 16 MB go out, the writer holds at most a few slices more than the message: the
    transport is never handed more than the socket has taken room for."""
    sessions: list[asyncio.Task[None]] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sessions.append(asyncio.ensure_future(discarding_upstream(reader, writer)))

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    data = b"Subject: big\r\n\r\n" + b"plain text, no dot at a line start\r\n" * 450_000
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    await smtp.connect()
    try:
        await smtp.mail("jo.smith@cafcass.gov.uk")
        await smtp.rcpt("a@example.org")
        tracemalloc.start()
        try:
            response = await send_data(smtp, data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.code == 250
        assert peak < 8 * SLICE < len(data) / 4
        await smtp.quit()
    finally:
        smtp.close()
        server.close()
        await server.wait_closed()
        await asyncio.gather(*sessions)


@pytest.mark.parametrize("size", [100, 2 * SLICE + 7])
async def test_a_reply_is_expected_before_the_end_of_data_is_written(
        sink: Sink, client: aiosmtplib.SMTP, size: int) -> None:
    """aiosmtplib drops a reply that arrives while none is expected. The end-of-data line is
    written only once the read of the reply has begun, whatever order an event loop runs its
    callbacks and reads its sockets in (a short message wrote it in the same step that
    started the read, and under uvloop its reply came before the read began)."""
    protocol = client.protocol
    assert protocol is not None
    expected_at_end: list[bool] = []
    write = protocol.write

    def watched(data: bytes) -> None:
        if data == END_OF_DATA or data.endswith(b"\r\n" + END_OF_DATA):
            expected_at_end.append(reply_expected(protocol))
        write(data)

    protocol.write = watched  # type: ignore[method-assign]
    lines = b"x" * 70 + b"\r\n"
    response = await transaction(client, b"Subject: s\r\n\r\n" + lines * (size // len(lines)))
    assert response.code == 250
    assert expected_at_end == [True]
