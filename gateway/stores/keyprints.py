"""A key file checked against the fingerprint recorded in the database it protects.

For keys whose loss does not show by itself: the case registry's `case-index.key` hashes every
recorded name, date and detail, and a new key would not fail anything: it would leave every
recorded person, confidential detail and shield unrecognised, so protected mail would pass as
unprotected (fail open). `guard` refuses, with one sentence naming the file, a key that is
missing while the database holds data made with it, or whose fingerprint differs from the one
recorded; otherwise it loads (or, for a database with nothing in it, makes) the key and records
its fingerprint. The table holds HMAC(key, a fixed label), never the key.

With several nodes on one PostgreSQL database, each node has the key file (distributed by the
operator) and the database holds its fingerprint: a node given another key, or none, is
refused. The check and the recording are one transaction under the store's write lock, so
nodes starting together on an empty database agree on one key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from pathlib import Path

from transports.database import Connection, Database, OperationalError, migrate

COMPONENT = "key-fingerprints"  # its line in schema_version
MIGRATIONS = ("""
CREATE TABLE IF NOT EXISTS key_fingerprint (
    file TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
)
""",)
_LABEL = b"casegate-key-fingerprint-v1"


class KeyFileError(ValueError):
    """A key file cannot be used with the data its database holds (one sentence)."""


def fingerprint(key: bytes) -> str:
    return hmac.new(key, _LABEL, hashlib.sha256).digest()[:16].hex()


def _newer(version: int) -> Exception:
    return OperationalError(f"the key fingerprints are at schema version {version}, made by a "
                            "newer casegate: upgrade casegate")


def _holds_rows(db: Connection, database: Database, tables: Sequence[str]) -> bool:
    if database.is_sqlite:
        listed = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        listed = db.execute("SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = current_schema()")
    present = {str(row[0]) for row in listed}
    return any(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()  # noqa: S608
               for table in tables if table in present)


def guard(key_path: Path, database: Database, db_file: str, data_tables: Sequence[str],
          load: Callable[[], bytes]) -> bytes:
    """The key `load` reads (or makes) from `key_path`, refused when the store `db_file` (its
    SQLite file, or its tables in the PostgreSQL database) says it is not the key its data
    (rows of `data_tables`) was made with."""
    restore = f"restore {key_path.name} from your backup of the data directory"
    where = str(database.data_dir / db_file) if database.is_sqlite \
        else f"the database {database.describe()}"
    db = database.connect(db_file, autocommit=True, timeout=30.0)
    try:
        migrate(db, COMPONENT, MIGRATIONS, _newer)
        db.execute("BEGIN IMMEDIATE")  # the store's write lock: one node records a key
        try:
            key = _checked(db, database, key_path, where, data_tables, load, restore)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return key
    finally:
        db.close()


def _checked(db: Connection, database: Database, key_path: Path, where: str,
             data_tables: Sequence[str], load: Callable[[], bytes], restore: str) -> bytes:
    """`guard`'s check and record, inside its transaction."""
    row = db.execute("SELECT fingerprint FROM key_fingerprint WHERE file = ?",
                     (key_path.name,)).fetchone()
    recorded = row[0] if row else None
    if not key_path.exists() and (recorded or _holds_rows(db, database, data_tables)):
        raise KeyFileError(f"{key_path} is missing, but {where} holds data made with it: "
                           f"{restore} (a new key would leave that data unrecognised)")
    key = load()
    if recorded is not None and recorded != fingerprint(key):
        raise KeyFileError(f"{key_path} is not the key {where} was made with (altered "
                           f"or replaced): {restore}")
    if recorded is None:
        db.execute("INSERT INTO key_fingerprint (file, fingerprint) VALUES (?, ?)",
                   (key_path.name, fingerprint(key)))
    return key
