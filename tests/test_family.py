"""Family addresses shown to each other (DESIGN ruling 21; policies/family.py), table-driven.

Two or more external recipients who are registered parties or personal (freemail) addresses,
at least one of them shown in To or Cc, split the message (or refuse it, per
`policy.multiple_external`) whatever it says, under the `multiple-external` rule.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from policies import email_policy, family
from policies.content import classify_message
from policies.engine import decide
from policies.model import Role, Snapshot, Verdict, Verification
from tests.fixtures_content import default_rules
from tests.test_engine import POLICY

SENDER = "jo.bloggs@cafcass.gov.uk"
MUM, DAD, NAN = "mum.parent@gmail.com", "dad@example.org", "nan@example.net"
SOLICITOR = "j.harris@smithlaw.co.uk"
COLLEAGUE = "fca@cafcass.gov.uk"
SNAPSHOT = Snapshot(
    now=datetime(2026, 1, 5, tzinfo=UTC),
    verified=(Verification(DAD, "ZC12C00123", Role.PARTY),
              Verification(NAN, "LV21P00456", Role.PARTY),  # a party of another case
              Verification(SOLICITOR, None, Role.PROFESSIONAL)))


def message(to: list[str], cc: list[str], body: str = "The meeting room is booked.") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Jo Bloggs <{SENDER}>"
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = "Meeting"
    msg.set_content(body)
    return bytes(msg)


CASES = [
    # (name, To, Cc, envelope (None: To + Cc), mode, verdict, split)
    ("two freemail parents in To", [MUM, "gran.parent@hotmail.com"], [], None, "split",
     "deliver", True),
    ("a freemail parent and a registered party", [MUM], [DAD], None, "split", "deliver", True),
    ("a party of another case is still a party", [DAD, NAN], [], None, "split", "deliver", True),
    ("refused instead when the organisation says so", [MUM, DAD], [], None, "refuse",
     "refuse", False),
    ("both in Bcc: nobody is shown, nothing to split", [SENDER], [], [MUM, DAD], "refuse",
     "deliver", False),
    ("one shown, one in Bcc: the Bcc'd parent sees the other", [MUM], [], [MUM, DAD],
     "split", "deliver", True),
    ("one parent and a solicitor: one family address", [MUM, SOLICITOR], [], None, "split",
     "deliver", False),
    ("one parent and colleagues", [MUM, COLLEAGUE], [], None, "split", "deliver", False),
    ("the same parent twice is one", [MUM, MUM.upper()], [], None, "split", "deliver", False),
]


@pytest.mark.parametrize(("name", "to", "cc", "envelope", "mode", "verdict", "split"), CASES,
                         ids=[c[0] for c in CASES])
def test_family_addresses(name: str, to: list[str], cc: list[str], envelope: list[str] | None,
                          mode: str, verdict: str, split: bool) -> None:
    """Unprotected mail: split or refused for family addresses alone (the content is general)."""
    raw = message(to, cc)
    facts = classify_message(raw, POLICY.content, time.monotonic)
    assert not facts.protected
    decision = decide(facts, SENDER, envelope or [*to, *cc], POLICY, SNAPSHOT, mode)
    assert decision.verdict is Verdict(verdict), decision.reasons()
    assert decision.split is split
    if verdict == "refuse":
        (refusal,) = decision.refusals
        assert refusal.rule.id == "multiple-external"
        assert refusal.rule.citation == "RRP App. 2, Family correspondence"


@pytest.mark.parametrize(("header", "shown"), [
    ("Mum <mum.parent@gmail.com>, dad@example.org", {MUM, DAD}),
    ('"dad@example.org" <other@example.com>', {DAD, "other@example.com"}),
    ("=?utf-8?q?Dad_=3Cdad=40example=2Eorg=3E?= <x@example.com>", {DAD, "x@example.com"}),
    ("Undisclosed recipients:;", set()),
])
def test_shown_addresses_read_every_form(header: str, shown: set[str]) -> None:
    """Addresses in display names and encoded words are shown too (the reader sees them)."""
    raw = (f"From: {SENDER}\r\nTo: {header}\r\nSubject: x\r\n\r\nhi\r\n").encode()
    facts = classify_message(raw, default_rules(), time.monotonic)
    assert shown <= set(facts.shown_addresses)
    assert set(facts.shown_addresses) <= shown | {a.lower() for a in shown}


def test_an_unreadable_recipient_header_shows_every_address() -> None:
    """Fail closed: a To the header registry raises on counts as showing everyone."""
    raw = f"From: {SENDER}\r\nTo: =?utf-8?q?a?= <\r\nSubject: x\r\n\r\nhi\r\n".encode()
    message = BytesParser(policy=email_policy.for_one_message()).parsebytes(raw)
    assert family.shown_addresses(message) == (family.EVERY_ADDRESS,)
