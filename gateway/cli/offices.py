"""`casegate offices`: the office directory (offices, their teams, their DX).

    casegate offices add NAME [--team TEAM]... [--dx none|incoming|outgoing|both]
        --by STAFF-ADDRESS [--json]
    casegate offices list [--json]

`add` records an office, or adds teams to one already recorded (and changes its DX when `--dx`
is given); a new office without `--dx` gets the DX the policy gives its name. DX only where the
policy's post options list the office (App. 2, Post options); a name (office or team) names one
office only. `list` shows the registered offices and those the policy names for DX that are not
registered. `casegate post --from-office/--to-office` and `casegate dispatch` take any of these
names. Every change is an audit event; bad input (exit 2, one sentence) records nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.cli.common import UsageError, add_common, open_app
from gateway.printed.post import PostUnavailable, post_options
from gateway.stores.offices import Dx, OfficeError, Recorded
from policies.post import Office, PostOptions
from verification.workflow import check_staff

if TYPE_CHECKING:
    from gateway.app import App


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "offices",
        help="the office directory: offices, their teams and DX",
        description="Record Cafcass offices, the teams staff name them by, and whether each "
        "sends or receives DX (within what the policy's post options allow).",
    )
    actions = parser.add_subparsers(dest="offices_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="record an office, or add teams to one")
    add.add_argument("name", metavar="NAME", help="the office, e.g. Bloomsbury")
    add.add_argument("--team", action="append", default=[], metavar="TEAM",
                     help="a team in the office (another name for it); repeat for several")
    add.add_argument("--dx", choices=[d.value for d in Dx], default=None,
                     help="what the office does with DX (default for a new office: what the "
                     "policy gives its name; for one already recorded: unchanged)")
    add.add_argument("--by", required=True, metavar="STAFF-ADDRESS",
                     help="the member of staff who records it")
    add.set_defaults(func=run_add)

    listing = actions.add_parser("list", help="list the offices, their teams and DX")
    listing.set_defaults(func=run_list)

    for action in (add, listing):
        action.add_argument("--json", action="store_true", help="print JSON")
        add_common(action)


def run_add(args: argparse.Namespace) -> int:
    # Audit lines (the SIEM copy) go to stderr so that stdout is only the answer.
    with contextlib.redirect_stdout(sys.stderr), open_app(args) as app:
        options = _options(app)
        staff = check_staff(args.by, app.policy, app.snapshot())
        if staff is None:
            raise UsageError(f"--by must be a Cafcass staff address, not {args.by!r}")
        try:
            recorded = app.offices.add(args.name, options=options, teams=args.team,
                                       dx=Dx(args.dx) if args.dx else None, by=staff,
                                       now=datetime.now(UTC))
        except OfficeError as exc:
            option = {"name": "NAME", "team": "--team", "dx": "--dx"}.get(exc.field, exc.field)
            raise UsageError(f"{option}: {exc}") from None
    if args.json:
        print(json.dumps({**office_json(recorded.office, options), "created": recorded.created,
                          "changed": recorded.changed}, indent=2))
    else:
        print(describe(recorded, options))
    return 0


def run_list(args: argparse.Namespace) -> int:
    with contextlib.redirect_stdout(sys.stderr), open_app(args) as app:
        options = _options(app)
        offices = listed(app.offices.offices(), options)
    if args.json:
        print(json.dumps([office_json(o, options) for o in offices], indent=2))
    else:
        print(table(offices, options))
    return 0


def _options(app: App) -> PostOptions:
    try:
        return post_options(app)
    except PostUnavailable as exc:
        raise UsageError(str(exc)) from None


def listed(registered: list[Office], options: PostOptions) -> list[Office]:
    """The registered offices, then those the policy names for DX that are not registered."""
    known = {o.name.casefold() for o in registered}
    from_policy: dict[str, Office] = {}
    for name in (*options.dx_outgoing_offices, *options.dx_incoming_offices):
        if name.casefold() not in known and name.casefold() not in from_policy:
            from_policy[name.casefold()] = Office(
                name=name, dx_outgoing=options.dx_sends_from(name),
                dx_incoming=options.dx_receives_at(name))
    return [*registered, *from_policy.values()]


def effective_dx(office: Office, options: PostOptions) -> Dx:
    """The DX the postal decision gives the office: the directory's, within the policy's."""
    return Dx.of(office.dx_outgoing and options.dx_sends_from(office.name),
                 office.dx_incoming and options.dx_receives_at(office.name))


def office_json(office: Office, options: PostOptions) -> dict[str, Any]:
    return {
        "name": office.name,
        "teams": list(office.teams),
        "dx": effective_dx(office, options).value,
        "registered": office.registered,
    }


def describe(recorded: Recorded, options: PostOptions) -> str:
    office = recorded.office
    what = ("Recorded" if recorded.created else
            "Updated" if recorded.changed else "Nothing changed for")
    teams = ", ".join(office.teams) or "none"
    return (f"{what} the office {office.name}. Teams: {teams}. "
            f"DX: {effective_dx(office, options).value}.")


def table(offices: list[Office], options: PostOptions) -> str:
    """The offices as aligned columns."""
    if not offices:
        return "No offices."
    rows = [("OFFICE", "DX", "TEAMS", "FROM")]
    rows += [(o.name, effective_dx(o, options).value, ", ".join(o.teams) or "-",
              "directory" if o.registered else "policy") for o in offices]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
