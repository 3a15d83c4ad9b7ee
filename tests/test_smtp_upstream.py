"""Upstream trouble: 250 only after every copy was accepted; 4xx keeps the message with the
client; a retry after a partial success sends nothing twice."""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink, Step

COLLEAGUE = "colleague@cafcass.gov.uk"
CASE = "FD24P01234"


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def _submit(gw: Harness, rcpts: list[str], data: bytes) -> int:
    """Submit and return the final reply code (250 or the DATA error)."""
    try:
        await gw.run(gw.send, STAFF, rcpts, data)
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code
    return 250


async def test_upstream_down_is_451_and_nothing_lost(gw: Harness) -> None:
    """With the upstream not listening the client gets 451 and keeps the message."""
    await gw.sink.stop_listening()
    assert await _submit(gw, [COLLEAGUE], message()) == 451
    assert gw.gateway.stages.metrics.value("casegate_messages_tempfailed_total") == 1


async def test_upstream_4xx_then_retry_delivers_once(gw: Harness) -> None:
    """A temporary upstream refusal is a 451; the client's retry is delivered exactly once."""
    gw.sink.fail(Step.DATA, "451 4.3.0 try later", times=1)
    data = message()
    assert await _submit(gw, [COLLEAGUE], data) == 451
    assert gw.sink.messages == []
    assert await _submit(gw, [COLLEAGUE], data) == 250
    assert len(gw.sink.messages) == 1


async def test_upstream_drop_mid_data_is_451_then_retry(gw: Harness) -> None:
    """An upstream that drops the connection after the data gets a 451; the retry goes."""
    gw.sink.drop(Step.DATA, times=1)
    data = message()
    assert await _submit(gw, [COLLEAGUE], data) == 451
    assert await _submit(gw, [COLLEAGUE], data) == 250
    assert len(gw.sink.messages) == 1


async def test_upstream_permanent_refusal_is_554(gw: Harness) -> None:
    """A permanent upstream refusal becomes a 554, with nothing internal in the text."""
    gw.sink.fail(Step.RCPT, "550 5.1.1 no such user here")
    try:
        await gw.run(gw.send, STAFF, [COLLEAGUE], message())
    except smtplib.SMTPDataError as exc:
        assert exc.smtp_code == 554 and b"no such user" not in exc.smtp_error
        assert b"IT service desk" in exc.smtp_error  # what the sender can do next
    else:
        raise AssertionError("expected a 554")
    assert gw.sink.messages == []


async def test_split_retry_after_partial_success_sends_nothing_twice(gw: Harness) -> None:
    """Copy 1 accepted, copy 2 refused for now: 451; the retry sends only copy 2."""
    externals = ["officer@cjsm.net", "nurse@nhs.net"]
    for address in externals:
        gw.verify(address, CASE)
    data = message(to=externals, body=f"About case {CASE}.")
    gw.sink.fail(Step.RCPT, "451 4.2.0 mailbox busy", times=1, recipient="nurse@nhs.net")
    assert await _submit(gw, externals, data) == 451
    assert [m.rcpt_tos for m in gw.sink.messages] == [("officer@cjsm.net",)]
    assert await _submit(gw, externals, data) == 250
    assert [m.rcpt_tos for m in gw.sink.messages] == [("officer@cjsm.net",), ("nurse@nhs.net",)]
