"""Recipient classification: table-driven cases (tests/cases/recipients.toml) and properties."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import recipients
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import Category, Role, Snapshot, Verification
from policies.recipients import (
    _distance,
    _edit_limit,
    _VerifiedIndex,
    classify_recipient,
    is_under,
)

CASES = tomllib.loads((Path(__file__).parent / "cases" / "recipients.toml").read_text("utf-8"))
DEFAULTS: dict[str, Any] = CASES["defaults"]


def _embedded_policy() -> Policy:
    data = resources.files("policies").joinpath("data")
    return parse_policy([(name, data.joinpath(name).read_text("utf-8")) for name in EMBEDDED_FILES])


POLICY = _embedded_policy()
SNAPSHOT = Snapshot(
    now=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    verified=(
        Verification("parent@gmail.com", "ZC12C00123", Role.PARTY),
        Verification("clerk@smith-law.co.uk", None, Role.PROFESSIONAL),
    ),
    staff_personal={"jo.bloggs@cafcass.gov.uk": ("jojo1975@yahoo.com",)},
)


@pytest.mark.parametrize("case", CASES["case"], ids=lambda c: repr(c["address"])[:60])
def test_recipient_case(case: dict[str, Any]) -> None:
    """Each case in recipients.toml gets the category (and suggestion) it lists."""
    recipient = classify_recipient(
        case["address"], POLICY, SNAPSHOT, DEFAULTS["sender"], DEFAULTS["display_name"]
    )
    assert recipient.category == Category(case["category"]), case.get("why", "")
    if "suggestion" in case:
        assert (recipient.suggestion or "") == case["suggestion"]
    if recipient.category is Category.INVALID:
        assert recipient.normalised == ""
    else:
        assert recipient.domain == recipient.domain.lower()


def test_every_category_has_a_case() -> None:
    """The case table exercises all seven categories."""
    assert {Category(c["category"]) for c in CASES["case"]} == set(Category)


def test_freemail_name_match_uses_the_senders_local_part_without_a_display_name() -> None:
    """With no display name, the sender's first.last local part still identifies their name."""
    recipient = classify_recipient("jo.bloggs@gmail.com", POLICY, SNAPSHOT,
                                   "jo.bloggs@cafcass.gov.uk")
    assert recipient.category is Category.PERSONAL


def test_outlook_last_comma_first_display_name() -> None:
    """'Bloggs, Jo' (Outlook's directory form) is read as first name Jo, surname Bloggs."""
    recipient = classify_recipient("jbloggs@gmail.com", POLICY, SNAPSHOT, "jb1@cafcass.gov.uk",
                                   "Bloggs, Jo")
    assert recipient.category is Category.PERSONAL


def test_staff_directory_is_refused_whoever_sends() -> None:
    """A staff member's personal address is personal when a colleague sends to it too."""
    recipient = classify_recipient("jojo1975@yahoo.com", POLICY, SNAPSHOT,
                                   "sam.smith@cafcass.gov.uk", "Sam Smith")
    assert recipient.category is Category.PERSONAL


def test_lookalike_of_a_verified_domain_needs_the_verification() -> None:
    """smithlaw.co.uk is only a lookalike because smith-law.co.uk is verified."""
    empty = Snapshot(now=SNAPSHOT.now)
    recipient = classify_recipient("clerk@smithlaw.co.uk", POLICY, empty, DEFAULTS["sender"])
    assert recipient.category is Category.NON_SECURE


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------

SECURE = ("gsi.gov.uk", "gcsx.gov.uk", "cjsm.net", "pnn.police.uk", "police.uk", "nhs.net",
          "nhs.uk")
_label = st.text(
    alphabet=st.sampled_from([*"abcdefghijklmnopqrstuvwxyz0123456789-", "с", "о", "і", "ｃ"]),
    min_size=1, max_size=12,
)
_fragments = st.sampled_from(["nhs", "net", "gsi", "gov", "uk", "cjsm", "police", "pnn", "gcsx",
                              "co", "com", "evil-nhs", "nhs-net", "xn--jsm-3ed"])
_domain = st.lists(st.one_of(_label, _fragments), min_size=1, max_size=5).map(".".join)
_separators = st.sampled_from(["@", "@", "@", ".", "%", "!", ":", "@@", "", "\"", "[", "]"])
_address = st.tuples(
    st.text(alphabet="abcdefghij.+_-", min_size=0, max_size=8), _separators, _domain,
    st.sampled_from(["", ".", " ", "\n"]),
).map("".join)


def _independently_secure(domain: str) -> bool:
    return any(domain == s or domain.endswith("." + s) for s in SECURE)


@settings(max_examples=400, deadline=None)
@given(address=st.one_of(_address, st.text(max_size=40)))
def test_nothing_outside_a_secure_suffix_is_secure(address: str) -> None:
    """No string whose envelope domain is not under a secure suffix is ever classed secure."""
    recipient = classify_recipient(address, POLICY, SNAPSHOT, DEFAULTS["sender"])
    if recipient.category is Category.SECURE:
        local, at, domain = address.rpartition("@")
        assert at and local and domain.isascii()
        assert _independently_secure(domain.lower())
        assert recipient.normalised.lower() == address.lower()


@settings(max_examples=200, deadline=None)
@given(address=st.text(max_size=60))
def test_classification_never_raises_and_is_deterministic(address: str) -> None:
    """Any string gets a category, and the same category every time."""
    first = classify_recipient(address, POLICY, SNAPSHOT, DEFAULTS["sender"], "Jo Bloggs")
    second = classify_recipient(address, POLICY, SNAPSHOT, DEFAULTS["sender"], "Jo Bloggs")
    assert first == second
    assert first.category in set(Category)


def test_near_miss_found_among_thousands_of_verified_domains() -> None:
    """A one-letter slip from one verified firm among 3,000 is still caught, with its domain."""
    firms = tuple(
        Verification(f"clerk@firm{i:04d}law.co.uk", None, Role.PROFESSIONAL) for i in range(3000)
    )
    snapshot = Snapshot(now=SNAPSHOT.now,
                        verified=(*firms, Verification("a@harbottle-lewis.co.uk", None,
                                                       Role.PROFESSIONAL)))
    slip = classify_recipient("a@harbotle-lewis.co.uk", POLICY, snapshot, DEFAULTS["sender"])
    assert (slip.category, slip.suggestion) == (Category.LOOKALIKE, "a@harbottle-lewis.co.uk")
    other = classify_recipient("a@camden.gov.uk", POLICY, snapshot, DEFAULTS["sender"])
    assert other.category is Category.NON_SECURE


_short = st.text(alphabet="abcdeklmnos-", min_size=1, max_size=9).filter(
    lambda s: not s.startswith("-") and not s.endswith("-"))


@settings(max_examples=300, deadline=None)
@given(known=st.lists(_short, min_size=1, max_size=6), query=_short,
       suffix=st.sampled_from(["co.uk", "org"]))
def test_verified_index_agrees_with_brute_force(known: list[str], query: str, suffix: str) -> None:
    """The deletion index finds a near-miss exactly when measuring every verified label would."""
    domains = frozenset(f"{label}.{suffix}" for label in known)
    index = _VerifiedIndex(domains)
    expected = any(0 < _distance(query, label) <= _edit_limit(label) for label in known)
    found = index.near(f"{query}.{suffix}")
    assert (found is not None) == expected


LABELS = st.sampled_from(["", "a", "b", "gov", "uk", "gsi", "nhs", "x-y", "."])


@given(st.lists(LABELS, min_size=1, max_size=5).map(".".join),
       st.lists(LABELS, min_size=1, max_size=3).map(".".join))
@settings(max_examples=500, deadline=None)
def test_a_domain_is_under_a_suffix_exactly_when_the_suffix_is_one_of_its_parents(
        domain: str, suffix: str) -> None:
    """The set lookup the categories use agrees with `is_under`, odd labels included."""
    assert recipients._under_any(domain, (suffix,)) == is_under(domain, suffix)
