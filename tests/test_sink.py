"""The test sink itself: it receives exactly, speaks real TLS, and misbehaves when told to."""

from __future__ import annotations

import asyncio
import socket

import aiosmtplib
import pytest

from tests.certs import ServerCert
from tests.sink import Sink, Step

MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: t\r\n\r\n.dotted line\r\nbody\r\n"


def client(sink: Sink, **kwargs: object) -> aiosmtplib.SMTP:
    options: dict[str, object] = {"hostname": sink.host, "port": sink.port, "timeout": 5.0}
    options.update(kwargs)
    return aiosmtplib.SMTP(**options)  # type: ignore[arg-type]


async def test_stores_envelope_and_exact_bytes(sink: Sink) -> None:
    """A message arrives with its envelope and its bytes unchanged (dot-unstuffed)."""
    async with client(sink, start_tls=False) as smtp:
        await smtp.sendmail("a@example.org", ["b@example.org", "c@example.org"], MESSAGE)
    [got] = sink.messages
    assert got.mail_from == "a@example.org"
    assert got.rcpt_tos == ("b@example.org", "c@example.org")
    assert got.data == MESSAGE
    assert sink.connections == 1 and got.connection == 1 and not got.tls


async def test_starttls_with_generated_ca(tls_sink: Sink, server_cert: ServerCert) -> None:
    """STARTTLS works with a verifying client that trusts only the test CA."""
    smtp = client(tls_sink, tls_context=server_cert.client_context(), start_tls=True)
    async with smtp:
        await smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    assert tls_sink.messages[0].tls


async def test_requires_starttls_before_mail(tls_sink: Sink) -> None:
    """A sink with TLS refuses MAIL on a plaintext session."""
    async with client(tls_sink, start_tls=False) as smtp:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    assert caught.value.code == 530
    assert tls_sink.messages == []


async def test_reply_fault_wears_off(sink: Sink) -> None:
    """A fault limited to one hit answers once, then the sink behaves."""
    sink.fail(Step.RCPT, "451 4.3.0 try later", times=1)
    async with client(sink, start_tls=False) as smtp:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
        await smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    assert len(sink.messages) == 1


async def test_recipient_fault_strikes_one_address(sink: Sink) -> None:
    """A fault for one recipient refuses that address alone."""
    sink.fail(Step.RCPT, "550 5.1.1 no such user", recipient="x@example.org")
    async with client(sink, start_tls=False) as smtp:
        rcpts = ["x@example.org", "b@example.org"]
        errors, _ = await smtp.sendmail("a@example.org", rcpts, MESSAGE)
    assert errors["x@example.org"].code == 550
    assert sink.messages[0].rcpt_tos == ("b@example.org",)


async def test_drop_after_data_keeps_bytes_unanswered(sink: Sink) -> None:
    """Dropping at DATA closes the connection after the bytes arrived, without a reply."""
    sink.drop(Step.DATA)
    async with client(sink, start_tls=False) as smtp:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    assert sink.messages == []
    assert [m.data for m in sink.unanswered] == [MESSAGE]


async def test_hang_times_out_the_client(sink: Sink) -> None:
    """A hang at MAIL never answers, so the client's timeout fires."""
    sink.hang(Step.MAIL)
    async with client(sink, start_tls=False, timeout=0.3) as smtp:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await smtp.sendmail("a@example.org", ["b@example.org"], MESSAGE)
        smtp.close()
    assert sink.messages == []


async def test_connect_fault_and_refused_connection(sink: Sink) -> None:
    """A 421 greeting is refused; after stop_listening the port refuses connections."""
    sink.fail(Step.CONNECT, "421 4.3.2 busy", times=1)
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
        await client(sink, start_tls=False).connect()
    assert caught.value.code == 421
    await sink.stop_listening()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await client(sink, start_tls=False).connect()


async def test_a_connection_accepted_while_the_sink_stops_is_closed_not_served() -> None:
    """The listener accepts a connection, and asyncio makes it into a transport one loop turn
    later, in a task. Stopped in between, the sink used to close its server first, which made
    that task fail silently on Python 3.11 (`Server._attach` asserts the server is open) and
    left the accepted socket open for the garbage collector (the leak the drain tests hid
    with a GC fixture). Now that connection is closed at once, never greeted."""
    sink = await Sink().start()
    with socket.create_connection((sink.host, sink.port), timeout=10) as raw:  # in the backlog
        await asyncio.sleep(0)  # one loop turn: the listener accepts it...
        await asyncio.sleep(0)  # ...and the next turn would build its protocol: stop first
        await sink.stop()
        assert await asyncio.to_thread(raw.recv, 1024) == b""
