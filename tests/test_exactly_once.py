"""One delivery per recipient across a client's retry, in each window where an accepted copy
used to be sent twice (issue 18): a failure to write down the acceptance (the ledger, the
"relay" audit event) after the upstream's 250, an upstream that answers the end of data later
than `upstream.timeout`, and the portal's copy and notification. Each test proves it with the
sink's own record of what it accepted, and the client's reply.

The kill of a real `casegate serve` between the acceptance and the ledger write is in
tests/test_exactly_once_kill.py.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import LEDGER_FILE
from gateway.audit.store import EventFilter, StoredEvent
from gateway.audit.trail import AUDIT_DB_FILE
from gateway.stores.portal import PORTAL_DB_FILE, CopyState
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.portalweb import protected_message, text_of
from tests.sink import Sink, Step
from transports.ledger import LedgerError
from transports.smtp_relay import SmtpRelay

COLLEAGUE = "colleague@cafcass.gov.uk"
MUM = "mum@example.org"
CASE = "FD24P01234"
LINK = re.compile(r"https://[^\s]+/portal/([A-Za-z0-9_\-]+)")


def _seen(gw: Harness, kind: str) -> asyncio.Event:
    """Set once an audit event of `kind` is committed (listeners run in the writer thread)."""
    loop = asyncio.get_running_loop()
    seen = asyncio.Event()

    def listener(event: StoredEvent) -> None:
        if event.kind == kind:
            loop.call_soon_threadsafe(seen.set)

    gw.app.audit.listeners.append(listener)
    return seen


def _refuse(db: Path, name: str, when: str) -> sqlite3.Connection:
    """Make `db` refuse a write as a full disk would: a trigger, as another process could."""
    other = sqlite3.connect(db)
    other.execute(f"CREATE TRIGGER {name} {when} BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    other.commit()
    return other


def _relay(gw: Harness) -> SmtpRelay:
    relay = gw.gateway.stages.transport
    assert isinstance(relay, SmtpRelay)
    return relay


def _delivered_to(sink: Sink, recipient: str) -> int:
    return sum(recipient in m.rcpt_tos for m in sink.messages)


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        harness.verify(MUM, CASE)
        yield harness


async def test_relay_event_that_cannot_be_recorded_after_acceptance_is_a_250(
        gw: Harness) -> None:
    """The upstream accepted, then the "relay" audit event fails: the client gets 250 (not a
    451 that invites a resend), a high-grade delivery-fault event is alerted, and the client's
    retry of the same message is not delivered again."""
    fault = _seen(gw, "delivery-fault")
    other = _refuse(gw.app.data_dir / AUDIT_DB_FILE, "refuse_relay",
                    "BEFORE INSERT ON audit_event WHEN NEW.kind = 'relay'")
    data = message(to=[COLLEAGUE])
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
    await asyncio.wait_for(fault.wait(), 10)
    fault.clear()
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}  # a retry: nothing more leaves
    await asyncio.wait_for(fault.wait(), 10)  # its event too is recorded in the background
    other.execute("DROP TRIGGER refuse_relay")
    other.commit()
    other.close()
    assert _delivered_to(gw.sink, COLLEAGUE) == 1
    events = gw.app.audit.page(EventFilter(kind="delivery-fault"), limit=10)
    assert len(events) == 2 and all(e.grade == "high" and e.decision_id for e in events)


async def test_ledger_that_cannot_be_written_after_acceptance_is_a_250(gw: Harness) -> None:
    """The upstream accepted, then the ledger refuses the write: the acceptance is in the
    journal, so the client gets 250, the failure is alerted, and the retry sends nothing while
    the ledger is still broken; once it works again the journal is folded into it."""
    fault = _seen(gw, "delivery-fault")
    ledger = _relay(gw).ledger
    other = _refuse(gw.app.data_dir / LEDGER_FILE, "refuse_ledger",
                    "BEFORE INSERT ON accepted")
    data = message(to=[COLLEAGUE])
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
    await ledger.flush()
    await asyncio.wait_for(fault.wait(), 10)
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
    assert _delivered_to(gw.sink, COLLEAGUE) == 1
    other.execute("DROP TRIGGER refuse_ledger")
    other.commit()
    assert await gw.run(gw.send, STAFF, [OTHER := "other@cafcass.gov.uk"],
                        message(to=[OTHER])) == {}
    await ledger.flush()
    rows = other.execute("SELECT COUNT(*) FROM accepted").fetchone()[0]
    other.close()
    assert rows == 2 and _delivered_to(gw.sink, COLLEAGUE) == 1


async def test_final_reply_later_than_the_command_timeout_is_waited_for(
        tmp_path: Path, sink: Sink) -> None:
    """An upstream that commits and answers the end of data after `upstream.timeout` but within
    `upstream.data_done_timeout` is waited for: the client gets 250 and its retry is not
    delivered again (it used to be a 451, and the retry a second delivery)."""
    async with running_gateway(tmp_path, sink,
                               upstream={"timeout": 0.3, "data_done_timeout": 20.0}) as gw:
        sink.late_reply(delay=1.0, times=1)  # three times the command timeout
        data = message(to=[COLLEAGUE])
        assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
        assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
    assert _delivered_to(sink, COLLEAGUE) == 1


async def test_final_reply_later_than_data_done_timeout_is_a_451(
        tmp_path: Path, sink: Sink) -> None:
    """Past `upstream.data_done_timeout` the gateway gives up: 451, the client keeps the
    message (this is the window the timeout bounds)."""
    async with running_gateway(tmp_path, sink,
                               upstream={"timeout": 5.0, "data_done_timeout": 0.3}) as gw:
        fault = sink.late_reply(times=1)
        with pytest.raises(smtplib.SMTPDataError) as later:
            await gw.run(gw.send, STAFF, [COLLEAGUE], message(to=[COLLEAGUE]))
        fault.released.set()
    assert later.value.smtp_code == 451


# -- the portal --------------------------------------------------------------------------


def _links(sink: Sink) -> list[str]:
    return [found.group(1) for m in sink.messages if m.rcpt_tos == (MUM,)
            for found in [LINK.search(text_of(m))] if found]


async def test_portal_notification_lost_is_withdrawn_then_reused_with_the_same_link(
        gw: Harness) -> None:
    """The notification's connection drops after its data (no reply): the client gets 451 and
    the copy is withdrawn (its link opens nothing); the retry makes the same copy active
    again and notifies with the same link: one copy, one notification accepted."""
    gw.sink.drop(Step.DATA, times=1, recipient=MUM)
    data = protected_message(to=MUM)
    with pytest.raises(smtplib.SMTPDataError) as held:
        await gw.run(gw.send, STAFF, [MUM], data)
    assert held.value.smtp_code == 451
    (lost,) = gw.sink.unanswered
    first_link = LINK.search(text_of(lost))
    assert first_link is not None
    assert gw.app.portal.by_link(first_link.group(1)) is None  # withdrawn
    assert await gw.run(gw.send, STAFF, [MUM], data) == {}
    assert _links(gw.sink) == [first_link.group(1)]
    copy = gw.app.portal.by_link(first_link.group(1))
    assert copy is not None and copy.state is CopyState.ACTIVE
    with sqlite3.connect(gw.app.data_dir / PORTAL_DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM portal_copy").fetchone()[0] == 1
    db.close()


async def test_portal_copy_is_active_before_its_notification_is_answered(gw: Harness) -> None:
    """While the upstream has the notification but has not answered, the link already opens
    the copy: a recipient who reads the notification at once is never sent to a dead link."""
    fault = gw.sink.late_reply(times=1)
    sending = asyncio.ensure_future(gw.run(gw.send, STAFF, [MUM], protected_message(to=MUM)))
    await fault.struck.wait()
    (link,) = _links(gw.sink)
    copy = await asyncio.to_thread(gw.app.portal.by_link, link)
    fault.released.set()
    assert await sending == {}
    assert copy is not None and copy.state is CopyState.ACTIVE


async def test_portal_notified_but_not_recorded_is_a_250_without_a_second_notification(
        gw: Harness) -> None:
    """The notification was accepted, then neither "notified" nor the portal-stored event can
    be written: the client gets 250, the failure is alerted, and the retry neither makes a
    second copy nor sends a second notification (the relay's ledger knows it was accepted)."""
    fault = _seen(gw, "delivery-fault")
    portal_db = _refuse(gw.app.data_dir / PORTAL_DB_FILE, "refuse_notified",
                        "BEFORE UPDATE OF notified ON portal_copy")
    data = protected_message(to=MUM)
    assert await gw.run(gw.send, STAFF, [MUM], data) == {}
    await asyncio.wait_for(fault.wait(), 10)
    assert await gw.run(gw.send, STAFF, [MUM], data) == {}
    portal_db.execute("DROP TRIGGER refuse_notified")
    portal_db.commit()
    copies = portal_db.execute("SELECT state FROM portal_copy").fetchall()
    portal_db.close()
    assert copies == [("active",)] and len(_links(gw.sink)) == 1


async def test_portal_notification_refused_for_good_keeps_no_copy(gw: Harness) -> None:
    """A notification the upstream refuses permanently: 554, and the copy is deleted (nobody
    holds its link)."""
    gw.sink.fail(Step.RCPT, "550 5.1.1 no such user", recipient=MUM)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await gw.run(gw.send, STAFF, [MUM], protected_message(to=MUM))
    assert refused.value.smtp_code == 554
    with sqlite3.connect(gw.app.data_dir / PORTAL_DB_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM portal_copy").fetchone()[0] == 0
    db.close()


async def test_remember_days_is_honoured_and_the_ledger_closed_at_stop(
        tmp_path: Path, sink: Sink) -> None:
    """`upstream.remember_days` is the relay ledger's retention (it was always 7 days), and
    stopping the gateway folds the journal into the ledger and closes it."""
    async with running_gateway(tmp_path, sink, upstream={"remember_days": 2.5}) as gw:
        ledger = _relay(gw).ledger
        assert await gw.run(gw.send, STAFF, [COLLEAGUE], message(to=[COLLEAGUE])) == {}
        assert ledger.retention.total_seconds() == 2.5 * 86400
    with pytest.raises(LedgerError):
        ledger.accepted("0" * 64)  # closed
    with sqlite3.connect(tmp_path / "data" / LEDGER_FILE) as db:
        assert db.execute("SELECT recipient FROM accepted").fetchall() == [(COLLEAGUE,)]
    db.close()
