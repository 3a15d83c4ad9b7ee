"""A key file checked against the fingerprint recorded in the database it protects.

For keys whose loss does not show by itself: the case registry's `case-index.key` hashes every
recorded name, date and detail, and a new key would not fail anything: it would leave every
recorded person, confidential detail and shield unrecognised, so protected mail would pass as
unprotected (fail open). `guard` refuses, with one sentence naming the file, a key that is
missing while the database holds data made with it, or whose fingerprint differs from the one
recorded; otherwise it loads (or, for a database with nothing in it, makes) the key and records
its fingerprint. The table holds HMAC(key, a fixed label), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS key_fingerprint (
    file TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
)
"""
_LABEL = b"casegate-key-fingerprint-v1"


class KeyFileError(ValueError):
    """A key file cannot be used with the data its database holds (one sentence)."""


def fingerprint(key: bytes) -> str:
    return hmac.new(key, _LABEL, hashlib.sha256).digest()[:16].hex()


def _holds_rows(db: sqlite3.Connection, tables: Sequence[str]) -> bool:
    present = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    return any(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608
               for table in tables if table in present)


def guard(key_path: Path, db_path: Path, data_tables: Sequence[str],
          load: Callable[[], bytes]) -> bytes:
    """The key `load` reads (or makes) from `key_path`, refused when `db_path` says it is not
    the key its data (rows of `data_tables`) was made with."""
    restore = f"restore {key_path.name} from your backup of the data directory"
    db = sqlite3.connect(db_path, timeout=30.0)
    try:
        with db:
            db.execute(_SCHEMA)
        row = db.execute("SELECT fingerprint FROM key_fingerprint WHERE file = ?",
                         (key_path.name,)).fetchone()
        recorded = row[0] if row else None
        if not key_path.exists() and (recorded or _holds_rows(db, data_tables)):
            raise KeyFileError(f"{key_path} is missing, but {db_path} holds data made with it: "
                               f"{restore} (a new key would leave that data unrecognised)")
        key = load()
        if recorded is not None and recorded != fingerprint(key):
            raise KeyFileError(f"{key_path} is not the key {db_path} was made with (altered "
                               f"or replaced): {restore}")
        if recorded is None:
            with db:
                db.execute("INSERT OR IGNORE INTO key_fingerprint (file, fingerprint) "
                           "VALUES (?, ?)", (key_path.name, fingerprint(key)))
        return key
    finally:
        db.close()
