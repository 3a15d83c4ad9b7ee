"""The way out when no upstream is configured: a local Maildir that shows what would have left.

A newcomer running `casegate serve` with no configuration sees every copy the gateway would have
sent as one file in `<data>/outbox/new/`, with its envelope in two headers added on top:
`X-Casegate-Envelope-From` and `X-Casegate-Envelope-To`. Each file is written atomically (the
stdlib `mailbox.Maildir` writes into tmp/ and then moves it into new/), and the same checks as
for the SMTP relay apply first: nothing with a bare CR, bare LF or NUL, no unsafe address.

Disk trouble is TEMPORARY (the client keeps the message and retries); the ledger keeps a retried
message from being written twice (its journal line follows the file's move into new/: a crash
between the two is the outbox's only window for a second file).
"""

from __future__ import annotations

import asyncio
import mailbox
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from transports.base import Copy, DeliveryResult, Outcome, Problem, Ready, wait_ready
from transports.database import Database
from transports.ledger import (
    DEFAULT_RETENTION,
    FaultReporter,
    Ledger,
    LedgerError,
    deliver_once,
)
from transports.smtp_relay import unsafe_copy_reason

log = structlog.get_logger("casegate.outbox")

ENVELOPE_FROM = "X-Casegate-Envelope-From"
ENVELOPE_TO = "X-Casegate-Envelope-To"


def envelope_headers(mail_from: str, recipients: Sequence[str]) -> bytes:
    """The header lines recording the envelope (addresses already checked: no CR, LF, NUL)."""
    to = ", ".join(f"<{r}>" for r in recipients)
    return f"{ENVELOPE_FROM}: <{mail_from}>\r\n{ENVELOPE_TO}: {to}\r\n".encode()


class MaildirOutbox:
    """A `Transport` that files each copy into a Maildir instead of sending it."""

    def __init__(
        self,
        path: Path,
        ledger: Ledger | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retention: timedelta = DEFAULT_RETENTION,
        on_fault: FaultReporter | None = None,
    ) -> None:
        """`ledger`: the idempotency ledger to share; by default one in a file beside the
        Maildir (`<path>-ledger.sqlite3`: SQLite whatever the stores' engine, the Maildir being
        this node's own), opened at the first delivery, keeping entries for `retention` and
        reporting what it cannot write down to `on_fault`."""
        self.path = path
        self._ledger = ledger
        self._own_ledger = ledger is None
        self._retention = retention
        self._on_fault = on_fault
        self._clock = clock
        self._opening = asyncio.Lock()  # one ledger, however many deliveries ask at once

    async def deliver(self, copies: Sequence[Copy],
                      ready: Ready | None = None) -> DeliveryResult:
        """File every copy not already filed; stop at the first that cannot be written."""
        reason = unsafe_copy_reason(copies)
        if reason:
            log.error("outbox.refused_copy", reason=reason)
            return DeliveryResult(Outcome.PERMANENT, reason, problem=Problem.UNSENDABLE)
        not_ready = await wait_ready(ready)
        if not_ready is not None:
            return not_ready
        try:
            ledger = await self._open_ledger()
        except LedgerError as exc:
            return DeliveryResult(Outcome.TEMPORARY, str(exc), problem=Problem.GATEWAY)
        return await deliver_once(ledger, copies, self._file, self._clock)

    async def close(self) -> None:
        """Fold the acceptance journal into the ledger; close the ledger if this outbox
        opened it."""
        if self._ledger is not None:
            await self._ledger.flush()
        if self._own_ledger and self._ledger is not None:
            ledger, self._ledger = self._ledger, None
            await asyncio.to_thread(ledger.close)

    async def _open_ledger(self) -> Ledger:
        """The ledger, opened (in a worker thread: it creates a file) by the first delivery."""
        async with self._opening:
            if self._ledger is None:
                self._ledger = await asyncio.to_thread(
                    Ledger, Database.open(self.path.parent), f"{self.path.name}-ledger.sqlite3",
                    retention=self._retention)
                self._ledger.on_fault = self._on_fault
        return self._ledger

    async def _file(self, copy: Copy, recipients: tuple[str, ...]) -> DeliveryResult:
        """Write one copy for `recipients`; disk trouble is TEMPORARY."""
        try:
            name = await asyncio.to_thread(self._write, copy, recipients)
        except OSError as exc:
            log.error("outbox.write_failed", key=copy.key, error=exc.__class__.__name__)
            detail = f"cannot write to the outbox ({exc.__class__.__name__})"
            return DeliveryResult(Outcome.TEMPORARY, detail, problem=Problem.GATEWAY)
        log.debug("outbox.copy", key=copy.key, recipients=len(recipients), file=name)
        return DeliveryResult(Outcome.DELIVERED, accepted=recipients)

    def _write(self, copy: Copy, recipients: tuple[str, ...]) -> str:
        """One file in new/, written atomically and readable by the owner only; returns its
        Maildir key."""
        box = mailbox.Maildir(self.path, factory=None, create=True)
        key = box.add(envelope_headers(copy.mail_from, recipients) + copy.data)
        (self.path / "new" / key).chmod(0o600)
        return key
