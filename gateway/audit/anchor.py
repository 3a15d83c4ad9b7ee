"""The chain's newest head, anchored outside `audit.sqlite3`, so that cutting the trail short or
putting back an older copy of it is seen (as RFC 6962 signed tree heads do for a log).

An HMAC chain shows a changed, inserted or reordered row, but not missing *newest* rows: a
shorter chain is still a valid chain. So after every commit group the head (sequence number,
mac, time) is signed with the checkpoint key (`audit-signing.pem`) and kept where a copy of
`audit.sqlite3` does not carry it:

- `audit-head.json` in the data directory, replaced atomically (written aside, fsynced,
  renamed). A background thread writes it, always the newest head it was offered, so commits
  never wait for it, and at most every HEAD_SECONDS: heads in between are skipped (under load
  a replacement per commit group cost the gateway 0.2 to 0.5 ms of CPU per message). It may
  lag the database by that long after a crash, never lead it.
- optional external targets (`[audit] anchor_file`, an append-only file on another mount;
  `[audit] anchor_syslog`, a syslog socket or host:port feeding a SIEM): one JSON line per
  signed checkpoint, and the newest head at most every `anchor_seconds`.

Each anchor is a checkpoint document (`gateway.audit.export.checkpoint_document`), so
`casegate audit checkpoint --verify FILE --public-key PEM` reads the head file too.
`disagreement` compares an anchor with the database: fewer events than anchored is truncation,
another mac at the anchored sequence number is a rollback (or a rewrite).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.audit.export import CheckpointError, read_checkpoint_document
from gateway.audit.store import AUDIT_DB_FILE, Checkpoint

HEAD_FILE = "audit-head.json"
DEFAULT_EXTERNAL_SECONDS = 10.0
HEAD_SECONDS = 0.2  # the head file is replaced at most this often (`flush` writes at once)
MAX_HEAD_FILE = 64 * 1024

_problems = structlog.get_logger("casegate.audit")

Document = dict[str, Any]


class AnchorError(ValueError):
    """An anchor cannot be read or is not validly signed (one sentence)."""


class ExternalTarget(Protocol):
    """Somewhere off the data directory that receives signed heads, one JSON line each."""

    def append(self, line: str) -> None: ...

    def close(self) -> None: ...


class AppendFile:
    """An append-only file (on another mount, or one `chattr +a` protects): each line is
    appended with O_APPEND and fsynced before the next."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Nothing held open between lines."""


class Syslog:
    """Syslog (RFC 3164 framing by the standard library): a socket path such as /dev/log, or
    host:port over UDP. Facility authpriv, level info, tag `casegate-audit`."""

    def __init__(self, address: str) -> None:
        target: str | tuple[str, int]
        host, colon, port = address.rpartition(":")
        if address.startswith("/"):
            target = address
        elif colon and host and port.isdigit():
            target = (host.strip("[]"), int(port))
        else:
            raise ValueError(f"'{address}' is neither a socket path nor host:port")
        self._handler = logging.handlers.SysLogHandler(
            target, facility=logging.handlers.SysLogHandler.LOG_AUTHPRIV,
            socktype=socket.SOCK_DGRAM)
        self._handler.setFormatter(logging.Formatter("casegate-audit: %(message)s"))

    def append(self, line: str) -> None:
        record = logging.LogRecord("casegate.audit", logging.INFO, __file__, 0, line, None, None)
        self._handler.emit(record)

    def close(self) -> None:
        self._handler.close()


def write_head(path: Path, document: Document) -> None:
    """Replace the head file atomically: written aside, fsynced, renamed over the old one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(document, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_head(path: Path, public_pem: str) -> Checkpoint | None:
    """The signed head in `path` (None when there is no such file); AnchorError when it cannot
    be read or is not signed by the key whose public half is `public_pem`."""
    try:
        with path.open("r", encoding="utf-8") as handle:
            text = handle.read(MAX_HEAD_FILE)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorError(f"{path} cannot be read ({exc.__class__.__name__})") from None
    try:
        return read_checkpoint_document(json.loads(text), public_pem)
    except (json.JSONDecodeError, CheckpointError) as exc:
        reason = str(exc) if isinstance(exc, CheckpointError) else "it is not JSON"
        raise AnchorError(f"{path} is not a valid signed head ({reason}): it was altered, or "
                          "audit-signing.pem was replaced") from None


def read_external(path: Path, public_pem: str) -> list[Checkpoint]:
    """Every signed head in an external anchor file, in file order.

    A line that is not JSON is skipped (a write torn by a crash); a line that is JSON but not
    signed by `public_pem` is an AnchorError: someone wrote it who does not hold the key. Each
    head must agree with the trail, not only the newest: someone holding the key could append a
    newer head for a rewritten trail, but cannot take the older lines back.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise AnchorError(f"the external anchor file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorError(f"{path} cannot be read ({exc.__class__.__name__})") from None
    heads: list[Checkpoint] = []
    for number, line in enumerate(lines, start=1):
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        try:
            heads.append(read_checkpoint_document(document, public_pem))
        except CheckpointError as exc:
            raise AnchorError(f"line {number} of {path} is not a valid signed head ({exc})") \
                from None
    return heads


def disagreement(anchor: Checkpoint, head_seq: int, mac_at: Callable[[int], bytes | None],
                 source: str, trail: str = AUDIT_DB_FILE) -> tuple[int, str] | None:
    """Whether the database (its last sequence number, its mac at a sequence number) holds
    less than, or something other than, what `anchor` (read from `source`) says it held.
    `trail` names the database in the sentence (the file, or the PostgreSQL URL).

    The anchored event must be in the chain with the anchored mac; events after it are fine
    (on PostgreSQL other nodes append to the same chain, and this node's head file only
    anchors what this node committed). Returns (the first sequence number that is missing or
    may differ, one sentence), or None.
    """
    if anchor.seq > head_seq:
        return head_seq + 1, (
            f"{trail} holds {head_seq} events, but {source} (signed at {anchor.time}) "
            f"says {anchor.seq} had been recorded: the trail was cut short or an older copy "
            f"of {trail} was put back")
    if anchor.seq > 0 and mac_at(anchor.seq) != anchor.mac:
        return anchor.seq, (
            f"{trail} disagrees with {source} (signed at {anchor.time}) at sequence "
            f"number {anchor.seq}: an older or rewritten copy of {trail} was put back")
    return None


class HeadAnchor:
    """Writes the newest head offered to it to the head file (and the external targets) from a
    thread of its own, so that the audit writer never waits for it.

    `sign(seq, mac)` makes the signed document. `offer` is called by the audit writer after
    every commit; `checkpoint` with every signed checkpoint (external targets get each one);
    `flush` writes what is pending now; `close` flushes and stops.
    """

    def __init__(self, path: Path, sign: Callable[[int, bytes], Document],
                 external: Sequence[ExternalTarget] = (),
                 external_seconds: float = DEFAULT_EXTERNAL_SECONDS,
                 head_seconds: float = HEAD_SECONDS) -> None:
        self.path = path
        self._head_seconds = head_seconds
        self._head_at = float("-inf")  # monotonic time the head file was last replaced
        self._sign = sign
        self._external = tuple(external)
        self._external_seconds = external_seconds
        self._state = threading.Condition()
        self._latest: tuple[int, bytes] | None = None  # offered, not yet written
        self._external_head: tuple[int, bytes] | None = None  # waiting for its turn outside
        self._external_lines: list[str] = []  # checkpoints, sent at once
        self._external_at = float("-inf")  # monotonic time of the last head sent outside
        self._written = threading.Lock()  # one writer of the file at a time
        self._thread: threading.Thread | None = None
        self._closed = False
        # Set when the trail disagreed with the head file at open: the file is kept as evidence
        # (not replaced) until `casegate audit reanchor` accepts the trail as it stands.
        self.frozen = False

    def offer(self, seq: int, mac: bytes) -> None:
        """The chain's head is now (seq, mac): anchor it soon (never blocks on I/O)."""
        with self._state:
            if self._closed:
                return
            self._latest = (seq, mac)
            if self._external:
                self._external_head = (seq, mac)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="casegate-audit-anchor",
                                                daemon=True)
                self._thread.start()
            self._state.notify()

    def checkpoint(self, document: Document) -> None:
        """A signed checkpoint: every external target gets it."""
        if not self._external:
            return
        with self._state:
            self._external_lines.append(json.dumps(document, sort_keys=True))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="casegate-audit-anchor",
                                                daemon=True)
                self._thread.start()
            self._state.notify()

    def flush(self) -> None:
        """Write the pending head and external lines now, in the caller's thread; returns once
        every head offered before the call is in the file."""
        with self._written:
            with self._state:
                latest, self._latest = self._latest, None
                lines, self._external_lines = self._external_lines, []
                head, self._external_head = self._external_head, None
            self._write(latest, lines, head)

    def close(self) -> None:
        with self._state:
            self._closed = True
            thread = self._thread
            self._state.notify()
        if thread is not None:
            thread.join()
        self.flush()
        for target in self._external:
            target.close()

    def _run(self) -> None:
        while True:
            with self._state:
                while not self._closed and not self._due():
                    self._state.wait(self._wait_seconds())
                if self._closed:
                    return
            with self._written:  # taken first, so that `flush` waits for a write under way
                with self._state:
                    latest = self._latest if self._head_ready() else None
                    if latest is not None:
                        self._latest = None
                    lines, self._external_lines = self._external_lines, []
                    head = None
                    if self._external_head is not None and self._external_ready():
                        head, self._external_head = self._external_head, None
                self._write(latest, lines, head)

    def _external_ready(self) -> bool:
        return time.monotonic() - self._external_at >= self._external_seconds

    def _head_ready(self) -> bool:
        return time.monotonic() - self._head_at >= self._head_seconds

    def _due(self) -> bool:
        return ((self._latest is not None and self._head_ready()) or bool(self._external_lines)
                or (self._external_head is not None and self._external_ready()))

    def _wait_seconds(self) -> float | None:
        """How long until a pending head may be written (None: nothing pending)."""
        waits = []
        now = time.monotonic()
        if self._latest is not None:
            waits.append(self._head_seconds - (now - self._head_at))
        if self._external_head is not None:
            waits.append(self._external_seconds - (now - self._external_at))
        return max(0.001, min(waits)) if waits else None

    def _write(self, latest: tuple[int, bytes] | None, lines: list[str],
               head: tuple[int, bytes] | None) -> None:
        """Sign and write (called holding `_written`)."""
        sent_head = False
        try:
            if latest is not None:
                self._head_at = time.monotonic()
                document = self._sign(*latest)
                if not self.frozen:
                    write_head(self.path, document)
                if head is not None and head == latest:
                    lines.append(json.dumps(document, sort_keys=True))
                    head, sent_head = None, True
            if head is not None:
                lines.append(json.dumps(self._sign(*head), sort_keys=True))
                sent_head = True
        except Exception:  # the next commit tries again; `audit verify` shows the lag
            _problems.exception("audit-head-not-written", path=str(self.path))
        if sent_head:
            self._external_at = time.monotonic()
        for line in lines:
            for target in self._external:
                try:
                    target.append(line)
                except Exception:
                    _problems.exception("audit-anchor-not-sent",
                                        target=target.__class__.__name__)
