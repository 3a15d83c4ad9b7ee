"""The stages of one message, from the envelope to the reply the client reads.

    at MAIL   check_sender       bound to the login (or a trusted relay peer)
    at RCPT   check_recipient    address-only rules: that recipient alone is refused
    at DATA   process            line endings -> header From -> decide -> refuse / hold /
                                 deliver (plain copies upstream, encrypt copies to the portal)

Each stage returns a `Reply` (a value), so the SMTP adapter (gateway.smtp) only translates. Any
error while deciding or delivering is a 451: the client keeps the message and retries (fail
closed). Logs and audit events carry metadata only, never the subject or the body.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import traceback
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.policy import default as default_policy
from typing import Any, TypeVar

import structlog

from gateway import overrides, verification
from gateway.app import App
from gateway.copies import (
    HeaderError,
    RawMessage,
    Trace,
    field_name,
    outgoing_copies,
)
from gateway.metrics import Metrics, TransportKind
from gateway.ratelimit import AuthThrottle
from gateway.users import User, UserStore
from policies import engine
from policies.model import Action, Decision, Snapshot, Verdict
from transports.base import (
    NO_DSN,
    Copy,
    DeliveryResult,
    Dsn,
    Outcome,
    Problem,
    Ready,
    Transport,
)
from transports.portal import PortalDelivery

log = structlog.get_logger("casegate.smtp")
T = TypeVar("T")

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF; the code, the
# separator, the enhanced status code (at most "5.999.999") and a space take up to 14.
REPLY_TEXT_LIMIT = 512 - 2 - 14
MAX_REPLY_LINES = 20
# Where a sentence ends: ".", "!" or "?" (maybe closing a quote or bracket), a space, and a
# capital, a digit, a quote or a bracket starting the next (so "e.g. a" and "s. 2" do not).
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\be\.g\.)(?<!\bi\.e\.)([\"')\]]?) +(?=[A-Z\"'(\[])")
_CLAUSE_END = re.compile(r"(?<=[,;:]) +")
_FOR_RECIPIENT = re.compile(r"[^\s@:]+@[^\s@:]+: ")

_TYPOGRAPHY = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-",
                             "…": "..."})


def _ascii(text: str) -> str:
    """Reply text as plain printable ASCII on one line."""
    if text.isascii() and text.isprintable():  # already so (most replies): nothing to fold
        return text.strip()
    return _fold_to_ascii(text)


def _fold_to_ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_TYPOGRAPHY))
    return "".join(ch if " " <= ch <= "~" else " " for ch in folded.encode("ascii", "ignore")
                   .decode("ascii")).strip()


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: the code, the enhanced status code and one or more lines of text."""

    code: int
    status: str
    lines: tuple[str, ...]

    @classmethod
    def of(cls, code: int, status: str, *texts: str) -> Reply:
        """A reply whose texts are made ASCII, one sentence to a line.

        An MTA's bounce often runs a multi-line reply together, so each line is a whole
        sentence, never wrapped in the middle; a sentence longer than a reply line may be
        (RFC 5321: 512 octets) is split at a clause boundary, and only as a last resort at a
        space.
        """
        lines: list[str] = []
        for text in texts:
            lines.extend(_sentences(_ascii(text)) or [""])
        return cls(code, status, tuple(lines[:MAX_REPLY_LINES]))

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def render(self) -> str:
        """The reply as aiosmtpd pushes it: continuation lines joined by CRLF."""
        last = len(self.lines) - 1
        return "\r\n".join(
            f"{self.code}{' ' if i == last else '-'}{self.status} {line}"
            for i, line in enumerate(self.lines)
        )


def _sentences(text: str) -> list[str]:
    """`text` cut into sentences, each within REPLY_TEXT_LIMIT (see `Reply.of`); a reason for
    one recipient ("jo@example.org: ...") stays on one line when it fits, so that a reply
    refusing several recipients reads one line per recipient."""
    if _FOR_RECIPIENT.match(text) and len(text) <= REPLY_TEXT_LIMIT:
        return [text]
    pieces = _SENTENCE_END.split(text)  # sentence, closing mark, sentence, closing mark, ...
    sentences = [pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else "")
                 for i in range(0, len(pieces), 2)]
    lines: list[str] = []
    for sentence in filter(None, (s.strip() for s in sentences)):
        lines.extend(_within_limit(sentence))
    return lines


def _within_limit(sentence: str) -> list[str]:
    """A sentence as one line, or (too long for one) cut at clauses, then at spaces."""
    if len(sentence) <= REPLY_TEXT_LIMIT:
        return [sentence]
    lines: list[str] = []
    current = ""
    for clause in _CLAUSE_END.split(sentence):
        joined = f"{current} {clause}" if current else clause
        if len(joined) <= REPLY_TEXT_LIMIT:
            current = joined
            continue
        if current:
            lines.append(current)
        while len(clause) > REPLY_TEXT_LIMIT:  # a clause too long alone: at a space
            cut = clause.rfind(" ", 0, REPLY_TEXT_LIMIT + 1)
            cut = cut if cut > 0 else REPLY_TEXT_LIMIT
            lines.append(clause[:cut])
            clause = clause[cut:].strip()
        current = clause
    if current:
        lines.append(current)
    return lines


TRY_LATER = Reply.of(451, "4.3.0", "Temporary problem at the mail gateway; please try again later.")


@dataclass(frozen=True)
class Submission:
    """One message as the SMTP front received it."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes  # CRLF line endings, dot-unstuffed: exactly what gets classified
    user: User | None  # None: a trusted relay peer submitted it
    peer: str
    trace: Trace | None = None  # what the Received field says; None: no SMTP client (tests)
    dsn: Dsn = NO_DSN  # the client's DSN request, passed on with every copy
    smtputf8: bool = False  # the client said SMTPUTF8 on MAIL

    @functools.cached_property
    def split(self) -> RawMessage:
        """The raw header fields and the body, cut once for every stage that reads them."""
        return RawMessage.split(self.raw)

    def fields_named(self, name: str) -> list[bytes]:
        """The raw header fields called `name` (lower-case)."""
        return [f for f in self.split.fields if field_name(f) == name]


@dataclass
class Services:
    """What the stages need, built once by the server from the App."""

    app: App
    users: UserStore
    transport: Transport  # plain copies: the upstream smarthost or the outbox
    encrypted: Transport | None = None  # encrypt copies (the portal); None: held with a 451
    metrics: Metrics = field(default_factory=Metrics)
    throttle: AuthThrottle = field(default_factory=AuthThrottle)
    readiness: Callable[[], Awaitable[list[str]]] | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    in_flight: int = 0  # messages between end of DATA and their reply
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_flight == 0
    busy: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_flight > 0
    # One policy evaluation at a time: they hold the GIL, so running several at once finishes
    # none sooner, makes them fight the event loop for it, and multiplies their peak memory.
    evaluations: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    background: set[asyncio.Task[Any]] = field(default_factory=set)  # see in_background

    def in_background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """`work` as a task of its own, kept until done (`stop` waits for them): it goes on
        when the connection that started it is cancelled, and its failure is always seen."""
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self.background.discard)
        return task

    @property
    def portal(self) -> PortalDelivery | None:
        """The portal delivery, when encrypt copies go through it (its pages need it)."""
        return self.encrypted if isinstance(self.encrypted, PortalDelivery) else None

    async def readiness_problems(self) -> list[str]:
        """What stops the gateway from taking mail now; empty when ready."""
        return await self.readiness() if self.readiness is not None else []


def _settled(task: asyncio.Task[Any]) -> None:
    """Mark a background task's failure as seen (its awaiter raises it; else it is logged)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("background-task-failed", error=str(task.exception()))


# ---- MAIL ---------------------------------------------------------------------------------


async def check_sender(services: Services, user: User | None, trusted_peer: bool, tls: bool,
                       sender: str, peer: str) -> Reply | None:
    """Whether this client may use `sender` as the envelope sender; None means yes."""
    if user is None and not trusted_peer:
        if not tls:
            return Reply.of(530, "5.7.0", "Must issue a STARTTLS command first.")
        return Reply.of(530, "5.7.0", "Authentication required.")
    if user is not None and not user.may_send_as(sender):
        await audit(services, "refusal", rule="sender-identity", sender=user.address,
                    envelope_sender=sender, peer=peer, stage="mail")
        return Reply.of(553, "5.7.1", "You may not send as that address with this login.",
                        services.app.policy.rule("sender-identity").sentence)
    return None


# ---- RCPT ---------------------------------------------------------------------------------


async def check_recipient(services: Services, sender: str, address: str,
                          peer: str) -> Reply | None:
    """Address-only rules (personal, fax, invalid, lookalike): refuse this recipient alone."""
    app = services.app
    if verification.is_request_address(app.config, address):  # consumed at DATA (issue 4)
        return None
    now = services.clock()
    # The registry's cached answer on the loop when it still holds; a worker thread to read
    # the tables (or wait for a writer) only when it does not.
    snapshot = app.snapshot_at_once(now)
    if snapshot is None:
        snapshot = await asyncio.to_thread(app.snapshot, now)
    decision = engine.decide_at_rcpt(sender, address, app.policy, snapshot)
    if decision is None or decision.action is not Action.BLOCK:
        return None
    services.metrics.inc("casegate_rcpt_refused_total")
    services.metrics.decided("rcpt", decision.action, decision.rule.id)
    await audit(services, "refusal", rule=decision.rule.id, sender=sender, recipients=[address],
                stage="rcpt", category=decision.recipient.category.value, peer=peer)
    return Reply.of(550, decision.rule.smtp_code, decision.reason)


# ---- DATA ---------------------------------------------------------------------------------


async def process(services: Services, submission: Submission) -> Reply:
    """Every DATA stage in order; the first that answers decides the reply."""
    services.in_flight += 1
    services.idle.clear()
    services.busy.set()
    started = time.perf_counter()
    try:
        reply = await _stages(services, submission)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("message-failed", sender=submission.sender, peer=submission.peer,
                  size=len(submission.raw), **describe_error(exc))
        services.metrics.inc("casegate_messages_tempfailed_total")
        reply = TRY_LATER
    finally:
        services.in_flight -= 1
        if services.in_flight == 0:
            services.busy.clear()
            services.idle.set()
    services.metrics.message_done(reply.code, time.perf_counter() - started)
    return reply


async def _stages(services: Services, submission: Submission) -> Reply:
    reply, rule = check_line_endings(submission.raw), "message-format"
    if reply is None:
        reply, rule = check_header_from(submission), "sender-identity"
    if reply is not None:
        await audit(services, "refusal", rule=rule, sender=submission.sender,
                    recipients=list(submission.recipients), stage="data", peer=submission.peer)
        services.metrics.inc("casegate_messages_refused_total")
        # The reply names the exact problem; the rule's sentence says what to do instead.
        return Reply.of(reply.code, reply.status, *reply.lines,
                        services.app.policy.rule(rule).sentence)
    reply = await verification.intake(services, submission)  # a request to verify@ (issue 4)
    if reply is not None:
        return reply
    decision_id = uuid.uuid4().hex
    decision = await decide(services, submission)
    reply = refusal_reply(decision)
    if reply is None and services.encrypted is None:
        reply = held_for_encryption_reply(decision)
    if reply is None:
        reply = portal_unreachable_reply(decision)
    if reply is not None:
        await record_decision(services, decision, decision_id, submission.peer)
        name = "refused" if reply.code >= 500 else "tempfailed"
        services.metrics.inc(f"casegate_messages_{name}_total")
        return reply
    # The decision's events are committed while the copies are made and handed over: no
    # transport passes its point of no return (the upstream's end of data) before they are,
    # and when they cannot be, nothing leaves and the reply is 451 (fail closed).
    recorded = services.in_background(
        record_decision(services, decision, decision_id, submission.peer))
    content = services.app.policy.content
    received = submission.trace.field(services.app.config.smtp.hostname, decision_id,
                                      services.clock()) if submission.trace else None
    try:
        plain, sealed = outgoing_copies(submission.raw, decision, decision_id,
                                        content.override_header, content.override_subject_tag,
                                        split=submission.split, received=received,
                                        dsn=submission.dsn, smtputf8=submission.smtputf8)
    except HeaderError:
        await asyncio.shield(recorded)
        await audit(services, "refusal", rule="malformed-message", sender=decision.sender,
                    recipients=list(submission.recipients), decision_id=decision_id,
                    stage="data", peer=submission.peer)
        services.metrics.inc("casegate_messages_refused_total")
        return Reply.of(554, "5.6.0", "A header cannot be written safely into the outgoing copy.",
                        services.app.policy.rule("malformed-message").sentence)
    if decision.overrides_applied:  # the sender's manager is told first (RRP 1.2)
        await asyncio.shield(recorded)  # and only of a decision on record
        reply = await overrides.notify(services, submission, decision, decision_id)
        if reply is not None:
            return reply
    result = await deliver(services, plain, sealed, recorded)
    await asyncio.shield(recorded)  # its failure, even when no copy needed handing over
    await audit(services, "relay", sender=decision.sender, recipients=list(submission.recipients),
                decision_id=decision_id, outcome=result.outcome.value,
                copies=len(plain) + len(sealed))
    return delivery_reply(services, result, decision_id)


async def deliver(services: Services, plain: tuple[Copy, ...], sealed: tuple[Copy, ...],
                  ready: Ready | None = None) -> DeliveryResult:
    """Plain copies to the upstream, then encrypt copies to the portal: all, or a retry.

    Each transport remembers what it accepted, so the client's retry after a partial success
    sends only what is missing. Nothing passes a transport's point of no return before
    `ready` is done (see `transports.base.Transport`).
    """
    result = DeliveryResult(Outcome.DELIVERED)
    if plain:
        result = await _timed(services, "upstream", services.transport, plain, ready)
    if result.ok and sealed and services.encrypted is not None:
        result = await _timed(services, "portal", services.encrypted, sealed, ready)
    return result


async def _timed(services: Services, kind: TransportKind, transport: Transport,
                 copies: tuple[Copy, ...], ready: Ready | None) -> DeliveryResult:
    """`transport.deliver`, its outcome and time counted in the metrics."""
    started = time.perf_counter()
    result = await transport.deliver(copies, ready)
    services.metrics.relayed(kind, result.outcome, time.perf_counter() - started)
    return result


def check_line_endings(raw: bytes) -> Reply | None:
    """Bare CR, bare LF and NUL are refused (SMTP smuggling; SECURITY.md items 1 and 2)."""
    if not raw.strip():
        return Reply.of(554, "5.6.0", "Message refused: it is empty.")
    crlf = raw.count(b"\r\n")
    if b"\x00" in raw or raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
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


# A plain-text message up to this size is decided on the event loop: its classification is a
# header parse and a few scans of at most this much text (well under a millisecond), less than
# handing it to a worker thread costs. Anything else may hold attachments, whose reading can
# take up to the content budget's seconds, so it is decided in a worker thread.
INLINE_DECISION_BYTES = 64 * 1024


async def decide(services: Services, submission: Submission) -> Decision:
    """The policy decision: on the loop for a small plain-text message when the registry's
    answer is in memory, else in a worker thread so the event loop stays responsive, one
    message at a time (`Services.evaluations`)."""
    app = services.app
    now = services.clock()

    def evaluate(snapshot: Snapshot) -> Decision:
        return engine.evaluate(
            submission.raw, submission.sender, submission.recipients, app.policy,
            snapshot, time.monotonic, app.config.policy.multiple_external,
        )

    if is_small_plain_text(submission):
        snapshot = app.snapshot_at_once(now)
        if snapshot is not None:
            return evaluate(snapshot)
    async with services.evaluations:
        return await asyncio.to_thread(lambda: evaluate(app.snapshot(now)))


def is_small_plain_text(submission: Submission) -> bool:
    """Whether the message is at most INLINE_DECISION_BYTES with one top-level Content-Type, and
    that text/plain (or none, which means text/plain): nothing in it but text to read."""
    if len(submission.raw) > INLINE_DECISION_BYTES:
        return False
    types = submission.fields_named("content-type")
    if len(types) > 1:
        return False
    return not types or types[0].partition(b":")[2].partition(b";")[0].strip().lower() \
        == b"text/plain"


async def record_decision(services: Services, decision: Decision, decision_id: str,
                          peer: str) -> None:
    """One audit event for the decision, and one per override the sender recorded."""
    facts = decision.facts
    first = decision.refusals[0].rule.id if decision.refusals else ""
    blocked = [rd.rule.id for rd in decision.recipients if rd.action is Action.BLOCK]
    kind = "refusal" if decision.verdict is Verdict.REFUSE else "decision"
    await audit(
        services, kind, rule=first or (blocked[0] if blocked else ""),
        sender=decision.sender,
        recipients=[rd.recipient.address for rd in decision.recipients],
        case_numbers=list(facts.case_numbers), decision_id=decision_id, stage="data", peer=peer,
        information_type=facts.information_type, protected=facts.protected, size=facts.size,
        split=decision.split, actions=[rd.action.value for rd in decision.recipients],
    )
    for override in decision.overrides_applied:
        # Governance reviews overrides with their justification (issue 6; RRP 1.2): it is the
        # sender's own explanation, capped in length by the classifier, never message content.
        await audit(services, "override", rule=override.rule_id, sender=decision.sender,
                    case_numbers=list(facts.case_numbers), decision_id=decision_id,
                    justification=override.justification)
    for rd in decision.recipients:
        services.metrics.decided("data", rd.action, rd.rule.id)


def refusal_reply(decision: Decision) -> Reply | None:
    """Any block refuses the whole message: 550, one line per reason, then one line citing
    each rule that refused (its paragraph and id), so the sender's bounce says which part of
    the policy applies; nothing leaves."""
    if decision.verdict is not Verdict.REFUSE:
        return None
    rules = [r.rule for r in decision.refusals] + [
        rd.rule for rd in decision.recipients if rd.action is Action.BLOCK
    ]
    reasons = decision.reasons() or ["The message breaks the transfer policy."]
    cited = list(dict.fromkeys(f"Policy: {rule.citation} (rule {rule.id})." for rule in rules))
    return Reply.of(550, rules[0].smtp_code if rules else "5.7.1", *reasons, *cited)


def held_for_encryption_reply(decision: Decision) -> Reply | None:
    """With no encrypted transport (the portal has no keys), fail closed with a 451."""
    encrypt = [rd.recipient.address for rd in decision.recipients if rd.action is Action.ENCRYPT]
    if not encrypt:
        return None
    return Reply.of(
        451, "4.7.0",
        "Encrypted delivery is not yet available, and this message must be encrypted for "
        + ", ".join(encrypt) + ". Nothing was sent; send it by an approved secure route.",
    )


def portal_unreachable_reply(decision: Decision) -> Reply | None:
    """The portal's notices are plain ASCII mail: an encrypt recipient with an internationalised
    (non-ASCII) address cannot be told of its copy, so nothing is sent (554)."""
    unreachable = [rd.recipient.address for rd in decision.recipients
                   if rd.action is Action.ENCRYPT and not rd.recipient.address.isascii()]
    if not unreachable:
        return None
    return Reply.of(554, "5.6.7", "This message must go through the secure portal, which "
                    "cannot yet reach internationalised (non-ASCII) addresses: "
                    + ", ".join(unreachable) + ".",
                    "Nothing was sent; send it by an approved secure route.")


def delivery_reply(services: Services, result: DeliveryResult, decision_id: str) -> Reply:
    """250 only when every copy was accepted; temporary trouble 451, permanent 554.

    The text says what went wrong as far as the client may know it (`result.problem`): the
    recipients the upstream refused, never a host name or an error's text (`result.detail`).
    """
    if result.outcome is Outcome.DELIVERED:
        services.metrics.inc("casegate_messages_accepted_total")
        return Reply.of(250, "2.0.0", f"Delivered, decision {decision_id}")
    if result.outcome is Outcome.PERMANENT:
        services.metrics.inc("casegate_messages_refused_total")
        return _permanent_reply(result, decision_id)
    services.metrics.inc("casegate_messages_tempfailed_total")
    return _temporary_reply(result)


def _permanent_reply(result: DeliveryResult, decision_id: str) -> Reply:
    desk = "If they are right, give the decision number to the IT service desk."
    if result.problem is Problem.RECIPIENTS and result.refused:
        return Reply.of(554, "5.1.0", "The onward mail server refused these recipients: "
                        + ", ".join(result.refused) + f" (decision {decision_id}).",
                        "Check those addresses and send again.", desk)
    if result.problem is Problem.SMTPUTF8:
        return Reply.of(554, "5.6.7", "The onward mail server cannot take internationalised "
                        f"(SMTPUTF8) mail (decision {decision_id}).",
                        "Send the message with plain ASCII headers.")
    if result.problem is Problem.UNSENDABLE:
        return Reply.of(554, "5.6.0", f"casegate cannot send this message on safely as it is "
                        f"(decision {decision_id}).", "Nothing was sent. Give the decision "
                        "number to the IT service desk.")
    return Reply.of(554, "5.0.0", f"The onward mail server refused the message (decision "
                    f"{decision_id}).", "Check the recipient addresses.", desk)


def _temporary_reply(result: DeliveryResult) -> Reply:
    later = "Please try again later."
    if result.problem is Problem.RECIPIENTS and result.refused:
        return Reply.of(451, "4.2.0", "The onward mail server asked to try again later for: "
                        + ", ".join(result.refused) + ".", "Your mail server keeps the message "
                        "and tries again.")
    if result.problem is Problem.MESSAGE:
        return Reply.of(451, "4.3.0", "The onward mail server could not take the message "
                        "for now.", later)
    if result.problem is Problem.UNREACHABLE:
        return Reply.of(451, "4.4.1", "The onward mail server could not be reached.", later)
    if result.problem is Problem.BUSY:
        return Reply.of(451, "4.3.0", "This message is being delivered at this moment.", later)
    return Reply.of(451, "4.3.0", "Temporary problem at the mail gateway.", later)


# ---- helpers ------------------------------------------------------------------------------


def describe_error(exc: BaseException) -> dict[str, str]:
    """Where an error happened, for the log, without its message (which may quote content)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return {"error": exc.__class__.__name__, "where": where}


async def audit(services: Services, kind: str, **event: Any) -> None:
    """One audit event, awaited until it is committed (the store's writer thread fsyncs, so the
    loop keeps serving; events recorded meanwhile share one commit).

    When the store cannot be written this raises, and the caller fails closed (451).
    Marks the current task (one SMTP connection) as having recorded an event (`EVENT_RECORDED`).
    """
    await services.app.audit.record_async(kind, **event)
    EVENT_RECORDED.set(True)


# True once `audit` has recorded an event in the current task (each SMTP connection is one task)
# since the SMTP front last cleared it: a refusal reply sent then has been audited already, so
# `gateway.smtp.GatewaySMTP.push` does not record it a second time as a protocol refusal.
EVENT_RECORDED: ContextVar[bool] = ContextVar("casegate_event_recorded", default=False)


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
