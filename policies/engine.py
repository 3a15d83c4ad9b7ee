"""The decision: per envelope recipient plain, encrypt or block; and message-level refusals.

Every entry point (SMTP front, `casegate check`, replay, HTTP API) calls these functions, so the
dry run says what the gateway does. Pure: the registry, staff directory and clock come in as
arguments (`Snapshot`, `clock`).

* `decide_at_rcpt` answers from the address alone (DESIGN ruling 15).
* `decide` takes the message's classified content (`MessageFacts`).
* `evaluate` classifies raw bytes first, then decides.

The per-recipient questions (`_decide_recipient`) and the message-level ones (`_REFUSAL_CHECKS`,
an ordered table) are small functions that each name the rule they apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from policies import family, restricted
from policies.cases import DetailKind, DetailMatch, ShieldedCase
from policies.content import classify_message
from policies.loader import Policy
from policies.model import (
    Action,
    Category,
    Decision,
    MessageFacts,
    MultipleExternal,
    Override,
    OverrideNotApplied,
    Recipient,
    RecipientDecision,
    Refusal,
    Snapshot,
    Stage,
)
from policies.recipients import classify_recipient

# Address-only categories that are refused whatever the message holds, and the rule for each.
_ADDRESS_BLOCKS: dict[Category, str] = {
    Category.INVALID: "invalid-address",
    Category.FAX: "fax",
    Category.PERSONAL: "personal-address",
    Category.LOOKALIKE: "lookalike-domain",
}



def decide_at_rcpt(
    sender: str, address: str, policy: Policy, snapshot: Snapshot, sender_display_name: str = ""
) -> RecipientDecision | None:
    """A block when the address alone settles it (invalid, fax, personal, lookalike), else None."""
    recipient = classify_recipient(address, policy, snapshot, sender, sender_display_name)
    rule_id = _ADDRESS_BLOCKS.get(recipient.category)
    if rule_id is None:
        return None
    return RecipientDecision(recipient=recipient, verified=False, action=Action.BLOCK,
                             rule=policy.rule(rule_id), stage=Stage.RCPT)


def evaluate(
    raw: bytes,
    sender: str,
    recipients: Sequence[str],
    policy: Policy,
    snapshot: Snapshot,
    clock: Callable[[], float],
    multiple_external: MultipleExternal | str = MultipleExternal.SPLIT,
    *,
    quick: bool = False,
) -> Decision:
    """Classify the message's content, then decide for every recipient. With `quick`, a
    message holding a file that needs a reader of its own raises TakesLonger instead (see
    `classify_message`): the gateway decides the rest on its event loop."""
    facts = classify_message(raw, policy.content, clock, snapshot.cases, quick=quick)
    return decide(facts, sender, recipients, policy, snapshot, multiple_external)


def decide(
    facts: MessageFacts,
    sender: str,
    recipients: Sequence[str],
    policy: Policy,
    snapshot: Snapshot,
    multiple_external: MultipleExternal | str = MultipleExternal.SPLIT,
) -> Decision:
    """One decision per envelope recipient, in order, plus the message-level refusals.
    `multiple_external` may be given as its word ("split", "refuse"), as in the case tables."""
    try:
        mode = MultipleExternal(multiple_external)
    except ValueError:
        raise ValueError(f"multiple_external must be one of "
                         f"{', '.join(MultipleExternal)}, not {multiple_external!r}") from None
    # Issue 13: agency check results and legal advice by what they are (policies/restricted.py).
    facts = restricted.refine(facts, sender, policy.restricted)
    classified = tuple(
        classify_recipient(address, policy, snapshot, sender, facts.sender_display_name)
        for address in recipients
    )
    message = _Message(
        facts=facts,
        policy=policy,
        protected=_is_protected(facts, policy),
        recipients=classified,
        family=family.exposed_family(classified, facts.shown_addresses, snapshot,
                                     policy.freemail_domains),
        sender=sender.strip().lower(),
        shields=_shields(facts, snapshot),
    )
    decisions = tuple(_decide_recipient(r, message, snapshot) for r in message.recipients)
    split = message.must_split
    refusals = [
        Refusal(rule=policy.rule(rule_id), detail=detail)
        for check in _REFUSAL_CHECKS
        for rule_id, detail in check(message, mode)
    ]
    remaining, applied = _apply_overrides(refusals, facts.overrides, policy)
    refused = bool(remaining) or any(d.action is Action.BLOCK for d in decisions)
    return Decision(
        facts=facts,
        sender=sender,
        recipients=decisions,
        refusals=tuple(remaining),
        split=split and mode is MultipleExternal.SPLIT,
        overrides_applied=tuple(applied),
        overrides_not_applied=_not_applied(facts.overrides, applied, policy) if refused else (),
        shielded_cases=tuple(shield.case_number for shield in message.shields),
    )


def _shields(facts: MessageFacts, snapshot: Snapshot) -> tuple[ShieldedCase, ...]:
    """The shielded cases among the cases the message is about: named by number, or
    recognised from a recorded person or confidential detail (DESIGN ruling 19); a person
    named whose name belongs to people of several cases counts for each of them (fail closed)."""
    found = (snapshot.cases.shielded(case)
             for case in dict.fromkeys((*facts.case_numbers, *facts.possible_cases)))
    return tuple(shield for shield in found if shield is not None)


@dataclass(frozen=True)
class _Message:
    """What the checks share about one message."""

    facts: MessageFacts
    policy: Policy
    protected: bool
    recipients: tuple[Recipient, ...]
    family: tuple[str, ...] = ()  # DESIGN ruling 21: family addresses that would see each other
    sender: str = ""  # the envelope sender, lower-case
    shields: tuple[ShieldedCase, ...] = ()

    @property
    def must_split(self) -> bool:
        """DESIGN ruling 5 (protected mail to several outside addresses) or 21 (family
        addresses, whatever the content): one copy per external recipient."""
        return (self.protected and self.external_count > 1) or bool(self.family)

    @property
    def external_count(self) -> int:
        """Distinct outside addresses (the same address twice is still one person)."""
        return len({
            (r.normalised or r.address).lower()
            for r in self.recipients
            if r.category is not Category.INTERNAL
        })

    @property
    def has_external(self) -> bool:
        return self.external_count > 0


def _is_protected(facts: MessageFacts, policy: Policy) -> bool:
    """Protected when the content or its type says so, or when it is malformed (fail closed)."""
    return (
        facts.protected
        or bool(facts.malformed)
        or policy.information_type(facts.information_type).protected
    )


# ----------------------------------------------------------------------------------------------
# Per recipient
# ----------------------------------------------------------------------------------------------


def _decide_recipient(
    recipient: Recipient, message: _Message, snapshot: Snapshot
) -> RecipientDecision:
    policy = message.policy
    verified = bool(recipient.normalised) and snapshot.is_verified(
        recipient.normalised, message.facts.case_numbers
    )

    def decision(action: Action, rule_id: str, stage: Stage = Stage.DATA,
                 note: str = "") -> RecipientDecision:
        return RecipientDecision(recipient=recipient, verified=verified, action=action,
                                 rule=policy.rule(rule_id), stage=stage, note=note)

    blocking_rule = _ADDRESS_BLOCKS.get(recipient.category)
    if blocking_rule is not None:
        return decision(Action.BLOCK, blocking_rule, Stage.RCPT)
    if recipient.category is Category.INTERNAL:
        return decision(Action.PLAIN, "internal")
    withheld = [d for d in message.facts.confidential if not _may_go_to(recipient, d)]
    if withheld:  # DESIGN ruling 18: only inside Cafcass and to the recipients recorded
        return decision(Action.BLOCK, "confidential-information",
                        note=_confidential_note(withheld))
    if not message.protected:
        rule_id = "secure-domain" if recipient.category is Category.SECURE else "not-protected"
        return decision(Action.PLAIN, rule_id)
    if not verified:  # DESIGN rulings 3 and 10: secure professionals too
        return decision(Action.BLOCK, "unverified-recipient")
    if recipient.category is Category.SECURE:
        return decision(Action.PLAIN, "secure-domain")
    return decision(Action.ENCRYPT, "encrypt-non-secure")


def _may_go_to(recipient: Recipient, detail: DetailMatch) -> bool:
    """Whether a confidential detail may go to this recipient: the address itself, or its
    domain (or a domain above it), is recorded with the detail."""
    address = (recipient.normalised or recipient.address).lower()
    domain = address.rpartition("@")[2]
    for allowed in detail.may_go_to:
        if "@" in allowed:
            if address == allowed:
                return True
        elif domain == allowed or domain.endswith("." + allowed):
            return True
    return False


_KIND_WORDS: dict[DetailKind, str] = {
    DetailKind.ADDRESS: "an address",
    DetailKind.SCHOOL: "a school",
    DetailKind.NURSERY: "a nursery",
    DetailKind.GP: "a GP practice",
    DetailKind.PLACEMENT: "a placement",
    DetailKind.OTHER: "a detail",
}


def _confidential_note(details: Sequence[DetailMatch]) -> str:
    """Which kinds of confidential detail the message holds, never their text (ruling 18)."""
    kinds = [_KIND_WORDS[kind] for kind in DetailKind if any(d.kind is kind for d in details)]
    listed = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
    return f"Recorded as confidential and found in this message: {listed}."


# ----------------------------------------------------------------------------------------------
# Message-level refusals: an ordered table of checks, each yielding (rule id, detail) pairs
# ----------------------------------------------------------------------------------------------

_Check = Callable[[_Message, MultipleExternal], list[tuple[str, str]]]


def _malformed(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """Structure casegate could not read safely: refused for every recipient (fail closed)."""
    if message.facts.malformed:
        return [("malformed-message", ", ".join(message.facts.malformed))]
    return []


def _shielded(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """DESIGN ruling 19 (RRP 5.1, 5.2): mail about a shielded case, from a sender not on its
    access list, is refused whoever the recipients are (inside Cafcass too)."""
    barred = [s.case_number for s in message.shields if message.sender not in s.access]
    if barred:
        return [("shielded-case", ", ".join(barred))]
    return []


def _auto_forwarded(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """DESIGN ruling 4: mail forwarded by a mailbox rule never goes outside the agency."""
    if message.facts.auto_forwarded and message.has_external:
        return [("auto-forward", "")]
    return []


def _never_leaves(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """DESIGN ruling 13 (and the case file row): types that move only inside the agency."""
    kind = message.policy.information_type(message.facts.information_type)
    if kind.never_leaves_agency and message.has_external:
        return [(kind.refusal_rule, kind.id)]
    return []


def _other_cases(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """DESIGN ruling 6 (IA 3.10): more than one case named in mail that leaves the agency."""
    if len(message.facts.case_numbers) > 1 and message.has_external:
        return [("other-case-information", f"{len(message.facts.case_numbers)} case numbers")]
    return []


def _editable_documents(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """DESIGN ruling 7 (RRP 4.3): protected editable documents never go outside."""
    editable = [
        a.detected_type for a in message.facts.attachments
        if a.editable or a.detected_type.lower() in message.policy.editable_types
    ]
    if editable and message.protected and message.has_external:
        return [("editable-document", ", ".join(sorted(set(editable))))]
    return []


def _unreadable_containers(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """DESIGN ruling 22 (RRP 4.3): an archive, attached message or document casegate could not
    open (encrypted, damaged, beyond its budgets) never goes outside the agency."""
    unopened = sorted({f"{a.detected_type} ({a.unopened})"
                       for a in message.facts.attachments if a.unopened})
    if unopened and message.has_external:
        return [("unreadable-container", ", ".join(unopened))]
    return []


def _multiple_external(message: _Message, mode: MultipleExternal) -> list[tuple[str, str]]:
    """DESIGN rulings 5 and 21, when configured to refuse rather than split."""
    if mode is MultipleExternal.REFUSE and message.must_split:
        return [("multiple-external", f"{message.external_count} external recipients")]
    return []


def _legal_advice(message: _Message, _mode: str) -> list[tuple[str, str]]:
    """DESIGN ruling 20 (RRP App. 1): legal advice goes outside only to instructed lawyers."""
    if message.facts.information_type != restricted.LEGAL_ADVICE:
        return []
    sources = message.policy.restricted
    outside = [r for r in message.recipients if r.category is not Category.INTERNAL
               and not sources.is_instructed_lawyer(r.domain)]
    if outside:
        return [("legal-advice", f"{len(outside)} recipients outside the agency and its "
                 "instructed lawyers")]
    return []


_REFUSAL_CHECKS: tuple[_Check, ...] = (
    _malformed,
    _shielded,
    _auto_forwarded,
    _never_leaves,
    _legal_advice,
    _other_cases,
    _editable_documents,
    _unreadable_containers,
    _multiple_external,
)


def _not_applied(
    overrides: Sequence[Override], applied: Sequence[Override], policy: Policy
) -> tuple[OverrideNotApplied, ...]:
    """Why each override the sender recorded did not help a refused message."""
    found: list[OverrideNotApplied] = []
    for override in overrides:
        if override in applied:
            continue
        rule = policy.rules.get(override.rule_id)
        if rule is None or not rule.overridable:
            why = "that rule cannot be overridden."
        elif len(override.justification.strip()) < policy.min_justification_chars:
            why = (f"the justification must be at least {policy.min_justification_chars} "
                   "characters.")
        else:
            continue  # overridable and justified, but that rule did not refuse this message
        found.append(OverrideNotApplied(
            override, f"The override for {override.rule_id} was not applied: {why}"))
    return tuple(found)


def _apply_overrides(
    refusals: Sequence[Refusal], overrides: Sequence[Override], policy: Policy
) -> tuple[list[Refusal], list[Override]]:
    """Lift refusals whose rule is overridable and which the sender justified (RRP 1.2).

    Overrides naming a rule that is not overridable, did not refuse, or whose justification is
    too short are ignored: the refusal stands.
    """
    remaining: list[Refusal] = []
    applied: list[Override] = []
    for refusal in refusals:
        override = next(
            (
                o for o in overrides
                if o.rule_id == refusal.rule.id
                and refusal.rule.overridable
                and len(o.justification.strip()) >= policy.min_justification_chars
            ),
            None,
        )
        if override is None:
            remaining.append(refusal)
        elif override not in applied:
            applied.append(override)
    return remaining, applied
