"""What the gateway keeps about a message: metadata, never content (DESIGN ruling 8, SECURITY.md
item 14). One delivered and one refused protected message and a wrong password go through the
real gateway; then every file in the data directory, the event stream and the structured logs
are searched for the subject, body, attachment name and password, and the trail is checked.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.audit.store import EventFilter
from tests.gateway_harness import STAFF, running_gateway
from tests.sink import Sink

COLLEAGUE = "colleague@cafcass.gov.uk"
OUTSIDER = "mum@example.org"
MARKERS = [b"SUBJECT-MARKER", b"BODY-MARKER", b"NAME-MARKER", b"PASSWORD-MARKER"]


def _protected(to: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"Jo Smith <{STAFF}>"
    mail["To"] = to
    mail["Subject"] = "SUBJECT-MARKER about ZC12C00123"
    mail["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    mail["Message-ID"] = "<audit-test@cafcass.gov.uk>"
    mail.set_content("BODY-MARKER: the hearing is on Tuesday.")
    mail.add_attachment(b"%PDF-1.4\n%%EOF\n", maintype="application", subtype="pdf",
                        filename="NAME-MARKER report.pdf")
    return mail.as_bytes().replace(b"\n", b"\r\n")


async def test_no_content_or_secret_is_kept_and_every_event_is_chained_utc(
        tmp_path: Path, sink: Sink, capfd: pytest.CaptureFixture[str]) -> None:
    """Audit trail, event stream, logs and data files hold no subject, body, name or password."""
    with capture_logs() as logs:
        async with running_gateway(tmp_path, sink) as gw:
            assert await gw.run(gw.send, STAFF, [COLLEAGUE], _protected(COLLEAGUE)) == {}
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await gw.run(gw.send, STAFF, [OUTSIDER], _protected(OUTSIDER))
            with pytest.raises(smtplib.SMTPAuthenticationError):
                await gw.run(gw.connect, password="PASSWORD-MARKER")
            events = list(gw.app.audit.iterate(EventFilter()))
            assert gw.app.audit.verify() is None
    assert refused.value.smtp_code == 550
    assert [m.rcpt_tos for m in sink.messages] == [(COLLEAGUE,)]
    kinds = [e.kind for e in events]
    for kind in ("decision", "relay", "refusal", "auth-failure"):
        assert kind in kinds
    assert all(e.time.endswith("Z") for e in events)
    decision = next(e for e in events if e.kind == "decision")
    assert decision.case_numbers == ("ZC12C00123",) and decision.recipients == (COLLEAGUE,)
    kept = [path.read_bytes() for path in (tmp_path / "data").rglob("*") if path.is_file()]
    captured = capfd.readouterr()
    kept += [captured.out.encode(), captured.err.encode(), repr(logs).encode()]
    for marker in MARKERS:
        assert not any(marker in blob for blob in kept), marker
