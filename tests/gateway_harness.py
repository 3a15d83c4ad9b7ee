"""The real gateway, in-process, for end-to-end tests: port 0, its own TLS certificate, a sink.

    async with running_gateway(tmp_path, sink) as gw:
        reply = await gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"], message())

The gateway runs in the test's event loop, so blocking clients (smtplib, swaks) run in a worker
thread through `gw.run`. The client trusts exactly the certificate the gateway generated in its
data directory, with hostname checks on.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from gateway.app import App
from gateway.runtime.server import Gateway, start_gateway
from gateway.stores.users import UserRole
from policies.model import Role
from tests.https import https_client
from tests.sink import Sink
from transports.base import Transport

T = TypeVar("T")

PASSWORD = "correct horse battery staple"
STAFF = "jo.smith@cafcass.gov.uk"
SEND_AS = "south.team@cafcass.gov.uk"
OTHER_STAFF = "al.jones@cafcass.gov.uk"
GOVERNANCE = "gov.lead@cafcass.gov.uk"  # staff and governance roles
CLIENT_TIMEOUT = 20.0


def message(
    sender: str = STAFF,
    to: Sequence[str] = ("colleague@cafcass.gov.uk",),
    body: str = "Please call me about the meeting.",
    extra_headers: Sequence[str] = (),
    subject: str = "Meeting",
) -> bytes:
    """A small, well-formed message with CRLF line endings."""
    lines = [
        f"From: Jo Smith <{sender}>",
        f"To: {', '.join(to)}",
        f"Subject: {subject}",
        "Message-ID: <test@cafcass.gov.uk>",
        "Date: Wed, 25 Nov 2026 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        *extra_headers,
        "",
        body,
        "",
    ]
    return "\r\n".join(lines).encode()


@dataclass
class Harness:
    """A running gateway, its App and its upstream sink."""

    app: App
    gateway: Gateway
    sink: Sink

    @property
    def host(self) -> str:
        return self.app.config.smtp.host

    def client_context(self) -> ssl.SSLContext:
        """Trusts the gateway's generated certificate, and nothing else."""
        return ssl.create_default_context(cafile=str(self.gateway.certificate.cert_file))

    def web_client(self) -> aiohttp.ClientSession:
        """An HTTPS client of the gateway's web front, trusting its generated certificate."""
        return https_client(f"https://localhost:{self.gateway.http_port}", self.client_context())

    def connect(self, *, tls: bool = True, login: str | None = STAFF,
                password: str = PASSWORD, port: int | None = None) -> smtplib.SMTP:
        """An smtplib client on the submission port (or `port`: a load balancer's in front of
        it, say): EHLO, STARTTLS, EHLO, AUTH as asked."""
        client = smtplib.SMTP(self.host, port or self.gateway.smtp_port, timeout=CLIENT_TIMEOUT,
                              local_hostname="client.test")
        try:
            client.ehlo()
            if tls:
                client.starttls(context=self.client_context())
                client.ehlo()
            if login is not None:
                # One AUTH PLAIN exchange: smtplib's login() would retry with each mechanism.
                client.user, client.password = login, password
                client.auth("PLAIN", client.auth_plain)
        except BaseException:
            client.close()
            raise
        return client

    def connect_implicit(self, *, login: str | None = STAFF) -> smtplib.SMTP_SSL:
        """An smtplib client on the implicit-TLS port."""
        assert self.gateway.tls_port is not None
        client = smtplib.SMTP_SSL(self.host, self.gateway.tls_port, timeout=CLIENT_TIMEOUT,
                                  local_hostname="client.test", context=self.client_context())
        try:
            client.ehlo()
            if login is not None:
                client.login(login, PASSWORD)
        except BaseException:
            client.close()
            raise
        return client

    def send(self, sender: str, recipients: Sequence[str], data: bytes,
             **connect: Any) -> dict[str, tuple[int, bytes]]:
        """Submit one message; returns smtplib's refused-recipients map, raises on refusal."""
        with self.connect(**connect) as client:
            return client.sendmail(sender, list(recipients), data)

    def send_raw_data(self, sender: str, recipients: Sequence[str],
                      wire: bytes) -> tuple[int, bytes]:
        """MAIL, RCPT, DATA, then `wire` exactly as given (it must end the data itself)."""
        with self.connect() as client:
            assert client.mail(sender)[0] == 250
            for rcpt in recipients:
                assert client.rcpt(rcpt)[0] == 250
            assert client.docmd("DATA")[0] == 354
            client.send(wire)
            return client.getreply()

    def verify(self, address: str, case_number: str | None = None) -> None:
        """Record `address` as verified (for a case, or organisation-wide)."""
        self.app.registry.add(address, case_number=case_number, role=Role.PROFESSIONAL,
                              verified_by=STAFF, now=datetime.now(UTC))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking client call in a worker thread while the gateway serves."""
        return await asyncio.to_thread(fn, *args, **kwargs)


def write_config(path: Path, sink: Sink | None, extra_config: str = "", *,
                 metrics: dict[str, Any] | None = None, organisation: str | None = None,
                 upstream: dict[str, Any] | None = None, http: dict[str, Any] | None = None,
                 **smtp: Any) -> Path:
    """A config file: every port 0, the sink as upstream (plain SMTP on loopback); `metrics`
    adds keys to the [metrics] section, `upstream` to the [upstream] one, `http` to the [http]
    one, `organisation` names the agency, then `extra_config` (TOML sections of the test's
    own)."""
    settings = {"port": 0, "tls_port": 0, "auth_failure_delay": 0.01, **smtp}
    lines = [f"organisation = {_toml(organisation)}"] if organisation is not None else []
    lines += ["[smtp]"] + [f"{key} = {_toml(value)}" for key, value in settings.items()]
    lines += ["[http]", "port = 0"]
    lines += [f"{key} = {_toml(value)}" for key, value in (http or {}).items()]
    lines += ["[metrics]", "port = 0"]
    lines += [f"{key} = {_toml(value)}" for key, value in (metrics or {}).items()]
    if sink is not None:
        lines += ["[upstream]", f'host = "{sink.host}"', f"port = {sink.port}", 'tls = "none"']
        lines += [f"{key} = {_toml(value)}"
                  for key, value in {"timeout": 5.0, **(upstream or {})}.items()]
    path.write_text("\n".join(lines) + "\n" + extra_config, encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return repr(value)


@asynccontextmanager
async def running_gateway(tmp_path: Path, sink: Sink | None, *, implicit_tls: bool = False,
                          encrypted: Transport | None = None, extra_config: str = "",
                          metrics: dict[str, Any] | None = None,
                          upstream: dict[str, Any] | None = None,
                          organisation: str | None = None,
                          http: dict[str, Any] | None = None,
                          **smtp: Any) -> AsyncIterator[Harness]:
    """Start the gateway (with staff accounts, one of them in governance too) and stop it,
    and its stores, at the end."""
    config = write_config(tmp_path / "casegate.toml", sink, extra_config, metrics=metrics,
                          upstream=upstream, organisation=organisation, http=http, **smtp)
    app = App.open(config, tmp_path / "data")
    try:
        app.users.add(STAFF, PASSWORD, send_as=(SEND_AS,))
        app.users.add(OTHER_STAFF, PASSWORD)
        app.users.add(GOVERNANCE, PASSWORD, roles=(UserRole.STAFF, UserRole.GOVERNANCE))
        gateway = await start_gateway(app, encrypted=encrypted,
                                      implicit_tls_port=0 if implicit_tls else None)
        try:
            yield Harness(app=app, gateway=gateway, sink=sink or Sink())
        finally:
            await gateway.stop(drain_seconds=5)
    finally:
        app.close()
