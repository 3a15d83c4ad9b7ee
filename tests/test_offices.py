"""The office directory's store (gateway/stores/offices.py) on SQLite and on PostgreSQL: names
case-insensitive and kept as typed, teams in the order they were added, a data directory made
before schema versions were recorded, and two nodes on one PostgreSQL."""

from __future__ import annotations

import io
import sqlite3
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from gateway.audit.trail import AuditLog, EventFilter
from gateway.printed.offices import DispatchStore
from gateway.stores.offices import OFFICES_DB_FILE, Dx, OfficeError, OfficeRegistry
from policies.post import PostOptions
from transports.database import Database, schema_versions

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BY = "bs.manager@cafcass.gov.uk"
OPTIONS = PostOptions.from_table(
    tomllib.loads(resources.files("policies").joinpath("data/post.toml").read_text("utf-8"))
    ["post"], "policies/data/post.toml")


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    (tmp_path / "audit").mkdir()
    log = AuditLog.open(Database.open(tmp_path / "audit"), clock=lambda: T0,
                        stream=io.StringIO())
    yield log
    log.close()


@pytest.fixture
def offices(database: Database, audit: AuditLog) -> Iterator[OfficeRegistry]:
    opened = OfficeRegistry(database, audit)
    yield opened
    opened.close()


def test_names_are_case_insensitive_and_kept_as_typed(offices: OfficeRegistry) -> None:
    """An office or team named again in another case is the same name: adding teams to
    "BLOOMSBURY" changes Bloomsbury, a team "LEGAL team" is not added twice, and the names
    stay as first typed."""
    offices.add("Bloomsbury", options=OPTIONS, teams=["Legal Team"], by=BY, now=T0)
    changed = offices.add("BLOOMSBURY", options=OPTIONS, teams=["LEGAL team", "London Central"],
                          by=BY, now=T0)
    assert changed.created is False and changed.changed is True
    assert changed.office.name == "Bloomsbury"
    assert changed.office.teams == ("Legal Team", "London Central")
    again = offices.add("bloomsbury", options=OPTIONS, teams=["london central"], by=BY, now=T0)
    assert (again.created, again.changed) == (False, False)
    assert offices.directory().resolve("legal TEAM", OPTIONS).name == "Bloomsbury"


@pytest.mark.parametrize(("name", "teams", "says"), [
    ("coventry", [], None),
    ("Leeds", ["BLOOMSBURY"], "'BLOOMSBURY' is already an office"),
    ("Leeds", ["legal team"], "'legal team' is already a team of Bloomsbury"),
    ("LEGAL TEAM", [], "'LEGAL TEAM' is already a team of Bloomsbury"),
])
def test_a_name_names_one_office_in_any_case(offices: OfficeRegistry, name: str,
                                             teams: list[str], says: str | None) -> None:
    offices.add("Bloomsbury", options=OPTIONS, teams=["Legal Team"], by=BY, now=T0)
    offices.add("Coventry", options=OPTIONS, dx=Dx.NONE, by=BY, now=T0)
    if says is None:
        assert offices.add(name, options=OPTIONS, teams=teams, by=BY, now=T0).created is False
        return
    with pytest.raises(OfficeError, match=says):
        offices.add(name, options=OPTIONS, teams=teams, by=BY, now=T0)
    assert [o.name for o in offices.offices()] == ["Bloomsbury", "Coventry"]


def test_offices_by_name_and_teams_in_the_order_added(offices: OfficeRegistry,
                                                      audit: AuditLog) -> None:
    """The list is by name whatever its case; each office's teams in the order they were
    added (not by name); DX as given, as 0/1 in the database; every change audited."""
    offices.add("warrington", options=OPTIONS, teams=["Zeta Team", "Alpha Team"], by=BY,
                now=T0)
    offices.add("Bloomsbury", options=OPTIONS, teams=["Legal Team"], by=BY, now=T0)
    offices.add("coventry", options=OPTIONS, dx=Dx.NONE, by=BY, now=T0)
    offices.add("Warrington", options=OPTIONS, teams=["Middle Team"], dx=Dx.INCOMING, by=BY,
                now=T0)
    listed = offices.offices()
    assert [o.name for o in listed] == ["Bloomsbury", "coventry", "warrington"]
    assert listed[2].teams == ("Zeta Team", "Alpha Team", "Middle Team")
    assert (listed[2].dx_outgoing, listed[2].dx_incoming) == (False, True)
    assert (listed[1].dx_outgoing, listed[1].dx_incoming) == (False, False)
    kinds = [e.kind for e in audit.iterate(EventFilter()) if e.kind.startswith("office-")]
    assert kinds == ["office-added", "office-added", "office-added", "office-changed"]


def test_a_directory_made_before_schema_versions_opens_as_it_was(tmp_path: Path,
                                                                 audit: AuditLog) -> None:
    """offices.sqlite3 as casegate wrote it before versions (its tables, no schema_version):
    opened, it keeps its offices, teams and dispatches (new ones numbered after them), and
    records version 1 of both stores."""
    old = sqlite3.connect(tmp_path / OFFICES_DB_FILE)
    old.executescript("""
        CREATE TABLE office (name TEXT PRIMARY KEY COLLATE NOCASE, dx_outgoing INTEGER NOT NULL,
            dx_incoming INTEGER NOT NULL, added_at TEXT NOT NULL, added_by TEXT NOT NULL);
        CREATE TABLE office_team (team TEXT PRIMARY KEY COLLATE NOCASE,
            office TEXT NOT NULL REFERENCES office (name));
        INSERT INTO office VALUES ('Bloomsbury', 1, 1, '2026-01-01T00:00:00.000000Z', 'x');
        INSERT INTO office_team VALUES ('Legal Team', 'Bloomsbury');
        INSERT INTO office_team VALUES ('Archive Team', 'Bloomsbury');
        CREATE TABLE dispatches (id INTEGER PRIMARY KEY AUTOINCREMENT,
            file_reference TEXT NOT NULL, from_office TEXT NOT NULL, to_office TEXT NOT NULL,
            method TEXT NOT NULL, tracking_reference TEXT NOT NULL, expected_at TEXT NOT NULL,
            dispatched_at TEXT NOT NULL, dispatched_by TEXT NOT NULL, received_at TEXT,
            received_by TEXT, location TEXT);
        CREATE INDEX dispatches_open ON dispatches (received_at, expected_at);
        INSERT INTO dispatches (file_reference, from_office, to_office, method,
            tracking_reference, expected_at, dispatched_at, dispatched_by) VALUES
            ('ZC12C00123', 'Coventry', 'Bloomsbury', 'hand-delivery', '',
             '2026-03-03T09:00:00.000000Z', '2026-03-02T09:00:00.000000Z', 'x');
    """)
    old.close()
    database = Database.open(tmp_path)
    offices = OfficeRegistry(database, audit)
    dispatches = DispatchStore(database, OPTIONS, audit, offices=offices)
    try:
        [old_dispatch] = dispatches.dispatches(office="bloomsbury")
        assert (old_dispatch.id, old_dispatch.from_office) == (1, "Coventry")
        later = dispatches.record(file_reference="ZC12C00124", from_office="Coventry",
                                  to_office="Legal Team", method="hand-delivery",
                                  expected_at=T0, by=BY, now=T0)
        assert later.id == 2 and later.to_office == "Bloomsbury"
        [office] = offices.offices()
        assert (office.name, office.teams) == ("Bloomsbury", ("Legal Team", "Archive Team"))
        with pytest.raises(OfficeError, match="already a team of Bloomsbury"):
            offices.add("legal team", options=OPTIONS, by=BY, now=T0)
    finally:
        dispatches.close()
        offices.close()
    db = sqlite3.connect(tmp_path / OFFICES_DB_FILE)
    try:
        assert schema_versions(db) == {"offices": 1, "dispatches": 1}
    finally:
        db.close()


def test_an_office_added_on_one_node_names_it_on_the_other(
        pg_nodes: tuple[Database, Database], audit: AuditLog) -> None:
    """Two nodes on one PostgreSQL: an office and its team added through node one are known,
    in any case, to node two, which cannot add the same name again in another case."""
    one, two = (OfficeRegistry(database, audit) for database in pg_nodes)
    try:
        one.add("Bloomsbury", options=OPTIONS, teams=["Legal Team"], by=BY, now=T0)
        assert two.directory().resolve("LEGAL TEAM", OPTIONS).name == "Bloomsbury"
        with pytest.raises(OfficeError, match="already an office"):
            two.add("Leeds", options=OPTIONS, teams=["bloomsbury"], by=BY, now=T0)
        two.add("bloomsbury", options=OPTIONS, teams=["Archive Team"], by=BY, now=T0)
        assert one.offices()[0].teams == ("Legal Team", "Archive Team")
    finally:
        one.close()
        two.close()
