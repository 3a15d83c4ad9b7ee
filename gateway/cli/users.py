"""`casegate users add|list|disable|set-manager`: the staff accounts that may submit mail.

`users add` reads the password from standard input when it is not a terminal (one line), and
asks twice with getpass otherwise. Passwords are never echoed, logged or taken as arguments.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gateway.cli.common import UsageError, add_common, open_app
from gateway.stores.users import User, UserError, UserRole
from policies.events import EventKind

if TYPE_CHECKING:
    from gateway.app import App


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("users", help="manage the staff accounts that may send mail")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add an account (password from stdin or a prompt)")
    add.add_argument("address")
    add.add_argument("--role", action="append", default=[], metavar="ROLE",
                     choices=[r.value for r in UserRole],
                     help="staff (default), governance or business-services; repeatable")
    add.add_argument("--send-as", action="append", default=[], metavar="ADDR",
                     help="another address this user may send as; repeatable")
    add.add_argument("--manager", default="", metavar="ADDR",
                     help="the manager told when this user sends under an override (RRP 1.2)")
    add_common(add)
    add.set_defaults(func=run_add)

    listing = actions.add_parser("list", help="list the accounts")
    add_common(listing)
    listing.set_defaults(func=run_list)

    disable = actions.add_parser("disable", help="stop an account from sending")
    disable.add_argument("address")
    add_common(disable)
    disable.set_defaults(func=run_disable)

    manager = actions.add_parser("set-manager",
                                 help="record the manager told of this user's overrides")
    manager.add_argument("address")
    manager.add_argument("manager", help="the manager's address; \"\" clears it")
    add_common(manager)
    manager.set_defaults(func=run_set_manager)


def read_password() -> str:
    """One line from stdin when it is not a terminal, else asked twice without echo."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def describe(user: User) -> str:
    roles = ",".join(r.value for r in user.roles)
    send_as = ",".join(user.send_as) or "-"
    state = "disabled" if user.disabled else "enabled"
    manager = f"\tmanager={user.manager}" if user.manager else ""
    return f"{user.address}\t{roles}\t{send_as}\t{state}{manager}"


@contextmanager
def changing_users(args: argparse.Namespace) -> Iterator[App]:
    """The App for one change to the accounts; a refused change is a usage error (exit 2)."""
    with open_app(args) as app:
        try:
            yield app
        except UserError as exc:
            raise UsageError(str(exc)) from None


def run_add(args: argparse.Namespace) -> int:
    password = read_password()
    roles = tuple(UserRole(r) for r in args.role) or (UserRole.STAFF,)
    with changing_users(args) as app:
        user = app.users.add(args.address, password, roles=roles, send_as=tuple(args.send_as),
                             manager=args.manager)
        app.audit.record(EventKind.USER_ADDED, sender=user.address,
                         roles=[r.value for r in user.roles], send_as=list(user.send_as),
                         manager=user.manager)
    print(f"added {describe(user)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with open_app(args) as app:
        users = app.users.list()
    for user in users:
        print(describe(user))
    return 0


def run_disable(args: argparse.Namespace) -> int:
    with changing_users(args) as app:
        user = app.users.disable(args.address)
        app.audit.record(EventKind.USER_DISABLED, sender=user.address)
    print(f"disabled {user.address}")
    return 0


def run_set_manager(args: argparse.Namespace) -> int:
    with changing_users(args) as app:
        user = app.users.set_manager(args.address, args.manager)
        app.audit.record(EventKind.USER_MANAGER_SET, sender=user.address, manager=user.manager)
    print(f"{user.address}: manager {user.manager or 'cleared'}")
    return 0
