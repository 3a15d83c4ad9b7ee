"""Breach attempts mailed to the governance mailbox (IA 2.2): at once, or in a daily digest.

Events whose grade is in `[audit] alert_grades` (default: high) are mailed as soon as they are
recorded; those in `digest_grades` (default: low, medium) are listed in one digest a day at
`digest_time` (UTC). Both go through the normal outbound `Transport` (the SMTP relay, or the
outbox when no upstream is configured), with an idempotency key so a retried hand-over is not
delivered twice.

With `[audit] mail_checkpoints` (the default), each signed checkpoint of the chain is mailed
there too, as a JSON attachment (`casegate audit checkpoint --verify` reads it): a copy of the
chain's head that whoever can rewrite the data directory cannot reach (see docs/audit.md). When
several were signed since the last mail, only the newest goes: it vouches for all before it.

Progress is cursors (the last sequence number alerted, the last digested, the last checkpoint
mailed, when the last digest went) kept in `alerts.sqlite3` in the data directory, or in the
PostgreSQL database the nodes share, advanced only after the transport accepted the mail: an
upstream outage delays alerts, it never loses them. On first start both cursors begin at the
trail's current head (history is not mailed). The mail carries metadata only, like the trail.

Exactly one node mails at a time: the one holding the "alerts" lease
(`transports.database.Lease`, always held on SQLite). Every node runs the loop; the others
try to take the lease every `LEASE_SECONDS`, and the one that takes it when the leader dies
reads the cursors the leader left in the database and continues from there. Each mail is
sent only after the lease was checked and the cursors read again, and a cursor only moves
forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import structlog
from aiohttp import web

from gateway.audit.export import checkpoint_document
from gateway.audit.store import Checkpoint, StoredEvent
from gateway.audit.trail import GRADES, AuditLog
from gateway.config import Config, ConfigError, public_url
from policies.model import Rule
from transports.base import Copy, Origin, Transport
from transports.database import Database, OperationalError, migrate

log = structlog.get_logger("casegate.alerts")

STATE_FILE = "alerts.sqlite3"  # on PostgreSQL: the name of the cursors' write lock
COMPONENT = "alerts"  # its line in schema_version
MIGRATIONS = ("CREATE TABLE IF NOT EXISTS alert_cursor (name TEXT PRIMARY KEY, seq INTEGER)",)
LEASE = "alerts"  # the lease the mailing node holds
MAX_EVENTS_PER_MAIL = 200
MAX_EVENTS_PER_DIGEST = 50_000  # counted by rule; beyond this the governance view has them
POLL_SECONDS = 60.0  # also catches events that other processes (the CLI) recorded
SHARED_POLL_SECONDS = 10.0  # on PostgreSQL: events other nodes recorded, mailed this soon
LEASE_SECONDS = 10.0  # a node not mailing tries to take over this often
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class AlertSettings:
    """The `[audit]` section, checked."""

    governance_address: str
    sender: str
    alert_grades: frozenset[str]
    digest_grades: frozenset[str]
    digest_time: time
    public_url: str = ""
    mail_checkpoints: bool = True

    @classmethod
    def from_config(cls, config: Config) -> AlertSettings | None:
        """The settings, or None when no governance address is configured (no mail)."""
        section = config.audit
        if not section.governance_address:
            return None
        for key in ("alert_grades", "digest_grades"):
            for grade in getattr(section, key):
                if grade not in GRADES or grade == "none":
                    raise ConfigError(f"{config.source}: 'audit.{key}' has '{grade}'; "
                                      "use low, medium or high")
        match = _TIME.fullmatch(section.digest_time)
        if match is None:
            raise ConfigError(f"{config.source}: 'audit.digest_time' must be HH:MM (UTC)")
        return cls(
            governance_address=section.governance_address,
            sender=section.alert_from or f"casegate@{config.smtp.hostname}",
            alert_grades=frozenset(section.alert_grades),
            digest_grades=frozenset(section.digest_grades) - frozenset(section.alert_grades),
            digest_time=time(int(match.group(1)), int(match.group(2)), tzinfo=UTC),
            public_url=public_url(config),
            mail_checkpoints=section.mail_checkpoints,
        )


def _newer(version: int) -> Exception:
    return OperationalError(f"the alert cursors are at schema version {version}, made by a "
                            "newer casegate: upgrade casegate")


class Cursors:
    """The progress markers in `alerts.sqlite3` (or the shared database): each only moves
    forward, so a node that lost the lease cannot move one back."""

    def __init__(self, database: Database) -> None:
        self._lock = threading.Lock()
        self._db = database.connect(STATE_FILE, autocommit=True, timeout=10.0)
        migrate(self._db, COMPONENT, MIGRATIONS, _newer)

    def get(self, name: str, default: int) -> int:
        """The cursor `name`, set to `default` when there is none yet (the first node's)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO alert_cursor (name, seq) VALUES (?, ?)",
                             (name, default))
            row = self._db.execute("SELECT seq FROM alert_cursor WHERE name = ?",
                                   (name,)).fetchone()
            return int(row[0])

    def all(self) -> dict[str, int]:
        with self._lock:
            return {str(row[0]): int(row[1]) for row in self._db.execute(
                "SELECT name, seq FROM alert_cursor")}

    def set(self, name: str, seq: int) -> None:
        with self._lock:
            self._db.execute("UPDATE alert_cursor SET seq = ? WHERE name = ? AND seq < ?",
                             (seq, name, seq))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _safe(value: str, limit: int = 300) -> str:
    """A value safe in a header or a line of text: no control characters, bounded."""
    return _UNSAFE.sub("?", value)[:limit]


def _event_lines(event: StoredEvent, rules: dict[str, Rule], public_url: str) -> list[str]:
    rule = rules.get(event.rule)
    lines = [
        f"Event {event.seq}, {event.time[:19].replace('T', ' ')} UTC",
        f"  Grade:        {event.grade}",
        f"  Kind:         {_safe(event.kind)}",
        f"  Rule:         {_safe(event.rule or 'none')}"
        + (f" ({_safe(event.citation)})" if event.citation else ""),
        f"  Sender:       {_safe(event.sender or 'none')}",
        f"  Recipients:   {_safe(', '.join(event.recipients) or 'none', 2000)}",
        f"  Case numbers: {_safe(', '.join(event.case_numbers) or 'none')}",
    ]
    if rule is not None:
        lines.append(f"  Policy:       {_safe(rule.sentence, 1000)}")
    if public_url:
        lines.append(f"  Review:       {public_url}/governance/events/{event.seq}")
    return [*lines, ""]


def compose(settings: AlertSettings, subject: str, intro: list[str], body: list[str],
            now: datetime) -> bytes:
    """One plain-text message, CRLF line endings, every header value sanitised."""
    return compose_message(settings, subject, intro, body, now).as_bytes()


def compose_message(settings: AlertSettings, subject: str, intro: list[str], body: list[str],
                    now: datetime) -> EmailMessage:
    """`compose`, as a message an attachment can still be added to."""
    message = EmailMessage(policy=SMTP)
    message["From"] = _safe(settings.sender)
    message["To"] = _safe(settings.governance_address)
    message["Subject"] = _safe(subject)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("casegate", settings.sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join([*intro, "", *body]))
    return message


class Alerter:
    """Sends alerts and digests; `run()` is the background loop `casegate serve` starts."""

    def __init__(
        self,
        audit: AuditLog,
        transport: Transport,
        settings: AlertSettings,
        database: Database,
        *,
        clock: Callable[[], datetime] | None = None,
        poll_seconds: float | None = None,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.audit = audit
        self.transport = transport
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._poll = poll_seconds if poll_seconds is not None else \
            POLL_SECONDS if database.is_sqlite else SHARED_POLL_SECONDS
        self._lease_seconds = lease_seconds
        self.lease = database.lease(LEASE)
        self.leading = False  # as this node last found
        self._cursors = Cursors(database)
        head = audit.store.head()[0]
        self.alerted = self._cursors.get("alert", head)
        self.digested = self._cursors.get("digest", head)
        self.checkpointed = self._cursors.get("checkpoint", 0)
        self.digest_at = self._cursors.get("digest-at", int(self._clock().timestamp()))
        self._wake = asyncio.Event()
        self._sent = asyncio.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        audit.listeners.append(self._notice)

    def _notice(self, event: StoredEvent) -> None:
        """Audit listener: wake the loop for an alert-grade event (from any thread)."""
        if event.grade in self.settings.alert_grades and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def lead(self) -> bool:
        """Whether this node mails now (it holds the lease), with the cursors as the database
        has them (another node may have moved them while it led)."""
        leading = await asyncio.to_thread(self._take_lead)
        if leading != self.leading:
            log.info("alerts-leading" if leading else "alerts-not-leading", lease=LEASE)
        self.leading = leading
        return leading

    def _take_lead(self) -> bool:
        if not self.lease.acquire():
            return False
        cursors = self._cursors.all()
        self.alerted = cursors.get("alert", self.alerted)
        self.digested = cursors.get("digest", self.digested)
        self.checkpointed = cursors.get("checkpoint", self.checkpointed)
        self.digest_at = cursors.get("digest-at", self.digest_at)
        return True

    async def send_alerts(self) -> int:
        """Mail every alert-grade event not yet mailed; the number mailed (0 on failure, or
        when another node mails)."""
        if not await self.lead():
            return 0
        events = await asyncio.to_thread(self.audit.graded_after, self.alerted,
                                         self.settings.alert_grades, MAX_EVENTS_PER_MAIL)
        if not events:
            return 0
        grade = max((e.grade for e in events), key=GRADES.index)
        count = len(events)
        noun = "attempt" if count == 1 else "attempts"
        subject = f"casegate alert: {count} {grade}-grade breach {noun}"
        intro = [f"casegate recorded {count} breach {noun} that governance asked to hear "
                 "about at once (IA 2.2).", ""]
        body = [line for e in events for line in _event_lines(e, dict(self.audit.rules),
                                                                self.settings.public_url)]
        key = f"alert-{events[0].seq}-{events[-1].seq}"
        if not await self._deliver(key, subject, intro, body):
            return 0
        self.alerted = events[-1].seq
        await asyncio.to_thread(self._cursors.set, "alert", self.alerted)
        async with self._sent:
            self._sent.notify_all()
        return count

    async def send_digest(self) -> bool:
        """Mail the digest of digest-grade events since the last one; False on failure (or
        when another node mails)."""
        if not await self.lead():
            return False
        head, found = await asyncio.to_thread(self._digest_events)
        events = [e for e in found if e.seq <= head]
        now = self._clock()
        day = now.date().isoformat()
        subject = f"casegate daily digest {day}: {len(events)} breach attempts"
        by_rule = Counter(e.rule or e.kind for e in events)
        intro = [f"Breach attempts recorded since the last digest: {len(events)}."]
        intro += [f"  {_safe(name)}: {n}" for name, n in sorted(by_rule.items())]
        shown = events[-MAX_EVENTS_PER_MAIL:]
        if len(shown) < len(events):
            intro.append(f"The latest {len(shown)} are listed; see the governance view for all.")
        body = [line for e in shown for line in _event_lines(e, dict(self.audit.rules),
                                                               self.settings.public_url)]
        if not await self._deliver(f"digest-{self.digested}-{head}", subject, intro, body):
            return False
        self.digested, self.digest_at = head, int(now.timestamp())
        await asyncio.to_thread(self._cursors.set, "digest", head)
        await asyncio.to_thread(self._cursors.set, "digest-at", self.digest_at)
        return True

    async def send_checkpoint(self) -> bool:
        """Mail the newest signed checkpoint when it is newer than the last one mailed; False
        when there was none to send, the mail was not accepted, or another node mails."""
        if not self.settings.mail_checkpoints or not await self.lead():
            return False
        checkpoint = await asyncio.to_thread(self.audit.store.latest_checkpoint)
        if checkpoint is None or checkpoint.seq <= self.checkpointed:
            return False
        data = self._checkpoint_mail(checkpoint)
        copy = Copy(key=f"checkpoint-{checkpoint.seq}", mail_from=self.settings.sender,
                    recipients=(self.settings.governance_address,), data=data,
                    origin=Origin.AUTHORED)
        result = await self.transport.deliver([copy])
        if not result.ok:
            log.warning("checkpoint-not-delivered", seq=checkpoint.seq,
                        outcome=result.outcome.value)
            return False
        self.checkpointed = checkpoint.seq
        await asyncio.to_thread(self._cursors.set, "checkpoint", checkpoint.seq)
        return True

    def _checkpoint_mail(self, checkpoint: Checkpoint) -> bytes:
        document = checkpoint_document(checkpoint, self.audit.public_key_pem)
        name = f"casegate-checkpoint-{checkpoint.seq}.json"
        intro = [f"casegate signed a checkpoint of its audit trail: sequence number "
                 f"{checkpoint.seq}, {checkpoint.time}.", "",
                 "Keep this mail where the gateway's administrators cannot change it. To check "
                 "that the trail still holds every event up to this one, unaltered:", "",
                 f"  casegate audit checkpoint --verify {name} --public-key audit.pub",
                 "", "(audit.pub: the public_key in the attachment, kept from an earlier "
                 "checkpoint.)"]
        message = compose_message(self.settings, f"casegate audit checkpoint {checkpoint.seq}",
                                  intro, [], self._clock())
        message.add_attachment(json.dumps(document, indent=2).encode("utf-8"),
                               maintype="application", subtype="json", filename=name)
        return message.as_bytes()

    def _digest_events(self) -> tuple[int, list[StoredEvent]]:
        """The trail's head and the digest-grade events since the last digest (read in a
        worker thread)."""
        head = self.audit.store.head()[0]
        limit = min(head - self.digested, MAX_EVENTS_PER_DIGEST)
        return head, self.audit.graded_after(self.digested, self.settings.digest_grades, limit)

    async def _deliver(self, key: str, subject: str, intro: list[str], body: list[str]) -> bool:
        data = compose(self.settings, subject, intro, body, self._clock())
        copy = Copy(key=key, mail_from=self.settings.sender,
                    recipients=(self.settings.governance_address,), data=data,
                    origin=Origin.AUTHORED)
        result = await self.transport.deliver([copy])
        if not result.ok:
            log.warning("alert-not-delivered", key=key, outcome=result.outcome.value)
        return result.ok

    async def wait_alerted(self, seq: int) -> None:
        """Return once every alert-grade event up to `seq` has been mailed."""
        async with self._sent:
            await self._sent.wait_for(lambda: self.alerted >= seq)

    def next_digest(self, after: datetime) -> datetime:
        today = datetime.combine(after.date(), self.settings.digest_time)
        return today if today > after else today + timedelta(days=1)

    def digest_due(self) -> datetime:
        """When the next digest is due: the first digest time after the last digest (any
        node's), or after the first start."""
        return self.next_digest(datetime.fromtimestamp(self.digest_at, UTC))

    async def run(self) -> None:
        """Alerts at once, the digest daily, until cancelled; only while this node leads."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = self._clock()
            due = now + timedelta(seconds=self._lease_seconds)
            try:
                if await self.lead():
                    await self.send_alerts()
                    await self.send_checkpoint()
                    if now >= self.digest_due():
                        await self.send_digest()
                    due = self.digest_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # a store or transport bug: log it, try again next round
                log.exception("alerts-failed")
            limit = self._poll if self.leading else self._lease_seconds
            wait = max(0.0, min(limit, (due - now).total_seconds()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait or self._poll):  # wait_for may swallow a cancel
                    await self._wake.wait()

    def close(self) -> None:
        if self._notice in self.audit.listeners:
            self.audit.listeners.remove(self._notice)
        self.lease.close()
        self._cursors.close()


@dataclass
class RunningAlerter:
    """Where the HTTP front keeps its alerter while it runs (None before start and after)."""

    alerter: Alerter | None = None


ALERTS: web.AppKey[RunningAlerter] = web.AppKey("casegate-alerts", RunningAlerter)


def attach(web_app: web.Application, config: Config, audit: AuditLog, transport: Transport,
           database: Database) -> None:
    """Run the alerter while the HTTP front runs, mailing through `transport` while this node
    holds the alerts lease; it is reachable as `web_app[ALERTS].alerter` while running."""
    settings = AlertSettings.from_config(config)
    if settings is None:
        return
    running = RunningAlerter()
    web_app[ALERTS] = running

    async def alerting(_: web.Application) -> AsyncIterator[None]:
        alerter = await asyncio.to_thread(Alerter, audit, transport, settings, database)
        running.alerter = alerter
        task = asyncio.create_task(alerter.run(), name="casegate-alerts")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        running.alerter = None
        alerter.close()

    web_app.cleanup_ctx.append(alerting)
