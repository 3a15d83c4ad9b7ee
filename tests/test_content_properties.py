"""Properties of classify_message: it never raises, and it fails closed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policies.content import classify_message
from policies.model import MessageFacts
from tests.fixtures_content import (
    SteppingClock,
    build_message,
    default_rules,
    make_docx,
    make_pdf,
)

RULES = default_rules()
SAMPLE = build_message(
    "Dear parent,\n\nYour case ZC12C00123. DOB 01/02/2014.\n",
    subject="Welcome pack",
    html="<p>Case <b>ZC12C00123</b></p>",
    attachments=[("a.pdf", "application/pdf", make_pdf(["Court report ZC12C00123"])),
                 ("b.docx", "application/octet-stream", make_docx([["Hello", "world"]]))],
    headers=[("Sensitivity", "Private"), ("X-Casegate-Override", "rule-id; because of x y z")],
)

# Every test here runs under each scan engine (policies/scan.py).
pytestmark = pytest.mark.usefixtures("each_scan_engine")
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def consistent(facts: MessageFacts) -> None:
    """The invariants every answer keeps: protected exactly when there is a reason."""
    assert isinstance(facts, MessageFacts)
    assert facts.protected == bool(facts.protected_reasons)
    if facts.malformed:
        assert "malformed" in facts.protected_reasons
    if facts.case_numbers:
        assert "case-number" in facts.protected_reasons
    if any(not a.readable for a in facts.attachments):
        assert "unreadable-attachment" in facts.protected_reasons
    assert facts.information_type in RULES.information_type_ids


@SETTINGS
@given(st.binary(min_size=1, max_size=4096))
def test_arbitrary_bytes_never_raise_and_are_malformed(raw: bytes) -> None:
    """Any bytes give facts; without a From header they are malformed and protected."""
    facts = classify_message(raw, RULES, SteppingClock())
    consistent(facts)
    assume(b"from:" not in raw.lower())
    assert facts.malformed and facts.protected


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """The sample message with a few bytes flipped, inserted or deleted anywhere."""
    data = bytearray(SAMPLE)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "crlf"]))
        byte = draw(st.integers(0, 255))
        if operation == "flip":
            data[position] = byte
        elif operation == "insert":
            data.insert(position, byte)
        elif operation == "crlf":
            data[position:position] = b"\r\n"
        else:
            del data[position]
    return bytes(data)


@SETTINGS
@given(mutations())
def test_mutated_real_messages_never_raise(raw: bytes) -> None:
    """A real message damaged anywhere still gives consistent facts."""
    consistent(classify_message(raw, RULES, SteppingClock()))


@SETTINGS
@given(st.text(max_size=200), st.sampled_from(["Private", "Normal", "Personal", "x"]))
def test_markings_never_lower_protection(body: str, sensitivity: str) -> None:
    """Adding a Sensitivity header never turns a protected message into an unprotected one."""
    body = body + "\nCase ZC12C00123"
    plain = classify_message(build_message(body), RULES, SteppingClock())
    marked = classify_message(build_message(body, headers=[("Sensitivity", sensitivity)]),
                              RULES, SteppingClock())
    assert plain.protected and marked.protected
    assert set(plain.protected_reasons) <= set(marked.protected_reasons)


@SETTINGS
@given(st.binary(min_size=1, max_size=2048), st.sampled_from(["a.pdf", "a.docx", "a.bin"]))
def test_any_attachment_bytes_give_consistent_facts(data: bytes, name: str) -> None:
    """Whatever an attachment holds, classification answers and stays consistent."""
    raw = build_message(attachments=[(name, "application/octet-stream", data)])
    consistent(classify_message(raw, RULES, SteppingClock()))
