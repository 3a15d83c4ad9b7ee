"""The staff account store and the `casegate users` commands."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.stores.users import (
    FILE_NAME,
    MIN_PASSWORD_CHARS,
    User,
    UserError,
    UserRole,
    UserStore,
    hash_password,
    verify_password,
)
from transports.database import Database

PASSWORD = "correct horse battery"


@pytest.fixture
def store(database: Database) -> Iterator[UserStore]:
    users = UserStore(database)
    yield users
    users.close()


def test_hash_is_salted_scrypt_and_verifies() -> None:
    """The same password hashes differently each time, and both hashes verify."""
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and first.startswith("scrypt$")
    assert verify_password(PASSWORD.encode(), first)
    assert verify_password(PASSWORD.encode(), second)
    assert not verify_password(b"wrong password!!", first)
    assert not verify_password(PASSWORD.encode(), "md5$abc")


def test_add_and_authenticate(store: UserStore) -> None:
    """A user added with roles and send-as addresses authenticates with the right password only."""
    added = store.add("Jo.Smith@Cafcass.gov.uk", PASSWORD,
                      roles=(UserRole.STAFF, UserRole.GOVERNANCE),
                      send_as=("team@cafcass.gov.uk",))
    assert added == User("jo.smith@cafcass.gov.uk", (UserRole.STAFF, UserRole.GOVERNANCE),
                         ("team@cafcass.gov.uk",))
    assert store.authenticate(b"jo.smith@cafcass.gov.uk", PASSWORD.encode()) == added
    assert store.authenticate("JO.SMITH@cafcass.gov.uk", PASSWORD) == added
    assert store.authenticate("jo.smith@cafcass.gov.uk", "not the password") is None
    assert store.authenticate("nobody@cafcass.gov.uk", PASSWORD) is None
    assert added.may_send_as("Team@Cafcass.gov.uk") and not added.may_send_as("x@cafcass.gov.uk")


def test_password_is_not_stored_in_clear(store: UserStore, database: Database) -> None:
    """The database holds a hash, never the password."""
    store.add("jo@cafcass.gov.uk", PASSWORD)
    raw = database.connect(FILE_NAME, autocommit=True)
    rows = raw.execute("SELECT password_hash FROM staff_user").fetchall()
    raw.close()
    assert PASSWORD not in rows[0][0] and rows[0][0].startswith("scrypt$")


def test_disabled_user_cannot_authenticate(store: UserStore) -> None:
    """Disabling an account stops its logins and shows in the listing."""
    store.add("jo@cafcass.gov.uk", PASSWORD)
    store.disable("jo@cafcass.gov.uk")
    assert store.authenticate("jo@cafcass.gov.uk", PASSWORD) is None
    assert [u.disabled for u in store.list()] == [True]
    with pytest.raises(UserError):
        store.disable("ghost@cafcass.gov.uk")


def test_bad_input_is_refused(store: UserStore) -> None:
    """Short passwords, invalid addresses and duplicates are refused with a sentence."""
    with pytest.raises(UserError, match="at least"):
        store.add("jo@cafcass.gov.uk", "x" * (MIN_PASSWORD_CHARS - 1))
    with pytest.raises(UserError, match="not a valid"):
        store.add("not an address", PASSWORD)
    store.add("jo@cafcass.gov.uk", PASSWORD)
    with pytest.raises(UserError, match="already"):
        store.add("JO@cafcass.gov.uk", PASSWORD)


def test_failures_take_as_long_as_successes(store: UserStore) -> None:
    """Unknown user, wrong password and right password all cost one full hash."""
    store.add("jo@cafcass.gov.uk", PASSWORD)

    def timed(address: str, password: str) -> float:
        start = time.perf_counter()
        store.authenticate(address, password)
        return time.perf_counter() - start

    right = min(timed("jo@cafcass.gov.uk", PASSWORD) for _ in range(3))
    unknown = min(timed("nobody@cafcass.gov.uk", PASSWORD) for _ in range(3))
    wrong = min(timed("jo@cafcass.gov.uk", "wrong password") for _ in range(3))
    assert unknown > right * 0.5 and wrong > right * 0.5


def _casegate(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--data", str(data)],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_add_list_disable(tmp_path: Path) -> None:
    """`casegate users` adds (password from stdin), lists and disables accounts."""
    data = tmp_path / "data"
    added = _casegate(data, "users", "add", "jo@cafcass.gov.uk", "--role", "governance",
                      "--send-as", "team@cafcass.gov.uk", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    listing = _casegate(data, "users", "list")
    assert listing.stdout.splitlines() == [
        "jo@cafcass.gov.uk\tgovernance\tteam@cafcass.gov.uk\tenabled"]
    assert _casegate(data, "users", "disable", "jo@cafcass.gov.uk").returncode == 0
    assert _casegate(data, "users", "list").stdout.strip().endswith("disabled")
    again = _casegate(data, "users", "add", "jo@cafcass.gov.uk", stdin=PASSWORD + "\n")
    assert again.returncode == 2 and "already has an account" in again.stderr
    short = _casegate(data, "users", "add", "al@cafcass.gov.uk", stdin="short\n")
    assert short.returncode == 2 and "at least" in short.stderr
