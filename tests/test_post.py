"""The postal decision: every sentence of the post options and family-correspondence row."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.errors import PolicyError
from policies.loader import EMBEDDED_FILES, parse_policy
from policies.post import (
    FAMILY_GROUPS,
    NO_OFFICES,
    AddressStatus,
    Office,
    OfficeDirectory,
    PostAction,
    PostInputError,
    PostItem,
    PostOptions,
    Sensitivity,
    decide_post,
)

CASES = tomllib.loads((Path(__file__).parent / "cases" / "post.toml").read_text("utf-8"))
EMBEDDED = tomllib.loads(resources.files("policies").joinpath("data/post.toml").read_text("utf-8"))
DIRECTORY = OfficeDirectory(tuple(
    Office(name=o["name"], teams=tuple(o.get("teams", ())), dx_outgoing=o.get("dx_outgoing", False),
           dx_incoming=o.get("dx_incoming", False), registered=True)
    for o in CASES["office"]
))


@pytest.fixture(scope="module")
def options() -> PostOptions:
    """The embedded post options, as governance wrote them."""
    return PostOptions.from_table(EMBEDDED["post"], "policies/data/post.toml")


@pytest.mark.parametrize("case", CASES["case"], ids=[c["name"] for c in CASES["case"]])
def test_decision_table(case: dict[str, Any], options: PostOptions) -> None:
    """Each case's facts give exactly its decision, methods and rule, with reason and citation."""
    offices = DIRECTORY if case.get("directory") else NO_OFFICES
    decision = decide_post(PostItem.from_mapping(case["facts"]), options, offices)
    assert decision.decision is PostAction(case["decision"])
    assert list(decision.methods) == case["methods"]
    assert decision.rule == case["rule"]
    assert decision.reason and decision.citation
    assert "{" not in decision.reason, decision.reason  # every placeholder filled in
    if "applied" in case:
        assert list(decision.applied) == case["applied"]
    for text in case.get("instructions_include", []):
        assert any(text in line for line in decision.instructions), text
    for text in case.get("citation_include", []):
        assert text in decision.citation
    for text in case.get("reason_include", []):
        assert text in decision.reason


@pytest.mark.parametrize("case", CASES["error"], ids=[c["name"] for c in CASES["error"]])
def test_bad_input_names_the_field(case: dict[str, Any], options: PostOptions) -> None:
    """Invalid or contradictory facts raise PostInputError naming the field, in one sentence."""
    with pytest.raises(PostInputError) as caught:
        decide_post(PostItem.from_mapping(case["facts"]), options, DIRECTORY)
    assert caught.value.field == case["field"]
    message = str(caught.value)
    assert message.endswith(".") and "\n" not in message


def test_json_shape_is_exactly_the_contract(options: PostOptions) -> None:
    """to_json has exactly the six keys of the issue, with plain JSON types."""
    item = PostItem.from_mapping({"item": "court-report", "address": "confirmed-wafh"})
    shape = decide_post(item, options).to_json()
    assert set(shape) == {"decision", "methods", "instructions", "rule", "citation", "reason"}
    assert shape["decision"] == "send"
    assert all(isinstance(shape[k], list) for k in ("methods", "instructions"))
    assert all(isinstance(shape[k], str) for k in ("rule", "citation", "reason"))


def test_every_send_cites_every_rule_that_shaped_it(options: PostOptions) -> None:
    """Modifiers (weight, urgency, DX, collection, envelope) add their citations and are listed."""
    facts = {"item": "case-file", "from_office": "Bloomsbury", "weight_kg": 21,
             "sensitivity": "particular"}
    decision = decide_post(PostItem.from_mapping(facts), options)
    assert decision.applied == (
        "case-file-transfer", "dx-outgoing", "weight-limit", "double-envelope",
    )
    assert "App. 2, Post options (DX)" in decision.citation
    assert decision.citation.count("RRP 4.9") == 1


def test_every_item_and_method_id_of_the_issue_is_in_the_data(options: PostOptions) -> None:
    """The item and method ids are exactly those the issue names."""
    assert set(options.items) == {
        "welcome-pack", "allocation-letter", "appointment-letter", "safeguarding-letter",
        "court-report", "detailed-correspondence", "sar-file", "complaints-file", "case-file",
        "agency-check-result", "third-party-document", "solicitor-correspondence",
    }
    assert set(options.methods) == {
        "egress-email", "royal-mail-standard-return-address", "royal-mail-signed-for-2nd",
        "royal-mail-signed-for-1st", "special-delivery-guaranteed", "special-delivery",
        "approved-courier", "hand-delivery", "collect-in-person", "internal-transfer", "dx",
    }


def test_standard_post_is_never_offered_once_a_concern_is_raised(options: PostOptions) -> None:
    """DESIGN ruling 14: for every item and address, a concern rules out standard post."""
    for item_id in options.items:
        for address in ("none", "unconfirmed", "confirmed-eit", "confirmed-wafh"):
            for sensitivity in ("concern", "particular"):
                facts = {"item": item_id, "address": address, "sensitivity": sensitivity}
                decision = decide_post(PostItem.from_mapping(facts), options)
                assert "royal-mail-standard-return-address" not in decision.methods, facts


def test_over_every_method_weight_is_refused() -> None:
    """When no permitted method takes the weight, the answer is a refusal that says so."""
    table = copy.deepcopy(EMBEDDED["post"])
    table["methods"]["approved-courier"]["max_kg"] = 30
    limited = PostOptions.from_table(table, "org.toml")
    heavy = PostItem.from_mapping({"item": "sar-file", "address": "unconfirmed", "weight_kg": 31})
    decision = decide_post(heavy, limited)
    assert decision.decision is PostAction.REFUSE
    assert decision.rule == "over-weight"
    assert "heavier than any permitted method" in decision.reason
    light = PostItem.from_mapping({"item": "sar-file", "address": "unconfirmed", "weight_kg": 30})
    assert decide_post(light, limited).methods == ("approved-courier",)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda t: t["rules"].pop("third-party-print"), "post.rules.third-party-print"),
        (
            lambda t: t["rules"]["collect-only"].update(methods=["owl"]),
            "post.rules.collect-only.methods[0]",
        ),
        (lambda t: t["methods"]["dx"].update(max_kg=-1), "post.methods.dx.max_kg"),
        (lambda t: t["items"]["case-file"].update(group="parcel"), "post.items.case-file.group"),
        (
            lambda t: t["rules"]["verified-email"].update(decision="maybe"),
            "post.rules.verified-email.decision",
        ),
        (lambda t: t.update(heavier_methods=["lorry"]), "post.heavier_methods[0]"),
        (lambda t: t["methods"]["dx"].update(colour="red"), "post.methods.dx.colour"),
        (lambda t: t["modifiers"].pop("weight-limit"), "post.modifiers.weight-limit"),
    ],
)
def test_bad_options_name_source_and_key(change: Any, key: str) -> None:
    """A broken [post] table is a PolicyError naming the file and the dotted key."""
    table = copy.deepcopy(EMBEDDED["post"])
    change(table)
    with pytest.raises(PolicyError) as caught:
        PostOptions.from_table(table, "org-post.toml")
    assert str(caught.value).startswith(f"org-post.toml: '{key}'")


def test_decisions_are_deterministic(options: PostOptions) -> None:
    """The same facts always give the same decision (a pure function)."""
    item = PostItem.from_mapping({"item": "safeguarding-letter", "address": "confirmed-eit",
                                  "sensitivity": "concern", "urgent": True})
    assert decide_post(item, options) == decide_post(item, options)


def embedded_documents() -> list[tuple[str, str]]:
    data = resources.files("policies").joinpath("data")
    return [(f"policies/data/{n}", data.joinpath(n).read_text("utf-8")) for n in EMBEDDED_FILES]


def test_the_policy_loader_carries_the_post_options() -> None:
    """post.toml is an embedded policy file: Policy.post is built, and an org file extends it."""
    policy = parse_policy(embedded_documents())
    assert policy.post is not None and "case-file" in policy.post.items
    org = ("org.toml", '[post]\ndx_outgoing_offices = { extend = ["Leeds"] }\n')
    extended = parse_policy([*embedded_documents(), org])
    assert extended.post is not None
    assert extended.post.dx_outgoing_offices == ("Bloomsbury", "Leeds")
    item = PostItem(item="case-file", from_office="Leeds", method="dx")
    assert decide_post(item, extended.post).methods == ("dx",)


def test_a_bad_org_post_table_names_the_org_file() -> None:
    """An organisation file that breaks [post] is refused with its name and the key."""
    org = ("org.toml", "[post.methods.dx]\nmax_kg = -1\n")
    with pytest.raises(PolicyError) as caught:
        parse_policy([*embedded_documents(), org])
    assert str(caught.value).startswith("org.toml: 'post.methods.dx.max_kg'")


FACTS = st.fixed_dictionaries(
    {"item": st.sampled_from(sorted(EMBEDDED["post"]["items"]))},
    optional={
        "verified_email": st.booleans(),
        "address": st.sampled_from([a.value for a in AddressStatus]),
        "sensitivity": st.sampled_from([s.value for s in Sensitivity]),
        "urgent": st.booleans(),
        "weight_kg": st.floats(min_value=0, max_value=100, allow_nan=False),
        "third_party": st.booleans(),
        "office_transfer": st.booleans(),
        "from_office": st.sampled_from(["", "Bloomsbury", "Warrington", "Leeds"]),
        "method": st.sampled_from(["", *sorted(EMBEDDED["post"]["methods"])]),
        "hard_copy": st.booleans(),
        "electronic": st.booleans(),
        "wishes_to_collect": st.booleans(),
        "to_office": st.sampled_from(["", "Bloomsbury", "Warrington", "Coventry South Team"]),
    },
)
POSTAL = frozenset(EMBEDDED["post"]["methods"]) - {"internal-transfer", "egress-email"}


@settings(max_examples=300, deadline=None)
@given(facts=FACTS)
def test_invariants_hold_for_any_facts(facts: dict[str, Any]) -> None:
    """For any facts: an input error, or a cited decision that keeps every prohibition."""
    options = PostOptions.from_table(EMBEDDED["post"], "post.toml")
    try:
        decision = decide_post(PostItem.from_mapping(facts), options, DIRECTORY)
    except PostInputError as exc:
        assert exc.field in PostItem.__dataclass_fields__
        return
    assert decision.citation and decision.reason and decision.rule
    if decision.decision is PostAction.REFUSE:
        assert decision.methods == ()
    else:
        assert decision.methods and all(m in options.methods for m in decision.methods)
        assert len(set(decision.methods)) == len(decision.methods)
        weight = facts.get("weight_kg", 0.0)
        assert all(options.methods[m].takes(weight) for m in decision.methods)
    if facts.get("third_party") or facts["item"] in ("third-party-document", "agency-check-result"):
        # never printed: refused, or (electronic) moved with the case on the case record only
        assert decision.decision is PostAction.REFUSE or (
            facts.get("electronic") and decision.methods == ("internal-transfer",))
    if facts.get("sensitivity", "none") != "none":
        assert "royal-mail-standard-return-address" not in decision.methods
    if "dx" in decision.methods:
        assert facts.get("from_office") == "Bloomsbury"
        assert facts.get("to_office", "") in ("", "Bloomsbury", "Warrington")
    if facts.get("electronic"):  # a wholly electronic item: no postal method, ever
        assert POSTAL.isdisjoint(decision.methods)
    if facts.get("hard_copy"):  # paper never moves by a transfer between teams
        assert "internal-transfer" not in decision.methods
    if "collect-in-person" in decision.methods:  # only when the adult or child wishes
        assert facts.get("wishes_to_collect")
        assert options.items[facts["item"]].group in FAMILY_GROUPS
    assert "{" not in decision.reason
