"""`casegate verify` and `casegate staff` against a real data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.app import App
from gateway.cli import main
from policies.engine import decide_at_rcpt

STAFF = "jo.bloggs@cafcass.gov.uk"


def run(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    """Run one casegate command against `data`: (exit code, stdout, stderr), audit lines removed."""
    code = main([*argv, "--data", str(data)])
    captured = capsys.readouterr()
    return code, _without_audit(captured.out), _without_audit(captured.err)


def _without_audit(text: str) -> str:
    """The output without the audit events (JSON lines for a SIEM) the audit log writes."""
    kept = [line for line in text.splitlines() if '"event": "audit"' not in line]
    return "".join(f"{line}\n" for line in kept)


def staff_account(data: Path, address: str = STAFF) -> None:
    """A staff account for `address`: `verify add --by` names one."""
    with App.open(None, data) as app:
        app.users.add(address, "a long passphrase")


def test_verify_add_list_revoke_round_trip(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Add for a case and organisation-wide, list as JSON, revoke, and see the states."""
    staff_account(tmp_path)
    code, out, _ = run(capsys, tmp_path, "verify", "add", "Mum@Gmail.com", "--case",
                       "zc12c00123", "--role", "party", "--by", STAFF, "--name", "Mary Smith")
    assert code == 0
    assert "mum@gmail.com is verified for case ZC12C00123 as party." in out
    code, _, _ = run(capsys, tmp_path, "verify", "add", "gp@nhs.net", "--organisation",
                     "--role", "professional", "--by", STAFF)
    assert code == 0

    code, out, _ = run(capsys, tmp_path, "verify", "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["address"], r["case_number"], r["role"], r["state"]) for r in rows] == [
        ("mum@gmail.com", "ZC12C00123", "party", "verified"),
        ("gp@nhs.net", None, "professional", "verified"),
    ]
    assert rows[0]["verified_by"] == STAFF and rows[0]["name"] == "Mary Smith"

    code, out, _ = run(capsys, tmp_path, "verify", "revoke", "mum@gmail.com", "--case",
                       "ZC12C00123", "--by", STAFF)
    assert (code, out.strip()) == (0, "Revoked 1 verification of mum@gmail.com.")
    code, out, _ = run(capsys, tmp_path, "verify", "list", "--case", "ZC12C00123")
    assert code == 0
    assert "revoked" in out and "gp@nhs.net" not in out


def test_verify_list_table_on_an_empty_registry(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """An empty registry says so in words."""
    assert run(capsys, tmp_path, "verify", "list")[:2] == (0, "No verified addresses.\n")


def test_adding_twice_says_already_verified(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A second add for the same case changes nothing and says why."""
    staff_account(tmp_path)
    args = ("verify", "add", "mum@gmail.com", "--case", "ZC12C00123", "--role", "party",
            "--by", STAFF)
    run(capsys, tmp_path, *args)
    code, out, _ = run(capsys, tmp_path, *args)
    assert code == 0
    assert "already verified for case ZC12C00123; nothing changed." in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("verify", "add", "x@cafcas.gov.uk", "--case", "ZC12C00123", "--role", "party",
          "--by", STAFF), "did you mean x@cafcass.gov.uk?"),
        (("verify", "add", "a%b@camden.gov.uk", "--organisation", "--role", "professional",
          "--by", STAFF), "is not a valid, plain email address"),
        (("verify", "add", "IMCEAFAX-+4412@cafcass.gov.uk", "--organisation", "--role",
          "professional", "--by", STAFF), "fax"),
        (("verify", "add", "jo.bloggs@gmail.com", "--case", "ZC12C00123", "--role", "party",
          "--by", STAFF), "personal address"),
        (("verify", "add", "sam@cafcass.gov.uk", "--organisation", "--role", "professional",
          "--by", STAFF), "needs no verification"),
        (("verify", "add", "mum@gmail.com", "--case", "12345", "--role", "party",
          "--by", STAFF), "is not a case number"),
        (("verify", "add", "mum@gmail.com", "--case", "ZC12C00123", "--role", "party",
          "--by", "someone@gmail.com"), "--by must be a Cafcass staff address"),
        (("verify", "add", "mum@gmail.com", "--case", "ZC12C00123", "--role", "party",
          "--by", "no.account@cafcass.gov.uk"), "has no staff account"),
        (("verify", "revoke", "nobody@gmail.com", "--by", STAFF), "no verification in force"),
        (("staff", "add-personal", "someone@gmail.com", "x@gmail.com"),
         "is not a Cafcass staff address"),
        (("staff", "add-personal", STAFF, "not an address"), "not a valid, plain email"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              argv: tuple[str, ...], message: str) -> None:
    """Each kind of bad input exits 2 with one clear sentence and no traceback."""
    staff_account(tmp_path)
    code, _, err = run(capsys, tmp_path, *argv)
    assert code == 2
    assert err.startswith("casegate: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_scope_is_required_for_verify_add(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """verify add without --case or --organisation is a usage error (argparse exits 2)."""
    with pytest.raises(SystemExit) as caught:
        main(["verify", "add", "mum@gmail.com", "--role", "party", "--by", STAFF,
              "--data", str(tmp_path)])
    assert caught.value.code == 2
    assert "--case" in capsys.readouterr().err


def test_staff_directory_round_trip_and_it_blocks_at_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded personal address is listed, and the gateway's decision then refuses it."""
    code, out, _ = run(capsys, tmp_path, "staff", "add-personal", STAFF, "JoJo1975@Yahoo.com")
    assert code == 0 and "jojo1975@yahoo.com is recorded" in out
    code, out, _ = run(capsys, tmp_path, "staff", "add-personal", STAFF, "jojo1975@yahoo.com")
    assert "already recorded" in out
    code, out, _ = run(capsys, tmp_path, "staff", "list", "--json")
    assert json.loads(out) == {STAFF: ["jojo1975@yahoo.com"]}

    app = App.open(config_path=None, data_dir=tmp_path)
    try:
        refused = decide_at_rcpt("sam@cafcass.gov.uk", "jojo1975@yahoo.com", app.policy,
                                 app.snapshot())
    finally:
        app.close()
    assert refused is not None and refused.rule.id == "personal-address"
