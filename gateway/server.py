"""Starting and stopping the gateway's servers: SMTP (STARTTLS and implicit TLS), HTTP(S) and
the metrics listener (plain HTTP, loopback by default).

`start_gateway(app)` binds every listener (port 0 picks a free port; the bound ports are on the
returned `Gateway`) and `Gateway.stop()` drains: it stops accepting, lets messages already in
DATA finish (up to `drain_seconds`), then closes every connection and the transport.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import ssl
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web

from gateway.app import App, dkim_signer
from gateway.config import Config, StartupError, os_reason, read_bearer_token
from gateway.http import build_metrics_app, build_web_app
from gateway.pipeline import Services
from gateway.ratelimit import AuthThrottle
from gateway.smtp import GatewaySMTP, IPNetwork, SubmissionHandler
from gateway.smtp_limits import ConnectionLimiter, ConnectionLimits
from gateway.tls import CertificatePair, ensure_certificate, normalise_fingerprint
from transports.base import Transport
from transports.dkim import SigningTransport

log = structlog.get_logger("casegate.server")

UPSTREAM_PROBE_TIMEOUT = 3.0
DEFAULT_DRAIN_SECONDS = 30.0
LEDGER_FILE = "relay-ledger.sqlite3"
OUTBOX_DIR = "outbox"


@dataclass
class Gateway:
    """The running servers and what they share."""

    services: Services
    smtp_port: int
    tls_port: int | None
    http_port: int | None
    certificate: CertificatePair
    metrics_port: int | None = None
    _servers: list[asyncio.Server] = field(default_factory=list)
    _sessions: weakref.WeakSet[GatewaySMTP] = field(default_factory=weakref.WeakSet)
    _runner: web.AppRunner | None = None
    _metrics_runner: web.AppRunner | None = None
    _handler: SubmissionHandler | None = None
    _stopped: bool = False

    async def stop(self, drain_seconds: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Stop accepting, let messages in flight finish, close connections and the transport."""
        if self._stopped:
            return
        self._stopped = True
        for server in self._servers:
            server.close()
        services = self.services
        if services.in_flight:
            log.info("draining", in_flight=services.in_flight)
            try:
                await asyncio.wait_for(services.idle.wait(), drain_seconds)
            except TimeoutError:
                log.warning("drain-timeout", in_flight=services.in_flight)
        handlers = []
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
            if session._handler_coroutine is not None:
                handlers.append(session._handler_coroutine)
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._handler is not None:  # audit events written after a disconnect
            await asyncio.gather(*self._handler.pending_events, return_exceptions=True)
        await asyncio.gather(*services.background, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        if services.encrypted is not None:
            await services.encrypted.close()
        await services.transport.close()
        services.app.audit.store.group_commits(None)
        services.app.audit.store.commit_timer = None


def build_transport(app: App, way_out: Transport | None = None) -> Transport:
    """The way out (`way_out`, else the upstream smarthost when one is configured, else the
    outbox Maildir), signing what casegate wrote or rewrote when `[dkim]` names a domain.

    Raises ConfigError when the DKIM key cannot be used."""
    way_out = way_out or _way_out(app)
    signer = dkim_signer(app.config.dkim, app.data_dir)
    return SigningTransport(way_out, signer) if signer is not None else way_out


def _way_out(app: App) -> Transport:
    upstream = app.config.upstream
    if upstream.host:
        from transports.ledger import Ledger
        from transports.smtp_relay import SmtpRelay

        try:
            return SmtpRelay(upstream, Ledger(app.data_dir / LEDGER_FILE),
                             local_hostname=app.config.smtp.hostname)
        except ValueError as exc:  # the CA file the config names does not load
            raise StartupError(str(exc)) from None
    from transports.outbox import MaildirOutbox

    return MaildirOutbox(app.data_dir / OUTBOX_DIR)


def build_portal(app: App, gateway: Gateway) -> Transport:
    """Encrypted delivery through the portal; its links use the HTTP port once it is bound."""
    from gateway.links import public_url
    from gateway.web.portal import build_delivery

    services = gateway.services
    return build_delivery(app, services.transport,
                          lambda: public_url(app.config, gateway.http_port),
                          lambda: services.clock())  # the services' clock, even if replaced


def relay_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Parse the trusted relay peers; a bad entry is a ValueError naming it."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"'{cidr}' is not an address range (CIDR)") from None
    return tuple(networks)


async def start_gateway(
    app: App,
    transport: Transport | None = None,
    *,
    encrypted: Transport | None = None,
    implicit_tls_port: int | None = None,
    http: bool = True,
) -> Gateway:
    """Bind and start every listener the config asks for.

    `implicit_tls_port` overrides `smtp.tls_port` (where 0 means disabled): here 0 means any
    free port. `transport` overrides the one the config names (tests, the benchmark); either
way, what casegate wrote or rewrote is DKIM-signed when `[dkim]` names a domain.
    `encrypted` carries the copies for `encrypt` recipients (the portal); without it they are
    held with a 451 (fail closed). `http=False` starts neither HTTP listener.
    """
    config = app.config
    serve_metrics = http and config.metrics.enabled
    bearer_token = read_bearer_token(config) if serve_metrics else None
    tls_port = config.smtp.tls_port if implicit_tls_port is None else implicit_tls_port
    serve_implicit = implicit_tls_port is not None or config.smtp.tls_port > 0
    certificate = ensure_certificate(app.data_dir, config.smtp.hostname)
    pinned = tuple(normalise_fingerprint(f) for f in config.smtp.relay_client_cert_fingerprints)
    context = certificate.server_context(client_certs=bool(pinned),
                                         client_ca_file=config.smtp.relay_client_ca_file)
    services = Services(
        app=app,
        users=app.users,
        transport=build_transport(app, transport),
        encrypted=encrypted,
        throttle=AuthThrottle(
            max_failures=config.smtp.auth_max_failures,
            lockout_seconds=config.smtp.auth_lockout_seconds,
            delay_step=config.smtp.auth_failure_delay,
        ),
    )
    services.idle.set()
    services.readiness = lambda: readiness_problems(services)
    # Messages in flight besides the one recording: the audit writer waits for their events.
    app.audit.store.group_commits(lambda: services.in_flight - 1)
    app.audit.store.commit_timer = services.metrics.audit_committed
    handler = SubmissionHandler(services, relay_networks(config.smtp.relay_from),
                                config.smtp.max_recipients, pinned)
    gateway = Gateway(services=services, smtp_port=0, tls_port=None, http_port=None,
                      certificate=certificate, _handler=handler)
    if services.encrypted is None and app.portal is not None and app.keyring is not None:
        services.encrypted = build_portal(app, gateway)
    limiter = ConnectionLimiter(ConnectionLimits(
        total=config.smtp.max_connections,
        per_client=config.smtp.max_connections_per_client,
        per_relay_peer=config.smtp.max_connections_per_relay_peer,
    ))  # one for both SMTP ports
    try:
        gateway.smtp_port = await _listen_smtp(gateway, handler, limiter, config, context,
                                               config.smtp.port, implicit=False)
        if serve_implicit:
            gateway.tls_port = await _listen_smtp(gateway, handler, limiter, config, context,
                                                  tls_port, implicit=True)
        if http:
            gateway.http_port = await _listen_http(gateway, config, context)
        if serve_metrics:
            gateway.metrics_port = await _listen_metrics(gateway, config, bearer_token)
    except BaseException:
        await gateway.stop(drain_seconds=0)
        raise
    return gateway


async def _listen_smtp(gateway: Gateway, handler: SubmissionHandler, limiter: ConnectionLimiter,
                       config: Config, context: ssl.SSLContext, port: int, *,
                       implicit: bool) -> int:
    loop = asyncio.get_running_loop()
    smtp = config.smtp

    def factory() -> GatewaySMTP:
        session = GatewaySMTP(
            handler,
            implicit_tls=implicit,
            limiter=limiter,
            hostname=smtp.hostname,
            ident="ESMTP casegate",
            enable_SMTPUTF8=True,
            tls_context=None if implicit else context,
            data_size_limit=smtp.max_message_size,
            timeout=smtp.idle_timeout,
            auth_exclude_mechanism=["CRAM-MD5"],
            loop=loop,
        )
        gateway._sessions.add(session)
        return session

    with listening("smtp.tls_port" if implicit else "smtp.port", smtp.host, port):
        server = await loop.create_server(factory, smtp.host, port,
                                          ssl=context if implicit else None)
    gateway._servers.append(server)
    return int(server.sockets[0].getsockname()[1])


async def _listen_http(gateway: Gateway, config: Config, context: ssl.SSLContext) -> int:
    runner = web.AppRunner(build_web_app(gateway.services), access_log=None,
                           shutdown_timeout=5.0)
    await runner.setup()
    gateway._runner = runner
    site = web.TCPSite(runner, config.http.host, config.http.port,
                       ssl_context=context if config.http.tls else None)
    with listening("http.port", config.http.host, config.http.port):
        await site.start()
    return int(runner.addresses[0][1])


async def _listen_metrics(gateway: Gateway, config: Config, bearer_token: bytes | None) -> int:
    runner = web.AppRunner(build_metrics_app(gateway.services, bearer_token), access_log=None,
                           shutdown_timeout=5.0)
    await runner.setup()
    gateway._metrics_runner = runner
    site = web.TCPSite(runner, config.metrics.host, config.metrics.port)
    with listening("metrics.port", config.metrics.host, config.metrics.port):
        await site.start()
    return int(runner.addresses[0][1])


@contextmanager
def listening(key: str, host: str, port: int) -> Iterator[None]:
    """Turn a failure to bind `host`:`port` (the config's `key`) into one sentence."""
    try:
        yield
    except OSError as exc:
        hint = " (another program, or another casegate, is using it)" \
            if exc.errno == errno.EADDRINUSE else ""
        raise StartupError(f"cannot listen on {host}:{port} ('{key}'): {os_reason(exc)}"
                           f"{hint}") from None


async def readiness_problems(services: Services) -> list[str]:
    """Stores open, and the upstream reachable or the outbox writable."""
    problems: list[str] = []
    try:
        services.users.ping()
    except Exception:
        problems.append("user store")
    app = services.app
    upstream = app.config.upstream
    if upstream.host:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(upstream.host, upstream.port), UPSTREAM_PROBE_TIMEOUT
            )
            writer.close()
            await writer.wait_closed()
        except (OSError, TimeoutError):
            problems.append("upstream unreachable")
    else:
        outbox = app.data_dir / OUTBOX_DIR
        if not _writable(outbox):
            problems.append("outbox not writable")
    return problems


def _writable(directory: Path) -> bool:
    target = directory if directory.exists() else directory.parent
    return os.access(target, os.W_OK)
