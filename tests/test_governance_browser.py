"""The governance view end to end in a real headless Chromium: sign in, filter, open, export."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.certs import ServerCert
from tests.staffweb import GOVERNANCE, PASSWORD, PRACTITIONER, StaffWeb
from tests.tools import CHROMIUM, CHROMIUM_ARGS  # one launch recipe

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("chromium"),  # skipped without Chromium, failed under CI
]


@pytest.fixture
async def staff_web(tmp_path: Path, server_cert: ServerCert) -> AsyncIterator[StaffWeb]:
    """The staff pages on real TLS with graded events in the trail."""
    async with StaffWeb(tmp_path / "data", server_cert) as running:
        for i in range(3):
            running.audit.record("refusal", rule="personal-address", sender=PRACTITIONER,
                                 recipients=[f"parent{i}@gmail.com"],
                                 case_numbers=[f"ZE26C0000{i}"], stage="rcpt")
        running.audit.record("refusal", rule="editable-document", sender=PRACTITIONER,
                             recipients=["solicitor@lawfirm.co.uk"], attachment_types=["docx"])
        yield running


async def test_governance_review_in_chromium(staff_web: StaffWeb, tmp_path: Path) -> None:
    """A governance user signs in, filters to high grade, opens an event and exports CSV."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(ignore_https_errors=True, java_script_enabled=False,
                                                accept_downloads=True)
            page = await context.new_page()
            await page.goto(f"{staff_web.base}/governance", timeout=20_000)
            assert "/login" in page.url
            await page.get_by_label("Email address").fill(GOVERNANCE)
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.wait_for_url("**/governance")
            assert await page.get_by_role("heading", name="Audit trail").is_visible()

            await page.get_by_label("Grade").select_option("high")
            await page.get_by_role("button", name="Apply filters").click()
            await page.wait_for_url("**/governance?*grade=high*")
            rows = page.locator("table caption + thead + tbody tr")
            assert await rows.count() == 3
            assert await page.locator("figure.chart svg rect").count() >= 1

            await rows.first.get_by_role("link").click()
            await page.wait_for_url("**/governance/events/*")
            policy = await page.locator("blockquote.policy").inner_text()
            assert "personal email address" in policy and "IA 3.2" in policy

            await page.get_by_role("link", name="Back to the audit trail").click()
            await page.wait_for_url("**/governance?*grade=high*")
            async with page.expect_download() as waiting:
                await page.get_by_role("link", name="Export these events as CSV").click()
            download = await waiting.value
            saved = tmp_path / "export.csv"
            await download.save_as(saved)
            exported = list(csv.DictReader(io.StringIO(saved.read_text("utf-8"))))
            assert [r["rule"] for r in exported] == ["personal-address"] * 3
            assert exported[2]["case_numbers"] == "ZE26C00002"
        finally:
            await browser.close()
