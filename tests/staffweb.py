"""The staff web pages on a real TLS socket (127.0.0.1, port 0) for the web tests.

`StaffWeb` runs an aiohttp application with the login and governance pages, a real AuditLog in a
temporary data directory and a real UserStore (and session store) on `database` (SQLite files in
the data directory when none is given), and makes HTTPS clients that trust the test CA. Two of
them on one PostgreSQL database are two nodes.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp
from aiohttp import web

from gateway.app import read_policy
from gateway.audit.trail import AuditLog
from gateway.config import Config
from gateway.stores.users import UserRole, UserStore
from gateway.web.pages import WebDeps
from gateway.web.staff import install
from tests.certs import ServerCert
from tests.https import https_client, serve_https
from transports.database import Database

PASSWORD = "correct horse battery"
GOVERNANCE = "gov.lead@cafcass.gov.uk"
PRACTITIONER = "jo.bloggs@cafcass.gov.uk"
POLICY = read_policy(Config(), Path("."))  # the real policy data: rules, citations, grades


@dataclass
class StaffWeb:
    data_dir: Path
    cert: ServerCert
    database: Database | None = None
    audit: AuditLog = field(init=False)
    users: UserStore = field(init=False)
    base: str = field(init=False, default="")
    _runner: web.AppRunner | None = field(init=False, default=None)

    async def __aenter__(self) -> StaffWeb:
        self.audit = AuditLog.open(Database.open(self.data_dir), rules=POLICY.rules,
                                   kind_grades=POLICY.grades, stream=io.StringIO())
        database = self.database or Database.open(self.data_dir)
        self.users = UserStore(database)
        if self.users.get(GOVERNANCE) is None:  # a second node finds the accounts made
            self.users.add(GOVERNANCE, PASSWORD, roles=(UserRole.STAFF, UserRole.GOVERNANCE))
            self.users.add(PRACTITIONER, PASSWORD, roles=(UserRole.STAFF,))
        app = web.Application()
        install(app, WebDeps(audit=self.audit, users=self.users, database=database))
        self._runner, self.base = await serve_https(app, self.cert)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.users.close()
        self.audit.close()

    def client(self) -> aiohttp.ClientSession:
        """An HTTPS client trusting the test CA, keeping cookies, not following redirects."""
        return https_client(self.base, self.cert.client_context())

    async def sign_in(
        self, client: aiohttp.ClientSession, address: str, password: str = PASSWORD
    ) -> aiohttp.ClientResponse:
        """Load the form, post it with its token; returns the (unfollowed) answer."""
        async with client.get("/login") as form:
            token = hidden(await form.text(), "signin_token")
        async with client.post(
            "/login",
            data={"address": address, "password": password, "signin_token": token,
                  "next": "/governance"},
            allow_redirects=False,
        ) as answer:
            await answer.read()
            return answer


def hidden(page: str, name: str) -> str:
    """The value of the hidden input `name` in an HTML page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden field {name}"
    return found.group(1)
