"""What the audit chain signs, pinned: fixed test vectors (an event without a node, as written
before nodes were recorded, and one with its node), one direct edit per signed column on both
engines, and truncation and rollback of `audit.sqlite3` caught by `casegate audit verify`
(issues 18 and 15)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from pathlib import Path

import psycopg
import pytest

from gateway.audit import keys as auditkeys
from gateway.audit.store import AuditStore, StoredEvent, canonical_json, chain_mac
from gateway.audit.trail import AUDIT_DB_FILE, AuditLog
from gateway.cli import main
from policies.events import EventKind
from tests.auditdb import point_cli_at, tamper
from transports.database import Database, DatabaseSettings

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
# The same event written by node "mx1.cafcass.gov.uk": the node is signed, in key order.
VECTOR_NODE = "mx1.cafcass.gov.uk"
VECTOR_NODE_BYTES = (
    b'{"case_numbers":["ZE26C00001"],"citation":"IA 3.2","decision_id":"d-1","grade":"high",'
    b'"kind":"refusal","metadata":{"size":1234,"stage":"rcpt"},"node":"mx1.cafcass.gov.uk",'
    b'"recipient_domains":["gmail.com","justice.gov.uk"],'
    b'"recipients":["parent@gmail.com","court@justice.gov.uk"],"rule":"personal-address",'
    b'"sender":"jo.bloggs@cafcass.gov.uk","seq":7,"time":"2026-03-01T09:00:00.000000Z"}'
)
VECTOR_NODE_MAC = "490fda27cd7afcb40f24bf1f27eb207b190631aedac0e8e86adca549ad33a89e"


def stored(node: str) -> StoredEvent:
    """The vector's event as read back from its row, written by `node`."""
    fields = {**VECTOR_EVENT}
    for name in ("recipients", "recipient_domains", "case_numbers"):
        fields[name] = tuple(fields[name])
    return StoredEvent(**fields, node=node)


def test_the_chain_signs_exactly_these_bytes() -> None:
    """The canonical JSON of a known event, and its mac under a known key and previous mac."""
    assert canonical_json(VECTOR_EVENT) == VECTOR_BYTES
    assert chain_mac(VECTOR_KEY, VECTOR_PREVIOUS, VECTOR_EVENT).hex() == VECTOR_MAC


def test_an_event_without_a_node_signs_what_it_always_did() -> None:
    """An event with no node (written before nodes were kept) is signed without a node key:
    the bytes and mac of the original vector, so that old trails still verify."""
    assert stored("").chained() == VECTOR_EVENT
    assert chain_mac(VECTOR_KEY, VECTOR_PREVIOUS, stored("").chained()).hex() == VECTOR_MAC
    assert stored("").as_dict()["node"] == ""  # shown (empty) in exports all the same


def test_an_event_with_a_node_signs_the_node() -> None:
    """The node is under the mac: these exact bytes, this exact mac."""
    chained = stored(VECTOR_NODE).chained()
    assert canonical_json(chained) == VECTOR_NODE_BYTES
    assert chain_mac(VECTOR_KEY, VECTOR_PREVIOUS, chained).hex() == VECTOR_NODE_MAC
    assert stored(VECTOR_NODE).as_dict() == chained


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


def verify(capsys: pytest.CaptureFixture[str], data: Path) -> tuple[int, str]:
    code = main(["audit", "verify", "--data", str(data)])
    return code, capsys.readouterr().out


@pytest.fixture
def data(database: Database, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory whose trail holds events 1..8, intact, on either engine (the CLI
    pointed at it); `database.data_dir`."""
    point_cli_at(database, monkeypatch)
    log = AuditLog.open(database, stream=io.StringIO(), checkpoint_every=0)
    fill(log)
    log.close()
    return database.data_dir


def add_events(data: Path, count: int) -> None:
    """Open the trail in the SQLite data directory `data`, add `count` events, close it."""
    log = AuditLog.open(Database.open(data), stream=io.StringIO(), checkpoint_every=0)
    fill(log, count)
    log.close()


@pytest.fixture
def sqlite_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`data` in audit.sqlite3: for what only a file can undergo (copied back, removed)."""
    monkeypatch.delenv("CASEGATE_DATABASE_URL", raising=False)
    add_events(tmp_path, 6)
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
    ("node", ["UPDATE audit_event SET node = 'elsewhere' WHERE seq = 5"]),
]


def columns(database: Database) -> set[str]:
    """The columns of audit_event as the store creates (and migrates) it."""
    AuditStore(database, VECTOR_KEY).close()
    if database.is_sqlite:
        with sqlite3.connect(database.data_dir / AUDIT_DB_FILE) as db:
            return {row[1] for row in db.execute("PRAGMA table_info(audit_event)")}
    with psycopg.connect(database.url) as conn:
        return {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'audit_event'")}


def test_the_edits_cover_every_column(database: Database) -> None:
    """Every column of audit_event has its edit below (a new column needs one too)."""
    assert columns(database) == {column for column, _ in EDITS}


def test_the_database_refuses_update_and_delete(database: Database) -> None:
    """The trail's own triggers refuse UPDATE and DELETE of an event, on either engine."""
    log = AuditLog.open(database, stream=io.StringIO(), checkpoint_every=0)
    fill(log, 1)
    log.close()
    db = database.connect(AUDIT_DB_FILE, autocommit=True)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_event SET rule = 'fax' WHERE seq = 3")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_event WHERE seq = 3")
        assert db.execute("SELECT rule FROM audit_event WHERE seq = 3").fetchone()[0] == \
            "personal-address"
    finally:
        db.close()


@pytest.mark.parametrize(("column", "statements"), EDITS, ids=[c for c, _ in EDITS])
def test_an_edit_to_any_signed_column_names_that_event(
    database: Database, data: Path, capsys: pytest.CaptureFixture[str], column: str,
    statements: list[str]
) -> None:
    """One direct SQL edit of one column of event 5: `audit verify` exits 1 naming event 5."""
    assert verify(capsys, data)[0] == 0
    tamper(database, *statements)
    code, out = verify(capsys, data)
    assert code == 1, column
    assert "first broken sequence number: 5" in out, out


def test_deleting_the_newest_rows_is_truncation(
    database: Database, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last two events deleted from the database alone: the chain left is valid, but the
    signed head says 8 events were recorded."""
    tamper(database, "DELETE FROM audit_event WHERE seq >= 7",
           "DELETE FROM audit_domain WHERE seq >= 7", "DELETE FROM audit_case WHERE seq >= 7")
    code, out = verify(capsys, data)
    assert code == 1
    assert "holds 6 events" in out and "says 8 had been recorded" in out
    assert "cut short" in out and "first broken sequence number: 7" in out


def test_putting_back_an_older_copy_is_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older copy of audit.sqlite3 put back over the newer one: verify says so."""
    add_events(tmp_path, 3)
    older = tmp_path / "older.sqlite3"
    shutil.copyfile(tmp_path / AUDIT_DB_FILE, older)
    add_events(tmp_path, 3)
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
    add_events(tmp_path, 3)
    older = tmp_path / "older.sqlite3"
    shutil.copyfile(tmp_path / AUDIT_DB_FILE, older)
    add_events(tmp_path, 3)
    shutil.copyfile(older, tmp_path / AUDIT_DB_FILE)
    add_events(tmp_path, 5)  # events 6..10: past the anchored 8
    code, out = verify(capsys, tmp_path)
    assert code == 1
    assert "disagrees with" in out and "at sequence number 8" in out
    assert "first broken sequence number: 8" in out


def test_deleting_the_whole_database_is_truncation(
    sqlite_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """audit.sqlite3 removed altogether: verify reports the 8 events the head says existed."""
    (sqlite_data / AUDIT_DB_FILE).unlink()
    code, out = verify(capsys, sqlite_data)
    assert code == 1
    assert "holds 0 events" in out and "first broken sequence number: 1" in out


def test_checkpoint_verify_checks_the_whole_chain_up_to_it(
    database: Database, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exported checkpoint at 8 and a trail edited at 5 whose mac at 8 is unchanged: the
    checkpoint no longer "agrees"; it names event 5."""
    export = data / "cp.json"
    assert main(["audit", "checkpoint", "--data", str(data), "--export", str(export)]) == 0
    public = data / "audit.pub"
    public.write_text(json.loads(export.read_text())["public_key"])
    capsys.readouterr()
    tamper(database, "UPDATE audit_event SET rule = 'fax' WHERE seq = 5")
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
    assert "Events by node: test-node 8." in out


# audit_event as casegate made it before nodes were kept (no schema version recorded).
OLD_SCHEMA = (
    "CREATE TABLE audit_event (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL, "
    "grade TEXT NOT NULL, rule TEXT NOT NULL, citation TEXT NOT NULL, sender TEXT NOT NULL, "
    "recipients TEXT NOT NULL, recipient_domains TEXT NOT NULL, case_numbers TEXT NOT NULL, "
    "decision_id TEXT NOT NULL, metadata TEXT NOT NULL, mac BLOB NOT NULL)",
    "CREATE TABLE audit_domain (domain TEXT NOT NULL, seq INTEGER NOT NULL, "
    "PRIMARY KEY (domain, seq)) WITHOUT ROWID",
    "CREATE TABLE audit_case (case_number TEXT NOT NULL, seq INTEGER NOT NULL, "
    "PRIMARY KEY (case_number, seq)) WITHOUT ROWID",
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
)


def test_a_trail_written_before_nodes_were_kept_still_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An audit.sqlite3 of the old schema, its events chained without a node: it opens (the
    node column added, empty), verifies, and goes on with events that name their node."""
    monkeypatch.delenv("CASEGATE_DATABASE_URL", raising=False)
    key, _ = auditkeys.load_hmac_key(tmp_path, may_create=True, why="")
    auditkeys.load_signing_key(tmp_path, may_create=True, why="")
    previous = bytes(32)
    with contextlib.closing(sqlite3.connect(tmp_path / AUDIT_DB_FILE)) as db:
        for statement in OLD_SCHEMA:
            db.execute(statement)
        for seq in (1, 2, 3):
            event = {**VECTOR_EVENT, "seq": seq}
            previous = chain_mac(key, previous, event)
            db.execute("INSERT INTO audit_event VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                seq, event["time"], event["kind"], event["grade"], event["rule"],
                event["citation"], event["sender"], json.dumps(event["recipients"]),
                json.dumps(event["recipient_domains"]), json.dumps(event["case_numbers"]),
                event["decision_id"], json.dumps(event["metadata"]), previous))
            db.executemany("INSERT INTO audit_domain VALUES (?, ?)",
                           [(domain, seq) for domain in event["recipient_domains"]])
            db.execute("INSERT INTO audit_case VALUES (?, ?)", ("ZE26C00001", seq))
        db.commit()
    log = AuditLog.open(Database.open(tmp_path, DatabaseSettings(node="mx2")),
                        stream=io.StringIO(), checkpoint_every=0)
    assert log.verify() is None
    assert log.record(EventKind.REFUSAL, sender="a@cafcass.gov.uk") == 4
    assert [log.get(seq).node for seq in (3, 4)] == ["", "mx2"]  # type: ignore[union-attr]
    log.close()
    code, out = verify(capsys, tmp_path)
    assert code == 0 and "intact: 4 events" in out
    assert "Events by node: mx2 1, no node recorded 3." in out
