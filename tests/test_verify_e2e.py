"""End to end over real sockets: ask by SMTP, HTTP or the CLI, follow the link, confirm or decline.

The gateway runs in-process on port 0 with its own TLS certificate; the upstream is a real
aiosmtpd sink and DNS a stub server, both on 127.0.0.1. The recipient's pages are driven with an
aiohttp client over HTTPS, trusting exactly the gateway's certificate.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.app import App
from gateway.audit.store import EventFilter
from gateway.cli import main
from gateway.runtime.server import start_gateway
from gateway.stages.intake import parse_request
from gateway.web.pages import breakable
from tests.dnsstub import DnsStub
from tests.gateway_harness import PASSWORD, STAFF, Harness, message
from tests.sink import Sink
from tests.verifykit import (
    CASE,
    GOVERNANCE,
    RECIPIENT,
    RECIPIENT_NAME,
    Inbox,
    code_in,
    serve_example_domains,
    subject_of,
    text_of,
    token_in,
    watch,
    write_verify_config,
)

VERIFY = "verify@casegate.localhost"
AUTH = {"Authorization": aiohttp.encode_basic_auth(STAFF, PASSWORD)}
WRONG_AUTH = {"Authorization": aiohttp.encode_basic_auth(STAFF, "wrong password")}
PROTECTED = f"Please find the safeguarding letter for case {CASE} in the portal."


@dataclass
class Running:
    harness: Harness
    inbox: Inbox
    config: Path

    @property
    def app(self) -> App:
        return self.harness.app

    def web(self) -> aiohttp.ClientSession:
        """An HTTPS client trusting only the gateway's certificate, keeping its cookies."""
        port = self.harness.gateway.http_port
        return aiohttp.ClientSession(
            base_url=f"https://127.0.0.1:{port}",
            connector=aiohttp.TCPConnector(ssl=self.harness.client_context()),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=20),
        )

    async def send_protected(self) -> int:
        """A protected message from STAFF to RECIPIENT: the SMTP reply code."""
        data = message(to=(RECIPIENT,), body=PROTECTED, subject="Letter")
        try:
            await self.harness.run(self.harness.send, STAFF, [RECIPIENT], data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code
        return 250

    def decisions(self) -> list[list[str]]:
        """The recipient actions of every DATA decision recorded so far."""
        events = [*self.app.audit.iterate(EventFilter(kind="decision")),
                  *self.app.audit.iterate(EventFilter(kind="refusal"))]
        return [e.metadata["actions"] for e in sorted(events, key=lambda e: e.seq)
                if "actions" in e.metadata]


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with Sink() as sink, DnsStub() as stub:
        serve_example_domains(stub)
        config = write_verify_config(tmp_path, sink, stub, governance=GOVERNANCE)
        app = App.open(config, tmp_path / "data", event_stream=io.StringIO())
        try:
            app.users.add(STAFF, PASSWORD)
            gateway = await start_gateway(app)
            try:
                yield Running(Harness(app=app, gateway=gateway, sink=sink), watch(sink), config)
            finally:
                await gateway.stop(drain_seconds=5)
        finally:
            app.close()


async def ask_api(client: aiohttp.ClientSession,
                  auth: dict[str, str] = AUTH) -> tuple[int, dict[str, object]]:
    """POST /api/verify for RECIPIENT on CASE: (status, JSON answer)."""
    facts = {"address": RECIPIENT, "case": CASE, "name": RECIPIENT_NAME, "role": "party"}
    async with client.post("/api/verify", json=facts, headers=auth) as answer:
        return answer.status, await answer.json()


def request_body(address: str = RECIPIENT, name: str = RECIPIENT_NAME) -> str:
    return f"Address: {address}\r\nName: {name}\r\nRole: party\r\nCase: {CASE}"


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden field {name}"
    return found.group(1)


async def open_form(client: aiohttp.ClientSession, token: str) -> str:
    """GET the link: the page's CSRF token (the cookie is now in the client's jar)."""
    async with client.get(f"/v/{token}") as page:
        text = await page.text()
        assert page.status == 200
        assert "<script" not in text and '<label for="code">' in text
        assert '<label for="name">' in text
        assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    return hidden(text, "csrf_token")


async def test_a_request_by_email_ends_in_protected_mail_being_accepted(tmp_path: Path) -> None:
    """SMTP request -> invitation in the sink -> form posted -> protected mail no longer refused."""
    async with running(tmp_path) as gw:
        assert await gw.send_protected() == 550
        refused = await gw.harness.run(gw.harness.send, STAFF, [VERIFY],
                                       message(to=(VERIFY,), body=request_body()))
        assert refused == {}
        invitation = await gw.inbox.wait_for(RECIPIENT)
        reply = (await gw.inbox.wait_for(STAFF))[0]
        code = code_in(text_of(reply))
        assert CASE not in text_of(invitation[0]) and code not in text_of(invitation[0])
        async with gw.web() as client:
            csrf = await open_form(client, token_in(invitation[0]))
            async with client.post(f"/v/{token_in(invitation[0])}", data={
                    "csrf_token": csrf, "answer": "confirm", "code": code,
                    "name": RECIPIENT_NAME}) as answer:
                assert answer.status == 200
                assert "your address is confirmed" in await answer.text()
        confirmed = (await gw.inbox.wait_for(STAFF, 2))[1]
        assert "now verified" in subject_of(confirmed)
        code_after = await gw.send_protected()
        assert code_after != 550  # delivered encrypted, or held for the portal (4.7.0)
        assert gw.decisions()[-2:] == [["block"], ["encrypt"]]


async def test_a_request_over_the_api_and_this_is_not_me(tmp_path: Path) -> None:
    """HTTP API request; the recipient says 'not me': practitioner and governance are told."""
    async with running(tmp_path) as gw, gw.web() as client:
        status, body = await ask_api(client)
        assert status == 200 and body["outcome"] == "sent" and len(body["code"]) == 6
        token = token_in((await gw.inbox.wait_for(RECIPIENT))[0])
        csrf = await open_form(client, token)
        async with client.post(f"/v/{token}", data={"csrf_token": csrf,
                                                      "answer": "decline"}) as page:
            assert page.status == 200 and "Thank you for telling us" in await page.text()
        notice = (await gw.inbox.wait_for(STAFF))[0]
        assert "this is not me" in subject_of(notice).lower()
        alert = (await gw.inbox.wait_for(GOVERNANCE))[0]
        assert "verification-declined" in text_of(alert) and RECIPIENT in text_of(alert)
        assert (await ask_api(client, WRONG_AUTH))[0] == 401
        again = await ask_api(client)
        assert again[0] == 422 and "not the address you meant" in str(again[1]["message"])
        assert await gw.send_protected() == 550


async def test_a_lookalike_confirmed_over_the_api_ends_in_portal_delivery(
        tmp_path: Path) -> None:
    """admin@cjsm.co.uk resembles cjsm.net: the API refuses it (422) until staff confirm it with
    a reason; then the invitation goes (a medium-grade event says who and why), the recipient
    confirms, and protected mail to it is encrypted, not sent plain as to a secure address."""
    lookalike = "admin@cjsm.co.uk"
    facts = {"address": lookalike, "case": CASE, "name": "Ada Admin", "role": "professional"}
    async with running(tmp_path) as gw, gw.web() as client:
        async with client.post("/api/verify", json=facts, headers=AUTH) as answer:
            assert answer.status == 422
            assert (await answer.json())["suggestion"] == "admin@cjsm.net"
        async with client.post("/api/verify", json={**facts, "confirm_lookalike": True},
                               headers=AUTH) as answer:
            assert answer.status == 400 and (await answer.json())["field"] == "reason"
        confirmed = {**facts, "confirm_lookalike": True,
                     "reason": "The firm's own domain, checked by telephone with its office."}
        async with client.post("/api/verify", json=confirmed, headers=AUTH) as answer:
            assert answer.status == 200
            body = await answer.json()
        assert body["outcome"] == "sent"
        [event] = gw.app.audit.page(EventFilter(kind="verification-lookalike-confirmed"))
        assert event.grade == "medium" and event.sender == STAFF
        assert event.metadata["resembles"] == "cjsm.net" and event.metadata["channel"] == "http"
        token = token_in((await gw.inbox.wait_for(lookalike))[0])
        csrf = await open_form(client, token)
        async with client.post(f"/v/{token}", data={
                "csrf_token": csrf, "answer": "confirm", "code": body["code"],
                "name": "Ada Admin"}) as page:
            assert page.status == 200
        data = message(to=(lookalike,), body=PROTECTED, subject="Letter")
        try:
            await gw.harness.run(gw.harness.send, STAFF, [lookalike], data)
        except smtplib.SMTPDataError as exc:
            assert exc.smtp_code != 550  # held for the portal (4.7.0), never refused
        assert gw.decisions()[-1] == ["encrypt"]


async def test_forms_need_the_csrf_token_and_wrong_codes_lock(tmp_path: Path) -> None:
    """No CSRF token: 403 and nothing changes; five wrong codes lock the link."""
    async with running(tmp_path) as gw, gw.web() as client:
        code = (await ask_api(client))[1]["code"]
        token = token_in((await gw.inbox.wait_for(RECIPIENT))[0])
        async with client.post(f"/v/{token}", data={"answer": "decline"}) as forged:
            assert forged.status == 403 and "form has expired" in await forged.text()
        assert [r.state.value for r in gw.app.registry.requests()] == ["pending"]
        csrf = await open_form(client, token)
        wrong = "000000" if code != "000000" else "111111"
        for left in (4, 3, 2, 1):
            async with client.post(f"/v/{token}", data={
                    "csrf_token": csrf, "answer": "confirm", "code": wrong,
                    "name": RECIPIENT_NAME}) as page:
                text = await page.text()
                assert page.status == 400 and f"You have {left} tr" in text
                csrf = hidden(text, "csrf_token")
        async with client.post(f"/v/{token}", data={
                "csrf_token": csrf, "answer": "confirm", "code": wrong,
                "name": RECIPIENT_NAME}) as page:
            assert "locked" in await page.text()
        async with client.get(f"/v/{token}") as page:
            assert "cannot be used" in await page.text()
        assert "locked" in subject_of((await gw.inbox.wait_for(STAFF))[0]).lower()


async def test_an_expired_link_shows_it_cannot_be_used(tmp_path: Path) -> None:
    """The gateway's clock past the link's expiry: 410 Gone, the page says so, and the request
    expires."""
    async with running(tmp_path) as gw, gw.web() as client:
        expires = (await ask_api(client))[1]["expires_at"]
        token = token_in((await gw.inbox.wait_for(RECIPIENT))[0])
        gw.harness.gateway.stages.clock = lambda: datetime.fromisoformat(expires)
        async with client.get(f"/v/{token}") as page:
            assert page.status == 410 and "cannot be used" in await page.text()
        assert [r.state.value for r in gw.app.registry.requests()] == ["expired"]


async def test_a_forged_link_is_404_and_a_used_one_410(tmp_path: Path) -> None:
    """A token we never issued is 404, an answered one 410; neither page names an address."""
    async with running(tmp_path) as gw, gw.web() as client:
        await ask_api(client)
        token = token_in((await gw.inbox.wait_for(RECIPIENT))[0])
        forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
        for bad in (forged, "not-a-token", "A" * 24 + ".1999999999." + "B" * 43):
            async with client.get(f"/v/{bad}") as page:
                text = await page.text()
                assert page.status == 404, bad
                assert "Copy the whole link" in text and RECIPIENT not in text
        csrf = await open_form(client, token)
        async with client.post(f"/v/{token}", data={"csrf_token": csrf,
                                                      "answer": "decline"}) as declined:
            assert declined.status == 200
        async with client.get(f"/v/{token}") as page:
            text = await page.text()
            assert page.status == 410 and "already been used" in text
            assert RECIPIENT not in text
        async with client.post(f"/v/{forged}", data={"csrf_token": csrf,
                                                       "answer": "decline"}) as posted:
            assert posted.status == 404


async def test_staff_see_only_their_own_verification_requests(tmp_path: Path) -> None:
    """/verifications lists the signed-in member of staff's requests, and nobody else's."""
    other = "al.jones@cafcass.gov.uk"
    async with running(tmp_path) as gw:
        gw.app.users.add(other, PASSWORD)
        async with gw.web() as client:
            assert (await ask_api(client))[0] == 200
        async with gw.web() as mine:
            await sign_in(mine, STAFF)
            async with mine.get("/verifications") as page:
                text = await page.text()
                assert page.status == 200
                assert str(breakable(RECIPIENT)) in text
                assert CASE in text and "waiting for the recipient" in text
                assert 'aria-current="page"' in text and 'href="/verifications"' in text
        async with gw.web() as theirs:
            await sign_in(theirs, other)
            async with theirs.get("/verifications") as page:
                text = await page.text()
                assert page.status == 200 and "have not asked for any" in text
                assert CASE not in text and str(breakable(RECIPIENT)) not in text


async def sign_in(client: aiohttp.ClientSession, address: str) -> None:
    """Sign in on the staff pages (the session cookie stays in the client's jar)."""
    async with client.get("/login") as form:
        token = hidden(await form.text(), "signin_token")
    async with client.post("/login", data={"address": address, "password": PASSWORD,
                                           "signin_token": token, "next": "/home"},
                           allow_redirects=False) as answer:
        assert answer.status == 303 and answer.headers["Location"] == "/home"


async def test_requests_to_the_verification_address_are_checked(tmp_path: Path) -> None:
    """Mixed recipients, missing lines and lookalikes are refused with a sentence."""
    async with running(tmp_path) as gw:
        cases = [
            ([VERIFY, "al.jones@cafcass.gov.uk"], request_body(), "on their own"),
            ([VERIFY], "Address: jane.doe@example.org", "Missing: name, role, case"),
            ([VERIFY], request_body("jane.doe@cafcas.gov.uk"), "Did you mean"),
        ]
        for recipients, body, words in cases:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                await gw.harness.run(gw.harness.send, STAFF, recipients,
                                     message(to=tuple(recipients), body=body))
            assert refused.value.smtp_code == 550
            assert words in refused.value.smtp_error.decode()
        assert gw.inbox == [] and gw.app.registry.requests() == []


async def test_the_cli_requests_and_lists(tmp_path: Path) -> None:
    """`verify request --json` mails through the configured upstream; `verify list` shows it."""
    async with running(tmp_path) as gw:
        common = ["--config", str(gw.config), "--data", str(tmp_path / "data")]
        out = io.StringIO()

        def cli(*argv: str) -> int:
            with redirect_stdout(out):
                return main([*argv, *common])

        code = await asyncio.to_thread(
            cli, "verify", "request", RECIPIENT, "--case", CASE, "--name", RECIPIENT_NAME,
            "--role", "party", "--by", STAFF, "--json")
        result = json.loads(out.getvalue().splitlines()[-1])
        assert code == 0 and result["outcome"] == "sent" and len(result["code"]) == 6
        assert (await gw.inbox.wait_for(RECIPIENT))[0].mail_from == VERIFY
        out.truncate(0)
        out.seek(0)
        assert await asyncio.to_thread(cli, "verify", "list", "--json") == 0
        rows = [json.loads(line) for line in out.getvalue().splitlines()
                if line.startswith("{") and '"audit"' not in line]
        assert [(r["address"], r["state"]) for r in rows] == [(RECIPIENT, "pending")]


@pytest.mark.parametrize("line", [
    "Address: jane.doe@example.org",
    "address:   <jane.doe@example.org>",
    "Email: jane.doe@example.org <mailto:jane.doe@example.org>",
])
def test_the_request_body_is_read_as_outlook_writes_it(line: str) -> None:
    """The address line is read with or without Outlook's angle brackets and mailto link."""
    raw = message(to=(VERIFY,), body=f"{line}\r\nName: Jane Doe\r\nRole: Party\r\nCase no: x")
    fields = parse_request(raw)
    assert fields is not None
    assert (fields["address"], fields["name"], fields["role"]) == (
        "jane.doe@example.org", "Jane Doe", "Party")
    assert "case" not in fields
