"""The PROXY protocol (HAProxy's `send-proxy` v1 text and `send-proxy-v2` binary headers) in
front of the SMTP and HTTP listeners, so that behind a load balancer every part of the gateway
sees the real client: connection limits, `smtp.relay_from`, AUTH and sign-in throttles, rate
limits, log lines and audit events.

The wrapping happens where the listeners are bound (gateway/runtime/server.py), below both
fronts: `ProxyListener` is the protocol factory of the listening socket. A connection from a
peer outside `proxy.trusted` is handed to the front at once, untouched (a PROXY line it sends
is then just bad input: aiosmtpd's 500, aiohttp's 400). A connection from a trusted load
balancer must begin with a valid header, v1 or v2 (told apart by their first byte), within
`proxy.header_timeout`; it is closed without a word when the header is missing, malformed,
too long or too slow. Once the header is read, the front's protocol is made and connected to
a `ProxiedTransport`, which answers `get_extra_info("peername")` with the client the header
names and passes everything else to the socket's transport, so aiosmtpd's session, aiohttp's
`request.remote` and STARTTLS (whose TLS layer sits on this transport) all see the client.
`PROXY UNKNOWN` (v1) and the v2 `LOCAL` command (the balancer's own health checks) keep the
balancer's address.

On a TLS listener (implicit-TLS SMTP, HTTPS) the header comes before the TLS handshake: the
socket listens in plain TCP and TLS starts after the header. The client's first TLS bytes may
arrive in the same segment as the header, and `loop.start_tls` cannot be handed bytes already
read, so the TLS layer is asyncio's own `sslproto.SSLProtocol` (the one `loop.create_server`
and aiosmtpd's STARTTLS use), fed those bytes through its buffered-protocol interface.

Why here and not in a front: both fronts need it and rooms of one layer may not import each
other (tests/test_architecture.py); the listeners are bound in the composition root, so the
fronts never learn that a load balancer exists. The parser (`parse_header`) has no I/O.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from asyncio import sslproto
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Peer = tuple[str, int] | tuple[str, int, int, int]  # as a socket's peername: IPv4, IPv6

V1_PREFIX = b"PROXY "
# The spec (haproxy.org, doc/proxy-protocol.txt 2.1): the longest v1 line, "PROXY UNKNOWN"
# with two IPv6 addresses and ports, is 107 bytes with its CRLF.
V1_MAX_LENGTH = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LENGTH = 16  # signature, version and command, family and protocol, length
# After the fixed part: the addresses (at most 216 bytes, for UNIX sockets) and TLVs. What
# HAProxy adds (ALPN, authority, unique id up to 128 bytes, the TLS version, cipher and
# client certificate's CN, netns) stays well below this; a longer header is refused.
V2_MAX_PAYLOAD = 2048
V2_LOCAL, V2_PROXY = 0x0, 0x1
V2_UNSPEC, V2_INET, V2_INET6, V2_UNIX = 0x0, 0x1, 0x2, 0x3
V2_STREAM = 0x1
V2_ADDRESS_LENGTH = {V2_INET: 12, V2_INET6: 36}


class HeaderError(ValueError):
    """The bytes are not a valid PROXY header; the message says what is wrong (no content)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A PROXY header, read. `source` is the client, None when the balancer speaks for itself
    (v1 UNKNOWN, v2 LOCAL or an unspecified family): the connection keeps its own address."""

    version: int  # 1 or 2
    length: int  # bytes the header took on the wire
    source: Peer | None = None
    destination: Peer | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()  # v2 type-length-value fields, in order


def parse_header(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of `data`, or None while more bytes are needed; raises
    HeaderError as soon as the bytes cannot be the start of a valid header."""
    if not data:
        return None
    if data[:1] == V2_SIGNATURE[:1]:
        return _parse_v2(data)
    if data[:1] == V1_PREFIX[:1]:
        return _parse_v1(data)
    raise HeaderError("no PROXY header")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V1_PREFIX[:len(data)]):
        raise HeaderError("no PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise HeaderError(f"v1 header longer than {V1_MAX_LENGTH} bytes")
        if b"\n" in data or b"\r" in data[:-1]:
            raise HeaderError("v1 header with a stray line break")
        return None
    try:
        line = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise HeaderError("v1 header not in ASCII") from None
    parts = line.split(" ")
    length = end + 2
    if parts[0] != "PROXY" or len(parts) < 2:
        raise HeaderError("no PROXY header")
    if parts[1] == "UNKNOWN":  # the balancer could not tell: the rest of the line is ignored
        return ProxyHeader(version=1, length=length)
    if parts[1] not in ("TCP4", "TCP6") or len(parts) != 6:
        raise HeaderError("v1 header is not PROXY TCP4, TCP6 or UNKNOWN with four fields")
    family = ipaddress.IPv4Address if parts[1] == "TCP4" else ipaddress.IPv6Address
    source = _peer(_v1_address(family, parts[2]), _v1_port(parts[4]))
    destination = _peer(_v1_address(family, parts[3]), _v1_port(parts[5]))
    return ProxyHeader(version=1, length=length, source=source, destination=destination)


def _v1_address(family: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address],
                text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if "%" in text:  # a scoped (link-local) IPv6 address is no client's public address
        raise HeaderError("v1 header with a bad address for its family")
    try:
        return family(text)
    except ValueError:
        raise HeaderError("v1 header with a bad address for its family") from None


def _v1_port(text: str) -> int:
    # Decimal, 0 to 65535, without a sign, spaces or leading zeros.
    if not (text.isascii() and text.isdigit()) or len(text) > 5 \
            or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise HeaderError("v1 header with a bad port")
    return int(text)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if not data.startswith(V2_SIGNATURE[:len(data)]):
        raise HeaderError("no PROXY header")
    if len(data) < V2_FIXED_LENGTH:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise HeaderError(f"v2 header of version {version}")
    if command not in (V2_LOCAL, V2_PROXY):
        raise HeaderError(f"v2 header with unknown command {command}")
    payload_length = int.from_bytes(data[14:16], "big")
    if payload_length > V2_MAX_PAYLOAD:
        raise HeaderError(f"v2 header longer than {V2_FIXED_LENGTH + V2_MAX_PAYLOAD} bytes")
    length = V2_FIXED_LENGTH + payload_length
    if len(data) < length:
        return None
    payload = data[V2_FIXED_LENGTH:length]
    family, protocol = data[13] >> 4, data[13] & 0x0F
    if command == V2_LOCAL or family == V2_UNSPEC:  # the address block is skipped (spec 2.2)
        return ProxyHeader(version=2, length=length)
    if family not in V2_ADDRESS_LENGTH:
        raise HeaderError("v2 header of a family without an IP address (UNIX or unknown)")
    if protocol != V2_STREAM:
        raise HeaderError("v2 header of a connection that is not a stream (TCP)")
    size = V2_ADDRESS_LENGTH[family]
    if payload_length < size:
        raise HeaderError("v2 header shorter than its addresses")
    half = (size - 4) // 2
    address = ipaddress.IPv4Address if family == V2_INET else ipaddress.IPv6Address
    source = _peer(address(payload[:half]), int.from_bytes(payload[size - 4:size - 2], "big"))
    destination = _peer(address(payload[half:2 * half]),
                        int.from_bytes(payload[size - 2:size], "big"))
    return ProxyHeader(version=2, length=length, source=source, destination=destination,
                       tlvs=_tlvs(payload[size:]))


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    found = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise HeaderError("v2 header with a truncated TLV")
        kind, size = data[offset], int.from_bytes(data[offset + 1:offset + 3], "big")
        end = offset + 3 + size
        if end > len(data):
            raise HeaderError("v2 header with a TLV longer than the header")
        found.append((kind, bytes(data[offset + 3:end])))
        offset = end
    return tuple(found)


def _peer(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> Peer:
    """A peername as a socket would give it; an IPv4-mapped IPv6 address (::ffff:a.b.c.d, a
    dual-stack balancer's) as the IPv4 address, so `smtp.relay_from` ranges match it."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is None:
            return (str(address), port, 0, 0)
        address = address.ipv4_mapped
    return (str(address), port)


def networks(entries: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    """Addresses or networks (CIDR) read; a bad entry is a ValueError naming it as not `what`."""
    parsed = []
    for entry in entries:
        try:
            parsed.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"'{entry}' is not {what}") from None
    return tuple(parsed)


def trusted_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """`proxy.trusted` read: addresses or networks (CIDR); a bad entry is a ValueError."""
    return networks(entries, "an IP address or network (CIDR)")


def is_trusted(peer: Any, trusted: Sequence[IPNetwork]) -> bool:
    """Whether a socket's peername is inside one of the `trusted` networks."""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


class ProxiedTransport(asyncio.Transport):
    """A connection's transport as the front sees it behind a load balancer: `peername` is
    the client the PROXY header named, `proxy_header` the header; everything else is the
    underlying transport's."""

    def __init__(self, transport: asyncio.Transport, peername: Any,
                 header: ProxyHeader) -> None:
        super().__init__()
        self._transport = transport
        self._peername = peername
        self._header = header

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "proxy_header":
            return self._header
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def _force_close(self, exc: BaseException | None) -> None:
        """asyncio's TLS layer (`sslproto.SSLProtocol`, which aiosmtpd's STARTTLS puts on this
        transport) ends a failed handshake by calling this private method of its transport."""
        force_close = getattr(self._transport, "_force_close", None)
        if callable(force_close):
            force_close(exc)
        else:
            self._transport.abort()


def feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give `protocol` bytes already read from its connection, as its transport would."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            assert size > 0, "a buffered protocol offered no room"
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]
    elif isinstance(protocol, asyncio.Protocol):
        protocol.data_received(data)


def connect(transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
            header: ProxyHeader | None, leftover: bytes = b"") -> None:
    """Make `protocol` the protocol of `transport` (behind a `ProxiedTransport` when a header
    was read) and give it the bytes read after the header."""
    seen: asyncio.Transport = transport
    if header is not None:
        peername = header.source or transport.get_extra_info("peername")
        seen = ProxiedTransport(transport, peername, header)
    transport.set_protocol(protocol)
    protocol.connection_made(seen)
    if leftover and not transport.is_closing():
        feed(protocol, leftover)


Refused = Callable[[Any, str], None]  # (the balancer's peername, why): logs and counts


class ProxyListener:
    """The protocol factory of a listening socket with the PROXY protocol before `factory`'s
    protocol (the front's): see the module's doc. `ssl_context`: the listener is TLS, started
    after the header (the socket itself must then listen without TLS)."""

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol],
                 trusted: Sequence[IPNetwork], *, header_timeout: float,
                 ssl_context: ssl.SSLContext | None = None,
                 refused: Refused | None = None) -> None:
        self.factory = factory
        self.trusted = tuple(trusted)
        self.header_timeout = header_timeout
        self.ssl_context = ssl_context
        self.refused = refused
        self.pending: set[_HeaderReader] = set()  # before the front has the connection

    def __call__(self) -> _HeaderReader:
        return _HeaderReader(self)

    def close(self) -> None:
        """Cut every connection the front does not have yet (the gateway is stopping)."""
        for reader in list(self.pending):
            reader.abort()


class _HeaderReader(asyncio.Protocol):
    """One connection until the front has it: the PROXY header, then TLS if the listener is
    TLS, then the front's protocol."""

    def __init__(self, listener: ProxyListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.peer: Any = None
        self.reading = False  # waiting for the header

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        if not is_trusted(self.peer, self.listener.trusted):
            self._hand_over(None, b"")
            return
        self.reading = True
        self.listener.pending.add(self)
        self.timer = asyncio.get_running_loop().call_later(
            self.listener.header_timeout, self._refuse, "no PROXY header in time")

    def data_received(self, data: bytes) -> None:
        if not self.reading:
            return
        self.buffer += data
        try:
            header = parse_header(bytes(self.buffer))
        except HeaderError as exc:
            self._refuse(str(exc))
            return
        if header is not None:
            self._hand_over(header, bytes(self.buffer[header.length:]))

    def eof_received(self) -> bool:
        if self.reading:
            self._refuse("closed before the PROXY header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading()
        self.listener.pending.discard(self)

    def abort(self) -> None:
        self._stop_reading()
        self.listener.pending.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def _stop_reading(self) -> None:
        self.reading = False
        self.buffer.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self, reason: str) -> None:
        if not self.reading:
            return
        if self.listener.refused is not None:
            self.listener.refused(self.peer, reason)
        self.abort()

    def _hand_over(self, header: ProxyHeader | None, leftover: bytes) -> None:
        self._stop_reading()
        assert self.transport is not None
        if self.listener.ssl_context is None:
            self.listener.pending.discard(self)
            connect(self.transport, self.listener.factory(), header, leftover)
            return
        self.listener.pending.add(self)  # until the handshake is done
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        handshake.add_done_callback(self._handshake_done)
        tls = sslproto.SSLProtocol(loop, _AfterHandshake(self.listener, header),
                                   self.listener.ssl_context, handshake, server_side=True)
        self.transport.set_protocol(tls)
        tls.connection_made(self.transport)
        if leftover:
            feed(tls, leftover)

    def _handshake_done(self, handshake: asyncio.Future[None]) -> None:
        self.listener.pending.discard(self)
        if not handshake.cancelled():
            handshake.exception()  # a failed handshake closes the connection; nothing to say


class _AfterHandshake(asyncio.Protocol):
    """The TLS layer's first protocol: once the handshake is done it makes the front's."""

    def __init__(self, listener: ProxyListener, header: ProxyHeader | None) -> None:
        self.listener = listener
        self.header = header

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        connect(transport, self.listener.factory(), self.header)
