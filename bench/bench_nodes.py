"""Benchmark: one node on SQLite, one node on PostgreSQL, two nodes on one PostgreSQL (issue 15).

    .venv/bin/python bench/bench_nodes.py [--count 1200] [--runs 3] [--size "1 KB"]

Postfix's `smtp-source` sends `smtp-source -l` messages naming a case to a secure recipient
(bench_postfix.py's "case" target) through each setup into Postfix's `smtp-sink`:

  sqlite       one `casegate serve`, the embedded default
  postgresql   one `casegate serve` on a throwaway PostgreSQL cluster (scripts/pg-throwaway)
  two nodes    two `casegate serve` processes (their own data directories, the same key files,
               `[database] node` one and two) on that one database, each sent half the messages
               by an smtp-source of its own, at the same time

Everything runs on this one 2-core machine, so messages per second mostly says how the cores
were shared. What carries over to a real installation is per message: the CPU of the gateway
processes, the CPU of the PostgreSQL server, its transactions (`xact_commit`) and its WAL
flushes (`pg_stat_wal.wal_sync`: durable commits, after group commit). From those the
benchmark projects what four nodes would ask of the database at a given rate. Every message
must reach the sink, and each gateway's audit lines must hold its decisions, else it stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_postfix import (  # noqa: E402  (after the path is set)
    SESSIONS,
    SIZES,
    BenchError,
    Bodies,
    Process,
    Sink,
    check_decisions,
    ensure_postfix_tools,
    machine,
    prepare_casegate,
    smtp_source,
    start_casegate,
    wait_until,
)

PG_SCRIPT = ROOT / "scripts" / "pg-throwaway"
KEY_FILES = ("*.key", "*.pem", "portal-keys.json", "tls.crt")  # what every node shares (README)
TARGET = "case"  # a case number to a secure recipient: decided, audited, relayed plain


@dataclass(frozen=True)
class Figures:
    setup: str
    rate: float  # messages per second, wall time
    gateway_cpu_ms: float  # all gateway processes, per message
    database_cpu_ms: float | None  # the PostgreSQL server's processes, per message
    transactions: float | None  # xact_commit per message
    wal_syncs: float | None  # WAL flushes per message


class Cluster:
    """A throwaway PostgreSQL cluster for the run; `stop` removes it."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="casegate-bench-pg-"))
        done = subprocess.run([str(PG_SCRIPT), "start", str(self.folder)], capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise BenchError(f"pg-throwaway: {done.stderr.strip()}")
        self.url = done.stdout.strip()

    def counters(self) -> tuple[int, int]:
        """(transactions committed, WAL syncs) so far, once the backends' statistics settle."""
        def read() -> tuple[int, int]:
            with psycopg.connect(self.url, autocommit=True) as conn:
                commits = conn.execute("SELECT xact_commit FROM pg_stat_database "
                                       "WHERE datname = current_database()").fetchone()
                wal = conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()
            assert commits is not None and wal is not None
            return int(commits[0]), int(wal[0])
        # An idle backend publishes its counts within 10 s (PostgreSQL 15's PGSTAT_IDLE_INTERVAL):
        # wait that long. The nodes' own background work (the alerter's poll, the lease, the
        # ledger's pruning) keeps counting meanwhile: a few transactions every 10 s, against
        # thousands in a load.
        time.sleep(11)
        return read()

    def cpu_seconds(self) -> float:
        """utime + stime of the postmaster and every process it started."""
        postmaster = int((self.folder / "data" / "postmaster.pid").read_text().split()[0])
        total = 0
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat_file.read_text().rpartition(")")[2].split()
            except OSError:
                continue  # gone meanwhile
            pid = int(stat_file.parent.name)
            if pid == postmaster or int(fields[1]) == postmaster:
                total += sum(int(fields[i]) for i in (11, 12, 13, 14))
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        subprocess.run([str(PG_SCRIPT), "stop", str(self.folder)], capture_output=True,
                       timeout=120, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def database_section(url: str, node: str) -> str:
    return f'[database]\nurl = "{url}"\nnode = "{node}"\n'


def second_node(first_config: Path, first_data: Path, home: Path, url: str) -> tuple[Path, Path]:
    """Node two: the first node's config with its own name, and a data directory holding only
    the key files (copied, as an operator distributes them)."""
    home.mkdir(parents=True)
    config, data = home / "casegate.toml", home / "data"
    data.mkdir(mode=0o700)
    text = first_config.read_text(encoding="utf-8")
    config.write_text(text.replace(database_section(url, "one"), database_section(url, "two")),
                      encoding="utf-8")
    for pattern in KEY_FILES:
        for key in first_data.glob(pattern):
            shutil.copy2(key, data / key.name)
    return config, data


def load(nodes: list[Process], sink: Sink, size: int, count: int, bodies: Bodies,
         cluster: Cluster | None, setup: str) -> Figures:
    """`count` messages, split evenly over `nodes`, sent at the same time."""
    share = count // len(nodes)
    before = sink.delivered()
    offsets = [node.log_size() for node in nodes]
    cpu = [node.cpu_seconds() for node in nodes]
    counters = cluster.counters() if cluster else (0, 0)
    database_cpu = cluster.cpu_seconds() if cluster else 0.0
    failures: list[BaseException] = []

    def send(node: Process) -> None:
        try:
            smtp_source(node.port, TARGET, "smtp-source -l", size, share, bodies, False)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(node,)) for node in nodes]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise failures[0]
    total = share * len(nodes)
    wait_until("the sink's count", lambda: sink.delivered() >= before + total, 30)
    if sink.delivered() - before != total:
        raise BenchError(f"{setup}: sent {total}, the sink received {sink.delivered() - before}")
    for node, offset in zip(nodes, offsets, strict=True):
        node.check_alive()
        check_decisions(TARGET, node, offset, share)
    gateway_cpu = sum(node.cpu_seconds() - spent for node, spent in zip(nodes, cpu, strict=True))
    if cluster is None:
        return Figures(setup, total / elapsed, gateway_cpu * 1000 / total, None, None, None)
    commits, syncs = cluster.counters()
    return Figures(setup, total / elapsed, gateway_cpu * 1000 / total,
                   (cluster.cpu_seconds() - database_cpu) * 1000 / total,
                   (commits - counters[0]) / total, (syncs - counters[1]) / total)


def run(scratch: Path, size: int, count: int, runs: int) -> list[list[Figures]]:
    started: list[Process] = []
    cluster = Cluster()
    try:
        sink = Sink("smtp-sink", scratch, started)
        bodies = Bodies(scratch)
        numbered = count * runs + 4 * SESSIONS
        print("preparing the SQLite node ...", flush=True)
        lite = prepare_casegate(scratch / "sqlite", sink.port, numbered)
        print("preparing the PostgreSQL nodes ...", flush=True)
        one = prepare_casegate(scratch / "pg-one", sink.port, numbered,
                               "\n" + database_section(cluster.url, "one"))
        two = second_node(*one, scratch / "pg-two", cluster.url)
        setups: list[tuple[str, list[Process]]] = [
            ("sqlite", [start_casegate("sqlite", *lite, scratch, started)]),
        ]
        pg_one = start_casegate("node one", *one, scratch, started)
        setups.append(("postgresql", [pg_one]))
        setups.append(("two nodes", [pg_one, start_casegate("node two", *two, scratch,
                                                              started)]))
        for name, nodes in setups:  # warm-up: the first messages pay for imports and caches
            load(nodes, sink, SIZES["1 KB"], SESSIONS * len(nodes), bodies,
                 cluster if name != "sqlite" else None, name)
        results: list[list[Figures]] = []
        for number in range(runs):
            row = []
            for name, nodes in setups:
                figures = load(nodes, sink, size, count, bodies,
                               cluster if name != "sqlite" else None, name)
                row.append(figures)
                print(f"run {number + 1}: {describe(figures)}", flush=True)
            results.append(row)
        return results
    finally:
        for process in reversed(started):
            process.stop()
        cluster.stop()


def describe(figures: Figures) -> str:
    text = (f"{figures.setup}: {figures.rate:.0f} msg/s, gateway CPU "
            f"{figures.gateway_cpu_ms:.2f} ms/msg")
    if figures.transactions is not None:
        text += (f", PostgreSQL CPU {figures.database_cpu_ms:.2f} ms/msg, "
                 f"{figures.transactions:.1f} transactions/msg, "
                 f"{figures.wal_syncs:.2f} WAL syncs/msg")
    return text


def median(results: list[list[Figures]], index: int) -> Figures:
    column = [row[index] for row in results]

    def mid(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return Figures(column[0].setup, statistics.median(f.rate for f in column),
                   statistics.median(f.gateway_cpu_ms for f in column),
                   mid([f.database_cpu_ms for f in column]), mid([f.transactions for f in column]),
                   mid([f.wal_syncs for f in column]))


def report(results: list[list[Figures]], size_name: str, count: int) -> None:
    medians = [median(results, i) for i in range(len(results[0]))]
    base = medians[0].rate
    print(f"\n{machine()}; {count} messages of {size_name} "
          f"(smtp-source -l, a case number, secure recipient) per load; median of "
          f"{len(results)} runs\n")
    print("| setup | msg/s | vs SQLite | gateway CPU ms/msg | PostgreSQL CPU ms/msg | "
          "transactions/msg | WAL syncs/msg |")
    print("|---|---|---|---|---|---|---|")
    for f in medians:
        db_cpu = f"{f.database_cpu_ms:.2f}" if f.database_cpu_ms is not None else "-"
        commits = f"{f.transactions:.1f}" if f.transactions is not None else "-"
        syncs = f"{f.wal_syncs:.2f}" if f.wal_syncs is not None else "-"
        print(f"| {f.setup} | {f.rate:,.0f} | {f.rate / base:.2f}x | {f.gateway_cpu_ms:.2f} | "
              f"{db_cpu} | {commits} | {syncs} |")
    pg = medians[-1]
    if pg.database_cpu_ms and pg.transactions is not None and pg.wal_syncs is not None:
        per_node = 2000 / pg.gateway_cpu_ms  # a 2-core node kept busy
        total = 4 * per_node
        print(f"\nProjection, four nodes of two cores each, CPU-bound at {per_node:,.0f} msg/s "
              f"per node ({total:,.0f} msg/s in all): the database would run "
              f"{total * pg.transactions:,.0f} transactions/s, "
              f"{total * pg.wal_syncs:,.0f} WAL syncs/s at most (fewer as group commit "
              f"merges more under load), and use {total * pg.database_cpu_ms / 1000:.1f} "
              "cores.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1200, help="messages per load")
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of")
    parser.add_argument("--size", choices=list(SIZES), default="1 KB")
    args = parser.parse_args()
    ensure_postfix_tools()
    scratch = Path(tempfile.mkdtemp(prefix="casegate-bench-nodes-"))
    try:
        results = run(scratch, SIZES[args.size], args.count, args.runs)
    except BenchError as exc:
        print(f"bench_nodes: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(results, args.size, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
