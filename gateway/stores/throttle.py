"""AUTH failure throttle, per client address, across connections (SECURITY.md item 7).

After `free_failures` failures from one address, each further failure is answered only after a
delay that grows with every failure; at `max_failures` the address is locked for
`lockout_seconds`: its AUTH attempts get a 4xx and the connection is closed. A success forgets the
address's failures. The clock is injected so tests need no sleeps.

On SQLite (one node) the failures are counted in memory, as they always were. On PostgreSQL
they are counted in the shared table `auth_failures`, so that failures spread over several nodes
lock a client out at the same count as on one; the clock is then the wall clock (the nodes
share it, a monotonic clock is per process). The event loop calls the `async` methods: on
PostgreSQL they read and write in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from transports.database import Connection, Database, migrate

# Entries idle for longer than this are dropped, so the table cannot grow without bound (in
# memory only when MAX_TRACKED_ADDRESSES are tracked; in the shared table at most once a
# PRUNE_EVERY_SECONDS, by whichever node records a failure).
FORGET_AFTER_SECONDS = 3600.0
MAX_TRACKED_ADDRESSES = 100_000
PRUNE_EVERY_SECONDS = 60.0

LOCK_NAME = "auth-failures"  # the shared table's write lock (PostgreSQL only)
COMPONENT = "throttle"
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE auth_failures (
        key TEXT PRIMARY KEY,                 -- the throttle's scope, ":", the client key
        failures INTEGER NOT NULL,
        last_at REAL NOT NULL,                -- the latest failure, seconds since the epoch
        locked_until REAL NOT NULL            -- 0: not locked
    );
    CREATE INDEX auth_failures_last ON auth_failures (last_at);
    """,
)

# One failure, counted by the database so that two nodes counting at once both count: a
# lockout that has run out starts the count afresh, as in memory.
# Parameters: key, now, max_failures, locked until, max_failures, locked until.
_FAILURE = """
INSERT INTO auth_failures AS f (key, failures, last_at, locked_until)
VALUES (?, 1, ?, CASE WHEN 1 >= ? THEN ? ELSE 0 END)
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN f.locked_until > 0 AND f.locked_until <= excluded.last_at THEN 1
                    ELSE f.failures + 1 END,
    last_at = excluded.last_at,
    locked_until = CASE
        WHEN (CASE WHEN f.locked_until > 0 AND f.locked_until <= excluded.last_at THEN 1
                   ELSE f.failures + 1 END) >= ? THEN ?
        WHEN f.locked_until > 0 AND f.locked_until <= excluded.last_at THEN 0
        ELSE f.locked_until END
RETURNING failures
"""


class Throttle(StrEnum):
    """What to do with an AUTH failure."""

    ANSWER = "answer"  # answer 535 (after `delay`)
    LOCK = "lock"  # answer 4xx and disconnect: the address is now locked


class ThrottleError(Exception):
    """The shared table cannot be used as it is (written by a newer casegate)."""


@dataclass(frozen=True)
class FailureVerdict:
    throttle: Throttle
    delay: float  # seconds to wait before answering


@dataclass
class _Entry:
    failures: int
    last: float
    locked_until: float = 0.0


class AuthThrottle:
    """Counts AUTH failures by client address and says when to slow down and lock.

    `scope` keeps throttles that share the table apart (SMTP AUTH, web sign-in, the API).
    The plain methods may wait for the database: call them in a worker thread, or call the
    `async` ones (`locked`, `failed`, `succeeded`) on the event loop.
    """

    def __init__(
        self,
        max_failures: int = 5,
        lockout_seconds: float = 900.0,
        free_failures: int = 2,
        delay_step: float = 1.0,
        clock: Callable[[], float] | None = None,
        *,
        database: Database | None = None,
        scope: str = "smtp",
    ) -> None:
        self.max_failures = max(1, max_failures)
        self.lockout_seconds = lockout_seconds
        self.free_failures = free_failures
        self.delay_step = delay_step
        self.scope = scope
        self._entries: dict[str, _Entry] = {}
        self._db: Connection | None = None
        self._pruned_at = float("-inf")
        if database is not None and not database.is_sqlite:
            self._clock = clock or time.time
            self._db = database.connect(LOCK_NAME, autocommit=True)
            migrate(self._db, COMPONENT, _MIGRATIONS, lambda version: ThrottleError(
                f"{database.describe()} was written by a newer casegate "
                f"(throttle schema {version})"))
        else:
            self._clock = clock or time.monotonic

    @property
    def shared(self) -> bool:
        """Counted in the shared database (else in this process's memory)."""
        return self._db is not None

    # -- for the event loop ------------------------------------------------------------------

    async def locked(self, *keys: str) -> bool:
        """Whether AUTH from any of `keys` is refused right now."""
        if self._db is None:
            return self._any_locked(keys)
        return await asyncio.to_thread(self._any_locked, keys)

    async def failed(self, *keys: str) -> list[FailureVerdict]:
        """Record one failure for each of `keys`; how to answer each."""
        if self._db is None:
            return self._failures(keys)
        return await asyncio.to_thread(self._failures, keys)

    async def succeeded(self, *keys: str) -> None:
        """A correct login clears the records of `keys`."""
        if self._db is None:
            self._successes(keys)
        else:
            await asyncio.to_thread(self._successes, keys)

    # -- the counting ------------------------------------------------------------------------

    def is_locked(self, address: str) -> bool:
        """Whether AUTH from `address` is refused right now."""
        if self._db is not None:
            row = self._db.execute("SELECT locked_until FROM auth_failures WHERE key = ?",
                                   (self._key(address),)).fetchone()
            return row is not None and float(row[0]) > self._clock()
        entry = self._entries.get(address)
        return entry is not None and entry.locked_until > self._clock()

    def failure(self, address: str) -> FailureVerdict:
        """Record one failure and say how to answer it."""
        now = self._clock()
        failures = self._count_shared(address, now) if self._db is not None \
            else self._count(address, now)
        if failures >= self.max_failures:
            return FailureVerdict(Throttle.LOCK, 0.0)
        extra = failures - self.free_failures
        return FailureVerdict(Throttle.ANSWER, self.delay_step * extra if extra > 0 else 0.0)

    def success(self, address: str) -> None:
        """A correct login clears the address's record."""
        if self._db is not None:
            self._db.execute("DELETE FROM auth_failures WHERE key = ?", (self._key(address),))
        else:
            self._entries.pop(address, None)

    def _any_locked(self, keys: tuple[str, ...]) -> bool:
        return any(self.is_locked(key) for key in keys)

    def _failures(self, keys: tuple[str, ...]) -> list[FailureVerdict]:
        return [self.failure(key) for key in keys]

    def _successes(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self.success(key)

    def _key(self, address: str) -> str:
        return f"{self.scope}:{address}"

    def _count(self, address: str, now: float) -> int:
        """One more failure in memory; the count."""
        self._forget_idle(now)
        entry = self._entries.get(address)
        if entry is None or (entry.locked_until and entry.locked_until <= now):
            entry = _Entry(failures=0, last=now)
            self._entries[address] = entry
        entry.failures += 1
        entry.last = now
        if entry.failures >= self.max_failures:
            entry.locked_until = now + self.lockout_seconds
        return entry.failures

    def _count_shared(self, address: str, now: float) -> int:
        """One more failure in the shared table (one statement, atomic); the count."""
        assert self._db is not None
        if now - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._db.execute("DELETE FROM auth_failures WHERE locked_until <= ? AND last_at < ?",
                             (now, now - FORGET_AFTER_SECONDS))
            self._pruned_at = now
        until = now + self.lockout_seconds
        row = self._db.execute(_FAILURE, (self._key(address), now, self.max_failures, until,
                                          self.max_failures, until)).fetchone()
        return int(row[0])

    def _forget_idle(self, now: float) -> None:
        if len(self._entries) < MAX_TRACKED_ADDRESSES:
            return
        stale = [
            key
            for key, entry in self._entries.items()
            if entry.locked_until <= now and now - entry.last > FORGET_AFTER_SECONDS
        ]
        for key in stale:
            del self._entries[key]
        if len(self._entries) >= MAX_TRACKED_ADDRESSES:
            # Still full of live entries: drop the oldest unlocked ones.
            unlocked = sorted(
                (e.last, k) for k, e in self._entries.items() if e.locked_until <= now
            )
            for _, key in unlocked[: len(unlocked) // 2 or 1]:
                del self._entries[key]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
