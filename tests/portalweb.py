"""The secure portal on a real TLS socket (127.0.0.1, port 0) with a real upstream sink.

`PortalWeb` opens a real App in a temporary data directory (portal store, keyring, audit log,
staff accounts), relays through `SmtpRelay` to the test's `Sink`, and serves the staff sign-in,
`/api/post` (its Basic authentication) and the portal pages with aiohttp. Its clock can be moved
forward (`advance`) to show expiry without sleeping.

    async with PortalWeb(tmp_path, sink, server_cert) as web:
        link = await web.deliver(message_bytes)       # the notification's link
        async with web.client() as client: ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType

import aiohttp
from aiohttp import web

from gateway.app import App
from gateway.config import UpstreamConfig
from gateway.printed.post import post_options
from gateway.stores.portal import PortalStore
from gateway.stores.users import UserRole
from gateway.web.pages import WebDeps
from gateway.web.portal import PortalDeps
from gateway.web.portal import install as install_portal
from gateway.web.post import PostDeps
from gateway.web.post import install as install_post
from gateway.web.staff import install as install_staff
from tests.certs import ServerCert
from tests.https import https_client, serve_https
from tests.sink import Received, Sink
from transports.base import Copy
from transports.ledger import Ledger
from transports.portal import PortalDelivery, PortalSettings
from transports.smtp_relay import SmtpRelay

STAFF = "jo.smith@cafcass.gov.uk"
OTHER_STAFF = "al.jones@cafcass.gov.uk"
GOVERNANCE = "gov.lead@cafcass.gov.uk"
PASSWORD = "correct horse battery staple"
RECIPIENT = "mum@example.org"
SECRET_BODY = "The hearing about Poppy is on Tuesday. SECRET-BODY-MARKER"
ATTACHMENT = b"%PDF-1.4\n% report bytes ATTACHMENT-MARKER\n" + bytes(range(256)) * 20
LINK = re.compile(r"https://[^\s]+/portal/([A-Za-z0-9_\-]+)")
CODE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)


def protected_message(sender: str = STAFF, to: str = RECIPIENT,
                      html: str | None = None) -> bytes:
    """A message with a case number in the subject, a text (and HTML) body and a PDF."""
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = f"Jo Smith <{sender}>"
    mail["To"] = to
    mail["Subject"] = "Poppy Example FD24P01234 report"
    mail["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    mail["Message-ID"] = "<portal-test@cafcass.gov.uk>"
    mail["X-Casegate-Decision"] = "d" * 32
    mail.set_content(SECRET_BODY)
    if html is not None:
        mail.add_alternative(html, subtype="html")
    mail.add_attachment(ATTACHMENT, maintype="application", subtype="pdf",
                        filename="Court report – Poppy.pdf")
    return mail.as_bytes()


def text_of(received: Received) -> str:
    """The decoded text body of a message the sink received."""
    message = message_from_bytes(received.data, policy=default_policy)
    body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    assert body is not None
    return str(body.get_content())


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class PortalWeb:
    data_dir: Path
    sink: Sink
    cert: ServerCert
    clock: Clock = field(default_factory=Clock)
    app: App = field(init=False)
    delivery: PortalDelivery = field(init=False)
    deps: PortalDeps = field(init=False)
    base: str = field(init=False, default="")
    _runner: web.AppRunner | None = field(init=False, default=None)

    @property
    def store(self) -> PortalStore:
        assert self.app.portal is not None
        return self.app.portal

    async def __aenter__(self) -> PortalWeb:
        self.app = App.open(None, self.data_dir)
        users = self.app.users
        users.add(STAFF, PASSWORD)
        users.add(OTHER_STAFF, PASSWORD)
        users.add(GOVERNANCE, PASSWORD, roles=(UserRole.STAFF, UserRole.GOVERNANCE))
        upstream = SmtpRelay(UpstreamConfig(host=self.sink.host, port=self.sink.port,
                                            tls="none", timeout=5.0),
                             Ledger(self.app.database, "ledger.sqlite3"))
        assert self.app.keyring is not None
        self.delivery = PortalDelivery(
            store=self.store, keyring=self.app.keyring, upstream=upstream,
            links=lambda token: f"{self.base}/portal/{token}",
            settings=PortalSettings(from_address="casegate@cafcass.gov.uk"),
            clock=self.clock, audit=self.app.audit.record_async)
        self.deps = PortalDeps(store=self.store, keyring=self.app.keyring, upstream=upstream,
                               audit=self.app.audit, settings=self.delivery.settings,
                               clock=self.clock, delivery=self.delivery)
        web_app = web.Application()
        install_staff(web_app, WebDeps(audit=self.app.audit, users=users,
                                       database=self.app.database))
        install_post(web_app, PostDeps(options=post_options(self.app), audit=self.app.audit,
                                       users=users, offices=self.app.offices))
        install_portal(web_app, self.deps)
        self._runner, self.base = await serve_https(web_app, self.cert)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.delivery.upstream.close()
        self.app.close()

    def client(self) -> aiohttp.ClientSession:
        """An HTTPS client trusting the test CA, keeping cookies, not following redirects."""
        return https_client(self.base, self.cert.client_context())

    async def deliver(self, data: bytes, recipient: str = RECIPIENT, key: str = "k1") -> str:
        """Deliver one copy to the portal; returns the link token from the notification."""
        before = len(self.sink.messages)
        result = await self.delivery.deliver([Copy(key=key, mail_from=STAFF,
                                                   recipients=(recipient,), data=data)])
        assert result.ok, result
        return self.link_in(self.sink.messages[before])

    @staticmethod
    def link_in(received: Received) -> str:
        found = LINK.search(text_of(received))
        assert found, "no portal link in the notification"
        return found.group(1)

    def last_code(self) -> str:
        """The code in the newest code email the sink caught."""
        found = CODE.search(text_of(self.sink.messages[-1]))
        assert found, "no code in the last email"
        return found.group(1)

    async def request_code(self, client: aiohttp.ClientSession, token: str) -> str:
        """Open the link and ask for a code (the sink catches it); returns the CSRF token."""
        async with client.get(f"/portal/{token}") as page:
            csrf = hidden(await page.text(), "csrf_token")
        async with client.post(f"/portal/{token}/code", data={"csrf_token": csrf},
                               allow_redirects=False) as sent:
            assert sent.status == 303
        return csrf

    async def sign_in(self, client: aiohttp.ClientSession, token: str) -> None:
        """Open the link, ask for a code, enter the code the sink caught."""
        csrf = await self.request_code(client, token)
        async with client.post(f"/portal/{token}/verify",
                               data={"csrf_token": csrf, "code": self.last_code()},
                               allow_redirects=False) as verified:
            assert verified.status == 303, await verified.text()


def hidden(page: str, name: str) -> str:
    """The value of the hidden input `name` in an HTML page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden field {name}"
    return found.group(1)
