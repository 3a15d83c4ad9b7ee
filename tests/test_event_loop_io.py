"""Nothing synchronous that touches the disk runs on the event loop while the gateway serves.

The real gateway (SMTP, the HTTPS front, the alerter, the portal sweeper) runs in the test's
loop with a real aiosmtpd sink upstream and a DNS stub; every client runs in a worker thread
(smtplib there, aiohttp on a loop of its own), so the only work on the loop's thread is the
gateway's (and its test peers', which touch no disk). While it serves an ordinary message, a
refusal and its alert, a message for the portal and its opening, download and reply, a staff
sign-in with the governance view, the postal decision, and verifications asked by email and by
the API and answered on the link's page, `tests.loopio` notes every SQLite statement and every
file opened on the loop's thread. Start-up and shutdown are outside the window.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from tests import loopio
from tests.dnsstub import DnsStub
from tests.gateway_harness import GOVERNANCE, PASSWORD, STAFF, Harness, message, running_gateway
from tests.https import https_client
from tests.portalweb import protected_message, text_of
from tests.sink import Sink
from tests.staffweb import hidden
from tests.verifykit import (
    RECIPIENT,
    RECIPIENT_NAME,
    Inbox,
    code_in,
    config_text,
    serve_example_domains,
    token_in,
    watch,
)

T = TypeVar("T")

CASE = "FD24P01234"
MUM = "mum@example.org"
COLLEAGUE = "colleague@cafcass.gov.uk"
ALERTS_TO = "governance@cafcass.gov.uk"
VERIFY = "verify@casegate.localhost"
DECLINER = "john.doe@example.org"
PORTAL_LINK = re.compile(r"https://[^\s]+(/portal/[A-Za-z0-9_\-]+)")
PORTAL_CODE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)
BASIC = {"Authorization": aiohttp.encode_basic_auth(STAFF, PASSWORD)}


async def elsewhere(conversation: Callable[[], Awaitable[T]]) -> T:
    """Run an HTTP client conversation on an event loop of its own, in a worker thread."""
    return await asyncio.to_thread(lambda: asyncio.run(conversation()))  # type: ignore[arg-type]


def web(gw: Harness) -> aiohttp.ClientSession:
    return https_client(f"https://localhost:{gw.gateway.http_port}", gw.client_context())


async def sign_in(client: aiohttp.ClientSession, address: str) -> None:
    async with client.get("/login") as form:
        token = hidden(await form.text(), "signin_token")
    async with client.post("/login", allow_redirects=False, data={
            "address": address, "password": PASSWORD, "signin_token": token,
            "next": "/governance"}) as answer:
        assert answer.status == 303


async def get_ok(client: aiohttp.ClientSession, path: str, **kwargs: object) -> str:
    async with client.get(path, **kwargs) as page:  # type: ignore[arg-type]
        text = await page.text()
        assert page.status == 200, (path, page.status)
        return text


async def staff_pages(gw: Harness) -> None:
    """A wrong password, then sign-in, home, governance (list, one event, export), the postal
    form and API, the verification list, the stylesheet, health, sign-out; the portal's staff
    API, and a copy withdrawn through it."""
    async with web(gw) as client:
        async with client.get("/login") as form:
            token = hidden(await form.text(), "signin_token")
        async with client.post("/login", data={"address": GOVERNANCE, "password": "wrong",
                                               "signin_token": token}) as refused:
            assert refused.status == 401
        await sign_in(client, GOVERNANCE)
        await get_ok(client, "/home")
        assert "Audit trail" in await get_ok(client, "/governance")
        await get_ok(client, "/governance/events/1")
        async with client.get("/governance/export.csv") as export:
            assert export.status == 200 and await export.read()
        csrf = hidden(await get_ok(client, "/post"), "csrf_token")
        async with client.post("/post", data={"csrf_token": csrf,
                                              "item": "welcome-pack"}) as page:
            assert page.status == 200
        await get_ok(client, "/verifications")
        await get_ok(client, "/static/casegate.css")
        await get_ok(client, "/readyz")
        async with client.post("/logout", data={"csrf_token": csrf},
                               allow_redirects=False) as out:
            assert out.status == 303
    async with web(gw) as client:
        async with client.post("/api/post", headers=BASIC,
                               json={"item": "agency-check-result"}) as answer:
            assert answer.status == 200
        wrong = {"Authorization": aiohttp.encode_basic_auth(STAFF, "wrong")}
        async with client.post("/api/post", headers=wrong, json={}) as answer:
            assert answer.status == 401
        async with client.get("/api/messages", headers=BASIC) as listing:
            (copy,) = (await listing.json())["messages"]
        async with client.post(f"/api/messages/{copy['id']}/revoke", headers=BASIC) as revoked:
            assert revoked.status == 200


async def open_portal(gw: Harness, path: str) -> None:
    """Ask for a code, enter it, read the message, download its attachment, reply."""
    async with web(gw) as client:
        csrf = hidden(await get_ok(client, path), "csrf_token")
        async with client.post(f"{path}/code", data={"csrf_token": csrf},
                               allow_redirects=False) as sent:
            assert sent.status == 303
        found = PORTAL_CODE.search(text_of(gw.sink.messages[-1]))
        assert found
        async with client.post(f"{path}/verify", data={"csrf_token": csrf,
                                                       "code": found.group(1)},
                               allow_redirects=False) as verified:
            assert verified.status == 303
        html = await get_ok(client, path)
        start = html.index(f'href="{path}/attachments/') + len('href="')
        async with client.get(html[start:html.index('"', start)]) as download:
            assert download.status == 200 and await download.read()
        form = aiohttp.FormData()
        form.add_field("csrf_token", hidden(html, "csrf_token"))
        form.add_field("text", "Received, thank you.")
        form.add_field("files", b"reply file bytes", filename="note.txt",
                       content_type="text/plain")
        async with client.post(f"{path}/reply", data=form) as answer:
            assert answer.status == 200


async def open_withdrawn(gw: Harness, path: str) -> None:
    async with web(gw) as client, client.get(path) as page:
        assert page.status == 410


async def answer_link(gw: Harness, token: str, **fields: str) -> None:
    """Open the verification link's page and post the answer."""
    async with web(gw) as client:
        csrf = hidden(await get_ok(client, f"/v/{token}"), "csrf_token")
        async with client.post(f"/v/{token}", data={"csrf_token": csrf, **fields}) as page:
            assert page.status == 200


async def ask_by_api(gw: Harness, address: str) -> None:
    async with web(gw) as client:
        async with client.post("/api/verify", headers=BASIC, json={
                "address": address, "case": CASE, "name": "John Doe",
                "role": "party"}) as answer:
            assert answer.status == 200, await answer.text()


async def serve_everything(gw: Harness, inbox: Inbox) -> None:
    """Every kind of request the gateway serves, each checked to have worked."""
    # An ordinary message; then a refusal, whose alert goes to governance at once.
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], message()) == {}
    refused = "jo.smith@gmail.com"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await gw.run(gw.send, STAFF, [refused], message(to=[refused]))
    await inbox.wait_for(ALERTS_TO)
    # A message for the portal, then its opening.
    data = protected_message(to=f"{MUM}, {COLLEAGUE}")
    assert await gw.run(gw.send, STAFF, [MUM, COLLEAGUE], data) == {}
    notice = (await inbox.wait_for(MUM))[0]
    found = PORTAL_LINK.search(text_of(notice))
    assert found
    await elsewhere(lambda: open_portal(gw, found.group(1)))
    await inbox.wait_for(STAFF)  # the secure reply
    # Staff pages, the postal decision; the copy withdrawn, then its link opened.
    await elsewhere(lambda: staff_pages(gw))
    await elsewhere(lambda: open_withdrawn(gw, found.group(1)))
    # A verification asked by email (verify@) and confirmed on the link's page.
    body = f"Address: {RECIPIENT}\r\nName: {RECIPIENT_NAME}\r\nRole: party\r\nCase: {CASE}"
    assert await gw.run(gw.send, STAFF, [VERIFY], message(to=(VERIFY,), body=body)) == {}
    token = token_in((await inbox.wait_for(RECIPIENT))[0])
    code = code_in(text_of((await inbox.wait_for(STAFF, 2))[1]))
    await elsewhere(lambda: answer_link(gw, token, answer="confirm", code=code,
                                        name=RECIPIENT_NAME))
    await inbox.wait_for(STAFF, 3)  # "now verified"
    # A verification asked over the API and declined: governance hears of it.
    await elsewhere(lambda: ask_by_api(gw, DECLINER))
    token = token_in((await inbox.wait_for(DECLINER))[0])
    await elsewhere(lambda: answer_link(gw, token, answer="decline"))
    await inbox.wait_for(ALERTS_TO, 2)


async def test_serving_touches_no_disk_on_the_event_loop(tmp_path: Path) -> None:
    """No SQLite statement and no file open on the loop's thread while requests are served."""
    async with Sink() as sink, DnsStub() as stub:
        serve_example_domains(stub)
        extra = "\n".join(config_text(sink, stub, governance=ALERTS_TO)) + "\n"
        with loopio.arming():
            async with running_gateway(tmp_path, sink, extra_config=extra) as gw:
                gw.verify(MUM, CASE)
                inbox = watch(sink)
                with loopio.watching() as seen:
                    await serve_everything(gw, inbox)
    assert not seen, loopio.report(seen)


async def test_the_outbox_touches_no_disk_on_the_event_loop(tmp_path: Path) -> None:
    """With no upstream, messages are filed in the outbox Maildir, off the loop's thread."""
    with loopio.arming():
        async with running_gateway(tmp_path, None) as gw:
            with loopio.watching() as seen:
                for subject in ("First", "Second"):
                    data = message(subject=subject)
                    assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
            filed = list((gw.app.data_dir / "outbox" / "new").iterdir())
    assert not seen, loopio.report(seen)
    assert len(filed) == 2


async def test_the_detector_sees_disk_work_on_the_loop_and_not_in_threads(
        tmp_path: Path) -> None:
    """A statement and a file read on the loop are noted; the same in a worker thread are not."""
    with loopio.arming():
        db = sqlite3.connect(tmp_path / "x.sqlite3", check_same_thread=False)
        try:
            with loopio.watching() as seen:
                await asyncio.to_thread(db.execute, "SELECT 1")
                await asyncio.to_thread((tmp_path / "x.sqlite3").read_bytes)
                assert seen == []
                db.execute("SELECT 2")
                (tmp_path / "x.sqlite3").read_bytes()
        finally:
            db.close()
    assert [(t.what, t.detail) for t in seen] == [
        ("sqlite", "SELECT 2"), ("open", str(tmp_path / "x.sqlite3"))]
    assert seen[0].where().startswith("tests/test_event_loop_io.py:")


async def test_the_detector_sees_the_loop_wait_for_another_thread_s_disk_work(
        tmp_path: Path) -> None:
    """A statement run by another thread while the loop's thread blocks on its result is
    noted, with the loop's stack; the same awaited instead is not."""
    with loopio.arming():
        db = sqlite3.connect(tmp_path / "x.sqlite3", check_same_thread=False)
        try:
            with ThreadPoolExecutor(1) as pool, loopio.watching() as seen:
                await asyncio.wrap_future(pool.submit(db.execute, "SELECT 1"))
                assert seen == []
                pool.submit(db.execute, "SELECT 2").result()
        finally:
            db.close()
    assert [(t.what, t.detail) for t in seen] == [("waited for sqlite", "SELECT 2")]
    assert any("test_the_detector_sees_the_loop_wait" in frame for frame in seen[0].stack)
