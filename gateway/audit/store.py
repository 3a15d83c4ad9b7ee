"""The audit trail on disk: an append-only table whose rows form an HMAC-SHA256 chain, in
`audit.sqlite3` or in the PostgreSQL database several nodes share (`transports.database`).

Each row n carries `mac_n = HMAC(key, mac_{n-1} || canonical JSON of event n)` (mac_0 is 32 zero
bytes). Someone who can write the database but does not hold the audit key cannot alter,
delete, insert or reorder a row without `verify()` naming the first sequence number that no
longer fits. Writes run inside `BEGIN IMMEDIATE` (on PostgreSQL: the trail's advisory lock) and
read the chain's head inside it, so appenders in several processes, or on several nodes, take
turns and cannot fork the chain: one chain, one sequence. Within one process a single writer
thread appends: callers queue events and wait (`append`) or await (`append_async`) until the
transaction holding theirs is committed, and events queued together share one transaction.

Each event names the node that wrote it (`[database] node`, the host name by default). The node
is signed with the event, but only when it is not empty: the chain signs the canonical JSON of
the event *without* a `node` key when the node is empty, so events written before nodes were
recorded (and the pinned test vector) verify as they always did, and an event's node cannot be
changed, nor removed, without the chain breaking there.

`audit_meta` records what the trail's keys must match (fingerprints, never the keys) and since
when its head is anchored outside this file (`gateway.audit.anchor`).

Two side tables (`audit_domain`, `audit_case`) index recipient domains and case numbers so that
filtered queries over millions of events stay fast; `verify()` checks them against the chained
rows too, so that an event cannot be hidden from a filter without being noticed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import hmac
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from transports.database import Connection, Database, PgConnection, migrate

AUDIT_DB_FILE = "audit.sqlite3"  # on PostgreSQL: the name of the trail's write lock
COMPONENT = "audit"
GENESIS_MAC = bytes(32)
# How long the writer waits for other callers' events when they are about to record some.
GROUP_COMMIT_DELAY = 0.001  # seconds
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
CREATE TABLE IF NOT EXISTS audit_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
# What each migration adds (transports.database.migrate). The first is idempotent, so that a
# file made before schema versions were recorded is taken as it stands.
MIGRATIONS: tuple[str, ...] = (
    _SCHEMA,
    "ALTER TABLE audit_event ADD COLUMN node TEXT NOT NULL DEFAULT ''",
)

# UPDATE and DELETE refused by the database itself (an accident, or a careless script; someone
# who can drop these can also edit rows, which the chain catches).
_SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_event_no_update BEFORE UPDATE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_event_no_delete BEFORE DELETE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
)
_PG_APPEND_ONLY = (
    "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN "
    "RAISE EXCEPTION 'the audit trail is append-only' USING ERRCODE = 'restrict_violation'; "
    "END $$",
    # PostgreSQL's own syntax (OR REPLACE: idempotent); the adapter refuses SQLite's.
    "CREATE OR REPLACE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
)


_COLUMNS = (
    "seq, time, kind, grade, rule, citation, sender, recipients, recipient_domains, "
    "case_numbers, decision_id, metadata, node"
)
_MAC = 13  # the index of `mac` in `SELECT {_COLUMNS}, mac`
VERIFY_BATCH = 5000  # rows read at a time by `verify`
MAX_PARAMETERS = 30_000  # in one statement (PostgreSQL takes up to 65,535)


class NewerSchema(ValueError):
    """The trail's tables were written by a newer casegate."""


def peek(database: Database) -> tuple[int, dict[str, str]]:
    """The last sequence number and the `audit_meta` rows of the trail in `database`, read
    without a key and without creating anything ((0, {}) when there is no trail yet)."""
    if database.is_sqlite:
        path = database.data_dir / AUDIT_DB_FILE
        if not path.exists():
            return 0, {}
        db: Connection = sqlite3.connect(path, timeout=30.0)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    else:
        db = database.connect(AUDIT_DB_FILE, autocommit=True)
        tables = {row[0] for row in db.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_name IN (?, ?)",
            ("audit_event", "audit_meta"))}
    try:
        head = 0
        if "audit_event" in tables:
            row = db.execute("SELECT MAX(seq) FROM audit_event").fetchone()
            head = int(row[0] or 0)
        meta: dict[str, str] = {}
        if "audit_meta" in tables:
            meta = {row[0]: row[1] for row in db.execute("SELECT name, value FROM audit_meta")}
        return head, meta
    finally:
        db.close()


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
        return (" AND ".join(clauses) or "1 = 1"), params


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
    node: str = ""  # the node that wrote it ("" for events written before nodes were kept)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape used in exports and the SIEM line: every field, `node` included."""
        return {**self.chained(), "node": self.node}

    def chained(self) -> dict[str, Any]:
        """The dict the chain signs: `node` only when not empty (see the module's docstring)."""
        signed = self._fields()
        if self.node:
            signed["node"] = self.node
        return signed

    def _fields(self) -> dict[str, Any]:
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


def _newer(version: int) -> NewerSchema:
    return NewerSchema(f"the audit trail's tables are at schema version {version}, written by a "
                       "newer casegate: upgrade casegate")


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
        node=row[12],
    )


def _dict_to_event(event: dict[str, Any]) -> StoredEvent:
    """The stored form of a chained event dict (what `_row_to_event` reads back from its row)."""
    return StoredEvent(
        seq=event["seq"],
        time=event["time"],
        kind=event["kind"],
        grade=event["grade"],
        rule=event["rule"],
        citation=event["citation"],
        sender=event["sender"],
        recipients=tuple(event["recipients"]),
        recipient_domains=tuple(event["recipient_domains"]),
        case_numbers=tuple(event["case_numbers"]),
        decision_id=event["decision_id"],
        metadata=event["metadata"],
        node=event.get("node", ""),
    )


# Post-commit work for one batch, run by the writer thread (see `AuditStore.after_commit`).
AfterCommit = Callable[[Sequence[tuple[StoredEvent, bytes]]], None]
_Outcome = tuple[StoredEvent, bytes] | BaseException
_Waiter = concurrent.futures.Future[tuple[StoredEvent, bytes]] | asyncio.Future[
    tuple[StoredEvent, bytes]
]


@dataclass(frozen=True, eq=False)
class _Pending:
    """An event waiting for the writer thread, and who waits for it (a thread or a loop)."""

    event: dict[str, Any]
    waiter: _Waiter
    loop: asyncio.AbstractEventLoop | None = None  # None: a thread blocks on `waiter`


class AuditStore:
    """The trail's tables (`audit.sqlite3`, or the shared PostgreSQL database): append, verify,
    query, count, checkpoints.

    One writer thread (started by the first append, stopped by `close`) appends every event:
    it takes whatever has been queued since its last commit and stores it in one transaction,
    so concurrent callers share an fsync but never the chain. Reads use the same connection
    under a lock from the caller's thread.
    """

    def __init__(self, database: Database, key: bytes) -> None:
        self.database = database
        self.node = database.node  # written into each event this store appends
        self.path = database.data_dir / AUDIT_DB_FILE  # the head file is kept beside it
        # Where the events are, for messages: the file, or the database without its password.
        self.location = str(self.path) if database.is_sqlite else database.describe()
        self._key = key
        self._lock = threading.Lock()  # the connection, and the order of the chain
        self._queued = threading.Condition()  # guards the four fields below
        self._queue: list[_Pending] = []
        self._wake_at = 1  # the queue's length at which `_enqueue` wakes the writer
        self._writer: threading.Thread | None = None
        self._closed = False
        # Called by the writer with each committed batch, in chain order, before any of its
        # callers returns; if it raises, every caller of the batch gets the exception.
        self.after_commit: AfterCommit | None = None
        # Called by the writer with the seconds each batch's transaction took (the metrics).
        self.commit_timer: Callable[[float], None] | None = None
        self._companions: Callable[[], int] | None = None  # see group_commits
        self._delay = 0.0
        self._db = database.connect(AUDIT_DB_FILE, autocommit=True, timeout=30.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            with self._lock:
                migrate(self._db, COMPONENT, MIGRATIONS, _newer)
                self._protect()
        except BaseException:
            self._db.close()
            raise

    def _protect(self) -> None:
        """The triggers that refuse UPDATE and DELETE on audit_event (see `_SQLITE_TRIGGERS`)."""
        if self.database.is_sqlite:
            for statement in _SQLITE_TRIGGERS:
                self._db.execute(statement)
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(self._db, PgConnection):
                self._db.lock("schema")  # nodes starting together replace it one at a time
            present = self._db.execute(
                "SELECT 1 FROM pg_trigger WHERE tgname = 'audit_event_append_only' "
                "AND tgrelid = 'audit_event'::regclass").fetchone()
            if present is None:
                for statement in _PG_APPEND_ONLY:
                    self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Commit what is queued, stop the writer thread, close the connection."""
        with self._queued:
            self._closed = True
            writer = self._writer
            self._queued.notify()
        if writer is not None and writer is not threading.current_thread():
            writer.join()
        with self._lock:
            self._db.close()

    # -- writing ---------------------------------------------------------------------------

    def append(self, event: dict[str, Any]) -> tuple[StoredEvent, bytes]:
        """Give `event` the next sequence number, chain it and store it; atomic across processes.

        `event` holds every field of `StoredEvent.as_dict()` except `seq`. Returns the stored
        event and its mac once the transaction that holds it is committed (durable) and
        `after_commit` has run; raises what the commit (or `after_commit`) raised.
        """
        if threading.current_thread() is self._writer:
            raise RuntimeError("audit listeners must not record events themselves")
        waiter: concurrent.futures.Future[tuple[StoredEvent, bytes]] = concurrent.futures.Future()
        self._enqueue(_Pending(event, waiter))
        return waiter.result()

    async def append_async(self, event: dict[str, Any]) -> tuple[StoredEvent, bytes]:
        """`append` for the event loop: awaits the commit without blocking the loop or a thread."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[StoredEvent, bytes]] = loop.create_future()
        self._enqueue(_Pending(event, waiter, loop))
        return await waiter

    def _enqueue(self, pending: _Pending) -> None:
        with self._queued:
            if self._closed:
                raise sqlite3.ProgrammingError("the audit store is closed")
            if self._writer is None:  # set only once started: else nothing would serve the queue
                writer = threading.Thread(
                    target=self._write_queued, name="casegate-audit-writer", daemon=True
                )
                writer.start()
                self._writer = writer
            self._queue.append(pending)
            if len(self._queue) >= self._wake_at or pending.loop is None:
                self._queued.notify()

    def group_commits(self, companions: Callable[[], int] | None,
                      delay: float = GROUP_COMMIT_DELAY) -> None:
        """Let one commit serve several callers when others are about to record too.

        `companions()` says how many other callers will record an event soon (the gateway: the
        messages in flight besides this one). When it is above zero the writer, having found an
        event queued, waits up to `delay` seconds for theirs (or until that many more are
        queued) before committing: PostgreSQL's `commit_delay` and `commit_siblings`. Each
        commit writes about a dozen pages and an fsync whatever it holds, so under load this
        nearly halves the trail's CPU per event; alone, a caller is never delayed, nor is one
        blocked in `append` (it may be holding up an event loop). None: off.
        """
        with self._queued:
            self._companions = companions
            self._delay = delay

    def _write_queued(self) -> None:
        """The writer thread: commit each batch queued meanwhile; drain and stop on close."""
        while True:
            with self._queued:
                self._wake_at = 1
                while not self._queue and not self._closed:
                    self._queued.wait()
                if not self._queue:
                    return
                expected = 1 + _count(self._companions) if not self._closed else 0
                if expected > len(self._queue) and not self._blocked():
                    self._wake_at = expected
                    self._queued.wait_for(functools.partial(self._gathered, expected),
                                          self._delay)
                self._wake_at = sys.maxsize  # committing: the queue is looked at afterwards
                batch, self._queue = self._queue, []
            _settle(batch, self._commit_batch(batch))

    def _blocked(self) -> bool:
        """Whether a caller blocked in `append` (a thread, perhaps an event loop's own) waits
        on the queue: it is never kept waiting for companions."""
        return any(pending.loop is None for pending in self._queue)

    def _gathered(self, expected: int) -> bool:
        """Whether the writer may stop waiting: `expected` events queued, a blocked caller,
        or closing."""
        return self._closed or len(self._queue) >= expected or self._blocked()

    def _commit_batch(self, batch: Sequence[_Pending]) -> list[_Outcome]:
        """Store `batch` in one transaction and run `after_commit`; one outcome per event."""
        try:
            with self._lock:
                started = time.perf_counter()
                appended = self._store_batch([pending.event for pending in batch])
                took = time.perf_counter() - started
            if self.commit_timer is not None:
                self.commit_timer(took)
            if self.after_commit is not None:
                self.after_commit(appended)
        except BaseException as exc:  # every waiter of the batch gets it and fails closed
            return [exc] * len(batch)
        return list(appended)

    def _store_batch(self, events: Sequence[dict[str, Any]]) -> list[tuple[StoredEvent, bytes]]:
        """Chain and insert `events` in one BEGIN IMMEDIATE transaction (holding the lock)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            head = self._db.execute(
                "SELECT seq, mac FROM audit_event ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, previous = (head[0], head[1]) if head else (0, GENESIS_MAC)
            appended: list[tuple[StoredEvent, bytes]] = []
            rows: list[tuple[Any, ...]] = []
            domains: list[tuple[str, int]] = []
            cases: list[tuple[str, int]] = []
            for event in events:
                seq += 1
                full = {"seq": seq, **event}
                if self.node:
                    full["node"] = self.node
                previous = chain_mac(self._key, previous, full)
                rows.append((*_event_row(full), previous))
                domains.extend((domain, seq) for domain in full["recipient_domains"])
                cases.extend((case, seq) for case in full["case_numbers"])
                appended.append((_dict_to_event(full), previous))
            self._insert(rows, domains, cases)
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT may have ended it already
                self._db.execute("ROLLBACK")
            raise
        return appended

    def _insert(
        self,
        rows: Sequence[tuple[Any, ...]],
        domains: Sequence[tuple[str, int]],
        cases: Sequence[tuple[str, int]],
    ) -> None:
        if not self.database.is_sqlite and (
                len(rows) * 14 + 2 * (len(domains) + len(cases)) <= MAX_PARAMETERS):
            self._insert_at_once(rows, domains, cases)
            return
        self._db.executemany(
            f"INSERT INTO audit_event ({_COLUMNS}, mac) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
            rows,
        )
        if domains:  # each call lets the event loop's thread in before the writer goes on
            self._db.executemany(
                "INSERT OR IGNORE INTO audit_domain (domain, seq) VALUES (?, ?)", domains
            )
        if cases:
            self._db.executemany(
                "INSERT OR IGNORE INTO audit_case (case_number, seq) VALUES (?, ?)", cases
            )

    def _insert_at_once(
        self,
        rows: Sequence[tuple[Any, ...]],
        domains: Sequence[tuple[str, int]],
        cases: Sequence[tuple[str, int]],
    ) -> None:
        """PostgreSQL: the batch's rows of all three tables in one statement, so that the trail's
        lock, which every node waits for, is held for one round trip to the server instead of
        one per table (with a savepoint around each). Only placeholders and constant names
        are put into the SQL text."""
        parts = [f"INSERT INTO audit_event ({_COLUMNS}, mac) "  # noqa: S608
                 f"VALUES {_placeholders(14, len(rows))}"]
        params: list[Any] = [value for row in rows for value in row]
        for table, column, entries in (("audit_domain", "domain", domains),
                                       ("audit_case", "case_number", cases)):
            if entries:
                parts.append(f"INSERT INTO {table} ({column}, seq) VALUES "  # noqa: S608
                             f"{_placeholders(2, len(entries))} ON CONFLICT DO NOTHING")
                params.extend(value for entry in entries for value in entry)
        *first, last = parts
        ctes = ", ".join(f"t{n} AS ({part})" for n, part in enumerate(first))
        self._db.execute(f"WITH {ctes} {last}" if ctes else last, params)

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
                "INSERT INTO audit_checkpoint (seq, time, mac, key_id, signature) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (seq) DO UPDATE SET time = excluded.time, "
                "mac = excluded.mac, key_id = excluded.key_id, signature = excluded.signature",
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

    def meta(self) -> dict[str, str]:
        """The `audit_meta` rows: key fingerprints, since when the head is anchored."""
        with self._lock:
            return {name: value for name, value in
                    self._db.execute("SELECT name, value FROM audit_meta")}

    def set_meta(self, values: dict[str, str], *, replace: bool = False) -> dict[str, str]:
        """Record `values` (keeping rows already there unless `replace`); the rows after."""
        conflict = "DO UPDATE SET value = excluded.value" if replace else "DO NOTHING"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    f"INSERT INTO audit_meta (name, value) VALUES (?, ?) "  # noqa: S608
                    f"ON CONFLICT (name) {conflict}", list(values.items()))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return self.meta()

    def head_mac_valid(self) -> bool:
        """Whether the newest row's mac is what this store's key gives it (a cheap check that
        the key is the one the chain was made with; True for an empty trail)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS}, mac FROM audit_event ORDER BY seq DESC LIMIT 2"  # noqa: S608
            ).fetchall()
        if not rows:
            return True
        previous = bytes(rows[1][_MAC]) if len(rows) > 1 else GENESIS_MAC
        try:
            mac = chain_mac(self._key, previous, _row_to_event(rows[0]).chained())
        except (ValueError, TypeError):
            return False
        return isinstance(rows[0][_MAC], bytes) and hmac.compare_digest(mac, rows[0][_MAC])

    def mac_at(self, seq: int) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT mac FROM audit_event WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    # -- verifying -------------------------------------------------------------------------

    def verify(self, up_to: int | None = None) -> int | None:
        """The first sequence number whose row breaks the chain, or None when intact
        (only rows up to `up_to` when given: a row missing up to there is broken too).

        Catches an altered row (its mac no longer matches), a deleted or inserted row (the
        numbering skips or the next mac no longer matches) and reordered rows (the sequence
        number is inside the signed JSON). Side-table entries are checked against the rows.
        Rows are read `VERIFY_BATCH` at a time; on PostgreSQL other nodes may append meanwhile:
        the chain is checked up to the newest row found.
        """
        previous = GENESIS_MAC
        expected = 1
        limit = up_to if up_to is not None else sys.maxsize
        while expected <= limit:
            last = min(limit, expected - 1 + VERIFY_BATCH)
            low = expected if expected > 1 else -sys.maxsize  # at first, rows below 1 too
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS}, mac FROM audit_event WHERE seq >= ? AND seq <= ? "  # noqa: S608
                    "ORDER BY seq", (low, last)).fetchall()
                # The side tables' rows for the events read (read after them: on PostgreSQL an
                # event and its side rows are committed together).
                high = rows[-1][0] if rows else expected - 1
                domains = _Grouped(iter(self._db.execute(
                    "SELECT seq, domain FROM audit_domain WHERE seq >= ? AND seq <= ? "
                    "ORDER BY seq", (low, high)).fetchall()))
                cases = _Grouped(iter(self._db.execute(
                    "SELECT seq, case_number FROM audit_case WHERE seq >= ? AND seq <= ? "
                    "ORDER BY seq", (low, high)).fetchall()))
            for row in rows:
                seq = row[0]
                if seq != expected:
                    return expected
                try:
                    event = _row_to_event(row).chained()
                    mac = chain_mac(self._key, previous, event)
                except (ValueError, TypeError):
                    return seq
                stored = row[_MAC]
                if not isinstance(stored, bytes) or not hmac.compare_digest(mac, stored):
                    return seq
                if domains.take(seq) != set(event["recipient_domains"]) or cases.take(
                    seq
                ) != set(event["case_numbers"]):
                    return seq
                previous = mac
                expected += 1
            if expected <= last:  # fewer rows than asked for: the end of the chain
                break
        if up_to is not None:
            return expected if expected <= up_to else None
        with self._lock:  # side-table rows for no event: past the last one, or below 1
            found = [self._db.execute(
                f"SELECT MIN(seq) FROM {table} WHERE (seq >= ? OR seq < 1) AND NOT EXISTS "  # noqa: S608
                f"(SELECT 1 FROM audit_event WHERE audit_event.seq = {table}.seq)",
                (expected,)).fetchone()[0]
                for table in ("audit_domain", "audit_case")]
        stray = [s for s in found if s is not None]
        return min(stray) if stray else None

    def nodes(self) -> dict[str, int]:
        """How many events each node wrote ("" for those written before nodes were kept)."""
        with self._lock:
            return {row[0]: int(row[1]) for row in self._db.execute(
                "SELECT node, COUNT(*) FROM audit_event GROUP BY node ORDER BY node")}

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
        event.get("node", ""),
    )


def _placeholders(width: int, count: int) -> str:
    """`count` rows of `width` placeholders each, for a multi-row VALUES."""
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * count)


def _count(companions: Callable[[], int] | None) -> int:
    """`companions()`, or 0 when there is no hook or it fails (then commit at once)."""
    try:
        return max(0, companions()) if companions is not None else 0
    except Exception:
        return 0


def _settle(batch: Sequence[_Pending], outcomes: Sequence[_Outcome]) -> None:
    """Hand each waiter its outcome: blocked threads at once, each event loop in one callback."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, _Outcome]]] = {}
    for pending, outcome in zip(batch, outcomes, strict=True):
        if pending.loop is None:
            _resolve(pending.waiter, outcome)
        else:
            by_loop.setdefault(pending.loop, []).append((pending.waiter, outcome))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve_all, settled)


def _resolve_all(settled: Sequence[tuple[_Waiter, _Outcome]]) -> None:
    for waiter, outcome in settled:
        _resolve(waiter, outcome)


def _resolve(waiter: _Waiter, outcome: _Outcome) -> None:
    if waiter.done():  # an awaiting task was cancelled; its event is stored all the same
        return
    if isinstance(outcome, BaseException):
        waiter.set_exception(outcome)
    else:
        waiter.set_result(outcome)
