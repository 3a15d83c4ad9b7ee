"""The case registry's store (verification/cases.py): keyed hashes only, kept across reopening,
one CaseIndex per database version, and its key file. The store's tests run on SQLite and on
PostgreSQL (the `database` fixture); two nodes on one PostgreSQL see each other's changes."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import App
from gateway.config import Config
from policies.cases import DetailKind, PersonRole, RecordKey
from tests.postgres import Cluster, copy_keys, require_server, wait_for_recovery
from transports.database import Database, DatabaseSettings, OperationalError
from verification.cases import (
    CASES_DB_FILE,
    KEY_FILE,
    AlreadyRecorded,
    CaseError,
    CaseKeyError,
    CaseStore,
    NotRecorded,
    clean_detail,
    clean_name,
    clean_recipient,
    initials_of,
    load_or_create_key,
    parse_date_of_birth,
    parse_entry_id,
)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
STAFF = "jo.bloggs@cafcass.gov.uk"
CASE = "ZC12C00123"
OTHER_CASE = "FD24P01234"
CHILD = "Ellie Mae Whitfield"
ADDRESS = "14 Larkspur Close, Leeds LS1 4AB"
KEY = bytes(range(32))


@pytest.fixture
def store(database: Database) -> Iterator[CaseStore]:
    opened = CaseStore(database, RecordKey(KEY))
    yield opened
    opened.close()


@pytest.fixture
def two_nodes(pg_nodes: tuple[Database, Database]) -> Iterator[tuple[CaseStore, CaseStore]]:
    """The case registry of two gateway nodes (data directories of their own) sharing one
    PostgreSQL database."""
    stores = [CaseStore(database, RecordKey(KEY)) for database in pg_nodes]
    try:
        yield stores[0], stores[1]
    finally:
        for opened in stores:
            opened.close()


def child(store: CaseStore, name: str = CHILD, case: str = CASE,
          dob: date | None = date(2017, 3, 4)) -> int:
    return store.add_person(case, name=name, role=PersonRole.CHILD, date_of_birth=dob,
                            by=STAFF, now=NOW).id


def address(store: CaseStore, text: str = ADDRESS, case: str = CASE) -> int:
    return store.add_detail(case, text=text, kind=DetailKind.ADDRESS,
                            may_go_to=["Solicitor@LawFirm.co.uk", "@nhs.net"], by=STAFF,
                            now=NOW).id


def file_bytes(directory: Path) -> bytes:
    """Every byte of the store's files (the database, and its WAL and index while open)."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob(f"{CASES_DB_FILE}*")))


def stored_bytes(store: CaseStore) -> bytes:
    """What the store keeps: on SQLite every byte of its files, on PostgreSQL every value of
    its tables (the server's files are not ours to read)."""
    if store.database.is_sqlite:
        return file_bytes(store.database.data_dir)
    values = [value for table in ("case_people", "case_details", "case_shields")
              for row in store._db.execute(f"SELECT * FROM {table}").fetchall()
              for value in row]
    return b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


# -- what is stored ----------------------------------------------------------------------------


def test_the_file_holds_hashes_never_names_dates_or_texts(store: CaseStore) -> None:
    """Neither while open (WAL included) nor after closing does any file of the store hold a
    name, a date of birth or a detail's text, in any case or spacing (on PostgreSQL: no value
    of its tables)."""
    child(store)
    address(store)
    store.add_person(CASE, name="Gareth Whitfield", role=PersonRole.PARTY,
                     date_of_birth=date(1985, 12, 1), by=STAFF, now=NOW)
    secrets = [b"ellie", b"whitfield", b"gareth", b"larkspur", b"ls1", b"4ab", b"2017-03-04",
               b"1985-12-01", b"leeds"]
    assert not [s for s in secrets if s in stored_bytes(store).lower()]
    if not store.database.is_sqlite:
        return
    store.close()
    raw = file_bytes(store.database.data_dir).lower()
    assert raw  # the database exists
    assert not [s for s in secrets if s in raw]


def test_what_staff_see_is_initials_role_kind_and_who(store: CaseStore) -> None:
    """An entry is shown by id, initials, role or kind, and who recorded it when."""
    child(store)
    address(store)
    record = store.case("zc12c00123")
    (person,), (detail,) = record.people, record.details
    assert (person.person_id, person.initials, person.role, person.has_date_of_birth) == (
        "P1", "E.M.W", PersonRole.CHILD, True)
    assert (person.recorded_by, person.recorded_at, person.source) == (STAFF, NOW, "cli")
    assert (detail.detail_id, detail.kind, detail.may_go_to) == (
        "D1", DetailKind.ADDRESS, ("solicitor@lawfirm.co.uk", "nhs.net"))
    assert record.shield is None and not record.empty


def test_entries_survive_reopening(database: Database) -> None:
    """People, details and a shield written by one store are there for the next, and the
    schema is not migrated twice."""
    first = CaseStore(database, RecordKey(KEY))
    child(first)
    address(first)
    first.shield(CASE, access=[STAFF], by=STAFF, now=NOW)
    first.close()
    again = CaseStore(database, RecordKey(KEY))
    try:
        record = again.case(CASE)
        assert [p.person_id for p in record.people] == ["P1"]
        assert [d.detail_id for d in record.details] == ["D1"]
        assert record.shield is not None and record.shield.access == (STAFF,)
        assert again.schema_version() == 1
        assert again.index().match(["Ellie Mae Whitfield came in"]).case_numbers == (CASE,)
    finally:
        again.close()


def test_removal_keeps_who_and_when_but_erases_the_hashes(store: CaseStore) -> None:
    """A removed person or detail stays listed with --removed, matches nothing any more, and
    its hashes are gone from the row."""
    person, detail = child(store), address(store)
    gone = store.remove_person(CASE, person, by=STAFF, now=NOW + timedelta(hours=1))
    store.remove_detail(CASE, detail, by=STAFF, now=NOW + timedelta(hours=1))
    assert (gone.removed_by, gone.removed_at) == (STAFF, NOW + timedelta(hours=1))
    assert store.case(CASE).empty
    assert len(store.case(CASE, removed=True).people) == 1
    assert not store.index().match([f"{CHILD} lives at {ADDRESS}"])
    with store._lock:
        rows = store._db.execute("SELECT name_hashes, dob_hash FROM case_people").fetchall()
        texts = store._db.execute("SELECT text_hashes FROM case_details").fetchall()
    assert [tuple(r) for r in rows] == [(None, None)] and [tuple(r) for r in texts] == [(None,)]
    with pytest.raises(NotRecorded, match="has no person P1"):
        store.remove_person(CASE, person, by=STAFF, now=NOW)


def test_the_same_entry_twice_is_refused(store: CaseStore) -> None:
    """The same name (other spacing and case) and date for the same case, or the same text,
    is already recorded; for another case, or once removed, it may be recorded again."""
    child(store)
    with pytest.raises(AlreadyRecorded, match="already recorded for case ZC12C00123 as P1"):
        child(store, name="  ellie   MAE whitfield ")
    child(store, case=OTHER_CASE)
    address(store)
    with pytest.raises(AlreadyRecorded, match="as D1"):
        address(store, text="14 larkspur close leeds ls14ab")
    store.remove_person(CASE, 1, by=STAFF, now=NOW)
    assert child(store) == 3


def test_a_second_shield_replaces_the_access_list(store: CaseStore) -> None:
    """Shielding a shielded case changes who has access; lifting it leaves no shield."""
    first, replaced = store.shield(CASE, access=[STAFF], by=STAFF, now=NOW)
    assert replaced is None
    second, replaced = store.shield(CASE, access=["Sam.Manager@cafcass.gov.uk", STAFF],
                                    by=STAFF, now=NOW)
    assert replaced == replace(first, removed_by=STAFF, removed_at=NOW)
    assert second.access == ("sam.manager@cafcass.gov.uk", STAFF)
    shielded = store.index().shielded(CASE)
    assert shielded is not None and shielded.access == second.access
    store.unshield(CASE, by=STAFF, now=NOW)
    assert store.shield_of(CASE) is None and store.index().shielded(CASE) is None
    with pytest.raises(NotRecorded, match="is not shielded"):
        store.unshield(CASE, by=STAFF, now=NOW)
    with pytest.raises(CaseError, match="at least one member of staff"):
        store.shield(CASE, access=[" "], by=STAFF, now=NOW)


def test_the_list_counts_what_is_in_force(store: CaseStore) -> None:
    child(store)
    child(store, name="Gareth Whitfield", dob=None)
    address(store)
    store.shield(OTHER_CASE, access=[STAFF], by=STAFF, now=NOW)
    store.remove_person(CASE, 2, by=STAFF, now=NOW)
    assert [s.to_json() for s in store.cases()] == [
        {"case_number": OTHER_CASE, "people": 0, "details": 0, "shielded": True},
        {"case_number": CASE, "people": 1, "details": 1, "shielded": False},
    ]


# -- the index handed to the engine ------------------------------------------------------------


def test_the_index_is_kept_while_nothing_changes(store: CaseStore) -> None:
    """The same CaseIndex object comes back until a write; `cached` answers it from memory."""
    assert store.cached() is None  # nothing read yet
    child(store)
    first = store.index()
    assert store.index() is first and store.cached() is first
    address(store)
    assert store.cached() is None
    second = store.index()
    assert second is not first and store.cached() is second
    assert second.match([ADDRESS]).details[0].detail_id == "D1"


def test_a_write_by_another_connection_is_seen(store: CaseStore, database: Database) -> None:
    """Another process (`casegate case person`) recording a person: the next index has them."""
    before = store.index()
    other = CaseStore(database, RecordKey(KEY))
    try:
        child(other)
    finally:
        other.close()
    assert store.cached() is None
    after = store.index()
    assert after is not before
    assert after.match(["Ellie Whitfield"]).people[0].person_id == "P1"


def test_a_person_recorded_on_one_node_is_matched_on_the_other_at_once(
        two_nodes: tuple[CaseStore, CaseStore]) -> None:
    """Node two has built and cached its index; a person recorded through node one is in node
    two's very next index (its cached one is stale at once), and so is the removal."""
    one, two = two_nodes
    before = two.index()
    assert two.cached() is before and not before.match([CHILD])
    person = child(one)
    assert two.cached() is None
    after = two.index()
    assert after.match([f"About {CHILD}."]).people[0].person_id == f"P{person}"
    assert two.cached() is after
    one.remove_person(CASE, person, by=STAFF, now=NOW)
    assert two.cached() is None and not two.index().match([CHILD])


def test_every_kind_of_write_on_one_node_reaches_the_other(
        two_nodes: tuple[CaseStore, CaseStore]) -> None:
    """Details, shields, their removal and a refused duplicate: node two's index follows node
    one's writes; a write that changed nothing (refused) leaves node two's index in force."""
    one, two = two_nodes
    detail = address(one)
    assert two.index().match([ADDRESS]).details[0].detail_id == f"D{detail}"
    kept = two.index()
    with pytest.raises(AlreadyRecorded):
        address(one)
    assert two.cached() is kept
    one.shield(CASE, access=[STAFF], by=STAFF, now=NOW)
    shielded = two.index().shielded(CASE)
    assert shielded is not None and shielded.access == (STAFF,)
    one.unshield(CASE, by=STAFF, now=NOW)
    one.remove_detail(CASE, detail, by=STAFF, now=NOW)
    index = two.index()
    assert index.shielded(CASE) is None and not index.match([ADDRESS])
    assert [p.person_id for p in two.case(CASE, removed=True).people] == []
    assert two.cases() == []


def test_a_bulk_load_is_seen_by_the_other_node_when_it_commits(
        two_nodes: tuple[CaseStore, CaseStore]) -> None:
    """Writes in `bulk` are one transaction: node two sees none of them until it commits, then
    all, and the one bump of the counter makes its cached index stale."""
    one, two = two_nodes
    before = two.index()
    with one.bulk():
        child(one)
        address(one)
        assert two.cached() is before and two.case(CASE).empty
    assert two.cached() is None
    after = two.index().match([f"{CHILD} lives at {ADDRESS}"])
    assert [p.person_id for p in after.people] == ["P1"]
    assert [d.detail_id for d in after.details] == ["D1"]


def test_a_bulk_load_that_fails_leaves_nothing(store: CaseStore) -> None:
    with pytest.raises(AlreadyRecorded), store.bulk():
        child(store)
        child(store)
    assert store.case(CASE).empty and not store.index().match([CHILD])


async def test_two_gateways_on_one_database_share_the_case_registry(
        pg_url: str, tmp_path: Path) -> None:
    """Two Apps (nodes) on one PostgreSQL, given the same keys as the operator distributes
    them: a person recorded through node one is in node two's very next message
    snapshot (the path a message takes: `snapshot_async`), and the removal too."""
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    def named(node: str) -> Callable[[Config], Config]:  # each node its own name
        return lambda config: replace(config, database=replace(config.database, node=node))

    with App.open(None, one_dir, database_url=pg_url, adjust=named("one")) as one:
        copy_keys(one_dir, two_dir)
        with App.open(None, two_dir, database_url=pg_url, adjust=named("two")) as two:
            assert not (await two.snapshot_async(NOW)).cases.match([CHILD])
            person = one.cases.add_person(CASE, name=CHILD, role=PersonRole.CHILD,
                                          date_of_birth=None, by=STAFF, now=NOW)
            matched = (await two.snapshot_async(NOW)).cases.match([f"About {CHILD}."])
            assert [p.person_id for p in matched.people] == [person.person_id]
            one.cases.remove_person(CASE, person.id, by=STAFF, now=NOW)
            assert not (await two.snapshot_async(NOW)).cases.match([CHILD])


def test_a_write_while_the_index_is_built_is_not_kept_stale(
        two_nodes: tuple[CaseStore, CaseStore]) -> None:
    """An index built from rows read before another node's write is not kept as current: the
    next call reads again and has the write."""
    one, two = two_nodes
    child(one)
    built = two.index()
    assert built.match([CHILD])
    address(one)
    assert two.cached() is None
    assert two.index().match([ADDRESS]).details


def test_a_database_out_of_reach_fails_the_index_not_serves_a_stale_one(
        tmp_path: Path) -> None:
    """PostgreSQL stopped: `cached`, `index` and a write raise OperationalError (the message
    waiting for them gets a temporary failure), rather than the index of before being used as
    if current; when the server is back the same store answers again, with no restart."""
    require_server()
    cluster = Cluster.start()
    database = Database.open(tmp_path, DatabaseSettings(url=cluster.url, connect_timeout=2))
    try:
        store = CaseStore(database, RecordKey(KEY))
        child(store)
        assert store.cached() is None and store.index().match([CHILD])
        cluster.run("stop")
        with pytest.raises(OperationalError):
            store.cached()
        with pytest.raises(OperationalError):
            store.index()
        with pytest.raises(OperationalError):
            address(store)
        cluster.run("restart")
        wait_for_recovery(database)
        assert store.index().match([CHILD]).people[0].person_id == "P1"
        assert address(store) == 1
        store.close()
    finally:
        database.close()
        cluster.stop()


def test_cached_never_waits_for_the_lock(store: CaseStore) -> None:
    """While another thread holds the store, `cached` says "use a thread" instead of waiting."""
    store.index()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        held.wait()
        assert store.cached() is None
    finally:
        release.set()
        thread.join()
    assert store.cached() is not None


def test_the_app_snapshot_carries_the_index(tmp_path: Path, database: Database) -> None:
    """`App.snapshot` puts the case index in `Snapshot.cases`; `snapshot_at_once` gives the same
    object once read, and None after a change until the next read (on PostgreSQL always None:
    another node may have written, and the event loop does not wait on the network)."""
    with App.open(None, tmp_path / "data", database_url=database.url or None) as app:
        assert not app.snapshot(NOW).cases.match([CHILD])
        app.cases.add_person(CASE, name=CHILD, role=PersonRole.CHILD, date_of_birth=None,
                             by=STAFF, now=NOW)
        assert app.snapshot_at_once(NOW) is None
        read = app.snapshot(NOW)
        assert read.cases.match([f"About {CHILD}."]).case_numbers == (CASE,)
        cached = app.snapshot_at_once(NOW)
        if database.is_sqlite:
            assert cached is not None and cached.cases is read.cases
        else:
            assert cached is None
            assert app.snapshot(NOW).cases is read.cases  # the index itself is kept


# -- the key -----------------------------------------------------------------------------------


def test_the_key_is_made_once_owner_only(tmp_path: Path) -> None:
    """32 random bytes, mode 0600, the same on every later load."""
    key = load_or_create_key(tmp_path)
    assert len(key) == 32 and load_or_create_key(tmp_path) == key
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("mode", "content", "problem"), [
    (0o644, bytes(32), "readable by its owner only"),
    (0o600, bytes(16), "exactly 32 bytes"),
])
def test_a_key_file_that_cannot_be_used_is_refused(tmp_path: Path, mode: int, content: bytes,
                                                   problem: str) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(content)
    os.chmod(path, mode)
    with pytest.raises(CaseKeyError, match=problem):
        load_or_create_key(tmp_path)


def test_another_key_matches_nothing(store: CaseStore, database: Database) -> None:
    """The hashes are keyed: a store opened with another key recognises nobody (so a copy of
    the database without the key file reveals nothing)."""
    child(store)
    other = CaseStore(database, RecordKey(bytes(32)))
    try:
        assert len(other.case(CASE).people) == 1
        assert not other.index().match([CHILD])
    finally:
        other.close()


# -- input checks: one sentence each -------------------------------------------------------------


@pytest.mark.parametrize(("name", "problem"), [
    ("", "give the person's full name"),
    ("   ", "give the person's full name"),
    ("Ellie", "not one word"),
    ("Ellie .", "not one word"),
    ("Ellie\x00 Smith", "control characters"),
    ("Ellie \u202eSmith", "control characters"),
    ("Ellie " + "x" * 200, "longer than 200"),
])
def test_bad_names_are_refused(name: str, problem: str) -> None:
    with pytest.raises(CaseError, match=problem):
        clean_name(name)


def test_good_names_are_tidied() -> None:
    assert clean_name("  Ellie  Mae   Whitfield ") == "Ellie Mae Whitfield"
    assert clean_name("Siân O'Brien") == "Siân O'Brien"
    assert initials_of("siân o'brien") == "S.O"


@pytest.mark.parametrize(("text", "problem"), [
    ("2099-01-01", "in the future"),
    ("2026-11-26", "in the future"),
    ("1899-12-31", "before 1900"),
    ("04/03/2017", "YYYY-MM-DD"),
    ("2017-3-4", "YYYY-MM-DD"),
    ("20170304", "YYYY-MM-DD"),
    ("2017-02-30", "YYYY-MM-DD"),
])
def test_bad_dates_of_birth_are_refused(text: str, problem: str) -> None:
    with pytest.raises(CaseError, match=problem):
        parse_date_of_birth(text, NOW.date())


def test_today_is_a_date_of_birth() -> None:
    assert parse_date_of_birth("2026-11-25", NOW.date()) == NOW.date()


@pytest.mark.parametrize(("value", "cleaned"), [
    ("Solicitor@LawFirm.co.uk", "solicitor@lawfirm.co.uk"),
    ("lawfirm.co.uk", "lawfirm.co.uk"),
    ("@NHS.net", "nhs.net"),
])
def test_recipients_are_addresses_or_domains(value: str, cleaned: str) -> None:
    assert clean_recipient(value) == cleaned


@pytest.mark.parametrize("value", ["not an address", "a@", "@", "x@localhost", "a b@c.org"])
def test_other_recipients_are_refused(value: str) -> None:
    with pytest.raises(CaseError, match="is not an email address or a domain"):
        clean_recipient(value)


@pytest.mark.parametrize("text", ["", "  \n ", "x" * 501, "a\x00b"])
def test_bad_detail_texts_are_refused(text: str) -> None:
    with pytest.raises(CaseError):
        clean_detail(text)


@pytest.mark.parametrize(("text", "number"), [("P7", 7), ("p7", 7), (" 7 ", 7)])
def test_entry_ids(text: str, number: int) -> None:
    assert parse_entry_id(text, "P") == number


@pytest.mark.parametrize("text", ["D7", "P", "P0", "P-1", "Px", "P" + "9" * 13])
def test_bad_entry_ids(text: str) -> None:
    with pytest.raises(CaseError, match="is not an id like P7"):
        parse_entry_id(text, "P")


async def test_a_rebuild_does_not_hold_up_the_stores_worker(tmp_path: Path,
                                                            database: Database) -> None:
    """After a change the next message's snapshot waits for the index to be rebuilt, but in a
    thread of its own: the stores' worker (every other message, the relay ledger) goes on."""
    with App.open(None, tmp_path / "data", database_url=database.url or None) as app:
        app.cases.add_person(CASE, name=CHILD, role=PersonRole.CHILD, date_of_birth=None,
                             by=STAFF, now=NOW)
        app.cases._building.acquire()  # a rebuild under way in another thread
        try:
            pending = asyncio.ensure_future(app.snapshot_async(NOW))
            assert await app.worker.run(lambda: "served") == "served"
            assert not pending.done()
        finally:
            app.cases._building.release()
        snapshot = await pending
        assert snapshot.cases.match([CHILD]).case_numbers == (CASE,)
        again = await app.snapshot_async(NOW)
        assert again.cases is snapshot.cases
