"""RCPT takes the registry's snapshot on the event loop while it holds, and never a stale one."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import App
from policies.model import Role
from tests.gateway_harness import STAFF, Harness, running_gateway
from tests.sink import Sink
from verification.registry import Registry

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
HOME = "jo.home@example.org"  # an outside address, until it is recorded as Jo's own


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with App.open(None, tmp_path / "data") as opened:
        yield opened


def verify(registry: Registry, address: str, expires_at: datetime | None = None) -> None:
    registry.add(address, case_number="ZC12C00123", role=Role.PARTY, verified_by=STAFF, now=NOW,
                 expires_at=expires_at)


def test_cached_snapshot_is_the_one_a_read_gives(app: App) -> None:
    """Before any read there is nothing to give; after one, the same answer and objects."""
    verify(app.registry, "mum@example.org")
    assert app.snapshot_at_once(NOW) is None
    read = app.snapshot(NOW)
    cached = app.snapshot_at_once(NOW)
    assert cached == read and cached is not None
    assert cached.verified is read.verified and cached.staff_personal is read.staff_personal
    assert [v.address for v in cached.verified] == ["mum@example.org"]


def test_any_write_or_expiry_is_seen(app: App) -> None:
    """A write by this connection or another, and a verification that lapsed, are never missed."""
    verify(app.registry, "mum@example.org", expires_at=NOW + timedelta(hours=1))
    app.snapshot(NOW)
    later = NOW + timedelta(hours=2)
    lapsed = app.snapshot_at_once(later)  # in memory: the rows are unchanged, the time is not
    assert lapsed == app.snapshot(later) and lapsed is not None and lapsed.verified == ()

    verify(app.registry, "dad@example.org")  # this connection
    assert app.snapshot_at_once(later) is None
    app.snapshot(later)
    other = Registry(app.database)  # another connection, as the CLI's
    try:
        other.add_staff_personal(STAFF, HOME, NOW)
    finally:
        other.close()
    assert app.snapshot_at_once(later) is None
    assert HOME in app.snapshot(later).staff_personal[STAFF]


def test_never_waits_for_the_registry(app: App) -> None:
    """While another thread holds the registry, the loop is told to use a thread, not blocked;
    a naive time is left to `snapshot`, which refuses it."""
    app.snapshot(NOW)
    with app.registry._lock:
        assert app.snapshot_at_once(NOW) is None
    assert app.snapshot_at_once(NOW.replace(tzinfo=None)) is None


def rcpt_codes(gw: Harness, address: str, times: int) -> list[int]:
    """One connection: MAIL, then RCPT `address` `times` times; the reply codes."""
    client: smtplib.SMTP = gw.connect()
    try:
        client.mail(STAFF)
        return [client.rcpt(address)[0] for _ in range(times)]
    finally:
        client.quit()


async def test_change_by_another_connection_is_seen_at_the_next_rcpt(
    tmp_path: Path, sink: Sink
) -> None:
    """A staff personal address recorded through another connection (the CLI's) is refused at
    the very next RCPT, though the RCPTs before it were answered from the cached snapshot."""
    async with running_gateway(tmp_path, sink) as gw:
        assert await gw.run(rcpt_codes, gw, HOME, 2) == [250, 250]
        assert gw.app.snapshot_at_once(datetime.now(UTC)) is not None  # the loop's path
        other = Registry(gw.app.database)
        try:
            other.add_staff_personal(STAFF, HOME)
        finally:
            other.close()
        assert await gw.run(rcpt_codes, gw, HOME, 1) == [550]
