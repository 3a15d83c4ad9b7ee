"""`casegate dispatch`: paper moving between offices (RRP 4.9, 4.10).

    casegate dispatch record --file REF --from OFFICE --to OFFICE --method ID
        [--tracking REF] --expected WHEN --by ADDRESS [--json]
    casegate dispatch receive ID --office OFFICE --by ADDRESS --location TEXT [--json]
    casegate dispatch list [--open] [--office NAME] [--json]
    casegate dispatch overdue [--json]

Offices may be named by a team (`casegate offices add ... --team`). The sending office stays
responsible until the receiving office confirms receipt. Every step is an audit event. A method
the post options do not allow between these offices (DX from an office that does not send it,
say) is a decided refusal: exit 1, the reason, rule and citation, and a "dispatch-refused"
event. Bad input (exit 2, one sentence naming the option) records nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time

from gateway.cli.common import UsageError, add_common, open_app
from gateway.printed.offices import Dispatch, DispatchError, DispatchRefused, DispatchStore
from gateway.printed.post import PostUnavailable, open_dispatches

Action = Callable[[DispatchStore, argparse.Namespace, datetime], object]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dispatch",
        help="record and track paper moving between offices",
        description="Record a dispatch of paper between offices, confirm its receipt, list "
        "dispatches and those overdue. The sending office stays responsible until receipt.",
    )
    actions = parser.add_subparsers(dest="dispatch_command", metavar="ACTION", required=True)

    record = actions.add_parser("record", help="record paper leaving this office")
    record.add_argument("--file", required=True, metavar="REF", help="file or case reference")
    record.add_argument("--from", dest="from_office", required=True, metavar="OFFICE",
                        help="the sending office, or one of its teams")
    record.add_argument("--to", dest="to_office", required=True, metavar="OFFICE",
                        help="the receiving office, or one of its teams")
    record.add_argument("--method", required=True, metavar="ID",
                        help="special-delivery-guaranteed, hand-delivery, approved-courier, "
                        "special-delivery or dx (only between offices that send and receive it)")
    record.add_argument("--tracking", default="", metavar="REF",
                        help="tracking reference (required for tracked methods)")
    record.add_argument("--expected", required=True, metavar="WHEN",
                        help="expected arrival, ISO-8601 (UTC unless it says otherwise; "
                        "a date alone means the end of that day)")
    record.add_argument("--by", required=True, metavar="ADDRESS", help="who sends it")
    record.set_defaults(func=_runner(do_record))

    receive = actions.add_parser("receive", help="confirm receipt at the receiving office")
    receive.add_argument("id", type=int, metavar="ID", help="the dispatch number")
    receive.add_argument("--office", required=True, help="the receiving office")
    receive.add_argument("--by", required=True, metavar="ADDRESS", help="who signs for it")
    receive.add_argument("--location", required=True, help="where the file now is")
    receive.set_defaults(func=_runner(do_receive))

    listing = actions.add_parser("list", help="list dispatches, newest first")
    listing.add_argument("--open", action="store_true", help="only those not yet received")
    listing.add_argument("--office", default="", help="only those from or to this office")
    listing.set_defaults(func=_runner(do_list))

    overdue = actions.add_parser("overdue", help="dispatches past their expected arrival")
    overdue.set_defaults(func=_runner(do_overdue))

    for action in (record, receive, listing, overdue):
        action.add_argument("--json", action="store_true", help="print JSON")
        add_common(action)


def _runner(action: Action) -> Callable[[argparse.Namespace], int]:
    """Open the app and the store, run `action`, print its result; bad input is exit 2."""

    def run(args: argparse.Namespace) -> int:
        # Audit lines (the SIEM copy) go to stderr so that stdout is only the answer.
        try:
            with contextlib.redirect_stdout(sys.stderr):
                result = _with_store(args, action)
        except DispatchRefused as refused:
            _print_refusal(refused, args.json)
            return 1
        _print(result, args.json)
        return 0

    return run


def _with_store(args: argparse.Namespace, action: Action) -> object:
    app = open_app(args)
    try:
        store = open_dispatches(app)
    except PostUnavailable as exc:
        app.close()
        raise UsageError(str(exc)) from None
    try:
        return action(store, args, datetime.now(UTC))
    except DispatchError as exc:
        raise UsageError(f"{_option(exc.field)}: {exc}") from None
    finally:
        store.close()
        app.close()


def do_record(store: DispatchStore, args: argparse.Namespace, now: datetime) -> Dispatch:
    return store.record(
        file_reference=args.file,
        from_office=args.from_office,
        to_office=args.to_office,
        method=args.method,
        tracking_reference=args.tracking,
        expected_at=parse_when(args.expected),
        by=args.by,
        now=now,
    )


def do_receive(store: DispatchStore, args: argparse.Namespace, now: datetime) -> Dispatch:
    return store.receive(args.id, office=args.office, by=args.by, location=args.location, now=now)


def do_list(store: DispatchStore, args: argparse.Namespace, now: datetime) -> list[Dispatch]:
    return store.dispatches(open_only=args.open, office=args.office)


def do_overdue(store: DispatchStore, args: argparse.Namespace, now: datetime) -> list[Dispatch]:
    return store.overdue(now)


def parse_when(text: str) -> datetime:
    """An ISO-8601 date or time; UTC unless it says otherwise; a date means its last second."""
    cleaned = text.strip()
    if cleaned[-1:] in ("Z", "z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        if len(cleaned) == 10:
            day = datetime.fromisoformat(cleaned).date()
            return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        problem = f"'{text[:40]}' is not an ISO-8601 date or time."
        raise DispatchError("expected_at", problem) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_OPTIONS = {"file_reference": "--file", "from_office": "--from", "to_office": "--to",
            "tracking_reference": "--tracking", "expected_at": "--expected", "id": "ID"}


def _option(field_name: str) -> str:
    return _OPTIONS.get(field_name, "--" + field_name.replace("_", "-"))


def _print_refusal(refused: DispatchRefused, as_json: bool) -> None:
    """A decided refusal: why, what to do instead, the rule and its citation."""
    decision = refused.decision
    if as_json:
        print(json.dumps(decision.to_json(), indent=2))
    else:
        print(f"Not recorded: do not send it this way. {decision.reason}")
        print(f"Rule: {decision.rule} ({decision.citation})")


def _print(result: object, as_json: bool) -> None:
    if isinstance(result, Dispatch):
        if as_json:
            print(json.dumps(result.to_json(), indent=2))
        else:
            print(describe(result))
        return
    assert isinstance(result, list)
    if as_json:
        print(json.dumps([d.to_json() for d in result], indent=2))
    elif not result:
        print("No dispatches.")
    else:
        print(table(result))


def describe(dispatch: Dispatch) -> str:
    """One dispatch in plain English."""
    lines = [
        f"Dispatch {dispatch.id}: {dispatch.file_reference} from {dispatch.from_office} "
        f"to {dispatch.to_office} by {dispatch.method}"
        + (f" (tracking {dispatch.tracking_reference})" if dispatch.tracking_reference else ""),
        f"Expected by {dispatch.expected_at:%Y-%m-%d %H:%M} UTC.",
    ]
    if dispatch.received_at is not None:
        lines.append(f"Received {dispatch.received_at:%Y-%m-%d %H:%M} UTC by "
                     f"{dispatch.received_by}; now at: {dispatch.location}.")
        lines.append(f"{dispatch.to_office} is now responsible for it. Confirm receipt to "
                     f"{dispatch.from_office} by email (RRP 4.10).")
    else:
        lines.append(f"{dispatch.from_office} stays responsible until {dispatch.to_office} "
                     "confirms receipt (RRP 4.9); tell Governance of the change in location.")
    return "\n".join(lines)


def table(dispatches: Sequence[Dispatch]) -> str:
    """Dispatches as aligned columns."""
    rows = [("ID", "FILE", "FROM", "TO", "METHOD", "EXPECTED (UTC)", "RECEIVED", "RESPONSIBLE")]
    for d in dispatches:
        rows.append((
            str(d.id), d.file_reference, d.from_office, d.to_office, d.method,
            f"{d.expected_at:%Y-%m-%d %H:%M}",
            f"{d.received_at:%Y-%m-%d %H:%M}" if d.received_at else "-",
            d.responsible_office,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
