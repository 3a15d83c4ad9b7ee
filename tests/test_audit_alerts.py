"""Breach alerts and the daily digest through the real SMTP relay into a real aiosmtpd sink;
cursors on SQLite and on PostgreSQL, and two nodes of which only the lease holder mails."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import psycopg
import pytest

from gateway.app import read_policy
from gateway.audit.alerts import Alerter, AlertSettings
from gateway.audit.trail import AuditLog
from gateway.config import AuditConfig, Config, ConfigError, UpstreamConfig
from tests.sink import Sink, Step
from transports.database import Database, DatabaseSettings
from transports.ledger import Ledger
from transports.smtp_relay import SmtpRelay

POLICY = read_policy(Config(), Path("."))
GOVERNANCE_BOX = "governance@cafcass.gov.uk"
CONFIG = Config(audit=AuditConfig(governance_address=GOVERNANCE_BOX, digest_time="07:30"))


class Clock:
    """A clock the test sets by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    """An audit log graded by the real policy."""
    log = AuditLog.open(Database.open(tmp_path), rules=POLICY.rules, kind_grades=POLICY.grades,
                        stream=io.StringIO())
    yield log
    log.close()


@pytest.fixture
async def relay(sink: Sink, tmp_path: Path) -> AsyncIterator[SmtpRelay]:
    """The normal outbound path, pointed at the sink."""
    ledger = Ledger(Database.open(tmp_path), "ledger.sqlite3")
    settings = UpstreamConfig(host=sink.host, port=sink.port, tls="none", timeout=5.0)
    transport = SmtpRelay(settings, ledger)
    yield transport
    await transport.close()
    ledger.close()


SETTINGS = AlertSettings.from_config(CONFIG)
assert SETTINGS is not None


@pytest.fixture
def alerter(audit: AuditLog, relay: SmtpRelay, database: Database) -> Iterator[Alerter]:
    """An alerter mailing the governance box through the relay, on a hand-set clock, its
    cursors on either engine."""
    assert SETTINGS is not None
    running = Alerter(audit, relay, SETTINGS, database, clock=Clock())
    yield running
    running.close()


@pytest.fixture
def nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """Two gateway nodes on one PostgreSQL database."""
    databases = tuple(Database.open(tmp_path / name, DatabaseSettings(url=pg_url, node=name))
                      for name in ("one", "two"))
    yield databases  # type: ignore[misc]
    for database in databases:
        database.close()


def end_session(pg_url: str, alerter: Alerter) -> None:
    """What the node's death does to its lease: PostgreSQL ends its session."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(%s, 10000)",
                              (alerter.lease.pid,)).fetchone()
    assert ended == (True,)


def alerted_seqs(sink: Sink) -> list[int]:
    """The events each mailed alert names, in mailing order."""
    seqs: list[int] = []
    for received in sink.messages:
        text = parsed(received.data).get_payload(decode=True).decode()
        seqs += [int(line.split()[1].rstrip(",")) for line in text.splitlines()
                 if line.startswith("Event ")]
    return seqs


def parsed(data: bytes) -> Message:
    return message_from_bytes(data)


def refuse(audit: AuditLog, rule: str, recipient: str) -> int:
    return audit.record("refusal", rule=rule, sender="jo.bloggs@cafcass.gov.uk",
                        recipients=[recipient], case_numbers=["ZE26C00001"], stage="rcpt")


async def test_high_grade_attempt_is_mailed_at_once(
    audit: AuditLog, alerter: Alerter, sink: Sink
) -> None:
    """A personal-address refusal (high) is mailed by the running loop as soon as recorded."""
    task = asyncio.create_task(alerter.run())
    try:
        refuse(audit, "editable-document", "solicitor@lawfirm.co.uk")  # low: digest only
        seq = refuse(audit, "personal-address", "jo.bloggs.home@gmail.com")
        await asyncio.wait_for(alerter.wait_alerted(seq), timeout=10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(sink.messages) == 1
    received = sink.messages[0]
    assert received.rcpt_tos == (GOVERNANCE_BOX,)
    mail = parsed(received.data)
    assert mail["Subject"] == "casegate alert: 1 high-grade breach attempt"
    assert mail["Auto-Submitted"] == "auto-generated"
    text = mail.get_payload(decode=True).decode()
    assert "jo.bloggs.home@gmail.com" in text and "IA 3.2" in text
    assert f"/governance/events/{seq}" in text
    assert "solicitor@lawfirm.co.uk" not in text


async def test_alerts_survive_an_upstream_outage(
    audit: AuditLog, alerter: Alerter, sink: Sink
) -> None:
    """When the upstream refuses, the cursor stays and the next round sends the alert."""
    sink.fail(Step.MAIL, "451 4.3.0 try later", times=1)
    refuse(audit, "personal-address", "a.parent@gmail.com")
    assert await alerter.send_alerts() == 0
    assert sink.messages == []
    assert await alerter.send_alerts() == 1
    assert len(sink.messages) == 1
    assert await alerter.send_alerts() == 0  # nothing new: nothing sent


async def test_cursor_is_kept_across_restarts(
    audit: AuditLog, relay: SmtpRelay, sink: Sink, database: Database
) -> None:
    """A new alerter resumes from the stored cursor and does not mail history twice."""
    settings = AlertSettings.from_config(CONFIG)
    assert settings is not None
    first = Alerter(audit, relay, settings, database)
    refuse(audit, "personal-address", "a.parent@gmail.com")
    assert await first.send_alerts() == 1
    first.close()
    refuse(audit, "lookalike-domain", "clerk@justice.gov.uk.co")
    second = Alerter(audit, relay, settings, database)
    assert await second.send_alerts() == 1
    second.close()
    assert len(sink.messages) == 2


async def test_daily_digest_lists_the_rest(
    audit: AuditLog, alerter: Alerter, sink: Sink
) -> None:
    """The digest counts low and medium attempts by rule and leaves out high and non-breach."""
    refuse(audit, "editable-document", "solicitor@lawfirm.co.uk")
    refuse(audit, "editable-document", "cafcass@lawfirm.co.uk")
    refuse(audit, "unverified-recipient", "new.parent@example.org")
    refuse(audit, "personal-address", "jo.home@gmail.com")
    audit.record("delivery", recipients=["court@justice.gov.uk"])
    assert await alerter.send_digest()
    mail = parsed(sink.messages[-1].data)
    assert mail["Subject"] == "casegate daily digest 2026-03-02: 3 breach attempts"
    text = mail.get_payload(decode=True).decode()
    assert "editable-document: 2" in text and "unverified-recipient: 1" in text
    assert "jo.home@gmail.com" not in text and "court@justice.gov.uk" not in text
    assert await alerter.send_digest()
    assert "0 breach attempts" in parsed(sink.messages[-1].data)["Subject"]


def test_next_digest_is_the_next_digest_time(alerter: Alerter) -> None:
    """The digest is due at the configured UTC time today, or tomorrow once it has passed."""
    before = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    after = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert alerter.next_digest(before) == before + timedelta(minutes=30)
    assert alerter.next_digest(after) == datetime(2026, 3, 3, 7, 30, tzinfo=UTC)


def test_header_values_cannot_inject_headers(audit: AuditLog) -> None:
    """A sender address with CR/LF in it never becomes a header or a second line."""
    from gateway.audit.alerts import compose

    settings = AlertSettings.from_config(CONFIG)
    assert settings is not None
    data = compose(replace(settings, sender="a@b.org\r\nBcc: evil@x.org"), "s\r\nX: y",
                   ["intro"], ["body"], datetime(2026, 3, 2, tzinfo=UTC))
    head = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head and b"\r\nX: y" not in head


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (AuditConfig(governance_address=GOVERNANCE_BOX, alert_grades=("urgent",)), "alert_grades"),
        (AuditConfig(governance_address=GOVERNANCE_BOX, digest_time="7pm"), "digest_time"),
    ],
)
def test_bad_settings_name_the_key(section: AuditConfig, message: str) -> None:
    """A wrong grade or time in [audit] is a ConfigError naming the key."""
    with pytest.raises(ConfigError, match=message):
        AlertSettings.from_config(Config(audit=section))


def test_no_governance_address_means_no_mail() -> None:
    """Without a governance address there is nothing to send to, so no alerter runs."""
    assert AlertSettings.from_config(Config()) is None


async def test_only_the_lease_holder_mails(
    audit: AuditLog, relay: SmtpRelay, sink: Sink, nodes: tuple[Database, Database]
) -> None:
    """Two nodes' alerters on one database: the first to lead mails every alert, the other
    mails none, whichever node's loop looks first."""
    assert SETTINGS is not None
    one, two = (Alerter(audit, relay, SETTINGS, node) for node in nodes)
    try:
        refuse(audit, "personal-address", "a.parent@gmail.com")
        assert await one.send_alerts() == 1
        assert await two.send_alerts() == 0 and not two.leading
        seq = refuse(audit, "lookalike-domain", "clerk@justice.gov.uk.co")
        assert await two.send_alerts() == 0  # the other node looks first: still not its turn
        assert not await two.send_checkpoint() and not await two.send_digest()
        assert await one.send_alerts() == 1
        assert one.leading and alerted_seqs(sink) == [seq - 1, seq]
    finally:
        one.close()
        two.close()


async def test_another_node_takes_over_when_the_leader_dies(
    audit: AuditLog, relay: SmtpRelay, sink: Sink, nodes: tuple[Database, Database],
    pg_url: str
) -> None:
    """The leader's session ends (as when its node is killed): the other node takes the lease,
    continues from the cursor the leader left, and mails the next alert; none is mailed twice
    or lost, and the old leader, still running, mails nothing more."""
    assert SETTINGS is not None
    one, two = (Alerter(audit, relay, SETTINGS, node) for node in nodes)
    try:
        first = refuse(audit, "personal-address", "a.parent@gmail.com")
        assert await one.send_alerts() == 1
        assert await two.send_alerts() == 0
        end_session(pg_url, one)
        second = refuse(audit, "lookalike-domain", "clerk@justice.gov.uk.co")
        assert await two.send_alerts() == 1 and two.leading
        assert await one.send_alerts() == 0 and not one.leading
        third = refuse(audit, "personal-address", "b.parent@gmail.com")
        assert await one.send_alerts() == 0
        assert await two.send_alerts() == 1
        assert alerted_seqs(sink) == [first, second, third]
    finally:
        one.close()
        two.close()


async def test_running_loops_hand_over_without_losing_an_alert(
    audit: AuditLog, relay: SmtpRelay, sink: Sink, nodes: tuple[Database, Database],
    pg_url: str
) -> None:
    """Both nodes run the alert loop (the other retries the lease every few milliseconds
    here): an alert is mailed once by the leader; when the leader dies (its loop stops, its
    session ends), the other node's loop takes over and mails the next one, once."""
    assert SETTINGS is not None
    one, two = (Alerter(audit, relay, SETTINGS, node, poll_seconds=0.05, lease_seconds=0.05)
                for node in nodes)
    leader = asyncio.create_task(one.run())
    tasks: list[asyncio.Task[None]] = []
    try:
        first = refuse(audit, "personal-address", "a.parent@gmail.com")
        await asyncio.wait_for(one.wait_alerted(first), timeout=10)
        tasks.append(asyncio.create_task(two.run()))  # the other node starts while one leads
        leader.cancel()  # the node dies: its loop stops ...
        with pytest.raises(asyncio.CancelledError):
            await leader
        end_session(pg_url, one)  # ... and PostgreSQL ends its session
        second = refuse(audit, "lookalike-domain", "clerk@justice.gov.uk.co")
        await asyncio.wait_for(two.wait_alerted(second), timeout=30)
        assert alerted_seqs(sink) == [first, second]
    finally:
        for task in (leader, *tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        one.close()
        two.close()
