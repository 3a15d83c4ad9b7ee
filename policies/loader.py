"""Reading the policy: TOML documents in, one validated, frozen `Policy` out.

`parse_policy` takes (source name, TOML text) pairs: first the embedded files (`EMBEDDED_FILES`,
in that order), then the organisation's own files. Later documents override or extend earlier
ones:

* tables merge key by key;
* any other value (string, number, boolean, list) is replaced by the later value;
* `key = { extend = [...] }` appends to the list already there (duplicates dropped).

The merged result is validated as a whole. Every problem is a `PolicyError` naming the file
that set the offending key, the dotted key and what is wrong. Nothing here reads files: the
caller does (gateway.app.read_policy).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from policies.content import ContentRules
from policies.errors import PolicyError
from policies.model import Rule
from policies.post import PostOptions
from policies.restricted import Sources

# The embedded policy files, read in this order before any organisation file.
EMBEDDED_FILES: tuple[str, ...] = ("policy.toml", "content.toml", "post.toml")

# Rules the engine names in code: a policy without any of them cannot be used.
REQUIRED_RULES: frozenset[str] = frozenset({
    "internal", "secure-domain", "not-protected", "encrypt-non-secure",
    "unverified-recipient", "personal-address", "fax", "invalid-address", "lookalike-domain",
    "other-case-information", "editable-document", "auto-forward", "multiple-external",
    "malformed-message", "unreadable-container",
    "legal-advice",  # issue 13: DESIGN ruling 20
    "confidential-information", "shielded-case",  # the case registry (issue 16)
})

# DESIGN ruling 6 (and 4): no override, ever, for these, whatever an organisation file says.
NEVER_OVERRIDABLE: frozenset[str] = frozenset({
    "personal-address", "fax", "unverified-recipient", "auto-forward",
    "confidential-information", "shielded-case",  # who may see them is recorded (ruling 18-19)
})

# The information types the content classifier names (policies.content); "general" is the
# fallback for mail with nothing recognised in it.
REQUIRED_INFORMATION_TYPES: frozenset[str] = frozenset({
    "agency-check-request", "sar-file", "complaints-file", "case-file", "welcome-pack",
    "allocation-letter", "appointment-letter", "safeguarding-letter", "court-report",
    "family-correspondence", "court-correspondence", "solicitor-correspondence",
    "local-authority-correspondence", "hmcts-form", "agency-check-result", "general",
    "legal-advice",  # issue 13: recognised by policies/restricted.py
})

GRADES: tuple[str, ...] = ("low", "medium", "high")

_RULE_ID = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_SMTP_CODE = re.compile(r"5\.7\.[0-9]{1,3}")
_DOMAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_FILE_TYPE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,31}")


@dataclass(frozen=True)
class InformationType:
    """One row (or part of a row) of RRP Appendix 2: a kind of information and how it may move."""

    id: str
    name: str
    row: str  # the Appendix 2 row it comes from, as the policy words it
    citation: str
    methods: tuple[str, ...]  # transfer methods the row allows, best first
    conditions: tuple[str, ...]  # what the row says must hold
    protected: bool  # "protected information" (App. 2 notes; IA 3.3)
    family_correspondence: bool = False  # one verified address per copy (App. 2)
    never_leaves_agency: bool = False  # may move internally, never outside (DESIGN ruling 13)
    refusal_rule: str = ""  # the rule that refuses it leaving, when never_leaves_agency


@dataclass(frozen=True, eq=False)
class Policy:
    """The whole transfer policy, validated. Built only by `parse_policy`.

    Compared and hashed by identity: one Policy is built at start-up and shared.
    """

    # (source, TOML text) of each document, as given to `parse_policy`: what builds the same
    # Policy again (a classifier process does, gateway/stages/classifiers.py)
    documents: tuple[tuple[str, str], ...] = field(repr=False)
    rules: Mapping[str, Rule]
    information_types: Mapping[str, InformationType]
    internal_domains: tuple[str, ...]
    secure_suffixes: tuple[str, ...]
    freemail_domains: tuple[str, ...]
    fax_domains: tuple[str, ...]
    fax_local_prefixes: tuple[str, ...]  # upper-case, e.g. "IMCEAFAX-"
    never_lookalike: tuple[str, ...]  # real domains near a known one, never reported as lookalikes
    editable_types: tuple[str, ...]
    content: ContentRules  # how message content is read (policies/content.py, [content])
    post: PostOptions | None = None  # printed items (policies/post.py, [post])
    min_justification_chars: int = 15
    # breach grades for events no rule refuses (auth failures, "not me", portal lockouts)
    grades: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # issue 13: the lists policies/restricted.py weighs signals against (check agencies, the
    # legal team, the instructed lawyers), and the instructed lawyers legal advice may go to
    restricted: Sources = field(default_factory=Sources)
    @property
    def sources(self) -> tuple[str, ...]:
        """Where each document came from, in the order applied."""
        return tuple(source for source, _ in self.documents)

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id; a KeyError names it when the policy has no such rule."""
        try:
            return self.rules[rule_id]
        except KeyError:
            raise KeyError(f"the policy has no rule '{rule_id}'") from None

    def information_type(self, type_id: str) -> InformationType:
        """The information type with this id; unknown ids read as protected "general" mail."""
        found = self.information_types.get(type_id)
        if found is not None:
            return found
        general = self.information_types["general"]
        return InformationType(
            id=type_id, name=type_id, row=general.row, citation=general.citation,
            methods=(), conditions=(), protected=True,
        )


# ----------------------------------------------------------------------------------------------
# Merging documents
# ----------------------------------------------------------------------------------------------


class _Merged:
    """The merged TOML tree, and which source last set each dotted key (for error messages)."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.origin: dict[str, str] = {}

    def source_of(self, dotted: str) -> str:
        """The source that set `dotted`, or failing that the nearest enclosing table's."""
        key = dotted
        while key:
            if key in self.origin:
                return self.origin[key]
            key = key.rpartition(".")[0]
        return "<policy>"

    def apply(self, source: str, document: Mapping[str, Any]) -> None:
        self._merge(self.tree, document, source, "")

    def _merge(
        self, into: dict[str, Any], new: Mapping[str, Any], source: str, prefix: str
    ) -> None:
        for key, value in new.items():
            dotted = f"{prefix}{key}"
            if _is_extend(value):
                extra = value["extend"]
                if not isinstance(extra, list):
                    raise PolicyError(f"{source}: '{dotted}.extend' must be a list")
                current = into.get(key, [])
                if not isinstance(current, list):
                    raise PolicyError(f"{source}: '{dotted}' is not a list; it cannot be extended")
                into[key] = current + [v for v in extra if v not in current]
            elif isinstance(value, dict) and isinstance(into.get(key), dict):
                self._merge(into[key], value, source, f"{dotted}.")
            else:
                into[key] = _plain(value)
            self.origin[dotted] = source
            if isinstance(value, dict) and not _is_extend(value):
                self._record_origins(value, source, f"{dotted}.")

    def _record_origins(self, table: Mapping[str, Any], source: str, prefix: str) -> None:
        for key, value in table.items():
            self.origin[f"{prefix}{key}"] = source
            if isinstance(value, dict) and not _is_extend(value):
                self._record_origins(value, source, f"{prefix}{key}.")


def _is_extend(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"extend"}


def _plain(value: Any) -> Any:
    """A deep copy of a TOML value in which `{extend = [...]}` tables become plain lists."""
    if _is_extend(value):
        return list(value["extend"]) if isinstance(value["extend"], list) else value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Reading typed values out of the merged tree
# ----------------------------------------------------------------------------------------------


class _Table:
    """One table of the merged tree, read key by key; unread keys are reported as unknown."""

    def __init__(self, merged: _Merged, value: Any, dotted: str) -> None:
        self.merged = merged
        self.dotted = dotted
        if not isinstance(value, dict):
            self.fail(dotted, "must be a table")
        self.value: dict[str, Any] = value
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.dotted}.{name}" if self.dotted else name

    def fail(self, dotted: str, problem: str) -> None:
        raise PolicyError(f"{self.merged.source_of(dotted)}: '{dotted}' {problem}")

    def has(self, name: str) -> bool:
        return name in self.value

    def get(self, name: str, required: bool = True) -> Any:
        self.read.add(name)
        if name not in self.value:
            if required:
                self.fail(self.key(name), "is missing")
            return None
        return self.value[name]

    def string(self, name: str, default: str | None = None) -> str:
        value = self.get(name, required=default is None)
        if value is None:
            return default or ""
        if not isinstance(value, str) or not value.strip():
            self.fail(self.key(name), "must be a non-empty string")
        return value.strip()

    def boolean(self, name: str, default: bool) -> bool:
        value = self.get(name, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(self.key(name), "must be true or false")
        return value

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        value = self.get(name, required=False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(self.key(name), f"must be a whole number of at least {minimum}")
        return value

    def strings(self, name: str, default: Sequence[str] | None = None) -> tuple[str, ...]:
        value = self.get(name, required=default is None)
        if value is None:
            return tuple(default or ())
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.fail(self.key(name), "must be a list of non-empty strings")
        return tuple(v.strip() for v in value)

    def table(self, name: str) -> _Table:
        return _Table(self.merged, self.get(name), self.key(name))

    def done(self) -> None:
        """Fail on the first key this table has that nothing read."""
        for name in self.value:
            if name not in self.read:
                self.fail(self.key(name), "is not a key casegate knows")


# ----------------------------------------------------------------------------------------------
# The sections
# ----------------------------------------------------------------------------------------------


def parse_policy(documents: Sequence[tuple[str, str]]) -> Policy:
    """Merge (source, TOML text) documents in order and validate the result into a Policy."""
    if not documents:
        raise PolicyError("<policy>: no policy documents were given")
    merged = _Merged()
    content: ContentRules | None = None
    post: PostOptions | None = None
    for source, text in documents:
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: is not valid TOML ({exc})") from None
        merged.apply(source, document)
        # The sections other modules own are validated by their own code after each document
        # that touches them, so that an error names the document that introduced it.
        if "content" in document:
            content = ContentRules.from_table(_section(merged, "content"), source)
        if "post" in document:
            post = PostOptions.from_table(_section(merged, "post"), source)
    if content is None:
        raise PolicyError(f"{documents[-1][0]}: '[content]' is missing: no document defines it")

    root = _Table(merged, merged.tree, "")
    rules = _read_rules(root.table("rules"))
    information_types = _read_information_types(root.table("information_types"), rules)
    domains = root.table("domains")
    internal = _domains(domains, "internal")
    secure = _domains(domains, "secure_suffixes")
    freemail = _domains(domains, "freemail", default=())
    fax = _domains(domains, "fax", default=())
    fax_prefixes = tuple(p.upper() for p in domains.strings("fax_local_prefixes", default=()))
    never_lookalike = _domains(domains, "never_lookalike", default=())
    check_agencies = _domains(domains, "check_agencies", default=())
    instructed_lawyers = _domains(domains, "instructed_lawyers", default=())
    domains.done()
    documents_table = root.table("documents")
    editable = _file_types(documents_table, "editable_types")
    documents_table.done()
    min_justification = 15
    if root.has("overrides"):
        overrides = root.table("overrides")
        min_justification = overrides.integer("min_justification_chars", 15, minimum=1)
        overrides.done()
    grades = _read_grades(root.table("grades")) if root.has("grades") else {}
    legal_team = _legal_team(root.table("legal")) if root.has("legal") else ()
    root.read.update({"content", "post"})  # validated above by their own modules
    root.done()
    return Policy(
        documents=tuple((source, text) for source, text in documents),
        rules=MappingProxyType(rules),
        information_types=MappingProxyType(information_types),
        internal_domains=internal,
        secure_suffixes=secure,
        freemail_domains=freemail,
        fax_domains=fax,
        fax_local_prefixes=fax_prefixes,
        never_lookalike=never_lookalike,
        editable_types=editable,
        content=content,
        post=post,
        min_justification_chars=min_justification,
        grades=MappingProxyType(grades),
        restricted=Sources(internal=internal, check_agencies=check_agencies,
                           instructed_lawyers=instructed_lawyers, legal_team=legal_team),
    )


def _read_rules(table: _Table) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for rule_id in table.value:
        key = table.key(rule_id)
        if not _RULE_ID.fullmatch(rule_id):
            table.fail(key, "is not a kebab-case rule id (like 'personal-address')")
        entry = table.table(rule_id)
        grade = entry.string("grade", default="low")
        if grade not in GRADES:
            entry.fail(entry.key("grade"), f"must be one of {', '.join(GRADES)}")
        smtp_code = entry.string("smtp_code", default="5.7.1")
        if not _SMTP_CODE.fullmatch(smtp_code):
            entry.fail(entry.key("smtp_code"), "must be an enhanced status code 5.7.x")
        overridable = entry.boolean("overridable", False)
        if overridable and rule_id in NEVER_OVERRIDABLE:
            entry.fail(entry.key("overridable"), "cannot be true: DESIGN ruling 6 forbids "
                       "overriding this rule")
        rules[rule_id] = Rule(
            id=rule_id,
            citation=entry.string("citation"),
            sentence=entry.string("sentence"),
            overridable=overridable,
            grade=grade,
            smtp_code=smtp_code,
        )
        entry.done()
    table.read.update(table.value)
    for rule_id in sorted(REQUIRED_RULES - set(rules)):
        table.fail(table.key(rule_id), "is missing: the engine needs this rule")
    return rules


def _read_information_types(table: _Table, rules: Mapping[str, Rule]) -> dict[str, InformationType]:
    types: dict[str, InformationType] = {}
    for type_id in table.value:
        if not _RULE_ID.fullmatch(type_id):
            table.fail(table.key(type_id), "is not a kebab-case information type id")
        entry = table.table(type_id)
        never_leaves = entry.boolean("never_leaves_agency", False)
        refusal_rule = entry.string("refusal_rule", default="")
        if never_leaves and not refusal_rule:
            entry.fail(entry.key("refusal_rule"), "is missing: a type that never leaves the "
                       "agency must name the rule that refuses it")
        if refusal_rule and refusal_rule not in rules:
            entry.fail(entry.key("refusal_rule"), f"names rule '{refusal_rule}', which is not "
                       "defined under [rules]")
        types[type_id] = InformationType(
            id=type_id,
            name=entry.string("name"),
            row=entry.string("row"),
            citation=entry.string("citation"),
            methods=entry.strings("methods"),
            conditions=entry.strings("conditions"),
            protected=entry.boolean("protected", True),
            family_correspondence=entry.boolean("family_correspondence", False),
            never_leaves_agency=never_leaves,
            refusal_rule=refusal_rule,
        )
        entry.done()
    table.read.update(table.value)
    for type_id in sorted(REQUIRED_INFORMATION_TYPES - set(types)):
        table.fail(table.key(type_id), "is missing: the content classifier names this type")
    return types


def _domains(table: _Table, name: str, default: Sequence[str] | None = None) -> tuple[str, ...]:
    values = table.strings(name, default=default)
    out: list[str] = []
    for value in values:
        domain = value.lower()
        labels = domain.split(".")
        if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
            table.fail(table.key(name), f"has '{value}', which is not a plain ASCII domain name "
                       "(write internationalised names in their xn-- form)")
        if domain not in out:
            out.append(domain)
    return tuple(out)


def _file_types(table: _Table, name: str) -> tuple[str, ...]:
    values = tuple(v.lower().lstrip(".") for v in table.strings(name))
    for value in values:
        if not _FILE_TYPE.fullmatch(value):
            table.fail(table.key(name), f"has '{value}', which is not a file type like 'docx'")
    return values


def _read_grades(table: _Table) -> dict[str, str]:
    grades: dict[str, str] = {}
    for kind in table.value:
        value = table.get(kind)
        if value not in GRADES:
            table.fail(table.key(kind), f"must be one of {', '.join(GRADES)}")
        grades[kind] = value
    return grades


_ADDRESS = re.compile(r"[a-z0-9.!#$&'*+/=?^_`{|}~-]+@" + _DOMAIN_LABEL.pattern
                      + r"(?:\." + _DOMAIN_LABEL.pattern + r")+")


def _legal_team(table: _Table) -> tuple[str, ...]:
    """`[legal] team_addresses`: the legal team's mailboxes, plain lower-case addresses."""
    addresses = tuple(dict.fromkeys(a.lower() for a in table.strings("team_addresses", ())))
    for address in addresses:
        if not _ADDRESS.fullmatch(address):
            table.fail(table.key("team_addresses"), f"has '{address}', which is not a plain "
                       "email address")
    table.done()
    return addresses


def _section(merged: _Merged, name: str) -> dict[str, Any]:
    """The merged table of a section another module validates."""
    table = merged.tree.get(name)
    if not isinstance(table, dict):
        raise PolicyError(f"{merged.source_of(name)}: '{name}' must be a table")
    return table
