"""Overrides typed in the Subject, end to end over real sockets: the tag never leaves, the manager
is told first (metadata only), and a message whose manager cannot be told is not delivered."""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator
from dataclasses import replace
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter, StoredEvent
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink, Step

CASES = ("FD24P01234", "FD24P09999")
BODY = f"Cases {CASES[0]} and {CASES[1]} are heard together."
MANAGER = "manager@cafcass.gov.uk"
REASON = "the court asked for both siblings' reports together"
OFFICERS = ("officer@cjsm.net", "clerk@pnn.police.uk")
RECIPIENTS = ("colleague@cafcass.gov.uk", *OFFICERS)


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        for officer in OFFICERS:
            for case in CASES:
                harness.verify(officer, case)
        yield harness


def _tagged(tag: str) -> bytes:
    return message(to=RECIPIENTS, subject=f"Reports {tag} for Monday", body=BODY)


def _events(gw: Harness, kind: str) -> list[StoredEvent]:
    return list(gw.app.audit.iterate(EventFilter(kind=kind)))


def _text(refused: smtplib.SMTPDataError) -> str:
    """The reply's text, its lines joined by spaces."""
    raw = refused.smtp_error
    return " ".join((raw.decode() if isinstance(raw, bytes) else raw).split())


async def _refused(gw: Harness, data: bytes) -> smtplib.SMTPDataError:
    with pytest.raises(smtplib.SMTPDataError) as caught:
        await gw.run(gw.send, STAFF, RECIPIENTS, data)
    return caught.value


async def test_tagged_message_is_delivered_without_the_tag_and_the_manager_told(
    gw: Harness,
) -> None:
    """Every copy's Subject loses the tag; the manager's notice comes first, with no content."""
    gw.app.users.set_manager(STAFF, MANAGER)
    data = _tagged(f"[override other-case-information: {REASON}]")
    assert await gw.run(gw.send, STAFF, RECIPIENTS, data) == {}
    notice, *copies = gw.sink.messages
    assert sorted(r for c in copies for r in c.rcpt_tos) == sorted(RECIPIENTS)
    assert len(copies) == 3  # split: the colleague's copy and one per outside officer
    for copy in copies:
        assert b"\r\nSubject: Reports for Monday\r\n" in copy.data
        assert b"override" not in copy.data.lower()
    assert notice.rcpt_tos == (MANAGER,)
    parsed = message_from_bytes(notice.data, policy=default)
    assert isinstance(parsed, EmailMessage)
    text = parsed.get_content()
    for fact in (STAFF, "other-case-information", "IA 3.10", REASON, *CASES, "cjsm.net",
                 "pnn.police.uk", "cafcass.gov.uk"):
        assert fact in text, fact
    assert "Reports" not in notice.data.decode() + text and "heard together" not in text
    (notified,) = _events(gw, "override-notified")
    assert notified.metadata["notified"] == [MANAGER]
    assert notified.rule == "other-case-information"
    assert [e.rule for e in _events(gw, "override")] == ["other-case-information"]


async def test_tag_for_a_rule_that_cannot_be_overridden_has_no_effect(gw: Harness) -> None:
    """The refusal stands, the reply says the rule cannot be overridden, nobody is mailed."""
    gw.app.users.set_manager(STAFF, MANAGER)
    refused = await _refused(gw, _tagged(f"[override personal-address: {REASON}]"))
    assert refused.smtp_code == 550
    reply = _text(refused)
    assert "personal-address was not applied: that rule cannot be overridden" in reply
    assert "[override other-case-information: your reason]" in reply
    assert gw.sink.messages == [] and _events(gw, "override-notified") == []


async def test_too_short_justification_is_refused(gw: Harness) -> None:
    """A justification under the policy's minimum does not lift the refusal."""
    gw.app.users.set_manager(STAFF, MANAGER)
    refused = await _refused(gw, _tagged("[override other-case-information: court]"))
    assert refused.smtp_code == 550
    assert "at least 15 characters" in _text(refused)
    assert gw.sink.messages == [] and _events(gw, "override") == []


async def test_manager_not_told_means_451_and_nothing_delivered(gw: Harness) -> None:
    """The notice is refused for now: 451, nothing leaves; the retry tells once and delivers."""
    gw.app.users.set_manager(STAFF, MANAGER)
    fault = gw.sink.fail(Step.RCPT, "451 4.3.0 try later", recipient=MANAGER)
    data = _tagged(f"[override other-case-information: {REASON}]")
    refused = await _refused(gw, data)
    assert refused.smtp_code == 451 and "manager could not be told" in _text(refused)
    assert fault.hits >= 1 and gw.sink.messages == []
    assert [e.metadata["reason"] for e in _events(gw, "override-not-notified")] == ["temporary"]
    gw.sink.clear_faults()
    assert await gw.run(gw.send, STAFF, RECIPIENTS, data) == {}
    assert [m.rcpt_tos for m in gw.sink.messages].count((MANAGER,)) == 1
    assert len(gw.sink.messages) == 4


async def test_no_manager_recorded_refuses_the_override(gw: Harness) -> None:
    """With nobody to tell, the override cannot be used: 550 and nothing delivered."""
    refused = await _refused(gw, _tagged(f"[override other-case-information: {REASON}]"))
    assert refused.smtp_code == 550 and "no manager is recorded" in _text(refused)
    assert gw.sink.messages == []
    (event,) = _events(gw, "override-not-notified")
    assert event.metadata["reason"] == "no-manager" and event.grade == "medium"


async def test_governance_is_copied_when_configured(gw: Harness) -> None:
    """With `[audit] notify_overrides`, the one notice goes to the manager and governance."""
    audit = replace(gw.app.config.audit, governance_address="governance@cafcass.gov.uk",
                    notify_overrides=True)
    gw.app.config = replace(gw.app.config, audit=audit)
    gw.app.users.set_manager(STAFF, MANAGER)
    data = _tagged(f"[override other-case-information: {REASON}]")
    assert await gw.run(gw.send, STAFF, RECIPIENTS, data) == {}
    assert gw.sink.messages[0].rcpt_tos == (MANAGER, "governance@cafcass.gov.uk")


async def test_subject_that_cannot_be_rewritten_safely_is_refused_and_audited(
    gw: Harness,
) -> None:
    """Removing the tag would join lines past 998 octets: 554 with the policy's sentence."""
    gw.app.users.set_manager(STAFF, MANAGER)
    tag = f"[override other-case-information: {REASON}]"
    data = _tagged(tag).replace(f"Reports {tag} for Monday".encode(),
                                b"a" * 600 + b"\r\n " + tag.encode() + b"\r\n " + b"c" * 600)
    refused = await _refused(gw, data)
    assert refused.smtp_code == 554 and "cannot be written safely" in _text(refused)
    assert "Send it again from Outlook" in _text(refused)
    assert gw.sink.messages == []
    (event,) = [e for e in _events(gw, "refusal") if e.rule == "malformed-message"]
    assert event.metadata["stage"] == "data"
