"""Issue 13, items 3-5, end to end: each case of tests/cases/issue13.toml through `casegate
check` and through the SMTP front, with a real aiosmtpd sink as the upstream.

Original agency check results and legal advice refused for outside recipients (nothing reaches
the upstream), legal advice delivered to the instructed lawyers, ordinary mail about checks
delivered, and family addresses split into one upstream copy per recipient.
"""

from __future__ import annotations

import json
import smtplib
import tomllib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import pytest

from gateway.app import App
from gateway.cli import main
from policies.model import Role
from tests.fixtures_content import make_pdf
from tests.gateway_harness import STAFF, running_gateway, write_config
from tests.sink import Sink

TABLE = tomllib.loads((Path(__file__).parent / "cases" / "issue13.toml").read_text("utf-8"))
CASES: list[dict[str, Any]] = TABLE["case"]


def build(case: dict[str, Any]) -> bytes:
    """The case's message as the member of staff's mail client would submit it."""
    msg = EmailMessage()
    msg["From"] = f"Jo Smith <{STAFF}>"
    msg["To"] = ", ".join(case["to"])
    if case.get("cc"):
        msg["Cc"] = ", ".join(case["cc"])
    if case.get("bcc"):
        msg["Bcc"] = ", ".join(case["bcc"])
    msg["Subject"] = case["subject"]
    msg["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    msg["Message-ID"] = "<issue13@cafcass.gov.uk>"
    body = case["body"]
    forward = case.get("forward")
    if forward is not None and forward["channel"] == "outlook":
        body += (f"\n\nFrom: Someone <{forward['author']}>\nSent: 05 January 2026 09:00\n"
                 f"To: Jo Smith <{STAFF}>\nSubject: {forward['subject']}\n\n{forward['body']}")
    elif forward is not None and forward["channel"] == "reply":
        quoted = "\n".join("> " + line for line in forward["body"].splitlines())
        body += f"\n\nOn Mon, 5 Jan 2026 at 09:00, Someone <{forward['author']}> wrote:\n{quoted}"
    msg.set_content(body)
    if forward is not None and forward["channel"] == "rfc822":
        inner = EmailMessage()
        inner["From"] = f"Someone <{forward['author']}>"
        inner["To"] = STAFF
        inner["Subject"] = forward["subject"]
        inner.set_content(forward["body"])
        msg.add_attachment(inner)
    if "attachment" in case:
        attachment = case["attachment"]
        msg.add_attachment(make_pdf([attachment["text"]]), maintype="application",
                           subtype="pdf", filename=attachment["name"])
    return msg.as_bytes(policy=SMTP)  # CRLF line endings, as a client sends


def envelope(case: dict[str, Any]) -> list[str]:
    return [*case["to"], *case.get("cc", ()), *case.get("bcc", ())]


def extra_config(case: dict[str, Any], org: Path) -> str:
    return (f'[policy]\nfiles = ["{org}"]\n'
            f'multiple_external = "{case.get("mode", "split")}"\n')


def register(app: App, case: dict[str, Any]) -> None:
    """The case's verified recipients, in the real registry."""
    for entry in case.get("verified", ()):
        app.registry.add(entry["address"], case_number=entry.get("case"),
                         role=Role(entry["role"]), verified_by=STAFF, now=datetime.now(UTC))


def copies(envelopes: list[tuple[str, ...]]) -> list[list[str]]:
    return sorted(sorted(rcpts) for rcpts in envelopes)


@pytest.mark.parametrize("case", CASES, ids=[c["name"][:60] for c in CASES])
def test_check(case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`casegate check` gives the case's verdict, type, refusals, actions and split."""
    org = tmp_path / "org.toml"
    org.write_text(TABLE["org"], encoding="utf-8")
    config = write_config(tmp_path / "casegate.toml", None, extra_config(case, org))
    with App.open(config, tmp_path / "data") as app:
        register(app, case)
    eml = tmp_path / "m.eml"
    eml.write_bytes(build(case))
    code = main(["check", str(eml), "--data", str(tmp_path / "data"), "--config", str(config),
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    expect = case["expect"]
    assert (code, out["verdict"]) == ((0, "deliver") if expect["verdict"] == "deliver"
                                      else (1, "refuse")), out
    assert [r["address"] for r in out["recipients"]] == envelope(case)
    if "information_type" in expect:
        assert out["information_type"] == expect["information_type"]
    if "refusals" in expect:
        assert [r["rule"] for r in out["refusals"]] == expect["refusals"]
        for refusal in out["refusals"]:
            assert refusal["citation"] and refusal["reason"]
    if "actions" in expect:
        assert [r["action"] for r in out["recipients"]] == expect["actions"]
    if "split" in expect:
        assert out["split"] is expect["split"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"][:60] for c in CASES])
async def test_smtp(case: dict[str, Any], tmp_path: Path, sink: Sink) -> None:
    """Through the SMTP front: a refusal is a 550 and nothing reaches the upstream; a delivery
    reaches it as the listed copies (a split: one per external recipient)."""
    org = tmp_path / "org.toml"
    org.write_text(TABLE["org"], encoding="utf-8")
    async with running_gateway(tmp_path, sink, extra_config=extra_config(case, org)) as gw:
        register(gw.app, case)
        data = build(case)
        if case["expect"]["verdict"] == "refuse":
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await gw.run(gw.send, STAFF, envelope(case), data)
            assert refused.value.smtp_code == 550
            reply = refused.value.smtp_error.decode()
            for rule in case["expect"].get("refusals", ()):
                assert f"(rule {rule})" in reply
        else:
            assert await gw.run(gw.send, STAFF, envelope(case), data) == {}
        received = list(sink.messages)
    assert copies([m.rcpt_tos for m in received]) == copies(
        [tuple(c) for c in case["expect"]["copies"]])
    for message in received:
        if len(message.rcpt_tos) == 1 and case["expect"].get("split"):
            # A split copy shows only its own recipient (the internal copy is the original).
            (own,) = message.rcpt_tos
            others = [a for a in envelope(case) if a != own and not a.endswith("cafcass.gov.uk")]
            if not own.endswith("cafcass.gov.uk"):
                assert not any(a.encode() in message.data for a in others)
