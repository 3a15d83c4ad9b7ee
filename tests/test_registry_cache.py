"""The registry keeps its snapshot between reads, and never serves one that is out of date (on
SQLite and on PostgreSQL: the `database` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from policies.model import Role, Snapshot, Verification
from transports.database import Database
from verification.registry import Registry

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
STAFF = "jo.bloggs@cafcass.gov.uk"


@pytest.fixture
def registry(database: Database) -> Iterator[Registry]:
    store = Registry(database)
    yield store
    store.close()


def verify(registry: Registry, address: str, expires_at: datetime | None = None) -> None:
    registry.add(address, case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF, now=NOW,
                 expires_at=expires_at)


def addresses(registry: Registry, now: datetime) -> list[str]:
    return [v.address for v in registry.active(now)]


def test_unchanged_registry_gives_the_same_objects(registry: Registry) -> None:
    """With no write in between, the same tuple and mapping come back (the engine keys on them)."""
    verify(registry, "mum@gmail.com")
    registry.add_staff_personal(STAFF, "jo.b@gmail.com", NOW)
    assert registry.active(NOW) is registry.active(NOW + timedelta(hours=1))
    assert registry.staff_personal() is registry.staff_personal()


def test_current_answers_both_as_the_two_calls(registry: Registry) -> None:
    """`current` gives the very objects `active` and `staff_personal` give, and a write shows
    in its next answer."""
    verify(registry, "mum@gmail.com")
    registry.add_staff_personal(STAFF, "jo.b@gmail.com", NOW)
    verified, staff = registry.current(NOW)
    assert verified is registry.active(NOW) and staff is registry.staff_personal()
    registry.revoke("mum@gmail.com", by=STAFF, now=NOW)
    assert registry.current(NOW)[0] == ()


def test_own_writes_are_seen_at_once(registry: Registry) -> None:
    """An add, a revoke and a new personal address show in the very next read."""
    assert registry.active(NOW) == ()
    verify(registry, "mum@gmail.com")
    assert registry.active(NOW) == (Verification("mum@gmail.com", "ZC12C00123", Role.PARTY),)
    registry.revoke("mum@gmail.com", by=STAFF, now=NOW)
    assert registry.active(NOW) == ()
    assert registry.staff_personal() == {}
    registry.add_staff_personal(STAFF, "jo.b@gmail.com", NOW)
    assert registry.staff_personal() == {STAFF: ("jo.b@gmail.com",)}


def test_writes_by_another_connection_are_seen(registry: Registry, database: Database) -> None:
    """A write through another connection (another process: `casegate verify add`) is seen."""
    verify(registry, "mum@gmail.com")
    before = registry.active(NOW)
    other = Registry(database)
    try:
        verify(other, "dad@gmail.com")
        other.add_staff_personal(STAFF, "jo.b@gmail.com", NOW)
        assert addresses(registry, NOW) == ["mum@gmail.com", "dad@gmail.com"]
        assert registry.staff_personal() == {STAFF: ("jo.b@gmail.com",)}
        other.revoke("mum@gmail.com", by=STAFF, now=NOW)
    finally:
        other.close()
    assert addresses(registry, NOW) == ["dad@gmail.com"]
    assert before == (Verification("mum@gmail.com", "ZC12C00123", Role.PARTY),)


def test_expiry_is_applied_as_time_passes_and_when_it_goes_back(registry: Registry) -> None:
    """With no write at all, an entry drops out at its expiry and is back for an earlier time."""
    verify(registry, "mum@gmail.com", expires_at=NOW + timedelta(days=1))
    verify(registry, "dad@gmail.com", expires_at=NOW + timedelta(days=2))
    verify(registry, "clerk@smith-law.co.uk")
    everyone = ["mum@gmail.com", "dad@gmail.com", "clerk@smith-law.co.uk"]
    assert addresses(registry, NOW) == everyone
    almost = NOW + timedelta(days=1) - timedelta(seconds=1)
    assert addresses(registry, almost) == everyone
    assert addresses(registry, NOW + timedelta(days=1)) == everyone[1:]
    assert addresses(registry, NOW + timedelta(days=3)) == everyone[2:]
    assert addresses(registry, NOW) == everyone


def test_snapshot_lookups_follow_the_snapshot_they_are_asked_of() -> None:
    """Alternating between two snapshots, each answers from its own verifications."""
    mum = Verification("mum@gmail.com", "ZC12C00123", Role.PARTY)
    dad = Verification("dad@gmail.com", None, Role.PARTY)
    first, second = Snapshot(NOW, (mum,)), Snapshot(NOW, (dad, mum))
    for _ in range(2):
        assert first.is_verified("Mum@gmail.com", ("ZC12C00123",))
        assert not first.is_verified("dad@gmail.com", ())
        assert second.is_verified("dad@gmail.com", ("ZC12C00999",))
        assert not second.is_verified("mum@gmail.com", ("ZC12C00999",))
        assert not Snapshot(NOW).is_verified("mum@gmail.com", ())
