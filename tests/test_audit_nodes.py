"""Several gateway nodes on one PostgreSQL database (issue 15): one hash chain with one sequence,
group-committed by each node; each event names its node; `audit verify` checks the chain whole;
each node's head file anchors what it committed, and other nodes appending after it is not a
rollback."""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.audit.keys import HMAC_KEY_FILE, SIGNING_KEY_FILE, AuditKeyError
from gateway.audit.trail import AuditLog
from gateway.cli import main
from tests.auditdb import point_cli_at, tamper
from transports.database import Database, DatabaseSettings

EACH = 500  # events per node
THREADS = 4  # callers per node (a node's writer groups their events into one commit)


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[Database, Database]]:
    """Two nodes, "one" and "two", each with its own data directory, on one database."""
    one = Database.open(tmp_path / "one", DatabaseSettings(url=pg_url, node="one"))
    two = Database.open(tmp_path / "two", DatabaseSettings(url=pg_url, node="two"))
    try:
        yield one, two
    finally:
        one.close()
        two.close()


def share_keys(first: Database, second: Database) -> None:
    """What the operator does: the second node gets the first node's audit keys."""
    second.data_dir.mkdir(mode=0o700, exist_ok=True)
    for name in (HMAC_KEY_FILE, SIGNING_KEY_FILE):
        shutil.copy2(first.data_dir / name, second.data_dir / name)


def open_both(one: Database, two: Database, **options: int) -> tuple[AuditLog, AuditLog]:
    first = AuditLog.open(one, stream=io.StringIO(), **options)  # makes the keys: events 1, 2
    share_keys(one, two)
    return first, AuditLog.open(two, stream=io.StringIO(), **options)


def record_from_threads(log: AuditLog, go: threading.Barrier, returned: list[int]) -> None:
    """EACH events from THREADS threads at once; their seqs appended to `returned`."""
    guard = threading.Lock()

    def write(thread: int) -> None:
        go.wait()
        for i in range(EACH // THREADS):
            seq = log.record("relay", sender="jo@cafcass.gov.uk",
                             recipients=[f"p{thread}-{i}@example.org"],
                             case_numbers=["ZE26C00001"], decision_id=f"{thread}-{i}")
            with guard:
                returned.append(seq)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_two_nodes_writing_at_once_make_one_chain(
    nodes: tuple[Database, Database], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 x 500 events from two nodes at once: consecutive seqs, no gap or duplicate, one chain
    that verifies whole, each event naming its node, one checkpoint per 100 events."""
    one, two = nodes
    first, second = open_both(one, two, checkpoint_every=100)
    go = threading.Barrier(2 * THREADS)
    seqs: dict[str, list[int]] = {"one": [], "two": []}
    writers = [threading.Thread(target=record_from_threads, args=(log, go, seqs[name]))
               for name, log in (("one", first), ("two", second))]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    returned = seqs["one"] + seqs["two"]
    assert sorted(returned) == list(range(3, 3 + 2 * EACH))  # no gap, no duplicate
    assert min(seqs["one"]) < max(seqs["two"]) and min(seqs["two"]) < max(seqs["one"])
    assert first.store.head() == second.store.head()
    assert first.store.head()[0] == 2 + 2 * EACH
    for name, log in (("one", first), ("two", second)):
        for seq in seqs[name][:20]:
            event = log.get(seq)
            assert event is not None and event.node == name
    assert first.store.nodes() == {"one": 2 + EACH, "two": EACH}
    assert first.verify() is None and second.verify() is None
    assert [cp.seq for cp in first.store.checkpoints()] == list(range(100, 2 * EACH + 1, 100))
    assert first.anchor_problems() == [] and second.anchor_problems() == []
    first.close()
    second.close()

    point_cli_at(one, monkeypatch)
    code = main(["audit", "verify", "--data", str(one.data_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"intact: {2 + 2 * EACH} events" in out
    assert f"Events by node: one {2 + EACH}, two {EACH}." in out

    forged = seqs["two"][7]  # an event node two wrote, said to be node one's
    tamper(one, f"UPDATE audit_event SET node = 'one' WHERE seq = {forged}")
    code = main(["audit", "verify", "--data", str(one.data_dir)])
    out = capsys.readouterr().out
    assert code == 1 and f"first broken sequence number: {forged}" in out


def test_a_head_file_accepts_other_nodes_appending_but_not_truncation_or_rollback(
    nodes: tuple[Database, Database],
) -> None:
    """Node one's head file anchors its last commit; node two appends after it: no problem at
    node one's next start. Fewer events than anchored, or another mac at the anchored seq,
    is still refused."""
    one, two = nodes
    first, second = open_both(one, two)
    anchored = first.record("login", sender="jo@cafcass.gov.uk")
    first.close()
    for _ in range(5):
        second.record("login", sender="sam@cafcass.gov.uk")
    second.close()

    again = AuditLog.open(one, stream=io.StringIO())
    assert again.anchor_problems() == []
    assert again.store.head()[0] == anchored + 5
    again.close()

    with psycopg.connect(one.url) as conn:  # another mac at the anchored seq, chain left whole
        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
        conn.execute("UPDATE audit_event SET mac = decode(repeat('ab', 32), 'hex') "
                     "WHERE seq = %s", (anchored,))
        conn.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only")
    rolled = AuditLog.open(one, stream=io.StringIO())
    problems = rolled.anchor_problems()
    rolled.close()
    assert [seq for seq, _ in problems] == [anchored]
    assert "disagrees with" in problems[0][1]

    tamper(one, *(f"DELETE FROM {table} WHERE seq >= {anchored}"
                  for table in ("audit_event", "audit_domain", "audit_case")))
    cut = AuditLog.open(one, stream=io.StringIO())
    problems = cut.anchor_problems()
    cut.close()
    assert [seq for seq, _ in problems] == [anchored]
    assert f"holds {anchored - 1} events" in problems[0][1] and "cut short" in problems[0][1]


def test_a_node_without_the_keys_or_with_other_keys_is_refused(
    nodes: tuple[Database, Database], tmp_path: Path
) -> None:
    """A second node never makes keys of its own for a trail that exists, and one given
    other keys is refused (one sentence), so the chain is never forked by key."""
    one, two = nodes
    AuditLog.open(one, stream=io.StringIO()).close()
    with pytest.raises(AuditKeyError, match="holds 2 chained events"):
        AuditLog.open(two, stream=io.StringIO())
    assert not (two.data_dir / HMAC_KEY_FILE).exists()
    elsewhere = Database.open(tmp_path / "elsewhere")  # a trail of its own: other keys
    AuditLog.open(elsewhere, stream=io.StringIO()).close()
    share_keys(elsewhere, two)
    with pytest.raises(AuditKeyError, match="not the key"):
        AuditLog.open(two, stream=io.StringIO())
