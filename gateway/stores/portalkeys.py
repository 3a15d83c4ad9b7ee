"""The portal keyring, checked against the fingerprints recorded in `portal.sqlite3`.

Every master key the gateway has used is recorded in the database its copies live in, as
(key id, `transports.crypto.fingerprint`): never the key itself. At start-up the keyring
(`portal-keys.json`, or `$CASEGATE_PORTAL_KEYS`) must hold every recorded key with the same
bytes, and every key a stored copy names; otherwise casegate refuses to start with one sentence
naming the file and what to restore. Before, a deleted keyring was silently replaced, and every
copy already sent became unreadable (the recipient passed the one-time code and got a 500).

A keyring is made only before the portal has ever had one (nothing recorded, no copy stored),
or by `casegate keys init`, which replaces a lost keyring only when no stored copy needs it.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from datetime import datetime
from pathlib import Path

from gateway.stores.portal import PORTAL_DB_FILE as PORTAL_DB
from transports.crypto import KEYS_FILE, CryptoError, Keyring, fingerprint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS portal_key_fingerprint (
    key_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
)
"""
RESTORE = "restore portal-keys.json from your backup of the data directory"


class KeyringError(ValueError):
    """The keyring cannot be used with this data directory (one sentence)."""


class PortalKeys:
    """The fingerprint table in `portal.sqlite3`, and the key ids stored copies name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=30.0)
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._db:
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def recorded(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key_id, fingerprint FROM portal_key_fingerprint"))

    def in_use(self) -> set[str]:
        """Key ids that stored copies were sealed with (expired copies have none)."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
        if "portal_copy" not in tables:
            return set()
        return {row[0] for row in self._db.execute(
            "SELECT DISTINCT key_id FROM portal_copy WHERE key_id IS NOT NULL")}

    def record(self, keyring: Keyring) -> None:
        """Record the fingerprint of every key not yet recorded."""
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO portal_key_fingerprint (key_id, fingerprint) VALUES (?, ?)",
                [(key.key_id, fingerprint(key)) for key in keyring.keys])

    def forget(self, key_ids: set[str]) -> None:
        """Drop recorded keys (`keys init` replacing a lost keyring no copy needs)."""
        with self._db:
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


def open_keyring(data_dir: Path, text: str | None, now: datetime) -> tuple[Keyring, bool]:
    """The checked keyring, and whether it was made just now (see the module docstring).

    `text` is the keyring from the environment ($CASEGATE_PORTAL_KEYS), else the file is used.
    Raises KeyringError with one sentence.
    """
    path = data_dir / KEYS_FILE
    keys = PortalKeys(data_dir / PORTAL_DB)
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
        check(keyring, keys, source)
        keys.record(keyring)
        return keyring, created
    finally:
        keys.close()


def init_keyring(data_dir: Path, now: datetime) -> tuple[Keyring, set[str]]:
    """`casegate keys init`: make the keyring when it is missing. A recorded key that no stored
    copy needs is forgotten (returned); one that a copy needs is a KeyringError."""
    path = data_dir / KEYS_FILE
    if path.exists():
        raise KeyringError(f"{path} already exists: casegate never replaces a keyring (make a "
                           "new key current with `casegate keys rotate`)")
    keys = PortalKeys(data_dir / PORTAL_DB)
    try:
        needed = keys.in_use()
        if needed:
            raise KeyringError(
                f"{path} is missing, but copies in {keys.path} were sealed with "
                f"{', '.join(sorted(needed))}: {RESTORE} (a new keyring could not open them)")
        forgotten = set(keys.recorded())
        keyring, _ = create(path, now)
        keys.forget(forgotten)
        keys.record(keyring)
        return keyring, forgotten
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
