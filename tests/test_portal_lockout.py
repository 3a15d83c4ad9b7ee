"""Cumulative portal lockout (issue 18, point 7): after `portal.max_wrong_codes` wrong codes in
total for one copy, over every code asked for, the copy is locked; its page tells the recipient
to ask the sender, and only the sender's re-issue (a new link mailed to the recipient, the old
one dead) opens it again. The lock and the re-issue are audit events.

The web tests run the portal pages over real TLS with a real upstream sink (tests/portalweb.py);
the CLI test runs `casegate messages reissue` on a real data directory and its outbox.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import aiohttp
import pytest

from gateway.app import OUTBOX_DIR, App
from gateway.audit.store import EventFilter, StoredEvent
from gateway.cli import main
from gateway.stores.portal import DEFAULT_MAX_WRONG_CODES, CodeCheck
from tests.certs import ServerCert
from tests.portalweb import (
    LINK,
    OTHER_STAFF,
    PASSWORD,
    SECRET_BODY,
    STAFF,
    PortalWeb,
    protected_message,
)
from tests.sink import Sink
from transports.crypto import seal


@pytest.fixture
async def portal(tmp_path: Path, sink: Sink, server_cert: ServerCert) -> AsyncIterator[PortalWeb]:
    async with PortalWeb(tmp_path / "data", sink, server_cert) as running:
        yield running


def _events(app: App, kind: str) -> list[StoredEvent]:
    return list(app.audit.iterate(EventFilter(kind=kind)))


def _basic(address: str) -> dict[str, str]:
    token = base64.b64encode(f"{address}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def _guess_wrong(portal: PortalWeb, client: aiohttp.ClientSession, token: str,
                       csrf: str, times: int) -> list[int]:
    """Enter `times` wrong codes (never the one just emailed); the statuses."""
    wrong = f"{(int(portal.last_code()) + 1) % 1_000_000:06d}"
    statuses = []
    for _ in range(times):
        async with client.post(f"/portal/{token}/verify",
                               data={"csrf_token": csrf, "code": wrong}) as answer:
            statuses.append(answer.status)
            last = await answer.text()
    assert last
    return statuses


async def test_twenty_wrong_codes_over_four_codes_lock_the_copy(portal: PortalWeb) -> None:
    """Four codes, five wrong tries each: the 20th wrong code (the default limit) locks the
    copy; from then on its page says ask the sender, and no code is sent any more."""
    assert DEFAULT_MAX_WRONG_CODES == 20
    token = await portal.deliver(protected_message())
    async with portal.client() as client:
        statuses: list[int] = []
        for _ in range(4):
            csrf = await portal.request_code(client, token)
            statuses += await _guess_wrong(portal, client, token, csrf, 5)
        assert statuses == [401] * 19 + [403]
        sent = len(portal.sink.messages)
        async with client.get(f"/portal/{token}") as page:
            text = await page.text()
            assert page.status == 403 and "This message is locked" in text
            assert f"Ask {STAFF} to send it to you again" in text
        async with client.post(f"/portal/{token}/code", data={"csrf_token": csrf}) as asked:
            assert asked.status == 403
        assert len(portal.sink.messages) == sent  # no more codes mailed to the recipient
    [locked] = _events(portal.app, "portal-copy-locked")
    assert locked.grade == "high" and locked.metadata["wrong_codes"] == 20


async def test_the_sender_reissues_a_locked_copy_with_a_new_link(portal: PortalWeb) -> None:
    """The sender's re-issue mails a new link; the old link is dead; the new one opens the
    message with a fresh code. Another member of staff cannot re-issue it."""
    portal.deps.max_wrong_codes = 3
    token = await portal.deliver(protected_message())
    (copy,) = portal.store.list()
    async with portal.client() as client:
        csrf = await portal.request_code(client, token)
        assert await _guess_wrong(portal, client, token, csrf, 3) == [401, 401, 403]
        async with client.post(f"/api/messages/{copy.id}/reissue",
                               headers=_basic(OTHER_STAFF)) as other:
            assert other.status == 404
        before = len(portal.sink.messages)
        async with client.post(f"/api/messages/{copy.id}/reissue",
                               headers=_basic(STAFF)) as reissued:
            assert reissued.status == 200 and (await reissued.json())["state"] == "active"
        [notice] = portal.sink.messages[before:]
        assert notice.rcpt_tos == (copy.recipient,)
        new_token = portal.link_in(notice)
        assert new_token != token
        async with client.get(f"/portal/{token}") as old:
            assert old.status == 404
    async with portal.client() as fresh:
        await portal.sign_in(fresh, new_token)
        async with fresh.get(f"/portal/{new_token}") as page:
            assert page.status == 200 and SECRET_BODY in await page.text()
    [event] = _events(portal.app, "portal-reissue")
    assert event.metadata["by"] == STAFF and event.metadata["was_locked"] is True
    assert event.metadata["wrong_codes"] == 3 and event.metadata["notified"] is True


async def test_wrong_codes_count_across_codes_until_the_reissue(portal: PortalWeb) -> None:
    """The count is per copy, not per code: a new code does not reset it, a re-issue does."""
    portal.deps.max_wrong_codes = 6
    token = await portal.deliver(protected_message())
    (copy,) = portal.store.list()
    async with portal.client() as client:
        csrf = await portal.request_code(client, token)
        await _guess_wrong(portal, client, token, csrf, 4)
        csrf = await portal.request_code(client, token)
        await _guess_wrong(portal, client, token, csrf, 1)
        assert portal.store.wrong_codes(copy.id) == 5 and not portal.store.is_locked(copy.id)
        async with client.post(f"/api/messages/{copy.id}/reissue",
                               headers=_basic(STAFF)) as reissued:
            assert reissued.status == 200
    assert portal.store.wrong_codes(copy.id) == 0


async def test_a_withdrawn_copy_is_not_reissued(portal: PortalWeb) -> None:
    """Re-issue is for active copies: a withdrawn one stays withdrawn (409), no mail sent."""
    await portal.deliver(protected_message())
    (copy,) = portal.store.list()
    async with portal.client() as client:
        async with client.post(f"/api/messages/{copy.id}/revoke", headers=_basic(STAFF)):
            pass
        sent = len(portal.sink.messages)
        async with client.post(f"/api/messages/{copy.id}/reissue",
                               headers=_basic(STAFF)) as refused:
            assert refused.status == 409 and "revoked" in (await refused.json())["error"]
    assert len(portal.sink.messages) == sent
    assert _events(portal.app, "portal-reissue") == []


def test_messages_reissue_unlocks_and_mails_a_new_link(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`casegate messages reissue ID` lifts the lock and writes the recipient's new link to the
    way out (here the outbox); exit 1 for a copy that is not active."""
    data = tmp_path / "data"
    now = datetime.now(UTC)
    app = App.open(None, data)
    try:
        sealed = seal(app.keyring, b"body", copy_id="c1", recipient="mum@example.org")
        app.portal.add_copy(copy_id="c1", link_token="old-link", copy_key="c1",
                            sender=STAFF, recipient="mum@example.org", decision_id="d1",
                            sealed=sealed, size=4, attachment_parts=[], now=now,
                            expires=now + timedelta(days=30))
        app.portal.activate("c1")
        app.portal.issue_code("c1", now)
        assert app.portal.check_code("c1", "no-such", now, max_wrong_codes=1) \
            is CodeCheck.COPY_LOCKED
    finally:
        app.close()
    assert main(["messages", "reissue", "c1", "--by", STAFF, "--data", str(data)]) == 0
    assert "mum@example.org was sent a new link (it was locked" in capsys.readouterr().out
    [mail] = list((data / OUTBOX_DIR / "new").iterdir())
    notice = message_from_bytes(mail.read_bytes(), policy=default_policy)
    body = notice.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
    assert body is not None
    found = LINK.search(str(body.get_content()))
    assert found is not None and found.group(1) != "old-link"
    app = App.open(None, data)
    try:
        assert not app.portal.is_locked("c1")
        assert app.portal.by_link(found.group(1)) is not None
        assert app.portal.by_link("old-link") is None
        assert app.portal.revoke("c1", now)
        [event] = _events(app, "portal-reissue")
        assert event.metadata["by"] == STAFF
    finally:
        app.close()
    assert main(["messages", "reissue", "c1", "--data", str(data)]) == 1
    assert "revoked, not active" in capsys.readouterr().out

