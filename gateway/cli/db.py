"""`casegate db migrate|copy`: the stores' tables, on SQLite or PostgreSQL ([database]).

    casegate db migrate [--config FILE] [--data DIR] [--json]
        brings every store's tables to this casegate's version (each store also does this when
        it opens; nodes starting together take turns) and prints each component's version
    casegate db copy --from sqlite:DIR --to postgresql://... [--config FILE]
        moves a single-node installation into an empty PostgreSQL database: every table of
        DIR's SQLite files, in one transaction; then checks the audit chain whole there

Exit 0 when done; 1 when the copied chain does not verify; 2 for bad input (the target holds
data, DIR is not a data directory, the URL is not PostgreSQL's, a relay journal not folded yet).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from gateway.app import OUTBOX_DIR, App, all_stores
from gateway.cli.common import UsageError, add_common, open_app
from gateway.config import ConfigError
from transports.database import (
    SCHEMES,
    Error,
    copy_sqlite_files,
    redact,
    schema_versions,
    tables_with_rows,
)

OUTBOX_LEDGER = f"{OUTBOX_DIR}-ledger.sqlite3"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("db", help="migrate the stores' tables; move SQLite to PostgreSQL",
                            description="The stores' tables: SQLite files in the data "
                            "directory, or one PostgreSQL database ([database] url).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    migrate = actions.add_parser("migrate", help="bring every store's tables to this version")
    migrate.add_argument("--json", action="store_true", help="print JSON")
    add_common(migrate)
    migrate.set_defaults(func=run_migrate)
    copy = actions.add_parser("copy", help="move a SQLite data directory into PostgreSQL")
    copy.add_argument("--from", dest="source", required=True, metavar="sqlite:DIR",
                      help="the data directory of the installation to move")
    copy.add_argument("--to", dest="target", default=None, metavar="URL",
                      help="an empty PostgreSQL database (default: $CASEGATE_DATABASE_URL)")
    copy.add_argument("--config", type=Path, default=None, help="config file (TOML)")
    copy.set_defaults(func=run_copy)


def run_migrate(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        all_stores(app)
        versions = _versions(app)
        where = app.database.describe()
    if args.json:
        print(json.dumps({"database": where, "versions": versions}, sort_keys=True))
        return 0
    print(f"Every store is at this casegate's version in {where}:")
    for component, version in sorted(versions.items()):
        print(f"  {component}: {version}")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    source = _source_dir(args.source)
    target = args.target or os.environ.get("CASEGATE_DATABASE_URL") or ""
    if not target.startswith(SCHEMES):
        raise UsageError("--to must be a postgresql:// URL (or set CASEGATE_DATABASE_URL)")
    journals = sorted(p.name for p in source.glob("*.journal.*"))
    if journals:
        raise UsageError(f"{source} holds relay acceptances not yet in the ledger "
                         f"({journals[0]}): start and stop the gateway there once, then copy")
    try:
        if tables_with_rows(target):
            raise UsageError(f"{redact(target)} already holds casegate data "
                             f"({', '.join(tables_with_rows(target)[:5])}): copy into an "
                             "empty database")
        # The SQLite files first brought to this version, then the target's tables made.
        with _open(args, source, None, check_anchors=True) as app:
            all_stores(app)
        with _open(args, source, target, check_anchors=False) as app:
            all_stores(app)
        # The outbox's ledger stays beside its Maildir, on the node, whatever the engine.
        files = sorted(f for f in source.glob("*.sqlite3") if f.name != OUTBOX_LEDGER)
        copied = copy_sqlite_files(files, target)
    except Error as exc:
        raise UsageError(f"{redact(target)}: {exc}") from None
    with _open(args, source, target, check_anchors=True) as app:
        broken = app.audit.verify()
        last, _ = app.audit.store.head()
    for table in copied:
        print(f"  {table.table}: {table.rows} rows")
    if broken is not None:
        print(f"The copied audit trail does not verify: first broken sequence number {broken}.")
        return 1
    print(f"Copied {sum(t.rows for t in copied)} rows from {source} to {redact(target)}; "
          f"the audit trail verifies there ({last} events). Point every node's "
          "[database] url at it, and give each node the key files.")
    return 0


def _versions(app: App) -> dict[str, int]:
    """Each component's schema version: in every SQLite file, or in the one database."""
    files = [f.name for f in sorted(app.data_dir.glob("*.sqlite3"))] \
        if app.database.is_sqlite else ["any"]
    versions: dict[str, int] = {}
    for name in files:
        db = app.database.connect(name, autocommit=True)
        try:
            versions.update(schema_versions(db))
        finally:
            db.close()
    return versions


def _source_dir(text: str) -> Path:
    if not text.startswith("sqlite:"):
        raise UsageError("--from must be sqlite:DIR, the data directory of the installation")
    path = Path(text.removeprefix("sqlite:"))
    if not any(path.glob("*.sqlite3")):
        raise UsageError(f"{path} is not a casegate data directory (no *.sqlite3 files)")
    return path


def _open(args: argparse.Namespace, data: Path, url: str | None, *,
          check_anchors: bool) -> App:
    try:
        return App.open(config_path=args.config, data_dir=data, database_url=url or "",
                        check_anchors=check_anchors)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
