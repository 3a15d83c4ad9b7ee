"""Who may send: TLS before AUTH, uniform 535, lockout, sender binding, no open relay."""

from __future__ import annotations

import smtplib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter
from tests.gateway_harness import (
    OTHER_STAFF,
    PASSWORD,
    SEND_AS,
    STAFF,
    Harness,
    message,
    running_gateway,
)
from tests.sink import Sink

COLLEAGUE = "colleague@cafcass.gov.uk"


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink, auth_max_failures=3, max_recipients=3,
                               implicit_tls=True) as harness:
        yield harness


def _kinds(gw: Harness) -> list[str]:
    return [e.kind for e in gw.app.audit.iterate(EventFilter())]


async def test_no_auth_and_no_mail_before_tls(gw: Harness) -> None:
    """Before STARTTLS, AUTH is neither offered nor accepted and MAIL is refused."""

    def talk() -> tuple[str, tuple[int, bytes], tuple[int, bytes]]:
        with gw.connect(tls=False, login=None) as client:
            features = client.ehlo_resp.decode() if client.ehlo_resp else ""
            return features, client.docmd("AUTH", "PLAIN AGpvAHBhc3M="), client.mail(STAFF)

    features, auth, mail = await gw.run(talk)
    assert "STARTTLS" in features and "AUTH" not in features and "CHUNKING" not in features
    assert auth[0] == 538
    assert mail[0] == 530 and b"STARTTLS" in mail[1]


async def test_help_lists_starttls_and_auth(gw: Harness) -> None:
    """HELP names STARTTLS and AUTH with the other commands, and gives their syntax."""

    def talk() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        with gw.connect(tls=False, login=None) as client:
            return client.docmd("HELP"), client.docmd("HELP", "AUTH"), client.docmd("HELP",
                                                                                    "STARTTLS")

    listing, auth, starttls = await gw.run(talk)
    assert listing[0] == 250
    assert {"AUTH", "STARTTLS", "DATA", "MAIL", "RCPT"} <= set(listing[1].decode().split())
    assert auth == (250, b"2.0.0 Syntax: AUTH <mechanism>")
    assert starttls == (250, b"2.0.0 Syntax: STARTTLS")


async def test_tls_without_auth_is_not_a_relay(gw: Harness) -> None:
    """Inside TLS but without AUTH, a stranger cannot send: 530 at MAIL, nothing relayed."""

    def talk() -> tuple[int, bytes]:
        with gw.connect(login=None) as client:
            return client.mail(STAFF)

    code, text = await gw.run(talk)
    assert code == 530 and b"Authentication required" in text
    assert gw.sink.messages == []


async def test_wrong_password_gets_535_promptly(gw: Harness) -> None:
    """A wrong password is answered 535 at once (never a hang) and audited."""
    start = time.monotonic()
    with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        await gw.run(gw.connect, password="not the password")
    assert failed.value.smtp_code == 535
    assert time.monotonic() - start < 5
    assert "auth-failure" in _kinds(gw)
    assert gw.gateway.stages.metrics.value("casegate_auth_failures_total") == 1


async def test_unknown_user_gets_the_same_535(gw: Harness) -> None:
    """An unknown login gets exactly the reply a wrong password gets."""
    with pytest.raises(smtplib.SMTPAuthenticationError) as unknown:
        await gw.run(gw.connect, login="nobody@cafcass.gov.uk")
    with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
        await gw.run(gw.connect, password="not the password")
    assert (unknown.value.smtp_code, unknown.value.smtp_error) == (
        wrong.value.smtp_code, wrong.value.smtp_error)


async def test_repeated_failures_lock_the_client_out(gw: Harness) -> None:
    """After the limit, the client gets 421 and is disconnected, even with the right password."""
    for _ in range(2):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            await gw.run(gw.connect, password="not the password")
    with pytest.raises((smtplib.SMTPServerDisconnected, smtplib.SMTPAuthenticationError)) as third:
        await gw.run(gw.connect, password="not the password")
    if isinstance(third.value, smtplib.SMTPAuthenticationError):
        assert third.value.smtp_code == 421
    with pytest.raises((smtplib.SMTPServerDisconnected, smtplib.SMTPAuthenticationError)) as after:
        await gw.run(gw.connect)
    if isinstance(after.value, smtplib.SMTPAuthenticationError):
        assert after.value.smtp_code == 421
    assert "auth-lockout" in _kinds(gw)


async def test_auth_login_mechanism_works(gw: Harness) -> None:
    """AUTH LOGIN (Outlook's usual choice) authenticates as well as PLAIN."""

    def talk() -> tuple[int, bytes]:
        with gw.connect(login=None) as client:
            client.user, client.password = STAFF, PASSWORD
            return client.auth("LOGIN", client.auth_login)

    code, _ = await gw.run(talk)
    assert code == 235


async def test_mail_from_is_bound_to_the_login(gw: Harness) -> None:
    """Another user's address is refused; the user's own and send-as addresses are accepted."""

    def talk() -> list[int]:
        with gw.connect() as client:
            code, text = client.mail(OTHER_STAFF)
            assert b"Send the message from that address." in text  # the policy's sentence
            codes = [code]
            client.rset()
            codes.append(client.mail(SEND_AS)[0])
            client.rset()
            codes.append(client.mail(STAFF)[0])
            return codes

    assert await gw.run(talk) == [553, 250, 250]


async def test_header_from_must_match_the_login(gw: Harness) -> None:
    """A header From naming someone else is refused at DATA, nothing relayed."""
    data = message(sender=OTHER_STAFF, to=[COLLEAGUE])
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await gw.run(gw.send, STAFF, [COLLEAGUE], data)
    assert refused.value.smtp_code == 550 and b"From header" in refused.value.smtp_error
    assert gw.sink.messages == []


async def test_header_from_refusal_says_what_to_do(gw: Harness) -> None:
    """The DATA refusal for a foreign header From ends with the policy rule's sentence."""
    data = message(sender=OTHER_STAFF, to=[COLLEAGUE])
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await gw.run(gw.send, STAFF, [COLLEAGUE], data)
    sentence = gw.app.policy.rule("sender-identity").sentence
    lines = refused.value.smtp_error.decode().splitlines()  # each "5.7.1 <one sentence>"
    text = " ".join(line.split(" ", 1)[1] for line in lines)
    assert " ".join(sentence.split()) in text


async def test_send_as_address_may_send(gw: Harness) -> None:
    """A send-as address in envelope and header From is delivered."""
    assert await gw.run(gw.send, SEND_AS, [COLLEAGUE], message(sender=SEND_AS)) == {}
    assert [m.mail_from for m in gw.sink.messages] == [SEND_AS]


async def test_null_sender_is_refused(gw: Harness) -> None:
    """MAIL FROM:<> is refused on submission."""

    def talk() -> int:
        with gw.connect() as client:
            return client.mail("")[0]

    assert 500 <= await gw.run(talk) < 600


async def test_recipient_limit_answers_452(gw: Harness) -> None:
    """Past max_recipients, RCPT gets 452 and the accepted ones still go."""
    rcpts = [f"person{i}@cafcass.gov.uk" for i in range(4)]
    refused = await gw.run(gw.send, STAFF, rcpts, message(to=rcpts[:3]))
    assert refused[rcpts[3]][0] == 452
    assert gw.sink.messages[0].rcpt_tos == tuple(rcpts[:3])


async def test_implicit_tls_port_accepts_auth_and_mail(gw: Harness) -> None:
    """The implicit-TLS port offers AUTH from the start and delivers."""

    def talk() -> dict[str, tuple[int, bytes]]:
        with gw.connect_implicit() as client:
            return client.sendmail(STAFF, [COLLEAGUE], message())

    assert await gw.run(talk) == {}
    assert len(gw.sink.messages) == 1


async def test_second_starttls_is_refused(gw: Harness) -> None:
    """STARTTLS inside TLS is refused."""

    def talk() -> int:
        with gw.connect(login=None) as client:
            return client.docmd("STARTTLS")[0]

    assert await gw.run(talk) == 554


async def test_commands_pipelined_after_starttls_are_refused(gw: Harness) -> None:
    """STARTTLS with commands in the same packet is refused and the connection closed."""

    def talk() -> bytes:
        with gw.connect(tls=False, login=None) as client:
            client.send(b"STARTTLS\r\nMAIL FROM:<" + STAFF.encode() + b">\r\n")
            code, text = client.getreply()
            return str(code).encode() + b" " + text

    reply = await gw.run(talk)
    assert reply.startswith(b"554") and b"pipelined" in reply


async def test_bdat_is_not_offered_or_accepted(gw: Harness) -> None:
    """No CHUNKING: BDAT is an unknown command."""

    def talk() -> int:
        with gw.connect() as client:
            client.mail(STAFF)
            client.rcpt(COLLEAGUE)
            return client.docmd("BDAT", "5 LAST")[0]

    assert await gw.run(talk) == 500
    assert gw.sink.messages == []


async def test_trusted_relay_peer_needs_no_auth(tmp_path: Path, sink: Sink) -> None:
    """A peer inside smtp.relay_from (an Exchange connector) relays without AUTH."""
    async with running_gateway(tmp_path, sink, relay_from=["127.0.0.0/8"]) as gw:
        refused = await gw.run(gw.send, OTHER_STAFF, [COLLEAGUE],
                               message(sender=OTHER_STAFF), tls=False, login=None)
        assert refused == {}
        assert [m.mail_from for m in sink.messages] == [OTHER_STAFF]


async def test_peer_outside_relay_range_is_refused(tmp_path: Path, sink: Sink) -> None:
    """A relay range that does not include the client grants nothing."""
    async with running_gateway(tmp_path, sink, relay_from=["192.0.2.0/24"]) as gw:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await gw.run(gw.send, STAFF, [COLLEAGUE], message(), login=None)
        assert refused.value.smtp_code == 530
        assert sink.messages == []


@pytest.mark.parametrize(
    ("from_header", "accepted"),
    [
        (f"Jo Smith <{STAFF}>", True),
        (f"{SEND_AS}", True),
        (f'"{OTHER_STAFF}" <{STAFF}>', True),  # a display name is only a name
        (f'"{STAFF}" <{OTHER_STAFF}>', False),
        (f"{STAFF}, {OTHER_STAFF}", False),  # two authors
        (f"Team: {STAFF};", False),  # a group
        (f"{OTHER_STAFF}<{STAFF}>", False),  # CVE-2023-27043 style: malformed, refused
        (f"<{STAFF}>\r\n (comment)", True),  # folded
        ("", False),
    ],
)
def test_header_from_parsing_fails_closed(from_header: str, accepted: bool) -> None:
    """Only one plain author address that the login may use is accepted."""
    from gateway.stages.message import Submission
    from gateway.stages.pipeline import check_header_from
    from gateway.stores.users import User, UserRole

    user = User(STAFF, (UserRole.STAFF,), (SEND_AS,))
    raw = f"From: {from_header}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    submission = Submission(sender=STAFF, recipients=(COLLEAGUE,), raw=raw, user=user,
                            peer="127.0.0.1")
    assert (check_header_from(submission) is None) is accepted


def test_two_from_headers_are_refused() -> None:
    """A message with two From fields is refused."""
    from gateway.stages.message import Submission
    from gateway.stages.pipeline import check_header_from
    from gateway.stores.users import User, UserRole

    user = User(STAFF, (UserRole.STAFF,), ())
    raw = f"From: {STAFF}\r\nFrom: {OTHER_STAFF}\r\n\r\nbody\r\n".encode()
    submission = Submission(sender=STAFF, recipients=(COLLEAGUE,), raw=raw, user=user,
                            peer="127.0.0.1")
    assert check_header_from(submission) is not None
