"""The envelope stages: the sender at MAIL, each recipient at RCPT.

    at MAIL   check_sender        bound to the login (or a trusted relay peer)
    at RCPT   is_request_address  the verification address: the message is a request, taken by
                                  the intake (gateway.stages.intake), never relayed
              check_recipient     address-only rules: that recipient alone is refused
"""

from __future__ import annotations

from gateway.config import Config, verification_address
from gateway.stages.context import Stages, TransactionSnapshot
from gateway.stages.message import Reply
from gateway.stores.users import User
from policies import engine
from policies.events import EventKind
from policies.model import Action


def is_request_address(config: Config, address: str) -> bool:
    """Whether an envelope recipient is the verification address: its message is a request."""
    return address.strip().lower() == verification_address(config)


# ---- MAIL ---------------------------------------------------------------------------------


async def check_sender(stages: Stages, user: User | None, trusted_peer: bool, tls: bool,
                       sender: str, peer: str) -> Reply | None:
    """Whether this client may use `sender` as the envelope sender; None means yes."""
    if user is None and not trusted_peer:
        if not tls:
            return Reply.of(530, "5.7.0", "Must issue a STARTTLS command first.")
        return Reply.of(530, "5.7.0", "Authentication required.")
    if user is not None and not user.may_send_as(sender):
        await stages.record()(EventKind.REFUSAL, rule="sender-identity", sender=user.address,
                              envelope_sender=sender, peer=peer, stage="mail")
        return Reply.of(553, "5.7.1", "You may not send as that address with this login.",
                        stages.app.policy.rule("sender-identity").sentence).recorded()
    return None


# ---- RCPT ---------------------------------------------------------------------------------


async def check_recipient(stages: Stages, sender: str, address: str, peer: str,
                          snapshots: TransactionSnapshot | None = None) -> Reply | None:
    """Address-only rules (personal, fax, invalid, lookalike): refuse this recipient alone.
    (The verification address never comes here: see `is_request_address`.)

    `snapshots` is the transaction's registry snapshot, read once for all its recipients and
    its DATA (`TransactionSnapshot`); without it the registry is read for this recipient."""
    app = stages.app
    # The registry is read in the stores' thread: even its cached answer needs a look at the
    # database (has anything changed since?), which the event loop never takes.
    snapshot = await (snapshots or TransactionSnapshot()).get(stages)
    decision = engine.decide_at_rcpt(sender, address, app.policy, snapshot)
    if decision is None or decision.action is not Action.BLOCK:
        return None
    stages.metrics.inc("casegate_rcpt_refused_total")
    stages.metrics.decided("rcpt", decision.action, decision.rule.id)
    await stages.record()(EventKind.REFUSAL, rule=decision.rule.id, sender=sender,
                          recipients=[address], stage="rcpt",
                          category=decision.recipient.category.value, peer=peer)
    return Reply.of(550, decision.rule.smtp_code, decision.reason).recorded()
