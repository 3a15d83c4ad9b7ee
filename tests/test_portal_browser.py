"""The secure portal in a real headless Chromium: code, read, download, reply; on a phone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.certs import ServerCert
from tests.portalweb import ATTACHMENT, SECRET_BODY, STAFF, PortalWeb, protected_message, text_of
from tests.sink import Sink
from tests.tools import CHROMIUM, CHROMIUM_ARGS  # one launch recipe

pytestmark = [
    pytest.mark.browser,
    pytest.mark.usefixtures("chromium"),  # skipped without Chromium, failed under CI
]


@pytest.fixture
async def portal(tmp_path: Path, sink: Sink, server_cert: ServerCert) -> AsyncIterator[PortalWeb]:
    async with PortalWeb(tmp_path / "data", sink, server_cert) as running:
        yield running


async def test_recipient_reads_downloads_and_replies_in_chromium(portal: PortalWeb,
                                                                 tmp_path: Path) -> None:
    """On a phone-sized screen, without JavaScript: code by email, message, file, reply."""
    from playwright.async_api import async_playwright

    token = await portal.deliver(protected_message())
    upload = tmp_path / "my-statement.pdf"
    upload.write_bytes(b"%PDF-1.4 statement from the parent")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                ignore_https_errors=True, java_script_enabled=False, accept_downloads=True,
                viewport={"width": 390, "height": 844}, is_mobile=True)
            page = await context.new_page()
            await page.goto(f"{portal.base}/portal/{token}", timeout=20_000)
            assert await page.get_by_role("heading", name="A secure message is waiting for you") \
                .is_visible()
            await page.get_by_role("button", name="Email me a code").click()
            await page.wait_for_url("**?sent=1")
            await page.get_by_label("Six-digit code").fill(portal.last_code())
            await page.get_by_role("button", name="Open the message").click()
            await page.wait_for_url(f"**/portal/{token}")
            assert SECRET_BODY in await page.locator("section.mail-body").inner_text()

            async with page.expect_download() as waiting:
                await page.get_by_role("link", name="Court report – Poppy.pdf").click()
            download = await waiting.value
            assert download.suggested_filename == "Court report – Poppy.pdf"
            saved = tmp_path / "downloaded.pdf"
            await download.save_as(saved)
            assert saved.read_bytes() == ATTACHMENT

            await page.get_by_label("Your reply").fill("I have read it, thank you.")
            await page.get_by_label("Attach files (optional)").set_input_files(str(upload))
            await page.get_by_role("button", name="Send secure reply").click()
            assert await page.get_by_role("heading", name="Your reply was sent").is_visible()
        finally:
            await browser.close()
    reply = portal.sink.messages[-1]
    assert reply.rcpt_tos == (STAFF,) and "I have read it" in text_of(reply)
    assert b"statement from the parent" in reply.data or b"JVBERi0xLjQgc3RhdGVtZW50" in reply.data
