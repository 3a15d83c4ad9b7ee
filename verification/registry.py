"""The registry of verified recipients and the staff personal-address directory.

One connection per registry (`casegate.sqlite3`, or the shared PostgreSQL database), shared by
the threads of an asyncio server under a lock; on SQLite the file runs in WAL mode so readers do
not block the writer. The schema is created on open and carries a version (table
`schema_version`), so later issues (the verification workflow) add migrations to `_MIGRATIONS`
rather than editing the tables in place.

The verifications in force and the staff directory are kept in memory between reads, as of one
version of the tables: on SQLite `PRAGMA data_version` and the connection's own changes; on
PostgreSQL, where other nodes write too, the one-row counter `registry_changes`, bumped in the
same transaction as every write to those tables, by every node.

The engine never reads this module: the caller takes `active(now)` and `staff_personal()` into a
`policies.model.Snapshot` before deciding.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from policies.model import Role, Verification
from transports.database import Database, migrate, schema_version

COMPONENT = "registry"
FILE_NAME = "casegate.sqlite3"  # shared with the staff accounts (gateway/stores/users.py)

# Each entry moves the schema one version up; never edit one that has shipped, add another.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE verified_recipients (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,                -- normalised, lower-case
        case_number TEXT,                     -- NULL: organisation-wide (DESIGN ruling 3)
        role TEXT NOT NULL CHECK (role IN ('party', 'professional')),
        name TEXT NOT NULL DEFAULT '',
        verified_by TEXT NOT NULL,            -- the member of staff who verified it
        verified_at TEXT NOT NULL,            -- ISO 8601, UTC
        method TEXT NOT NULL,                 -- how: 'manual' (casegate verify add), ...
        state TEXT NOT NULL CHECK (state IN ('verified', 'revoked', 'expired')),
        expires_at TEXT,                      -- ISO 8601, UTC; NULL: does not lapse
        revoked_at TEXT,
        revoked_by TEXT
    );
    CREATE INDEX verified_recipients_address ON verified_recipients (address);
    CREATE INDEX verified_recipients_case ON verified_recipients (case_number);
    CREATE UNIQUE INDEX verified_recipients_one_active
        ON verified_recipients (address, COALESCE(case_number, ''))
        WHERE state = 'verified';
    CREATE TABLE staff_personal (
        staff TEXT NOT NULL,                  -- work address, lower-case
        personal TEXT NOT NULL,               -- personal address, lower-case
        added_at TEXT NOT NULL,
        PRIMARY KEY (staff, personal)
    );
    """,
    # 2: the recipient-verification workflow (issue 4): one row per request, its state and the
    # HMAC of its out-of-band code (never the code itself).
    """
    CREATE TABLE verification_requests (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,                -- normalised, lower-case
        case_number TEXT,                     -- NULL: organisation-wide
        role TEXT NOT NULL CHECK (role IN ('party', 'professional')),
        name TEXT NOT NULL,                   -- the person the practitioner named
        requested_by TEXT NOT NULL,           -- the member of staff asking
        requested_at TEXT NOT NULL,
        channel TEXT NOT NULL,                -- 'smtp', 'http' or 'cli'
        token_id TEXT NOT NULL UNIQUE,        -- the random id inside the signed link
        code_digest TEXT NOT NULL,            -- HMAC of the out-of-band code
        attempts INTEGER NOT NULL DEFAULT 0,  -- wrong codes so far
        state TEXT NOT NULL CHECK (state IN
            ('pending', 'verified', 'declined', 'locked', 'expired', 'revoked')),
        link_expires_at TEXT NOT NULL,
        decided_at TEXT,
        entry_id INTEGER REFERENCES verified_recipients (id)
    );
    CREATE INDEX verification_requests_address ON verification_requests (address);
    CREATE INDEX verification_requests_case ON verification_requests (case_number);
    CREATE UNIQUE INDEX verification_requests_one_pending
        ON verification_requests (address, COALESCE(case_number, ''))
        WHERE state = 'pending';
    """,
    # 3: several nodes (issue 15): the version of verified_recipients and staff_personal that
    # every node's cache compares with its own, bumped by each write to them.
    """
    CREATE TABLE registry_changes (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        counter INTEGER NOT NULL
    );
    INSERT INTO registry_changes (id, counter) VALUES (1, 0);
    """,
)


class State(StrEnum):
    VERIFIED = "verified"
    REVOKED = "revoked"
    EXPIRED = "expired"


class RequestState(StrEnum):
    """Where one verification request stands (issue 4)."""

    PENDING = "pending"  # the link is out; waiting for the recipient
    VERIFIED = "verified"  # the recipient confirmed with the code and their name
    DECLINED = "declined"  # the recipient said "this is not me"
    LOCKED = "locked"  # too many wrong codes
    EXPIRED = "expired"  # the link ran out before anyone answered
    REVOKED = "revoked"  # withdrawn by staff before an answer


class RegistryError(Exception):
    """A registry operation cannot be done as asked; the message is one plain sentence."""


class AlreadyVerified(RegistryError):
    """The address is already verified for that case (or organisation-wide)."""


@dataclass(frozen=True)
class RegistryEntry:
    """One row of the registry, as `casegate verify list` shows it."""

    id: int
    address: str
    case_number: str | None
    role: Role
    name: str
    verified_by: str
    verified_at: datetime
    method: str
    state: State
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def scope(self) -> str:
        return self.case_number or "organisation-wide"


class AlreadyPending(RegistryError):
    """A request for the address (and case) is already waiting for the recipient."""


@dataclass(frozen=True)
class VerificationRequest:
    """One row of `verification_requests`."""

    id: int
    address: str
    case_number: str | None
    role: Role
    name: str
    requested_by: str
    requested_at: datetime
    channel: str
    token_id: str
    code_digest: str
    attempts: int
    state: RequestState
    link_expires_at: datetime
    decided_at: datetime | None = None
    entry_id: int | None = None

    @property
    def scope(self) -> str:
        return self.case_number or "organisation-wide"


def normalise_address(address: str) -> str:
    return address.strip().lower()


def normalise_case(case_number: str) -> str:
    return case_number.strip().upper()


class _ActiveCache:
    """The verified rows as of one database version, and the last answer taken from them."""

    def __init__(self, version: tuple[int, int],
                 rows: tuple[tuple[str | None, Verification], ...]) -> None:
        self.version = version
        self.rows = rows  # (expires_at as stored, or None; the verification), in id order
        self._answer: tuple[Verification, ...] = ()
        self._from: str | None = None  # the answer holds from this moment (ISO, UTC) ...
        self._until: str | None = None  # ... until the first expiry after it (None: no end)

    def at(self, moment: str) -> tuple[Verification, ...]:
        """The verifications in force at `moment`, compared as SQL compared the stored text."""
        if self._from is not None and self._from <= moment and (
                self._until is None or moment < self._until):
            return self._answer
        self._answer = tuple(v for expires, v in self.rows if expires is None or expires > moment)
        self._from = moment
        self._until = min((e for e, _ in self.rows if e is not None and e > moment), default=None)
        return self._answer


class Registry:
    """Verified recipients and staff personal addresses: `casegate.sqlite3`, or the shared
    PostgreSQL database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._db = database.connect(FILE_NAME, autocommit=True, timeout=10.0)
        self._db.row_factory = sqlite3.Row
        self._active_cache: _ActiveCache | None = None
        self._staff_cache: tuple[tuple[int, int], Mapping[str, tuple[str, ...]]] | None = None
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self) -> None:
        migrate(self._db, COMPONENT, _MIGRATIONS, lambda version: RegistryError(
            f"{self.database.describe()} was written by a newer casegate "
            f"(registry schema {version})"))

    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self._db, COMPONENT)

    # -- verified recipients -------------------------------------------------------------------

    def add(
        self,
        address: str,
        *,
        case_number: str | None,
        role: Role,
        verified_by: str,
        now: datetime,
        name: str = "",
        method: str = "manual",
        expires_at: datetime | None = None,
    ) -> RegistryEntry:
        """Record a verified address for a case, or organisation-wide when case_number is None."""
        address = normalise_address(address)
        case = normalise_case(case_number) if case_number is not None else None
        with self._lock:
            try:
                [row] = self._write(
                    "INSERT INTO verified_recipients (address, case_number, role, name, "
                    "verified_by, verified_at, method, state, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'verified', ?) RETURNING *",
                    (address, case, Role(role).value, name.strip(),
                     normalise_address(verified_by), _iso(now), method, _iso_or_none(expires_at)),
                )
            except sqlite3.IntegrityError:
                scope = f"case {case}" if case else "the whole organisation"
                raise AlreadyVerified(f"{address} is already verified for {scope}") from None
        return _entry(row)

    def revoke(
        self,
        address: str,
        *,
        by: str,
        now: datetime,
        case_number: str | None = None,
        organisation: bool = False,
    ) -> int:
        """Revoke active verifications of an address: for one case, organisation-wide, or all.

        Returns how many were revoked.
        """
        address = normalise_address(address)
        query = ("UPDATE verified_recipients SET state = 'revoked', revoked_at = ?, "
                 "revoked_by = ? WHERE address = ? AND state = 'verified'")
        params: list[object] = [_iso(now), normalise_address(by), address]
        if case_number is not None:
            query += " AND case_number = ?"
            params.append(normalise_case(case_number))
        elif organisation:
            query += " AND case_number IS NULL"
        with self._lock:
            return len(self._write(query + " RETURNING id", params))

    def entries(
        self, case_number: str | None = None, now: datetime | None = None
    ) -> list[RegistryEntry]:
        """Every row (for one case when given), oldest first; past their expiry read as expired."""
        query = "SELECT * FROM verified_recipients"
        params: tuple[object, ...] = ()
        if case_number is not None:
            query += " WHERE case_number = ?"
            params = (normalise_case(case_number),)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        entries = [_entry(row) for row in rows]
        if now is None:
            return entries
        return [_as_of(entry, now) for entry in entries]

    def active(self, now: datetime) -> tuple[Verification, ...]:
        """What the engine needs: every verification in force at `now`.

        Read on every RCPT and every message, so the rows are kept between calls while the
        database is unchanged (`_version`), and the answer itself while `now` stays before the
        next expiry: the same tuple object comes back, which the engine's caches key on.
        """
        moment = _iso(now)
        with self._lock:
            return self._active(self._version(), moment)

    def current(self, now: datetime) -> tuple[tuple[Verification, ...],
                                               Mapping[str, tuple[str, ...]]]:
        """(`active(now)`, `staff_personal()`) as of one version of the tables, checked once
        (on PostgreSQL: one round trip to the server while nothing changed, not two)."""
        moment = _iso(now)
        with self._lock:
            version = self._version()
            return self._active(version, moment), self._staff(version)

    def _active(self, version: tuple[int, int], moment: str) -> tuple[Verification, ...]:
        """`active` at `moment` (ISO), the rows as of `version`. Call with the lock held."""
        cache = self._active_cache
        if cache is None or cache.version != version:
            rows = self._db.execute(
                "SELECT address, case_number, role, expires_at FROM verified_recipients "
                "WHERE state = 'verified' ORDER BY id"
            ).fetchall()
            cache = _ActiveCache(version, tuple(
                (row["expires_at"], Verification(address=row["address"],
                                                 case_number=row["case_number"],
                                                 role=Role(row["role"])))
                for row in rows
            ))
            self._active_cache = cache
        return cache.at(moment)

    def lapse_due(self, now: datetime) -> list[RegistryEntry]:
        """Mark verifications past their `expires_at` as expired; returns those just marked."""
        with self._lock:
            rows = self._write(
                "UPDATE verified_recipients SET state = 'expired' WHERE state = 'verified' "
                "AND expires_at IS NOT NULL AND expires_at <= ? RETURNING *",
                (_iso(now),),
            )
        return [_entry(row) for row in rows]

    def mark_bounced(self, address: str, *, now: datetime) -> int:
        """Revoke every verification of an address whose mail bounced; returns how many."""
        return self.revoke(address, by="bounce@casegate.invalid", now=now)

    # -- verification requests (issue 4) -------------------------------------------------------

    def create_request(
        self,
        address: str,
        *,
        case_number: str | None,
        role: Role,
        name: str,
        requested_by: str,
        channel: str,
        token_id: str,
        code_digest: str,
        now: datetime,
        link_expires_at: datetime,
    ) -> VerificationRequest:
        """A new pending request; `AlreadyPending` when one is waiting for the same scope."""
        address = normalise_address(address)
        case = normalise_case(case_number) if case_number is not None else None
        with self._lock:
            try:
                row = self._db.execute(
                    "INSERT INTO verification_requests (address, case_number, role, name, "
                    "requested_by, requested_at, channel, token_id, code_digest, state, "
                    "link_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?) "
                    "RETURNING *",
                    (address, case, Role(role).value, name.strip(),
                     normalise_address(requested_by), _iso(now), channel, token_id,
                     code_digest, _iso(link_expires_at)),
                ).fetchone()
            except sqlite3.IntegrityError:
                scope = f"case {case}" if case else "the whole organisation"
                raise AlreadyPending(
                    f"a verification request for {address} ({scope}) is already waiting "
                    "for the recipient") from None
        return _request(row)

    def request_by_token(self, token_id: str) -> VerificationRequest | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM verification_requests WHERE token_id = ?", (token_id,)
            ).fetchone()
        return None if row is None else _request(row)

    def requests(self, case_number: str | None = None) -> list[VerificationRequest]:
        """Every request (for one case when given), oldest first."""
        query = "SELECT * FROM verification_requests"
        params: tuple[object, ...] = ()
        if case_number is not None:
            query += " WHERE case_number = ?"
            params = (normalise_case(case_number),)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return [_request(row) for row in rows]

    def requests_by(self, requested_by: str, limit: int = 200) -> list[VerificationRequest]:
        """The requests one member of staff made, newest first (at most `limit`)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM verification_requests WHERE requested_by = ? "
                "ORDER BY id DESC LIMIT ?", (normalise_address(requested_by), limit)).fetchall()
        return [_request(row) for row in rows]

    def count_wrong_code(
        self, request_id: int, *, max_attempts: int, now: datetime
    ) -> VerificationRequest | None:
        """One more wrong code on a pending request, locking it at `max_attempts`.

        Returns the updated request, or None when it was no longer pending.
        """
        with self._lock:
            row = self._db.execute(
                "UPDATE verification_requests SET attempts = attempts + 1, "
                "state = CASE WHEN attempts + 1 >= ? THEN 'locked' ELSE state END, "
                "decided_at = CASE WHEN attempts + 1 >= ? THEN ? ELSE decided_at END "
                "WHERE id = ? AND state = 'pending' RETURNING *",
                (max_attempts, max_attempts, _iso(now), request_id),
            ).fetchone()
        return None if row is None else _request(row)

    def close_request(
        self, request_id: int, state: RequestState, *, now: datetime
    ) -> VerificationRequest | None:
        """Move a pending request to `state` (declined, expired, revoked); None if not pending."""
        if state in (RequestState.PENDING, RequestState.VERIFIED):
            raise ValueError("close_request only ends a request without verifying it")
        with self._lock:
            row = self._db.execute(
                "UPDATE verification_requests SET state = ?, decided_at = ? "
                "WHERE id = ? AND state = 'pending' RETURNING *",
                (state.value, _iso(now), request_id),
            ).fetchone()
        return None if row is None else _request(row)

    def expire_requests(self, now: datetime) -> list[VerificationRequest]:
        """Mark pending requests whose link has run out as expired; returns those just marked."""
        with self._lock:
            rows = self._db.execute(
                "UPDATE verification_requests SET state = 'expired', decided_at = ? "
                "WHERE state = 'pending' AND link_expires_at <= ? RETURNING *",
                (_iso(now), _iso(now)),
            ).fetchall()
        return [_request(row) for row in rows]

    def revoke_requests(self, address: str, *, now: datetime,
                        case_number: str | None = None) -> list[VerificationRequest]:
        """Withdraw pending requests for an address (one case, or all); returns them."""
        query = ("UPDATE verification_requests SET state = 'revoked', decided_at = ? "
                 "WHERE address = ? AND state = 'pending'")
        params: list[object] = [_iso(now), normalise_address(address)]
        if case_number is not None:
            query += " AND case_number = ?"
            params.append(normalise_case(case_number))
        with self._lock:
            rows = self._db.execute(query + " RETURNING *", params).fetchall()
        return [_request(row) for row in rows]

    def confirm_request(
        self,
        request_id: int,
        *,
        now: datetime,
        method: str,
        expires_at: datetime | None,
    ) -> RegistryEntry | None:
        """Verify a pending, unexpired request and record the address, in one transaction.

        The state check inside `BEGIN IMMEDIATE` means two confirmations (threads or processes)
        cannot both succeed: the second finds the request no longer pending and gets None.
        An address verified meanwhile by other means is `AlreadyVerified` (nothing changes).
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                request = self._db.execute(
                    "SELECT * FROM verification_requests WHERE id = ? AND state = 'pending' "
                    "AND link_expires_at > ?", (request_id, _iso(now)),
                ).fetchone()
                if request is None:
                    self._db.execute("ROLLBACK")
                    return None
                row = self._db.execute(
                    "INSERT INTO verified_recipients (address, case_number, role, name, "
                    "verified_by, verified_at, method, state, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'verified', ?) RETURNING *",
                    (request["address"], request["case_number"], request["role"],
                     request["name"], request["requested_by"], _iso(now), method,
                     _iso_or_none(expires_at)),
                ).fetchone()
                self._db.execute(
                    "UPDATE verification_requests SET state = 'verified', decided_at = ?, "
                    "entry_id = ? WHERE id = ?", (_iso(now), row["id"], request_id),
                )
                self._db.execute(_BUMP)
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise AlreadyVerified(f"{request['address']} is already verified") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return _entry(row)

    # -- staff personal addresses (DESIGN ruling 4) --------------------------------------------

    def add_staff_personal(self, staff: str, personal: str, now: datetime | None = None) -> bool:
        """Record a staff member's personal address; False when it was already recorded."""
        moment = now or datetime.now(UTC)
        with self._lock:
            added = self._write(
                "INSERT OR IGNORE INTO staff_personal (staff, personal, added_at) "
                "VALUES (?, ?, ?) RETURNING staff",
                (normalise_address(staff), normalise_address(personal), _iso(moment)),
            )
            return len(added) == 1

    def staff_personal(self) -> Mapping[str, tuple[str, ...]]:
        """Work address -> known personal addresses (kept while the database is unchanged)."""
        with self._lock:
            return self._staff(self._version())

    def _staff(self, version: tuple[int, int]) -> Mapping[str, tuple[str, ...]]:
        """`staff_personal`, as of `version`. Call with the lock held."""
        if self._staff_cache is not None and self._staff_cache[0] == version:
            return self._staff_cache[1]
        rows = self._db.execute("SELECT staff, personal FROM staff_personal").fetchall()
        directory: dict[str, tuple[str, ...]] = {}
        # sorted here, not by ORDER BY: PostgreSQL's collation may order text otherwise
        for staff, personal in sorted((row["staff"], row["personal"]) for row in rows):
            directory[staff] = (*directory.get(staff, ()), personal)
        answer = MappingProxyType(directory)
        self._staff_cache = (version, answer)
        return answer

    def cached(self, now: datetime) -> tuple[tuple[Verification, ...],
                                              Mapping[str, tuple[str, ...]]] | None:
        """(`active(now)`, `staff_personal()`) when both can be answered from memory at once,
        else None (then call those, off the event loop: they may read the tables or wait).

        Cheap enough for the event loop: one PRAGMA read, and never a wait for the lock (held by
        another thread, it is None). Same answers, same objects, as the two calls would give.
        On PostgreSQL always None: whether another node wrote takes a round trip to the
        server, which the event loop must not wait for (the caller reads in a worker thread,
        where `active` checks the change counter and answers from memory when it is unchanged).
        """
        if not self.database.is_sqlite:
            return None
        if now.tzinfo is None or not self._lock.acquire(blocking=False):
            return None  # a naive time: `active` raises, as it should
        try:
            version = self._version()
            active, staff = self._active_cache, self._staff_cache
            if active is None or staff is None or active.version != version \
                    or staff[0] != version:
                return None
            return active.at(_iso(now)), staff[1]
        finally:
            self._lock.release()

    def _version(self) -> tuple[int, int]:
        """Changes whenever anything was written. SQLite: `PRAGMA data_version` moves when
        another connection (another process, `casegate verify` say) commits, `total_changes`
        when this one writes. PostgreSQL: the change counter, which every node's writes bump
        (read before the rows it versions, so a cache is never newer-labelled than its rows).
        Call with the lock held."""
        if not self.database.is_sqlite:
            row = self._db.execute("SELECT counter FROM registry_changes WHERE id = 1").fetchone()
            return (0 if row is None else int(row[0])), 0
        data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        return int(data_version), self._db.total_changes

    def _write(self, sql: str, parameters: Sequence[object]) -> list[Any]:
        """One write to verified_recipients or staff_personal (`sql` ends in RETURNING) and, if
        it changed a row, the bump of the change counter, in one transaction; the rows it
        returned. Call with the lock held."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._db.execute(sql, parameters).fetchall()
            if rows:
                self._db.execute(_BUMP)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return rows

    def close(self) -> None:
        with self._lock:
            self._db.close()



# An upsert, so that a counter row lost (a table emptied by hand, say) comes back at the next
# write rather than leaving every cache believing nothing changes.
_BUMP = ("INSERT INTO registry_changes (id, counter) VALUES (1, 1) "
         "ON CONFLICT (id) DO UPDATE SET counter = registry_changes.counter + 1")


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("registry times must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else _iso(moment)


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _entry(row: sqlite3.Row) -> RegistryEntry:
    verified_at = _time(row["verified_at"])
    assert verified_at is not None  # NOT NULL in the schema
    return RegistryEntry(
        id=row["id"],
        address=row["address"],
        case_number=row["case_number"],
        role=Role(row["role"]),
        name=row["name"],
        verified_by=row["verified_by"],
        verified_at=verified_at,
        method=row["method"],
        state=State(row["state"]),
        expires_at=_time(row["expires_at"]),
        revoked_at=_time(row["revoked_at"]),
        revoked_by=row["revoked_by"],
    )


def _request(row: sqlite3.Row) -> VerificationRequest:
    requested_at = _time(row["requested_at"])
    link_expires_at = _time(row["link_expires_at"])
    assert requested_at is not None and link_expires_at is not None  # NOT NULL in the schema
    return VerificationRequest(
        id=row["id"],
        address=row["address"],
        case_number=row["case_number"],
        role=Role(row["role"]),
        name=row["name"],
        requested_by=row["requested_by"],
        requested_at=requested_at,
        channel=row["channel"],
        token_id=row["token_id"],
        code_digest=row["code_digest"],
        attempts=row["attempts"],
        state=RequestState(row["state"]),
        link_expires_at=link_expires_at,
        decided_at=_time(row["decided_at"]),
        entry_id=row["entry_id"],
    )


def _as_of(entry: RegistryEntry, now: datetime) -> RegistryEntry:
    if entry.state is State.VERIFIED and entry.expires_at is not None and entry.expires_at <= now:
        return replace(entry, state=State.EXPIRED)
    return entry
