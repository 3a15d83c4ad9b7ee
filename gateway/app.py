"""The App: config, data directory, policy, stores and the ways out, built once and passed down.

Every entry point (CLI commands, `serve`) builds one `App` and hands its parts to the code that
needs them; nothing below reads the config or the environment on its own. `casegate serve` adds
the fronts on top of it (`gateway.runtime.server.start_gateway`, the composition root of the
running gateway): what they share is built here, so a CLI command and the gateway use the same.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TextIO

import dns.asyncresolver
import structlog

from gateway.audit.anchor import AppendFile, ExternalTarget, Syslog
from gateway.audit.keys import AuditKeyError
from gateway.audit.trail import AuditLog
from gateway.config import (
    DEFAULT_DATA_DIR,
    Config,
    ConfigError,
    DkimConfig,
    StartupError,
    database_url_problem,
    load_config,
    os_reason,
    public_url,
    verification_address,
)
from gateway.stores.keyprints import KeyFileError, guard
from gateway.stores.offices import OfficeRegistry
from gateway.stores.portal import PortalStore
from gateway.stores.portalkeys import KeyringError
from gateway.stores.portalkeys import open_keyring as open_checked_keyring
from gateway.stores.users import UserStore
from policies import content
from policies.cases import CaseIndex, RecordKey
from policies.events import EventKind
from policies.loader import EMBEDDED_FILES, Policy, PolicyError, parse_policy
from policies.model import Snapshot
from transports.base import Transport
from transports.crypto import KEYS_FILE, Keyring
from transports.database import Database, DatabaseSettings
from transports.dkim import DkimKeyError, DkimSigner, SigningTransport, key_path
from transports.ledger import Ledger, LedgerError
from transports.outbox import MaildirOutbox
from transports.portal import PortalDelivery, PortalSettings
from transports.smtp_relay import SmtpRelay
from transports.worker import StoreWorker
from verification.cases import CASES_DB_FILE, CaseKeyError, CaseStore
from verification.cases import KEY_FILE as CASE_KEY_FILE
from verification.cases import load_or_create_key as load_or_create_case_key
from verification.casework import Casework
from verification.dns import make_resolver
from verification.registry import Registry
from verification.texts import Texts
from verification.tokens import KEY_FILE as LINK_KEY_FILE
from verification.tokens import KeyFileError as LinkKeyError
from verification.tokens import LinkSigner, load_or_create_key
from verification.workflow import Settings, Workflow

log = structlog.get_logger("casegate.app")

LEDGER_FILE = "relay-ledger.sqlite3"
_FAULT_EVENTS: set[asyncio.Task[int]] = set()  # alerts being recorded (kept from the GC)
CASE_TABLES = ("case_people", "case_details", "case_shields")  # what case-index.key hashed
OUTBOX_DIR = "outbox"


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


def open_keyring(database: Database, text: str | None,
                 audit: AuditLog | None = None) -> Keyring:
    """The portal keyring: from `text` (the environment, via the CLI) or the data directory,
    checked against the fingerprints `portal.sqlite3` (or the shared database) records
    (`gateway.stores.portalkeys`); made only when the portal never had one (an audit event
    when `audit` is given)."""
    try:
        keyring, created = open_checked_keyring(database, text, datetime.now(UTC))
    except KeyringError as exc:
        raise ConfigError(str(exc)) from None
    if created and audit is not None:
        audit.record(EventKind.KEY_CREATED, file=KEYS_FILE, key_id=keyring.current_id)
    return keyring


def anchor_targets(config: Config, base_dir: Path) -> list[ExternalTarget]:
    """The external targets `[audit] anchor_file` and `anchor_syslog` name (see
    gateway.audit.anchor); an unusable syslog address is a ConfigError."""
    section = config.audit
    targets: list[ExternalTarget] = []
    if section.anchor_file:
        path = Path(section.anchor_file)
        targets.append(AppendFile(path if path.is_absolute() else base_dir / path))
    if section.anchor_syslog:
        try:
            targets.append(Syslog(section.anchor_syslog))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{config.source}: 'audit.anchor_syslog' {exc}") from None
    return targets


def refuse_unanchored(audit: AuditLog) -> None:
    """Stop start-up when the trail holds less than (or other than) its signed head says, so
    that a gateway never writes a new head over the evidence of a truncation or rollback."""
    problems = audit.anchor_problems()
    if problems:
        trail = "audit.sqlite3" if audit.store.database.is_sqlite else "database"
        raise ConfigError(f"{problems[0][1]}: restore the newest {trail} from your "
                          "backup, or accept the trail as it stands with `casegate audit "
                          "reanchor --reason TEXT`")


def open_database(config: Config, data_dir: Path, url: str | None) -> Database:
    """The stores' engine `[database]` names (`url`, from the environment, overrides it)."""
    section = config.database
    chosen = url if url is not None else section.url
    if url is not None and database_url_problem(url):
        raise ConfigError(f"CASEGATE_DATABASE_URL {database_url_problem(url)}")
    return Database.open(data_dir, DatabaseSettings(
        url=chosen, node=section.node, pool_size=section.pool_size,
        connect_timeout=section.connect_timeout))


def settle_heap() -> None:
    """Move what start-up built (policy, patterns, keys, caches) out of the garbage collector's
    way: it lives as long as the process, and each full collection would scan it again (tens of
    milliseconds of pause with a large registry). `casegate serve` and each classifier process
    call it once they are ready."""
    gc.collect()
    gc.freeze()


def open_cases(database: Database) -> CaseStore:
    """The case registry in `database`, hashing under `case-index.key` in its data directory
    (made on first use, and refused when the store holds data made with another, or records
    another key's fingerprint: see gateway.stores.keyprints)."""
    data_dir = database.data_dir
    try:
        key = guard(data_dir / CASE_KEY_FILE, database, CASES_DB_FILE, CASE_TABLES,
                    lambda: load_or_create_case_key(data_dir))
    except (CaseKeyError, KeyFileError) as exc:
        raise ConfigError(str(exc)) from None
    return CaseStore(database, RecordKey(key))


def open_link_key(data_dir: Path, database: Database) -> bytes:
    """The key that signs verification links (`verification.key`), made on first use and
    refused when the registry holds requests made with another (gateway.stores.keyprints):
    every node must have the same one, or a link mailed by one fails on the other."""
    try:
        return guard(data_dir / LINK_KEY_FILE, database, "casegate.sqlite3",
                     ("verification_requests",), lambda: load_or_create_key(data_dir))
    except (LinkKeyError, KeyFileError) as exc:
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


def workflow_settings(config: Config) -> Settings:
    """The verification workflow's settings from `[verification]`."""
    section = config.verification
    return Settings(
        organisation=config.organisation,
        sender=verification_address(config),
        public_url=public_url(config),
        link_lifetime=timedelta(hours=section.link_hours),
        valid_for=timedelta(days=section.valid_days) if section.valid_days else None,
        max_attempts=max(1, section.max_attempts),
        dns_timeout=section.dns_timeout,
    )


@dataclass
class App:
    config: Config
    data_dir: Path
    policy: Policy
    registry: Registry
    audit: AuditLog
    users: UserStore
    portal: PortalStore  # encrypted copies, sealed (issue 5)
    keyring: Keyring  # the portal's master keys
    cases: CaseStore  # the case registry: people, confidential details, shields (issue 16)
    offices: OfficeRegistry  # the office directory: names, teams, DX (issue 17)
    database: Database  # SQLite files in data_dir, or the PostgreSQL the nodes share (issue 15)
    link_key: bytes  # signs verification links (verification.key, checked: open_link_key)
    # The thread that reads and writes the registry and the relay ledger for the event loop,
    # for every message (a trip between threads serves every call queued meanwhile).
    worker: StoreWorker = field(default_factory=lambda: StoreWorker("casegate-stores"))

    @classmethod
    def open(cls, config_path: Path | None, data_dir: Path | None,
             event_stream: TextIO | None = None, portal_keys: str | None = None,
             adjust: Callable[[Config], Config] | None = None,
             database_url: str | None = None, check_anchors: bool = True) -> App:
        """Build everything; audit events go to `event_stream` as JSON lines. `adjust` changes
        the config before anything is built from it (`serve`'s flags).

        `casegate serve` streams events to stdout for a SIEM; the other commands pass stderr
        (the default) so their own output on stdout stays clean for scripts.
        `database_url` (CASEGATE_DATABASE_URL, via the CLI) overrides `[database] url`.
        `check_anchors=False` skips the start-up check of the trail against its signed head:
        only for `casegate db copy`, which fills an empty database and then checks it whole.
        """
        config = load_config(config_path)
        if adjust is not None:
            config = adjust(config)
        if data_dir is not None:
            config = replace(config, data_dir=str(data_dir))
        root = resolve_data_dir(config, config_path, data_dir)
        base_dir = config_path.parent if config_path is not None else Path.cwd()
        policy = read_policy(config, base_dir)
        content.warm(policy.content)  # the first message does not pay the scan's compile
        external = anchor_targets(config, base_dir)
        database: Database | None = None
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(root, 0o700)
            database = open_database(config, root, database_url)
            try:
                audit = AuditLog.open(database, rules=policy.rules, kind_grades=policy.grades,
                                      checkpoint_every=config.audit.checkpoint_every,
                                      stream=event_stream or sys.stderr, external=external,
                                      external_seconds=config.audit.anchor_seconds)
            except BaseException as exc:
                for target in external:
                    target.close()
                if isinstance(exc, AuditKeyError):
                    raise ConfigError(str(exc)) from None
                raise
            try:
                if check_anchors:
                    refuse_unanchored(audit)
                keyring = open_keyring(database, portal_keys, audit)
            except BaseException:
                audit.close()
                raise
            registry = Registry(database)
            users = UserStore(database)
            portal = PortalStore(database)
            cases = open_cases(database)
            link_key = open_link_key(root, database)
            offices = OfficeRegistry(database, audit)
        except (OSError, sqlite3.Error) as exc:
            reason = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            if database is not None and not database.is_sqlite \
                    and isinstance(exc, sqlite3.Error):
                database.close()
                raise ConfigError(f"the database {database.describe()} cannot be used "
                                  f"({reason}): check [database] url (or "
                                  "CASEGATE_DATABASE_URL) and that the server is up and takes "
                                  "this node's connections") from None
            raise ConfigError(f"{root}: the data directory cannot be used ({reason}); it must "
                              "be a directory casegate can write") from None
        return cls(config=config, data_dir=root, policy=policy, registry=registry, audit=audit,
                   users=users, portal=portal, keyring=keyring, cases=cases,
                   offices=offices, database=database, link_key=link_key)

    def way_out(self) -> Transport:
        """The upstream smarthost when one is configured, else the outbox Maildir, signing what
        casegate wrote or rewrote when `[dkim]` names a domain (see `signed`)."""
        upstream = self.config.upstream
        remember = timedelta(days=upstream.remember_days)
        if not upstream.host:
            return self.signed(MaildirOutbox(self.data_dir / OUTBOX_DIR, retention=remember,
                                             on_fault=self.delivery_fault))
        try:
            ledger = Ledger(self.database, LEDGER_FILE, retention=remember, worker=self.worker)
        except LedgerError as exc:
            raise StartupError(str(exc)) from None
        ledger.on_fault = self.delivery_fault
        try:
            relay = SmtpRelay(upstream, ledger, local_hostname=self.config.smtp.hostname,
                              close_ledger=True)
        except ValueError as exc:  # the CA file the config names does not load
            ledger.close()
            raise StartupError(str(exc)) from None
        return self.signed(relay)

    def delivery_fault(self, detail: str) -> None:
        """Something could not be written down after a copy left (the acceptance journal, the
        ledger): logged by the transport; here an alert-grade audit event, recorded in the
        background so the client's 250 does not wait for it (see `delivery_fault_event`)."""
        delivery_fault_event(self.audit, detail)

    def signed(self, way_out: Transport) -> Transport:
        """`way_out`, DKIM-signing what casegate wrote or rewrote when `[dkim]` names a domain.

        Raises ConfigError when the DKIM key cannot be used."""
        signer = dkim_signer(self.config.dkim, self.data_dir)
        return SigningTransport(way_out, signer) if signer is not None else way_out

    def portal_delivery(self, upstream: Transport, base_url: Callable[[], str],
                        clock: Callable[[], datetime]) -> PortalDelivery:
        """Encrypted delivery through the portal (its notices go to `upstream`; its links start
        with `base_url()`)."""
        portal = self.config.portal
        settings = PortalSettings(
            organisation=self.config.organisation,
            from_address=portal.from_address or f"casegate@{self.config.smtp.hostname}",
            expiry=timedelta(days=portal.expiry_days), notify_subject=portal.notify_subject)
        return PortalDelivery(store=self.portal, keyring=self.keyring, upstream=upstream,
                              links=lambda token: f"{base_url()}/portal/{token}",
                              settings=settings, clock=clock, audit=self.audit.record_async,
                              on_fault=self.delivery_fault)

    def workflow(self, transport: Transport, *,
                 clock: Callable[[], datetime] | None = None,
                 resolver: dns.asyncresolver.Resolver | None = None) -> Workflow:
        """The recipient verification workflow on this App's registry, audit log and policy,
        mailing through `transport`, with the link key in the data directory and a DNS resolver
        from `[verification]`. The CLI, the HTTP front and the verify@ intake all use it."""
        section = self.config.verification
        templates = Path(section.templates_dir) if section.templates_dir else None
        return Workflow(
            registry=self.registry,
            policy=self.policy,
            audit=self.audit,
            transport=transport,
            signer=LinkSigner(self.link_key),
            resolver=resolver or make_resolver(section.dns_servers, section.dns_port,
                                               section.dns_timeout),
            settings=workflow_settings(self.config),
            clock=clock or (lambda: datetime.now(UTC)),
            snapshot=self.snapshot,
            texts=Texts(templates),
            cases=self.casework(clock).record_verified_party,
        )

    def casework(self, clock: Callable[[], datetime] | None = None) -> Casework:
        """The case registry's steps (record, shield, remove) on this App's store, policy and
        audit log. The CLI, the staff pages and a party's verification all use it."""
        return Casework(store=self.cases, policy=self.policy, audit=self.audit,
                        clock=clock or (lambda: datetime.now(UTC)))

    def snapshot(self, now: datetime | None = None) -> Snapshot:
        """What the engine needs of the stores, read now."""
        moment = now or datetime.now(UTC)
        verified, staff_personal = self.registry.current(moment)
        return Snapshot(now=moment, verified=verified, staff_personal=staff_personal,
                        cases=self.cases.index())

    async def snapshot_async(self, now: datetime) -> Snapshot:
        """`snapshot(now)` for the event loop: read in the stores' thread (`worker`).

        The case index comes from memory there too, except after a change to the case registry:
        then it is rebuilt in a thread of its own (about a second at 100,000 people), so the
        stores' thread goes on serving every other message and the relay ledger meanwhile.
        """
        snapshot, cases = await self.worker.run(self._snapshot_if_indexed, now)
        if cases is None:
            cases = await asyncio.to_thread(self.cases.index)
        return replace(snapshot, cases=cases)

    def _snapshot_if_indexed(self, now: datetime) -> tuple[Snapshot, CaseIndex | None]:
        """The registry's part of the snapshot, and the case index if it is in memory."""
        verified, staff_personal = self.registry.current(now)  # one check of the version
        snapshot = Snapshot(now=now, verified=verified, staff_personal=staff_personal)
        return snapshot, self.cases.cached()

    def snapshot_at_once(self, now: datetime) -> Snapshot | None:
        """`snapshot(now)` when the registry and the case registry can answer from memory
        without waiting (`Registry.cached`, `CaseStore.cached`), else None: then call
        `snapshot` in a worker thread."""
        cached = self.registry.cached(now)
        cases = self.cases.cached()
        if cached is None or cases is None:
            return None
        verified, staff_personal = cached
        return Snapshot(now=now, verified=verified, staff_personal=staff_personal, cases=cases)

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.worker.close()  # what the event loop asked of the stores is done first
        self.registry.close()
        self.audit.close()
        self.users.close()
        self.portal.close()
        self.cases.close()
        self.offices.close()
        self.database.close()


def all_stores(app: App) -> None:
    """Open (so migrate) the stores that `App.open` leaves to the code that uses them, and
    close them again: `casegate db migrate` and `db copy`."""
    if app.config.upstream.host:
        asyncio.run(app.way_out().close())  # the relay ledger, opened and closed


def delivery_fault_event(audit: AuditLog, detail: str, decision_id: str = "") -> None:
    """An alert-grade ("high") audit event saying that something could not be written down
    after a copy had left (the acceptance journal, the ledger, the "relay" event): governance
    is mailed at once (gateway/audit/alerts.py). Recorded in the background; if the trail
    itself cannot be written, the transport's or the stage's error log line is what remains."""

    async def record() -> int:
        try:
            return await audit.record_async(EventKind.DELIVERY_FAULT, grade="high",
                                            decision_id=decision_id, detail=detail[:300])
        except Exception as exc:
            log.error("delivery-fault-not-audited", error=exc.__class__.__name__)
            return 0

    try:
        task = asyncio.get_running_loop().create_task(record())
    except RuntimeError:  # no event loop (a CLI command): nothing to wait for
        return
    _FAULT_EVENTS.add(task)
    task.add_done_callback(_FAULT_EVENTS.discard)
