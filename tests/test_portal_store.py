"""The portal store: codes (six digits, ten minutes, single use, five tries), sessions, expiry;
on SQLite and on PostgreSQL, and on two nodes sharing one PostgreSQL database."""

from __future__ import annotations

import io
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.stores.portal import PORTAL_DB_FILE, CodeCheck, CopyState, PortalStore
from gateway.web.portal import SharedWindowLimit
from transports.crypto import Keyring, seal, unseal
from transports.database import Database

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def add_c1(store: PortalStore, keyring: Keyring | None = None) -> None:
    sealed = seal(keyring or Keyring.new(), b"x", copy_id="c1", recipient="mum@example.org")
    store.add_copy(copy_id="c1", link_token="link-1", copy_key="k1", sender="Jo@cafcass.gov.uk",
                   recipient="mum@example.org", decision_id="d1", sealed=sealed, size=1,
                   attachment_parts=[3, 5], now=NOW, expires=NOW + timedelta(days=30))


def add_c2(store: PortalStore) -> None:
    sealed = seal(Keyring.new(), b"y", copy_id="c2", recipient="dad@example.org")
    store.add_copy(copy_id="c2", link_token="link-2", copy_key="k2", sender="jo@cafcass.gov.uk",
                   recipient="dad@example.org", decision_id="d2", sealed=sealed, size=1,
                   attachment_parts=[], now=NOW, expires=NOW + timedelta(days=30))


@pytest.fixture
def store(database: Database) -> Iterator[PortalStore]:
    opened = PortalStore(database)
    add_c1(opened)
    yield opened
    opened.close()


@pytest.fixture
def two_nodes(pg_nodes: tuple[Database, Database]) -> Iterator[tuple[PortalStore, PortalStore]]:
    """The portal store of two gateway nodes sharing one PostgreSQL database."""
    stores = [PortalStore(database) for database in pg_nodes]
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            store.close()


def wrong_for(code: str) -> str:
    return "000000" if code != "000000" else "111111"


def test_pending_copy_is_invisible_until_activated(store: PortalStore) -> None:
    """A copy whose notification was not yet accepted opens no link and is not listed."""
    assert store.by_link("link-1") is None and store.list() == ()
    store.activate("c1")
    copy = store.by_link("link-1")
    assert copy is not None and copy.state is CopyState.ACTIVE
    assert copy.sender == "jo@cafcass.gov.uk"
    assert set(store.attachment_ids("c1")) == {3, 5}


def test_notified_is_committed_unsynced_and_the_store_goes_back_to_full(
        store: PortalStore, database: Database) -> None:
    """"notified" alone is committed without waiting for the disk (it can be worked out again
    from the relay's ledger); every other write still is synced (SQLite synchronous=FULL)."""
    store.activate("c1")
    store.mark_notified("c1", NOW)
    again = store.reusable("k1", "mum@example.org")
    assert again is not None and again.notified
    if database.is_sqlite:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        with pytest.raises(sqlite3.IntegrityError), store._writing(synced=False):
            store._db.execute("INSERT INTO portal_copy (id) VALUES (NULL)")
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # after a failure too


def test_a_group_commit_syncs_the_threads_writes_once_as_it_ends(
        store: PortalStore, database: Database) -> None:
    """Inside `group_commit` this thread's synced writes commit without waiting for the disk
    (synchronous=NORMAL), and leaving it makes them durable with one synced write; another
    thread's writes meanwhile are synced each, and a block that wrote nothing writes nothing
    more. On PostgreSQL every commit is durable and nothing changes."""
    statements: list[str] = []
    if database.is_sqlite:
        store._db.set_trace_callback(statements.append)
    with store.group_commit():
        store.activate("c1")
        add_c2(store)
        inside = len(statements)
        other = threading.Thread(target=store.withdraw, args=("c1",))
        other.start()
        other.join()
        by_other = statements[inside:]
    first_block = len(statements)
    with store.group_commit():
        assert store.reusable("k2", "dad@example.org") is not None
    if database.is_sqlite:
        store._db.set_trace_callback(None)
        relaxed = [s for s in statements[:inside] if s.startswith("PRAGMA synchronous")]
        assert relaxed == ["PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"] * 2
        assert not any(s.startswith("PRAGMA synchronous") for s in by_other)
        syncs = [s for s in statements if s.startswith("PRAGMA user_version =")]
        assert syncs == ["PRAGMA user_version = 0"]
        # as the first block ended, after every write in it
        assert inside + len(by_other) <= statements.index(syncs[0]) < first_block
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
    again = PortalStore(database)  # committed: another connection reads them
    try:
        assert again.reusable("k2", "dad@example.org") is not None
        first = again.reusable("k1", "mum@example.org")
        assert first is not None and first.state is CopyState.PENDING  # withdrawn
    finally:
        again.close()


def test_a_group_commit_whose_sync_fails_raises(tmp_path: Path) -> None:
    """When the one synced write at the end fails (here: the file is locked by another
    writer), leaving the block raises: its writes may not be counted on as durable, and the
    portal delivery answers their messages 4xx (transports/worker.py)."""
    database = Database(data_dir=tmp_path)
    store = PortalStore(database)
    other = sqlite3.connect(tmp_path / PORTAL_DB_FILE, isolation_level=None)
    try:
        store._db.execute("PRAGMA busy_timeout = 20")
        with pytest.raises(sqlite3.OperationalError, match="locked"), store.group_commit():
            add_c1(store)
            other.execute("BEGIN IMMEDIATE")  # a writer holds the file as the block ends
        other.execute("ROLLBACK")
        assert store.reusable("k1", "mum@example.org") is not None  # committed, not synced
    finally:
        other.close()
        store.close()


def test_codes_are_six_digits_and_single_use(store: PortalStore) -> None:
    """Each code is six digits; the right one works once."""
    codes = {store.issue_code("c1", NOW) for _ in range(20)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 1
    code = store.issue_code("c1", NOW)
    assert store.check_code("c1", code, NOW) is CodeCheck.ACCEPTED
    assert store.check_code("c1", code, NOW) is CodeCheck.NO_CODE


def test_code_expires_after_ten_minutes(store: PortalStore) -> None:
    """A code is good for ten minutes and no longer."""
    code = store.issue_code("c1", NOW)
    assert store.check_code("c1", code, NOW + timedelta(minutes=10)) is CodeCheck.NO_CODE
    code = store.issue_code("c1", NOW)
    assert store.check_code("c1", code, NOW + timedelta(minutes=9)) is CodeCheck.ACCEPTED


def test_fifth_wrong_try_burns_the_code(store: PortalStore) -> None:
    """Four wrong tries say wrong, the fifth locks, and the right code is then dead."""
    code = store.issue_code("c1", NOW)
    wrong = "000000" if code != "000000" else "111111"
    results = [store.check_code("c1", wrong, NOW) for _ in range(5)]
    assert results == [CodeCheck.WRONG] * 4 + [CodeCheck.LOCKED]
    assert store.check_code("c1", code, NOW) is CodeCheck.NO_CODE


def test_code_is_bound_to_its_copy(store: PortalStore) -> None:
    """A code for one copy is no code for another, and a new code replaces the old."""
    code = store.issue_code("c1", NOW)
    assert store.check_code("c2", code, NOW) is CodeCheck.NO_CODE
    newer = store.issue_code("c1", NOW)
    if newer != code:
        assert store.check_code("c1", code, NOW) is CodeCheck.WRONG
    assert store.check_code("c1", newer, NOW) is CodeCheck.ACCEPTED
    assert store.code_requests_since("c1", NOW - timedelta(hours=1)) == 2


def test_sessions_are_stored_hashed_and_expire(store: PortalStore, database: Database,
                                               tmp_path: Path) -> None:
    """Only the token's hash is stored; a session ends at its lifetime."""
    token, session = store.create_session("c1", signed_in=True, now=NOW, lifetime_seconds=60)
    assert store.session(token, NOW) == session
    assert store.session(token, NOW + timedelta(seconds=61)) is None
    if database.is_sqlite:
        assert token.encode() not in (tmp_path / PORTAL_DB_FILE).read_bytes()
    db = database.connect(PORTAL_DB_FILE, autocommit=True)
    stored = db.execute("SELECT token_hash, copy_id, csrf_token FROM portal_session").fetchall()
    db.close()
    assert len(stored) == 1 and token not in tuple(stored[0])


def test_revoke_and_destroy(store: PortalStore) -> None:
    """Revoking ends sessions and codes; destroying deletes the ciphertext and wrapped key."""
    store.activate("c1")
    token, _ = store.create_session("c1", signed_in=True, now=NOW, lifetime_seconds=60)
    store.issue_code("c1", NOW)
    assert store.revoke("c1", NOW) and not store.revoke("c1", NOW)
    assert store.session(token, NOW) is None
    assert store.due_for_expiry(NOW + timedelta(days=30)) == ("c1",)
    assert store.destroy("c1") and store.sealed("c1") is None
    copy = store.get("c1")
    assert copy is not None and copy.state is CopyState.EXPIRED and copy.key_id is None
    assert store.attachment_ids("c1") == {}


def test_sweep_destroys_expired_and_drops_interrupted_deliveries(
        store: PortalStore, tmp_path: Path) -> None:
    """The sweep expires what is due (an audit event) and drops pending copies (withdrawn, or
    left by a crash) once no retry is expected to reuse them (PENDING_GRACE, 5 days)."""
    from gateway.audit.store import EventFilter
    from gateway.audit.trail import AuditLog
    from gateway.stores.portal import sweep_expired

    audit = AuditLog.open(Database.open(tmp_path / "audit"), stream=io.StringIO())
    try:
        assert sweep_expired(store, audit, NOW + timedelta(days=4)) == ()
        assert store.get("c1") is not None  # pending, but young: a retry may reuse it
        assert sweep_expired(store, audit, NOW + timedelta(days=5, hours=1)) == ()
        assert store.get("c1") is None
        sealed = seal(Keyring.new(), b"x", copy_id="c2", recipient="mum@example.org")
        store.add_copy(copy_id="c2", link_token="link-2", copy_key="k2", sender="a@cafcass.gov.uk",
                       recipient="mum@example.org", decision_id="d2", sealed=sealed, size=1,
                       attachment_parts=[], now=NOW, expires=NOW + timedelta(days=30))
        store.activate("c2")
        assert sweep_expired(store, audit, NOW + timedelta(days=30)) == ("c2",)
        kinds = [e.kind for e in audit.iterate(EventFilter())]
        assert kinds.count("portal-expiry") == 1
    finally:
        audit.close()


def test_window_limit_counts_per_key_and_window() -> None:
    """Each key gets `limit` events a window; a new window starts afresh."""
    from gateway.web.portal import WindowLimit

    now = [0.0]
    limit = WindowLimit(2, 60.0, clock=lambda: now[0])
    assert [limit.allow("a"), limit.allow("a"), limit.allow("a"), limit.allow("b")] == [
        True, True, False, True]
    now[0] = 60.0
    assert limit.allow("a")


def test_a_store_made_before_the_link_columns_is_upgraded(tmp_path: Path) -> None:
    """A portal.sqlite3 made by a casegate before retried deliveries reused their copy (no
    link columns, no schema version) opens: its delivered copies count as notified."""
    old = sqlite3.connect(tmp_path / PORTAL_DB_FILE)
    old.executescript("""
        CREATE TABLE portal_copy (id TEXT PRIMARY KEY, link_hash TEXT NOT NULL UNIQUE,
            copy_key TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
            decision_id TEXT NOT NULL, created REAL NOT NULL, expires REAL NOT NULL,
            state TEXT NOT NULL, revoked_at REAL, first_opened REAL, last_opened REAL,
            views INTEGER NOT NULL DEFAULT 0, downloads INTEGER NOT NULL DEFAULT 0,
            replies INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL, key_id TEXT,
            wrapped_key BLOB, ciphertext BLOB);
        CREATE TABLE portal_code (copy_id TEXT PRIMARY KEY, salt BLOB NOT NULL,
            code_hash BLOB NOT NULL, expires REAL NOT NULL, failures INTEGER NOT NULL DEFAULT 0);
    """)
    with old:
        old.execute("INSERT INTO portal_copy (id, link_hash, copy_key, sender, recipient, "
                    "decision_id, created, expires, state, size) VALUES "
                    "('old', 'h', 'k0', 'a@cafcass.gov.uk', 'b@example.org', 'd0', ?, ?, "
                    "'active', 1)", (NOW.timestamp(), NOW.timestamp() + 86400))
    old.close()
    database = Database.open(tmp_path)
    store = PortalStore(database)
    try:
        reused = store.reusable("k0", "b@example.org")
        assert reused is not None and reused.notified and reused.link is None
        add_c1(store)  # the new columns are written
        assert store.reusable("k1", "mum@example.org") is not None
        code = store.issue_code("old", NOW)
        assert store.check_code("old", code, NOW) is CodeCheck.ACCEPTED
    finally:
        store.close()
    again = PortalStore(database)  # the upgrade is recorded: opening again changes nothing
    assert [c.id for c in again.list()] == ["old"]
    again.close()


def test_a_copy_made_on_one_node_opens_on_the_other(
        two_nodes: tuple[PortalStore, PortalStore]) -> None:
    """Copy, attachments, code and session are in the shared database: node two serves a
    link node one made, a code node one issued, a session node one opened."""
    one, two = two_nodes
    keyring = Keyring.new()
    add_c1(one, keyring)
    one.activate("c1")
    opened = two.by_link("link-1")
    assert opened is not None and opened.id == "c1" and opened.state is CopyState.ACTIVE
    sealed = two.sealed("c1")
    assert sealed is not None
    assert unseal(keyring, sealed, copy_id="c1", recipient="mum@example.org") == b"x"
    assert set(two.attachment_ids("c1")) == {3, 5}
    code = one.issue_code("c1", NOW)
    assert two.check_code("c1", code, NOW) is CodeCheck.ACCEPTED
    assert one.check_code("c1", code, NOW) is CodeCheck.NO_CODE  # used: on every node
    token, session = one.create_session("c1", signed_in=True, now=NOW, lifetime_seconds=60)
    assert two.session(token, NOW) == session
    two.record_view("c1", NOW)
    viewed = one.get("c1")
    assert viewed is not None and viewed.views == 1
    assert one.revoke("c1", NOW)
    assert two.session(token, NOW) is None


def test_wrong_codes_on_two_nodes_count_as_one(two_nodes: tuple[PortalStore, PortalStore]
                                              ) -> None:
    """Tries alternate between the nodes: the fifth wrong try burns the code and the
    max_wrong_codes-th in total locks the copy, exactly as on one node."""
    one, two = two_nodes
    add_c1(one)
    one.activate("c1")
    nodes = (one, two)
    code = one.issue_code("c1", NOW)
    tries = [nodes[i % 2].check_code("c1", wrong_for(code), NOW, max_wrong_codes=7)
             for i in range(5)]
    assert tries == [CodeCheck.WRONG] * 4 + [CodeCheck.LOCKED]
    code = two.issue_code("c1", NOW)
    tries = [nodes[i % 2].check_code("c1", wrong_for(code), NOW, max_wrong_codes=7)
             for i in range(2)]
    assert tries == [CodeCheck.WRONG, CodeCheck.COPY_LOCKED]  # the 7th wrong code in all
    assert one.is_locked("c1") and two.is_locked("c1") and two.wrong_codes("c1") == 7
    assert one.check_code("c1", code, NOW) is CodeCheck.COPY_LOCKED


def test_wrong_codes_at_once_on_two_nodes_lock_at_the_same_count(
        two_nodes: tuple[PortalStore, PortalStore]) -> None:
    """Two nodes, three threads each, trying wrong codes at the same time (a new code when
    there is none): exactly max_wrong_codes - 1 tries are answered before the copy locks, and
    no code takes more than five wrong tries."""
    one, two = two_nodes
    add_c1(one)
    one.activate("c1")
    limit = 23
    start = threading.Barrier(6)
    answers: list[CodeCheck] = []
    failures: list[BaseException] = []
    mutex = threading.Lock()

    def attacker(store: PortalStore) -> None:
        try:
            start.wait(timeout=30)
            while True:
                answer = store.check_code("c1", "999999", NOW, max_wrong_codes=limit)
                if answer is CodeCheck.NO_CODE:
                    store.issue_code("c1", NOW)  # as the recipient's "send me a code"
                    continue
                with mutex:
                    answers.append(answer)
                if answer is CodeCheck.COPY_LOCKED:
                    return
        except BaseException as exc:  # reported below
            failures.append(exc)

    code = one.issue_code("c1", NOW)
    assert code != "999999" or one.check_code("c1", code, NOW) is CodeCheck.ACCEPTED
    threads = [threading.Thread(target=attacker, args=(store,))
               for store in (one, two) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    answered = [a for a in answers if a in (CodeCheck.WRONG, CodeCheck.LOCKED)]
    assert len(answered) == limit - 1
    assert answers.count(CodeCheck.COPY_LOCKED) >= 6  # the limit-th try, and every one after
    assert answers.count(CodeCheck.LOCKED) <= (limit - 1) // 5  # each burnt at its fifth
    assert one.is_locked("c1") and two.is_locked("c1")


def test_requests_are_counted_per_client_and_window(store: PortalStore, database: Database
                                                    ) -> None:
    """The shared per-client count: by client and fixed window, the address kept hashed, old
    windows dropped."""
    client = "198.51.100.7"
    assert [store.count_request(client, 60.0, NOW) for _ in range(3)] == [1, 2, 3]
    assert store.count_request("203.0.113.9", 60.0, NOW) == 1
    later = NOW + timedelta(minutes=5)
    assert store.count_request(client, 60.0, later) == 1
    db = database.connect(PORTAL_DB_FILE, autocommit=True)
    rows = [tuple(row) for row in db.execute("SELECT client, slot, hits FROM portal_rate")]
    db.close()
    assert len(rows) == 1 and client not in rows[0]  # the older windows went


async def test_a_client_flooding_two_nodes_is_limited_as_on_one(
        two_nodes: tuple[PortalStore, PortalStore]) -> None:
    """The portal's per-client limit, counted in the shared store: requests alternating
    between the nodes are cut off at the same count."""
    limits = [SharedWindowLimit(store, 3, 60.0, clock=lambda: NOW) for store in two_nodes]
    answers = [await limits[i % 2].admit("198.51.100.7") for i in range(5)]
    assert answers == [True, True, True, False, False]
    assert await limits[1].admit("203.0.113.9")  # another client has its own count
