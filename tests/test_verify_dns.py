"""Deliverability through dnspython against a stub DNS server on 127.0.0.1, port 0."""

from __future__ import annotations

import pytest

from tests.dnsstub import DnsStub
from verification.dns import Deliverability, check_domain, make_resolver

CASES = [
    ("example.org", Deliverability.DELIVERABLE, "MX"),
    ("a-only.example", Deliverability.DELIVERABLE, "A"),
    ("v6-only.example", Deliverability.DELIVERABLE, "AAAA"),
    ("null-mx.example", Deliverability.NO_MAIL, "null MX"),
    ("txt-only.example", Deliverability.NO_MAIL, "no MX, A or AAAA"),
    ("missing.example", Deliverability.NO_SUCH_DOMAIN, "NXDOMAIN (MX)"),
    ("servfail.example", Deliverability.DNS_FAILURE, "NoNameservers (MX)"),
]


@pytest.fixture
async def stub() -> DnsStub:  # type: ignore[misc]
    async with DnsStub() as server:
        server.add("example.org", "MX", "10 mx.example.org.")
        server.add("a-only.example", "A", "192.0.2.10")
        server.add("v6-only.example", "AAAA", "2001:db8::10")
        server.add("null-mx.example", "MX", "0 .")
        server.add("txt-only.example", "TXT", '"hello"')
        server.servfail("servfail.example")
        server.silent("silent.example")
        yield server


@pytest.mark.parametrize(("domain", "result", "detail"), CASES)
async def test_each_kind_of_domain_gets_its_answer(stub: DnsStub, domain: str,
                                                   result: Deliverability, detail: str) -> None:
    """MX, A or AAAA means deliverable; null MX or no records no mail; NXDOMAIN no domain."""
    resolver = make_resolver(["127.0.0.1"], stub.port, timeout=2.0)
    checked = await check_domain(domain, resolver, 2.0)
    assert (checked.result, checked.detail) == (result, detail)
    assert checked.ok is (result is Deliverability.DELIVERABLE)
    assert stub.queries[0] == (domain, "MX")


async def test_a_silent_server_is_a_dns_failure_within_the_time_limit(stub: DnsStub) -> None:
    """No answer at all is reported as a DNS failure, not guessed, within the timeout."""
    resolver = make_resolver(["127.0.0.1"], stub.port, timeout=0.3)
    checked = await check_domain("silent.example", resolver, 0.3)
    assert checked.result is Deliverability.DNS_FAILURE
    assert "could not check" in checked.sentence() and "try again later" in checked.sentence()


async def test_no_reachable_server_is_a_dns_failure() -> None:
    """A stopped DNS server (nothing listening) is a failure, reported as such."""
    async with DnsStub() as server:
        port = server.port
    resolver = make_resolver(["127.0.0.1"], port, timeout=0.3)
    checked = await check_domain("example.org", resolver, 0.3)
    assert checked.result is Deliverability.DNS_FAILURE
