"""Stopping the gateway drains: a message in flight gets its reply before connections close."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink, Step


def _send(gw: Harness) -> tuple[int, bytes]:
    """Send one message; the reply to its end of data. The connection is then dropped without
    QUIT (a stopping gateway answers QUIT 421 4.3.2, which smtplib raises as an error)."""
    client = gw.connect()
    try:
        client.sendmail(STAFF, ["colleague@cafcass.gov.uk"], message())
    except smtplib.SMTPDataError as refused:
        return refused.smtp_code, refused.smtp_error
    finally:
        client.close()
    return 250, b""


async def test_stop_waits_for_the_message_in_flight(tmp_path: Path, sink: Sink) -> None:
    """stop() closes the listeners at once but lets the message in DATA get its reply."""
    async with running_gateway(tmp_path, sink) as gw:
        sink.hang(Step.DATA, times=1)
        sending = asyncio.create_task(gw.run(_send, gw))
        flight = gw.gateway.stages.flight
        async with asyncio.timeout(10):
            await flight.busy.wait()
        stopping = asyncio.create_task(gw.gateway.stop(drain_seconds=20))
        await asyncio.sleep(0)  # stop() closes the listeners before its first await
        assert not stopping.done() and flight.count == 1
        with pytest.raises(OSError):
            await asyncio.to_thread(smtplib.SMTP, gw.host, gw.gateway.smtp_port, timeout=5)
        await sink.stop()  # the upstream gives up: the relay reports a temporary failure
        code, _ = await sending
        assert code == 451
        await stopping
        assert gw.gateway.stages.flight.count == 0


async def test_when_the_drain_time_runs_out_the_message_in_flight_gets_421(
        tmp_path: Path, sink: Sink) -> None:
    """The upstream never answers the end of data: when the drain time is up the client gets
    421 4.3.2 (never a 250: the upstream did not accept), and nothing was delivered."""
    async with running_gateway(tmp_path, sink) as gw:
        sink.hang(Step.DATA, times=1)
        sending = asyncio.create_task(gw.run(_send, gw))
        async with asyncio.timeout(10):
            await gw.gateway.stages.flight.busy.wait()
        await gw.gateway.stop(drain_seconds=0.2)  # the drain time, not a synchronisation
        code, text = await sending
        assert (code, text[:5]) == (421, b"4.3.2")
        assert sink.messages == [] and len(sink.unanswered) == 1
        assert gw.gateway.stages.flight.count == 0


def _told_and_closed(client: smtplib.SMTP) -> tuple[int, bytes]:
    """The next reply the server sends of its own accord; the server closes after it (a TLS
    close waits for the client, which then hangs up)."""
    try:
        reply = client.getreply()
        assert client.sock is not None and client.sock.recv(1) == b""
        return reply
    finally:
        client.close()


async def test_idle_clients_get_421_when_the_gateway_stops(tmp_path: Path, sink: Sink) -> None:
    """A plain and a TLS client that sit idle are told 421 4.3.2 before the close."""
    async with running_gateway(tmp_path, sink) as gw:
        plain = await gw.run(gw.connect, tls=False, login=None)
        secure = await gw.run(gw.connect)
        listening = [asyncio.create_task(gw.run(_told_and_closed, c)) for c in (plain, secure)]
        await gw.gateway.stop(drain_seconds=5)
        for told in listening:
            assert await told == (421, b"4.3.2 Service shutting down; try again later")
