"""Postfix (Debian's package, its own instance) as the MTA in front of casegate: DKIM, bounces.

Postfix stands in for Exchange: staff mail is submitted to it, it relays everything to casegate
(a trusted relay peer), and casegate relays on to the sink. What casegate refuses, Postfix turns
into a bounce to the sender, which lands in the Maildir the test reads. See tests/postfix.py.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from tests import postfix
from tests.dkimkit import DOMAIN, SELECTOR, dnsfunc
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.postfix import Postfix, require_postfix, running_postfix
from tests.sink import Sink
from transports.dkim import make_key, txt_record, zone_line

ROOT = Path(__file__).resolve().parents[1]
CASE = "FD24P01234"
SECURE = ("officer@cjsm.net", "nurse@nhs.net")


@dataclass
class Chain:
    """Postfix in front of a running casegate in front of the sink, and casegate's DKIM record."""

    mta: Postfix
    gw: Harness
    record: str  # the zone line `casegate keys dkim` printed

    async def submit(self, sender: str, recipients: list[str], data: bytes) -> None:
        refused = await asyncio.to_thread(self.mta.submit, sender, recipients, data)
        assert refused == {}  # Postfix queued it; what happens next is casegate's answer


def _make_key(data_dir: Path) -> str:
    """Run `casegate keys dkim` for the gateway's data directory; its printed record."""
    made = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "dkim", "--data", str(data_dir),
         "--domain", DOMAIN, "--selector", SELECTOR],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=60, check=True)
    return made.stdout.strip()


@pytest.fixture
def postfix_available() -> None:
    """Skip (or on CI fail) before anything starts when Postfix is missing."""
    require_postfix()


@pytest.fixture
async def chain(postfix_available: None, tmp_path: Path, sink: Sink) -> AsyncIterator[Chain]:
    """casegate (DKIM on, 127.0.0.1 a trusted relay peer) and a Postfix relaying to it."""
    record = _make_key(tmp_path / "data")
    dkim_config = f'[dkim]\ndomain = "{DOMAIN}"\nselector = "{SELECTOR}"\n'
    async with running_gateway(tmp_path, sink, relay_from=["127.0.0.1/32"],
                               extra_config=dkim_config) as gw:
        with running_postfix(gw.gateway.smtp_port, local_domains=["cafcass.gov.uk"]) as mta:
            yield Chain(mta=mta, gw=gw, record=record)


def _signatures(data: bytes) -> list[str]:
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    return [" ".join(str(v).split()) for v in parsed.get_all("DKIM-Signature") or []]


async def test_split_copies_and_a_portal_notice_arrive_signed_with_the_key_command_record(
        chain: Chain) -> None:
    """Through Postfix, each split copy and the portal notification reach the sink with a
    DKIM-Signature of casegate's domain that verifies against the printed record."""
    gw = chain.gw
    for address in (*SECURE, "mum@example.org"):
        gw.verify(address, CASE)
    rcpts = [*SECURE, "mum@example.org"]
    await chain.submit(STAFF, rcpts, message(to=rcpts, body=f"Report for case {CASE}."))
    arrived = await gw.sink.wait_for_messages(3)
    by_rcpt = {m.rcpt_tos: m.data for m in arrived}
    assert set(by_rcpt) == {(a,) for a in rcpts}
    lookup = dnsfunc(chain.record)
    for address, data in by_rcpt.items():
        signatures = _signatures(data)
        assert len(signatures) == 1 and f"d={DOMAIN};" in signatures[0], address
        assert f"s={SELECTOR};" in signatures[0]
        assert dkim.verify(data, dnsfunc=lookup), address
    assert b"Secure message from" in by_rcpt[("mum@example.org",)]  # casegate wrote this one
    assert f"To: {SECURE[0]}\r\n".encode() in by_rcpt[(SECURE[0],)]  # and rewrote these


async def test_a_copy_relayed_unchanged_keeps_only_its_own_signature(chain: Chain) -> None:
    """A message casegate relays unchanged keeps the signature the sender's MTA put on it
    (another key), still valid after Postfix and casegate, and gets none of casegate's."""
    theirs = make_key()
    their_record = zone_line("exchange", DOMAIN, txt_record(theirs))
    data = message(to=["friend@example.org"], body="Lunch on Friday?")
    signed = dkim.sign(data, b"exchange", DOMAIN.encode(), theirs,
                       canonicalize=(b"relaxed", b"relaxed")) + data
    await chain.submit(STAFF, ["friend@example.org"], signed)
    [arrived] = await chain.gw.sink.wait_for_messages(1)
    signatures = _signatures(arrived.data)
    assert len(signatures) == 1 and "s=exchange;" in signatures[0]
    assert dkim.verify(arrived.data, dnsfunc=dnsfunc(their_record, chain.record))


async def test_a_policy_refusal_comes_back_as_a_postfix_bounce_the_sender_can_read(
        chain: Chain) -> None:
    """A case number to an unverified outside address: casegate refuses it, and the bounce
    Postfix writes to the sender carries casegate's sentence and the rule's citation."""
    data = message(to=["mum@example.org"], body=f"About case {CASE}: the hearing is Monday.")
    await chain.submit(STAFF, ["mum@example.org"], data)
    bounce = email.message_from_bytes(await chain.mta.next_mail(), policy=email.policy.default)
    assert bounce["To"] == STAFF and "MAILER-DAEMON" in bounce["From"]
    assert bounce.get_content_type() == "multipart/report"
    notice = bounce.get_body(preferencelist=("plain",))
    assert notice is not None
    text = " ".join(notice.get_content().split())  # lines as Postfix wrapped them, joined
    assert "mum@example.org" in text
    assert "This address has not been verified" in text
    assert "5.7.1" in text and "550" in text
    assert "IA 3.4" in text and "unverified-recipient" in text  # the rule's citation and id
    assert chain.gw.sink.messages == []


def test_a_missing_postfix_skips_here_and_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without /usr/sbin/postfix the harness skips, unless $CI is set: then it fails."""
    monkeypatch.setattr(postfix, "POSTFIX", Path("/nonexistent/postfix"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_postfix()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI"):
        require_postfix()
