"""`casegate serve`: run the SMTP and HTTP fronts until SIGTERM or SIGINT, then drain and stop.

SIGHUP reloads the portal keyring (`casegate keys rotate` sends it, through `casegate.pid` in the
data directory, which serve holds while it runs): new copies are sealed with the new current key
at once, checked against the fingerprints the portal records; a keyring that fails the check is
logged and the old one kept.

With no config it runs on the embedded default: a data directory (SQLite, a self-signed
certificate), loopback ports, and an outbox Maildir when no upstream is configured. Logs are JSON
lines on stdout; the first ones (`"event": "listening"`, then `"event": "files"`) say where it
listens and where its files are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from dataclasses import replace
from datetime import UTC, datetime

import structlog

from gateway.app import OUTBOX_DIR, App, dkim_signer, settle_heap
from gateway.cli.common import UsageError, add_common, open_app
from gateway.config import Config, check_values, read_bearer_token
from gateway.observe.logs import STDOUT, configure_logging
from gateway.runtime.memory import return_large_buffers
from gateway.runtime.pidfile import holding
from gateway.runtime.server import Gateway, relay_networks, start_gateway
from gateway.stores.portalkeys import KeyringError, open_keyring
from policies.events import EventKind


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the SMTP and HTTP fronts",
        description="Run the gateway. Flags override the config file; port 0 picks a free "
        "port. SIGTERM drains messages in flight and stops.",
    )
    add_common(parser)
    parser.add_argument("--smtp-port", type=int, metavar="N",
                        help="submission port (STARTTLS)")
    parser.add_argument("--tls-port", type=int, metavar="N",
                        help="implicit-TLS submission port (0: any free port)")
    parser.add_argument("--http-port", type=int, metavar="N", help="HTTP(S) port")
    parser.add_argument("--metrics-port", type=int, metavar="N",
                        help="metrics listener's port (/metrics, /healthz, /readyz)")
    parser.add_argument("--upstream", metavar="HOST:PORT",
                        help="upstream smarthost (default: deliver into the outbox)")
    parser.add_argument("--relay-from", action="append", default=[], metavar="CIDR",
                        help="trusted relay peer that needs no AUTH, repeatable")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return_large_buffers()  # a freed message buffer is not kept by the process (issue 14)
    try:
        app = open_app(args, event_stream=STDOUT,
                       adjust=lambda config: with_flags(config, args))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        relay_networks(app.config.smtp.relay_from)  # a bad range is a usage error, before binding
        read_bearer_token(app.config)  # so is an unreadable or guessable metrics token file
        dkim_signer(app.config.dkim, app.data_dir)  # so is an unusable DKIM key
    except ValueError as exc:
        app.close()
        raise UsageError(str(exc)) from None
    configure_logging()
    try:
        with holding(app.data_dir):
            asyncio.run(serve(app, args.tls_port))
    finally:
        app.close()
    return 0


async def reload_keys(app: App, gateway: Gateway) -> None:
    """SIGHUP: read the portal keyring again and seal with its current key from now on."""
    log = structlog.get_logger("casegate.serve")
    if os.environ.get("CASEGATE_PORTAL_KEYS"):
        log.warning("keys-not-reloaded", reason="the keys come from $CASEGATE_PORTAL_KEYS, "
                    "which is read only at start: restart casegate to use a new keyring")
        return
    try:
        keyring, _ = await asyncio.to_thread(open_keyring, app.database, None,
                                               datetime.now(UTC))
    except KeyringError as exc:
        log.error("keys-not-reloaded", reason=str(exc), current=app.keyring.current_id)
        return
    previous = app.keyring.current_id
    gateway.use_keyring(keyring)
    log.info("keys-reloaded", current=keyring.current_id, previous=previous)
    await app.audit.record_async(EventKind.KEY_RELOADED, key_id=keyring.current_id,
                                 previous_key_id=previous)


def with_flags(config: Config, args: argparse.Namespace) -> Config:
    """The config with `serve`'s flags applied, checked like the config file's values."""
    smtp, http, upstream = config.smtp, config.http, config.upstream
    metrics = config.metrics
    for value in (args.smtp_port, args.tls_port, args.http_port, args.metrics_port):
        if value is not None and not 0 <= value <= 65535:
            raise ValueError(f"{value} is not a port number")
    if args.smtp_port is not None:
        smtp = replace(smtp, port=args.smtp_port)
    if args.relay_from:
        smtp = replace(smtp, relay_from=(*smtp.relay_from, *args.relay_from))
    if args.http_port is not None:
        http = replace(http, port=args.http_port)
    if args.metrics_port is not None:
        metrics = replace(metrics, port=args.metrics_port)
    if args.upstream:
        host, colon, port = args.upstream.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"--upstream {args.upstream!r} must be HOST:PORT")
        upstream = replace(upstream, host=host.strip("[]"), port=int(port))
    flagged = replace(config, smtp=smtp, http=http, upstream=upstream, metrics=metrics)
    check_values(flagged, "the command line")  # the same ranges as the config file's
    return flagged


async def serve(app: App, tls_port: int | None) -> None:
    """Start, print where everything is, wait for a stop signal, drain."""
    gateway = await start_gateway(app, implicit_tls_port=tls_port)
    settle_heap()
    config = app.config
    log = structlog.get_logger("casegate.serve")
    log.info("listening", service="smtp", host=config.smtp.host, port=gateway.smtp_port,
             tls="starttls")
    if gateway.tls_port is not None:
        log.info("listening", service="smtps", host=config.smtp.host, port=gateway.tls_port,
                 tls="implicit")
    log.info("listening", service="http", host=config.http.host, port=gateway.http_port,
             tls="implicit" if config.http.tls else "none")
    if gateway.metrics_port is not None:
        log.info("listening", service="metrics", host=config.metrics.host,
                 port=gateway.metrics_port, tls="none",
                 token=bool(config.metrics.bearer_token_file))
    log.info(
        "files",
        data=str(app.data_dir.resolve()),
        certificate=str(gateway.certificate.cert_file.resolve()),
        outbox="" if config.upstream.host else str((app.data_dir / OUTBOX_DIR).resolve()),
        upstream=f"{config.upstream.host}:{config.upstream.port}" if config.upstream.host else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def reload() -> None:
        task = loop.create_task(reload_keys(app, gateway))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await stop.wait()
        log.info("stopping", in_flight=gateway.stages.flight.count)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await asyncio.gather(*reloads, return_exceptions=True)
        await gateway.stop(config.smtp.drain_seconds)
    log.info("stopped")
