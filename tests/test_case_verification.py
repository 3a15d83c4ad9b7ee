"""A recipient who confirms a verification as a party of a case is recorded as a person of it
(issue 16), through the real workflow: registry, case registry, audit log, sink, DNS stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from policies.cases import PersonRole
from policies.model import Role
from tests.verifykit import CASE, RECIPIENT, RECIPIENT_NAME, VerifyKit, token_in
from verification.workflow import LinkState, Outcome


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[VerifyKit]:
    async with VerifyKit.running(tmp_path) as opened:
        yield opened


async def confirmed(kit: VerifyKit, name: str, role: Role, address: str = RECIPIENT) -> None:
    result = await kit.workflow.request(kit.ask(address, name=name, role=role))
    assert result.outcome is Outcome.SENT, result.sentence
    token = token_in(await kit.mail_to(address))
    answer = await kit.workflow.confirm(token, result.code, name)
    assert answer.state is LinkState.CONFIRMED


@pytest.mark.parametrize(("name", "role", "people"), [
    (RECIPIENT_NAME, Role.PARTY, [("P1", PersonRole.PARTY, "J.D", "verification")]),
    (RECIPIENT_NAME, Role.PROFESSIONAL, []),
    ("Jane", Role.PARTY, []),  # one word: the verification stands, nobody can be recognised
])
async def test_a_confirmed_party_becomes_a_person_of_the_case(
        kit: VerifyKit, name: str, role: Role,
        people: list[tuple[str, PersonRole, str, str]]) -> None:
    await confirmed(kit, name, role)
    assert kit.app.snapshot(kit.clock.now).is_verified(RECIPIENT, (CASE,))
    recorded = kit.app.cases.case(CASE).people
    assert [(p.person_id, p.role, p.initials, p.source) for p in recorded] == people
    matched = kit.app.snapshot(kit.clock.now).cases.match([f"{name} rang about contact."])
    assert matched.case_numbers == ((CASE,) if people else ())
    assert len(kit.events("case-person-recorded")) == len(people)
