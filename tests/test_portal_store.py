"""The portal store: codes (six digits, ten minutes, single use, five tries), sessions, expiry."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.stores.portal import PORTAL_DB_FILE, CodeCheck, CopyState, PortalStore
from transports.crypto import Keyring, seal
from transports.database import Database

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PortalStore]:
    opened = PortalStore(tmp_path / PORTAL_DB_FILE)
    sealed = seal(Keyring.new(), b"x", copy_id="c1", recipient="mum@example.org")
    opened.add_copy(copy_id="c1", link_token="link-1", copy_key="k1", sender="Jo@cafcass.gov.uk",
                    recipient="mum@example.org", decision_id="d1", sealed=sealed, size=1,
                    attachment_parts=[3, 5], now=NOW, expires=NOW + timedelta(days=30))
    yield opened
    opened.close()


def test_pending_copy_is_invisible_until_activated(store: PortalStore) -> None:
    """A copy whose notification was not yet accepted opens no link and is not listed."""
    assert store.by_link("link-1") is None and store.list() == ()
    store.activate("c1")
    copy = store.by_link("link-1")
    assert copy is not None and copy.state is CopyState.ACTIVE
    assert copy.sender == "jo@cafcass.gov.uk"
    assert set(store.attachment_ids("c1")) == {3, 5}


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


def test_sessions_are_stored_hashed_and_expire(store: PortalStore, tmp_path: Path) -> None:
    """Only the token's hash is stored; a session ends at its lifetime."""
    token, session = store.create_session("c1", signed_in=True, now=NOW, lifetime_seconds=60)
    assert store.session(token, NOW) == session
    assert store.session(token, NOW + timedelta(seconds=61)) is None
    assert token.encode() not in (tmp_path / PORTAL_DB_FILE).read_bytes()


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
