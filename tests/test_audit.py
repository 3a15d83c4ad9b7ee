"""The audit trail: events, grades, the HMAC chain against real tampering, checkpoints, the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import read_policy
from gateway.audit.store import VERIFY_BATCH
from gateway.audit.trail import AuditError, AuditLog, EventFilter, normalise_time
from gateway.cli import main
from gateway.config import Config
from tests.auditdb import point_cli_at, tamper
from tests.tools import require_tool
from transports.database import Database

POLICY = read_policy(Config(), Path("."))  # the real policy data: rules, citations, grades


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def audit(database: Database) -> Iterator[AuditLog]:
    """An audit log in a fresh data directory (and database), writing its SIEM lines to a
    buffer."""
    log = AuditLog.open(
        database, rules=POLICY.rules, kind_grades=POLICY.grades, clock=Clock(), stream=io.StringIO()
    )
    yield log
    log.close()


def fill(audit: AuditLog, count: int = 6) -> None:
    for i in range(count):
        audit.record(
            "refusal",
            rule="personal-address",
            sender="Jo.Bloggs@cafcass.gov.uk",
            recipients=[f"parent{i}@gmail.com", "court@justice.gov.uk"],
            case_numbers=[f"ZE26C{i:05d}"],
            decision_id=f"d-{i}",
            stage="rcpt",
        )


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_record_returns_increasing_sequence_numbers(audit: AuditLog) -> None:
    """Each event gets the next sequence number after the key-creation events."""
    first = audit.record("login", sender="a@cafcass.gov.uk")
    second = audit.record("logout", sender="a@cafcass.gov.uk")
    assert second == first + 1
    assert [e.kind for e in audit.page(EventFilter(), limit=10)][:2] == ["logout", "login"]


def test_grade_comes_from_the_rule_then_the_kind(audit: AuditLog) -> None:
    """A rule's grade wins; kinds without a rule use the grades table; others are 'none'."""
    by_rule = audit.get(audit.record("refusal", rule="personal-address"))
    by_kind = audit.get(audit.record("auth-lockout"))
    plain = audit.get(audit.record("delivery"))
    not_breach = audit.get(audit.record("decision", rule="personal-address"))
    explicit = audit.get(audit.record("refusal", grade="low", rule="personal-address"))
    assert by_rule is not None and by_rule.grade == "high"
    assert by_rule.citation == "IA 3.2; RRP 6.1"
    assert by_kind is not None and by_kind.grade == "high"
    assert plain is not None and plain.grade == "none"
    assert not_breach is not None and not_breach.grade == "none"
    assert explicit is not None and explicit.grade == "low"


def test_metadata_never_holds_content(audit: AuditLog) -> None:
    """Keys that would log content or secrets and non-scalar values are refused."""
    with pytest.raises(AuditError):
        audit.record("delivery", subject="Re: the children")
    with pytest.raises(AuditError):
        audit.record("delivery", password="hunter2")
    with pytest.raises(AuditError):
        audit.record("delivery", nested={"a": 1})
    with pytest.raises(AuditError):
        audit.record("Bad Kind")
    with pytest.raises(AuditError):
        audit.record("refusal\n")


def test_siem_line_is_one_json_object_per_event(database: Database) -> None:
    """A CR/LF in a value cannot forge a second log line: each event is exactly one JSON line."""
    stream = io.StringIO()
    log = AuditLog.open(database, stream=stream)
    log.record("auth-failure", sender="evil\r\n{\"kind\":\"forged\"}@x", client="203.0.113.9")
    log.close()
    lines = stream.getvalue().splitlines()
    events = [json.loads(line) for line in lines]
    assert len(events) == 3  # two key creations and the failure
    assert events[-1]["kind"] == "auth-failure"
    assert events[-1]["metadata"] == {"client": "203.0.113.9"}
    assert "forged" not in [e["kind"] for e in events]
    assert {e["node"] for e in events} == {"test-node"}


def test_key_files_are_private_and_reused(database: Database) -> None:
    """The keys are created once with mode 0600 and the same chain verifies after reopening."""
    log = AuditLog.open(database, stream=io.StringIO())
    log.record("login", sender="a@cafcass.gov.uk")
    log.close()
    for name in ("audit.key", "audit-signing.pem"):
        assert stat.S_IMODE((database.data_dir / name).stat().st_mode) == 0o600
    again = AuditLog.open(database, stream=io.StringIO())
    assert again.verify() is None
    assert [e.kind for e in again.iterate(EventFilter())] == [
        "key-created", "key-created", "login"]
    again.close()


def test_filters_select_by_domain_case_sender_time(audit: AuditLog) -> None:
    """Each filter narrows the list; the domain and case filters use their side tables."""
    fill(audit)
    audit.record("delivery", recipients=["clerk@justice.gov.uk"])
    assert len(audit.page(EventFilter(domain="GMAIL.com"))) == 6
    assert len(audit.page(EventFilter(domain="justice.gov.uk"))) == 7
    assert [e.decision_id for e in audit.page(EventFilter(case_number="ZE26C00003"))] == ["d-3"]
    assert len(audit.page(EventFilter(sender="jo.bloggs@cafcass.gov.uk", grade="high"))) == 6
    events = list(audit.iterate(EventFilter(kind="refusal")))
    middle = events[2].time
    assert [e.seq for e in audit.iterate(EventFilter(kind="refusal", since=middle))] == [
        e.seq for e in events[2:]]
    assert len(list(audit.iterate(EventFilter(kind="refusal", until=middle)))) == 2


def test_keyset_pages_cover_every_event_once(audit: AuditLog) -> None:
    """Paging by `before` walks the whole trail newest first without gaps or repeats."""
    fill(audit, 7)
    seen: list[int] = []
    before = None
    while page := audit.page(EventFilter(kind="refusal"), before=before, limit=3):
        seen.extend(e.seq for e in page)
        before = page[-1].seq
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 7


def test_concurrent_appenders_do_not_fork_the_chain(database: Database) -> None:
    """Two logs on the same database (as two processes) and several threads keep one chain."""
    first = AuditLog.open(database, stream=io.StringIO())
    second = AuditLog.open(database, stream=io.StringIO())

    def write(log: AuditLog) -> None:
        for _ in range(25):
            log.record("delivery", sender="a@cafcass.gov.uk")

    threads = [threading.Thread(target=write, args=(log,)) for log in (first, second) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert first.verify() is None
    assert first.store.head()[0] == 2 + 100
    first.close()
    second.close()


WRITER = """
import io, sys
from pathlib import Path
from gateway.audit.trail import AuditLog
from transports.database import Database
log = AuditLog.open(Database.open(Path(sys.argv[1])), stream=io.StringIO())
for _ in range(40):
    log.record("delivery", sender="a@cafcass.gov.uk")
log.close()
"""


def test_processes_starting_together_share_one_key_and_one_chain(tmp_path: Path) -> None:
    """Three processes creating the keys and appending at once leave one intact chain."""
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=Path.cwd())
        for _ in range(3)
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    log = AuditLog.open(Database.open(tmp_path), stream=io.StringIO())
    assert log.verify() is None
    kinds = [e.kind for e in log.iterate(EventFilter())]
    assert kinds.count("delivery") == 120 and kinds.count("key-created") == 2
    log.close()


@pytest.mark.parametrize(
    ("statements", "broken"),
    [
        (["UPDATE audit_event SET sender = 'someone@else.org' WHERE seq = 5"], 5),
        (["UPDATE audit_event SET grade = 'low' WHERE seq = 4"], 4),
        (["DELETE FROM audit_event WHERE seq = 6"], 6),
        (["DELETE FROM audit_event WHERE seq = 8"], 8),  # the last one: caught by checkpoints
        (["UPDATE audit_event SET seq = seq + 100 WHERE seq >= 5",
          "UPDATE audit_event SET seq = seq - 99 WHERE seq >= 105",
          "INSERT INTO audit_event (seq, time, kind, grade, rule, citation, sender, "
          "recipients, recipient_domains, case_numbers, decision_id, metadata, mac, node) "
          "SELECT 5, time, kind, grade, rule, citation, sender, recipients, "
          "recipient_domains, case_numbers, 'forged', metadata, mac, node "
          "FROM audit_event WHERE seq = 4"], 5),  # inserted
        (["UPDATE audit_event SET seq = -1 WHERE seq = 4",
          "UPDATE audit_event SET seq = 4 WHERE seq = 5",
          "UPDATE audit_event SET seq = 5 WHERE seq = -1"], 4),  # reordered
        (["DELETE FROM audit_domain WHERE seq = 7"], 7),  # hidden from the domain filter
        (["INSERT INTO audit_event (seq, time, kind, grade, rule, citation, sender, "
          "recipients, recipient_domains, case_numbers, decision_id, metadata, mac, node) "
          "SELECT -3, time, kind, grade, rule, citation, sender, recipients, "
          "recipient_domains, case_numbers, 'forged', metadata, mac, node "
          "FROM audit_event WHERE seq = 4"], 1),  # inserted before the first
    ],
    ids=["altered", "regraded", "deleted", "deleted-last", "inserted", "reordered", "hidden",
         "inserted-first"],
)
def test_verify_names_the_first_broken_event(
    database: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    statements: list[str], broken: int
) -> None:
    """`casegate audit verify` exits 1 naming the first broken sequence number."""
    point_cli_at(database, monkeypatch)
    data = str(database.data_dir)
    log = AuditLog.open(database, stream=io.StringIO(), checkpoint_every=4)
    fill(log)  # seq 3..8; checkpoints at 4 and 8
    log.close()
    code, out = cli(capsys, "audit", "verify", "--data", data)
    assert code == 0 and "intact" in out
    tamper(database, *statements)
    code, out = cli(capsys, "audit", "verify", "--data", data)
    assert code == 1
    assert f"first broken sequence number: {broken}" in out


def test_verify_catches_a_chain_rebuilt_with_the_stolen_key(database: Database) -> None:
    """Rewriting the chain with the HMAC key still disagrees with the signed checkpoints."""
    log = AuditLog.open(database, stream=io.StringIO(), checkpoint_every=4)
    fill(log)
    log.close()
    tamper(database, "DELETE FROM audit_event WHERE seq >= 5",
           "DELETE FROM audit_domain WHERE seq >= 5", "DELETE FROM audit_case WHERE seq >= 5")
    rebuilt = AuditLog.open(database, stream=io.StringIO(), checkpoint_every=0)
    rebuilt.record("delivery", sender="innocent@cafcass.gov.uk")
    for _ in range(3):
        rebuilt.record("delivery")
    assert rebuilt.store.verify() is None  # the chain alone looks fine
    assert rebuilt.verify() == 8  # the checkpoint at 8 does not
    rebuilt.close()


def test_list_json_csv_and_table(database: Database, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit list` filters and prints JSON lines, CSV (formula-safe) and a table, each
    naming the node that wrote the event."""
    point_cli_at(database, monkeypatch)
    tmp_path = database.data_dir
    log = AuditLog.open(database, rules=POLICY.rules, kind_grades=POLICY.grades,
                        stream=io.StringIO())
    fill(log, 3)
    log.record("auth-failure", sender="=cmd|' /c calc'!A0@x.org")
    log.close()
    code, out = cli(capsys, "audit", "list", "--data", str(tmp_path), "--json",
                    "--rule", "personal-address", "--case", "ZE26C00001")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 1
    assert {"seq", "time", "kind", "grade", "rule", "sender", "recipients",
            "case_numbers"} <= rows[0].keys()
    assert rows[0]["grade"] == "high" and rows[0]["case_numbers"] == ["ZE26C00001"]
    assert rows[0]["node"] == "test-node"
    code, out = cli(capsys, "audit", "list", "--data", str(tmp_path), "--csv", "--kind",
                    "auth-failure")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("seq,time,kind,grade")
    assert ",'=cmd|" in lines[1] and lines[0].endswith(",node")
    assert lines[1].endswith(",test-node")
    code, out = cli(capsys, "audit", "list", "--data", str(tmp_path), "--grade", "low",
                    "--domain", "gmail.com")
    assert code == 0 and "No events match." in out
    code, out = cli(capsys, "audit", "list", "--data", str(tmp_path), "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 3 and "auth-failure" in out
    assert out.splitlines()[0].endswith("NODE") and out.splitlines()[2].endswith("test-node")


def test_list_refuses_bad_input(database: Database, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad date or a directory without a trail is exit 2 with one sentence."""
    point_cli_at(database, monkeypatch)
    tmp_path = database.data_dir
    assert main(["audit", "list", "--data", str(tmp_path)]) == 2
    assert "holds no audit trail" in capsys.readouterr().err
    AuditLog.open(database, stream=io.StringIO()).close()
    assert main(["audit", "list", "--data", str(tmp_path), "--since", "last tuesday"]) == 2
    assert "not an ISO-8601" in capsys.readouterr().err


def test_checkpoint_export_verifies_elsewhere_and_fails_when_altered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported checkpoint verifies with the public key alone and fails once edited."""
    data = tmp_path / "data"
    log = AuditLog.open(Database.open(data), stream=io.StringIO())
    fill(log, 3)
    log.close()
    export = tmp_path / "checkpoint.json"
    code, out = cli(capsys, "audit", "checkpoint", "--data", str(data), "--export", str(export))
    assert code == 0 and "sequence number 5" in out
    document = json.loads(export.read_text())
    public = tmp_path / "audit.pub"
    public.write_text(document["public_key"])
    elsewhere = tmp_path / "elsewhere"
    code, out = cli(capsys, "audit", "checkpoint", "--data", str(elsewhere), "--verify",
                    str(export), "--public-key", str(public))
    assert code == 0 and "validly signed" in out
    code, out = cli(capsys, "audit", "checkpoint", "--data", str(data), "--verify",
                    str(export), "--public-key", str(public))
    assert code == 0 and "agrees" in out
    document["seq"] = 4
    export.write_text(json.dumps(document))
    code, out = cli(capsys, "audit", "checkpoint", "--data", str(elsewhere), "--verify",
                    str(export), "--public-key", str(public))
    assert code == 1 and "altered" in out


def test_checkpoint_verify_with_the_private_key_says_which_key_it_wants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given the private signing key, --verify says so (exit 2); the command it suggests works."""
    data = tmp_path / "data"
    log = AuditLog.open(Database.open(data), stream=io.StringIO())
    fill(log, 1)
    log.close()
    export = tmp_path / "checkpoint.json"
    assert cli(capsys, "audit", "checkpoint", "--data", str(data), "--export", str(export))[0] == 0
    private = data / "audit-signing.pem"
    code = main(["audit", "checkpoint", "--data", str(data), "--verify", str(export),
                 "--public-key", str(private)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert "is the private signing key" in err and '"public_key"' in err
    public = tmp_path / "audit.pub"
    openssl = require_tool("openssl", "openssl")
    public.write_bytes(subprocess.run([openssl, "pkey", "-pubout", "-in", str(private)],
                                      capture_output=True, check=True, timeout=30).stdout)
    code, out = cli(capsys, "audit", "checkpoint", "--data", str(data), "--verify", str(export),
                    "--public-key", str(public))
    assert code == 0 and "validly signed" in out


def test_normalise_time_reads_dates_and_offsets() -> None:
    """User times become fixed-width UTC text; offsets are converted."""
    assert normalise_time("2026-03-01") == "2026-03-01T00:00:00.000000Z"
    assert normalise_time("2026-03-01T10:00+01:00") == "2026-03-01T09:00:00.000000Z"
    with pytest.raises(ValueError, match="ISO-8601"):
        normalise_time("yesterday")


@pytest.mark.parametrize("edited", [VERIFY_BATCH, VERIFY_BATCH + 1, VERIFY_BATCH + 150])
async def test_verify_reads_in_batches_and_finds_an_edit_in_any(
    database: Database, edited: int
) -> None:
    """A trail longer than one verify batch: intact, it verifies; an event edited on either
    side of a batch boundary, or its side-table row, is named."""
    log = AuditLog.open(database, stream=io.StringIO(), checkpoint_every=0)
    await asyncio.gather(*(log.record_async("relay", recipients=[f"p{n}@example.org"],
                                            decision_id=f"d-{n}")
                           for n in range(VERIFY_BATCH + 200)))
    assert log.store.verify() is None
    tamper(database, f"DELETE FROM audit_domain WHERE seq = {edited}")
    assert log.store.verify() == edited
    tamper(database, f"UPDATE audit_event SET decision_id = 'x' WHERE seq = {edited - 1}")
    assert log.store.verify() == edited - 1
    log.close()


def test_counts_by_day_and_rule_and_graded_after(audit: AuditLog) -> None:
    """The governance chart's counts (per day and rule, only events with a rule) and the
    alerter's read of graded events after a sequence number, on either engine."""
    fill(audit, 3)  # refusals, personal-address, graded high
    audit.record("delivery", recipients=["clerk@justice.gov.uk"])
    audit.record("refusal", rule="fax", grade="low")
    day = audit.get(3).time[:10]  # type: ignore[union-attr]
    assert audit.counts_by_day_and_rule(EventFilter()) == [
        (day, "fax", 1), (day, "personal-address", 3)]
    assert audit.counts_by_day_and_rule(EventFilter(grade="low")) == [(day, "fax", 1)]
    assert [e.seq for e in audit.graded_after(3, {"high", "low"}, 10)] == [4, 5, 7]
    assert [e.seq for e in audit.graded_after(0, {"high"}, 2)] == [3, 4]
    assert audit.graded_after(0, set(), 10) == []
