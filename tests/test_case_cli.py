"""`casegate case` and `casegate verify add --name` against a real data directory, with the
stores' database on SQLite and on PostgreSQL (CASEGATE_DATABASE_URL, as an operator sets it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.app import App
from gateway.audit.trail import EventFilter, StoredEvent
from gateway.cli import main
from policies.events import EventKind
from transports.database import Database
from verification.cases import CASES_DB_FILE

STAFF = "jo.bloggs@cafcass.gov.uk"
MANAGER = "sam.manager@cafcass.gov.uk"
CASE = "ZC12C00123"
NAME = "Ellie Mae Whitfield"
DETAIL = "14 Larkspur Close, Leeds LS1 4AB"


def run(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    """One casegate command against `data`: (exit code, stdout, stderr)."""
    code = main([*argv, "--data", str(data)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def opened(data: Path) -> App:
    """The App on `data`, on the database the commands use (CASEGATE_DATABASE_URL)."""
    return App.open(None, data, database_url=os.environ.get("CASEGATE_DATABASE_URL"))


@pytest.fixture
def data(tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory with a staff account for STAFF (`--by` must name one)."""
    if database.url:
        monkeypatch.setenv("CASEGATE_DATABASE_URL", database.url)
    root = tmp_path / "data"
    with opened(root) as app:
        app.users.add(STAFF, "a long passphrase")
    return root


def events(data: Path, kind: str = "") -> list[StoredEvent]:
    with opened(data) as app:
        return [e for e in app.audit.iterate(EventFilter(kind=kind))
                if e.kind.startswith("case-")]


def test_record_show_list_remove_round_trip(data: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A person, a detail and a shield recorded, shown, listed and taken back, each audited."""
    code, out, _ = run(capsys, data, "case", "person", "zc12c00123", "--name", NAME, "--role",
                       "child", "--dob", "2017-03-04", "--by", STAFF)
    assert (code, out) == (0, "P1 (E.M.W, child, with date of birth) is recorded for case "
                              "ZC12C00123.\n")
    code, out, _ = run(capsys, data, "case", "confidential", CASE, "--text", DETAIL, "--kind",
                       "address", "--may-go-to", "Solicitor@LawFirm.co.uk", "--may-go-to",
                       "nhs.net", "--by", STAFF)
    assert (code, out) == (0, "D1 (address) is recorded as confidential for case ZC12C00123; "
                              "it may go to solicitor@lawfirm.co.uk, nhs.net and Cafcass.\n")
    code, out, _ = run(capsys, data, "case", "shield", CASE, "--access", STAFF, "--access",
                       MANAGER, "--by", STAFF)
    assert (code, out) == (0, f"Case {CASE} is shielded; only {STAFF}, {MANAGER} may send mail "
                              "about it.\n")

    code, out, _ = run(capsys, data, "case", "show", CASE)
    assert code == 0
    assert "P1  E.M.W     child  yes" in out and "D1  address" in out
    assert f"access: {STAFF}, {MANAGER}" in out and "Whitfield" not in out
    code, out, _ = run(capsys, data, "case", "list", "--json")
    assert json.loads(out) == [{"case_number": CASE, "people": 1, "details": 1,
                                "shielded": True}]
    code, out, _ = run(capsys, data, "case", "list")
    assert out.splitlines()[1].split() == [CASE, "1", "1", "yes"]

    for what, said in ((["--person", "P1"], "P1 (E.M.W) is no longer recorded"),
                       (["--detail", "d1"], "D1 (address) is no longer recorded"),
                       (["--shield"], f"Case {CASE} is no longer shielded.")):
        code, out, _ = run(capsys, data, "case", "remove", CASE, *what, "--by", STAFF)
        assert code == 0 and said in out
    assert run(capsys, data, "case", "show", CASE)[1] == f"Nothing is recorded for case {CASE}.\n"

    recorded = events(data)
    assert [e.kind for e in recorded] == [
        "case-person-recorded", "case-detail-recorded", "case-shielded",
        "case-person-removed", "case-detail-removed", "case-unshielded"]
    assert all(e.case_numbers == (CASE,) and e.sender == STAFF for e in recorded)
    assert recorded[0].metadata == {"person_id": "P1", "role": "child", "channel": "cli",
                                    "date_of_birth_recorded": True}
    assert recorded[1].metadata["detail_kind"] == "address"
    assert recorded[2].metadata["access"] == [STAFF, MANAGER]
    trail = json.dumps([e.as_dict() for e in recorded]).lower()
    assert not [w for w in ("ellie", "whitfield", "larkspur", "2017-03-04") if w in trail]


def test_json_answers(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the entry or the case as one JSON document, never the name or text."""
    code, out, _ = run(capsys, data, "case", "person", CASE, "--name", NAME, "--role", "party",
                       "--by", STAFF, "--json")
    person = json.loads(out)
    assert (code, person["id"], person["initials"], person["role"]) == (0, "P1", "E.M.W",
                                                                         "party")
    assert person["date_of_birth_recorded"] is False and "name" not in person
    run(capsys, data, "case", "confidential", CASE, "--text", DETAIL, "--kind", "school",
        "--by", STAFF)
    shown = json.loads(run(capsys, data, "case", "show", CASE, "--json")[1])
    assert (shown["case_number"], shown["shielded"], shown["shield"]) == (CASE, False, None)
    assert [d["kind"] for d in shown["details"]] == ["school"]
    assert shown["details"][0]["may_go_to"] == []
    assert "Larkspur" not in out and "Ellie" not in json.dumps(shown)


BAD_INPUT = [
    (["person", "ZC12", "--name", NAME, "--role", "child"],
     "'ZC12' is not a case number (like ZC12C00123)"),
    (["person", CASE, "--name", "", "--role", "child"],
     "give the person's full name (first and last name)"),
    (["person", CASE, "--name", "Ellie", "--role", "child"],
     "give the person's full name (first and last name), not one word"),
    (["person", CASE, "--name", NAME, "--role", "child", "--dob", "2099-01-01"],
     "the date of birth 2099-01-01 is in the future"),
    (["person", CASE, "--name", NAME, "--role", "child", "--dob", "04/03/2017"],
     "'04/03/2017' is not a date written YYYY-MM-DD"),
    (["confidential", CASE, "--text", " ", "--kind", "address"],
     "give the text of the confidential detail"),
    (["confidential", CASE, "--text", DETAIL, "--kind", "gp", "--may-go-to", "not an address"],
     "'not an address' is not an email address or a domain"),
    (["shield", CASE], "a shielded case needs at least one member of staff with access "
                       "(--access STAFF)"),
    (["shield", CASE, "--access", "dad@gmail.com"],
     "--access must be a Cafcass staff address, not 'dad@gmail.com'"),
    (["remove", CASE, "--person", "P9"], "case ZC12C00123 has no person P9 to remove"),
    (["remove", CASE, "--detail", "x"], "'x' is not an id like D7"),
    (["remove", CASE, "--shield"], "case ZC12C00123 is not shielded"),
]


@pytest.mark.parametrize(("argv", "sentence"), BAD_INPUT)
def test_bad_input_is_one_sentence_and_records_nothing(
        data: Path, capsys: pytest.CaptureFixture[str], argv: list[str], sentence: str) -> None:
    """Exit 2, `casegate: <sentence>` on stderr, nothing on stdout, nothing recorded."""
    code, out, err = run(capsys, data, "case", *argv, "--by", STAFF)
    assert (code, out, err) == (2, "", f"casegate: {sentence}\n")
    assert events(data) == []
    with opened(data) as app:
        assert app.cases.cases() == []


@pytest.mark.parametrize(("by", "sentence"), [
    ("nobody@cafcass.gov.uk", "--by nobody@cafcass.gov.uk has no staff account"),
    ("jo@gmail.com", "--by must be a Cafcass staff address, not 'jo@gmail.com'"),
])
def test_by_must_be_a_staff_account(data: Path, capsys: pytest.CaptureFixture[str], by: str,
                                    sentence: str) -> None:
    for argv in (["person", CASE, "--name", NAME, "--role", "child"],
                 ["confidential", CASE, "--text", DETAIL, "--kind", "address"],
                 ["shield", CASE, "--access", STAFF],
                 ["remove", CASE, "--shield"]):
        code, out, err = run(capsys, data, "case", *argv, "--by", by)
        assert code == 2 and out == "" and err.startswith(f"casegate: {sentence}")
        assert err.count("\n") == 1
    assert events(data) == []


def test_a_disabled_account_cannot_record(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with opened(data) as app:
        app.users.disable(STAFF)
    code, _, err = run(capsys, data, "case", "person", CASE, "--name", NAME, "--role", "child",
                       "--by", STAFF)
    assert code == 2 and "is a disabled account" in err


def test_recording_twice_is_refused(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("case", "person", CASE, "--name", NAME, "--role", "child", "--by", STAFF)
    assert run(capsys, data, *argv)[0] == 0
    code, _, err = run(capsys, data, "case", "person", CASE, "--name", "ellie  mae WHITFIELD",
                       "--role", "child", "--by", STAFF)
    assert (code, err) == (2, "casegate: that person is already recorded for case ZC12C00123 "
                              "as P1\n")


def test_verify_add_with_a_name_records_the_party(data: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A party verified for a case with --name is also a person of the case; a professional,
    an organisation-wide entry, or no --name records nobody; a one-word name is refused before
    anything is recorded."""
    code, out, _ = run(capsys, data, "verify", "add", "mum@example.org", "--case", CASE,
                       "--role", "party", "--by", STAFF, "--name", "Gemma Whitfield")
    assert code == 0
    assert out.splitlines() == [f"mum@example.org is verified for case {CASE} as party.",
                                f"P1 (G.W, party) is recorded for case {CASE}."]
    code, out, _ = run(capsys, data, "verify", "add", "mum@example.org", "--case", CASE,
                       "--role", "party", "--by", STAFF, "--name", "gemma whitfield")
    assert code == 0 and out.splitlines()[1] == (
        f"That person is already recorded for case {CASE} as P1.")
    run(capsys, data, "verify", "add", "sw@council.gov.uk", "--case", CASE, "--role",
        "professional", "--by", STAFF, "--name", "Pat Jones")
    run(capsys, data, "verify", "add", "dad@example.org", "--case", CASE, "--role", "party",
        "--by", STAFF)
    code, out, err = run(capsys, data, "verify", "add", "gran@example.org", "--case", CASE,
                         "--role", "party", "--by", STAFF, "--name", "Gran")
    assert (code, out) == (2, "")
    assert err == ("casegate: --name: give the person's full name (first and last name), not "
                   "one word\n")
    with opened(data) as app:
        people = app.cases.case(CASE).people
        assert [(p.person_id, p.initials, p.source) for p in people] == [
            ("P1", "G.W", "verification")]
        assert [e.address for e in app.registry.entries()] == [
            "mum@example.org", "sw@council.gov.uk", "dad@example.org"]
        assert app.snapshot().cases.match(["Gemma Whitfield rang"]).case_numbers == (CASE,)
    assert [e.metadata["channel"] for e in events(data, "case-person-recorded")] == [
        "verification"]


def test_the_installed_command_and_the_files_it_leaves(data: Path) -> None:
    """The real `casegate` entry point in a subprocess; the registry (its file, or its rows in
    PostgreSQL) holds no name."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "case", "person", CASE, "--name", NAME, "--role",
         "child", "--dob", "2017-03-04", "--by", STAFF, "--data", str(data), "--json"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == "P1"
    url = os.environ.get("CASEGATE_DATABASE_URL")
    if url:  # every row of the case tables, as the database holds them
        with psycopg.connect(url) as db:
            stored = repr([db.execute(f"SELECT * FROM {table}").fetchall()
                           for table in ("case_people", "case_details")]).encode().lower()
    else:
        stored = b"".join(p.read_bytes() for p in data.glob(f"{CASES_DB_FILE}*")).lower()
    assert stored and b"ellie" not in stored and b"whitfield" not in stored
    assert b"2017-03-04" not in stored
    assert (data / "case-index.key").stat().st_mode & 0o777 == 0o600
    assert EventKind.CASE_PERSON_RECORDED in {e.kind for e in events(data)}


def check(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path, body: str,
          sender: str, rcpt: str) -> tuple[int, dict[str, Any]]:
    """`casegate check --json` on a message with `body` from `sender` to `rcpt`."""
    message = tmp_path / "message.eml"
    message.write_bytes((f"From: {sender}\r\nTo: {rcpt}\r\nSubject: contact\r\n\r\n{body}\r\n"
                         ).encode())
    code, out, _ = run(capsys, data, "check", str(message), "--from", sender, "--rcpt", rcpt,
                       "--json")
    return code, json.loads(out)


def test_what_the_cli_records_is_what_check_decides_on(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The registry reaches the engine through App.snapshot: a person recorded with `case
    person` is recognised by `check`, a detail with `case confidential` refuses an outside
    recipient not listed, and `case shield` refuses a sender not on the access list."""
    run(capsys, data, "case", "person", CASE, "--name", NAME, "--role", "child", "--by", STAFF)
    code, decision = check(capsys, data, tmp_path, "Ellie Whitfield missed contact.", STAFF,
                           "colleague@cafcass.gov.uk")
    assert code == 0 and decision["case_numbers"] == [CASE]
    assert decision["case_people"] == [{"case": CASE, "person": "P1", "role": "child",
                                        "signal": "full-name"}]

    run(capsys, data, "verify", "add", "dad@example.org", "--case", CASE, "--role", "party",
        "--by", STAFF)
    run(capsys, data, "case", "confidential", CASE, "--text", DETAIL, "--kind", "address",
        "--by", STAFF)
    code, decision = check(capsys, data, tmp_path, "She now lives at 14 Larkspur Close,\r\n"
                           "Leeds LS14AB.", STAFF, "dad@example.org")
    assert code == 1 and decision["recipients"][0]["rule"] == "confidential-information"

    run(capsys, data, "case", "shield", CASE, "--access", STAFF, "--by", STAFF)
    code, decision = check(capsys, data, tmp_path, "Ellie Whitfield missed contact.",
                           MANAGER, "colleague@cafcass.gov.uk")
    assert code == 1 and [r["rule"] for r in decision["refusals"]] == ["shielded-case"]
    code, decision = check(capsys, data, tmp_path, "Ellie Whitfield missed contact.", STAFF,
                           "colleague@cafcass.gov.uk")
    assert code == 0
