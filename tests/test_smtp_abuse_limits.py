"""Abuse limits of the SMTP front (issue 18, point 7): commands without progress are capped per
connection (Postfix's smtpd_junk_command_limit and smtpd_hard_error_limit), and connections
from outside `smtp.relay_from` that have not authenticated have a total cap and a shorter idle
timeout.

Every test drives the real gateway over real sockets on 127.0.0.1 and reads the real audit
store; nothing sleeps: a timeout is awaited as the server closing the connection.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter, StoredEvent
from gateway.smtp.limits import (
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ERRORS,
    CommandBudget,
    ConnectionLimiter,
    ConnectionLimits,
)
from tests import test_security_smtp_limits as security_limits
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink

TIMEOUT = 10.0
REFUSED_RECIPIENT = "fax=01234567890@cafcass.gov.uk"  # refused by a policy rule at RCPT


def _events(gw: Harness, kind: str) -> list[StoredEvent]:
    return list(gw.app.audit.iterate(EventFilter(kind=kind)))


class Client(security_limits.Client):
    """The security tests' raw client, reading whole (multi-line) replies: one command out,
    one reply in."""

    async def reply(self) -> bytes:
        """One whole reply (its lines joined); b"" when the server has closed."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return b"".join(lines)


Connect = Callable[[], Awaitable[Client]]


@asynccontextmanager
async def _clients(gw: Harness) -> AsyncIterator[Connect]:
    """Open raw connections to the submission port (greeting read); all closed at the end."""
    opened: list[Client] = []

    async def connect() -> Client:
        reader, writer = await asyncio.open_connection(gw.host, gw.gateway.smtp_port)
        client = Client(reader, writer)
        opened.append(client)
        return client

    try:
        yield connect
    finally:
        for client in opened:
            await client.close()


async def _greeted(connect: Connect) -> Client:
    client = await connect()
    assert (await client.reply()).startswith(b"220")
    return client


# ---- commands without progress ---------------------------------------------------------


def test_the_budget_and_the_unauthenticated_count() -> None:
    """Junk past its limit is an error; progress starts both counts again; 0 is no limit. The
    limiter counts connections from outside relay_from until they authenticate or end."""
    budget = CommandBudget(junk_limit=2, error_limit=2)
    for _ in range(3):
        budget.junk_command()
    assert (budget.errors, budget.exhausted) == (1, False)
    budget.error()
    assert budget.exhausted
    budget.progress()
    assert (budget.junk, budget.errors, budget.exhausted) == (0, 0, False)
    unlimited = CommandBudget()
    for _ in range(10_000):
        unlimited.junk_command()
        unlimited.error()
    assert not unlimited.exhausted
    limiter = ConnectionLimiter(ConnectionLimits(unauthenticated=2))
    assert [limiter.admit(f"192.0.2.{n}", relay_peer=False).value for n in range(3)] == [
        "admitted", "admitted", "max_unauthenticated_connections"]
    assert limiter.admit("10.0.0.1", relay_peer=True).value == "admitted"
    limiter.authenticated()  # 192.0.2.0 logged in
    assert limiter.unauthenticated_connections == 1 and limiter.open_connections == 3
    assert limiter.admit("192.0.2.3", relay_peer=False).value == "admitted"


JUNK = [  # (command, the reply it gets while under the limit)
    (b"NOOP", b"250"),
    (b"RSET", b"250"),
    (b"HELP", b"250"),
    (b"VRFY <jo.smith@cafcass.gov.uk>", b"252"),
    (b"EHLO again.test", b"250"),  # after the first EHLO, each one more is junk
]


@pytest.mark.parametrize(("command", "answered"), JUNK, ids=[c.split()[0].decode()
                                                             for c, _ in JUNK])
async def test_junk_commands_past_the_limit_count_as_errors_then_421(
        tmp_path: Path, sink: Sink, command: bytes, answered: bytes) -> None:
    """junk limit 5, error limit 3: the 6th, 7th and 8th are errors; after the 8th's reply the
    client is told 421 4.7.0 and the connection is closed, with one audit event."""
    async with running_gateway(tmp_path, sink, junk_command_limit=5,
                               hard_error_limit=3) as gw, _clients(gw) as connect:
        client = await _greeted(connect)
        assert (await client.command(b"EHLO client.test")).startswith(b"250")
        for _ in range(8):
            assert (await client.command(command)).startswith(answered)
        assert await client.reply() == TOO_MANY_ERRORS.encode() + b"\r\n"
        assert await client.closed_by_server()
        [event] = [e for e in _events(gw, "protocol-refusal")
                   if e.metadata.get("limit") == "hard_error_limit"]
        assert (event.metadata["reply"], event.metadata["enhanced"]) == ("421", "4.7.0")
        assert (event.metadata["errors"], event.metadata["junk"]) == (3, 8)


async def test_ten_thousand_noops_are_not_all_answered(tmp_path: Path, sink: Sink) -> None:
    """With the default limits (100 junk, 20 errors, as Postfix), NOOP number 120 is the last
    one answered; then 421 4.7.0 and the close."""
    async with running_gateway(tmp_path, sink) as gw, _clients(gw) as connect:
        client = await _greeted(connect)
        answered = 0
        for _ in range(10_000):
            reply = await client.command(b"NOOP")
            if not reply.startswith(b"250"):
                break
            answered += 1
        assert answered == 120
        assert reply == TOO_MANY_ERRORS.encode() + b"\r\n"
        assert await client.closed_by_server()


ERRORS = [  # (command, its refusal): each is an error a client makes
    (b"", b"500"),  # an empty line: bad syntax
    (b"MAIL FROM:<jo.smith@cafcass.gov.uk>", b"530"),  # no STARTTLS, no AUTH
    (b"DATA", b"503"),  # no MAIL, no RCPT
    (b"AUTH PLAIN", b"538"),  # AUTH only inside TLS
]


@pytest.mark.parametrize(("command", "refused"), ERRORS,
                         ids=["empty", "mail", "data", "auth"])
async def test_errors_reach_the_hard_limit(tmp_path: Path, sink: Sink, command: bytes,
                                           refused: bytes) -> None:
    """Four errors with hard_error_limit 4: the fourth refusal, then 421 4.7.0 and the close."""
    async with running_gateway(tmp_path, sink, hard_error_limit=4) as gw, \
            _clients(gw) as connect:
        client = await _greeted(connect)
        assert (await client.command(b"EHLO client.test")).startswith(b"250")
        for _ in range(4):
            assert (await client.command(command)).startswith(refused)
        assert await client.reply() == TOO_MANY_ERRORS.encode() + b"\r\n"
        assert await client.closed_by_server()


def _noops(client: smtplib.SMTP, count: int) -> list[int]:
    return [client.noop()[0] for _ in range(count)]


async def test_an_accepted_message_starts_the_counts_again(tmp_path: Path, sink: Sink) -> None:
    """Progress resets both counts; a policy's refusal of a recipient is not an error."""
    async with running_gateway(tmp_path, sink, junk_command_limit=2,
                               hard_error_limit=2) as gw:

        def talk() -> tuple[list[int], list[int], list[int], tuple[int, bytes]]:
            with gw.connect() as client:
                before = _noops(client, 3)  # the third is one error
                assert client.mail(STAFF)[0] == 250
                refused = [client.rcpt(REFUSED_RECIPIENT)[0] for _ in range(3)]  # no errors
                assert client.rcpt("colleague@cafcass.gov.uk")[0] == 250
                assert client.data(message())[0] == 250  # progress: the counts start again
                after = _noops(client, 4)  # the 3rd is error 1, the 4th error 2: cut off
                return before, refused, after, client.getreply()

        before, refused, after, last = await gw.run(talk)
        assert before == [250, 250, 250]
        assert all(code == 550 for code in refused)
        assert after == [250, 250, 250, 250]
        assert last == (421, TOO_MANY_ERRORS[4:].encode())
        assert len(sink.messages) == 1


# ---- unauthenticated connections from outside relay_from --------------------------------


async def test_unauthenticated_connections_have_a_total_cap(tmp_path: Path,
                                                            sink: Sink) -> None:
    """Two silent connections fill `max_unauthenticated_connections` = 2: a third is refused
    421 4.7.0 (an audit event), while a client that has logged in no longer counts."""
    async with running_gateway(tmp_path, sink, max_unauthenticated_connections=2,
                               max_connections_per_client=10) as gw, \
            _clients(gw) as connect:
        staff = await gw.run(gw.connect)  # counted until its AUTH succeeded
        try:
            first, second = await _greeted(connect), await _greeted(connect)
            third = await connect()
            assert await third.reply() == TOO_MANY_CONNECTIONS.encode() + b"\r\n"
            assert await third.closed_by_server()
            [event] = _events(gw, "connection-limit")
            assert event.metadata["limit"] == "max_unauthenticated_connections"
            assert (await first.command(b"QUIT")).startswith(b"221")
            assert await first.closed_by_server()
            fourth = await _greeted(connect)  # the slot first held is free again
            assert (await fourth.command(b"NOOP")).startswith(b"250")
            assert (await second.command(b"NOOP")).startswith(b"250")
            assert (await gw.run(staff.noop))[0] == 250
        finally:
            await gw.run(staff.quit)


async def test_relay_peers_are_not_unauthenticated_connections(tmp_path: Path,
                                                               sink: Sink) -> None:
    """Addresses inside relay_from never count against the unauthenticated cap."""
    async with running_gateway(tmp_path, sink, relay_from=["127.0.0.1/32"],
                               max_unauthenticated_connections=1) as gw, \
            _clients(gw) as connect:
        clients = [await _greeted(connect) for _ in range(3)]
        for client in clients:
            assert (await client.command(b"NOOP")).startswith(b"250")


async def test_silence_before_auth_is_cut_short(tmp_path: Path, sink: Sink) -> None:
    """A client that has not authenticated is told 421 4.4.2 and closed after
    `unauthenticated_idle_timeout`; one that has logged in, idle for longer than that, is
    still served (`idle_timeout`)."""
    # 2 s, not less: the timer also runs while the staff client's password is checked.
    async with running_gateway(tmp_path, sink, unauthenticated_idle_timeout=2.0,
                               idle_timeout=60.0) as gw, _clients(gw) as connect:
        staff = await gw.run(gw.connect)
        try:
            silent = await _greeted(connect)  # opened after staff's last command
            assert (await silent.reply()).startswith(b"421 4.4.2 ")  # after 2 s of silence
            assert await silent.closed_by_server()
            assert (await gw.run(staff.noop))[0] == 250  # silent for longer, still served
        finally:
            await gw.run(staff.quit)
