"""Staff sign-in over real HTTPS: cookies, CSRF, lockout, roles, headers, audit events; the
accounts and sessions on SQLite and on PostgreSQL (the `database` fixture), and on two nodes."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from yarl import URL

from gateway.audit.trail import EventFilter
from gateway.stores.sessions import SESSIONS_FILE, SessionStore
from gateway.web.auth import SESSION_COOKIE, safe_next
from tests.certs import ServerCert
from tests.staffweb import GOVERNANCE, PRACTITIONER, StaffWeb, hidden
from transports.database import Database


@pytest.fixture
async def staff_web(tmp_path: Path, server_cert: ServerCert,
                    database: Database) -> AsyncIterator[StaffWeb]:
    """The staff pages on a real TLS socket with two accounts."""
    async with StaffWeb(tmp_path / "data", server_cert, database) as running:
        yield running


def kinds(staff_web: StaffWeb) -> list[str]:
    return [e.kind for e in staff_web.audit.iterate(EventFilter())]


async def test_sign_in_sets_a_host_prefixed_strict_cookie(staff_web: StaffWeb) -> None:
    """A right password redirects with a Secure, HttpOnly, SameSite=Strict __Host- cookie."""
    async with staff_web.client() as client:
        answer = await staff_web.sign_in(client, GOVERNANCE)
        assert answer.status == 303
        assert answer.headers["Location"] == "/governance"
        cookie = next(v for k, v in answer.headers.items()
                      if k == "Set-Cookie" and v.startswith(SESSION_COOKIE + "="))
        for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
            assert attribute in cookie
        assert "Domain" not in cookie
        async with client.get("/governance") as page:
            assert page.status == 200
            assert "Signed in as" in await page.text()
    assert kinds(staff_web)[-1] == "login"


async def test_session_token_rotates_at_every_sign_in(staff_web: StaffWeb) -> None:
    """Signing in again issues a new token and the old one stops working."""
    async with staff_web.client() as client:
        await staff_web.sign_in(client, GOVERNANCE)
        first = client.cookie_jar.filter_cookies(URL(staff_web.base))[SESSION_COOKIE].value
        await staff_web.sign_in(client, GOVERNANCE)
        second = client.cookie_jar.filter_cookies(URL(staff_web.base))[SESSION_COOKIE].value
    assert first != second
    async with staff_web.client() as stale:
        stale.cookie_jar.update_cookies({SESSION_COOKIE: first})
        async with stale.get("/governance", allow_redirects=False) as page:
            assert page.status == 303
            assert page.headers["Location"].startswith("/login?next=")


async def test_wrong_password_is_refused_and_audited(staff_web: StaffWeb) -> None:
    """A wrong password answers 401 with one sentence and records a login-failure event."""
    async with staff_web.client() as client:
        answer = await staff_web.sign_in(client, GOVERNANCE, "not the password")
        assert answer.status == 401
        assert SESSION_COOKIE not in client.cookie_jar.filter_cookies(URL(staff_web.base))
    failure = staff_web.audit.page(EventFilter(kind="login-failure"))
    assert len(failure) == 1 and failure[0].sender == GOVERNANCE
    assert failure[0].grade == "low"
    assert "not the password" not in str(failure[0].as_dict())


async def test_repeated_failures_lock_the_account_out(staff_web: StaffWeb) -> None:
    """Five failures lock out even the right password and record a high-grade lockout."""
    async with staff_web.client() as client:
        for _ in range(5):
            answer = await staff_web.sign_in(client, PRACTITIONER, "guess guess guess")
            assert answer.status == 401
        answer = await staff_web.sign_in(client, PRACTITIONER)
        assert answer.status == 429
    lockouts = staff_web.audit.page(EventFilter(kind="login-lockout"))
    assert len(lockouts) == 1 and lockouts[0].grade == "high"
    assert kinds(staff_web)[-1] == "login-refused"


async def test_sign_in_without_the_form_token_is_refused(staff_web: StaffWeb) -> None:
    """A cross-site login post (no double-submit token) is 403 and signs nobody in."""
    async with staff_web.client() as client:
        async with client.post("/login", data={"address": GOVERNANCE, "password": "x" * 20,
                                               "signin_token": "forged"},
                               allow_redirects=False) as answer:
            assert answer.status == 403
            assert "expired" in await answer.text()
    assert "login" not in kinds(staff_web)


async def test_logout_needs_the_csrf_token_and_ends_the_session(staff_web: StaffWeb) -> None:
    """Sign-out without the token is 403; with it the session is gone."""
    async with staff_web.client() as client:
        await staff_web.sign_in(client, GOVERNANCE)
        async with client.post("/logout", data={}, allow_redirects=False) as answer:
            assert answer.status == 403
        async with client.get("/governance") as page:
            token = hidden(await page.text(), "csrf_token")
        async with client.post("/logout", data={"csrf_token": token},
                               allow_redirects=False) as answer:
            assert answer.status == 303 and answer.headers["Location"] == "/login"
        async with client.get("/governance", allow_redirects=False) as page:
            assert page.status == 303
    assert kinds(staff_web)[-1] == "logout"


async def test_a_disabled_account_loses_its_session(staff_web: StaffWeb) -> None:
    """Disabling an account ends its live sessions at the next request."""
    async with staff_web.client() as client:
        await staff_web.sign_in(client, GOVERNANCE)
        async with client.get("/governance", allow_redirects=False) as page:
            assert page.status == 200
        staff_web.users.disable(GOVERNANCE)
        async with client.get("/governance", allow_redirects=False) as page:
            assert page.status == 303


async def test_anonymous_visitors_are_sent_to_sign_in(staff_web: StaffWeb) -> None:
    """No session: a redirect to the sign-in page that remembers where to go back."""
    async with staff_web.client() as client, client.get(
        "/governance/events/3?grade=high", allow_redirects=False
    ) as page:
        assert page.status == 303
        location = URL(page.headers["Location"])
        assert location.path == "/login"
        assert location.query["next"] == "/governance/events/3?grade=high"


async def test_pages_carry_the_security_headers(staff_web: StaffWeb) -> None:
    """Every page (and the redirect) has a strict CSP, no framing, no referrer."""
    async with staff_web.client() as client:
        for path in ("/login", "/governance"):
            async with client.get(path, allow_redirects=False) as page:
                csp = page.headers["Content-Security-Policy"]
                assert "frame-ancestors 'none'" in csp and "script-src" not in csp
                assert "default-src 'none'" in csp
                assert page.headers["Referrer-Policy"] == "no-referrer"
                assert page.headers["X-Frame-Options"] == "DENY"
        async with client.get("/static/casegate.css") as css:
            assert css.status == 200 and css.content_type == "text/css"


def test_sessions_end_when_idle_or_too_old(database: Database) -> None:
    """A session ends after the idle time, and after its lifetime even when in use."""
    clock = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    store = SessionStore(database, idle_seconds=600, lifetime_seconds=3600,
                         clock=lambda: clock[0])
    idle = store.create(GOVERNANCE)
    busy = store.create(GOVERNANCE)
    for _ in range(7):  # busy is used every 9 minutes, idle never
        clock[0] += timedelta(minutes=9)
        if clock[0] < datetime(2026, 3, 2, 10, 0, tzinfo=UTC):
            assert store.get(busy) is not None
    assert store.get(idle) is None
    assert store.get(busy) is None  # over an hour old
    assert store.get("") is None and store.get("x" * 500) is None
    store.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/governance?grade=high", "/governance?grade=high"),
        ("//evil.example/", "/home"),
        ("/\\evil.example", "/home"),
        ("https://evil.example/", "/home"),
        ("/x\r\nSet-Cookie: a=b", "/home"),
        ("/governance\n", "/home"),
        ("/static/casegate.css\n", "/home"),
    ],
)
def test_next_only_goes_to_our_own_paths(given: str, expected: str) -> None:
    """The after-sign-in target is a same-site path, never another site (open redirect)."""
    assert safe_next(given) == expected


def test_a_session_store_made_before_versioning_is_kept(tmp_path: Path) -> None:
    """A web-sessions.sqlite3 written by casegate before schema versions keeps its sessions."""
    before = SessionStore(Database.open(tmp_path))
    token = before.create(GOVERNANCE)
    before.close()
    with sqlite3.connect(tmp_path / SESSIONS_FILE) as raw:
        raw.execute("DROP TABLE schema_version")  # as the file was: the table, no version
    raw.close()
    after = SessionStore(Database.open(tmp_path))
    try:
        session = after.get(token)
        assert session is not None and session.address == GOVERNANCE
    finally:
        after.close()


# ---- two nodes on one PostgreSQL database (issue 15) --------------------------------------


@pytest.fixture
async def two_nodes(tmp_path: Path, server_cert: ServerCert, pg_nodes: tuple[Database, Database]
                    ) -> AsyncIterator[tuple[StaffWeb, StaffWeb]]:
    """The staff pages of two gateways sharing one database (their audit trails apart)."""
    async with StaffWeb(tmp_path / "one", server_cert, pg_nodes[0]) as one, \
            StaffWeb(tmp_path / "two", server_cert, pg_nodes[1]) as two:
        yield one, two


async def test_a_session_made_on_one_node_is_good_on_the_other(
        two_nodes: tuple[StaffWeb, StaffWeb]) -> None:
    """Signed in through node one, the cookie opens the pages on node two; signed out on
    node two, it opens nothing on node one."""
    one, two = two_nodes
    async with one.client() as client:
        assert (await one.sign_in(client, GOVERNANCE)).status == 303
        token = client.cookie_jar.filter_cookies(URL(one.base))[SESSION_COOKIE].value
    async with two.client() as client:
        client.cookie_jar.update_cookies({SESSION_COOKIE: token})
        async with client.get("/governance", allow_redirects=False) as page:
            assert page.status == 200 and "Signed in as" in await page.text()
            csrf = hidden(await page.text(), "csrf_token")
        async with client.post("/logout", data={"csrf_token": csrf},
                               allow_redirects=False) as answer:
            assert answer.status == 303
    async with one.client() as client:
        client.cookie_jar.update_cookies({SESSION_COOKIE: token})
        async with client.get("/governance", allow_redirects=False) as page:
            assert page.status == 303


async def test_sign_in_failures_over_two_nodes_lock_out_at_the_same_count(
        two_nodes: tuple[StaffWeb, StaffWeb]) -> None:
    """Three wrong passwords through node one and two through node two make five: the right
    password is then refused on both nodes, as after five on one."""
    one, two = two_nodes
    for node, tries in ((one, 3), (two, 2)):
        async with node.client() as client:
            for _ in range(tries):
                answer = await node.sign_in(client, PRACTITIONER, "guess guess guess")
                assert answer.status == 401
    for node in (one, two):
        async with node.client() as client:
            assert (await node.sign_in(client, PRACTITIONER)).status == 429
    assert len(two.audit.page(EventFilter(kind="login-lockout"))) == 1
