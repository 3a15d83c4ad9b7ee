"""The staff home page and navigation over HTTPS against the whole gateway on port 0.

Where a sign-in lands, what the home page offers each role, the navigation bar on every staff
page, and the smaller page texts of issue 19 (yes/no, plurals, the post form's labels).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.gateway_harness import GOVERNANCE, PASSWORD, STAFF, Harness, running_gateway
from tests.sink import Sink
from tests.staffweb import hidden

NAV_LINK = re.compile(r'<nav class="staff".*?</nav>', re.DOTALL)


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    """The whole gateway with a practitioner and a governance lead."""
    async with running_gateway(tmp_path, sink) as running:
        yield running


async def _sign_in(client: aiohttp.ClientSession, address: str, next_path: str) -> str:
    """Post the sign-in form asking for `next_path`: where the answer sends the browser."""
    async with client.get("/login") as form:
        token = hidden(await form.text(), "signin_token")
    async with client.post("/login", allow_redirects=False, data={
            "address": address, "password": PASSWORD, "signin_token": token,
            "next": next_path}) as answer:
        assert answer.status == 303
        return answer.headers["Location"]


def _nav(page: str) -> list[tuple[str, bool]]:
    """The navigation bar's links: (path, marked as the current page)."""
    found = NAV_LINK.search(page)
    assert found, "no navigation bar"
    return [(m.group(1), bool(m.group(2)))
            for m in re.finditer(r'<a href="([^"]+)"( aria-current="page")?>', found.group(0))]


async def test_a_practitioner_lands_on_home_with_the_pages_they_may_use(gw: Harness) -> None:
    """Signing in goes to /home (not a 403), which lists post, verifications and cases, not
    governance."""
    async with gw.web_client() as client:
        assert await _sign_in(client, STAFF, "/home") == "/home"
        async with client.get("/home") as home:
            text = await home.text()
            assert home.status == 200
        assert _nav(text) == [("/home", True), ("/post", False), ("/verifications", False),
                              ("/cases", False)]
        cards = re.findall(r'<li><a href="([^"]+)">', text.split('class="cards"')[1])
        assert cards == ["/post", "/verifications", "/cases"]
        assert "/governance" not in text and 'action="/logout"' in text
        async with client.get("/", allow_redirects=False) as root:
            assert root.status == 302 and root.headers["Location"] == "/home"


async def test_governance_sees_the_audit_trail_too(gw: Harness) -> None:
    """A governance lead's home page and navigation add the audit trail."""
    async with gw.web_client() as client:
        await _sign_in(client, GOVERNANCE, "/home")
        async with client.get("/home") as home:
            text = await home.text()
        assert [path for path, _ in _nav(text)] == ["/home", "/governance", "/post",
                                                     "/verifications", "/cases"]
        assert "Every decision casegate took" in text


@pytest.mark.parametrize(("who", "asked", "lands"), [
    (STAFF, "/governance", "/home"),  # not theirs: home, never the 403 page
    (STAFF, "/post", "/post"),
    (STAFF, "/api/messages", "/home"),  # not a page of the navigation
    (GOVERNANCE, "/governance?grade=high", "/governance?grade=high"),
    (GOVERNANCE, "/governance/events/1", "/governance/events/1"),
    (GOVERNANCE, "//evil.example/", "/home"),
])
async def test_sign_in_goes_where_asked_only_if_allowed(gw: Harness, who: str, asked: str,
                                                        lands: str) -> None:
    """After sign-in the browser goes to the page it asked for if the user may use it."""
    async with gw.web_client() as client:
        assert await _sign_in(client, who, asked) == lands


async def test_every_staff_page_has_the_navigation(gw: Harness) -> None:
    """Post, verifications, governance, an event and the 403 page all carry the nav bar."""
    gw.app.audit.record("refusal", rule="personal-address", sender=STAFF,
                        recipients=["parent@gmail.com"])
    async with gw.web_client() as gov, gw.web_client() as staff:
        await _sign_in(gov, GOVERNANCE, "/home")
        await _sign_in(staff, STAFF, "/home")
        for client, path, current in [(gov, "/post", "/post"),
                                      (gov, "/verifications", "/verifications"),
                                      (gov, "/governance", "/governance"),
                                      (gov, "/governance/events/1", "/governance"),
                                      (staff, "/governance", None)]:
            async with client.get(path) as page:
                text = await page.text()
            marked = [link for link, is_current in _nav(text) if is_current]
            assert marked == ([current] if current else []), path
            assert '<button type="submit" class="secondary">Sign out</button>' in text
        assert "You do not have access to this page" in text  # the last: staff on /governance


async def test_the_event_page_writes_yes_no_and_plurals(gw: Harness) -> None:
    """Booleans read yes/no (never Python's True) and one event is "1 event"."""
    seq = gw.app.audit.record("refusal", rule="personal-address", sender=STAFF,
                              recipients=["parent@gmail.com"], urgent=True, encrypted=False)
    async with gw.web_client() as client:
        await _sign_in(client, GOVERNANCE, "/home")
        async with client.get(f"/governance/events/{seq}") as page:
            text = await page.text()
        async with client.get("/governance") as trail:
            summary = await trail.text()
    assert re.search(r'<th scope="row">urgent</th><td>yes</td>', text)
    assert re.search(r'<th scope="row">encrypted</th><td>no</td>', text)
    assert "True" not in text and "False" not in text
    assert "1 event with a rule" in summary and "across 1 rule." in summary
    assert "1 events" not in summary and "1 rules" not in summary


async def test_the_post_form_shows_human_labels_and_names_the_portal(gw: Harness) -> None:
    """Items and methods show their labels only; the policy's Egress method is casegate's portal."""
    async with gw.web_client() as client:
        await _sign_in(client, STAFF, "/post")
        async with client.get("/post") as page:
            text = await page.text()
        options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', text)
        assert options and all(f"({value})" not in label for value, label in options if value)
        assert ("egress-email", "secure email (casegate&#39;s encrypted portal) to one "
                "verified address") in options
        assert "via Egress" not in text
        async with client.post("/post", data={
                "csrf_token": hidden(text, "csrf_token"), "item": "court-report",
                "verified_email": "on"}) as answer:
            answered = await answer.text()
        assert "<li>secure email (casegate&#39;s encrypted portal)" in answered
        assert "(<code>egress-email</code>)" not in answered
