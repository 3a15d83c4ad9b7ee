"""Recipient classification: what kind of address an envelope recipient is.

One question per function, asked in a fixed order by `classify_recipient`:

1. invalid    not a plain, normalised address (SECURITY.md item 8: quoted, source-routed,
              address literals, mixed-script or unnormalised domains all fail closed), unless
              the domain is a homograph of a known one: then lookalike, with the real address
2. fax        an email-to-fax gateway or an Exchange `IMCEAFAX-` address (DESIGN ruling 12)
3. internal   one of the agency's own domains
4. personal   a staff member's known personal address (DESIGN ruling 4)
5. secure     the domain is, or is under, a secure suffix at a label boundary (DESIGN ruling 1)
6. personal   a freemail address whose local part is the sender's own name
7. lookalike  confusable with, or a near miss of, an internal, secure or verified domain
8. non_secure anything else

Pure: no DNS, no I/O. Syntax comes from email-validator (check_deliverability=False),
homoglyphs from confusable-homoglyphs.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from confusable_homoglyphs import confusables
from email_validator import EmailNotValidError, validate_email

from policies.loader import Policy
from policies.model import Category, Recipient, Snapshot

# Characters that never appear in a plain address: quoting, source routes (% ! @a:),
# address literals, comments, lists and angle brackets.
_FORBIDDEN = {
    '"': "quoted", "\\": "quoted", "%": "source-routed", "!": "source-routed",
    ":": "source-routed", "[": "address-literal", "]": "address-literal", "(": "comment",
    ")": "comment", ",": "list", ";": "list", "<": "angle-brackets", ">": "angle-brackets",
}
_MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path holds at most 256 octets including < >
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "mx", "dr", "prof"})


@dataclass(frozen=True)
class _Address:
    """A syntactically valid address: ASCII local part, domain in both forms, lower-case."""

    local: str
    ascii_domain: str
    unicode_domain: str

    @property
    def normalised(self) -> str:
        return f"{self.local}@{self.ascii_domain}"


class _Invalid(Exception):
    """Why an address is not usable; carries a short reason for `Recipient.detail`."""


def classify_recipient(
    address: str,
    policy: Policy,
    snapshot: Snapshot,
    sender: str,
    sender_display_name: str = "",
) -> Recipient:
    """Classify one envelope recipient (see the module docstring for the order of questions)."""
    try:
        parsed = _parse(address)
    except _Invalid as exc:
        return _homograph_of_known(address, str(exc), policy, snapshot) or Recipient(
            address=address, normalised="", category=Category.INVALID, detail=str(exc)
        )
    domain = parsed.ascii_domain
    normalised = parsed.normalised
    verified_domains = _verified_domains(snapshot)

    def result(category: Category, detail: str = "", suggestion: str | None = None) -> Recipient:
        return Recipient(address=address, normalised=normalised, category=category,
                         suggestion=suggestion, detail=detail)

    if not parsed.unicode_domain.isascii():
        target = homograph_target(parsed, policy, verified_domains)
        if target is not None:
            return result(Category.LOOKALIKE, f"homograph of {target}", f"{parsed.local}@{target}")
        if _is_mixed_script(parsed.unicode_domain):
            return Recipient(address=address, normalised="", category=Category.INVALID,
                             detail="mixed-script domain")
    if is_fax(parsed.local, domain, policy):
        return result(Category.FAX, "fax gateway")
    if _under_any(domain, policy.internal_domains):
        return result(Category.INTERNAL)
    if normalised.lower() in _staff_personal_addresses(snapshot):
        return result(Category.PERSONAL, "staff personal directory")
    suffix = secure_suffix(domain, policy)
    if suffix is not None:
        return result(Category.SECURE, f"secure suffix {suffix}")
    if domain in policy.freemail_domains and matches_own_name(parsed.local, sender,
                                                              sender_display_name):
        return result(Category.PERSONAL, "freemail address in the sender's own name")
    target = near_miss_target(parsed, policy, verified_domains)
    if target is not None:
        return result(Category.LOOKALIKE, f"resembles {target}", f"{parsed.local}@{target}")
    return result(Category.NON_SECURE)


# ----------------------------------------------------------------------------------------------
# Syntax
# ----------------------------------------------------------------------------------------------


# Pure functions of their strings, asked about the same addresses and domains again and again
# (at RCPT, then at DATA, message after message): remembered, a bounded number of them.
_REMEMBERED = 4096


@lru_cache(maxsize=_REMEMBERED)
def _parse(address: str) -> _Address:
    """Accept only a plain, normalised address; raise `_Invalid` with the reason otherwise."""
    if not address or len(address) > _MAX_ADDRESS:
        raise _Invalid("empty or too long")
    if address.count("@") != 1:
        raise _Invalid("source-routed" if address.startswith("@") else "not one @")
    for char in address:
        if char in _FORBIDDEN:
            raise _Invalid(_FORBIDDEN[char])
        if char.isspace() or unicodedata.category(char)[0] in "CZ":
            raise _Invalid("control or space character")
    given_domain = address.rpartition("@")[2].lower()
    try:
        valid = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
        )
    except EmailNotValidError:
        raise _Invalid("syntax") from None
    unicode_domain = valid.domain.lower()
    ascii_domain = (valid.ascii_domain or "").lower()
    if not ascii_domain or given_domain not in (unicode_domain, ascii_domain):
        raise _Invalid("domain not normalised")
    return _Address(local=valid.local_part, ascii_domain=ascii_domain,
                    unicode_domain=unicode_domain)


# ----------------------------------------------------------------------------------------------
# Categories
# ----------------------------------------------------------------------------------------------


def is_under(domain: str, suffix: str) -> bool:
    """True when `domain` is `suffix` or a subdomain of it (a label boundary, never a substring)."""
    return domain == suffix or domain.endswith("." + suffix)


@lru_cache(maxsize=_REMEMBERED)
def _parents(domain: str) -> frozenset[str]:
    """`domain` and every domain above it, label by label: "a.b.c" -> a.b.c, b.c, c. A suffix
    is among them exactly when `is_under(domain, suffix)`."""
    labels = domain.split(".")
    return frozenset(".".join(labels[start:]) for start in range(len(labels)))


def _under_any(domain: str, suffixes: Iterable[str]) -> bool:
    return not _parents(domain).isdisjoint(suffixes)


def secure_suffix(domain: str, policy: Policy) -> str | None:
    """The secure suffix an ASCII, lower-case domain falls under, if any (DESIGN ruling 1)."""
    parents = _parents(domain)
    for suffix in policy.secure_suffixes:
        if suffix in parents:
            return suffix
    return None


def is_fax(local: str, domain: str, policy: Policy) -> bool:
    """An email-to-fax gateway domain, or a fax number wrapped in an address (IMCEAFAX-...)."""
    return (_under_any(domain, policy.fax_domains)
            or local.upper().startswith(policy.fax_local_prefixes))


def _staff_personal_addresses(snapshot: Snapshot) -> frozenset[str]:
    """Every known personal address of staff (remembered for the last directory seen: the
    registry hands out the same mapping until it changes)."""
    last_directory, last_addresses = _LAST_PERSONAL
    if last_directory is snapshot.staff_personal:
        return last_addresses
    addresses = frozenset(
        p.lower() for personal in snapshot.staff_personal.values() for p in personal)
    _LAST_PERSONAL[:] = [snapshot.staff_personal, addresses]
    return addresses


def _verified_domains(snapshot: Snapshot) -> frozenset[str]:
    """The domains of the snapshot's verified addresses (remembered for the last snapshot seen:
    one message's recipients are all classified against the same snapshot)."""
    last_verified, last_domains = _LAST_VERIFIED
    if last_verified is snapshot.verified:
        return last_domains
    domains = frozenset(v.address.rpartition("@")[2].lower() for v in snapshot.verified)
    _LAST_VERIFIED[:] = [snapshot.verified, domains]
    return domains


_LAST_VERIFIED: list[Any] = [None, frozenset()]
_LAST_PERSONAL: list[Any] = [None, frozenset()]


# ----------------------------------------------------------------------------------------------
# Personal addresses in the sender's own name
# ----------------------------------------------------------------------------------------------


def _name_parts(text: str) -> tuple[str, str] | None:
    """(first, last) from "Jo Bloggs", "Bloggs, Jo", "Dr Jo Q Bloggs" or "jo.bloggs"."""
    if "," in text:
        last, _, first = text.partition(",")
        text = f"{first} {last}"
    words = [w for w in re.split(r"[^a-z]+", text.lower()) if w and w not in _TITLES]
    if len(words) < 2:
        return None
    return words[0], words[-1]


def matches_own_name(local: str, sender: str, display_name: str) -> bool:
    """True when a local part spells the sender's name: jo.bloggs, bloggs.jo, jbloggs, jo_b1."""
    letters = re.sub(r"[^a-z]", "", local.lower().partition("+")[0])
    names = [_name_parts(display_name), _name_parts(sender.rpartition("@")[0])]
    for parts in names:
        if parts is None:
            continue
        first, last = parts
        if len(last) < 2:
            continue
        spellings = {first + last, last + first, first[0] + last, last + first[0]}
        if letters in spellings:
            return True
    return False


# ----------------------------------------------------------------------------------------------
# Lookalikes
# ----------------------------------------------------------------------------------------------


def homograph_target(
    address: _Address, policy: Policy, verified_domains: frozenset[str]
) -> str | None:
    """The known domain an internationalised domain imitates with look-alike letters, if any.

    Letters from other scripts that look Latin (Cyrillic "с" for "c") are folded to the Latin
    letter they imitate; a domain that then is, or nearly is, a known domain is a homograph.
    """
    skeleton = _skeleton(address.unicode_domain)
    if skeleton == address.unicode_domain or not skeleton.isascii():
        return None
    targets = (*policy.internal_domains, *policy.secure_suffixes, *policy.freemail_domains,
               *sorted(verified_domains))
    if any(is_under(skeleton, target) for target in targets):
        return skeleton  # the address the sender meant: сjsm.net -> cjsm.net
    return _near_policy_domain(skeleton, policy) or _verified_index(verified_domains).near(skeleton)


def near_miss_target(
    address: _Address, policy: Policy, verified_domains: frozenset[str]
) -> str | None:
    """The internal, secure or verified domain this (non-internal, non-secure) domain nearly is."""
    domain = address.ascii_domain
    if domain in verified_domains or domain in policy.freemail_domains:
        return None
    if domain in policy.never_lookalike:
        return None
    return _near_policy_domain(domain, policy) or _verified_index(verified_domains).near(domain)


def _homograph_of_known(
    address: str, reason: str, policy: Policy, snapshot: Snapshot
) -> Recipient | None:
    """An unnormalised domain (full-width letters and the like) that folds onto a known domain."""
    if reason != "domain not normalised":
        return None
    local, _, domain = address.rpartition("@")
    folded = unicodedata.normalize("NFKC", domain).lower()
    known = (*policy.internal_domains, *policy.secure_suffixes, *policy.freemail_domains,
             *sorted(_verified_domains(snapshot)))
    for target in known:
        if is_under(folded, target) and local.isascii():
            return Recipient(address=address, normalised="", category=Category.LOOKALIKE,
                             suggestion=f"{local}@{target}", detail=f"resembles {target}")
    return None


def _edit_limit(label: str) -> int:
    """Edits allowed from a distinctive label: none for three letters or fewer (too many real
    short names), one for four letters, two for longer ones."""
    return 0 if len(label) <= 3 else 1 if len(label) == 4 else 2


def _near_policy_domain(domain: str, policy: Policy) -> str | None:
    """The internal or secure domain `domain` is a near miss of, checked the thorough way."""
    for known in (*policy.internal_domains, *policy.secure_suffixes):
        if _resembles(domain, known):
            return known
    return None


@lru_cache(maxsize=_REMEMBERED)
def _resembles(domain: str, known: str) -> bool:
    """A near miss of an agency or secure domain: embedded, edited, or under another suffix."""
    if domain == known:
        return False
    if domain.startswith(known + ".") or domain.startswith(known + "-"):
        return True  # nhs.net.example.com, cafcass.gov.uk-secure.com
    labels, known_labels = domain.split("."), known.split(".")
    distinctive = known_labels[0]
    limit = _edit_limit(distinctive)
    if len(labels) >= len(known_labels):
        tail = labels[len(labels) - len(known_labels):]
        if tail[1:] == known_labels[1:] and 0 < _distance(tail[0], distinctive) <= limit:
            return True  # cafcas.gov.uk, mail.cafcas.gov.uk
    if 0 < _distance(domain, known) <= limit:
        return True  # cafcassgov.uk
    return len(distinctive) >= 3 and distinctive in labels[:-1]  # cjsm.com, cafcass.co.uk


class _VerifiedIndex:
    """Verified domains indexed for near-miss search (symmetric deletion, as SymSpell does).

    Two labels within k edits share a string reachable from each by at most k deletions, so
    only candidates sharing such a string are measured. Built once per set of verified domains:
    a registry of thousands of firms and agencies costs a few dictionary look-ups per recipient.
    """

    def __init__(self, domains: frozenset[str]) -> None:
        self.exact = domains
        self.label_counts = sorted({d.count(".") + 1 for d in domains})
        self.deletions: dict[tuple[str, str], set[str]] = {}
        for domain in domains:
            label, _, rest = domain.partition(".")
            for variant in _deletions(label, _edit_limit(label)):
                self.deletions.setdefault((rest, variant), set()).add(label)

    def near(self, domain: str) -> str | None:
        """The verified domain `domain` embeds or is one or two edits from, if any."""
        for i, char in enumerate(domain):
            if char in ".-" and domain[:i] in self.exact:
                return domain[:i]  # smith-law.co.uk.example.com
        labels = domain.split(".")
        for count in self.label_counts:
            if len(labels) < count:
                continue
            label, rest = labels[len(labels) - count], ".".join(labels[len(labels) - count + 1:])
            candidates: set[str] = set()
            for variant in _deletions(label, 2):
                candidates |= self.deletions.get((rest, variant), set())
            for known in sorted(candidates):
                if 0 < _distance(label, known) <= _edit_limit(known):
                    return f"{known}.{rest}"
        return None


@lru_cache(maxsize=8)
def _verified_index(domains: frozenset[str]) -> _VerifiedIndex:
    return _VerifiedIndex(domains)


def _deletions(label: str, depth: int) -> set[str]:
    """`label` and every string made from it by deleting up to `depth` characters."""
    found = {label}
    frontier = {label}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1:] for w in frontier for i in range(len(w))}
        found |= frontier
    return found


def _distance(a: str, b: str) -> int:
    """Optimal string alignment distance (edits, with adjacent transpositions), capped at 3."""
    if abs(len(a) - len(b)) > 2:
        return 3
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return min(previous[len(b)], 3)


def _skeleton(domain: str) -> str:
    """The domain with every character that imitates an ASCII letter replaced by that letter."""
    if domain.isascii():
        return domain
    found = confusables.is_confusable(domain, greedy=True, preferred_aliases=["latin"]) or []
    replacements: dict[str, str] = {}
    for entry in found:
        for glyph in entry["homoglyphs"]:
            if glyph["c"].isascii():
                replacements[entry["character"]] = glyph["c"].lower()
                break
    return "".join(replacements.get(char, char) for char in domain)


def _is_mixed_script(domain: str) -> bool:
    """Any label mixing scripts (Latin with Cyrillic, say): fails closed (SECURITY.md item 8)."""
    return not domain.isascii() and any(
        confusables.is_mixed_script(label) for label in domain.split(".")
    )
