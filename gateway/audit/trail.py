"""The audit trail: one event model for everything casegate decides or sees.

Every entry point calls `AuditLog.record(kind, ...)` (or, on the event loop, `await
AuditLog.record_async(kind, ...)`, which needs no worker thread). The event is

- graded: an explicit grade, else (refusals and overrides) the grade of the policy rule it names,
  else the grade of its kind from the policy's `[grades]` table, else "none",
- written as one JSON line through structlog, `"event": "audit"` with `time` and `level` like every
  log line, to the event stream (stdout under `casegate serve`,
  for a SIEM; JSON escaping makes it safe against log injection: a CR or LF in a value can never
  start a new line), and
- appended to the tamper-evident store (`gateway.audit.store`), whose HMAC chain
  `casegate audit verify` checks, with a signed checkpoint every `checkpoint_every` events, and
- anchored: the chain's newest head, signed, is kept outside `audit.sqlite3` after every commit
  group (`gateway.audit.anchor`), so that a trail cut short or rolled back is seen.

The keys are made only for a new trail; once anything is chained, `open` refuses a missing,
unreadable or altered key (`AuditKeyError`, one sentence naming the file), checking each against
the fingerprint recorded in `audit.sqlite3`.

Events carry metadata, never content (DESIGN ruling 8): no subject, body, attachment name or
credential. `record` refuses metadata keys that name such things and values that are not plain
scalars or lists of strings. When the store cannot be written, `record` raises: callers fail
closed (a 4xx at the SMTP front, a 500 page on the web).

    audit = AuditLog.open(Database.open(data_dir))   # the App passes its `database`
    seq = audit.record(EventKind.REFUSAL, rule="personal-address", sender="a@cafcass.gov.uk",
                       recipients=["x@gmail.com"], decision_id="d-1", stage="rcpt")
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, cast

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import keys as auditkeys
from gateway.audit.anchor import (
    DEFAULT_EXTERNAL_SECONDS,
    HEAD_FILE,
    AnchorError,
    ExternalTarget,
    HeadAnchor,
    disagreement,
    read_external,
    read_head,
)
from gateway.audit.export import checkpoint_document
from gateway.audit.store import (
    AUDIT_DB_FILE,
    AuditStore,
    Checkpoint,
    EventFilter,
    StoredEvent,
    peek,
)
from policies.events import EventKind
from policies.model import Rule
from transports.database import Database

# audit_meta rows: what the keys must match, and since which event the head file anchors it
HMAC_FINGERPRINT = "hmac-key-fingerprint"
SIGNING_KEY_ID = "signing-key-id"
ANCHORED_SINCE = "head-anchored-since"
GRADES: tuple[str, ...] = ("none", "low", "medium", "high")

# Kinds whose grade is the grade of the policy rule they name (policies/data/policy.toml).
RULE_GRADED_KINDS = frozenset({"refusal", "override"})

# Metadata keys that would name content or secrets; `record` refuses them (DESIGN ruling 8).
FORBIDDEN_METADATA = frozenset(
    {
        "subject", "body", "content", "text", "html", "filename", "file_name",
        "attachment_name", "attachment_names", "password", "secret", "token", "otp",
        "one_time_code", "cookie", "justification_text",
    }
)
MAX_VALUE_LENGTH = 1000
_KIND = re.compile(r"[a-z][a-z0-9-]{0,62}")
_METADATA_KEY = re.compile(r"[a-z][a-z0-9_]{0,62}")

_problems = structlog.get_logger("casegate.audit")

Clock = Callable[[], datetime]
MetadataValue = str | int | float | bool | list[str]


class AuditError(ValueError):
    """A call to `record` that would store something it must not (a programming error)."""


def format_time(moment: datetime) -> str:
    """The stored form: UTC, microseconds, 'Z'; fixed width so it sorts as text."""
    if moment.tzinfo is None:
        raise AuditError("audit times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise_time(text: str) -> str:
    """A user's ISO-8601 date or time (UTC unless it says otherwise) in the stored form.

    Raises ValueError with a plain sentence when it cannot be read.
    """
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"'{text}' is not an ISO-8601 date or time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)


def _clean_str(value: str) -> str:
    return value[:MAX_VALUE_LENGTH]


def _clean_metadata(metadata: Mapping[str, Any]) -> dict[str, MetadataValue]:
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        if not _METADATA_KEY.fullmatch(key):
            raise AuditError(f"metadata key {key!r} must be snake_case")
        if key in FORBIDDEN_METADATA:
            raise AuditError(f"metadata key {key!r} would log content or a secret")
        if isinstance(value, bool | int):
            out[key] = value
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise AuditError(f"metadata {key!r} must be a finite number")
            out[key] = value
        elif isinstance(value, str):
            out[key] = _clean_str(value)
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[key] = [_clean_str(v) for v in value]
        else:
            raise AuditError(
                f"metadata {key!r} must be a string, number, boolean or list of strings"
            )
    return out


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


class _Stdout:
    """Writes to whatever sys.stdout is at the time (pytest and daemons replace it). `casegate
    serve` passes `gateway.observe.logs.STDOUT` instead, which shares the log lines' lock."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class AuditLog:
    """Records events; reads them back for the CLI and the governance view."""

    def __init__(
        self,
        store: AuditStore,
        signing_key: Ed25519PrivateKey,
        *,
        rules: Mapping[str, Rule] | None = None,
        kind_grades: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        stream: TextIO | None = None,
        checkpoint_every: int = 1000,
    ) -> None:
        self.store = store
        self._signing_key = signing_key
        self.rules: Mapping[str, Rule] = dict(rules or {})
        self.kind_grades: Mapping[str, str] = dict(kind_grades or {})
        self._clock: Clock = clock or (lambda: datetime.now(UTC))
        self._checkpoint_every = checkpoint_every
        # Called with each stored event (e.g. gateway.audit.alerts wakes up), from the store's
        # writer thread: must not block and must not record events itself.
        self.listeners: list[Callable[[StoredEvent], None]] = []
        self._stream: TextIO = stream or _Stdout()  # type: ignore[assignment]
        self._render = structlog.processors.JSONRenderer(sort_keys=True)
        self.anchor = HeadAnchor(store.path.with_name(HEAD_FILE), self._head_document)
        self.created_keys: tuple[str, ...] = ()  # key files `open` made (a new trail)
        store.after_commit = self._published

    @classmethod
    def open(
        cls,
        database: Database,
        *,
        key: bytes | None = None,
        rules: Mapping[str, Rule] | None = None,
        kind_grades: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        stream: TextIO | None = None,
        checkpoint_every: int = 1000,
        external: Sequence[ExternalTarget] = (),
        external_seconds: float = DEFAULT_EXTERNAL_SECONDS,
    ) -> AuditLog:
        """Open the keys (in `database.data_dir`) and the store (in `database`: `audit.sqlite3`
        there, or the PostgreSQL database the nodes share); the keys are created only for a new
        trail. The head file (`audit-head.json`) is kept per node, in its data directory.

        `key` replaces the HMAC key file (e.g. a key held in a secrets manager). `rules` and
        `kind_grades` come from the policy (`Policy.rules`, its `[grades]` table): they grade
        events and supply citations. Creating a key is itself an audit event. `external`
        receive the signed head (see `gateway.audit.anchor`). Raises `AuditKeyError` (one
        sentence) when a key is missing, unreadable or not the one the trail was made with.
        """
        data_dir = database.data_dir
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        where = (str(data_dir / AUDIT_DB_FILE) if database.is_sqlite
                 else f"the audit trail in {database.describe()}")
        events, meta = peek(database)
        head_file = data_dir / HEAD_FILE
        new_trail = events == 0 and not meta and not head_file.exists()
        why = (f"{where} holds {events} chained events" if events else
               f"{head_file} says events were recorded" if head_file.exists() else
               f"{where} records the keys it was made with")
        created: list[str] = []
        key_name = "the audit key given"
        if key is None:
            key_name = str(data_dir / auditkeys.HMAC_KEY_FILE)
            key, made = auditkeys.load_hmac_key(data_dir, may_create=new_trail, why=why)
            if made:
                created.append(auditkeys.HMAC_KEY_FILE)
        elif len(key) < 16:
            raise auditkeys.AuditKeyError("the audit key must be at least 16 bytes")
        signing_key, made = auditkeys.load_signing_key(data_dir, may_create=new_trail, why=why)
        if made:
            created.append(auditkeys.SIGNING_KEY_FILE)
        store = AuditStore(database, key)
        try:
            _check_keys(store, key, key_name, signing_key, data_dir, events)
        except BaseException:
            store.close()
            raise
        log = cls(
            store,
            signing_key,
            rules=rules,
            kind_grades=kind_grades,
            clock=clock,
            stream=stream,
            checkpoint_every=checkpoint_every,
        )
        log.anchor = HeadAnchor(head_file, log._head_document, external, external_seconds)
        log.created_keys = tuple(created)
        if log.anchored_since_name not in store.meta():
            # A new trail, one kept before heads were anchored, or a new node: anchor it as it
            # stands.
            seq, mac = store.head()
            store.set_meta({log.anchored_since_name: str(seq)})
            if seq and not head_file.exists():
                log.anchor.offer(seq, mac)
                log.anchor.flush()
        # A trail that holds less than its head says keeps the head file as evidence: no
        # process (the gateway refuses to start; a CLI command may not) writes over it.
        log.anchor.frozen = bool(log.anchor_problems())
        for name in created:
            log.record(EventKind.KEY_CREATED, file=name, key_id=log.key_id)
        return log

    def close(self) -> None:
        self.store.close()
        self.anchor.close()

    @property
    def anchored_since_name(self) -> str:
        """The `audit_meta` row saying since which event this node's head file anchors the
        trail: one per node on PostgreSQL (each keeps its own head file), as before on SQLite."""
        if self.store.database.is_sqlite:
            return ANCHORED_SINCE
        return f"{ANCHORED_SINCE}@{self.store.node}"

    # -- writing ---------------------------------------------------------------------------

    def grade_for(self, kind: str, rule: str) -> str:
        """The breach grade of an event: for a refusal or override the grade of the rule it
        names, else the grade of its kind, else "none" (not a breach attempt)."""
        known = self.rules.get(rule)
        if known is not None and kind in RULE_GRADED_KINDS:
            return known.grade
        return self.kind_grades.get(kind, "none")

    def record(
        self,
        kind: EventKind,
        *,
        grade: str | None = None,
        rule: str = "",
        sender: str = "",
        recipients: Sequence[str] = (),
        case_numbers: Sequence[str] = (),
        decision_id: str = "",
        citation: str = "",
        **metadata: Any,
    ) -> int:
        """Store one event and write it to stdout; returns its sequence number.

        Returns once the transaction holding the event is committed. Raises `AuditError` for
        metadata that could hold content, and whatever SQLite raises when the store cannot be
        written (callers fail closed).
        """
        event = self._event(kind, grade, rule, sender, recipients, case_numbers, decision_id,
                            citation, metadata)
        stored, _ = self.store.append(event)
        return stored.seq

    async def record_async(
        self,
        kind: EventKind,
        *,
        grade: str | None = None,
        rule: str = "",
        sender: str = "",
        recipients: Sequence[str] = (),
        case_numbers: Sequence[str] = (),
        decision_id: str = "",
        citation: str = "",
        **metadata: Any,
    ) -> int:
        """`record` for the event loop: awaits the commit without blocking the loop or a thread."""
        event = self._event(kind, grade, rule, sender, recipients, case_numbers, decision_id,
                            citation, metadata)
        stored, _ = await self.store.append_async(event)
        return stored.seq

    def _event(
        self,
        kind: str,
        grade: str | None,
        rule: str,
        sender: str,
        recipients: Sequence[str],
        case_numbers: Sequence[str],
        decision_id: str,
        citation: str,
        metadata: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The event to store (every field but `seq`), graded and checked for content."""
        if not _KIND.fullmatch(kind):
            raise AuditError(f"event kind {kind!r} must be kebab-case")
        resolved = grade if grade is not None else self.grade_for(kind, rule)
        if resolved not in GRADES:
            raise AuditError(f"grade {resolved!r} must be one of {', '.join(GRADES)}")
        known = self.rules.get(rule)
        recipient_list = [_clean_str(r) for r in recipients]
        return {
            "time": format_time(self._clock()),
            "kind": kind,
            "grade": resolved,
            "rule": _clean_str(rule),
            "citation": _clean_str(citation or (known.citation if known else "")),
            "sender": _clean_str(sender.strip().lower()),
            "recipients": recipient_list,
            "recipient_domains": sorted({_domain(r) for r in recipient_list if "@" in r}),
            "case_numbers": sorted({_clean_str(c) for c in case_numbers}),
            "decision_id": _clean_str(decision_id),
            "metadata": _clean_metadata(metadata),
        }

    def _published(self, appended: Sequence[tuple[StoredEvent, bytes]]) -> None:
        """After each commit (in the store's writer thread, in chain order): the SIEM lines
        (one write for the batch: each write lets the event loop's thread in before the writer
        can go on), a signed checkpoint every `checkpoint_every` events, then the listeners."""
        self._stream.write("".join(
            cast(str, self._render(None, "info", {"event": "audit", "level": "info",
                                                  "audit_mac": mac.hex(),
                                                  **stored.as_dict()})) + "\n"
            for stored, mac in appended))
        self._stream.flush()
        if appended:
            newest, newest_mac = appended[-1]
            self.anchor.offer(newest.seq, newest_mac)
        for stored, mac in appended:
            if self._checkpoint_every and stored.seq % self._checkpoint_every == 0:
                self._sign(stored.seq, mac)
            for listener in self.listeners:
                try:
                    listener(stored)
                except Exception:  # a listener's bug must not undo a stored event
                    _problems.exception("audit-listener-failed", seq=stored.seq)

    # -- checkpoints -----------------------------------------------------------------------

    @property
    def public_key_pem(self) -> str:
        return auditkeys.public_pem(self._signing_key.public_key())

    @property
    def key_id(self) -> str:
        return auditkeys.key_id(self._signing_key.public_key())

    def _sign(self, seq: int, mac: bytes) -> Checkpoint:
        unsigned = Checkpoint(
            seq=seq, time=format_time(self._clock()), mac=mac, key_id=self.key_id, signature=b""
        )
        signature = self._signing_key.sign(unsigned.statement())
        checkpoint = Checkpoint(
            seq=seq, time=unsigned.time, mac=mac, key_id=self.key_id, signature=signature
        )
        self.store.add_checkpoint(checkpoint)
        self.anchor.checkpoint(checkpoint_document(checkpoint, self.public_key_pem))
        return checkpoint

    def _head_document(self, seq: int, mac: bytes) -> dict[str, Any]:
        """The signed head the anchor keeps: a checkpoint document, timed by the wall clock."""
        unsigned = Checkpoint(seq=seq, time=format_time(datetime.now(UTC)), mac=mac,
                              key_id=self.key_id, signature=b"")
        signed = Checkpoint(seq=seq, time=unsigned.time, mac=mac, key_id=self.key_id,
                            signature=self._signing_key.sign(unsigned.statement()))
        return checkpoint_document(signed, self.public_key_pem)

    def checkpoint(self) -> Checkpoint:
        """Sign the chain's head now (on demand; also done every `checkpoint_every` events)."""
        seq, mac = self.store.head()
        return self._sign(seq, mac)

    # -- reading ---------------------------------------------------------------------------

    def verify(self) -> int | None:
        """The first broken sequence number, or None when the trail is intact.

        Besides the chain, every stored checkpoint must carry a valid signature and match the
        row it names (a chain rebuilt with a stolen HMAC key still disagrees with them).
        """
        broken = self.store.verify()
        public = self._signing_key.public_key()
        for cp in self.store.checkpoints():
            valid = auditkeys.signature_valid(public, cp.signature, cp.statement())
            if not valid or self.store.mac_at(cp.seq) != cp.mac:
                if cp.seq == 0 and valid:
                    continue
                broken = cp.seq if broken is None else min(broken, cp.seq)
        return broken

    def anchor_problems(self, external_files: Sequence[Path] = ()) -> list[tuple[int, str]]:
        """Where the trail holds less than, or other than, its anchors say: the head file, and
        each external anchor file given. Each problem: (the first sequence number missing or
        possibly changed, one sentence); an empty list when every anchor agrees."""
        self.anchor.flush()  # what this process committed is anchored before it is compared
        seq, _ = self.store.head()
        path = self.anchor.path
        problems: list[tuple[int, str]] = []
        anchors: list[tuple[Checkpoint, str]] = []
        try:
            head = read_head(path, self.public_key_pem)
        except AnchorError as exc:
            problems.append((1, str(exc)))
            head = None
        if head is not None:
            anchors.append((head, str(path)))
        elif not problems:
            since = self.store.meta().get(self.anchored_since_name)
            if since is not None and seq > int(since or 0):
                problems.append((int(since or 0) + 1, (
                    f"{path} is missing, but {self._trail_name} has been anchored there since "
                    f"event {since}: it was deleted, so the trail may have been cut short")))
        for external in external_files:
            try:
                found = read_external(external, self.public_key_pem)
            except AnchorError as exc:
                problems.append((1, str(exc)))
                continue
            anchors.extend((head, str(external)) for head in found)
        told: set[str] = set()  # the first disagreement of each source says it
        for anchor, source in anchors:
            problem = disagreement(anchor, seq, self.store.mac_at, source, self._trail_name)
            if problem is not None and source not in told:
                told.add(source)
                problems.append(problem)
        return problems

    def reanchor(self, reason: str) -> int:
        """Accept the trail as it stands after a restore: record an event naming what the head
        file said (so the gap is itself on the trail) and anchor the new head. Its seq."""
        previous: dict[str, Any] = {}
        try:
            head = read_head(self.anchor.path, self.public_key_pem)
        except AnchorError:
            head = None
            previous["previous_head"] = "unreadable"
        if head is not None:
            previous = {"previous_seq": head.seq, "previous_time": head.time,
                        "previous_mac": head.mac.hex()}
        found, _ = self.store.head()
        seq = self.record(EventKind.AUDIT_REANCHORED, grade="high", found_seq=found,
                          reason=reason, **previous)
        self.store.set_meta({self.anchored_since_name: str(seq)}, replace=True)
        self.anchor.frozen = False
        self.anchor.offer(*self.store.head())
        self.anchor.flush()
        return seq

    @property
    def _trail_name(self) -> str:
        """What holds the events, in messages: the file's name, or the database."""
        return AUDIT_DB_FILE if self.store.database.is_sqlite else self.store.location

    def get(self, seq: int) -> StoredEvent | None:
        return self.store.get(seq)

    def page(
        self, flt: EventFilter, *, before: int | None = None, limit: int = 50
    ) -> list[StoredEvent]:
        return self.store.page(flt, before=before, limit=limit)

    def iterate(self, flt: EventFilter) -> Iterator[StoredEvent]:
        return self.store.iterate(flt)

    def counts_by_day_and_rule(self, flt: EventFilter) -> list[tuple[str, str, int]]:
        return self.store.counts_by_day_and_rule(flt)

    def graded_after(self, seq: int, grades: Collection[str], limit: int) -> list[StoredEvent]:
        """Events after `seq` with one of `grades`, oldest first (for alerts and digests)."""
        return self.store.graded_after(seq, grades, limit)


def _check_keys(store: AuditStore, key: bytes, key_name: str,
                signing_key: Ed25519PrivateKey, data_dir: Path, events: int) -> None:
    """Refuse keys that are not the ones the trail was made with; record their fingerprints
    when the trail has none yet (a new trail, or one made before fingerprints were kept)."""
    meta = store.meta()
    restore = auditkeys.RESTORE
    fingerprint = auditkeys.fingerprint(key)
    recorded = meta.get(HMAC_FINGERPRINT)
    if recorded is None and events and not store.head_mac_valid():
        raise auditkeys.AuditKeyError(
            f"{key_name} is not the key the newest event in {store.location} was chained with "
            f"(altered or replaced): {restore}")
    signing_path = data_dir / auditkeys.SIGNING_KEY_FILE
    key_id = auditkeys.key_id(signing_key.public_key())
    signed = meta.get(SIGNING_KEY_ID)
    if signed is None:
        latest = store.latest_checkpoint()
        signed = latest.key_id if latest is not None else None
    if recorded is None or meta.get(SIGNING_KEY_ID) is None:
        meta = store.set_meta({HMAC_FINGERPRINT: fingerprint, SIGNING_KEY_ID: signed or key_id})
        recorded, signed = meta[HMAC_FINGERPRINT], meta[SIGNING_KEY_ID]
    if recorded != fingerprint:
        raise auditkeys.AuditKeyError(
            f"{key_name} is not the key {store.location} was chained with (its fingerprint "
            f"differs: altered or replaced): {restore}")
    if signed != key_id:
        raise auditkeys.AuditKeyError(
            f"{signing_path} is not the key that signed {store.location}'s checkpoints (altered or "
            f"replaced): {restore}")


__all__ = [
    "AUDIT_DB_FILE",
    "GRADES",
    "AuditError",
    "AuditLog",
    "Checkpoint",
    "EventFilter",
    "StoredEvent",
    "format_time",
    "normalise_time",
]
