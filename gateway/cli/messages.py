"""`casegate messages list|show|revoke|reissue|expire`: the sender's control over portal copies.

    casegate messages list [--sender ADDR] [--json]
    casegate messages show ID [--json]            read status: opened when, views, downloads
    casegate messages revoke ID [--by ADDR]       withdraw: the recipient sees it was withdrawn
    casegate messages reissue ID [--by ADDR]      a new link mailed to the recipient; the old
                                                  link stops working; unlocks a copy that too
                                                  many wrong codes locked
    casegate messages expire [ID]                 destroy ID now, or every copy past its expiry

Exit 0 when done, 1 when there was nothing to do (not active, nothing due), 2 for an unknown
id (reissue: 75 when the new link's email could not be sent; try again later). Revocation,
re-issue and expiry are audit events ("portal-revoke", "portal-reissue", "portal-expiry").
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from gateway.app import App
from gateway.cli.common import UsageError, add_common, open_app
from gateway.config import ConfigError, public_url
from gateway.stores.portal import PortalCopy, PortalStore, expire_copy, revoke_copy, sweep_expired
from gateway.web.portal import Reissued, reissue_copy


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("messages", help="read status, revoke and expire portal copies",
                            description="What happened to the copies delivered through the "
                            "secure portal, and withdrawing or destroying them.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every copy with its state and read status")
    listing.add_argument("--sender", default=None, metavar="ADDR", help="only this sender's")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=list_messages)
    show = actions.add_parser("show", help="one copy's read status")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=show_message)
    revoke = actions.add_parser("revoke", help="withdraw a copy")
    revoke.add_argument("id")
    revoke.add_argument("--by", default="cli", metavar="ADDR", help="who withdrew it (audit)")
    revoke.set_defaults(func=revoke_message)
    reissue = actions.add_parser("reissue", help="mail the recipient a new link (unlocks)")
    reissue.add_argument("id")
    reissue.add_argument("--by", default="cli", metavar="ADDR", help="who re-issued it (audit)")
    reissue.set_defaults(func=reissue_message)
    expire = actions.add_parser("expire", help="destroy one copy now, or all that are due")
    expire.add_argument("id", nargs="?", default=None)
    expire.set_defaults(func=expire_messages)
    for action in (listing, show, revoke, reissue, expire):
        add_common(action)


def _store(app: App) -> PortalStore:
    assert app.portal is not None
    return app.portal


def _line(copy: PortalCopy) -> str:
    opened = copy.first_opened.isoformat(timespec="seconds") if copy.first_opened else "never"
    return (f"{copy.id}  {copy.state.value:<8} {copy.sender} -> {copy.recipient}  "
            f"sent {copy.created.isoformat(timespec='seconds')}  opened {opened}  "
            f"views {copy.views}  downloads {copy.downloads}  replies {copy.replies}")


def list_messages(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        copies = _store(app).list(args.sender)
    if args.json:
        print(json.dumps({"messages": [c.to_json() for c in copies]}, indent=2))
    else:
        for copy in copies:
            print(_line(copy))
    return 0


def _known(store: PortalStore, copy_id: str) -> PortalCopy:
    copy = store.get(copy_id)
    if copy is None:
        raise UsageError(f"there is no portal message {copy_id!r}")
    return copy


def show_message(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        copy = _known(_store(app), args.id)
    print(json.dumps(copy.to_json(), indent=2) if args.json else _line(copy))
    return 0


def revoke_message(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        store = _store(app)
        copy = _known(store, args.id)
        done = revoke_copy(store, app.audit, copy.id, by=args.by, now=datetime.now(UTC))
    print(f"{copy.id} withdrawn" if done else f"{copy.id} is {copy.state.value}: not withdrawn")
    return 0 if done else 1


def reissue_message(args: argparse.Namespace) -> int:
    """A new link for the copy, mailed to its recipient through the configured way out."""
    with open_app(args) as app:
        store = _store(app)
        copy = _known(store, args.id)
        try:
            transport = app.way_out()
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        delivery = app.portal_delivery(transport, lambda: public_url(app.config),
                                       lambda: datetime.now(UTC))

        async def run() -> Reissued:
            try:
                return await reissue_copy(store, app.audit, delivery, copy.id, by=args.by)
            finally:
                await transport.close()

        result = asyncio.run(run())
    print(result.sentence)
    if result.ok:
        return 0
    return 75 if result.temporary else 1


def expire_messages(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        store = _store(app)
        if args.id is None:
            done = sweep_expired(store, app.audit, datetime.now(UTC))
        else:
            copy = _known(store, args.id)
            done = (copy.id,) if expire_copy(store, app.audit, copy.id, reason="by-request") \
                else ()
    for copy_id in done:
        print(f"{copy_id} destroyed")
    if not done:
        print("nothing to expire")
    return 0 if done else 1
