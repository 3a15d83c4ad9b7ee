"""Versioned schemas for the verification stores' SQLite files (the registry and the cases).

Each store lists its migrations as scripts, oldest first; `migrate` applies the ones a file has
not had yet, in one `BEGIN IMMEDIATE` transaction, and records the version under the store's
component name in `schema_version`. A file written by a newer casegate is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence


def migrate(db: sqlite3.Connection, component: str, migrations: Sequence[str],
            newer: Callable[[int], Exception]) -> None:
    """Bring `component`'s tables up to `len(migrations)`; `newer(version)` is raised for a
    file whose version is beyond this casegate's."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                   "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        version = schema_version(db, component)
        if version > len(migrations):
            raise newer(version)
        for script in migrations[version:]:
            for statement in statements(script):
                db.execute(statement)
        db.execute("INSERT INTO schema_version (component, version) VALUES (?, ?) "
                   "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                   (component, len(migrations)))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def schema_version(db: sqlite3.Connection, component: str) -> int:
    """The version recorded for `component` (0 for none)."""
    row = db.execute("SELECT version FROM schema_version WHERE component = ?",
                     (component,)).fetchone()
    return int(row[0]) if row else 0


def statements(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our DDL's strings)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
