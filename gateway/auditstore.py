"""The audit trail on disk: an append-only SQLite table whose rows form an HMAC-SHA256 chain.

Each row n carries `mac_n = HMAC(key, mac_{n-1} || canonical JSON of event n)` (mac_0 is 32 zero
bytes). Someone who can write the database file but does not hold the audit key cannot alter,
delete, insert or reorder a row without `verify()` naming the first sequence number that no
longer fits. Writes run inside `BEGIN IMMEDIATE`, so appenders in several processes (and several
threads, under a lock) take turns and cannot fork the chain.

Two side tables (`audit_domain`, `audit_case`) index recipient domains and case numbers so that
filtered queries over millions of events stay fast; `verify()` checks them against the chained
rows too, so that an event cannot be hidden from a filter without being noticed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS_MAC = bytes(32)
LIST_FIELDS = ("recipients", "recipient_domains", "case_numbers")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_event (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    grade TEXT NOT NULL,
    rule TEXT NOT NULL,
    citation TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    recipient_domains TEXT NOT NULL,
    case_numbers TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    metadata TEXT NOT NULL,
    mac BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_event_time ON audit_event (time, rule);
CREATE INDEX IF NOT EXISTS audit_event_kind ON audit_event (kind, seq);
CREATE INDEX IF NOT EXISTS audit_event_grade ON audit_event (grade, seq);
CREATE INDEX IF NOT EXISTS audit_event_rule ON audit_event (rule, seq);
CREATE INDEX IF NOT EXISTS audit_event_sender ON audit_event (sender, seq);
CREATE INDEX IF NOT EXISTS audit_event_decision ON audit_event (decision_id);
CREATE TABLE IF NOT EXISTS audit_domain (
    domain TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (domain, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_case (
    case_number TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (case_number, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS audit_domain_seq ON audit_domain (seq);
CREATE INDEX IF NOT EXISTS audit_case_seq ON audit_case (seq);
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    mac BLOB NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON audit_event
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON audit_event
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

_COLUMNS = (
    "seq, time, kind, grade, rule, citation, sender, recipients, recipient_domains, "
    "case_numbers, decision_id, metadata"
)


def canonical_json(event: dict[str, Any]) -> bytes:
    """The exact bytes the chain signs: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def chain_mac(key: bytes, previous: bytes, event: dict[str, Any]) -> bytes:
    """mac_n = HMAC-SHA256(key, mac_{n-1} || canonical JSON of event n)."""
    return hmac.new(key, previous + canonical_json(event), hashlib.sha256).digest()


@dataclass(frozen=True)
class EventFilter:
    """What `casegate audit list` and the governance view filter on; empty means any."""

    since: str = ""  # ISO-8601 UTC, inclusive
    until: str = ""  # ISO-8601 UTC, exclusive
    sender: str = ""
    domain: str = ""
    case_number: str = ""
    rule: str = ""
    grade: str = ""
    kind: str = ""

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters (always parameterised, never interpolated)."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.since:
            clauses.append("time >= ?")
            params.append(self.since)
        if self.until:
            clauses.append("time < ?")
            params.append(self.until)
        for column, value in (
            ("sender", self.sender.lower()),
            ("rule", self.rule),
            ("grade", self.grade),
            ("kind", self.kind),
        ):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.domain:
            clauses.append("seq IN (SELECT seq FROM audit_domain WHERE domain = ?)")
            params.append(self.domain.lower())
        if self.case_number:
            clauses.append("seq IN (SELECT seq FROM audit_case WHERE case_number = ?)")
            params.append(self.case_number)
        return (" AND ".join(clauses) or "1"), params


@dataclass(frozen=True)
class StoredEvent:
    """One row as read back: the event fields plus its sequence number."""

    seq: int
    time: str
    kind: str
    grade: str
    rule: str
    citation: str
    sender: str
    recipients: tuple[str, ...]
    recipient_domains: tuple[str, ...]
    case_numbers: tuple[str, ...]
    decision_id: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape used in exports, the SIEM line and the chain."""
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            "grade": self.grade,
            "rule": self.rule,
            "citation": self.citation,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "recipient_domains": list(self.recipient_domains),
            "case_numbers": list(self.case_numbers),
            "decision_id": self.decision_id,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the chain had `mac` at sequence number `seq`."""

    seq: int
    time: str
    mac: bytes
    key_id: str
    signature: bytes

    def statement(self) -> bytes:
        """The bytes the Ed25519 signature covers."""
        return canonical_json(
            {"seq": self.seq, "time": self.time, "mac": self.mac.hex(), "key_id": self.key_id}
        )


def _row_to_event(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        seq=row[0],
        time=row[1],
        kind=row[2],
        grade=row[3],
        rule=row[4],
        citation=row[5],
        sender=row[6],
        recipients=tuple(json.loads(row[7])),
        recipient_domains=tuple(json.loads(row[8])),
        case_numbers=tuple(json.loads(row[9])),
        decision_id=row[10],
        metadata=json.loads(row[11]),
    )


@dataclass(eq=False)
class _Pending:
    """An event waiting for its group commit, and what became of it."""

    event: dict[str, Any]
    done: bool = False
    stored: StoredEvent | None = None
    mac: bytes = b""
    error: BaseException | None = None


class AuditStore:
    """The SQLite file `audit.sqlite3`: append, verify, query, count, checkpoints."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._key = key
        self._lock = threading.Lock()  # the connection, and the order of the chain
        self._queue_lock = threading.Lock()  # events waiting for the next group commit
        self._queue: list[_Pending] = []
        self._db = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> tuple[StoredEvent, bytes]:
        """Give `event` the next sequence number, chain it and store it; atomic across processes.

        `event` holds every field of `StoredEvent.as_dict()` except `seq`. Returns the stored
        event and its mac once the transaction that holds it is committed (durable).

        Group commit: threads that append while another thread's transaction is being committed
        queue their events, and the next of them to get the lock writes them all, in the order
        they queued, in one transaction (one fsync). Each caller still returns only after its
        own event is committed, and raises if that transaction failed.
        """
        pending = _Pending(event)
        with self._queue_lock:
            self._queue.append(pending)
        with self._lock:
            if not pending.done:
                self._commit_queued()
        if pending.error is not None:
            raise pending.error
        assert pending.stored is not None
        return pending.stored, pending.mac

    def _commit_queued(self) -> None:
        """Chain and store every queued event in one transaction (called holding the lock)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                head = self._db.execute(
                    "SELECT seq, mac FROM audit_event ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, previous = (head[0], head[1]) if head else (0, GENESIS_MAC)
                for pending in batch:
                    seq += 1
                    full = {"seq": seq, **pending.event}
                    previous = chain_mac(self._key, previous, full)
                    self._insert(full, previous)
                    pending.stored, pending.mac = _row_to_event(_event_row(full)), previous
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except BaseException as exc:
            for pending in batch:
                pending.stored, pending.error = None, exc
            raise
        finally:
            for pending in batch:
                pending.done = True

    def _insert(self, event: dict[str, Any], mac: bytes) -> None:
        self._db.execute(
            f"INSERT INTO audit_event ({_COLUMNS}, mac) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            (*_event_row(event), mac),
        )
        seq = event["seq"]
        self._db.executemany(
            "INSERT OR IGNORE INTO audit_domain (domain, seq) VALUES (?, ?)",
            [(d, seq) for d in event["recipient_domains"]],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO audit_case (case_number, seq) VALUES (?, ?)",
            [(c, seq) for c in event["case_numbers"]],
        )

    def head(self) -> tuple[int, bytes]:
        """The last sequence number and its mac ((0, genesis) when empty)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, mac FROM audit_event ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_MAC)

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO audit_checkpoint (seq, time, mac, key_id, signature) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    checkpoint.seq,
                    checkpoint.time,
                    checkpoint.mac,
                    checkpoint.key_id,
                    checkpoint.signature,
                ),
            )

    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, time, mac, key_id, signature FROM audit_checkpoint ORDER BY seq"
            ).fetchall()
        return [Checkpoint(*row) for row in rows]

    def latest_checkpoint(self) -> Checkpoint | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, time, mac, key_id, signature FROM audit_checkpoint "
                "ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return Checkpoint(*row) if row else None

    def mac_at(self, seq: int) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT mac FROM audit_event WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    # -- verifying -------------------------------------------------------------------------

    def verify(self) -> int | None:
        """The first sequence number whose row breaks the chain, or None when intact.

        Catches an altered row (its mac no longer matches), a deleted or inserted row (the
        numbering skips or the next mac no longer matches) and reordered rows (the sequence
        number is inside the signed JSON). Side-table entries are checked against the rows.
        """
        previous = GENESIS_MAC
        expected = 1
        with self._lock:
            domains = _Grouped(self._db.execute(
                "SELECT seq, domain FROM audit_domain ORDER BY seq"))
            cases = _Grouped(self._db.execute(
                "SELECT seq, case_number FROM audit_case ORDER BY seq"))
            cursor = self._db.execute(
                f"SELECT {_COLUMNS}, mac FROM audit_event ORDER BY seq"  # noqa: S608
            )
            for row in cursor:
                seq = row[0]
                if seq != expected:
                    return expected
                try:
                    event = _row_to_event(row).as_dict()
                    mac = chain_mac(self._key, previous, event)
                except (ValueError, TypeError):
                    return seq
                if not isinstance(row[12], bytes) or not hmac.compare_digest(mac, row[12]):
                    return seq
                if domains.take(seq) != set(event["recipient_domains"]) or cases.take(
                    seq
                ) != set(event["case_numbers"]):
                    return seq
                previous = mac
                expected += 1
            stray = [s for s in (domains.next_seq(), cases.next_seq()) if s is not None]
            return min(stray) if stray else None

    # -- reading ---------------------------------------------------------------------------

    def get(self, seq: int) -> StoredEvent | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM audit_event WHERE seq = ?", (seq,)  # noqa: S608
            ).fetchone()
        return _row_to_event(row) if row else None

    def page(
        self, flt: EventFilter, *, before: int | None = None, limit: int = 50
    ) -> list[StoredEvent]:
        """Newest first, keyset-paginated: events with seq < `before` matching `flt`."""
        where, params = flt.where()
        if before is not None:
            where += " AND seq < ?"
            params.append(before)
        sql = (
            f"SELECT {_COLUMNS} FROM audit_event WHERE {where} "  # noqa: S608
            "ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [*params, limit]).fetchall()
        return [_row_to_event(r) for r in rows]

    def iterate(self, flt: EventFilter, *, batch: int = 1000) -> Iterator[StoredEvent]:
        """Every matching event, oldest first, read in batches (for exports)."""
        after = 0
        where, params = flt.where()
        sql = (
            f"SELECT {_COLUMNS} FROM audit_event WHERE {where} AND seq > ? "  # noqa: S608
            "ORDER BY seq LIMIT ?"
        )
        while True:
            with self._lock:
                rows = self._db.execute(sql, [*params, after, batch]).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row_to_event(row)
            after = rows[-1][0]

    def graded_after(self, seq: int, grades: Collection[str], limit: int) -> list[StoredEvent]:
        """Events after `seq` whose grade is one of `grades`, oldest first."""
        wanted = sorted(grades)
        if not wanted:
            return []
        marks = ",".join("?" for _ in wanted)
        sql = (
            f"SELECT {_COLUMNS} FROM audit_event WHERE seq > ? AND grade IN ({marks}) "  # noqa: S608
            "ORDER BY seq LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [seq, *wanted, limit]).fetchall()
        return [_row_to_event(r) for r in rows]

    def counts_by_day_and_rule(self, flt: EventFilter) -> list[tuple[str, str, int]]:
        """(day, rule, count) for matching events with a rule, oldest day first."""
        where, params = flt.where()
        sql = (
            "SELECT substr(time, 1, 10) AS day, rule, COUNT(*) FROM audit_event "  # noqa: S608
            f"WHERE {where} AND rule != '' GROUP BY day, rule ORDER BY day, rule"
        )
        with self._lock:
            return [(r[0], r[1], r[2]) for r in self._db.execute(sql, params)]


class _Grouped:
    """Walks (seq, value) rows in seq order alongside the events, one seq at a time."""

    def __init__(self, rows: Iterator[tuple[int, str]]) -> None:
        self._rows = rows
        self._next: tuple[int, str] | None = next(self._rows, None)

    def take(self, seq: int) -> set[str] | None:
        """The values filed under `seq`; None when rows for an earlier seq were left over."""
        values: set[str] = set()
        while self._next is not None and self._next[0] <= seq:
            if self._next[0] < seq:
                return None
            values.add(self._next[1])
            self._next = next(self._rows, None)
        return values

    def next_seq(self) -> int | None:
        return self._next[0] if self._next is not None else None


def _event_row(event: dict[str, Any]) -> tuple[Any, ...]:
    return (
        event["seq"],
        event["time"],
        event["kind"],
        event["grade"],
        event["rule"],
        event["citation"],
        event["sender"],
        *(canonical_json(event[name]).decode("utf-8") for name in LIST_FIELDS),
        event["decision_id"],
        canonical_json(event["metadata"]).decode("utf-8"),
    )
