"""The registry of verified recipients and the staff personal directory, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policies.model import Role, Snapshot, Verification
from verification.registry import AlreadyVerified, Registry, RegistryError, State

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STAFF = "jo.bloggs@cafcass.gov.uk"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    store = Registry(tmp_path / "casegate.sqlite3")
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


def test_data_survives_reopening_and_the_schema_is_versioned(tmp_path: Path) -> None:
    """A registry reopened from its file has its rows, its schema version and WAL mode."""
    path = tmp_path / "casegate.sqlite3"
    first = Registry(path)
    first.add("mum@gmail.com", case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF,
              now=NOW)
    first.close()
    second = Registry(path)
    try:
        version = second.schema_version()
        assert len(second.active(NOW)) == 1
    finally:
        second.close()
    assert version >= 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT version FROM schema_version WHERE component = 'registry'"
                           ).fetchone()[0] == version
    raw.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer casegate is not silently used."""
    path = tmp_path / "casegate.sqlite3"
    Registry(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE schema_version SET version = 99 WHERE component = 'registry'")
    raw.close()
    with pytest.raises(RegistryError, match="newer casegate"):
        Registry(path)


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
