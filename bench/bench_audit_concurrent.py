"""Audit events recorded from the event loop by concurrent tasks, as the SMTP front does, on
SQLite or on PostgreSQL by one or several nodes.

    .venv/bin/python bench/bench_audit_concurrent.py [--tasks 8] [--events 500] [--repeat 3]
        [--database-url postgresql://...] [--nodes 2]

`--tasks` asyncio tasks each record `--events` events (the "relay" event of a 10 KB message) into
one fresh trail, by two paths in the same run:
- thread hop: `await asyncio.to_thread(audit.record, ...)` (what the SMTP front used to do);
- writer: `await audit.record_async(...)` (the store's writer thread, no thread-pool hop).
Printed per path (median of `--repeat` runs, alternating paths): process CPU time per event
(time.process_time, every thread counted; on PostgreSQL the server's CPU is not in it), events
per second, database commits per event (the writer's commit groups), and the writer/thread-hop
ratios. Both paths wait for a durable commit (SQLite: WAL, synchronous=FULL) before each task
goes on.

With `--database-url` the trail is in that PostgreSQL database (a fresh schema per run, dropped
after it); `--nodes N` opens N nodes on it (each its own Database, data directory and writer
thread, as N gateways would be) and spreads the tasks over them: one chain, one sequence.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit.keys import HMAC_KEY_FILE, SIGNING_KEY_FILE
from gateway.audit.trail import AuditLog
from transports.database import Database, DatabaseSettings

Recorder = Callable[[AuditLog, int, int], Awaitable[int]]


async def via_thread_hop(audit: AuditLog, task: int, i: int) -> int:
    """The old path: the synchronous record in a pool thread."""
    return await asyncio.to_thread(
        audit.record, "relay", sender="jo.bloggs@cafcass.gov.uk",
        recipients=[f"parent{task}-{i}@gmail.com"], case_numbers=["ZE26C00001"],
        decision_id=f"d-{task}-{i}", stage="data", size=10_240,
    )


async def via_writer(audit: AuditLog, task: int, i: int) -> int:
    """The new path: awaited on the loop, committed by the store's writer thread."""
    return await audit.record_async(
        "relay", sender="jo.bloggs@cafcass.gov.uk",
        recipients=[f"parent{task}-{i}@gmail.com"], case_numbers=["ZE26C00001"],
        decision_id=f"d-{task}-{i}", stage="data", size=10_240,
    )


@dataclass(frozen=True)
class Run:
    cpu_per_event: float  # seconds
    events_per_second: float
    commits_per_event: float


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A URL onto a new, empty schema of `url`'s database, dropped afterwards."""
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        separator = "&" if "?" in url else "?"
        yield f"{url}{separator}options={quote(f'-c search_path={name}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def open_nodes(directory: Path, url: str, count: int) -> list[Database]:
    """`count` nodes (one on SQLite), each with a data directory of its own."""
    if not url:
        return [Database.open(directory)]
    return [Database.open(directory / f"node{n}", DatabaseSettings(url=url, node=f"node{n}"))
            for n in range(count)]


def run_once(directory: Path, recorder: Recorder, tasks: int, events: int, url: str,
             nodes: int) -> Run:
    """One fresh trail, `tasks` concurrent tasks recording `events` events each, spread over
    the nodes."""
    databases = open_nodes(directory, url, nodes)
    audits = [AuditLog.open(databases[0], stream=io.StringIO())]
    for database in databases[1:]:  # the operator gives every node the same keys
        database.data_dir.mkdir(parents=True, mode=0o700)
        for name in (HMAC_KEY_FILE, SIGNING_KEY_FILE):
            shutil.copy2(databases[0].data_dir / name, database.data_dir / name)
        audits.append(AuditLog.open(database, stream=io.StringIO()))
    commits = [0]

    def count(_: float) -> None:
        commits[0] += 1  # each writer's commit_timer runs in its own thread: one += at a time

    for audit in audits:
        audit.store.commit_timer = count

    async def one(task: int) -> None:
        audit = audits[task % len(audits)]
        for i in range(events):
            await recorder(audit, task, i)

    async def everyone() -> None:
        await asyncio.gather(*(one(t) for t in range(tasks)))

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(everyone())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert audits[0].verify() is None
    total = tasks * events
    assert audits[0].store.head()[0] == total + 2  # and the two key-creation events
    for audit in audits:
        audit.close()
    for database in databases:
        database.close()
    return Run(cpu / total, total / wall, commits[0] / total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL database to use (default: SQLite files)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes on PostgreSQL")
    args = parser.parse_args()
    if args.nodes > 1 and not args.database_url:
        parser.error("--nodes needs --database-url: SQLite is one node")
    paths: dict[str, Recorder] = {"thread hop": via_thread_hop, "writer": via_writer}
    runs: dict[str, list[Run]] = {name: [] for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for name, recorder in paths.items():
                directory = Path(tmp) / f"{name.replace(' ', '-')}-{round_}"
                if args.database_url:
                    with fresh_schema(args.database_url) as url:
                        runs[name].append(run_once(directory, recorder, args.tasks, args.events,
                                                   url, args.nodes))
                else:
                    runs[name].append(run_once(directory, recorder, args.tasks, args.events,
                                               "", 1))
    cpu = {n: statistics.median(r.cpu_per_event for r in rs) for n, rs in runs.items()}
    rate = {n: statistics.median(r.events_per_second for r in rs) for n, rs in runs.items()}
    commits = {n: statistics.median(r.commits_per_event for r in rs) for n, rs in runs.items()}
    engine = (f"PostgreSQL, {args.nodes} node{'s' if args.nodes > 1 else ''}"
              if args.database_url else "SQLite")
    print(f"{engine}: {args.tasks} tasks x {args.events} events, median of {args.repeat} runs")
    for name in paths:
        print(f"{name:>10}: {cpu[name] * 1e6:6.0f} us CPU/event, {rate[name]:7,.0f} events/s, "
              f"{commits[name]:.2f} commits/event")
    print(f"writer/thread hop: CPU per event {cpu['writer'] / cpu['thread hop']:.2f}, "
          f"events/s {rate['writer'] / rate['thread hop']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
