"""The case-registry table (tests/cases/case_registry.toml): its registry, recorded in a store or
built as a CaseIndex, and its messages as the bytes a client would send."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from policies.cases import (
    CaseIndex,
    CasePerson,
    ConfidentialDetail,
    DetailKind,
    PersonRole,
    RecordKey,
    ShieldedCase,
)
from policies.model import Role, Snapshot, Verification
from tests.fixtures_content import make_pdf
from verification.cases import CaseStore
from verification.registry import Registry

TABLE: dict[str, Any] = tomllib.loads(
    (Path(__file__).parent / "cases" / "case_registry.toml").read_text("utf-8"))
STAFF = "jo.smith@cafcass.gov.uk"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
KEY = RecordKey(bytes(range(32)))


def index(key: RecordKey = KEY) -> CaseIndex:
    """The table's registry as the engine sees it, built directly (no store)."""
    return CaseIndex.build(
        key,
        (CasePerson(p["case"], f"P{n}", PersonRole(p["role"]), key.name(p["name"]),
                    key.date_of_birth(date.fromisoformat(p["dob"])) if "dob" in p else None,
                    "".join(w[0] for w in p["name"].split()))
         for n, p in enumerate(TABLE["person"], start=1)),
        (ConfidentialDetail(d["case"], f"D{n}", DetailKind(d["kind"]), key.detail(d["text"]),
                            tuple(d.get("may_go_to", ())))
         for n, d in enumerate(TABLE["detail"], start=1)),
        (ShieldedCase(s["case"], tuple(s["access"])) for s in TABLE["shield"]),
    )


def record(store: CaseStore) -> None:
    """The table's registry, recorded through the store as staff would (P1.., D1.. in order)."""
    for p in TABLE["person"]:
        store.add_person(p["case"], name=p["name"], role=PersonRole(p["role"]),
                         date_of_birth=date.fromisoformat(p["dob"]) if "dob" in p else None,
                         by=STAFF, now=NOW)
    for d in TABLE["detail"]:
        store.add_detail(d["case"], text=d["text"], kind=DetailKind(d["kind"]),
                         may_go_to=d.get("may_go_to", ()), by=STAFF, now=NOW)
    for s in TABLE["shield"]:
        store.shield(s["case"], access=s["access"], by=STAFF, now=NOW)


def verify(registry: Registry, row: Mapping[str, Any]) -> None:
    """The row's verified addresses, in the registry of verified recipients."""
    for v in row.get("verified", ()):
        registry.add(v["address"], case_number=v["case"], role=Role.PROFESSIONAL,
                     verified_by=STAFF, now=NOW)


def unverify(registry: Registry, row: Mapping[str, Any]) -> None:
    """Every verification of the row's recipients revoked (the next row starts afresh)."""
    for address in row["recipients"]:
        registry.revoke(address, by=STAFF, now=NOW)


def snapshot(row: Mapping[str, Any], cases: CaseIndex) -> Snapshot:
    """What the engine needs for a row, without a store."""
    return Snapshot(now=NOW, cases=cases, verified=tuple(
        Verification(v["address"], v["case"], Role.PROFESSIONAL)
        for v in row.get("verified", ())))


def sender(row: Mapping[str, Any]) -> str:
    return str(row.get("sender", STAFF))


def message(row: Mapping[str, Any]) -> bytes:
    """The row's message, CRLF throughout, From the row's sender."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"{row.get('display_name', 'Jo Smith')} <{sender(row)}>"
    msg["To"] = ", ".join(row["recipients"])
    msg["Subject"] = row["subject"]
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<case-registry@cafcass.gov.uk>"
    msg.set_content(row["body"])
    attachment = row.get("attachment")
    if attachment is not None and "pdf" in attachment:
        msg.add_attachment(make_pdf([attachment["pdf"]]), maintype="application",
                           subtype="pdf", filename=attachment["name"])
    elif attachment is not None:
        msg.add_attachment(attachment["text"], filename=attachment["name"])
    if "attached_message" in row:
        inner = EmailMessage(policy=SMTP)
        inner["From"] = "Jo Smith <jo.smith@cafcass.gov.uk>"
        inner["Subject"] = "Note"
        inner.set_content(row["attached_message"])
        msg.add_attachment(inner)
    return msg.as_bytes()
