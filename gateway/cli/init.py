"""`casegate init [PATH]`: write a commented config file to start from.

Every key is written commented out with its default, taken from gateway.config itself, so the
file always matches the code: uncomment a line to change it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

from gateway.cli.common import UsageError
from gateway.config import Config

DEFAULT_PATH = Path("casegate.toml")

SECTION_NOTES: dict[str, str] = {
    "": "casegate configuration. Every line is a default; uncomment one to change it.\n"
        "Command-line flags of `casegate serve` override this file.",
    "smtp": "The SMTP front: submission with STARTTLS on `port`, implicit TLS on `tls_port`\n"
            "(0 disables it). `relay_from` lists trusted relay peers (CIDR), such as an\n"
            "Exchange or Microsoft 365 outbound connector, which need no AUTH.",
    "http": "The HTTP front: health, readiness and the web pages.",
    "metrics": "The metrics listener: /metrics (Prometheus), /healthz and /readyz, plain HTTP.\n"
               "Any host but loopback needs `bearer_token_file` (a file holding the token\n"
               "scrapers send as `Authorization: Bearer <token>`).",
    "upstream": "Where mail goes. With no `host`, copies are written to the outbox Maildir\n"
                "in the data directory instead. `tls` is starttls, implicit or none.",
    "policy": "Extra policy files applied over the built-in policy, and what to do with\n"
              "protected mail to several external recipients (split or refuse).",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("init", help="write a commented config file to start from")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH,
                        help=f"where to write it (default {DEFAULT_PATH})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        raise UsageError(f"{path} already exists (use --force to overwrite it)")
    try:
        path.write_text(render_config(), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path} cannot be written ({exc.__class__.__name__})") from None
    print(f"wrote {path}")
    return 0


def render_config() -> str:
    """The commented default config as TOML text."""
    out: list[str] = [_comment(SECTION_NOTES[""]), ""]
    tables: list[tuple[str, Any]] = []
    for f in fields(Config):
        if f.name == "source":
            continue
        default = _default(f)
        if is_dataclass(default):
            tables.append((f.name, default))
        else:
            out.append(f"# {f.name} = {_toml(default)}")
    for name, section in tables:
        out += ["", _comment(SECTION_NOTES.get(name, "")), f"[{name}]"]
        out += [f"# {f.name} = {_toml(getattr(section, f.name))}" for f in fields(section)]
    return "\n".join(line for line in out if line is not None) + "\n"


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()


def _comment(text: str) -> str:
    return "\n".join(f"# {line}" for line in text.splitlines())


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string for these values
