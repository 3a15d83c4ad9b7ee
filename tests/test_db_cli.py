"""`casegate db migrate` and `casegate db copy` (issue 15): every store's schema version on
either engine, and a single-node SQLite installation moved into PostgreSQL with its accounts,
registry, case registry and audit chain intact, refused when the target holds data or the
relay journal is not folded."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import App
from gateway.cli import main
from policies.cases import PersonRole
from policies.model import Role

STAFF = "jo.smith@cafcass.gov.uk"
CASE = "FD24P01234"
CHILD = "Ellie Whitfield"
MUM = "mum@example.org"
COMPONENTS = {"audit", "cases", "key-fingerprints", "ledger", "portal", "registry", "users"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_migrate_reports_every_store(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     engine: str, request: pytest.FixtureRequest,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if engine == "postgresql":
        monkeypatch.setenv("CASEGATE_DATABASE_URL", request.getfixturevalue("pg_url"))
    config = tmp_path / "casegate.toml"
    config.write_text('[upstream]\nhost = "127.0.0.1"\nport = 2525\ntls = "none"\n')
    code, out, err = run(capsys, "db", "migrate", "--config", str(config), "--data",
                         str(tmp_path / "data"), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert COMPONENTS <= set(report["versions"]), report
    assert all(version >= 1 for version in report["versions"].values())
    assert ("postgresql://" in report["database"]) == (engine == "postgresql")
    code, again, _ = run(capsys, "db", "migrate", "--config", str(config), "--data",
                         str(tmp_path / "data"), "--json")
    assert code == 0 and json.loads(again)["versions"] == report["versions"]


def single_node(data: Path) -> int:
    """A SQLite installation in use; the number of audit events it holds."""
    now = datetime.now(UTC)
    with App.open(None, data) as app:
        app.users.add(STAFF, "a long passphrase for the test")
        app.registry.add(MUM, case_number=CASE, role=Role.PARTY, verified_by=STAFF, now=now)
        app.casework().record_person(CASE, name=CHILD, role=PersonRole.CHILD,
                                     date_of_birth=None, by=STAFF, channel="cli")
        head, _ = app.audit.store.head()
    return head


def test_copy_moves_an_installation_whole(tmp_path: Path, pg_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    events = single_node(data)
    code, out, err = run(capsys, "db", "copy", "--from", f"sqlite:{data}", "--to", pg_url)
    assert code == 0, err + out
    assert f"the audit trail verifies there ({events} events)" in out
    with App.open(None, data, database_url=pg_url) as app:  # the same keys, on PostgreSQL
        assert app.users.get(STAFF) is not None
        assert app.snapshot(datetime.now(UTC)).is_verified(MUM, (CASE,))
        assert app.cases.index().match([f"About {CHILD}."]).case_numbers == (CASE,)
        assert app.audit.verify() is None
        assert app.audit.store.head()[0] >= events
    code, _, err = run(capsys, "db", "copy", "--from", f"sqlite:{data}", "--to", pg_url)
    assert code == 2 and "already holds casegate data" in err


def test_copy_refuses_an_unfolded_journal_and_a_non_postgresql_target(
        tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    single_node(data)
    code, _, err = run(capsys, "db", "copy", "--from", f"sqlite:{data}", "--to",
                       "mysql://db/casegate")
    assert code == 2 and "postgresql://" in err
    code, _, err = run(capsys, "db", "copy", "--from", str(data), "--to", pg_url)
    assert code == 2 and "sqlite:DIR" in err
    (data / "relay-ledger.sqlite3.journal.1").write_text("x")
    code, _, err = run(capsys, "db", "copy", "--from", f"sqlite:{data}", "--to", pg_url)
    assert code == 2 and "not yet in the ledger" in err


def test_a_database_that_cannot_be_reached_is_one_sentence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No server at the URL: exit 2, a sentence naming the database (password hidden) and
    what to check, not "the data directory cannot be used"."""
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "casegate.toml"
    config.write_text(f'[database]\nurl = "postgresql://casegate:secret@127.0.0.1:{port}/x"\n'
                      "connect_timeout = 1\n")
    code, _, err = run(capsys, "db", "migrate", "--config", str(config), "--data",
                       str(tmp_path / "data"))
    assert code == 2
    assert f"the database postgresql://casegate:***@127.0.0.1:{port}/x cannot be used" in err
    assert "secret" not in err and "data directory" not in err
