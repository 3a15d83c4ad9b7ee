"""The SMTP front: a thin aiosmtpd adapter that turns SMTP verbs into calls of gateway.stages.

`GatewaySMTP` is aiosmtpd's server with the rules aiosmtpd leaves to its user:
- a second STARTTLS, or commands pipelined after STARTTLS, are refused (SECURITY.md item 5);
- AUTH (PLAIN, LOGIN; only inside TLS) is checked in a worker thread, every failure answered
  with one uniform 535, throttled per client address and locked after repeated failures
  (SECURITY.md item 7: an aiosmtpd `AuthResult(success=False)` must still get a reply);
- a MAIL or RCPT path with a source route, a comment or spaces is refused 553, not quietly
  simplified (SECURITY.md item 8);
- exceptions are logged and answered 451 with nothing internal;
- every 4xx/5xx reply that no pipeline step has audited (aiosmtpd's own 500/501/503/530/538,
  the 553 for a disguised path, ...) is recorded as a `protocol-refusal` event, thinned per
  connection by `gateway.smtp.limits.RefusalBudget` (SECURITY.md item 14);
- connections over `smtp.max_connections` or `smtp.max_connections_per_client` are answered
  421 and closed at once, an audit event thinned per client (SECURITY.md item 12); so are
  connections from outside `smtp.relay_from` over `smtp.max_unauthenticated_connections`,
  and such a connection is closed after `smtp.unauthenticated_idle_timeout` of silence until
  it authenticates (then `smtp.idle_timeout`, as for relay peers);
- commands without progress are capped per connection (`gateway.smtp.limits.CommandBudget`,
  on the model of Postfix's junk command and hard error limits): then 421 4.7.0, one audit
  event, and the connection is closed;
- every reply after the greeting and EHLO carries an enhanced status code (RFC 2034: aiosmtpd's
  own replies get one in `push`), and EHLO also offers ENHANCEDSTATUSCODES, PIPELINING, DSN
  and SMTPUTF8;
- DSN parameters (RFC 3461) are taken off MAIL and RCPT and checked (gateway.smtp.params), since
  aiosmtpd would answer them 555; an internationalised (non-ASCII) address is taken only with
  SMTPUTF8 on MAIL, else refused 553 5.6.7 (a recipient after the policy has classified it on
  its IDNA form, so lookalikes and mixed-script domains get the policy's reply).

`SubmissionHandler` holds the hooks: MAIL (sender binding, no open relay), RCPT (address-only
rules, recipient limit; the verification address routes the message to the verify@ intake) and
DATA (gateway.stages.pipeline, on the route RCPT chose). One log line per message
(gateway.observe.logs): its fields are bound from MAIL on and written with the reply to DATA.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, AnyStr

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from gateway.observe.logs import begin_message, bind_message, describe_error, message_done
from gateway.smtp.aiosmtpd_private import (
    command_stream,
    fixed_signature,
    looked_up_names,
    pending_input,
    restart_idle_timer,
    set_idle_timeout,
    starttls_begun,
)
from gateway.smtp.budget import FIRST_CLAIM, NO_ROOM, BufferBudget, Claim, declared_size
from gateway.smtp.data import Received, read_data
from gateway.smtp.limits import (
    JUNK_VERBS,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ERRORS,
    Admission,
    CommandBudget,
    ConnectionLimiter,
    RefusalBudget,
    reply_codes,
    worth_an_event,
)
from gateway.smtp.params import MAIL_KEYWORDS, RCPT_KEYWORDS, take_dsn
from gateway.smtp.tls import certificate_fingerprint
from gateway.stages import envelope as envelope_stage
from gateway.stages import pipeline
from gateway.stages.context import Stages, TransactionSnapshot
from gateway.stages.copies import Trace
from gateway.stages.delivery import relay_message
from gateway.stages.intake import take_request
from gateway.stages.message import TRY_LATER, Reply, Submission
from gateway.stores.throttle import AuthThrottle, Throttle
from gateway.stores.users import User
from policies.events import EventKind
from policies.model import Rule
from transports.base import NO_DSN, Dsn

log = structlog.get_logger("casegate.smtp")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
AUTH_LOCKED = "421 4.7.0 Too many failed logins from your address; try again later"
DEFAULT_SIZE_LIMIT = 35 * 1024 * 1024
IDENT = "ESMTP casegate"  # after the host name in the 220 greeting
EHLO_KEYWORDS = ("ENHANCEDSTATUSCODES", "PIPELINING", "DSN")  # besides aiosmtpd's own
EHLO_LINES = tuple(f"250-{keyword}" for keyword in EHLO_KEYWORDS)
NEEDS_SMTPUTF8 = Reply.of(
    553, "5.6.7", "An internationalised (non-ASCII) address needs the SMTPUTF8 parameter on "
    "MAIL (RFC 6531).")
NOT_UTF8 = Reply.of(553, "5.6.7", "The address is not valid UTF-8.")
# The gateway is stopping (RFC 3463 4.3.2: system not accepting network messages; RFC 5321
# 3.8: a server that must shut down answers 421 before it closes).
SHUTTING_DOWN = "421 4.3.2 Service shutting down; try again later"
# Silent for longer than the idle timeout (RFC 3463 4.4.2: bad connection; Postfix says the
# same before it closes, where aiosmtpd closes without a word).
IDLE_TOO_LONG = "421 4.4.2 Idle for too long; closing the connection"

# RFC 2034: every reply but the greeting and the EHLO/HELO answer carries an enhanced status
# code. aiosmtpd's own replies ("221 Bye", "500 Error: bad syntax", HELP, ...) get these,
# by reply code (RFC 3463); ours are written with the right one.
ENHANCED_BY_CODE = {
    211: "2.0.0", 214: "2.0.0", 220: "2.0.0", 221: "2.0.0", 235: "2.7.0", 250: "2.0.0",
    251: "2.1.5", 252: "2.0.0", 421: "4.3.0", 450: "4.2.0", 451: "4.3.0", 452: "4.3.1",
    454: "4.7.0", 500: "5.5.2", 501: "5.5.4", 502: "5.5.1", 503: "5.5.1", 504: "5.5.4",
    530: "5.7.0", 534: "5.7.9", 535: "5.7.8", 538: "5.7.11", 550: "5.0.0", 552: "5.3.4",
    553: "5.1.3", 554: "5.0.0", 555: "5.5.4",
}
_HAS_ENHANCED = re.compile(r"\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_REPLY_LINE = re.compile(r"(\d{3})([ -]?)(.*)", re.DOTALL)


def with_enhanced_codes(reply: str) -> str:
    """`reply` with an enhanced status code on every line that lacks one (2xx, 4xx, 5xx)."""
    if "\r\n" not in reply and (reply[:1] == "3" or _HAS_ENHANCED.match(reply)):
        return reply  # one line that needs none or has one (most replies): as it is
    lines = reply.split("\r\n")
    for i, line in enumerate(lines):
        match = _REPLY_LINE.fullmatch(line)
        if match is None or _HAS_ENHANCED.match(line) or line[:1] not in "245":
            continue
        code, sep, text = match.groups()
        enhanced = ENHANCED_BY_CODE.get(int(code), f"{code[0]}.0.0")
        lines[i] = f"{code}{sep or ' '}{enhanced}{' ' + text if text else ''}"
    return "\r\n".join(lines)


def with_rule_sentence(reply: str, rule: Rule) -> str:
    """A one-line reply of gateway.smtp.data ("552 5.3.4 Message too big for this gateway")
    followed by `rule`'s sentence, which tells the sender what to do instead."""
    code, status, text = reply.split(" ", 2)
    return Reply.of(int(code), status, text.rstrip(".") + ".", rule.sentence).render()


def address_problem(address: str, smtputf8: bool) -> Reply | None:
    """Why an envelope address cannot be taken as written (None: it can).

    aiosmtpd reads command lines as UTF-8 (SMTPUTF8 is offered), with undecodable bytes as
    surrogates. A non-ASCII address is taken only in a transaction that said SMTPUTF8, and
    is passed on exactly as written (never converted to another form).
    """
    if address.isascii():
        return None
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return NOT_UTF8
    return None if smtputf8 else NEEDS_SMTPUTF8


# A path written plainly: "<", a dot-atom local part, "@", a dot-atom domain of letters, digits
# and hyphens, ">" (RFC 5321 section 4.1.2, ASCII only). aiosmtpd reads it with the stdlib
# header parser at 30 to 50 us per MAIL or RCPT; this reads the same answer from it at once.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


def plain_path(arg: str, local_part_limit: int) -> tuple[str | None, str | None] | None:
    """(address, the ESMTP parameters after it) for a path written plainly, as aiosmtpd's
    `_getaddr` would answer; None for any other form, which the full parser must read.

    After the ">" the stdlib parser skips spaces and tabs (with `str.lstrip`, so any white
    space after them) and then comments; a comment after a plain path is left to it.
    """
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    rest = arg[match.end():]
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()
    if rest.startswith("("):
        return None
    address = match.group(1)
    if local_part_limit and address.rindex("@") > local_part_limit:
        return None, None
    return address, rest


# aiosmtpd's own refusals that a policy rule explains: (what was wrong, the rule whose sentence
# tells the sender what to do instead). A path `_getaddr` will not read plainly is one.
EXPLAINED_BY_RULE: dict[str, tuple[str, str]] = {
    "553 5.1.3 Error: malformed address": (
        "The address is not written plainly as <name@domain> (a route, a comment or broken "
        "syntax).", "invalid-address"),
}


class GatewayEnvelope(Envelope):
    """aiosmtpd's envelope plus the DSN request (RFC 3461) read from MAIL and RCPT, and
    whether the message is a request to the verification address (seen at RCPT)."""

    def __init__(self) -> None:
        super().__init__()
        self.request = False  # a recipient is the verification address: the verify@ intake
        self.started = time.perf_counter()  # at MAIL: the message's log line says how long
        self.dsn_ret = ""
        self.dsn_envid = ""
        self.dsn_notify: list[tuple[str, str]] = []
        self.dsn_orcpt: list[tuple[str, str]] = []
        self.pending_dsn: dict[str, str] = {}  # the MAIL or RCPT being answered
        self.snapshots = TransactionSnapshot()  # the registry, read once for RCPTs and DATA

    def dsn(self) -> Dsn:
        return Dsn(self.dsn_ret, self.dsn_envid, tuple(self.dsn_notify), tuple(self.dsn_orcpt))


_Command = Callable[["GatewaySMTP", str | None], Awaitable[None]]


def _tracking(verb: str, method: _Command) -> _Command:
    """`method` (the `smtp_<verb>` aiosmtpd dispatches `verb` to), run through
    `GatewaySMTP._command`."""

    @functools.wraps(method)  # keeps aiosmtpd's syntax attributes for HELP
    async def command(server: GatewaySMTP, arg: str | None) -> None:
        await server._command(verb, method, arg)

    command._tracks_verb = verb  # type: ignore[attr-defined]
    return command


def _tracking_verbs(cls: type[GatewaySMTP]) -> type[GatewaySMTP]:
    """Every command method of `cls` (its own and aiosmtpd's, and a subclass's) wrapped once,
    for the class, by `_tracking`: aiosmtpd's dispatch table, built per connection from
    `smtp_<VERB>` names, then holds the wrapped methods, and nothing is wrapped per
    connection."""
    for name in looked_up_names(cls):
        method = getattr(cls, name)
        if name.startswith("smtp_") and not hasattr(method, "_tracks_verb"):
            setattr(cls, name, _tracking(name.removeprefix("smtp_"), method))
    return cls


@_tracking_verbs
class GatewaySMTP(SMTP):
    """One SMTP connection. `implicit_tls`: the listening socket is TLS from the first byte.

    What it needs of aiosmtpd beyond the public API goes through gateway.smtp.aiosmtpd_private,
    which lists the private methods overridden here (`_handle_client`, `_create_envelope`,
    `_getaddr`, `_timeout_cb`).
    """

    def __init__(self, handler: SubmissionHandler, *, implicit_tls: bool,
                 limiter: ConnectionLimiter | None = None, ident: str = IDENT,
                 budget: CommandBudget | None = None,
                 unauthenticated_timeout: float | None = None, **kwargs: Any) -> None:
        # On the implicit-TLS port the transport is always TLS, which aiosmtpd's
        # `auth_require_tls` check (it looks for a STARTTLS layer) cannot see. The
        # authenticator only hands the credentials aiosmtpd's PLAIN and LOGIN collected back
        # to `_check_credentials`, which checks them off the event loop.
        super().__init__(handler, auth_require_tls=not implicit_tls, ident=ident,
                         authenticator=_collected_credentials, **kwargs)
        self.ident = ident
        self.implicit_tls = implicit_tls
        self.handler = handler
        self.limiter = limiter
        self.admission = Admission.ADMITTED  # decided when the connection is made
        self.refused_so_far = 0  # over a limit: this client's refusals, counted at admission
        self._counted = False  # whether the limiter counts this connection as open
        self._verb = ""  # the command being answered, for protocol-refusal events
        self.reply_audited = False  # the reply about to be sent was audited by its stage
        self._refusals = RefusalBudget()
        self._shut = False  # the gateway is stopping: SHUTTING_DOWN sent, nothing more goes out
        self._budget = budget or CommandBudget()  # commands without progress
        self._idle_timeout: float = kwargs.get("timeout", 300)  # aiosmtpd's default
        self._unauthenticated_timeout = unauthenticated_timeout
        self._unauthenticated = False  # from outside relay_from and not (yet) authenticated
        self._receiving = False  # a message's data is being received

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _tracking_verbs(cls)  # a subclass's own commands too

    def __dir__(self) -> list[str]:
        """Only the names aiosmtpd looks up on each new connection (the commands and AUTH
        mechanisms; see gateway.smtp.aiosmtpd_private.looked_up_names)."""
        return looked_up_names(type(self))

    async def _command(self, verb: str, method: Callable[[GatewaySMTP, str | None],
                                                         Awaitable[None]],
                       arg: str | None) -> None:
        """Every command (`_tracking_verbs`): not carried out once the connection is cut off;
        counted against the command budget when it makes no progress; and while it runs, its
        verb is noted for the replies it sends (`push`)."""
        if self._shut:  # cut off: commands already pipelined are not carried out
            return
        if self._verb:  # a subclass's command calling ours: counted and noted once, outside
            await method(self, arg)
            return
        self._verb = verb
        if verb in JUNK_VERBS or (verb in ("EHLO", "HELO") and self.session is not None
                                  and self.session.host_name is not None):
            self._budget.junk_command()
        try:
            await method(self, arg)
        finally:
            self._verb = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # not the TLS layer that STARTTLS puts on top
        super().connection_made(transport)
        if first:
            relay_peer = self.handler.is_relay_address(self.peer_ip)
            if self.limiter is not None:
                self.admission = self.limiter.admit(self.peer_ip, relay_peer=relay_peer)
                self._counted = self.admission is Admission.ADMITTED
                # Read now, not when the handler runs: in a burst, many connections are
                # admitted before any handler starts, and each refusal must keep its own
                # number (1, 10, 100, ...).
                self.refused_so_far = self.limiter.refused_so_far(self.peer_ip)
            if not relay_peer and self.admission is Admission.ADMITTED:
                self._unauthenticated = True
                if self._unauthenticated_timeout is not None:
                    set_idle_timeout(self, self._unauthenticated_timeout)
        if self._unauthenticated and self.handler.is_trusted_peer(self):
            self._authenticated()  # a relay peer known by its pinned certificate

    def _authenticated(self) -> None:
        """The client has logged in or is a trusted peer: the normal idle timeout, and it no
        longer counts against `max_unauthenticated_connections`."""
        if not self._unauthenticated:
            return
        self._unauthenticated = False
        if self._counted and self.limiter is not None:
            self.limiter.authenticated()
        set_idle_timeout(self, self._idle_timeout)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted and self.limiter is not None:
            self._counted = False
            self.limiter.release(self.peer_ip)
            if self._unauthenticated:
                self.limiter.authenticated()  # it never logged in: its slot is free again
                self._unauthenticated = False
        super().connection_lost(error)

    async def _handle_client(self) -> None:
        if self.admission is not Admission.ADMITTED:
            await self._refuse_connection()
            return
        try:
            await super()._handle_client()
        finally:
            await self._audit_suppressed_refusals()

    def shut_down(self) -> None:
        """The gateway stops: answer 421 4.3.2 and close, at once (no await in between).

        Nothing this connection would still say goes out after it: a message whose upstream
        delivery is still running when the drain time is up gets the 421, never a late 250,
        and its handler is cancelled when the connection is lost (fail closed).
        """
        self._shut = True
        if self._last_word(SHUTTING_DOWN):
            log.info("connection-shut-down", peer=self.peer_ip)
            assert self.transport is not None
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        """Bytes from the client. While it sends a message's data each piece starts the idle
        timer again: idle is the client's silence (aiosmtpd starts it again at a command only,
        so a message that took longer than the idle timeout to arrive was cut off)."""
        super().data_received(data)
        if self._receiving:
            restart_idle_timer(self)

    def _timeout_cb(self) -> None:
        """aiosmtpd's idle timer ran out: the client is told why before the close."""
        if not self._shut:
            self._last_word(IDLE_TOO_LONG)
        super()._timeout_cb()

    def _last_word(self, reply: str) -> bool:
        """Write `reply` straight to the transport, before it is closed (no await: nothing
        goes out between them); False when the connection is closing or gone."""
        transport = self.transport
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            return False
        transport.write(reply.encode("ascii") + b"\r\n")
        return True

    def _create_envelope(self) -> GatewayEnvelope:
        return GatewayEnvelope()

    @property
    def greeting(self) -> str:
        """The 220 line aiosmtpd sends first."""
        return f"220 {self.hostname} {self.ident}"

    async def push(self, status: AnyStr) -> None:
        """Send a reply; a 4xx/5xx no pipeline step has audited becomes a protocol refusal.

        A refusal of aiosmtpd's own that a policy rule explains (`EXPLAINED_BY_RULE`) goes out
        with the rule's sentence, and its event names the rule. Every reply but the greeting
        and the EHLO/HELO answer gets an enhanced status code if it has none.
        """
        if self._shut:  # the 421 of a stopping gateway was the last word
            return
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        self.handler.stages.metrics.reply_sent(text)
        explained = EXPLAINED_BY_RULE.get(text)
        if not (self._verb in ("EHLO", "HELO") and text[:1] == "2") and not (
                text.startswith("220 ") and text == self.greeting):
            text = with_enhanced_codes(text)
        audited, self.reply_audited = self.reply_audited, False  # the next reply is its own
        if explained is None and text[:1] in ("2", "3"):  # no refusal: nothing to audit
            if self._verb == "DATA" and text[:1] == "2":
                self._budget.progress()  # a message accepted
            await super().push(text)
            await self._check_budget(text)
            return
        code, enhanced = reply_codes(text)
        if explained is not None:
            problem, rule_id = explained
            rule = self.handler.stages.app.policy.rule(rule_id)
            text = Reply.of(code, enhanced, problem, rule.sentence).render()
        recorded = True
        if code >= 400 and not audited and self._refusals.take():
            recorded = await self._audit_safely(
                EventKind.PROTOCOL_REFUSAL, verb=self._verb or "unknown", reply=str(code),
                enhanced=enhanced, tls=self.is_tls,
                **({"rule": explained[1]} if explained is not None else {}),
            )
        if code >= 400 and not (audited and self._verb in ("RCPT", "DATA")):
            # A policy's refusal of a recipient or a message is an outcome, not a client's error
            # (the recipient limit bounds the first, a transaction the second).
            self._budget.error()
        await super().push(text)
        if not recorded:  # fail closed: a refusal that cannot be audited ends the connection
            self._close()
        await self._check_budget(text)

    async def _check_budget(self, sent: str) -> None:
        """At the error limit: 421 4.7.0, one audit event, and the connection is closed (after
        the whole reply: aiosmtpd sends EHLO's lines one by one)."""
        if not self._budget.exhausted or self._shut or self.transport is None \
                or sent.rsplit("\r\n", 1)[-1][3:4] == "-":
            return
        self._shut = True  # nothing more is answered or carried out
        log.warning("too-many-errors", peer=self.peer_ip, errors=self._budget.errors,
                    junk=self._budget.junk)
        await self._audit_safely(EventKind.PROTOCOL_REFUSAL, verb=self._verb or "unknown",
                                 reply="421", enhanced="4.7.0", limit="hard_error_limit",
                                 errors=self._budget.errors, junk=self._budget.junk)
        await SMTP.push(self, TOO_MANY_ERRORS)
        self._close()

    async def _audit_safely(self, kind: EventKind, **event: Any) -> bool:
        """Record an event about this connection; False (and logged) when the store fails."""
        try:
            await self.handler.stages.record()(kind, peer=self.peer_ip, **event)
        except Exception as exc:
            log.error("audit-failed", kind=kind.value, peer=self.peer_ip, **describe_error(exc))
            return False
        return True

    async def _audit_suppressed_refusals(self) -> None:
        """At disconnect: one event summing up the protocol refusals that were not events."""
        if not self._refusals.suppressed:
            return
        # The disconnect cancels this task (QUIT even twice): write the event in its own task,
        # which `Gateway.stop` waits for too.
        summary = asyncio.ensure_future(self._audit_safely(
            EventKind.PROTOCOL_REFUSAL, verb="*", reply="", enhanced="",
            suppressed=self._refusals.suppressed))
        pending = self.handler.pending_events
        pending.add(summary)
        summary.add_done_callback(pending.discard)
        await asyncio.shield(summary)

    async def _refuse_connection(self) -> None:
        """Over a connection limit: audit (thinned per client), answer 421 and close."""
        refused = self.refused_so_far
        log.warning("connection-refused", peer=self.peer_ip, limit=self.admission.value)
        self.handler.stages.metrics.inc("casegate_smtp_connections_refused_total")
        if worth_an_event(refused):
            await self._audit_safely(EventKind.CONNECTION_LIMIT, limit=self.admission.value,
                                     refused_so_far=refused, reply="421", enhanced="4.7.0")
        await super().push(TOO_MANY_CONNECTIONS)
        self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def is_tls(self) -> bool:
        """Whether this connection is encrypted now (implicit TLS or after STARTTLS)."""
        return self.implicit_tls or starttls_begun(self)

    @property
    def peer_ip(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""

    @property
    def peer_certificate_fingerprint(self) -> str:
        """SHA-256 of the client's verified certificate, "" when it presented none."""
        if not self.is_tls or self.transport is None:
            return ""
        return certificate_fingerprint(self.transport.get_extra_info("ssl_object"))

    @syntax("STARTTLS", when="tls_context")  # aiosmtpd's HELP lists only marked commands
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.is_tls:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        if pending_input(self):
            await self.push("554 5.5.1 Error: commands pipelined after STARTTLS")
            assert self.transport is not None
            self.transport.close()
            return
        await super().smtp_STARTTLS(arg)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL, after the DSN parameters RET and ENVID were taken off the line."""
        await self._with_dsn(arg, MAIL_KEYWORDS, super().smtp_MAIL)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """aiosmtpd's RCPT, after the DSN parameters NOTIFY and ORCPT were taken off the line."""
        await self._with_dsn(arg, RCPT_KEYWORDS, super().smtp_RCPT)

    async def _with_dsn(self, arg: str | None, keywords: frozenset[str],
                        command: Callable[[str | None], Awaitable[None]]) -> None:
        if arg is None or self.envelope is None or not (
                self.session is not None and self.session.extended_smtp):
            await command(arg)
            return
        taken = take_dsn(arg, keywords)
        if taken.error:
            await self.push(taken.error)
            return
        envelope = self.envelope
        assert isinstance(envelope, GatewayEnvelope)
        envelope.pending_dsn = taken.params
        try:
            await command(taken.arg)
        finally:
            envelope.pending_dsn = {}

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the message in large blocks (gateway.smtp.data)."""
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        # The message's first share of the gateway's buffer budget (gateway.smtp.budget):
        # what MAIL's SIZE declared, else FIRST_CLAIM; given back once DATA is answered.
        claim = None
        if self.handler.buffers is not None:
            declared = declared_size(self.envelope.mail_options)
            claim = await self.handler.buffers.claim(min(
                FIRST_CLAIM if declared is None else declared,
                self.data_size_limit or DEFAULT_SIZE_LIMIT))
            if claim is None:  # the gateway holds all the bytes it may: the client retries
                await self.push(NO_ROOM)
                return
        try:
            await self._data(claim)
        finally:
            if claim is not None:
                claim.release()

    async def _data(self, claim: Claim | None) -> None:
        """The 354, the data, and the reply to it (the message held under `claim`).

        The idle timer runs while the data arrives (each piece starts it again) and not while
        the gateway decides and delivers: the client is waiting for the reply then, and the
        gateway's own timeouts bound that (the upstream's `data_done_timeout` is longer than
        the idle timeout by default). It starts again once the reply is sent."""
        assert self.envelope is not None
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self._receiving = True
        try:
            received = await read_data(command_stream(self),
                                       self.data_size_limit or DEFAULT_SIZE_LIMIT,
                                       self.line_length_limit, claim)
        finally:
            self._receiving = False
        restart_idle_timer(self, math.inf)  # the gateway's turn
        try:
            await self._answer(received)
        finally:
            restart_idle_timer(self)  # the client's turn

    async def _answer(self, received: Received) -> None:
        """The reply to a message's data: the refusal of what could not be read, else the
        pipeline's (gateway.stages)."""
        assert self.envelope is not None
        if received.error:
            refused = self.envelope
            self.envelope = GatewayEnvelope()  # the next MAIL starts afresh
            reply = received.error
            if received.error != NO_ROOM:  # (that one `push` records, as a protocol refusal)
                await self.handler.stages.record()(  # SECURITY.md item 14: every refusal is
                    EventKind.REFUSAL, rule="message-format",  # an event
                    sender=refused.mail_from or "", recipients=list(refused.rcpt_tos),
                    stage="data", peer=self.peer_ip, reply=received.error[:3],
                )
                self.reply_audited = True
                reply = with_rule_sentence(  # the sentence saying what to do instead
                    received.error, self.handler.stages.app.policy.rule("message-format"))
            await self.push(reply)
            message_done(int(received.error[:3]), _started(refused))
            return
        self.envelope.original_content = self.envelope.content = received.content
        try:
            assert self.session is not None
            status = await self.handler.handle_DATA(self, self.session, self.envelope)
        finally:
            self.envelope = GatewayEnvelope()  # whatever happened, the next MAIL starts afresh
        await self.push(status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parsing, refusing any path not written plainly as `<local@domain>`.

        The plain form, by far the commonest, is read by `plain_path`; anything else goes
        through `_parsed_path`, with the same answer for every input (tested).
        """
        plain = plain_path(arg, self.local_part_limit)
        return plain if plain is not None else self._parsed_path(arg)

    def _parsed_path(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parsing (the stdlib header parser), refusing disguised paths.

        aiosmtpd's parser quietly drops source routes (`<@a.example:jo@b.example>`) and
        comments (`<jo(@nhs.net)@b.example>`), so the classifier would never see them;
        SECURITY.md item 8 says they fail closed. None makes aiosmtpd answer 553 5.1.3, also
        for a path the stdlib parser cannot read at all (a lone "<" makes it raise IndexError).
        """
        try:
            address, rest = super()._getaddr(arg)
        except IndexError:
            return None, None
        if address and rest is not None:
            written = arg[: len(arg) - len(rest)].strip()
            if written not in (address, f"<{address}>"):
                return None, None
        return address, rest

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if await self.handler.throttle.locked(self.peer_ip):
            await self._lock_out()
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check_credentials(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._check_credentials(await super().auth_LOGIN(_, args))

    async def _check_credentials(self, collected: AuthResult) -> AuthResult:
        credentials = collected.auth_data
        if not isinstance(credentials, LoginPassword):
            return collected  # malformed exchange: aiosmtpd has answered or answers 535
        user = await asyncio.to_thread(
            self.handler.stages.app.users.authenticate, credentials.login, credentials.password
        )
        if user is not None:
            await self.handler.throttle.succeeded(self.peer_ip)
            self._authenticated()
            log.info("auth-success", user=user.address, peer=self.peer_ip)
            return AuthResult(success=True, auth_data=user)
        return await self._auth_failed(credentials.login)

    async def _auth_failed(self, login: bytes) -> AuthResult:
        stages = self.handler.stages
        [verdict] = await self.handler.throttle.failed(self.peer_ip)
        stages.metrics.inc("casegate_auth_failures_total")
        record = stages.record()
        await record(EventKind.AUTH_FAILURE, sender=login.decode("utf-8", "replace")[:200],
                     peer=self.peer_ip)
        self.reply_audited = True
        if verdict.throttle is Throttle.LOCK:
            stages.metrics.inc("casegate_auth_lockouts_total")
            await record(EventKind.AUTH_LOCKOUT, peer=self.peer_ip)
            await self._lock_out()
            return AuthResult(success=False, handled=True)
        if verdict.delay:
            await asyncio.sleep(verdict.delay)  # throttle: slow down guessing
        return AuthResult(success=False, handled=False, message=AUTH_INVALID)

    async def _lock_out(self) -> None:
        await self.push(AUTH_LOCKED)
        self._close()


class SubmissionHandler:
    """aiosmtpd hooks; each returns the reply line(s) for its verb."""

    def __init__(self, stages: Stages, throttle: AuthThrottle, relay_from: Sequence[IPNetwork],
                 max_recipients: int, relay_fingerprints: Sequence[str] = (),
                 buffers: BufferBudget | None = None) -> None:
        self.stages = stages
        self.buffers = buffers  # the cap on message bytes held at once; None: no cap
        self.throttle = throttle  # AUTH failures per client address, across connections
        self.relay_from = tuple(relay_from)
        self.max_recipients = max_recipients
        self.relay_fingerprints = frozenset(relay_fingerprints)
        self.pending_events: set[asyncio.Future[bool]] = set()  # audits outliving a connection

    def __dir__(self) -> list[str]:
        """Only the names aiosmtpd looks up on each new connection (the hooks; see
        gateway.smtp.aiosmtpd_private.looked_up_names)."""
        return looked_up_names(type(self))

    def is_trusted_peer(self, server: GatewaySMTP) -> bool:
        """A trusted relay peer (e.g. an Exchange connector) needs no AUTH.

        It connects from inside `smtp.relay_from`; when certificate fingerprints are pinned it
        must also have presented one of those certificates (then `relay_from` may be empty:
        the certificate alone identifies it).
        """
        if self.relay_fingerprints:
            if server.peer_certificate_fingerprint not in self.relay_fingerprints:
                return False
            if not self.relay_from:
                return True
        return self.is_relay_address(server.peer_ip)

    def is_relay_address(self, peer_ip: str) -> bool:
        """Whether `peer_ip` is inside `smtp.relay_from` (its certificate is not checked)."""
        return inside(peer_ip, self.relay_from)

    @fixed_signature  # aiosmtpd reads it on every new connection
    async def handle_EHLO(self, server: GatewaySMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """aiosmtpd's EHLO lines plus ENHANCEDSTATUSCODES, PIPELINING and DSN, as one reply
        (aiosmtpd pushes each item of the list apart: one write per line otherwise)."""
        session.host_name = hostname  # aiosmtpd leaves this to a handler with an EHLO hook
        return ["\r\n".join([*responses[:-1], *EHLO_LINES, responses[-1]])]

    async def handle_MAIL(self, server: GatewaySMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        """The sender check; `<>` (the null reverse-path of bounces and out-of-office replies)
        is decided like any sender: a trusted relay peer may use it, a login may not."""
        user = session.auth_data if isinstance(session.auth_data, User) else None
        reply = await envelope_stage.check_sender(
            self.stages, user, self.is_trusted_peer(server), server.is_tls,
            address, server.peer_ip,
        )
        if reply is not None:
            return self._answer(server, reply)
        problem = address_problem(address, envelope.smtp_utf8)
        if problem is not None:
            return problem.render()
        envelope.mail_from = address  # "<>" for the null reverse-path (aiosmtpd's spelling)
        envelope.mail_options.extend(mail_options)
        begin_message(envelope_sender(envelope), server.peer_ip)
        if isinstance(envelope, GatewayEnvelope):
            envelope.started = time.perf_counter()
            envelope.dsn_ret = envelope.pending_dsn.get("RET", "")
            envelope.dsn_envid = envelope.pending_dsn.get("ENVID", "")
        return "250 2.1.0 Sender OK"

    async def handle_RCPT(self, server: GatewaySMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        request = envelope_stage.is_request_address(self.stages.app.config, address)
        try:  # first the policy: a lookalike or mixed-script domain is refused with its rule
            reply = None if request else await envelope_stage.check_recipient(
                self.stages, envelope_sender(envelope), address, server.peer_ip,
                envelope.snapshots if isinstance(envelope, GatewayEnvelope) else None)
        except Exception as exc:
            log.error("rcpt-failed", peer=server.peer_ip, **describe_error(exc))
            return TRY_LATER.render()
        if reply is not None:
            return self._answer(server, reply)
        problem = address_problem(address, envelope.smtp_utf8)
        if problem is not None:
            return problem.render()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if isinstance(envelope, GatewayEnvelope):
            envelope.request = envelope.request or request
            if "NOTIFY" in envelope.pending_dsn:
                envelope.dsn_notify.append((address, envelope.pending_dsn["NOTIFY"]))
            if "ORCPT" in envelope.pending_dsn:
                envelope.dsn_orcpt.append((address, envelope.pending_dsn["ORCPT"]))
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server: GatewaySMTP, session: Session,
                          envelope: Envelope) -> str:
        user = session.auth_data if isinstance(session.auth_data, User) else None
        submission = Submission(
            sender=envelope_sender(envelope),
            recipients=tuple(envelope.rcpt_tos),
            raw=bytes(envelope.original_content or b""),
            user=user,
            peer=server.peer_ip,
            trace=Trace(helo=session.host_name or "", peer=server.peer_ip,
                        esmtp=session.extended_smtp, tls=server.is_tls,
                        authenticated=user is not None),
            dsn=envelope.dsn() if isinstance(envelope, GatewayEnvelope) else NO_DSN,
            smtputf8=envelope.smtp_utf8,
            snapshots=envelope.snapshots if isinstance(envelope, GatewayEnvelope) else None,
        )
        envelope.original_content = envelope.content = None  # hold one copy, not three
        bind_message(recipients=len(submission.recipients), size=len(submission.raw))
        request = isinstance(envelope, GatewayEnvelope) and envelope.request
        reply = await pipeline.process(self.stages, submission,
                                       take_request if request else relay_message)
        message_done(reply.code, _started(envelope))
        return self._answer(server, reply)

    async def handle_exception(self, error: Exception) -> str:
        log.error("smtp-error", **describe_error(error))
        return TRY_LATER.render()

    @staticmethod
    def _answer(server: GatewaySMTP, reply: Reply) -> str:
        """The reply line(s) for aiosmtpd, telling the server whether a stage audited it."""
        server.reply_audited = reply.audited
        return reply.render()


@functools.lru_cache(maxsize=4096)
def inside(peer_ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether `peer_ip` is inside one of `networks`; remembered for the last few thousand
    client addresses (asked at every connection and every MAIL; parsing takes 5 to 10 us)."""
    try:
        address = ipaddress.ip_address(peer_ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _collected_credentials(server: SMTP, session: Session, envelope: Envelope,
                           mechanism: str, auth_data: Any) -> AuthResult:
    """aiosmtpd's authenticator: the credentials its PLAIN or LOGIN exchange collected, unchecked
    (`GatewaySMTP._check_credentials` checks them in a worker thread)."""
    return AuthResult(success=False, handled=False, auth_data=auth_data)


def _started(envelope: Envelope) -> float:
    """When the message began (its MAIL), for its log line."""
    return envelope.started if isinstance(envelope, GatewayEnvelope) else time.perf_counter()


def envelope_sender(envelope: Envelope) -> str:
    """The envelope sender as the pipeline sees it: "" for the null reverse-path `<>`."""
    sender = envelope.mail_from or ""
    return "" if sender == "<>" else sender
