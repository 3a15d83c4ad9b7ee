"""Encrypted delivery, as Egress does: store the copy sealed, notify the recipient by email.

`PortalDelivery` is a Transport for the recipients whose action is `encrypt`. For each copy
and recipient it

1. seals the whole MIME message (`transports.crypto`: its own data key, bound to the copy id
   and the recipient) and stores it ACTIVE, with an opaque id for each attachment and the link
   token sealed too: the link opens the copy before anyone can hold it;
2. sends a notification through the normal upstream Transport: who sent it, a link, the
   expiry; by default neither the subject nor any content (the subject often names a child);
3. marks the copy notified when the upstream accepted the notification. When it was not, the
   copy is withdrawn (PENDING: the link does not open it) after a temporary failure, deleted
   after a permanent one, and the result is returned, so the client retries.

A retry of the same message (same copy key) reuses the copy: a withdrawn one is made active
again and its notification sent again with the same link and the same idempotency key, so the
relay's ledger sends it only if it was not accepted before; a notified one is not sent again.
Nothing that fails after the notification was accepted (marking it notified, the audit event)
turns the delivery into a failure: it is logged and reported to `on_fault`.

This module also builds the other mails the portal sends (the one-time code, the secure reply)
and reads a decrypted copy for display (`read_message`, `attachment`). It imports nothing from
`gateway`: the store is any object with the `CopyStore` methods.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from importlib import resources
from string import Template
from typing import Protocol

import structlog

from policies import mime
from policies.email_policy import for_one_message
from policies.events import EventKind
from transports.base import (
    Copy,
    DeliveryResult,
    Origin,
    Outcome,
    Problem,
    Ready,
    Transport,
    wait_ready,
)
from transports.crypto import CryptoError, Keyring, Sealed, Sealing, seal, sealing, unseal
from transports.plaintext import fill_and_flow
from transports.worker import StoreWorker

log = structlog.get_logger("casegate.portal")

DEFAULT_EXPIRY = timedelta(days=30)
TRACE_HEADER = b"x-casegate-decision"
MAX_FILENAME = 150
MAX_SUBJECT = 200
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # RFC 5322 msg-id: printable, no <, > or space
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


class CopyStore(Protocol):
    """What delivery needs of the portal store (gateway.stores.portal.PortalStore)."""

    def add_copy(self, *, copy_id: str, link_token: str, copy_key: str, sender: str,
                 recipient: str, decision_id: str, sealed: Sealed | Sealing, size: int,
                 attachment_parts: Sequence[int], now: datetime, expires: datetime,
                 link: Sealed | None = None, state: str = "pending") -> None: ...

    def activate(self, copy_id: str) -> None: ...

    def withdraw(self, copy_id: str) -> None: ...

    def discard(self, copy_id: str) -> None: ...

    def mark_notified(self, copy_id: str, now: datetime) -> None: ...

    def reusable(self, copy_key: str, recipient: str) -> StoredDelivery | None: ...

    def group_commit(self) -> AbstractContextManager[object]: ...


class StoredDelivery(Protocol):
    """A copy already made for a submission and recipient (gateway.stores.portal's fits)."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...  # "active", "pending" (withdrawn), "revoked", "expired"
    @property
    def notified(self) -> bool: ...
    @property
    def expires(self) -> datetime: ...
    @property
    def link(self) -> Sealed | None: ...


@dataclass(frozen=True)
class PortalSettings:
    organisation: str = "Cafcass"
    from_address: str = "casegate@casegate.localhost"  # sender of codes and secure replies
    expiry: timedelta = DEFAULT_EXPIRY
    notify_subject: bool = False  # put the original subject in the notification


@dataclass
class PortalDelivery:
    """The Transport-like way out for `encrypt` recipients (see the module docstring)."""

    store: CopyStore
    keyring: Keyring
    upstream: Transport
    links: Callable[[str], str]  # link token -> the URL the recipient opens
    settings: PortalSettings = field(default_factory=PortalSettings)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # AuditLog.record_async, for "portal-stored" events (awaited: the loop never waits)
    audit: Callable[..., Awaitable[object]] | None = None
    # told what could not be written down after a notification was accepted (an alert)
    on_fault: Callable[[str], None] | None = None
    _in_flight: set[tuple[str, str]] = field(default_factory=set)  # (copy key, recipient)
    # The store's writes and the sealing, in one thread of their own, in order: from the
    # default executor's threads they queued on the store's lock, and every hand-back of it
    # and of the interpreter's lock between those threads was a system call (about 400 futex
    # calls a message measured under load, against 13 without the store). The copies stored
    # by one batch of its calls are made durable together (the store's group commit).
    _worker: StoreWorker = field(init=False)

    def __post_init__(self) -> None:
        self._worker = StoreWorker("casegate-portal", batch=self.store.group_commit)

    async def deliver(self, copies: Sequence[Copy],
                      ready: Ready | None = None) -> DeliveryResult:
        not_ready = await wait_ready(ready)
        if not_ready is not None:
            return not_ready
        accepted: list[str] = []
        for copy in copies:
            for recipient in copy.recipients:
                result = await self._deliver_one(copy, recipient)
                if not result.ok:
                    return replace(result, accepted=tuple(accepted))
                accepted.append(recipient)
        return DeliveryResult(Outcome.DELIVERED, "stored and notified", tuple(accepted))

    async def close(self) -> None:
        """Stop the store's thread once what was asked of it is done (the upstream belongs to
        whoever built it)."""
        await asyncio.to_thread(self._worker.close)

    async def _deliver_one(self, copy: Copy, recipient: str) -> DeliveryResult:
        """One recipient's copy: made (or the one made before reused), active, notified."""
        claim = (copy.key, recipient.lower())
        if claim in self._in_flight:
            return DeliveryResult(Outcome.TEMPORARY, "the same copy is already being delivered",
                                  problem=Problem.BUSY)
        self._in_flight.add(claim)
        try:
            return await self._store_and_notify(copy, recipient)
        finally:
            self._in_flight.discard(claim)

    async def _store_and_notify(self, copy: Copy, recipient: str) -> DeliveryResult:
        decision_id = decision_of(copy.data)
        try:
            made = await self._active_copy(copy, recipient, decision_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("portal-store-failed", recipient=recipient)
            return DeliveryResult(Outcome.TEMPORARY, f"portal store: {exc.__class__.__name__}",
                                  problem=Problem.GATEWAY)
        if made is None:
            return DeliveryResult(Outcome.DELIVERED, "already delivered")
        copy_id, link_token, expires, key_id = made
        notice = self.notification(copy, recipient, link_token, expires, copy_id)
        result = await self.upstream.deliver([notice])
        if not result.ok:
            # The link must not open a copy nobody was told of; a retry makes it active again
            # (or, after a permanent refusal, makes none: the client is told it failed).
            undo = self.store.discard if result.outcome is Outcome.PERMANENT \
                else self.store.withdraw
            try:
                await self._worker.run(undo, copy_id)
            except Exception:
                log.exception("portal-withdraw-failed", copy_id=copy_id)
            return result
        try:
            await self._worker.run(self.store.mark_notified, copy_id, self.clock())
            if self.audit is not None:
                await self.audit(EventKind.PORTAL_STORED, sender=copy.mail_from,
                                 recipients=[recipient], decision_id=decision_id,
                                 copy_id=copy_id, key_id=key_id, size=len(copy.data),
                                 expires=expires.isoformat())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the notification left: never a reason to answer 4xx
            log.exception("portal-not-recorded", copy_id=copy_id)
            if self.on_fault is not None:
                self.on_fault(f"portal copy {copy_id} notified but not recorded: "
                              f"{exc.__class__.__name__}")
        return result

    async def _active_copy(self, copy: Copy, recipient: str,
                           decision_id: str) -> tuple[str, str, datetime, str] | None:
        """The copy to notify of, active: (id, link token, expiry, key id); the one a previous
        attempt made when there is one, else a new one. None when it was already notified.
        One trip to the store's thread for all of it (sealing and the store's statements):
        each trip costs the event loop more than sealing a small message does."""
        return await self._worker.run(self._active_copy_now, copy, recipient, decision_id,
                                      self.clock())

    def _active_copy_now(self, copy: Copy, recipient: str, decision_id: str,
                         now: datetime) -> tuple[str, str, datetime, str] | None:
        """`_active_copy`, in the worker thread."""
        before = self.store.reusable(copy.key, recipient)
        if before is not None and (before.notified or before.state in ("revoked", "expired")):
            return None
        if before is not None and before.link is not None:
            try:
                token = unseal(self.keyring, before.link, copy_id=_link_id(before.id),
                               recipient=recipient)
            except CryptoError:  # its key is gone: the copy cannot be read either
                log.warning("portal-copy-not-reusable", copy_id=before.id)
            else:
                self.store.activate(before.id)
                return before.id, token.decode("ascii"), before.expires, before.link.key_id
        if before is not None:  # it cannot be notified again: a new copy replaces it
            self.store.discard(before.id)
        copy_id = secrets.token_hex(16)
        link_token = secrets.token_urlsafe(32)
        expires = now + self.settings.expiry
        # The numbering's parse is over before the ciphertext exists, and the copy is sealed
        # as the store writes it, a piece at a time: the ciphertext is never whole in memory
        # beside the copy (issue 14, point 4).
        parts = attachment_parts(copy.data)
        sealed = sealing(self.keyring, copy.data, copy_id=copy_id, recipient=recipient)
        link = seal(self.keyring, link_token.encode("ascii"), copy_id=_link_id(copy_id),
                    recipient=recipient)
        self.store.add_copy(
            copy_id=copy_id, link_token=link_token, copy_key=copy.key,
            sender=copy.mail_from, recipient=recipient, decision_id=decision_id,
            sealed=sealed, size=len(copy.data), attachment_parts=parts, now=now,
            expires=expires, link=link, state="active")
        return copy_id, link_token, expires, sealed.key_id

    def notification(self, copy: Copy, recipient: str, link_token: str, expires: datetime,
                     copy_id: str) -> Copy:
        """The email that says a secure message is waiting (no content by default).

        Its key names the stored copy: a retry that reuses the copy sends the same key, which
        the relay's ledger recognises once accepted; a new copy gets its own.
        """
        subject = f"Secure message from {copy.mail_from}"
        if self.settings.notify_subject:
            original = read_message(copy.data).subject
            if original:
                subject = f"{subject}: {original}"
        body = fill_and_flow(_template("notification.txt"), {
            "sender": copy.mail_from, "organisation": self.settings.organisation,
            "link": self.links(link_token), "expires": expires.strftime("%d %B %Y %H:%M")})
        return Copy(key=_derived_key(copy.key, recipient, f"notification {copy_id}"),
                    mail_from=copy.mail_from, recipients=(recipient,),
                    data=mail_bytes(copy.mail_from, recipient, subject, body, self.clock()),
                    origin=Origin.AUTHORED)


# -- the other mails the portal sends -----------------------------------------------------


def code_email(settings: PortalSettings, recipient: str, sender: str, code: str,
               now: datetime) -> Copy:
    """The one-time code, sent only to the copy's own recipient."""
    body = fill_and_flow(_template("code.txt"), {"sender": sender, "code": code})
    mail = _mail(settings.from_address, recipient, "Your one-time code", body, now)
    return Copy(key=secrets.token_hex(16), mail_from=settings.from_address,
                recipients=(recipient,), data=mail.as_bytes(), origin=Origin.AUTHORED)


@dataclass(frozen=True)
class Upload:
    """One file a recipient attached to a secure reply."""

    filename: str
    content_type: str
    data: bytes


def reply_email(settings: PortalSettings, *, recipient: str, sender: str, decision_id: str,
                text: str, uploads: Sequence[Upload], now: datetime,
                original_subject: str = "", original_id: str = "") -> Copy:
    """A recipient's secure reply, with attachments, to the sender's internal mailbox.

    It answers the original message as a mail client would (RFC 5322 3.6.4): "Re: <subject>"
    when the copy had a subject, and In-Reply-To/References naming its Message-ID when it had
    a well-formed one, so the sender's mail client threads the reply with what they sent.
    """
    body = fill_and_flow(_template("reply.txt"), {
        "recipient": recipient, "decision_id": decision_id,
        "organisation": settings.organisation, "text": text})
    mail = _mail(settings.from_address, sender, reply_subject(original_subject, recipient),
                 body, now)
    if _MESSAGE_ID.fullmatch(original_id):
        mail["In-Reply-To"] = original_id
        mail["References"] = original_id
    for upload in uploads:
        maintype, _, subtype = upload.content_type.partition("/")
        if not (maintype and subtype) or not _token(maintype) or not _token(subtype):
            maintype, subtype = "application", "octet-stream"
        mail.add_attachment(upload.data, maintype=maintype, subtype=subtype,
                            filename=safe_filename(upload.filename))
    return Copy(key=secrets.token_hex(16), mail_from=settings.from_address, recipients=(sender,),
                data=mail.as_bytes(), origin=Origin.AUTHORED)


def reply_subject(original: str, recipient: str) -> str:
    """'Re: <original subject>' (one 'Re:' only), else 'Secure reply from <recipient>'."""
    subject = " ".join(original.split())[:MAX_SUBJECT]
    if not subject:
        return f"Secure reply from {recipient}"
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


def safe_filename(name: str) -> str:
    """A file name without control characters, path separators or quotes; never empty."""
    cleaned = _UNSAFE_NAME.sub("_", unicodedata.normalize("NFC", name)).strip(" .")
    return cleaned[:MAX_FILENAME] or "attachment"


def _token(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9!#$&^_.+-]{1,64}", text) is not None


def _mail(from_address: str, to: str, subject: str, body: str, now: datetime,
          message_id: str | None = None) -> EmailMessage:
    for value in (from_address, to, subject):
        if any(ch in value for ch in "\r\n\x00"):
            raise ValueError("refusing a header value with a line break")
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = Address(addr_spec=from_address)
    mail["To"] = Address(addr_spec=to)
    mail["Subject"] = subject
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = message_id or _message_id(from_address)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(body)
    return mail


def _link_id(copy_id: str) -> str:
    """What a copy's sealed link token is bound to (never the same as its message's)."""
    return f"{copy_id}:link"


def _message_id(from_address: str) -> str:
    return make_msgid(domain=from_address.rpartition("@")[2] or None)


# What `_mail` writes as it is: a dot-atom address (nothing to quote), and printable ASCII
# without "=?" (nothing to encode) on a line within the 78 characters of RFC 5322 2.1.1.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                       r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_PLAIN_TEXT = re.compile(r"[ -~]*")
_LINE = 78


def mail_bytes(from_address: str, to: str, subject: str, body: str, now: datetime,
               message_id: str | None = None) -> bytes:
    """`_mail(...).as_bytes()`, written directly when nothing in it needs quoting, encoding or
    folding (the portal's notifications, as a rule): the email package takes milliseconds to
    build and write one, the largest cost of a small message to the portal (issue 14). Any
    other mail goes through `_mail`; tests/test_portal_mail.py shows the two agree."""
    message_id = message_id or _message_id(from_address)
    lines = body.split("\n")
    if lines[-1] == "":
        lines.pop()
    direct = (all(_DOT_ATOM.fullmatch(a) and len(a) + 6 <= _LINE for a in (from_address, to))
              and _PLAIN_TEXT.fullmatch(subject) is not None and "=?" not in subject
              and subject == subject.strip() and "  " not in subject
              and len(subject) + 9 <= _LINE and 0 < len(subject)
              and bool(lines)
              and all(_PLAIN_TEXT.fullmatch(line) and len(line) <= _LINE for line in lines))
    if not direct:
        return _mail(from_address, to, subject, body, now, message_id).as_bytes()
    head = (f"From: {from_address}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: {format_datetime(now)}\r\nMessage-ID: {message_id}\r\n"
            "Auto-Submitted: auto-generated\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: 7bit\r\nMIME-Version: 1.0\r\n\r\n")
    return (head + "".join(f"{line}\r\n" for line in lines)).encode("ascii")


def _derived_key(key: str, recipient: str, purpose: str) -> str:
    return hashlib.sha256(f"{key}\x00{recipient.lower()}\x00{purpose}".encode()).hexdigest()


def _read_templates(*names: str) -> dict[str, Template]:
    folder = resources.files("transports").joinpath("templates")
    return {name: Template(folder.joinpath(name).read_text("utf-8")) for name in names}


# Read once, when the module is loaded: sending a mail never reads a file.
_TEMPLATES = _read_templates("notification.txt", "code.txt", "reply.txt")


def _template(name: str) -> Template:
    return _TEMPLATES[name]


def decision_of(data: bytes) -> str:
    """The decision id from the copy's trace header ("" when there is none)."""
    head = data[: data.find(b"\r\n\r\n") + 2] if b"\r\n\r\n" in data else data
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == TRACE_HEADER:
            return value.strip().decode("ascii", "replace")[:64]
    return ""


# -- reading a decrypted copy for display -------------------------------------------------


@dataclass(frozen=True)
class AttachmentInfo:
    part: int  # the part's number in walk order: what the opaque id maps to
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class ReadableMessage:
    """What the portal shows of a copy: headers, text and HTML bodies, attachments."""

    subject: str
    sent: str
    message_id: str
    text: str
    html: str
    attachments: tuple[AttachmentInfo, ...]

    def attachment_parts(self) -> list[int]:
        return [a.part for a in self.attachments]


def read_message(data: bytes) -> ReadableMessage:
    """Parse a copy once; malformed parts are shown as attachments, never executed."""
    message = message_from_bytes(data, policy=for_one_message())
    text_part = _body(message, "plain")
    html_part = _body(message, "html")
    attachments: list[AttachmentInfo] = []
    for number, part in enumerate(message.walk()):
        if part.is_multipart() or part is text_part or part is html_part:
            continue
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        attachments.append(AttachmentInfo(
            part=number, filename=safe_filename(_header(part.get_filename, f"part-{number}")),
            content_type=part.get_content_type(), size=size))
    return ReadableMessage(
        subject=_header(lambda: str(message.get("subject", "")), ""),
        sent=_header(lambda: str(message.get("date", "")), ""),
        message_id=_header(lambda: str(message.get("message-id", "")), ""),
        text=_content(text_part), html=_content(html_part), attachments=tuple(attachments))


def attachment_parts(data: bytes) -> list[int]:
    """`read_message(data).attachment_parts()`, without holding the message's bodies.

    The parts, their numbers and which of them is the text or HTML body depend only on header
    fields and boundary lines: the parse is of the message's skeleton (policies.mime, the
    classifier's too), which holds no body (issue 14: a 31 MB message to the portal took
    16 times its size), its runs of body lines found with `bytes.find`, not line by line.
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:  # not CRLF only: the full parse
        return read_message(data).attachment_parts()
    if _one_text_part(data):
        return []
    message = mime.parse_skeleton(data, for_one_message(), bodies=False)
    if message is None:  # a delivery report: the full parse
        return read_message(data).attachment_parts()
    bodies = (_body(message, "plain"), _body(message, "html"))
    return [number for number, part in enumerate(message.walk())
            if not part.is_multipart() and not any(part is body for body in bodies)]


def _one_text_part(data: bytes) -> bool:
    """Whether `data` (CRLF only) is plainly one text body and nothing else: its header block
    has no Content-Disposition and at most one Content-Type, which is exactly text/plain or
    text/html (no type means text/plain). The parse then finds one part, which is the body, so
    no attachment (and the email package's header parsing, milliseconds, is not needed)."""
    end = data.find(b"\r\n\r\n")
    head = (data if end == -1 else data[:end]).lower()
    if head.startswith(b"content-disposition:") or b"\r\ncontent-disposition:" in head:
        return False
    types = [line for line in head.split(b"\r\n") if line.startswith(b"content-type:")]
    if len(types) > 1:
        return False
    if not types:
        return True
    value = types[0][len(b"content-type:"):].partition(b";")[0].strip()
    return value in (b"text/plain", b"text/html")


def attachment(data: bytes, part: int) -> tuple[AttachmentInfo, bytes] | None:
    """The attachment at MIME part `part` (as numbered by `read_message`), with its bytes."""
    info = next((a for a in read_message(data).attachments if a.part == part), None)
    if info is None:
        return None
    message = message_from_bytes(data, policy=for_one_message())
    for number, leaf in enumerate(message.walk()):
        if number == part:
            payload = leaf.get_payload(decode=True)
            return info, payload if isinstance(payload, bytes) else b""
    return None  # pragma: no cover - read_message found it


def _body(message: Message, kind: str) -> Message | None:
    try:
        found = message.get_body(preferencelist=(kind,))  # type: ignore[attr-defined]
    except (AttributeError, KeyError, ValueError):
        return None
    if found is None or found.is_attachment():
        return None
    return found


def _content(part: Message | None) -> str:
    if part is None:
        return ""
    try:
        return str(part.get_content())  # type: ignore[attr-defined]
    except (LookupError, ValueError, AttributeError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _header(getter: Callable[[], str | None], fallback: str) -> str:
    try:
        value = getter()
    except (ValueError, IndexError, TypeError, AttributeError, LookupError):
        return fallback
    cleaned = "".join(ch if ch.isprintable() else " " for ch in (value or ""))
    return cleaned.strip() or fallback
