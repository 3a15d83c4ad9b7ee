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
from importlib.metadata import PackageNotFoundError, version

from gateway.cli.common import UsageError
from gateway.config import StartupError

# The order is the order `casegate --help` lists them.
COMMANDS: tuple[str, ...] = (
    "check",
    "replay",
    "verify",
    "case",
    "staff",
    "audit",
    "serve",
    "init",
    "service",
    "users",
    "post",
    "dispatch",
    "offices",
    "keys",
    "messages",
    "db",
)


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an option it does not know is reported with its own usage.

    (A plain subparser hands unknown options up, and the top-level parser then prints its own
    usage, which does not list the option the user got wrong.) Nested subcommands (`verify add`)
    get this class too, so the deepest parser that saw the option reports it.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casegate",
        description="Gateway that enforces the agency's data transfer policy on outbound mail.",
    )
    parser.add_argument("--version", action="version", version=f"casegate {installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=CommandParser)
    for name in COMMANDS:
        import_module(f"gateway.cli.{name}").register(sub)
    return parser


def installed_version() -> str:
    """The version of the installed package (its metadata), "unknown" when run uninstalled."""
    try:
        return version("casegate")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"casegate: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"casegate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
