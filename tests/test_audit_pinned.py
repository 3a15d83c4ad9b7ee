"""What the audit chain signs, pinned: a fixed test vector, one direct edit per signed column, and
truncation and rollback of `audit.sqlite3` caught by `casegate audit verify` (issue 18)."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from gateway.audit.store import _SCHEMA, canonical_json, chain_mac
from gateway.audit.trail import AUDIT_DB_FILE, AuditLog
from gateway.cli import main
from policies.events import EventKind

# A known key, previous mac and event; the exact bytes signed and the exact mac expected.
VECTOR_KEY = bytes(range(32))
VECTOR_PREVIOUS = bytes.fromhex("11" * 32)
VECTOR_EVENT = {
    "seq": 7,
    "time": "2026-03-01T09:00:00.000000Z",
    "kind": "refusal",
    "grade": "high",
    "rule": "personal-address",
    "citation": "IA 3.2",
    "sender": "jo.bloggs@cafcass.gov.uk",
    "recipients": ["parent@gmail.com", "court@justice.gov.uk"],
    "recipient_domains": ["gmail.com", "justice.gov.uk"],
    "case_numbers": ["ZE26C00001"],
    "decision_id": "d-1",
    "metadata": {"stage": "rcpt", "size": 1234},
}
VECTOR_BYTES = (
    b'{"case_numbers":["ZE26C00001"],"citation":"IA 3.2","decision_id":"d-1","grade":"high",'
    b'"kind":"refusal","metadata":{"size":1234,"stage":"rcpt"},'
    b'"recipient_domains":["gmail.com","justice.gov.uk"],'
    b'"recipients":["parent@gmail.com","court@justice.gov.uk"],"rule":"personal-address",'
    b'"sender":"jo.bloggs@cafcass.gov.uk","seq":7,"time":"2026-03-01T09:00:00.000000Z"}'
)
VECTOR_MAC = "1c5247b55a7724e241a55667d35383092de8d181f5e0e5224dadf06ce4657d14"


def test_the_chain_signs_exactly_these_bytes() -> None:
    """The canonical JSON of a known event, and its mac under a known key and previous mac."""
    assert canonical_json(VECTOR_EVENT) == VECTOR_BYTES
    assert chain_mac(VECTOR_KEY, VECTOR_PREVIOUS, VECTOR_EVENT).hex() == VECTOR_MAC


def fill(audit: AuditLog, count: int = 6) -> None:
    """Events 3..2+count (1 and 2 are the key-creation events)."""
    for i in range(count):
        audit.record(
            EventKind.REFUSAL,
            rule="personal-address",
            sender="jo.bloggs@cafcass.gov.uk",
            recipients=[f"parent{i}@gmail.com", "court@justice.gov.uk"],
            case_numbers=[f"ZE26C{i:05d}"],
            decision_id=f"d-{i}",
            stage="rcpt",
        )


def tamper(data: Path, *statements: str) -> None:
    """Edit audit.sqlite3 directly, as someone with write access to that file alone would."""
    db = sqlite3.connect(data / AUDIT_DB_FILE)
    db.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
    db.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()


def verify(capsys: pytest.CaptureFixture[str], data: Path) -> tuple[int, str]:
    code = main(["audit", "verify", "--data", str(data)])
    return code, capsys.readouterr().out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory whose trail holds events 1..8, intact."""
    log = AuditLog.open(tmp_path, stream=io.StringIO(), checkpoint_every=0)
    fill(log)
    log.close()
    return tmp_path


# Event 5 (refusal to parent2@gmail.com, case ZE26C00002): one signed column changed each, the
# side tables changed with it where they index that column, so that only the mac can tell.
EDITS: list[tuple[str, list[str]]] = [
    ("time", ["UPDATE audit_event SET time = '2026-12-31T23:59:59.000000Z' WHERE seq = 5"]),
    ("kind", ["UPDATE audit_event SET kind = 'decision' WHERE seq = 5"]),
    ("grade", ["UPDATE audit_event SET grade = 'low' WHERE seq = 5"]),
    ("rule", ["UPDATE audit_event SET rule = 'fax' WHERE seq = 5"]),
    ("citation", ["UPDATE audit_event SET citation = 'RRP 9.9' WHERE seq = 5"]),
    ("sender", ["UPDATE audit_event SET sender = 'someone@cafcass.gov.uk' WHERE seq = 5"]),
    ("recipients", ["UPDATE audit_event SET recipients = "
                    "'[\"other@gmail.com\",\"court@justice.gov.uk\"]' WHERE seq = 5"]),
    ("recipient_domains", [
        "UPDATE audit_event SET recipient_domains = '[\"example.org\",\"justice.gov.uk\"]' "
        "WHERE seq = 5",
        "UPDATE audit_domain SET domain = 'example.org' WHERE seq = 5 AND domain = 'gmail.com'"]),
    ("case_numbers", [
        "UPDATE audit_event SET case_numbers = '[\"ZE26C99999\"]' WHERE seq = 5",
        "UPDATE audit_case SET case_number = 'ZE26C99999' WHERE seq = 5"]),
    ("decision_id", ["UPDATE audit_event SET decision_id = 'd-forged' WHERE seq = 5"]),
    ("metadata", ["UPDATE audit_event SET metadata = '{\"stage\":\"data\"}' WHERE seq = 5"]),
    ("seq", ["UPDATE audit_event SET seq = 1005 WHERE seq = 5",
             "UPDATE audit_domain SET seq = 1005 WHERE seq = 5",
             "UPDATE audit_case SET seq = 1005 WHERE seq = 5"]),
    ("mac", ["UPDATE audit_event SET mac = zeroblob(32) WHERE seq = 5"]),
]


def test_the_edits_cover_every_column() -> None:
    """Every column of audit_event has its edit below (a new column needs one too)."""
    db = sqlite3.connect(":memory:")
    db.executescript(_SCHEMA)  # the schema the store creates
    columns = {row[1] for row in db.execute("PRAGMA table_info(audit_event)")}
    db.close()
    assert columns == {column for column, _ in EDITS}


@pytest.mark.parametrize(("column", "statements"), EDITS, ids=[c for c, _ in EDITS])
def test_an_edit_to_any_signed_column_names_that_event(
    data: Path, capsys: pytest.CaptureFixture[str], column: str, statements: list[str]
) -> None:
    """One direct SQL edit of one column of event 5: `audit verify` exits 1 naming event 5."""
    assert verify(capsys, data)[0] == 0
    tamper(data, *statements)
    code, out = verify(capsys, data)
    assert code == 1, column
    assert "first broken sequence number: 5" in out, out


def test_deleting_the_newest_rows_is_truncation(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last two events deleted from audit.sqlite3 alone: the chain left is valid, but the
    signed head says 8 events were recorded."""
    tamper(data, "DELETE FROM audit_event WHERE seq >= 7",
           "DELETE FROM audit_domain WHERE seq >= 7", "DELETE FROM audit_case WHERE seq >= 7")
    code, out = verify(capsys, data)
    assert code == 1
    assert "holds 6 events" in out and "says 8 had been recorded" in out
    assert "cut short" in out and "first broken sequence number: 7" in out


def test_putting_back_an_older_copy_is_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older copy of audit.sqlite3 put back over the newer one: verify says so."""
    log = AuditLog.open(tmp_path, stream=io.StringIO(), checkpoint_every=0)
    fill(log, 3)
    log.close()
    older = tmp_path / "older.sqlite3"
    shutil.copyfile(tmp_path / AUDIT_DB_FILE, older)
    log = AuditLog.open(tmp_path, stream=io.StringIO(), checkpoint_every=0)
    fill(log, 3)
    log.close()
    assert verify(capsys, tmp_path)[0] == 0
    shutil.copyfile(older, tmp_path / AUDIT_DB_FILE)
    code, out = verify(capsys, tmp_path)
    assert code == 1
    assert "holds 5 events" in out and "says 8 had been recorded" in out
    assert "first broken sequence number: 6" in out


def test_an_older_copy_that_grew_again_is_still_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older copy put back, then appended to past the anchored head by a process that does
    not check: the head file is kept as evidence, and the macs at its seq disagree."""
    log = AuditLog.open(tmp_path, stream=io.StringIO(), checkpoint_every=0)
    fill(log, 3)
    log.close()
    older = tmp_path / "older.sqlite3"
    shutil.copyfile(tmp_path / AUDIT_DB_FILE, older)
    log = AuditLog.open(tmp_path, stream=io.StringIO(), checkpoint_every=0)
    fill(log, 3)
    log.close()
    shutil.copyfile(older, tmp_path / AUDIT_DB_FILE)
    grown = AuditLog.open(tmp_path, stream=io.StringIO(), checkpoint_every=0)
    fill(grown, 5)  # events 6..10: past the anchored 8
    grown.close()
    code, out = verify(capsys, tmp_path)
    assert code == 1
    assert "disagrees with" in out and "at sequence number 8" in out
    assert "first broken sequence number: 8" in out


def test_deleting_the_whole_database_is_truncation(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """audit.sqlite3 removed altogether: verify reports the 8 events the head says existed."""
    (data / AUDIT_DB_FILE).unlink()
    code, out = verify(capsys, data)
    assert code == 1
    assert "holds 0 events" in out and "first broken sequence number: 1" in out


def test_checkpoint_verify_checks_the_whole_chain_up_to_it(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported checkpoint at 8 and a trail edited at 5 whose mac at 8 is unchanged: the
    checkpoint no longer "agrees"; it names event 5."""
    export = data / "cp.json"
    assert main(["audit", "checkpoint", "--data", str(data), "--export", str(export)]) == 0
    public = data / "audit.pub"
    public.write_text(json.loads(export.read_text())["public_key"])
    capsys.readouterr()
    tamper(data, "UPDATE audit_event SET rule = 'fax' WHERE seq = 5")
    code = main(["audit", "checkpoint", "--data", str(data), "--verify", str(export),
                 "--public-key", str(public)])
    out = capsys.readouterr().out
    assert code == 1
    assert "validly signed" in out and "first broken sequence number: 5" in out


def test_an_intact_trail_agrees_with_its_head(data: Path, capsys: pytest.CaptureFixture[str]) \
        -> None:
    """No edit: verify exits 0 and says the signed head was compared."""
    code, out = verify(capsys, data)
    assert code == 0 and "intact: 8 events" in out and "signed head" in out
