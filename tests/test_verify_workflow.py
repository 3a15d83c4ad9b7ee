"""The verification workflow with its real parts: registry, audit log, relay to a sink, DNS stub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from policies.model import Role
from tests.dnsstub import DnsStub
from tests.gateway_harness import STAFF
from tests.sink import Sink, Step
from tests.verifykit import (
    CASE,
    RECIPIENT,
    RECIPIENT_NAME,
    START,
    VerifyKit,
    code_in,
    confirm_at_once,
    kinds,
    serve_example_domains,
    subject_of,
    text_of,
    token_in,
)
from transports.database import Database
from verification.registry import Registry, RequestState
from verification.workflow import LinkState, Outcome


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[VerifyKit]:
    async with VerifyKit.running(tmp_path) as opened:
        yield opened


async def sent(kit: VerifyKit) -> tuple[str, str]:
    """Request a verification of RECIPIENT; (token, code)."""
    result = await kit.workflow.request(kit.ask())
    assert result.outcome is Outcome.SENT, result.sentence
    return token_in(await kit.mail_to(RECIPIENT)), result.code


async def test_a_request_mails_the_recipient_without_case_information(kit: VerifyKit) -> None:
    """The invitation names the practitioner and agency, holds a link, and no case or code."""
    result = await kit.workflow.request(kit.ask())
    assert result.outcome is Outcome.SENT and len(result.code) == 6
    assert result.expires_at == kit.clock.now + timedelta(hours=72)
    invitation = await kit.mail_to(RECIPIENT)
    text = text_of(invitation)
    assert invitation.mail_from == "verify@casegate.localhost"
    assert "Jo Smith at Cafcass" in text and "/v/" in text and "This is not me" in text
    for secret in (CASE, result.code, RECIPIENT_NAME):
        assert secret not in text and secret not in subject_of(invitation)
    assert kinds(kit.events("verification-requested")) == ["verification-requested"]
    sent_event = kit.events("verification-sent")[0]
    assert sent_event.recipients == (RECIPIENT,) and sent_event.case_numbers == (CASE,)
    assert result.code not in repr(kit.events("verification-sent"))
    assert [r.state for r in kit.app.registry.requests()] == [RequestState.PENDING]


@pytest.mark.parametrize(("address", "outcome", "words"), [
    ("jane.doe@nomail.example", Outcome.UNDELIVERABLE, "does not receive email"),
    ("jane.doe@missing.example", Outcome.UNDELIVERABLE, "does not exist"),
    ("jane.doe@broken.example", Outcome.DNS_FAILURE, "DNS lookup failed"),
    ("jane.doe@cafcass.gov.uk", Outcome.REFUSED, "needs no verification"),
    ("IMCEAFAX-+2B441234567890@example.org", Outcome.REFUSED, "fax"),
    ("not an address", Outcome.REFUSED, "not a valid"),
    ("jane.doe@cafcas.gov.uk", Outcome.REFUSED, "Did you mean jane.doe@cafcass.gov.uk?"),
    ("jo.smith@gmail.com", Outcome.REFUSED, "personal address"),
])
async def test_addresses_are_checked_before_anything_is_sent(
        kit: VerifyKit, address: str, outcome: Outcome, words: str) -> None:
    """Bad syntax, lookalikes, personal, internal and undeliverable addresses get no mail."""
    result = await kit.workflow.request(kit.ask(address))
    assert result.outcome is outcome
    assert words in result.sentence
    assert not result.code and kit.inbox == []
    assert kit.app.registry.requests() == []


async def test_a_lookalike_tells_the_practitioner_the_likely_address(kit: VerifyKit) -> None:
    """A near miss of a known domain is refused with the address probably meant."""
    lookalike = await kit.workflow.request(kit.ask("j.bloggs@nhs.nett"))
    assert lookalike.outcome is Outcome.REFUSED
    assert lookalike.suggestion == "j.bloggs@nhs.net"
    assert "Did you mean j.bloggs@nhs.net?" in lookalike.sentence
    assert kit.events("verification-refused")[-1].metadata["reason"] == "lookalike"


async def test_bad_requester_name_or_case_is_refused(kit: VerifyKit) -> None:
    """Only Cafcass staff may ask; the name and the case number must be usable."""
    outsider = await kit.workflow.request(kit.ask(by="someone@example.org"))
    no_name = await kit.workflow.request(kit.ask(name="  "))
    header_injection = await kit.workflow.request(kit.ask(name="Jane\r\nBcc: x@example.org"))
    bad_case = await kit.workflow.request(kit.ask(case="12345"))
    assert [r.outcome for r in (outsider, no_name, header_injection, bad_case)] == [
        Outcome.REFUSED] * 4
    assert "not a Cafcass staff address" in outsider.sentence
    assert "not a case number" in bad_case.sentence
    assert kit.inbox == []


async def test_confirming_with_code_and_name_verifies_for_that_case(kit: VerifyKit) -> None:
    """Code plus name puts the address in the registry and tells the practitioner by email."""
    token, code = await sent(kit)
    assert kit.workflow.open_link(token).state is LinkState.OPEN
    assert not kit.app.snapshot(kit.clock.now).is_verified(RECIPIENT, (CASE,))
    answer = await kit.workflow.confirm(token, code, "  jane   DOE ")
    assert answer.state is LinkState.CONFIRMED
    snapshot = kit.app.snapshot(kit.clock.now)
    assert snapshot.is_verified(RECIPIENT, (CASE,))
    assert not snapshot.is_verified(RECIPIENT, ("ZC12C00999",))  # DESIGN ruling 3
    entry = kit.app.registry.entries()[0]
    assert (entry.method, entry.verified_by, entry.name, entry.role) == (
        "recipient-confirmed", STAFF, RECIPIENT_NAME, Role.PARTY)
    assert entry.expires_at == kit.clock.now + timedelta(days=365)
    notice = await kit.mail_to(STAFF)
    assert "now verified" in subject_of(notice) and CASE in text_of(notice)
    assert kinds(kit.events("verification-confirmed")) == ["verification-confirmed"]


async def test_a_used_link_cannot_be_replayed(kit: VerifyKit) -> None:
    """After one answer the same token shows 'cannot be used' and changes nothing."""
    token, code = await sent(kit)
    assert (await kit.workflow.confirm(token, code, RECIPIENT_NAME)).state is LinkState.CONFIRMED
    assert (await kit.workflow.confirm(token, code, RECIPIENT_NAME)).state is \
        LinkState.UNAVAILABLE
    assert (await kit.workflow.decline(token)).state is LinkState.UNAVAILABLE
    assert kit.workflow.open_link(token).state is LinkState.UNAVAILABLE
    assert len(kit.app.registry.entries()) == 1 and kit.events("verification-declined") == []


async def test_a_tampered_token_is_unknown(kit: VerifyKit) -> None:
    """A token with one character changed is not one of ours: refused and recorded."""
    token, code = await sent(kit)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await kit.workflow.confirm(forged, code, RECIPIENT_NAME)).state is \
        LinkState.UNKNOWN
    assert kit.events("verification-link-refused")[0].metadata["reason"] == "tampered"
    assert kit.app.registry.entries() == []


async def test_an_expired_link_expires_its_request(kit: VerifyKit) -> None:
    """After link_hours the link is dead, even with the right code; the request is expired."""
    token, code = await sent(kit)
    kit.clock.advance(hours=72)
    assert (await kit.workflow.confirm(token, code, RECIPIENT_NAME)).state is \
        LinkState.UNAVAILABLE
    assert [r.state for r in kit.app.registry.requests()] == [RequestState.EXPIRED]
    assert kit.events("verification-expired")[0].metadata["what"] == "link"
    assert kit.app.registry.entries() == []


async def test_five_wrong_codes_lock_the_request_and_tell_the_practitioner(
        kit: VerifyKit) -> None:
    """Each wrong code is counted; the fifth locks it, and then even the right code fails."""
    token, code = await sent(kit)
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1):
        answer = await kit.workflow.confirm(token, wrong, RECIPIENT_NAME)
        assert (answer.state, answer.wrong, answer.attempts_left) == (LinkState.OPEN, True, left)
    # The right code with the wrong name is a wrong try too.
    assert (await kit.workflow.confirm(token, code, "Someone Else")).state is LinkState.LOCKED
    assert (await kit.workflow.confirm(token, code, RECIPIENT_NAME)).state is \
        LinkState.UNAVAILABLE
    notice = await kit.mail_to(STAFF)
    assert "locked" in subject_of(notice).lower()
    assert kit.events("verification-locked")[0].grade == "medium"
    assert len(kit.events("verification-code-wrong")) == 5
    assert kit.app.registry.entries() == []


async def test_not_me_is_a_high_grade_event_and_the_practitioner_is_told(kit: VerifyKit) -> None:
    """'This is not me' declines the request, grades high and mails the practitioner."""
    token, _ = await sent(kit)
    assert (await kit.workflow.decline(token)).state is LinkState.DECLINED
    event = kit.events("verification-declined")[0]
    assert (event.grade, event.sender, event.recipients) == ("high", STAFF, (RECIPIENT,))
    notice = await kit.mail_to(STAFF)
    assert "this is not me" in subject_of(notice).lower()
    assert "Do not send anything" in text_of(notice)
    assert [r.state for r in kit.app.registry.requests()] == [RequestState.DECLINED]
    again = await kit.workflow.request(kit.ask())
    assert again.outcome is Outcome.REFUSED and "not the address you meant" in again.sentence


async def test_an_address_already_verified_is_not_mailed_again(kit: VerifyKit) -> None:
    """A second request for the same case says so; another case is a new request."""
    token, code = await sent(kit)
    await kit.workflow.confirm(token, code, RECIPIENT_NAME)
    again = await kit.workflow.request(kit.ask())
    assert again.outcome is Outcome.ALREADY_VERIFIED and "already verified" in again.sentence
    other = await kit.workflow.request(kit.ask(case="ZC12C00999"))
    assert other.outcome is Outcome.SENT
    assert len(await kit.inbox.wait_for(RECIPIENT, 2)) == 2


async def test_a_second_request_while_one_is_pending_is_refused(kit: VerifyKit) -> None:
    """One pending request per address and case; revoking it allows a new one."""
    await sent(kit)
    pending = await kit.workflow.request(kit.ask())
    assert pending.outcome is Outcome.ALREADY_PENDING and "revoke" in pending.sentence
    assert kit.workflow.revoke(RECIPIENT, by=STAFF, case_number=CASE) == 1
    assert (await kit.workflow.request(kit.ask())).outcome is Outcome.SENT


async def test_revocation_and_lapse_end_a_verification(kit: VerifyKit) -> None:
    """A revoked or lapsed verification is no longer in the engine's snapshot."""
    token, code = await sent(kit)
    await kit.workflow.confirm(token, code, RECIPIENT_NAME)
    kit.clock.advance(days=365)
    assert not kit.app.snapshot(kit.clock.now).is_verified(RECIPIENT, (CASE,))
    assert kit.workflow.expire_due() == 1
    assert kit.events("verification-expired")[-1].metadata["what"] == "verification"
    other = await kit.workflow.request(kit.ask(case="ZC12C00999"))
    token2 = token_in(await kit.mail_to(RECIPIENT, 2))
    await kit.workflow.confirm(token2, other.code, RECIPIENT_NAME)
    assert kit.workflow.revoke(RECIPIENT, by=STAFF) == 1
    assert not kit.app.snapshot(kit.clock.now).is_verified(RECIPIENT, ("ZC12C00999",))
    assert kit.events("verification-revoked")[-1].sender == STAFF


async def test_an_upstream_refusal_withdraws_the_request(tmp_path: Path) -> None:
    """When the invitation cannot be sent nothing is pending and the caller is told to retry."""
    async with Sink() as sink, DnsStub() as stub:
        serve_example_domains(stub)
        kit = VerifyKit.open(tmp_path, sink, stub)
        try:
            sink.fail(Step.RCPT, "550 5.1.1 no such user")
            result = await kit.workflow.request(kit.ask())
            assert result.outcome is Outcome.NOT_SENT and result.temporary and not result.code
            assert [r.state for r in kit.app.registry.requests()] == [RequestState.REVOKED]
        finally:
            await kit.close()


def test_two_concurrent_confirmations_cannot_both_succeed(tmp_path: Path) -> None:
    """Two connections confirming the same request at once: exactly one wins."""
    database = Database.open(tmp_path)
    first, second = Registry(database), Registry(database)
    try:
        request = first.create_request(
            RECIPIENT, case_number=CASE, role=Role.PARTY, name=RECIPIENT_NAME,
            requested_by=STAFF, channel="cli", token_id="t" * 24, code_digest="d", now=START,
            link_expires_at=START + timedelta(hours=1))
        results = confirm_at_once((first, second), request.id, START, "test")
        assert sorted(r is not None for r in results) == [False, True]
        assert len(first.entries()) == 1
        assert first.requests()[0].state is RequestState.VERIFIED
    finally:
        first.close()
        second.close()


async def test_the_practitioner_reply_carries_the_code(kit: VerifyKit) -> None:
    """The reply to a practitioner who asked by email carries the code; the invitation not."""
    result = await kit.workflow.request(kit.ask())
    mail = kit.workflow.practitioner_mail(result, STAFF)
    assert mail is not None
    assert await kit.workflow.tell("reply-1", mail)
    reply = await kit.mail_to(STAFF)
    assert code_in(text_of(reply)) == result.code
    assert "by telephone or in person" in text_of(reply)
    assert result.code not in text_of(await kit.mail_to(RECIPIENT))
