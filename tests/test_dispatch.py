"""Paper between offices (RRP 4.9, 4.10): record, receive, overdue, responsibility, audit.
On SQLite and on PostgreSQL (the `database` fixture); two nodes on one PostgreSQL list the
same dispatches."""

from __future__ import annotations

import io
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.trail import AuditLog, EventFilter, StoredEvent
from gateway.printed.offices import Dispatch, DispatchError, DispatchRefused, DispatchStore
from gateway.stores.offices import Dx, OfficeRegistry
from policies.post import PostOptions
from transports.database import Database, DatabaseSettings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def post_options() -> PostOptions:
    text = resources.files("policies").joinpath("data/post.toml").read_text("utf-8")
    return PostOptions.from_table(tomllib.loads(text)["post"], "policies/data/post.toml")


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    """A real audit trail in tmp_path, its JSON lines kept off the test output."""
    log = AuditLog.open(Database.open(tmp_path / "audit"), clock=lambda: T0, stream=io.StringIO())
    yield log
    log.close()


@pytest.fixture
def store(database: Database, audit: AuditLog) -> Iterator[DispatchStore]:
    """A dispatch store on a real SQLite file, or a real PostgreSQL."""
    opened = DispatchStore(database, post_options(), audit)
    yield opened
    opened.close()


def dispatch_events(audit: AuditLog) -> list[StoredEvent]:
    return [e for e in audit.iterate(EventFilter()) if e.kind.startswith("dispatch-")]


def record(store: DispatchStore, **changes: Any) -> Dispatch:
    values: dict[str, Any] = {
        "file_reference": "ZC12C00123",
        "from_office": "Coventry",
        "to_office": "Bloomsbury",
        "method": "special-delivery-guaranteed",
        "tracking_reference": "AB123456789GB",
        "expected_at": T0 + timedelta(days=1),
        "by": "bs.manager@cafcass.gov.uk",
        "now": T0,
    }
    values.update(changes)
    return store.record(**values)


def test_sender_is_responsible_until_receipt(store: DispatchStore, audit: AuditLog) -> None:
    """The sending office holds responsibility until the receiving office signs for the file."""
    sent = record(store)
    assert sent.responsible_office == "Coventry" and not sent.received
    got = store.receive(sent.id, office="bloomsbury", by="bs.b@cafcass.gov.uk",
                        location="Cabinet 3, second floor", now=T0 + timedelta(hours=20))
    assert got.received and got.responsible_office == "Bloomsbury"
    assert got.location == "Cabinet 3, second floor"
    assert got.received_at == T0 + timedelta(hours=20)
    events = dispatch_events(audit)
    assert [e.kind for e in events] == ["dispatch-recorded", "dispatch-received"]
    assert events[0].metadata["responsible_office"] == "Coventry"
    assert events[1].metadata["responsible_office"] == "Bloomsbury"
    assert events[1].sender == "bs.b@cafcass.gov.uk"
    assert all(e.rule == "case-file-transfer" and "RRP 4.9" in e.citation for e in events)


def test_overdue_uses_the_clock_it_is_given(store: DispatchStore) -> None:
    """A dispatch is overdue only once the injected clock passes its expected arrival."""
    late = record(store, expected_at=T0 + timedelta(hours=4))
    on_time = record(store, file_reference="ZC12C00999", expected_at=T0 + timedelta(days=2))
    assert store.overdue(T0 + timedelta(hours=4)) == []
    overdue = store.overdue(T0 + timedelta(hours=5))
    assert [d.id for d in overdue] == [late.id]
    store.receive(late.id, office="Bloomsbury", by="b@cafcass.gov.uk",
                  location="Registry", now=T0 + timedelta(hours=6))
    assert store.overdue(T0 + timedelta(days=3)) == [store.get(on_time.id)]


def test_listing_filters_by_office_and_open(store: DispatchStore) -> None:
    """The list shows newest first, filters on either end's office and on not yet received."""
    first = record(store)
    second = record(store, from_office="Bloomsbury", to_office="Warrington", method="dx",
                    tracking_reference="")
    store.receive(first.id, office="Bloomsbury", by="b@cafcass.gov.uk",
                  location="Registry", now=T0)
    assert [d.id for d in store.dispatches()] == [second.id, first.id]
    assert [d.id for d in store.dispatches(open_only=True)] == [second.id]
    assert [d.id for d in store.dispatches(office="warrington")] == [second.id]
    assert store.dispatches(office="Leeds") == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"method": "internal-transfer"}, "method"),
        ({"method": "pigeon"}, "method"),
        ({"tracking_reference": ""}, "tracking_reference"),
        ({"to_office": "coventry"}, "to_office"),
        ({"file_reference": "  "}, "file_reference"),
        ({"from_office": "Coventry\r\nX-Injected: 1"}, "from_office"),
        ({"expected_at": T0 - timedelta(minutes=1)}, "expected_at"),
        ({"expected_at": datetime(2026, 3, 3, 9, 0)}, "expected_at"),  # naive: no time zone
        ({"by": ""}, "by"),
    ],
)
def test_bad_dispatch_names_the_field_and_records_nothing(
    store: DispatchStore, audit: AuditLog, changes: dict[str, object], field: str
) -> None:
    """A dispatch the policy does not allow, or with bad input, is refused and not recorded."""
    with pytest.raises(DispatchError) as caught:
        record(store, **changes)
    assert caught.value.field == field
    assert store.dispatches() == []
    assert dispatch_events(audit) == []


@pytest.mark.parametrize(
    ("changes", "rule", "says"),
    [
        ({"method": "dx", "tracking_reference": ""}, "dx-not-outgoing",
         "Coventry does not send DX: DX goes out only from Bloomsbury."),
        ({"from_office": "Bloomsbury", "to_office": "Coventry", "method": "dx"},
         "dx-not-incoming", "Coventry does not receive DX"),
        ({"method": "royal-mail-standard-return-address"}, "method-not-permitted",
         "is not permitted for a case file"),
    ],
)
def test_a_dispatch_the_post_options_refuse_is_a_recorded_refusal(
    store: DispatchStore, audit: AuditLog, changes: dict[str, object], rule: str, says: str
) -> None:
    """DX from an office that does not send it, or to one that does not receive it, or a method
    not allowed for paper between offices: a refusal with its rule and citation, recorded as a
    "dispatch-refused" event naming the sender; no dispatch is recorded."""
    with pytest.raises(DispatchRefused) as caught:
        record(store, **changes)
    decision = caught.value.decision
    assert decision.rule == rule and says in decision.reason
    assert "Use one of: Royal Mail Special Delivery Guaranteed" in decision.reason or (
        rule == "method-not-permitted")
    assert "App. 2" in decision.citation
    assert store.dispatches() == []
    [event] = dispatch_events(audit)
    assert event.kind == "dispatch-refused" and event.rule == rule
    assert event.citation == decision.citation and event.sender == "bs.manager@cafcass.gov.uk"
    assert event.metadata["method"] == changes["method"]


def test_offices_are_named_by_their_teams(database: Database, audit: AuditLog) -> None:
    """With the office directory, a team names its office: DX from Bloomsbury's Legal Team to
    Warrington's team is allowed and recorded between the offices; the receiving team signs;
    a team of an office without DX is refused DX."""
    offices = OfficeRegistry(database, audit)
    options = post_options()
    offices.add("Bloomsbury", options=options, teams=["Legal Team"], by="bs@cafcass.gov.uk",
                now=T0)
    offices.add("Warrington", options=options, teams=["Digitisation Team"],
                by="bs@cafcass.gov.uk", now=T0)
    offices.add("Coventry", options=options, teams=["South Team"], dx=Dx.NONE,
                by="bs@cafcass.gov.uk", now=T0)
    store = DispatchStore(database, options, audit, offices=offices)
    try:
        sent = record(store, from_office="legal team", to_office="Digitisation Team",
                      method="dx", tracking_reference="")
        assert (sent.from_office, sent.to_office) == ("Bloomsbury", "Warrington")
        assert [d.id for d in store.dispatches(office="Digitisation Team")] == [sent.id]
        got = store.receive(sent.id, office="digitisation team", by="w@cafcass.gov.uk",
                            location="Scanning room", now=T0)
        assert got.responsible_office == "Warrington"
        with pytest.raises(DispatchError) as same:
            record(store, from_office="Legal Team", to_office="Bloomsbury")
        assert same.value.field == "to_office"
        with pytest.raises(DispatchRefused) as refused:
            record(store, from_office="South Team", to_office="Warrington", method="dx",
                   tracking_reference="")
        assert refused.value.decision.reason.startswith("Coventry does not send DX")
    finally:
        store.close()
        offices.close()


def test_only_the_receiving_office_signs_once(store: DispatchStore, audit: AuditLog) -> None:
    """The wrong office cannot sign for a file; a second receipt is refused; neither is recorded."""
    sent = record(store)
    with pytest.raises(DispatchError) as wrong:
        store.receive(sent.id, office="Coventry", by="c@cafcass.gov.uk",
                      location="Desk", now=T0)
    assert wrong.value.field == "office"
    assert store.get(sent.id).responsible_office == "Coventry"
    store.receive(sent.id, office="Bloomsbury", by="b@cafcass.gov.uk",
                  location="Registry", now=T0)
    with pytest.raises(DispatchError) as again:
        store.receive(sent.id, office="Bloomsbury", by="b@cafcass.gov.uk",
                      location="Registry", now=T0)
    assert again.value.field == "id"
    with pytest.raises(DispatchError) as missing:
        store.receive(999, office="Bloomsbury", by="b@cafcass.gov.uk", location="R", now=T0)
    assert missing.value.field == "id"
    assert len(dispatch_events(audit)) == 2


def test_dispatches_survive_reopening(database: Database, audit: AuditLog) -> None:
    """The store is a real file: a dispatch recorded before a restart is still there after."""
    first = DispatchStore(database, post_options(), audit)
    sent = record(first, method="hand-delivery", tracking_reference="")
    first.close()
    again = DispatchStore(database, post_options(), audit)
    try:
        assert again.get(sent.id) == sent
    finally:
        again.close()


def test_a_dispatch_recorded_on_one_node_is_listed_on_the_other(
        pg_url: str, tmp_path: Path) -> None:
    """Two gateway nodes on one PostgreSQL, each with its own data directory:
    a dispatch recorded through node one is listed (newest first, by office) and received
    through node two, and node one then sees it received."""
    nodes = [Database.open(tmp_path / node, DatabaseSettings(url=pg_url, node=node))
             for node in ("one", "two")]
    for node in ("one", "two"):  # each its own trail here (the shared one: test_audit_nodes)
        (tmp_path / node / "audit").mkdir(parents=True)
    audits = [AuditLog.open(Database.open(tmp_path / node / "audit"), clock=lambda: T0,
                            stream=io.StringIO()) for node in ("one", "two")]
    one, two = (DispatchStore(database, post_options(), audit)
                for database, audit in zip(nodes, audits, strict=True))
    try:
        first = record(one)
        second = record(two, from_office="Bloomsbury", to_office="Warrington", method="dx",
                        tracking_reference="")
        third = record(one, file_reference="ZC12C00999")
        assert [d.id for d in two.dispatches()] == [third.id, second.id, first.id]
        assert [d.id for d in one.dispatches()] == [third.id, second.id, first.id]
        assert two.get(first.id) == first
        assert [d.id for d in two.dispatches(office="COVENTRY")] == [third.id, first.id]
        two.receive(first.id, office="bloomsbury", by="b@cafcass.gov.uk", location="Registry",
                    now=T0 + timedelta(hours=2))
        assert [d.id for d in one.dispatches(open_only=True)] == [third.id, second.id]
        assert one.get(first.id).responsible_office == "Bloomsbury"
        assert [d.id for d in one.overdue(T0 + timedelta(days=2))] == [second.id, third.id]
    finally:
        one.close()
        two.close()
        for audit in audits:
            audit.close()
        for database in nodes:
            database.close()
