"""A stub DNS server for tests: UDP on 127.0.0.1, port 0, answering from a small table.

    async with DnsStub() as stub:
        stub.add("example.org", "MX", "10 mail.example.org.")
        stub.servfail("broken.example")         # every query for it gets SERVFAIL
        stub.silent("slow.example")             # queries for it are never answered
        resolver = make_resolver(["127.0.0.1"], stub.port, timeout=1.0)

A name with records of any type answers NOERROR (an empty answer for the other types); an
unknown name is NXDOMAIN. Messages are parsed and built with dnspython's own message code.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import TracebackType
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, stub: DnsStub) -> None:
        self.stub = stub
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.stub.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class DnsStub:
    """The test's DNS server; see the module docstring."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.queries: list[tuple[str, str]] = []  # (name, type) in arrival order
        self._records: dict[tuple[dns.name.Name, int], list[str]] = defaultdict(list)
        self._names: set[dns.name.Name] = set()
        self._servfail: set[dns.name.Name] = set()
        self._silent: set[dns.name.Name] = set()
        self._transport: asyncio.DatagramTransport | None = None

    def add(self, name: str, rdtype: str, *values: str) -> None:
        """Records of one type for `name` (values in zone-file text, e.g. "10 mx.example.")."""
        key = dns.name.from_text(name)
        self._names.add(key)
        self._records[(key, dns.rdatatype.from_text(rdtype))].extend(values)

    def servfail(self, name: str) -> None:
        self._servfail.add(dns.name.from_text(name))

    def silent(self, name: str) -> None:
        self._silent.add(dns.name.from_text(name))

    def answer(self, wire: bytes) -> bytes | None:
        """The reply to one query, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        question = query.question[0]
        self.queries.append((question.name.to_text(omit_final_dot=True),
                             dns.rdatatype.to_text(question.rdtype)))
        if question.name in self._silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if question.name in self._servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif question.name not in self._names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            values = self._records.get((question.name, question.rdtype), [])
            if values:
                response.answer.append(dns.rrset.from_text_list(
                    question.name, 300, dns.rdataclass.IN, question.rdtype, values))
        return response.to_wire()

    async def start(self) -> DnsStub:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> DnsStub:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
