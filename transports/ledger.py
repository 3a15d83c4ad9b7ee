"""The idempotency ledger: which recipients of which copy the way out has already accepted.

casegate holds no queue: on any trouble the client keeps the message and retries. When a retry
follows a partial success (copy 1 accepted upstream, copy 2 refused for now), or follows an
acceptance whose 250 never reached the client, the ledger lets the transport skip what was
already handed over, so nobody receives the same copy twice. Entries are kept for a while
(`upstream.remember_days`, default 7 days, longer than any client's retry schedule) and then
pruned.

An acceptance is written down in two places, for two reasons:

1. **The acceptance journal**, at the moment the upstream's 250 arrives: one line appended to a
   plain file beside the ledger (`<ledger>.journal.*`), with `os.write` from the event loop's
   own thread, before anything else is awaited or can fail. A write that returned is in the
   kernel, so it survives the gateway being killed (`kill -9`, the OOM killer, a crash); the
   file is then fsync'd (in a thread, one fsync for every line written meanwhile) before the
   client is answered, so it survives a power cut too once the client has its 250. The journal
   takes no SQLite lock: a ledger that is locked, slow or broken cannot delay or lose it.
2. **The SQLite ledger** (WAL mode), the indexed copy a retry looks the key up in. Journal lines
   are folded into it in the background, many in one transaction; until a line is folded the
   ledger answers from memory. At start-up every journal file left by the last run is folded
   in before the first delivery, and deleted once the ledger is checkpointed (durable); at a
   clean close, once everything is folded, the ledger is checkpointed and the journal deleted.

A journal file is closed when it grows past `JOURNAL_ROTATE_BYTES` and deleted once everything
in it is folded and checkpointed, so the journal stays small however long the gateway runs.

Nothing written after the copy left can turn a delivery into a failure: a journal or ledger
that cannot be written is logged and reported to `on_fault` (the gateway raises an alert), and
the delivery still counts as DELIVERED. Times are stored as UTC seconds since the epoch and are
always passed in: the ledger never reads the clock. Reads and SQLite writes run in a
`StoreWorker`'s thread, one at a time in the order they were asked for.

**On PostgreSQL** (issue 15) the ledger is shared by every node, so that a client retrying
through another node after a failure is not delivered to twice; a journal file on one node is
invisible to the others. There the acceptance is committed to the shared table before the
client is answered: `settle` waits for the fold of what was noted (one multi-row
`INSERT ... ON CONFLICT DO UPDATE`, autocommit, shared by the deliveries settling at the same
moment) instead of for the fsync. A failure to commit it, or no commit within
`SETTLE_TIMEOUT`, is treated as a journal failure is on SQLite: reported to `on_fault`, the
delivery still DELIVERED (the journal is then fsync'd, so this node's next start folds it in,
and the fold keeps trying meanwhile). The journal line is still written (`os.write`, no fsync
while the database answers): a gateway process killed between the upstream's 250 and the
commit leaves it behind, and the node's next start folds it into the shared table.
"Already being handed over" is shared as well: a row in `relay_in_flight` per copy key, with
a lease (`IN_FLIGHT_LEASE`, renewed while the hand-over lasts, measured by the database
server's clock) that a retry through another node finds and answers 4xx (BUSY). The row is
deleted in the statement that commits the acceptance (or after a hand-over that failed), and
expires with a node that died holding it; a copy whose recipients are all accepted is answered
from the table whoever holds it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from transports.base import Copy, DeliveryResult, Outcome, Problem
from transports.database import Connection, Database, migrate
from transports.worker import StoreWorker, WorkerClosed

DEFAULT_RETENTION = timedelta(days=7)
PRUNE_EVERY = timedelta(minutes=1)  # expired entries may outlive their retention by this much
JOURNAL_ROTATE_BYTES = 1 << 20  # a journal file this large is closed and a new one begun
# PostgreSQL: how long a node's "being handed over" row holds off the other nodes' retries of
# that copy unless renewed (every third of it while the hand-over lasts); a node that dies
# holding one blocks that copy's retries this long at most.
IN_FLIGHT_LEASE = timedelta(seconds=60)
# PostgreSQL: how long the client's 250 waits for the acceptance's commit; past it, as when
# the commit fails, the delivery still counts (the copy left), the fault is reported, and the
# acceptance is fsync'd in this node's journal instead.
SETTLE_TIMEOUT = timedelta(seconds=10)
ROWS_PER_STATEMENT = 500  # PostgreSQL: acceptances per INSERT (3 parameters each)
COMPONENT = "ledger"

log = structlog.get_logger("casegate.ledger")

# Hands one copy to its recipients (those not yet accepted) and says how it went.
HandOver = Callable[[Copy, tuple[str, ...]], Awaitable[DeliveryResult]]
# Told of every failure to write down an acceptance (the gateway raises an alert).
FaultReporter = Callable[[str], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    copy_key    TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    PRIMARY KEY (copy_key, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS accepted_by_time ON accepted (accepted_at);
"""
# PostgreSQL only: the copies some node is handing over now (on SQLite, one process per file,
# a set in memory does). `holder` names the node's ledger; `expires_at` is the server's clock.
_IN_FLIGHT = """
CREATE TABLE IF NOT EXISTS relay_in_flight (
    copy_key   TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
"""
# Version 1 on each engine (a data directory of the last release has the table without a
# version row: CREATE ... IF NOT EXISTS finds it).
MIGRATIONS_SQLITE = (_SCHEMA,)
MIGRATIONS_POSTGRESQL = (_SCHEMA + _IN_FLIGHT,)

_UPSERT = ("INSERT INTO accepted (copy_key, recipient, accepted_at) VALUES {values} "
           "ON CONFLICT (copy_key, recipient) DO UPDATE SET accepted_at = excluded.accepted_at")
# relay_in_flight (PostgreSQL), its times by the database server's clock: UTC seconds.
_CLAIM = ("INSERT INTO relay_in_flight (copy_key, holder, expires_at) "
          "VALUES (?, ?, extract(epoch from clock_timestamp())::float8 + ?) "
          "ON CONFLICT (copy_key) DO UPDATE SET holder = excluded.holder, "
          "expires_at = excluded.expires_at "
          "WHERE relay_in_flight.expires_at < extract(epoch from clock_timestamp())::float8 "
          "RETURNING holder")
_RENEW = ("UPDATE relay_in_flight SET expires_at = extract(epoch from clock_timestamp())::float8 "
          "+ ? WHERE holder = ?")
_FORGET_EXPIRED = ("DELETE FROM relay_in_flight "
                   "WHERE expires_at < extract(epoch from clock_timestamp())::float8")


class LedgerError(Exception):
    """The ledger could not be read or written; the caller must not guess."""


@dataclass(frozen=True)
class _Entry:
    """One journalled acceptance, and the journal file (generation) that holds it."""

    key: str
    recipient: str
    moment: float
    generation: int
    number: int  # counts the acceptances noted by this ledger, from 1


class Journal:
    """The append-only acceptance journal: files `<name>.journal.<writer>.<n>` in `directory`
    (`writer`: this process and a random tag; `n` counts its files), one JSON line per
    acceptance (`{"k": copy key, "r": [recipients], "t": UTC seconds}`).

    Each writer holds an exclusive `flock` on the file it is writing, so another process that
    opens the same ledger (a CLI command while the gateway runs) folds in and deletes only the
    files whose writer is gone (killed, or closed without folding), never a live one."""

    def __init__(self, directory: Path, name: str) -> None:
        self._directory = directory
        self._prefix = f"{name}.journal."
        self._writer = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._fd: int | None = None
        self.generation = 0
        self.size = 0
        self._dirty = False  # written since the last fsync
        self._syncing: asyncio.Future[None] | None = None

    def path(self, generation: int) -> Path:
        """The file of this writer's `generation`."""
        return self._directory / f"{self._prefix}{self._writer}.{generation}"

    def orphans(self) -> list[tuple[Path, int]]:
        """Every journal file whose writer is gone, each opened and locked (fd) for folding."""
        found = []
        for path in sorted(self._directory.glob(self._prefix + "*")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # folded by another process meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer is alive
                os.close(fd)
                continue
            found.append((path, fd))
        return found

    @staticmethod
    def read(files: Sequence[tuple[Path, int]]) -> list[tuple[str, str, float]]:
        """Every acceptance in `files` (a line cut short by a crash is skipped)."""
        rows: list[tuple[str, str, float]] = []
        for path, _ in files:
            for line in path.read_bytes().split(b"\n"):
                try:
                    item = json.loads(line)
                    rows.extend((str(item["k"]), str(r), float(item["t"])) for r in item["r"])
                except (ValueError, KeyError, TypeError):
                    continue  # empty, or torn by a crash in the middle of a write
        return rows

    def begin(self) -> None:
        """Open this writer's first file (locked while it is written)."""
        self.generation = 1
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path(self.generation), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
        self._fd = fd
        self.size = 0

    def append(self, key: str, recipients: Sequence[str], moment: float) -> None:
        """One line, written at once with `os.write` (raises OSError)."""
        if self._fd is None:
            raise OSError("the acceptance journal is closed")
        line = json.dumps({"k": key, "r": list(recipients), "t": moment},
                          separators=(",", ":")).encode("utf-8") + b"\n"
        written = os.write(self._fd, line)
        self.size += written
        self._dirty = True
        if written != len(line):
            raise OSError(f"short write to the acceptance journal ({written} of {len(line)})")

    async def sync(self) -> None:
        """fsync the current file (raises OSError); calls made meanwhile share one fsync."""
        while self._dirty:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._fsync())
            syncing = self._syncing
            try:
                await asyncio.shield(syncing)
            finally:
                if self._syncing is syncing:
                    self._syncing = None

    async def _fsync(self) -> None:
        fd = self._fd
        self._dirty = False
        if fd is not None:
            try:
                await asyncio.to_thread(os.fsync, fd)
            except BaseException:
                self._dirty = True
                raise

    def rotate(self) -> int:
        """Close the current file and begin the next; returns the closed one's generation."""
        closed = self.generation
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.generation += 1
        self._open()
        return closed

    def remove(self, generation: int) -> None:
        self.path(generation).unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Ledger:
    """(copy key, recipient) pairs that were accepted, and when."""

    def __init__(self, database: Database, filename: str, *,
                 retention: timedelta = DEFAULT_RETENTION,
                 worker: StoreWorker | None = None,
                 rotate_bytes: int = JOURNAL_ROTATE_BYTES,
                 lease: timedelta = IN_FLIGHT_LEASE,
                 settle_timeout: timedelta = SETTLE_TIMEOUT) -> None:
        """Open (creating if needed) the ledger `filename` of `database` (on SQLite the file in
        its data directory; the journal files are there on either engine) and fold in the
        acceptance journal the last run left; entries older than `retention` are pruned as new
        ones are recorded. `worker` runs the async calls (shared with other stores, its trips
        between threads serve them all); by default one of its own. PostgreSQL: `lease` is how
        long a claim in relay_in_flight holds unless renewed; `settle_timeout` how long the
        client's 250 waits for the acceptance's commit at most."""
        path = database.data_dir / filename
        self.path = path
        self.database = database
        self._shared = not database.is_sqlite
        # This ledger's name in relay_in_flight (PostgreSQL): the node, the process, a tag.
        self._holder = f"{database.node}:{os.getpid()}:{secrets.token_hex(4)}"
        self._claimed: set[str] = set()  # PostgreSQL: keys this ledger holds in relay_in_flight
        self._renewing: asyncio.Task[None] | None = None
        self._lease = lease.total_seconds()
        self._settle_timeout = settle_timeout.total_seconds()
        self._noted = 0  # acceptances noted so far (`_Entry.number`)
        self._folded_to = 0  # every acceptance numbered up to this is folded (PostgreSQL)
        self._fold_failures = 0  # folds that failed so far
        self.retention = retention
        self.on_fault: FaultReporter | None = None
        self._rotate_bytes = rotate_bytes
        self._in_flight: set[str] = set()  # copy keys being handed over right now
        self._pruned_at: float | None = None  # when `record` last pruned (UTC seconds)
        self._lock = threading.Lock()  # the connection: the worker's thread, or a sync caller's
        self._worker = worker or StoreWorker("casegate-ledger")
        self._own_worker = worker is None
        self._closed = False
        # Journalled acceptances not yet folded into SQLite: by key, and in order.
        self._unfolded: dict[str, dict[str, _Entry]] = {}
        self._to_fold: list[_Entry] = []
        self._open_in: dict[int, int] = {}  # journal generation -> its entries not yet folded
        self._sealed: list[int] = []  # closed journal files waiting to be deleted
        self._folding: asyncio.Task[None] | None = None
        self.journal = Journal(path.parent, path.name)
        where = path if database.is_sqlite else database.describe()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = database.connect(filename, autocommit=True, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            migrate(self._db, COMPONENT,
                    MIGRATIONS_POSTGRESQL if self._shared else MIGRATIONS_SQLITE, _newer)
            self._fold_left_over()
            self.journal.begin()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the ledger at {where}: {exc}") from exc

    def _fold_left_over(self) -> None:
        """Fold the journal files whose writer is gone (the last run, killed) into SQLite,
        make it durable, and delete them."""
        files = self.journal.orphans()
        try:
            if not files:
                return
            rows = self.journal.read(files)
            if self._shared:
                self._upsert(rows)
            else:
                with self._transaction():
                    self._db.executemany(_UPSERT.format(values="(?, ?, ?)"), rows)
            self._checkpoint()
            for path, _ in files:
                path.unlink(missing_ok=True)
            log.info("ledger.journal_folded", acceptances=len(rows), files=len(files))
        finally:
            for _, fd in files:
                os.close(fd)

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file and fsync it; raise if it could not all go.
        (PostgreSQL's commit is durable: nothing to do.)"""
        if self._shared:
            return
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        if busy:
            raise sqlite3.OperationalError("the ledger could not be checkpointed (busy)")

    def accepted(self, key: str) -> set[str]:
        """The recipients of copy `key` that were already accepted (from the event loop's
        thread, or with no loop running)."""
        return self._stored(key) | set(self._unfolded.get(key, ()))

    def _stored(self, key: str) -> set[str]:
        """The recipients of copy `key` that SQLite holds."""
        if self._closed:
            raise LedgerError("cannot read the ledger: it is closed")
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT recipient FROM accepted WHERE copy_key = ?", (key,)
                ).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger: {exc}") from exc
        return {recipient for (recipient,) in rows}

    def record(self, key: str, recipients: Iterable[str], now: datetime) -> None:
        """Remember that `recipients` of copy `key` were accepted at `now` (in SQLite only);
        prune what has expired at most once every PRUNE_EVERY (the first record prunes)."""
        moment = _seconds(now)
        self._record_rows([(key, recipient, moment) for recipient in recipients])

    def _record_rows(self, rows: Sequence[tuple[str, str, float]],
                     release: Iterable[str] = ()) -> None:
        """Write `rows` (and on PostgreSQL delete this ledger's claims of the keys in
        `release` in the same statement)."""
        if not rows:
            return
        moment = max(row[2] for row in rows)
        with self._lock:
            prune = self._pruned_at is None \
                or moment - self._pruned_at >= PRUNE_EVERY.total_seconds()
            if self._shared:
                self._record_shared(rows, moment, prune, frozenset(release))
                return
            try:
                with self._transaction():
                    self._db.executemany(_UPSERT.format(values="(?, ?, ?)"), rows)
                    if prune:
                        self._db.execute(
                            "DELETE FROM accepted WHERE accepted_at < ?",
                            (moment - self.retention.total_seconds(),),
                        )
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot write the ledger: {exc}") from exc
            if prune:
                self._pruned_at = moment

    def _record_shared(self, rows: Sequence[tuple[str, str, float]], moment: float,
                       prune: bool, release: frozenset[str] = frozenset()) -> None:
        """PostgreSQL: the rows in autocommit INSERTs (one for up to ROWS_PER_STATEMENT: one
        round trip, one commit), each deleting this ledger's claims of its keys in `release`:
        a claim goes in the commit that records its acceptance. Then, when it is time, the
        expired rows are deleted (a statement of its own: the acceptance is committed whether
        or not pruning works)."""
        try:
            self._upsert(rows, release)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the ledger: {exc}") from exc
        if not prune:
            return
        try:
            self._db.execute("DELETE FROM accepted WHERE accepted_at < ?",
                             (moment - self.retention.total_seconds(),))
            self._db.execute(_FORGET_EXPIRED)
        except sqlite3.Error as exc:
            log.warning("ledger.prune_failed", error=str(exc))
            return
        self._pruned_at = moment

    def _upsert(self, rows: Sequence[tuple[str, str, float]],
                release: frozenset[str] = frozenset()) -> None:
        """PostgreSQL: `rows` in as few autocommit statements as their number allows, each
        deleting the claims (`release`) of the keys it records."""
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start:start + ROWS_PER_STATEMENT]
            sql = _UPSERT.format(values=", ".join(["(?, ?, ?)"] * len(chunk)))
            values: list[object] = [value for row in chunk for value in row]
            keys = sorted({row[0] for row in chunk} & release)
            if keys:
                marks = ", ".join("?" * len(keys))  # placeholders only: keys are parameters
                sql = ("WITH released AS (DELETE FROM relay_in_flight "  # noqa: S608
                       f"WHERE holder = ? AND copy_key IN ({marks})) {sql}")
                values = [self._holder, *keys, *values]
            self._db.execute(sql, values)

    def prune(self, older_than: datetime) -> int:
        """Forget entries accepted before `older_than`; returns how many were removed."""
        try:
            with self._lock, self._transaction():
                cursor = self._db.execute(
                    "DELETE FROM accepted WHERE accepted_at < ?", (_seconds(older_than),)
                )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot prune the ledger: {exc}") from exc
        return cursor.rowcount

    async def accepted_async(self, key: str) -> set[str]:
        """`accepted`, SQLite read in the worker's thread: the event loop goes on meanwhile.
        (What is not folded yet is read here, in the loop's thread, which alone changes it.)"""
        try:
            stored = await self._worker.run(self._stored, key)
        except WorkerClosed as exc:
            raise LedgerError(f"cannot read the ledger: {exc}") from exc
        return stored | set(self._unfolded.get(key, ()))

    async def record_async(self, key: str, recipients: Iterable[str], now: datetime) -> None:
        """`record`, in the worker's thread: the event loop goes on meanwhile."""
        try:
            await self._worker.run(self.record, key, tuple(recipients), now)
        except WorkerClosed as exc:
            raise LedgerError(f"cannot write the ledger: {exc}") from exc

    # -- the moment of acceptance ----------------------------------------------------------

    def note_accepted(self, key: str, recipients: Sequence[str], now: datetime) -> None:
        """The upstream has just accepted `recipients` of copy `key`: remember it in memory and
        append it to the journal, at once, without awaiting anything. Never raises: a journal
        that cannot be written is logged and reported (the copy did leave)."""
        moment = _seconds(now)
        generation = self.journal.generation
        known = self._unfolded.setdefault(key, {})
        for recipient in recipients:
            self._noted += 1
            entry = _Entry(key, recipient, moment, generation, self._noted)
            known[recipient] = entry
            self._to_fold.append(entry)
            self._open_in[generation] = self._open_in.get(generation, 0) + 1
        try:
            self.journal.append(key, recipients, moment)
        except OSError as exc:
            self._journal_fault(f"cannot write the acceptance journal: {exc}", key)
            return
        if self.journal.size >= self._rotate_bytes:
            try:
                self._sealed.append(self.journal.rotate())
            except OSError as exc:
                self._journal_fault(f"cannot begin a new acceptance journal: {exc}", key)

    def _journal_fault(self, detail: str, key: str) -> None:
        """On SQLite the journal is the record: a fault. On PostgreSQL the shared table is, and
        the journal only a fallback: a warning (`settle` reports the table's failure)."""
        if self._shared:
            log.warning("ledger.journal_failed", key=key, error=detail)
        else:
            self._fault(detail, key)

    async def settle(self) -> None:
        """SQLite: make the journal durable (fsync) and start folding it into the ledger in the
        background. PostgreSQL: fold what was noted into the shared table now, and return once
        it is committed (or failed: then the journal is fsync'd instead). Never raises: a
        failure is logged and reported."""
        if self._shared:
            await self._settle_shared()
            return
        try:
            await self.journal.sync()
        except OSError as exc:
            self._fault(f"cannot fsync the acceptance journal: {exc}", "")
        self._fold_soon()

    async def _settle_shared(self) -> None:
        """Wait until every acceptance noted so far is in PostgreSQL, `settle_timeout` at
        most. Deliveries settling at the same moment share the fold (one INSERT, one commit,
        for all of them). What is not committed (a failure, reported by `_fold`; no answer
        in time; the ledger closed) is fsync'd in this node's journal instead, and the fold
        goes on trying (the next acceptance's, or the next start's)."""
        target, failures = self._noted, self._fold_failures
        try:
            async with asyncio.timeout(self._settle_timeout):
                while self._folded_to < target and self._fold_failures == failures:
                    self._fold_soon()
                    folding = self._folding
                    if folding is None:  # closed
                        break
                    await asyncio.shield(folding)
        except TimeoutError:
            self._fault("the shared ledger did not commit an acceptance within "
                        f"{self._settle_timeout:g} s", "")
        if self._folded_to < target:
            try:
                await self.journal.sync()
            except OSError as exc:
                self._fault(f"cannot fsync the acceptance journal: {exc}", "")

    def _fold_soon(self) -> None:
        if self._folding is None and self._to_fold and not self._closed:
            self._folding = asyncio.ensure_future(self._fold())

    async def _fold(self) -> None:
        """Fold the journalled acceptances into SQLite, a batch at a time, then delete the
        journal files that hold nothing unfolded any more. A failure leaves them in memory
        and in the journal (retries still see them) until the next acceptance tries again."""
        try:
            while self._to_fold:
                batch, self._to_fold = self._to_fold, []
                rows = [(e.key, e.recipient, e.moment) for e in batch]
                release = {e.key for e in batch} & self._claimed  # PostgreSQL: see _upsert
                try:
                    await self._worker.run(self._record_rows, rows, release)
                except (LedgerError, WorkerClosed) as exc:
                    self._to_fold[:0] = batch
                    self._fold_failures += 1
                    self._fault(f"cannot fold accepted copies into the ledger: {exc}", "")
                    return
                self._claimed.difference_update(release)
                for entry in batch:
                    self._folded(entry)
                self._folded_to = batch[-1].number
                await self._delete_folded_journals()
        finally:
            self._folding = None

    def _folded(self, entry: _Entry) -> None:
        known = self._unfolded.get(entry.key)
        if known is not None and known.get(entry.recipient) is entry:
            del known[entry.recipient]
            if not known:
                del self._unfolded[entry.key]
        self._open_in[entry.generation] -= 1
        if not self._open_in[entry.generation]:
            del self._open_in[entry.generation]

    async def _delete_folded_journals(self) -> None:
        """Delete the closed journal files whose acceptances are all folded, once the ledger
        holds them durably (a checkpoint)."""
        done = [g for g in self._sealed if g not in self._open_in]
        if not done:
            return
        try:
            await self._worker.run(self._checkpoint_locked)
        except (sqlite3.Error, WorkerClosed) as exc:
            log.warning("ledger.checkpoint_failed", error=str(exc))
            return
        for generation in done:
            self._sealed.remove(generation)
            try:
                self.journal.remove(generation)
            except OSError as exc:
                log.warning("ledger.journal_not_removed", generation=generation, error=str(exc))

    def _checkpoint_locked(self) -> None:
        with self._lock:
            self._checkpoint()

    def _fault(self, detail: str, key: str) -> None:
        log.error("ledger.write_failed", key=key, error=detail)
        if self.on_fault is not None:
            try:
                self.on_fault(detail)
            except Exception:  # the reporter's own trouble never reaches a delivery
                log.exception("ledger.fault_report_failed")

    async def flush(self) -> None:
        """Wait until what was journalled is folded into SQLite (or failed to be)."""
        self._fold_soon()
        while self._folding is not None:
            await asyncio.shield(self._folding)

    # -- hand-overs in progress -----------------------------------------------------------

    def claim(self, key: str) -> bool:
        """Mark copy `key` as being handed over now; False if it already is (in this process)."""
        if key in self._in_flight:
            return False
        self._in_flight.add(key)
        return True

    def release(self, key: str) -> None:
        """The hand-over of copy `key` is over, however it went."""
        self._in_flight.discard(key)

    @property
    def shared(self) -> bool:
        """The ledger is PostgreSQL's, shared by every node (claims are then `claim_shared`)."""
        return self._shared

    async def claim_shared(self, key: str) -> bool:
        """PostgreSQL: mark copy `key` as being handed over by this node, for every node to
        see; False if another holds it (its lease not expired). Raises LedgerError."""
        try:
            claimed = await self._worker.run(self._claim_row, key)
        except WorkerClosed as exc:
            raise LedgerError(f"cannot write the ledger: {exc}") from exc
        if claimed:
            self._claimed.add(key)
            if self._renewing is None:
                self._renewing = asyncio.ensure_future(self._renew())
        return claimed

    def _claim_row(self, key: str) -> bool:
        try:
            with self._lock:
                row = self._db.execute(
                    _CLAIM, (key, self._holder, self._lease)).fetchone()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the ledger: {exc}") from exc
        return row is not None

    async def release_shared(self, keys: Sequence[str]) -> None:
        """PostgreSQL: the hand-overs of `keys` are over: other nodes may take those not
        accepted (a failed hand-over; nothing left to send). The claim of a copy accepted
        goes in the statement that commits the acceptance (see `_upsert`); while that has
        not succeeded the claim stays, renewed, so no other node sends the copy meanwhile.
        Never raises (a row left behind expires)."""
        held = [key for key in keys if key in self._claimed and key not in self._unfolded]
        self._claimed.difference_update(held)
        if not held:
            return
        try:
            async with asyncio.timeout(self._settle_timeout):
                await self._worker.run(self._release_rows, held)
        except (sqlite3.Error, WorkerClosed, TimeoutError) as exc:
            log.warning("ledger.release_failed", copies=len(held), error=str(exc))

    def _release_rows(self, keys: Sequence[str]) -> None:
        with self._lock:
            marks = ", ".join("?" * len(keys))  # placeholders only: the keys are parameters
            self._db.execute("DELETE FROM relay_in_flight WHERE holder = ? "  # noqa: S608
                             f"AND copy_key IN ({marks})", (self._holder, *keys))

    async def _renew(self) -> None:
        """Extend this ledger's leases every third of the lease while it holds any."""
        try:
            while self._claimed and not self._closed:
                await asyncio.sleep(self._lease / 3)
                if not self._claimed or self._closed:
                    break
                try:
                    await self._worker.run(self._renew_rows)
                except (sqlite3.Error, WorkerClosed) as exc:
                    log.warning("ledger.lease_not_renewed", error=str(exc))
        finally:
            self._renewing = None

    def _renew_rows(self) -> None:
        with self._lock:
            self._db.execute(_RENEW, (self._lease, self._holder))

    def close(self) -> None:
        """Finish what the worker was asked to do (when it is the ledger's own), then close.

        When everything journalled is folded, the ledger is checkpointed and this writer's
        journal files deleted; what is not folded stays in the journal, and the next opening
        folds it. Closing twice is harmless."""
        if self._own_worker:
            self._worker.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            renewing = self._renewing
            if renewing is not None and not renewing.done():
                try:  # close may run in another thread (the relay closes it in one)
                    renewing.get_loop().call_soon_threadsafe(renewing.cancel)
                except RuntimeError:  # its loop is closed already
                    pass
            done = not self._unfolded and not self._to_fold
            try:
                if done:
                    self._checkpoint()
            except sqlite3.Error as exc:
                log.warning("ledger.checkpoint_failed", error=str(exc))
                done = False
            self._db.close()
        self.journal.close()
        if done:
            for generation in (*self._sealed, self.journal.generation):
                try:
                    self.journal.remove(generation)
                except OSError as exc:
                    log.warning("ledger.journal_not_removed", error=str(exc))

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


async def deliver_once(
    ledger: Ledger,
    copies: Sequence[Copy],
    hand_over: HandOver,
    clock: Callable[[], datetime],
) -> DeliveryResult:
    """Hand over each copy's recipients that the ledger has not seen accepted, in order, and
    note each acceptance the moment it is known; stop at the first copy that is not accepted.

    The acceptance is journalled right after `hand_over` returns, before anything else is
    awaited (`hand_over` must not await anything after the upstream's reply). Before the
    result is returned the journal is fsync'd; folding it into SQLite goes on in the
    background (on PostgreSQL: the acceptance is committed to the shared table instead). A
    copy whose key is being handed over at this moment (a client retrying while its first
    attempt is still in flight: in this process, or on PostgreSQL on any node) is TEMPORARY
    rather than sent a second time. On PostgreSQL the claims are released only once the
    acceptances are committed, so that another node's retry cannot slip in between.
    """
    accepted: list[str] = []
    noted = False
    held: list[str] = []  # PostgreSQL: claimed in relay_in_flight, released after settling
    try:
        for copy in copies:
            if not ledger.claim(copy.key):
                detail = "the same copy is already being delivered"
                return DeliveryResult(Outcome.TEMPORARY, detail, tuple(accepted), Problem.BUSY)
            try:
                try:
                    claimed = not ledger.shared or await ledger.claim_shared(copy.key)
                    if claimed and ledger.shared:
                        held.append(copy.key)
                    done = await ledger.accepted_async(copy.key)
                except LedgerError as exc:
                    return DeliveryResult(Outcome.TEMPORARY, str(exc), tuple(accepted),
                                          Problem.GATEWAY)
                if not claimed and not set(copy.recipients) <= done:
                    # Another node holds it (or a node that died holding it: until its lease
                    # ends). A copy wholly accepted needs no claim: nothing more is sent.
                    detail = "the same copy is being delivered by another node"
                    return DeliveryResult(Outcome.TEMPORARY, detail, tuple(accepted),
                                          Problem.BUSY)
                accepted.extend(r for r in copy.recipients if r in done)
                pending = tuple(r for r in copy.recipients if r not in done)
                if not pending:
                    log.debug("ledger.already_accepted", key=copy.key, recipients=len(done))
                    continue
                result = await hand_over(copy, pending)
                if result.ok:  # nothing awaited between the upstream's 250 and this line
                    ledger.note_accepted(copy.key, pending, clock())
                    noted = True
            finally:
                ledger.release(copy.key)
            if not result.ok:
                return replace(result, accepted=tuple(accepted))
            accepted.extend(pending)
        return DeliveryResult(Outcome.DELIVERED, f"{len(copies)} copies accepted",
                              tuple(accepted))
    finally:
        if noted:
            await ledger.settle()
        if held:
            await ledger.release_shared(held)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (the connection is autocommit)."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _newer(version: int) -> LedgerError:
    return LedgerError(f"the ledger was written by a newer casegate (schema {version}); "
                       "upgrade this one")


def _seconds(moment: datetime) -> float:
    """UTC seconds since the epoch; a naive datetime is refused rather than guessed."""
    if moment.tzinfo is None:
        raise ValueError("the ledger needs timezone-aware datetimes")
    return moment.astimezone(UTC).timestamp()
