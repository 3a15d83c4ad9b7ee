"""Walking a parsed message's MIME tree within limits, and noting what is structurally wrong.

Every part is visited (SECURITY.md 9): HTML alternatives, attachments and forwarded messages
included. Too many parts, too deep a nesting, broken boundaries and undecodable transfer
encodings are reported as `malformed` codes; the caller makes such a message protected.

A forwarded message (message/rfc822) is a container (DESIGN ruling 22): the MIME nesting limit
counts within each message, and messages inside messages are counted against the containers'
depth budget; one nested deeper is not read, and reported in `Tree.too_deep_messages`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage

from policies.content_rules import Limits

# Defects the stdlib reports that mean we may not have seen the whole content.
_DEFECT_CODES = {
    "StartBoundaryNotFoundDefect": "boundary-missing",
    "NoBoundaryInMultipartDefect": "boundary-missing",
    "CloseBoundaryNotFoundDefect": "boundary-unclosed",
    "MultipartInvariantViolationDefect": "multipart-invalid",
    "InvalidMultipartContentTransferEncodingDefect": "multipart-invalid",
    "FirstHeaderLineIsContinuationDefect": "header-structure",
    "MissingHeaderBodySeparatorDefect": "header-structure",
    "MisplacedEnvelopeHeaderDefect": "header-structure",
    "InvalidBase64PaddingDefect": "undecodable-part",
    "InvalidBase64CharactersDefect": "undecodable-part",
    "InvalidBase64LengthDefect": "undecodable-part",
}
_TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary", "quoted-printable", "base64",
                                 "x-uuencode", "uuencode", "uue", "x-uue"})
TOO_MANY_PARTS = "too-many-parts"
TOO_DEEP = "too-deep"


def defect_codes(part: EmailMessage) -> list[str]:
    """The malformed codes for the defects the stdlib recorded on one part."""
    return [_DEFECT_CODES[type(d).__name__] for d in part.defects
            if type(d).__name__ in _DEFECT_CODES]


def _transfer_encoding(part: EmailMessage) -> str:
    """The part's Content-Transfer-Encoding, lower-cased; 7bit when absent (RFC 2045)."""
    header = part.get("Content-Transfer-Encoding")
    return "7bit" if header is None else str(header).strip().lower()


@dataclass(frozen=True)
class Leaf:
    """A part that holds content, and how many forwarded messages it lies inside."""

    part: EmailMessage
    depth: int  # as an attachment: 0 for the message's own, 1 in a forwarded message, ...


@dataclass
class Tree:
    """The leaves of a message in document order, and the structural problems met."""

    leaves: list[Leaf] = field(default_factory=list)
    forwarded: list[EmailMessage] = field(default_factory=list)  # message/rfc822 inner messages
    malformed: list[str] = field(default_factory=list)
    too_deep_messages: int = 0  # forwarded messages beyond limits.max_container_depth, unread


def walk(message: EmailMessage, limits: Limits, depth: int = 0) -> Tree:
    """Visit every part depth-first, stopping at the part and nesting limits (fail closed).

    `depth` is how deep the message's own attachments lie: 0 for the message itself, more for
    a message attached as a file inside containers (policies.content).
    """
    tree = Tree()
    # (part, its MIME nesting within its own message, its depth as a container's file)
    stack: list[tuple[EmailMessage, int, int]] = [(message, 0, depth)]
    visited = 0
    while stack:
        part, nesting, inside = stack.pop()
        visited += 1
        if visited > limits.max_parts:
            tree.malformed.append(TOO_MANY_PARTS)
            break
        if nesting > limits.max_depth:
            tree.malformed.append(TOO_DEEP)
            continue
        tree.malformed.extend(defect_codes(part))
        if not part.is_multipart():
            if _transfer_encoding(part) not in _TRANSFER_ENCODINGS:
                # The stdlib would hand over the encoded bytes as if they were the content.
                tree.malformed.append("unknown-transfer-encoding")
            tree.leaves.append(Leaf(part, inside))
            continue
        children = part.get_payload()
        if not isinstance(children, list):
            tree.malformed.append("multipart-invalid")
            continue
        parts = [c for c in children if isinstance(c, EmailMessage)]
        if len(parts) != len(children):
            tree.malformed.append("multipart-invalid")
        if part.get_content_maintype() != "message":
            stack.extend((child, nesting + 1, inside) for child in reversed(parts))
        elif inside + 1 > limits.max_container_depth:
            tree.too_deep_messages += 1
        else:
            tree.forwarded.extend(parts)
            stack.extend((child, 0, inside + 1) for child in reversed(parts))
    return tree
