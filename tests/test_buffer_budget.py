"""The gateway-wide cap on buffered message bytes (smtp.max_buffered_bytes; issue 14, point 4).

Real sockets: the gateway in-process, an smtplib client, the aiosmtpd sink holding a message
at DATA for as long as the test needs (`Sink.hold`). The cap answers 452 4.3.1 when it is
reached, admits again once a message is answered, and every message's bytes are given back
whatever its end: delivered, refused, the client gone mid-DATA, the upstream failing.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.smtp.budget import BufferBudget
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink, Step

CAP = 300_000
MAX_SIZE = 200_000
COLLEAGUE = "colleague@cafcass.gov.uk"


def sized(size: int) -> bytes:
    """An ordinary internal message of about `size` bytes."""
    line = "The office moves to the third floor next week; please clear your desks.\r\n"
    return message(to=[COLLEAGUE], body=line * (size // len(line)))


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink, max_buffered_bytes=CAP,
                               max_message_size=MAX_SIZE) as harness:
        yield harness


def budget(gw: Harness) -> BufferBudget:
    buffers = gw.gateway.handler.buffers
    assert buffers is not None
    return buffers


def send_declaring(gw: Harness, data: bytes, declared: int | None) -> tuple[int, bytes]:
    """MAIL (with SIZE=`declared`, or none), RCPT, DATA and `data`; the reply to DATA or to
    the end of data, whichever refused first."""
    with gw.connect() as client:
        options = [] if declared is None else [f"SIZE={declared}"]
        assert client.mail(STAFF, options)[0] == 250
        assert client.rcpt(COLLEAGUE)[0] == 250
        code, text = client.docmd("DATA")
        if code != 354:
            return code, text
        client.send(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        return client.getreply()


async def test_the_cap_refuses_452_4_3_1_while_full_and_admits_after_release(
        gw: Harness) -> None:
    """With one message held upstream, one that does not fit beside it gets 452 4.3.1 (at
    DATA when its SIZE says so, after its data when it said less); once the first is
    answered, the second goes through, and nothing stays counted."""
    hold = gw.sink.hold(Step.DATA, times=1)
    first = asyncio.ensure_future(gw.run(gw.send, STAFF, [COLLEAGUE], sized(150_000)))
    await hold.struck.wait()
    assert budget(gw).held >= 150_000

    second = sized(190_000)
    code, text = await gw.run(send_declaring, gw, second, len(second))
    assert (code, text[:5]) == (452, b"4.3.1")
    code, text = await gw.run(send_declaring, gw, second, 1000)  # it claims to be small
    assert (code, text[:5]) == (452, b"4.3.1")
    assert len(gw.sink.messages) == 0

    hold.released.set()
    assert await first == {}
    await asyncio.wait_for(budget(gw).empty(), 10)
    code, text = await gw.run(send_declaring, gw, second, len(second))
    assert code == 250, text
    assert len(gw.sink.messages) == 2
    await asyncio.wait_for(budget(gw).empty(), 10)


def disconnect_mid_data(gw: Harness) -> None:
    """MAIL, RCPT, DATA, half of a message, and the connection closed."""
    client = gw.connect()
    try:
        assert client.mail(STAFF)[0] == 250
        assert client.rcpt(COLLEAGUE)[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(sized(100_000)[:50_000])
        assert client.sock is not None
        client.sock.shutdown(socket.SHUT_RDWR)
    finally:
        client.close()


async def delivered(gw: Harness) -> None:
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], sized(100_000)) == {}


async def refused(gw: Harness) -> None:
    code, _ = await gw.run(send_declaring, gw, b"Subject: x\n\nbare LF\r\n", None)
    assert code == 554


async def too_big(gw: Harness) -> None:
    code, _ = await gw.run(send_declaring, gw, sized(MAX_SIZE + 10_000), None)
    assert code == 552


async def gone_mid_data(gw: Harness) -> None:
    await gw.run(disconnect_mid_data, gw)


async def upstream_failed(gw: Harness) -> None:
    gw.sink.fail(Step.DATA, "451 4.3.0 try later", times=1)
    with pytest.raises(smtplib.SMTPDataError) as failed:
        await gw.run(gw.send, STAFF, [COLLEAGUE], sized(100_000))
    assert failed.value.smtp_code == 451


async def upstream_dropped(gw: Harness) -> None:
    gw.sink.drop(Step.DATA, times=1)
    with pytest.raises(smtplib.SMTPDataError) as failed:
        await gw.run(gw.send, STAFF, [COLLEAGUE], sized(100_000))
    assert failed.value.smtp_code == 451


@pytest.mark.parametrize("ending", [delivered, refused, too_big, gone_mid_data,
                                    upstream_failed, upstream_dropped],
                         ids=lambda f: f.__name__)
async def test_every_ending_gives_the_bytes_back(gw: Harness, ending: object) -> None:
    """Whatever becomes of a message, its claim returns to the budget (the count is zero),
    and the next message is taken."""
    await ending(gw)  # type: ignore[operator]
    await asyncio.wait_for(budget(gw).empty(), 10)
    assert budget(gw).held == 0
    await delivered(gw)
    await asyncio.wait_for(budget(gw).empty(), 10)


async def test_claims_wait_for_room_then_give_up() -> None:
    """A claim that does not fit waits for one given back, and gets None when none comes."""
    buffers = BufferBudget(limit=100)
    first = await buffers.claim(80)
    assert first is not None and buffers.held == 80
    assert await buffers.claim(30, wait=0) is None
    waiting = asyncio.ensure_future(buffers.claim(30, wait=30))
    await asyncio.sleep(0)  # let it start waiting (an ordering step, not a timing one)
    assert not waiting.done()
    first.release()
    second = await waiting
    assert second is not None and buffers.held == 30
    assert second.grow(100) and buffers.held == 100 and not second.grow(101)
    second.release()
    second.release()  # once only
    assert buffers.held == 0


def test_the_cap_must_hold_one_largest_message(tmp_path: Path) -> None:
    """smtp.max_buffered_bytes below smtp.max_message_size is a config error naming both."""
    config = tmp_path / "casegate.toml"
    config.write_text("[smtp]\nmax_message_size = 1000000\nmax_buffered_bytes = 999999\n",
                      encoding="utf-8")
    with pytest.raises(ConfigError, match=r"max_buffered_bytes.*max_message_size"):
        load_config(config)
