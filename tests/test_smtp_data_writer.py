"""The relay's own DATA writer: aiosmtplib's bytes and errors, over a real sink."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosmtplib
import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from tests.sink import Sink, Step
from transports.smtp_data_writer import dot_stuff, has_unsafe_bytes, send_data

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


async def test_unsafe_content_is_refused_before_data(sink: Sink, client: aiosmtplib.SMTP) -> None:
    """Content with a bare LF raises ValueError and DATA is never sent."""
    with pytest.raises(ValueError):
        await transaction(client, b"Subject: s\r\n\r\nsmuggled\n.\nMAIL FROM:<x@y>\r\n")
    await client.rset()
    assert (await transaction(client, DOTTY[1])).code == 250
    assert [m.data for m in sink.messages] == [DOTTY[1]]
