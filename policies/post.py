"""Printed items: the postal method the policy requires (App. 2, RRP 4.6, 4.7, 4.9, 4.10).

`decide_post(item, options)` answers "how may this printed item go?" with a `PostDecision`:
`send` with the permitted methods best first and their instructions, `use-email` where a
verified address makes email the required route, or `refuse` with the reason. The options (what
each rule allows, its reason and citation) are data: `policies/data/post.toml`, read into
`PostOptions`. The questions are asked in this order:

1. Is it an original agency check result? Refuse: never printed or shared in original form
   (an electronic one may move between Cafcass teams with the case, DESIGN ruling 13).
2. Does it hold information provided by a third party? Refuse: printing it is prohibited (an
   electronic copy moves between offices with the case).
3. Is it moving between offices (a case file)? Electronic: transfer between teams on the case
   record, and no postal method. A hard copy: Special Delivery Guaranteed or hand delivery (DX
   where both offices have it), never a transfer between teams; the dispatch is then tracked.
   Not said which: both, transfer between teams first (the row's own order).
4. Is it correspondence with a solicitor or local authority? Email via Egress: its Appendix 2 row
   names no postal method.
5. Is there a verified email address? Use email via Egress.
6. Otherwise the family-correspondence and SAR/complaints rows decide, on the address status and
   the sensitivity of the contents. A refusal says what the sender can do instead.

Where the adult or child wishes to collect a family-correspondence item (the row's last bullet),
collection in person with an identity check is offered first, and replaces a refusal that the
address alone caused. A `send` of paper is then adjusted: DX only between offices that send and
receive it (the office directory, within the policy's DX lists), heavier methods for heavier
items, 1st class for short timescales, a double envelope for particularly sensitive contents,
and the one method the sender asked about, if any. Offices are named as the sender knows them
(an office or one of its teams); `OfficeDirectory` says which office a name is. Pure: no I/O,
no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar

from policies.errors import PolicyError


class PostAction(StrEnum):
    """The answer for a printed item."""

    SEND = "send"
    USE_EMAIL = "use-email"
    REFUSE = "refuse"


class AddressStatus(StrEnum):
    """What is known of the recipient's physical address."""

    NONE = "none"
    UNCONFIRMED = "unconfirmed"
    CONFIRMED_EIT = "confirmed-eit"  # confirmed with the parties by the EIT FCA
    CONFIRMED_WAFH = "confirmed-wafh"  # confirmed by the allocated WAFH FCA, on the contact log


class Sensitivity(StrEnum):
    NONE = "none"
    CONCERN = "concern"  # concern over the sensitivity of the contents
    PARTICULAR = "particular"  # particularly sensitive information


class ItemGroup(StrEnum):
    """Which rows of Appendix 2 an item type follows."""

    LETTER = "letter"  # welcome pack, allocation and appointment letters
    SAFEGUARDING = "safeguarding"
    DETAILED = "detailed"  # court reports, detailed correspondence
    FILE_REQUEST = "file-request"  # SAR and complaints files
    CASE_FILE = "case-file"
    AGENCY_CHECK = "agency-check"
    THIRD_PARTY = "third-party"
    SOLICITOR = "solicitor"  # solicitors' and local authorities' correspondence


FAMILY_GROUPS = frozenset({ItemGroup.LETTER, ItemGroup.SAFEGUARDING, ItemGroup.DETAILED})
# Paper that may move between offices (RRP 4.9); the refused groups are listed so that their
# refusal, not an input error, is the answer.
TRANSFER_GROUPS = frozenset(
    {ItemGroup.CASE_FILE, ItemGroup.FILE_REQUEST, ItemGroup.AGENCY_CHECK, ItemGroup.THIRD_PARTY}
)
DX_METHOD = "dx"
COLLECT_METHOD = "collect-in-person"
MAX_OFFICE_NAME = 80
# Refusals caused by the address alone: collection in person replaces them when the adult or
# child wishes to collect (App. 2, Family correspondence (2), last bullet).
COLLECTION_REPLACES = frozenset({
    "no-address", "safeguarding-unconfirmed-address", "report-unconfirmed-address",
    "report-needs-wafh-confirmation",
})

# Rule ids the engine asks for by name; `PostOptions.from_table` checks each is present.
PRIMARY_RULES = (
    "agency-check-original",
    "third-party-print",
    "verified-email",
    "collect-only",
    "letter-standard-post",
    "safeguarding-standard-post",
    "safeguarding-unconfirmed-address",
    "report-signed-for",
    "report-needs-wafh-confirmation",
    "report-unconfirmed-address",
    "file-signed-for",
    "file-no-address",
    "sensitive-secure-post",
    "particularly-sensitive",
    "case-file-transfer",
    "over-weight",
    "method-not-permitted",
    "no-address",
    "case-file-hard-copy",
    "electronic-transfer",
    "agency-check-internal",
    "solicitor-email",
    "dx-not-outgoing",
    "dx-not-incoming",
)
MODIFIERS = (
    "short-timescales", "weight-limit", "dx-outgoing", "collect-in-person", "double-envelope",
    "collect-if-wished",
)
_E = TypeVar("_E", bound=StrEnum)


class PostInputError(ValueError):
    """The facts given about an item are invalid or contradict each other; `.field` names which."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


# -- the options, as data ------------------------------------------------------------------


@dataclass(frozen=True)
class PostMethod:
    id: str
    label: str
    instruction: str
    max_kg: float | None = None  # heaviest item it takes (inclusive); None: no limit
    tracked: bool = False  # a dispatch by this method needs a tracking reference

    def takes(self, weight_kg: float) -> bool:
        return self.max_kg is None or weight_kg <= self.max_kg


@dataclass(frozen=True)
class ItemType:
    id: str
    label: str
    group: ItemGroup


@dataclass(frozen=True)
class PostRule:
    """A primary rule (with a decision) or a modifier (decision None)."""

    id: str
    citation: str
    reason: str
    decision: PostAction | None = None
    methods: tuple[str, ...] = ()
    instructions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PostOptions:
    """The `[post]` table of the policy, validated."""

    source: str
    methods: Mapping[str, PostMethod]
    items: Mapping[str, ItemType]
    rules: Mapping[str, PostRule]
    modifiers: Mapping[str, PostRule]
    heavier_methods: tuple[str, ...]
    urgent_replaces: Mapping[str, str]
    dx_outgoing_offices: tuple[str, ...]
    dx_incoming_offices: tuple[str, ...]

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str) -> PostOptions:
        """Build from the parsed `[post]` table; a `PolicyError` names the source and key."""
        return _OptionsReader(source).read(table)

    def dx_sends_from(self, office: str) -> bool:
        wanted = office.strip().casefold()
        return any(o.casefold() == wanted for o in self.dx_outgoing_offices)

    def dx_receives_at(self, office: str) -> bool:
        wanted = office.strip().casefold()
        return any(o.casefold() == wanted for o in self.dx_incoming_offices)


class _OptionsReader:
    """Reads the `[post]` table, naming `source` and the dotted key in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> PolicyError:
        return PolicyError(f"{self.source}: 'post.{key}' {problem}")

    def table(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = raw.get(key.rpartition(".")[2])
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        return value

    def text(self, raw: Mapping[str, Any], key: str, *, required: bool = True) -> str:
        name = key.rpartition(".")[2]
        value = raw.get(name, None if required else "")
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(key, "must be a non-empty string" if required else "must be a string")
        return value

    def strings(self, raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = raw.get(key.rpartition(".")[2], [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        return tuple(value)

    def known(self, raw: Mapping[str, Any], key: str, allowed: Iterable[str]) -> None:
        extra = sorted(set(raw) - set(allowed))
        if extra:
            raise self.fail(f"{key}.{extra[0]}" if key else extra[0], "is not a known key")

    def read(self, raw: Mapping[str, Any]) -> PostOptions:
        self.known(
            raw,
            "",
            (
                "heavier_methods", "urgent_replaces", "dx_outgoing_offices",
                "dx_incoming_offices", "methods", "items", "rules", "modifiers",
            ),
        )
        methods = self.read_methods(self.table(raw, "methods"))
        items = self.read_items(self.table(raw, "items"))
        rules = {
            rid: self.read_rule(body, f"rules.{rid}", methods, primary=True)
            for rid, body in self.entries(self.table(raw, "rules"), "rules")
        }
        modifiers = {
            mid: self.read_rule(body, f"modifiers.{mid}", methods, primary=False)
            for mid, body in self.entries(self.table(raw, "modifiers"), "modifiers")
        }
        for rid in PRIMARY_RULES:
            if rid not in rules:
                raise self.fail(f"rules.{rid}", "is missing")
        for mid in MODIFIERS:
            if mid not in modifiers:
                raise self.fail(f"modifiers.{mid}", "is missing")
        heavier = self.strings(raw, "heavier_methods")
        for i, mid in enumerate(heavier):
            if mid not in methods:
                raise self.fail(f"heavier_methods[{i}]", f"names an unknown method '{mid}'")
        replaces = raw.get("urgent_replaces", {})
        if not isinstance(replaces, Mapping):
            raise self.fail("urgent_replaces", "must be a table")
        for old, new in replaces.items():
            if old not in methods or not isinstance(new, str) or new not in methods:
                raise self.fail(f"urgent_replaces.{old}", "must map a known method to another")
        return PostOptions(
            source=self.source,
            methods=MappingProxyType(methods),
            items=MappingProxyType(items),
            rules=MappingProxyType(rules),
            modifiers=MappingProxyType(modifiers),
            heavier_methods=heavier,
            urgent_replaces=MappingProxyType(dict(replaces)),
            dx_outgoing_offices=self.strings(raw, "dx_outgoing_offices"),
            dx_incoming_offices=self.strings(raw, "dx_incoming_offices"),
        )

    def entries(self, raw: Mapping[str, Any], key: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
        for name, body in raw.items():
            if not isinstance(body, Mapping):
                raise self.fail(f"{key}.{name}", "must be a table")
            yield name, body

    def read_methods(self, raw: Mapping[str, Any]) -> dict[str, PostMethod]:
        out: dict[str, PostMethod] = {}
        for mid, body in self.entries(raw, "methods"):
            key = f"methods.{mid}"
            self.known(body, key, ("label", "instruction", "max_kg", "tracked"))
            max_kg = body.get("max_kg")
            if max_kg is not None and (
                isinstance(max_kg, bool)
                or not isinstance(max_kg, int | float)
                or not math.isfinite(max_kg)
                or max_kg <= 0
            ):
                raise self.fail(f"{key}.max_kg", "must be a positive number of kilograms")
            tracked = body.get("tracked", False)
            if not isinstance(tracked, bool):
                raise self.fail(f"{key}.tracked", "must be true or false")
            out[mid] = PostMethod(
                id=mid,
                label=self.text(body, f"{key}.label"),
                instruction=self.text(body, f"{key}.instruction", required=False),
                max_kg=None if max_kg is None else float(max_kg),
                tracked=tracked,
            )
        if not out:
            raise self.fail("methods", "must list at least one method")
        return out

    def read_items(self, raw: Mapping[str, Any]) -> dict[str, ItemType]:
        out: dict[str, ItemType] = {}
        for iid, body in self.entries(raw, "items"):
            key = f"items.{iid}"
            self.known(body, key, ("label", "group"))
            group = self.text(body, f"{key}.group")
            if group not in ItemGroup.__members__.values():
                allowed = ", ".join(g.value for g in ItemGroup)
                raise self.fail(f"{key}.group", f"must be one of {allowed}")
            label = self.text(body, f"{key}.label")
            out[iid] = ItemType(id=iid, label=label, group=ItemGroup(group))
        return out

    def read_rule(
        self, body: Mapping[str, Any], key: str, methods: Mapping[str, PostMethod], *, primary: bool
    ) -> PostRule:
        allowed = ["citation", "reason", "methods", "instructions"]
        if primary:
            allowed.append("decision")
        self.known(body, key, allowed)
        decision: PostAction | None = None
        if primary:
            value = self.text(body, f"{key}.decision")
            if value not in PostAction.__members__.values():
                raise self.fail(f"{key}.decision", "must be send, use-email or refuse")
            decision = PostAction(value)
        rule_methods = self.strings(body, f"{key}.methods")
        for i, mid in enumerate(rule_methods):
            if mid not in methods:
                raise self.fail(f"{key}.methods[{i}]", f"names an unknown method '{mid}'")
        if decision in (PostAction.SEND, PostAction.USE_EMAIL) and not rule_methods:
            raise self.fail(f"{key}.methods", "must list at least one method for this decision")
        return PostRule(
            id=key.rpartition(".")[2],
            citation=self.text(body, f"{key}.citation"),
            reason=self.text(body, f"{key}.reason", required=primary),
            decision=decision,
            methods=rule_methods,
            instructions=self.strings(body, f"{key}.instructions"),
        )


# -- the question and the answer -----------------------------------------------------------


@dataclass(frozen=True)
class PostItem:
    """A printed item and the facts the sender knows about it."""

    item: str  # an item type id, e.g. "safeguarding-letter"
    verified_email: bool = False
    address: AddressStatus = AddressStatus.NONE
    sensitivity: Sensitivity = Sensitivity.NONE
    urgent: bool = False  # short timescales apply
    weight_kg: float = 0.0
    third_party: bool = False  # holds personal information provided by a third party
    office_transfer: bool = False  # moving between Cafcass offices
    from_office: str = ""  # the sending office or team (DX goes out only from Bloomsbury)
    method: str = ""  # optional: the one method the sender asks about
    hard_copy: bool = False  # the item is paper
    electronic: bool = False  # the item is wholly electronic: no paper moves
    wishes_to_collect: bool = False  # the adult or child asks to collect it in person
    to_office: str = ""  # the receiving office or team, for an item moving between offices

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PostItem:
        """Build from a JSON object (the staff API), raising `PostInputError` naming the field."""
        known = {f for f in cls.__dataclass_fields__}
        for key in data:
            if key not in known:
                raise PostInputError(str(key)[:40], f"'{str(key)[:40]}' is not a known field.")
        return cls(
            item=_string_field(data, "item", required=True),
            verified_email=_bool_field(data, "verified_email"),
            address=_enum_field(data, "address", AddressStatus, AddressStatus.NONE),
            sensitivity=_enum_field(data, "sensitivity", Sensitivity, Sensitivity.NONE),
            urgent=_bool_field(data, "urgent"),
            weight_kg=_weight_field(data),
            third_party=_bool_field(data, "third_party"),
            office_transfer=_bool_field(data, "office_transfer"),
            from_office=_string_field(data, "from_office"),
            method=_string_field(data, "method"),
            hard_copy=_bool_field(data, "hard_copy"),
            electronic=_bool_field(data, "electronic"),
            wishes_to_collect=_bool_field(data, "wishes_to_collect"),
            to_office=_string_field(data, "to_office"),
        )

    def summary(self) -> dict[str, Any]:
        """The facts as audit metadata (no content: ids, flags, office names and a weight)."""
        return {
            "item": self.item,
            "verified_email": self.verified_email,
            "address": self.address.value,
            "sensitivity": self.sensitivity.value,
            "urgent": self.urgent,
            "weight_kg": self.weight_kg,
            "third_party": self.third_party,
            "office_transfer": self.office_transfer,
            "from_office": self.from_office,
            "method": self.method,
            "hard_copy": self.hard_copy,
            "electronic": self.electronic,
            "wishes_to_collect": self.wishes_to_collect,
            "to_office": self.to_office,
        }


@dataclass(frozen=True)
class Office:
    """A Cafcass office as the directory knows it: its name, its teams (other names staff use
    for it) and whether it sends and receives DX."""

    name: str
    teams: tuple[str, ...] = ()
    dx_outgoing: bool = False
    dx_incoming: bool = False
    registered: bool = False  # from the office directory, not only from the policy's DX lists

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.teams)


@dataclass(frozen=True)
class OfficeDirectory:
    """The registered offices (gateway.printed.office_registry keeps them), immutable.

    `resolve` turns a name staff give (an office or a team, any case) into the office, with its
    DX capability bounded by the policy: an office sends DX only when the policy's
    `dx_outgoing_offices` names it AND the directory says it does; likewise for receiving. A
    name the directory does not know is an office of that name, with the DX the policy gives it.
    """

    offices: tuple[Office, ...] = ()

    def find(self, name: str) -> Office | None:
        wanted = " ".join(name.split()).casefold()
        if not wanted:
            return None
        for office in self.offices:
            if any(" ".join(n.split()).casefold() == wanted for n in office.names()):
                return office
        return None

    def resolve(self, name: str, options: PostOptions) -> Office:
        found = self.find(name)
        if found is None:
            return Office(name=name.strip(), dx_outgoing=options.dx_sends_from(name),
                          dx_incoming=options.dx_receives_at(name))
        return Office(
            name=found.name,
            teams=found.teams,
            dx_outgoing=found.dx_outgoing and options.dx_sends_from(found.name),
            dx_incoming=found.dx_incoming and options.dx_receives_at(found.name),
            registered=True,
        )

    def dx_senders(self, options: PostOptions) -> tuple[str, ...]:
        """The offices that may send DX now (the policy's list, less those the directory stops)."""
        return tuple(o for o in options.dx_outgoing_offices
                     if self.resolve(o, options).dx_outgoing)

    def dx_receivers(self, options: PostOptions) -> tuple[str, ...]:
        return tuple(o for o in options.dx_incoming_offices
                     if self.resolve(o, options).dx_incoming)


NO_OFFICES = OfficeDirectory()


def _string_field(data: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise PostInputError(name, f"'{name}' must be a {'non-empty ' if required else ''}string.")
    return value


def _bool_field(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise PostInputError(name, f"'{name}' must be true or false.")
    return value


def _enum_field(data: Mapping[str, Any], name: str, kind: type[_E], default: _E) -> _E:
    value = data.get(name, default.value)
    allowed = [m.value for m in kind]
    if not isinstance(value, str) or value not in allowed:
        raise PostInputError(name, f"'{name}' must be one of: {', '.join(allowed)}.")
    return kind(value)


def _weight_field(data: Mapping[str, Any]) -> float:
    value = data.get("weight_kg", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PostInputError("weight_kg", "'weight_kg' must be a number of kilograms.")
    return float(value)


@dataclass(frozen=True)
class PostDecision:
    """The answer: what to do, how (best first), and why, with the paragraphs that say so."""

    decision: PostAction
    methods: tuple[str, ...]
    instructions: tuple[str, ...]
    rule: str
    citation: str
    reason: str
    applied: tuple[str, ...] = field(default=())  # every rule and modifier that shaped it

    def to_json(self) -> dict[str, Any]:
        """The exact JSON shape of the issue's contract."""
        return {
            "decision": self.decision.value,
            "methods": list(self.methods),
            "instructions": list(self.instructions),
            "rule": self.rule,
            "citation": self.citation,
            "reason": self.reason,
        }


# -- deciding ------------------------------------------------------------------------------


def validate(item: PostItem, options: PostOptions) -> ItemType:
    """Check the facts against each other and the options; return the item's type."""
    kind = options.items.get(item.item)
    if kind is None:
        raise PostInputError(
            "item",
            f"'{item.item[:40]}' is not a known item; use one of: {', '.join(options.items)}.",
        )
    if not math.isfinite(item.weight_kg) or item.weight_kg < 0:
        raise PostInputError("weight_kg", "The weight must be zero or more kilograms.")
    if item.office_transfer and kind.group not in TRANSFER_GROUPS:
        raise PostInputError(
            "office_transfer",
            f"{_capital(kind.label)} does not move between offices; "
            "drop the office transfer or choose case-file.",
        )
    for name, office in (("from_office", item.from_office), ("to_office", item.to_office)):
        if len(office) > MAX_OFFICE_NAME or any(not ch.isprintable() for ch in office):
            raise PostInputError(name, "The office name must be a short line of text.")
    if item.to_office.strip() and not _moving(item, kind):
        raise PostInputError(
            "to_office", "A receiving office is only for an item moving between offices.")
    if item.hard_copy and item.electronic:
        raise PostInputError("electronic", "An item is either a hard copy or electronic.")
    if item.electronic and not (_moving(item, kind) or kind.group is ItemGroup.SOLICITOR):
        raise PostInputError(
            "electronic",
            f"An electronic copy of {kind.label} goes by email, which casegate decides when it "
            "is sent (casegate check); the post options answer for paper.",
        )
    if item.wishes_to_collect and kind.group not in FAMILY_GROUPS:
        raise PostInputError(
            "wishes_to_collect",
            f"Collection in person is offered for family correspondence (App. 2), not for "
            f"{kind.label}.",
        )
    if item.method and item.method not in options.methods:
        raise PostInputError(
            "method", f"'{item.method[:40]}' is not a known method; use one of: "
            f"{', '.join(options.methods)}."
        )
    if item.method == DX_METHOD and not item.from_office.strip():
        raise PostInputError(
            "from_office",
            f"Say which office sends it: DX goes out only from "
            f"{' or '.join(options.dx_outgoing_offices) or 'no office'}.",
        )
    return kind


def decide_post(
    item: PostItem, options: PostOptions, offices: OfficeDirectory = NO_OFFICES
) -> PostDecision:
    """The postal decision for one printed item; raises `PostInputError` for bad input.

    `offices` says which office a name staff give is, and which offices send and receive DX.
    """
    kind = validate(item, options)
    rule = options.rules[_primary_rule(item, kind)]
    if item.wishes_to_collect and rule.id in COLLECTION_REPLACES:
        draft = _Draft(options, options.rules["collect-only"], set_aside=rule)
    elif rule.decision is PostAction.REFUSE:
        return _refusal(rule)
    else:
        draft = _Draft(options, rule)
    if draft.rule.decision is PostAction.SEND and not item.electronic:
        _adjust(draft, item, kind, offices)
    if item.method:
        return _only_requested(draft, item, kind)
    if not draft.methods:
        return _refusal(options.rules["over-weight"], draft.ids)
    return draft.finish()


def _moving(item: PostItem, kind: ItemType) -> bool:
    """Moving between Cafcass offices (a case file always is)."""
    return kind.group is ItemGroup.CASE_FILE or item.office_transfer


def _primary_rule(item: PostItem, kind: ItemType) -> str:
    """The id of the rule that answers, asking the module docstring's questions in order."""
    group = kind.group
    moving = _moving(item, kind)
    if group is ItemGroup.AGENCY_CHECK:
        return "agency-check-internal" if moving and item.electronic else "agency-check-original"
    if group is ItemGroup.THIRD_PARTY or item.third_party:
        return "electronic-transfer" if moving and item.electronic else "third-party-print"
    if moving:
        if item.electronic:
            return "electronic-transfer"
        return "case-file-hard-copy" if item.hard_copy else "case-file-transfer"
    if group is ItemGroup.SOLICITOR:
        return "solicitor-email"
    if item.verified_email:
        return "verified-email"
    if group is ItemGroup.FILE_REQUEST:
        if item.address is AddressStatus.NONE:
            return "file-no-address"
        return _sensitive_rule(item) or "file-signed-for"
    if item.address is AddressStatus.NONE:
        return "no-address"
    if group is ItemGroup.SAFEGUARDING and item.address is AddressStatus.UNCONFIRMED:
        return "safeguarding-unconfirmed-address"
    if group is ItemGroup.DETAILED:
        if item.address is AddressStatus.UNCONFIRMED:
            return "report-unconfirmed-address"
        if item.address is AddressStatus.CONFIRMED_EIT:
            return "report-needs-wafh-confirmation"
        return _sensitive_rule(item) or "report-signed-for"
    standard = "letter-standard-post" if group is ItemGroup.LETTER else "safeguarding-standard-post"
    return _sensitive_rule(item) or standard


def _sensitive_rule(item: PostItem) -> str | None:
    """Once a concern is raised, standard post is no longer allowed (DESIGN ruling 14)."""
    if item.sensitivity is Sensitivity.PARTICULAR:
        return "particularly-sensitive"
    if item.sensitivity is Sensitivity.CONCERN:
        return "sensitive-secure-post"
    return None


class _Draft:
    """A `send` being adjusted by the modifiers; records which applied.

    `set_aside` is a refusal that collection in person replaced: it is cited and listed too.
    """

    def __init__(self, options: PostOptions, rule: PostRule,
                 set_aside: PostRule | None = None) -> None:
        self.options = options
        self.rule = rule
        self.set_aside = set_aside
        self.methods: list[str] = list(rule.methods)
        self.applied: list[str] = [rule.id]
        self.dx_refusal: PostRule | None = None  # why DX was dropped, when it was
        self.dx_office = ""  # the office that cannot send or receive it
        self.dx_senders = ""  # the offices that send DX, for the refusal's sentence
        self.dx_receivers = ""  # the offices that receive DX

    @property
    def modifiers(self) -> list[PostRule]:
        return [self.options.modifiers[m] for m in self.applied[1:]]

    @property
    def cited(self) -> list[PostRule]:
        """Every rule behind the answer: the primary, the refusal set aside, the modifiers."""
        aside = [self.set_aside] if self.set_aside is not None else []
        return [self.rule, *aside, *self.modifiers]

    @property
    def ids(self) -> tuple[str, ...]:
        aside = (self.set_aside.id,) if self.set_aside is not None else ()
        return (self.rule.id, *aside, *self.applied[1:])

    def apply(self, modifier: str) -> None:
        if modifier not in self.applied:
            self.applied.append(modifier)

    def replace(self, mapping: Mapping[str, str | None]) -> bool:
        """Replace (or drop, for None) methods; keep order, drop repeats; True if any changed."""
        out: list[str] = []
        for mid in self.methods:
            new = mapping.get(mid, mid)
            if new is not None and new not in out:
                out.append(new)
        changed = out != self.methods
        self.methods = out
        return changed

    def finish(self) -> PostDecision:
        modifiers = self.modifiers
        instructions = [self.options.methods[m].instruction for m in self.methods]
        instructions += list(self.rule.instructions)
        for modifier in modifiers:
            instructions += modifier.instructions
        reasons = [self.rule.reason] + [m.reason for m in modifiers]
        assert self.rule.decision is not None  # primary rules always carry one
        return PostDecision(
            decision=self.rule.decision,
            methods=tuple(self.methods),
            instructions=_unique(i for i in instructions if i),
            rule=self.rule.id,
            citation=_join_citations(self.cited),
            reason=" ".join(r for r in reasons if r),
            applied=self.ids,
        )


def _adjust(draft: _Draft, item: PostItem, kind: ItemType, offices: OfficeDirectory) -> None:
    options = draft.options
    if item.wishes_to_collect and kind.group in FAMILY_GROUPS:
        # The adult or child asked to collect it: what they asked for comes first.
        draft.methods = [COLLECT_METHOD, *(m for m in draft.methods if m != COLLECT_METHOD)]
        if draft.rule.id != "collect-only":
            draft.apply("collect-in-person")
    if DX_METHOD in draft.methods:
        sender = offices.resolve(item.from_office, options)
        receiver = offices.resolve(item.to_office, options) if item.to_office.strip() else None
        if not sender.dx_outgoing:
            draft.replace({DX_METHOD: None})
            draft.dx_refusal, draft.dx_office = options.rules["dx-not-outgoing"], sender.name
        elif receiver is not None and not receiver.dx_incoming:
            draft.replace({DX_METHOD: None})
            draft.dx_refusal, draft.dx_office = options.rules["dx-not-incoming"], receiver.name
        else:
            draft.apply("dx-outgoing")
        draft.dx_senders = ", ".join(offices.dx_senders(options)) or "no office"
        draft.dx_receivers = ", ".join(offices.dx_receivers(options)) or "no office"
    if draft.replace(_weight_substitutes(item.weight_kg, draft.methods, options)):
        draft.apply("weight-limit")
    if item.urgent and draft.replace(options.urgent_replaces):
        draft.apply("short-timescales")
    if item.sensitivity is Sensitivity.PARTICULAR:
        draft.apply("double-envelope")


def _weight_substitutes(
    weight_kg: float, methods: Iterable[str], options: PostOptions
) -> dict[str, str | None]:
    """For each method too light for the item, the first heavier method that takes it."""
    out: dict[str, str | None] = {}
    for mid in methods:
        if options.methods[mid].takes(weight_kg):
            continue
        out[mid] = next(
            (h for h in options.heavier_methods if options.methods[h].takes(weight_kg)), None
        )
    return out


def _only_requested(draft: _Draft, item: PostItem, kind: ItemType) -> PostDecision:
    """The sender asked about one method: confirm it, or refuse and say what is permitted."""
    if item.method in draft.methods:
        draft.methods = [item.method]
        return draft.finish()
    options = draft.options
    template = options.rules["method-not-permitted"]
    if item.method == DX_METHOD and draft.dx_refusal is not None:
        template = draft.dx_refusal
    labels = [options.methods[m].label for m in draft.methods] or ["none"]
    reason = (
        template.reason.replace("{method}", _capital(options.methods[item.method].label))
        .replace("{item}", kind.label)
        .replace("{permitted}", "; ".join(labels))
        .replace("{office}", draft.dx_office or "This office")
        .replace("{senders}", draft.dx_senders)
        .replace("{receivers}", draft.dx_receivers)
    )
    rules = [template, *draft.cited]
    applied = [template.id, *draft.ids]
    if item.method == COLLECT_METHOD and kind.group in FAMILY_GROUPS:
        hint = options.modifiers["collect-if-wished"]
        reason = f"{reason} {hint.reason}"
        rules.append(hint)
        applied.append(hint.id)
    return PostDecision(
        decision=PostAction.REFUSE,
        methods=(),
        instructions=(),
        rule=template.id,
        citation=_join_citations(rules),
        reason=reason,
        applied=_unique(applied),
    )


def _refusal(rule: PostRule, applied: Iterable[str] = ()) -> PostDecision:
    return PostDecision(
        decision=PostAction.REFUSE,
        methods=(),
        instructions=rule.instructions,
        rule=rule.id,
        citation=rule.citation,
        reason=rule.reason,
        applied=_unique([rule.id, *applied]),
    )


def _join_citations(rules: Iterable[PostRule]) -> str:
    parts = (part.strip() for r in rules for part in r.citation.split(";"))
    return "; ".join(_unique(p for p in parts if p))


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
