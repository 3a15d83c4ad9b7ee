"""The composition root: config, data directory, policy and stores, built once and passed down.

Every entry point (CLI commands, `serve`) builds one `App` and hands its parts to the code that
needs them; nothing below reads the config or the environment on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from gateway.audit import AuditLog
from gateway.config import DEFAULT_DATA_DIR, Config, ConfigError, load_config
from policies.loader import Policy, PolicyError, parse_policy
from policies.model import Snapshot
from verification.registry import Registry


def read_policy(config: Config, base_dir: Path) -> Policy:
    """The embedded policy plus the organisation's override files, validated."""
    documents = [
        ("policies/data/policy.toml",
         resources.files("policies").joinpath("data/policy.toml").read_text("utf-8")),
    ]
    for name in config.policy.files:
        path = Path(name)
        if not path.is_absolute():
            path = base_dir / path
        try:
            documents.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: policy file cannot be read ({exc.__class__.__name__})")
    try:
        return parse_policy(documents)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class App:
    config: Config
    data_dir: Path
    policy: Policy
    registry: Registry
    audit: AuditLog

    @classmethod
    def open(cls, config_path: Path | None, data_dir: Path | None) -> App:
        config = load_config(config_path)
        if data_dir is not None:
            config = replace(config, data_dir=str(data_dir))
        root = Path(config.data_dir or DEFAULT_DATA_DIR)
        base_dir = config_path.parent if config_path is not None else Path.cwd()
        if config_path is not None and not root.is_absolute() and data_dir is None:
            root = base_dir / root
        policy = read_policy(config, base_dir)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        registry = Registry(root / "casegate.sqlite3")
        audit = AuditLog.open(root)
        return cls(config=config, data_dir=root, policy=policy, registry=registry, audit=audit)

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        """What the engine needs of the stores, read now."""
        moment = now or datetime.now(UTC)
        return Snapshot(
            now=moment,
            verified=self.registry.active(moment),
            staff_personal=self.registry.staff_personal(),
        )

    def close(self) -> None:
        self.registry.close()
        self.audit.close()
