"""`casegate case`: the case registry (issue 16): people, confidential details, shields.

    casegate case person CASE --name "FULL NAME" --role child|party|other [--dob YYYY-MM-DD]
                         --by STAFF [--json]
    casegate case confidential CASE --text TEXT --kind address|school|nursery|gp|placement|other
                               [--may-go-to ADDRESS_OR_DOMAIN]... --by STAFF [--json]
    casegate case shield CASE --access STAFF [--access STAFF]... --by STAFF [--json]
    casegate case show CASE [--json]
    casegate case list [--json]
    casegate case remove CASE (--person ID | --detail ID | --shield) --by STAFF [--json]

Names, dates of birth and detail texts are stored only as keyed hashes (verification/cases.py):
what is shown back is the entry's id, initials, role or kind. `--by` must be a staff account.
Bad input is refused with one sentence (exit 2) and records nothing; every change is audited
(the case and the kind of entry, never the name or the text).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.cli.common import UsageError, add_common, open_app
from policies.cases import DetailKind, PersonRole
from verification.cases import (
    CaseError,
    CaseRecord,
    CaseSummary,
    DetailEntry,
    PersonEntry,
    ShieldEntry,
)
from verification.casework import Casework

if TYPE_CHECKING:
    from gateway.app import App

Result = PersonEntry | DetailEntry | ShieldEntry | CaseRecord | list[CaseSummary]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "case",
        help="record the people, confidential details and shielding of a case",
        description="The case registry: people of a case, confidential details and who may "
        "receive them, shielded cases and who may handle them. Names and texts are kept only "
        "as keyed hashes.",
    )
    commands = parser.add_subparsers(dest="case_command", metavar="ACTION", required=True)

    person = commands.add_parser("person", help="record a person of a case")
    person.add_argument("case", metavar="CASE")
    person.add_argument("--name", required=True, help="the person's full name")
    person.add_argument("--role", required=True, choices=[r.value for r in PersonRole])
    person.add_argument("--dob", metavar="YYYY-MM-DD", help="the person's date of birth")
    person.add_argument("--by", required=True, metavar="STAFF", help="who records it")
    person.set_defaults(func=_runner(run_person))

    detail = commands.add_parser("confidential", help="record a confidential detail of a case")
    detail.add_argument("case", metavar="CASE")
    detail.add_argument("--text", required=True, help="the detail (an address, a school...)")
    detail.add_argument("--kind", required=True, choices=[k.value for k in DetailKind])
    detail.add_argument("--may-go-to", action="append", default=[],
                        metavar="ADDRESS_OR_DOMAIN",
                        help="an external recipient it may go to; repeatable")
    detail.add_argument("--by", required=True, metavar="STAFF", help="who records it")
    detail.set_defaults(func=_runner(run_confidential))

    shield = commands.add_parser("shield", help="shield a case (or change who has access)")
    shield.add_argument("case", metavar="CASE")
    shield.add_argument("--access", action="append", default=[], metavar="STAFF",
                        help="a member of staff who may handle the case; repeatable")
    shield.add_argument("--by", required=True, metavar="STAFF", help="who records it")
    shield.set_defaults(func=_runner(run_shield))

    show = commands.add_parser("show", help="show what is recorded for a case")
    show.add_argument("case", metavar="CASE")
    show.add_argument("--removed", action="store_true", help="also entries taken back")
    show.set_defaults(func=_runner(run_show))

    listing = commands.add_parser("list", help="list the cases with something recorded")
    listing.set_defaults(func=_runner(run_list))

    remove = commands.add_parser("remove", help="take an entry back, or lift a shield")
    remove.add_argument("case", metavar="CASE")
    what = remove.add_mutually_exclusive_group(required=True)
    what.add_argument("--person", metavar="ID", help="a person's id (P7)")
    what.add_argument("--detail", metavar="ID", help="a confidential detail's id (D3)")
    what.add_argument("--shield", action="store_true", help="lift the case's shield")
    remove.add_argument("--by", required=True, metavar="STAFF", help="who takes it back")
    remove.set_defaults(func=_runner(run_remove))

    for command in (person, detail, shield, show, listing, remove):
        command.add_argument("--json", action="store_true", help="print JSON")
        add_common(command)


def _runner(action: Callable[[App, Casework, argparse.Namespace], Result]
            ) -> Callable[[argparse.Namespace], int]:
    """Open the App, run `action`, print its result; a refusal is one sentence, exit 2."""

    def run(args: argparse.Namespace) -> int:
        with open_app(args) as app:
            try:
                result = action(app, app.casework(), args)
            except CaseError as exc:
                raise UsageError(str(exc)) from None
        print(_json(result) if args.json else describe(result))
        return 0

    return run


def staff_account(app: App, work: Casework, address: str) -> str:
    """`address` when it is an enabled staff account: every change names who made it."""
    staff = work.staff(address)
    user = app.users.get(staff)
    if user is None:
        raise CaseError(f"--by {staff} has no staff account; a change to the case registry "
                        f"must name the staff member who made it (add them with "
                        f"`casegate users add {staff}`)")
    if user.disabled:
        raise CaseError(f"--by {staff} is a disabled account; name a current staff member")
    return user.address


def run_person(app: App, work: Casework, args: argparse.Namespace) -> PersonEntry:
    case = work.case_number(args.case)
    by = staff_account(app, work, args.by)
    dob = work.date_of_birth(args.dob) if args.dob is not None else None
    return work.record_person(case, name=args.name, role=PersonRole(args.role),
                              date_of_birth=dob, by=by, channel="cli")


def run_confidential(app: App, work: Casework, args: argparse.Namespace) -> DetailEntry:
    case = work.case_number(args.case)
    by = staff_account(app, work, args.by)
    return work.record_detail(case, text=args.text, kind=DetailKind(args.kind),
                              may_go_to=args.may_go_to, by=by, channel="cli")


def run_shield(app: App, work: Casework, args: argparse.Namespace) -> ShieldEntry:
    case = work.case_number(args.case)
    by = staff_account(app, work, args.by)
    if not any(a.strip() for a in args.access):
        raise CaseError("a shielded case needs at least one member of staff with access "
                        "(--access STAFF)")
    return work.shield(case, access=args.access, by=by, channel="cli")


def run_show(app: App, work: Casework, args: argparse.Namespace) -> CaseRecord:
    return app.cases.case(work.case_number(args.case), removed=args.removed)


def run_list(app: App, work: Casework, args: argparse.Namespace) -> list[CaseSummary]:
    return app.cases.cases()


def run_remove(app: App, work: Casework, args: argparse.Namespace
               ) -> PersonEntry | DetailEntry | ShieldEntry:
    case = work.case_number(args.case)
    by = staff_account(app, work, args.by)
    if args.person is not None:
        return work.remove_person(case, args.person, by=by, channel="cli")
    if args.detail is not None:
        return work.remove_detail(case, args.detail, by=by, channel="cli")
    return work.unshield(case, by=by, channel="cli")


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _json(result: Result) -> str:
    if isinstance(result, list):
        return json.dumps([summary.to_json() for summary in result], indent=2)
    return json.dumps(result.to_json(), indent=2)


def describe(result: Result) -> str:
    """What a command prints without --json: one sentence for a change, a table for a case."""
    if isinstance(result, PersonEntry):
        if result.removed_at is not None:
            return f"{result.person_id} ({result.initials}) is no longer recorded for case " \
                   f"{result.case_number}."
        dob = ", with date of birth" if result.has_date_of_birth else ""
        return (f"{result.person_id} ({result.initials}, {result.role.value}{dob}) is recorded "
                f"for case {result.case_number}.")
    if isinstance(result, DetailEntry):
        if result.removed_at is not None:
            return f"{result.detail_id} ({result.kind.value}) is no longer recorded for case " \
                   f"{result.case_number}."
        return (f"{result.detail_id} ({result.kind.value}) is recorded as confidential for case "
                f"{result.case_number}; it may go to {_recipients(result.may_go_to)}.")
    if isinstance(result, ShieldEntry):
        if result.removed_at is not None:
            return f"Case {result.case_number} is no longer shielded."
        return (f"Case {result.case_number} is shielded; only {', '.join(result.access)} may "
                "send mail about it.")
    if isinstance(result, CaseRecord):
        return case_text(result)
    return cases_table(result)


def _recipients(allowed: tuple[str, ...]) -> str:
    return ", ".join(allowed) + " and Cafcass" if allowed else "Cafcass only"


def case_text(record: CaseRecord) -> str:
    """`case show`: the shield, then people and details as aligned columns."""
    if record.empty:
        return f"Nothing is recorded for case {record.case_number}."
    lines = [f"Case {record.case_number}"]
    if record.shield is not None:
        lines.append(f"Shielded since {record.shield.recorded_at:%Y-%m-%d %H:%M} by "
                     f"{record.shield.recorded_by}; access: {', '.join(record.shield.access)}")
    else:
        lines.append("Not shielded")
    if record.people:
        lines += ["", "PEOPLE", _table(
            ("ID", "INITIALS", "ROLE", "DOB", "RECORDED BY", "RECORDED AT", "REMOVED"),
            [(p.person_id, p.initials, p.role.value, "yes" if p.has_date_of_birth else "-",
              p.recorded_by, f"{p.recorded_at:%Y-%m-%d %H:%M}", _removed(p.removed_at))
             for p in record.people])]
    if record.details:
        lines += ["", "CONFIDENTIAL DETAILS", _table(
            ("ID", "KIND", "MAY GO TO", "RECORDED BY", "RECORDED AT", "REMOVED"),
            [(d.detail_id, d.kind.value, ", ".join(d.may_go_to) or "Cafcass only",
              d.recorded_by, f"{d.recorded_at:%Y-%m-%d %H:%M}", _removed(d.removed_at))
             for d in record.details])]
    return "\n".join(lines)


def _removed(moment: object) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def cases_table(summaries: list[CaseSummary]) -> str:
    if not summaries:
        return "No cases recorded."
    return _table(("CASE", "PEOPLE", "DETAILS", "SHIELDED"),
                  [(s.case_number, str(s.people), str(s.details), "yes" if s.shielded else "no")
                   for s in summaries])


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows])
