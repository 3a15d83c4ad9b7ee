"""`casegate keys list|rotate|init|dkim`: the secure portal's master keys, and the DKIM key.

    casegate keys list [--json]     key ids, when made, which is current, how many copies use it
    casegate keys rotate            add a new current key; old copies stay readable; a running
                                    gateway is told (SIGHUP) and confirms, or rotate says not
    casegate keys init              make the keys a data directory lacks, where nothing needs
                                    the old ones (never over sealed copies or a chained trail)
    casegate keys dkim [--domain D] [--selector S] [--force]
                                    make the DKIM signing key, print its DNS record
    casegate keys dkim --print      print the DNS record of the existing DKIM key again

Keys live in the data directory (`portal-keys.json`, mode 0600) unless $CASEGATE_PORTAL_KEYS
holds them; then `rotate` prints the new keyring (JSON) for the operator to store there, and
writes nothing. Rotation is an audit event ("key-rotated"); the running gateway's reload is
another ("key-reloaded"), which `rotate` waits for (up to `RELOAD_WAIT` seconds).

casegate never makes a key on its own except for a new data directory: a missing, unreadable or
altered key stops it at start-up (gateway.stores.portalkeys, gateway.audit.keys). `keys init`
is the deliberate way to make one later; it refuses where data sealed or chained with the old
key exists (restore that key from backup instead).

The DKIM key (`dkim-<selector>.pem` in the data directory unless `dkim.key_file` says where,
mode 0600) is never overwritten without `--force`. The record printed is one zone-file line:
`<selector>._domainkey.<domain>. IN TXT "v=DKIM1; k=rsa; p=..."`, in strings of 255 octets.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.app import App
from gateway.audit.keys import AuditKeyError
from gateway.audit.trail import AuditLog, EventFilter
from gateway.cli.audit import data_dir, database
from gateway.cli.common import UsageError, add_common, open_app
from gateway.runtime.pidfile import PID_FILE, running_pid
from gateway.stores.portalkeys import KeyringError, PortalKeys, init_keyring
from policies.events import EventKind
from transports.crypto import KEYS_FILE, Keyring
from transports.dkim import DkimKeyError, key_path, make_key, txt_record, zone_line

RELOAD_WAIT = 10.0  # seconds `rotate` waits for the running gateway to confirm the new key


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="the portal's master keys; the DKIM signing key",
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
    init = actions.add_parser("init", help="make the keys a data directory lacks",
                              description="Make the audit keys for a new trail and the portal "
                              "keyring when it is missing and no stored copy needs the old one. "
                              "Never replaces a key that sealed or chained data needs.")
    add_common(init)
    init.set_defaults(func=init_keys)
    dkim = actions.add_parser("dkim", help="make the DKIM signing key and print its DNS record",
                              description="Make the 2048-bit RSA key casegate signs with "
                              "(mode 0600, in the data directory) and print the TXT record to "
                              "publish. Domain and selector default to the config's [dkim].")
    add_common(dkim)
    dkim.add_argument("--domain", help="signing domain (default: dkim.domain)")
    dkim.add_argument("--selector", help="selector (default: dkim.selector)")
    dkim.add_argument("--force", action="store_true", help="replace an existing key")
    dkim.add_argument("--print", dest="print_only", action="store_true",
                      help="print the record of the existing key; make nothing")
    dkim.set_defaults(func=dkim_key)


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
        rotated = app.keyring.rotated(datetime.now(UTC))
        from_env = bool(os.environ.get("CASEGATE_PORTAL_KEYS"))
        if not from_env:
            rotated.save(app.data_dir / KEYS_FILE)
            keys = PortalKeys(app.database)
            try:
                keys.record(rotated)
            finally:
                keys.close()
        seq = app.audit.record(EventKind.KEY_ROTATED, key_id=rotated.current_id,
                               previous_key_id=app.keyring.current_id)
        if from_env:
            print("casegate: the keys come from $CASEGATE_PORTAL_KEYS: store this keyring "
                  "there, then restart casegate (it reads them only at start)", file=sys.stderr)
            print(rotated.to_text())
            return 0
        print(f"new current key {rotated.current_id}; older keys kept for older copies")
        return tell_gateway(app, rotated, seq)


def tell_gateway(app: App, rotated: Keyring, after: int) -> int:
    """Send the running gateway SIGHUP and wait for its "key-reloaded" event; say which."""
    pid = running_pid(app.data_dir)
    if pid is None:
        print(f"No running gateway was told (none holds {app.data_dir / PID_FILE}): casegate "
              "seals with the new key from its next start.")
        return 0
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"The running gateway (pid {pid}) could not be told ({exc.strerror}): restart "
              "it, or send it SIGHUP, to seal with the new key.")
        return 1
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        for event in app.audit.page(EventFilter(kind=EventKind.KEY_RELOADED), limit=5):
            if event.seq > after and event.metadata.get("key_id") == rotated.current_id:
                print(f"The running gateway (pid {pid}) now seals new copies with "
                      f"{rotated.current_id}.")
                return 0
        time.sleep(0.1)  # polling another process's commits; nothing here to wait on instead
    print(f"The running gateway (pid {pid}) was told (SIGHUP) but did not confirm within "
          f"{RELOAD_WAIT:.0f} s: see its log for 'keys-not-reloaded', or restart it.")
    return 1


def init_keys(args: argparse.Namespace) -> int:
    """Make the audit keys (a new trail only) and the portal keyring (when missing and no
    stored copy needs the old one)."""
    root = data_dir(args)
    engine = database(args, root)
    try:
        audit = AuditLog.open(engine, stream=sys.stderr)
    except AuditKeyError as exc:
        engine.close()
        raise UsageError(str(exc)) from None
    try:
        made = list(audit.created_keys)
        if os.environ.get("CASEGATE_PORTAL_KEYS"):
            print("The portal keys come from $CASEGATE_PORTAL_KEYS: nothing to make for them.")
        elif (root / KEYS_FILE).exists():
            print(f"{root / KEYS_FILE} exists: kept (casegate never replaces a keyring).")
        else:
            try:
                keyring, forgotten = init_keyring(engine, datetime.now(UTC))
            except KeyringError as exc:
                raise UsageError(str(exc)) from None
            audit.record(EventKind.KEY_CREATED, file=KEYS_FILE, key_id=keyring.current_id,
                         replaced_key_ids=sorted(forgotten))
            made.append(KEYS_FILE)
    finally:
        audit.close()
        engine.close()
    print(f"Made {', '.join(sorted(made))} in {root}." if made
          else f"Nothing to make: {root} has its keys.")
    return 0


def dkim_key(args: argparse.Namespace) -> int:
    """Make the DKIM key (or, with --print, read it) and print its DNS record."""
    with open_app(args) as app:
        config = app.config.dkim
        domain = (args.domain or config.domain).rstrip(".")
        selector = args.selector or config.selector
        path = key_path(app.data_dir, config.key_file, selector)
    if not domain:
        raise UsageError("no signing domain: give --domain or set dkim.domain")
    if args.print_only:
        pem = _read_key(path)
    elif path.exists() and not args.force:
        raise UsageError(f"a DKIM key already exists at {path}: print its record with "
                         f"'casegate keys dkim --print', or replace it with --force")
    else:
        pem = make_key()
        _write_key(path, pem)
        print(f"wrote {path}; publish this record, then set dkim.domain = \"{domain}\" and "
              f"dkim.selector = \"{selector}\"", file=sys.stderr)
    try:
        print(zone_line(selector, domain, txt_record(pem)))
    except DkimKeyError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return 0


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"the DKIM key {path} cannot be read ({exc.__class__.__name__}); "
                         f"make one with 'casegate keys dkim'") from None


def _write_key(path: Path, pem: bytes) -> None:
    """Write the key readable by its owner only, replacing any other atomically."""
    temporary = path.with_name(f".{path.name}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        os.replace(temporary, path)
    except OSError as exc:
        raise UsageError(f"the DKIM key cannot be written to {path} "
                         f"({exc.__class__.__name__})") from None
