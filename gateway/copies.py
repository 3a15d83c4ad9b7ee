"""Building the outgoing copies of one message from its Decision.

The message is never parsed and re-serialised: its header block is split into raw fields, some
fields are dropped and a few are added, and the body goes out as exactly the bytes that were
classified. (The email package's generator did not quote newlines in headers, CVE-2024-6923;
this interpreter is treated as unpatched, so no decoded value is ever written back.)

- `Bcc` and `Resent-Bcc` never leave; the override headers are consumed and stripped.
- Every copy carries `X-Casegate-Decision: <decision id>`, the trace header.
- A split (DESIGN ruling 5) gives each external recipient a copy on which only their own address
  appears (`To:` rewritten, `Cc:` removed); internal recipients share one copy of the original.
- A header value we write that contains CR, LF or NUL is refused with `HeaderError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from policies.model import Action, Category, Decision
from transports.base import Copy

TRACE_HEADER = "X-Casegate-Decision"
DEFAULT_OVERRIDE_HEADER = "X-Casegate-Override"  # policy.content.override_header
# Never in an outgoing copy: blind copies, and a trace header a client tried to forge.
NEVER_LEAVE = frozenset({"bcc", "resent-bcc", TRACE_HEADER.lower()})
# Fields that could show another recipient's address on a split copy.
RECIPIENT_FIELDS = frozenset({"to", "cc", "resent-to", "resent-cc"})


class HeaderError(ValueError):
    """A header value would carry a line break or NUL into the message."""


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


def build_copies(
    raw: bytes,
    decision: Decision,
    decision_id: str,
    override_header: str = DEFAULT_OVERRIDE_HEADER,
) -> tuple[Copy, ...]:
    """The copies that carry out `decision`: one or more, each with its envelope and bytes.

    Only PLAIN recipients get a copy (`encrypted_copies` builds the others); the caller refuses
    the message before this when any recipient is blocked. `override_header` (consumed by the
    engine) is stripped.
    """
    message = _outgoing(raw, override_header)
    trace = header_field(TRACE_HEADER, decision_id)
    plain = [rd for rd in decision.recipients if rd.action is Action.PLAIN]
    if not decision.split:
        envelope = tuple(rd.recipient.address for rd in plain)
        return (_copy(raw, decision.sender, envelope, message.with_fields(trace)),) if plain else ()
    internal = tuple(
        rd.recipient.address for rd in plain if rd.recipient.category is Category.INTERNAL
    )
    external = [
        rd.recipient.address for rd in plain if rd.recipient.category is not Category.INTERNAL
    ]
    copies: list[Copy] = []
    if internal:
        copies.append(_copy(raw, decision.sender, internal, message.with_fields(trace)))
    for address in external:
        copies.append(_copy(raw, decision.sender, (address,), _own(message, trace, address)))
    return tuple(copies)


def encrypted_copies(
    raw: bytes,
    decision: Decision,
    decision_id: str,
    override_header: str = DEFAULT_OVERRIDE_HEADER,
) -> tuple[Copy, ...]:
    """One copy per ENCRYPT recipient, for the encrypted (portal) transport.

    On a split message each shows only its own recipient, as the plain copies do.
    """
    message = _outgoing(raw, override_header)
    trace = header_field(TRACE_HEADER, decision_id)
    copies = []
    for rd in decision.recipients:
        if rd.action is not Action.ENCRYPT:
            continue
        address = rd.recipient.address
        shown = _own(message, trace, address) if decision.split else message.with_fields(trace)
        copies.append(_copy(raw, decision.sender, (address,), shown))
    return tuple(copies)


def _outgoing(raw: bytes, override_header: str) -> RawMessage:
    """The submitted message minus what never leaves (Bcc, overrides, a forged trace)."""
    return RawMessage.split(raw).without(NEVER_LEAVE | {override_header.lower()})


def _own(message: RawMessage, trace: bytes, address: str) -> RawMessage:
    """The message as one external recipient of a split sees it: only their own address."""
    return message.without(RECIPIENT_FIELDS).with_fields(trace, header_field("To", address))


def _copy(raw: bytes, sender: str, recipients: Sequence[str], message: RawMessage) -> Copy:
    """A Copy whose key is the same for the same submitted message and envelope.

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
        data=message.to_bytes(),
    )
