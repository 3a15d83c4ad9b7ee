"""`casegate check`: the decision the gateway would take on one message, without sending it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gateway.cli.common import UsageError, add_common, open_app
from gateway.stages.presentation import decision_json, decision_table, header_envelope
from policies.engine import evaluate
from policies.errors import MessageError
from policies.model import Verdict

MAX_INPUT = 64 * 1024 * 1024  # refuse to read more than this from one file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "check",
        help="show what the gateway would do with a message (dry run)",
        description="Show the decision the gateway would take on MESSAGE.eml. Exit 0 when it "
        "would be delivered, 1 when refused, 2 on bad input.",
    )
    parser.add_argument("message", type=Path, metavar="MESSAGE.eml")
    parser.add_argument("--from", dest="sender", metavar="ADDR",
                        help="envelope sender (default: the From header)")
    parser.add_argument("--rcpt", action="append", default=[], metavar="ADDR",
                        help="envelope recipient, repeatable (default: To, Cc and Bcc)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_common(parser)
    parser.set_defaults(func=run)


def read_message(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_INPUT + 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a message file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_INPUT:
        raise UsageError(f"{path}: is larger than {MAX_INPUT // (1024 * 1024)} MB")
    if not raw.strip():
        raise UsageError(f"{path}: is empty")
    return raw


def run(args: argparse.Namespace) -> int:
    raw = read_message(args.message)
    header_sender, header_rcpts = header_envelope(raw)
    sender = args.sender or header_sender
    recipients = args.rcpt or header_rcpts
    if not sender:
        raise UsageError("no sender: the message has no From address; give one with --from")
    if not recipients:
        raise UsageError("no recipients: the message has no To, Cc or Bcc; give them with --rcpt")
    app = open_app(args)
    try:
        decision = evaluate(raw, sender, recipients, app.policy, app.snapshot(), time.monotonic,
                            multiple_external=app.config.policy.multiple_external)
    except MessageError as exc:
        raise UsageError(f"{args.message}: {exc}") from None
    finally:
        app.close()
    if args.json:
        print(json.dumps(decision_json(decision), indent=2))
    else:
        print(decision_table(decision))
    return 0 if decision.verdict is Verdict.DELIVER else 1
