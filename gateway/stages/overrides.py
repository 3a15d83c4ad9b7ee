"""Telling the manager when a message is delivered under an override (RRP 1.2).

RRP 1.2 allows an exceptional variation when "a clear explanation [is] provided in the electronic
record, and a manager notified as soon as possible". casegate takes "notified" as a condition of
the override, not an afterthought: before any copy of the message leaves, a short notice goes to
the sender's manager (`casegate users set-manager`) and, when `[audit] notify_overrides` is on, to
the governance mailbox, through the normal outbound transport.

- If the notice cannot be handed over, the message is not delivered either: a 451, so the client
  keeps it and retries (the notice carries an idempotency key, so a retry never tells twice).
- If the sender has no manager recorded, the message is refused (copying governance is not
  enough): RRP 1.2 asks for a manager to be notified.

The notice carries who, when, which rule, the justification, the case numbers and the recipient
domains; never the subject, body or attachment names (DESIGN ruling 8).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from gateway.stages.context import Record, Stages
from gateway.stages.message import Reply, Submission
from policies.events import EventKind
from policies.model import Decision, Override
from transports.base import Copy, Origin, Outcome

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


@dataclass(frozen=True)
class Notice:
    """What the manager reads about one message sent under an override."""

    organisation: str
    sender: str
    when: datetime
    overrides: tuple[Override, ...]
    citations: tuple[str, ...]  # one per override, "" when the rule has none
    case_numbers: tuple[str, ...]
    recipient_domains: tuple[str, ...]
    decision_id: str

    def lines(self) -> list[str]:
        """The plain-text body, one fact a line."""
        out = [
            *textwrap.wrap(f"{self.sender} sent a message under an override of the "
                           f"{self.organisation} transfer policy (RRP 1.2: an exceptional "
                           "variation, explained and notified to a manager).", 72),
            "",
            f"Sender:            {self.sender}",
            f"When:              {self.when.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}",
        ]
        for override, citation in zip(self.overrides, self.citations, strict=True):
            cited = f" ({citation})" if citation else ""
            out.append(f"Rule overridden:   {override.rule_id}{cited}")
            out.append(f"Justification:     {override.justification}")
        out += [
            f"Case numbers:      {', '.join(self.case_numbers) or 'none'}",
            f"Recipient domains: {', '.join(self.recipient_domains) or 'none'}",
            f"Decision:          {self.decision_id}",
            "",
            "If this variation was not justified, raise it with the sender and with",
            "governance.",
        ]
        return [_safe(line) for line in out]


def notice_for(decision: Decision, decision_id: str, organisation: str,
               citations: Sequence[str], when: datetime) -> Notice:
    """The notice for a decision that applied overrides."""
    domains = sorted({rd.recipient.domain for rd in decision.recipients if rd.recipient.domain})
    return Notice(
        organisation=organisation,
        sender=decision.sender,
        when=when,
        overrides=decision.overrides_applied,
        citations=tuple(citations),
        case_numbers=decision.facts.case_numbers,
        recipient_domains=tuple(domains),
        decision_id=decision_id,
    )


def compose(notice: Notice, sender: str, recipients: Sequence[str]) -> bytes:
    """The notice as one plain-text message, CRLF line endings, every header value sanitised."""
    message = EmailMessage(policy=SMTP)
    message["From"] = _safe(sender)
    message["To"] = _safe(", ".join(recipients))
    message["Subject"] = _safe(f"Override used by {notice.sender}")
    message["Date"] = format_datetime(notice.when)
    message["Message-ID"] = make_msgid("casegate", sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(notice.lines()))
    return message.as_bytes()


def notice_key(raw: bytes, recipients: Sequence[str]) -> str:
    """The same for the same submitted message, so the client's retry never tells twice."""
    digest = hashlib.sha256(b"override-notice\x00")
    digest.update(raw)
    for address in recipients:
        digest.update(b"\x00" + address.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


async def notify(stages: Stages, record: Record, submission: Submission, decision: Decision,
                 decision_id: str) -> Reply | None:
    """Before delivery: None when the message may go on, else the reply."""
    if not decision.overrides_applied:
        return None
    user = submission.user or await asyncio.to_thread(stages.app.users.get, decision.sender)
    if user is None or not user.manager:
        await _not_notified(stages, record, decision, decision_id, "no-manager")
        return Reply.of(550, "5.7.1", "This message uses an override, but no manager is recorded "
                        "for your account to be told, so it was not sent. Ask IT to record your "
                        "manager, or remove the override.")
    audit_config = stages.app.config.audit
    told = [user.manager]
    if audit_config.notify_overrides and audit_config.governance_address:
        told.append(audit_config.governance_address)
    outcome = await _send(stages, record, submission, decision, decision_id, told)
    if outcome is Outcome.DELIVERED:
        return None
    await _not_notified(stages, record, decision, decision_id, outcome.value)
    if outcome is Outcome.PERMANENT:
        return Reply.of(550, "5.7.1", "Your manager could not be told of this override (their "
                        "address was refused), so the message was not sent. Ask IT to check "
                        "your manager's address, or remove the override.")
    return Reply.of(451, "4.4.0", "Your manager could not be told of this override just now, "
                    "so nothing was sent; please try again later.")


async def _send(stages: Stages, record: Record, submission: Submission, decision: Decision,
                decision_id: str, told: list[str]) -> Outcome:
    """Hand the notice to the outbound transport; audit `override-notified` once accepted."""
    app = stages.app
    citations = [app.policy.rules[o.rule_id].citation for o in decision.overrides_applied]
    notice = notice_for(decision, decision_id, app.config.organisation, citations,
                        stages.clock())
    sender = app.config.audit.alert_from or f"casegate@{app.config.smtp.hostname}"
    copy = Copy(key=notice_key(submission.raw, told), mail_from=sender,
                recipients=tuple(told), data=compose(notice, sender, told),
                origin=Origin.AUTHORED)
    result = await stages.transport.deliver((copy,))
    if result.ok:
        await record(EventKind.OVERRIDE_NOTIFIED, rule=decision.overrides_applied[0].rule_id,
                    sender=decision.sender, case_numbers=list(decision.facts.case_numbers),
                    decision_id=decision_id, notified=told,
                    rules=[o.rule_id for o in decision.overrides_applied])
    return result.outcome


async def _not_notified(stages: Stages, record: Record, decision: Decision, decision_id: str,
                        reason: str) -> None:
    """Audit and count a message held back because its manager could not be told."""
    await record(EventKind.OVERRIDE_NOT_NOTIFIED, rule=decision.overrides_applied[0].rule_id,
                sender=decision.sender, case_numbers=list(decision.facts.case_numbers),
                decision_id=decision_id, reason=reason)
    name = "refused" if reason in ("no-manager", Outcome.PERMANENT.value) else "tempfailed"
    stages.metrics.inc(f"casegate_messages_{name}_total")


def _safe(value: str, limit: int = 1000) -> str:
    """A value safe in a header or a line of text: no control characters, bounded."""
    return _UNSAFE.sub("?", value)[:limit]
