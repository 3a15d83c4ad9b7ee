"""`casegate staff`: the directory of staff members' known personal addresses (DESIGN ruling 4).

Mail to any address in it is refused at RCPT, whoever sends it (IA 3.2, RRP 6.1).

    casegate staff add-personal STAFF-ADDRESS PERSONAL-ADDRESS
    casegate staff list [--json]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from gateway.cli.common import UsageError, add_common, open_app
from policies.events import EventKind
from policies.model import Category
from policies.recipients import classify_recipient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "staff",
        help="keep the directory of staff personal addresses",
        description="Record staff members' personal addresses, which never receive Cafcass mail.",
    )
    commands = parser.add_subparsers(dest="staff_command", metavar="ACTION", required=True)

    add = commands.add_parser("add-personal", help="record a staff member's personal address")
    add.add_argument("staff", metavar="STAFF-ADDRESS")
    add.add_argument("personal", metavar="PERSONAL-ADDRESS")
    add_common(add)
    add.set_defaults(func=run_add_personal)

    listing = commands.add_parser("list", help="show the directory")
    listing.add_argument("--json", action="store_true", help="print the directory as JSON")
    add_common(listing)
    listing.set_defaults(func=run_list)


def run_add_personal(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        now = datetime.now(UTC)
        snapshot = app.snapshot(now)
        staff = classify_recipient(args.staff, app.policy, snapshot, sender=args.staff)
        if staff.category is not Category.INTERNAL:
            raise UsageError(f"{args.staff} is not a Cafcass staff address")
        personal = classify_recipient(args.personal, app.policy, snapshot, sender=args.staff)
        if personal.category is Category.INVALID:
            raise UsageError(f"{args.personal} is not a valid, plain email address")
        if personal.category is Category.INTERNAL:
            raise UsageError(f"{args.personal} is a Cafcass address, not a personal one")
        added = app.registry.add_staff_personal(staff.normalised, personal.normalised, now)
        if added:
            app.audit.record(EventKind.STAFF_PERSONAL_ADDED, sender=staff.normalised.lower())
    if added:
        print(f"{personal.normalised.lower()} is recorded as a personal address of "
              f"{staff.normalised.lower()}.")
    else:
        print(f"{personal.normalised.lower()} was already recorded; nothing changed.")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        directory = app.registry.staff_personal()
    if args.json:
        print(json.dumps({staff: list(p) for staff, p in directory.items()}, indent=2,
                         sort_keys=True))
    elif not directory:
        print("No personal addresses recorded.")
    else:
        for staff, personal in directory.items():
            print(f"{staff}: {', '.join(personal)}")
    return 0
