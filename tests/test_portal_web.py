"""The secure portal over real TLS with a real upstream sink: codes, reading, replies, control."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from gateway.audit.store import EventFilter
from gateway.stores.portal import PORTAL_DB_FILE, CopyState
from tests.certs import ServerCert
from tests.portalweb import (
    ATTACHMENT,
    GOVERNANCE,
    OTHER_STAFF,
    PASSWORD,
    RECIPIENT,
    SECRET_BODY,
    STAFF,
    PortalWeb,
    hidden,
    protected_message,
    text_of,
)
from tests.sink import Sink, Step


@pytest.fixture
async def portal(tmp_path: Path, sink: Sink, server_cert: ServerCert) -> AsyncIterator[PortalWeb]:
    async with PortalWeb(tmp_path / "data", sink, server_cert) as running:
        yield running


def _kinds(portal: PortalWeb) -> list[str]:
    return [e.kind for e in portal.app.audit.iterate(EventFilter())]


def _basic(address: str) -> dict[str, str]:
    token = base64.b64encode(f"{address}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_notification_carries_no_content(portal: PortalWeb) -> None:
    """The upstream sees only the notification: no body, subject or attachment bytes."""
    await portal.deliver(protected_message())
    (notice,) = portal.sink.messages
    assert notice.rcpt_tos == (RECIPIENT,) and notice.mail_from == STAFF
    assert b"SECRET-BODY-MARKER" not in notice.data and b"ATTACHMENT-MARKER" not in notice.data
    assert b"Poppy" not in notice.data and b"FD24P01234" not in notice.data
    assert base64.b64encode(ATTACHMENT[:30])[:20] not in notice.data
    assert STAFF in text_of(notice) and "/portal/" in text_of(notice)
    (copy,) = portal.store.list()
    assert copy.state is CopyState.ACTIVE and copy.decision_id == "d" * 32


async def test_read_and_download_byte_identical_after_code(portal: PortalWeb) -> None:
    """With the emailed code the recipient reads the text and downloads the attachment."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.get(f"/portal/{token}") as page:
            html = await page.text()
            assert page.status == 200 and SECRET_BODY in html
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            assert page.headers["Referrer-Policy"] == "no-referrer"
        link = hidden_link(html)
        async with client.get(link) as download:
            assert download.status == 200
            assert await download.read() == ATTACHMENT
            assert download.content_type == "application/pdf"
            assert "Court%20report" in download.headers["Content-Disposition"]
            assert "sandbox" in download.headers["Content-Security-Policy"]
    (copy,) = portal.store.list()
    assert (copy.views, copy.downloads) == (1, 1) and copy.first_opened is not None
    kinds = _kinds(portal)
    assert {"portal-stored", "portal-code-sent", "portal-login", "portal-view",
            "portal-download"} <= set(kinds)


def hidden_link(html: str) -> str:
    start = html.index('href="/portal/') + len('href="')
    return html[start:html.index('"', start)]


async def test_five_wrong_codes_burn_the_code(portal: PortalWeb) -> None:
    """Four wrong tries are refused, the fifth locks; then even the right code fails."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        csrf = await portal.request_code(client, token)
        right = portal.last_code()
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"
        for attempt in range(5):
            async with client.post(f"/portal/{token}/verify",
                                   data={"csrf_token": csrf, "code": wrong}) as answer:
                assert answer.status == 401
                text = await answer.text()
                assert ("too many times" in text) == (attempt == 4)
        async with client.post(f"/portal/{token}/verify",
                               data={"csrf_token": csrf, "code": right}) as late:
            assert late.status == 401 and "Ask for a new code" in await late.text()
    assert "portal-lockout" in _kinds(portal)


async def test_code_is_single_use_and_lasts_ten_minutes(portal: PortalWeb) -> None:
    """A code older than ten minutes fails; a used code cannot open a second session."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        csrf = await portal.request_code(client, token)
        portal.clock.advance(timedelta(minutes=10, seconds=1))
        async with client.post(f"/portal/{token}/verify",
                               data={"csrf_token": csrf, "code": portal.last_code()}) as old:
            assert old.status == 401
    async with portal.client() as first, portal.client() as second:
        await portal.sign_in(first, token)
        code = portal.last_code()
        async with second.get(f"/portal/{token}") as page:
            csrf = hidden(await page.text(), "csrf_token")
        async with second.post(f"/portal/{token}/verify",
                               data={"csrf_token": csrf, "code": code}) as reused:
            assert reused.status == 401


async def test_session_cookie_is_host_prefixed_and_rotated(portal: PortalWeb) -> None:
    """The cookie is __Host-, Secure, HttpOnly, SameSite=Strict, and replaced at login."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        async with client.get(f"/portal/{token}") as page:
            cookie = page.cookies["__Host-casegate-portal"]
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
            assert cookie["path"] == "/"
            assert "script-src" not in page.headers["Content-Security-Policy"]
            assert "default-src 'none'" in page.headers["Content-Security-Policy"]
            before = cookie.value
        await portal.sign_in(client, token)
        after = client.cookie_jar.filter_cookies(URL(portal.base))["__Host-casegate-portal"].value
        assert after != before


async def test_forms_need_the_csrf_token(portal: PortalWeb) -> None:
    """A code request without the session's CSRF token sends nothing."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        async with client.get(f"/portal/{token}"):
            pass
        async with client.post(f"/portal/{token}/code", data={"csrf_token": "forged"}) as bad:
            assert bad.status == 403
    assert len(portal.sink.messages) == 1  # the notification only


async def test_a_copy_opens_only_with_its_own_session(portal: PortalWeb) -> None:
    """A session for one copy neither reads another copy nor downloads its attachments."""
    mine = await portal.deliver(protected_message(), key="a")
    theirs = await portal.deliver(protected_message(to="dad@example.net"),
                                  recipient="dad@example.net", key="b")
    async with portal.client() as client:
        await portal.sign_in(client, mine)
        async with client.get(f"/portal/{mine}") as page:
            link = hidden_link(await page.text())
        async with client.get(f"/portal/{theirs}") as other:
            assert SECRET_BODY not in await other.text()
        attachment_id = link.rsplit("/", 1)[1]
        async with client.get(f"/portal/{theirs}/attachments/{attachment_id}") as stolen:
            assert stolen.status == 403
    code_mails = [m for m in portal.sink.messages if m.mail_from == "casegate@cafcass.gov.uk"]
    assert all(m.rcpt_tos == (RECIPIENT,) for m in code_mails)


async def test_html_body_is_sanitised(portal: PortalWeb) -> None:
    """Scripts, remote images, styles and event handlers never reach the recipient's page."""
    html = ('<p onclick="steal()">Hello <b>there</b></p><script>alert(1)</script>'
            '<img src="https://tracker.example/pixel.gif"><style>body{}</style>'
            '<a href="javascript:alert(1)">x</a>')
    token = await portal.deliver(protected_message(html=html))
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.get(f"/portal/{token}") as page:
            body = await page.text()
    assert "<b>there</b>" in body
    for bad in ("<script", "alert(1)", "tracker.example", "onclick", "<style", "javascript:"):
        assert bad not in body


async def test_secure_reply_with_attachment_reaches_the_sender(portal: PortalWeb) -> None:
    """The reply and its file go to the sender's mailbox through the upstream."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.get(f"/portal/{token}") as page:
            csrf = hidden(await page.text(), "csrf_token")
        form = aiohttp.FormData()
        form.add_field("csrf_token", csrf)
        form.add_field("text", "Thank you, I will attend.")
        form.add_field("files", b"my statement bytes", filename="statement.pdf",
                       content_type="application/pdf")
        async with client.post(f"/portal/{token}/reply", data=form) as answer:
            assert answer.status == 200 and "Your reply was sent" in await answer.text()
    reply = portal.sink.messages[-1]
    assert reply.rcpt_tos == (STAFF,)
    parsed = message_from_bytes(reply.data, policy=default_policy)
    assert "Thank you, I will attend." in text_of(reply)
    (attached,) = list(parsed.iter_attachments())  # type: ignore[attr-defined]
    assert attached.get_filename() == "statement.pdf"
    assert attached.get_payload(decode=True) == b"my statement bytes"
    assert "portal-reply" in _kinds(portal)
    assert portal.store.list()[0].replies == 1
    # It answers the original as a mail client would, so the sender's client threads it.
    assert parsed["Subject"] == "Re: Poppy Example FD24P01234 report"
    assert parsed["In-Reply-To"] == "<portal-test@cafcass.gov.uk>"
    assert parsed["References"] == "<portal-test@cafcass.gov.uk>"


async def test_reply_and_sign_out_are_distinct_buttons(portal: PortalWeb) -> None:
    """The message page's reply is the primary button; sign-out is a separate, secondary one."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.get(f"/portal/{token}") as page:
            text = await page.text()
    reply_form, _, rest = text.partition('class="signout-end"')
    assert '<button type="submit">Send secure reply</button>' in reply_form
    assert '<button type="submit" class="secondary">Sign out</button>' in rest
    assert "Finished reading?" in rest  # a sentence between the two: not adjacent


async def test_a_code_before_any_was_asked_for_says_ask_first(portal: PortalWeb) -> None:
    """Entering a code before asking for one says to request a code first, not 'expired'."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        async with client.get(f"/portal/{token}") as page:
            csrf = hidden(await page.text(), "csrf_token")
        async with client.post(f"/portal/{token}/verify",
                               data={"csrf_token": csrf, "code": "123456"}) as answer:
            text = await answer.text()
            assert answer.status == 401
            assert "Request a code first" in text and "expired" not in text


async def test_sender_revokes_through_the_api(portal: PortalWeb) -> None:
    """Only the sender (or governance) sees and revokes; the recipient then sees it withdrawn."""
    token = await portal.deliver(protected_message())
    (copy,) = portal.store.list()
    async with portal.client() as client:
        async with client.get("/api/messages", headers=_basic(STAFF)) as listing:
            assert [m["id"] for m in (await listing.json())["messages"]] == [copy.id]
        async with client.get(f"/api/messages/{copy.id}", headers=_basic(OTHER_STAFF)) as other:
            assert other.status == 404
        async with client.get(f"/api/messages/{copy.id}", headers=_basic(GOVERNANCE)) as gov:
            assert (await gov.json())["state"] == "active"
        async with client.post(f"/api/messages/{copy.id}/revoke",
                               headers=_basic(STAFF)) as revoked:
            assert (await revoked.json())["state"] == "revoked"
        async with client.get(f"/portal/{token}") as page:
            assert page.status == 410 and "withdrew this message" in await page.text()
    assert "portal-revoke" in _kinds(portal)


async def test_expiry_destroys_the_copy_and_its_key(portal: PortalWeb) -> None:
    """After 30 days the link says expired and the ciphertext and wrapped key are gone."""
    token = await portal.deliver(protected_message())
    (copy,) = portal.store.list()
    portal.clock.advance(timedelta(days=30, seconds=1))
    async with portal.client() as client, client.get(f"/portal/{token}") as page:
        assert page.status == 410 and "expired" in await page.text()
    assert portal.store.sealed(copy.id) is None
    with sqlite3.connect(portal.data_dir / PORTAL_DB_FILE) as db:
        row = db.execute("SELECT wrapped_key, key_id FROM portal_copy").fetchone()
        contents = db.execute("SELECT COUNT(*) FROM portal_content").fetchone()[0]
    assert row == (None, None) and contents == 0
    assert "portal-expiry" in _kinds(portal)


async def test_tampered_copy_gives_a_clear_error(portal: PortalWeb) -> None:
    """A changed ciphertext byte is detected: an error page, never garbage."""
    token = await portal.deliver(protected_message())
    with sqlite3.connect(portal.data_dir / PORTAL_DB_FILE) as db:
        (blob,) = db.execute("SELECT ciphertext FROM portal_content").fetchone()
        changed = bytearray(blob)
        changed[40] ^= 1
        db.execute("UPDATE portal_content SET ciphertext = ?", (bytes(changed),))
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.get(f"/portal/{token}") as page:
            assert page.status == 500
            text = await page.text()
    assert "cannot be opened" in text and "SECRET" not in text


async def test_code_requests_are_throttled_per_copy(portal: PortalWeb) -> None:
    """Five codes an hour per copy; the sixth request is refused with 429."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        async with client.get(f"/portal/{token}") as page:
            csrf = hidden(await page.text(), "csrf_token")
        statuses = []
        for _ in range(6):
            async with client.post(f"/portal/{token}/code", data={"csrf_token": csrf},
                                   allow_redirects=False) as answer:
                statuses.append(answer.status)
    assert statuses == [303] * 5 + [429]
    assert len(portal.sink.messages) == 6  # notification + five codes


async def test_upstream_trouble_keeps_nothing_and_retry_sends_once(portal: PortalWeb) -> None:
    """A refused notification leaves no copy; the retry delivers; a second retry sends nothing."""
    portal.sink.fail(Step.DATA, "451 4.3.0 try later", times=1)
    from transports.base import Copy, Outcome

    copy = Copy(key="retry", mail_from=STAFF, recipients=(RECIPIENT,), data=protected_message())
    first = await portal.delivery.deliver([copy])
    assert first.outcome is Outcome.TEMPORARY and portal.store.list() == ()
    assert (await portal.delivery.deliver([copy])).ok
    assert (await portal.delivery.deliver([copy])).ok
    assert len(portal.store.list()) == 1 and len(portal.sink.messages) == 1


async def test_unknown_link_and_client_rate_limit(portal: PortalWeb) -> None:
    """A made-up link is a plain 404; a flood from one address is cut off with 429."""
    portal.deps.per_client.limit = 3
    async with portal.client() as client:
        statuses = []
        for _ in range(4):
            async with client.get("/portal/not-a-real-token") as page:
                statuses.append(page.status)
    assert statuses == [404, 404, 404, 429]


async def test_attachment_ids_belong_to_their_copy(portal: PortalWeb) -> None:
    """Signed in to one copy, another copy's attachment id is not found there."""
    mine = await portal.deliver(protected_message(), key="a")
    theirs = await portal.deliver(protected_message(to="dad@example.net"),
                                  recipient="dad@example.net", key="b")
    async with portal.client() as mum, portal.client() as dad:
        await portal.sign_in(mum, mine)
        async with mum.get(f"/portal/{mine}") as page:
            mums_attachment = hidden_link(await page.text()).rsplit("/", 1)[1]
        await portal.sign_in(dad, theirs)
        async with dad.get(f"/portal/{theirs}/attachments/{mums_attachment}") as crossed:
            assert crossed.status == 404


async def test_sign_out_ends_the_session_and_reply_needs_one(portal: PortalWeb) -> None:
    """After signing out the message needs a new code, and a reply is refused."""
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        await portal.sign_in(client, token)
        async with client.get(f"/portal/{token}") as page:
            csrf = hidden(await page.text(), "csrf_token")
        async with client.post(f"/portal/{token}/signout", data={"csrf_token": csrf},
                               allow_redirects=False) as out:
            assert out.status == 303
        async with client.get(f"/portal/{token}") as page:
            assert SECRET_BODY not in await page.text()
        form = aiohttp.FormData()
        form.add_field("csrf_token", csrf)
        form.add_field("text", "hello")
        async with client.post(f"/portal/{token}/reply", data=form) as refused:
            assert refused.status == 403
    assert all(m.rcpt_tos != (STAFF,) for m in portal.sink.messages)


async def test_subject_in_notification_only_when_configured(portal: PortalWeb) -> None:
    """With notify_subject on, the notification names the subject; still no body."""
    from dataclasses import replace

    portal.delivery.settings = replace(portal.delivery.settings, notify_subject=True)
    await portal.deliver(protected_message())
    (notice,) = portal.sink.messages
    parsed = message_from_bytes(notice.data, policy=default_policy)
    assert "FD24P01234" in str(parsed["Subject"])
    assert b"SECRET-BODY-MARKER" not in notice.data
