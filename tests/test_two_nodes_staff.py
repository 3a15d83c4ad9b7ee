"""Two gateways on one PostgreSQL database (issue 15), as far as the registry, the staff
accounts, the web sessions and the AUTH throttle go: a verification confirmed through one node
is honoured by the other at once, a staff session made on one is good on the other, and AUTH
failures spread over both lock the client out at the same count as on one.

Each node has a data directory of its own (its TLS certificate, and the stores not shared here).
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from yarl import URL

from gateway.app import App
from gateway.runtime.server import start_gateway
from gateway.stores.users import UserRole
from gateway.web.auth import SESSION_COOKIE
from policies.model import Role
from tests.gateway_harness import (
    GOVERNANCE,
    PASSWORD,
    STAFF,
    Harness,
    message,
    write_config,
)
from tests.postgres import copy_keys
from tests.sink import Sink
from tests.staffweb import hidden

CASE = "FD24P01234"
OFFICER = "officer@cjsm.net"


@pytest.fixture
async def nodes(tmp_path: Path, sink: Sink, pg_url: str) -> AsyncIterator[list[Harness]]:
    """Two running gateways sharing `pg_url`; AUTH locks after three failures."""
    async with AsyncExitStack() as stack:
        harnesses = []
        for name in ("one", "two"):
            config = write_config(tmp_path / f"{name}.toml", sink, auth_max_failures=3,
                                  extra_config=f'[database]\nnode = "{name}"\n')
            if name == "two":
                copy_keys(tmp_path / "one", tmp_path / name)
            app = App.open(config, tmp_path / name, database_url=pg_url)
            stack.callback(app.close)
            if name == "one":  # the accounts are shared: made once
                app.users.add(STAFF, PASSWORD)
                app.users.add(GOVERNANCE, PASSWORD, roles=(UserRole.STAFF, UserRole.GOVERNANCE))
            gateway = await start_gateway(app)
            stack.push_async_callback(gateway.stop, 5)
            harnesses.append(Harness(app=app, gateway=gateway, sink=sink))
        yield harnesses


async def test_a_verification_confirmed_through_one_node_is_honoured_by_the_other(
        nodes: list[Harness]) -> None:
    """Node two refuses the officer (unverified); node one confirms a verification request;
    node two's very next snapshot has it and its next message to the officer is delivered."""
    one, two = nodes
    data = message(to=[OFFICER], body=f"About case {CASE}: the hearing is on Monday.")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await two.run(two.send, STAFF, [OFFICER], data)
    assert refused.value.smtp_code == 550
    now = datetime.now(UTC)
    request = one.app.registry.create_request(
        OFFICER, case_number=CASE, role=Role.PROFESSIONAL, name="Pat Officer",
        requested_by=STAFF, channel="http", token_id="t" * 24, code_digest="d", now=now,
        link_expires_at=now + timedelta(hours=1))
    assert one.app.registry.confirm_request(request.id, now=now, method="code",
                                            expires_at=None) is not None
    snapshot = await two.app.snapshot_async(datetime.now(UTC))
    assert snapshot.is_verified(OFFICER, (CASE,))
    assert two.app.snapshot_at_once(datetime.now(UTC)) is None  # PostgreSQL: never from memory
    assert await two.run(two.send, STAFF, [OFFICER], data) == {}
    (received,) = two.sink.messages
    assert received.rcpt_tos == (OFFICER,)


async def test_a_staff_session_made_on_one_node_is_good_on_the_other(
        nodes: list[Harness]) -> None:
    """Signed in on node one's web front, the same cookie opens node two's pages."""
    one, two = nodes
    async with one.web_client() as client:
        async with client.get("/login") as form:
            token = hidden(await form.text(), "signin_token")
        async with client.post("/login", data={
                "address": GOVERNANCE, "password": PASSWORD, "signin_token": token,
                "next": "/governance"}, allow_redirects=False) as answer:
            assert answer.status == 303
        session = client.cookie_jar.filter_cookies(
            URL(f"https://localhost:{one.gateway.http_port}"))[SESSION_COOKIE].value
    async with two.web_client() as client:
        client.cookie_jar.update_cookies({SESSION_COOKIE: session})
        async with client.get("/governance", allow_redirects=False) as page:
            assert page.status == 200 and "Signed in as" in await page.text()


async def test_auth_failures_over_two_nodes_lock_the_client_out_at_the_same_count(
        nodes: list[Harness]) -> None:
    """With a limit of three: two wrong passwords through node one, the third through node
    two locks the client out (421), and then the right password is refused on both."""
    one, two = nodes
    for _ in range(2):
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            await one.run(one.connect, password="not the password")
        assert wrong.value.smtp_code == 535
    with pytest.raises((smtplib.SMTPServerDisconnected, smtplib.SMTPAuthenticationError)) as third:
        await two.run(two.connect, password="not the password")
    if isinstance(third.value, smtplib.SMTPAuthenticationError):
        assert third.value.smtp_code == 421
    for node in (one, two):
        with pytest.raises((smtplib.SMTPServerDisconnected,
                            smtplib.SMTPAuthenticationError)) as after:
            await node.run(node.connect)
        if isinstance(after.value, smtplib.SMTPAuthenticationError):
            assert after.value.smtp_code == 421
