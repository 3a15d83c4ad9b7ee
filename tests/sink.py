"""An upstream SMTP sink for tests: a real aiosmtpd server on 127.0.0.1, port 0.

It stores every message it accepts (envelope sender, recipients, the exact bytes) and can be told
to misbehave at a given step, the way a real smarthost does on a bad day:

    async with Sink() as sink:
        sink.fail(Step.RCPT, "451 4.3.0 try later", times=1)
        ...                                 # deliver to ("127.0.0.1", sink.port)
        assert sink.messages[0].rcpt_tos == ("a@example.org",)

Faults: a reply (421/451/550/...) at connect, MAIL, RCPT or DATA; a dropped connection (at
DATA: after the bytes arrived, before the reply; those bytes go to `unanswered`); a hang (never
reply, released when `stop()` closes the connection); each optionally only the first N times, or
only for one recipient; and a late reply at DATA (`late_reply`: the message is accepted and
stored at once, the 250 comes after a delay or when the test releases it). `stop_listening()`
makes new connections be refused. With `dsn=True` it offers DSN (RFC 3461) and
`smtputf8=True` SMTPUTF8; the parameters of MAIL and of each RCPT are recorded
(`Received.mail_options`, `Received.rcpt_options`), exactly as they came. Nothing here sleeps
(but a `late_reply` with a delay, which is the slow upstream itself): a test that must act
while a fault is in effect awaits `fault.struck.wait()`.

The threaded `aiosmtpd.controller.Controller` cannot bind port 0, so the server is started with
`loop.create_server` in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.smtp.aiosmtpd_private import handler_task, socket_transport

WAIT_TIMEOUT = 30.0  # seconds `wait_for_messages` waits


class Step(StrEnum):
    """Where in the SMTP conversation a fault strikes."""

    CONNECT = "CONNECT"  # instead of the 220 greeting
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"  # after the message bytes arrived, instead of the final reply


class Action(StrEnum):
    """What the sink does when a fault strikes."""

    REPLY = "reply"  # answer with the fault's reply line
    DROP = "drop"  # close the connection without a reply
    HANG = "hang"  # never answer (until the sink stops)
    HOLD = "hold"  # wait until the fault's `released` is set, then go on as if no fault
    LATE = "late"  # DATA: take the message (it counts as accepted), answer 250 only later


@dataclass
class Fault:
    """One injected fault; `times` None means every time, else it wears off after N hits."""

    step: Step
    action: Action
    reply: str = ""
    times: int | None = None
    recipient: str | None = None  # RCPT, DATA: strike only for (a message to) this address
    hits: int = 0
    struck: asyncio.Event = field(default_factory=asyncio.Event)  # set at the first hit
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends a HOLD or a LATE
    delay: float | None = None  # LATE: answer after this many seconds instead (a slow upstream)

    def applies(self, step: Step, recipients: tuple[str, ...] = ()) -> bool:
        if self.step is not step or (self.times is not None and self.hits >= self.times):
            return False
        return self.recipient is None or self.recipient.lower() in {r.lower() for r in recipients}


@dataclass(frozen=True)
class Received:
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly what arrived, after dot-unstuffing
    connection: int  # which connection (1-based) carried it
    tls: bool  # whether that connection had switched to TLS
    mail_options: tuple[str, ...] = ()  # MAIL's parameters, as written
    rcpt_options: tuple[tuple[str, ...], ...] = ()  # each RCPT's parameters, as written


@dataclass
class _Stats:
    connections: int = 0
    transactions: int = 0  # MAIL commands accepted
    resets: int = 0  # RSET commands seen
    auth_logins: list[str] = field(default_factory=list)


class _Refuser(asyncio.Protocol):
    """A connection answered at once by a fault: a reply line and close, or a drop."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.reply:
            transport.write(self.reply.encode("ascii") + b"\r\n")
        transport.close()


class _Silent(asyncio.Protocol):
    """A connection that never gets a greeting; closed by the sink when it stops."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.sink._silent.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


_DSN_PARAM = re.compile(r"(?:RET|ENVID|NOTIFY|ORCPT)=\S*", re.IGNORECASE)


class _SinkSMTP(SMTP):
    """aiosmtpd's server, remembering which connection it is and every parameter given."""

    def __init__(self, handler: _Handler, number: int, *, dsn: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sink = handler.sink
        self.number = number
        self.dsn = dsn
        self.mail_params: tuple[str, ...] = ()
        self.rcpt_params: list[tuple[str, ...]] = []
        self.unconfirmed: int | None = None  # the message whose 250 may not have been read

    async def push(self, status: str) -> None:
        if status.startswith("250 2.0.0 OK queued") and self.unconfirmed is not None:
            self.sink.replied_at[self.unconfirmed] = time.monotonic()
        await super().push(status)

    def _confirm(self) -> None:
        """A command after a message's 250: the client read that reply."""
        if self.unconfirmed is not None:
            self.sink.confirmed.add(self.unconfirmed)
            self.unconfirmed = None

    async def smtp_MAIL(self, arg: str | None) -> None:
        self._confirm()
        self.mail_params, self.rcpt_params = self._params(arg), []
        await super().smtp_MAIL(self._without_dsn(arg))

    async def smtp_RSET(self, arg: str) -> None:
        self._confirm()
        await super().smtp_RSET(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        self._confirm()
        await super().smtp_QUIT(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        self.rcpt_params.append(self._params(arg))
        await super().smtp_RCPT(self._without_dsn(arg))

    @staticmethod
    def _params(arg: str | None) -> tuple[str, ...]:
        return tuple((arg or "").partition(">")[2].split())

    def _without_dsn(self, arg: str | None) -> str | None:
        """aiosmtpd answers 555 to DSN parameters: an offering sink takes them off first."""
        if arg is None or not self.dsn:
            return arg
        path, close, rest = arg.partition(">")
        return path + close + " ".join(w for w in rest.split() if not _DSN_PARAM.fullmatch(w))


class _Handler:
    """aiosmtpd hooks: each hook's return value is the reply, after the faults had their say."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        extra = ["250-DSN"] if self.sink.dsn else []
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self.sink._strike(Step.MAIL, server)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self.sink.stats.transactions += 1
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self.sink._strike(Step.RCPT, server, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(server, _SinkSMTP)
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            connection=server.number,
            tls=session.ssl is not None,
            mail_options=server.mail_params,
            rcpt_options=tuple(server.rcpt_params),
        )
        fault = self.sink._take(Step.DATA, received.rcpt_tos)
        if fault is not None and fault.action is not Action.LATE:
            reply = await self.sink._strike(Step.DATA, server, received=received, fault=fault)
            if reply:
                return reply
            fault = None  # a HOLD that was released: go on as if no fault
        self.sink.messages.append(received)
        self.sink.accepted_at.append(time.monotonic())
        server.unconfirmed = len(self.sink.messages) - 1
        async with self.sink.arrivals:
            self.sink.arrivals.notify_all()
        if fault is not None:  # committed; the reply comes late
            if fault.delay is not None:
                await asyncio.sleep(fault.delay)  # the fault itself: a slow upstream
            else:
                await fault.released.wait()
        return "250 2.0.0 OK queued"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.sink.stats.resets += 1
        return "250 2.0.0 OK"

    async def handle_exception(self, error: Exception) -> str:
        return "451 4.3.0 sink error"


class Sink:
    """The upstream smarthost of a test. Use as `async with Sink(...) as sink`."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        hostname: str = "sink.test",
        timeout: float = 30.0,
        dsn: bool = False,
        smtputf8: bool = False,
    ) -> None:
        """`tls`: server context; STARTTLS is offered, or with `implicit_tls` the whole
        connection is TLS. `credentials`: (user, password) to require AUTH (over TLS)."""
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.credentials = credentials
        self.hostname = hostname
        self.timeout = timeout
        self.dsn = dsn
        self.smtputf8 = smtputf8
        self.host = "127.0.0.1"
        self.port = 0
        self.messages: list[Received] = []  # accepted with 250
        self.arrivals = asyncio.Condition()  # notified at each message accepted
        self.unanswered: list[Received] = []  # bytes arrived, then dropped or hung: no reply
        # indexes into `messages` whose 250 the client is known to have read (it sent another
        # command after it on the same connection); the others may have been lost (RFC 1047)
        self.confirmed: set[int] = set()
        self.accepted_at: list[float] = []  # time.monotonic() as each of `messages` was taken
        self.replied_at: dict[int, float] = {}  # ... and as its 250 was written
        self.faults: list[Fault] = []
        self.stats = _Stats()
        self._server: asyncio.Server | None = None
        self._sessions: list[_SinkSMTP] = []
        self._silent: list[_Silent] = []
        self._stopping = False  # set by stop(): a connection accepted from then on is closed

    # ---- fault injection -------------------------------------------------------------
    def fail(
        self, step: Step, reply: str, *, times: int | None = None, recipient: str | None = None
    ) -> Fault:
        """Answer `reply` (e.g. "451 4.3.0 try later") at `step`."""
        return self._add(Fault(step, Action.REPLY, reply, times, recipient))

    def drop(self, step: Step, *, times: int | None = None, recipient: str | None = None) -> Fault:
        """Close the connection at `step` without replying (at DATA: after the bytes arrive)."""
        return self._add(Fault(step, Action.DROP, "", times, recipient))

    def hang(self, step: Step, *, times: int | None = None) -> Fault:
        """Never reply at `step` (until the sink stops)."""
        return self._add(Fault(step, Action.HANG, "", times))

    def hold(self, step: Step, *, times: int | None = None) -> Fault:
        """Wait at `step` until `fault.released.set()`, then answer as usual (a slow upstream
        that holds a message as long as the test needs)."""
        return self._add(Fault(step, Action.HOLD, "", times))

    def late_reply(self, *, delay: float | None = None, times: int | None = None) -> Fault:
        """At DATA, accept the message (it is in `messages` at once, as an upstream that has
        committed it) but send the 250 only after `delay` seconds, or once `released` is set."""
        return self._add(Fault(Step.DATA, Action.LATE, "", times, delay=delay))

    def clear_faults(self) -> None:
        self.faults.clear()

    def _add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def _take(self, step: Step, recipients: tuple[str, ...] = ()) -> Fault | None:
        for fault in self.faults:
            if fault.applies(step, recipients):
                fault.hits += 1
                fault.struck.set()
                return fault
        return None

    async def _strike(
        self,
        step: Step,
        server: SMTP,
        recipient: str | None = None,
        received: Received | None = None,
        fault: Fault | None = None,
    ) -> str:
        """Apply the first matching fault (or `fault`, already taken): return its reply, or
        never return (drop, hang)."""
        if received is not None:
            recipients = received.rcpt_tos
        else:
            recipients = (recipient,) if recipient else ()
        if fault is None:
            fault = self._take(step, recipients)
        if fault is None:
            return ""
        if fault.action is Action.REPLY:
            return fault.reply
        if fault.action is Action.HOLD:
            await fault.released.wait()
            return ""
        if received is not None:
            self.unanswered.append(received)
        if fault.action is Action.DROP:
            transport = server.transport
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
        # Never returns: connection_lost() cancels this coroutine, after the drop above or
        # when stop() closes the connection.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- what happened ---------------------------------------------------------------
    @property
    def connections(self) -> int:
        """How many TCP connections the sink has accepted so far."""
        return self.stats.connections

    # ---- lifecycle -------------------------------------------------------------------
    def _protocol(self) -> asyncio.BaseProtocol:
        if self._stopping:
            # Accepted by the listener just before stop() stopped it: closed at once, never
            # served (see stop_listening).
            return _Refuser("")
        self.stats.connections += 1
        fault = self._take(Step.CONNECT)
        if fault is not None and fault.action is Action.HANG:
            return _Silent(self)
        if fault is not None:
            return _Refuser(fault.reply)
        session = _SinkSMTP(
            _Handler(self),
            self.stats.connections,
            dsn=self.dsn,
            enable_SMTPUTF8=self.smtputf8,
            hostname=self.hostname,
            tls_context=None if self.implicit_tls else self.tls,
            require_starttls=self.tls is not None and not self.implicit_tls,
            timeout=self.timeout,
            authenticator=self._authenticate if self.credentials else None,
            auth_required=self.credentials is not None,
            auth_require_tls=True,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.append(session)
        return session

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.credentials is not None
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if (user, password) == self.credentials:
                self.stats.auth_logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    async def wait_for_messages(self, count: int) -> list[Received]:
        """Every message accepted, once there are at least `count` (for mail that another MTA
        hands on in its own time); TimeoutError after WAIT_TIMEOUT seconds."""
        async with asyncio.timeout(WAIT_TIMEOUT), self.arrivals:
            await self.arrivals.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)

    async def start(self) -> Sink:
        loop = asyncio.get_running_loop()
        self._stopping = False
        factory: Callable[[], asyncio.BaseProtocol] = self._protocol
        self._server = await loop.create_server(
            factory, self.host, 0, ssl=self.tls if self.implicit_tls else None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop_listening(self) -> None:
        """Close the listening socket: new connections to `port` are refused.

        A connection the listener has accepted is made into a transport by asyncio one loop
        turn later, in a task; on Python 3.11 that fails silently once the server is closed
        (`Server._attach` asserts it is open) and leaves the accepted socket to the garbage
        collector. So the listener first stops accepting, then one loop turn lets asyncio
        build what it accepted (stop() closes those), then it closes.
        """
        if self._server is not None:
            loop = asyncio.get_running_loop()
            for sock in self._server.sockets:
                loop.remove_reader(sock.fileno())  # accept nothing more...
            await asyncio.sleep(0)  # ...and let the connections already accepted be built
            self._server.close()
            await self._server.wait_closed()

    async def stop(self) -> None:
        """Stop listening, close every connection (releasing every hang) and wait for them."""
        self._stopping = True
        await self.stop_listening()
        self._server = None
        for silent in self._silent:
            if isinstance(silent.transport, asyncio.Transport):
                silent.transport.abort()
        tasks = []
        for session in self._sessions:
            # Cut the TCP connection itself: a TLS close would wait on a half-done handshake.
            transport = socket_transport(session)
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            task = handler_task(session)
            if task is not None:
                # aiosmtpd cancels it on connection_lost(), which a session caught in a TLS
                # handshake never gets: cancel it here too.
                task.cancel()
                tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Sink:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
