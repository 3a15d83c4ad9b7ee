"""Changes to the case registry as named steps, each checked and audited (issue 16).

    record_person      case number -> staff -> name, role, date of birth -> the store -> audit
    record_detail      case number -> staff -> text, kind, who may receive it -> store -> audit
    shield             case number -> staff -> the access list (Cafcass staff only) -> audit
    remove_person, remove_detail, unshield

The command line (`casegate case`), the staff pages and API (gateway/web/cases.py) and the
verification of a party (`casegate verify add --name`, a recipient's confirmation) all come
through here, so every change is checked and recorded the same way. Bad input is a `CaseError`
whose message is one sentence for the member of staff. Audit events name the case, the kind of
entry and its id, never a name, a date of birth or a detail's text (DESIGN ruling 8).

Every step reads or writes SQLite: call them from a worker thread or a command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from policies.cases import DetailKind, PersonRole
from policies.events import EventKind
from policies.loader import Policy
from policies.model import Role, Snapshot
from verification.cases import (
    CaseError,
    CaseStore,
    DetailEntry,
    PersonEntry,
    ShieldEntry,
    parse_date_of_birth,
    parse_entry_id,
)
from verification.registry import RegistryEntry
from verification.workflow import check_case, check_staff


class Recorder(Protocol):
    """The audit log (gateway.audit.trail.AuditLog) as the case registry uses it."""

    def record(self, kind: EventKind, **fields: Any) -> int: ...


@dataclass(frozen=True)
class Casework:
    """The case registry's steps on one store, recorded in one audit log."""

    store: CaseStore
    policy: Policy
    audit: Recorder
    clock: Callable[[], datetime]

    # -- checks ------------------------------------------------------------------------------

    def case_number(self, text: str) -> str:
        """The case number, normalised; CaseError when it has not the configured form."""
        case = check_case(text, self.policy)
        if case is None:
            raise CaseError(f"{text.strip()[:40]!r} is not a case number (like ZC12C00123)")
        return case

    def staff(self, address: str, what: str = "--by") -> str:
        """A Cafcass staff address, normalised; CaseError otherwise."""
        staff = check_staff(address, self.policy, Snapshot(now=self.clock()))
        if staff is None:
            raise CaseError(f"{what} must be a Cafcass staff address, not {address.strip()[:80]!r}")
        return staff

    def date_of_birth(self, text: str) -> date:
        """A date of birth written YYYY-MM-DD, not in the future."""
        return parse_date_of_birth(text, self.clock().date())

    # -- people ------------------------------------------------------------------------------

    def record_person(self, case_number: str, *, name: str, role: PersonRole,
                      date_of_birth: date | None, by: str, channel: str) -> PersonEntry:
        """Record a person of the case, audited as `case-person-recorded`."""
        case, staff = self.case_number(case_number), self.staff(by)
        now = self.clock()
        if date_of_birth is not None and date_of_birth > now.date():
            raise CaseError(f"the date of birth {date_of_birth.isoformat()} is in the future")
        entry = self.store.add_person(case, name=name, role=role, date_of_birth=date_of_birth,
                                      by=staff, now=now, source=channel)
        self.audit.record(EventKind.CASE_PERSON_RECORDED, sender=staff, case_numbers=[case],
                          person_id=entry.person_id, role=entry.role.value,
                          date_of_birth_recorded=entry.has_date_of_birth, channel=channel)
        return entry

    def record_verified_party(self, entry: RegistryEntry, name: str) -> PersonEntry | None:
        """A party verified for a case (a recipient's confirmation) as a person of the case;
        None when there is nothing to record: not a party of a case, a name of one word (the
        verification itself stands), or the person is already recorded."""
        if entry.role is not Role.PARTY or entry.case_number is None:
            return None
        try:
            return self.record_person(entry.case_number, name=name, role=PersonRole.PARTY,
                                      date_of_birth=None, by=entry.verified_by,
                                      channel="verification")
        except CaseError:
            return None

    def remove_person(self, case_number: str, person_id: str, *, by: str,
                      channel: str) -> PersonEntry:
        """Take a person off the case (`P7`), audited as `case-person-removed`."""
        case, staff = self.case_number(case_number), self.staff(by)
        number = parse_entry_id(person_id, "P")
        entry = self.store.remove_person(case, number, by=staff, now=self.clock())
        self.audit.record(EventKind.CASE_PERSON_REMOVED, sender=staff, case_numbers=[case],
                          person_id=entry.person_id, role=entry.role.value, channel=channel)
        return entry

    # -- confidential details --------------------------------------------------------------

    def record_detail(self, case_number: str, *, text: str, kind: DetailKind,
                      may_go_to: Sequence[str], by: str, channel: str) -> DetailEntry:
        """Record a confidential detail, audited as `case-detail-recorded` (its kind, never
        its text)."""
        case, staff = self.case_number(case_number), self.staff(by)
        entry = self.store.add_detail(case, text=text, kind=kind, may_go_to=may_go_to,
                                      by=staff, now=self.clock())
        self.audit.record(EventKind.CASE_DETAIL_RECORDED, sender=staff, case_numbers=[case],
                          detail_id=entry.detail_id, detail_kind=entry.kind.value,
                          may_go_to=list(entry.may_go_to), channel=channel)
        return entry

    def remove_detail(self, case_number: str, detail_id: str, *, by: str,
                      channel: str) -> DetailEntry:
        """Take a confidential detail off the case (`D3`), audited as `case-detail-removed`."""
        case, staff = self.case_number(case_number), self.staff(by)
        number = parse_entry_id(detail_id, "D")
        entry = self.store.remove_detail(case, number, by=staff, now=self.clock())
        self.audit.record(EventKind.CASE_DETAIL_REMOVED, sender=staff, case_numbers=[case],
                          detail_id=entry.detail_id, detail_kind=entry.kind.value,
                          channel=channel)
        return entry

    # -- shields -----------------------------------------------------------------------------

    def shield(self, case_number: str, *, access: Sequence[str], by: str,
               channel: str) -> ShieldEntry:
        """Shield the case for the staff in `access` (or change its access list), audited as
        `case-shielded`."""
        case, staff = self.case_number(case_number), self.staff(by)
        listed = [self.staff(a, "--access") for a in access if a.strip()]
        entry, replaced = self.store.shield(case, access=listed, by=staff, now=self.clock())
        self.audit.record(EventKind.CASE_SHIELDED, sender=staff, case_numbers=[case],
                          access=list(entry.access), replaced=replaced is not None,
                          channel=channel)
        return entry

    def unshield(self, case_number: str, *, by: str, channel: str) -> ShieldEntry:
        """Lift the case's shield, audited as `case-unshielded`."""
        case, staff = self.case_number(case_number), self.staff(by)
        entry = self.store.unshield(case, by=staff, now=self.clock())
        self.audit.record(EventKind.CASE_UNSHIELDED, sender=staff, case_numbers=[case],
                          access=list(entry.access), channel=channel)
        return entry
