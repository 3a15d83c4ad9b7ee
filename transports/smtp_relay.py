"""The way out to the upstream smarthost: SMTP over verified TLS, with reused connections.

`SmtpRelay.deliver(copies)` hands each copy to the upstream and answers with one
`DeliveryResult`: DELIVERED only when every recipient of every copy was accepted; any connection
trouble, timeout, 4xx or drop mid-DATA is TEMPORARY (the client keeps the message and retries);
a 5xx to MAIL, RCPT or DATA is PERMANENT. It never raises for delivery trouble.

Before anything is sent, every copy is checked: no bare CR, bare LF or NUL in the data, and
envelope addresses that go on the command line unchanged (SECURITY.md 2; the interpreter's
`email.utils` is not trusted). A copy is all-or-nothing: if the upstream refuses one of its
recipients at RCPT, the transaction is reset and no DATA is sent.

The null reverse-path goes as `MAIL FROM:<>`. A copy's DSN request (RFC 3461: RET and ENVID on
MAIL, NOTIFY and ORCPT on each RCPT) and its SMTPUTF8 go to an upstream that offers the
extension. To one that does not offer DSN they are dropped, and casegate writes no "relayed"
DSN itself: a sender who asked for NOTIFY=SUCCESS gets no receipt (README, DSN). A message that
needs SMTPUTF8 (raw UTF-8 in its header) for an upstream without it is PERMANENT (RFC 6531 3.4).

Recipients already accepted for a copy's key (the ledger remembers them) are skipped, so a
client's retry after a partial success does not send anything twice. The acceptance is written
down (`Ledger.note_accepted`: an append to the acceptance journal) as soon as the upstream's 250
to the end of data is read, before anything else is awaited; on PostgreSQL it is also committed
to the ledger every node shares before the client is answered, and a copy one node is handing
over is not sent by another (see transports/ledger.py).

The reply to the end of data is waited for `data_done_timeout` (default 600 s, RFC 5321
4.5.3.2.6; Postfix's `smtp_data_done_timeout`), not the per-command `timeout`: an upstream that
has committed the message may take long to say so, and giving up earlier invites the client's
retry to be delivered a second time. A hand-over goes on when its caller is cancelled (the
client disconnected, the gateway is stopping) until the upstream answers or times out, so an
acceptance is never left unrecorded because nobody was waiting for it any more; `close` waits
for those still running. What remains is the window SMTP cannot close (RFC 1047): the
connection lost after our end-of-data line and before the upstream's reply.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Protocol

import aiosmtplib
import structlog
from aiosmtplib import SMTPStatus

from transports.base import Copy, DeliveryResult, NotReady, Outcome, Problem, Ready
from transports.ledger import Ledger, deliver_once
from transports.smtp_data_writer import has_unsafe_bytes, send_data

log = structlog.get_logger("casegate.relay")

# A dot-atom local part at an ASCII domain: what may appear on a MAIL or RCPT line. Anything else
# (quoted local parts, source routes, "%" and "!" routing, address literals, non-ASCII, spaces,
# controls) is refused (SECURITY.md 8, as defence in depth behind the policy's own checks).
_ADDRESS = re.compile(r"[A-Za-z0-9#$&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}")
# The same with non-ASCII letters and digits as well (RFC 6531), for a copy sent with SMTPUTF8.
_UTF8_ADDRESS = re.compile(r"(?:[A-Za-z0-9#$&'*+/=?^_`{|}~.-]|[^\x00-\x7f])+"
                           r"@(?:[A-Za-z0-9.-]|[^\x00-\x7f])+")


# A pooled connection idle for less than this is reused without an RSET first: the last
# transaction on it ended cleanly, and an upstream that closed it meanwhile is noticed at MAIL,
# before anything is sent (`SmtpRelay._transact` then uses another). One round trip less per
# message; longer idle connections are still proved alive with an RSET.
RECHECK_AFTER = 2.0


class TlsMode(StrEnum):
    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"  # only for a loopback test sink


class UpstreamSettings(Protocol):
    """What the relay reads of its configuration (gateway.config.UpstreamConfig fits)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def tls(self) -> str: ...
    @property
    def verify_certificate(self) -> bool: ...
    @property
    def ca_file(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def pool_size(self) -> int: ...
    @property
    def data_done_timeout(self) -> float: ...


def unsafe_copy_reason(copies: Sequence[Copy]) -> str:
    """Why these copies must not leave as they are ("" when they may)."""
    for index, copy in enumerate(copies):
        if not copy.recipients:
            return f"copy {index} has no recipients"
        if copy.mail_from and not _safe_address(copy.mail_from, copy.smtputf8):
            return f"copy {index} has an envelope sender that cannot be sent safely"
        if not all(_safe_address(r, copy.smtputf8) for r in copy.recipients):
            return f"copy {index} has a recipient address that cannot be sent safely"
        if has_unsafe_bytes(copy.data):
            return f"copy {index} contains a bare CR, a bare LF or a NUL"
    return ""


def _safe_address(address: str, smtputf8: bool = False) -> bool:
    """A plain address, ASCII unless the copy goes with SMTPUTF8: nothing on the command line
    but the address itself (no spaces, controls, brackets or quotes; valid UTF-8)."""
    if _ADDRESS.fullmatch(address) is not None:
        return True
    if not smtputf8 or len(address.encode("utf-8", "replace")) > 254:
        return False
    return _UTF8_ADDRESS.fullmatch(address) is not None and all(
        ch.isprintable() and not ch.isspace() and not 0xD800 <= ord(ch) <= 0xDFFF
        for ch in address)


def tls_context_for(settings: UpstreamSettings) -> ssl.SSLContext | None:
    """The client TLS context the settings ask for: verifying against the system's CAs plus an
    optional extra CA file (a private smarthost's); None when TLS is off."""
    if TlsMode(settings.tls) is TlsMode.NONE:
        return None
    context = ssl.create_default_context()
    try:
        if settings.ca_file:
            context.load_verify_locations(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"'upstream.ca_file' {settings.ca_file} cannot be used "
                         f"({reason.lower()})") from None
    if not settings.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpRelay:
    """A `Transport` to one upstream smarthost."""

    def __init__(
        self,
        settings: UpstreamSettings,
        ledger: Ledger,
        ssl_context: ssl.SSLContext | None = None,
        *,
        local_hostname: str = "casegate.localhost",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recheck_after: float = RECHECK_AFTER,
        close_ledger: bool = False,
    ) -> None:
        """Check the settings (a `ValueError` names what is wrong); connect lazily.

        A pooled connection idle for less than `recheck_after` seconds is reused as it is; one
        idle for longer is first proved alive with an RSET (see `_Pool`). With `close_ledger`
        the relay owns the ledger and `close` closes it.
        """
        try:
            mode = TlsMode(settings.tls)
        except ValueError:
            raise ValueError("upstream tls must be 'starttls', 'implicit' or 'none'") from None
        if mode is TlsMode.NONE and not _is_loopback(settings.host):
            raise ValueError("upstream tls = 'none' is only allowed for a loopback test sink")
        if mode is TlsMode.NONE and settings.username:
            raise ValueError("upstream credentials are only sent over TLS")
        if settings.pool_size < 1:
            raise ValueError("upstream pool_size must be at least 1")
        if settings.data_done_timeout <= 0:
            raise ValueError("upstream data_done_timeout must be positive")
        if mode is not TlsMode.NONE and not settings.verify_certificate:
            log.warning("relay.tls_unverified", host=settings.host)
        self._settings = settings
        self._mode = mode
        self._ledger = ledger
        self._close_ledger = close_ledger
        self._running: set[asyncio.Task[DeliveryResult]] = set()  # hand-overs under way
        self._clock = clock
        self._tls = ssl_context if ssl_context is not None else tls_context_for(settings)
        self._local_hostname = local_hostname
        self._pool = _Pool(self._connect, settings.pool_size, settings.timeout, recheck_after)

    @property
    def ledger(self) -> Ledger:
        """The ledger of what this relay's upstream accepted."""
        return self._ledger

    @property
    def connections_opened(self) -> int:
        """How many upstream connections this relay has opened (for metrics and tests)."""
        return self._pool.opened

    async def deliver(self, copies: Sequence[Copy],
                      ready: Ready | None = None) -> DeliveryResult:
        """Hand every copy over; stop at the first one that is not accepted. With `ready`,
        each transaction goes as far as the end of its data and waits for it there."""
        reason = unsafe_copy_reason(copies)
        if reason:
            log.error("relay.refused_copy", reason=reason)
            return DeliveryResult(Outcome.PERMANENT, reason, problem=Problem.UNSENDABLE)
        # A task of its own: a caller that is cancelled (its client went away) does not cut
        # the transaction between the end of data and the upstream's reply, nor the journal
        # write that follows the reply.
        task = asyncio.ensure_future(deliver_once(
            self._ledger, copies, partial(self._hand_over, ready=ready), self._clock))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Wait for the hand-overs under way (each bounded by the timeouts), say QUIT on every
        idle connection and close them; then fold the acceptance journal into the ledger, and
        close the ledger when the relay owns it."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        await self._pool.close()
        await self._ledger.flush()
        if self._close_ledger:
            await asyncio.to_thread(self._ledger.close)

    async def _hand_over(self, copy: Copy, recipients: tuple[str, ...], *,
                         ready: Ready | None = None) -> DeliveryResult:
        """One SMTP transaction for one copy, logged without its content. Nothing is awaited
        after the upstream's reply (`deliver_once` notes the acceptance next)."""
        result = await self._transact(copy, recipients, ready)
        log.debug(
            "relay.copy",
            key=copy.key,
            recipients=len(recipients),
            size=len(copy.data),
            outcome=str(result.outcome),
            detail=result.detail,
        )
        return result

    async def _transact(self, copy: Copy, recipients: tuple[str, ...],
                        ready: Ready | None = None) -> DeliveryResult:
        """Borrow a connection and run the transaction; every failure becomes a result.

        A connection reused without an RSET may have been closed by the upstream while it was
        idle; if it fails before DATA (nothing of the copy was sent), the copy goes once more
        over a connection that is proved alive.
        """
        try:
            try:
                async with self._pool.connection() as lease:
                    return await _transaction(lease.smtp, copy, recipients, ready,
                                              self._settings.data_done_timeout)
            except _NothingSent:
                if not lease.unchecked:
                    raise
                log.debug("relay.stale_connection", key=copy.key)
                async with self._pool.connection(check=True) as lease:
                    return await _transaction(lease.smtp, copy, recipients, ready,
                                              self._settings.data_done_timeout)
        except NotReady as exc:  # the connection was closed before the end of data
            return DeliveryResult(Outcome.TEMPORARY, str(exc), problem=Problem.GATEWAY)
        except aiosmtplib.SMTPResponseException as exc:
            # Replies outside MAIL/RCPT/DATA (greeting, EHLO, STARTTLS, AUTH) say nothing about
            # this message: a misconfigured or unwell upstream is always worth a retry.
            return _temporary(f"upstream answered {exc.code} while connecting")
        except aiosmtplib.SMTPTimeoutError:
            return _temporary("upstream timed out")
        except TimeoutError:
            return _temporary("no upstream connection free in time")
        except aiosmtplib.SMTPServerDisconnected:
            return _temporary("upstream closed the connection")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return _temporary(_connection_trouble(exc))
        except Exception as exc:  # fail closed: never raise for delivery trouble
            log.exception("relay.unexpected_error", key=copy.key)
            return DeliveryResult(Outcome.TEMPORARY, f"unexpected {exc.__class__.__name__}",
                                  problem=Problem.GATEWAY)

    async def _connect(self) -> aiosmtplib.SMTP:
        """A new connection: TLS as configured, then AUTH when credentials are set."""
        settings = self._settings
        smtp = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            local_hostname=self._local_hostname,
            timeout=settings.timeout,
            use_tls=self._mode is TlsMode.IMPLICIT,
            start_tls=self._mode is TlsMode.STARTTLS,
            tls_context=self._tls,
            validate_certs=settings.verify_certificate,
        )
        try:
            await smtp.connect()
            if settings.username:
                await smtp.login(settings.username, settings.password)
            if smtp.is_ehlo_or_helo_needed:  # no STARTTLS or AUTH said it yet
                try:
                    await smtp.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await smtp.helo()
        except BaseException:
            smtp.close()  # aiosmtplib leaves the socket open when STARTTLS fails
            raise
        return smtp


class _NothingSent(aiosmtplib.SMTPServerDisconnected):
    """The connection was lost at MAIL or RCPT: nothing of the copy reached the upstream."""


async def _transaction(
    smtp: aiosmtplib.SMTP, copy: Copy, recipients: tuple[str, ...], ready: Ready | None = None,
    data_done_timeout: float | None = None,
) -> DeliveryResult:
    """MAIL, every RCPT, then DATA only if every recipient was accepted.

    However it ends without raising, no transaction is left open on the connection (a refusal
    at RCPT or DATA is followed by RSET), so the pool may lend it again as it is.
    """
    try:
        refused = await _envelope(smtp, copy, recipients)
    except aiosmtplib.SMTPServerDisconnected as exc:
        raise _NothingSent(str(exc)) from exc
    if isinstance(refused, DeliveryResult):
        return refused
    if refused:
        await _reset_quietly(smtp)
        listing = ", ".join(f"{r} ({code})" for r, code in refused)
        detail = f"upstream refused {len(refused)} recipient(s): {listing}"
        # Permanent only when every refusal was: one 4xx makes the whole copy worth a retry,
        # and the reply names the recipients that were refused for now.
        if all(500 <= code < 600 for _, code in refused):
            return DeliveryResult(Outcome.PERMANENT, detail, problem=Problem.RECIPIENTS,
                                  refused=tuple(r for r, _ in refused))
        return DeliveryResult(Outcome.TEMPORARY, detail, problem=Problem.RECIPIENTS,
                              refused=tuple(r for r, code in refused if code < 500))
    try:
        await send_data(smtp, copy.data, ready, reply_timeout=data_done_timeout)
    except aiosmtplib.SMTPDataError as exc:
        await _reset_quietly(smtp)  # DATA itself may have been refused, the envelope still open
        return _refused(exc.code, f"upstream refused the data with {exc.code}")
    return DeliveryResult(Outcome.DELIVERED, accepted=recipients)


async def _envelope(smtp: aiosmtplib.SMTP, copy: Copy,
                    recipients: tuple[str, ...]) -> DeliveryResult | list[tuple[str, int]]:
    """MAIL and every RCPT: the sender's refusal as a result, else the refused recipients.

    Each address goes on the command line exactly as the policy decided on it (a plain one:
    `unsafe_copy_reason` checked; "" is the null reverse-path, `MAIL FROM:<>`). aiosmtplib's
    `mail` and `rcpt` would first re-parse it with `email.utils.parseaddr`, which can rewrite
    an address (CVE-2023-27043) and was the costliest step of relaying a short message.
    """
    if _needs_smtputf8(copy, recipients) and not smtp.supports_extension("smtputf8"):
        # RFC 6531 3.4: a message that needs SMTPUTF8 must not go to a server without it.
        return DeliveryResult(Outcome.PERMANENT, "upstream does not offer SMTPUTF8",
                              problem=Problem.SMTPUTF8)
    dsn = smtp.supports_extension("dsn")
    options = [option.encode("ascii") for option in _mail_options(smtp, copy)]
    reply = await smtp.execute_command(b"MAIL", b"FROM:<%s>" % copy.mail_from.encode("utf-8"),
                                       *options)
    if reply.code != SMTPStatus.completed:
        return _refused(reply.code, f"upstream refused the sender with {reply.code}")
    refused: list[tuple[str, int]] = []
    for recipient in recipients:
        params = [p.encode("ascii") for p in _rcpt_options(copy, recipient)] if dsn else []
        reply = await smtp.execute_command(b"RCPT", b"TO:<%s>" % recipient.encode("utf-8"),
                                           *params)
        if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            refused.append((recipient, reply.code))
    return refused


def _mail_options(smtp: aiosmtplib.SMTP, copy: Copy) -> list[str]:
    """SIZE (so the upstream can refuse early), BODY=8BITMIME when the data needs it, SMTPUTF8
    when the client asked for it, and the DSN request's RET and ENVID (RFC 3461) when the
    upstream offers each; an extension it does not offer is left out (see README, DSN)."""
    options: list[str] = []
    data = copy.data
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(data)}")
    if smtp.supports_extension("8bitmime") and not data.isascii():
        options.append("BODY=8BITMIME")
    if copy.smtputf8 and smtp.supports_extension("smtputf8"):
        options.append("SMTPUTF8")
    if smtp.supports_extension("dsn"):
        if copy.dsn.ret:
            options.append(f"RET={copy.dsn.ret}")
        if copy.dsn.envid:
            options.append(f"ENVID={copy.dsn.envid}")
    return options


def _rcpt_options(copy: Copy, recipient: str) -> list[str]:
    """The NOTIFY and ORCPT the client gave for `recipient` (to an upstream offering DSN)."""
    notify, orcpt = copy.dsn.for_recipient(recipient)
    return ([f"NOTIFY={notify}"] if notify else []) + ([f"ORCPT={orcpt}"] if orcpt else [])


def _needs_smtputf8(copy: Copy, recipients: tuple[str, ...]) -> bool:
    """Whether the copy can only go with SMTPUTF8: a non-ASCII address or raw UTF-8 in its
    header (an ASCII copy whose client said SMTPUTF8 may go without it)."""
    if not copy.smtputf8:
        return False
    return not (copy.mail_from.isascii() and all(r.isascii() for r in recipients)
                and _head(copy.data).isascii())


def _head(data: bytes) -> bytes:
    """The header block of a message (everything before the first empty line)."""
    end = data.find(b"\r\n\r\n")
    return data if end == -1 else data[:end]


async def _reset_quietly(smtp: aiosmtplib.SMTP) -> None:
    """Abort the transaction; a connection that cannot even RSET is closed."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


def _refused(code: int, detail: str) -> DeliveryResult:
    """A reply to MAIL or DATA: 5xx is permanent; 4xx and anything odd are temporary."""
    return DeliveryResult(Outcome.PERMANENT if 500 <= code < 600 else Outcome.TEMPORARY, detail,
                          problem=Problem.MESSAGE)


def _temporary(detail: str) -> DeliveryResult:
    """Connection trouble: nothing was said about the message."""
    return DeliveryResult(Outcome.TEMPORARY, detail, problem=Problem.UNREACHABLE)


def _connection_trouble(exc: BaseException) -> str:
    """A short, operator-facing description of why the connection failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"upstream TLS certificate rejected: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return f"upstream TLS failed: {seen.reason or seen.__class__.__name__}"
        if isinstance(seen, aiosmtplib.SMTPNotSupported):
            return "upstream does not offer STARTTLS"
        seen = seen.__cause__ or seen.__context__
    return f"cannot reach the upstream ({exc.__class__.__name__})"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class _Lease:
    """A connection lent by the pool, and whether it was reused without proof it is alive."""

    smtp: aiosmtplib.SMTP
    unchecked: bool


class _Pool:
    """At most `size` connections in use; idle ones are reused, broken ones dropped."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[aiosmtplib.SMTP]],
        size: int,
        timeout: float,
        recheck_after: float = RECHECK_AFTER,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._timeout = timeout
        self._recheck_after = recheck_after
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # with when each was given back
        self.opened = 0

    @asynccontextmanager
    async def connection(self, *, check: bool = False) -> AsyncIterator[_Lease]:
        """Lend a ready connection (`check`: proved alive, or new); it goes back to the pool
        only if the caller finished with it still connected."""
        async with asyncio.timeout(self._timeout):
            await self._slots.acquire()
        lease: _Lease | None = None
        finished = False
        try:
            lease = await self._ready(check)
            yield lease
            finished = True
        finally:
            if lease is not None:
                if finished and lease.smtp.is_connected:
                    self._idle.append((lease.smtp, time.monotonic()))
                else:
                    lease.smtp.close()
            self._slots.release()

    async def _ready(self, check: bool) -> _Lease:
        while self._idle:
            smtp, since = self._idle.pop()
            if not smtp.is_connected:
                continue
            if not check and time.monotonic() - since < self._recheck_after:
                return _Lease(smtp, unchecked=True)
            try:
                await smtp.rset()  # proof the connection still works
                return _Lease(smtp, unchecked=False)
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
        smtp = await self._connect()
        self.opened += 1
        return _Lease(smtp, unchecked=False)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass
            finally:
                smtp.close()
