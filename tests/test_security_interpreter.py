"""The unpatched interpreter: CVE-2023-27043 (address misparsing) and CVE-2024-6923 (newlines
in generated headers). SECURITY.md: never derive a recipient from `email.utils` parsing, never
let a header value with a line break through; one test for each.
"""

from __future__ import annotations

import json
import smtplib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, time
from email import message_from_bytes
from email.policy import default as default_policy
from email.utils import parseaddr
from pathlib import Path

import pytest

from gateway.audit.alerts import AlertSettings, compose
from gateway.cli import main
from gateway.stages.copies import HeaderError, header_field
from gateway.stages.presentation import header_envelope
from tests.certs import ServerCert
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.portalweb import PortalWeb, protected_message
from tests.sink import Sink
from transports.portal import PortalSettings, Upload, code_email, reply_email
from verification.texts import Mail

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
COLLEAGUE = "colleague@cafcass.gov.uk"
# parseaddr on this interpreter reads the first as jo@nhs.net (secure); the mail is for evil.
MISPARSED = ["jo@nhs.net)<victim@evil.example>", "jo@nhs.net)\"<victim@evil.example>"]
# An encoded word that decodes to a line break followed by a forged header.
INJECTED_SUBJECT = "=?utf-8?q?Hello=0D=0ABcc:_stolen@evil.example?="
ALERTS = AlertSettings(governance_address="gov@cafcass.gov.uk", sender="casegate@cafcass.gov.uk",
                       alert_grades=frozenset({"high"}), digest_grades=frozenset(),
                       digest_time=time(7, 0))
BREAKS = ["a\r\nBcc: stolen@evil.example", "a\nBcc: stolen@evil.example", "a\rb", "a\x00b"]


def _header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":", 1)[0].strip().lower().decode()
            for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]


# ---- CVE-2023-27043 ---------------------------------------------------------------------


@pytest.mark.parametrize("written", MISPARSED)
def test_interpreter_is_unpatched_and_header_recipients_do_not_trust_it(written: str) -> None:
    """parseaddr misreads the address; the dry run's header reading keeps it whole instead."""
    assert parseaddr(written)[1] == "jo@nhs.net"
    raw = (f"From: <{STAFF}>\r\nTo: {written}\r\nSubject: x\r\n\r\nhi\r\n").encode()
    _, recipients = header_envelope(raw)
    assert "jo@nhs.net" not in recipients
    assert recipients == [written]


def test_dry_run_refuses_a_misparsed_header_recipient(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`casegate check` on such a To header refuses it as invalid, never calls it secure."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(message(to=[MISPARSED[0]], subject="Report ZC12C00123"))
    code = main(["check", str(eml), "--data", str(tmp_path / "data"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["verdict"] == "refuse"
    assert [r["category"] for r in out["recipients"]] == ["invalid"]
    assert all(r["address"] != "jo@nhs.net" for r in out["recipients"])


# ---- CVE-2024-6923 ----------------------------------------------------------------------


@pytest.mark.parametrize("value", BREAKS)
def test_every_header_writer_refuses_or_flattens_line_breaks(value: str) -> None:
    """Gateway copies refuse; portal, verification and alert mails never emit a second line."""
    with pytest.raises(HeaderError):
        header_field("To", value)
    settings = PortalSettings(from_address="casegate@cafcass.gov.uk")
    with pytest.raises(ValueError, match="line break"):
        code_email(settings, value, STAFF, "123456", NOW)
    written = [
        Mail(sender="verify@cafcass.gov.uk", to="mum@example.org", subject=value,
             body="hello").as_bytes(NOW),
        compose(ALERTS, value, ["intro"], ["body"], NOW),
        reply_email(settings, recipient="mum@example.org", sender=STAFF, decision_id="d",
                    text="hi", uploads=[Upload(value, "text/plain", b"x")], now=NOW).data,
    ]
    for data in written:
        names = _header_names(data)
        assert "bcc" not in names
        assert b"\x00" not in data
        assert b"stolen@evil.example\r\n\r\n" not in data


async def test_header_decoding_to_a_line_break_is_refused(tmp_path: Path, sink: Sink) -> None:
    """A Subject whose encoded word decodes to CR LF + Bcc is refused whole; nothing leaves."""
    data = message(subject=INJECTED_SUBJECT)
    gw: Harness
    async with running_gateway(tmp_path, sink) as gw:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await gw.run(gw.send, STAFF, [COLLEAGUE], data)
        assert await gw.run(gw.send, STAFF, [COLLEAGUE], message()) == {}
    assert refused.value.smtp_code == 550
    [received] = sink.messages
    assert INJECTED_SUBJECT.encode() not in received.data


@pytest.fixture
async def portal(tmp_path: Path, sink: Sink, server_cert: ServerCert) -> AsyncIterator[PortalWeb]:
    async with PortalWeb(tmp_path / "data", sink, server_cert) as running:
        yield running


async def test_portal_notification_never_carries_a_decoded_line_break(portal: PortalWeb) -> None:
    """With notify_subject on, a subject decoding to CR LF + Bcc gives one Subject, no Bcc."""
    portal.delivery.settings = replace(portal.delivery.settings, notify_subject=True)
    data = protected_message().replace(b"Subject: Poppy Example FD24P01234 report",
                                       f"Subject: {INJECTED_SUBJECT}".encode())
    await portal.deliver(data)
    [notice] = portal.sink.messages
    assert notice.rcpt_tos == ("mum@example.org",)
    names = _header_names(notice.data)
    assert "bcc" not in names and names.count("subject") == 1
    parsed = message_from_bytes(notice.data, policy=default_policy)
    subject = str(parsed["Subject"])
    assert "\r" not in subject and "\n" not in subject and "Hello" in subject
