"""The relay ledger shared by two gateway nodes on one PostgreSQL (issue 15): a client that
retries through the other node is not delivered to twice, whether its first attempt is over
or still being handed over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gateway.config import UpstreamConfig
from tests.sink import Sink, Step
from transports.base import Copy, Outcome, Problem
from transports.database import Database, DatabaseSettings
from transports.ledger import Ledger
from transports.smtp_relay import SmtpRelay

NAME = "relay-ledger.sqlite3"
SENDER = "jane.smith@cafcass.gov.uk"
KEY = "c" * 64


def _copy(*recipients: str) -> Copy:
    data = (f"From: {SENDER}\r\nTo: {recipients[0]}\r\nSubject: s\r\n\r\nhello\r\n").encode()
    return Copy(KEY, SENDER, recipients, data)


def _settings(sink: Sink) -> UpstreamConfig:
    return replace(UpstreamConfig(), host=sink.host, port=sink.port, tls="none", timeout=10.0)


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """Two gateway nodes: a data directory each, one PostgreSQL."""
    made = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        made.append(Database.open(tmp_path / name, DatabaseSettings(url=pg_url, node=name)))
    try:
        yield made[0], made[1]
    finally:
        for database in made:
            database.close()


@pytest.fixture
async def relays(nodes: tuple[Database, Database],
                 sink: Sink) -> AsyncIterator[tuple[SmtpRelay, SmtpRelay]]:
    """A relay on each node, to the same upstream, each with the node's ledger."""
    one, two = (SmtpRelay(_settings(sink), Ledger(node, NAME), close_ledger=True)
                for node in nodes)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


def _in_flight(database: Database) -> int:
    with psycopg.connect(database.url) as pg:
        row = pg.execute("SELECT COUNT(*) FROM relay_in_flight").fetchone()
    assert row is not None
    return int(row[0])


async def test_a_retry_through_the_other_node_is_not_delivered_again(
        relays: tuple[SmtpRelay, SmtpRelay], sink: Sink, nodes: tuple[Database, Database]
) -> None:
    """Node one delivers and commits the acceptance before answering; the client's retry
    through node two is DELIVERED without a second hand-over (the sink holds one copy), and
    no "being handed over" row is left behind."""
    one, two = relays
    first = await one.deliver([_copy("a@example.org")])
    assert first.ok
    assert two.ledger.accepted(KEY) == {"a@example.org"}  # in the shared table already
    retry = await two.deliver([_copy("a@example.org")])
    assert retry.ok and retry.accepted == ("a@example.org",)
    assert [m.rcpt_tos for m in sink.messages] == [("a@example.org",)]
    assert sink.connections == 1
    assert _in_flight(nodes[0]) == 0


async def test_a_retry_through_the_other_node_after_a_partial_success_sends_the_rest(
        relays: tuple[SmtpRelay, SmtpRelay], sink: Sink) -> None:
    """Copy 1 accepted by node one, copy 2 refused for now; the retry through node two sends
    copy 2 alone."""
    one, two = relays
    copies = [_copy("a@example.org"), replace(_copy("b@example.org"), key="d" * 64)]
    sink.fail(Step.RCPT, "451 4.3.0 try later", times=1, recipient="b@example.org")
    first = await one.deliver(copies)
    assert first.outcome is Outcome.TEMPORARY and first.accepted == ("a@example.org",)
    retry = await two.deliver(copies)
    assert retry.ok and retry.accepted == ("a@example.org", "b@example.org")
    assert [m.rcpt_tos for m in sink.messages] == [("a@example.org",), ("b@example.org",)]


async def test_a_retry_through_the_other_node_while_the_first_is_sending_waits(
        relays: tuple[SmtpRelay, SmtpRelay], sink: Sink) -> None:
    """While node one waits for the upstream's reply to the end of data, the same copy
    retried through node two is TEMPORARY (BUSY) and not sent; once node one has its 250,
    the retry through node two is DELIVERED with nothing sent again."""
    one, two = relays
    fault = sink.late_reply(times=1)
    first = asyncio.ensure_future(one.deliver([_copy("a@example.org")]))
    await fault.struck.wait()
    meanwhile = await two.deliver([_copy("a@example.org")])
    fault.released.set()
    assert (await first).ok
    again = await two.deliver([_copy("a@example.org")])
    assert meanwhile.outcome is Outcome.TEMPORARY and meanwhile.problem is Problem.BUSY
    assert "another node" in meanwhile.detail
    assert again.ok and len(sink.messages) == 1


async def test_a_claim_left_by_a_dead_node_expires(nodes: tuple[Database, Database]) -> None:
    """A node that dies while handing a copy over leaves its claim: the other node's retry
    is held off for the lease, then may take the copy (its acceptance never reached the
    table, so nothing says it left)."""
    lasting = Ledger(nodes[0], NAME)
    expired = Ledger(nodes[0], NAME, lease=timedelta(0))
    other = Ledger(nodes[1], NAME)
    try:
        assert await lasting.claim_shared(KEY)
        assert not await other.claim_shared(KEY)  # held by a live lease
        assert await expired.claim_shared("e" * 64)  # a lease already over, as a dead node's
        assert await other.claim_shared("e" * 64)
    finally:
        for ledger in (lasting, expired, other):
            ledger.close()


async def test_a_copy_wholly_accepted_needs_no_claim(
        relays: tuple[SmtpRelay, SmtpRelay], sink: Sink, nodes: tuple[Database, Database]
) -> None:
    """A node killed after its acceptance reached the table (its restart folded the journal)
    leaves its claim behind: the retry through the other node is still DELIVERED at once,
    nothing sent, since every recipient of the copy is accepted."""
    dead = Ledger(nodes[0], NAME)
    assert await dead.claim_shared(KEY)
    dead.record(KEY, ["a@example.org"], datetime.now(UTC))
    dead.close()  # no release: as a process killed
    retry = await relays[1].deliver([_copy("a@example.org")])
    partly = await relays[1].deliver([_copy("a@example.org", "b@example.org")])
    assert retry.ok and sink.messages == []
    assert partly.outcome is Outcome.TEMPORARY and partly.problem is Problem.BUSY


async def test_a_long_hand_over_renews_its_claim(nodes: tuple[Database, Database]) -> None:
    """A hand-over that lasts longer than a third of the lease renews it, so the other node
    keeps waiting however long the upstream takes."""
    holder = Ledger(nodes[0], NAME, lease=timedelta(seconds=3))
    other = Ledger(nodes[1], NAME)
    try:
        assert await holder.claim_shared(KEY)
        first = _expiry(nodes[0])
        async with asyncio.timeout(10):  # renewed after about a second: polled for
            while True:
                if _expiry(nodes[0]) > first:
                    break
                await asyncio.sleep(0.05)
        assert not await other.claim_shared(KEY)
        await holder.release_shared([KEY])
        assert await other.claim_shared(KEY)
    finally:
        holder.close()
        other.close()


def _expiry(database: Database) -> float:
    with psycopg.connect(database.url) as pg:
        row = pg.execute("SELECT expires_at FROM relay_in_flight WHERE copy_key = %s",
                         (KEY,)).fetchone()
    assert row is not None
    return float(row[0])


async def test_a_commit_that_does_not_come_in_time_is_a_fault_and_the_claim_stays(
        nodes: tuple[Database, Database], sink: Sink) -> None:
    """The shared table cannot be written (a lock the test holds) when the upstream has
    accepted: after `settle_timeout` the client still gets its 250 and the fault is reported,
    the acceptance is in node one's journal, and node one keeps its claim, so the retry
    through node two is held off (BUSY) rather than sent. Once the table is free the fold
    commits the acceptance and releases the claim: the retry is DELIVERED, sent once."""
    faults: list[str] = []
    one = SmtpRelay(_settings(sink), Ledger(nodes[0], NAME, settle_timeout=timedelta(seconds=0.5)),
                    close_ledger=True)
    one.ledger.on_fault = faults.append
    two = SmtpRelay(_settings(sink), Ledger(nodes[1], NAME), close_ledger=True)
    try:
        with psycopg.connect(nodes[0].url) as locker:
            locker.execute("LOCK TABLE accepted IN EXCLUSIVE MODE")  # writes wait, reads don't
            first = await one.deliver([_copy("a@example.org")])
            held_off = await two.deliver([_copy("a@example.org")])
            journalled = [path.read_bytes() for path in
                          nodes[0].data_dir.glob(f"{NAME}.journal.*")]
            locker.rollback()
        await one.ledger.flush()
        retry = await two.deliver([_copy("a@example.org")])
    finally:
        await one.close()
        await two.close()
    assert first.ok and faults and "did not commit" in faults[0]
    assert any(KEY.encode() in journal for journal in journalled)
    assert held_off.outcome is Outcome.TEMPORARY and held_off.problem is Problem.BUSY
    assert retry.ok and len(sink.messages) == 1
    assert _in_flight(nodes[0]) == 0
