"""The DATA stage every message goes through first, then its route.

    process    line endings -> header From -> the route the SMTP front chose at RCPT:
                 gateway.stages.delivery.relay_message   an ordinary message (decide, copies,
                                                          overrides, delivery)
                 gateway.stages.intake.take_request      a request to the verification address

Each stage returns a `Reply` (a value), so the SMTP front only translates. Any error while
deciding or delivering is a 451: the client keeps the message and retries (fail closed). Logs and
audit events carry metadata only, never the subject or the body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from email.errors import HeaderParseError
from email.policy import default as default_policy
from typing import Any

import structlog

from gateway.observe.logs import describe_error
from gateway.stages.context import Record, Stages
from gateway.stages.message import TRY_LATER, Reply, Submission
from policies import scan
from policies.events import EventKind
from policies.loader import Policy

log = structlog.get_logger("casegate.smtp")

Route = Callable[[Stages, Record, Submission], Awaitable[Reply]]


async def process(stages: Stages, submission: Submission, route: Route) -> Reply:
    """The checks every message passes, then `route`; the first stage that answers decides the
    reply, which says whether its events were recorded (`Reply.audited`)."""
    stages.flight.take_off()
    started = time.perf_counter()
    record = stages.record()
    try:
        reply = await _checked(stages, record, submission, route)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("message-failed", sender=submission.sender, peer=submission.peer,
                  size=len(submission.raw), **describe_error(exc))
        stages.metrics.inc("casegate_messages_tempfailed_total")
        reply = TRY_LATER
    finally:
        stages.flight.land()
    stages.metrics.message_done(reply.code, time.perf_counter() - started)
    return reply.recorded(record.recorded)


async def _checked(stages: Stages, record: Record, submission: Submission,
                   route: Route) -> Reply:
    reply, rule = check_size(submission.raw, stages.app.policy), "message-format"
    if reply is None:
        reply = check_line_endings(submission.raw)
    if reply is None:
        reply, rule = check_header_from(submission), "sender-identity"
    if reply is None:
        return await route(stages, record, submission)
    await record(EventKind.REFUSAL, rule=rule, sender=submission.sender,
                 recipients=list(submission.recipients), stage="data", peer=submission.peer)
    stages.metrics.inc("casegate_messages_refused_total")
    # The reply names the exact problem; the rule's sentence says what to do instead.
    return Reply.of(reply.code, reply.status, *reply.lines,
                    stages.app.policy.rule(rule).sentence)


def check_size(raw: bytes, policy: Policy) -> Reply | None:
    """A message over `[content.limits] max_message_bytes` is refused as too big (552 5.3.4),
    before the policy would read it as malformed. The SMTP front never takes more than that
    (`message_size_limit`), so this guards the other ways in."""
    limit = policy.content.limits.max_message_bytes
    if len(raw) <= limit:
        return None
    return Reply.of(552, "5.3.4", f"Message too big for this gateway: {len(raw)} bytes, over "
                    f"the limit of {limit}.")


def message_size_limit(configured: int, policy: Policy) -> int:
    """The largest message the SMTP front takes (and announces as SIZE): `smtp.max_message_size`,
    but never more than the policy reads (`[content.limits] max_message_bytes`), so a message
    the front took is never refused by the policy for its size."""
    return min(configured, policy.content.limits.max_message_bytes)


def check_line_endings(raw: bytes) -> Reply | None:
    """Bare CR, bare LF and NUL are refused (SMTP smuggling; SECURITY.md items 1 and 2)."""
    if not raw or raw.isspace():  # (not `raw.strip()`: a copy of the whole message)
        return Reply.of(554, "5.6.0", "Message refused: it is empty.")
    if scan.unsafe_line_ends(raw):
        return Reply.of(554, "5.6.0", "Message refused: bare CR or LF line endings, or NUL "
                        "characters. Lines must end with CRLF.")
    return None


def check_header_from(submission: Submission) -> Reply | None:
    """The header From, like MAIL FROM, must be the login's own address or a send-as one."""
    if submission.user is None:
        return None  # a trusted relay peer has done its own sender checks
    values = submission.fields_named("from")
    address = _single_address(values[0]) if len(values) == 1 else None
    if address is None or not submission.user.may_send_as(address):
        return Reply.of(550, "5.7.1", "The From header must be your own address or one you may "
                        "send as.")
    return None


def _single_address(raw_field: bytes) -> str | None:
    """The one address of a From field, or None when there is not exactly one."""
    value = raw_field.partition(b":")[2].decode("utf-8", "replace").replace("\r\n", "")
    try:
        header: Any = default_policy.header_factory("from", value.strip())
        addresses, groups = tuple(header.addresses), tuple(header.groups)
    except (HeaderParseError, ValueError, IndexError, TypeError, AttributeError):
        return None
    if len(addresses) != 1 or header.defects or groups[0].display_name is not None:
        return None  # none, several, a named group, or anything the parser found odd
    return str(addresses[0].addr_spec).lower()
