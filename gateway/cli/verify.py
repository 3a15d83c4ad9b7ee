"""`casegate verify`: keep the registry of verified recipients by hand.

Business services use it to import the agency directory (organisation-wide professionals) and
to record an address verified for a case. Practitioners ask the recipient to confirm their own
address with `verify request` (the workflow of issue 4, verification/workflow.py).

    casegate verify add ADDRESS (--case NUMBER | --organisation) --role party|professional
                        --by STAFF-ADDRESS [--name "FULL NAME"] [--confirm-lookalike --reason TEXT]
    (a party verified for a case with --name is also recorded as a person of the case:
    `casegate case`, verification/cases.py)
    casegate verify request ADDRESS --case NUMBER --name "FULL NAME" --role party|professional
                            --by STAFF-ADDRESS [--json]
    casegate verify list [--case NUMBER] [--json]
    casegate verify bounced ADDRESS
    casegate verify revoke ADDRESS [--case NUMBER | --organisation] --by STAFF-ADDRESS
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.cli.common import UsageError, add_common, open_app
from gateway.config import ConfigError
from policies.cases import PersonRole
from policies.events import EventKind
from policies.model import Role, Snapshot
from verification.cases import AlreadyRecorded, CaseError, clean_name
from verification.registry import AlreadyVerified, RegistryEntry, RequestState, VerificationRequest
from verification.workflow import (
    LOOKALIKE_METHOD,
    LOOKALIKE_RULE,
    MAX_REASON,
    AddressCheck,
    Ask,
    RequestResult,
    check_address,
    check_case,
    check_reason,
    check_staff,
)

if TYPE_CHECKING:
    from gateway.app import App


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "verify",
        help="maintain the registry of verified recipients",
        description="Record, list and revoke verified recipient addresses.",
    )
    commands = parser.add_subparsers(dest="verify_command", metavar="ACTION", required=True)

    add = commands.add_parser("add", help="record an address as verified")
    add.add_argument("address", metavar="ADDRESS")
    scope = add.add_mutually_exclusive_group(required=True)
    scope.add_argument("--case", metavar="NUMBER", help="verified for this case only")
    scope.add_argument("--organisation", action="store_true",
                       help="verified organisation-wide (agency directory)")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--by", required=True, metavar="STAFF-ADDRESS",
                     help="the member of staff who verified it")
    add.add_argument("--name", default="",
                     help="the recipient's full name (a party's is recorded for the case)")
    add.add_argument("--confirm-lookalike", action="store_true",
                     help="verify an address casegate reads as a lookalike (a real domain that "
                     "resembles a secure one), deliberately; needs --reason; audited")
    add.add_argument("--reason", default="", metavar="TEXT",
                     help="why the lookalike address is the right one (with --confirm-lookalike)")
    add_common(add)
    add.set_defaults(func=run_add)

    request = commands.add_parser(
        "request", help="ask the recipient to confirm their address (prints the code)")
    request.add_argument("address", metavar="ADDRESS")
    request.add_argument("--case", required=True, metavar="NUMBER")
    request.add_argument("--name", required=True, help="the recipient's full name")
    request.add_argument("--role", required=True, choices=[r.value for r in Role])
    request.add_argument("--by", required=True, metavar="STAFF-ADDRESS",
                         help="the practitioner asking")
    request.add_argument("--json", action="store_true", help="the result as one JSON object")
    add_common(request)
    request.set_defaults(func=run_request)

    bounced = commands.add_parser("bounced", help="revoke an address whose mail bounced")
    bounced.add_argument("address", metavar="ADDRESS")
    add_common(bounced)
    bounced.set_defaults(func=run_bounced)

    listing = commands.add_parser("list", help="show verified addresses and requests")
    listing.add_argument("--case", metavar="NUMBER", help="only this case")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    add_common(listing)
    listing.set_defaults(func=run_list)

    revoke = commands.add_parser("revoke", help="revoke an address's verification")
    revoke.add_argument("address", metavar="ADDRESS")
    revoke_scope = revoke.add_mutually_exclusive_group()
    revoke_scope.add_argument("--case", metavar="NUMBER", help="only for this case")
    revoke_scope.add_argument("--organisation", action="store_true",
                              help="only the organisation-wide verification")
    revoke.add_argument("--by", required=True, metavar="STAFF-ADDRESS")
    add_common(revoke)
    revoke.set_defaults(func=run_revoke)


def run_add(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        now = datetime.now(UTC)
        snapshot = app.snapshot(now)
        staff = _staff_account(app, _staff_address(args.by, app.policy, snapshot))
        reason = _lookalike_reason(args, app.policy)
        checked = _verifiable_address(args.address, staff, app.policy, snapshot,
                                      confirm_lookalike=bool(reason))
        address = checked.normalised
        case = _case_number(args.case, app.policy) if args.case else None
        party = case is not None and Role(args.role) is Role.PARTY and bool(args.name.strip())
        if party:
            _person_name(args.name)  # refused before anything is recorded
        said = _add_entry(app, address, case, args, staff, now, checked, reason)
        person = _record_party(app, case, args.name, staff) if party and case else ""
    print(said)
    if person:
        print(person)
    return 0


def _add_entry(app: App, address: str, case: str | None, args: argparse.Namespace,
               staff: str, now: datetime, checked: AddressCheck, reason: str) -> str:
    """Record the verification (audited, and a lookalike confirmed on purpose audited as
    such); what to tell the user."""
    method = LOOKALIKE_METHOD if checked.lookalike_of else "manual"
    try:
        entry = app.registry.add(address, case_number=case, role=Role(args.role),
                                 verified_by=staff, now=now, name=args.name, method=method)
    except AlreadyVerified as exc:
        return f"{exc}; nothing changed."
    app.audit.record(EventKind.VERIFICATION_ADDED, sender=staff, recipients=[entry.address],
                     case_numbers=[case] if case else [], role=entry.role.value,
                     method=entry.method, scope="case" if case else "organisation")
    said = f"{entry.address} is verified for {_scope_text(entry)} as {entry.role.value}."
    if checked.lookalike_of:
        app.audit.record(EventKind.VERIFICATION_LOOKALIKE_CONFIRMED, rule=LOOKALIKE_RULE,
                         sender=staff, recipients=[entry.address],
                         case_numbers=[case] if case else [], resembles=checked.lookalike_of,
                         reason=reason, channel="cli")
        said += (f"\nIt resembles {checked.lookalike_of} but is not it: casegate treats it as "
                 "an ordinary (non-secure) address, so protected mail to it goes through the "
                 "portal.")
    return said


def _person_name(name: str) -> str:
    try:
        return clean_name(name)
    except CaseError as exc:
        raise UsageError(f"--name: {exc}") from None


def _record_party(app: App, case: str, name: str, staff: str) -> str:
    """Record a verified party as a person of the case (issue 16); what to tell the user."""
    try:
        person = app.casework().record_person(case, name=name, role=PersonRole.PARTY,
                                              date_of_birth=None, by=staff,
                                              channel="verification")
    except AlreadyRecorded as exc:
        said = str(exc)
        return f"{said[:1].upper()}{said[1:]}."
    except CaseError as exc:
        raise UsageError(f"the verification is recorded, but not the person: {exc}") from None
    return (f"{person.person_id} ({person.initials}, party) is recorded for case "
            f"{person.case_number}.")


def run_list(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        case = _case_number(args.case, app.policy) if args.case else None
        now = datetime.now(UTC)
        entries = app.registry.entries(case_number=case, now=now)
        requests = [r for r in app.registry.requests(case_number=case)
                    if r.state is not RequestState.VERIFIED]
    if args.json:
        for entry in entries:
            print(json.dumps(entry_json(entry), sort_keys=True))
        for req in requests:
            print(json.dumps(request_json(req, now), sort_keys=True))
    else:
        print(entries_table(entries, requests, now))
    return 0


def run_request(args: argparse.Namespace) -> int:
    """Check the address, mail the recipient, print the out-of-band code (exit 0); a refusal
    exits 1, a DNS or upstream problem 75 (try again later)."""
    with open_app(args) as app:
        _case_number(args.case, app.policy)
        try:
            transport = app.way_out()
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        workflow = app.workflow(transport)
        ask = Ask(address=args.address, case_number=args.case, name=args.name,
                  role=Role(args.role), requested_by=args.by, channel="cli")

        async def run() -> RequestResult:
            try:
                return await workflow.request(ask)
            finally:
                await transport.close()

        result = asyncio.run(run())
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
    else:
        print(result.sentence)
        if result.code:
            print(f"Code: {result.code}")
    if result.ok:
        return 0
    return 75 if result.temporary else 1


def run_bounced(args: argparse.Namespace) -> int:
    """Mail to the address bounced: every verification of it is revoked."""
    with open_app(args) as app:
        count = app.registry.mark_bounced(args.address, now=datetime.now(UTC))
        if count:
            app.audit.record(EventKind.VERIFICATION_REVOKED,
                             recipients=[args.address.strip().lower()], count=count,
                             reason="bounced")
    print(f"Revoked {count} verification{'s' if count != 1 else ''} of {args.address} "
          "(bounced).")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        now = datetime.now(UTC)
        staff = _staff_address(args.by, app.policy, app.snapshot(now))
        case = _case_number(args.case, app.policy) if args.case else None
        count = app.registry.revoke(args.address, by=staff, now=now, case_number=case,
                                    organisation=args.organisation)
        withdrawn = [] if args.organisation else app.registry.revoke_requests(
            args.address, now=now, case_number=case)
        if count == 0 and withdrawn:
            app.audit.record(EventKind.VERIFICATION_REVOKED, sender=staff,
                             recipients=[args.address.strip().lower()],
                             case_numbers=[case] if case else [], requests=len(withdrawn))
            print(f"Withdrew {len(withdrawn)} pending verification request"
                  f"{'s' if len(withdrawn) != 1 else ''} of {args.address}.")
            return 0
        if count == 0:
            raise UsageError(f"{args.address} has no verification in force to revoke"
                             + (f" for case {case}" if case else ""))
        app.audit.record(EventKind.VERIFICATION_REVOKED, sender=staff,
                         recipients=[args.address.strip().lower()],
                         case_numbers=[case] if case else [], count=count)
    print(f"Revoked {count} verification{'s' if count != 1 else ''} of {args.address}.")
    return 0


# ----------------------------------------------------------------------------------------------
# Input checks: one plain sentence each (exit 2)
# ----------------------------------------------------------------------------------------------


def _staff_address(address: str, policy: Any, snapshot: Snapshot) -> str:
    staff = check_staff(address, policy, snapshot)
    if staff is None:
        raise UsageError(f"--by must be a Cafcass staff address, not {address!r}")
    return staff


def _staff_account(app: App, address: str) -> str:
    """`address` when it is an enabled staff account: a verification names who vouched for it."""
    user = app.users.get(address)
    if user is None:
        raise UsageError(f"--by {address} has no staff account; a verification must name the "
                         f"staff member who made it (add them with `casegate users add {address}`)")
    if user.disabled:
        raise UsageError(f"--by {address} is a disabled account; name a current staff member")
    return user.address


def _verifiable_address(address: str, staff: str, policy: Any, snapshot: Snapshot, *,
                        confirm_lookalike: bool = False) -> AddressCheck:
    """The same checks as a verification request (verification.workflow.check_address); a
    lookalike passes only when staff confirm it (and may confirm it)."""
    checked = check_address(address, staff, policy, snapshot, confirm_lookalike=confirm_lookalike)
    if checked.normalised:
        return checked
    if checked.suggestion and not confirm_lookalike:
        hint = ""
        if check_address(address, staff, policy, snapshot, confirm_lookalike=True).normalised:
            hint = (" If it is a real address that only resembles one, verify it with "
                    "--confirm-lookalike --reason TEXT")
        raise UsageError(f"{address} looks like a known address but is not the same; "
                         f"did you mean {checked.suggestion}?{hint}")
    raise UsageError(checked.sentence)


def _lookalike_reason(args: argparse.Namespace, policy: Any) -> str:
    """The reason given with --confirm-lookalike ("" without it); both or neither."""
    if not args.confirm_lookalike:
        if args.reason:
            raise UsageError("--reason goes with --confirm-lookalike")
        return ""
    reason = check_reason(args.reason, policy)
    if reason is None:
        raise UsageError(f"--reason: say why this lookalike address is the right one, in one "
                         f"line of {policy.min_justification_chars} to {MAX_REASON} characters")
    return reason


def _case_number(text: str, policy: Any) -> str:
    case = check_case(text, policy)
    if case is None:
        raise UsageError(f"{text!r} is not a case number (like ZC12C00123)")
    return case


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _scope_text(entry: RegistryEntry) -> str:
    return f"case {entry.case_number}" if entry.case_number else "the whole organisation"


def entry_json(entry: RegistryEntry) -> dict[str, Any]:
    """One registry row as `verify list --json` prints it."""
    return {
        "address": entry.address,
        "case_number": entry.case_number,
        "organisation_wide": entry.case_number is None,
        "role": entry.role.value,
        "name": entry.name,
        "state": entry.state.value,
        "verified_by": entry.verified_by,
        "verified_at": entry.verified_at.isoformat(),
        "method": entry.method,
        "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
        "revoked_at": entry.revoked_at.isoformat() if entry.revoked_at else None,
        "revoked_by": entry.revoked_by,
    }


def request_json(request: VerificationRequest, now: datetime) -> dict[str, Any]:
    """One unanswered or refused request as `verify list --json` prints it."""
    state = request.state
    if state is RequestState.PENDING and request.link_expires_at <= now:
        state = RequestState.EXPIRED
    return {
        "address": request.address,
        "case_number": request.case_number,
        "organisation_wide": request.case_number is None,
        "role": request.role.value,
        "name": request.name,
        "state": state.value,
        "requested_by": request.requested_by,
        "requested_at": request.requested_at.isoformat(),
        "link_expires_at": request.link_expires_at.isoformat(),
        "answered_at": request.decided_at.isoformat() if request.decided_at else None,
        "attempts": request.attempts,
        "channel": request.channel,
    }


def entries_table(entries: list[RegistryEntry], requests: Sequence[VerificationRequest] = (),
                  now: datetime | None = None) -> str:
    if not entries and not requests:
        return "No verified addresses."
    header = ("ADDRESS", "FOR", "ROLE", "STATE", "VERIFIED BY", "VERIFIED AT")
    rows = [
        (e.address, e.scope, e.role.value, e.state.value, e.verified_by,
         e.verified_at.strftime("%Y-%m-%d %H:%M"))
        for e in entries
    ]
    moment = now or datetime.now(UTC)
    rows += [
        (r.address, r.scope, r.role.value, request_json(r, moment)["state"],
         f"(asked by {r.requested_by})", r.requested_at.strftime("%Y-%m-%d %H:%M"))
        for r in requests
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
