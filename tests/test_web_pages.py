"""What a newcomer sees in the browser: the root, the /post form, and the pages families see.

The whole gateway runs on port 0 with its generated certificate and a real upstream sink; pages
are fetched over HTTPS with aiohttp, trusting only that certificate.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter
from gateway.web.pages import PAGE_HEADERS
from tests.gateway_harness import PASSWORD, STAFF, Harness, running_gateway
from tests.portalweb import protected_message, text_of
from tests.sink import Sink
from tests.staffweb import hidden

ORGANISATION = "Family Court Advisers"
MUM = "mum@example.org"
PORTAL_LINK = re.compile(r"https://[^\s]+(/portal/[A-Za-z0-9_\-]+)")


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    """The gateway with `organisation` set in its config file."""
    async with running_gateway(tmp_path, sink, organisation=ORGANISATION) as running:
        yield running


def _brand_and_title(page: str) -> tuple[str, str]:
    brand = re.search(r'<span class="brand">([^<]*)</span>', page)
    title = re.search(r"<title>([^<]*)</title>", page)
    assert brand and title
    return brand.group(1), title.group(1)


async def test_the_root_sends_the_browser_to_sign_in(gw: Harness) -> None:
    """`/` is a plain redirect to /login carrying the security headers; /login then answers."""
    async with gw.web_client() as client:
        async with client.get("/", allow_redirects=False) as answer:
            assert answer.status == 302
            assert answer.headers["Location"] == "/login"
            for header, value in PAGE_HEADERS.items():
                assert answer.headers[header] == value
            assert "max-age" in answer.headers["Strict-Transport-Security"]
        async with client.get("/") as followed:
            assert followed.status == 200 and str(followed.url).endswith("/login")
            assert '<span class="brand">casegate</span>' in await followed.text()  # staff page


async def test_the_post_form_shows_labels_and_no_weight(gw: Harness) -> None:
    """The form shows plain-English choices, submits the same ids, and an empty weight is fine."""
    async with gw.web_client() as client:
        async with client.get("/login") as form:
            token = hidden(await form.text(), "signin_token")
        async with client.post("/login", data={"address": STAFF, "password": PASSWORD,
                                               "signin_token": token, "next": "/post"}) as page:
            assert page.status == 200
            text = await page.text()
        assert '<option value="confirmed-eit">Confirmed by the EIT FCA</option>' in text
        assert ('<option value="confirmed-wafh">Confirmed by the allocated WAFH FCA and '
                "recorded on the contact log</option>") in text
        assert '<option value="particular">Particularly sensitive information</option>' in text
        assert '>confirmed-eit<' not in text and '>concern<' not in text
        assert re.search(r'<input id="weight_kg" name="weight_kg" value="">', text)
        async with client.post("/post", data={
            "csrf_token": hidden(text, "csrf_token"), "item": "safeguarding-letter",
            "address": "confirmed-eit", "sensitivity": "concern", "weight_kg": "",
        }) as answer:
            assert answer.status == 200
            answered = await answer.text()
    assert "Send it" in answered
    assert re.search(r'<option value="concern" selected>', answered)
    [event] = gw.app.audit.iterate(EventFilter(kind="post-decision"))
    assert event.rule == "sensitive-secure-post" and event.metadata["weight_kg"] == 0.0


async def test_the_portal_pages_carry_the_organisations_name(gw: Harness) -> None:
    """A family's portal pages are headed and titled with the organisation, not casegate."""
    gw.verify(MUM, "FD24P01234")
    assert await gw.run(gw.send, STAFF, [MUM], protected_message(to=MUM)) == {}
    (notice,) = [m for m in gw.sink.messages if m.rcpt_tos == (MUM,)]
    found = PORTAL_LINK.search(text_of(notice))
    assert found
    async with gw.web_client() as client:
        async with client.get(found.group(1)) as landing:
            assert landing.status == 200
            assert _brand_and_title(await landing.text()) == (
                ORGANISATION, f"Secure message · {ORGANISATION}")
        async with client.get("/portal/not-a-token") as missing:
            assert missing.status == 404
            page = await missing.text()
    assert _brand_and_title(page) == (ORGANISATION, f"This link does not work · {ORGANISATION}")
    assert "casegate" not in page.replace("/static/casegate.css", "")


async def test_the_verification_page_carries_the_organisations_name(gw: Harness) -> None:
    """The page a verification link opens is headed and titled with the organisation."""
    async with gw.web_client() as client, client.get("/v/not-a-token") as page:
        text = await page.text()
    brand, title = _brand_and_title(text)
    assert brand == ORGANISATION and title.endswith(f" · {ORGANISATION}")
    assert f"the person at {ORGANISATION}" in " ".join(text.split())
    assert "casegate" not in text.replace("/static/casegate.css", "")
