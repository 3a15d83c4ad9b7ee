"""Reading DATA in blocks: the same end of data and unstuffing as aiosmtpd, at every read size."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.smtp.aiosmtpd_private import read_limit
from gateway.smtp.data import TOO_LONG, TOO_MUCH, Received, read_data

SIZES = [1, 2, 3, 5, 7, 64, 100_000]
NEXT = b"QUIT\r\n"

# (wire after the 354, what the handler must receive or the error)
CASES = [
    (b".\r\n", Received(content=b"")),
    (b"Subject: x\r\n.\r\n", Received(content=b"Subject: x\r\n")),
    (b"Ends in a dot.\r\nNext.\r\n.\r\n", Received(content=b"Ends in a dot.\r\nNext.\r\n")),
    (b"..dot\r\n...two\r\n..\r\n.\r\n", Received(content=b".dot\r\n..two\r\n.\r\n")),
    (b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n", Received(content=b"a\n.\nMAIL FROM:<x@y>\r\n")),
    (b"a\r.\rb\r\n.\r\n", Received(content=b"a\r.\rb\r\n")),
    (b"x" * 999 + b"\r\n.\r\n", Received(content=b"x" * 999 + b"\r\n")),
    (b"x" * 1000 + b"\r\n.\r\n", Received(error=TOO_LONG)),
    (b"y" * 300 + b"\r\n" + b"z" * 100 + b".\r\n.\r\n", Received(error=TOO_MUCH)),
]


async def _read(wire: bytes, piece: int, size_limit: int = 400) -> tuple[Received, bytes]:
    """Feed `wire` + a next command in pieces of `piece` bytes; return the result and the rest."""
    reader = asyncio.StreamReader(limit=1001)
    stream = wire + NEXT

    async def feed() -> None:
        for i in range(0, len(stream), piece):
            reader.feed_data(stream[i:i + piece])
            await asyncio.sleep(0)  # let the reader run between pieces, as a network would
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    received = await read_data(reader, size_limit, 1001)
    await feeding
    return received, await reader.read()


@pytest.mark.parametrize("piece", SIZES)
@pytest.mark.parametrize(("wire", "expected"), CASES)
async def test_end_of_data_and_unstuffing(wire: bytes, expected: Received, piece: int) -> None:
    """Each wire form gives the expected content or error, and the next command stays unread."""
    size_limit = 400 if expected.error == TOO_MUCH else 100_000
    received, rest = await _read(wire, piece, size_limit)
    assert received == expected
    assert rest == NEXT


async def test_oversize_is_dropped_while_streaming() -> None:
    """A message far over the limit is refused, and the reader's limit is restored after."""
    reader = asyncio.StreamReader(limit=1001)
    reader.feed_data((b"w" * 70 + b"\r\n") * 1000 + b".\r\n" + NEXT)
    reader.feed_eof()
    received = await read_data(reader, 5000, 1001)
    assert received == Received(error=TOO_MUCH)
    assert read_limit(reader) == 1001
    assert await reader.read() == NEXT


@pytest.mark.parametrize("line", [
    b"a sentence that ends with a full stop.\r\n",  # one piece per line off the stream
    b".a line that starts with a dot, to be unstuffed\r\n",
])
async def test_reading_holds_the_message_at_most_twice(line: bytes) -> None:
    """Reading 4 MB of DATA peaks at about twice the message (the data and one copy of it),
    however many pieces it arrives in and whether or not it needs unstuffing."""
    message = b"Subject: big\r\n\r\n" + line * (4 * 1024 * 1024 // len(line))
    wire = message.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    reader = asyncio.StreamReader(limit=1001)

    async def feed() -> None:
        with memoryview(wire) as view:  # as a socket delivers it, copying nothing itself
            for i in range(0, len(wire), 256 * 1024):
                reader.feed_data(view[i:i + 256 * 1024])
                await asyncio.sleep(0)  # let the reader run between pieces
        reader.feed_eof()

    tracemalloc.start()
    try:
        feeding = asyncio.create_task(feed())
        received = await read_data(reader, 8 * 1024 * 1024, 1001)
        await feeding
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received.content == message
    assert peak < 2.3 * len(message)


# ---- differential: the block reader against stock aiosmtpd, over a real socket -------------

PIECES = [b"a", b"bc", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n..", b".\r\n",
          b"\n.\n", b"\r.\r", b"\x00", b"\r\n\r\n"]


class _Keep:
    """A stock aiosmtpd handler that keeps what it received."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.contents.append(bytes(envelope.original_content or b""))
        return "250 OK"


async def _stock_aiosmtpd(wire: bytes) -> bytes:
    """What stock aiosmtpd hands its handler for `wire` sent after the 354."""
    loop = asyncio.get_running_loop()
    keep = _Keep()
    server = await loop.create_server(lambda: SMTP(keep, loop=loop), "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        for command in (b"EHLO c\r\n", b"MAIL FROM:<a@b.c>\r\n", b"RCPT TO:<d@e.f>\r\n",
                        b"DATA\r\n"):
            writer.write(command)
        writer.write(wire + b"QUIT\r\n")
        await writer.drain()
        await reader.read()  # until aiosmtpd closes after QUIT
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    (content,) = keep.contents
    return content


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), max_size=12))
async def test_block_reader_agrees_with_stock_aiosmtpd(parts: list[bytes]) -> None:
    """For any mix of dots, CRs and LFs, both readers end the data at the same place."""
    wire = b"".join(parts) + b"\r\n.\r\n"
    received, rest = await _read(wire, 3, 100_000)
    assert received.content == await _stock_aiosmtpd(wire)
    end = (b"\r\n" + wire).find(b"\r\n.\r\n") + len(b".\r\n")  # the first end, in `wire`
    assert rest == wire[end:] + NEXT  # whatever follows it is left for the command loop


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=16), st.sampled_from([1, 3, 7]),
       st.integers(min_value=1, max_value=12))
async def test_the_end_is_found_where_it_is_after_data_dropped_for_size(
        parts: list[bytes], piece: int, size_limit: int) -> None:
    """Over a small size limit, data is dropped piece by piece: the end line may straddle what
    was dropped and what comes next, and is found all the same, leaving the next command."""
    wire = b"".join(parts) + b"\r\n.\r\n"
    end = (b"\r\n" + wire).find(b"\r\n.\r\n") + len(b".\r\n")
    received, rest = await _read(wire, piece, size_limit)
    assert rest == wire[end:] + NEXT
    assert received.error in ("", TOO_MUCH, TOO_LONG)
    if received.error == TOO_MUCH:
        assert end > size_limit


@pytest.mark.parametrize(("size", "error"), [(400, ""), (401, TOO_MUCH)])
async def test_size_limit_counts_the_message_not_its_end_line(size: int, error: str) -> None:
    """The limit is on the message (its lines, CRLFs included), not the "." end line: exactly
    `size_limit` octets are taken, one more is refused (RFC 1870)."""
    content = b"s" * (size - 2) + b"\r\n"
    received, rest = await _read(content + b".\r\n", 64, size_limit=400)
    assert received == (Received(error=error) if error else Received(content=content))
    assert rest == NEXT
