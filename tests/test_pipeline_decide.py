"""Where the policy decision runs: on the loop for small plain text, else in a worker thread.

Both run the same `policies.engine.evaluate`; these tests pin which messages take the loop and
that a decision made there still sees what another process wrote to the registry.
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.stages import message as reply_text
from gateway.stages.decision import INLINE_DECISION_BYTES, is_small_plain_text
from gateway.stages.message import Submission
from policies.model import Role
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink
from verification.registry import Registry

CASE = "FD24P01234"
HEAD = b"From: a@cafcass.gov.uk\r\nSubject: x\r\n"


def submitted(raw: bytes) -> Submission:
    return Submission(sender=STAFF, recipients=("a@cafcass.gov.uk",), raw=raw, user=None,
                      peer="127.0.0.1")


@pytest.mark.parametrize(("raw", "small_plain"), [
    (HEAD + b"\r\nhello\r\n", True),  # no Content-Type: text/plain
    (HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n", True),
    (HEAD + b"Content-Type:\r\n TEXT/Plain\r\n\r\nhello\r\n", True),
    (HEAD + b"Content-Type: text/html\r\n\r\n<p>hello</p>\r\n", False),
    (HEAD + b"Content-Type: text/plainx\r\n\r\nhello\r\n", False),
    (HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n", False),
    (HEAD + b"Content-Type: application/pdf\r\n\r\n%PDF-1.7\r\n", False),
    (HEAD + b"Content-Type: text/plain\r\nContent-Type: multipart/mixed\r\n\r\nx\r\n", False),
    (HEAD + b"\r\n" + b"x" * INLINE_DECISION_BYTES, False),  # too large
])
def test_which_messages_are_decided_on_the_loop(raw: bytes, small_plain: bool) -> None:
    """Only one text/plain part within the size limit; anything else goes to a thread."""
    assert is_small_plain_text(submitted(raw)) is small_plain


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def test_a_decision_on_the_loop_sees_another_process_verify(gw: Harness) -> None:
    """Refused while unverified; verified by another connection (as the CLI does); sent."""
    rcpts = ["officer@cjsm.net"]
    data = message(to=rcpts, body=f"About case {CASE}: the hearing is on Monday.")
    assert is_small_plain_text(submitted(data))
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
