"""The `casegate` command: one subcommand per module in this package.

Each module exposes `register(subparsers)`, which adds its parser and sets `func` to a callable
taking the parsed arguments and returning the exit code. Bad input is exit 2 with one sentence
on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from gateway.cli.common import UsageError

# The order is the order `casegate --help` lists them.
COMMANDS: tuple[str, ...] = (
    "check",
    "replay",
    "verify",
    "staff",
    "audit",
    "serve",
    "init",
    "users",
    "post",
    "dispatch",
    "keys",
    "messages",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casegate",
        description="Gateway that enforces the agency's data transfer policy on outbound mail.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        import_module(f"gateway.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"casegate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
