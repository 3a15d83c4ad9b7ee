"""Audit trail benchmark: append throughput, filtered queries and the governance page over one
million stored events, each beside a baseline.

    .venv/bin/python bench/bench_audit.py [--events 1000000] [--appends 2000]

Figures printed (median of several runs where it makes sense):
- append: AuditLog.record (HMAC chain, side tables, fsync per event, SIEM line) against a plain
  SQLite INSERT of the same row, one transaction each, same durability settings;
- query: filtered keyset pages of 50 against the cheapest page (the newest 50, no filter);
- page: GET /governance (filters, chart and table) over a real socket against GET /login;
- verify: the whole chain checked, in events per second.
The million events are written with executemany (a valid chain, computed in bulk) so the whole
run stays within a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import io
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.app import read_policy
from gateway.audit.keys import load_or_create_hmac_key
from gateway.audit.store import GENESIS_MAC, _event_row, canonical_json
from gateway.audit.trail import AUDIT_DB_FILE, AuditLog, EventFilter, format_time
from gateway.config import Config
from gateway.stores.users import UserRole, UserStore
from gateway.web.auth import AUTH, SESSION_COOKIE
from gateway.web.pages import WebDeps
from gateway.web.staff import install
from transports.database import Database

RULES = [
    "personal-address", "unverified-recipient", "editable-document", "lookalike-domain",
    "other-case-information", "fax", "invalid-address", "multiple-external",
]
GOVERNANCE = "gov.lead@cafcass.gov.uk"


def timed(fn: Callable[[], object], repeat: int = 7) -> float:
    """Median seconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_append(directory: Path, count: int) -> None:
    audit = AuditLog.open(Database.open(directory / "append"), stream=io.StringIO(),
                          checkpoint_every=1000)
    start = time.perf_counter()
    for i in range(count):
        audit.record("refusal", rule="personal-address", sender="jo.bloggs@cafcass.gov.uk",
                     recipients=[f"parent{i}@gmail.com"], case_numbers=["ZE26C00001"],
                     decision_id=f"d-{i}", stage="rcpt")
    chained = count / (time.perf_counter() - start)
    audit.close()

    db = sqlite3.connect(directory / "plain.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE plain (seq INTEGER PRIMARY KEY, time TEXT, kind TEXT, rule TEXT, "
               "sender TEXT, recipients TEXT)")
    start = time.perf_counter()
    for i in range(count):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO plain VALUES (NULL, ?, ?, ?, ?, ?)",
                   (format_time(datetime.now(UTC)), "refusal", "personal-address",
                    "jo.bloggs@cafcass.gov.uk", f'["parent{i}@gmail.com"]'))
        db.execute("COMMIT")
    plain = count / (time.perf_counter() - start)
    db.close()
    print(f"append: {chained:,.0f} events/s chained vs {plain:,.0f} rows/s plain insert "
          f"(chained/plain {chained / plain:.2f}; both wait for one fsync per event)")


def build_million(directory: Path, total: int) -> float:
    """Write `total` chained events in bulk; returns seconds taken."""
    start = time.perf_counter()
    key, _ = load_or_create_hmac_key(directory)
    AuditLog.open(Database.open(directory), key=key, stream=io.StringIO()).close()  # schema only
    rng = random.Random(6)
    db = sqlite3.connect(directory / AUDIT_DB_FILE, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    head = db.execute("SELECT seq, mac FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()
    seq, previous = (head[0], head[1]) if head else (0, GENESIS_MAC)
    first_time = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / total
    db.execute("BEGIN")
    batch: list[tuple[object, ...]] = []
    domains: list[tuple[str, int]] = []
    cases: list[tuple[str, int]] = []
    for i in range(total):
        seq += 1
        refused = rng.random() < 0.3
        rule = rng.choice(RULES) if refused else ""
        domain = f"domain{rng.randrange(2000)}.example"
        case = f"ZE{rng.randrange(50_000):08d}"
        event = {
            "seq": seq,
            "time": format_time(first_time + step * i),
            "kind": "refusal" if refused else "decision",
            "grade": rng.choice(("low", "medium", "high")) if refused else "none",
            "rule": rule,
            "citation": "IA 3.2" if refused else "",
            "sender": f"staff{rng.randrange(500)}@cafcass.gov.uk",
            "recipients": [f"someone{i}@{domain}"],
            "recipient_domains": [domain],
            "case_numbers": [case],
            "decision_id": f"d{seq}",
            "metadata": {"stage": "data", "size": 4096},
        }
        previous = hmac.new(key, previous + canonical_json(event), hashlib.sha256).digest()
        batch.append((*_event_row(event), previous))
        domains.append((domain, seq))
        cases.append((case, seq))
        if len(batch) == 50_000:
            _flush(db, batch, domains, cases)
    _flush(db, batch, domains, cases)
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - start


def _flush(db: sqlite3.Connection, batch: list[tuple[object, ...]],
           domains: list[tuple[str, int]], cases: list[tuple[str, int]]) -> None:
    db.executemany("INSERT INTO audit_event (seq, time, kind, grade, rule, citation, sender, "
                   "recipients, recipient_domains, case_numbers, decision_id, metadata, node, "
                   "mac) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
    db.executemany("INSERT INTO audit_domain VALUES (?, ?)", domains)
    db.executemany("INSERT INTO audit_case VALUES (?, ?)", cases)
    batch.clear()
    domains.clear()
    cases.clear()


def bench_queries(audit: AuditLog) -> None:
    baseline = timed(lambda: audit.page(EventFilter(), limit=50))
    middle = audit.store.head()[0] // 2
    month_ago = format_time(datetime.now(UTC) - timedelta(days=30))
    cases = {
        "sender": EventFilter(sender="staff42@cafcass.gov.uk"),
        "recipient domain": EventFilter(domain="domain7.example"),
        "case number": EventFilter(case_number="ZE00001234"),
        "rule + grade": EventFilter(rule="personal-address", grade="high"),
        "last 30 days, high": EventFilter(since=month_ago, grade="high"),
        "sender + domain": EventFilter(sender="staff42@cafcass.gov.uk", domain="domain7.example"),
    }
    print(f"query baseline (newest 50, no filter): {baseline * 1000:.2f} ms")
    for name, flt in cases.items():
        seconds = timed(lambda flt=flt: audit.page(flt, limit=50))
        deep = timed(lambda flt=flt: audit.page(flt, before=middle, limit=50))
        print(f"query {name}: {seconds * 1000:.2f} ms (page at seq {middle}: "
              f"{deep * 1000:.2f} ms; ratio {seconds / baseline:.1f}x baseline)")


async def bench_page(directory: Path, audit: AuditLog) -> None:
    database = Database.open(directory)
    users = UserStore(database)
    users.add(GOVERNANCE, "correct horse battery", roles=(UserRole.GOVERNANCE,))
    app = web.Application()
    policy = read_policy(Config(), Path("."))
    audit.rules = policy.rules
    install(app, WebDeps(audit=audit, users=users, database=database))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = app[AUTH].sessions.create(GOVERNANCE)
    headers = {"Cookie": f"{SESSION_COOKIE}={token}"}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}",
                                         timeout=aiohttp.ClientTimeout(total=30)) as client:

            async def median(path: str, params: dict[str, str]) -> float:
                samples = []
                for _ in range(7):
                    start = time.perf_counter()
                    async with client.get(path, params=params, headers=headers) as answer:
                        assert answer.status == 200, answer.status
                        await answer.read()
                    samples.append(time.perf_counter() - start)
                return statistics.median(samples)

            baseline = await median("/login", {})
            print(f"page baseline GET /login: {baseline * 1000:.1f} ms")
            for params in ({}, {"rule": "personal-address"}, {"domain": "domain7.example"},
                           {"grade": "high", "sender": "staff42@cafcass.gov.uk"}):
                seconds = await median("/governance", params)
                print(f"page GET /governance {params or '(no filter)'}: {seconds * 1000:.1f} ms "
                      f"(ratio {seconds / baseline:.1f}x)")
    finally:
        await runner.cleanup()
        users.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        bench_append(directory, args.appends)
        data = directory / "million"
        data.mkdir()
        built = build_million(data, args.events)
        print(f"built {args.events:,} chained events in {built:.1f} s")
        audit = AuditLog.open(Database.open(data), stream=io.StringIO())
        bench_queries(audit)
        asyncio.run(bench_page(data, audit))
        start = time.perf_counter()
        broken = audit.verify()
        seconds = time.perf_counter() - start
        assert broken is None, broken
        print(f"verify: {args.events:,} events in {seconds:.1f} s "
              f"({args.events / seconds:,.0f} events/s)")
        audit.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
