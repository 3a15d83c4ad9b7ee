"""Options every command shares, and the one place the CLI turns them into an App."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import structlog

from gateway.app import App
from gateway.config import Config, ConfigError


class UsageError(Exception):
    """Bad input from the user: printed as one sentence, exit code 2."""


class _Quiet(io.StringIO):
    """An event stream that keeps nothing: the CLI's events go to the store only."""

    def write(self, text: str) -> int:
        return len(text)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="config file (TOML)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data directory (default: $CASEGATE_DATA, else the config's data_dir, "
        "else ./casegate-data)",
    )


def open_app(args: argparse.Namespace, event_stream: TextIO | None = None,
             adjust: Callable[[Config], Config] | None = None) -> App:
    """Build the App (config, data directory, policy, stores) from the common options.

    Audit events are always stored; they also stream as JSON lines to `event_stream`.
    `serve` passes stdout (for a SIEM); other commands keep their own output clean by default.
    `adjust` changes the config before anything is built from it (`serve`'s flags).
    """
    if event_stream is None:
        _log_to_stderr()
    env_data = os.environ.get("CASEGATE_DATA")
    try:
        return App.open(
            config_path=args.config,
            data_dir=args.data or (Path(env_data) if env_data else None),
            event_stream=event_stream or _Quiet(),
            portal_keys=os.environ.get("CASEGATE_PORTAL_KEYS") or None,
            adjust=adjust,
            database_url=os.environ.get("CASEGATE_DATABASE_URL") or None,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _log_to_stderr() -> None:
    """Send log lines to stderr, so a command's own output on stdout (and --json) stays clean.

    The logger is made at each call, so it writes to whatever `sys.stderr` is at that moment.
    """
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
