"""End to end over real sockets and real TLS: each category of recipient, splits, refusals."""

from __future__ import annotations

import smtplib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter
from gateway.audit.trail import AUDIT_DB_FILE
from gateway.stages.copies import TRACE_HEADER, RawMessage, field_name
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink
from transports.outbox import MaildirOutbox

CASE = "FD24P01234"


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


def _header_names(data: bytes) -> list[str]:
    return [field_name(f) for f in RawMessage.split_head(data)]


async def test_internal_message_is_relayed_with_trace_header(gw: Harness) -> None:
    """Mail to a colleague reaches the sink once, with the decision id in reply and header."""
    data = message(to=["colleague@cafcass.gov.uk"])
    refused = await gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"], data)
    assert refused == {}
    (received,) = gw.sink.messages
    assert received.rcpt_tos == ("colleague@cafcass.gov.uk",)
    assert received.mail_from == STAFF
    trace = [f for f in RawMessage.split_head(received.data)
             if field_name(f) == TRACE_HEADER.lower()]
    assert len(trace) == 1 and len(trace[0].split(b":")[1].strip()) == 32
    assert received.data.endswith(data[data.index(b"\r\n\r\n"):])


async def test_a_decision_that_cannot_be_recorded_never_leaves(gw: Harness) -> None:
    """The copy is handed over while the decision's event is committed, but its end of data
    waits for that commit: when the audit trail refuses it, the upstream connection is closed
    with the data unfinished, the client gets 451 and keeps the message, and its retry goes
    once the trail can be written again."""
    other = sqlite3.connect(gw.app.data_dir / AUDIT_DB_FILE)  # as another process could
    other.execute("CREATE TRIGGER refuse_decisions BEFORE INSERT ON audit_event "
                  "WHEN NEW.kind = 'decision' BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    other.commit()
    data = message(to=["colleague@cafcass.gov.uk"])
    with pytest.raises(smtplib.SMTPDataError) as later:
        await gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"], data)
    assert later.value.smtp_code == 451
    assert later.value.smtp_error.startswith(  # ours, not the onward server's
        b"4.3.0 Temporary problem at the mail gateway")
    assert gw.sink.messages == []
    other.execute("DROP TRIGGER refuse_decisions")
    other.commit()
    other.close()
    assert await gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"], data) == {}
    assert len(gw.sink.messages) == 1
    decisions = gw.app.audit.page(EventFilter(kind="decision"), limit=10)
    assert len(decisions) == 1


async def test_unprotected_mail_to_secure_and_ordinary_addresses_goes_plain(gw: Harness) -> None:
    """Without protected content, secure and ordinary external addresses get the message."""
    rcpts = ["officer@cjsm.net", "school.office@example.org"]
    refused = await gw.run(gw.send, STAFF, rcpts, message(to=rcpts))
    assert refused == {}
    (received,) = gw.sink.messages
    assert received.rcpt_tos == tuple(rcpts)


@pytest.mark.parametrize(
    ("address", "rule_text"),
    [
        ("jo.smith@gmail.com", "personal email address"),
        ("IMCEAFAX-+441234567890@cafcass.gov.uk", "fax"),
        ("someone%evil.example@example.org", "not a valid, plain email address"),
        ("someone@cafcas.gov.uk", "looks like a known secure or Cafcass address"),
    ],
)
async def test_address_rules_refuse_that_recipient_alone_at_rcpt(
    gw: Harness, address: str, rule_text: str
) -> None:
    """Personal, fax, invalid and lookalike addresses get 550 5.7.1 at RCPT; the rest goes."""
    rcpts = ["colleague@cafcass.gov.uk", address]
    refused = await gw.run(gw.send, STAFF, rcpts, message(to=["colleague@cafcass.gov.uk"]))
    code, text = refused[address]
    assert code == 550 and text.startswith(b"5.7.1 ")
    assert rule_text.encode() in text.replace(b"\n", b" ")
    (received,) = gw.sink.messages
    assert received.rcpt_tos == ("colleague@cafcass.gov.uk",)
    events = list(gw.app.audit.iterate(_filter()))
    assert any(e.kind == "refusal" and address.lower() in [r.lower() for r in e.recipients]
               for e in events)


async def test_protected_mail_to_unverified_recipient_is_refused_whole(gw: Harness) -> None:
    """A case number to an unverified outside address: 550 with the sentence, nothing leaves."""
    rcpts = ["colleague@cafcass.gov.uk", "mum@example.org"]
    data = message(to=rcpts, body=f"About case {CASE}: the hearing is on Monday.")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await gw.run(gw.send, STAFF, rcpts, data)
    assert refused.value.smtp_code == 550
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.7.1 mum@example.org: This address has not been verified")
    assert gw.sink.messages == []


async def test_refusal_lists_one_reason_per_line(gw: Harness) -> None:
    """Several reasons give a multi-line 550, message-level first."""
    rcpts = ["mum@example.org"]
    data = message(to=rcpts, body=f"Cases {CASE} and FD24P09999 are linked.")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await gw.run(gw.send, STAFF, rcpts, data)
    lines = refused.value.smtp_error.decode().split("\n")
    assert refused.value.smtp_code == 550 and len(lines) >= 2
    assert "names more than one case" in lines[0]
    assert any("has not been verified" in line for line in lines)
    assert gw.sink.messages == []


async def test_encrypt_recipient_is_held_without_an_encrypted_transport(gw: Harness) -> None:
    """With no way to encrypt (no portal), mail that needs encryption gets a 451: fail closed."""
    gw.gateway.stages.encrypted = None  # as when the portal has no keys
    gw.verify("mum@example.org", CASE)
    data = message(to=["mum@example.org"], body=f"About case {CASE}.")
    with pytest.raises(smtplib.SMTPDataError) as held:
        await gw.run(gw.send, STAFF, ["mum@example.org"], data)
    assert held.value.smtp_code == 451
    assert held.value.smtp_error.startswith(b"4.7.0 Encrypted delivery is not yet available")
    assert gw.sink.messages == []


async def test_split_shows_each_external_recipient_only_their_own_address(gw: Harness) -> None:
    """Protected mail to two verified secure addresses: one copy each, own address only."""
    externals = ["officer@cjsm.net", "nurse@nhs.net"]
    for address in externals:
        gw.verify(address, CASE)
    rcpts = ["colleague@cafcass.gov.uk", *externals]
    data = message(to=rcpts, extra_headers=["Cc: manager@cafcass.gov.uk",
                                            "Bcc: hidden@cafcass.gov.uk"],
                   body=f"Report for case {CASE} attached below.")
    refused = await gw.run(gw.send, STAFF, [*rcpts, "hidden@cafcass.gov.uk"], data)
    assert refused == {}
    by_rcpt = {m.rcpt_tos: m.data for m in gw.sink.messages}
    assert set(by_rcpt) == {("colleague@cafcass.gov.uk", "hidden@cafcass.gov.uk"),
                            ("officer@cjsm.net",), ("nurse@nhs.net",)}
    for address in externals:
        copy = by_rcpt[(address,)]
        head = b"".join(RawMessage.split_head(copy)).decode()
        assert f"To: {address}\r\n" in head
        others = [a for a in [*rcpts, "manager@", "hidden@"] if a != address]
        assert not any(other in head for other in others)
    for data_seen in by_rcpt.values():
        assert "bcc" not in _header_names(data_seen)
    ids = {f for d in by_rcpt.values() for f in RawMessage.split_head(d)
           if field_name(f) == TRACE_HEADER.lower()}
    assert len(ids) == 1  # every copy carries the same decision id


async def test_override_is_consumed_recorded_and_stripped(gw: Harness) -> None:
    """A justified override lets an overridable refusal through, is audited and never leaves."""
    gw.verify("officer@cjsm.net", CASE)
    gw.verify("officer@cjsm.net", "FD24P09999")
    gw.app.users.set_manager(STAFF, "manager@cafcass.gov.uk")  # told of the override (RRP 1.2)
    override = ("X-Casegate-Override: other-case-information; siblings' cases are heard "
                "together, agreed with my manager")
    data = message(to=["officer@cjsm.net"], extra_headers=[override],
                   body=f"Cases {CASE} and FD24P09999 are heard together.")
    refused = await gw.run(gw.send, STAFF, ["officer@cjsm.net"], data)
    assert refused == {}
    notice, received = gw.sink.messages
    assert notice.rcpt_tos == ("manager@cafcass.gov.uk",)
    assert "x-casegate-override" not in _header_names(received.data)
    [event] = [e for e in gw.app.audit.iterate(_filter()) if e.kind == "override"]
    assert event.rule == "other-case-information"
    assert event.metadata["justification"] == (
        "siblings' cases are heard together, agreed with my manager")


def _filter() -> EventFilter:
    return EventFilter()


async def test_encrypt_recipients_go_through_the_encrypted_transport(
    tmp_path: Path, sink: Sink
) -> None:
    """With an encrypted transport, encrypt copies go there and plain ones upstream: 250."""
    sealed = MaildirOutbox(tmp_path / "sealed")
    async with running_gateway(tmp_path, sink, encrypted=sealed) as gw:
        gw.verify("mum@example.org", CASE)
        rcpts = ["colleague@cafcass.gov.uk", "mum@example.org"]
        data = message(to=rcpts, extra_headers=["Bcc: hidden@cafcass.gov.uk"],
                       body=f"About case {CASE}.")
        assert await gw.run(gw.send, STAFF, rcpts, data) == {}
        assert [m.rcpt_tos for m in sink.messages] == [("colleague@cafcass.gov.uk",)]
        (filed,) = list((tmp_path / "sealed" / "new").iterdir())
        content = filed.read_bytes()
        assert b"X-Casegate-Envelope-To: <mum@example.org>" in content
        assert b"hidden@" not in content and TRACE_HEADER.encode() in content
