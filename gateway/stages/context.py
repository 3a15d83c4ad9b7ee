"""What the message stages share while the gateway runs, built once by the composition root
(`gateway.runtime.server.start_gateway`): `Stages`, with every part typed and required.

- `Flight` counts the messages between the end of their DATA and their reply, so a stop can
  drain them and the audit writer can commit their events in groups.
- `Background` keeps the tasks a message starts that must outlive its connection.
- `Record` writes one message's (or one command's) audit events and remembers whether it wrote
  any: the reply then says it was audited (`Reply.audited`), and the SMTP front does not record
  it a second time as a protocol refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from gateway.app import App
from gateway.observe.metrics import Metrics
from gateway.stages.classifiers import Classifiers
from policies.events import EventKind
from policies.model import Snapshot
from transports.base import Transport
from verification.workflow import Workflow

log = structlog.get_logger("casegate.smtp")
T = TypeVar("T")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Flight:
    """The messages between the end of their DATA and their reply."""

    count: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when count == 0
    busy: asyncio.Event = field(default_factory=asyncio.Event)  # set when count > 0

    def __post_init__(self) -> None:
        self.idle.set()

    def take_off(self) -> None:
        self.count += 1
        self.idle.clear()
        self.busy.set()

    def land(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.busy.clear()
            self.idle.set()


@dataclass
class Background:
    """Tasks that must go on when the connection that started them is cancelled; `stop`
    waits for them."""

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def start(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """`work` as a task of its own, kept until done; its failure is always seen (its
        awaiter raises it; else it is logged)."""
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self.tasks.discard)
        return task


def _settled(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("background-task-failed", error=str(task.exception()))


@dataclass
class Stages:
    """What the stages of a message need: the App, the ways out, the metrics and the clock."""

    app: App
    transport: Transport  # plain copies: the upstream smarthost or the outbox
    encrypted: Transport | None  # encrypt copies (the portal); None: they are held with a 451
    metrics: Metrics
    workflow: Workflow  # recipient verification: the verify@ intake and the web pages
    flight: Flight = field(default_factory=Flight)
    background: Background = field(default_factory=Background)
    clock: Callable[[], datetime] = utc_now
    # One policy evaluation at a time: they hold the GIL, so running several at once finishes
    # none sooner, makes them fight the event loop for it, and multiplies their peak memory.
    evaluations: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    # Processes that classify messages of some sizes on the machine's other cores; None: the
    # gateway classifies every message itself ([policy] classifier_processes = 0).
    classifiers: Classifiers | None = None

    def record(self) -> Record:
        """A fresh `Record` for one message or one command."""
        return Record(self)


# How long one SMTP transaction's registry snapshot is used again (`TransactionSnapshot`).
SNAPSHOT_REUSE_SECONDS = 1.0


class TransactionSnapshot:
    """The registry snapshot of one SMTP transaction: read in the stores' thread at its first
    RCPT, then used again by its other RCPTs and its DATA decision while it is at most
    SNAPSHOT_REUSE_SECONDS old (a small message's whole transaction, usually), so that a
    message costs one trip to the stores' thread instead of one per recipient and one more at
    DATA. An older one is read afresh: a change to the registry (a verification revoked) is
    seen by any message whose DATA ends later than that.
    """

    def __init__(self, reuse_seconds: float = SNAPSHOT_REUSE_SECONDS) -> None:
        self.reuse_seconds = reuse_seconds
        self._snapshot: Snapshot | None = None
        self._taken = 0.0  # time.monotonic() when it was read

    def fresh(self) -> Snapshot | None:
        """The snapshot, when it is young enough to be used again; else None."""
        if self._snapshot is None or time.monotonic() - self._taken >= self.reuse_seconds:
            return None
        return self._snapshot

    async def get(self, stages: Stages) -> Snapshot:
        """The snapshot, read afresh (`App.snapshot_async`) unless `fresh` has it."""
        snapshot = self.fresh()
        if snapshot is None:
            snapshot = await stages.app.snapshot_async(stages.clock())
            self._snapshot, self._taken = snapshot, time.monotonic()
        return snapshot


class Record:
    """Audit events of one message or command, each awaited until committed (the store's
    writer thread fsyncs, so the loop keeps serving; events recorded meanwhile share one
    commit). When the store cannot be written this raises, and the caller fails closed (451).
    """

    def __init__(self, stages: Stages) -> None:
        self._audit = stages.app.audit
        self.recorded = False  # whether an event has been committed through this record

    async def __call__(self, kind: EventKind, **event: Any) -> None:
        await self._audit.record_async(kind, **event)
        self.recorded = True
