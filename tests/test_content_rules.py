"""ContentRules.from_table: the packaged defaults load, and bad tables name source and key."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from typing import Any

import pytest

from policies.content_rules import ContentRules, HeaderSignal, Limits
from policies.errors import PolicyError
from tests.fixtures_content import default_rules

REQUIRED_TYPES = {
    "agency-check-request", "sar-file", "complaints-file", "case-file", "welcome-pack",
    "allocation-letter", "appointment-letter", "safeguarding-letter", "court-report",
    "family-correspondence", "court-correspondence", "solicitor-correspondence",
    "local-authority-correspondence", "hmcts-form", "agency-check-result", "general",
}


def packaged_table() -> dict[str, Any]:
    text = resources.files("policies").joinpath("data/content.toml").read_text("utf-8")
    return tomllib.loads(text)["content"]


def test_packaged_defaults_load_with_every_information_type() -> None:
    """content.toml holds every key and names every information type the engine knows."""
    rules = default_rules()
    assert set(rules.information_type_ids) == REQUIRED_TYPES
    assert rules.information_type_ids[-1] == "general"
    assert HeaderSignal("Auto-Submitted", "auto-forwarded") in rules.auto_forward
    assert rules.limits.max_pdf_pages == 300


def test_packaged_container_budgets_are_the_dataclass_defaults() -> None:
    """content.toml and Limits agree on the container budgets (DESIGN ruling 22)."""
    limits = default_rules().limits
    defaults = Limits()
    assert (limits.max_container_depth, limits.max_container_files, limits.container_bytes,
            limits.container_seconds) == (defaults.max_container_depth,
                                          defaults.max_container_files, defaults.container_bytes,
                                          defaults.container_seconds) == (5, 1000, 100 << 20, 5.0)


def test_base_keeps_keys_left_out() -> None:
    """With a base, an organisation file changes only the keys it names."""
    base = default_rules()
    rules = ContentRules.from_table({"limits": {"max_pdf_pages": 50},
                                     "information_types": {"parenting-plan": {
                                         "labels": ["parenting plan"]}}},
                                    "org.toml", base)
    assert rules.limits.max_pdf_pages == 50
    assert rules.limits.max_parts == base.limits.max_parts
    assert rules.information_type_ids[-1] == "parenting-plan"
    assert rules.markings == base.markings


def _with(path: str, value: object) -> dict[str, Any]:
    table = copy.deepcopy(packaged_table())
    *parents, last = path.split(".")
    node = table
    for key in parents:
        node = node[key]
    node[last] = value
    return table


@pytest.mark.parametrize(("path", "value", "message"), [
    ("case_number_pattern", "[A-Z", "org.toml: content.case_number_pattern: not a regular"),
    ("case_number_pattern", "A*", "content.case_number_pattern: matches the empty string"),
    ("case_number_pattern", 5, "content.case_number_pattern: must be a string"),
    ("classification_headers", ["Bad Header:"], "content.classification_headers: 'Bad Header:'"),
    ("override_header", "", "content.override_header: '' is not a header name"),
    ("editable_types", "docx", "content.editable_types: must be a list"),
    ("images_are_unreadable", "yes", "content.images_are_unreadable: must be true or false"),
    ("limits.max_parts", 0, "content.limits.max_parts: must be greater than zero"),
    ("limits.max_parts", True, "content.limits.max_parts: must be an integer"),
    ("limits.attachment_seconds", "2", "content.limits.attachment_seconds: must be a number"),
    ("limits.surprise", 1, "content.limits.surprise: unknown key"),
    ("limits.max_container_depth", 0,
     "content.limits.max_container_depth: must be greater than zero"),
    ("limits.max_container_files", 1.5, "content.limits.max_container_files: must be an integer"),
    ("limits.container_bytes", -1, "content.limits.container_bytes: must be greater than zero"),
    ("limits.container_seconds", "5", "content.limits.container_seconds: must be a number"),
    ("markings.protective", [""], "content.markings.protective: must be a list of non-empty"),
    ("auto_forward", {"header": "x"}, "content.auto_forward: must be an array of tables"),
    ("auto_forward", [{"contains": "x"}], "content.auto_forward[0].header: missing"),
    ("information_types.Court Report", {}, "content.information_types.Court Report: an "
     "information type id must be kebab-case"),
    ("information_types.court-report.labels", "court report",
     "content.information_types.court-report.labels: must be a list"),
    ("information_types.court-report.colour", "red",
     "content.information_types.court-report.colour: unknown key"),
    ("surprise", 1, "content.surprise: unknown key"),
])
def test_bad_values_name_source_and_key(path: str, value: object, message: str) -> None:
    """Each problem is a PolicyError with the source, the dotted key and what is wrong."""
    with pytest.raises(PolicyError) as caught:
        ContentRules.from_table(_with(path, value), "org.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("org.toml: content.")


def test_missing_key_without_base_is_named() -> None:
    """Without a base, every key must be present."""
    table = packaged_table()
    del table["limits"]
    with pytest.raises(PolicyError, match=r"^x.toml: content.limits: missing$"):
        ContentRules.from_table(table, "x.toml")


def test_general_type_is_required() -> None:
    """The fallback type 'general' must exist."""
    table = packaged_table()
    del table["information_types"]["general"]
    with pytest.raises(PolicyError, match="'general' type must be defined"):
        ContentRules.from_table(table, "x.toml")


def test_table_must_be_a_table() -> None:
    """A [content] that is not a table is refused."""
    with pytest.raises(PolicyError, match=r"^x.toml: content: must be a table$"):
        ContentRules.from_table("nope", "x.toml")  # type: ignore[arg-type]
