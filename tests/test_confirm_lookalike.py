"""Confirming a lookalike address deliberately (issue 17, item 5; DESIGN ruling 1).

A real domain that merely resembles a secure one (cjsm.co.uk, a charity's nhs. subdomain) is
refused as a lookalike by default. A member of staff may verify it on purpose with
`verify add --confirm-lookalike --reason TEXT` (or the staff API): audited, medium grade; after
which casegate reads it as the ordinary non-secure address it is, so protected mail to it goes
encrypted through the portal. Homographs and imitations of the agency's own domains are never
confirmed. Cases: tests/cases/confirm_lookalike.toml.
"""

from __future__ import annotations

import io
import json
import tomllib
from datetime import UTC, datetime
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from gateway.app import App
from gateway.audit.trail import AuditLog, EventFilter, StoredEvent
from gateway.cli import main
from policies.engine import decide
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import Action, Category, MessageFacts, Role, Snapshot, Verification
from policies.recipients import classify_recipient
from tests.test_engine import facts as engine_facts
from transports.database import Database
from verification.workflow import check_address

CASES = tomllib.loads((Path(__file__).parent / "cases" / "confirm_lookalike.toml")
                      .read_text("utf-8"))["case"]
STAFF = "jo.bloggs@cafcass.gov.uk"
CASE = "ZC12C00123"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REASON = "Confirmed by telephone with the firm's office manager on 1 December."


def _policy() -> Policy:
    data = resources.files("policies").joinpath("data")
    return parse_policy([(n, data.joinpath(n).read_text("utf-8")) for n in EMBEDDED_FILES])


POLICY = _policy()
EMPTY = Snapshot(now=NOW, verified=(), staff_personal={})


def protected_facts() -> MessageFacts:
    """A protected message for CASE, as content classification would describe it (built by
    the engine tests' helper, which follows MessageFacts as it grows)."""
    return engine_facts(information_type="court-report", protected=True, case_numbers=(CASE,))


@pytest.mark.parametrize("case", CASES, ids=lambda c: repr(c["address"]))
def test_confirming_a_lookalike(case: dict[str, Any]) -> None:
    """Every case is refused by default; with the confirmation it is confirmed (naming what it
    resembles) or still refused (saying why), as the table says."""
    address = case["address"]
    assert classify_recipient(address, POLICY, EMPTY, STAFF).category is Category.LOOKALIKE
    assert check_address(address, STAFF, POLICY, EMPTY).normalised == ""  # the default stays
    checked = check_address(address, STAFF, POLICY, EMPTY, confirm_lookalike=True)
    if case["expect"] == "refused":
        assert checked.normalised == "" and case["says"] in checked.sentence
        assert checked.rule == "lookalike-domain"
        return
    assert checked.normalised == address.lower()
    assert checked.lookalike_of == case["resembles"]


@pytest.mark.parametrize("case", [c for c in CASES if c["expect"] == "confirmed"],
                         ids=lambda c: c["address"])
def test_once_verified_a_confirmed_lookalike_is_non_secure(case: dict[str, Any]) -> None:
    """Verified for the case, the address is non-secure: protected mail to it is encrypted
    (portal delivery), never plain as to the secure domain it resembles; for another case it
    is refused as unverified, like any outside address."""
    address = case["address"]
    snapshot = Snapshot(now=NOW, verified=(Verification(address, CASE, Role.PROFESSIONAL),),
                        staff_personal={})
    assert classify_recipient(address, POLICY, snapshot, STAFF).category is Category.NON_SECURE
    decision = decide(protected_facts(), STAFF, [address], POLICY, snapshot, "split")
    [recipient] = decision.recipients
    assert (recipient.action, recipient.rule.id) == (Action.ENCRYPT, "encrypt-non-secure")
    other_case = Snapshot(now=NOW, verified=(Verification(address, "ZC12C00999",
                                                          Role.PROFESSIONAL),),
                          staff_personal={})
    [refused] = decide(protected_facts(), STAFF, [address], POLICY, other_case,
                       "split").recipients
    assert (refused.action, refused.rule.id) == (Action.BLOCK, "unverified-recipient")


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory where STAFF has an account (`verify add --by` names one)."""
    with App.open(None, tmp_path / "data") as app:
        app.users.add(STAFF, "a long passphrase")
    return tmp_path / "data"


def run(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--data", str(data)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def events(data: Path, kind: str) -> list[StoredEvent]:
    audit = AuditLog.open(Database.open(data), stream=io.StringIO())
    try:
        return list(audit.iterate(EventFilter(kind=kind)))
    finally:
        audit.close()


def add(*extra: str, address: str = "admin@cjsm.co.uk") -> tuple[str, ...]:
    return ("verify", "add", address, "--case", CASE, "--role", "professional", "--by", STAFF,
            *extra)


def test_verify_add_confirms_a_lookalike_audited_with_a_medium_grade(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused by default (with the hint); confirmed with a reason: verified, two events (the
    addition, and the confirmation graded medium with its rule, reason and what it resembles),
    and `casegate check` then encrypts protected mail to it."""
    code, out, err = run(capsys, data, *add())
    assert code == 2 and "did you mean admin@cjsm.net?" in err
    assert "--confirm-lookalike --reason TEXT" in err
    code, out, _ = run(capsys, data, *add("--confirm-lookalike", "--reason", REASON))
    assert code == 0
    assert out.splitlines()[0] == f"admin@cjsm.co.uk is verified for case {CASE} as professional."
    assert "treats it as an ordinary (non-secure) address" in out
    [confirmed] = events(data, "verification-lookalike-confirmed")
    assert confirmed.grade == "medium" and confirmed.rule == "lookalike-domain"
    assert confirmed.sender == STAFF and list(confirmed.recipients) == ["admin@cjsm.co.uk"]
    assert confirmed.metadata["reason"] == REASON
    assert confirmed.metadata["resembles"] == "cjsm.net"
    assert confirmed.citation  # the lookalike rule's citation (IA 3.4; IA 3.10)
    [added] = events(data, "verification-added")
    assert added.metadata["method"] == "lookalike-confirmed"
    code, out, _ = run(capsys, data, "verify", "list", "--json")
    assert json.loads(out.splitlines()[0])["method"] == "lookalike-confirmed"

    msg = EmailMessage()
    msg["From"] = f"Jo Bloggs <{STAFF}>"
    msg["To"] = "admin@cjsm.co.uk"
    msg["Subject"] = "Report"
    msg.set_content(f"The court report for case {CASE} is attached in the portal.")
    path = tmp_path / "report.eml"
    path.write_bytes(bytes(msg))
    code, out, _ = run(capsys, data, "check", str(path), "--json")
    answer = json.loads(out)
    assert code == 0 and answer["verdict"] == "deliver"
    assert [(r["action"], r["rule"]) for r in answer["recipients"]] == [
        ("encrypt", "encrypt-non-secure")]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (add("--confirm-lookalike"), "--reason: say why this lookalike address is the right one"),
        (add("--confirm-lookalike", "--reason", "ok"), "in one line of 15 to 500 characters"),
        (add("--reason", REASON), "--reason goes with --confirm-lookalike"),
        (add("--confirm-lookalike", "--reason", REASON, address="a@сjsm.net"),
         "with look-alike letters, so it cannot be confirmed"),
        (add("--confirm-lookalike", "--reason", REASON, address="x@cafcas.gov.uk"),
         "imitates the Cafcass domain cafcass.gov.uk"),
    ],
)
def test_what_cannot_be_confirmed_exits_2_and_records_nothing(
        data: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], says: str) -> None:
    """No reason, a short one, a reason alone, a homograph, an imitation of the agency: exit 2,
    one sentence, nothing verified or recorded."""
    code, out, err = run(capsys, data, *argv)
    assert code == 2 and out == ""
    [line] = [ln for ln in err.splitlines() if ln.startswith("casegate:")]
    assert says in line
    assert events(data, "verification-added") == []
    assert events(data, "verification-lookalike-confirmed") == []


def test_without_the_flag_an_imitation_of_the_agency_gets_no_hint(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The hint to confirm is offered only where confirming is possible."""
    code, _, err = run(capsys, data, *add(address="x@cafcas.gov.uk"))
    assert code == 2 and "did you mean x@cafcass.gov.uk?" in err
    assert "--confirm-lookalike" not in err
