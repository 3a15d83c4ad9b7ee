"""`casegate check`: the dry run gives the gateway's decision, with the documented exit codes."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.app import App
from gateway.cli import main

STAFF = "jane.smith@cafcass.gov.uk"


def make_message(to: str, body: str, *, subject: str = "Hello", cc: str = "",
                 bcc: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Jane Smith <{STAFF}>"
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if bcc:
        msg["Bcc"] = bcc
    msg["Subject"] = subject
    msg.set_content(body)
    return bytes(msg)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory where STAFF has an account (`verify add --by` names one)."""
    with App.open(None, tmp_path / "data") as app:
        app.users.add(STAFF, "a long passphrase")
    return tmp_path / "data"


def run_check(capsys: pytest.CaptureFixture[str], data: Path, path: Path,
              *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["check", str(path), "--data", str(data), "--json", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_unprotected_mail_to_freemail_is_delivered_plain(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A note with no case information may go to any valid address in plain text."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("bob.jones@example.org", "The meeting room is booked."))
    code, out = run_check(capsys, data, eml)
    assert code == 0
    assert out["verdict"] == "deliver"
    assert out["protected"] is False
    [rcpt] = out["recipients"]
    assert rcpt["action"] == "plain"
    assert rcpt["category"] == "non_secure"


def test_json_shape_is_the_documented_contract(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every documented key is present with the documented type."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("parent@example.org", "Re case ZC12C00123, see report."))
    _, out = run_check(capsys, data, eml)
    assert set(out) >= {"verdict", "information_type", "protected", "case_numbers", "split",
                        "recipients", "refusals"}
    assert out["case_numbers"] == ["ZC12C00123"]
    for rcpt in out["recipients"]:
        assert set(rcpt) >= {"address", "category", "verified", "action", "rule", "citation",
                             "reason"}
        assert rcpt["reason"] and rcpt["citation"]


def test_protected_mail_to_unverified_parent_is_refused_then_encrypted_once_verified(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verification for the case turns a refusal into encrypted delivery; exit codes follow."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("parent@example.org", "Case ZC12C00123: the report is attached."))
    code, out = run_check(capsys, data, eml)
    assert code == 1
    assert out["verdict"] == "refuse"
    assert out["recipients"][0]["action"] == "block"
    assert out["recipients"][0]["rule"] == "unverified-recipient"

    assert main(["verify", "add", "parent@example.org", "--case", "ZC12C00123",
                 "--role", "party", "--by", STAFF, "--data", str(data)]) == 0
    capsys.readouterr()
    code, out = run_check(capsys, data, eml)
    assert code == 0
    assert out["recipients"][0]["action"] == "encrypt"
    assert out["recipients"][0]["verified"] is True


def test_verified_for_one_case_is_not_verified_for_another(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A parent verified for case A does not receive case B's report (DESIGN ruling 3)."""
    assert main(["verify", "add", "parent@example.org", "--case", "ZC12C00123",
                 "--role", "party", "--by", STAFF, "--data", str(data)]) == 0
    capsys.readouterr()
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("parent@example.org", "Case ZC99C00999 report."))
    code, out = run_check(capsys, data, eml)
    assert code == 1
    assert out["recipients"][0]["rule"] == "unverified-recipient"


def test_envelope_options_override_headers(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--rcpt replaces the header recipients: the Bcc'd address in headers is not decided."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("a@example.org", "hello", bcc="b@example.org"))
    _, out = run_check(capsys, data, eml, "--rcpt", "colleague@cafcass.gov.uk")
    assert [r["address"] for r in out["recipients"]] == ["colleague@cafcass.gov.uk"]
    assert out["recipients"][0]["category"] == "internal"


def test_header_recipients_include_bcc(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --rcpt the envelope is To, Cc and Bcc."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("a@example.org", "hello", cc="c@example.org",
                                 bcc="b@example.org"))
    _, out = run_check(capsys, data, eml)
    assert [r["address"] for r in out["recipients"]] == [
        "a@example.org", "c@example.org", "b@example.org"]


def test_human_output_names_rule_and_what_to_do(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default output is a table with the rule and the sentence for the sender."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("someone@faxmail.com", "Case ZC12C00123"))
    code = main(["check", str(eml), "--data", str(data),
                 "--rcpt", "IMCEAFAX-+4420123456@cafcass.gov.uk"])
    out = capsys.readouterr().out
    assert code == 1
    assert "REFUSED" in out
    assert "fax" in out
    assert "Refused recipients, and what to do:" in out
    assert "IMCEAFAX-+4420123456@cafcass.gov.uk: " in out


def test_human_output_puts_message_refusals_with_their_citation(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A message-level refusal is listed with its own rule and citation, apart from recipients."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("clerk@court.cjsm.net", "Cases ZC12C00123 and ZC12C00124."))
    assert main(["check", str(eml), "--data", str(data)]) == 1
    out = capsys.readouterr().out
    refused = out.split("The whole message is refused because:")[1]
    first = refused.strip().splitlines()[0]
    assert "[other-case-information: " in first


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("missing", "no such file"),
        ("empty", "is empty"),
        ("directory", "is a directory"),
        ("no-recipients", "no recipients"),
    ],
)
def test_bad_input_is_exit_2_with_one_sentence(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], setup: str,
        expected: str) -> None:
    """Bad input gives exit 2 and one clear sentence on stderr."""
    path = tmp_path / "m.eml"
    if setup == "empty":
        path.write_bytes(b"")
    elif setup == "directory":
        path.mkdir()
    elif setup == "no-recipients":
        path.write_bytes(b"From: a@cafcass.gov.uk\r\nSubject: x\r\n\r\nbody\r\n")
    code = main(["check", str(path), "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1


def test_bad_config_names_file_and_key(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config error says which file and which key."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(make_message("a@example.org", "hello"))
    config = tmp_path / "casegate.toml"
    config.write_text("[smtp]\nport = 'twenty-five'\n")
    code = main(["check", str(eml), "--data", str(data), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(config) in err
    assert "smtp.port" in err


def test_console_script_bad_input_has_no_traceback(tmp_path: Path) -> None:
    """The installed entry point exits 2 without a traceback on bad input."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(tmp_path / "nope.eml"),
         "--data", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no such file" in proc.stderr


def test_replay_counts_by_rule(tmp_path: Path, data: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """Replay decides each message of an mbox and summarises by rule."""
    box_path = tmp_path / "sent.mbox"
    box = mailbox.mbox(box_path)
    box.add(make_message("bob@example.org", "Lunch at one?"))
    box.add(make_message("parent@example.org", "Case ZC12C00123 report attached."))
    box.add(make_message("colleague@cafcass.gov.uk", "Case ZC12C00123 notes."))
    box.flush()
    box.close()
    code = main(["replay", str(box_path), "--data", str(data), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    summary = lines[-1]["summary"]
    assert summary["messages"] == 3
    assert summary["verdicts"] == {"deliver": 2, "refuse": 1}
    assert summary["by_rule"]["block:unverified-recipient"] == 1
    assert [line["verdict"] for line in lines[:-1]] == ["deliver", "refuse", "deliver"]


def test_replay_reads_maildir_and_rejects_non_mailbox(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Maildir works the same; a file that is no mailbox is exit 2."""
    md = mailbox.Maildir(tmp_path / "Sent")
    md.add(make_message("bob@example.org", "hello"))
    assert main(["replay", str(tmp_path / "Sent"), "--data", str(data)]) == 0
    assert "1 messages: 1 would be delivered" in capsys.readouterr().out
    junk = tmp_path / "junk.txt"
    junk.write_text("not a mailbox")
    assert main(["replay", str(junk), "--data", str(data)]) == 2
    assert "not an mbox" in capsys.readouterr().err
