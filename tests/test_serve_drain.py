"""Stopping the gateway drains: a message in flight gets its reply before connections close."""

from __future__ import annotations

import asyncio
import gc
import smtplib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_harness import STAFF, message, running_gateway
from tests.sink import Sink, Step


@pytest.fixture(autouse=True)
def collect_the_sinks_cut_socket() -> Iterator[None]:
    """Known leak in the test sink, not the gateway: when the sink is stopped while a relay
    hangs in DATA, one server-side socket of the sink is sometimes left for the garbage
    collector (about 1 run in 5; its port is the sink's, measured by printing the ports). It
    was reported at random later in the suite. It is collected here, after the event loop has
    closed, with its ResourceWarning silenced. Found and left for the exactly-once issue, whose
    tests stop the sink mid-transaction the same way."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


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
