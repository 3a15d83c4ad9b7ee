"""`casegate keys list|rotate`: the secure portal's master keys.

    casegate keys list [--json]     key ids, when made, which is current, how many copies use it
    casegate keys rotate            add a new current key; old copies stay readable

Keys live in the data directory (`portal-keys.json`, mode 0600) unless $CASEGATE_PORTAL_KEYS
holds them; then `rotate` prints the new keyring (JSON) for the operator to store there, and
writes nothing. Rotation is an audit event ("key-rotated").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

from gateway.cli.common import add_common, open_app
from transports.crypto import KEYS_FILE


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="list or rotate the secure portal's master keys",
                            description="List or rotate the master keys that wrap the data "
                            "keys of portal copies. Rotation never re-encrypts old copies.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the keys, newest last")
    add_common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=list_keys)
    rotate = actions.add_parser("rotate", help="make a new key current")
    add_common(rotate)
    rotate.set_defaults(func=rotate_keys)


def list_keys(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        assert app.keyring is not None and app.portal is not None
        in_use: dict[str, int] = {}
        for copy in app.portal.list():
            if copy.key_id:
                in_use[copy.key_id] = in_use.get(copy.key_id, 0) + 1
        rows = [{"id": k.key_id, "created": k.created, "current": k.key_id ==
                 app.keyring.current_id, "copies": in_use.get(k.key_id, 0)}
                for k in app.keyring.keys]
    if args.json:
        print(json.dumps({"keys": rows}, indent=2))
        return 0
    for row in rows:
        mark = " (current)" if row["current"] else ""
        print(f"{row['id']}  created {row['created'] or 'unknown'}  "
              f"copies {row['copies']}{mark}")
    return 0


def rotate_keys(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        assert app.keyring is not None
        rotated = app.keyring.rotated(datetime.now(UTC))
        from_env = bool(os.environ.get("CASEGATE_PORTAL_KEYS"))
        if not from_env:
            rotated.save(app.data_dir / KEYS_FILE)
        app.audit.record("key-rotated", key_id=rotated.current_id,
                         previous_key_id=app.keyring.current_id)
    if from_env:
        print("casegate: the keys come from $CASEGATE_PORTAL_KEYS: store this keyring there",
              file=sys.stderr)
        print(rotated.to_text())
    else:
        print(f"new current key {rotated.current_id}; older keys kept for older copies")
    return 0
