"""A gateway-wide cap on the message bytes held in memory (issue 14, point 4; issue 18, 7).

casegate holds each message in memory from its DATA to its reply: it keeps no queue on disk
and answers 250 only when the upstream has the message. Without a cap, enough large messages
at once (ten 20 MB messages to a slow upstream) grow the process without bound. `BufferBudget`
counts the bytes of every message between its DATA and its reply, across all connections, and
never lets the count pass `smtp.max_buffered_bytes`:

- at DATA, before the 354, a message claims what its MAIL SIZE declared (RFC 1870), else a
  first `FIRST_CLAIM`; when that does not fit it waits up to `WAIT_SECONDS` for other messages
  to finish, then is answered `452 4.3.1` (RFC 3463: insufficient system storage) and the
  client keeps it and retries;
- while the data streams in, the claim grows (by an eighth) as the message turns out larger; when
  it cannot, what arrived is dropped, the rest is read and discarded to the end of the data,
  and the answer is `452 4.3.1`: the message is never half taken;
- the claim is given back when the reply to DATA has been sent, whatever it was (delivered,
  refused, upstream trouble, the client gone mid-DATA).

The bytes counted are the message's size; what one message costs in memory beyond that is a
small multiple of it (see docs and tests/test_buffer_budget.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

FIRST_CLAIM = 1024 * 1024  # bytes claimed at DATA by a message that declared no SIZE
WAIT_SECONDS = 1.0  # how long a new DATA waits for room before its 452
NO_ROOM = "452 4.3.1 Insufficient system storage at the mail gateway; please try again later"


@dataclass
class BufferBudget:
    """The bytes of messages held between their DATA and their reply, capped at `limit`."""

    limit: int
    held: int = 0
    _freed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def claim(self, size: int, wait: float = WAIT_SECONDS) -> Claim | None:
        """A claim of `size` bytes, waiting up to `wait` seconds for room; None if none came."""
        size = max(0, min(size, self.limit))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self.held + size > self.limit:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._freed.clear()  # set again by the next claim given back
            try:
                await asyncio.wait_for(self._freed.wait(), remaining)
            except TimeoutError:
                return None
        self.held += size
        return Claim(self, size)

    async def empty(self) -> None:
        """Wait until no message bytes are held (every claim given back)."""
        while self.held:
            self._freed.clear()
            await self._freed.wait()

    def _grow(self, claim: Claim, total: int) -> bool:
        extra = total - claim.size
        if extra <= 0:
            return True
        if self.held + extra > self.limit:
            return False
        self.held += extra
        claim.size = total
        return True

    def _give_back(self, size: int) -> None:
        self.held -= size
        self._freed.set()  # every DATA waiting for room looks again


@dataclass(eq=False)
class Claim:
    """One message's share of a `BufferBudget`; `release` gives it back (once)."""

    budget: BufferBudget
    size: int

    def grow(self, total: int) -> bool:
        """Hold `total` bytes in all (never less than now); False when the budget has no room."""
        return self.budget._grow(self, total)

    def release(self) -> None:
        size, self.size = self.size, 0
        if size:
            self.budget._give_back(size)


def declared_size(mail_options: list[str]) -> int | None:
    """The SIZE a client declared on MAIL (RFC 1870), or None."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return None
