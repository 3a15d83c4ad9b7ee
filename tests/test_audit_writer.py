"""The audit store's writer thread: events awaited from the event loop, committed in batches."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import threading

import psycopg
import pytest

from gateway.audit.store import MAX_PARAMETERS
from gateway.audit.trail import AUDIT_DB_FILE, AuditLog, EventFilter, StoredEvent
from gateway.cli import main
from tests.auditdb import point_cli_at
from transports.database import Database

TASKS = 8
EACH = 20
WRITER_THREAD = "casegate-audit-writer"


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WRITER_THREAD]


async def record_from_tasks(log: AuditLog) -> dict[str, int]:
    """TASKS tasks each awaiting EACH events; decision id -> the seq its caller was given."""
    returned: dict[str, int] = {}

    async def one(task: int) -> None:
        for i in range(EACH):
            decision_id = f"t{task}-{i}"
            returned[decision_id] = await log.record_async(
                "relay", sender="a@cafcass.gov.uk", recipients=[f"p{task}@example.org"],
                case_numbers=["ZE26C00001"], decision_id=decision_id, stage="data",
            )

    await asyncio.gather(*(one(t) for t in range(TASKS)))
    return returned


async def test_awaited_events_survive_reopening_and_audit_verify_passes(
    database: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every awaited event is in the file after close and reopen; `audit verify` exits 0."""
    log = AuditLog.open(database, stream=io.StringIO())
    start = log.store.head()[0]
    returned = await record_from_tasks(log)
    log.close()

    assert sorted(returned.values()) == list(range(start + 1, start + TASKS * EACH + 1))
    reopened = AuditLog.open(database, stream=io.StringIO())
    for decision_id, seq in returned.items():
        stored = reopened.get(seq)
        assert stored is not None and stored.decision_id == decision_id
        assert stored.recipient_domains == ("example.org",)
    assert len(reopened.page(EventFilter(domain="example.org"), limit=1000)) == TASKS * EACH
    assert len(reopened.page(EventFilter(case_number="ZE26C00001"), limit=1000)) == TASKS * EACH
    reopened.close()
    point_cli_at(database, monkeypatch)
    assert main(["audit", "verify", "--data", str(database.data_dir)]) == 0
    assert "broken" not in capsys.readouterr().out


async def test_siem_lines_listeners_and_checkpoints_follow_the_chain_order(
    database: Database,
) -> None:
    """One SIEM line per event in sequence order, each listener call, a checkpoint every N."""
    stream = io.StringIO()
    log = AuditLog.open(database, stream=stream, checkpoint_every=16)
    heard: list[int] = []
    log.listeners.append(lambda event: heard.append(event.seq))
    returned = await record_from_tasks(log)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    relays = [line for line in lines if line["kind"] == "relay"]
    assert [line["seq"] for line in relays] == sorted(returned.values()) == heard
    assert {line["decision_id"]: line["seq"] for line in relays} == returned
    head = log.store.head()[0]
    assert [cp.seq for cp in log.store.checkpoints()] == list(range(16, head + 1, 16))
    assert log.verify() is None
    log.close()


class WriterHold:
    """Keeps the writer thread inside a listener, so that events recorded meanwhile queue up
    and are committed together as the next batch once `release_soon` lets it go."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._holding, self._release = threading.Event(), threading.Event()
        log.listeners.append(self._listen)

    def _listen(self, event: StoredEvent) -> None:
        if event.kind == "hold":
            self._holding.set()
            self._release.wait(timeout=30)

    async def hold(self) -> asyncio.Future[int]:
        """Records a "hold" event and returns once the writer is held (its seq to await)."""
        held = asyncio.ensure_future(self._log.record_async("hold"))
        assert await asyncio.to_thread(self._holding.wait, 30)
        return held

    def release_soon(self) -> None:
        """Lets the writer go after every task created so far has run up to its first await."""
        asyncio.get_running_loop().call_soon(self._release.set)


class Poison:
    """Another process makes the database refuse the event whose decision id is 'poison'."""

    def __init__(self, database: Database) -> None:
        self._database = database
        if database.is_sqlite:
            with contextlib.closing(sqlite3.connect(database.data_dir / AUDIT_DB_FILE)) as db:
                db.execute(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_event "
                    "WHEN NEW.decision_id = 'poison' BEGIN SELECT RAISE(ABORT, 'refused'); END")
                db.commit()
            return
        with psycopg.connect(database.url) as conn:
            conn.execute(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'refused' USING ERRCODE = 'integrity_constraint_violation'; "
                "END $$")
            conn.execute(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON audit_event FOR EACH ROW "
                "WHEN (NEW.decision_id = 'poison') EXECUTE FUNCTION refuse_poison()")

    def remove(self) -> None:
        if self._database.is_sqlite:
            with contextlib.closing(sqlite3.connect(self._database.data_dir / AUDIT_DB_FILE)) \
                    as db:
                db.execute("DROP TRIGGER refuse_poison")
                db.commit()
            return
        with psycopg.connect(self._database.url) as conn:
            conn.execute("DROP TRIGGER refuse_poison ON audit_event")


async def test_a_failed_commit_fails_every_caller_of_its_batch_and_stores_none(
    database: Database,
) -> None:
    """A batch the database refuses raises in each of its callers; nothing of it is stored."""
    log = AuditLog.open(database, stream=io.StringIO())
    writer = WriterHold(log)
    held = await writer.hold()
    before = log.store.head()[0]

    poison = Poison(database)
    names = ["innocent-1", "poison", "innocent-2", "innocent-3"]
    batch = [asyncio.ensure_future(log.record_async("relay", decision_id=n)) for n in names]
    writer.release_soon()
    outcomes = await asyncio.gather(*batch, return_exceptions=True)

    assert await held == before
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
    assert log.store.head()[0] == before
    poison.remove()
    assert await log.record_async("relay", decision_id="after") == before + 1
    assert log.verify() is None
    log.close()


async def test_a_batch_too_large_for_one_statement_is_stored_whole(database: Database) -> None:
    """More events queued than one statement takes (PostgreSQL inserts a batch in one
    statement up to MAX_PARAMETERS, the rest table by table): one commit, one chain."""
    log = AuditLog.open(database, stream=io.StringIO())
    batches = batches_of(log)
    writer = WriterHold(log)
    held = await writer.hold()
    count = MAX_PARAMETERS // 14 + 100
    waiting = [asyncio.ensure_future(log.record_async("relay", decision_id=f"d-{n}",
                                                     recipients=[f"p{n}@example.org"],
                                                     case_numbers=["ZE26C00001"]))
               for n in range(count)]
    writer.release_soon()
    seqs = await asyncio.gather(*waiting)
    assert seqs == list(range(await held + 1, await held + 1 + count))
    assert [len(batch) for batch in batches][-1] == count  # one commit
    assert log.verify() is None
    assert len(log.page(EventFilter(domain="example.org"), limit=count + 1)) == count
    log.close()


async def test_a_cancelled_caller_leaves_the_rest_of_its_batch_answered(database: Database) -> None:
    """A task cancelled while waiting does not disturb the others; its event is still stored."""
    log = AuditLog.open(database, stream=io.StringIO())
    writer = WriterHold(log)
    held = await writer.hold()
    batch = [asyncio.ensure_future(log.record_async("relay", decision_id=f"d-{i}"))
             for i in range(3)]
    asyncio.get_running_loop().call_soon(batch[1].cancel)  # once it has queued its event
    writer.release_soon()  # the answers reach the loop only after the cancel
    outcomes = await asyncio.gather(*batch, return_exceptions=True)

    first = await held
    assert outcomes[0] == first + 1 and outcomes[2] == first + 3
    assert isinstance(outcomes[1], asyncio.CancelledError)
    stored = log.get(first + 2)
    assert stored is not None and stored.decision_id == "d-1"
    assert log.verify() is None
    log.close()


async def test_an_event_stream_that_cannot_be_written_fails_the_callers(database: Database) -> None:
    """When the SIEM line cannot be written the awaiting caller raises (fails closed)."""
    stream = io.StringIO()
    log = AuditLog.open(database, stream=stream)
    stream.close()
    with pytest.raises(ValueError, match="closed file"):
        await log.record_async("relay", decision_id="d-1")
    log.close()


async def test_close_commits_what_is_queued_then_stops_the_writer(database: Database) -> None:
    """close() stores events already queued, answers their callers and leaves no thread."""
    log = AuditLog.open(database, stream=io.StringIO())
    assert len(writer_threads()) == 1  # started by the first append (the key-created events)
    pending = [asyncio.ensure_future(log.record_async("relay", decision_id=f"d-{i}"))
               for i in range(5)]
    asyncio.get_running_loop().call_soon(log.close)  # after every task above has queued
    seqs = await asyncio.gather(*pending)

    assert writer_threads() == []
    with pytest.raises(sqlite3.ProgrammingError):
        await log.record_async("relay")
    with pytest.raises(sqlite3.ProgrammingError):
        log.record("relay")
    reopened = AuditLog.open(database, stream=io.StringIO())
    assert [reopened.get(s).decision_id for s in seqs] == [f"d-{i}" for i in range(5)]  # type: ignore[union-attr]
    reopened.close()


def test_sync_record_and_a_listener_that_records_is_refused(database: Database) -> None:
    """record() still returns a committed seq; a listener may not record (it would deadlock)."""
    log = AuditLog.open(database, stream=io.StringIO())
    refused: list[Exception] = []

    def records(event: StoredEvent) -> None:
        if event.kind == "relay":
            try:
                log.record("nested")
            except RuntimeError as exc:
                refused.append(exc)

    log.listeners.append(records)
    seq = log.record("relay", decision_id="d-1")
    assert log.get(seq) is not None and log.get(seq).decision_id == "d-1"  # type: ignore[union-attr]
    assert len(refused) == 1 and log.store.head()[0] == seq
    log.close()
    assert writer_threads() == []


# ---- group commits --------------------------------------------------------------------------

LONG = 60.0  # a commit delay no test waits out: each returns when the events it expects are in


class Companions:
    """A `group_commits` hook that answers `count` and says when the writer has asked it."""

    def __init__(self, count: int | Exception) -> None:
        self.count = count
        self.asked = threading.Event()

    def __call__(self) -> int:
        self.asked.set()
        if isinstance(self.count, Exception):
            raise self.count
        return self.count


def batches_of(log: AuditLog) -> list[list[str]]:
    """The decision ids of each committed batch, as the writer commits them."""
    batches: list[list[str]] = []
    published = log.store.after_commit
    assert published is not None

    def after_commit(appended: list[tuple[StoredEvent, bytes]]) -> None:
        batches.append([event.decision_id for event, _ in appended])
        published(appended)

    log.store.after_commit = after_commit
    return batches


async def test_with_companions_in_flight_one_commit_serves_their_events(database: Database) -> None:
    """The writer waits for the event a companion is about to record and commits both."""
    log = AuditLog.open(database, stream=io.StringIO())
    batches = batches_of(log)
    hook = Companions(1)
    log.store.group_commits(hook, delay=LONG)
    first = asyncio.ensure_future(log.record_async("relay", decision_id="first"))
    assert await asyncio.to_thread(hook.asked.wait, 30)  # the writer holds "first" back
    assert not first.done()
    second = await asyncio.wait_for(log.record_async("relay", decision_id="second"), 30)

    assert await first == second - 1
    assert batches == [["first", "second"]]
    log.close()


@pytest.mark.parametrize("hook", [Companions(0), Companions(-3), Companions(RuntimeError("x")),
                                  None])
async def test_alone_an_event_is_committed_at_once(database: Database,
                                                   hook: Companions | None) -> None:
    """No companion (or a hook that fails, or none): nothing to wait for."""
    log = AuditLog.open(database, stream=io.StringIO())
    batches = batches_of(log)
    log.store.group_commits(hook, delay=LONG)
    await asyncio.wait_for(log.record_async("relay", decision_id="alone"), 30)
    assert batches == [["alone"]]
    log.close()


async def test_close_commits_an_event_held_for_companions_at_once(database: Database) -> None:
    log = AuditLog.open(database, stream=io.StringIO())
    hook = Companions(5)
    log.store.group_commits(hook, delay=LONG)
    held = asyncio.ensure_future(log.record_async("relay", decision_id="held"))
    assert await asyncio.to_thread(hook.asked.wait, 30)
    await asyncio.wait_for(asyncio.to_thread(log.close), 30)
    seq = await held
    reopened = AuditLog.open(database, stream=io.StringIO())
    assert reopened.get(seq).decision_id == "held"  # type: ignore[union-attr]
    reopened.close()


async def test_a_caller_blocked_in_record_is_not_kept_waiting(database: Database) -> None:
    """`record` blocks its thread (a web handler's may be the event loop's): no delay."""
    log = AuditLog.open(database, stream=io.StringIO())
    batches = batches_of(log)
    log.store.group_commits(Companions(3), delay=LONG)
    await asyncio.wait_for(asyncio.to_thread(log.record, "relay", decision_id="blocked"), 30)
    assert batches == [["blocked"]]
    log.close()


async def test_a_blocked_caller_arriving_while_the_writer_waits_ends_the_wait(
        database: Database) -> None:
    log = AuditLog.open(database, stream=io.StringIO())
    batches = batches_of(log)
    hook = Companions(5)
    log.store.group_commits(hook, delay=LONG)
    held = asyncio.ensure_future(log.record_async("relay", decision_id="held"))
    assert await asyncio.to_thread(hook.asked.wait, 30)
    await asyncio.wait_for(asyncio.to_thread(log.record, "relay", decision_id="blocked"), 30)
    await held
    assert batches == [["held", "blocked"]]
    log.close()
