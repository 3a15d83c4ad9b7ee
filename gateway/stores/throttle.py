"""AUTH failure throttle, per client address, across connections (SECURITY.md item 7).

After `free_failures` failures from one address, each further failure is answered only after a
delay that grows with every failure; at `max_failures` the address is locked for
`lockout_seconds`: its AUTH attempts get a 4xx and the connection is closed. A success forgets the
address's failures. The clock is injected so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

# Entries idle for longer than this are dropped, so the table cannot grow without bound.
FORGET_AFTER_SECONDS = 3600.0
MAX_TRACKED_ADDRESSES = 100_000


class Throttle(StrEnum):
    """What to do with an AUTH failure."""

    ANSWER = "answer"  # answer 535 (after `delay`)
    LOCK = "lock"  # answer 4xx and disconnect: the address is now locked


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
    """Counts AUTH failures by client address and says when to slow down and lock."""

    def __init__(
        self,
        max_failures: int = 5,
        lockout_seconds: float = 900.0,
        free_failures: int = 2,
        delay_step: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max(1, max_failures)
        self.lockout_seconds = lockout_seconds
        self.free_failures = free_failures
        self.delay_step = delay_step
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def is_locked(self, address: str) -> bool:
        """Whether AUTH from `address` is refused right now."""
        entry = self._entries.get(address)
        return entry is not None and entry.locked_until > self._clock()

    def failure(self, address: str) -> FailureVerdict:
        """Record one failure and say how to answer it."""
        now = self._clock()
        self._forget_idle(now)
        entry = self._entries.get(address)
        if entry is None or (entry.locked_until and entry.locked_until <= now):
            entry = _Entry(failures=0, last=now)
            self._entries[address] = entry
        entry.failures += 1
        entry.last = now
        if entry.failures >= self.max_failures:
            entry.locked_until = now + self.lockout_seconds
            return FailureVerdict(Throttle.LOCK, 0.0)
        extra = entry.failures - self.free_failures
        return FailureVerdict(Throttle.ANSWER, self.delay_step * extra if extra > 0 else 0.0)

    def success(self, address: str) -> None:
        """A correct login clears the address's record."""
        self._entries.pop(address, None)

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
