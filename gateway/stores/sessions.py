"""Server-side staff sessions: `web-sessions.sqlite3` in the data directory, or the shared
PostgreSQL database (then a session made through one node is good on every node).

The browser holds only a random token; the table holds its SHA-256, so a copy of the database
does not let anyone log in. A session ends at logout, after `idle_seconds` without use, or
`lifetime_seconds` after login, whichever comes first. Each session has its own CSRF token.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from transports.database import Database, migrate

SESSIONS_FILE = "web-sessions.sqlite3"
COMPONENT = "sessions"
TOKEN_BYTES = 32

# Each entry moves the schema one version up; never edit one that has shipped, add another.
# The first is idempotent: SQLite files made before versioning have the table already.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS web_session (
        token_hash TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        csrf_token TEXT NOT NULL,
        created REAL NOT NULL,
        expires REAL NOT NULL,
        idle_until REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS web_session_expires ON web_session (expires);
    """,
)


class SessionStoreError(Exception):
    """The session tables cannot be used as they are (written by a newer casegate)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    """A live session: who, and the CSRF token their forms must echo."""

    address: str
    csrf_token: str


class SessionStore:
    def __init__(
        self,
        database: Database,
        *,
        idle_seconds: float = 30 * 60,
        lifetime_seconds: float = 8 * 3600,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._db = database.connect(SESSIONS_FILE, autocommit=True, timeout=10.0)
        with self._lock:
            migrate(self._db, COMPONENT, _MIGRATIONS, lambda version: SessionStoreError(
                f"{database.describe()} was written by a newer casegate "
                f"(sessions schema {version})"))

    def _now(self) -> float:
        return self._clock().timestamp()

    def create(self, address: str) -> str:
        """A new session for `address`; returns the token for the cookie (never stored)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._now()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("DELETE FROM web_session WHERE expires <= ? OR idle_until <= ?",
                                 (now, now))
                self._db.execute(
                    "INSERT INTO web_session (token_hash, address, csrf_token, created, "
                    "expires, idle_until) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        _hash(token),
                        address,
                        secrets.token_urlsafe(TOKEN_BYTES),
                        now,
                        now + self.lifetime_seconds,
                        now + self.idle_seconds,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return token

    def get(self, token: str) -> Session | None:
        """The live session for `token` (its idle timer restarts), else None."""
        if not token or len(token) > 200:
            return None
        now = self._now()
        key = _hash(token)
        with self._lock:
            row = self._db.execute(
                "SELECT address, csrf_token, expires, idle_until FROM web_session "
                "WHERE token_hash = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            if row[2] <= now or row[3] <= now:
                self._db.execute("DELETE FROM web_session WHERE token_hash = ?", (key,))
                return None
            self._db.execute(
                "UPDATE web_session SET idle_until = ? WHERE token_hash = ?",
                (min(row[2], now + self.idle_seconds), key),
            )
        return Session(address=row[0], csrf_token=row[1])

    def delete(self, token: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM web_session WHERE token_hash = ?", (_hash(token),))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM web_session").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

