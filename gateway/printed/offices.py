"""Paper moving between offices (RRP 4.9, 4.10): dispatches recorded, receipts confirmed.

The sending office records a dispatch (file, from office, to office, method, tracking reference,
expected arrival); the receiving office confirms receipt and records where the file now is.
Until then the sending office stays responsible for the file, and a dispatch past its expected
arrival is overdue. Every step is an audit event, written in the same transaction as the row:
when the audit trail cannot be written, nothing is recorded (fail closed).

The method must be one the post options allow for a hard copy of a case file between offices
(so DX only from an office that sends it, and only to one that receives it). A method they do not
allow is a decided refusal (`DispatchRefused`, with the rule and citation), recorded as a
"dispatch-refused" audit event; bad input (`DispatchError`) records nothing. Offices are named as
staff know them, an office or one of its teams: the office directory (`OfficeRegistry`) says
which office that is, and the dispatch records the office. The clock is always passed in.

The rows are in the stores' database (on SQLite `offices.sqlite3`, beside the office directory;
on PostgreSQL the tables every node shares, so a dispatch recorded through one node is listed by
all). Dispatches are ordered by their `id`, given in the order they are recorded (SQLite's
AUTOINCREMENT, PostgreSQL's identity column), never by rowid; offices are compared
case-insensitively with `lower()`, which both engines have.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.stores.offices import immediate_transaction
from policies.events import EventKind
from policies.post import (
    NO_OFFICES,
    OfficeDirectory,
    PostAction,
    PostDecision,
    PostInputError,
    PostItem,
    PostOptions,
    decide_post,
)
from transports.database import Connection, Database, migrate

if TYPE_CHECKING:
    from gateway.audit.trail import AuditLog
    from gateway.stores.offices import OfficeRegistry

DISPATCH_DB_FILE = "offices.sqlite3"
TRANSFER_RULE = "case-file-transfer"
CITATION = "RRP 4.9; RRP 4.10"
MAX_TEXT = {"file_reference": 64, "office": 80, "tracking_reference": 64, "by": 254,
            "location": 200}

COMPONENT = "dispatches"

# Versioned schema (transports.database.migrate). The first version is the schema casegate
# always made (IF NOT EXISTS: a data directory made before versions were recorded takes it as
# it is); on PostgreSQL `id` becomes an identity column (transports.database.translate).
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS dispatches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        file_reference TEXT NOT NULL,
        from_office TEXT NOT NULL,
        to_office TEXT NOT NULL,
        method TEXT NOT NULL,
        tracking_reference TEXT NOT NULL,
        expected_at TEXT NOT NULL,
        dispatched_at TEXT NOT NULL,
        dispatched_by TEXT NOT NULL,
        received_at TEXT,
        received_by TEXT,
        location TEXT
    );
    CREATE INDEX IF NOT EXISTS dispatches_open ON dispatches (received_at, expected_at);
    """,
)


class DispatchError(ValueError):
    """A dispatch step cannot be taken; the message is one sentence, `.field` names the input."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


class DispatchRefused(Exception):
    """The post options do not allow this dispatch: a decision, already recorded as an event."""

    def __init__(self, decision: PostDecision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


@dataclass(frozen=True)
class Dispatch:
    """One movement of paper between offices."""

    id: int
    file_reference: str
    from_office: str
    to_office: str
    method: str
    tracking_reference: str
    expected_at: datetime
    dispatched_at: datetime
    dispatched_by: str
    received_at: datetime | None = None
    received_by: str = ""
    location: str = ""

    @property
    def received(self) -> bool:
        return self.received_at is not None

    @property
    def responsible_office(self) -> str:
        """RRP 4.9: the sender is responsible until the receiving office signs for it."""
        return self.to_office if self.received else self.from_office

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "file_reference": self.file_reference,
            "from_office": self.from_office,
            "to_office": self.to_office,
            "method": self.method,
            "tracking_reference": self.tracking_reference,
            "expected_at": _iso(self.expected_at),
            "dispatched_at": _iso(self.dispatched_at),
            "dispatched_by": self.dispatched_by,
            "received_at": _iso(self.received_at) if self.received_at else None,
            "received_by": self.received_by,
            "location": self.location,
            "responsible_office": self.responsible_office,
        }


class DispatchStore:
    """The dispatches, in the stores' database; every change is also an audit event."""

    def __init__(self, database: Database, options: PostOptions, audit: AuditLog,
                 offices: OfficeRegistry | None = None) -> None:
        self.options = options
        self.audit = audit
        self.offices = offices
        self._lock = threading.Lock()
        self._db = database.connect(DISPATCH_DB_FILE, autocommit=True)
        if database.is_sqlite:
            self._db.execute("PRAGMA journal_mode=WAL")
        migrate(self._db, COMPONENT, _MIGRATIONS, lambda version: DispatchError(
            "schema", f"{database.describe()}: the dispatches were written by a newer casegate "
            f"(schema {version})"))

    def directory(self) -> OfficeDirectory:
        """The office directory now (none without a registry: the policy's names alone)."""
        return self.offices.directory() if self.offices is not None else NO_OFFICES

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> AbstractContextManager[Connection]:
        return immediate_transaction(self._db, self._lock)

    # -- steps ------------------------------------------------------------------------------

    def record(
        self,
        *,
        file_reference: str,
        from_office: str,
        to_office: str,
        method: str,
        tracking_reference: str = "",
        expected_at: datetime,
        by: str,
        now: datetime,
    ) -> Dispatch:
        """Record paper leaving `from_office` (an office or one of its teams).

        Raises DispatchError for bad input (nothing recorded) and DispatchRefused when the post
        options do not allow the method between these offices (recorded as a refusal)."""
        file_reference = _text("file_reference", file_reference, MAX_TEXT["file_reference"])
        given_from = _text("from_office", from_office, MAX_TEXT["office"])
        given_to = _text("to_office", to_office, MAX_TEXT["office"])
        tracking_reference = _text(
            "tracking_reference", tracking_reference, MAX_TEXT["tracking_reference"], required=False
        )
        by = _text("by", by, MAX_TEXT["by"])
        expected_at = _aware("expected_at", expected_at)
        now = _aware("now", now)
        if expected_at < now:
            raise DispatchError("expected_at", "The expected arrival must not be in the past.")
        directory = self.directory()
        from_office = directory.resolve(given_from, self.options).name
        to_office = directory.resolve(given_to, self.options).name
        if from_office.casefold() == to_office.casefold():
            raise DispatchError("to_office", "The receiving office must differ from the sender.")
        decision = self._decide(method, given_from, given_to, directory)
        if decision.decision is not PostAction.SEND:
            self.audit.record(
                EventKind.DISPATCH_REFUSED, rule=decision.rule, citation=decision.citation,
                sender=by, file_reference=file_reference, from_office=from_office,
                to_office=to_office, method=method, applied=list(decision.applied))
            raise DispatchRefused(decision)
        if self.options.methods[method].tracked and not tracking_reference:
            raise DispatchError(
                "tracking_reference",
                f"{self.options.methods[method].label} is tracked: give its tracking reference.",
            )
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO dispatches (file_reference, from_office, to_office, method, "
                "tracking_reference, expected_at, dispatched_at, dispatched_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (file_reference, from_office, to_office, method, tracking_reference,
                 _iso(expected_at), _iso(now), by),
            ).fetchone()
            dispatch = self._get(db, int(row[0]))
            self._audit(EventKind.DISPATCH_RECORDED, dispatch)
        return dispatch

    def receive(
        self, dispatch_id: int, *, office: str, by: str, location: str, now: datetime
    ) -> Dispatch:
        """The receiving office signs for the file and records where it is now (RRP 4.10)."""
        office = _text("office", office, MAX_TEXT["office"])
        by = _text("by", by, MAX_TEXT["by"])
        location = _text("location", location, MAX_TEXT["location"])
        now = _aware("now", now)
        office = self.directory().resolve(office, self.options).name
        with self._transaction() as db:
            dispatch = self._get(db, dispatch_id)
            if dispatch.received:
                raise DispatchError("id", f"Dispatch {dispatch_id} was already received.")
            if office.casefold() != dispatch.to_office.casefold():
                raise DispatchError(
                    "office", f"Only the receiving office ({dispatch.to_office}) can sign for it."
                )
            db.execute(
                "UPDATE dispatches SET received_at = ?, received_by = ?, location = ? "
                "WHERE id = ?",
                (_iso(now), by, location, dispatch_id),
            )
            dispatch = self._get(db, dispatch_id)
            self._audit(EventKind.DISPATCH_RECEIVED, dispatch)
        return dispatch

    # -- reading ----------------------------------------------------------------------------

    def get(self, dispatch_id: int) -> Dispatch:
        with self._lock:
            return self._get(self._db, dispatch_id)

    def dispatches(self, *, open_only: bool = False, office: str = "") -> list[Dispatch]:
        """Dispatches, newest first; `office` matches either end; `open_only`: not received."""
        query = "SELECT * FROM dispatches"
        clauses: list[str] = []
        params: list[str] = []
        if open_only:
            clauses.append("received_at IS NULL")
        if office.strip():
            name = self.directory().resolve(office, self.options).name
            clauses.append("(lower(from_office) = lower(?) OR lower(to_office) = lower(?))")
            params += [name, name]
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id DESC", params).fetchall()
        return [_row(r) for r in rows]

    def overdue(self, now: datetime) -> list[Dispatch]:
        """Not received and past the expected arrival, the most overdue first."""
        now = _aware("now", now)
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM dispatches WHERE received_at IS NULL AND expected_at < ? "
                "ORDER BY expected_at, id",
                (_iso(now),),
            ).fetchall()
        return [_row(r) for r in rows]

    # -- helpers ----------------------------------------------------------------------------

    def _decide(self, method: str, from_office: str, to_office: str,
                directory: OfficeDirectory) -> PostDecision:
        """The post options' answer for a hard copy of a case file by `method` between these
        offices (bad input raises DispatchError)."""
        if method == "internal-transfer":
            raise DispatchError(
                "method", "A transfer between teams moves no paper: there is nothing to record."
            )
        item = PostItem(item="case-file", office_transfer=True, hard_copy=True,
                        from_office=from_office, to_office=to_office, method=method)
        try:
            return decide_post(item, self.options, directory)
        except PostInputError as exc:
            raise DispatchError(exc.field, str(exc)) from None

    def _get(self, db: Connection, dispatch_id: int) -> Dispatch:
        row = db.execute("SELECT * FROM dispatches WHERE id = ?", (dispatch_id,)).fetchone()
        if row is None:
            raise DispatchError("id", f"There is no dispatch {dispatch_id}.")
        return _row(row)

    def _audit(self, kind: EventKind, dispatch: Dispatch) -> None:
        self.audit.record(
            kind,
            rule=TRANSFER_RULE,
            citation=CITATION,
            sender=dispatch.received_by if dispatch.received else dispatch.dispatched_by,
            dispatch_id=dispatch.id,
            file_reference=dispatch.file_reference,
            from_office=dispatch.from_office,
            to_office=dispatch.to_office,
            method=dispatch.method,
            tracking_reference=dispatch.tracking_reference,
            expected_at=_iso(dispatch.expected_at),
            responsible_office=dispatch.responsible_office,
            location=dispatch.location,
        )


def _text(name: str, value: str, limit: int, *, required: bool = True) -> str:
    cleaned = value.strip()
    if required and not cleaned:
        raise DispatchError(name, f"'{name}' must not be empty.")
    if len(cleaned) > limit or any(not ch.isprintable() for ch in cleaned):
        raise DispatchError(name, f"'{name}' must be one line of at most {limit} characters.")
    return cleaned


def _aware(name: str, moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise DispatchError(name, f"'{name}' must say its time zone.")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _row(row: tuple[object, ...]) -> Dispatch:
    (did, file_reference, from_office, to_office, method, tracking, expected, dispatched,
     dispatched_by, received, received_by, location) = row
    return Dispatch(
        id=int(str(did)),
        file_reference=str(file_reference),
        from_office=str(from_office),
        to_office=str(to_office),
        method=str(method),
        tracking_reference=str(tracking),
        expected_at=_parse(str(expected)),
        dispatched_at=_parse(str(dispatched)),
        dispatched_by=str(dispatched_by),
        received_at=_parse(str(received)) if received is not None else None,
        received_by=str(received_by or ""),
        location=str(location or ""),
    )
