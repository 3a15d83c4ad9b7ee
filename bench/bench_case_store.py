"""The case registry's store at the size issue 16 asks for: 100,000 people, 10,000 details.

Run: .venv/bin/python bench/bench_case_store.py [--people N] [--details N] [--runs N]
         [--database-url postgresql://...]   (default: SQLite in a temporary directory)

Prints
- the time to record one person or detail through the public API (each its own committed
  transaction, as `casegate case person` and the staff pages do), median of 200;
- the time `CaseStore.index()` takes to read every entry and build the CaseIndex after a change
  (what the first message after a change waits for, in the stores' thread), median of N;
- the time of `index()` and `cached()` while nothing changed (every other message);
- the size of the database file (on PostgreSQL: of the three tables with their indexes).

On PostgreSQL the store's tables must not exist yet: give a URL onto an empty database or
schema (`?options=-c%20search_path%3Dname`).

Filling 110,000 rows one committed transaction each would take minutes of fsyncs, so the bulk
is written through the public `add_person`/`add_detail` inside one transaction
(`CaseStore.bulk`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.cases import DetailKind, PersonRole, RecordKey
from transports.database import Database, DatabaseSettings
from verification.cases import CASES_DB_FILE, CaseStore

STAFF = "jo.bloggs@cafcass.gov.uk"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
FIRST = ["Ellie", "Oliver", "Amelia", "Noah", "Isla", "George", "Ava", "Leo", "Mia", "Arthur",
         "Freya", "Oscar", "Lily", "Harry", "Grace", "Jack", "Sophie", "Charlie", "Ruby", "Alfie"]
LAST = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
        "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green"]
STREETS = ["Larkspur Close", "Church Lane", "Station Road", "Mill Street", "Park Avenue"]


def case_number(i: int) -> str:
    return f"ZC{i % 90 + 10:02d}C{i:05d}"


def person(store: CaseStore, rng: random.Random, i: int) -> None:
    store.add_person(
        case_number(i // 3), name=f"{rng.choice(FIRST)} {rng.choice(LAST)}-{i}",
        role=rng.choice(list(PersonRole)),
        date_of_birth=date(2005 + i % 19, 1 + i % 12, 1 + i % 28) if i % 2 else None,
        by=STAFF, now=NOW)


def detail(store: CaseStore, rng: random.Random, i: int) -> None:
    store.add_detail(
        case_number(i * 7), text=f"{i} {rng.choice(STREETS)}, Leeds LS{1 + i % 28} {i % 9}AB",
        kind=rng.choice(list(DetailKind)), may_go_to=["solicitor@lawfirm.co.uk"], by=STAFF,
        now=NOW)


def median_ms(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--details", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default="",
                        help="a PostgreSQL URL (default: SQLite in a temporary directory)")
    args = parser.parse_args()
    rng = random.Random(16)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / CASES_DB_FILE
        database = Database.open(Path(directory), DatabaseSettings(url=args.database_url))
        store = CaseStore(database, RecordKey(bytes(range(32))))
        try:
            counter = iter(range(10**9))
            one_person = median_ms(lambda: person(store, rng, next(counter)), 200)
            one_detail = median_ms(lambda: detail(store, rng, next(counter)), 200)
            start = time.perf_counter()
            with store.bulk():
                for i in range(args.people):
                    person(store, rng, 10**6 + i)
                for i in range(args.details):
                    detail(store, rng, 10**6 + i)
            filled = time.perf_counter() - start
            people, details = args.people + 200, args.details + 200

            def rebuilt() -> None:
                store._index = None  # as after any write
                store.index()

            rebuild = median_ms(rebuilt, args.runs)
            store.index()
            kept = median_ms(store.index, 1000)
            cached = median_ms(store.cached, 1000)
            probe = store.index().match(["Nothing to see here, from Ellie in payroll."])
            size = 0 if database.is_sqlite else int(store._db.execute(
                "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(ARRAY["
                "'case_people', 'case_details', 'case_shields']) AS t").fetchone()[0])
        finally:
            store.close()  # checkpoints the WAL into the database file
            database.close()
        size = size or path.stat().st_size
    print(f"engine {database.engine}")
    print(f"people {people:,}, confidential details {details:,}")
    print(f"record one person (committed)      {one_person:8.2f} ms  (median of 200)")
    print(f"record one detail (committed)      {one_detail:8.2f} ms  (median of 200)")
    print(f"fill in one transaction            {filled:8.1f} s")
    print(f"index() after a change (rebuild)   {rebuild:8.0f} ms  (median of {args.runs})")
    print(f"index() while unchanged            {kept * 1000:8.1f} us  (median of 1000)")
    print(f"cached() while unchanged           {cached * 1000:8.1f} us  (median of 1000)")
    print(f"database size                      {size / 1e6:8.1f} MB")
    print(f"first name alone matched nobody    {not probe}")


if __name__ == "__main__":
    main()
