"""`casegate post` and `casegate dispatch`: the contract's output, exit codes and audit trail.
Each runs with the stores' database on SQLite and on PostgreSQL (CASEGATE_DATABASE_URL)."""

from __future__ import annotations

import io
import json
import os
import tomllib
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest

from gateway.audit.trail import AuditLog, EventFilter, StoredEvent
from gateway.cli import main
from gateway.printed.offices import DispatchStore
from policies.post import PostOptions
from transports.database import Database, DatabaseSettings


@pytest.fixture
def data(tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data directory; with the PostgreSQL `database`, every command is given its URL as
    an operator would (CASEGATE_DATABASE_URL)."""
    if database.url:
        monkeypatch.setenv("CASEGATE_DATABASE_URL", database.url)
    return tmp_path / "data"


def events(data: Path, prefix: str) -> list[StoredEvent]:
    """The audit events of `data` whose kind starts with `prefix`, oldest first."""
    engine = Database.open(data, DatabaseSettings(url=os.environ.get("CASEGATE_DATABASE_URL",
                                                                     "")))
    audit = AuditLog.open(engine, stream=io.StringIO())
    try:
        return [e for e in audit.iterate(EventFilter()) if e.kind.startswith(prefix)]
    finally:
        audit.close()
        engine.close()


def post_json(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["post", "--data", str(data), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_send_prints_the_exact_json_and_records_it(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A permitted item: exit 0, the contract's JSON alone on stdout, one post-decision event."""
    code, out = post_json(capsys, data, "--item", "court-report", "--address", "confirmed-wafh",
                          "--sensitivity", "particular", "--weight-kg", "1.5")
    assert code == 0
    assert set(out) == {"decision", "methods", "instructions", "rule", "citation", "reason"}
    assert out["decision"] == "send"
    assert out["methods"] == ["special-delivery-guaranteed"]
    assert any("double envelope" in line for line in out["instructions"])
    [event] = events(data, "post-")
    assert event.kind == "post-decision" and event.rule == "particularly-sensitive"
    assert event.metadata["item"] == "court-report"
    assert event.metadata["decision"] == "send"
    assert event.citation == out["citation"]


def test_refusal_exits_1_with_a_plain_answer(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refusal: exit 1, a short plain-English answer that says why and cites the policy."""
    code = main(["post", "--data", str(data), "--item", "safeguarding-letter",
                 "--address", "unconfirmed"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("Do not send it. A safeguarding letter must not be posted")
    assert "Rule: safeguarding-unconfirmed-address (App. 2, Family correspondence (2)" in out
    assert [e.metadata["decision"] for e in events(data, "post-")] == ["refuse"]


def test_verified_email_exits_0_with_use_email(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A verified address makes email the route: use-email, exit 0."""
    code, out = post_json(capsys, data, "--item", "welcome-pack", "--verified-email")
    assert code == 0
    assert out["decision"] == "use-email" and out["methods"] == ["egress-email"]


def test_human_answer_lists_methods_best_first(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the methods are numbered best first with their labels."""
    code = main(["post", "--data", str(data), "--item", "case-file", "--office-transfer",
                 "--from-office", "Bloomsbury"])
    out = capsys.readouterr().out
    assert code == 0
    assert "  1. transfer between teams on the case record (internal-transfer)" in out
    assert "  4. DX (Document Exchange) (dx)" in out


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--item", "birthday-card"], "--item"),
        (["--item", "welcome-pack", "--weight-kg", "-1"], "--weight-kg"),
        (["--item", "welcome-pack", "--weight-kg", "heavy"], "--weight-kg"),
        (["--item", "welcome-pack", "--weight-kg", "nan"], "--weight-kg"),
        (["--item", "welcome-pack", "--office-transfer"], "--office-transfer"),
        (["--item", "case-file", "--method", "dx"], "--from-office"),
        (["--item", "court-report", "--electronic"], "--electronic"),
        (["--item", "sar-file", "--address", "unconfirmed", "--wishes-to-collect"],
         "--wishes-to-collect"),
        (["--item", "welcome-pack", "--to-office", "Bloomsbury"], "--to-office"),
        (["--item", "welcome-pack", "--address", "maybe"], "--address"),
        (["--item", "welcome-pack", "--sensitivity", "high"], "--sensitivity"),
    ],
)
def test_bad_input_exits_2_naming_the_option_and_records_nothing(
        data: Path, capsys: pytest.CaptureFixture[str], args: list[str], option: str) -> None:
    """Bad input: exit 2, one line on stderr naming the option, nothing on stdout, no event."""
    code = main(["post", "--data", str(data), *args])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    [line] = [ln for ln in captured.err.splitlines() if ln.startswith("casegate:")]
    assert line.startswith(f"casegate: {option}: ")
    assert events(data, "post-") == []


def test_dispatch_record_receive_list(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Record, list and receive a dispatch through the CLI; each step is an audit event."""
    expected = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code = main(["dispatch", "record", "--data", str(data), "--json", "--file", "ZC12C00123",
                 "--from", "Bloomsbury", "--to", "Warrington", "--method", "dx",
                 "--expected", expected, "--by", "bs.bloomsbury@cafcass.gov.uk"])
    sent = json.loads(capsys.readouterr().out)
    assert code == 0
    assert sent["responsible_office"] == "Bloomsbury" and sent["received_at"] is None
    assert main(["dispatch", "list", "--data", str(data), "--open"]) == 0
    listing = capsys.readouterr().out
    assert "ZC12C00123" in listing and "Bloomsbury" in listing
    code = main(["dispatch", "receive", str(sent["id"]), "--data", str(data),
                 "--office", "Warrington", "--by", "bs.warrington@cafcass.gov.uk",
                 "--location", "Registry shelf 4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Warrington is now responsible for it" in out
    assert main(["dispatch", "list", "--data", str(data), "--open", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    kinds = [e.kind for e in events(data, "dispatch-")]
    assert kinds == ["dispatch-recorded", "dispatch-received"]


def test_dispatch_refused_by_policy_exits_1(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DX from an office that does not send it is a decided refusal: exit 1, the reason with
    what to do instead, the rule and citation on stdout, a dispatch-refused event; no dispatch."""
    code = main(["dispatch", "record", "--data", str(data), "--file", "ZC12C00123",
                 "--from", "Coventry", "--to", "Warrington", "--method", "dx",
                 "--expected", "2099-01-01", "--by", "a@cafcass.gov.uk"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith("Not recorded: do not send it this way. Coventry does not "
                                   "send DX: DX goes out only from Bloomsbury.")
    assert "Use one of: Royal Mail Special Delivery Guaranteed" in captured.out
    assert "Rule: dx-not-outgoing (App. 2, Post options (DX)" in captured.out
    assert [e.kind for e in events(data, "dispatch-")] == ["dispatch-refused"]
    assert main(["dispatch", "list", "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_post_dx_from_an_office_without_it_is_a_refusal(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`post --method dx` from Warrington: exit 1 with the rule and citation, recorded."""
    code, out = post_json(capsys, data, "--item", "case-file", "--hard-copy",
                          "--from-office", "Warrington", "--method", "dx")
    assert code == 1
    assert out["decision"] == "refuse" and out["rule"] == "dx-not-outgoing"
    assert out["reason"].startswith("Warrington does not send DX")
    assert "App. 2, Post options (DX)" in out["citation"]
    [event] = events(data, "post-")
    assert event.rule == "dx-not-outgoing" and event.metadata["decision"] == "refuse"


def test_hard_copy_electronic_and_collection_flags(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--hard-copy: no transfer between teams; --electronic: nothing else; --wishes-to-collect:
    collection where posting is refused. Each is recorded with the fact given."""
    code, out = post_json(capsys, data, "--item", "case-file", "--hard-copy")
    assert code == 0 and out["methods"] == ["special-delivery-guaranteed", "hand-delivery"]
    code, out = post_json(capsys, data, "--item", "case-file", "--electronic")
    assert code == 0 and out["methods"] == ["internal-transfer"]
    code, out = post_json(capsys, data, "--item", "safeguarding-letter", "--address",
                          "unconfirmed", "--wishes-to-collect")
    assert code == 0 and out["methods"] == ["collect-in-person"]
    assert any("confirm their identity" in line for line in out["instructions"])
    with pytest.raises(SystemExit) as both:  # argparse: the two flags exclude each other
        main(["post", "--data", str(data), "--item", "case-file", "--hard-copy", "--electronic"])
    assert both.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    recorded = events(data, "post-")
    assert [e.metadata["hard_copy"] for e in recorded] == [True, False, False]
    assert [e.metadata["electronic"] for e in recorded] == [False, True, False]
    assert recorded[2].metadata["wishes_to_collect"] is True


def test_solicitor_correspondence_is_email(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Asked how to post solicitors' correspondence, staff are told: email via Egress."""
    code = main(["post", "--data", str(data), "--item", "solicitor-correspondence"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Use email. Correspondence with solicitors and local authorities goes "
                          "by email via Egress")
    assert "Rule: solicitor-email (App. 2, Solicitors/local authorities correspondence" in out


def test_offices_add_and_list_then_post_and_dispatch_by_team(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`offices add` records an office with teams (audited); `offices list` shows it and the
    policy's DX offices; `post` and `dispatch` then take a team's name for its office."""
    by = "bs.manager@cafcass.gov.uk"
    code = main(["offices", "add", "Bloomsbury", "--data", str(data), "--team", "Legal Team",
                 "--team", "London Central", "--by", by])
    assert code == 0
    assert capsys.readouterr().out == ("Recorded the office Bloomsbury. Teams: Legal Team, "
                                       "London Central. DX: both.\n")
    assert main(["offices", "add", "Coventry", "--data", str(data), "--team", "South Team",
                 "--by", by, "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added == {"name": "Coventry", "teams": ["South Team"], "dx": "none",
                     "registered": True, "created": True, "changed": False}
    assert main(["offices", "add", "coventry", "--data", str(data), "--team", "South Team",
                 "--by", by]) == 0
    assert capsys.readouterr().out.startswith("Nothing changed for the office Coventry.")
    assert main(["offices", "list", "--data", str(data)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["OFFICE", "DX", "TEAMS", "FROM"]
    assert listing[1].split()[:2] == ["Bloomsbury", "both"]
    assert listing[-1].split() == ["Warrington", "incoming", "-", "policy"]
    kinds = [e.kind for e in events(data, "office-")]
    assert kinds == ["office-added", "office-added"]

    code, out = post_json(capsys, data, "--item", "case-file", "--hard-copy",
                          "--from-office", "legal team", "--method", "dx")
    assert code == 0 and out["methods"] == ["dx"]
    [decision] = events(data, "post-")
    assert decision.metadata["from_office"] == "legal team"
    assert decision.metadata["from_office_resolved"] == "Bloomsbury"
    code, out = post_json(capsys, data, "--item", "case-file", "--hard-copy",
                          "--from-office", "South Team", "--method", "dx")
    assert code == 1 and out["reason"].startswith("Coventry does not send DX")

    expected = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%d")
    assert main(["dispatch", "record", "--data", str(data), "--json", "--file", "ZC12C00123",
                 "--from", "Legal Team", "--to", "Warrington", "--method", "dx",
                 "--expected", expected, "--by", by]) == 0
    sent = json.loads(capsys.readouterr().out)
    assert (sent["from_office"], sent["to_office"]) == ("Bloomsbury", "Warrington")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["Leeds", "--dx", "outgoing"], "--dx: The policy lets DX go out only from Bloomsbury"),
        (["Coventry", "--dx", "incoming"], "--dx: The policy lets DX be received only at"),
        (["Coventry", "--team", "Bloomsbury"], "--team: 'Bloomsbury' is already an office"),
        (["Leeds", "--team", "legal team"], "--team: 'legal team' is already a team of "
                                            "Bloomsbury"),
        (["Legal Team"], "NAME: 'Legal Team' is already a team of Bloomsbury"),
        (["Leeds", "--team", "A\tB"], "--team: The team must be one line"),
    ],
)
def test_offices_add_refuses_dx_beyond_the_policy_and_names_used_twice(
        data: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    """DX only where the policy lists the office; a name (office or team) names one office."""
    assert main(["offices", "add", "Bloomsbury", "--data", str(data), "--team", "Legal Team",
                 "--by", "bs@cafcass.gov.uk"]) == 0
    assert main(["offices", "add", "Coventry", "--data", str(data),
                 "--by", "bs@cafcass.gov.uk"]) == 0
    capsys.readouterr()
    code = main(["offices", "add", *args, "--data", str(data), "--by", "bs@cafcass.gov.uk"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert f"casegate: {says}" in captured.err
    assert [e.kind for e in events(data, "office-")] == ["office-added", "office-added"]


def test_offices_add_needs_a_staff_address(
        data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--by must be a Cafcass address: the change names who made it."""
    code = main(["offices", "add", "Leeds", "--data", str(data), "--by", "x@gmail.com"])
    assert code == 2 and "--by must be a Cafcass staff address" in capsys.readouterr().err
    assert events(data, "office-") == []


def test_dispatch_overdue_lists_what_is_late(
        data: Path, database: Database, capsys: pytest.CaptureFixture[str]) -> None:
    """`dispatch overdue` lists a dispatch whose expected arrival has passed, and no other."""
    assert main(["dispatch", "list", "--data", str(data)]) == 0  # creates the data directory
    assert capsys.readouterr().out == "No dispatches.\n"
    engine = Database.open(data, DatabaseSettings(url=database.url))
    audit = AuditLog.open(engine, stream=io.StringIO())
    options = _options()
    store = DispatchStore(engine, options, audit)
    past = datetime(2020, 1, 6, 9, 0, tzinfo=UTC)
    late = store.record(file_reference="ZC12C00001", from_office="Leeds", to_office="York",
                        method="hand-delivery", expected_at=past + timedelta(hours=3),
                        by="a@cafcass.gov.uk", now=past)
    store.record(file_reference="ZC12C00002", from_office="Leeds", to_office="York",
                 method="hand-delivery", expected_at=datetime(2999, 1, 1, tzinfo=UTC),
                 by="a@cafcass.gov.uk", now=past)
    store.close()
    engine.close()
    audit.close()
    assert main(["dispatch", "overdue", "--data", str(data), "--json"]) == 0
    overdue = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in overdue] == [late.id]
    assert overdue[0]["responsible_office"] == "Leeds"


def _options() -> PostOptions:
    text = resources.files("policies").joinpath("data/post.toml").read_text("utf-8")
    return PostOptions.from_table(tomllib.loads(text)["post"], "post.toml")
