"""Deliverability of an address's domain: does it have somewhere to receive mail?

The domain has MX records (and not only RFC 7505's "null MX" that says it takes no mail), or,
failing MX, an A or AAAA record (RFC 5321 5.1 implicit MX). Looked up with dnspython's
asyncio resolver, which the caller builds (`make_resolver`) and tests point at a stub server.
The whole check has one short time limit. A DNS failure (timeout, SERVFAIL, no server answered)
is reported as such, never guessed either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

DEFAULT_TIMEOUT = 3.0


class Deliverability(StrEnum):
    DELIVERABLE = "deliverable"
    NO_SUCH_DOMAIN = "no-such-domain"  # NXDOMAIN
    NO_MAIL = "no-mail"  # the domain exists but has no MX, A or AAAA (or a null MX)
    DNS_FAILURE = "dns-failure"  # no answer could be had: not known either way


@dataclass(frozen=True)
class DomainCheck:
    domain: str
    result: Deliverability
    detail: str = ""  # which record answered, or what failed (for logs)

    @property
    def ok(self) -> bool:
        return self.result is Deliverability.DELIVERABLE

    def sentence(self) -> str:
        """What the practitioner reads when the address cannot be used."""
        return {
            Deliverability.DELIVERABLE: f"The domain {self.domain} receives mail.",
            Deliverability.NO_SUCH_DOMAIN: (
                f"The domain {self.domain} does not exist. Check the spelling of the address "
                "with the recipient."),
            Deliverability.NO_MAIL: (
                f"The domain {self.domain} does not receive email. Check the address with "
                "the recipient."),
            Deliverability.DNS_FAILURE: (
                f"casegate could not check the domain {self.domain} just now (the DNS lookup "
                "failed). Nothing was sent; please try again later."),
        }[self.result]


def make_resolver(servers: Sequence[str] = (), port: int = 53,
                  timeout: float = DEFAULT_TIMEOUT) -> dns.asyncresolver.Resolver:
    """A resolver for `servers` (empty: the system's), each query bounded by `timeout`."""
    if servers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = list(servers)
        resolver.port = port
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.asyncresolver.Resolver(configure=False)  # every lookup: DNS_FAILURE
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


async def check_domain(domain: str, resolver: dns.asyncresolver.Resolver,
                       seconds: float = DEFAULT_TIMEOUT) -> DomainCheck:
    """MX, else A or AAAA, for the ASCII (IDNA) `domain`, within `seconds` overall."""
    try:
        async with asyncio.timeout(seconds):
            return await _lookup(domain, resolver, seconds)
    except TimeoutError:
        return DomainCheck(domain, Deliverability.DNS_FAILURE, "timeout")


async def _lookup(domain: str, resolver: dns.asyncresolver.Resolver,
                  seconds: float) -> DomainCheck:
    try:
        name = dns.name.from_text(domain)
    except dns.exception.DNSException:
        return DomainCheck(domain, Deliverability.NO_SUCH_DOMAIN, "not a domain name")
    answered = await _query(name, "MX", resolver, seconds)
    if isinstance(answered, DomainCheck):
        return answered
    if answered is not None:
        hosts = [r.exchange for r in answered if r.exchange != dns.name.root]
        if hosts:
            return DomainCheck(domain, Deliverability.DELIVERABLE, "MX")
        return DomainCheck(domain, Deliverability.NO_MAIL, "null MX")
    for rdtype in ("A", "AAAA"):
        answered = await _query(name, rdtype, resolver, seconds)
        if isinstance(answered, DomainCheck):
            return answered
        if answered is not None:
            return DomainCheck(domain, Deliverability.DELIVERABLE, rdtype)
    return DomainCheck(domain, Deliverability.NO_MAIL, "no MX, A or AAAA")


async def _query(name: dns.name.Name, rdtype: str, resolver: dns.asyncresolver.Resolver,
                 seconds: float) -> dns.resolver.Answer | DomainCheck | None:
    """The answer; None when the name has no records of this type; a DomainCheck when the
    lookup settles it (NXDOMAIN) or fails."""
    domain = name.to_text(omit_final_dot=True)
    try:
        return await resolver.resolve(name, rdtype, lifetime=seconds, search=False)
    except dns.resolver.NXDOMAIN:
        return DomainCheck(domain, Deliverability.NO_SUCH_DOMAIN, f"NXDOMAIN ({rdtype})")
    except dns.resolver.NoAnswer:
        return None
    except dns.exception.Timeout:
        return DomainCheck(domain, Deliverability.DNS_FAILURE, f"timeout ({rdtype})")
    except dns.exception.DNSException as exc:  # SERVFAIL, REFUSED, no nameservers, ...
        return DomainCheck(domain, Deliverability.DNS_FAILURE,
                           f"{exc.__class__.__name__} ({rdtype})")
