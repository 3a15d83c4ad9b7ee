"""The vocabulary of a decision: frozen values, no behaviour beyond small derived properties.

Everything the engine returns is built from these types, and every entry point (SMTP front,
`casegate check`, replay, HTTP API) reads them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from policies.cases import CaseIndex, DetailMatch, PersonMatch


class Action(StrEnum):
    """What happens to one recipient's copy."""

    PLAIN = "plain"  # delivered as it is (internal or secure government address)
    ENCRYPT = "encrypt"  # delivered through the secure portal (as Egress does)
    BLOCK = "block"  # not delivered


class Category(StrEnum):
    """What kind of address a recipient is."""

    INTERNAL = "internal"
    SECURE = "secure"
    NON_SECURE = "non_secure"
    PERSONAL = "personal"
    FAX = "fax"
    INVALID = "invalid"
    LOOKALIKE = "lookalike"


class Stage(StrEnum):
    """When a decision was taken: on the address alone (RCPT) or on the whole message (DATA)."""

    RCPT = "rcpt"
    DATA = "data"


class Verdict(StrEnum):
    DELIVER = "deliver"
    REFUSE = "refuse"


class MultipleExternal(StrEnum):
    """What protected mail to several external recipients gets (DESIGN ruling 5)."""

    SPLIT = "split"  # one copy per external recipient, so none sees the others
    REFUSE = "refuse"  # refused: the sender sends one message per recipient


class Role(StrEnum):
    """Who a verified recipient is to the case."""

    PARTY = "party"
    PROFESSIONAL = "professional"


@dataclass(frozen=True)
class Rule:
    """One rule of the policy, as governance reads it in policies/data/policy.toml."""

    id: str  # kebab-case, reused in logs, tests and replies, e.g. "personal-address"
    citation: str  # the paragraph, e.g. "IA 3.2; RRP 6.1"
    sentence: str  # what the sender reads: why, and what to do instead
    overridable: bool = False  # DESIGN ruling 6: only some rules accept a justified override
    grade: str = "low"  # breach grade for governance: low, medium, high
    smtp_code: str = "5.7.1"  # enhanced status code used when this rule refuses


@dataclass(frozen=True)
class Recipient:
    """An envelope recipient after classification."""

    address: str  # as given in the envelope
    normalised: str  # local@ascii-domain, lower-cased domain; "" when invalid
    category: Category
    suggestion: str | None = None  # "did you mean" address for lookalikes
    detail: str = ""  # short machine-oriented explanation (e.g. which secure suffix matched)

    @property
    def domain(self) -> str:
        return self.normalised.rpartition("@")[2]


@dataclass(frozen=True)
class RecipientDecision:
    recipient: Recipient
    verified: bool
    action: Action
    rule: Rule
    stage: Stage
    note: str = ""  # a sentence the engine adds for this recipient (e.g. which kind of detail)

    @property
    def reason(self) -> str:
        """The sentence the sender reads, with the suggestion for a lookalike, and the note."""
        sentence = self.rule.sentence
        if self.recipient.suggestion:
            sentence = f"{sentence} Did you mean {self.recipient.suggestion}?"
        return f"{sentence} {self.note}" if self.note else sentence


@dataclass(frozen=True)
class Refusal:
    """A message-level refusal: the whole message is refused, nothing leaves."""

    rule: Rule
    detail: str = ""


@dataclass(frozen=True)
class Override:
    """A sender's justified variation (RRP 1.2), read from the override header."""

    rule_id: str
    justification: str


@dataclass(frozen=True)
class OverrideNotApplied:
    """An override the sender recorded that did not lift a refusal, and the sentence saying why."""

    override: Override
    sentence: str


@dataclass(frozen=True)
class Attachment:
    """What classification learned about one attachment (never its name or content)."""

    declared_type: str  # the Content-Type the sender's client claimed
    detected_type: str  # what the bytes are: "pdf", "docx", "doc", "text", "zip", "unknown", ...
    size: int
    readable: bool  # text could be extracted within budget
    editable: bool  # an editable office document (RRP 4.3)
    encrypted: bool = False
    # DESIGN ruling 22: 0 for a file attached to the message; 1 for a file inside one of those
    # (an archive, an attached message, a document's embedded object); 2 inside that; ...
    depth: int = 0
    # Why this archive, attached message or document could not be opened (ruling 22): one of
    # policies.containers.UNOPENED_REASONS ("encrypted", "damaged", "unsupported", or the budget
    # it ran over: "depth", "files", "bytes", "time"); "" when it was, or holds nothing to open.
    unopened: str = ""


@dataclass(frozen=True)
class TextSignal:
    """A sign, found in one text, of information that may not leave as it is
    (policies/restricted.py): its kind ("check-document", "legal-marking", ...) and the address of
    the text's author ("" for the sender's own words, "?" for an author shown without an
    address). Never the text itself."""

    kind: str
    author: str = ""


@dataclass(frozen=True)
class MessageFacts:
    """The result of classifying one message's content. Metadata only."""

    information_type: str  # an id from policy.toml [information_types], e.g. "court-report"
    protected: bool
    protected_reasons: tuple[str, ...]  # e.g. ("case-number", "unreadable-attachment")
    case_numbers: tuple[str, ...]
    identifiers: tuple[str, ...]  # kinds: "date-of-birth", "nhs-number", "ni-number", "pnc-id"
    attachments: tuple[Attachment, ...]
    labels: tuple[str, ...]  # explicit markings seen (classification header, Sensitivity, Purview)
    auto_forwarded: bool
    overrides: tuple[Override, ...]
    sender_display_name: str
    size: int
    malformed: tuple[str, ...] = ()  # structural problems found (fail closed: protected)
    # Issue 13 (policies/restricted.py, policies/family.py): signs of an agency check result or
    # legal advice; the authors of forwarded and quoted messages; the addresses shown in To/Cc
    # ("*": the headers could not be read, so every address counts as shown).
    signals: tuple[TextSignal, ...] = ()
    forwarded_from: tuple[str, ...] = ()
    shown_addresses: tuple[str, ...] = ()
    # What the case registry recognised (issue 16): ids and kinds, never the matched text.
    case_people: tuple[PersonMatch, ...] = ()  # recorded people named (ruling 17)
    confidential: tuple[DetailMatch, ...] = ()  # confidential details present (ruling 18)
    # a recorded person named whose name (or cued date of birth) belongs to people of several
    # cases, and nothing else said which: protected, tied to none of them
    possible_cases: tuple[str, ...] = ()
    shielded_cases: tuple[str, ...] = ()  # shielded among case_numbers and possible_cases


@dataclass(frozen=True)
class Verification:
    """One verified address, as the registry hands it to the engine."""

    address: str  # normalised, lower-case
    case_number: str | None  # None: organisation-wide (DESIGN ruling 3)
    role: Role


@dataclass(frozen=True)
class Snapshot:
    """What the engine needs to know of the world, taken by the caller before deciding.

    The engine does no I/O: the registry, the staff directory and the clock come in here.
    """

    now: datetime
    verified: tuple[Verification, ...] = ()
    # staff member's work address -> their known personal addresses
    staff_personal: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # the case registry's people, confidential details and shields, as keyed hashes (issue 16)
    cases: CaseIndex = CaseIndex.EMPTY

    def is_verified(self, address: str, case_numbers: tuple[str, ...]) -> bool:
        """Verified for every case the message names, or organisation-wide."""
        entries = _by_address(self.verified).get(address.lower(), ())
        if any(v.case_number is None for v in entries):
            return True
        if not case_numbers:
            return bool(entries)
        cases = {v.case_number for v in entries}
        return all(c in cases for c in case_numbers)


def _by_address(verified: tuple[Verification, ...]) -> Mapping[str, tuple[Verification, ...]]:
    """The verifications of each address, in order (remembered for the last tuple seen: the
    registry hands out the same tuple until it changes, and holding it here keeps it alive)."""
    last_verified, last_index = _LAST_INDEX
    if last_verified is verified:
        return last_index
    index: dict[str, tuple[Verification, ...]] = {}
    for entry in verified:
        index[entry.address] = (*index.get(entry.address, ()), entry)
    _LAST_INDEX[:] = [verified, index]
    return index


_LAST_INDEX: list[Any] = [None, {}]


@dataclass(frozen=True)
class Decision:
    """The engine's answer for one message: one decision per envelope recipient."""

    facts: MessageFacts
    sender: str
    recipients: tuple[RecipientDecision, ...]
    refusals: tuple[Refusal, ...]
    split: bool
    overrides_applied: tuple[Override, ...] = ()
    overrides_not_applied: tuple[OverrideNotApplied, ...] = ()  # only on a refused message
    # shielded cases the message is about (DESIGN ruling 19): audited whatever the verdict
    shielded_cases: tuple[str, ...] = ()

    @property
    def verdict(self) -> Verdict:
        if self.refusals or any(r.action is Action.BLOCK for r in self.recipients):
            return Verdict.REFUSE
        return Verdict.DELIVER

    def reasons(self) -> list[str]:
        """Every sentence the sender must read, message-level first, without repeats."""
        out: list[str] = []
        for refusal in self.refusals:
            if refusal.rule.sentence not in out:
                out.append(refusal.rule.sentence)
        for rd in self.recipients:
            if rd.action is Action.BLOCK:
                line = f"{rd.recipient.address}: {rd.reason}"
                if line not in out:
                    out.append(line)
        for not_applied in self.overrides_not_applied:
            if not_applied.sentence not in out:
                out.append(not_applied.sentence)
        return out
