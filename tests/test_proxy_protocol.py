"""The PROXY protocol behind a load balancer (gateway/runtime/proxy.py): the header parser from
a table, then the real gateway on loopback behind `tests.balancer.Balancer` (127.0.0.1 is the
trusted balancer; an outsider connects from 127.0.0.2), SMTP and HTTP."""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.audit.store import EventFilter
from gateway.config import ConfigError, load_config
from gateway.runtime.proxy import (
    V1_MAX_LENGTH,
    V2_MAX_PAYLOAD,
    HeaderError,
    ProxyHeader,
    parse_header,
)
from tests.balancer import V1_UNKNOWN, V2_SIGNATURE, Balancer, v1, v2, v2_local
from tests.gateway_harness import (
    OTHER_STAFF,
    PASSWORD,
    STAFF,
    Harness,
    message,
    running_gateway,
)
from tests.https import https_client
from tests.sink import Sink
from tests.staffweb import hidden

COLLEAGUE = "colleague@cafcass.gov.uk"
LB = "127.0.0.1"  # the trusted load balancer: every test client connects from loopback
OUTSIDER = "127.0.0.2"  # Linux answers on all of 127/8: a peer that is not in proxy.trusted
CLIENT_A = ("192.0.2.10", 40001)  # TEST-NET-1, inside relay_from where a test sets it
CLIENT_B = ("198.51.100.7", 40002)  # TEST-NET-2, never inside relay_from
CLIENT_6 = ("2001:db8::25", 40003)
RELAY_FROM = ["192.0.2.0/24", "2001:db8::/32"]
PROXY = f'[proxy]\ntrusted = ["{LB}"]\n'
TIMEOUT = 10.0

# -- the parser -------------------------------------------------------------------------------

TLVS = ((0x01, b"h2"), (0x04, b"\x00" * 5), (0x05, b"unique-id-1"))
READ: list[tuple[str, bytes, ProxyHeader]] = [
    ("v1-tcp4", b"PROXY TCP4 192.0.2.10 10.0.0.1 40001 25\r\n",
     ProxyHeader(1, 41, ("192.0.2.10", 40001), ("10.0.0.1", 25))),
    ("v1-tcp6", b"PROXY TCP6 2001:db8::25 2001:db8::1 40003 587\r\n",
     ProxyHeader(1, 47, ("2001:db8::25", 40003, 0, 0), ("2001:db8::1", 587, 0, 0))),
    ("v1-tcp6-mapped", b"PROXY TCP6 ::ffff:192.0.2.10 ::1 1 2\r\n",
     ProxyHeader(1, 38, ("192.0.2.10", 1), ("::1", 2, 0, 0))),
    ("v1-unknown", b"PROXY UNKNOWN\r\n", ProxyHeader(1, 15)),
    ("v1-unknown-with-fields", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(1, 35)),
    ("v2-inet", v2(CLIENT_A, ("10.0.0.1", 25)),
     ProxyHeader(2, 28, CLIENT_A, ("10.0.0.1", 25))),
    ("v2-inet6-tlvs", v2(CLIENT_6, ("::1", 443), tlvs=TLVS),
     ProxyHeader(2, 52 + 5 + 8 + 14, (*CLIENT_6, 0, 0), ("::1", 443, 0, 0), TLVS)),
    ("v2-local", v2_local(), ProxyHeader(2, 16)),
    ("v2-local-tlvs", v2_local(TLVS), ProxyHeader(2, 16 + 5 + 8 + 14)),
    ("v2-unspec", V2_SIGNATURE + b"\x21\x00\x00\x03abc", ProxyHeader(2, 19)),
]


@pytest.mark.parametrize(("wire", "expected"), [(w, e) for _, w, e in READ],
                         ids=[name for name, _, _ in READ])
def test_headers_are_read(wire: bytes, expected: ProxyHeader) -> None:
    """Each header form gives the client, the destination and the TLVs, and its length."""
    assert parse_header(wire) == expected
    assert parse_header(wire + b"EHLO client.test\r\n") == expected  # what follows stays out


@pytest.mark.parametrize("wire", [w for _, w, _ in READ], ids=[name for name, _, _ in READ])
def test_every_prefix_of_a_header_asks_for_more(wire: bytes) -> None:
    """A header cut anywhere (split over TCP segments) is neither read nor refused yet."""
    for end in range(len(wire)):
        assert parse_header(wire[:end]) is None, end


def _v2_raw(version_command: int, family: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + bytes([version_command, family]) + len(payload).to_bytes(2, "big") \
        + payload


REFUSED: list[tuple[str, bytes, str]] = [
    ("smtp-command", b"EHLO client.test\r\n", "no PROXY header"),
    ("http-request", b"GET / HTTP/1.1\r\n", "no PROXY header"),
    ("lower-case", b"proxy TCP4 192.0.2.10 10.0.0.1 1 2\r\n", "no PROXY header"),
    ("v1-too-long", b"PROXY UNKNOWN " + b"x" * V1_MAX_LENGTH, "longer than 107"),
    ("v1-lf-only", b"PROXY TCP4 192.0.2.10 10.0.0.1 1 2\n", "stray line break"),
    ("v1-bad-protocol", b"PROXY UDP4 192.0.2.10 10.0.0.1 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
    ("v1-missing-field", b"PROXY TCP4 192.0.2.10 10.0.0.1 1\r\n", "four fields"),
    ("v1-double-space", b"PROXY TCP4  192.0.2.10 10.0.0.1 1 2\r\n", "four fields"),
    ("v1-v6-in-tcp4", b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n", "bad address"),
    ("v1-v4-in-tcp6", b"PROXY TCP6 192.0.2.10 ::1 1 2\r\n", "bad address"),
    ("v1-bad-address", b"PROXY TCP4 192.0.2.300 10.0.0.1 1 2\r\n", "bad address"),
    ("v1-scoped-v6", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad address"),
    ("v1-port-too-big", b"PROXY TCP4 192.0.2.10 10.0.0.1 65536 25\r\n", "bad port"),
    ("v1-port-leading-zero", b"PROXY TCP4 192.0.2.10 10.0.0.1 025 25\r\n", "bad port"),
    ("v1-port-sign", b"PROXY TCP4 192.0.2.10 10.0.0.1 +25 25\r\n", "bad port"),
    ("v1-not-ascii", "PROXY TCP4 192.0.2.１ 10.0.0.1 1 2\r\n".encode(), "ASCII"),
    ("v2-bad-signature", V2_SIGNATURE[:11] + b"X" + bytes(8), "no PROXY header"),
    ("v2-version-1", _v2_raw(0x11, 0x11, bytes(12)), "version 1"),
    ("v2-command-2", _v2_raw(0x22, 0x11, bytes(12)), "unknown command"),
    ("v2-too-long", _v2_raw(0x21, 0x11, b"")[:14] + (V2_MAX_PAYLOAD + 1).to_bytes(2, "big"),
     "longer than"),
    ("v2-unix", _v2_raw(0x21, 0x31, bytes(216)), "without an IP address"),
    ("v2-udp", _v2_raw(0x21, 0x12, bytes(12)), "not a stream"),
    ("v2-short-addresses", _v2_raw(0x21, 0x21, bytes(12)), "shorter than its addresses"),
    ("v2-truncated-tlv", _v2_raw(0x21, 0x11, bytes(12) + b"\x01\x00"), "truncated TLV"),
    ("v2-tlv-overruns", _v2_raw(0x21, 0x11, bytes(12) + b"\x01\x00\x05ab"), "longer than the"),
]


@pytest.mark.parametrize(("wire", "reason"), [(w, r) for _, w, r in REFUSED],
                         ids=[name for name, _, _ in REFUSED])
def test_malformed_headers_are_refused(wire: bytes, reason: str) -> None:
    """Anything but a valid header is a HeaderError saying why, as soon as it shows."""
    with pytest.raises(HeaderError, match=reason):
        parse_header(wire)


def test_an_oversized_v2_header_is_refused_from_its_fixed_part() -> None:
    """A v2 length over the bound is refused from the first 16 bytes, not waited for."""
    with pytest.raises(HeaderError, match="longer than"):
        parse_header(_v2_raw(0x21, 0x11, b"")[:14] + b"\xff\xff")


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
ports = st.integers(0, 65535)


@given(client=addresses, client_port=ports, server_port=ports, version=st.sampled_from([1, 2]),
       tlvs=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4))
def test_any_tcp_header_gives_back_its_client(
    client: ipaddress.IPv4Address | ipaddress.IPv6Address, client_port: int, server_port: int,
    version: int, tlvs: list[tuple[int, bytes]],
) -> None:
    """Whatever TCP client a header names, the parser gives back that client, and nothing
    before the header's last byte is enough."""
    server = ("10.0.0.1", server_port) if client.version == 4 else ("::1", server_port)
    wire = v1((str(client), client_port), server) if version == 1 else \
        v2((str(client), client_port), server, tlvs=tlvs)
    header = parse_header(wire)
    assert header is not None and header.length == len(wire)
    assert header.source is not None
    mapped = client.ipv4_mapped if isinstance(client, ipaddress.IPv6Address) else None
    assert header.source[:2] == (str(mapped or client), client_port)
    assert parse_header(wire[:-1]) is None


# -- the config -------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["10.0.0.300", "192.0.2.0/33", "lb.example", ""])
def test_a_bad_trusted_entry_is_a_config_error(tmp_path: Path, entry: str) -> None:
    """`proxy.trusted` takes addresses and networks only; anything else names the key."""
    path = tmp_path / "casegate.toml"
    path.write_text(f'[proxy]\ntrusted = ["10.0.0.5", "{entry}"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'proxy\.trusted' has .*not an IP address or net"):
        load_config(path)


def test_addresses_and_networks_are_taken(tmp_path: Path) -> None:
    path = tmp_path / "casegate.toml"
    path.write_text('[proxy]\ntrusted = ["10.0.0.5", "192.0.2.0/24", "2001:db8::/64"]\n'
                    "header_timeout = 2.5\n", encoding="utf-8")
    config = load_config(path)
    assert config.proxy.trusted == ("10.0.0.5", "192.0.2.0/24", "2001:db8::/64")
    assert config.proxy.header_timeout == 2.5


# -- SMTP behind the balancer -----------------------------------------------------------------

def _relay(gw: Harness, port: int) -> dict[str, tuple[int, bytes]]:
    """One message without AUTH or TLS, as a relay peer (an Exchange connector) sends it."""
    with gw.connect(port=port, tls=False, login=None) as client:
        return client.sendmail(OTHER_STAFF, [COLLEAGUE], message(sender=OTHER_STAFF))


def _peers(gw: Harness, kind: str) -> list[str]:
    """The client address of each audit event of `kind`, oldest first."""
    return [event.metadata.get("peer") or event.metadata.get("client", "")
            for event in gw.app.audit.iterate(EventFilter(kind=kind))]


RELAYED = [
    ("v1-tcp4", v1(CLIENT_A), False),
    ("v1-tcp6", v1(CLIENT_6), False),
    ("v2-inet", v2(CLIENT_A), False),
    ("v2-inet6-tlvs", v2(CLIENT_6, tlvs=TLVS), False),
    ("v1-byte-by-byte", v1(CLIENT_A), True),
    ("v2-byte-by-byte", v2(CLIENT_6, tlvs=TLVS), True),
]


@pytest.mark.parametrize(("header", "byte_by_byte"), [(h, b) for _, h, b in RELAYED],
                         ids=[name for name, _, _ in RELAYED])
async def test_relay_from_is_decided_on_the_real_client(
    tmp_path: Path, sink: Sink, header: bytes, byte_by_byte: bool
) -> None:
    """A client inside relay_from, behind the balancer (which is not), relays without AUTH;
    the relayed copy's Received field names it."""
    async with running_gateway(tmp_path, sink, relay_from=RELAY_FROM, extra_config=PROXY) as gw, \
            Balancer(gw.gateway.smtp_port, header, byte_by_byte=byte_by_byte) as lb:
        assert await gw.run(_relay, gw, lb.port) == {}
        (relayed,) = sink.messages
        client = parse_header(header)
        assert client is not None and client.source is not None
        assert f"{client.source[0]}]".encode() in relayed.data.split(b"\r\n\r\n")[0]


@pytest.mark.parametrize("header", [v1(CLIENT_B), v2(CLIENT_B, tlvs=TLVS)], ids=["v1", "v2"])
async def test_a_client_outside_relay_from_is_refused_behind_the_balancer(
    tmp_path: Path, sink: Sink, header: bytes
) -> None:
    """Outside relay_from, MAIL without AUTH gets 530, although the balancer's own address
    is inside relay_from."""
    async with running_gateway(tmp_path, sink, relay_from=[*RELAY_FROM, f"{LB}/32"],
                               extra_config=PROXY) as gw, \
            Balancer(gw.gateway.smtp_port, header) as lb:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await gw.run(_relay, gw, lb.port)
        assert refused.value.smtp_code == 530
        assert sink.messages == []


@pytest.mark.parametrize("header", [V1_UNKNOWN, v2_local(TLVS)], ids=["v1-unknown", "v2-local"])
async def test_unknown_and_local_keep_the_balancers_address(
    tmp_path: Path, sink: Sink, header: bytes
) -> None:
    """`PROXY UNKNOWN` and the v2 LOCAL command (health checks) leave the connection with the
    balancer's own address: inside relay_from here, so it relays."""
    async with running_gateway(tmp_path, sink, relay_from=[f"{LB}/32"],
                               extra_config=PROXY) as gw, \
            Balancer(gw.gateway.smtp_port, header) as lb:
        assert await gw.run(_relay, gw, lb.port) == {}
        (relayed,) = sink.messages
        assert f"{LB}]".encode() in relayed.data.split(b"\r\n\r\n")[0]


async def test_auth_throttle_audit_and_logs_see_the_real_client(
    tmp_path: Path, sink: Sink
) -> None:
    """AUTH failures are audited and counted per real client: client A is locked out, client
    B behind the same balancer still logs in, and the log line names B."""
    async with running_gateway(tmp_path, sink, auth_max_failures=2, extra_config=PROXY) as gw, \
            Balancer(gw.gateway.smtp_port, v2(CLIENT_A)) as lb_a, \
            Balancer(gw.gateway.smtp_port, v1(CLIENT_B)) as lb_b:
        for _ in range(2):
            with pytest.raises(smtplib.SMTPAuthenticationError):
                await gw.run(gw.connect, port=lb_a.port, password="not the password")
        with pytest.raises(smtplib.SMTPException) as locked:
            await gw.run(gw.connect, port=lb_a.port)
        assert "421" in str(locked.value)
        with capture_logs() as logs:
            client = await gw.run(gw.connect, port=lb_b.port)
            await gw.run(client.quit)
        assert _peers(gw, "auth-failure") == [CLIENT_A[0]] * 2
        assert _peers(gw, "auth-lockout") == [CLIENT_A[0]]
        assert [e["peer"] for e in logs if e["event"] == "auth-success"] == [CLIENT_B[0]]


async def test_connection_limits_count_the_real_client(tmp_path: Path, sink: Sink) -> None:
    """`max_connections_per_client` counts clients, not the balancer: A's second connection
    is refused 421, B's first is taken."""
    async with running_gateway(tmp_path, sink, max_connections_per_client=1,
                               extra_config=PROXY) as gw, \
            Balancer(gw.gateway.smtp_port, v1(CLIENT_A)) as lb_a, \
            Balancer(gw.gateway.smtp_port, v1(CLIENT_B)) as lb_b:
        first = await gw.run(gw.connect, port=lb_a.port, tls=False, login=None)
        try:
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                await gw.run(gw.connect, port=lb_a.port, tls=False, login=None)
            assert refused.value.smtp_code == 421
            other = await gw.run(gw.connect, port=lb_b.port, tls=False, login=None)
            assert (await gw.run(other.noop))[0] == 250
            await gw.run(other.quit)
        finally:
            await gw.run(first.quit)
        assert _peers(gw, "connection-limit") == [CLIENT_A[0]]


def _silence(gw: Harness, port: int, wire: bytes, *, source: str = LB) -> bytes:
    """Connect from `source`, send `wire`, then read until the gateway closes: what it said."""
    with socket.create_connection((gw.host, port), timeout=TIMEOUT,
                                  source_address=(source, 0)) as sock:
        if wire:
            sock.sendall(wire)
        said = b""
        while chunk := sock.recv(4096):
            said += chunk
        return said


@pytest.mark.parametrize("wire", [
    b"EHLO client.test\r\n",  # a client straight to the gateway, past the balancer
    b"PROXY TCP4 192.0.2.300 10.0.0.1 1 2\r\n",
    b"PROXY UNKNOWN " + b"x" * 200,
    V2_SIGNATURE + b"\x21\x11\xff\xff",  # v2 announcing 65535 bytes: refused before they come
    b"",  # nothing at all: closed after proxy.header_timeout
], ids=["no-header", "bad-address", "v1-oversize", "v2-oversize", "silent"])
async def test_a_trusted_peer_without_a_valid_header_is_closed_without_a_greeting(
    tmp_path: Path, sink: Sink, wire: bytes
) -> None:
    """From the balancer, anything but a valid header closes the connection with no reply (at
    once, or at the header timeout), with a log line and a metric; nothing else is lost."""
    timeout = 0.5 if not wire else 60.0  # a bad header is not left to the timeout
    async with running_gateway(tmp_path, sink, relay_from=RELAY_FROM,
                               extra_config=PROXY + f"header_timeout = {timeout}\n") as gw:
        with capture_logs() as logs:
            assert await gw.run(_silence, gw, gw.gateway.smtp_port, wire) == b""
        (refused,) = [e for e in logs if e["event"] == "proxy-header-refused"]
        assert refused["balancer"] == LB and refused["listener"] == "smtp.port"
        metrics = gw.gateway.stages.metrics
        assert metrics.value("casegate_proxy_headers_refused_total") == 1
        async with Balancer(gw.gateway.smtp_port, v1(CLIENT_A)) as lb:
            assert await gw.run(_relay, gw, lb.port) == {}


async def test_an_outsider_cannot_name_a_client(tmp_path: Path, sink: Sink) -> None:
    """From outside proxy.trusted a PROXY line is an SMTP command like any other (500), and
    the connection keeps its own address: the client it names, inside relay_from, gets no
    relay."""
    async with running_gateway(tmp_path, sink, relay_from=RELAY_FROM, extra_config=PROXY) as gw:
        wire = v1(CLIENT_A) + b"EHLO client.test\r\nMAIL FROM:<" + OTHER_STAFF.encode() + \
            b">\r\nQUIT\r\n"
        said = await gw.run(_silence, gw, gw.gateway.smtp_port, wire, source=OUTSIDER)
        replies = [line[:3] for line in said.split(b"\r\n") if line[3:4] == b" "]
        assert replies == [b"220", b"500", b"250", b"530", b"221"]
        assert set(_peers(gw, "protocol-refusal")) == {OUTSIDER}
        assert sink.messages == []


async def test_without_proxy_trusted_a_proxy_line_is_just_a_bad_command(
    tmp_path: Path, sink: Sink
) -> None:
    """The default (no [proxy]) is the gateway as before: no listener reads a header."""
    async with running_gateway(tmp_path, sink, relay_from=RELAY_FROM) as gw:
        assert gw.gateway._proxies == []
        said = await gw.run(_silence, gw, gw.gateway.smtp_port, v1(CLIENT_A) + b"QUIT\r\n")
        assert [line[:3] for line in said.split(b"\r\n") if line] == [b"220", b"500", b"221"]
        assert set(_peers(gw, "protocol-refusal")) == {LB}


# -- TLS after the header ---------------------------------------------------------------------

def _received_names(relayed: bytes, address: str) -> bool:
    """Whether the relayed copy's header names `address` as the client (its Received field)."""
    return f"{address}]".encode() in relayed.split(b"\r\n\r\n")[0]


async def test_implicit_tls_after_a_proxy_header(tmp_path: Path, sink: Sink) -> None:
    """On the implicit-TLS port the header comes first, then the TLS handshake: the client
    logs in and sends, and the gateway knows it by its real address."""
    async with running_gateway(tmp_path, sink, implicit_tls=True, extra_config=PROXY) as gw, \
            Balancer(gw.gateway.tls_port or 0, v2(CLIENT_A, tlvs=TLVS)) as lb:

        def send() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP_SSL(gw.host, lb.port, timeout=TIMEOUT, local_hostname="c.test",
                                  context=gw.client_context()) as client:
                client.login(STAFF, PASSWORD)
                return client.sendmail(STAFF, [COLLEAGUE], message())

        with capture_logs() as logs:
            assert await gw.run(send) == {}
        assert [e["peer"] for e in logs if e["event"] == "auth-success"] == [CLIENT_A[0]]
        (relayed,) = sink.messages
        assert _received_names(relayed.data, CLIENT_A[0])


def _tls_in_one_segment(gw: Harness, port: int, header: bytes,
                        commands: list[bytes]) -> list[bytes]:
    """Send `header` and the TLS ClientHello in one write (as a balancer may), finish the
    handshake, then send each command and read its reply (the greeting first)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = gw.client_context().wrap_bio(incoming, outgoing, server_hostname=gw.host)
    with socket.create_connection((gw.host, port), timeout=TIMEOUT) as sock:

        def pump() -> None:
            if pending := outgoing.read():
                sock.sendall(pending)
            data = sock.recv(65536)
            assert data, "the gateway closed the connection"
            incoming.write(data)

        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        sock.sendall(header + outgoing.read())  # one segment: header and ClientHello
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pump()
        replies = []
        for command in [b"", *commands]:
            if command:
                tls.write(command)
                sock.sendall(outgoing.read())
            reply = b""
            while not (reply.endswith(b"\r\n") and reply.split(b"\r\n")[-2][3:4] == b" "):
                try:
                    reply += tls.read(4096)
                except ssl.SSLWantReadError:
                    pump()
            replies.append(reply)
        return replies


async def test_a_client_hello_in_the_headers_segment_is_not_lost(
    tmp_path: Path, sink: Sink
) -> None:
    """The TLS bytes that arrive with the header are the handshake's first bytes."""
    async with running_gateway(tmp_path, sink, implicit_tls=True, extra_config=PROXY) as gw:
        replies = await gw.run(_tls_in_one_segment, gw, gw.gateway.tls_port or 0, v1(CLIENT_B),
                               [b"EHLO client.test\r\n", b"RCPT TO:<x@example.org>\r\n",
                                b"QUIT\r\n"])
        assert [reply[:3] for reply in replies] == [b"220", b"250", b"503", b"221"]
        assert _peers(gw, "protocol-refusal") == [CLIENT_B[0]]


async def test_starttls_after_a_proxy_header(tmp_path: Path, sink: Sink) -> None:
    """STARTTLS works behind the balancer, and the TLS session keeps the real client."""
    async with running_gateway(tmp_path, sink, extra_config=PROXY) as gw, \
            Balancer(gw.gateway.smtp_port, v1(CLIENT_6)) as lb:

        def send() -> dict[str, tuple[int, bytes]]:
            with gw.connect(port=lb.port) as client:
                return client.sendmail(STAFF, [COLLEAGUE], message())

        with capture_logs() as logs:
            assert await gw.run(send) == {}
        assert [e["peer"] for e in logs if e["event"] == "auth-success"] == [CLIENT_6[0]]
        (relayed,) = sink.messages
        assert _received_names(relayed.data, CLIENT_6[0])


def _broken_starttls(gw: Harness, header: bytes) -> bytes:
    """Header, EHLO, STARTTLS, then bytes that are not TLS: what the gateway says after."""
    with socket.create_connection((gw.host, gw.gateway.smtp_port), timeout=TIMEOUT) as sock, \
            sock.makefile("rb") as replies:
        sock.sendall(header + b"EHLO client.test\r\n")
        while not replies.readline().startswith(b"250 "):
            pass
        sock.sendall(b"STARTTLS\r\n")
        while not replies.readline().startswith(b"220 "):
            pass
        sock.sendall(b"this is not a TLS handshake\r\n" * 4)
        return replies.read()


async def test_a_failed_starttls_handshake_after_a_header_closes_the_connection(
    tmp_path: Path, sink: Sink
) -> None:
    """A handshake that fails on a connection behind the balancer ends it, and only it."""
    async with running_gateway(tmp_path, sink, relay_from=RELAY_FROM, extra_config=PROXY) as gw:
        assert await gw.run(_broken_starttls, gw, v1(CLIENT_B)) == b""
        async with Balancer(gw.gateway.smtp_port, v1(CLIENT_A)) as lb:
            assert await gw.run(_relay, gw, lb.port) == {}


# -- HTTP behind the balancer -----------------------------------------------------------------

async def _sign_in(gw: Harness, port: int, address: str, password: str) -> int:
    """Load the sign-in form through the balancer on `port`, post it: the status."""
    async with https_client(f"https://localhost:{port}", gw.client_context()) as client:
        async with client.get("/login") as form:
            token = hidden(await form.text(), "signin_token")
        async with client.post("/login", allow_redirects=False, data={
                "address": address, "password": password, "signin_token": token,
                "next": "/home"}) as answer:
            return answer.status


async def test_https_sign_in_throttle_and_audit_see_the_real_client(
    tmp_path: Path, sink: Sink
) -> None:
    """`request.remote` is the real client: A's failures lock A out, not B behind the same
    balancer, and the audit events name each."""
    async with running_gateway(tmp_path, sink, extra_config=PROXY) as gw, \
            Balancer(gw.gateway.http_port or 0, v2(CLIENT_A, tlvs=TLVS)) as lb_a, \
            Balancer(gw.gateway.http_port or 0, v1(CLIENT_6)) as lb_6:
        for _ in range(5):
            assert await _sign_in(gw, lb_a.port, OTHER_STAFF, "not the password") == 401
        assert await _sign_in(gw, lb_a.port, STAFF, PASSWORD) == 429  # A is locked
        assert await _sign_in(gw, lb_6.port, STAFF, PASSWORD) == 303  # another client is not
        assert _peers(gw, "login-failure") == [CLIENT_A[0]] * 5
        assert _peers(gw, "login-refused") == [CLIENT_A[0]]
        assert _peers(gw, "login") == [CLIENT_6[0]]


def _http(gw: Harness, wire: bytes, source: str) -> bytes:
    """Send `wire` to the plain-HTTP port from `source`; everything said until the close."""
    return _silence(gw, gw.gateway.http_port or 0, wire, source=source)


async def test_plain_http_behind_the_balancer(tmp_path: Path, sink: Sink) -> None:
    """With http.tls off: a request after a header is served; a request from the balancer
    without one is cut unanswered; a header from an outsider is a bad request (400)."""
    request = b"GET /login HTTP/1.1\r\nHost: casegate.test\r\nConnection: close\r\n\r\n"
    async with running_gateway(tmp_path, sink, http={"tls": False}, extra_config=PROXY) as gw:
        assert (await gw.run(_http, gw, v1(CLIENT_A) + request, LB)).startswith(
            b"HTTP/1.1 200 ")
        with capture_logs() as logs:
            assert await gw.run(_http, gw, request, LB) == b""
        assert [e["listener"] for e in logs if e["event"] == "proxy-header-refused"] == [
            "http.port"]
        said = await gw.run(_http, gw, v1(CLIENT_A) + request, OUTSIDER)
        assert said.split(b" ", 2)[1] == b"400"


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the gateway still says before it closes (an abort reads as the end too)."""
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    except ConnectionResetError:
        return b""


async def test_stopping_cuts_connections_still_before_their_header_or_handshake(
    tmp_path: Path, sink: Sink
) -> None:
    """A connection waiting for its header, or for the TLS handshake after it, does not keep
    a stopping gateway waiting for the header timeout: it is cut."""
    config = PROXY + "header_timeout = 600.0\n"
    async with running_gateway(tmp_path, sink, implicit_tls=True, extra_config=config) as gw:
        port = gw.gateway.tls_port or 0
        silent, silent_writer = await asyncio.open_connection(gw.host, port)
        handshaking, handshaking_writer = await asyncio.open_connection(gw.host, port)
        tls = gw.client_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                                           server_hostname=gw.host)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        handshaking_writer.write(v1(CLIENT_A) + outgoing.read())  # header and ClientHello
        # The ServerHello: the gateway took both connections (the silent one first) and is in
        # the middle of the second's handshake.
        assert await asyncio.wait_for(handshaking.read(1), TIMEOUT)
    try:
        assert await _until_closed(silent) == b""
        await _until_closed(handshaking)  # (the rest of the ServerHello, then the end)
    finally:
        silent_writer.close()
        handshaking_writer.close()
