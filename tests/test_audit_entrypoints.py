"""Every entry point of the running gateway writes its audit events, and the chain holds.

The real gateway (SMTP submission, the HTTPS front with the staff pages, the alerter) runs in the
test's loop with a real aiosmtpd sink as its upstream; the checks read the real audit file.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.app import App
from gateway.audit.alerts import ALERTS
from gateway.audit.trail import EventFilter
from gateway.cli import main
from gateway.runtime.server import Gateway, start_gateway
from tests.gateway_harness import OTHER_STAFF, PASSWORD, STAFF, Harness, message, write_config
from tests.https import https_client
from tests.sink import Sink

GOVERNANCE_BOX = "governance@cafcass.gov.uk"
GOVERNANCE_USER = "gov.lead@cafcass.gov.uk"


@dataclass
class Running:
    harness: Harness
    gateway: Gateway

    @property
    def app(self) -> App:
        return self.harness.app

    def kinds(self) -> list[str]:
        return [e.kind for e in self.app.audit.iterate(EventFilter())]

    def web(self) -> aiohttp.ClientSession:
        """An HTTPS client that trusts the gateway's own certificate."""
        context = ssl.create_default_context(cafile=str(self.gateway.certificate.cert_file))
        return https_client(f"https://localhost:{self.gateway.http_port}", context)


@pytest.fixture
async def running(tmp_path: Path, sink: Sink) -> AsyncIterator[Running]:
    """The gateway with alerts to the governance mailbox, relaying into the sink."""
    config = write_config(tmp_path / "casegate.toml", sink, hostname="localhost",
                          auth_max_failures=10)
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f'[audit]\ngovernance_address = "{GOVERNANCE_BOX}"\n')
    app = App.open(config, tmp_path / "data")
    try:
        app.users.add(STAFF, PASSWORD)
        app.users.add(OTHER_STAFF, PASSWORD)
        from gateway.stores.users import UserRole

        app.users.add(GOVERNANCE_USER, PASSWORD, roles=(UserRole.GOVERNANCE,))
        gateway = await start_gateway(app)
        try:
            yield Running(Harness(app=app, gateway=gateway, sink=sink), gateway)
        finally:
            await gateway.stop(drain_seconds=5)
    finally:
        app.close()


async def sign_in(client: aiohttp.ClientSession, address: str, password: str) -> int:
    async with client.get("/login") as form:
        page = await form.text()
    token = page.split('name="signin_token" value="', 1)[1].split('"', 1)[0]
    async with client.post("/login", allow_redirects=False, data={
        "address": address, "password": password, "signin_token": token,
    }) as answer:
        return answer.status


async def test_smtp_entry_points_write_their_events(running: Running, sink: Sink) -> None:
    """AUTH failure, RCPT refusal, a delivered message: each is an event with its grade."""
    harness = running.harness

    def wrong_password() -> None:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            harness.connect(password="not the password")

    await harness.run(wrong_password)
    refused = "jo.smith@gmail.com"  # the sender's own name at a freemail domain
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await harness.run(harness.send, STAFF, [refused], message(to=[refused]))
    await harness.run(harness.send, STAFF, ["colleague@cafcass.gov.uk"], message())

    kinds = running.kinds()
    for kind in ("auth-failure", "refusal", "decision", "relay"):
        assert kind in kinds, kind
    refusal = running.app.audit.page(EventFilter(kind="refusal"))[0]
    assert refusal.rule == "personal-address" and refusal.grade == "high"
    assert refusal.recipients == (refused,) and refusal.citation
    auth = running.app.audit.page(EventFilter(kind="auth-failure"))[0]
    assert auth.grade == running.app.policy.grades["auth-failure"]

    assert running.gateway.web_app is not None
    handle = running.gateway.web_app[ALERTS]
    assert handle.alerter is not None
    await asyncio.wait_for(handle.alerter.wait_alerted(refusal.seq), timeout=10)
    alerts = [m for m in sink.messages if m.rcpt_tos == (GOVERNANCE_BOX,)]
    assert len(alerts) == 1 and refused.encode() in alerts[0].data


async def test_web_entry_points_write_their_events(running: Running) -> None:
    """Staff sign-in failures and successes are events; other staff get 403 on governance."""
    async with running.web() as client:
        assert await sign_in(client, OTHER_STAFF, "wrong password!") == 401
        assert await sign_in(client, OTHER_STAFF, PASSWORD) == 303
        async with client.get("/governance") as page:
            assert page.status == 403
    async with running.web() as client:
        assert await sign_in(client, GOVERNANCE_USER, PASSWORD) == 303
        async with client.get("/governance") as page:
            assert page.status == 200
            assert "Audit trail" in await page.text()
        async with client.get("/governance/export.csv") as export:
            assert export.status == 200
            await export.read()
    kinds = running.kinds()
    for kind in ("login-failure", "login", "audit-export"):
        assert kind in kinds, kind


async def test_the_chain_verifies_after_every_entry_point(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    """`casegate audit verify` on the gateway's own data directory exits 0."""
    harness = running.harness
    await harness.run(harness.send, STAFF, ["colleague@cafcass.gov.uk"], message())
    async with running.web() as client:
        await sign_in(client, OTHER_STAFF, "wrong password!")
    assert main(["audit", "verify", "--data", str(running.app.data_dir)]) == 0
    assert "intact" in capsys.readouterr().out
