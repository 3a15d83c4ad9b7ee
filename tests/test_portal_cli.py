"""`casegate keys` and `casegate messages`: rotation, read status, revoke and expire."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import App
from gateway.audit.store import EventFilter
from gateway.cli import main
from gateway.stores.portal import CopyState
from transports.crypto import KEYS_FILE, Keyring, seal, unseal


def _add_copy(data: Path, copy_id: str, *, created: datetime) -> None:
    """A delivered copy sealed under the data directory's current key."""
    app = App.open(None, data)
    try:
        assert app.portal is not None and app.keyring is not None
        sealed = seal(app.keyring, b"body", copy_id=copy_id, recipient="mum@example.org")
        app.portal.add_copy(copy_id=copy_id, link_token=f"link-{copy_id}", copy_key=copy_id,
                            sender="jo.smith@cafcass.gov.uk", recipient="mum@example.org",
                            decision_id="d1", sealed=sealed, size=4, attachment_parts=[],
                            now=created, expires=created + timedelta(days=30))
        app.portal.activate(copy_id)
    finally:
        app.close()


def _kinds(data: Path) -> list[str]:
    app = App.open(None, data)
    try:
        return [e.kind for e in app.audit.iterate(EventFilter())]
    finally:
        app.close()


def test_rotate_keeps_old_copies_readable(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """After `keys rotate` the old copy still opens and `keys list` shows both keys."""
    data = tmp_path / "data"
    _add_copy(data, "c1", created=datetime.now(UTC))
    old_id = Keyring.load(data / KEYS_FILE).current_id
    assert main(["keys", "rotate", "--data", str(data)]) == 0
    ring = Keyring.load(data / KEYS_FILE)
    assert ring.current_id != old_id and len(ring.keys) == 2
    capsys.readouterr()
    assert main(["keys", "list", "--data", str(data), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["keys"]
    assert [(r["id"], r["current"], r["copies"]) for r in rows] == [
        (old_id, False, 1), (ring.current_id, True, 0)]
    app = App.open(None, data)
    try:
        assert app.portal is not None
        sealed = app.portal.sealed("c1")
        assert sealed is not None
        assert unseal(ring, sealed, copy_id="c1", recipient="mum@example.org") == b"body"
    finally:
        app.close()
    assert "key-rotated" in _kinds(data)


def test_rotate_with_keys_from_the_environment_prints_the_keyring(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With $CASEGATE_PORTAL_KEYS, rotate writes no file and prints the new keyring."""
    ring = Keyring.new()
    monkeypatch.setenv("CASEGATE_PORTAL_KEYS", ring.to_text())
    data = tmp_path / "data"
    assert main(["keys", "rotate", "--data", str(data)]) == 0
    printed = Keyring.from_text(capsys.readouterr().out)
    assert printed.keys[0] == ring.keys[0] and printed.current_id != ring.current_id
    assert not (data / KEYS_FILE).exists()


def test_messages_show_revoke_and_expire(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """list/show give read status; revoke withdraws once; expire destroys what is due."""
    data = tmp_path / "data"
    _add_copy(data, "fresh", created=datetime.now(UTC))
    _add_copy(data, "old", created=datetime.now(UTC) - timedelta(days=31))
    assert main(["messages", "list", "--data", str(data), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["messages"]
    assert {m["id"]: m["state"] for m in listed} == {"fresh": "active", "old": "active"}
    assert main(["messages", "show", "fresh", "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["first_opened"] is None
    assert main(["messages", "revoke", "fresh", "--data", str(data)]) == 0
    assert main(["messages", "revoke", "fresh", "--data", str(data)]) == 1
    assert main(["messages", "revoke", "nope", "--data", str(data)]) == 2
    assert main(["messages", "expire", "--data", str(data)]) == 0
    assert "old destroyed" in capsys.readouterr().out
    assert main(["messages", "expire", "--data", str(data)]) == 1
    app = App.open(None, data)
    try:
        assert app.portal is not None
        states = {c.id: c.state for c in app.portal.list()}
        assert states == {"fresh": CopyState.REVOKED, "old": CopyState.EXPIRED}
        assert app.portal.sealed("old") is None and app.portal.sealed("fresh") is not None
    finally:
        app.close()
    kinds = _kinds(data)
    assert kinds.count("portal-revoke") == 1 and kinds.count("portal-expiry") == 1
