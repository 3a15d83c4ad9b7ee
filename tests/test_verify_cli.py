"""`casegate verify list`, `revoke` and `bounced` with requests of the verification workflow."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import App
from gateway.cli import main
from policies.model import Role
from tests.verifykit import CASE, RECIPIENT, RECIPIENT_NAME

STAFF = "jo.smith@cafcass.gov.uk"


def run(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str]:
    """One command against `data`: (exit code, stdout without the audit lines)."""
    code = main([*argv, "--data", str(data)])
    out = capsys.readouterr().out
    return code, "".join(f"{line}\n" for line in out.splitlines() if '"audit"' not in line)


def pending_request(data: Path, address: str = RECIPIENT, hours: float = 72) -> None:
    """A request waiting for the recipient, as the workflow leaves it."""
    app = App.open(None, data)
    try:
        now = datetime.now(UTC)
        app.registry.create_request(
            address, case_number=CASE, role=Role.PARTY, name=RECIPIENT_NAME,
            requested_by=STAFF, channel="cli", token_id=f"token-{address}", code_digest="x",
            now=now - timedelta(hours=1), link_expires_at=now + timedelta(hours=hours))
    finally:
        app.close()


def test_list_shows_pending_and_expired_requests(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Requests not yet answered are listed with their state, in the table and as JSON."""
    pending_request(tmp_path)
    pending_request(tmp_path, "late@example.org", hours=-0.5)
    code, table = run(capsys, tmp_path, "verify", "list", "--case", CASE)
    assert code == 0
    assert "pending" in table and "expired" in table and f"(asked by {STAFF})" in table
    code, out = run(capsys, tmp_path, "verify", "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["address"], r["state"], r["case_number"]) for r in rows] == [
        (RECIPIENT, "pending", CASE), ("late@example.org", "expired", CASE)]


def test_revoke_withdraws_a_pending_request(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`verify revoke` on an address with only a pending request withdraws it."""
    pending_request(tmp_path)
    code, out = run(capsys, tmp_path, "verify", "revoke", RECIPIENT, "--case", CASE,
                    "--by", STAFF)
    assert (code, out.strip()) == (0, f"Withdrew 1 pending verification request of {RECIPIENT}.")
    _, listing = run(capsys, tmp_path, "verify", "list", "--json")
    assert json.loads(listing)["state"] == "revoked"


def test_bounced_revokes_every_verification_of_the_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An address whose mail bounced is no longer verified for any case."""
    with App.open(None, tmp_path) as app:
        app.users.add(STAFF, "a long passphrase")  # `verify add --by` names a staff account
    for case in (CASE, "ZC12C00999"):
        assert run(capsys, tmp_path, "verify", "add", RECIPIENT, "--case", case, "--role",
                   "party", "--by", STAFF)[0] == 0
    code, out = run(capsys, tmp_path, "verify", "bounced", RECIPIENT)
    assert (code, out.strip()) == (0, f"Revoked 2 verifications of {RECIPIENT} (bounced).")
    app = App.open(None, tmp_path)
    try:
        assert app.snapshot().verified == ()
    finally:
        app.close()
