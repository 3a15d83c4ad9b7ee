"""A real `casegate serve` killed (SIGKILL) between the upstream's acceptance and the ledger
write: restarted, the client's retry is not delivered again (issue 18, window (a)).

The window is made deterministic rather than hit by chance: the test holds the relay ledger's
write lock (as another process could), so the acceptance can reach the journal but not the
ledger, and kills the gateway while the ledger write waits for that lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

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
