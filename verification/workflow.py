"""The recipient-verification workflow (IA 3.4; issue 4) as named steps.

    request      check_staff -> check_address -> already verified? -> check_domain (DNS)
                 -> open the request -> send the invitation (no case information, ruling 16)
    the link     open_link   -> the confirm page, or why the link cannot be used
                 confirm     -> code (constant time) and name -> the registry; or a wrong code,
                                and at `max_attempts` wrong codes the request locks
                 decline     -> "this is not me": a high-grade breach-attempt event (governance
                                is mailed by gateway.audit.alerts) and the practitioner is told
    upkeep       expire_due  -> unanswered links and lapsed verifications become expired
                 revoke      -> staff withdraw a verification or a pending request

A lookalike (an address casegate reads as imitating a known domain) is refused by default. A
member of staff may confirm one deliberately, with a reason (`Ask.lookalike_reason`, `verify add
--confirm-lookalike --reason`): only a real domain that resembles a secure or verified one, never
a homograph (look-alike letters) nor an imitation of the agency's own domains. The confirmation
is a medium-grade audit event ("verification-lookalike-confirmed"); once the address is verified,
its domain counts as verified, so casegate reads it as an ordinary non-secure address (DESIGN
ruling 1): protected mail goes to it through the portal.

The address checks are pure functions of the policy and a Snapshot. `Workflow` holds the ports
it acts through, all injected: the registry, an audit recorder, the outbound transport, the
link signer, the DNS resolver and the clock. Every step records an audit event (metadata only:
never the code, the token or a name). Nothing here reads the config or the environment.

The async steps (`request`, `confirm`, `decline`) run on an event loop: their work with the
registry, and the audit events that go with it, runs in a worker thread, so the loop never waits
on the disk; only DNS and the transport are awaited on the loop. The synchronous steps
(`open_link`, `expire_due`, `revoke`) are for a worker thread or a command line.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import dns.asyncresolver

from policies.events import EventKind
from policies.loader import Policy
from policies.model import Category, Recipient, Role, Snapshot
from policies.recipients import classify_recipient, is_under
from transports.base import Copy, Origin, Transport
from verification.dns import Deliverability, DomainCheck, check_domain
from verification.registry import (
    AlreadyPending,
    AlreadyVerified,
    Registry,
    RegistryEntry,
    RequestState,
    VerificationRequest,
)
from verification.texts import Mail, Texts, one_line, when
from verification.tokens import IssuedLink, LinkSigner, TokenStatus

MAX_NAME = 200
MAX_REASON = 500
METHOD = "recipient-confirmed"  # how, in the registry's `method` column
LOOKALIKE_METHOD = "lookalike-confirmed"  # `verify add --confirm-lookalike`, in that column
LOOKALIKE_RULE = "lookalike-domain"

# Why an address cannot be verified, by category (a lookalike also gets "did you mean").
NOT_VERIFIABLE: dict[Category, str] = {
    Category.INVALID: "is not a valid, plain email address. Check it with the recipient.",
    Category.FAX: "is a fax address, and Cafcass does not send by fax (IA 3.4).",
    Category.PERSONAL: "is a staff member's personal address, which never receives Cafcass "
                       "mail (IA 3.2).",
    Category.INTERNAL: "is a Cafcass address, which needs no verification.",
    Category.LOOKALIKE: "looks like a known address but is not the same.",
}


class Recorder(Protocol):
    """The audit log (gateway.audit.trail.AuditLog) as the workflow uses it."""

    def record(self, kind: EventKind, **fields: Any) -> int: ...


@dataclass(frozen=True)
class Settings:
    """The `[verification]` section as the workflow uses it (defaults: gateway.config)."""

    organisation: str  # "Cafcass"
    sender: str  # the verification address: From of every mail the workflow sends
    public_url: str  # base of the recipient's link, e.g. https://casegate.example.org
    link_lifetime: timedelta
    valid_for: timedelta | None  # None: a verification never lapses
    max_attempts: int
    dns_timeout: float


@dataclass(frozen=True)
class Ask:
    """A practitioner's request, from any entry point (SMTP, HTTP, CLI)."""

    address: str
    case_number: str | None
    name: str
    role: Role
    requested_by: str
    channel: str  # "smtp", "http" or "cli"
    lookalike_reason: str = ""  # set: staff confirm a lookalike address deliberately, and why


class Outcome(StrEnum):
    SENT = "sent"
    ALREADY_VERIFIED = "already-verified"
    ALREADY_PENDING = "already-pending"
    REFUSED = "refused"  # bad input or an address that may not be verified
    UNDELIVERABLE = "undeliverable"  # DNS says the domain takes no mail
    DNS_FAILURE = "dns-failure"  # DNS could not say: try later
    NOT_SENT = "not-sent"  # the upstream did not take the invitation: try later


@dataclass(frozen=True)
class RequestResult:
    outcome: Outcome
    sentence: str  # what the practitioner reads
    address: str
    case_number: str | None = None
    code: str = ""  # the out-of-band code, only when SENT
    expires_at: datetime | None = None
    suggestion: str | None = None  # for a lookalike: the likely intended address

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.SENT, Outcome.ALREADY_VERIFIED)

    @property
    def temporary(self) -> bool:
        return self.outcome in (Outcome.DNS_FAILURE, Outcome.NOT_SENT)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "message": self.sentence,
            "address": self.address,
            "case_number": self.case_number,
            "code": self.code or None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "suggestion": self.suggestion,
        }


class LinkState(StrEnum):
    OPEN = "open"  # show the form
    CONFIRMED = "confirmed"
    DECLINED = "declined"
    LOCKED = "locked"
    UNAVAILABLE = "unavailable"  # a link we issued that expired, was used or was withdrawn
    UNKNOWN = "unknown"  # not a link we issued: tampered, or no request behind it


@dataclass(frozen=True)
class LinkAnswer:
    """What the recipient's page shows next."""

    state: LinkState
    request: VerificationRequest | None = None
    wrong: bool = False  # OPEN again after a wrong code or name
    attempts_left: int = 0


# ---- pure steps -------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressCheck:
    normalised: str  # "" when refused
    sentence: str = ""
    suggestion: str | None = None
    rule: str = ""
    lookalike_of: str = ""  # a lookalike staff confirmed: the domain it resembles


def check_staff(address: str, policy: Policy, snapshot: Snapshot) -> str | None:
    """The requesting member of staff's normalised address, or None if not a Cafcass one."""
    recipient = classify_recipient(address, policy, snapshot, sender=address)
    return recipient.normalised.lower() if recipient.category is Category.INTERNAL else None


def check_address(address: str, requested_by: str, policy: Policy,
                  snapshot: Snapshot, *, confirm_lookalike: bool = False) -> AddressCheck:
    """Syntax, fax, personal, internal and lookalike checks of the address to verify.

    With `confirm_lookalike`, a lookalike staff may confirm passes, naming what it resembles."""
    recipient = classify_recipient(address, policy, snapshot, sender=requested_by)
    shown = one_line(address, 254)
    if confirm_lookalike and recipient.category is Category.LOOKALIKE:
        return _confirmable_lookalike(recipient, shown, policy)
    problem = NOT_VERIFIABLE.get(recipient.category)
    if problem is None:
        return AddressCheck(normalised=recipient.normalised.lower())
    sentence = f"{shown} {problem}"
    if recipient.suggestion:
        sentence += f" Did you mean {recipient.suggestion}?"
    return AddressCheck(normalised="", sentence=sentence, suggestion=recipient.suggestion,
                        rule=recipient.category.value)


def _confirmable_lookalike(recipient: Recipient, shown: str, policy: Policy) -> AddressCheck:
    """A real domain that merely resembles a secure or verified one may be confirmed; one that
    imitates with look-alike letters, or imitates the agency's own domain, may not."""
    target = (recipient.suggestion or "").rpartition("@")[2]
    if (not recipient.normalised or not recipient.normalised.isascii()
            or recipient.detail.startswith("homograph")):
        return AddressCheck(
            normalised="", rule=LOOKALIKE_RULE, suggestion=recipient.suggestion,
            sentence=f"{shown} imitates {target or 'a known domain'} with look-alike letters, "
                     "so it cannot be confirmed. Use the address the recipient gives you.")
    if any(is_under(target, own) for own in policy.internal_domains):
        return AddressCheck(
            normalised="", rule=LOOKALIKE_RULE, suggestion=recipient.suggestion,
            sentence=f"{shown} imitates the Cafcass domain {target}, so it cannot be "
                     "confirmed. Check the address with the recipient.")
    return AddressCheck(normalised=recipient.normalised.lower(), lookalike_of=target)


def check_reason(text: str, policy: Policy) -> str | None:
    """Why staff confirm a lookalike, cleaned: one line, from the policy's shortest
    justification (`[overrides] min_justification_chars`) to MAX_REASON; else None."""
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        return None
    cleaned = " ".join(text.split())
    return cleaned if policy.min_justification_chars <= len(cleaned) <= MAX_REASON else None


def check_name(name: str) -> str | None:
    """The person's name, cleaned; None when empty, too long or holding control characters."""
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        return None
    cleaned = " ".join(name.split())
    return cleaned if 0 < len(cleaned) <= MAX_NAME else None


def check_case(text: str, policy: Policy) -> str | None:
    case = text.strip().upper()
    return case if policy.content.case_number_regex.fullmatch(case) else None


def check_ask(ask: Ask, policy: Policy,
              snapshot: Snapshot) -> tuple[str, str, str | None] | str:
    """(staff address, cleaned name, case number) from a request, or why it is refused."""
    staff = check_staff(ask.requested_by, policy, snapshot)
    if staff is None:
        return (f"{one_line(ask.requested_by)} is not a Cafcass staff address, so it cannot ask "
                "for a verification.")
    name = check_name(ask.name)
    if name is None:
        return "Give the recipient's full name (up to 200 characters)."
    case = check_case(ask.case_number, policy) if ask.case_number else None
    if ask.case_number and case is None:
        return f"{one_line(ask.case_number, 40)} is not a case number (like ZC12C00123)."
    return staff, name, case


def already_verified(snapshot: Snapshot, address: str, case_number: str | None) -> bool:
    """Verified for that case, or organisation-wide."""
    if case_number is None:
        return any(v.address == address and v.case_number is None for v in snapshot.verified)
    return snapshot.is_verified(address, (case_number,))


def _name_key(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", folded).split())


def names_match(expected: str, given: str) -> bool:
    """The name typed matches the name the practitioner gave (case, spacing, punctuation and
    middle names aside: first and last names must agree)."""
    want, got = _name_key(expected).split(), _name_key(given).split()
    if not want or not got:
        return False
    return hmac.compare_digest(" ".join((want[0], want[-1])).encode(),
                               " ".join((got[0], got[-1])).encode())


def practitioner_name(address: str) -> str:
    """A readable name from a staff address: jo.smith@... -> Jo Smith."""
    local = address.partition("@")[0]
    words = [w for w in re.split(r"[._-]+", local) if w and not w.isdigit()]
    return " ".join(w.capitalize() for w in words) or address


def scope_text(case_number: str | None) -> str:
    return f"case {case_number}" if case_number else "the whole organisation"


# ---- the workflow -----------------------------------------------------------------------


class Workflow:
    """Runs the steps against the registry, the audit log, the transport and DNS."""

    def __init__(
        self,
        *,
        registry: Registry,
        policy: Policy,
        audit: Recorder,
        transport: Transport,
        signer: LinkSigner,
        resolver: dns.asyncresolver.Resolver,
        settings: Settings,
        clock: Callable[[], datetime],
        snapshot: Callable[[datetime], Snapshot],
        texts: Texts | None = None,
        cases: Callable[[RegistryEntry, str], object] | None = None,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.audit = audit
        self.transport = transport
        self.signer = signer
        self.resolver = resolver
        self.settings = settings
        self.clock = clock
        self.snapshot = snapshot
        self.texts = texts or Texts()
        # Called with each confirmed entry and the name the practitioner gave, in the worker
        # thread: a verified party becomes a person of the case (issue 16).
        self.cases = cases

    # -- request ------------------------------------------------------------------------

    async def request(self, ask: Ask) -> RequestResult:
        """Check the address, then mail the recipient; the code goes back to the caller."""
        now = self.clock()
        checked = await asyncio.to_thread(self._check, ask, now)
        if isinstance(checked, RequestResult):
            return checked
        domain = await check_domain(checked.address.rpartition("@")[2], self.resolver,
                                    self.settings.dns_timeout)
        if not domain.ok:
            return await asyncio.to_thread(self._undeliverable, ask, checked, domain)
        return await self._open_and_send(ask, checked, now)

    def _check(self, ask: Ask, now: datetime) -> RequestResult | _Checked:
        """The request's checks, against the registry as it is now (in a worker thread): the
        answer when one of them settles it, else what the request is for."""
        self.expire_due(now)
        snapshot = self.snapshot(now)
        inputs = check_ask(ask, self.policy, snapshot)
        if isinstance(inputs, str):
            return RequestResult(Outcome.REFUSED, inputs, ask.address)
        staff, name, case = inputs
        reason = ""
        if ask.lookalike_reason:
            reason = check_reason(ask.lookalike_reason, self.policy) or ""
            if not reason:
                return RequestResult(Outcome.REFUSED, _reason_needed(self.policy), ask.address)
        checked = check_address(ask.address, staff, self.policy, snapshot,
                                confirm_lookalike=bool(reason))
        if not checked.normalised:
            self.audit.record(EventKind.VERIFICATION_REFUSED, sender=staff,
                              recipients=[ask.address], case_numbers=_cases(case),
                              reason=checked.rule, channel=ask.channel)
            return RequestResult(Outcome.REFUSED, checked.sentence, ask.address, case,
                                 suggestion=checked.suggestion)
        address = checked.normalised
        if already_verified(snapshot, address, case):
            return RequestResult(Outcome.ALREADY_VERIFIED,
                                 f"{address} is already verified for {scope_text(case)}; "
                                 "no verification email was sent.", address, case)
        declined = self._declined(address, case)
        if declined is not None:
            return RequestResult(
                Outcome.REFUSED,
                f"The owner of {address} said on {when(declined)} that it is not the address "
                f"you meant, so it is not mailed again for {scope_text(case)}. Check the right "
                "address with the person by telephone.", address, case)
        return _Checked(staff=staff, name=name, address=address, case=case,
                        lookalike_of=checked.lookalike_of, reason=reason)

    async def _open_and_send(self, ask: Ask, checked: _Checked,
                             now: datetime) -> RequestResult:
        staff, address, case = checked.staff, checked.address, checked.case
        expires_at = (now + self.settings.link_lifetime).replace(microsecond=0)
        link = self.signer.issue(expires_at)
        code = self.signer.new_code()
        request = await asyncio.to_thread(self._open, ask, checked, link, code, now, expires_at)
        if isinstance(request, RequestResult):
            return request
        invitation = self.texts.mail(
            "invitation.txt", sender=self.settings.sender, to=address,
            organisation=self.settings.organisation,
            practitioner_name=practitioner_name(staff),
            link=f"{self.settings.public_url.rstrip('/')}/v/{link.token}",
            expires=when(expires_at))
        if not await self._send(f"verify-{request.id}-invitation", invitation):
            await asyncio.to_thread(self._withdraw, request)
            return RequestResult(Outcome.NOT_SENT, "The verification email could not be sent "
                                 "just now; nothing was sent. Please try again later.",
                                 address, case)
        await asyncio.to_thread(self._event, EventKind.VERIFICATION_SENT, request)
        return RequestResult(
            Outcome.SENT,
            f"The verification email was sent to {address} for {scope_text(case)}. Give the "
            f"recipient the code {code} by telephone or in person.",
            address, case, code=code, expires_at=expires_at)

    def _open(self, ask: Ask, checked: _Checked, link: IssuedLink, code: str, now: datetime,
              expires_at: datetime) -> VerificationRequest | RequestResult:
        """The pending request in the registry, recorded (in a worker thread); the answer
        when one is already waiting for the same scope."""
        try:
            request = self.registry.create_request(
                checked.address, case_number=checked.case, role=ask.role, name=checked.name,
                requested_by=checked.staff, channel=ask.channel, token_id=link.token_id,
                code_digest=self.signer.code_digest(link.token_id, code), now=now,
                link_expires_at=expires_at)
        except AlreadyPending as exc:
            return RequestResult(Outcome.ALREADY_PENDING,
                                 f"{str(exc).capitalize()}. Ask them to use the link they were "
                                 "sent, or revoke it (casegate verify revoke) and ask again.",
                                 checked.address, checked.case)
        self._event(EventKind.VERIFICATION_REQUESTED, request, channel=ask.channel)
        if checked.lookalike_of:
            self.audit.record(EventKind.VERIFICATION_LOOKALIKE_CONFIRMED, rule=LOOKALIKE_RULE,
                              sender=checked.staff, recipients=[checked.address],
                              case_numbers=_cases(checked.case), request_id=request.id,
                              resembles=checked.lookalike_of, reason=checked.reason,
                              channel=ask.channel)
        return request

    def _withdraw(self, request: VerificationRequest) -> None:
        """The invitation did not go: the request is revoked (in a worker thread)."""
        self.registry.close_request(request.id, RequestState.REVOKED, now=self.clock())
        self._event(EventKind.VERIFICATION_REVOKED, request, reason="not-sent")

    def _declined(self, address: str, case: str | None) -> datetime | None:
        """When the address's owner said "this is not me" for this scope, if they did."""
        for request in self.registry.requests(case_number=case):
            if (request.address == address and request.case_number == case
                    and request.state is RequestState.DECLINED):
                return request.decided_at or request.requested_at
        return None

    def _undeliverable(self, ask: Ask, checked: _Checked, domain: DomainCheck) -> RequestResult:
        self.audit.record(EventKind.VERIFICATION_REFUSED, sender=checked.staff,
                          recipients=[checked.address], case_numbers=_cases(checked.case),
                          reason=domain.result.value, channel=ask.channel)
        outcome = (Outcome.DNS_FAILURE if domain.result is Deliverability.DNS_FAILURE
                   else Outcome.UNDELIVERABLE)
        return RequestResult(outcome, domain.sentence(), checked.address, checked.case)

    def practitioner_mail(self, result: RequestResult, to: str) -> Mail | None:
        """The reply that tells a practitioner (who asked by email) what happened."""
        values = {"address": result.address, "scope": scope_text(result.case_number)}
        if result.outcome is Outcome.SENT and result.expires_at is not None:
            return self.texts.mail("practitioner-sent.txt", sender=self.settings.sender, to=to,
                                   code=result.code, expires=when(result.expires_at), **values)
        if result.outcome is Outcome.ALREADY_VERIFIED:
            return self.texts.mail("practitioner-already.txt", sender=self.settings.sender,
                                   to=to, **values)
        return None

    async def tell(self, key: str, mail: Mail) -> bool:
        """Send one of the workflow's mails; False when the upstream did not take it."""
        return await self._send(key, mail)

    # -- the recipient's link -----------------------------------------------------------

    def open_link(self, token: str) -> LinkAnswer:
        """What the link shows now: the form, or why it cannot be used."""
        self.expire_due()
        request = self._pending(token)
        if isinstance(request, LinkState):
            return LinkAnswer(request)
        return LinkAnswer(LinkState.OPEN, request,
                          attempts_left=self.settings.max_attempts - request.attempts)

    async def confirm(self, token: str, code: str, name: str) -> LinkAnswer:
        """The recipient's code and name: verified, a wrong try, or locked."""
        request = await asyncio.to_thread(self._pending, token)
        if isinstance(request, LinkState):
            return LinkAnswer(request)
        now = self.clock()
        right = self.signer.code_matches(request.token_id, code, request.code_digest)
        if not (right and names_match(request.name, name[:MAX_NAME])):
            return await self._wrong(request, now)
        entry = await asyncio.to_thread(self._confirm, request, now)
        if entry is None:  # answered meanwhile (a second confirmation), or verified otherwise
            return LinkAnswer(LinkState.UNAVAILABLE)
        await self._tell_practitioner(request, "practitioner-confirmed.txt", "confirmed",
                                      name=request.name, when=when(now),
                                      valid_until=when(entry.expires_at) if entry.expires_at
                                      else "it is revoked")
        return LinkAnswer(LinkState.CONFIRMED, request)

    def _confirm(self, request: VerificationRequest, now: datetime) -> RegistryEntry | None:
        """The address into the registry, recorded (in a worker thread); None when the request
        was answered meanwhile or the address verified otherwise."""
        valid_for = self.settings.valid_for
        try:
            entry = self.registry.confirm_request(
                request.id, now=now, method=METHOD,
                expires_at=now + valid_for if valid_for else None)
        except AlreadyVerified:
            return None
        if entry is not None:
            self._event(EventKind.VERIFICATION_CONFIRMED, request, method=METHOD,
                        valid_until=entry.expires_at.isoformat() if entry.expires_at else "never")
            if self.cases is not None:
                self.cases(entry, request.name)
        return entry

    async def _wrong(self, request: VerificationRequest, now: datetime) -> LinkAnswer:
        updated = await asyncio.to_thread(self._count_wrong, request, now)
        if updated is None:
            return LinkAnswer(LinkState.UNAVAILABLE)
        if updated.state is RequestState.LOCKED:
            await self._tell_practitioner(updated, "practitioner-locked.txt", "locked",
                                          attempts=updated.attempts, when=when(now))
            return LinkAnswer(LinkState.LOCKED, updated)
        return LinkAnswer(LinkState.OPEN, updated, wrong=True,
                          attempts_left=self.settings.max_attempts - updated.attempts)

    def _count_wrong(self, request: VerificationRequest,
                     now: datetime) -> VerificationRequest | None:
        """One more wrong code, recorded, locking the request at `max_attempts` (in a worker
        thread); None when it was no longer pending."""
        updated = self.registry.count_wrong_code(request.id,
                                                 max_attempts=self.settings.max_attempts, now=now)
        if updated is not None:
            self._event(EventKind.VERIFICATION_CODE_WRONG, updated, attempts=updated.attempts)
            if updated.state is RequestState.LOCKED:
                self._event(EventKind.VERIFICATION_LOCKED, updated, attempts=updated.attempts)
        return updated

    async def decline(self, token: str) -> LinkAnswer:
        """"This is not me": a breach attempt caught; the practitioner is told at once."""
        request = await asyncio.to_thread(self._pending, token)
        if isinstance(request, LinkState):
            return LinkAnswer(request)
        now = self.clock()
        closed = await asyncio.to_thread(self._decline, request, now)
        if closed is None:
            return LinkAnswer(LinkState.UNAVAILABLE)
        await self._tell_practitioner(closed, "practitioner-declined.txt", "declined",
                                      when=when(now))
        return LinkAnswer(LinkState.DECLINED, closed)

    def _decline(self, request: VerificationRequest,
                 now: datetime) -> VerificationRequest | None:
        """The request closed as declined, recorded (in a worker thread); None when it was no
        longer pending."""
        closed = self.registry.close_request(request.id, RequestState.DECLINED, now=now)
        if closed is not None:
            # High grade (policy [grades]): gateway.audit.alerts mails governance at once.
            self._event(EventKind.VERIFICATION_DECLINED, closed, rule="", citation="IA 3.4; IA 2.2")
        return closed

    def _pending(self, token: str) -> VerificationRequest | LinkState:
        """The pending request a token names, else why not: UNKNOWN (not a link we issued) or
        UNAVAILABLE (used, withdrawn or expired; an expired link expires its request)."""
        now = self.clock()
        checked = self.signer.check(token, now)
        if checked.status is TokenStatus.TAMPERED:
            self.audit.record(EventKind.VERIFICATION_LINK_REFUSED, reason="tampered")
            return LinkState.UNKNOWN
        request = self.registry.request_by_token(checked.token_id)
        if request is None:
            self.audit.record(EventKind.VERIFICATION_LINK_REFUSED, reason="unknown")
            return LinkState.UNKNOWN
        if request.state is not RequestState.PENDING:
            self.audit.record(EventKind.VERIFICATION_LINK_REFUSED, reason="used",
                              request_id=request.id)
            return LinkState.UNAVAILABLE
        if checked.status is TokenStatus.EXPIRED or request.link_expires_at <= now:
            self._expire(request, now)
            return LinkState.UNAVAILABLE
        return request

    # -- upkeep -------------------------------------------------------------------------

    def expire_due(self, now: datetime | None = None) -> int:
        """Expire unanswered requests and lapsed verifications; returns how many."""
        moment = now or self.clock()
        requests = self.registry.expire_requests(moment)
        for request in requests:
            self._event(EventKind.VERIFICATION_EXPIRED, request, what="link")
        lapsed = self.registry.lapse_due(moment)
        for entry in lapsed:
            self.audit.record(EventKind.VERIFICATION_EXPIRED, recipients=[entry.address],
                              case_numbers=_cases(entry.case_number), what="verification")
        return len(requests) + len(lapsed)

    def _expire(self, request: VerificationRequest, now: datetime) -> None:
        closed = self.registry.close_request(request.id, RequestState.EXPIRED, now=now)
        if closed is not None:
            self._event(EventKind.VERIFICATION_EXPIRED, closed, what="link")

    def revoke(self, address: str, *, by: str, case_number: str | None = None,
               organisation: bool = False) -> int:
        """Withdraw verifications and pending requests of an address; returns how many."""
        now = self.clock()
        count = self.registry.revoke(address, by=by, now=now, case_number=case_number,
                                     organisation=organisation)
        withdrawn = [] if organisation else self.registry.revoke_requests(
            address, now=now, case_number=case_number)
        if count or withdrawn:
            self.audit.record(EventKind.VERIFICATION_REVOKED, sender=by,
                              recipients=[address.lower()], case_numbers=_cases(case_number),
                              count=count, requests=len(withdrawn))
        return count + len(withdrawn)

    # -- helpers ------------------------------------------------------------------------

    async def _tell_practitioner(self, request: VerificationRequest, template: str, what: str,
                                 **values: object) -> None:
        mail = self.texts.mail(template, sender=self.settings.sender, to=request.requested_by,
                               address=request.address, scope=scope_text(request.case_number),
                               **values)
        if not await self._send(f"verify-{request.id}-{what}", mail):
            await asyncio.to_thread(self._event, EventKind.VERIFICATION_NOTICE_FAILED, request,
                                    notice=what)

    async def _send(self, key: str, mail: Mail) -> bool:
        copy = Copy(key=key, mail_from=mail.sender, recipients=(mail.to,),
                    data=mail.as_bytes(self.clock()), origin=Origin.AUTHORED)
        result = await self.transport.deliver([copy])
        return result.ok

    def _event(self, kind: EventKind, request: VerificationRequest, **metadata: Any) -> None:
        self.audit.record(kind, sender=request.requested_by, recipients=[request.address],
                          case_numbers=_cases(request.case_number), request_id=request.id,
                          role=request.role.value, **metadata)


@dataclass(frozen=True)
class _Checked:
    """A request that passed the checks: who asks, for whom, and the scope."""

    staff: str
    name: str
    address: str
    case: str | None
    lookalike_of: str = ""  # a lookalike staff confirmed: the domain it resembles
    reason: str = ""  # and why


def _reason_needed(policy: Policy) -> str:
    return (f"Give the reason for confirming a lookalike address: one line of "
            f"{policy.min_justification_chars} to {MAX_REASON} characters.")


def _cases(case_number: str | None) -> list[str]:
    return [case_number] if case_number else []
