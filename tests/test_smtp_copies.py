"""Building outgoing copies: split, Bcc removed, overrides stripped, trace header, no injection."""

from __future__ import annotations

import pytest

from gateway.stages.copies import TRACE_HEADER, HeaderError, RawMessage, build_copies, header_field
from policies.model import (
    Action,
    Category,
    Decision,
    MessageFacts,
    Recipient,
    RecipientDecision,
    Rule,
    Stage,
)

SENDER = "jo@cafcass.gov.uk"
RAW = (
    b"From: Jo <jo@cafcass.gov.uk>\r\n"
    b"To: mum@gmail.com, dad@yahoo.co.uk,\r\n"
    b"  colleague@cafcass.gov.uk\r\n"
    b"Cc: gran@hotmail.com\r\n"
    b"Bcc: secret@cafcass.gov.uk\r\n"
    b"Resent-Bcc: other@cafcass.gov.uk\r\n"
    b"X-Casegate-Override: other-cases; manager agreed\r\n"
    b"X-Casegate-Decision: forged\r\n"
    b"Subject: Hearing on Monday\r\n"
    b"\r\n"
    b"Body line one.\r\n"
    b"Bcc: this is body text, not a header\r\n"
)
RULE = Rule(id="plain", citation="App. 2", sentence="ok")


def _decision(split: bool, *recipients: tuple[str, Category]) -> Decision:
    facts = MessageFacts(
        information_type="general", protected=split, protected_reasons=(), case_numbers=(),
        identifiers=(), attachments=(), labels=(), auto_forwarded=False, overrides=(),
        sender_display_name="Jo", size=len(RAW),
    )
    decisions = tuple(
        RecipientDecision(Recipient(address, address, category), True, Action.PLAIN, RULE,
                          Stage.DATA)
        for address, category in recipients
    )
    return Decision(facts=facts, sender=SENDER, recipients=decisions, refusals=(), split=split)


def _names(data: bytes) -> list[str]:
    return [f.split(b":")[0].decode().lower() for f in RawMessage.split_head(data)]


def test_split_gives_each_external_recipient_only_their_own_address() -> None:
    """Internal recipients share the original; each external copy shows only its recipient."""
    decision = _decision(True, ("colleague@cafcass.gov.uk", Category.INTERNAL),
                         ("mum@gmail.com", Category.NON_SECURE),
                         ("dad@yahoo.co.uk", Category.NON_SECURE))
    copies = build_copies(RAW, decision, "d" * 32)
    assert [c.recipients for c in copies] == [
        ("colleague@cafcass.gov.uk",), ("mum@gmail.com",), ("dad@yahoo.co.uk",)]
    internal, mum, dad = (c.data for c in copies)
    assert b"dad@yahoo.co.uk" in internal and b"gran@hotmail.com" in internal
    for data, own, others in ((mum, b"mum@gmail.com", (b"dad@", b"gran@", b"colleague@")),
                              (dad, b"dad@yahoo.co.uk", (b"mum@", b"gran@", b"colleague@"))):
        assert f"To: {own.decode()}\r\n".encode() in data
        assert not any(other in data for other in others)
        assert "cc" not in _names(data)
    assert all(c.mail_from == SENDER for c in copies)


def test_bcc_overrides_and_forged_trace_never_leave() -> None:
    """Bcc, Resent-Bcc, the override header and a forged trace header are stripped."""
    decision = _decision(False, ("colleague@cafcass.gov.uk", Category.INTERNAL),
                         ("mum@gmail.com", Category.NON_SECURE))
    (copy,) = build_copies(RAW, decision, "a1" * 16)
    names = _names(copy.data)
    assert "bcc" not in names and "resent-bcc" not in names
    assert "x-casegate-override" not in names
    assert names.count(TRACE_HEADER.lower()) == 1
    assert f"{TRACE_HEADER}: {'a1' * 16}\r\n".encode() in copy.data
    assert b"secret@" not in copy.data and b"forged" not in copy.data
    assert copy.recipients == ("colleague@cafcass.gov.uk", "mum@gmail.com")


def test_body_bytes_are_relayed_exactly() -> None:
    """The body after the header block is exactly the submitted bytes."""
    decision = _decision(False, ("colleague@cafcass.gov.uk", Category.INTERNAL))
    (copy,) = build_copies(RAW, decision, "b" * 32)
    body = RAW[RAW.index(b"\r\n\r\n"):]
    assert copy.data.endswith(body)


def test_copy_keys_are_stable_for_a_retry() -> None:
    """The same submission gives the same keys (the relay's ledger), whatever the decision id."""
    decision = _decision(True, ("mum@gmail.com", Category.NON_SECURE),
                         ("dad@yahoo.co.uk", Category.NON_SECURE))
    first = build_copies(RAW, decision, "1" * 32)
    second = build_copies(RAW, decision, "2" * 32)
    assert [c.key for c in first] == [c.key for c in second]
    assert first[0].key != first[1].key


def test_header_values_with_line_breaks_are_refused() -> None:
    """A value carrying CR, LF or NUL into a header is refused (CVE-2024-6923 class)."""
    with pytest.raises(HeaderError):
        header_field("To", "a@example.org\r\nBcc: x@example.org")
    with pytest.raises(HeaderError):
        header_field("To", "a@example.org\nX: y")
    decision = _decision(True, ("a@example.org\rBcc: x@evil.example", Category.NON_SECURE))
    with pytest.raises(HeaderError):
        build_copies(RAW, decision, "c" * 32)


def test_message_without_body_keeps_a_header_terminator() -> None:
    """A header-only message still ends its header block."""
    raw = b"From: jo@cafcass.gov.uk\r\nSubject: x\r\n"
    decision = _decision(False, ("colleague@cafcass.gov.uk", Category.INTERNAL))
    (copy,) = build_copies(raw, decision, "e" * 32)
    assert copy.data.endswith(b"Subject: x\r\n\r\n")
