"""The SMTP relay against a real aiosmtpd sink: TLS, reuse, faults, idempotency, smuggling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.config import UpstreamConfig
from tests.certs import CertificateAuthority, ServerCert
from tests.sink import Sink, Step
from transports.base import Copy, Outcome
from transports.database import Database
from transports.ledger import Ledger
from transports.smtp_relay import SmtpRelay

SENDER = "jane.smith@cafcass.gov.uk"
BODY_MARKER = "the-body-must-never-be-logged"


def message(to: str, body: str = BODY_MARKER) -> bytes:
    text = f"From: {SENDER}\r\nTo: {to}\r\nSubject: s\r\n\r\n{body}\r\n.leading dot\r\n"
    return text.encode()


def copy(key: str, *recipients: str, data: bytes | None = None) -> Copy:
    return Copy(key, SENDER, recipients, data if data is not None else message(recipients[0]))


def settings(sink: Sink, **overrides: object) -> UpstreamConfig:
    base = UpstreamConfig(host=sink.host, port=sink.port, tls="none", timeout=2.0, pool_size=2)
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def ledger(database: Database) -> Iterator[Ledger]:
    """The relay's ledger, on each engine."""
    book = Ledger(database, "ledger.sqlite3")
    yield book
    book.close()


@pytest.fixture
async def relay(sink: Sink, ledger: Ledger) -> AsyncIterator[SmtpRelay]:
    out = SmtpRelay(settings(sink), ledger)
    yield out
    await out.close()


async def test_delivers_over_starttls_with_verified_certificate(
    tls_sink: Sink, server_cert: ServerCert, ledger: Ledger
) -> None:
    """STARTTLS to a sink whose certificate a private CA signed: delivered, bytes unchanged."""
    relay = SmtpRelay(settings(tls_sink, tls="starttls"), ledger, server_cert.client_context())
    original = copy("d1:0", "a@example.org")
    result = await relay.deliver([original])
    await relay.close()
    assert result.outcome is Outcome.DELIVERED and result.accepted == ("a@example.org",)
    [got] = tls_sink.messages
    assert got.tls and got.data == original.data and got.rcpt_tos == ("a@example.org",)
    assert ledger.accepted("d1:0") == {"a@example.org"}


async def test_ca_file_from_settings_verifies(
    tls_sink: Sink, server_cert: ServerCert, ledger: Ledger
) -> None:
    """With no context given, the relay trusts the configured ca_file for a private smarthost."""
    relay = SmtpRelay(
        settings(tls_sink, tls="starttls", ca_file=str(server_cert.ca_file)), ledger
    )
    result = await relay.deliver([copy("d1:0", "a@example.org")])
    await relay.close()
    assert result.ok and tls_sink.messages[0].tls


async def test_implicit_tls(server_cert: ServerCert, ledger: Ledger) -> None:
    """Implicit TLS (the whole connection encrypted) delivers with verification on."""
    async with Sink(tls=server_cert.server_context(), implicit_tls=True) as sink:
        relay = SmtpRelay(settings(sink, tls="implicit"), ledger, server_cert.client_context())
        result = await relay.deliver([copy("d1:0", "a@example.org")])
        await relay.close()
    assert result.ok and len(sink.messages) == 1


async def test_untrusted_certificate_is_temporary(
    tls_sink: Sink, tmp_path: Path, ledger: Ledger
) -> None:
    """A certificate from a CA the relay does not trust is refused: TEMPORARY, nothing sent."""
    stranger = CertificateAuthority.create(tmp_path / "other-ca", name="someone else")
    relay = SmtpRelay(
        settings(tls_sink, tls="starttls", ca_file=str(stranger.ca_file)), ledger
    )
    result = await relay.deliver([copy("d1:0", "a@example.org")])
    await relay.close()
    assert result.outcome is Outcome.TEMPORARY
    assert "certificate" in result.detail
    assert tls_sink.messages == []


async def test_wrong_hostname_is_temporary(tmp_path: Path, ledger: Ledger) -> None:
    """A trusted CA's certificate for another host name is refused with a clear detail."""
    ca = CertificateAuthority.create(tmp_path / "pki")
    elsewhere = ca.issue("smarthost.elsewhere.example", stem="elsewhere")
    async with Sink(tls=elsewhere.server_context()) as sink:
        relay = SmtpRelay(settings(sink, tls="starttls"), ledger, elsewhere.client_context())
        result = await relay.deliver([copy("d1:0", "a@example.org")])
        await relay.close()
    assert result.outcome is Outcome.TEMPORARY
    assert "certificate" in result.detail and "mismatch" in result.detail.lower()
    assert sink.messages == []


async def test_auth_over_tls(server_cert: ServerCert, ledger: Ledger) -> None:
    """Credentials are sent after STARTTLS; wrong ones are a TEMPORARY failure."""
    sink = Sink(tls=server_cert.server_context(), credentials=("relay", "s3cret"))
    async with sink:
        good = SmtpRelay(
            settings(sink, tls="starttls", username="relay", password="s3cret"),
            ledger, server_cert.client_context(),
        )
        bad = SmtpRelay(
            settings(sink, tls="starttls", username="relay", password="wrong"),
            ledger, server_cert.client_context(),
        )
        ok = await good.deliver([copy("d1:0", "a@example.org")])
        refused = await bad.deliver([copy("d2:0", "b@example.org")])
        await good.close()
        await bad.close()
    assert ok.ok and sink.stats.auth_logins == ["relay"]
    assert refused.outcome is Outcome.TEMPORARY and len(sink.messages) == 1


async def test_reuses_one_connection_without_rset_while_fresh(sink: Sink,
                                                             relay: SmtpRelay) -> None:
    """Deliveries in a row travel over one connection, one round trip each fewer: no RSET."""
    for n in range(5):
        result = await relay.deliver([copy(f"d{n}:0", f"r{n}@example.org")])
        assert result.ok
    assert len(sink.messages) == 5
    assert sink.connections == 1 and relay.connections_opened == 1
    assert sink.stats.resets == 0


async def test_connection_idle_longer_is_proved_alive_with_rset(sink: Sink,
                                                               ledger: Ledger) -> None:
    """Past `recheck_after` an idle connection gets an RSET before it is used again."""
    relay = SmtpRelay(settings(sink), ledger, recheck_after=0.0)
    for n in range(5):
        assert (await relay.deliver([copy(f"d{n}:0", f"r{n}@example.org")])).ok
    await relay.close()
    assert sink.connections == 1 and sink.stats.resets == 4


async def test_reused_connection_dead_at_mail_is_replaced_once(sink: Sink,
                                                               relay: SmtpRelay) -> None:
    """A pooled connection that died unnoticed fails at MAIL, before anything of the copy was
    sent: the copy goes once, over a new connection, and is delivered."""
    assert (await relay.deliver([copy("d1:0", "a@example.org")])).ok
    sink.drop(Step.MAIL, times=1)
    second = await relay.deliver([copy("d2:0", "b@example.org")])
    assert second.ok
    assert [m.rcpt_tos for m in sink.messages] == [("a@example.org",), ("b@example.org",)]
    assert sink.connections == 2


async def test_new_connection_dropped_at_mail_is_not_retried(sink: Sink,
                                                             relay: SmtpRelay) -> None:
    """On a connection just opened, a drop is the upstream's answer: TEMPORARY, no second try."""
    sink.drop(Step.MAIL, times=1)
    result = await relay.deliver([copy("d1:0", "a@example.org")])
    assert result.outcome is Outcome.TEMPORARY and sink.messages == []
    assert sink.connections == 1


async def test_refused_data_leaves_the_connection_ready(sink: Sink, relay: SmtpRelay) -> None:
    """After DATA is refused the transaction is reset, and the next copy uses the connection."""
    sink.fail(Step.DATA, "451 4.3.0 try later", times=1)
    first = await relay.deliver([copy("d1:0", "a@example.org")])
    second = await relay.deliver([copy("d2:0", "b@example.org")])
    assert first.outcome is Outcome.TEMPORARY and second.ok
    assert sink.connections == 1 and sink.stats.resets == 1
    assert [m.rcpt_tos for m in sink.messages] == [("b@example.org",)]


async def test_pool_is_bounded(sink: Sink, ledger: Ledger) -> None:
    """Concurrent deliveries never open more connections than pool_size."""
    relay = SmtpRelay(settings(sink, pool_size=2), ledger)
    results = await asyncio.gather(
        *(relay.deliver([copy(f"d{n}:0", f"r{n}@example.org")]) for n in range(8))
    )
    await relay.close()
    assert all(r.ok for r in results) and len(sink.messages) == 8
    assert sink.connections <= 2


async def test_reconnects_after_upstream_closes(sink: Sink, relay: SmtpRelay) -> None:
    """A pooled connection the upstream dropped is replaced on the next delivery."""
    sink.drop(Step.DATA, times=1)
    first = await relay.deliver([copy("d1:0", "a@example.org")])
    second = await relay.deliver([copy("d2:0", "b@example.org")])
    assert first.outcome is Outcome.TEMPORARY and second.ok
    assert sink.connections == 2


FAULTS = [
    ("mail-451", Step.MAIL, "451 4.3.0 try later", Outcome.TEMPORARY),
    ("mail-550", Step.MAIL, "550 5.7.1 sender not allowed", Outcome.PERMANENT),
    ("rcpt-451", Step.RCPT, "451 4.3.0 try later", Outcome.TEMPORARY),
    ("rcpt-550", Step.RCPT, "550 5.1.1 no such user", Outcome.PERMANENT),
    ("data-451", Step.DATA, "451 4.3.0 try later", Outcome.TEMPORARY),
    ("data-554", Step.DATA, "554 5.6.0 rejected", Outcome.PERMANENT),
    ("greeting-421", Step.CONNECT, "421 4.3.2 busy", Outcome.TEMPORARY),
    ("greeting-554", Step.CONNECT, "554 5.3.2 not now", Outcome.TEMPORARY),
]


@pytest.mark.parametrize(("step", "reply", "expected"), [f[1:] for f in FAULTS],
                         ids=[f[0] for f in FAULTS])
async def test_reply_fault_outcome(
    sink: Sink, relay: SmtpRelay, step: Step, reply: str, expected: Outcome
) -> None:
    """Each upstream reply fault maps to the right outcome, and nothing is accepted."""
    sink.fail(step, reply)
    result = await relay.deliver([copy("d1:0", "a@example.org")])
    assert result.outcome is expected
    assert result.accepted == () and sink.messages == []


@pytest.mark.parametrize("step", [Step.CONNECT, Step.MAIL, Step.RCPT, Step.DATA])
async def test_drop_is_temporary(sink: Sink, relay: SmtpRelay, step: Step) -> None:
    """The upstream closing the connection at any step is TEMPORARY."""
    sink.drop(step)
    result = await relay.deliver([copy("d1:0", "a@example.org")])
    assert result.outcome is Outcome.TEMPORARY and sink.messages == []


@pytest.mark.parametrize("step", [Step.CONNECT, Step.MAIL, Step.RCPT, Step.DATA])
async def test_hang_times_out(sink: Sink, ledger: Ledger, step: Step) -> None:
    """An upstream that never answers is a TEMPORARY failure within the configured timeout."""
    sink.hang(step)
    relay = SmtpRelay(settings(sink, timeout=0.3, data_done_timeout=0.3), ledger)
    result = await asyncio.wait_for(relay.deliver([copy("d1:0", "a@example.org")]), 5)
    await relay.close()
    assert result.outcome is Outcome.TEMPORARY and "timed out" in result.detail


async def test_upstream_down_is_temporary(sink: Sink, relay: SmtpRelay) -> None:
    """Connection refused is TEMPORARY with a detail that names the trouble."""
    await sink.stop_listening()
    result = await relay.deliver([copy("d1:0", "a@example.org")])
    assert result.outcome is Outcome.TEMPORARY and "upstream" in result.detail


async def test_cancelled_caller_does_not_cut_the_hand_over(sink: Sink, ledger: Ledger) -> None:
    """Cancelling a delivery re-raises CancelledError in the caller, but the transaction goes
    on to the upstream's late 250, whose acceptance is noted: the retry sends nothing, and
    `close` waits for that hand-over."""
    relay = SmtpRelay(settings(sink, pool_size=1, timeout=30.0), ledger)
    fault = sink.late_reply()
    task = asyncio.create_task(relay.deliver([copy("d1:0", "a@example.org")]))
    await fault.struck.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sink.clear_faults()
    fault.released.set()
    await relay.close()  # waits for the hand-over still under way
    again = SmtpRelay(settings(sink, pool_size=1), ledger)
    retry = await asyncio.wait_for(again.deliver([copy("d1:0", "a@example.org")]), 5)
    other = await asyncio.wait_for(again.deliver([copy("d2:0", "b@example.org")]), 5)
    await again.close()
    assert retry.ok and other.ok and ledger.accepted("d1:0") == {"a@example.org"}
    assert [m.rcpt_tos for m in sink.messages] == [("a@example.org",), ("b@example.org",)]


async def test_copy_is_all_or_nothing(sink: Sink, relay: SmtpRelay) -> None:
    """One refused recipient of a copy means no DATA for that copy at all."""
    sink.fail(Step.RCPT, "550 5.1.1 no such user", recipient="x@example.org")
    result = await relay.deliver([copy("d1:0", "a@example.org", "x@example.org")])
    assert result.outcome is Outcome.PERMANENT and "x@example.org" in result.detail
    assert sink.messages == []


async def test_retry_after_drop_mid_data_sends_only_the_missing_copy(
    sink: Sink, ledger: Ledger
) -> None:
    """Copy 1 accepted and recorded, copy 2 dropped mid-DATA: the retry sends copy 2 alone."""
    copies = [copy("d1:0", "a@example.org"), copy("d1:1", "b@example.org")]
    sink.drop(Step.DATA, times=1, recipient="b@example.org")
    relay = SmtpRelay(settings(sink), ledger)
    first = await relay.deliver(copies)
    await relay.close()
    assert first.outcome is Outcome.TEMPORARY and first.accepted == ("a@example.org",)
    # The client retries later, perhaps after a restart: a new relay on the same ledger file.
    again = SmtpRelay(settings(sink), Ledger(ledger.database, "ledger.sqlite3"))
    second = await again.deliver(copies)
    await again.close()
    assert second.ok and second.accepted == ("a@example.org", "b@example.org")
    assert [m.rcpt_tos for m in sink.messages] == [("a@example.org",), ("b@example.org",)]
    assert [m.rcpt_tos for m in sink.unanswered] == [("b@example.org",)]


async def test_partial_acceptance_across_split_copies(sink: Sink, relay: SmtpRelay) -> None:
    """A split message whose second copy got a 4xx is completed by the retry, no repeats."""
    copies = [copy(f"d1:{n}", f"p{n}@example.org") for n in range(3)]
    sink.fail(Step.RCPT, "452 4.2.2 mailbox full", times=1, recipient="p1@example.org")
    first = await relay.deliver(copies)
    second = await relay.deliver(copies)
    third = await relay.deliver(copies)
    assert first.outcome is Outcome.TEMPORARY and first.accepted == ("p0@example.org",)
    assert second.ok and third.ok
    delivered = [m.rcpt_tos[0] for m in sink.messages]
    assert delivered == ["p0@example.org", "p1@example.org", "p2@example.org"]


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: s\r\n\r\nline\n.\nMAIL FROM:<x@evil.example>\r\n",
        b"Subject: s\r\n\r\nline\r.\rsmuggled\r\n",
        b"Subject: s\r\n\r\nline\r\n.\nsmuggled\r\n",
        b"Subject: s\r\n\r\nnul\x00byte\r\n",
        b"Subject: s\n\nbare LF only\n",
    ],
    ids=["bare-lf", "bare-cr", "crlf-dot-lf", "nul", "unix-endings"],
)
async def test_bare_cr_lf_nul_never_leave(sink: Sink, relay: SmtpRelay, data: bytes) -> None:
    """Data with a bare CR, bare LF or NUL is refused before any connection is made."""
    copies = [copy("d1:0", "a@example.org"), copy("d1:1", "b@example.org", data=data)]
    result = await relay.deliver(copies)
    assert result.outcome is Outcome.PERMANENT
    assert sink.connections == 0 and sink.messages == []


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org>\r\nRCPT TO:<x@evil.example",
        '"a b"@example.org',
        "a%b@example.org",
        "@relay.example:a@example.org",
        "a@[127.0.0.1]",
        "anne@exämple.org",
        "Anne <a@example.org>",
    ],
)
async def test_unsafe_envelope_addresses_never_leave(
    sink: Sink, relay: SmtpRelay, address: str
) -> None:
    """An envelope address that would not go on the command line verbatim is refused."""
    result = await relay.deliver([copy("d1:0", "a@example.org"), Copy("d1:1", SENDER, (address,),
                                                                      message("a@example.org"))])
    assert result.outcome is Outcome.PERMANENT and sink.connections == 0


@pytest.mark.parametrize("address", ["o'neil+court/2026@example.org", "a=b?c{d}@example.org",
                                     "x.y_z-1@sub.example.org"])
async def test_plain_addresses_go_on_the_command_line_verbatim(
    sink: Sink, relay: SmtpRelay, address: str
) -> None:
    """The envelope is the one the policy decided on, character for character."""
    result = await relay.deliver([copy("d1:0", address)])
    assert result.ok
    assert (sink.messages[0].mail_from, sink.messages[0].rcpt_tos) == (SENDER, (address,))


async def test_eight_bit_data_arrives_intact(sink: Sink, relay: SmtpRelay) -> None:
    """UTF-8 body bytes are relayed unchanged (BODY=8BITMIME when the upstream offers it)."""
    data = message("a@example.org", body="Grüße, Zoë").replace(b"Subject: s", b"Subject: t")
    result = await relay.deliver([copy("d1:0", "a@example.org", data=data)])
    assert result.ok and sink.messages[0].data == data


async def test_logs_carry_no_body(sink: Sink, relay: SmtpRelay) -> None:
    """The relay logs the copy's metadata, never its content."""
    sink.fail(Step.DATA, "451 4.3.0 later", times=1)
    with capture_logs() as logs:
        await relay.deliver([copy("d1:0", "a@example.org")])
        await relay.deliver([copy("d1:0", "a@example.org")])
        await relay.deliver([copy("d1:0", "a@example.org")])
    events = [entry["event"] for entry in logs]
    assert events == ["relay.copy", "relay.copy", "ledger.already_accepted"]
    assert BODY_MARKER not in repr(logs)


def test_plaintext_only_to_loopback(ledger: Ledger) -> None:
    """tls = 'none' is refused for a non-loopback upstream, and credentials need TLS."""
    with pytest.raises(ValueError, match="loopback"):
        SmtpRelay(UpstreamConfig(host="smarthost.example", tls="none"), ledger)
    with pytest.raises(ValueError, match="TLS"):
        SmtpRelay(UpstreamConfig(host="127.0.0.1", tls="none", username="u"), ledger)


async def test_unreadable_ledger_is_temporary(sink: Sink, database: Database) -> None:
    """When the ledger cannot say what was already accepted, nothing is sent: TEMPORARY."""
    broken = Ledger(database, "broken.sqlite3")
    broken.close()
    relay = SmtpRelay(settings(sink), broken)
    result = await relay.deliver([copy("d1:0", "a@example.org")])
    await relay.close()
    assert result.outcome is Outcome.TEMPORARY and sink.connections == 0


async def test_concurrent_retry_of_the_same_copy_waits(sink: Sink, ledger: Ledger) -> None:
    """A retry arriving while the first attempt is still in flight is TEMPORARY, not a resend."""
    relay = SmtpRelay(settings(sink, timeout=30.0), ledger)
    fault = sink.late_reply(times=1)
    first = asyncio.create_task(relay.deliver([copy("d1:0", "a@example.org")]))
    await fault.struck.wait()
    second = await relay.deliver([copy("d1:0", "a@example.org")])
    fault.released.set()
    assert (await first).ok
    third = await relay.deliver([copy("d1:0", "a@example.org")])
    await relay.close()
    assert second.outcome is Outcome.TEMPORARY and "already being delivered" in second.detail
    assert third.ok and len(sink.messages) == 1


def test_bad_settings_are_refused(ledger: Ledger, tmp_path: Path) -> None:
    """An unknown tls mode or an unreadable ca_file is a ValueError naming the setting."""
    with pytest.raises(ValueError, match="tls must be"):
        SmtpRelay(UpstreamConfig(host="smarthost.example", tls="sometimes"), ledger)
    with pytest.raises(ValueError, match="ca_file"):
        SmtpRelay(UpstreamConfig(host="smarthost.example", ca_file=str(tmp_path / "nope")),
                  ledger)
