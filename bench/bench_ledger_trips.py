"""What the relay ledger costs per delivered message, on each engine: database statements,
commits and fsyncs, and the time per message, for copies handed to a local sink one by one and
many at once.

    .venv/bin/python bench/bench_ledger_trips.py [--messages 200] [--concurrency 20]

PostgreSQL is a throwaway cluster started here (tests/postgres.py; needs the server's
binaries). Counted by wrapping the adapter's and the ledger's methods in this process (a
measurement, not a test). On PostgreSQL every statement here runs alone (autocommit): one
round trip each, and each write one commit. (pg_stat_database's xact_commit is no help: the
pooled backends report their counts up to 10 s late.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import UpstreamConfig  # noqa: E402
from tests.postgres import Cluster  # noqa: E402
from tests.sink import Sink  # noqa: E402
from transports import database as engine  # noqa: E402
from transports import ledger as ledger_module  # noqa: E402
from transports.base import Copy  # noqa: E402
from transports.database import Database, DatabaseSettings  # noqa: E402
from transports.ledger import Ledger  # noqa: E402
from transports.smtp_relay import SmtpRelay  # noqa: E402

COUNTS: Counter[str] = Counter()


def _counted(owner: Any, name: str, label: Callable[..., str | None]) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = label(*args, **kwargs)
        if key:
            COUNTS[key] += 1
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)


def _instrument() -> None:
    def statement(_self: Any, sql: str, *_: Any) -> str:
        kind = engine.translate(sql).kind
        return f"pg {kind}" if kind in ("read", "write") else ""
    _counted(engine.PgConnection, "execute", statement)
    _counted(engine.PgConnection, "executemany", statement)
    _counted(ledger_module.Journal, "_fsync", lambda *_: "journal fsync")
    _counted(ledger_module.Ledger, "_record_rows", lambda *_: "ledger fold (a commit)")


def _copy(number: int) -> Copy:
    data = (f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {number}\r\n\r\n"
            f"hello {number}\r\n").encode()
    return Copy(f"{number:064x}", "a@example.org", ("b@example.org",), data)


async def run(database: Database, messages: int, concurrency: int) -> list[str]:
    lines = []
    async with Sink() as sink:
        settings = replace(UpstreamConfig(), host=sink.host, port=sink.port, tls="none",
                           pool_size=concurrency)
        relay = SmtpRelay(settings, Ledger(database, "relay-ledger.sqlite3"), close_ledger=True)
        await relay.deliver([_copy(-1 & 0xFFFF)])  # connect, create, prune once
        await relay.ledger.flush()
        for width in (1, concurrency):
            COUNTS.clear()
            started = time.perf_counter()
            queue = list(range(width * 100000, width * 100000 + messages))

            async def client(queue: list[int] = queue) -> None:
                while queue:
                    result = await relay.deliver([_copy(queue.pop())])
                    assert result.ok, result
            await asyncio.gather(*(client() for _ in range(width)))
            await relay.ledger.flush()
            seconds = time.perf_counter() - started
            per = {key: round(value / messages, 2) for key, value in sorted(COUNTS.items())}
            lines.append(f"{database.engine:10} {width:3} at once: {seconds / messages * 1000:.2f}"
                         f" ms/message, per message {per}")
        await relay.close()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    _instrument()
    with tempfile.TemporaryDirectory(prefix="casegate-trips-") as scratch:
        lines = await run(Database.open(Path(scratch)), args.messages, args.concurrency)
        cluster = Cluster.start()
        try:
            pg = Database.open(Path(scratch), DatabaseSettings(url=cluster.url, node="bench"))
            try:
                lines += await run(pg, args.messages, args.concurrency)
            finally:
                pg.close()
        finally:
            cluster.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
