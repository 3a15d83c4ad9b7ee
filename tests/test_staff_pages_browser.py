"""The staff pages in a real headless Chromium at phone (390x844) and desktop (1280x800) sizes.

A practitioner and a governance lead sign in; each lands on the home page listing the pages
their roles allow, and no page (home, governance, an event, post with its answer, the cases
and one case with long addresses) is wider than the screen at either size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from policies.cases import DetailKind, PersonRole
from tests.gateway_harness import GOVERNANCE, PASSWORD, STAFF, Harness, running_gateway
from tests.sink import Sink
from tests.tools import CHROMIUM, CHROMIUM_ARGS  # one launch recipe

CASE = "ZE26C00001"
SIZES = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
LONG_ADDRESS = "firstname.middlename.lastname-family@children-services.example-county.gov.uk"
FITS = "document.documentElement.scrollWidth <= window.innerWidth"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("chromium"),  # skipped without Chromium, failed under CI
]


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    """The whole gateway, two staff accounts, and events with long addresses in the trail."""
    async with running_gateway(tmp_path, sink) as running:
        for i in range(3):
            running.app.audit.record("refusal", rule="personal-address", sender=STAFF,
                                     recipients=[LONG_ADDRESS, f"parent{i}@gmail.com"],
                                     case_numbers=["ZE26C00001", "ZE26C00002"], urgent=True)
        work = running.app.casework()
        work.record_person(CASE, name="Ellie Mae Whitfield", role=PersonRole.CHILD,
                           date_of_birth=None, by=STAFF, channel="cli")
        work.record_detail(CASE, text="14 Larkspur Close", kind=DetailKind.ADDRESS,
                           may_go_to=[LONG_ADDRESS, "children-services.example-county.gov.uk"],
                           by=STAFF, channel="cli")
        work.shield(CASE, access=[STAFF, GOVERNANCE], by=STAFF, channel="cli")
        yield running


@pytest.mark.parametrize(("who", "pages"), [
    (STAFF, ["Post", "My verifications", "Cases"]),
    (GOVERNANCE, ["Audit trail", "Post", "My verifications", "Cases"]),
])
async def test_staff_pages_fit_phone_and_desktop(gw: Harness, who: str,
                                                 pages: list[str]) -> None:
    """Sign in, land on home with the right pages, and no page overflows at either size."""
    from playwright.async_api import async_playwright

    base = f"https://localhost:{gw.gateway.http_port}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(ignore_https_errors=True,
                                                java_script_enabled=False,
                                                viewport=SIZES["phone"])
            page = await context.new_page()
            await page.goto(f"{base}/", timeout=20_000)
            assert "/login" in page.url
            await page.get_by_label("Email address").fill(who)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/home")
            cards = page.locator("ul.cards li > a")
            assert await cards.all_inner_texts() == pages
            current = page.locator('nav.staff a[aria-current="page"]')
            assert await current.all_inner_texts() == ["Home"]

            paths = ["/home", "/post", "/cases", f"/cases/{CASE}"]
            if who == GOVERNANCE:
                paths += ["/governance", "/governance/events/1"]
            for size, viewport in SIZES.items():
                await page.set_viewport_size(viewport)
                for path in paths:
                    await page.goto(f"{base}{path}", timeout=20_000)
                    assert await page.evaluate(FITS), f"{path} overflows at {size}"
                await page.goto(f"{base}/post", timeout=20_000)
                await page.get_by_label("Item").select_option(label="a court report")
                await page.get_by_label("A verified email address exists").check()
                await page.get_by_role("button", name="Ask").click()
                await page.wait_for_load_state()
                assert await page.locator("section.post-answer").is_visible()
                assert await page.evaluate(FITS), f"the post answer overflows at {size}"
        finally:
            await browser.close()
