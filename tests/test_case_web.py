"""The case registry over real HTTPS: the staff API (Basic auth) and the staff pages (session,
CSRF), with a real App (stores, audit trail) in a temporary data directory."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import App
from gateway.audit.trail import EventFilter, StoredEvent
from gateway.printed.post import post_options
from gateway.web import cases, post
from gateway.web.pages import WebDeps
from gateway.web.staff import install as install_staff_pages
from tests import loopio
from tests.certs import ServerCert
from tests.gateway_harness import PASSWORD as HARNESS_PASSWORD
from tests.gateway_harness import STAFF as HARNESS_STAFF
from tests.gateway_harness import message, running_gateway
from tests.https import https_client, serve_https
from tests.sink import Sink
from tests.staffweb import hidden

PASSWORD = "correct horse battery"
JO = "jo.bloggs@cafcass.gov.uk"
SAM = "sam.manager@cafcass.gov.uk"
CASE = "ZC12C00123"
NAME = "Ellie Mae Whitfield"
DETAIL = "14 Larkspur Close, Leeds LS1 4AB"


def basic(address: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(address, PASSWORD)}


class CasesWeb:
    """The staff pages, the postal API's sign-in state and the case routes over TLS."""

    def __init__(self, data_dir: Path, cert: ServerCert) -> None:
        self.data_dir, self.cert, self.base = data_dir, cert, ""

    async def start(self) -> None:
        self.app = App.open(None, self.data_dir)
        self.app.users.add(JO, PASSWORD)
        self.app.users.add(SAM, PASSWORD)
        web_app = web.Application()
        install_staff_pages(web_app, WebDeps(audit=self.app.audit, users=self.app.users,
                                             database=self.app.database))
        post.install(web_app, post.PostDeps(options=post_options(self.app),
                                            audit=self.app.audit, users=self.app.users,
                                            offices=self.app.offices))
        cases.install(web_app, cases.CasesDeps(casework=self.app.casework()))
        self.runner, self.base = await serve_https(web_app, self.cert)

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.app.close()

    def client(self) -> aiohttp.ClientSession:
        return https_client(self.base, self.cert.client_context())

    def events(self) -> list[StoredEvent]:
        return [e for e in self.app.audit.iterate(EventFilter()) if e.kind.startswith("case-")]


@pytest.fixture
async def site(tmp_path: Path, server_cert: ServerCert) -> AsyncIterator[CasesWeb]:
    running = CasesWeb(tmp_path / "data", server_cert)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def call(client: aiohttp.ClientSession, method: str, path: str, who: str = JO,
               body: Any = None) -> tuple[int, Any]:
    """One API request as `who`: (status, JSON answer)."""
    async with client.request(method, path, headers=basic(who), json=body) as answer:
        return answer.status, await answer.json()


# -- the API -----------------------------------------------------------------------------------


async def test_api_records_shows_lists_and_removes(site: CasesWeb) -> None:
    """Each change answers with the entry (never the name or the text) and is audited with the
    member of staff who signed in."""
    async with site.client() as client:
        status, person = await call(client, "POST", f"/api/cases/{CASE.lower()}/people",
                                    body={"name": NAME, "role": "child", "dob": "2017-03-04"})
        assert status == 201
        assert (person["id"], person["initials"], person["recorded_by"]) == ("P1", "E.M.W", JO)
        status, detail = await call(client, "POST", f"/api/cases/{CASE}/details", body={
            "text": DETAIL, "kind": "gp", "may_go_to": ["surgery.nhs.uk"]})
        assert (status, detail["id"], detail["kind"], detail["may_go_to"]) == (
            201, "D1", "gp", ["surgery.nhs.uk"])
        status, shown = await call(client, "GET", f"/api/cases/{CASE}")
        assert status == 200 and [p["id"] for p in shown["people"]] == ["P1"]
        assert shown["shielded"] is False
        assert await call(client, "GET", "/api/cases") == (200, [
            {"case_number": CASE, "shielded": False, "people": 1, "details": 1}])
        status, gone = await call(client, "DELETE", f"/api/cases/{CASE}/people/P1")
        assert status == 200 and gone["removed_by"] == JO
        status, gone = await call(client, "DELETE", f"/api/cases/{CASE}/details/1")
        assert status == 200 and gone["id"] == "D1"
    everything = json.dumps([e.as_dict() for e in site.events()]).lower()
    assert [e.kind for e in site.events()] == [
        "case-person-recorded", "case-detail-recorded", "case-person-removed",
        "case-detail-removed"]
    assert {e.sender for e in site.events()} == {JO}
    assert {e.metadata["channel"] for e in site.events()} == {"http"}
    assert "ellie" not in everything and "larkspur" not in everything


API_REFUSALS = [
    ("POST", "/api/cases/ZC12/people", {"name": NAME, "role": "child"}, 400,
     "'ZC12' is not a case number (like ZC12C00123)."),
    ("POST", f"/api/cases/{CASE}/people", {"name": "Ellie", "role": "child"}, 400,
     "Give the person's full name (first and last name), not one word."),
    ("POST", f"/api/cases/{CASE}/people", {"name": NAME, "role": "aunt"}, 400,
     "Choose the person's role: child, party or other."),
    ("POST", f"/api/cases/{CASE}/people", {"name": NAME, "role": "child", "dob": "2099-01-01"},
     400, "The date of birth 2099-01-01 is in the future."),
    ("POST", f"/api/cases/{CASE}/people", {"name": 7, "role": "child"}, 400,
     "'name' must be a string."),
    ("POST", f"/api/cases/{CASE}/people", [NAME], 400,
     "The request body must be a JSON object of at most 16384 bytes."),
    ("POST", f"/api/cases/{CASE}/details", {"text": DETAIL, "kind": "house"}, 400,
     "Choose the kind of detail: address, school, nursery, gp, placement or other."),
    ("POST", f"/api/cases/{CASE}/details", {"text": DETAIL, "kind": "address",
                                            "may_go_to": "all"}, 400,
     "'may_go_to' must be a list of strings."),
    ("PUT", f"/api/cases/{CASE}/shield", {"access": []}, 400,
     "A shielded case needs at least one member of staff with access."),
    ("PUT", f"/api/cases/{CASE}/shield", {"access": ["mum@gmail.com"]}, 400,
     "--access must be a Cafcass staff address, not 'mum@gmail.com'."),
    ("DELETE", f"/api/cases/{CASE}/people/P4", None, 404,
     "Case ZC12C00123 has no person P4 to remove."),
    ("DELETE", f"/api/cases/{CASE}/shield", None, 404, "Case ZC12C00123 is not shielded."),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "sentence"), API_REFUSALS)
async def test_api_refusals_are_one_sentence(site: CasesWeb, method: str, path: str,
                                             body: Any, status: int, sentence: str) -> None:
    async with site.client() as client:
        assert await call(client, method, path, body=body) == (status, {"error": sentence})
    assert site.events() == []


async def test_api_says_when_already_recorded(site: CasesWeb) -> None:
    async with site.client() as client:
        body = {"name": NAME, "role": "child"}
        assert (await call(client, "POST", f"/api/cases/{CASE}/people", body=body))[0] == 201
        body["name"] = "ELLIE mae whitfield"
        assert await call(client, "POST", f"/api/cases/{CASE}/people", body=body) == (
            409, {"error": "That person is already recorded for case ZC12C00123 as P1."})


async def test_api_needs_staff_credentials_and_no_cross_site(site: CasesWeb) -> None:
    async with site.client() as client:
        async with client.get(f"/api/cases/{CASE}") as answer:
            assert answer.status == 401
        async with client.post(f"/api/cases/{CASE}/people", headers={
                **basic(JO), "Sec-Fetch-Site": "cross-site"},
                json={"name": NAME, "role": "child"}) as answer:
            assert answer.status == 403
    assert site.events() == []


async def test_a_shielded_case_is_for_its_access_list_only(site: CasesWeb) -> None:
    """Sam shields the case for Sam alone: Jo sees that it is shielded and nothing else, and
    cannot add to it, take from it, or lift the shield; Sam can."""
    async with site.client() as client:
        await call(client, "POST", f"/api/cases/{CASE}/people", who=SAM,
                   body={"name": NAME, "role": "child"})
        status, shield = await call(client, "PUT", f"/api/cases/{CASE}/shield", who=SAM,
                                    body={"access": [SAM]})
        assert (status, shield["access"], shield["recorded_by"]) == (200, [SAM], SAM)
        assert await call(client, "GET", "/api/cases", who=JO) == (200, [
            {"case_number": CASE, "shielded": True, "people": None, "details": None}])
        refusal = {"error": f"Case {CASE} is shielded and you are not on its access list. "
                            "Ask the case's service manager if you need access (RRP 5.2)."}
        for method, path, body in (
                ("GET", f"/api/cases/{CASE}", None),
                ("POST", f"/api/cases/{CASE}/people", {"name": "Jo Other", "role": "other"}),
                ("DELETE", f"/api/cases/{CASE}/people/P1", None),
                ("PUT", f"/api/cases/{CASE}/shield", {"access": [JO]}),
                ("DELETE", f"/api/cases/{CASE}/shield", None)):
            assert await call(client, method, path, who=JO, body=body) == (403, refusal)
        status, shown = await call(client, "GET", f"/api/cases/{CASE}", who=SAM)
        assert status == 200 and shown["shield"]["access"] == [SAM]
        status, _ = await call(client, "PUT", f"/api/cases/{CASE}/shield", who=SAM,
                               body={"access": [SAM, JO]})
        assert status == 200
        assert (await call(client, "GET", f"/api/cases/{CASE}", who=JO))[0] == 200
    assert site.app.snapshot().cases.shielded(CASE) is not None
    assert [e.kind for e in site.events()] == ["case-person-recorded", "case-shielded",
                                               "case-shielded"]
    assert site.events()[2].metadata["replaced"] is True


# -- the pages ---------------------------------------------------------------------------------


async def sign_in(client: aiohttp.ClientSession, address: str = JO) -> None:
    async with client.get("/login") as form:
        token = hidden(await form.text(), "signin_token")
    async with client.post("/login", allow_redirects=False, data={
            "address": address, "password": PASSWORD, "signin_token": token,
            "next": "/cases"}) as answer:
        assert answer.status == 303 and answer.headers["Location"] == "/cases"


async def page(client: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    """GET a page (not following redirects): (status, HTML)."""
    async with client.get(path, allow_redirects=False) as answer:
        return answer.status, await answer.text()


async def submit(client: aiohttp.ClientSession, path: str, **form: str) -> tuple[int, str]:
    """POST `form` with the session's CSRF token (from the /cases page): (status, HTML)."""
    if "csrf_token" not in form:
        form["csrf_token"] = hidden((await page(client, "/cases"))[1], "csrf_token")
    async with client.post(path, data=form, allow_redirects=False) as answer:
        return answer.status, await answer.text()


def cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>",
                                                                     html, re.S)]


async def test_pages_record_and_take_back(site: CasesWeb) -> None:
    """Signed in, a member of staff opens a case by number, records a person, a detail and a
    shield with the forms, sees them by id, initials and kind, and takes them back."""
    async with site.client() as client:
        status, _ = await page(client, "/cases")
        assert status == 303  # to sign in
        await sign_in(client)
        status, html = await page(client, "/cases")
        assert status == 200 and "Nothing is recorded for any case yet." in html
        async with client.get("/cases", params={"case": "zc12c00123"},
                              allow_redirects=False) as opened:
            assert (opened.status, opened.headers["Location"]) == (303, f"/cases/{CASE}")
        status, html = await page(client, "/cases?case=nonsense")
        assert status == 400 and "&#39;nonsense&#39; is not a case number" in html

        status, html = await submit(client, f"/cases/{CASE}/people", name=NAME, role="child",
                                  dob="2017-03-04")
        assert status == 200 and "The person is recorded." in html
        assert cells(html)[:4] == ["P1", "E.M.W", "child", "recorded"]
        assert "Whitfield" not in html
        status, html = await submit(client, f"/cases/{CASE}/details", text=DETAIL,
                                  kind="school", may_go_to="head@school.sch.uk\nlea.gov.uk")
        assert status == 200 and "The confidential detail is recorded." in html
        assert "Larkspur" not in html and "head@<wbr>school.<wbr>sch.<wbr>uk,<wbr> lea." in html
        status, html = await submit(client, f"/cases/{CASE}/shield", access=f"{JO}, {SAM}")
        assert status == 200 and "The case is shielded." in html
        status, html = await submit(client, f"/cases/{CASE}/people", name="Ellie", role="child")
        assert status == 400 and "not one word" in html
        status, html = await page(client, "/cases")
        assert cells(html) == [CASE, "1", "1", "yes"]

        for path, said in ((f"/cases/{CASE}/people/P1/remove", "no longer recorded"),
                           (f"/cases/{CASE}/details/D1/remove", "no longer recorded"),
                           (f"/cases/{CASE}/shield/remove", "no longer shielded")):
            status, html = await submit(client, path)
            assert status == 200 and said in html
        assert "No people recorded." in html and "Not shielded." in html
    assert len(site.events()) == 6


async def test_pages_need_the_csrf_token(site: CasesWeb) -> None:
    async with site.client() as client:
        await sign_in(client)
        status, html = await submit(client, f"/cases/{CASE}/people", name=NAME, role="child",
                                  csrf_token="forged")
        assert status == 403 and "This form has expired" in html
    assert site.events() == []


async def test_pages_of_a_shielded_case_are_for_its_access_list(site: CasesWeb) -> None:
    await site.app.worker.run(lambda: site.app.casework().shield(
        CASE, access=[SAM], by=SAM, channel="cli"))
    async with site.client() as client:
        await sign_in(client, JO)
        status, html = await page(client, "/cases")
        assert cells(html) == [CASE, "-", "-", "yes (you have no access)"]
        status, html = await page(client, f"/cases/{CASE}")
        assert status == 403 and "not on its access list" in html
        status, html = await submit(client, f"/cases/{CASE}/shield/remove")
        assert status == 403
    assert site.app.cases.shield_of(CASE) is not None


async def test_the_running_gateway_serves_the_case_api(tmp_path: Path, sink: Sink) -> None:
    """`casegate serve`'s HTTP front has /api/cases (gateway.web.app) on the App's store, and
    the next message's snapshot knows the person."""
    async with running_gateway(tmp_path, sink) as gw:
        url = f"https://{gw.host}:{gw.gateway.http_port}/api/cases/{CASE}/people"
        headers = {"Authorization": aiohttp.encode_basic_auth(HARNESS_STAFF, HARNESS_PASSWORD)}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(url, ssl=gw.client_context(), headers=headers,
                                    json={"name": NAME, "role": "child"}) as answer:
                assert answer.status == 201
        snapshot = await gw.app.snapshot_async(gw.gateway.stages.clock())
        assert snapshot.cases.match([f"{NAME} missed school"]).case_numbers == (CASE,)


async def test_case_pages_and_the_rebuilt_index_touch_no_disk_on_the_event_loop(
        tmp_path: Path, sink: Sink) -> None:
    """The case pages and API, and the first message after a change (whose snapshot rebuilds
    the case index), run no SQLite statement and open no file on the loop's thread."""

    async def staff_work(base: str, context: ssl.SSLContext) -> None:
        async with https_client(base, context) as client:
            async with client.get("/login") as form:
                token = hidden(await form.text(), "signin_token")
            async with client.post("/login", allow_redirects=False, data={
                    "address": HARNESS_STAFF, "password": HARNESS_PASSWORD,
                    "signin_token": token, "next": "/cases"}) as answer:
                assert answer.status == 303
            async with client.get("/cases") as listing:
                csrf = hidden(await listing.text(), "csrf_token")
            async with client.post(f"/cases/{CASE}/people", data={
                    "csrf_token": csrf, "name": NAME, "role": "child"}) as recorded:
                assert recorded.status == 200
            headers = {"Authorization": aiohttp.encode_basic_auth(HARNESS_STAFF,
                                                                  HARNESS_PASSWORD)}
            async with client.post(f"/api/cases/{CASE}/details", headers=headers, json={
                    "text": DETAIL, "kind": "address"}) as recorded:
                assert recorded.status == 201
            async with client.get(f"/cases/{CASE}") as shown:
                assert shown.status == 200

    with loopio.arming():
        async with running_gateway(tmp_path, sink) as gw:
            base = f"https://localhost:{gw.gateway.http_port}"
            colleague = "colleague@cafcass.gov.uk"
            with loopio.watching() as seen:
                await asyncio.to_thread(lambda: asyncio.run(staff_work(base,
                                                                       gw.client_context())))
                for day in ("Monday", "Tuesday"):  # the first rebuilds the index
                    data = message(to=[colleague], body=f"{NAME} missed contact on {day}.")
                    assert await gw.run(gw.send, HARNESS_STAFF, [colleague], data) == {}
    assert not seen, loopio.report(seen)
    assert len(sink.messages) == 2
