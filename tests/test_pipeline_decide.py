"""Where the policy decision runs: on the loop for a small message with nothing that needs a
reader of its own, else in a worker thread.

Both run the same `policies.engine.evaluate`; these tests pin which messages take the loop and
that a decision made there still sees what another process wrote to the registry.
"""

from __future__ import annotations

import smtplib
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.stages import decision
from gateway.stages import message as reply_text
from gateway.stages.decision import INLINE_DECISION_BYTES, INLINE_DECISION_DELIMITERS
from policies.engine import evaluate
from policies.model import Decision, Role
from tests.fixtures_content import build_message, make_pdf
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink
from verification.registry import Registry

CASE = "FD24P01234"


def from_staff(body: str, attachments: list[tuple[str, str, bytes]]) -> bytes:
    return build_message(body, attachments=attachments, sender=f"Jo Smith <{STAFF}>")


def csv_message(rows: int) -> bytes:
    return from_staff("See the table.", [
        ("t.csv", "text/csv", b"14/03/2025,020 7946 0018,1200.50\r\n" * rows)])


WHERE = [
    ("plain text", message(), ["loop"]),
    ("a CSV attachment", csv_message(20), ["loop"]),
    ("a PDF attachment", from_staff("x", [
        ("r.pdf", "application/pdf", make_pdf(["Please call me."]))]), ["loop", "worker"]),
    ("a PDF sent as CSV", from_staff("x", [
        ("t.csv", "text/csv", make_pdf(["Please call me."]))]), ["loop", "worker"]),
    ("too large to read on the loop", csv_message(INLINE_DECISION_BYTES // 30), ["worker"]),
    ("too many parts to read on the loop", from_staff("x", [
        (f"t{n}.txt", "text/plain", b"hello") for n in range(INLINE_DECISION_DELIMITERS)]),
     ["worker"]),
]


@pytest.mark.parametrize(("what", "raw", "readings"), WHERE, ids=[w[0] for w in WHERE])
async def test_which_messages_are_decided_on_the_loop(
        gw: Harness, monkeypatch: pytest.MonkeyPatch, what: str, raw: bytes,
        readings: list[str]) -> None:
    """A small message is read on the loop unless it holds a file that needs its own reader
    (by what it is, not its declared type): that one, and any larger one, in a worker thread.
    The real `engine.evaluate` runs each time; the test only notes the thread."""
    loop_thread = threading.current_thread()
    seen: list[str] = []

    def noted(*args: Any, **kwargs: Any) -> Decision:
        seen.append("loop" if threading.current_thread() is loop_thread else "worker")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(decision.engine, "evaluate", noted)
    assert await gw.run(gw.send, STAFF, ["a@cafcass.gov.uk"], raw) == {}, what
    assert seen == readings
    assert len(gw.sink.messages) == 1


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def test_a_decision_on_the_loop_sees_another_process_verify(gw: Harness) -> None:
    """Refused while unverified; verified by another connection (as the CLI does); sent."""
    rcpts = ["officer@cjsm.net"]
    data = message(to=rcpts, body=f"About case {CASE}: the hearing is on Monday.")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await gw.run(gw.send, STAFF, rcpts, data)
    assert refused.value.smtp_code == 550 and gw.sink.messages == []
    other = Registry(gw.app.database)
    try:
        other.add("officer@cjsm.net", case_number=CASE, role=Role.PROFESSIONAL,
                  verified_by=STAFF, now=datetime.now(UTC))
    finally:
        other.close()
    assert await gw.run(gw.send, STAFF, rcpts, data) == {}
    (received,) = gw.sink.messages
    assert received.rcpt_tos == ("officer@cjsm.net",)


@given(st.text(max_size=80)
       | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
def test_reply_text_is_folded_to_printable_ascii_either_way(text: str) -> None:
    """Reply text already printable ASCII skips the folding, with the folding's answer."""
    assert reply_text._ascii(text) == reply_text._fold_to_ascii(text)
