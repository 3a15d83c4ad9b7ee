"""Helpers for the verification tests: a real App wired to a sink and a stub DNS server.

    async with Sink() as sink, DnsStub() as stub:
        kit = VerifyKit.open(tmp_path, sink, stub)
        result = await kit.workflow.request(kit.ask())
        invitation = await kit.mail_to(RECIPIENT)
        token = token_in(invitation)

Everything real: the App's SQLite registry and audit log in tmp_path, the configured transport
(the SMTP relay to the sink), the link key in the data directory, dnspython against the stub.
The clock is a `Clock` the test moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import threading
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

from gateway.app import App
from gateway.audit.store import EventFilter, StoredEvent
from policies.model import Role
from tests.dnsstub import DnsStub
from tests.gateway_harness import STAFF, write_config
from tests.sink import Received, Sink
from transports.base import Transport
from verification.dns import make_resolver
from verification.registry import Registry
from verification.workflow import Ask, Workflow

RECIPIENT = "jane.doe@example.org"
RECIPIENT_NAME = "Jane Doe"
CASE = "ZC12C00123"
GOVERNANCE = "governance@cafcass.gov.uk"
START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
WAIT = 20.0  # upper bound for a mail to reach the sink; never a synchronisation sleep


@dataclass
class Clock:
    """The injected clock: `clock()` is now; tests move it with `advance`."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Inbox(list[Received]):
    """The sink's message list, which wakes waiters as messages arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Condition()
        self._loop = asyncio.get_running_loop()

    def append(self, item: Received) -> None:
        super().append(item)
        self._loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, recipient: str, count: int = 1) -> list[Received]:
        """The messages to `recipient` once there are `count` of them (bounded wait)."""
        def matching() -> list[Received]:
            return [m for m in self if recipient in m.rcpt_tos]

        async with asyncio.timeout(WAIT), self.changed:
            await self.changed.wait_for(lambda: len(matching()) >= count)
        return matching()


def watch(sink: Sink) -> Inbox:
    """Replace the sink's message list with one that can be awaited."""
    inbox = Inbox()
    inbox.extend(sink.messages)
    sink.messages = inbox
    return inbox


def config_text(sink: Sink | None, stub: DnsStub, *, governance: str = "",
                **verification: object) -> list[str]:
    """The [verification] (and [audit]) lines pointing DNS at the stub."""
    lines = ["[verification]", 'dns_servers = ["127.0.0.1"]', f"dns_port = {stub.port}",
             "dns_timeout = 2.0"]
    lines += [f"{key} = {value!r}" for key, value in verification.items()]
    if governance:
        lines += ["[audit]", f'governance_address = "{governance}"']
    return lines


def write_verify_config(tmp_path: Path, sink: Sink | None, stub: DnsStub, **options: object
                        ) -> Path:
    """The gateway harness's config (ports 0, the sink upstream) plus the verification part."""
    path = write_config(tmp_path / "casegate.toml", sink)
    extra = config_text(sink, stub, **options)  # type: ignore[arg-type]
    path.write_text(path.read_text() + "\n".join(extra) + "\n", encoding="utf-8")
    return path


def serve_example_domains(stub: DnsStub) -> None:
    """example.org and cjsm.co.uk receive mail; nomail.example exists without mail;
    broken.example fails."""
    stub.add("example.org", "MX", "10 mx.example.org.")
    stub.add("cjsm.co.uk", "MX", "10 mx.cjsm.co.uk.")  # a real domain resembling cjsm.net
    stub.add("nomail.example", "TXT", '"no mail here"')
    stub.servfail("broken.example")


@dataclass
class VerifyKit:
    app: App
    transport: Transport
    workflow: Workflow
    inbox: Inbox
    clock: Clock = field(default_factory=Clock)

    @classmethod
    def open(cls, tmp_path: Path, sink: Sink, stub: DnsStub, **options: object) -> VerifyKit:
        config = write_verify_config(tmp_path, sink, stub, **options)
        app = App.open(config, tmp_path / "data", event_stream=io.StringIO())
        clock = Clock()
        transport = app.way_out()
        resolver = make_resolver(["127.0.0.1"], stub.port, timeout=2.0)
        workflow = app.workflow(transport, clock=clock, resolver=resolver)
        return cls(app=app, transport=transport, workflow=workflow, inbox=watch(sink),
                   clock=clock)

    async def close(self) -> None:
        await self.transport.close()
        self.app.close()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, tmp_path: Path) -> AsyncIterator[VerifyKit]:
        """A kit with its own upstream sink and DNS stub (serving the example domains)."""
        async with Sink() as sink, DnsStub() as stub:
            serve_example_domains(stub)
            opened = cls.open(tmp_path, sink, stub)
            try:
                yield opened
            finally:
                await opened.close()

    def ask(self, address: str = RECIPIENT, *, name: str = RECIPIENT_NAME,
            case: str | None = CASE, role: Role = Role.PARTY, by: str = STAFF) -> Ask:
        return Ask(address=address, case_number=case, name=name, role=role, requested_by=by,
                   channel="cli")

    async def mail_to(self, recipient: str, count: int = 1) -> Received:
        """The `count`-th message to `recipient` (waits for it)."""
        return (await self.inbox.wait_for(recipient, count))[count - 1]

    def events(self, kind: str) -> list[StoredEvent]:
        return list(self.app.audit.iterate(EventFilter(kind=kind)))


def text_of(received: Received) -> str:
    """The plain-text body of a received message."""
    message = message_from_bytes(received.data, policy=default_policy)
    body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    assert body is not None
    return str(body.get_content())


def subject_of(received: Received) -> str:
    return str(message_from_bytes(received.data, policy=default_policy)["Subject"])


def token_in(received: Received) -> str:
    """The token of the /v/ link in an invitation."""
    found = re.search(r"/v/([A-Za-z0-9_.\-]+)", text_of(received))
    assert found, "no verification link in the mail"
    return found.group(1)


def code_in(text: str) -> str:
    found = re.search(r"\b(\d{6})\b", text)
    assert found, "no code in the text"
    return found.group(1)


def kinds(events: Iterable[StoredEvent]) -> list[str]:
    return [e.kind for e in events]


def confirm_at_once(registries: Sequence[Registry], request_id: int, now: datetime,
                    method: str) -> list[object]:
    """Each registry confirms the same request, all at the same moment (a barrier); their
    answers, in the order they came (a registry on each node, or two connections)."""
    barrier = threading.Barrier(len(registries))
    results: list[object] = []

    def confirm(registry: Registry) -> None:
        barrier.wait()
        results.append(registry.confirm_request(request_id, now=now, method=method,
                                                expires_at=None))

    threads = [threading.Thread(target=confirm, args=(r,)) for r in registries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results
