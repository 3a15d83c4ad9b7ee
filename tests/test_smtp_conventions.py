"""The SMTP front's conventions, end to end: greeting, EHLO keywords, enhanced codes, pipelining,
the Received field, the null sender, DSN, SMTPUTF8 and the 4xx texts (issue 19, items 6 and 7)."""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.stages.copies import TRACE_HEADER, RawMessage, field_name, own_to_field
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink, Step

COLLEAGUE = "colleague@cafcass.gov.uk"
ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3} ")


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


@pytest.fixture
async def relay(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    """The gateway with 127.0.0.0/8 as a trusted relay peer (an Exchange connector)."""
    async with running_gateway(tmp_path, sink, relay_from=["127.0.0.0/8"]) as harness:
        yield harness


def _fields(data: bytes, name: str) -> list[bytes]:
    return [f for f in RawMessage.split_head(data) if field_name(f) == name]


# ---- greeting, EHLO, enhanced codes --------------------------------------------------------


async def test_greeting_says_esmtp_and_ehlo_offers_the_keywords(gw: Harness) -> None:
    """The greeting names ESMTP; EHLO offers ENHANCEDSTATUSCODES, PIPELINING, SMTPUTF8, DSN."""

    def talk() -> tuple[bytes, bytes, bytes]:
        with socket.create_connection((gw.host, gw.gateway.smtp_port), timeout=20) as raw:
            greeting = raw.makefile("rb").readline()
        client = smtplib.SMTP(gw.host, gw.gateway.smtp_port, timeout=20,
                              local_hostname="client.test")
        try:
            plain = client.ehlo()[1]
            client.starttls(context=gw.client_context())
            return greeting, plain, client.ehlo()[1]
        finally:
            client.close()

    greeting, plain, tls = await gw.run(talk)
    assert greeting == f"220 {gw.app.config.smtp.hostname} ESMTP casegate\r\n".encode()
    keywords = {line.split()[0] for line in tls.decode().splitlines()[1:]}
    assert {"ENHANCEDSTATUSCODES", "PIPELINING", "SMTPUTF8", "DSN", "SIZE", "8BITMIME",
            "AUTH"} <= keywords
    assert b"STARTTLS" in plain


async def test_every_reply_carries_an_enhanced_status_code(gw: Harness) -> None:
    """aiosmtpd's own replies (NOOP, RSET, VRFY, HELP, an unknown verb, STARTTLS, QUIT) and
    ours all carry an enhanced status code."""

    def talk() -> list[tuple[int, bytes]]:
        client = smtplib.SMTP(gw.host, gw.gateway.smtp_port, timeout=20,
                              local_hostname="client.test")
        try:
            client.ehlo()
            replies = [client.docmd("NOOP"), client.docmd("RSET"), client.docmd("HELP"),
                       client.docmd("VRFY", "<a@b.example>"), client.docmd("FROB"),
                       client.docmd("MAIL", "FROM:<jo@cafcass.gov.uk>"),
                       client.docmd("MAIL", "FROM:"), client.docmd("STARTTLS")]
            client.sock = gw.client_context().wrap_socket(client.sock,
                                                          server_hostname=gw.host)
            client.file = None
            client.ehlo()
            replies.append(client.docmd("QUIT"))
            return replies
        finally:
            client.close()

    replies = await gw.run(talk)
    assert [code for code, _ in replies] == [250, 250, 250, 252, 500, 530, 501, 220, 221]
    for code, text in replies:
        for line in text.decode().splitlines():
            assert ENHANCED.match(line), (code, line)
    assert replies[-2] == (220, b"2.0.0 Ready to start TLS")
    assert replies[-1] == (221, b"2.0.0 Bye")


# ---- pipelining ----------------------------------------------------------------------------


async def test_pipelined_transactions_are_answered_in_order_with_every_check(gw: Harness) -> None:
    """MAIL, RCPTs and DATA in one write get their replies in order, each fully checked: a
    personal address is refused, a sender the login may not use is refused, and the DATA of
    a transaction without a sender is refused rather than taken as a message."""

    def talk() -> list[tuple[int, bytes]]:
        with gw.connect() as client:
            client.send(f"MAIL FROM:<{STAFF}>\r\nRCPT TO:<{COLLEAGUE}>\r\n"
                        "RCPT TO:<jo.smith@gmail.com>\r\nDATA\r\n".encode())
            replies = [client.getreply() for _ in range(4)]
            client.send(message() + b".\r\n")
            replies.append(client.getreply())
            client.send(f"MAIL FROM:<someone.else@cafcass.gov.uk>\r\n"
                        f"RCPT TO:<{COLLEAGUE}>\r\nDATA\r\n".encode())
            replies.extend(client.getreply() for _ in range(3))
            return replies

    replies = await gw.run(talk)
    codes = [code for code, _ in replies]
    assert codes == [250, 250, 550, 354, 250, 553, 503, 503]
    assert b"personal email address" in replies[2][1]
    assert len(gw.sink.messages) == 1 and gw.sink.messages[0].rcpt_tos == (COLLEAGUE,)


# ---- Received ------------------------------------------------------------------------------


async def test_every_copy_carries_a_received_field_above_the_classified_bytes(
        gw: Harness) -> None:
    """The relayed copy starts with a Received field (client, protocol, decision id, the one
    recipient), then the trace header, then exactly the bytes the client sent."""
    data = message(to=[COLLEAGUE])
    assert await gw.run(gw.send, STAFF, [COLLEAGUE], data) == {}
    (seen,) = gw.sink.messages
    received, trace = RawMessage.split_head(seen.data)[:2]
    decision_id = trace.split(b":")[1].strip().decode()
    assert field_name(trace) == TRACE_HEADER.lower()
    text = received.decode()
    assert re.fullmatch(
        r"Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n"
        rf"\tby casegate\.localhost \(casegate\) with ESMTPSA id {decision_id}\r\n"
        rf"\tfor <{COLLEAGUE}>; \w{{3}}, \d\d \w{{3}} \d{{4}} \d\d:\d\d:\d\d \+0000\r\n", text)
    assert seen.data == received + trace + data


async def test_received_names_no_recipient_on_a_shared_copy(relay: Harness) -> None:
    """A copy for two recipients has no `for`; a trusted peer without TLS or AUTH is ESMTP."""
    rcpts = [COLLEAGUE, "manager@cafcass.gov.uk"]
    assert await relay.run(relay.send, STAFF, rcpts, message(to=rcpts), tls=False,
                           login=None) == {}
    (received,) = _fields(relay.sink.messages[0].data, "received")
    assert b"with ESMTP id " in received and b" for <" not in received


# ---- the null sender -----------------------------------------------------------------------


async def test_null_sender_from_a_trusted_peer_is_relayed_as_null(relay: Harness) -> None:
    """An out-of-office reply (MAIL FROM:<>) from the organisation's MTA is decided like other
    mail and goes upstream as MAIL FROM:<>."""
    data = message(sender="jo.smith@cafcass.gov.uk", subject="Automatic reply: Meeting")
    assert await relay.run(relay.send, "<>", [COLLEAGUE], data, tls=False, login=None) == {}
    (seen,) = relay.sink.messages
    assert seen.mail_from == "<>"  # aiosmtpd's spelling of the null reverse-path
    assert seen.rcpt_tos == (COLLEAGUE,)


async def test_null_sender_is_refused_on_authenticated_submission(gw: Harness) -> None:
    """A logged-in user may not send with the null reverse-path (SECURITY.md item 6)."""

    def talk() -> tuple[int, bytes]:
        with gw.connect() as client:
            return client.docmd("MAIL", "FROM:<>")

    code, text = await gw.run(talk)
    assert code == 553 and text.startswith(b"5.7.1 ")
    assert gw.sink.messages == []


# ---- DSN -----------------------------------------------------------------------------------


def _send_with_dsn(gw: Harness, mail: str, rcpts: dict[str, str]) -> list[tuple[int, bytes]]:
    with gw.connect() as client:
        replies = [client.docmd("MAIL", f"FROM:<{STAFF}> {mail}")]
        for rcpt, params in rcpts.items():
            replies.append(client.docmd("RCPT", f"TO:<{rcpt}> {params}"))
        if all(code == 250 for code, _ in replies):
            replies.append(client.docmd("DATA"))
            client.send(message(to=list(rcpts)) + b".\r\n")
            replies.append(client.getreply())
        return replies


async def test_dsn_parameters_go_upstream_per_recipient(tmp_path: Path) -> None:
    """RET and ENVID on MAIL, NOTIFY and ORCPT per recipient reach an upstream offering DSN,
    exactly as written."""
    async with Sink(dsn=True) as sink, running_gateway(tmp_path, sink) as gw:
        replies = await gw.run(_send_with_dsn, gw, "RET=HDRS ENVID=Qx+2B314", {
            COLLEAGUE: "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Colleague@cafcass.gov.uk",
            "manager@cafcass.gov.uk": "NOTIFY=NEVER"})
        assert [code for code, _ in replies] == [250, 250, 250, 354, 250]
        (seen,) = sink.messages
        assert {"RET=HDRS", "ENVID=Qx+2B314"} <= set(seen.mail_options)
        assert seen.rcpt_options == (
            ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Colleague@cafcass.gov.uk"),
            ("NOTIFY=NEVER",))


async def test_dsn_parameters_are_dropped_for_an_upstream_without_dsn(gw: Harness) -> None:
    """An upstream that does not offer DSN gets the message without the DSN parameters."""
    replies = await gw.run(_send_with_dsn, gw, "RET=FULL", {COLLEAGUE: "NOTIFY=SUCCESS"})
    assert replies[-1][0] == 250
    (seen,) = gw.sink.messages
    assert not any(o.startswith(("RET=", "ENVID=")) for o in seen.mail_options)
    assert seen.rcpt_options == ((),)


@pytest.mark.parametrize(("mail", "rcpt"), [
    ("RET=SOMETIMES", ""), ("ENVID=a=b", ""), ("RET=FULL RET=HDRS", ""),
    ("", "NOTIFY=NEVER,SUCCESS"), ("", "NOTIFY=SOMETIMES"), ("", "ORCPT=jo@example.org"),
])
async def test_malformed_dsn_parameters_are_refused_501(gw: Harness, mail: str,
                                                        rcpt: str) -> None:
    """A DSN parameter that breaks RFC 3461's syntax is 501 5.5.4, never passed on."""
    replies = await gw.run(_send_with_dsn, gw, mail, {COLLEAGUE: rcpt})
    code, text = next(reply for reply in replies if reply[0] != 250)
    assert code == 501 and text.startswith(b"5.5.4 The ")
    assert gw.sink.messages == []


# ---- SMTPUTF8 ------------------------------------------------------------------------------


def _utf8_message() -> bytes:
    return message(subject="Réunion").replace(b"R\xc3\xa9union", "Réunion".encode())


async def test_smtputf8_is_passed_to_an_upstream_offering_it(tmp_path: Path) -> None:
    """MAIL ... SMTPUTF8 with a raw UTF-8 header reaches an SMTPUTF8 upstream with SMTPUTF8."""
    async with Sink(smtputf8=True) as sink, running_gateway(tmp_path, sink) as gw:
        replies = await gw.run(_send_with_dsn, gw, "SMTPUTF8", {COLLEAGUE: ""})
        assert replies[-1][0] == 250
        assert "SMTPUTF8" in sink.messages[0].mail_options


async def test_smtputf8_message_to_an_upstream_without_it_is_refused_clearly(
        gw: Harness) -> None:
    """A message with raw UTF-8 headers cannot go to an upstream without SMTPUTF8: 554 5.6.7
    saying so, nothing sent."""

    def talk() -> tuple[int, bytes]:
        with gw.connect() as client:
            assert client.docmd("MAIL", f"FROM:<{STAFF}> SMTPUTF8")[0] == 250
            assert client.docmd("RCPT", f"TO:<{COLLEAGUE}>")[0] == 250
            assert client.docmd("DATA")[0] == 354
            client.send(_utf8_message() + b".\r\n")
            return client.getreply()

    code, text = await gw.run(talk)
    assert code == 554 and text.startswith(b"5.6.7 ") and b"SMTPUTF8" in text
    assert b"sink" not in text and gw.sink.messages == []


async def test_internationalised_addresses_need_smtputf8_and_are_classified(
        relay: Harness) -> None:
    """A non-ASCII address without SMTPUTF8 on MAIL is 553 5.6.7; with it, a recipient is
    classified on its IDNA form, so a homograph of a secure domain is refused as a lookalike
    with the policy's sentence (SECURITY.md item 8)."""

    def talk() -> list[tuple[int, bytes]]:
        with relay.connect(tls=False, login=None) as client:
            client.send("MAIL FROM:<jö@cafcass.gov.uk>\r\n".encode())
            replies = [client.getreply()]
            assert client.docmd("MAIL", f"FROM:<{STAFF}>")[0] == 250
            client.send("RCPT TO:<jo@bücher.example>\r\n".encode())
            replies.append(client.getreply())
            assert client.docmd("RSET")[0] == 250
            assert client.docmd("MAIL", f"FROM:<{STAFF}> SMTPUTF8")[0] == 250
            client.send("RCPT TO:<officer@cjsm.nеt>\r\n".encode())  # a Cyrillic "е"
            replies.append(client.getreply())
            return replies

    mail, rcpt, homograph = await relay.run(talk)
    for code, text in (mail, rcpt):
        assert code == 553 and text.startswith(b"5.6.7 An internationalised")
    assert homograph[0] == 550 and b"officer@cjsm.net" in homograph[1]  # "did you mean"
    assert relay.sink.messages == []


def _send_utf8(gw: Harness, rcpt: str, body: str = "Please call me.") -> tuple[int, bytes]:
    with gw.connect() as client:
        assert client.docmd("MAIL", f"FROM:<{STAFF}> SMTPUTF8")[0] == 250
        client.send(f"RCPT TO:<{rcpt}>\r\n".encode())
        assert client.getreply()[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(message(to=[rcpt], body=body) + b".\r\n")
        return client.getreply()


async def test_an_internationalised_address_goes_upstream_as_written(tmp_path: Path) -> None:
    """With SMTPUTF8 to an upstream offering it, jo@bücher.example goes exactly as written."""
    rcpt = "jo@bücher.example"
    async with Sink(smtputf8=True) as sink, running_gateway(tmp_path, sink) as gw:
        assert (await gw.run(_send_utf8, gw, rcpt))[0] == 250
        (seen,) = sink.messages
        assert seen.rcpt_tos == (rcpt,) and "SMTPUTF8" in seen.mail_options
        (received,) = _fields(seen.data, "received")
        assert f"for <{rcpt}>;".encode() in received


async def test_an_internationalised_address_to_an_upstream_without_smtputf8(
        gw: Harness) -> None:
    """The same to an upstream without SMTPUTF8: 554 5.6.7 saying so, nothing sent."""
    code, text = await gw.run(_send_utf8, gw, "jo@bücher.example")
    assert code == 554 and text.startswith(b"5.6.7 The onward mail server cannot take")
    assert gw.sink.messages == []


async def test_protected_mail_to_an_internationalised_address_is_not_sent(
        gw: Harness) -> None:
    """Protected mail that must go by the portal to a non-ASCII address: the portal's notices
    cannot reach it, so 554 5.6.7 naming it, and nothing is stored or sent."""
    rcpt = "mum@bücher.example"
    gw.verify("mum@xn--bcher-kva.example", "FD24P01234")  # the registry holds the IDNA form
    code, text = await gw.run(_send_utf8, gw, rcpt, "Report for case FD24P01234 attached.")
    assert code == 554 and text.startswith(b"5.6.7 This message must go through the secure")
    assert gw.sink.messages == []


# ---- 4xx texts -----------------------------------------------------------------------------


async def test_a_recipient_deferred_upstream_is_named(gw: Harness) -> None:
    """The upstream's 4xx for one recipient: 451 naming that recipient, no host name."""
    gw.sink.fail(Step.RCPT, "451 4.2.1 mailbox busy", recipient="manager@cafcass.gov.uk")
    rcpts = [COLLEAGUE, "manager@cafcass.gov.uk"]
    with pytest.raises(smtplib.SMTPDataError) as later:
        await gw.run(gw.send, STAFF, rcpts, message(to=rcpts))
    assert later.value.smtp_code == 451
    text = later.value.smtp_error
    assert text.startswith(b"4.2.0 The onward mail server asked to try again later for: "
                           b"manager@cafcass.gov.uk.")
    assert COLLEAGUE.encode() not in text and b"sink" not in text


async def test_an_unreachable_upstream_is_said_so(gw: Harness) -> None:
    """No upstream listening: 451 4.4.1 'could not be reached'."""
    await gw.sink.stop_listening()
    with pytest.raises(smtplib.SMTPDataError) as later:
        await gw.run(gw.send, STAFF, [COLLEAGUE], message())
    assert later.value.smtp_code == 451
    assert later.value.smtp_error.startswith(
        b"4.4.1 The onward mail server could not be reached.")


async def test_a_message_deferred_upstream_is_said_so(gw: Harness) -> None:
    """The upstream's 4xx at DATA: 451 'could not take the message for now'."""
    gw.sink.fail(Step.DATA, "452 4.3.1 insufficient storage")
    with pytest.raises(smtplib.SMTPDataError) as later:
        await gw.run(gw.send, STAFF, [COLLEAGUE], message())
    assert later.value.smtp_code == 451
    assert b"could not take the message for now" in later.value.smtp_error


# ---- split copies: display names, DSN per copy ---------------------------------------------


async def test_split_copies_keep_display_names_and_each_recipients_dsn(tmp_path: Path) -> None:
    """Protected mail split per external recipient: each rewritten To keeps the display name
    the original gave (quoted or encoded as needed), and each copy carries its own NOTIFY and
    the message's RET and ENVID."""
    case = "FD24P01234"
    externals = ["officer@cjsm.net", "nurse@nhs.net", "clement@cjsm.net"]
    to = ['Officer Smith <officer@cjsm.net>', '"Nurse, Jo" <nurse@nhs.net>',
          "=?utf-8?q?Cl=C3=A9ment?= <clement@cjsm.net>"]
    async with Sink(dsn=True) as sink, running_gateway(tmp_path, sink) as gw:
        for address in externals:
            gw.verify(address, case)
        data = message(to=to, body=f"Report for case {case} attached below.")

        def talk() -> tuple[int, bytes]:
            with gw.connect() as client:
                assert client.docmd("MAIL", f"FROM:<{STAFF}> RET=HDRS ENVID=case1")[0] == 250
                for address in externals:
                    notify = "SUCCESS" if address == "nurse@nhs.net" else "FAILURE"
                    assert client.docmd("RCPT", f"TO:<{address}> NOTIFY={notify}")[0] == 250
                assert client.docmd("DATA")[0] == 354
                client.send(data + b".\r\n")
                return client.getreply()

        assert (await gw.run(talk))[0] == 250
        by_rcpt = {m.rcpt_tos[0]: m for m in sink.messages}
        assert set(by_rcpt) == set(externals)
        expected = {"officer@cjsm.net": b"To: Officer Smith <officer@cjsm.net>\r\n",
                    "nurse@nhs.net": b'To: "Nurse, Jo" <nurse@nhs.net>\r\n',
                    "clement@cjsm.net": b"To: =?utf-8?q?Cl=C3=A9ment?= "
                                            b"<clement@cjsm.net>\r\n"}
        for address, seen in by_rcpt.items():
            assert _fields(seen.data, "to") == [expected[address]]
            assert {"RET=HDRS", "ENVID=case1"} <= set(seen.mail_options)
            notify = "SUCCESS" if address == "nurse@nhs.net" else "FAILURE"
            assert seen.rcpt_options == ((f"NOTIFY={notify}",),)
            (received,) = _fields(seen.data, "received")
            assert f"for <{address}>;".encode() in received


async def test_a_display_name_with_a_line_break_is_never_written(tmp_path: Path) -> None:
    """A display name that decodes to a line break: the message is refused before any copy is
    made, and the copy builder itself would write the bare address (SECURITY.md item 10)."""
    case = "FD24P01234"
    externals = ["officer@cjsm.net", "nurse@nhs.net"]
    to = ["=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eexample?= <officer@cjsm.net>", "nurse@nhs.net"]
    async with Sink() as sink, running_gateway(tmp_path, sink) as gw:
        for address in externals:
            gw.verify(address, case)
        data = message(to=to, body=f"Report for case {case} attached below.")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await gw.run(gw.send, STAFF, externals, data)
        assert refused.value.smtp_code == 550 and sink.messages == []
    field = own_to_field(RawMessage.split(data), "officer@cjsm.net")
    assert field == b"To: officer@cjsm.net\r\n"


async def test_a_recipient_refused_upstream_is_named(gw: Harness) -> None:
    """The upstream's 5xx for a recipient: 554 5.1.0 naming it with the decision number."""
    gw.sink.fail(Step.RCPT, "550 5.1.1 no such user", recipient="manager@cafcass.gov.uk")
    rcpts = [COLLEAGUE, "manager@cafcass.gov.uk"]
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await gw.run(gw.send, STAFF, rcpts, message(to=rcpts))
    assert refused.value.smtp_code == 554
    first = refused.value.smtp_error.splitlines()[0]
    assert re.fullmatch(rb"5\.1\.0 The onward mail server refused these recipients: "
                        rb"manager@cafcass\.gov\.uk \(decision [0-9a-f]{32}\)\.", first)
