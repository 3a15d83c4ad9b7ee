"""The policy loader: the embedded policy, organisation overrides and extensions, and bad files."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from policies.errors import PolicyError
from policies.loader import (
    EMBEDDED_FILES,
    NEVER_OVERRIDABLE,
    REQUIRED_INFORMATION_TYPES,
    REQUIRED_RULES,
    Policy,
    parse_policy,
)

ORG = "/etc/casegate/org-policy.toml"


def _embedded() -> list[tuple[str, str]]:
    data = resources.files("policies").joinpath("data")
    return [(name, data.joinpath(name).read_text("utf-8")) for name in EMBEDDED_FILES]


def _with_org(text: str) -> Policy:
    return parse_policy([*_embedded(), (ORG, text)])


def _error(text: str, source: str = ORG) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy([*_embedded(), (source, text)])
    return str(caught.value)


# ----------------------------------------------------------------------------------------------
# The embedded policy
# ----------------------------------------------------------------------------------------------


def test_embedded_policy_loads_with_every_required_rule_and_type() -> None:
    """The shipped files validate and define every rule and Appendix 2 type the code names."""
    policy = parse_policy(_embedded())
    assert REQUIRED_RULES <= set(policy.rules)
    assert set(policy.information_types) == REQUIRED_INFORMATION_TYPES
    assert policy.sources == EMBEDDED_FILES
    assert policy.post is not None


def test_secure_suffixes_are_ruling_1s() -> None:
    """The default secure suffixes are exactly those of DESIGN ruling 1."""
    policy = parse_policy(_embedded())
    assert set(policy.secure_suffixes) == {"gsi.gov.uk", "gcsx.gov.uk", "cjsm.net",
                                           "pnn.police.uk", "police.uk", "nhs.net", "nhs.uk"}
    assert policy.internal_domains == ("cafcass.gov.uk", "cafcass.gsi.gov.uk")  # legacy too
    assert "IMCEAFAX-" in policy.fax_local_prefixes


def test_every_rule_is_governance_ready() -> None:
    """Each rule has a kebab-case id, a citation, a sentence, a grade and a 5.7.x code."""
    policy = parse_policy(_embedded())
    for rule in policy.rules.values():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", rule.id)
        assert rule.citation and rule.sentence.endswith(".")
        assert rule.grade in {"low", "medium", "high"}
        assert re.fullmatch(r"5\.7\.\d+", rule.smtp_code)


def test_only_other_case_information_is_overridable_by_default() -> None:
    """DESIGN ruling 6: the shipped policy allows an override for other cases only."""
    policy = parse_policy(_embedded())
    assert [r.id for r in policy.rules.values() if r.overridable] == ["other-case-information"]


def test_every_appendix_2_row_is_cited() -> None:
    """Each information type names its Appendix 2 row, its methods and its conditions."""
    policy = parse_policy(_embedded())
    rows = {t.row for t in policy.information_types.values()}
    for row in ("Other agency check requests (e.g. police/LA)", "Case file",
                "Court correspondence", "Solicitors/local authorities correspondence",
                "HMCTS forms e.g. C100/C1A", "Other agency checks"):
        assert row in rows
    for kind in policy.information_types.values():
        assert kind.methods and kind.conditions and kind.citation
    assert policy.information_type("agency-check-result").never_leaves_agency
    assert policy.information_type("court-report").family_correspondence
    assert not policy.information_type("general").protected


def test_unknown_information_type_reads_as_protected() -> None:
    """A type id the policy does not know is treated as protected (fail closed)."""
    assert parse_policy(_embedded()).information_type("brand-new").protected


def test_policy_rule_lookup_names_a_missing_rule() -> None:
    """Asking for a rule the policy lacks raises a KeyError that names it."""
    with pytest.raises(KeyError, match="no-such-rule"):
        parse_policy(_embedded()).rule("no-such-rule")


# ----------------------------------------------------------------------------------------------
# Organisation files: override and extend
# ----------------------------------------------------------------------------------------------


def test_org_file_overrides_one_key_of_a_rule() -> None:
    """Tables merge key by key: a new sentence keeps the rule's citation and grade."""
    policy = _with_org('[rules.fax]\nsentence = "We do not fax. Email or post it."\n')
    assert policy.rule("fax").sentence == "We do not fax. Email or post it."
    assert policy.rule("fax").citation == "IA 3.4"
    assert policy.rule("fax").grade == "medium"


def test_org_file_replaces_a_list() -> None:
    """A plain list replaces the embedded one."""
    policy = _with_org('[domains]\ninternal = ["cafcass.gov.uk", "cafcass.gov.wales"]\n')
    assert policy.internal_domains == ("cafcass.gov.uk", "cafcass.gov.wales")


def test_org_file_extends_a_list() -> None:
    """`{ extend = [...] }` appends to the embedded list and drops repeats."""
    policy = _with_org(
        '[domains]\nsecure_suffixes = { extend = ["hscni.net", "nhs.net"] }\n'
    )
    assert policy.secure_suffixes[-1] == "hscni.net"
    assert policy.secure_suffixes.count("nhs.net") == 1
    assert len(policy.secure_suffixes) == 8


def test_later_files_win_in_order() -> None:
    """With two organisation files, the later one's value stands."""
    policy = parse_policy([*_embedded(),
                           ("a.toml", "[overrides]\nmin_justification_chars = 30\n"),
                           ("b.toml", "[overrides]\nmin_justification_chars = 40\n")])
    assert policy.min_justification_chars == 40


def test_org_file_adds_a_rule_and_an_information_type() -> None:
    """An organisation can add a type that never leaves the agency, with its own rule."""
    policy = _with_org(
        '[rules.hr-file-leaves]\ncitation = "HR 1.1"\nsentence = "HR files stay inside."\n'
        'grade = "high"\n'
        '[information_types.hr-file]\nname = "HR file"\nrow = "local"\ncitation = "HR 1.1"\n'
        'methods = ["internal-transfer"]\nconditions = ["Never external."]\n'
        'never_leaves_agency = true\nrefusal_rule = "hr-file-leaves"\n'
    )
    assert policy.information_type("hr-file").refusal_rule == "hr-file-leaves"
    assert policy.rule("hr-file-leaves").grade == "high"


def test_org_file_extends_content_tables_through_their_own_validation() -> None:
    """The [content] section merges the same way and is validated by policies.content."""
    policy = _with_org('[content]\ncase_number_pattern = "[A-Z]{3}[0-9]{6}"\n')
    assert policy.content.case_number_pattern == "[A-Z]{3}[0-9]{6}"


# ----------------------------------------------------------------------------------------------
# Bad files: each error names the file, the dotted key and the problem
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[rules.fax]\ncolour = \"red\"\n", "rules.fax.colour", "not a key casegate knows"),
        ("[domains]\nsecure = [\"x.net\"]\n", "domains.secure", "not a key casegate knows"),
        ("[surprise]\nx = 1\n", "surprise", "not a key casegate knows"),
        ("[rules.fax]\noverridable = \"yes\"\n", "rules.fax.overridable", "true or false"),
        ("[rules.fax]\ngrade = \"severe\"\n", "rules.fax.grade", "low, medium, high"),
        ("[rules.fax]\nsmtp_code = \"5.1.1\"\n", "rules.fax.smtp_code", "5.7.x"),
        ("[rules.fax]\nsentence = \"\"\n", "rules.fax.sentence", "non-empty string"),
        ("[rules.Fax_Rule]\ncitation = \"x\"\nsentence = \"y\"\n", "rules.Fax_Rule", "kebab-case"),
        ("[rules.new-rule]\nsentence = \"No citation.\"\n", "rules.new-rule.citation",
         "is missing"),
        ("[rules.personal-address]\noverridable = true\n", "rules.personal-address.overridable",
         "DESIGN ruling 6"),
        ("[rules.unverified-recipient]\noverridable = true\n",
         "rules.unverified-recipient.overridable", "DESIGN ruling 6"),
        ("[information_types.case-file]\nrefusal_rule = \"no-such-rule\"\n",
         "information_types.case-file.refusal_rule", "not defined under [rules]"),
        ("[information_types.general]\nnever_leaves_agency = true\n",
         "information_types.general.refusal_rule", "must name the rule"),
        ("[information_types.court-report]\nmethods = \"email\"\n",
         "information_types.court-report.methods", "list of non-empty strings"),
        ("[domains]\nsecure_suffixes = [\"nhs .net\"]\n", "domains.secure_suffixes",
         "not a plain ASCII domain"),
        ("[domains]\nsecure_suffixes = [\"сjsm.net\"]\n", "domains.secure_suffixes",
         "not a plain ASCII domain"),
        ("[domains]\ninternal = { extend = \"x.org\" }\n", "domains.internal.extend",
         "must be a list"),
        ("[documents]\neditable_types = [\"Word document\"]\n", "documents.editable_types",
         "not a file type"),
        ("[overrides]\nmin_justification_chars = 0\n", "overrides.min_justification_chars",
         "at least 1"),
        ("[grades]\nauth-failure = \"critical\"\n", "grades.auth-failure", "low, medium, high"),
        ("rules = 3\n", "rules", "must be a table"),
    ],
)
def test_bad_org_file_names_file_key_and_problem(text: str, key: str, problem: str) -> None:
    """Each kind of mistake in an organisation file is reported with its file and key."""
    message = _error(text)
    assert message.startswith(f"{ORG}: ")
    assert f"'{key}'" in message
    assert problem in message


def test_invalid_toml_names_the_file() -> None:
    """A file that is not TOML at all is reported as such, with its name."""
    message = _error("[rules\nfax = ")
    assert message.startswith(f"{ORG}: is not valid TOML")


def test_bad_content_regex_names_the_file_and_key() -> None:
    """A bad case-number regex in [content] is caught by content's own validation, naming ORG."""
    message = _error('[content]\ncase_number_pattern = "([A-Z"\n')
    assert message.startswith(f"{ORG}: ")
    assert "case_number_pattern" in message


def test_removing_a_required_rule_is_impossible_to_miss() -> None:
    """A policy without a rule the engine needs fails, naming the rule."""
    policy_toml = _embedded()[0][1].replace("[rules.fax]", "[rules.fax-machine]")
    with pytest.raises(PolicyError, match=r"policy.toml: 'rules.fax' is missing"):
        parse_policy([("policy.toml", policy_toml), *_embedded()[1:]])


def test_a_missing_information_type_is_reported() -> None:
    """Every type the content classifier names must be defined."""
    policy_toml = _embedded()[0][1].replace("[information_types.hmcts-form]",
                                            "[information_types.hmcts-forms]")
    with pytest.raises(PolicyError, match=r"'information_types.hmcts-form' is missing"):
        parse_policy([("policy.toml", policy_toml), *_embedded()[1:]])


def test_no_documents_is_an_error() -> None:
    """An empty document list is refused rather than giving an empty policy."""
    with pytest.raises(PolicyError):
        parse_policy([])


def test_never_overridable_rules_are_not_overridable_in_the_shipped_policy() -> None:
    """The shipped file respects the ruling-6 list the loader enforces."""
    policy = parse_policy(_embedded())
    assert not any(policy.rule(rule_id).overridable for rule_id in NEVER_OVERRIDABLE)
