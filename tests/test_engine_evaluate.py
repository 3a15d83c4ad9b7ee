"""End to end through `evaluate`: real message bytes, content classification, then the decision."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import evaluate
from policies.errors import MessageError
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import Action, Decision, Role, Snapshot, Verdict, Verification

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")

SENDER = "jo.bloggs@cafcass.gov.uk"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _embedded_policy() -> Policy:
    data = resources.files("policies").joinpath("data")
    return parse_policy([(name, data.joinpath(name).read_text("utf-8")) for name in EMBEDDED_FILES])


POLICY = _embedded_policy()


def _clock() -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: float(next(ticks)) * 0.001


def message(body: str, subject: str = "Update", to: str = "someone@example.org",
            headers: dict[str, str] | None = None,
            attachment: tuple[bytes, str, str] | None = None) -> bytes:
    """A plain message from Jo Bloggs, optionally with one attachment (data, mime type, name)."""
    msg = EmailMessage()
    msg["From"] = f"Jo Bloggs <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    msg["Message-ID"] = "<test@cafcass.gov.uk>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if attachment is not None:
        data, mime, filename = attachment
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


def _run(raw: bytes, recipients: list[str], snapshot: Snapshot) -> Decision:
    return evaluate(raw, SENDER, recipients, POLICY, snapshot, _clock())


def test_case_number_makes_mail_protected_and_the_unverified_parent_is_refused() -> None:
    """A case number in the body: protected, so an unverified outside address is blocked."""
    raw = message("Dear parent, about case ZC12C00123, please call me.", to="mum@gmail.com")
    decision = _run(raw, ["mum@gmail.com"], Snapshot(now=NOW))
    assert decision.facts.case_numbers == ("ZC12C00123",)
    assert decision.verdict is Verdict.REFUSE
    assert decision.recipients[0].rule.id == "unverified-recipient"


def test_verified_parent_gets_case_mail_encrypted() -> None:
    """The same message to the parent verified for that case is delivered encrypted."""
    raw = message("Dear parent, about case ZC12C00123, please call me.", to="mum@gmail.com")
    snapshot = Snapshot(now=NOW, verified=(Verification("mum@gmail.com", "ZC12C00123",
                                                        Role.PARTY),))
    decision = _run(raw, ["mum@gmail.com"], snapshot)
    assert decision.verdict is Verdict.DELIVER
    assert decision.recipients[0].action is Action.ENCRYPT


def test_parent_verified_for_case_a_does_not_get_case_b() -> None:
    """DESIGN ruling 3 end to end: verification for ZC12C00123 does not cover ZC12C00456."""
    raw = message("Your report for case ZC12C00456 is attached below.", to="mum@gmail.com")
    snapshot = Snapshot(now=NOW, verified=(Verification("mum@gmail.com", "ZC12C00123",
                                                        Role.PARTY),))
    decision = _run(raw, ["mum@gmail.com"], snapshot)
    assert decision.verdict is Verdict.REFUSE


def test_unprotected_note_goes_plain_to_anyone_valid() -> None:
    """A note with nothing protected in it goes as sent, even to an unverified address."""
    raw = message("The training session is moved to Thursday at 10am.")
    decision = _run(raw, ["venue@example.org", "manager@cafcass.gov.uk"], Snapshot(now=NOW))
    assert not decision.facts.protected
    assert decision.verdict is Verdict.DELIVER
    assert [rd.action for rd in decision.recipients] == [Action.PLAIN, Action.PLAIN]


def test_two_case_numbers_refused_then_lifted_by_a_justified_override_header() -> None:
    """IA 3.10 end to end: refused with two cases; the override header lifts it and is recorded."""
    body = "Joint hearing for ZC12C00123 and ZC12C00456."
    snapshot = Snapshot(now=NOW, verified=(Verification("clerk@smith-law.co.uk", None,
                                                        Role.PROFESSIONAL),))
    refused = _run(message(body), ["clerk@smith-law.co.uk"], snapshot)
    assert [r.rule.id for r in refused.refusals] == ["other-case-information"]
    override = {"X-Casegate-Override":
                "other-case-information; Court directed one joint position statement"}
    lifted = _run(message(body, headers=override), ["clerk@smith-law.co.uk"], snapshot)
    assert lifted.verdict is Verdict.DELIVER
    assert [o.rule_id for o in lifted.overrides_applied] == ["other-case-information"]


def test_auto_forwarded_header_refuses_outside_delivery() -> None:
    """An Exchange auto-forward header makes mail to an outside address a refusal."""
    raw = message("Meeting notes", headers={"Auto-Submitted": "auto-forwarded"})
    decision = _run(raw, ["someone@gmail.com"], Snapshot(now=NOW))
    assert [r.rule.id for r in decision.refusals] == ["auto-forward"]


def test_explicit_classification_header_for_an_agency_check_result() -> None:
    """An agency check result marked by header may go internally but never outside."""
    raw = message("Police check result attached in original form.",
                  headers={"X-Casegate-Classification": "agency-check-result"})
    inside = _run(raw, ["fca@cafcass.gov.uk"], Snapshot(now=NOW))
    outside = _run(raw, ["fca@cafcass.gov.uk", "pc@kent.police.uk"],
                   Snapshot(now=NOW, verified=(Verification("pc@kent.police.uk", None,
                                                            Role.PROFESSIONAL),)))
    assert inside.verdict is Verdict.DELIVER
    assert "agency-check-result-leaves" in [r.rule.id for r in outside.refusals]


def test_address_only_blocks_do_not_depend_on_content() -> None:
    """Fax and personal addresses are blocked whatever the message holds."""
    raw = message("Lunch on Friday?")
    decision = _run(raw, ["IMCEAFAX-+441234@cafcass.gov.uk", "jo.bloggs@gmail.com"],
                    Snapshot(now=NOW))
    assert [rd.rule.id for rd in decision.recipients] == ["fax", "personal-address"]


def test_outlook_sensitivity_raises_protection() -> None:
    """DESIGN ruling 11: Sensitivity: Private makes an ordinary note protected."""
    raw = message("See you at the meeting.", headers={"Sensitivity": "Private"})
    decision = _run(raw, ["venue@example.org"], Snapshot(now=NOW))
    assert decision.facts.protected
    assert decision.recipients[0].rule.id == "unverified-recipient"


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(min_size=1, max_size=2048),
       recipients=st.lists(st.sampled_from(["a@cafcass.gov.uk", "gp@nhs.net", "x@gmail.com",
                                            "a%b@x.org"]), min_size=1, max_size=4))
def test_arbitrary_bytes_always_give_one_decision_per_recipient(
    raw: bytes, recipients: list[str]
) -> None:
    """Whatever the bytes, evaluate gives one decision per recipient; malformed means refused."""
    try:
        decision = _run(raw, recipients, Snapshot(now=NOW))
    except MessageError:
        assert not raw.strip()
        return
    assert [rd.recipient.address for rd in decision.recipients] == recipients
    if decision.facts.malformed:
        assert decision.verdict is Verdict.REFUSE
