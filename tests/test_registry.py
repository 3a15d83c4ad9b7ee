"""The registry of verified recipients and the staff personal directory, on a real SQLite file
and on a real PostgreSQL database (the `database` fixture), and on two nodes sharing one."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policies.model import Role, Snapshot, Verification
from tests.verifykit import confirm_at_once
from transports.database import Database, statements
from verification.registry import (
    _MIGRATIONS,
    FILE_NAME,
    AlreadyVerified,
    Registry,
    RegistryError,
    State,
)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STAFF = "jo.bloggs@cafcass.gov.uk"


@pytest.fixture
def registry(database: Database) -> Iterator[Registry]:
    store = Registry(database)
    yield store
    store.close()


def test_add_and_active_give_the_engine_its_verifications(registry: Registry) -> None:
    """Case-scoped and organisation-wide entries come back as Verification values."""
    registry.add("Mum@Gmail.com", case_number="zc12c00123", role=Role.PARTY, verified_by=STAFF,
                 now=NOW, name="Mary Smith")
    registry.add("clerk@smith-law.co.uk", case_number=None, role=Role.PROFESSIONAL,
                 verified_by=STAFF, now=NOW)
    assert registry.active(NOW) == (
        Verification("mum@gmail.com", "ZC12C00123", Role.PARTY),
        Verification("clerk@smith-law.co.uk", None, Role.PROFESSIONAL),
    )


def test_entries_record_who_when_and_how(registry: Registry) -> None:
    """Each row keeps the verifier, the time, the method and the name."""
    entry = registry.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY,
                         verified_by="Jo.Bloggs@Cafcass.gov.uk", now=NOW, name=" Mary Smith ")
    [stored] = registry.entries()
    assert stored == entry
    assert (stored.verified_by, stored.verified_at, stored.method, stored.name) == (
        STAFF, NOW, "manual", "Mary Smith")
    assert stored.state is State.VERIFIED
    assert stored.scope == "ZC12C00123"


def test_the_same_address_and_scope_cannot_be_verified_twice(registry: Registry) -> None:
    """A second add for the same case says it is already verified; another case is separate."""
    registry.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
                 now=NOW)
    with pytest.raises(AlreadyVerified, match="already verified for case ZC12C00123"):
        registry.add("MUM@gmail.com", case_number="zc12c00123", role=Role.PARTY,
                     verified_by=STAFF, now=NOW)
    registry.add("mum@gmail.com", case_number="ZC12C00456", role=Role.PARTY, verified_by=STAFF,
                 now=NOW)
    assert len(registry.active(NOW)) == 2


def test_revoke_one_case_leaves_the_other(registry: Registry) -> None:
    """Revoking for case A keeps the verification for case B in force."""
    for case in ("ZC12C00123", "ZC12C00456"):
        registry.add("mum@gmail.com", case_number=case, role=Role.PARTY, verified_by=STAFF,
                     now=NOW)
    later = NOW + timedelta(hours=1)
    assert registry.revoke("mum@gmail.com", by=STAFF, now=later, case_number="ZC12C00123") == 1
    assert registry.active(later) == (Verification("mum@gmail.com", "ZC12C00456", Role.PARTY),)
    revoked = [e for e in registry.entries() if e.state is State.REVOKED]
    assert [(e.case_number, e.revoked_at, e.revoked_by) for e in revoked] == [
        ("ZC12C00123", later, STAFF)]


def test_revoke_organisation_wide_only_or_everything(registry: Registry) -> None:
    """--organisation revokes only the directory entry; no scope revokes every entry."""
    registry.add("gp@nhs.net", case_number=None, role=Role.PROFESSIONAL, verified_by=STAFF,
                 now=NOW)
    registry.add("gp@nhs.net", case_number="ZC12C00123", role=Role.PROFESSIONAL,
                 verified_by=STAFF, now=NOW)
    assert registry.revoke("gp@nhs.net", by=STAFF, now=NOW, organisation=True) == 1
    assert registry.active(NOW) == (Verification("gp@nhs.net", "ZC12C00123", Role.PROFESSIONAL),)
    assert registry.revoke("gp@nhs.net", by=STAFF, now=NOW) == 1
    assert registry.active(NOW) == ()
    assert registry.revoke("gp@nhs.net", by=STAFF, now=NOW) == 0


def test_a_revoked_address_can_be_verified_again(registry: Registry) -> None:
    """Revocation keeps the history row and allows a fresh verification."""
    registry.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
                 now=NOW)
    registry.revoke("mum@gmail.com", by=STAFF, now=NOW)
    registry.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
                 now=NOW)
    assert [e.state for e in registry.entries()] == [State.REVOKED, State.VERIFIED]


def test_expiry_uses_the_clock_passed_in(registry: Registry) -> None:
    """An entry past its expiry is not active and is listed as expired."""
    registry.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
                 now=NOW, expires_at=NOW + timedelta(days=90))
    assert len(registry.active(NOW + timedelta(days=89))) == 1
    assert registry.active(NOW + timedelta(days=90)) == ()
    assert registry.entries(now=NOW + timedelta(days=91))[0].state is State.EXPIRED
    assert registry.entries()[0].state is State.VERIFIED


def test_entries_filter_by_case(registry: Registry) -> None:
    """entries(case_number=...) lists only that case's rows."""
    registry.add("a@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
                 now=NOW)
    registry.add("b@gmail.com", case_number="ZC12C00456", role=Role.PARTY, verified_by=STAFF,
                 now=NOW)
    assert [e.address for e in registry.entries(case_number="zc12c00456")] == ["b@gmail.com"]


def test_naive_times_are_refused(registry: Registry) -> None:
    """Times must carry a zone, so nothing is stored in local time by accident."""
    with pytest.raises(ValueError, match="timezone-aware"):
        registry.add("a@gmail.com", case_number=None, role=Role.PARTY, verified_by=STAFF,
                     now=datetime(2026, 1, 5, 9, 0))


def test_staff_personal_directory(registry: Registry) -> None:
    """Personal addresses are kept per staff member, lower-cased, without duplicates."""
    assert registry.add_staff_personal(STAFF, "JoJo1975@Yahoo.com", NOW)
    assert not registry.add_staff_personal(STAFF, "jojo1975@yahoo.com", NOW)
    assert registry.add_staff_personal(STAFF, "jo@outlook.com", NOW)
    assert registry.add_staff_personal("sam@cafcass.gov.uk", "sam@gmail.com", NOW)
    assert dict(registry.staff_personal()) == {
        STAFF: ("jo@outlook.com", "jojo1975@yahoo.com"),
        "sam@cafcass.gov.uk": ("sam@gmail.com",),
    }


def test_data_survives_reopening_and_the_schema_is_versioned(database: Database) -> None:
    """A registry reopened has its rows and its schema version (and, on SQLite, WAL mode)."""
    first = Registry(database)
    first.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
              now=NOW)
    first.close()
    second = Registry(database)
    try:
        version = second.schema_version()
        assert len(second.active(NOW)) == 1
    finally:
        second.close()
    assert version >= 3
    raw = database.connect(FILE_NAME, autocommit=True)
    try:
        assert raw.execute("SELECT version FROM schema_version WHERE component = 'registry'"
                           ).fetchone()[0] == version
        if database.is_sqlite:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()


def test_a_newer_schema_is_refused(database: Database) -> None:
    """Tables written by a newer casegate are not silently used."""
    Registry(database).close()
    raw = database.connect(FILE_NAME, autocommit=True)
    raw.execute("UPDATE schema_version SET version = 99 WHERE component = 'registry'")
    raw.close()
    with pytest.raises(RegistryError, match="newer casegate"):
        Registry(database)


def test_a_file_of_the_schema_before_several_nodes_is_brought_up(tmp_path: Path) -> None:
    """An SQLite file made at registry schema 2 (before the change counter) gains it on opening
    and keeps its rows; writes then bump the counter."""
    with sqlite3.connect(tmp_path / FILE_NAME) as raw:
        raw.execute("CREATE TABLE schema_version (component TEXT PRIMARY KEY, "
                    "version INTEGER NOT NULL)")
        raw.execute("INSERT INTO schema_version VALUES ('registry', 2)")
        for script in _MIGRATIONS[:2]:
            for statement in statements(script):
                raw.execute(statement)
        raw.execute("INSERT INTO verified_recipients (address, case_number, role, verified_by, "
                    "verified_at, method, state) VALUES ('mum@gmail.com', 'ZC12C00123', "
                    "'party', ?, ?, 'manual', 'verified')", (STAFF, NOW.isoformat()))
    raw.close()
    registry = Registry(Database.open(tmp_path))
    try:
        assert registry.schema_version() == 3
        assert [v.address for v in registry.active(NOW)] == ["mum@gmail.com"]
        registry.add("dad@gmail.com", case_number=None, role=Role.PARTY, verified_by=STAFF,
                     now=NOW)
    finally:
        registry.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as raw:
        assert raw.execute("SELECT counter FROM registry_changes").fetchone()[0] == 1
    raw.close()


def test_the_schema_rejects_an_unknown_role(registry: Registry) -> None:
    """Only party and professional are roles."""
    with pytest.raises(ValueError):
        registry.add("a@gmail.com", case_number=None, role="judge",  # type: ignore[arg-type]
                     verified_by=STAFF, now=NOW)


def test_concurrent_adds_from_threads_all_land(registry: Registry) -> None:
    """Threads sharing one registry (as the server's executor does) lose no writes."""
    def add_many(worker: int) -> None:
        for i in range(25):
            registry.add(f"p{worker}-{i}@gmail.com", case_number="ZC12C00123", role=Role.PARTY,
                         verified_by=STAFF, now=NOW)

    threads = [threading.Thread(target=add_many, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry.active(NOW)) == 100


def test_snapshot_from_the_registry_verifies_for_the_right_case(registry: Registry) -> None:
    """The registry's active list, put in a Snapshot, answers ruling 3 correctly."""
    registry.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
                 now=NOW)
    snapshot = Snapshot(now=NOW, verified=registry.active(NOW),
                        staff_personal=registry.staff_personal())
    assert snapshot.is_verified("mum@gmail.com", ("ZC12C00123",))
    assert not snapshot.is_verified("mum@gmail.com", ("ZC12C00456",))


# ---- two nodes on one PostgreSQL database (issue 15) --------------------------------------


@pytest.fixture
def two_nodes(pg_nodes: tuple[Database, Database]) -> Iterator[tuple[Registry, Registry]]:
    """Two gateways' registries on one database, as two nodes have them."""
    registries = [Registry(engine) for engine in pg_nodes]
    try:
        yield registries[0], registries[1]
    finally:
        for registry in registries:
            registry.close()


def test_a_verification_confirmed_on_one_node_is_in_force_on_the_other(
        two_nodes: tuple[Registry, Registry]) -> None:
    """Node two has the verifications cached; node one confirms a request: node two's very
    next `active` has it, and a revocation on node two is gone from node one at once."""
    one, two = two_nodes
    two.add("clerk@smith-law.co.uk", case_number=None, role=Role.PROFESSIONAL,
            verified_by=STAFF, now=NOW)
    cached = two.active(NOW)
    assert two.active(NOW) is cached and two.staff_personal() == {}
    request = one.create_request(
        "mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, name="Mary Smith",
        requested_by=STAFF, channel="http", token_id="t" * 24, code_digest="d", now=NOW,
        link_expires_at=NOW + timedelta(hours=1))
    assert two.active(NOW) is cached  # a request is not a verification: the cache stands
    assert one.confirm_request(request.id, now=NOW, method="code", expires_at=None) is not None
    assert two.active(NOW) == (
        Verification("clerk@smith-law.co.uk", None, Role.PROFESSIONAL),
        Verification("mum@gmail.com", "ZC12C00123", Role.PARTY))
    one.add_staff_personal(STAFF, "jo.b@gmail.com", NOW)
    assert two.current(NOW)[1] == {STAFF: ("jo.b@gmail.com",)}
    assert two.staff_personal() == {STAFF: ("jo.b@gmail.com",)}
    assert one.active(NOW) == two.active(NOW)
    assert two.revoke("mum@gmail.com", by=STAFF, now=NOW) == 1
    assert one.active(NOW) == (Verification("clerk@smith-law.co.uk", None, Role.PROFESSIONAL),)


def test_on_postgresql_the_event_loop_is_never_answered_from_memory(
        two_nodes: tuple[Registry, Registry]) -> None:
    """`cached` needs the server to know whether another node wrote, so on PostgreSQL it is
    always None (the caller reads in a worker thread); the read it sends to is up to date."""
    one, two = two_nodes
    two.active(NOW)
    two.staff_personal()
    assert two.cached(NOW) is None
    one.add("mum@gmail.com", case_number=None, role=Role.PARTY, verified_by=STAFF, now=NOW)
    assert two.cached(NOW) is None
    assert [v.address for v in two.active(NOW)] == ["mum@gmail.com"]


def test_two_nodes_confirming_one_request_at_once_verify_it_once(
        two_nodes: tuple[Registry, Registry]) -> None:
    """The same link answered through both nodes at the same moment: exactly one wins."""
    one, two = two_nodes
    request = one.create_request(
        "mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, name="Mary Smith",
        requested_by=STAFF, channel="http", token_id="t" * 24, code_digest="d", now=NOW,
        link_expires_at=NOW + timedelta(hours=1))
    results = confirm_at_once((one, two), request.id, NOW, "code")
    assert sorted(result is None for result in results) == [False, True]
    assert len(one.entries()) == 1 and len(two.active(NOW)) == 1


def test_a_lost_change_counter_comes_back_at_the_next_write(
        two_nodes: tuple[Registry, Registry]) -> None:
    """With the counter row gone (a table emptied by hand), the next write makes it again and
    the other node's cache sees the change."""
    one, two = two_nodes
    raw = one.database.connect(FILE_NAME, autocommit=True)
    raw.execute("DELETE FROM registry_changes")
    raw.close()
    assert two.active(NOW) == ()
    one.add("mum@gmail.com", case_number=None, role=Role.PARTY, verified_by=STAFF, now=NOW)
    assert [v.address for v in two.active(NOW)] == ["mum@gmail.com"]
