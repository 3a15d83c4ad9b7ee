"""The postal decision over real HTTPS: the staff API (Basic auth) and the staff form (the
office directory on SQLite and on PostgreSQL: the `database` fixture)."""

from __future__ import annotations

import io
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.audit.trail import AuditLog, EventFilter, StoredEvent
from gateway.stores.offices import OfficeRegistry
from gateway.stores.users import UserRole, UserStore
from gateway.web.pages import WebDeps
from gateway.web.post import PostDeps
from gateway.web.post import install as install_post
from gateway.web.staff import install as install_staff_pages
from policies.post import PostOptions
from tests.certs import ServerCert
from tests.gateway_harness import PASSWORD as HARNESS_PASSWORD
from tests.gateway_harness import STAFF, running_gateway
from tests.https import https_client, serve_https
from tests.sink import Sink
from tests.staffweb import hidden
from transports.database import Database

PASSWORD = "correct horse battery"
BUSINESS = "bs.officer@cafcass.gov.uk"


class PostWeb:
    """The staff pages and the postal routes on 127.0.0.1, port 0, over TLS."""

    def __init__(self, data_dir: Path, cert: ServerCert, database: Database) -> None:
        self.data_dir = data_dir
        self.cert = cert
        self.database = database
        self.base = ""

    async def start(self) -> None:
        database = Database.open(self.data_dir)
        self.audit = AuditLog.open(database, stream=io.StringIO())
        self.users = UserStore(database)
        self.users.add(BUSINESS, PASSWORD, roles=(UserRole.STAFF, UserRole.BUSINESS_SERVICES))
        text = resources.files("policies").joinpath("data/post.toml").read_text("utf-8")
        options = PostOptions.from_table(tomllib.loads(text)["post"], "post.toml")
        self.offices = OfficeRegistry(self.database, self.audit)
        self.offices.add("Bloomsbury", options=options, teams=["Legal Team"],
                         by="bs.officer@cafcass.gov.uk", now=datetime.now(UTC))
        app = web.Application()
        install_staff_pages(app, WebDeps(audit=self.audit, users=self.users,
                                         database=database))
        install_post(app, PostDeps(options=options, audit=self.audit, users=self.users,
                                   offices=self.offices))
        self.runner, self.base = await serve_https(app, self.cert)

    async def stop(self) -> None:
        await self.runner.cleanup()
        self.offices.close()
        self.users.close()
        self.audit.close()

    def client(self) -> aiohttp.ClientSession:
        return https_client(self.base, self.cert.client_context())

    def events(self, kind: str) -> list[StoredEvent]:
        return list(self.audit.iterate(EventFilter(kind=kind)))


@pytest.fixture
async def post_web(tmp_path: Path, server_cert: ServerCert,
                   database: Database) -> AsyncIterator[PostWeb]:
    """The postal routes on a real TLS socket, stopped at the end."""
    running = PostWeb(tmp_path / "data", server_cert, database)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


AUTH = {"Authorization": aiohttp.encode_basic_auth(BUSINESS, PASSWORD)}


async def test_api_answers_with_the_contract_json(post_web: PostWeb) -> None:
    """Right credentials: 200, the JSON of `casegate post --json`, recorded with the user."""
    async with post_web.client() as client, client.post(
        "/api/post", headers=AUTH,
        json={"item": "safeguarding-letter", "address": "confirmed-eit", "sensitivity": "concern"},
    ) as answer:
        assert answer.status == 200
        body = await answer.json()
    assert set(body) == {"decision", "methods", "instructions", "rule", "citation", "reason"}
    assert body["decision"] == "send"
    assert "royal-mail-standard-return-address" not in body["methods"]
    [event] = post_web.events("post-decision")
    assert event.sender == BUSINESS and event.rule == "sensitive-secure-post"


async def test_api_takes_the_issue_17_facts(post_web: PostWeb) -> None:
    """hard_copy, electronic, wishes_to_collect and a team's name as the office, over the API."""
    answers = []
    async with post_web.client() as client:
        for facts in (
            {"item": "case-file", "hard_copy": True, "from_office": "legal team"},
            {"item": "case-file", "electronic": True},
            {"item": "court-report", "address": "unconfirmed", "wishes_to_collect": True},
            {"item": "case-file", "hard_copy": True, "from_office": "Warrington",
             "method": "dx"},
            {"item": "solicitor-correspondence"},
        ):
            async with client.post("/api/post", headers=AUTH, json=facts) as answer:
                assert answer.status == 200
                answers.append(await answer.json())
        async with client.post("/api/post", headers=AUTH, json={
                "item": "case-file", "hard_copy": True, "electronic": True}) as answer:
            assert answer.status == 400 and (await answer.json())["field"] == "electronic"
    assert [a["methods"] for a in answers] == [
        ["special-delivery-guaranteed", "hand-delivery", "dx"], ["internal-transfer"],
        ["collect-in-person"], [], ["egress-email"]]
    assert [a["rule"] for a in answers] == [
        "case-file-hard-copy", "electronic-transfer", "collect-only", "dx-not-outgoing",
        "solicitor-email"]
    recorded = post_web.events("post-decision")
    assert recorded[0].metadata["from_office_resolved"] == "Bloomsbury"
    assert len(recorded) == 5


async def test_api_bad_input_is_400_naming_the_field(post_web: PostWeb) -> None:
    """Contradictory facts: 400 with the field and a sentence; nothing is recorded."""
    async with post_web.client() as client:
        async with client.post("/api/post", headers=AUTH,
                               json={"item": "welcome-pack", "office_transfer": True}) as answer:
            assert answer.status == 400
            assert (await answer.json())["field"] == "office_transfer"
        async with client.post("/api/post", data=b"[1, 2]",
                               headers={**AUTH, "Content-Type": "application/json"}) as answer:
            assert answer.status == 400
            assert (await answer.json())["field"] == "body"
        async with client.post("/api/post", headers=AUTH,
                               json={"item": "case-file", "weight_kg": -3}) as answer:
            assert answer.status == 400
            assert (await answer.json()) == {
                "error": "The weight must be zero or more kilograms.", "field": "weight_kg"
            }
    assert post_web.events("post-decision") == []


async def test_api_refuses_without_the_right_password(post_web: PostWeb) -> None:
    """No or wrong credentials: 401 with a Basic challenge, an audit event, no decision."""
    async with post_web.client() as client:
        async with client.post("/api/post", json={"item": "welcome-pack"}) as answer:
            assert answer.status == 401
            assert answer.headers["WWW-Authenticate"].startswith("Basic")
        wrong = {"Authorization": aiohttp.encode_basic_auth(BUSINESS, "not the password")}
        async with client.post("/api/post", headers=wrong,
                               json={"item": "welcome-pack"}) as answer:
            assert answer.status == 401
    [failure] = post_web.events("login-failure")
    assert failure.sender == BUSINESS and failure.metadata["channel"] == "api"
    assert "not the password" not in str(failure.as_dict())
    assert post_web.events("post-decision") == []


async def test_form_needs_a_session_and_a_csrf_token(post_web: PostWeb) -> None:
    """The form redirects to sign-in, refuses a post without the CSRF token, then answers."""
    async with post_web.client() as client:
        async with client.get("/post", allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["Location"].startswith("/login?next=")
        async with client.get("/login") as form:
            token = hidden(await form.text(), "signin_token")
        async with client.post("/login", allow_redirects=False, data={
            "address": BUSINESS, "password": PASSWORD, "signin_token": token, "next": "/post",
        }) as answer:
            assert answer.status == 303
        async with client.get("/post") as page:
            assert page.status == 200
            text = await page.text()
            csrf = hidden(text, "csrf_token")
            assert 'name="item"' in text
        async with client.post("/post", data={"item": "third-party-document"}) as refused:
            assert refused.status == 403
        assert post_web.events("post-decision") == []
        async with client.post("/post", data={"csrf_token": csrf,
                                              "item": "third-party-document"}) as page:
            assert page.status == 200
            text = await page.text()
        assert "Do not send it" in text and "prohibited in all circumstances" in text
        async with client.post("/post", data={"csrf_token": csrf, "item": "welcome-pack",
                                              "weight_kg": "two"}) as page:
            assert page.status == 400
            assert "The weight must be a number of kilograms." in await page.text()
        async with client.post("/post", data={
            "csrf_token": csrf, "item": "case-file", "office_transfer": "on",
            "from_office": "<b>Bloomsbury</b>", "sensitivity": "particular",
        }) as page:
            text = await page.text()
        assert "<b>Bloomsbury</b>" not in text and "&lt;b&gt;Bloomsbury&lt;/b&gt;" in text
        assert "double envelope" in text
        async with client.post("/post", data={
            "csrf_token": csrf, "item": "case-file", "form": "hard-copy",
            "from_office": "Legal Team", "to_office": "Warrington",
        }) as page:
            paper = await page.text()
        async with client.post("/post", data={
            "csrf_token": csrf, "item": "safeguarding-letter", "address": "unconfirmed",
            "wishes_to_collect": "on",
        }) as page:
            collect = await page.text()
        async with client.post("/post", data={"csrf_token": csrf, "item": "case-file",
                                              "form": "parchment"}) as page:
            assert page.status == 400
    assert '<option value="Legal Team">' in text  # the office directory, as suggestions
    paper = paper.split('class="post-answer"')[1]  # the answer, below the form
    collect = collect.split('class="post-answer"')[1]
    assert "<li>DX (Document Exchange)</li>" in paper and "<li>transfer between" not in paper
    assert "collection in person" in collect and "confirm their identity" in collect
    senders = [e.sender for e in post_web.events("post-decision")]
    assert senders == [BUSINESS] * 4


async def test_api_locks_out_after_repeated_failures(post_web: PostWeb) -> None:
    """Five wrong passwords lock the account out: even the right one then gets 429."""
    wrong = {"Authorization": aiohttp.encode_basic_auth(BUSINESS, "guess guess guess")}
    async with post_web.client() as client:
        for _ in range(5):
            async with client.post("/api/post", headers=wrong, json={}) as answer:
                assert answer.status == 401
        async with client.post("/api/post", headers=AUTH,
                               json={"item": "welcome-pack"}) as answer:
            assert answer.status == 429
    assert len(post_web.events("login-lockout")) == 1
    assert post_web.events("post-decision") == []


async def test_the_running_gateway_serves_the_staff_api(tmp_path: Path, sink: Sink) -> None:
    """`casegate serve`'s HTTP front has POST /api/post (gateway.web.app), with the App's policy."""
    async with running_gateway(tmp_path, sink) as gw:
        url = f"https://{gw.host}:{gw.gateway.http_port}/api/post"
        headers = {"Authorization": aiohttp.encode_basic_auth(STAFF, HARNESS_PASSWORD)}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.post(url, ssl=gw.client_context(), headers=headers,
                                    json={"item": "agency-check-result"}) as answer:
                assert answer.status == 200
                body = await answer.json()
        assert body["decision"] == "refuse" and body["rule"] == "agency-check-original"
        [event] = gw.app.audit.page(EventFilter(kind="post-decision"))
        assert event.sender == STAFF
