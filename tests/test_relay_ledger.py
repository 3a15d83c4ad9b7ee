"""The idempotency ledger: what was accepted, kept for a while, surviving a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from transports.ledger import PRUNE_EVERY, Ledger, LedgerError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "ledger.sqlite3")
    yield book
    book.close()


def test_records_by_copy_and_recipient(ledger: Ledger) -> None:
    """Acceptances are kept per copy key; another key knows nothing of them."""
    ledger.record("d1:0", ["a@example.org", "b@example.org"], NOW)
    ledger.record("d1:0", ["a@example.org"], NOW)
    assert ledger.accepted("d1:0") == {"a@example.org", "b@example.org"}
    assert ledger.accepted("d1:1") == set()


def test_survives_reopening_in_wal_mode(tmp_path: Path) -> None:
    """The ledger is a WAL-mode SQLite file whose entries outlive the process that wrote them."""
    path = tmp_path / "ledger.sqlite3"
    first = Ledger(path)
    first.record("d1:0", ["a@example.org"], NOW)
    first.close()
    again = Ledger(path)
    assert again.accepted("d1:0") == {"a@example.org"}
    again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_prune_forgets_old_entries(ledger: Ledger) -> None:
    """prune(older_than) removes exactly the entries accepted before that moment."""
    ledger.record("old:0", ["a@example.org"], NOW - timedelta(days=8))
    ledger.record("new:0", ["b@example.org"], NOW - timedelta(days=1))
    assert ledger.prune(NOW - timedelta(days=7)) == 1
    assert ledger.accepted("old:0") == set()
    assert ledger.accepted("new:0") == {"b@example.org"}


def test_recording_prunes_past_retention(tmp_path: Path) -> None:
    """Entries older than the retention (default 7 days) go when new ones are recorded."""
    ledger = Ledger(tmp_path / "ledger.sqlite3", retention=timedelta(days=7))
    ledger.record("week-old:0", ["a@example.org"], NOW - timedelta(days=7, seconds=1))
    ledger.record("recent:0", ["b@example.org"], NOW - timedelta(days=6))
    ledger.record("today:0", ["c@example.org"], NOW)
    assert ledger.accepted("week-old:0") == set()
    assert ledger.accepted("recent:0") == {"b@example.org"}
    ledger.close()


def test_recording_prunes_at_most_once_a_minute(tmp_path: Path) -> None:
    """Not a DELETE for every message: what expires in between goes with the next prune."""
    ledger = Ledger(tmp_path / "ledger.sqlite3", retention=timedelta(days=7))
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
        Ledger(blocker / "ledger.sqlite3")


def test_closed_ledger_raises_ledger_error(tmp_path: Path) -> None:
    """Reading a ledger whose database is gone raises LedgerError, which callers turn into 4xx."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.close()
    with pytest.raises(LedgerError):
        ledger.accepted("d1:0")
