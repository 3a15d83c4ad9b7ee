"""Portal, staff and verification pages against forged and cross-site requests (SECURITY.md 13).

Real HTTPS on 127.0.0.1 port 0 with a certificate made in the test, a real upstream sink, the
real App. What is proved here and not elsewhere: every browser form refuses a missing CSRF
token and changes nothing; the staff APIs refuse a browser request another site caused (cached
Basic credentials); a second recipient of the same message cannot open the first's copy or its
attachments; the verification page's cookie is `__Host-`, Secure, HttpOnly, SameSite=Strict.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from gateway.audit.store import EventFilter
from tests.certs import ServerCert
from tests.gateway_harness import PASSWORD as GATEWAY_PASSWORD
from tests.gateway_harness import STAFF as GATEWAY_STAFF
from tests.gateway_harness import running_gateway
from tests.portalweb import (
    PASSWORD,
    RECIPIENT,
    SECRET_BODY,
    STAFF,
    PortalWeb,
    hidden,
    protected_message,
)
from tests.sink import Sink
from tests.test_verify_e2e import ask_api, running
from tests.verifykit import token_in

SECOND = "dad@example.net"
COOKIE = "__Host-casegate-portal"


def _basic(address: str) -> dict[str, str]:
    token = base64.b64encode(f"{address}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
async def portal(tmp_path: Path, sink: Sink, server_cert: ServerCert) -> AsyncIterator[PortalWeb]:
    async with PortalWeb(tmp_path / "data", sink, server_cert) as running_portal:
        yield running_portal


def _attachment_path(page: str) -> str:
    start = page.index('href="/portal/') + len('href="')
    return page[start:page.index('"', start)]


async def test_second_recipient_cannot_open_the_first_recipients_copy(portal: PortalWeb) -> None:
    """Two copies of one split message: each session reads only its own copy and attachment."""
    data = protected_message(to=f"{RECIPIENT}, {SECOND}")
    mine = await portal.deliver(data, key="split-1")
    theirs = await portal.deliver(data, recipient=SECOND, key="split-2")
    async with portal.client() as mum, portal.client() as dad:
        await portal.sign_in(mum, mine)
        async with mum.get(f"/portal/{mine}") as page:
            mums_file = _attachment_path(await page.text())
        await portal.sign_in(dad, theirs)
        async with dad.get(f"/portal/{mine}") as crossed:
            assert SECRET_BODY not in await crossed.text()
        async with dad.get(mums_file) as stolen:
            assert stolen.status in (403, 404)
            assert b"ATTACHMENT-MARKER" not in await stolen.read()
        async with dad.get(f"/portal/{theirs}/attachments/{mums_file.rsplit('/', 1)[1]}") as via:
            assert via.status in (403, 404)
        async with mum.get(mums_file) as own:
            assert own.status == 200 and b"ATTACHMENT-MARKER" in await own.read()
    codes = [m.rcpt_tos for m in portal.sink.messages if m.mail_from == "casegate@cafcass.gov.uk"]
    assert sorted(codes) == [(SECOND,), (RECIPIENT,)]


async def test_portal_forms_refuse_a_missing_csrf_token(portal: PortalWeb) -> None:
    """Code entry, reply and sign-out without the token are 403 and change nothing."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        csrf = await portal.request_code(client, token)
        code = portal.last_code()
        async with client.post(f"/portal/{token}/verify", data={"code": code},
                               allow_redirects=False) as forged:
            assert forged.status == 403
        async with client.post(f"/portal/{token}/verify",
                               data={"csrf_token": csrf, "code": code},
                               allow_redirects=False) as real:
            assert real.status == 303  # the forged try neither used nor burnt the code
        form = aiohttp.FormData()
        form.add_field("text", "forged")
        form.add_field("file", b"x", filename="a.txt", content_type="text/plain")
        async with client.post(f"/portal/{token}/reply", data=form) as reply:
            assert reply.status == 403
        session = client.cookie_jar.filter_cookies(URL(portal.base))[COOKIE].value
        async with client.post(f"/portal/{token}/signout", data={},
                               allow_redirects=False) as out:
            assert out.status in (303, 403)
    async with portal.client() as same_browser:
        same_browser.cookie_jar.update_cookies({COOKIE: session}, URL(portal.base))
        async with same_browser.get(f"/portal/{token}") as page:
            assert SECRET_BODY in await page.text()  # the server session was not ended
    assert all(m.rcpt_tos != (STAFF,) for m in portal.sink.messages)  # no reply went


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"text=hello"),
    ("multipart/form-data", b"--x\r\n\r\nhello"),  # no boundary parameter
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n"),
    ("multipart/form-data; boundary=x", b"\x00\xff" * 100),
    ("text/plain", b"text=hello"),
])
async def test_hostile_reply_bodies_are_refused_without_a_server_error(
        portal: PortalWeb, content_type: str, body: bytes) -> None:
    """A signed-in session posting a body that is not the reply form gets a 4xx; nothing goes."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.post(f"/portal/{token}/reply", data=body,
                               headers={"Content-Type": content_type}) as answer:
            assert 400 <= answer.status < 500
            assert "Traceback" not in await answer.text()
    assert all(m.rcpt_tos != (STAFF,) for m in portal.sink.messages)


async def test_staff_post_form_refuses_a_missing_csrf_token(portal: PortalWeb) -> None:
    """A signed-in member of staff's post form without the token is 403 and records nothing."""
    async with portal.client() as client:
        async with client.get("/login") as form:
            signin = hidden(await form.text(), "signin_token")
        async with client.post("/login", data={"address": STAFF, "password": PASSWORD,
                                               "signin_token": signin, "next": "/post"},
                               allow_redirects=False) as signed_in:
            assert signed_in.status == 303
        async with client.post("/post", data={"item": "welcome-pack"}) as forged:
            assert forged.status == 403
    assert list(portal.app.audit.iterate(EventFilter(kind="post-decision"))) == []


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_staff_apis_refuse_browser_requests_from_another_site(portal: PortalWeb,
                                                                    site: str) -> None:
    """Basic credentials a browser cached do not let another site revoke or ask for decisions."""
    await portal.deliver(protected_message())
    (copy,) = portal.store.list()
    forged = {**_basic(STAFF), "Sec-Fetch-Site": site}
    async with portal.client() as client:
        async with client.post(f"/api/messages/{copy.id}/revoke", headers=forged) as revoke:
            assert revoke.status == 403
        async with client.post("/api/post", headers=forged,
                               json={"item": "welcome-pack"}) as post:
            assert post.status == 403
        async with client.get(f"/api/messages/{copy.id}",
                              headers={**_basic(STAFF), "Sec-Fetch-Site": "same-origin"}) as ok:
            assert (await ok.json())["state"] == "active"
    kinds = [e.kind for e in portal.app.audit.iterate(EventFilter())]
    assert "portal-revoke" not in kinds and "post-decision" not in kinds
    assert "login-failure" not in kinds


async def test_verification_page_cookie_and_cross_site_request(tmp_path: Path) -> None:
    """The link page's CSRF cookie is __Host-, Secure, HttpOnly, Strict; a cross-site ask fails."""
    async with running(tmp_path) as gw, gw.web() as client:
        async with client.post("/api/verify", headers={"Sec-Fetch-Site": "cross-site",
                                                       **_basic_gateway()},
                               json={"address": "x@example.org", "case": "ZC12C00123",
                                     "name": "X", "role": "party"}) as forged:
            assert forged.status == 403
        assert list(gw.app.registry.requests()) == []
        status, _ = await ask_api(client)
        assert status == 200
        token = token_in((await gw.inbox.wait_for("jane.doe@example.org"))[0])
        async with client.get(f"/v/{token}") as page:
            cookie = page.cookies["__Host-casegate-verify"]
            assert cookie["secure"] and cookie["httponly"]
            assert cookie["samesite"] == "Strict" and cookie["path"] == "/"
            assert not cookie["domain"]


def _basic_gateway() -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(GATEWAY_STAFF, GATEWAY_PASSWORD)}


@pytest.mark.parametrize("guess", ["1", "2", "0", "..%2F..%2Fetc%2Fpasswd", "part-2",
                                   "NAME", "%00"])
async def test_attachments_open_only_by_their_opaque_id(portal: PortalWeb, guess: str) -> None:
    """Signed in, a part number, a file path or a name never opens an attachment."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.get(f"/portal/{token}/attachments/{guess}") as answer:
            assert answer.status in (403, 404)
            assert b"ATTACHMENT-MARKER" not in await answer.read()


async def test_forms_that_are_not_utf8_are_a_client_error(tmp_path: Path, sink: Sink) -> None:
    """Raw non-UTF-8 bytes posted to any form give a 4xx from the real gateway, never a 500."""
    paths = ["/login", "/logout", "/v/not-a-token", "/portal/not-a-token/verify",
             "/portal/not-a-token/code", "/portal/not-a-token/signout", "/post"]
    async with running_gateway(tmp_path, sink) as gw:
        port = gw.gateway.http_port
        async with aiohttp.ClientSession(
                base_url=f"https://127.0.0.1:{port}",
                connector=aiohttp.TCPConnector(ssl=gw.client_context()),
                timeout=aiohttp.ClientTimeout(total=20)) as client:
            statuses = {}
            for path in paths:
                async with client.post(path, data=b"\xff\xfe=\xff&csrf_token=\xfe",
                                       headers={"Content-Type":
                                                "application/x-www-form-urlencoded"},
                                       allow_redirects=False) as answer:
                    statuses[path] = answer.status
            async with client.get("/healthz") as alive:
                assert alive.status == 200
    assert {path: status for path, status in statuses.items() if not 300 <= status < 500} == {}
