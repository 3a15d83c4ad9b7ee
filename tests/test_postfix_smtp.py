"""Postfix in front of casegate: the null sender, SMTPUTF8 and DSN (issue 19, item 7).

Each message is submitted to a real Postfix (tests/postfix.py), which relays it to casegate (a
trusted relay peer), which relays it to a sink offering SMTPUTF8 and DSN (the sink's `dsn` and
`smtputf8` options and `Received.rcpt_options` come with branch i19-smtp). The test waits for
whichever comes first: the message at the sink, or a bounce from Postfix (then it fails with the
bounce's text, rather than waiting out a timeout).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.postfix import Postfix, require_postfix, running_postfix
from tests.sink import Received, Sink

OUTSIDE = "friend@example.org"


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[tuple[Postfix, Harness]]:
    """Postfix relaying to casegate (127.0.0.1 trusted) relaying to an SMTPUTF8, DSN sink."""
    require_postfix()
    async with Sink(smtputf8=True, dsn=True) as sink, running_gateway(
            tmp_path, sink, relay_from=["127.0.0.1/32"]) as gw:
        with running_postfix(gw.gateway.smtp_port, local_domains=["cafcass.gov.uk"]) as mta:
            yield mta, gw


async def _relayed(mta: Postfix, gw: Harness, sender: str, data: bytes,
                   mail_options: Sequence[str] = (),
                   rcpt_options: Sequence[str] = ()) -> Received:
    """Submit to Postfix; the message as the sink got it, or fail with Postfix's bounce."""
    refused = await asyncio.to_thread(mta.submit, sender, [OUTSIDE], data, mail_options,
                                      rcpt_options)
    assert refused == {}
    arrived = asyncio.ensure_future(gw.sink.wait_for_messages(1))
    bounced = asyncio.ensure_future(mta.next_mail())
    done, pending = await asyncio.wait({arrived, bounced}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if any(isinstance(task.exception(), TimeoutError) for task in done):
        log = "\n".join(mta.log().splitlines()[-8:])
        pytest.fail(f"neither delivered nor bounced; Postfix's log ends:\n{log}")
    if bounced in done:
        bounce = email.message_from_bytes(bounced.result(), policy=email.policy.default)
        notice = bounce.get_body(preferencelist=("plain",))
        pytest.fail(f"Postfix bounced it:\n{notice.get_content() if notice else bounce}")
    return arrived.result()[0]


async def test_a_bounce_with_the_null_sender_goes_through_postfix_and_casegate(
        chain: tuple[Postfix, Harness]) -> None:
    """A non-delivery report (MAIL FROM:<>) relayed by Postfix reaches the sink, still from <>."""
    mta, gw = chain
    report = message(sender="mailer-daemon@cafcass.gov.uk", to=[OUTSIDE],
                     subject="Undelivered Mail Returned to Sender",
                     body="Your message could not be delivered.")
    arrived = await _relayed(mta, gw, "", report)
    assert arrived.mail_from in ("", "<>")
    assert arrived.rcpt_tos == (OUTSIDE,)


async def test_utf8_headers_with_smtputf8_are_not_bounced_5_6_7(
        chain: tuple[Postfix, Harness]) -> None:
    """Raw UTF-8 in the headers, submitted with SMTPUTF8: Postfix relays it (no 5.6.7 bounce)
    and the sink gets the header bytes unchanged."""
    mta, gw = chain
    data = message(to=[OUTSIDE], subject="Réunion de lundi", body="À lundi, Zoë.")
    arrived = await _relayed(mta, gw, STAFF, data, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert "Subject: Réunion de lundi\r\n".encode() in arrived.data


async def test_dsn_notify_and_orcpt_reach_the_sink(chain: tuple[Postfix, Harness]) -> None:
    """NOTIFY=SUCCESS,FAILURE and ORCPT given to Postfix reach the sink through casegate."""
    mta, gw = chain
    data = message(to=[OUTSIDE], body="Please confirm you got this.")
    arrived = await _relayed(mta, gw, STAFF, data,
                             mail_options=["RET=HDRS", "ENVID=casegate-test-1"],
                             rcpt_options=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{OUTSIDE}"])
    [rcpt_options] = arrived.rcpt_options  # i19-smtp's sink records them
    params = {p.partition("=")[0].upper(): p.partition("=")[2] for p in rcpt_options}
    assert params.get("NOTIFY", "").upper() == "SUCCESS,FAILURE"
    assert params.get("ORCPT", "").lower() == f"rfc822;{OUTSIDE}"
