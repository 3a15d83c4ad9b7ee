"""The secure portal's storage: `portal.sqlite3` in the data directory, or the tables of the
PostgreSQL database every node shares (`transports.database`), so that any node serves any
portal link, its codes and its sessions.

What it keeps, per copy (one copy = one message for one recipient):

- the sealed message (`transports.crypto.Sealed`: key id, wrapped data key, ciphertext), never
  the master key and never the plaintext;
- the SHA-256 of the link token (the link itself is in the notification email), and the link
  token sealed like the message (`transports.crypto`), so that a retried delivery sends the
  same link again rather than making a second copy;
- its state (active from before its notification is sent; pending while withdrawn because the
  notification was not accepted, until a retry of the same message makes it active again;
  revoked, expired), whether its notification was accepted, its expiry, and its read status:
  first and last opened, views, downloads, replies;
- opaque attachment ids (random, mapped to a MIME part number; names stay encrypted);
- at most one live one-time code: salted HMAC-SHA256 of the code, expiry, failed tries;
- the wrong codes entered for the copy in total, over every code (`portal_lock`): at
  `portal.max_wrong_codes` the copy is locked, and only its sender can open it again, by
  re-issuing it with a new link (`reissue`), which the recipient gets by email (both counts,
  per code and in total, are counted by the database, one atomic statement per wrong code,
  so that tries on every node count alike);
- code requests (for the per-copy throttle) and portal sessions (token hashes only);
- with several nodes, each client's portal requests per minute (`count_request`, the
  client's address hashed), so that the per-client limit counts every node's requests.

When a copy expires or is revoked its sessions and code go; when it expires (or is destroyed)
its ciphertext and wrapped key are deleted too. Times are passed in by the caller (an injected
clock): this module never reads the clock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from policies.events import EventKind
from transports.crypto import Sealed, Sealing, written
from transports.database import Connection, Database, OperationalError, migrate

if TYPE_CHECKING:
    from gateway.audit.trail import AuditLog

PORTAL_DB_FILE = "portal.sqlite3"  # on PostgreSQL: the name of the portal's write lock
COMPONENT = "portal"  # its line in schema_version
CODE_DIGITS = 6
CODE_LIFETIME_SECONDS = 10 * 60
CODE_MAX_TRIES = 5
DEFAULT_MAX_WRONG_CODES = 20  # wrong codes in total for one copy, then it is locked
TOKEN_BYTES = 32
# A copy withdrawn (its notification not accepted) is kept this long for the client's retry to
# reuse, with its link; then it is deleted. 5 days: Postfix's maximal_queue_lifetime, longer
# than most clients keep retrying.
PENDING_GRACE = timedelta(days=5)

# Versioned (`transports.database.migrate`). The first is idempotent: a data directory made
# before versions were recorded has these tables already (and gets the link columns from
# `_upgrade_columns`).
MIGRATIONS = ("""
CREATE TABLE IF NOT EXISTS portal_copy (
    id TEXT PRIMARY KEY,
    link_hash TEXT NOT NULL UNIQUE,
    copy_key TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    state TEXT NOT NULL,
    revoked_at REAL,
    first_opened REAL,
    last_opened REAL,
    views INTEGER NOT NULL DEFAULT 0,
    downloads INTEGER NOT NULL DEFAULT 0,
    replies INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    key_id TEXT,
    wrapped_key BLOB,
    ciphertext BLOB,
    link_key_id TEXT,
    link_wrapped BLOB,
    link_sealed BLOB,
    notified REAL
);
CREATE INDEX IF NOT EXISTS portal_copy_key ON portal_copy (copy_key);
CREATE INDEX IF NOT EXISTS portal_copy_sender ON portal_copy (sender);
CREATE TABLE IF NOT EXISTS portal_attachment (
    id TEXT PRIMARY KEY,
    copy_id TEXT NOT NULL,
    part INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS portal_code (
    copy_id TEXT PRIMARY KEY,
    salt BLOB NOT NULL,
    code_hash BLOB NOT NULL,
    expires REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS portal_code_request (copy_id TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS portal_lock (
    copy_id TEXT PRIMARY KEY,
    wrong_codes INTEGER NOT NULL DEFAULT 0,
    locked_at REAL
);
CREATE TABLE IF NOT EXISTS portal_session (
    token_hash TEXT PRIMARY KEY,
    copy_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    signed_in INTEGER NOT NULL,
    expires REAL NOT NULL
);
""", """
CREATE TABLE IF NOT EXISTS portal_rate (
    client TEXT NOT NULL,
    slot INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (client, slot)
);
CREATE INDEX IF NOT EXISTS portal_rate_slot ON portal_rate (slot);
""", """
CREATE TABLE IF NOT EXISTS portal_content (
    copy_id TEXT PRIMARY KEY,
    ciphertext BLOB NOT NULL
);
INSERT INTO portal_content (copy_id, ciphertext)
    SELECT id, ciphertext FROM portal_copy WHERE ciphertext IS NOT NULL;
UPDATE portal_copy SET ciphertext = NULL WHERE ciphertext IS NOT NULL;
""")


class CopyState(StrEnum):
    PENDING = "pending"  # withdrawn: its notification was not accepted (a retry reactivates)
    ACTIVE = "active"
    REVOKED = "revoked"  # withdrawn by the sender: the recipient is told so
    EXPIRED = "expired"  # past its expiry: ciphertext and wrapped key destroyed


class CodeCheck(StrEnum):
    """The answer to one code entry."""

    ACCEPTED = "accepted"  # right code: it is now used up
    WRONG = "wrong"  # wrong code, tries remain
    LOCKED = "locked"  # wrong code, and that was the last try: the code is burnt
    NO_CODE = "no-code"  # no live code (never asked, used, burnt or out of date)
    COPY_LOCKED = "copy-locked"  # too many wrong codes in total: the sender must re-issue it


@dataclass(frozen=True)
class PortalCopy:
    """A copy's metadata and read status (never its content)."""

    id: str
    sender: str
    recipient: str
    decision_id: str
    created: datetime
    expires: datetime
    state: CopyState
    size: int
    revoked_at: datetime | None = None
    first_opened: datetime | None = None
    last_opened: datetime | None = None
    views: int = 0
    downloads: int = 0
    replies: int = 0
    key_id: str | None = None

    def to_json(self) -> dict[str, object]:
        """The read status as the staff API and `casegate messages show --json` give it."""
        def stamp(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        return {
            "id": self.id, "sender": self.sender, "recipient": self.recipient,
            "decision_id": self.decision_id, "state": self.state.value,
            "created": stamp(self.created), "expires": stamp(self.expires),
            "revoked_at": stamp(self.revoked_at), "first_opened": stamp(self.first_opened),
            "last_opened": stamp(self.last_opened), "views": self.views,
            "downloads": self.downloads, "replies": self.replies, "size": self.size,
        }


@dataclass(frozen=True)
class PortalSession:
    token_hash: str
    copy_id: str
    csrf_token: str
    signed_in: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


_COPY_COLUMNS = ("id, sender, recipient, decision_id, created, expires, state, size, revoked_at, "
                 "first_opened, last_opened, views, downloads, replies, key_id")


@dataclass(frozen=True)
class StoredDelivery:
    """What a retried delivery needs of the copy already made for it (`reusable`)."""

    id: str
    state: CopyState
    notified: bool  # its notification was accepted upstream
    expires: datetime
    link: Sealed | None  # the link token, sealed (None for a copy made before it was kept)


def _newer(version: int) -> Exception:
    return OperationalError(f"the portal's tables are at schema version {version}, made by a "
                            "newer casegate: upgrade casegate")


def open_schema(database: Database) -> None:
    """Create or bring up to date the portal's tables (every node may do it at once)."""
    setup = database.connect(PORTAL_DB_FILE, autocommit=True, timeout=10.0)
    try:
        if database.is_sqlite:
            # WAL: one fsync per commit; FULL: a copy whose notification went out is never lost.
            setup.execute("PRAGMA journal_mode=WAL")
        migrate(setup, COMPONENT, MIGRATIONS, _newer)
        if database.is_sqlite:
            _upgrade_columns(setup)
    finally:
        setup.close()


def _upgrade_columns(db: Connection) -> None:
    """Add the columns a retried delivery needs to a store made before them (SQLite only: no
    such store was ever made on PostgreSQL); copies delivered then (active, revoked, expired)
    had their notification accepted."""
    db.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(portal_copy)")}
        if "notified" not in columns:
            for column in ("link_key_id TEXT", "link_wrapped BLOB", "link_sealed BLOB",
                           "notified REAL"):
                db.execute(f"ALTER TABLE portal_copy ADD COLUMN {column}")
            db.execute("UPDATE portal_copy SET notified = created WHERE state != ?",
                       (CopyState.PENDING.value,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _copy(row: Any) -> PortalCopy:
    created, expires = _dt(row[4]), _dt(row[5])
    assert created is not None and expires is not None
    return PortalCopy(
        id=row[0], sender=row[1], recipient=row[2], decision_id=row[3], created=created,
        expires=expires, state=CopyState(row[6]), size=row[7], revoked_at=_dt(row[8]),
        first_opened=_dt(row[9]), last_opened=_dt(row[10]), views=row[11], downloads=row[12],
        replies=row[13], key_id=row[14],
    )


class PortalStore:
    """Thread-safe (one lock); call heavy writes through `asyncio.to_thread`."""

    def __init__(self, database: Database) -> None:
        self._lock = threading.Lock()
        self._grouping = threading.local()  # `group_commit`'s state, for the thread inside it
        open_schema(database)
        self._db = database.connect(PORTAL_DB_FILE, timeout=10.0)
        self._db.execute("PRAGMA synchronous=FULL")  # SQLite's; nothing on PostgreSQL
        # Counters alone, each one atomic statement (on PostgreSQL without the store's lock).
        self._counter = database.connect(PORTAL_DB_FILE, autocommit=True, timeout=10.0)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._counter.close()

    @contextmanager
    def _writing(self, *, synced: bool = True) -> Iterator[None]:
        """One transaction under the store's lock, committed when the block succeeds and
        rolled back when it raises (`with sqlite3.Connection`, on either engine).

        `synced=False` (SQLite): the commit does not wait for the disk (`synchronous=NORMAL`
        for it: a power cut may undo it, never tear it; the next synced commit makes it
        durable too). For what can be worked out again after a crash: on this VM an fsync
        costs about half a millisecond of CPU. Inside `group_commit` (this thread's), a synced
        write commits so too, and the block's end makes it durable."""
        with self._lock:
            relaxed = isinstance(self._db, sqlite3.Connection) and (
                not synced or getattr(self._grouping, "inside", False))
            if relaxed and synced:
                self._grouping.unsynced = True  # `group_commit` syncs it as it ends
            if relaxed:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                try:
                    yield
                except BaseException:
                    self._db.rollback()
                    raise
                self._db.commit()
            finally:
                if relaxed:
                    self._db.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def group_commit(self) -> Iterator[None]:
        """Synced writes this thread makes inside the block commit without waiting for the
        disk, and leaving the block makes them all durable with one synced commit: a group
        commit (the portal delivery's thread runs each batch of copies inside one, so that
        copies stored together cost one fsync, not one each; on this VM an fsync costs about
        half a millisecond of CPU). Raises when that commit fails: then none of the block's
        writes may be counted on. On PostgreSQL every commit is durable already."""
        if not isinstance(self._db, sqlite3.Connection):
            yield
            return
        self._grouping.inside, self._grouping.unsynced = True, False
        try:
            yield
        finally:
            self._grouping.inside = False
        if self._grouping.unsynced:
            with self._lock:
                # A synced write after them: SQLite appends it to the write-ahead log and syncs
                # the log, and the log holds their commits before it. (The header's
                # user_version, written back unchanged: nothing else reads it.)
                version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                self._db.execute(f"PRAGMA user_version = {version}")

    # -- copies ------------------------------------------------------------------------

    def add_copy(self, *, copy_id: str, link_token: str, copy_key: str, sender: str,
                 recipient: str, decision_id: str, sealed: Sealed | Sealing, size: int,
                 attachment_parts: Iterable[int], now: datetime, expires: datetime,
                 link: Sealed | None = None, state: str = CopyState.PENDING) -> None:
        """Store a sealed copy (PENDING unless `state` says otherwise), with its sealed link
        token and an opaque id for each attachment part.

        The ciphertext has a table of its own (`portal_content`): the copy's row changes with
        its state and read status, and SQLite rewrites a whole row, blobs and all, on every
        change of it. A `Sealing` is written to SQLite a piece at a time as it is made, so the
        ciphertext is never whole in memory, nor copied by the statement that stores it."""
        with self._writing():
            self._db.execute(
                "INSERT INTO portal_copy (id, link_hash, copy_key, sender, recipient, "
                "decision_id, created, expires, state, size, key_id, wrapped_key, "
                "link_key_id, link_wrapped, link_sealed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (copy_id, token_hash(link_token), copy_key, sender.lower(), recipient.lower(),
                 decision_id, _ts(now), _ts(expires), CopyState(state).value, size,
                 sealed.key_id, sealed.wrapped_key,
                 link.key_id if link else None, link.wrapped_key if link else None,
                 link.ciphertext if link else None),
            )
            self._add_content(copy_id, sealed)
            self._db.executemany(
                "INSERT INTO portal_attachment (id, copy_id, part) VALUES (?, ?, ?)",
                [(secrets.token_urlsafe(16), copy_id, part) for part in attachment_parts],
            )

    def _add_content(self, copy_id: str, sealed: Sealed | Sealing) -> None:
        """The copy's ciphertext, in the transaction under way."""
        if isinstance(sealed, Sealing) and isinstance(self._db, sqlite3.Connection):
            row = self._db.execute(
                "INSERT INTO portal_content (copy_id, ciphertext) VALUES (?, zeroblob(?))",
                (copy_id, sealed.size)).lastrowid
            assert row is not None
            with self._db.blobopen("portal_content", "ciphertext", row) as blob:
                for piece in sealed.pieces:
                    blob.write(piece)  # past the zeroblob's size raises: nothing half written
                if blob.tell() != sealed.size:
                    raise OperationalError("the sealed copy is not the size it was to be")
            return
        self._db.execute("INSERT INTO portal_content (copy_id, ciphertext) VALUES (?, ?)",
                         (copy_id, written(sealed)))

    def activate(self, copy_id: str) -> None:
        """Make a pending (or withdrawn) copy's link open it."""
        with self._writing():
            self._db.execute("UPDATE portal_copy SET state = ? WHERE id = ? AND state = ?",
                             (CopyState.ACTIVE.value, copy_id, CopyState.PENDING.value))

    def withdraw(self, copy_id: str) -> None:
        """An active copy whose notification was not accepted: its link no longer opens it
        (PENDING) until a retry of the same message makes it active again."""
        with self._writing():
            self._db.execute("UPDATE portal_copy SET state = ? WHERE id = ? AND state = ?",
                             (CopyState.PENDING.value, copy_id, CopyState.ACTIVE.value))
            self._forget_access(copy_id)

    def mark_notified(self, copy_id: str, now: datetime) -> None:
        """The copy's notification was accepted upstream: a retry sends nothing more.

        Not synced: should a power cut undo it, the retry reuses the copy and its notification
        keeps its key, which the relay's ledger (fsynced before the client's 250) knows as
        accepted, so nothing is sent twice (tests/test_exactly_once.py)."""
        with self._writing(synced=False):
            self._db.execute("UPDATE portal_copy SET notified = ? WHERE id = ?",
                             (_ts(now), copy_id))

    def reusable(self, copy_key: str, recipient: str) -> StoredDelivery | None:
        """The copy already made for this submission and recipient (a notified one first),
        with its sealed link token; None when there is none."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, state, notified, expires, link_key_id, link_wrapped, link_sealed "
                "FROM portal_copy WHERE copy_key = ? AND recipient = ? "
                "ORDER BY notified IS NULL, created DESC LIMIT 1",
                (copy_key, recipient.lower())).fetchone()
        if row is None:
            return None
        expires = _dt(row[3])
        assert expires is not None
        link = Sealed(key_id=row[4], wrapped_key=bytes(row[5]), ciphertext=bytes(row[6])) \
            if row[6] is not None else None
        return StoredDelivery(id=row[0], state=CopyState(row[1]), notified=row[2] is not None,
                              expires=expires, link=link)

    def discard(self, copy_id: str) -> None:
        """Delete a copy entirely (a pending copy whose notification was not accepted)."""
        with self._writing():
            for table, column in (("portal_content", "copy_id"),
                                  ("portal_attachment", "copy_id"), ("portal_code", "copy_id"),
                                  ("portal_session", "copy_id"), ("portal_copy", "id")):
                self._db.execute(f"DELETE FROM {table} WHERE {column} = ?",  # noqa: S608
                                 (copy_id,))

    def get(self, copy_id: str) -> PortalCopy | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COPY_COLUMNS} FROM portal_copy WHERE id = ?", (copy_id,)  # noqa: S608
            ).fetchone()
        return _copy(row) if row else None

    def by_link(self, link_token: str) -> PortalCopy | None:
        """The (non-pending) copy a link opens, or None."""
        if not link_token or len(link_token) > 200:
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COPY_COLUMNS} FROM portal_copy WHERE link_hash = ? AND state != ?",  # noqa: S608
                (token_hash(link_token), CopyState.PENDING.value),
            ).fetchone()
        return _copy(row) if row else None

    def list(self, sender: str | None = None) -> tuple[PortalCopy, ...]:
        query = f"SELECT {_COPY_COLUMNS} FROM portal_copy WHERE state != ?"  # noqa: S608
        params: tuple[str, ...] = (CopyState.PENDING.value,)
        if sender is not None:
            query += " AND sender = ?"
            params += (sender.lower(),)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created, id", params).fetchall()
        return tuple(_copy(r) for r in rows)

    def sealed(self, copy_id: str) -> Sealed | None:
        """The sealed message of a live copy (None once destroyed)."""
        with self._lock:
            row = self._db.execute(
                "SELECT portal_copy.key_id, portal_copy.wrapped_key, portal_content.ciphertext "
                "FROM portal_copy JOIN portal_content ON portal_content.copy_id = portal_copy.id "
                "WHERE portal_copy.id = ?", (copy_id,)).fetchone()
        if row is None or row[2] is None:
            return None
        return Sealed(key_id=row[0], wrapped_key=bytes(row[1]), ciphertext=bytes(row[2]))

    def attachment_ids(self, copy_id: str) -> dict[int, str]:
        """MIME part number -> opaque attachment id."""
        with self._lock:
            rows = self._db.execute("SELECT part, id FROM portal_attachment WHERE copy_id = ?",
                                    (copy_id,)).fetchall()
        return {int(part): str(ident) for part, ident in rows}

    def attachment_part(self, copy_id: str, attachment_id: str) -> int | None:
        """The MIME part of an attachment id, only if it belongs to `copy_id`."""
        with self._lock:
            row = self._db.execute(
                "SELECT part FROM portal_attachment WHERE id = ? AND copy_id = ?",
                (attachment_id, copy_id)).fetchone()
        return int(row[0]) if row else None

    # -- read status -------------------------------------------------------------------

    def record_view(self, copy_id: str, now: datetime) -> None:
        with self._writing():
            self._db.execute(
                "UPDATE portal_copy SET views = views + 1, last_opened = ?, "
                "first_opened = COALESCE(first_opened, ?) WHERE id = ?",
                (_ts(now), _ts(now), copy_id))

    def record_download(self, copy_id: str) -> None:
        self._bump(copy_id, "downloads")

    def record_reply(self, copy_id: str) -> None:
        self._bump(copy_id, "replies")

    def _bump(self, copy_id: str, column: str) -> None:
        with self._writing():
            self._db.execute(f"UPDATE portal_copy SET {column} = {column} + 1 WHERE id = ?",  # noqa: S608
                             (copy_id,))

    # -- revocation and expiry ---------------------------------------------------------

    def revoke(self, copy_id: str, now: datetime) -> bool:
        """Withdraw an active copy; False when it was not active. Its sessions end."""
        with self._writing():
            changed = self._db.execute(
                "UPDATE portal_copy SET state = ?, revoked_at = ? WHERE id = ? AND state = ?",
                (CopyState.REVOKED.value, _ts(now), copy_id, CopyState.ACTIVE.value),
            ).rowcount
            self._forget_access(copy_id)
        return bool(changed)

    def destroy(self, copy_id: str) -> bool:
        """Expire a copy now: ciphertext, wrapped key, attachments, code, sessions deleted."""
        with self._writing():
            changed = self._db.execute(
                "UPDATE portal_copy SET state = ?, key_id = NULL, wrapped_key = NULL "
                "WHERE id = ? AND state IN (?, ?)",
                (CopyState.EXPIRED.value, copy_id, CopyState.ACTIVE.value,
                 CopyState.REVOKED.value),
            ).rowcount
            if changed:
                self._db.execute("DELETE FROM portal_content WHERE copy_id = ?", (copy_id,))
            self._db.execute("DELETE FROM portal_attachment WHERE copy_id = ?", (copy_id,))
            self._forget_access(copy_id)
        return bool(changed)

    def due_for_expiry(self, now: datetime) -> tuple[str, ...]:
        """Delivered copies past their expiry that still hold content."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM portal_copy WHERE expires <= ? AND state IN (?, ?)",
                (_ts(now), CopyState.ACTIVE.value, CopyState.REVOKED.value)).fetchall()
        return tuple(r[0] for r in rows)

    def stale_pending(self, before: datetime) -> tuple[str, ...]:
        """Pending copies made before `before`: their delivery never finished (a crash)."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM portal_copy WHERE state = ? AND created < ?",
                                    (CopyState.PENDING.value, _ts(before))).fetchall()
        return tuple(r[0] for r in rows)

    def _forget_access(self, copy_id: str) -> None:
        self._db.execute("DELETE FROM portal_code WHERE copy_id = ?", (copy_id,))
        self._db.execute("DELETE FROM portal_session WHERE copy_id = ?", (copy_id,))

    # -- one-time codes ----------------------------------------------------------------

    def issue_code(self, copy_id: str, now: datetime) -> str:
        """A fresh six-digit code (CSPRNG) replacing any other; only its salted hash is kept."""
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        salt = secrets.token_bytes(16)
        with self._writing():
            self._db.execute(
                "INSERT INTO portal_code (copy_id, salt, code_hash, expires, failures) "
                "VALUES (?, ?, ?, ?, 0) ON CONFLICT (copy_id) DO UPDATE SET "
                "salt = excluded.salt, code_hash = excluded.code_hash, "
                "expires = excluded.expires, failures = 0",
                (copy_id, salt, _code_hash(salt, code), _ts(now) + CODE_LIFETIME_SECONDS))
            self._db.execute("INSERT INTO portal_code_request (copy_id, at) VALUES (?, ?)",
                             (copy_id, _ts(now)))
        return code

    def code_requests_since(self, copy_id: str, since: datetime) -> int:
        with self._writing():
            self._db.execute("DELETE FROM portal_code_request WHERE at < ?", (_ts(since),))
            return int(self._db.execute(
                "SELECT COUNT(*) FROM portal_code_request WHERE copy_id = ? AND at >= ?",
                (copy_id, _ts(since))).fetchone()[0])

    def check_code(self, copy_id: str, code: str, now: datetime, *,
                   max_wrong_codes: int = DEFAULT_MAX_WRONG_CODES) -> CodeCheck:
        """Compare in constant time; the right code is used up, the fifth wrong one burns it,
        and the `max_wrong_codes`-th wrong one in total (over every code) locks the copy.

        Every node may check codes for the copy at once: each change is one statement on the
        code it read (its salt), and both counts are counted by the database, so a code is
        used once and the copy locks at the same count however the tries are spread."""
        with self._writing():
            if self._locked(copy_id):
                return CodeCheck.COPY_LOCKED
            row = self._db.execute(
                "SELECT salt, code_hash, expires FROM portal_code WHERE copy_id = ?",
                (copy_id,)).fetchone()
            if row is None:
                return CodeCheck.NO_CODE
            salt, stored, expires = bytes(row[0]), bytes(row[1]), row[2]
            if expires <= _ts(now):
                self._db.execute("DELETE FROM portal_code WHERE copy_id = ? AND salt = ?",
                                 (copy_id, salt))
                return CodeCheck.NO_CODE
            if hmac.compare_digest(_code_hash(salt, code), stored):
                used = self._db.execute(  # fetchall: the statement finishes (SQLite)
                    "DELETE FROM portal_code WHERE copy_id = ? AND salt = ? RETURNING copy_id",
                    (copy_id, salt)).fetchall()
                return CodeCheck.ACCEPTED if used else CodeCheck.NO_CODE  # used meanwhile
            if self._wrong_code(copy_id) >= max_wrong_codes:
                self._db.execute("UPDATE portal_lock SET locked_at = ? "
                                 "WHERE copy_id = ? AND locked_at IS NULL", (_ts(now), copy_id))
                self._forget_access(copy_id)
                return CodeCheck.COPY_LOCKED
            tried = self._db.execute(
                "UPDATE portal_code SET failures = failures + 1 WHERE copy_id = ? AND salt = ? "
                "RETURNING failures", (copy_id, salt)).fetchall()
            if not tried:
                return CodeCheck.WRONG  # counted; the code was burnt or replaced meanwhile
            if int(tried[0][0]) >= CODE_MAX_TRIES:
                self._db.execute("DELETE FROM portal_code WHERE copy_id = ? AND salt = ?",
                                 (copy_id, salt))
                return CodeCheck.LOCKED
            return CodeCheck.WRONG

    # -- the lock over every code -----------------------------------------------------

    def _locked(self, copy_id: str) -> bool:
        row = self._db.execute("SELECT locked_at FROM portal_lock WHERE copy_id = ?",
                               (copy_id,)).fetchone()
        return row is not None and row[0] is not None

    def _wrong_code(self, copy_id: str) -> int:
        """Count one wrong code for the copy; the total so far, every node's (one atomic
        statement, inside the caller's lock and transaction)."""
        row = self._db.execute(  # fetchall: the statement finishes (SQLite)
            "INSERT INTO portal_lock (copy_id, wrong_codes) VALUES (?, 1) "
            "ON CONFLICT (copy_id) DO UPDATE SET wrong_codes = portal_lock.wrong_codes + 1 "
            "RETURNING wrong_codes", (copy_id,)).fetchall()
        return int(row[0][0])

    def is_locked(self, copy_id: str) -> bool:
        """Whether too many wrong codes locked the copy (until its sender re-issues it)."""
        with self._lock:
            return self._locked(copy_id)

    def wrong_codes(self, copy_id: str) -> int:
        """Wrong codes entered for the copy since its link was (re-)issued."""
        with self._lock:
            row = self._db.execute("SELECT wrong_codes FROM portal_lock WHERE copy_id = ?",
                                   (copy_id,)).fetchone()
        return int(row[0]) if row else 0

    def reissue(self, copy_id: str, link_token: str) -> bool:
        """A new link for an active copy: the old link stops working, the lock and the count
        of wrong codes are cleared, codes, code requests and sessions end. False when the copy
        is not active (withdrawn, expired, or not yet delivered)."""
        with self._writing():
            changed = self._db.execute(
                "UPDATE portal_copy SET link_hash = ? WHERE id = ? AND state = ?",
                (token_hash(link_token), copy_id, CopyState.ACTIVE.value)).rowcount
            if changed:
                self._db.execute("DELETE FROM portal_lock WHERE copy_id = ?", (copy_id,))
                self._db.execute("DELETE FROM portal_code_request WHERE copy_id = ?",
                                 (copy_id,))
                self._forget_access(copy_id)
        return bool(changed)

    # -- requests per client ----------------------------------------------------------

    def count_request(self, client: str, window: float, now: datetime) -> int:
        """Count one portal request from `client` in the current fixed window of `window`
        seconds; answer the count so far, every node's. The client is kept hashed; windows
        before the last are dropped as new ones start."""
        slot = int(_ts(now) // window)
        with self._lock:
            row = self._counter.execute(  # fetchall: the statement finishes (SQLite)
                "INSERT INTO portal_rate (client, slot, hits) VALUES (?, ?, 1) "
                "ON CONFLICT (client, slot) DO UPDATE SET hits = portal_rate.hits + 1 "
                "RETURNING hits", (token_hash(client), slot)).fetchall()
            hits = int(row[0][0])
            if hits == 1:
                self._counter.execute("DELETE FROM portal_rate WHERE slot < ?", (slot - 1,))
        return hits

    # -- sessions ----------------------------------------------------------------------

    def create_session(self, copy_id: str, *, signed_in: bool, now: datetime,
                       lifetime_seconds: float) -> tuple[str, PortalSession]:
        """A new session for one copy; returns the cookie token (only its hash is kept)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        session = PortalSession(token_hash=token_hash(token), copy_id=copy_id,
                                csrf_token=secrets.token_urlsafe(TOKEN_BYTES),
                                signed_in=signed_in)
        with self._writing():
            self._db.execute("DELETE FROM portal_session WHERE expires <= ?", (_ts(now),))
            self._db.execute("INSERT INTO portal_session (token_hash, copy_id, csrf_token, "
                             "signed_in, expires) VALUES (?, ?, ?, ?, ?)",
                             (session.token_hash, copy_id, session.csrf_token, int(signed_in),
                              _ts(now) + lifetime_seconds))
        return token, session

    def session(self, token: str, now: datetime) -> PortalSession | None:
        if not token or len(token) > 200:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT token_hash, copy_id, csrf_token, signed_in, expires FROM portal_session "
                "WHERE token_hash = ?", (token_hash(token),)).fetchone()
        if row is None or row[4] <= _ts(now):
            return None
        return PortalSession(token_hash=row[0], copy_id=row[1], csrf_token=row[2],
                             signed_in=bool(row[3]))

    def end_session(self, token: str) -> None:
        with self._writing():
            self._db.execute("DELETE FROM portal_session WHERE token_hash = ?",
                             (token_hash(token),))


def _code_hash(salt: bytes, code: str) -> bytes:
    return hmac.new(salt, code.encode("ascii", "replace"), hashlib.sha256).digest()


# -- the sender's controls, shared by the staff API and `casegate messages` -----------------


def revoke_copy(store: PortalStore, audit: AuditLog, copy_id: str, *, by: str,
                now: datetime) -> bool:
    """Withdraw a copy (an audit event "portal-revoke"); False when it was not active."""
    copy = store.get(copy_id)
    if copy is None or not store.revoke(copy_id, now):
        return False
    audit.record(EventKind.PORTAL_REVOKE, sender=copy.sender, recipients=[copy.recipient],
                 decision_id=copy.decision_id, copy_id=copy_id, by=by)
    return True


def expire_copy(store: PortalStore, audit: AuditLog, copy_id: str, *, reason: str) -> bool:
    """Destroy a copy's content and key now (an audit event "portal-expiry")."""
    copy = store.get(copy_id)
    if copy is None or not store.destroy(copy_id):
        return False
    audit.record(EventKind.PORTAL_EXPIRY, sender=copy.sender, recipients=[copy.recipient],
                 decision_id=copy.decision_id, copy_id=copy_id, reason=reason)
    return True


def sweep_expired(store: PortalStore, audit: AuditLog, now: datetime) -> tuple[str, ...]:
    """Destroy every copy past its expiry (returns their ids) and drop unfinished deliveries."""
    for copy_id in store.stale_pending(now - PENDING_GRACE):
        store.discard(copy_id)
    return tuple(copy_id for copy_id in store.due_for_expiry(now)
                 if expire_copy(store, audit, copy_id, reason="expired"))
