"""Building the outgoing copies of one message from its Decision.

The message is never parsed and re-serialised: its header block is split into raw fields, some
fields are dropped and a few are added, and the body goes out as exactly the bytes that were
classified. (The email package's generator did not quote newlines in headers, CVE-2024-6923;
this interpreter is treated as unpatched, so no decoded value is ever written back.)

- `Bcc` and `Resent-Bcc` never leave; the override headers are consumed and stripped, and so
  are override tags in the Subject (`[override RULE-ID: why]`): the rest of the Subject keeps its
  exact bytes, unless the tag was inside an RFC 2047 encoded word, when the Subject is decoded,
  the tag removed and the rest re-encoded as UTF-8 encoded words.
- Every copy carries `X-Casegate-Decision: <decision id>`, the trace header.
- A split (DESIGN ruling 5) gives each external recipient a copy on which only their own address
  appears (`To:` rewritten, `Cc:` removed); internal recipients share one copy of the original.
- Every copy gets a `Received:` trace field at the top (RFC 5321 4.4), naming the client's
  HELO and address, the protocol (RFC 3848: ESMTP, ESMTPS, ESMTPSA, ...) and the decision id,
  and `for <recipient>` when the copy has one recipient. The classified bytes follow unchanged.
- A rewritten `To:` keeps the display name the original To or Cc gave that address (decoded by
  the header parser only to find the name: the address written is always the envelope's).
- A header value we write that contains CR, LF or NUL is refused with `HeaderError`.
- Each copy says whether its header fields are the submitted ones (`Origin.RELAYED`: only the
  trace field added on top) or were changed (`Origin.REWRITTEN`: a split copy, a stripped Bcc or
  override header, a Subject without its override tag); the way out signs the changed ones with
  the organisation's DKIM key (transports/dkim.py).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email.header import Header
from email.policy import default as default_policy
from email.utils import format_datetime
from typing import Any

from policies import header_signals
from policies.model import Action, Category, Decision
from transports.base import NO_DSN, Copy, Dsn, Origin

TRACE_HEADER = "X-Casegate-Decision"
DEFAULT_OVERRIDE_HEADER = "X-Casegate-Override"  # policy.content.override_header
DEFAULT_SUBJECT_TAG = "override"  # policy.content.override_subject_tag
MAX_LINE = 998  # octets per header line (RFC 5322 2.1.1)
# Never in an outgoing copy: blind copies, and a trace header a client tried to forge.
NEVER_LEAVE = frozenset({"bcc", "resent-bcc", TRACE_HEADER.lower()})
# Fields that could show another recipient's address on a split copy.
RECIPIENT_FIELDS = frozenset({"to", "cc", "resent-to", "resent-cc"})


class HeaderError(ValueError):
    """A header value would carry a line break or NUL into the message."""


# A HELO name written in the Received field as it was given: a domain or an address literal.
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_ADDRESS_LITERAL = re.compile(r"\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]")
# A display name written as it is: atext and spaces (RFC 5322 3.2.3); else it is quoted.
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")


@dataclass(frozen=True)
class Trace:
    """What the Received field says about the client's connection."""

    helo: str  # as the client gave it (HELO/EHLO); written only if it is a domain or literal
    peer: str  # the client's IP address
    esmtp: bool  # EHLO rather than HELO
    tls: bool
    authenticated: bool

    @property
    def protocol(self) -> str:
        """The "with" keyword of RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA."""
        if not self.esmtp:
            return "SMTP"
        return "ESMTP" + ("S" if self.tls else "") + ("A" if self.authenticated else "")

    def field(self, hostname: str, decision_id: str, when: datetime) -> Received:
        """The Received field of this message's copies (each adds its `for`)."""
        literal = _address_literal(self.peer)
        helo = self.helo if _DOMAIN.fullmatch(self.helo) or \
            _ADDRESS_LITERAL.fullmatch(self.helo) else literal
        return Received(f"from {helo} ({literal})",
                        f"by {hostname} (casegate) with {self.protocol} id {decision_id}",
                        format_datetime(when))


@functools.lru_cache(maxsize=1024)  # the same few clients' addresses, message after message
def _address_literal(peer: str) -> str:
    """`[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3); `[unknown]` for no address."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return "[unknown]"
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


@dataclass(frozen=True)
class Received:
    """A Received field but for its `for` clause, which depends on the copy."""

    origin: str  # "from helo ([ip])"
    by: str  # "by host (casegate) with ESMTPSA id ..."
    date: str

    def to_bytes(self, recipients: Sequence[str]) -> bytes:
        """The field, folded over three lines, `for <rcpt>` only for a single recipient."""
        last = f"for <{recipients[0]}>; {self.date}" if len(recipients) == 1 else self.date
        lines = (f"Received: {self.origin}", f"\t{self.by}" + ("" if len(recipients) == 1
                                                              else ";"), f"\t{last}")
        if any(ch in line for line in lines for ch in "\r\n\x00"):
            raise HeaderError("refusing to write a Received field with a line break")
        return "\r\n".join(lines).encode("utf-8") + b"\r\n"  # UTF-8: an SMTPUTF8 recipient


@dataclass(frozen=True)
class RawMessage:
    """A message as header fields (each with its folded lines, CRLF-terminated) and body bytes."""

    fields: tuple[bytes, ...]
    body: bytes | memoryview  # everything after the header block, the blank line included

    @classmethod
    def split(cls, raw: bytes) -> RawMessage:
        """Cut `raw` (CRLF line endings) into its header fields and its body (not copied)."""
        end = _head_end(raw)
        return cls(fields=cls.split_head(raw), body=memoryview(raw)[end:])

    @staticmethod
    def split_head(raw: bytes) -> tuple[bytes, ...]:
        """The raw header fields of `raw`, each with its folded continuation lines."""
        head = raw[: _head_end(raw)]
        if head and not head.endswith(b"\r\n"):
            head += b"\r\n"
        fields: list[bytes] = []
        for line in head.splitlines(keepends=True):
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += line  # a folded continuation line belongs to the field before
            else:
                fields.append(line)
        return tuple(fields)

    def without(self, names: Iterable[str]) -> RawMessage:
        """The message minus every field whose name is in `names` (lower-case)."""
        drop = frozenset(names)
        return RawMessage(
            fields=tuple(f for f in self.fields if field_name(f) not in drop), body=self.body
        )

    def replacing(self, name: str, change: Callable[[bytes], bytes]) -> RawMessage:
        """The message with every field called `name` (lower-case) passed through `change`."""
        return RawMessage(
            fields=tuple(change(f) if field_name(f) == name else f for f in self.fields),
            body=self.body,
        )

    def with_fields(self, *new: bytes) -> RawMessage:
        """The message with `new` fields put first (trace fields go at the top)."""
        return RawMessage(fields=(*new, *self.fields), body=self.body)

    def to_bytes(self) -> bytes:
        return b"".join((*self.fields, self.body if len(self.body) else b"\r\n"))


def _head_end(raw: bytes) -> int:
    """Where the header block ends: after its last CRLF, before the blank line."""
    end = raw.find(b"\r\n\r\n")
    return len(raw) if end == -1 else end + 2


def field_name(raw_field: bytes) -> str:
    """The lower-case name of a raw header field ("" for a line that is not a field)."""
    name, colon, _ = raw_field.partition(b":")
    if not colon:
        return ""
    return name.strip().decode("ascii", "replace").lower()


def header_field(name: str, value: str) -> bytes:
    """One header field we write ourselves, refused if the value could break the header block."""
    if any(ch in value for ch in "\r\n\x00") or any(ch in name for ch in "\r\n\x00: "):
        raise HeaderError(f"refusing to write the {name} header: it contains a line break")
    return f"{name}: {value}\r\n".encode()


def outgoing_copies(
    raw: bytes,
    decision: Decision,
    decision_id: str,
    override_header: str = DEFAULT_OVERRIDE_HEADER,
    subject_tag: str = DEFAULT_SUBJECT_TAG,
    *,
    split: RawMessage | None = None,
    received: Received | None = None,
    dsn: Dsn = NO_DSN,
    smtputf8: bool = False,
) -> tuple[tuple[Copy, ...], tuple[Copy, ...]]:
    """The plain copies and the encrypted (portal) copies that carry out `decision`.

    The submitted message is split (unless the caller has: `split`, of these same bytes) and
    cleaned once for both; `override_header` (consumed by the engine) is stripped. With
    `received`, each copy gets a Received field; `dsn` and `smtputf8` go with every copy.
    """
    submitted = split if split is not None else RawMessage.split(raw)
    message = _outgoing(submitted, override_header, subject_tag)
    trace = header_field(TRACE_HEADER, decision_id)
    # A copy of the cleaned message is relayed unchanged when cleaning dropped or rewrote
    # nothing; then the sender's own DKIM signature still holds and casegate adds none.
    origin = Origin.RELAYED if message.fields == submitted.fields else Origin.REWRITTEN
    plain = _plain(raw, decision, message, trace, origin, received)
    sealed = _sealed(raw, decision, message, trace, origin, received)
    if not dsn and not smtputf8:
        return plain, sealed
    return (tuple(_finished(c, received, dsn, smtputf8) for c in plain),
            tuple(_finished(c, received, dsn, smtputf8) for c in sealed))


def _finished(copy: Copy, received: Received | None, dsn: Dsn, smtputf8: bool) -> Copy:
    """`copy` (its Received field already on top: see `_copy`) with the client's DSN request
    and SMTPUTF8."""
    return replace(copy, dsn=dsn, smtputf8=smtputf8)


def build_copies(
    raw: bytes,
    decision: Decision,
    decision_id: str,
    override_header: str = DEFAULT_OVERRIDE_HEADER,
    subject_tag: str = DEFAULT_SUBJECT_TAG,
) -> tuple[Copy, ...]:
    """The plain copies alone (see `outgoing_copies`)."""
    return outgoing_copies(raw, decision, decision_id, override_header, subject_tag)[0]


def _plain(raw: bytes, decision: Decision, message: RawMessage, trace: bytes,
           origin: Origin, received: Received | None = None) -> tuple[Copy, ...]:
    """The copies for PLAIN recipients: one or more, each with its envelope and bytes.

    `origin` is that of a copy of `message` as it is; a split copy is always REWRITTEN.
    The caller refuses the message before this when any recipient is blocked.
    """
    plain = [rd for rd in decision.recipients if rd.action is Action.PLAIN]
    if not decision.split:
        if not plain:
            return ()
        envelope = tuple(rd.recipient.address for rd in plain)
        return (_copy(raw, decision.sender, envelope, message.with_fields(trace), origin,
                      received),)
    internal = tuple(
        rd.recipient.address for rd in plain if rd.recipient.category is Category.INTERNAL
    )
    external = [
        rd.recipient.address for rd in plain if rd.recipient.category is not Category.INTERNAL
    ]
    copies: list[Copy] = []
    if internal:
        copies.append(_copy(raw, decision.sender, internal, message.with_fields(trace), origin,
                            received))
    for address in external:
        copies.append(_copy(raw, decision.sender, (address,), _own(message, trace, address),
                            Origin.REWRITTEN, received))
    return tuple(copies)


def _sealed(raw: bytes, decision: Decision, message: RawMessage, trace: bytes,
            origin: Origin, received: Received | None = None) -> tuple[Copy, ...]:
    """One copy per ENCRYPT recipient, for the encrypted (portal) transport.

    On a split message each shows only its own recipient, as the plain copies do.
    """
    copies = []
    for rd in decision.recipients:
        if rd.action is not Action.ENCRYPT:
            continue
        address = rd.recipient.address
        if decision.split:
            shown, shown_origin = _own(message, trace, address), Origin.REWRITTEN
        else:
            shown, shown_origin = message.with_fields(trace), origin
        copies.append(_copy(raw, decision.sender, (address,), shown, shown_origin, received))
    return tuple(copies)


def _outgoing(submitted: RawMessage, override_header: str, subject_tag: str) -> RawMessage:
    """The submitted message minus what never leaves (Bcc, overrides, a forged trace)."""
    message = submitted.without(NEVER_LEAVE | {override_header.lower()})
    if not subject_tag:
        return message
    return message.replacing("subject", lambda f: without_override_tags(f, subject_tag))


def without_override_tags(raw_field: bytes, tag: str) -> bytes:
    """A raw Subject field with its override tags removed (see the module docstring).

    Raises `HeaderError` when a tag would still be visible in the decoded Subject.
    """
    name, _, rest = raw_field.partition(b":")
    value = rest[:-2] if rest.endswith(b"\r\n") else rest
    text = value.decode("utf-8", "surrogateescape")
    lead = text[: len(text) - len(text.lstrip(" \t"))]
    body = header_signals.strip_subject_tags(text[len(lead):], tag)
    if "=?" not in body or not _decoded_tags(body, tag):  # no encoded word can hide a tag
        if body == text[len(lead):]:
            return raw_field  # no tag: the field leaves exactly as it came
        return _field(name, (lead or " ") + body if body else "")
    # The tag is inside encoded words: decode, remove, re-encode.
    decoded = header_signals.strip_subject_tags(_decoded(body), tag)
    if any(ch in decoded for ch in "\r\n\x00"):
        raise HeaderError("refusing to rewrite the Subject: it contains a line break")
    encoded = Header(decoded, "utf-8", header_name="Subject").encode(linesep="\r\n")
    if _decoded_tags(encoded, tag):
        raise HeaderError("refusing to send an override tag in the Subject")
    return _field(name, " " + encoded if encoded else "")


def _decoded(value: str) -> str:
    """A Subject value as a reader sees it: unfolded and its encoded words decoded."""
    return str(default_policy.header_factory("subject", value.replace("\r\n", "")))


def _decoded_tags(value: str, tag: str) -> bool:
    """Whether a Subject value still shows an override tag once decoded."""
    return bool(header_signals.subject_overrides(_decoded(value), tag))


def _field(name: bytes, value: str) -> bytes:
    """A rewritten Subject field; refused if removing a tag joined lines into one too long."""
    data = value.encode("utf-8", "surrogateescape")
    lines = data.split(b"\r\n")
    if any(len(line) > MAX_LINE - len(name) - 1 for line in lines):
        raise HeaderError("refusing to write a Subject line longer than RFC 5322 allows")
    return name + b":" + data + b"\r\n"


def _own(message: RawMessage, trace: bytes, address: str) -> RawMessage:
    """The message as one external recipient of a split sees it: only their own address,
    with the display name the original To or Cc gave it."""
    return message.without(RECIPIENT_FIELDS).with_fields(trace, own_to_field(message, address))


def own_to_field(message: RawMessage, address: str) -> bytes:
    """`To: Name <address>`, or `To: address` when the original gave it no (usable) name."""
    name = _display_name(message, address)
    if not name or any(ch in name for ch in "\r\n\x00"):
        return header_field("To", address)
    if _PLAIN_PHRASE.fullmatch(name):
        phrase = name
    elif name.isascii() and name.isprintable():
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:  # RFC 2047 encoded words, one to a folded line
        words = Header(name, "utf-8").encode(splitchars=" ", linesep="\n").split("\n")
        phrase = "\r\n ".join(word.strip() for word in words)
    folded = phrase.split("\r\n ")
    if any(any(ch in part for ch in "\r\n\x00") for part in folded):
        return header_field("To", address)
    field = f"To: {phrase} <{address}>\r\n".encode()
    if any(len(line) > MAX_LINE for line in field.split(b"\r\n")):
        return header_field("To", address)
    return field


def _display_name(message: RawMessage, address: str) -> str:
    """The display name the original To or Cc gave `address` ("" when none).

    The header parser is used only to find the name beside an address equal to the
    envelope's; it never supplies an address (SECURITY.md, the interpreter).
    """
    wanted = address.lower()
    for raw_field in message.fields:
        name = field_name(raw_field)
        if name not in ("to", "cc"):
            continue
        value = raw_field.partition(b":")[2].decode("utf-8", "replace").replace("\r\n", "")
        try:
            header: Any = default_policy.header_factory(name, value.strip())
            for mailbox in header.addresses:
                if str(mailbox.addr_spec).lower() == wanted and mailbox.display_name:
                    return str(mailbox.display_name)
        except (ValueError, IndexError, TypeError, AttributeError):
            continue
    return ""


def _copy(raw: bytes, sender: str, recipients: Sequence[str], message: RawMessage,
          origin: Origin, received: Received | None = None) -> Copy:
    """A Copy whose key is the same for the same submitted message and envelope; with
    `received`, its Received field on top (joined with the rest at once: a large message is
    not copied twice).

    A client that retries after a 4xx submits the same bytes again; the key lets the transport
    recognise copies the upstream already accepted so they are not sent twice.
    """
    digest = hashlib.sha256()
    digest.update(raw)
    for part in (sender, *recipients):
        digest.update(b"\x00" + part.encode("utf-8", "surrogateescape"))
    return Copy(
        key=digest.hexdigest(),
        mail_from=sender,
        recipients=tuple(recipients),
        data=(message if received is None
              else message.with_fields(received.to_bytes(recipients))).to_bytes(),
        origin=origin,
    )
