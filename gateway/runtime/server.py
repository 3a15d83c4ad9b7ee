"""The composition root of the running gateway: `start_gateway(app)` builds the ways out, the
stages, the SMTP front (STARTTLS and implicit TLS), the HTTP(S) front and the metrics listener
(plain HTTP, loopback by default) from the `App`, and binds every listener (port 0 picks a free
port; the bound ports are on the returned `Gateway`). With `proxy.trusted` set, the SMTP and
HTTP listeners read the PROXY protocol from those load balancers (gateway/runtime/proxy.py).

`Gateway.stop()` drains: it stops accepting, lets messages already in DATA finish (up to
`drain_seconds`), then answers every connection still open `421 4.3.2` and closes it (a
message still in flight then gets that 421, never a 250), then closes the transports.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway.app import OUTBOX_DIR, App
from gateway.config import Config, StartupError, os_reason, public_url, read_bearer_token
from gateway.observe.metrics import Metrics
from gateway.runtime.proxy import IPNetwork as ProxyNetwork
from gateway.runtime.proxy import ProxyListener, networks, trusted_networks
from gateway.smtp.aiosmtpd_private import handler_task, socket_transport
from gateway.smtp.budget import BufferBudget
from gateway.smtp.front import GatewaySMTP, IPNetwork, SubmissionHandler
from gateway.smtp.limits import CommandBudget, ConnectionLimiter, ConnectionLimits
from gateway.smtp.tls import CertificatePair, ensure_certificate, normalise_fingerprint
from gateway.stages.classifiers import Classifiers
from gateway.stages.context import Stages
from gateway.stages.pipeline import message_size_limit
from gateway.stores.throttle import AuthThrottle
from gateway.web.app import WebFront, build_metrics_app, build_web_app
from gateway.web.portal import PORTAL
from transports.base import Transport
from transports.crypto import Keyring
from transports.portal import PortalDelivery

log = structlog.get_logger("casegate.server")

UPSTREAM_PROBE_TIMEOUT = 3.0
DEFAULT_DRAIN_SECONDS = 30.0


@dataclass
class Gateway:
    """The running servers and what they share."""

    stages: Stages
    handler: SubmissionHandler
    certificate: CertificatePair
    smtp_port: int = 0
    tls_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None
    web_app: web.Application | None = None  # the public HTTP front, once started
    _servers: list[asyncio.Server] = field(default_factory=list)
    _sessions: weakref.WeakSet[GatewaySMTP] = field(default_factory=weakref.WeakSet)
    _runners: list[web.AppRunner] = field(default_factory=list)
    _proxies: list[ProxyListener] = field(default_factory=list)  # with proxy.trusted
    _stopped: bool = False

    def use_keyring(self, keyring: Keyring) -> None:
        """Seal new portal copies with `keyring`'s current key from now on, and open copies
        with any of its keys (after `casegate keys rotate`: SIGHUP, see gateway.cli.serve)."""
        self.stages.app.keyring = keyring
        if isinstance(self.stages.encrypted, PortalDelivery):
            self.stages.encrypted.keyring = keyring
        if self.web_app is not None and PORTAL in self.web_app:
            self.web_app[PORTAL].keyring = keyring

    async def stop(self, drain_seconds: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Stop accepting, let messages in flight finish, close connections and the transport."""
        if self._stopped:
            return
        self._stopped = True
        for server in self._servers:
            server.close()
        for proxy in self._proxies:
            proxy.close()  # connections still before their PROXY header or TLS handshake
        stages = self.stages
        if stages.flight.count:
            log.info("draining", in_flight=stages.flight.count)
            try:
                await asyncio.wait_for(stages.flight.idle.wait(), drain_seconds)
            except TimeoutError:
                log.warning("drain-timeout", in_flight=stages.flight.count)
        handlers = []
        for session in list(self._sessions):
            session.shut_down()  # 421 4.3.2, then close: never a silent disconnect
            task = handler_task(session)
            if task is not None:
                handlers.append(task)
        await asyncio.gather(*handlers, return_exceptions=True)
        for session in list(self._sessions):
            # A TLS close waits for the client's reply; whatever is still open now is cut, so
            # no connection outlives stop() (and no socket is left for the garbage collector).
            raw = socket_transport(session)
            if isinstance(raw, asyncio.Transport) and not raw.is_closing():
                raw.abort()
        # audit events written after a disconnect
        await asyncio.gather(*self.handler.pending_events, return_exceptions=True)
        await asyncio.gather(*stages.background.tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        for runner in self._runners:
            await runner.cleanup()
        for proxy in self._proxies:
            proxy.close()  # the HTTP listener closes with its runner
        if stages.classifiers is not None:
            await stages.classifiers.close()
        if stages.encrypted is not None:
            await stages.encrypted.close()
        await stages.transport.close()
        stages.app.audit.store.group_commits(None)
        stages.app.audit.store.commit_timer = None


def classifiers(config: Config, app: App) -> Classifiers | None:
    """The classifier processes `[policy]` asks for (started by `start_gateway`), or None."""
    section = config.policy
    if not section.classifier_processes:
        return None
    return Classifiers(app, section.classifier_processes, section.classifier_min_bytes,
                       section.classifier_max_bytes)


def relay_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Parse the trusted relay peers; a bad entry is a ValueError naming it."""
    return networks(cidrs, "an address range (CIDR)")


async def start_gateway(
    app: App,
    transport: Transport | None = None,
    *,
    encrypted: Transport | None = None,
    implicit_tls_port: int | None = None,
    http: bool = True,
) -> Gateway:
    """Build the gateway from `app` and bind every listener the config asks for.

    `implicit_tls_port` overrides `smtp.tls_port` (where 0 means disabled): here 0 means any
    free port. `transport` overrides the way out the config names (tests, the benchmark);
    either way, what casegate wrote or rewrote is DKIM-signed when `[dkim]` names a domain.
    Encrypt copies go through the portal (`encrypted` overrides it; the portal's pages are
    then not served). `http=False` starts neither HTTP listener.
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
    way_out = app.signed(transport) if transport is not None else app.way_out()
    bound = _Bound()  # the HTTP port once bound: the portal's links name it
    # Built once (its templates and link key are read now); it reads the stages' clock, even
    # when a test replaces it.
    workflow = app.workflow(way_out, clock=lambda: stages.clock())
    stages = Stages(app=app, transport=way_out, encrypted=encrypted, metrics=Metrics(),
                    workflow=workflow, classifiers=classifiers(config, app))
    # The portal reads the stages' clock, even when a test replaces it.
    delivery = app.portal_delivery(
        way_out, lambda: public_url(config, bound.http_port),
        lambda: stages.clock()) if encrypted is None else None
    stages.encrypted = encrypted or delivery
    # Messages in flight besides the one recording: the audit writer waits for their events.
    app.audit.store.group_commits(lambda: stages.flight.count - 1)
    app.audit.store.commit_timer = stages.metrics.audit_committed
    throttle = AuthThrottle(
        max_failures=config.smtp.auth_max_failures,
        lockout_seconds=config.smtp.auth_lockout_seconds,
        delay_step=config.smtp.auth_failure_delay,
        database=app.database,  # on PostgreSQL counted across the nodes
        scope="smtp",
    )
    handler = SubmissionHandler(stages, throttle, relay_networks(config.smtp.relay_from),
                                config.smtp.max_recipients, pinned,
                                buffers=BufferBudget(config.smtp.max_buffered_bytes))
    gateway = Gateway(stages=stages, handler=handler, certificate=certificate)
    limiter = ConnectionLimiter(ConnectionLimits(
        total=config.smtp.max_connections,
        per_client=config.smtp.max_connections_per_client,
        per_relay_peer=config.smtp.max_connections_per_relay_peer,
        unauthenticated=config.smtp.max_unauthenticated_connections,
    ))  # one for both SMTP ports
    trusted = trusted_networks(config.proxy.trusted)  # load balancers sending PROXY headers
    try:
        if stages.classifiers is not None:  # ready before the first message can come
            await stages.classifiers.start()
        gateway.smtp_port = await _listen_smtp(gateway, handler, limiter, config, context,
                                               config.smtp.port, trusted, implicit=False)
        if serve_implicit:
            gateway.tls_port = await _listen_smtp(gateway, handler, limiter, config, context,
                                                  tls_port, trusted, implicit=True)
        if http:
            front = WebFront(app=app, stages=stages, portal=delivery,
                             readiness=lambda: readiness_problems(stages))
            gateway.http_port = bound.http_port = await _listen_http(gateway, front, config,
                                                                     context, trusted)
        if serve_metrics:
            gateway.metrics_port = await _listen_metrics(gateway, config, bearer_token)
    except BaseException:
        await gateway.stop(drain_seconds=0)
        raise
    return gateway


@dataclass
class _Bound:
    http_port: int | None = None


async def _listen_smtp(gateway: Gateway, handler: SubmissionHandler, limiter: ConnectionLimiter,
                       config: Config, context: ssl.SSLContext, port: int,
                       trusted: Sequence[ProxyNetwork], *, implicit: bool) -> int:
    loop = asyncio.get_running_loop()
    smtp = config.smtp
    size_limit = message_size_limit(smtp.max_message_size, handler.stages.app.policy)

    def factory() -> GatewaySMTP:
        session = GatewaySMTP(
            handler,
            implicit_tls=implicit,
            limiter=limiter,
            budget=CommandBudget(junk_limit=smtp.junk_command_limit,
                                 error_limit=smtp.hard_error_limit),
            unauthenticated_timeout=min(smtp.unauthenticated_idle_timeout, smtp.idle_timeout),
            hostname=smtp.hostname,
            enable_SMTPUTF8=True,
            tls_context=None if implicit else context,
            data_size_limit=size_limit,
            timeout=smtp.idle_timeout,
            auth_exclude_mechanism=["CRAM-MD5"],
            loop=loop,
        )
        gateway._sessions.add(session)
        return session

    key = "smtp.tls_port" if implicit else "smtp.port"
    tls = context if implicit else None
    with listening(key, smtp.host, port):
        if trusted:  # the socket is plain TCP: TLS starts after the PROXY header
            server = await loop.create_server(
                _proxied(gateway, config, trusted, key, factory, tls), smtp.host, port)
        else:
            server = await loop.create_server(factory, smtp.host, port, ssl=tls)
    gateway._servers.append(server)
    return int(server.sockets[0].getsockname()[1])


async def _listen_http(gateway: Gateway, front: WebFront, config: Config,
                       context: ssl.SSLContext, trusted: Sequence[ProxyNetwork]) -> int:
    gateway.web_app = build_web_app(front)
    runner = web.AppRunner(gateway.web_app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    gateway._runners.append(runner)
    tls = context if config.http.tls else None
    if trusted:
        assert runner.server is not None  # set up above
        site = _ProxySite(runner, config.http.host, config.http.port,
                          _proxied(gateway, config, trusted, "http.port", runner.server, tls))
        with listening("http.port", config.http.host, config.http.port):
            await site.start()
        return site.bound_port
    tcp_site = web.TCPSite(runner, config.http.host, config.http.port, ssl_context=tls)
    with listening("http.port", config.http.host, config.http.port):
        await tcp_site.start()
    return int(runner.addresses[0][1])


def _proxied(gateway: Gateway, config: Config, trusted: Sequence[ProxyNetwork], key: str,
             factory: Callable[[], asyncio.BaseProtocol],
             tls: ssl.SSLContext | None) -> ProxyListener:
    """The protocol factory of the listener `key` names, reading the PROXY protocol from the
    `trusted` load balancers before `factory`'s protocol (TLS, when given, after the header)."""
    metrics = gateway.stages.metrics

    def refused(peer: Any, reason: str) -> None:
        balancer = peer[0] if isinstance(peer, tuple) and peer else ""
        log.warning("proxy-header-refused", listener=key, balancer=balancer, reason=reason)
        metrics.inc("casegate_proxy_headers_refused_total")

    proxy = ProxyListener(factory, trusted, header_timeout=config.proxy.header_timeout,
                          ssl_context=tls, refused=refused)
    gateway._proxies.append(proxy)
    return proxy


class _ProxySite(web.BaseSite):
    """aiohttp's TCP site with the PROXY protocol in front (`web.TCPSite` cannot wrap the
    protocol factory): the runner stops it with its other sites, before closing connections."""

    def __init__(self, runner: web.AppRunner, host: str, port: int,
                 listener: ProxyListener) -> None:
        super().__init__(runner)
        self.host, self.port, self.listener = host, port, listener
        self.listening: asyncio.Server | None = None
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"{self.host}:{self.bound_port} (PROXY protocol)"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self.listening = await loop.create_server(self.listener, self.host, self.port)
        self.bound_port = int(self.listening.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.listening is not None:
            self.listening.close()
        self.listener.close()
        await super().stop()


async def _listen_metrics(gateway: Gateway, config: Config, bearer_token: bytes | None) -> int:
    stages = gateway.stages
    runner = web.AppRunner(build_metrics_app(stages.metrics, lambda: readiness_problems(stages),
                                             bearer_token),
                           access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    gateway._runners.append(runner)
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


async def readiness_problems(stages: Stages) -> list[str]:
    """Stores open, the database answering (PostgreSQL), the upstream reachable or the
    outbox writable, and, when there are to be classifier processes, one running."""
    problems: list[str] = []
    app = stages.app
    if stages.classifiers is not None and not stages.classifiers.pids():
        problems.append("no classifier process running")
    if not app.database.is_sqlite:
        try:
            await asyncio.to_thread(app.database.ping)
        except Exception:
            problems.append("database unreachable")
    try:
        await asyncio.to_thread(app.users.ping)
    except Exception:
        problems.append("user store")
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
        if not await asyncio.to_thread(_writable, outbox):
            problems.append("outbox not writable")
    return problems


def _writable(directory: Path) -> bool:
    target = directory if directory.exists() else directory.parent
    return os.access(target, os.W_OK)
