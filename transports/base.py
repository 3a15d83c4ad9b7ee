"""What every way out shares: a copy to deliver and the result of trying.

A delivery result is a value, not an exception: the SMTP front turns TEMPORARY into a 4xx (the
client keeps the message and retries) and PERMANENT into a 5xx. casegate never answers 250
unless every copy's result is DELIVERED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"  # try again later: 4xx
    PERMANENT = "permanent"  # will never work: 5xx


class Origin(StrEnum):
    """Who wrote a copy's header block: what decides whether it is signed (transports.dkim)."""

    RELAYED = "relayed"  # the submitted message as it came, only trace fields added on top
    REWRITTEN = "rewritten"  # a submitted message whose header fields casegate changed
    AUTHORED = "authored"  # a message casegate wrote itself (notifications, codes, alerts)

    @property
    def needs_signature(self) -> bool:
        """Whether the organisation's DKIM signature must be added: the sender's own
        signature (if any) cannot cover what casegate wrote."""
        return self is not Origin.RELAYED


@dataclass(frozen=True)
class Copy:
    """One message to hand over: the exact bytes, CRLF line endings, and its envelope."""

    key: str  # idempotency key: decision id + copy index; a retried message reuses it
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    origin: Origin = Origin.AUTHORED  # whether casegate wrote or changed it (then it is signed)


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    detail: str = ""  # for logs and operators, never sent to a client verbatim
    accepted: tuple[str, ...] = ()  # recipients the upstream accepted

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED


# What a delivery waits for before its point of no return (the gateway: the decision's audit
# event being committed), so that the two can go on at once.
Ready = asyncio.Future[Any]


class NotReady(Exception):
    """What the delivery waited for failed: nothing passed the point of no return."""


class Transport(Protocol):
    """A way out. Implementations never raise for delivery trouble: they return a result.

    With `ready`, nothing passes the point of no return (the upstream's end of data, a file
    in the outbox, a copy in the portal) before `ready` is done; when it fails, nothing is
    handed over and the result is TEMPORARY.
    """

    async def deliver(self, copies: Sequence[Copy],
                      ready: Ready | None = None) -> DeliveryResult: ...

    async def close(self) -> None: ...


async def wait_ready(ready: Ready | None) -> DeliveryResult | None:
    """Wait for `ready` (never cancelling it); a TEMPORARY result when it failed, else None."""
    if ready is None:
        return None
    try:
        await asyncio.shield(ready)
    except asyncio.CancelledError:
        if not ready.cancelled():
            raise  # the caller itself was cancelled
        return DeliveryResult(Outcome.TEMPORARY, "not ready to deliver: cancelled")
    except Exception as exc:
        return DeliveryResult(Outcome.TEMPORARY, f"not ready to deliver: {exc}")
    return None
