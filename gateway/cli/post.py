"""`casegate post`: which postal method the policy requires for a printed item.

    casegate post --item ID [--verified-email] [--address none|unconfirmed|confirmed-eit|
        confirmed-wafh] [--sensitivity none|concern|particular] [--urgent] [--weight-kg N]
        [--third-party] [--office-transfer] [--hard-copy | --electronic] [--wishes-to-collect]
        [--from-office NAME] [--to-office NAME] [--method ID] [--json]

Office names may be an office or one of its teams (`casegate offices`). Exit 0 for send or
use-email, 1 for refuse (DX from an office that does not send it included), 2 for bad input (one
sentence naming the option). Every answer is an audit event ("post-decision"); bad input records
nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from typing import Any

from gateway.cli.common import UsageError, add_common, open_app
from gateway.printed.post import PostUnavailable, decide_and_record, post_options
from policies.post import PostAction, PostDecision, PostInputError, PostItem, PostOptions


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "post",
        help="which postal method the policy requires for a printed item",
        description="Say how a printed item may be sent (App. 2 post options). Exit 0 when it "
        "may be sent or must go by email, 1 when it must not be sent, 2 on bad input.",
    )
    parser.add_argument("--item", required=True, metavar="ID",
                        help="welcome-pack, allocation-letter, appointment-letter, "
                        "safeguarding-letter, court-report, detailed-correspondence, sar-file, "
                        "complaints-file, case-file, agency-check-result, third-party-document, "
                        "solicitor-correspondence")
    parser.add_argument("--verified-email", action="store_true",
                        help="a verified email address exists for the recipient")
    parser.add_argument("--address", default="none", metavar="STATUS",
                        help="none (default), unconfirmed, confirmed-eit, confirmed-wafh")
    parser.add_argument("--sensitivity", default="none", metavar="LEVEL",
                        help="none (default), concern, particular")
    parser.add_argument("--urgent", action="store_true", help="short timescales apply")
    parser.add_argument("--weight-kg", default="0", metavar="N", help="weight in kilograms")
    parser.add_argument("--third-party", action="store_true",
                        help="holds personal information provided by a third party")
    parser.add_argument("--office-transfer", action="store_true",
                        help="moving between Cafcass offices")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--hard-copy", action="store_true",
                      help="the item is paper (a paper case file never moves by a transfer "
                      "between teams)")
    form.add_argument("--electronic", action="store_true",
                      help="the item is wholly electronic (between offices: transfer between "
                      "teams, and no postal method)")
    parser.add_argument("--wishes-to-collect", action="store_true",
                        help="the adult or child asks to collect it in person (family "
                        "correspondence; their identity is confirmed on collection)")
    parser.add_argument("--from-office", default="", metavar="NAME",
                        help="the sending office, or one of its teams")
    parser.add_argument("--to-office", default="", metavar="NAME",
                        help="the receiving office, or one of its teams (between offices)")
    parser.add_argument("--method", default="", metavar="ID",
                        help="ask about one method only (e.g. dx)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_common(parser)
    parser.set_defaults(func=run)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def item_from_args(args: argparse.Namespace) -> PostItem:
    """The facts from the command line; PostInputError names the field."""
    try:
        weight = float(args.weight_kg)
    except ValueError:
        raise PostInputError("weight_kg", "The weight must be a number of kilograms.") from None
    if not math.isfinite(weight):
        raise PostInputError("weight_kg", "The weight must be a number of kilograms.")
    facts: dict[str, Any] = {
        "item": args.item,
        "verified_email": args.verified_email,
        "address": args.address,
        "sensitivity": args.sensitivity,
        "urgent": args.urgent,
        "weight_kg": weight,
        "third_party": args.third_party,
        "office_transfer": args.office_transfer,
        "from_office": args.from_office,
        "method": args.method,
        "hard_copy": args.hard_copy,
        "electronic": args.electronic,
        "wishes_to_collect": args.wishes_to_collect,
        "to_office": args.to_office,
    }
    return PostItem.from_mapping(facts)


def run(args: argparse.Namespace) -> int:
    # Audit lines (the SIEM copy) go to stderr so that stdout is only the answer.
    with contextlib.redirect_stdout(sys.stderr):
        options, decision = decide(args)
    if args.json:
        print(json.dumps(decision.to_json(), indent=2))
    else:
        print(describe(decision, options))
    return 1 if decision.decision is PostAction.REFUSE else 0


def decide(args: argparse.Namespace) -> tuple[PostOptions, PostDecision]:
    """Open the app, decide and record; bad input is a UsageError and records nothing."""
    app = open_app(args)
    try:
        options = post_options(app)
        item = item_from_args(args)
        return options, decide_and_record(options, app.audit, item,
                                          offices=app.offices.directory())
    except PostInputError as exc:
        raise UsageError(f"{option_name(exc.field)}: {exc}") from None
    except PostUnavailable as exc:
        raise UsageError(str(exc)) from None
    finally:
        app.close()


def describe(decision: PostDecision, options: PostOptions) -> str:
    """The answer in plain English, for a member of staff."""
    labels = {mid: options.methods[mid].label for mid in decision.methods}
    if decision.decision is PostAction.REFUSE:
        lines = [f"Do not send it. {decision.reason}"]
    elif decision.decision is PostAction.USE_EMAIL:
        lines = [f"Use email. {decision.reason}"]
    else:
        lines = [f"Send it. {decision.reason}", "Methods, best first:"]
        lines += [f"  {n}. {labels[m]} ({m})" for n, m in enumerate(decision.methods, 1)]
    if decision.instructions:
        lines.append("Instructions:")
        lines += [f"  - {text}" for text in decision.instructions]
    lines.append(f"Rule: {decision.rule} ({decision.citation})")
    return "\n".join(lines)
