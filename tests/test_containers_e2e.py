"""Containers end to end (DESIGN ruling 22), one table through `casegate check` and through the
SMTP front with a real aiosmtpd sink upstream and the encrypted transport: what the dry run says
is what the gateway does, and nothing at all leaves for a refusal."""

from __future__ import annotations

import json
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import App
from gateway.cli import main
from policies.model import Role
from tests.containerkit import encrypted_zip, inner_message, make_zip
from tests.fixtures_content import build_message, make_docx, make_pdf
from tests.gateway_harness import STAFF, running_gateway
from tests.olekit import make_msg
from tests.sink import Sink
from transports.outbox import MaildirOutbox

CASE = "ZC12C00123"
PARENT = "dad@example.org"  # verified for CASE in every case below
STRANGER = "someone@example.org"  # verified for nothing
COLLEAGUE = "colleague@cafcass.gov.uk"
DOCX = make_docx([[f"Report for case {CASE}"]])
PDF = make_pdf([f"Letter about case {CASE}"])


@dataclass(frozen=True)
class Case:
    name: str
    attachment: tuple[str, str, bytes]  # file name, content type, bytes
    recipient: str
    verdict: str  # "deliver" or "refuse"
    action: str  # the recipient's action
    refusals: tuple[str, ...] = ()
    rule: str = ""  # the recipient's rule, when it matters
    protected: bool = True


CASES = [
    Case("editable document in a zip to a verified outside recipient",
         ("docs.zip", "application/zip", make_zip([("report.docx", DOCX)])), PARENT,
         "refuse", "encrypt", ("editable-document",)),
    Case("PDF with a case number in a zip to a verified outside recipient",
         ("docs.zip", "application/zip", make_zip([("letter.pdf", PDF)])), PARENT,
         "deliver", "encrypt", rule="encrypt-non-secure"),
    Case("encrypted zip to a verified outside recipient",
         ("docs.zip", "application/zip", encrypted_zip([("letter.pdf", PDF)])), PARENT,
         "refuse", "encrypt", ("unreadable-container",)),
    Case("encrypted zip to a colleague",
         ("docs.zip", "application/zip", encrypted_zip([("letter.pdf", PDF)])), COLLEAGUE,
         "deliver", "plain", rule="internal"),
    Case(".eml with a case number to an unverified outside address",
         ("fwd.eml", "application/octet-stream", inner_message(f"About case {CASE}.")),
         STRANGER, "refuse", "block", rule="unverified-recipient"),
    Case(".msg with a case number to an unverified outside address",
         ("fwd.msg", "application/vnd.ms-outlook", make_msg("Hearing", f"Case {CASE}.")),
         STRANGER, "refuse", "block", rule="unverified-recipient"),
    Case(".msg with a case number to the verified recipient",
         ("fwd.msg", "application/vnd.ms-outlook", make_msg("Hearing", f"Case {CASE}.")),
         PARENT, "deliver", "encrypt", rule="encrypt-non-secure"),
    Case("zip of a plain rota to an unverified outside address",
         ("rota.zip", "application/zip", make_zip([("rota.txt", b"Mon: Al, Tue: Jo")])),
         STRANGER, "deliver", "plain", rule="not-protected", protected=False),
]
IDS = [c.name for c in CASES]


def _message(case: Case) -> bytes:
    return build_message("Please see attached.", subject="Documents",
                         attachments=[case.attachment], sender=f"Jo Smith <{STAFF}>")


def _verify(app: App) -> None:
    app.registry.add(PARENT, case_number=CASE, role=Role.PARTY, verified_by=STAFF,
                     now=datetime.now(UTC))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_casegate_check(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The dry run: verdict, exit code, the recipient's action and rule, the refusals."""
    data = tmp_path / "data"
    with App.open(None, data) as app:
        _verify(app)
    eml = tmp_path / "m.eml"
    eml.write_bytes(_message(case))
    code = main(["check", str(eml), "--data", str(data), "--json", "--rcpt", case.recipient])
    out = json.loads(capsys.readouterr().out)
    assert (out["verdict"], code) == (case.verdict, 0 if case.verdict == "deliver" else 1)
    assert out["protected"] is case.protected
    [rcpt] = out["recipients"]
    assert rcpt["action"] == case.action
    if case.rule:
        assert rcpt["rule"] == case.rule
    assert tuple(r["rule"] for r in out["refusals"]) == case.refusals
    assert out["attachments"][0]["depth"] == 0
    assert all(a["depth"] == 1 for a in out["attachments"][1:])


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_smtp_front(case: Case, tmp_path: Path, sink: Sink) -> None:
    """Through the gateway: a refusal is a 550 citing the rule and nothing reaches the upstream
    or the portal; a delivery reaches exactly the way out the decision named."""
    sealed = MaildirOutbox(tmp_path / "sealed")
    async with running_gateway(tmp_path, sink, encrypted=sealed) as gw:
        _verify(gw.app)
        data = _message(case)
        if case.verdict == "refuse":
            with pytest.raises(smtplib.SMTPDataError) as refused:  # decided on the content
                await gw.run(gw.send, STAFF, [case.recipient], data)
            assert refused.value.smtp_code == 550
            cited = case.refusals or (case.rule,)
            assert all(f"rule {rule}".encode() in refused.value.smtp_error for rule in cited)
        else:
            assert await gw.run(gw.send, STAFF, [case.recipient], data) == {}
    upstream = [m.rcpt_tos for m in sink.messages]
    portal = list((tmp_path / "sealed" / "new").iterdir()) if (
        tmp_path / "sealed" / "new").exists() else []
    if case.verdict == "refuse":
        assert (upstream, portal) == ([], [])
    elif case.action == "encrypt":
        assert (upstream, len(portal)) == ([], 1)
    else:
        assert (upstream, portal) == ([(case.recipient,)], [])
