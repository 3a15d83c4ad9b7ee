"""The audit tests on either engine: edit the trail's tables directly, as someone with write
access to the database (but not the audit key) would, and point the CLI at the same database.
"""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from gateway.audit.trail import AUDIT_DB_FILE
from transports.database import Database

# SQLite's spelling in the tests' edits, and PostgreSQL's for the same thing.
_POSTGRES = (("zeroblob(32)", "decode(repeat('00', 32), 'hex')"),)


def tamper(database: Database, *statements: str) -> None:
    """Run `statements` on the trail's tables in one transaction, with the triggers that
    refuse UPDATE and DELETE dropped (SQLite) or disabled (PostgreSQL) around them."""
    if database.is_sqlite:
        db = sqlite3.connect(database.data_dir / AUDIT_DB_FILE)
        db.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        db.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
        for sql in statements:
            db.execute(sql)
        db.commit()
        db.close()
        return
    with psycopg.connect(database.url) as conn:  # one transaction, committed on leaving
        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
        for sql in statements:
            for sqlite_form, postgres_form in _POSTGRES:
                sql = sql.replace(sqlite_form, postgres_form)
            conn.execute(sql.encode())  # the edits hold no parameters
        conn.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only")


def point_cli_at(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """`casegate audit ...` run in this test reads `database` (on SQLite: --data is enough)."""
    if database.is_sqlite:
        monkeypatch.delenv("CASEGATE_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("CASEGATE_DATABASE_URL", database.url)
