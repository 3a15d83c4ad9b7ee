"""What every way out shares: a copy to deliver and the result of trying.

A delivery result is a value, not an exception: the SMTP front turns TEMPORARY into a 4xx (the
client keeps the message and retries) and PERMANENT into a 5xx. casegate never answers 250
unless every copy's result is DELIVERED.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"  # try again later: 4xx
    PERMANENT = "permanent"  # will never work: 5xx


@dataclass(frozen=True)
class Copy:
    """One message to hand over: the exact bytes, CRLF line endings, and its envelope."""

    key: str  # idempotency key: decision id + copy index; a retried message reuses it
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    detail: str = ""  # for logs and operators, never sent to a client verbatim
    accepted: tuple[str, ...] = ()  # recipients the upstream accepted

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED


class Transport(Protocol):
    """A way out. Implementations never raise for delivery trouble: they return a result."""

    async def deliver(self, copies: Sequence[Copy]) -> DeliveryResult: ...

    async def close(self) -> None: ...
