"""A real `casegate serve` killed (SIGKILL) between the upstream's acceptance and the ledger
write: restarted, the client's retry is not delivered again (issue 18, window (a)).

The window is made deterministic rather than hit by chance: the test holds the relay ledger's
write lock (as another process could), so the acceptance can reach the journal but not the
ledger, and kills the gateway while the ledger write waits for that lock. The same on
PostgreSQL, where the write is the commit the client's 250 waits for.
"""

from __future__ import annotations

import asyncio
import smtplib
import sqlite3
from pathlib import Path

import psycopg
import pytest

from gateway.app import LEDGER_FILE
from tests.gateway_harness import message
from tests.servekit import kill, prepare, serving, submit, terminate
from tests.sink import Sink

COLLEAGUE = "colleague@cafcass.gov.uk"


async def test_kill_between_acceptance_and_ledger_write(tmp_path: Path, sink: Sink) -> None:
    """The sink accepts, the journal has the acceptance, the ledger cannot be written (its lock
    is held), the gateway is killed; restarted, the retry of the same message is answered 250
    and the sink still holds one copy. The ledger had nothing until the restart folded the
    journal into it."""
    config = prepare(tmp_path, sink)
    data_dir = tmp_path / "data"
    data = message(to=[COLLEAGUE])
    async with serving(config, data_dir) as first:
        locker = sqlite3.connect(data_dir / LEDGER_FILE, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # the ledger write waits on this lock
        await asyncio.to_thread(submit, first.smtp_port, first.cert_file, data, [COLLEAGUE])
        await kill(first)
        assert locker.execute("SELECT COUNT(*) FROM accepted").fetchone()[0] == 0
        locker.execute("ROLLBACK")
        locker.close()
    assert len(sink.messages) == 1
    journal = list(data_dir.glob(f"{LEDGER_FILE}.journal.*"))
    assert journal and any(path.stat().st_size for path in journal)
    async with serving(config, data_dir) as second:
        await asyncio.to_thread(submit, second.smtp_port, second.cert_file, data, [COLLEAGUE])
        assert await terminate(second) == 0
    assert [m.rcpt_tos for m in sink.messages] == [(COLLEAGUE,)]
    with sqlite3.connect(data_dir / LEDGER_FILE) as ledger:
        assert ledger.execute("SELECT recipient FROM accepted").fetchall() == [(COLLEAGUE,)]
    ledger.close()


async def test_kill_before_the_shared_ledger_commit(tmp_path: Path, sink: Sink,
                                                    pg_url: str) -> None:
    """On PostgreSQL (issue 15) the client's 250 waits for the acceptance to be committed to
    the shared ledger. The sink accepts, the commit waits on a lock the test holds, the
    gateway is killed (the client never had its 250); restarted, the node folds its journal
    into the shared table, and the client's retry is answered 250 with the sink still
    holding one copy (the dead process's "being handed over" row does not hold it off: the
    copy is wholly accepted)."""
    config = prepare(tmp_path, sink, database_url=pg_url)
    data_dir = tmp_path / "data"
    data = message(to=[COLLEAGUE])
    with psycopg.connect(pg_url) as locker:
        async with serving(config, data_dir, pg_url) as first:  # it made the ledger's tables
            locker.execute("LOCK TABLE accepted IN EXCLUSIVE MODE")  # writes wait, reads don't
            sending = asyncio.ensure_future(asyncio.to_thread(
                submit, first.smtp_port, first.cert_file, data, [COLLEAGUE]))
            await _until_waiting_on(pg_url, "accepted")
            await kill(first)
            with pytest.raises((smtplib.SMTPException, OSError)):
                await sending
        row = locker.execute("SELECT COUNT(*) FROM accepted").fetchone()
        assert row == (0,)
        locker.rollback()
    assert len(sink.messages) == 1
    assert any(path.stat().st_size for path in data_dir.glob(f"{LEDGER_FILE}.journal.*"))
    async with serving(config, data_dir, pg_url) as second:
        await asyncio.to_thread(submit, second.smtp_port, second.cert_file, data, [COLLEAGUE])
        assert await terminate(second) == 0
    assert [m.rcpt_tos for m in sink.messages] == [(COLLEAGUE,)]
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT recipient FROM accepted").fetchall() == [(COLLEAGUE,)]


async def _until_waiting_on(url: str, table: str) -> None:
    """Return once some session waits for a lock on `table` (the gateway's INSERT, which
    follows the journal line); polls pg_locks, TimeoutError after 20 s."""
    with psycopg.connect(url, autocommit=True) as db:
        async with asyncio.timeout(20):
            while True:
                row = db.execute("SELECT COUNT(*) FROM pg_locks WHERE NOT granted "
                                 "AND relation = %s::regclass", (table,)).fetchone()
                if row is not None and row[0]:
                    return
                await asyncio.sleep(0.02)
