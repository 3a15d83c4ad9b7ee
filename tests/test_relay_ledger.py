"""The idempotency ledger: what was accepted, kept for a while, surviving a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from transports.base import Copy, DeliveryResult, Outcome
from transports.database import Database
from transports.ledger import PRUNE_EVERY, Ledger, LedgerError, deliver_once

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NAME = "ledger.sqlite3"


@pytest.fixture
def ledger(database: Database) -> Iterator[Ledger]:
    """A ledger on each engine."""
    book = Ledger(database, NAME)
    yield book
    book.close()


def test_records_by_copy_and_recipient(ledger: Ledger) -> None:
    """Acceptances are kept per copy key; another key knows nothing of them."""
    ledger.record("d1:0", ["a@example.org", "b@example.org"], NOW)
    ledger.record("d1:0", ["a@example.org"], NOW)
    assert ledger.accepted("d1:0") == {"a@example.org", "b@example.org"}
    assert ledger.accepted("d1:1") == set()


def test_survives_reopening(database: Database) -> None:
    """The ledger's entries outlive the process that wrote them (on SQLite a WAL-mode file)."""
    first = Ledger(database, NAME)
    first.record("d1:0", ["a@example.org"], NOW)
    first.close()
    again = Ledger(database, NAME)
    assert again.accepted("d1:0") == {"a@example.org"}
    again.close()
    if database.is_sqlite:
        with sqlite3.connect(database.data_dir / NAME) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.close()


def test_a_ledger_of_the_last_release_opens_as_it_was(tmp_path: Path) -> None:
    """A SQLite ledger made before schema versions (the table, no schema_version row) opens
    with its entries and is recorded as version 1."""
    with sqlite3.connect(tmp_path / NAME) as old:
        old.executescript("""
            CREATE TABLE accepted (copy_key TEXT NOT NULL, recipient TEXT NOT NULL,
                accepted_at REAL NOT NULL, PRIMARY KEY (copy_key, recipient)) WITHOUT ROWID;
            CREATE INDEX accepted_by_time ON accepted (accepted_at);""")
        old.execute("INSERT INTO accepted VALUES ('d1:0', 'a@example.org', ?)",
                    (NOW.timestamp(),))
    old.close()
    ledger = Ledger(Database.open(tmp_path), NAME)
    assert ledger.accepted("d1:0") == {"a@example.org"}
    ledger.close()
    with sqlite3.connect(tmp_path / NAME) as db:
        assert db.execute("SELECT version FROM schema_version WHERE component = 'ledger'"
                          ).fetchall() == [(1,)]
    db.close()


def test_prune_forgets_old_entries(ledger: Ledger) -> None:
    """prune(older_than) removes exactly the entries accepted before that moment."""
    ledger.record("old:0", ["a@example.org"], NOW - timedelta(days=8))
    ledger.record("new:0", ["b@example.org"], NOW - timedelta(days=1))
    assert ledger.prune(NOW - timedelta(days=7)) == 1
    assert ledger.accepted("old:0") == set()
    assert ledger.accepted("new:0") == {"b@example.org"}


def test_recording_prunes_past_retention(database: Database) -> None:
    """Entries older than the retention (default 7 days) go when new ones are recorded."""
    ledger = Ledger(database, NAME, retention=timedelta(days=7))
    ledger.record("week-old:0", ["a@example.org"], NOW - timedelta(days=7, seconds=1))
    ledger.record("recent:0", ["b@example.org"], NOW - timedelta(days=6))
    ledger.record("today:0", ["c@example.org"], NOW)
    assert ledger.accepted("week-old:0") == set()
    assert ledger.accepted("recent:0") == {"b@example.org"}
    ledger.close()


def test_recording_prunes_at_most_once_a_minute(database: Database) -> None:
    """Not a DELETE for every message: what expires in between goes with the next prune."""
    ledger = Ledger(database, NAME, retention=timedelta(days=7))
    ledger.record("expiring:0", ["a@example.org"], NOW - timedelta(days=7) + timedelta(seconds=10))
    ledger.record("first:0", ["b@example.org"], NOW)  # prunes: the first record
    ledger.record("soon:0", ["c@example.org"], NOW + PRUNE_EVERY / 2)  # does not
    assert ledger.accepted("expiring:0") == {"a@example.org"}
    ledger.record("later:0", ["d@example.org"], NOW + PRUNE_EVERY)  # prunes again
    assert ledger.accepted("expiring:0") == set()
    assert ledger.accepted("soon:0") == {"c@example.org"}
    ledger.close()


def test_naive_time_is_refused(ledger: Ledger) -> None:
    """A datetime without a timezone is refused rather than guessed."""
    with pytest.raises(ValueError, match="timezone"):
        ledger.record("d1:0", ["a@example.org"], datetime(2026, 11, 25, 12, 0))


def test_unopenable_path_is_a_ledger_error(tmp_path: Path) -> None:
    """A ledger that cannot be opened raises LedgerError naming the path."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(LedgerError, match="ledger"):
        Ledger(Database.open(blocker), NAME)


def test_closed_ledger_raises_ledger_error(database: Database) -> None:
    """Reading a ledger whose database is gone raises LedgerError, which callers turn into 4xx."""
    ledger = Ledger(database, NAME)
    ledger.close()
    with pytest.raises(LedgerError):
        ledger.accepted("d1:0")


# -- the acceptance journal (issue 18) ----------------------------------------------------

KEY = "f" * 64


def _journals(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{NAME}.journal.*"))


def _rows(database: Database) -> int:
    """How many acceptances the ledger's table holds, read on a connection of its own."""
    db = database.connect(NAME)
    try:
        return int(db.execute("SELECT COUNT(*) FROM accepted").fetchone()[0])
    finally:
        db.close()


def _refuse_inserts(database: Database) -> Callable[[], None]:
    """Make the ledger's table refuse inserts, as a full disk would (a trigger another
    process adds); returns what takes it away."""
    if database.is_sqlite:
        other = sqlite3.connect(database.data_dir / NAME)
        other.execute("CREATE TRIGGER full BEFORE INSERT ON accepted "
                      "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        other.commit()

        def undo_sqlite() -> None:
            other.execute("DROP TRIGGER full")
            other.commit()
            other.close()
        return undo_sqlite
    with psycopg.connect(database.url, autocommit=True) as pg:
        pg.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$")
        pg.execute("CREATE TRIGGER refuse BEFORE INSERT ON accepted "
                   "FOR EACH ROW EXECUTE FUNCTION refuse()")

    def undo_pg() -> None:
        with psycopg.connect(database.url, autocommit=True) as pg:
            pg.execute("DROP TRIGGER refuse ON accepted")
    return undo_pg


def test_an_acceptance_noted_but_not_folded_survives_in_the_journal(
        database: Database) -> None:
    """An acceptance noted (journalled) and never folded into the ledger, as when the process
    is killed: the next open folds the journal in, and deletes it (on PostgreSQL too: the
    node's journal is its fallback for a kill before the commit)."""
    first = Ledger(database, NAME)
    first.note_accepted(KEY, ("a@example.org", "b@example.org"), NOW)
    assert first.accepted(KEY) == {"a@example.org", "b@example.org"}  # from memory
    first.close()  # no flush: nothing was folded
    assert _rows(database) == 0
    again = Ledger(database, NAME)
    assert again._stored(KEY) == {"a@example.org", "b@example.org"}
    assert [p.stat().st_size for p in _journals(database.data_dir)] == [0]  # a fresh journal
    again.close()


def test_a_line_cut_short_by_a_crash_is_skipped(database: Database) -> None:
    """A journal whose last line was cut short by a crash still opens; whole lines count."""
    first = Ledger(database, NAME)
    first.note_accepted(KEY, ("a@example.org",), NOW)
    first.close()
    (journal,) = _journals(database.data_dir)
    with journal.open("ab") as torn:
        torn.write(b'{"k":"' + b"e" * 64 + b'","r":["b@exa')
    again = Ledger(database, NAME)
    assert again.accepted(KEY) == {"a@example.org"} and again.accepted("e" * 64) == set()
    again.close()


async def test_journal_files_are_rotated_and_deleted_once_folded(database: Database) -> None:
    """A journal file past its size is closed and a new one begun; once what it holds is
    folded into the ledger (and checkpointed) it is deleted, so the journal stays small."""
    ledger = Ledger(database, NAME, rotate_bytes=300)
    for number in range(10):
        ledger.note_accepted(f"{number:064x}", ("a@example.org",), NOW)
        await ledger.settle()
    await ledger.flush()
    assert len(_journals(database.data_dir)) == 1  # only the one being written
    assert all(ledger._stored(f"{n:064x}") == {"a@example.org"} for n in range(10))
    ledger.close()


async def test_a_journal_that_cannot_be_written_is_reported_not_raised(
        database: Database) -> None:
    """A journal on a full device (ENOSPC from /dev/full): the delivery still counts as
    delivered, and a retry sends nothing (the acceptance is in memory and then in the ledger).
    On SQLite the failure is reported; on PostgreSQL the committed row is the record, and
    the journal (only its fallback) is not a fault."""
    faults: list[str] = []
    ledger = Ledger(database, NAME)
    ledger.on_fault = faults.append
    ledger.journal.path(ledger.journal.generation + 1).symlink_to("/dev/full")
    ledger.journal.rotate()
    handed: list[tuple[str, ...]] = []

    async def hand_over(copy: Copy, recipients: tuple[str, ...]) -> DeliveryResult:
        handed.append(recipients)
        return DeliveryResult(Outcome.DELIVERED, accepted=recipients)

    copy = Copy(key=KEY, mail_from="s@example.org", recipients=("a@example.org",), data=b"x")
    first = await deliver_once(ledger, [copy], hand_over, lambda: NOW)
    await ledger.flush()
    retry = await deliver_once(ledger, [copy], hand_over, lambda: NOW)
    stored = ledger._stored(KEY)
    ledger.close()
    assert first.ok and retry.ok and handed == [("a@example.org",)]
    assert stored == {"a@example.org"}
    if database.is_sqlite:
        assert faults and "journal" in faults[0]
    else:
        assert faults == []


async def test_a_ledger_that_cannot_be_written_keeps_the_acceptance(
        database: Database) -> None:
    """The database refuses the fold (a trigger, as a full disk would): reported; the
    acceptance stays in memory and in the journal (fsync'd), and the next fold that works
    takes it."""
    faults: list[str] = []
    ledger = Ledger(database, NAME)
    ledger.on_fault = faults.append
    undo = _refuse_inserts(database)
    ledger.note_accepted(KEY, ("a@example.org",), NOW)
    await ledger.settle()
    await ledger.flush()
    assert faults and ledger.accepted(KEY) == {"a@example.org"} and ledger._stored(KEY) == set()
    assert any(KEY.encode() in path.read_bytes() for path in _journals(database.data_dir))
    undo()
    ledger.note_accepted("e" * 64, ("b@example.org",), NOW)
    await ledger.settle()
    await ledger.flush()
    assert ledger._stored(KEY) == {"a@example.org"}
    ledger.close()


async def test_another_process_never_folds_a_live_journal(database: Database) -> None:
    """A second opening of the ledger (a CLI command while the gateway runs) leaves the
    gateway's journal alone (it is locked); the gateway folds it and, at a clean close,
    deletes it."""
    gateway = Ledger(database, NAME)
    gateway.note_accepted(KEY, ("a@example.org",), NOW)
    await gateway.journal.sync()
    command = Ledger(database, NAME)
    command.close()
    assert len(_journals(database.data_dir)) == 1  # the gateway's, still there
    await gateway.settle()
    await gateway.flush()
    gateway.close()
    assert _journals(database.data_dir) == []
    again = Ledger(database, NAME)
    assert again._stored(KEY) == {"a@example.org"}
    again.close()
