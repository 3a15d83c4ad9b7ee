"""Every refusal the gateway records names a policy rule, with a citation and a sentence."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.app import read_policy
from gateway.config import Config

ROOT = Path(__file__).resolve().parent.parent
LITERAL_RULE = re.compile(r'\brule="([a-z0-9-]+)"')


def test_every_rule_the_code_names_is_in_the_policy() -> None:
    """A rule id written in the service's code exists in policy.toml (so events cite it)."""
    policy = read_policy(Config(), ROOT)
    named = {
        match
        for folder in ("gateway", "transports", "verification")
        for path in (ROOT / folder).rglob("*.py")
        for match in LITERAL_RULE.findall(path.read_text(encoding="utf-8"))
    }
    assert {"message-format", "sender-identity"} <= named
    for rule_id in named:
        rule = policy.rule(rule_id)
        assert rule.citation and rule.sentence, rule_id
