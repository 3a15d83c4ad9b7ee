"""The delivery stage of an ordinary message: decide, record, make the copies, tell the
manager of an override, hand the copies over, and answer.

`relay_message` is the route `gateway.stages.pipeline.process` takes for every message that is
not a verification request. Plain copies go to the upstream (or the outbox), encrypt copies to
the portal; 250 only when every copy was accepted, 451 on any temporary trouble, 554 when the
upstream refused for good. Once every copy was accepted the answer is 250 whatever fails
afterwards (the "relay" audit event, the ledger): a 451 would invite the client to send again,
and what failed is logged and alerted instead (`gateway.app.delivery_fault_event`).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog

from gateway.app import delivery_fault_event
from gateway.observe.logs import bind_message, describe_error
from gateway.observe.metrics import TransportKind
from gateway.stages import overrides
from gateway.stages.context import Record, Stages
from gateway.stages.copies import HeaderError, outgoing_copies
from gateway.stages.decision import (
    decide,
    held_for_encryption_reply,
    portal_unreachable_reply,
    record_decision,
    refusal_reply,
)
from gateway.stages.message import Reply, Submission
from policies.events import EventKind
from transports.base import Copy, DeliveryResult, Outcome, Problem, Ready, Transport

log = structlog.get_logger("casegate.smtp")


async def relay_message(stages: Stages, record: Record, submission: Submission) -> Reply:
    """An ordinary message from its decision to its reply: refuse or hold it, or record the
    decision, make the copies, tell the manager of an override, and hand the copies over."""
    decision_id = uuid.uuid4().hex
    decision = await decide(stages, submission)
    bind_message(decision_id=decision_id,
                 actions=[rd.action.value for rd in decision.recipients])
    reply = refusal_reply(decision)
    if reply is None and stages.encrypted is None:
        reply = held_for_encryption_reply(decision)
    if reply is None:
        reply = portal_unreachable_reply(decision)
    if reply is not None:
        await record_decision(stages, record, decision, decision_id, submission.peer)
        name = "refused" if reply.code >= 500 else "tempfailed"
        stages.metrics.inc(f"casegate_messages_{name}_total")
        return reply
    # The decision's events are committed while the copies are made and handed over: no
    # transport passes its point of no return (the upstream's end of data) before they are,
    # and when they cannot be, nothing leaves and the reply is 451 (fail closed).
    recorded = stages.background.start(
        record_decision(stages, record, decision, decision_id, submission.peer))
    content = stages.app.policy.content
    received = submission.trace.field(stages.app.config.smtp.hostname, decision_id,
                                      stages.clock()) if submission.trace else None
    try:
        plain, sealed = outgoing_copies(submission.raw, decision, decision_id,
                                        content.override_header, content.override_subject_tag,
                                        split=submission.split, received=received,
                                        dsn=submission.dsn, smtputf8=submission.smtputf8)
    except HeaderError:
        await asyncio.shield(recorded)
        await record(EventKind.REFUSAL, rule="malformed-message", sender=decision.sender,
                     recipients=list(submission.recipients), decision_id=decision_id,
                     stage="data", peer=submission.peer)
        stages.metrics.inc("casegate_messages_refused_total")
        return Reply.of(554, "5.6.0", "A header cannot be written safely into the outgoing copy.",
                        stages.app.policy.rule("malformed-message").sentence)
    if decision.overrides_applied:  # the sender's manager is told first (RRP 1.2)
        await asyncio.shield(recorded)  # and only of a decision on record
        reply = await overrides.notify(stages, record, submission, decision, decision_id)
        if reply is not None:
            return reply
    result = await deliver(stages, plain, sealed, recorded)
    try:
        await asyncio.shield(recorded)  # its failure, even when no copy needed handing over
        await record(EventKind.RELAY, sender=decision.sender,
                     recipients=list(submission.recipients), decision_id=decision_id,
                     outcome=result.outcome.value, copies=len(plain) + len(sealed))
    except Exception as exc:
        if not result.ok:
            raise  # nothing was lost: the client's retry sends what is missing
        # Every copy has left: a 451 now would only invite a resend. The client gets its 250;
        # the missing event is logged and alerted.
        log.error("relay-not-audited", decision_id=decision_id, **describe_error(exc))
        delivery_fault_event(stages.app.audit, "the relay event could not be recorded after "
                             "every copy was accepted", decision_id=decision_id)
    return delivery_reply(stages, result, decision_id)


async def deliver(stages: Stages, plain: tuple[Copy, ...], sealed: tuple[Copy, ...],
                  ready: Ready | None = None) -> DeliveryResult:
    """Plain copies to the upstream, then encrypt copies to the portal: all, or a retry.

    Each transport remembers what it accepted, so the client's retry after a partial success
    sends only what is missing. Nothing passes a transport's point of no return before
    `ready` is done (see `transports.base.Transport`).
    """
    result = DeliveryResult(Outcome.DELIVERED)
    if plain:
        result = await _timed(stages, "upstream", stages.transport, plain, ready)
    if result.ok and sealed and stages.encrypted is not None:
        result = await _timed(stages, "portal", stages.encrypted, sealed, ready)
    return result


async def _timed(stages: Stages, kind: TransportKind, transport: Transport,
                 copies: tuple[Copy, ...], ready: Ready | None) -> DeliveryResult:
    """`transport.deliver`, its outcome and time counted in the metrics."""
    started = time.perf_counter()
    result = await transport.deliver(copies, ready)
    stages.metrics.relayed(kind, result.outcome, time.perf_counter() - started)
    return result


def delivery_reply(stages: Stages, result: DeliveryResult, decision_id: str) -> Reply:
    """250 only when every copy was accepted; temporary trouble 451, permanent 554.

    The text says what went wrong as far as the client may know it (`result.problem`): the
    recipients the upstream refused, never a host name or an error's text (`result.detail`).
    """
    if result.outcome is Outcome.DELIVERED:
        stages.metrics.inc("casegate_messages_accepted_total")
        return Reply.of(250, "2.0.0", f"Delivered, decision {decision_id}")
    if result.outcome is Outcome.PERMANENT:
        stages.metrics.inc("casegate_messages_refused_total")
        return _permanent_reply(result, decision_id)
    stages.metrics.inc("casegate_messages_tempfailed_total")
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
