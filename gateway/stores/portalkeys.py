"""The portal keyring, checked against the fingerprints recorded in `portal.sqlite3` (or in the
PostgreSQL database the nodes share).

Every master key the gateway has used is recorded in the database its copies live in, as
(key id, `transports.crypto.fingerprint`): never the key itself, which every node reads from
its own keyring file (or the environment). At start-up the keyring
(`portal-keys.json`, or `$CASEGATE_PORTAL_KEYS`) must hold every recorded key with the same
bytes, and every key a stored copy names; otherwise casegate refuses to start with one sentence
naming the file and what to restore. Before, a deleted keyring was silently replaced, and every
copy already sent became unreadable (the recipient passed the one-time code and got a 500).

A keyring is made only before the portal has ever had one (nothing recorded, no copy stored),
or by `casegate keys init`, which replaces a lost keyring only when no stored copy needs it.
The check and the recording are one transaction under the portal's write lock, so that nodes
starting together on an empty database agree on one keyring: the first records its keys, the
others are refused until they are given its keyring.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from gateway.stores.portal import PORTAL_DB_FILE as PORTAL_DB
from gateway.stores.portal import open_schema
from transports.crypto import KEYS_FILE, CryptoError, Keyring, fingerprint
from transports.database import Database, OperationalError, migrate

COMPONENT = "portal-keys"  # its line in schema_version
MIGRATIONS = ("""
CREATE TABLE IF NOT EXISTS portal_key_fingerprint (
    key_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
)
""",)
T = TypeVar("T")
RESTORE = "restore portal-keys.json from your backup of the data directory"


class KeyringError(ValueError):
    """The keyring cannot be used with this data directory (one sentence)."""


def _newer(version: int) -> Exception:
    return OperationalError(f"the portal key fingerprints are at schema version {version}, "
                            "made by a newer casegate: upgrade casegate")


class PortalKeys:
    """The fingerprint table beside the portal's copies, and the key ids stored copies name."""

    def __init__(self, database: Database) -> None:
        # Where the fingerprints are, for messages: the file, or the database (no password).
        self.path = str(database.data_dir / PORTAL_DB) if database.is_sqlite \
            else f"the database {database.describe()}"
        open_schema(database)  # the copies' table, for `in_use`
        self._db = database.connect(PORTAL_DB, autocommit=True, timeout=30.0)
        self._db.execute("PRAGMA busy_timeout=30000")  # SQLite's; nothing on PostgreSQL
        migrate(self._db, COMPONENT, MIGRATIONS, _newer)

    def close(self) -> None:
        self._db.close()

    def recorded(self) -> dict[str, str]:
        return {str(row[0]): str(row[1]) for row in self._db.execute(
            "SELECT key_id, fingerprint FROM portal_key_fingerprint")}

    def in_use(self) -> set[str]:
        """Key ids that stored copies were sealed with (expired copies have none)."""
        return {row[0] for row in self._db.execute(
            "SELECT DISTINCT key_id FROM portal_copy WHERE key_id IS NOT NULL")}

    def record(self, keyring: Keyring) -> None:
        """Record the fingerprint of every key not yet recorded."""
        self.locked(lambda: self._record(keyring))

    def forget(self, key_ids: set[str]) -> None:
        """Drop recorded keys (`keys init` replacing a lost keyring no copy needs)."""
        self.locked(lambda: self._forget(key_ids))

    def settle(self, keyring: Keyring, source: str) -> None:
        """`check` the keyring, then record its keys: one transaction, so that of nodes
        starting together only the first records a keyring and the others are checked
        against it."""
        def settled() -> None:
            check(keyring, self, source)
            self._record(keyring)
        self.locked(settled)

    def locked(self, work: Callable[[], T]) -> T:
        """`work` in one transaction holding the portal's write lock (on every node)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            done = work()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return done

    def _record(self, keyring: Keyring) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO portal_key_fingerprint (key_id, fingerprint) VALUES (?, ?)",
            [(key.key_id, fingerprint(key)) for key in keyring.keys])

    def _forget(self, key_ids: set[str]) -> None:
        self._db.executemany("DELETE FROM portal_key_fingerprint WHERE key_id = ?",
                             [(key_id,) for key_id in sorted(key_ids)])


def check(keyring: Keyring, keys: PortalKeys, source: str) -> None:
    """Refuse a keyring that lacks a recorded or used key, or holds other bytes under its id."""
    held = {key.key_id: key for key in keyring.keys}
    for key_id, recorded in sorted(keys.recorded().items()):
        key = held.get(key_id)
        if key is None:
            raise KeyringError(
                f"{source} lacks master key {key_id}, which {keys.path} records: {RESTORE}")
        if fingerprint(key) != recorded:
            raise KeyringError(
                f"{source} holds other bytes under master key {key_id} than {keys.path} "
                f"records (altered or replaced): {RESTORE}")
    missing = sorted(keys.in_use() - held.keys())
    if missing:
        raise KeyringError(f"{source} lacks master key {', '.join(missing)}, which copies in "
                           f"{keys.path} were sealed with: {RESTORE}")


def open_keyring(database: Database, text: str | None, now: datetime) -> tuple[Keyring, bool]:
    """The checked keyring, and whether it was made just now (see the module docstring).

    `text` is the keyring from the environment ($CASEGATE_PORTAL_KEYS), else the file in the
    data directory is used. Raises KeyringError with one sentence.
    """
    path = database.data_dir / KEYS_FILE
    keys = PortalKeys(database)
    try:
        created = False
        source = "$CASEGATE_PORTAL_KEYS" if text else str(path)
        try:
            if text:
                keyring = Keyring.from_text(text, source)
            elif path.exists():
                keyring = Keyring.load(path)
            elif keys.recorded() or keys.in_use():
                raise KeyringError(
                    f"{path} is missing, but {keys.path} holds copies or records keys sealed "
                    f"with it: {RESTORE} (a new keyring could not open them)")
            else:
                keyring, created = create(path, now)
        except CryptoError as exc:
            raise KeyringError(f"{exc}: {RESTORE}") from None
        keys.settle(keyring, source)
        return keyring, created
    finally:
        keys.close()


def init_keyring(database: Database, now: datetime) -> tuple[Keyring, set[str]]:
    """`casegate keys init`: make the keyring when it is missing. A recorded key that no stored
    copy needs is forgotten (returned); one that a copy needs is a KeyringError."""
    path = database.data_dir / KEYS_FILE
    if path.exists():
        raise KeyringError(f"{path} already exists: casegate never replaces a keyring (make a "
                           "new key current with `casegate keys rotate`)")
    keys = PortalKeys(database)
    try:
        def replace() -> tuple[Keyring, set[str]]:
            needed = keys.in_use()
            if needed:
                raise KeyringError(
                    f"{path} is missing, but copies in {keys.path} were sealed with "
                    f"{', '.join(sorted(needed))}: {RESTORE} (a new keyring could not open "
                    "them)")
            forgotten = set(keys.recorded())
            keyring, _ = create(path, now)
            keys._forget(forgotten)
            keys._record(keyring)
            return keyring, forgotten
        return keys.locked(replace)
    finally:
        keys.close()


def create(path: Path, now: datetime) -> tuple[Keyring, bool]:
    """A new keyring in `path` (mode 0600), made atomically: when another process made one
    first, theirs is read and returned (with False)."""
    keyring = Keyring.new(now)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(keyring.to_text())
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return Keyring.load(path), False
    finally:
        temporary.unlink(missing_ok=True)
    return keyring, True
