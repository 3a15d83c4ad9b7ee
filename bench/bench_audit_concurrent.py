"""Audit events recorded from the event loop by concurrent tasks, as the SMTP front does.

    .venv/bin/python bench/bench_audit_concurrent.py [--tasks 8] [--events 500] [--repeat 3]

`--tasks` asyncio tasks each record `--events` events (the "relay" event of a 10 KB message) into
one fresh store, by two paths in the same run:
- thread hop: `await asyncio.to_thread(audit.record, ...)` (what the SMTP front used to do);
- writer: `await audit.record_async(...)` (the store's writer thread, no thread-pool hop).
Printed per path (median of `--repeat` runs, alternating paths): process CPU time per event
(time.process_time, every thread counted), events per second, and the writer/thread-hop ratios.
Both paths wait for a durable commit (WAL, synchronous=FULL) before each task goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit.trail import AuditLog
from transports.database import Database

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


def run_once(directory: Path, recorder: Recorder, tasks: int, events: int) -> Run:
    """One fresh store, `tasks` concurrent tasks recording `events` events each."""
    audit = AuditLog.open(Database.open(directory), stream=io.StringIO())

    async def one(task: int) -> None:
        for i in range(events):
            await recorder(audit, task, i)

    async def everyone() -> None:
        await asyncio.gather(*(one(t) for t in range(tasks)))

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(everyone())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert audit.verify() is None
    audit.close()
    total = tasks * events
    return Run(cpu / total, total / wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    paths: dict[str, Recorder] = {"thread hop": via_thread_hop, "writer": via_writer}
    runs: dict[str, list[Run]] = {name: [] for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for name, recorder in paths.items():
                directory = Path(tmp) / f"{name.replace(' ', '-')}-{round_}"
                runs[name].append(run_once(directory, recorder, args.tasks, args.events))
    cpu = {n: statistics.median(r.cpu_per_event for r in rs) for n, rs in runs.items()}
    rate = {n: statistics.median(r.events_per_second for r in rs) for n, rs in runs.items()}
    print(f"{args.tasks} tasks x {args.events} events, median of {args.repeat} runs")
    for name in paths:
        print(f"{name:>10}: {cpu[name] * 1e6:6.0f} us CPU/event, {rate[name]:7,.0f} events/s")
    print(f"writer/thread hop: CPU per event {cpu['writer'] / cpu['thread hop']:.2f}, "
          f"events/s {rate['writer'] / rate['thread hop']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
