"""Group commit in the audit store: concurrent appends share transactions, never the chain."""

from __future__ import annotations

import io
import sqlite3
import threading

import pytest

from gateway.audit.trail import AuditLog
from transports.database import Database

THREADS = 8
EACH = 25


def test_every_caller_gets_its_own_event_back_and_the_chain_holds(database: Database) -> None:
    """Many threads appending at once: each returned seq holds that caller's event, in one chain."""
    log = AuditLog.open(database, stream=io.StringIO())
    start = log.store.head()[0]
    returned: dict[str, int] = {}
    guard = threading.Lock()
    go = threading.Barrier(THREADS)

    def write(thread: int) -> None:
        go.wait()
        for i in range(EACH):
            decision_id = f"t{thread}-{i}"
            seq = log.record("delivery", sender="a@cafcass.gov.uk", decision_id=decision_id)
            with guard:
                returned[decision_id] = seq

    threads = [threading.Thread(target=write, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(returned.values()) == list(range(start + 1, start + THREADS * EACH + 1))
    for decision_id, seq in returned.items():
        stored = log.get(seq)
        assert stored is not None and stored.decision_id == decision_id
    assert log.verify() is None
    log.close()


def test_a_failed_commit_raises_in_the_caller(database: Database) -> None:
    """When the store cannot be written, append raises: the caller fails closed."""
    log = AuditLog.open(database, stream=io.StringIO())
    log.store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        log.store.append({"kind": "delivery"})
    log.close()
