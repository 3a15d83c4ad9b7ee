"""Refusals aiosmtpd answers itself are audit events, thinned per connection; connection limits
in total, per client and per relay peer (SECURITY.md items 12 and 14).

Every test drives the real gateway over real sockets on 127.0.0.1 and reads the real audit
store. Events written after a disconnect are awaited through the audit log's listeners.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from gateway.audit.store import EventFilter, StoredEvent
from gateway.smtp.limits import (
    MAX_REFUSAL_EVENTS,
    TOO_MANY_CONNECTIONS,
    ConnectionLimiter,
    ConnectionLimits,
    reply_codes,
    worth_an_event,
)
from tests.gateway_harness import STAFF, Harness, running_gateway
from tests.sink import Sink

TIMEOUT = 10.0
SECRET = "c2VjcmV0LXBhc3N3b3Jk"  # an AUTH argument: must never reach the audit trail


def _events(gw: Harness, kind: str) -> list[StoredEvent]:
    return [e for e in gw.app.audit.iterate(EventFilter(kind=kind))]


@contextmanager
def _watching(gw: Harness, kind: str) -> Iterator[asyncio.Event]:
    """An asyncio.Event set whenever an event of `kind` is recorded (from any thread)."""
    loop = asyncio.get_running_loop()
    seen = asyncio.Event()

    def notice(event: StoredEvent) -> None:
        if event.kind == kind:
            loop.call_soon_threadsafe(seen.set)

    gw.app.audit.listeners.append(notice)
    try:
        yield seen
    finally:
        gw.app.audit.listeners.remove(notice)


class Client:
    """A raw SMTP client on asyncio streams: one line out, one reply line in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), TIMEOUT)

    async def command(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def closed_by_server(self) -> bool:
        """Whether the server has closed the connection (EOF without more data)."""
        return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""

    async def quit(self) -> None:
        """QUIT, then wait until the server has closed the connection (and forgotten it)."""
        assert (await self.command(b"QUIT")).startswith(b"221")
        assert await self.closed_by_server()
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


@asynccontextmanager
async def _clients(gw: Harness) -> AsyncIterator[Callable[[], asyncio.Future[Client]]]:
    """Open raw connections to the submission port; every one is closed at the end."""
    opened: list[Client] = []

    async def connect() -> Client:
        reader, writer = await asyncio.open_connection(gw.host, gw.gateway.smtp_port)
        client = Client(reader, writer)
        opened.append(client)
        return client

    try:
        yield lambda: asyncio.ensure_future(connect())
    finally:
        for client in opened:
            await client.close()


async def test_reply_codes_and_thinning_rules() -> None:
    """Replies are reduced to their codes; refused connections are audited at 1, 10, 100, ..."""
    assert reply_codes("553 5.1.3 Error: malformed address") == (553, "5.1.3")
    assert reply_codes("500 Error: bad syntax") == (500, "")
    assert reply_codes("550-5.7.1 first\r\n550 5.7.1 last") == (550, "5.7.1")
    assert reply_codes("not a reply") == (0, "")
    assert [n for n in range(1, 1001) if worth_an_event(n)] == [1, 10, 100, 1000]
    limiter = ConnectionLimiter(ConnectionLimits(total=3, per_client=2, per_relay_peer=3))
    assert [limiter.admit("192.0.2.1", relay_peer=False).value for _ in range(3)] == [
        "admitted", "admitted", "max_connections_per_client"]
    assert limiter.admit("192.0.2.9", relay_peer=True).value == "admitted"
    assert limiter.admit("192.0.2.9", relay_peer=True).value == "max_connections"
    limiter.release("192.0.2.1")
    assert limiter.open_connections == 2
    assert limiter.refused_so_far("192.0.2.1") == 1


async def test_refusals_aiosmtpd_answers_itself_are_audit_events(tmp_path: Path,
                                                                 sink: Sink) -> None:
    """500, 501, 503, 530, 538 and 553 become protocol-refusal events with no argument kept."""
    async with running_gateway(tmp_path, sink) as gw:

        def talk() -> list[int]:
            codes = []
            with gw.connect(tls=False, login=None) as plain:
                codes.append(plain.docmd("AUTH", f"PLAIN {SECRET}")[0])  # 538: no TLS
                codes.append(plain.docmd("MAIL", f"FROM:<{STAFF}>")[0])  # 530: no AUTH
            with gw.connect() as client:
                codes.append(client.docmd("BOGUS", SECRET)[0])  # 500 unknown command
                codes.append(client.docmd("MAIL", f"FROM:<@evil.example:{STAFF}>")[0])  # 553
                codes.append(client.docmd("MAIL", "nonsense")[0])  # 501
                codes.append(client.docmd("DATA")[0])  # 503: no RCPT
                codes.append(client.docmd("AUTH", f"PLAIN {SECRET}")[0])  # 503: already
            return codes

        assert await gw.run(talk) == [538, 530, 500, 553, 501, 503, 503]
        events = _events(gw, "protocol-refusal")
        seen = [(e.metadata["verb"], e.metadata["reply"]) for e in events]
        assert seen == [("AUTH", "538"), ("MAIL", "530"), ("unknown", "500"), ("MAIL", "553"),
                        ("MAIL", "501"), ("DATA", "503"), ("AUTH", "503")]
        assert {e.grade for e in events} == {"low"}
        assert all(e.metadata["peer"] == "127.0.0.1" for e in events)
        assert events[3].metadata["enhanced"] == "5.1.3"
        written = json.dumps([e.as_dict() for e in events])
        assert SECRET not in written and "BOGUS" not in written and "evil.example" not in written


async def test_audited_refusals_are_not_recorded_twice(tmp_path: Path, sink: Sink) -> None:
    """A refusal the pipeline audits (wrong password, policy refusal) is one event, not two."""
    async with running_gateway(tmp_path, sink) as gw:

        def talk() -> tuple[int, int]:
            with gw.connect(login=None) as client:
                client.user, client.password = STAFF, "wrong password"
                try:
                    client.auth("PLAIN", client.auth_plain)
                except smtplib.SMTPAuthenticationError as exc:
                    wrong = exc.smtp_code
                client.user, client.password = STAFF, "correct horse battery staple"
                client.auth("PLAIN", client.auth_plain)
                client.mail(STAFF)
                refused = client.rcpt("fax=01234567890@cafcass.gov.uk")[0]
            return wrong, refused

        wrong, refused = await gw.run(talk)
        assert wrong == 535
        assert refused >= 500
        assert len(_events(gw, "auth-failure")) == 1
        assert len(_events(gw, "refusal")) == 1
        assert _events(gw, "protocol-refusal") == []


async def test_a_flood_of_garbage_is_thinned_to_a_summary(tmp_path: Path, sink: Sink) -> None:
    """Only the first refusals of a connection are events; the rest are summed at disconnect."""
    async with running_gateway(tmp_path, sink) as gw, _clients(gw) as connect:
        flood = MAX_REFUSAL_EVENTS + 7
        with _watching(gw, "protocol-refusal") as recorded:
            client = await connect()
            assert (await client.reply()).startswith(b"220")
            client.writer.write(b"\r\n" * flood)
            replies = [await client.reply() for _ in range(flood)]
            assert all(r.startswith(b"500") for r in replies)
            recorded.clear()
            await client.quit()
            await asyncio.wait_for(recorded.wait(), TIMEOUT)  # the summary, after disconnect
        events = _events(gw, "protocol-refusal")
        assert len(events) == MAX_REFUSAL_EVENTS + 1
        assert events[-1].metadata["suppressed"] == flood - MAX_REFUSAL_EVENTS


async def test_connections_over_the_per_client_limit_get_421(tmp_path: Path,
                                                            sink: Sink) -> None:
    """The N+1st connection of one client gets 421 4.7.0 and is closed; closing one frees a slot."""
    async with running_gateway(tmp_path, sink, max_connections_per_client=2) as gw, \
            _clients(gw) as connect:
        first, second = await connect(), await connect()
        assert (await first.reply()).startswith(b"220")
        assert (await second.reply()).startswith(b"220")
        for _ in range(3):
            over = await connect()
            assert await over.reply() == TOO_MANY_CONNECTIONS.encode() + b"\r\n"
            assert await over.closed_by_server()
        assert (await second.command(b"NOOP")).startswith(b"250")  # still served
        await first.quit()
        again = await connect()
        assert (await again.reply()).startswith(b"220")
        [event] = _events(gw, "connection-limit")  # three refusals, thinned to one event
        assert event.metadata["limit"] == "max_connections_per_client"
        assert (event.metadata["reply"], event.metadata["enhanced"]) == ("421", "4.7.0")
        assert event.metadata["refused_so_far"] == 1 and event.grade == "low"
        assert gw.gateway.stages.metrics.value("casegate_smtp_connections_refused_total") == 3


async def test_total_connection_limit_covers_both_ports(tmp_path: Path, sink: Sink) -> None:
    """`max_connections` counts the STARTTLS and the implicit-TLS port together."""
    async with running_gateway(tmp_path, sink, implicit_tls=True, max_connections=2,
                               max_connections_per_client=0) as gw, _clients(gw) as connect:
        implicit = await gw.run(gw.connect_implicit, login=None)
        try:
            first = await connect()
            assert (await first.reply()).startswith(b"220")
            over = await connect()
            assert (await over.reply()).startswith(b"421 4.7.0")
            assert await over.closed_by_server()
            [event] = _events(gw, "connection-limit")
            assert event.metadata["limit"] == "max_connections"
        finally:
            await gw.run(implicit.quit)


async def test_relay_peers_have_their_own_per_client_limit(tmp_path: Path, sink: Sink) -> None:
    """An address inside relay_from may hold max_connections_per_relay_peer connections."""
    async with running_gateway(tmp_path, sink, relay_from=["127.0.0.1/32"],
                               max_connections_per_client=1,
                               max_connections_per_relay_peer=3) as gw, _clients(gw) as connect:
        clients = [await connect() for _ in range(3)]
        for client in clients:
            assert (await client.reply()).startswith(b"220")
        over = await connect()
        assert (await over.reply()).startswith(b"421 4.7.0")


async def test_a_refusal_that_cannot_be_audited_ends_the_connection(tmp_path: Path,
                                                                   sink: Sink) -> None:
    """With the audit store unavailable, a protocol refusal is answered and the client cut off."""
    async with running_gateway(tmp_path, sink) as gw, _clients(gw) as connect:
        client = await connect()
        assert (await client.reply()).startswith(b"220")
        gw.app.audit.close()
        assert (await client.command(b"BOGUS")).startswith(b"500")
        assert await client.closed_by_server()


async def test_a_burst_of_refused_connections_audits_the_1st_10th_and_100th(
        tmp_path: Path, sink: Sink) -> None:
    """120 connections opened at once over the per-client limit: each refusal keeps the number
    it had when it was refused, so the 1st, 10th and 100th each write their event."""
    async with running_gateway(tmp_path, sink, max_connections_per_client=1) as gw, \
            _clients(gw) as connect:
        holder = await connect()
        assert (await holder.reply()).startswith(b"220")
        burst = await asyncio.gather(*(connect() for _ in range(120)))
        replies = await asyncio.gather(*(client.reply() for client in burst))
        assert all(r == TOO_MANY_CONNECTIONS.encode() + b"\r\n" for r in replies)
        assert all(await asyncio.gather(*(client.closed_by_server() for client in burst)))
        events = _events(gw, "connection-limit")
        assert sorted(e.metadata["refused_so_far"] for e in events) == [1, 10, 100]
        assert gw.gateway.stages.metrics.value("casegate_smtp_connections_refused_total") == 120
        assert (await holder.command(b"NOOP")).startswith(b"250")
