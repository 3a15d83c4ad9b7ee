"""How a Decision is shown: the JSON contract and the practitioner's table.

`casegate check`, `casegate replay` and the HTTP API all print decisions through here, so the
JSON shape (documented in the README; keys may be added, never renamed) has one definition.
"""

from __future__ import annotations

from email import message_from_bytes, policy
from email.headerregistry import AddressHeader
from typing import Any

from policies.model import Action, Decision


def decision_json(decision: Decision) -> dict[str, Any]:
    """The `casegate check --json` shape."""
    facts = decision.facts
    return {
        "verdict": decision.verdict.value,
        "information_type": facts.information_type,
        "protected": facts.protected,
        "protected_reasons": list(facts.protected_reasons),
        "case_numbers": list(facts.case_numbers),
        # the case registry (issue 16): ids and kinds of what matched, never its text
        "case_people": [
            {"case": p.case_number, "person": p.person_id, "role": p.role.value,
             "signal": p.signal.value}
            for p in facts.case_people
        ],
        "confidential_details": [
            {"case": d.case_number, "detail": d.detail_id, "kind": d.kind.value}
            for d in facts.confidential
        ],
        "shielded_cases": list(decision.shielded_cases),
        "split": decision.split,
        "recipients": [
            {
                "address": rd.recipient.address,
                "category": rd.recipient.category.value,
                "verified": rd.verified,
                "action": rd.action.value,
                "rule": rd.rule.id,
                "citation": rd.rule.citation,
                "reason": rd.reason,
                "stage": rd.stage.value,
                **({"suggestion": rd.recipient.suggestion} if rd.recipient.suggestion else {}),
            }
            for rd in decision.recipients
        ],
        "refusals": [
            {"rule": r.rule.id, "citation": r.rule.citation, "reason": r.rule.sentence}
            for r in decision.refusals
        ],
        # Every file attached and every file found inside one (DESIGN ruling 22): types, never
        # names (ruling 8). depth 0 is attached to the message, 1 inside one of those, ...
        "attachments": [
            {"type": a.detected_type, "depth": a.depth, "readable": a.readable,
             "editable": a.editable, "encrypted": a.encrypted,
             **({"unopened": a.unopened} if a.unopened else {})}
            for a in facts.attachments
        ],
        "overrides": [
            {"rule": o.rule_id, "justification": o.justification}
            for o in decision.overrides_applied
        ],
    }


_ACTION_WORDS = {
    Action.PLAIN: "send",
    Action.ENCRYPT: "send encrypted",
    Action.BLOCK: "REFUSED",
}


def decision_table(decision: Decision) -> str:
    """A short table a practitioner understands, then the sentences to act on."""
    facts = decision.facts
    verdict = "would be delivered" if decision.verdict.value == "deliver" else "would be REFUSED"
    lines = [
        f"This message {verdict}.",
        f"Information type: {facts.information_type.replace('-', ' ')}"
        f"{' (protected)' if facts.protected else ' (not protected)'}",
    ]
    if facts.case_numbers:
        lines.append(f"Case numbers: {', '.join(facts.case_numbers)}")
    if facts.case_people or facts.confidential:
        found = [f"{p.role.value} ({p.signal.value.replace('-', ' ')}) of {p.case_number}"
                 for p in facts.case_people]
        found += [f"confidential {d.kind.value} of {d.case_number}" for d in facts.confidential]
        lines.append(f"Recognised from the case registry: {'; '.join(found)}")
    if decision.shielded_cases:
        lines.append(f"Shielded case: {', '.join(decision.shielded_cases)}")
    if decision.split and decision.verdict.value == "deliver":
        lines.append("Each external recipient gets a separate copy showing only their address.")
    lines.append("")
    width = max([len(rd.recipient.address) for rd in decision.recipients] + [9])
    lines.append(f"{'Recipient':<{width}}  {'Kind':<10}  {'Action':<14}  Rule")
    for rd in decision.recipients:
        lines.append(
            f"{rd.recipient.address:<{width}}  {rd.recipient.category.value:<10}  "
            f"{_ACTION_WORDS[rd.action]:<14}  {rd.rule.id} ({rd.rule.citation})"
        )
    if decision.refusals:
        lines.append("")
        lines.append("The whole message is refused because:")
        lines.extend(f"- {r.rule.sentence} [{r.rule.id}: {r.rule.citation}]"
                     for r in decision.refusals)
    blocked = [rd for rd in decision.recipients if rd.action is Action.BLOCK]
    if blocked:
        lines.append("")
        lines.append("Refused recipients, and what to do:")
        lines.extend(f"- {rd.recipient.address}: {rd.reason}" for rd in blocked)
    for override in decision.overrides_applied:
        lines.append(f"Override recorded for {override.rule_id}: {override.justification}")
    return "\n".join(lines)


def header_envelope(raw: bytes) -> tuple[str, list[str]]:
    """Sender (From) and recipients (To, Cc, Bcc) read from the headers, for dry runs.

    Uses the modern header parser (email.headerregistry), never `email.utils.parseaddr` or
    `getaddresses` (CVE-2023-27043). That parser misreads such lists too
    (`jo@nhs.net)<x@evil.example>` gives jo@nhs.net), so a recipient field it finds defective
    is kept whole, as one address the policy engine refuses as invalid (fail closed), and a
    defective From gives no sender. Every address is still classified by the engine.
    """
    msg = message_from_bytes(raw, policy=policy.default)
    sender = ""
    recipients: list[str] = []
    for name in ("From", "To", "Cc", "Bcc"):
        written_values = [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]
        for header, written_value in zip(msg.get_all(name, []) or [], written_values,
                                         strict=True):
            if not isinstance(header, AddressHeader):
                continue
            try:
                addresses = header.addresses
                defective = bool(getattr(header, "defects", ()))  # BaseHeader.defects
            except Exception:  # noqa: S112 - a defective header yields no address
                continue
            if defective:
                written = " ".join(written_value.split())
                if name != "From" and written and written not in recipients:
                    recipients.append(written)
                continue
            for address in addresses:
                if not address.addr_spec or address.addr_spec == "<>":
                    continue
                if name == "From":
                    sender = sender or address.addr_spec
                elif address.addr_spec not in recipients:
                    recipients.append(address.addr_spec)
    return sender, recipients
