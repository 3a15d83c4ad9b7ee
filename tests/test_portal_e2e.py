"""End to end: protected mail submitted by SMTP reaches a non-secure address only by the portal."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import aiohttp
import pytest

from gateway.audit.store import EventFilter
from tests.gateway_harness import PASSWORD, STAFF, Harness, running_gateway
from tests.https import https_client
from tests.portalweb import ATTACHMENT, SECRET_BODY, protected_message, text_of
from tests.sink import Sink, Step
from tests.staffweb import hidden

CASE = "FD24P01234"
MUM = "mum@example.org"
COLLEAGUE = "colleague@cafcass.gov.uk"
LINK = re.compile(r"https://[^\s]+(/portal/[A-Za-z0-9_\-]+)")
CODE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        harness.verify(MUM, CASE)
        yield harness


def _client(gw: Harness) -> aiohttp.ClientSession:
    return https_client(f"https://localhost:{gw.gateway.http_port}", gw.client_context())


async def _submit(gw: Harness, recipients: list[str]) -> str:
    """Submit the protected message by SMTP; returns the portal path in mum's notification."""
    data = protected_message(to=", ".join(recipients))
    assert await gw.run(gw.send, STAFF, recipients, data) == {}
    (notice,) = [m for m in gw.sink.messages if m.rcpt_tos == (MUM,)]
    found = LINK.search(text_of(notice))
    assert found
    return found.group(1)


async def _sign_in(gw: Harness, client: aiohttp.ClientSession, path: str) -> None:
    async with client.get(path) as page:
        csrf = hidden(await page.text(), "csrf_token")
    async with client.post(f"{path}/code", data={"csrf_token": csrf}, allow_redirects=False):
        pass
    found = CODE.search(text_of(gw.sink.messages[-1]))
    assert found and gw.sink.messages[-1].rcpt_tos == (MUM,)
    async with client.post(f"{path}/verify", data={"csrf_token": csrf, "code": found.group(1)},
                           allow_redirects=False) as verified:
        assert verified.status == 303


async def test_protected_mail_goes_by_portal_and_is_read_downloaded_and_answered(
        gw: Harness) -> None:
    """The sink sees only a notification for mum; she reads, downloads and replies."""
    path = await _submit(gw, [MUM, COLLEAGUE])
    internal = [m for m in gw.sink.messages if m.rcpt_tos == (COLLEAGUE,)]
    assert len(internal) == 1 and b"SECRET-BODY-MARKER" in internal[0].data
    (notice,) = [m for m in gw.sink.messages if MUM in m.rcpt_tos]
    assert b"SECRET-BODY-MARKER" not in notice.data and b"Poppy" not in notice.data
    assert base64.b64encode(ATTACHMENT)[:40] not in notice.data
    assert b"ATTACHMENT-MARKER" not in notice.data
    async with _client(gw) as client:
        await _sign_in(gw, client, path)
        async with client.get(path) as page:
            html = await page.text()
            assert SECRET_BODY in html
        start = html.index(f'href="{path}/attachments/') + len('href="')
        async with client.get(html[start:html.index('"', start)]) as download:
            assert await download.read() == ATTACHMENT
        form = aiohttp.FormData()
        form.add_field("csrf_token", hidden(html, "csrf_token"))
        form.add_field("text", "Received, thank you.")
        form.add_field("files", b"reply file bytes", filename="note.txt",
                       content_type="text/plain")
        async with client.post(f"{path}/reply", data=form) as answer:
            assert answer.status == 200
    reply = gw.sink.messages[-1]
    assert reply.rcpt_tos == (STAFF,) and "Received, thank you." in text_of(reply)
    parsed = message_from_bytes(reply.data, policy=default_policy)
    (attached,) = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert attached.get_payload(decode=True) == b"reply file bytes"
    kinds = [e.kind for e in gw.app.audit.iterate(EventFilter())]
    assert {"portal-stored", "portal-view", "portal-download", "portal-reply"} <= set(kinds)
    metrics = gw.gateway.stages.metrics  # the opens counted by what they showed
    assert metrics.value("casegate_portal_views_total", outcome="landing") == 1
    assert metrics.value("casegate_portal_views_total", outcome="message") == 1
    assert metrics.value("casegate_relay_outcomes_total", transport="portal",
                         outcome="delivered") == 1


async def test_sender_revokes_and_copy_expires(gw: Harness) -> None:
    """Revocation through the staff API shows withdrawn; a later copy expires after 30 days."""
    path = await _submit(gw, [MUM])
    auth = {"Authorization": "Basic " + base64.b64encode(f"{STAFF}:{PASSWORD}".encode()).decode()}
    async with _client(gw) as client:
        async with client.get("/api/messages", headers=auth) as listing:
            (message,) = (await listing.json())["messages"]
            assert message["recipient"] == MUM and message["state"] == "active"
        async with client.post(f"/api/messages/{message['id']}/revoke", headers=auth) as revoked:
            assert revoked.status == 200
        async with client.get(path) as page:
            assert page.status == 410 and "withdrew" in await page.text()
        gw.sink.messages.clear()
        later = await _submit(gw, [MUM])
        gw.gateway.stages.clock = lambda: datetime.now(UTC) + timedelta(days=31)
        async with client.get(later) as page:
            assert page.status == 410 and "expired" in await page.text()
    kinds = [e.kind for e in gw.app.audit.iterate(EventFilter())]
    assert "portal-revoke" in kinds and "portal-expiry" in kinds
    assert gw.gateway.stages.metrics.value("casegate_portal_views_total", outcome="gone") == 2


async def test_notification_refused_upstream_is_a_451_and_nothing_is_kept(gw: Harness) -> None:
    """When the upstream refuses the notification for now, the client gets 451; its retry works."""
    gw.sink.fail(Step.RCPT, "451 4.2.0 mailbox busy", times=1, recipient=MUM)
    data = protected_message(to=MUM)
    import smtplib

    with pytest.raises(smtplib.SMTPDataError) as held:
        await gw.run(gw.send, STAFF, [MUM], data)
    assert held.value.smtp_code == 451
    assert gw.app.portal is not None and gw.app.portal.list() == ()
    assert await gw.run(gw.send, STAFF, [MUM], data) == {}
    assert len(gw.app.portal.list()) == 1
