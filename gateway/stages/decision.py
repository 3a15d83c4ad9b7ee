"""The decision stage: the policy's answer for one message, recorded, and the replies that
refuse it or hold it back (a refusal cites each rule and its paragraph)."""

from __future__ import annotations

import asyncio
import time

from gateway.stages.classifiers import ClassifierUnavailable
from gateway.stages.context import Record, Stages
from gateway.stages.message import Reply, Submission
from policies import engine
from policies.errors import TakesLonger
from policies.events import EventKind
from policies.model import Action, Decision, Snapshot, Verdict

# A message up to this size is decided on the event loop first (only the registry's snapshot
# is read in the stores' thread): its classification is a MIME parse and a few scans of at most
# this much text, unless it holds a file that needs a reader of its own (a PDF, an Office
# document, an archive: `policies.errors.TakesLonger`), whose reading can take up to the
# content budget's seconds. That message, and any larger one, is decided in a worker thread.
# Measured at 100 KB (bench/bench_evaluate.py's bodies): prose 0.5 ms, a digit-heavy CSV table
# 1.4 ms, accented prose 4.4 ms of the loop's time. A worker thread costs more than that for
# such messages: the native scan lets go of the interpreter's lock for every match it
# reports, and under load each hand-back waits for the event loop's thread (a 1 KB message
# with a CSV attachment took 2.6 ms more CPU that way, measured with bench/bench_postfix.py).
INLINE_DECISION_BYTES = 128 * 1024
# The stdlib's MIME parser takes about a tenth of a millisecond per part: a message with more
# lines that may start a part than this ("--" at the start of a line) goes to the worker thread
# at once (3,000 empty parts in 105 KB would otherwise hold the loop for 100 ms).
INLINE_DECISION_DELIMITERS = 32


async def decide(stages: Stages, submission: Submission) -> Decision:
    """The policy decision: in a classifier process for a message of the sizes sent there
    (`Stages.classifiers`, gateway/stages/classifiers.py; decided here from its facts); else
    on the loop for a small message that holds no file needing a reader of its own, with the
    registry's snapshot read in the stores' thread (`App.snapshot_async`); anything else in a
    worker thread altogether, so the event loop stays responsive, one message at a time
    (`Stages.evaluations`). Each way, the snapshot the transaction's RCPTs read is used while
    it is fresh (`TransactionSnapshot`): no second trip to the stores."""
    app = stages.app
    now = stages.clock()

    def held() -> Snapshot | None:
        return submission.snapshots.fresh() if submission.snapshots else None

    def evaluate(snapshot: Snapshot, quick: bool = False) -> Decision:
        return engine.evaluate(
            submission.raw, submission.sender, submission.recipients, app.policy,
            snapshot, time.monotonic, app.config.policy.multiple_external, quick=quick,
        )

    classifiers = stages.classifiers
    if classifiers is not None and classifiers.takes(submission.raw):
        try:
            facts = await classifiers.classify(submission.raw)
        except ClassifierUnavailable:
            stages.metrics.inc("casegate_classifier_failures_total")
            raise  # 451: the client sends it again
        stages.metrics.inc("casegate_classified_in_processes_total")
        return engine.decide(facts, submission.sender, submission.recipients, app.policy,
                             held() or await app.snapshot_async(now),
                             app.config.policy.multiple_external)
    if (len(submission.raw) <= INLINE_DECISION_BYTES
            and submission.raw.count(b"\n--") <= INLINE_DECISION_DELIMITERS):
        try:
            return evaluate(held() or await app.snapshot_async(now), quick=True)
        except TakesLonger:
            pass  # read again in a worker thread
    async with stages.evaluations:
        snapshot = held()
        return await asyncio.to_thread(lambda: evaluate(snapshot or app.snapshot(now)))


async def record_decision(stages: Stages, record: Record, decision: Decision,
                          decision_id: str, peer: str) -> None:
    """One audit event for the decision, and one per override the sender recorded."""
    facts = decision.facts
    first = decision.refusals[0].rule.id if decision.refusals else ""
    blocked = [rd.rule.id for rd in decision.recipients if rd.action is Action.BLOCK]
    kind = EventKind.REFUSAL if decision.verdict is Verdict.REFUSE else EventKind.DECISION
    await record(
        kind, rule=first or (blocked[0] if blocked else ""),
        sender=decision.sender,
        recipients=[rd.recipient.address for rd in decision.recipients],
        case_numbers=list(facts.case_numbers), decision_id=decision_id, stage="data", peer=peer,
        information_type=facts.information_type, protected=facts.protected, size=facts.size,
        split=decision.split, actions=[rd.action.value for rd in decision.recipients],
        **registry_metadata(decision),
    )
    if decision.shielded_cases:
        # DESIGN ruling 19: every message about a shielded case is on record, allowed or not.
        await record(EventKind.SHIELDED_CASE_MAIL, rule="shielded-case",
                     sender=decision.sender, case_numbers=list(decision.shielded_cases),
                     decision_id=decision_id, verdict=decision.verdict.value)
    for override in decision.overrides_applied:
        # Governance reviews overrides with their justification (issue 6; RRP 1.2): it is the
        # sender's own explanation, capped in length by the classifier, never message content.
        await record(EventKind.OVERRIDE, rule=override.rule_id, sender=decision.sender,
                    case_numbers=list(facts.case_numbers), decision_id=decision_id,
                    justification=override.justification)
    for rd in decision.recipients:
        stages.metrics.decided("data", rd.action, rd.rule.id)


def registry_metadata(decision: Decision) -> dict[str, list[str]]:
    """What the case registry recognised, for the audit trail: which case and which kind of
    item matched ("case:person:role:signal", "case:detail:kind"), never the matched text."""
    facts = decision.facts
    found: dict[str, list[str]] = {}
    if facts.case_people:
        found["case_people"] = [f"{p.case_number}:{p.person_id}:{p.role.value}:{p.signal.value}"
                                for p in facts.case_people]
    if facts.confidential:
        found["confidential_details"] = [f"{d.case_number}:{d.detail_id}:{d.kind.value}"
                                         for d in facts.confidential]
    if decision.shielded_cases:
        found["shielded_cases"] = list(decision.shielded_cases)
    return found


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
