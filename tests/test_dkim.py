"""DKIM: the key command, signing what casegate wrote or rewrote, leaving relayed mail alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import dkim
import pytest

from gateway.app import dkim_signer
from gateway.config import ConfigError, DkimConfig, load_config
from gateway.stages.copies import outgoing_copies
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
from tests.dkimkit import DOMAIN, SELECTOR, dnsfunc
from transports.base import Copy, Origin, Outcome
from transports.dkim import DkimSigner, SigningTransport, make_key, txt_record, zone_line
from transports.outbox import MaildirOutbox

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SENDER = "jo@cafcass.gov.uk"
RAW = (b"From: Jo <jo@cafcass.gov.uk>\r\nTo: mum@gmail.com, dad@yahoo.co.uk\r\n"
       b"Subject: Hearing\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
       b"Message-ID: <m1@cafcass.gov.uk>\r\n\r\nSee you on Monday.\r\n")
RULE = Rule(id="plain", citation="App. 2", sentence="ok")


def _casegate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=60, check=False)


def _decision(split: bool, *addresses: str) -> Decision:
    facts = MessageFacts(
        information_type="general", protected=split, protected_reasons=(), case_numbers=(),
        identifiers=(), attachments=(), labels=(), auto_forwarded=False, overrides=(),
        sender_display_name="Jo", size=len(RAW),
    )
    decisions = tuple(
        RecipientDecision(Recipient(a, a, Category.NON_SECURE), True, Action.PLAIN, RULE,
                          Stage.DATA) for a in addresses)
    return Decision(facts=facts, sender=SENDER, recipients=decisions, refusals=(), split=split)


@pytest.fixture(scope="module")
def key() -> bytes:
    """One 2048-bit key for the module (making one takes a moment)."""
    return make_key()


def _signer(key: bytes, tmp_path: Path) -> DkimSigner:
    path = tmp_path / "dkim.pem"
    path.write_bytes(key)
    return DkimSigner.load(path, DOMAIN, SELECTOR)


def test_key_command_writes_a_private_key_and_prints_a_record_that_verifies(
        tmp_path: Path) -> None:
    """`keys dkim` writes a 0600 key, prints its TXT record in 255-octet strings, and a message
    signed with the key verifies against that record."""
    made = _casegate("keys", "dkim", "--data", "data", "--domain", DOMAIN, "--selector",
                     SELECTOR, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith(f'{SELECTOR}._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=rsa; p=')
    path = tmp_path / "data" / f"dkim-{SELECTOR}.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    signed = DkimSigner.load(path, DOMAIN, SELECTOR).sign(RAW)
    assert dkim.verify(signed, dnsfunc=dnsfunc(line))
    again = _casegate("keys", "dkim", "--data", "data", "--domain", DOMAIN, "--selector",
                      SELECTOR, "--print", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == line


def test_key_command_never_overwrites_a_key_without_force(tmp_path: Path) -> None:
    """A second `keys dkim` is refused with one sentence and keeps the key; --force replaces it."""
    args = ("keys", "dkim", "--data", "data", "--domain", DOMAIN)
    assert _casegate(*args, cwd=tmp_path).returncode == 0
    path = tmp_path / "data" / "dkim-casegate.pem"
    first = path.read_bytes()
    refused = _casegate(*args, cwd=tmp_path)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert path.read_bytes() == first
    assert _casegate(*args, "--force", cwd=tmp_path).returncode == 0
    assert path.read_bytes() != first


def test_serve_with_dkim_configured_and_no_key_exits_with_one_sentence(tmp_path: Path) -> None:
    """A [dkim] domain without a usable key stops `serve` at start-up: exit 2, one line."""
    config = tmp_path / "casegate.toml"
    config.write_text(f'[dkim]\ndomain = "{DOMAIN}"\n', encoding="utf-8")
    result = _casegate("serve", "--config", str(config), "--data", "data", "--smtp-port", "0",
                       "--http-port", "0", "--tls-port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "casegate: the DKIM key data/dkim-casegate.pem cannot be read "
        "(FileNotFoundError); make one with 'casegate keys dkim'"]
    (tmp_path / "data" / "dkim-casegate.pem").write_text("not a key\n", encoding="utf-8")
    garbled = _casegate("serve", "--config", str(config), "--data", "data", cwd=tmp_path)
    assert garbled.returncode == 2 and "not an RSA private key" in garbled.stderr
    assert "Traceback" not in garbled.stderr


def test_dkim_config_is_checked_and_off_by_default(tmp_path: Path, key: bytes) -> None:
    """No domain: no signer; a domain needs From among the signed headers and a DNS selector."""
    assert dkim_signer(DkimConfig(), tmp_path) is None
    (tmp_path / "dkim-casegate.pem").write_bytes(key)
    assert dkim_signer(DkimConfig(domain=DOMAIN), tmp_path) is not None
    for section in ('domain = "x.org"\nheaders = ["subject"]',
                    'domain = "x.org"\nselector = "a b"'):
        path = tmp_path / "c.toml"
        path.write_text(f"[dkim]\n{section}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="dkim"):
            load_config(path)


def test_copies_say_whether_casegate_changed_their_header() -> None:
    """An untouched copy is RELAYED; a split copy, or one whose Bcc was dropped, is REWRITTEN."""
    plain, _ = outgoing_copies(RAW, _decision(False, "mum@gmail.com"), "d" * 32)
    assert [c.origin for c in plain] == [Origin.RELAYED]
    split, _ = outgoing_copies(RAW, _decision(True, "mum@gmail.com", "dad@yahoo.co.uk"), "d" * 32)
    assert [c.origin for c in split] == [Origin.REWRITTEN, Origin.REWRITTEN]
    with_bcc = RAW.replace(b"Subject:", b"Bcc: boss@cafcass.gov.uk\r\nSubject:")
    stripped, _ = outgoing_copies(with_bcc, _decision(False, "mum@gmail.com"), "d" * 32)
    assert [c.origin for c in stripped] == [Origin.REWRITTEN]


async def test_signing_transport_signs_what_casegate_wrote_and_leaves_relayed_mail_alone(
        tmp_path: Path, key: bytes) -> None:
    """Authored and rewritten copies reach the outbox signed; a relayed copy arrives byte-exact,
    its sender's own signature (another key) still valid."""
    signer = _signer(key, tmp_path)
    theirs = make_key()
    their_line = zone_line("exch", "sender.example", txt_record(theirs))
    relayed = dkim.sign(RAW, b"exch", b"sender.example", theirs,
                        canonicalize=(b"relaxed", b"relaxed")) + RAW
    copies = [Copy("k1", SENDER, ("mum@gmail.com",), RAW, origin=Origin.AUTHORED),
              Copy("k2", SENDER, ("dad@yahoo.co.uk",), RAW, origin=Origin.REWRITTEN),
              Copy("k3", SENDER, ("gran@hotmail.com",), relayed, origin=Origin.RELAYED)]
    outbox = MaildirOutbox(tmp_path / "outbox")
    transport = SigningTransport(outbox, signer)
    try:
        assert (await transport.deliver(copies)).ok
    finally:
        await transport.close()
    filed = {}
    for path in (tmp_path / "outbox" / "new").iterdir():
        data = path.read_bytes()
        _, _, rest = data.partition(b"X-Casegate-Envelope-To: <")
        filed[rest.split(b">")[0].decode()] = rest.split(b"\r\n", 1)[1]
    ours = dnsfunc(zone_line(SELECTOR, DOMAIN, txt_record(key)), their_line)
    for address in ("mum@gmail.com", "dad@yahoo.co.uk"):
        assert filed[address].startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
        assert f"d={DOMAIN};".encode() in filed[address]
        assert dkim.verify(filed[address], dnsfunc=ours)
    assert filed["gran@hotmail.com"] == relayed
    assert dkim.verify(filed["gran@hotmail.com"], dnsfunc=ours)


async def test_a_copy_that_cannot_be_signed_is_not_sent_unsigned(tmp_path: Path) -> None:
    """When signing fails the delivery is PERMANENT and nothing reaches the outbox."""
    broken = DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key=b"not a key")
    transport = SigningTransport(MaildirOutbox(tmp_path / "outbox"), broken)
    try:
        result = await transport.deliver([Copy("k1", SENDER, ("mum@gmail.com",), RAW)])
    finally:
        await transport.close()
    assert result.outcome is Outcome.PERMANENT and "DKIM" in result.detail
    assert not (tmp_path / "outbox" / "new").exists() or not any(
        (tmp_path / "outbox" / "new").iterdir())
