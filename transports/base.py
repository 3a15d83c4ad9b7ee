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


class Problem(StrEnum):
    """Why a delivery was not DELIVERED, as far as the client's reply may say it."""

    NONE = "none"
    UNREACHABLE = "unreachable"  # no connection, a timeout, a drop: nothing said about the mail
    RECIPIENTS = "recipients"  # the upstream refused some recipients (`DeliveryResult.refused`)
    MESSAGE = "message"  # the upstream refused the sender or the data
    GATEWAY = "gateway"  # ours: the decision could not be recorded, or a store of ours failed
    UNSENDABLE = "unsendable"  # ours: a copy that cannot go out safely as it is
    BUSY = "busy"  # ours: the same copy is being delivered now
    SMTPUTF8 = "smtputf8"  # the message needs SMTPUTF8 and the upstream does not offer it


@dataclass(frozen=True)
class Dsn:
    """The DSN request (RFC 3461) a client made: RET and ENVID on MAIL, NOTIFY and ORCPT per
    recipient; each kept as the client wrote it (syntax checked by gateway.smtp_dsn)."""

    ret: str = ""  # "FULL" or "HDRS"
    envid: str = ""  # xtext
    notify: tuple[tuple[str, str], ...] = ()  # (recipient, "NEVER" or "SUCCESS,FAILURE,...")
    orcpt: tuple[tuple[str, str], ...] = ()  # (recipient, "rfc822;" xtext)

    def for_recipient(self, recipient: str) -> tuple[str, str]:
        """(NOTIFY value, ORCPT value) asked for `recipient`, "" where none was."""
        return (dict(self.notify).get(recipient, ""), dict(self.orcpt).get(recipient, ""))

    def __bool__(self) -> bool:
        return bool(self.ret or self.envid or self.notify or self.orcpt)


NO_DSN = Dsn()


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
    """One message to hand over: the exact bytes, CRLF line endings, and its envelope.

    `mail_from` "" is the null reverse-path (`MAIL FROM:<>`: bounces, out-of-office replies).
    """

    key: str  # idempotency key: decision id + copy index; a retried message reuses it
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    dsn: Dsn = NO_DSN  # passed on when the upstream offers DSN, else dropped
    smtputf8: bool = False  # the client said SMTPUTF8 on MAIL: say it upstream when offered
    origin: Origin = Origin.AUTHORED  # whether casegate wrote or changed it (then it is signed)


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    detail: str = ""  # for logs and operators, never sent to a client verbatim
    accepted: tuple[str, ...] = ()  # recipients the upstream accepted
    problem: Problem = Problem.NONE  # what the client's reply may say about a failure
    refused: tuple[str, ...] = ()  # with Problem.RECIPIENTS: the recipients refused

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
        return DeliveryResult(Outcome.TEMPORARY, "not ready to deliver: cancelled",
                              problem=Problem.GATEWAY)
    except Exception as exc:
        return DeliveryResult(Outcome.TEMPORARY, f"not ready to deliver: {exc}",
                              problem=Problem.GATEWAY)
    return None
