"""Where every store keeps its tables: SQLite files in the data directory, or one PostgreSQL
database that several gateway nodes share.

    database = Database.open(data_dir)                          # SQLite: nothing to set up
    database = Database.open(data_dir, "postgresql://casegate@db/casegate", node="mx1")
    db = database.connect("portal.sqlite3", autocommit=True)    # one store's connection
    db.execute("BEGIN IMMEDIATE")                               # the store's write lock
    db.execute("INSERT INTO portal_copy (...) VALUES (?, ?)", (a, b))
    db.execute("COMMIT")

The stores are written against Python's `sqlite3` connection, in SQLite's SQL with `?`
placeholders. On SQLite, `connect` returns exactly that: a `sqlite3.Connection` on the store's
own file, so the embedded default is what it always was. On PostgreSQL it returns a
`PgConnection`: the same methods, and the same transaction rules, on connections from one
psycopg pool per process. What differs is done in one place, here:

* SQL: `?` becomes `%s`; `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING`; in DDL, SQLite's
  types become PostgreSQL's (`INTEGER PRIMARY KEY` an identity column, `BLOB` `BYTEA`).
  Setting a PRAGMA does nothing; reading one, `INSERT OR REPLACE`, `COLLATE` and `rowid` raise
  `UnsupportedSql`: a store writes those portably (`ON CONFLICT ... DO UPDATE`) or asks
  `database.is_sqlite`.
* Locks: SQLite serialises the writers of one file. Here each store's "file" name is an
  advisory lock key: `BEGIN IMMEDIATE` takes it at once, an implicit or deferred transaction at
  its first write, so writers of one store serialise across every node as they did across the
  processes sharing a file.
* Errors: the store code catches `sqlite3`'s exception classes; a `PgConnection` raises the same
  ones (`IntegrityError` for a constraint, `OperationalError` when the server cannot be reached or
  a lock is not had in time), with psycopg's error as the cause. A statement that fails inside a
  transaction leaves the transaction usable, as in SQLite (each write runs under a savepoint).
* Results are read whole before the connection goes back to the pool; rows answer to `row[0]`
  and `row["name"]`, like `sqlite3.Row`.

Work only one node may do at a time (mailing alerts) takes a `Lease` (`database.lease(name)`):
held by one node's session on PostgreSQL, taken over by another when that session dies; always
held on SQLite.

A connection lost to a restart or fail-over of the database fails the statement in flight with
`OperationalError` (a 4xx to the client); the pool checks connections before lending them and
reconnects, so statements work again within about `connect_timeout` of the server's return: no
restart needed.
"""

from __future__ import annotations

import hashlib
import re
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import psycopg
import psycopg.sql
import psycopg_pool
from psycopg.rows import RowMaker

# The exception classes every store catches, whichever the engine.
Error = sqlite3.Error
IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError

SCHEMES = ("postgresql://", "postgres://")


class UnsupportedSql(sqlite3.ProgrammingError):
    """SQL that only SQLite understands, sent to PostgreSQL (a defect in the store's code)."""


class Cursor(Protocol):
    """What the stores use of a cursor (sqlite3.Cursor has it, and so has `Rows`)."""

    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the stores use of a connection (sqlite3.Connection has it, and so has
    `PgConnection`)."""

    row_factory: Any

    @property
    def in_transaction(self) -> bool: ...
    @property
    def total_changes(self) -> int: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class DatabaseSettings:
    """`[database]` of the config: `url` empty for SQLite."""

    url: str = ""
    node: str = ""  # this gateway's name in the audit trail; empty: the host name
    pool_size: int = 10
    connect_timeout: float = 10.0  # seconds to reach the server, or to wait for a connection


@dataclass
class Database:
    """The engine the stores share: made once by the App, closed with it."""

    data_dir: Path
    url: str = ""
    node: str = field(default_factory=socket.gethostname)
    pool: psycopg_pool.ConnectionPool | None = None
    connect_timeout: float = 10.0

    @classmethod
    def open(cls, data_dir: Path, settings: DatabaseSettings | None = None) -> Database:
        """SQLite in `data_dir` when `settings.url` is empty, else the PostgreSQL server it
        names (reached lazily: a server that is down now makes statements fail, not this)."""
        settings = settings or DatabaseSettings()
        node = settings.node or socket.gethostname()
        if not settings.url:
            return cls(data_dir=data_dir, node=node)
        if not settings.url.startswith(SCHEMES):
            raise ValueError(f"{redact(settings.url)} is not a postgresql:// URL")
        pool = psycopg_pool.ConnectionPool(
            settings.url, min_size=1, max_size=max(2, settings.pool_size),
            timeout=settings.connect_timeout, open=False, name=f"casegate-{node}",
            # Give up a failing reconnection after this long (psycopg's default is 5 minutes of
            # growing back-off), so that the first statement after the server returns starts a
            # new attempt at once: recovery within about connect_timeout.
            reconnect_timeout=settings.connect_timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(settings.connect_timeout)),
                    "application_name": f"casegate {node}"[:63],
                    # A server that stops answering mid-statement (a partition, a host gone)
                    # fails the statement after about connect_timeout instead of the kernel's
                    # many minutes: unacknowledged data, then idle probes.
                    "tcp_user_timeout": max(1000, int(settings.connect_timeout * 1000)),
                    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                    "keepalives_count": 3},
            check=psycopg_pool.ConnectionPool.check_connection)
        pool.open(wait=False)
        return cls(data_dir=data_dir, url=settings.url, node=node, pool=pool,
                   connect_timeout=settings.connect_timeout)

    @property
    def is_sqlite(self) -> bool:
        return self.pool is None

    @property
    def engine(self) -> str:
        return "sqlite" if self.pool is None else "postgresql"

    def describe(self) -> str:
        """Where the data is, for messages: the directory, or the URL without its password."""
        return str(self.data_dir) if self.pool is None else redact(self.url)

    def connect(self, filename: str, *, autocommit: bool = False,
                timeout: float = 10.0) -> Connection:
        """A store's connection: on SQLite to `filename` in the data directory (`autocommit`
        is isolation_level=None), on PostgreSQL to the shared database with `filename` as the
        name of the store's write lock."""
        if self.pool is None:
            return sqlite3.connect(self.data_dir / filename, timeout=timeout,
                                   check_same_thread=False,
                                   isolation_level=None if autocommit else "DEFERRED")
        return PgConnection(self.pool, filename, autocommit=autocommit, lock_timeout=timeout)

    def ping(self) -> None:
        """Raise OperationalError unless the database answers now (the readiness check)."""
        if self.pool is None:
            return
        PgConnection(self.pool, "ping", autocommit=True).execute("SELECT 1")

    def lease(self, name: str) -> Lease:
        """This node's claim to the work only one node may do at a time (see `Lease`)."""
        return Lease(self, name)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def redact(url: str) -> str:
    """`url` without a password, to show or log."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def lock_key(name: str) -> int:
    """The advisory lock number for `name`: the first 8 bytes of its SHA-256, as a signed
    64-bit integer (PostgreSQL's bigint)."""
    return int.from_bytes(hashlib.sha256(f"casegate:{name}".encode()).digest()[:8], "big",
                          signed=True)


class Lease:
    """Work exactly one node does at a time (mailing alerts): the node whose session holds the
    advisory lock `lease:<name>` leads.

    On PostgreSQL the lock is session-level (`pg_try_advisory_lock`), on a connection of the
    lease's own (not from the pool), kept open while the node runs. When the node dies, or its
    connection breaks, PostgreSQL ends the session and the lock with it: the node stops leading
    at its next `acquire`, and another node's next `acquire` takes over. On SQLite the lease is
    always held: the data directory has one node.

    `acquire` is called before each piece of the work: it checks the held lock's session (one
    round trip) or tries to take the lock, and answers whether this node leads now. A database
    it cannot reach is False (not leading), never an exception.
    """

    def __init__(self, database: Database, name: str) -> None:
        self.name = name
        self._database = database
        self._key = lock_key(f"lease:{name}")
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        """Whether this node led at the last `acquire`."""
        return self._database.is_sqlite or self._held

    @property
    def pid(self) -> int | None:
        """The server process of the lease's session (None on SQLite or when unconnected)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def acquire(self) -> bool:
        """Whether this node leads now: the lock still held on a live session, or taken."""
        if self._database.is_sqlite:
            return True
        with self._mutex:
            try:
                conn = self._connection()
                if self._held:
                    conn.execute("SELECT 1")
                    return True
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
            except psycopg.Error:
                self._drop()  # lost: the session, and the lock with it, is gone or going
                return False
            self._held = bool(row and row[0])
            return self._held

    def release(self) -> None:
        """Stop leading (another node's next `acquire` takes over) and close the session."""
        with self._mutex:
            if self._conn is not None and self._held and not self._conn.broken:
                try:
                    self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
                except psycopg.Error:
                    pass  # the session ends below, and the lock with it
            self._drop()

    close = release

    def _connection(self) -> psycopg.Connection[Any]:
        """The lease's session, opened when there is none (or it broke)."""
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop()
        timeout = self._database.connect_timeout
        conn = psycopg.connect(
            self._database.url, autocommit=True, connect_timeout=max(1, int(timeout)),
            application_name=f"casegate {self._database.node} lease"[:63],
            # A dead peer is noticed in about `timeout` on this side...
            keepalives=1, keepalives_idle=max(1, int(timeout)), keepalives_interval=2,
            keepalives_count=3, tcp_user_timeout=max(1000, int(timeout * 1000)))
        try:
            # ... and on the server's, which then ends the session and frees the lock.
            conn.execute(f"SET tcp_keepalives_idle = {max(1, int(timeout))}")
            conn.execute("SET tcp_keepalives_interval = 2")
            conn.execute("SET tcp_keepalives_count = 3")
        except psycopg.Error:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------

class Row(tuple[Any, ...]):
    """A result row: `row[0]` or `row["column"]`, as sqlite3.Row."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_maker(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row._index = index
        return row
    return make


class Rows:
    """A finished statement's rows, read whole (the connection went back to the pool)."""

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> Row | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Row]:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


@dataclass(frozen=True)
class Statement:
    """One SQLite statement as PostgreSQL takes it."""

    kind: str  # "begin", "begin-locked", "commit", "rollback", "nothing", "write" or "read"
    text: str = ""


_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_DDL = re.compile(r"^\s*(CREATE|ALTER)\s", re.I)
_TYPES = (  # SQLite's column types in DDL, and PostgreSQL's for them
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?", re.I),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
)
_WITHOUT_ROWID = re.compile(r"\s*\bWITHOUT\s+ROWID\b", re.I)
_SQLITE_ONLY = re.compile(r"\b(INSERT\s+OR\s+REPLACE|REPLACE\s+INTO|COLLATE|ROWID|GLOB|"
                          r"CREATE\s+TRIGGER)\b", re.I)


@lru_cache(maxsize=2048)
def translate(sql: str) -> Statement:
    """`sql` (SQLite's dialect, `?` placeholders) for PostgreSQL, or UnsupportedSql."""
    words = sql.split(None, 2)
    verb = words[0].upper() if words else ""
    if verb == "PRAGMA":
        if "=" in sql:
            return Statement("nothing")  # settings of SQLite's own (WAL, busy timeout, ...)
        raise UnsupportedSql(f"{sql.strip()}: a PRAGMA read has no PostgreSQL meaning")
    if verb in ("BEGIN", "COMMIT", "END", "ROLLBACK") and not re.search(r"\bTO\b", sql, re.I):
        second = words[1].upper().rstrip(";") if len(words) > 1 else ""
        if verb == "BEGIN":
            return Statement("begin-locked" if second in ("IMMEDIATE", "EXCLUSIVE") else "begin")
        return Statement("rollback" if verb == "ROLLBACK" else "commit")
    if _DDL.match(sql):
        sql = _WITHOUT_ROWID.sub("", sql)  # a storage hint (a table on its key): not rowid
    if _SQLITE_ONLY.search(sql):
        raise UnsupportedSql(f"SQLite-only SQL sent to PostgreSQL: {sql.strip()[:120]}")
    text = _placeholders(sql)
    if _INSERT_OR_IGNORE.match(text):
        text = _INSERT_OR_IGNORE.sub("INSERT INTO", text, count=1)
        returning = _RETURNING.search(text)
        if returning:
            text = (f"{text[:returning.start()]}ON CONFLICT DO NOTHING "
                    f"{text[returning.start():]}")
        else:
            text = f"{text.rstrip().rstrip(';')} ON CONFLICT DO NOTHING"
    if _DDL.match(text):
        for pattern, replacement in _TYPES:
            text = pattern.sub(replacement, text)
        return Statement("write", text)
    kind = "write" if verb in ("INSERT", "UPDATE", "DELETE", "WITH") else "read"
    return Statement(kind, text)


def _placeholders(sql: str) -> str:
    """`?` outside quotes becomes `%s`, and `%` becomes `%%` (psycopg's format style)."""
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
            out.append("%%" if char == "%" else char)
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        else:
            out.append("%%" if char == "%" else char)
    return "".join(out)


class PgConnection:
    """sqlite3.Connection's methods on PostgreSQL, for one store (see the module's docstring).

    Like a sqlite3 connection it is used by one thread at a time (the store's lock sees to
    that). Outside a transaction each statement borrows a pooled connection for itself; a
    transaction keeps one until COMMIT or ROLLBACK.
    """

    def __init__(self, pool: psycopg_pool.ConnectionPool, name: str, *, autocommit: bool,
                 lock_timeout: float = 10.0) -> None:
        self._pool = pool
        self._lock_key = lock_key(name)
        self._autocommit = autocommit
        self._lock_timeout_ms = max(1, int(lock_timeout * 1000))
        self._held: psycopg.Connection[Any] | None = None  # during a transaction
        self._locked = False  # the store's advisory lock is held by this transaction
        self._changes = 0
        self._mutex = threading.Lock()
        self.row_factory: Any = None

    @property
    def in_transaction(self) -> bool:
        return self._held is not None

    @property
    def total_changes(self) -> int:
        return self._changes

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        """As sqlite3: commit when the block succeeded, roll back when it raised."""
        if kind is None:
            self.commit()
        else:
            self.rollback()

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:
        statement = translate(sql)
        with self._mutex:
            return self._run(statement, lambda cur: cur.execute(statement.text, parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Rows:
        statement = translate(sql)
        rows = list(parameters)
        with self._mutex:
            if not rows:
                return Rows([], 0)
            return self._run(statement, lambda cur: cur.executemany(statement.text, rows))

    def commit(self) -> None:
        with self._mutex:
            self._end("COMMIT")

    def rollback(self) -> None:
        with self._mutex:
            self._end("ROLLBACK")

    def close(self) -> None:
        with self._mutex:
            self._end("ROLLBACK")

    def lock(self, name: str) -> None:
        """Take the advisory lock `name` (see `lock_key`) until this transaction ends: what
        serialises work that spans stores, as migrations do."""
        with self._mutex:
            if self._held is None:
                raise OperationalError("a lock is taken inside a transaction")
            try:
                self._held.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(name),))
            except psycopg.Error as exc:
                raise _sqlite_error(exc) from exc

    # -- inside ------------------------------------------------------------------------------

    def _run(self, statement: Statement, run: Any) -> Rows:
        kind = statement.kind
        if kind == "nothing":
            return Rows([], -1)
        if kind in ("commit", "rollback"):
            self._end(kind.upper())
            return Rows([], -1)
        if kind.startswith("begin"):
            if self._held is not None:
                raise OperationalError("cannot start a transaction within a transaction")
            self._begin(lock=kind == "begin-locked")
            return Rows([], -1)
        if kind == "write" and self._held is None and not self._autocommit:
            self._begin(lock=False)  # sqlite3's implicit BEGIN before a write
        if self._held is None:
            return self._alone(run)
        if kind == "write" and not self._locked:
            self._take_lock(self._held)
        return self._within(self._held, run)

    def _alone(self, run: Any) -> Rows:
        """One statement outside a transaction, on a connection borrowed for it."""
        try:
            with self._pool.connection() as conn:
                with conn.cursor(row_factory=_row_maker) as cur:
                    run(cur)
                    return self._result(cur)
        except psycopg_pool.PoolTimeout as exc:
            raise OperationalError(f"the database cannot be reached ({exc})") from exc
        except psycopg.Error as exc:
            raise _sqlite_error(exc) from exc

    def _within(self, conn: psycopg.Connection[Any], run: Any) -> Rows:
        """One statement inside the transaction, under a savepoint, so that a failing
        statement (a duplicate key, say) fails alone and the transaction goes on, as in
        SQLite."""
        try:
            with conn.transaction():  # a savepoint, the transaction being open
                with conn.cursor(row_factory=_row_maker) as cur:
                    run(cur)
                    return self._result(cur)
        except psycopg.Error as exc:
            if conn.broken:
                self._release(conn)
            raise _sqlite_error(exc) from exc

    def _result(self, cur: psycopg.Cursor[Any]) -> Rows:
        rows = cur.fetchall() if cur.description is not None else []
        if cur.rowcount > 0 and cur.description is None:
            self._changes += cur.rowcount
        return Rows(rows, cur.rowcount)

    def _begin(self, *, lock: bool) -> None:
        try:
            conn = self._pool.getconn()
        except psycopg_pool.PoolTimeout as exc:
            raise OperationalError(f"the database cannot be reached ({exc})") from exc
        try:
            conn.execute("BEGIN")
            conn.execute(f"SET LOCAL lock_timeout = {self._lock_timeout_ms}")
            if lock:
                self._take_lock(conn)
        except BaseException as exc:
            self._pool.putconn(conn)
            if isinstance(exc, psycopg.Error):
                raise _sqlite_error(exc) from exc
            raise
        self._held = conn

    def _take_lock(self, conn: psycopg.Connection[Any]) -> None:
        """The store's write lock (SQLite's file lock), held to the transaction's end."""
        try:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
        except psycopg.Error as exc:
            if conn.broken:
                self._release(conn)
            raise _sqlite_error(exc) from exc
        self._locked = True

    def _end(self, verb: str) -> None:
        conn = self._held
        if conn is None:
            return
        try:
            if not conn.broken:
                conn.execute(verb)
        except psycopg.Error as exc:
            raise _sqlite_error(exc) from exc
        finally:
            self._release(conn)

    def _release(self, conn: psycopg.Connection[Any]) -> None:
        self._held = None
        self._locked = False
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.broken:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                pass  # a broken connection: the pool discards it
        self._pool.putconn(conn)


def _sqlite_error(exc: psycopg.Error) -> sqlite3.Error:
    """The sqlite3 exception the store code catches for psycopg's `exc`."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.IntegrityError):
        return sqlite3.IntegrityError(message)
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return sqlite3.OperationalError(f"database is locked ({message})")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return sqlite3.OperationalError(f"the database cannot be reached ({message})")
    if isinstance(exc, psycopg.ProgrammingError):
        return sqlite3.ProgrammingError(message)
    return sqlite3.DatabaseError(message)


# -- versioned schemas ------------------------------------------------------------------------

def migrate(db: Connection, component: str, migrations: Sequence[str],
            newer: Callable[[int], Exception]) -> int:
    """Bring `component`'s tables up to version `len(migrations)`, in one transaction, and
    record it in `schema_version`; answer the version found before. `newer(version)` is raised
    for tables written by a newer casegate.

    Each migration is a script of statements, oldest first. On PostgreSQL every migration of
    every store takes one lock ("schema"), so nodes that start together migrate one at a time:
    the first does the work, the others find it done.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        if isinstance(db, PgConnection):
            db.lock("schema")
        db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                   "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        version = schema_version(db, component)
        if version > len(migrations):
            raise newer(version)
        for script in migrations[version:]:
            for statement in statements(script):
                db.execute(statement)
        if version < len(migrations):
            db.execute("INSERT INTO schema_version (component, version) VALUES (?, ?) "
                       "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                       (component, len(migrations)))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return version


def schema_version(db: Connection, component: str) -> int:
    """The version recorded for `component` (0 for none)."""
    row = db.execute("SELECT version FROM schema_version WHERE component = ?",
                     (component,)).fetchone()
    return int(row[0]) if row else 0


def schema_versions(db: Connection) -> dict[str, int]:
    """Every component's recorded version (`casegate db migrate` reports them)."""
    try:
        rows = db.execute("SELECT component, version FROM schema_version").fetchall()
    except sqlite3.OperationalError:
        return {}  # no store has been opened here yet
    return {str(row[0]): int(row[1]) for row in rows}


def statements(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our DDL's strings)."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


# -- moving an installation -------------------------------------------------------------------

@dataclass(frozen=True)
class Copied:
    table: str
    rows: int


def tables_with_rows(url: str) -> list[str]:
    """The tables of the schema `url` connects to that hold any row (schema_version aside)."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'")]
        return sorted(name for name in names if name != "schema_version" and conn.execute(
            psycopg.sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
                psycopg.sql.Identifier(name))).fetchone() == (True,))


def copy_sqlite_files(files: Sequence[Path], url: str) -> list[Copied]:
    """Copy every table of the SQLite `files` into the PostgreSQL schema `url` connects to, in
    one transaction: the tables must exist there (the stores made them); what opening the
    stores wrote into the tables filled here is removed first. Rows keep their ids; identity
    columns continue after the highest. Tables are filled parents first (foreign keys); a
    table several files hold (key_fingerprint) gets the rows of each."""
    sources: dict[str, list[Path]] = {}
    for path in files:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                      "AND name NOT LIKE 'sqlite_%'"):
                if name != "schema_version":
                    sources.setdefault(name, []).append(path)
    copied: list[Copied] = []
    with psycopg.connect(url) as conn:  # one transaction: all or nothing
        present = _target_tables(conn)
        missing = sorted(set(sources) - set(present))
        if missing:
            raise ValueError(f"the target has no table {', '.join(missing)}: is it the same "
                             "casegate version as the one that wrote the data directory?")
        order = _parents_first(conn, list(present))
        # What opening the stores wrote into the tables about to be filled goes; tables only
        # PostgreSQL has (the change counters) keep the rows their migrations gave them.
        conn.execute(psycopg.sql.SQL("TRUNCATE {}").format(psycopg.sql.SQL(", ").join(
            psycopg.sql.Identifier(name) for name in sorted(sources))))
        for name in order:
            for path in sources.get(name, ()):
                copied.append(Copied(name, _copy_table(path, conn, name, present[name])))
    return copied


def _target_tables(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Table -> its columns, in the target schema."""
    tables: dict[str, list[str]] = {}
    for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"):
        tables.setdefault(table, []).append(column)
    return tables


def _parents_first(conn: psycopg.Connection[Any], names: list[str]) -> list[str]:
    """`names` ordered so that a table comes after every table its foreign keys point to."""
    parents: dict[str, set[str]] = {name: set() for name in names}
    for child, parent in conn.execute(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace"):
        if child in parents and parent != child:
            parents[child].add(parent)
    order: list[str] = []
    while parents:
        ready = sorted(name for name, needs in parents.items() if not needs - set(order))
        if not ready:
            raise ValueError(f"foreign keys in a circle among {', '.join(sorted(parents))}")
        order += ready
        for name in ready:
            del parents[name]
    return order


def _copy_table(path: Path, conn: psycopg.Connection[Any], name: str,
                target_columns: list[str]) -> int:
    """Copy table `name` of the SQLite file `path` into the target: its number of rows."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({_quoted(name)})")]
        extra = sorted(set(columns) - set(target_columns))
        if extra:
            raise ValueError(f"{path.name}: {name}.{', '.join(extra)} has no column in the "
                             "target")
        listed = psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(c) for c in columns)
        statement = psycopg.sql.SQL("COPY {} ({}) FROM STDIN").format(
            psycopg.sql.Identifier(name), listed)
        rows = 0
        selected = ", ".join(_quoted(c) for c in columns)
        # Names read from the file's own catalogue, quoted as identifiers: not values.
        query = f"SELECT {selected} FROM {_quoted(name)}"  # noqa: S608
        with conn.cursor().copy(statement) as copy:
            for row in db.execute(query):
                copy.write_row(row)
                rows += 1
    identity = [row[0] for row in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s AND is_identity = 'YES'", (name,))]
    for column in identity:  # identity columns continue after the copied ids
        conn.execute(psycopg.sql.SQL(
            "SELECT setval(pg_get_serial_sequence(%s, %s), max({column})) FROM {table} "
            "HAVING max({column}) IS NOT NULL"
        ).format(column=psycopg.sql.Identifier(column), table=psycopg.sql.Identifier(name)),
            (name, column))
    return rows


def _quoted(identifier: str) -> str:
    """An SQLite identifier in double quotes, any quote in it doubled."""
    return '"' + identifier.replace('"', '""') + '"'
