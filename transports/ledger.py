"""The idempotency ledger: which recipients of which copy the way out has already accepted.

casegate holds no queue: on any trouble the client keeps the message and retries. When a retry
follows a partial success (copy 1 accepted upstream, copy 2 refused for now), the ledger lets the
transport skip what was already handed over, so nobody receives the same copy twice. Entries are
kept for a while (default 7 days, longer than any client's retry schedule) and then pruned.

Storage is one SQLite file in WAL mode. Times are stored as UTC seconds since the epoch and are
always passed in: the ledger never reads the clock. On the event loop the ledger is read and
written through `accepted_async` and `record_async`, which run in a `StoreWorker`'s thread, one
at a time in the order they were asked for: a retry's read never overtakes the write of the
attempt before it, even when that attempt's caller was cancelled while waiting.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from transports.base import Copy, DeliveryResult, Outcome, Problem
from transports.worker import StoreWorker, WorkerClosed

DEFAULT_RETENTION = timedelta(days=7)
PRUNE_EVERY = timedelta(minutes=1)  # expired entries may outlive their retention by this much

log = structlog.get_logger("casegate.ledger")

# Hands one copy to its recipients (those not yet accepted) and says how it went.
HandOver = Callable[[Copy, tuple[str, ...]], Awaitable[DeliveryResult]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    copy_key    TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    PRIMARY KEY (copy_key, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accepted_by_time ON accepted (accepted_at);
"""


class LedgerError(Exception):
    """The ledger could not be read or written; the caller must not guess."""


class Ledger:
    """(copy key, recipient) pairs that were accepted, and when."""

    def __init__(self, path: Path, *, retention: timedelta = DEFAULT_RETENTION,
                 worker: StoreWorker | None = None) -> None:
        """Open (creating if needed) the ledger at `path`; entries older than `retention`
        are pruned as new ones are recorded. `worker` runs the async calls (shared with other
        stores, its trips between threads serve them all); by default one of its own."""
        self.path = path
        self.retention = retention
        self._in_flight: set[str] = set()  # copy keys being handed over right now
        self._pruned_at: float | None = None  # when `record` last pruned (UTC seconds)
        self._lock = threading.Lock()  # the connection: the worker's thread, or a sync caller's
        self._worker = worker or StoreWorker("casegate-ledger")
        self._own_worker = worker is None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger at {path}: {exc}") from exc

    def accepted(self, key: str) -> set[str]:
        """The recipients of copy `key` that were already accepted."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT recipient FROM accepted WHERE copy_key = ?", (key,)
                ).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger: {exc}") from exc
        return {recipient for (recipient,) in rows}

    def record(self, key: str, recipients: Iterable[str], now: datetime) -> None:
        """Remember that `recipients` of copy `key` were accepted at `now`; prune what has
        expired at most once every PRUNE_EVERY (the first record prunes)."""
        moment = _seconds(now)
        rows = [(key, recipient, moment) for recipient in recipients]
        with self._lock:
            prune = self._pruned_at is None \
                or moment - self._pruned_at >= PRUNE_EVERY.total_seconds()
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT OR REPLACE INTO accepted (copy_key, recipient, accepted_at) "
                        "VALUES (?, ?, ?)",
                        rows,
                    )
                    if prune:
                        self._db.execute(
                            "DELETE FROM accepted WHERE accepted_at < ?",
                            (moment - self.retention.total_seconds(),),
                        )
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot write the ledger: {exc}") from exc
            if prune:
                self._pruned_at = moment

    def prune(self, older_than: datetime) -> int:
        """Forget entries accepted before `older_than`; returns how many were removed."""
        try:
            with self._lock, self._transaction():
                cursor = self._db.execute(
                    "DELETE FROM accepted WHERE accepted_at < ?", (_seconds(older_than),)
                )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot prune the ledger: {exc}") from exc
        return cursor.rowcount

    async def accepted_async(self, key: str) -> set[str]:
        """`accepted`, in the worker's thread: the event loop goes on meanwhile."""
        try:
            return await self._worker.run(self.accepted, key)
        except WorkerClosed as exc:
            raise LedgerError(f"cannot read the ledger: {exc}") from exc

    async def record_async(self, key: str, recipients: Iterable[str], now: datetime) -> None:
        """`record`, in the worker's thread: the event loop goes on meanwhile."""
        try:
            await self._worker.run(self.record, key, tuple(recipients), now)
        except WorkerClosed as exc:
            raise LedgerError(f"cannot write the ledger: {exc}") from exc

    def claim(self, key: str) -> bool:
        """Mark copy `key` as being handed over now; False if it already is (in this process)."""
        if key in self._in_flight:
            return False
        self._in_flight.add(key)
        return True

    def release(self, key: str) -> None:
        """The hand-over of copy `key` is over, however it went."""
        self._in_flight.discard(key)

    def close(self) -> None:
        """Finish what the worker was asked to do (when it is the ledger's own), then close."""
        if self._own_worker:
            self._worker.close()
        with self._lock:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


async def deliver_once(
    ledger: Ledger,
    copies: Sequence[Copy],
    hand_over: HandOver,
    clock: Callable[[], datetime],
) -> DeliveryResult:
    """Hand over each copy's recipients that the ledger has not seen accepted, in order, and
    record each acceptance; stop at the first copy that is not accepted.

    A copy whose key is being handed over at this moment (a client retrying while its first
    attempt is still in flight) is TEMPORARY rather than sent a second time.
    """
    accepted: list[str] = []
    for copy in copies:
        if not ledger.claim(copy.key):
            detail = "the same copy is already being delivered"
            return DeliveryResult(Outcome.TEMPORARY, detail, tuple(accepted), Problem.BUSY)
        try:
            try:
                done = await ledger.accepted_async(copy.key)
            except LedgerError as exc:
                return DeliveryResult(Outcome.TEMPORARY, str(exc), tuple(accepted),
                                      Problem.GATEWAY)
            accepted.extend(r for r in copy.recipients if r in done)
            pending = tuple(r for r in copy.recipients if r not in done)
            if not pending:
                log.debug("ledger.already_accepted", key=copy.key, recipients=len(done))
                continue
            result = await hand_over(copy, pending)
            if result.ok:
                await _record_quietly(ledger, copy.key, pending, clock())
        finally:
            ledger.release(copy.key)
        if not result.ok:
            return replace(result, accepted=tuple(accepted))
        accepted.extend(pending)
    return DeliveryResult(Outcome.DELIVERED, f"{len(copies)} copies accepted", tuple(accepted))


async def _record_quietly(ledger: Ledger, key: str, recipients: tuple[str, ...],
                         now: datetime) -> None:
    """Record an acceptance; a failure is logged, not returned, since the copy did go."""
    try:
        await ledger.record_async(key, recipients, now)
    except LedgerError as exc:
        log.error("ledger.write_failed", key=key, error=str(exc))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection is autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _seconds(moment: datetime) -> float:
    """UTC seconds since the epoch; a naive datetime is refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("the ledger needs timezone-aware datetimes")
    return moment.astimezone(UTC).timestamp()
