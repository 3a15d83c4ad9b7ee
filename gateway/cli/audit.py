"""`casegate audit`: verify the tamper-evident trail, list events, make and check checkpoints.

    casegate audit verify [--data DIR] [--anchor-file FILE]...
                                                  exit 0 intact, 1 broken (first broken seq):
                                                  the chain, its checkpoints, and its anchors
    casegate audit list [filters] [--json|--csv]  a table by default
    casegate audit checkpoint [--export FILE]     sign the chain's head now
    casegate audit checkpoint --verify FILE --public-key PEM
                                                  the signature, then the whole chain up to it
    casegate audit reanchor --reason TEXT         accept the trail as it stands after a restore

The audit commands open only the audit trail, never the policy: an auditor can verify a trail
even when the policy files are broken or missing. The trail is in the data directory, or in the
PostgreSQL database `[database] url` (or CASEGATE_DATABASE_URL) names: there one chain holds the
events of every node, and `verify` checks it whole and counts each node's events.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Iterable
from pathlib import Path

from gateway.app import open_database
from gateway.audit.anchor import HEAD_FILE, disagreement
from gateway.audit.export import (
    CheckpointError,
    checkpoint_document,
    csv_chunks,
    json_line,
    printable,
    read_checkpoint_document,
    table,
)
from gateway.audit.keys import AuditKeyError
from gateway.audit.store import StoredEvent, peek
from gateway.audit.trail import AUDIT_DB_FILE, GRADES, AuditLog, EventFilter, normalise_time
from gateway.cli.common import UsageError, add_common
from gateway.config import DEFAULT_DATA_DIR, ConfigError, load_config
from transports.database import Database

MAX_DOCUMENT = 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit",
        help="verify and review the tamper-evident audit trail",
        description="Verify, list and checkpoint the audit trail.",
    )
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    verify = actions.add_parser(
        "verify",
        help="check the hash chain; exit 1 and the first broken sequence number if broken",
    )
    add_common(verify)
    verify.add_argument("--anchor-file", type=Path, action="append", default=[],
                        metavar="FILE", help="an external anchor file to compare with "
                        "(repeatable; the config's audit.anchor_file is always compared)")
    verify.set_defaults(func=run_verify)

    reanchor = actions.add_parser(
        "reanchor", help="accept the trail as it stands after restoring audit.sqlite3",
        description="After a restore from backup, casegate refuses to start while the trail "
        "holds less than its signed head says. This records an event (graded high) naming "
        "what the head said and what was found, then anchors the trail as it stands.")
    add_common(reanchor)
    reanchor.add_argument("--reason", required=True,
                          help="why, for the record (e.g. 'restored from the 02:00 backup')")
    reanchor.set_defaults(func=run_reanchor)

    listing = actions.add_parser("list", help="list events, filtered")
    add_common(listing)
    listing.add_argument("--since", help="from this UTC date or time (ISO-8601), inclusive")
    listing.add_argument("--until", help="before this UTC date or time (ISO-8601)")
    listing.add_argument("--sender", default="", help="sender address")
    listing.add_argument("--domain", default="", help="recipient domain")
    listing.add_argument("--case", default="", help="case number")
    listing.add_argument("--rule", default="", help="policy rule id, e.g. personal-address")
    listing.add_argument("--grade", default="", choices=("", *GRADES), help="breach grade")
    listing.add_argument("--kind", default="", help="event kind, e.g. refusal")
    listing.add_argument("--limit", type=int, default=0, help="only the newest N events")
    shape = listing.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one JSON object per line")
    shape.add_argument("--csv", action="store_true", help="CSV with a header row")
    listing.set_defaults(func=run_list)

    checkpoint = actions.add_parser(
        "checkpoint", help="sign the chain's head now, export it, or verify an export"
    )
    add_common(checkpoint)
    checkpoint.add_argument("--export", type=Path, metavar="FILE",
                            help="write the new signed checkpoint as JSON to FILE")
    checkpoint.add_argument("--verify", type=Path, metavar="FILE",
                            help="verify an exported checkpoint (needs --public-key)")
    checkpoint.add_argument("--public-key", type=Path, metavar="PEM",
                            help="the audit signing public key, kept apart from the box")
    checkpoint.set_defaults(func=run_checkpoint)


def data_dir(args: argparse.Namespace) -> Path:
    """The data directory, by the same rules as `App.open`, without loading the policy."""
    env_data = os.environ.get("CASEGATE_DATA")
    explicit = args.data or (Path(env_data) if env_data else None)
    if explicit is not None:
        return Path(explicit)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    root = Path(config.data_dir or DEFAULT_DATA_DIR)
    if args.config is not None and not root.is_absolute():
        root = args.config.parent / root
    return root


def database(args: argparse.Namespace, root: Path) -> Database:
    """The stores' engine, as `App.open` chooses it: `[database]` of --config, overridden by
    CASEGATE_DATABASE_URL; SQLite files in `root` when neither names a URL."""
    try:
        return open_database(load_config(args.config), root,
                             os.environ.get("CASEGATE_DATABASE_URL") or None)
    except (ConfigError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def holds_trail(engine: Database) -> bool:
    """Whether there is a trail to open (without creating one)."""
    root = engine.data_dir
    if (root / HEAD_FILE).is_file():
        return True
    if engine.is_sqlite:
        return (root / AUDIT_DB_FILE).is_file()
    try:
        events, meta = peek(engine)
    except sqlite3.Error as exc:
        raise UsageError(f"{engine.describe()}: cannot be read ({exc})") from None
    return bool(events or meta)


def open_existing(args: argparse.Namespace) -> AuditLog:
    """The audit log of an existing data directory; never creates a new trail or key. Close
    it with `close`."""
    root = data_dir(args)
    engine = database(args, root)
    try:
        if not holds_trail(engine):
            where = root if engine.is_sqlite else engine.describe()
            raise UsageError(f"{where}: holds no audit trail ({AUDIT_DB_FILE} is missing)"
                             if engine.is_sqlite else f"{where}: holds no audit trail")
        return AuditLog.open(engine, stream=sys.stderr)
    except AuditKeyError as exc:
        engine.close()
        raise UsageError(str(exc)) from None
    except sqlite3.Error as exc:
        engine.close()
        raise UsageError(f"{engine.describe()}: the audit trail cannot be read ({exc})") \
            from None
    except BaseException:
        engine.close()
        raise


def close(audit: AuditLog) -> None:
    """Close an audit log `open_existing` opened, and its database."""
    try:
        audit.close()
    finally:
        audit.store.database.close()


def by_node(counts: dict[str, int]) -> str:
    """`audit verify`'s line naming the nodes that wrote the events ("" when none is named)."""
    named = {node: count for node, count in counts.items() if node}
    if not named:
        return ""
    parts = [f"{printable(node)} {count}" for node, count in sorted(named.items())]
    if counts.get("", 0):
        parts.append(f"no node recorded {counts['']}")
    return f"Events by node: {', '.join(parts)}."


def anchor_files(args: argparse.Namespace) -> list[Path]:
    """The external anchor files to compare with: --anchor-file, and the config's."""
    files = list(getattr(args, "anchor_file", []))
    if args.config is not None:
        try:
            configured = load_config(args.config).audit.anchor_file
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if configured:
            path = Path(configured)
            files.append(path if path.is_absolute() else args.config.parent / path)
    return files


def run_verify(args: argparse.Namespace) -> int:
    files = anchor_files(args)
    audit = open_existing(args)
    try:
        broken = audit.verify()
        problems = audit.anchor_problems(files)
        last, _ = audit.store.head()
        nodes = by_node(audit.store.nodes())
    finally:
        close(audit)
    if broken is not None or problems:
        print("The audit trail has been tampered with.")
        for _, sentence in problems:
            print(f"{sentence}.")
        first = min([s for s, _ in problems] + ([broken] if broken is not None else []))
        print(f"first broken sequence number: {first}")
        return 1
    anchored = " and its anchors" if files else " and its signed head"
    print(f"The audit trail is intact: {last} events, chain{anchored} verified.")
    if nodes:
        print(nodes)
    return 0


def run_reanchor(args: argparse.Namespace) -> int:
    audit = open_existing(args)
    try:
        problems = audit.anchor_problems(anchor_files(args))
        seq = audit.reanchor(args.reason.strip()[:200])
    finally:
        close(audit)
    for _, sentence in problems:
        print(f"was: {sentence}.")
    print(f"The trail is anchored as it stands: event {seq} records the restore.")
    return 0


def _filter(args: argparse.Namespace) -> EventFilter:
    try:
        since = normalise_time(args.since) if args.since else ""
        until = normalise_time(args.until) if args.until else ""
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EventFilter(
        since=since,
        until=until,
        sender=args.sender,
        domain=args.domain,
        case_number=args.case,
        rule=args.rule,
        grade=args.grade,
        kind=args.kind,
    )


def run_list(args: argparse.Namespace) -> int:
    flt = _filter(args)
    if args.limit < 0:
        raise UsageError("--limit must not be negative")
    audit = open_existing(args)
    try:
        events: Iterable[StoredEvent] = (
            reversed(audit.page(flt, limit=args.limit)) if args.limit else audit.iterate(flt)
        )
        if args.json:
            for event in events:  # streamed: a million events never sit in memory
                sys.stdout.write(json_line(event) + "\n")
        elif args.csv:
            for chunk in csv_chunks(events):
                sys.stdout.write(chunk)
        else:
            rows = list(events)
            print(table(rows) if rows else "No events match.")
    finally:
        close(audit)
    return 0


def _read_text(path: Path, what: str) -> str:
    try:
        with path.open("r", encoding="utf-8") as handle:
            text = handle.read(MAX_DOCUMENT + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: the {what} cannot be read ({exc.__class__.__name__})") from None
    if len(text) > MAX_DOCUMENT:
        raise UsageError(f"{path}: the {what} is too large")
    return text


def verify_export(args: argparse.Namespace) -> int:
    if args.public_key is None:
        raise UsageError("--verify needs --public-key: the key kept apart from this box")
    try:
        document = json.loads(_read_text(args.verify, "checkpoint"))
    except json.JSONDecodeError:
        raise UsageError(f"{args.verify}: is not JSON") from None
    public_key = _read_text(args.public_key, "key")
    if "PRIVATE KEY-----" in public_key:
        raise UsageError(
            f"{args.public_key} is the private signing key, but --public-key wants the public "
            "key: take the \"public_key\" of an exported checkpoint (casegate audit checkpoint "
            "--export FILE), or run `openssl pkey -pubout -in audit-signing.pem`")
    try:
        checkpoint = read_checkpoint_document(document, public_key)
    except CheckpointError as exc:
        print(f"The checkpoint is not valid: {exc}.")
        return 1
    print(f"The checkpoint is validly signed: sequence number {checkpoint.seq}, "
          f"{checkpoint.time}.")
    root = data_dir(args)
    engine = database(args, root)
    try:
        if not holds_trail(engine):
            return 0
    finally:
        engine.close()
    audit = open_existing(args)
    try:
        # The whole chain up to the checkpoint, then the checkpoint's own mac: a trail edited
        # in the middle (or cut short before it) disagrees, not only one with another mac there.
        broken = audit.store.verify(up_to=checkpoint.seq)
        last, _ = audit.store.head()
        problem = disagreement(checkpoint, last, audit.store.mac_at, str(args.verify),
                               AUDIT_DB_FILE if audit.store.database.is_sqlite
                               else audit.store.location)
    finally:
        close(audit)
    if broken is not None or problem is not None:
        if problem is not None:
            print(f"{problem[1]}.")
        first = min(([problem[0]] if problem is not None else [])
                    + ([broken] if broken is not None else []))
        print("The audit trail in the data directory disagrees with it: "
              f"first broken sequence number: {first}")
        return 1
    print(f"The audit trail in the data directory agrees with it: every event up to "
          f"{checkpoint.seq} verified.")
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    if args.verify is not None:
        return verify_export(args)
    audit = open_existing(args)
    try:
        checkpoint = audit.checkpoint()
        document = checkpoint_document(checkpoint, audit.public_key_pem)
    finally:
        close(audit)
    if args.export is not None:
        try:
            args.export.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.export}: cannot be written ({exc.strerror})") from None
        print(f"Checkpoint at sequence number {checkpoint.seq} written to {args.export}.")
    else:
        print(json.dumps(document, indent=2))
    return 0
