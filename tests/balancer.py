"""A load balancer for the PROXY protocol tests, and the headers it sends.

`Balancer` is a TCP forwarder on 127.0.0.1, port 0: for each client it opens a connection to
the gateway (from `source`, 127.0.0.1 unless told), writes a PROXY header naming the client
the test chose, whole or one byte per write with the event loop turning in between, then
copies bytes both ways unchanged, so TLS runs end to end through it as through HAProxy in
TCP mode. Any client (smtplib, aiohttp) talks to `balancer.port` as if it were the gateway.

The header builders below are written from the spec (haproxy.org doc/proxy-protocol.txt),
independently of the gateway's parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence
from types import TracebackType

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
SERVER = ("127.0.0.1", 2525)  # the destination the headers name (the gateway ignores it)


def v1(client: tuple[str, int], server: tuple[str, int] = SERVER) -> bytes:
    """`PROXY TCP4|TCP6 <client> <server> <client port> <server port>\\r\\n`."""
    family = "TCP4" if ipaddress.ip_address(client[0]).version == 4 else "TCP6"
    if family == "TCP6" and ipaddress.ip_address(server[0]).version == 4:
        server = ("::1", server[1])
    return f"PROXY {family} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode()


def v2(client: tuple[str, int], server: tuple[str, int] = SERVER, *,
       tlvs: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """A v2 PROXY command over TCP (IPv4 or IPv6), with `tlvs` after the addresses."""
    source = ipaddress.ip_address(client[0])
    if source.version == 4:
        family, destination = 0x11, ipaddress.ip_address(server[0])
    else:
        family, destination = 0x21, ipaddress.IPv6Address("::1")
    block = (source.packed + destination.packed + client[1].to_bytes(2, "big")
             + server[1].to_bytes(2, "big"))
    return _v2(0x21, family, block, tlvs)


def v2_local(tlvs: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """A v2 LOCAL command (the balancer's own health check), family unspecified."""
    return _v2(0x20, 0x00, b"", tlvs)


def _v2(version_command: int, family: int, block: bytes,
        tlvs: Sequence[tuple[int, bytes]]) -> bytes:
    payload = block + b"".join(bytes([kind]) + len(value).to_bytes(2, "big") + value
                               for kind, value in tlvs)
    return (V2_SIGNATURE + bytes([version_command, family]) + len(payload).to_bytes(2, "big")
            + payload)


class Balancer:
    """See the module's doc. `async with Balancer(port, header) as lb:` then connect to
    `lb.port`; every connection and the listener are closed at the end."""

    def __init__(self, target_port: int, header: bytes, *, source: str = "127.0.0.1",
                 byte_by_byte: bool = False) -> None:
        self.target_port = target_port
        self.header = header
        self.source = source
        self.byte_by_byte = byte_by_byte
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Balancer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port, local_addr=(self.source, 0))
            self._writers.add(up_writer)
            if self.byte_by_byte:
                for byte in self.header:
                    up_writer.write(bytes([byte]))
                    await up_writer.drain()
                    await asyncio.sleep(0)  # the loop turns: the gateway reads this byte alone
            else:
                up_writer.write(self.header)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            for each in (writer, up_writer):
                if each is not None:
                    each.transport.abort()
                    self._writers.discard(each)
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends, then close the other."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.close()
