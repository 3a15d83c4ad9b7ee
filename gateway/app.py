"""The composition root: config, data directory, policy and stores, built once and passed down.

Every entry point (CLI commands, `serve`) builds one `App` and hands its parts to the code that
needs them; nothing below reads the config or the environment on its own.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TextIO

from gateway.audit import AuditLog
from gateway.config import (
    DEFAULT_DATA_DIR,
    Config,
    ConfigError,
    DkimConfig,
    load_config,
    os_reason,
)
from gateway.portalstore import PORTAL_DB_FILE, PortalStore
from gateway.users import UserStore
from policies.loader import EMBEDDED_FILES, Policy, PolicyError, parse_policy
from policies.model import Snapshot
from transports.crypto import KEYS_FILE, CryptoError, Keyring
from transports.dkim import DkimKeyError, DkimSigner, key_path
from verification.registry import Registry


def read_policy(config: Config, base_dir: Path) -> Policy:
    """The embedded policy plus the organisation's override files, validated."""
    data = resources.files("policies").joinpath("data")
    documents = [
        (f"policies/data/{name}", data.joinpath(name).read_text("utf-8"))
        for name in EMBEDDED_FILES
    ]
    for name in config.policy.files:
        path = Path(name)
        if not path.is_absolute():
            path = base_dir / path
        try:
            documents.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.__class__.__name__
            raise ConfigError(f"{path}: policy file cannot be read ({reason})") from None
    try:
        return parse_policy(documents)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None


def open_keyring(data_dir: Path, text: str | None) -> Keyring:
    """The portal keyring: from `text` (the environment, via the CLI) or the data directory."""
    try:
        if text:
            return Keyring.from_text(text, "$CASEGATE_PORTAL_KEYS")
        return Keyring.load_or_create(data_dir / KEYS_FILE, datetime.now(UTC))
    except CryptoError as exc:
        raise ConfigError(str(exc)) from None


def resolve_data_dir(config: Config, config_path: Path | None, data_dir: Path | None) -> Path:
    """The data directory: `data_dir` (the --data flag) as given, else the config's `data_dir`,
    which when relative is taken from the config file's folder."""
    if data_dir is not None:
        return data_dir
    root = Path(config.data_dir or DEFAULT_DATA_DIR)
    if config_path is not None and not root.is_absolute():
        return config_path.parent / root
    return root


def dkim_signer(config: DkimConfig, data_dir: Path) -> DkimSigner | None:
    """The DKIM signer `[dkim]` asks for (None when it names no domain); a missing or unusable
    key is a ConfigError, so casegate never starts sending unsigned mail by mistake."""
    if not config.domain:
        return None
    try:
        return DkimSigner.load(key_path(data_dir, config.key_file, config.selector),
                               config.domain.rstrip("."), config.selector, config.headers)
    except DkimKeyError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class App:
    config: Config
    data_dir: Path
    policy: Policy
    registry: Registry
    audit: AuditLog
    users: UserStore
    portal: PortalStore | None = None  # encrypted copies (issue 5)
    keyring: Keyring | None = None  # the portal's master keys

    @classmethod
    def open(cls, config_path: Path | None, data_dir: Path | None,
             event_stream: TextIO | None = None, portal_keys: str | None = None) -> App:
        """Build everything; audit events go to `event_stream` as JSON lines.

        `casegate serve` streams events to stdout for a SIEM; the other commands pass stderr
        (the default) so their own output on stdout stays clean for scripts.
        """
        config = load_config(config_path)
        if data_dir is not None:
            config = replace(config, data_dir=str(data_dir))
        root = resolve_data_dir(config, config_path, data_dir)
        base_dir = config_path.parent if config_path is not None else Path.cwd()
        policy = read_policy(config, base_dir)
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(root, 0o700)
            registry = Registry(root / "casegate.sqlite3")
            audit = AuditLog.open(root, rules=policy.rules, kind_grades=policy.grades,
                                  checkpoint_every=config.audit.checkpoint_every,
                                  stream=event_stream or sys.stderr)
            users = UserStore(root / "casegate.sqlite3")
            keyring = open_keyring(root, portal_keys)
            portal = PortalStore(root / PORTAL_DB_FILE)
        except (OSError, sqlite3.Error) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"{root}: the data directory cannot be used ({reason}); it must "
                              "be a directory casegate can write") from None
        return cls(config=config, data_dir=root, policy=policy, registry=registry, audit=audit,
                   users=users, portal=portal, keyring=keyring)

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        """What the engine needs of the stores, read now."""
        moment = now or datetime.now(UTC)
        return Snapshot(
            now=moment,
            verified=self.registry.active(moment),
            staff_personal=self.registry.staff_personal(),
        )

    def snapshot_at_once(self, now: datetime) -> Snapshot | None:
        """`snapshot(now)` when the registry can answer from memory without waiting
        (`Registry.cached`), else None: then call `snapshot` in a worker thread."""
        cached = self.registry.cached(now)
        if cached is None:
            return None
        verified, staff_personal = cached
        return Snapshot(now=now, verified=verified, staff_personal=staff_personal)

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.registry.close()
        self.audit.close()
        self.users.close()
        if self.portal is not None:
            self.portal.close()
