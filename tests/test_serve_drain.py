"""Stopping the gateway drains: a message in flight gets its reply before connections close."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from tests.gateway_harness import STAFF, message, running_gateway
from tests.sink import Sink, Step


async def test_stop_waits_for_the_message_in_flight(tmp_path: Path, sink: Sink) -> None:
    """stop() closes the listeners at once but lets the message in DATA get its reply."""
    async with running_gateway(tmp_path, sink) as gw:
        sink.hang(Step.DATA, times=1)
        sending = asyncio.create_task(
            gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"], message()))
        flight = gw.gateway.stages.flight
        async with asyncio.timeout(10):
            await flight.busy.wait()
        stopping = asyncio.create_task(gw.gateway.stop(drain_seconds=20))
        await asyncio.sleep(0)  # stop() closes the listeners before its first await
        assert not stopping.done() and flight.count == 1
        with pytest.raises(OSError):
            await asyncio.to_thread(smtplib.SMTP, gw.host, gw.gateway.smtp_port, timeout=5)
        await sink.stop()  # the upstream gives up: the relay reports a temporary failure
        with pytest.raises(smtplib.SMTPDataError) as tempfail:
            await sending
        assert tempfail.value.smtp_code == 451
        await stopping
        assert gw.gateway.stages.flight.count == 0
