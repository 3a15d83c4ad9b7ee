"""The office directory: Cafcass offices, their teams, and whether each sends and receives DX.

Staff name an office the way they know it: "Bloomsbury", or a team inside it ("Legal Team").
`casegate offices add` records an office, its teams (other names for it: a team belongs to one
office, and no name is used twice) and its DX capability; the postal decision
(`policies.post.OfficeDirectory`) and the dispatches between offices read it to know which
office a name is and whether DX may go from and to it.

The policy stays the ceiling: an office may be given DX only where the policy's post options
list it (App. 2, Post options: "DX is now only available in these offices"; an organisation
changes those lists in its policy file, `[post] dx_outgoing_offices` and `dx_incoming_offices`),
so the directory can take DX away from an office or give it more names, never give DX where the
policy does not. An office the directory does not know is still an office: it has the DX the
policy gives its name.

The rows are in the stores' database (on SQLite `offices.sqlite3` in the data directory,
beside the dispatches). Every change is an audit event written in the same transaction (when
the audit trail cannot be written, nothing changes). Reads and writes block: on the event loop,
call them in a worker thread (`asyncio.to_thread`), as every store here is called.

Names are case-insensitive and kept as typed. On SQLite the key columns are `COLLATE NOCASE`
(as they always were); on PostgreSQL each table has a unique index on `lower()` of its name,
and every lookup compares `lower(name) = lower(?)`, which means the same on both (SQLite's
lower() and NOCASE both fold ASCII letters). Teams are listed in the order they were added:
SQLite's rowid, PostgreSQL's `position` column.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from policies.events import EventKind
from policies.post import MAX_OFFICE_NAME, Office, OfficeDirectory, PostOptions
from transports.database import Connection, Database, migrate

if TYPE_CHECKING:
    from gateway.audit.trail import AuditLog

OFFICES_DB_FILE = "offices.sqlite3"
MAX_TEAMS = 50
DX_CITATION = "App. 2, Post options (DX)"

COMPONENT = "offices"

# Versioned schemas (transports.database.migrate), one list per engine. SQLite's first version
# is the schema casegate always made (IF NOT EXISTS: a data directory made before versions
# were recorded takes it as it is).
_SQLITE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS office (
        name TEXT PRIMARY KEY COLLATE NOCASE,
        dx_outgoing INTEGER NOT NULL,
        dx_incoming INTEGER NOT NULL,
        added_at TEXT NOT NULL,
        added_by TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS office_team (
        team TEXT PRIMARY KEY COLLATE NOCASE,
        office TEXT NOT NULL REFERENCES office (name)
    );
    """,
)
_PG_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE office (
        name TEXT PRIMARY KEY,                -- as typed
        dx_outgoing INTEGER NOT NULL,
        dx_incoming INTEGER NOT NULL,
        added_at TEXT NOT NULL,
        added_by TEXT NOT NULL
    );
    CREATE UNIQUE INDEX office_name_key ON office (lower(name));
    CREATE TABLE office_team (
        position INTEGER PRIMARY KEY,         -- the order teams were added in
        team TEXT NOT NULL,                   -- as typed
        office TEXT NOT NULL REFERENCES office (name)
    );
    CREATE UNIQUE INDEX office_team_key ON office_team (lower(team));
    """,
)


class Dx(StrEnum):
    """What an office does with DX."""

    NONE = "none"
    INCOMING = "incoming"
    OUTGOING = "outgoing"
    BOTH = "both"

    @property
    def outgoing(self) -> bool:
        return self in (Dx.OUTGOING, Dx.BOTH)

    @property
    def incoming(self) -> bool:
        return self in (Dx.INCOMING, Dx.BOTH)

    @classmethod
    def of(cls, outgoing: bool, incoming: bool) -> Dx:
        return {(False, False): cls.NONE, (False, True): cls.INCOMING,
                (True, False): cls.OUTGOING, (True, True): cls.BOTH}[(outgoing, incoming)]


class OfficeError(ValueError):
    """An office cannot be recorded as asked; one sentence, `.field` names the input."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class Recorded:
    """What `add` did: the office as it now stands, and whether it is new or changed."""

    office: Office
    created: bool
    changed: bool


class OfficeRegistry:
    """The offices, in the stores' database; every change is also an audit event."""

    def __init__(self, database: Database, audit: AuditLog) -> None:
        self.audit = audit
        self._lock = threading.Lock()
        self._db = database.connect(OFFICES_DB_FILE, autocommit=True)
        self._sqlite = database.is_sqlite
        # The order teams were added in: SQLite's rowid, a column of its own on PostgreSQL.
        self._team_order = "rowid" if database.is_sqlite else "position"
        if database.is_sqlite:
            self._db.execute("PRAGMA journal_mode=WAL")
        migrate(self._db, COMPONENT,
                _SQLITE_MIGRATIONS if database.is_sqlite else _PG_MIGRATIONS,
                lambda version: OfficeError("schema", (
                    f"{database.describe()}: the office directory was written by a newer "
                    f"casegate (schema {version})")))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> AbstractContextManager[Connection]:
        return immediate_transaction(self._db, self._lock)

    # -- writing ------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        options: PostOptions,
        teams: Sequence[str] = (),
        dx: Dx | None = None,
        by: str,
        now: datetime,
    ) -> Recorded:
        """Record an office, or add teams to one (and change its DX when `dx` is given).

        A new office without `dx` gets what the policy gives its name. Raises OfficeError for
        a name used elsewhere, bad text, or DX the policy does not allow from or to it.
        """
        name = _name("name", name)
        wanted_teams = _unique_names(_name("team", t) for t in teams)
        wanted_teams = [t for t in wanted_teams if t.casefold() != name.casefold()]
        if len(wanted_teams) > MAX_TEAMS:
            raise OfficeError("team", f"An office may have at most {MAX_TEAMS} teams.")
        by = by.strip()
        if dx is not None:
            _within_policy(name, dx, options)
        if now.tzinfo is None:
            raise OfficeError("now", "The time must say its time zone.")
        with self._transaction() as db:
            current = self._office(db, name)
            if current is None:
                self._free(db, name, "name", owner=None)
            office_name = current.name if current is not None else name
            for team in wanted_teams:
                self._free(db, team, "team", owner=office_name)
            new_teams = [t for t in wanted_teams
                         if current is None or t.casefold() not in
                         {x.casefold() for x in current.teams}]
            if current is None:
                chosen = dx or Dx.of(options.dx_sends_from(name), options.dx_receives_at(name))
                db.execute(
                    "INSERT INTO office (name, dx_outgoing, dx_incoming, added_at, added_by) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, int(chosen.outgoing), int(chosen.incoming), _iso(now), by))
            elif dx is not None:
                db.execute("UPDATE office SET dx_outgoing = ?, dx_incoming = ? WHERE name = ?",
                           (int(dx.outgoing), int(dx.incoming), office_name))
            db.executemany("INSERT INTO office_team (team, office) VALUES (?, ?)",
                           [(t, office_name) for t in new_teams])
            office = self._office(db, office_name)
            assert office is not None
            created = current is None
            changed = not created and (office != current)
            if created or changed:
                self.audit.record(
                    EventKind.OFFICE_ADDED if created else EventKind.OFFICE_CHANGED,
                    sender=by, citation=DX_CITATION, office=office.name,
                    teams=list(office.teams), added_teams=new_teams,
                    dx=Dx.of(office.dx_outgoing, office.dx_incoming).value)
        return Recorded(office=office, created=created, changed=changed)

    # -- reading ------------------------------------------------------------------------------

    def offices(self) -> list[Office]:
        """Every registered office with its teams, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, dx_outgoing, dx_incoming FROM office ORDER BY lower(name)"
            ).fetchall()
            teams = self._db.execute(
                f"SELECT office, team FROM office_team ORDER BY {self._team_order}"  # noqa: S608
            ).fetchall()
        if not self._sqlite:  # PostgreSQL's collation may order other than SQLite's
            # lower-cased bytes (spaces, punctuation): by lower-cased code points, as SQLite
            rows = sorted(rows, key=lambda row: str(row[0]).lower())
        by_office: dict[str, list[str]] = {}
        for office, team in teams:
            by_office.setdefault(str(office).casefold(), []).append(str(team))
        return [Office(name=str(n), teams=tuple(by_office.get(str(n).casefold(), ())),
                       dx_outgoing=bool(o), dx_incoming=bool(i), registered=True)
                for n, o, i in rows]

    def directory(self) -> OfficeDirectory:
        """The offices as the postal decision reads them."""
        return OfficeDirectory(tuple(self.offices()))

    # -- helpers ------------------------------------------------------------------------------

    def _office(self, db: Connection, name: str) -> Office | None:
        row = db.execute("SELECT name, dx_outgoing, dx_incoming FROM office "
                         "WHERE lower(name) = lower(?)", (name,)).fetchone()
        if row is None:
            return None
        teams = db.execute(
            f"SELECT team FROM office_team WHERE office = ? ORDER BY {self._team_order}",  # noqa: S608
            (row[0],)).fetchall()
        return Office(name=str(row[0]), teams=tuple(str(t[0]) for t in teams),
                      dx_outgoing=bool(row[1]), dx_incoming=bool(row[2]), registered=True)

    def _free(self, db: Connection, text: str, field_name: str,
              owner: str | None) -> None:
        """`text` is not already the name or a team of an office other than `owner`."""
        office = db.execute("SELECT name FROM office WHERE lower(name) = lower(?)",
                            (text,)).fetchone()
        team = db.execute("SELECT office FROM office_team WHERE lower(team) = lower(?)",
                          (text,)).fetchone()
        for found, what in ((office, "an office"), (team, "a team of")):
            if found is None:
                continue
            holder = str(found[0])
            if owner is not None and holder.casefold() == owner.casefold():
                continue
            where = "an office" if what == "an office" else f"a team of {holder}"
            raise OfficeError(field_name, f"'{text}' is already {where}: each name may name "
                              "one office only.")


def _within_policy(name: str, dx: Dx, options: PostOptions) -> None:
    """DX only where the policy's post options list the office (App. 2, Post options)."""
    if dx.outgoing and not options.dx_sends_from(name):
        senders = " and ".join(options.dx_outgoing_offices) or "no office"
        raise OfficeError(
            "dx", f"The policy lets DX go out only from {senders} ({DX_CITATION}); an "
            "organisation changes that in its policy file ([post] dx_outgoing_offices).")
    if dx.incoming and not options.dx_receives_at(name):
        receivers = " and ".join(options.dx_incoming_offices) or "no office"
        raise OfficeError(
            "dx", f"The policy lets DX be received only at {receivers} ({DX_CITATION}); an "
            "organisation changes that in its policy file ([post] dx_incoming_offices).")


def _name(field_name: str, text: str) -> str:
    cleaned = " ".join(text.split())
    if not cleaned:
        raise OfficeError(field_name, f"The {field_name} must not be empty.")
    if (len(cleaned) > MAX_OFFICE_NAME or any(not ch.isprintable() for ch in text)
            or "\n" in text or "\r" in text):
        raise OfficeError(field_name, f"The {field_name} must be one line of at most "
                          f"{MAX_OFFICE_NAME} characters.")
    return cleaned


def _unique_names(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.casefold(), name)
    return list(seen.values())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def immediate_transaction(db: Connection, lock: threading.Lock) -> Iterator[Connection]:
    """One `BEGIN IMMEDIATE` transaction on `db` while holding `lock`: committed at the end,
    rolled back on any error. The office directory and the dispatch log share it."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
