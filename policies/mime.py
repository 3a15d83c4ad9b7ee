"""Walking a parsed message's MIME tree within limits, and noting what is structurally wrong.

Every part is visited (SECURITY.md 9): HTML alternatives, attachments and forwarded messages
included. Too many parts, too deep a nesting, broken boundaries and undecodable transfer
encodings are reported as `malformed` codes; the caller makes such a message protected.

A forwarded message (message/rfc822) is a container (DESIGN ruling 22): the MIME nesting limit
counts within each message, and messages inside messages are counted against the containers'
depth budget; one nested deeper is not read, and reported in `Tree.too_deep_messages`.
"""

from __future__ import annotations

import binascii
import email.feedparser
import email.policy
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message

from policies import scan
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


# A base64 body the strict decoder takes as it is once its line breaks are gone: the alphabet,
# then at most two padding characters at the very end (and line breaks anywhere but inside the
# padding).
_STRICT_BASE64 = re.compile(r"[A-Za-z0-9+/\r\n]*={0,2}[\r\n]*")
_STRICT_BASE64_BYTES = re.compile(_STRICT_BASE64.pattern.encode("ascii"))


@dataclass(frozen=True)
class Body:
    """A part's body left in the message's bytes by the parse (`parse_skeleton`'s `deferred`):
    `data[start:end]`, which the parse would have set as its payload."""

    data: bytes
    start: int
    end: int

    def text(self) -> str:
        """The payload the parse would have set (the bytes as ASCII, 8-bit as surrogates)."""
        with memoryview(self.data) as view:  # no bytes copy of the body before its text
            return str(view[self.start:self.end], "ascii", "surrogateescape")

    def strict_base64(self) -> bool:
        """Whether the body is what `_STRICT_BASE64` and `decoded_payload` take as it is."""
        data, start, end = self.data, self.start, self.end
        return (_STRICT_BASE64_BYTES.fullmatch(data, start, end) is not None
                and (end - start - data.count(b"\r", start, end)
                     - data.count(b"\n", start, end)) % 4 == 0)


def decoded_payload(part: Message, body: Body | None = None) -> object:
    """`part.get_payload(decode=True)`, the same value and the same defects recorded, without
    the stdlib's copies of a base64 body (issue 14, point 4); `body`, the part's body when the
    parse left it in the message's bytes, is its payload (set on the part unless decoded here).

    For base64 the stdlib holds the body as text, as bytes, as a list of its lines and joined
    again before it decodes (five times the body, 4x the message's size for one large
    attachment). A body of ASCII text that is valid base64 once its line breaks are dropped
    (which is what the stdlib's first, strict, attempt decodes, and the only case in which it
    records no defect) is decoded straight from the text, or the message's bytes, here:
    `binascii.a2b_base64` skips the line breaks itself. Any other body goes to the stdlib.
    """
    cte = str(part.get("content-transfer-encoding", "")).lower()  # as get_payload reads it
    if body is not None:
        if cte == "base64" and body.strict_base64():
            with memoryview(body.data) as view:
                return binascii.a2b_base64(view[body.start:body.end])
        part.set_payload(body.text())
    # The text as stored: `get_payload()` would first encode all of it to UTF-8 (a copy) to
    # look for surrogates, of which ASCII text has none.
    payload = getattr(part, "_payload", None)
    if (cte == "base64" and isinstance(payload, str) and payload.isascii()
            and _STRICT_BASE64.fullmatch(payload) is not None
            and (len(payload) - payload.count("\r") - payload.count("\n")) % 4 == 0):
        return binascii.a2b_base64(payload)
    return part.get_payload(decode=True)


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


# --- parsing a message's skeleton ----------------------------------------------------------
#
# The stdlib parser reads a message line by line in Python: for a message of megabytes, most
# of the time of classifying it (issue 14). But which parts there are, their headers and where
# each body starts and ends depend only on a few lines: header fields, blank lines and lines
# that may be boundaries. `parse_skeleton` feeds the parser those lines as they are and each
# run of other lines as one line of its own, a token, then puts the runs' text back into the
# bodies: the parser builds the same tree, with the same headers and defects, as from the whole
# message, and each body holds the same text, found with `bytes.find` instead of line by line.
#
# Why a run may be replaced by one line: the parser is in one of two states. Reading a header
# block (at the start, after a boundary line, and for a message/* part after its own header
# block), it asks of each line whether it is a field (`email.feedparser.headerRE`: "From ", a
# folded line, or a name and a colon), blank, or neither; a blank line ends the block, and so
# does the first line that is neither, which begins the body. Reading a body, it asks only
# whether a line is a boundary (starts with "--"). So every line that starts with "--" is fed
# as it is, and so is every line from one such line (or the start) while each is a field or
# blank (wider than the parser's header blocks, never narrower); a run of the other lines is
# fed as one token line, which is neither a field, nor blank, nor a boundary, as each of them
# is not. (A message/delivery-status body is blocks of fields after blank lines: a message
# with one is left to the full parse.)
#
# The token is a character no decoded line can hold (the parser's str is the bytes decoded as
# ASCII with surrogateescape: U+E000 never occurs) and the run's number. Only messages with CRLF
# line ends throughout and a final CRLF are read so; any other returns None (the full parse).

_TOKEN = "\ue000"  # noqa: S105 - a marker, not a password
_TOKEN_LINE = re.compile(_TOKEN + r"(\d+)(\r\n)?")
# The parser's own test of a header line (email.feedparser.headerRE; the tests compare them).
_HEADER_LINE = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])")


def parse_skeleton(data: bytes, policy: email.policy.EmailPolicy[EmailMessage],
                   bodies: bool = True,
                   deferred: dict[Message, Body] | None = None) -> Message | None:
    """The stdlib parse of `data` (`email.feedparser` with `policy`), from its skeleton (see
    above), or None when `data` is not CRLF throughout and CRLF-terminated. With `bodies`
    false the bodies keep their tokens: the tree and its headers without the content, for
    callers that only number the parts (transports/portal.py).

    With `deferred`, a part whose whole body is one run of lines keeps its token as payload
    and its `Body` is put in `deferred` instead: the caller reads it, by `decoded_payload`,
    from `data` (a large attachment is then never held as text too, issue 14)."""
    if not data.endswith(b"\r\n") or not scan.crlf_throughout(data):
        return None
    runs: list[tuple[int, int]] = []
    parser = email.feedparser.FeedParser(policy=policy)
    parser.feed(_skeleton(data, runs))
    message = parser.close()
    if any(part.get_content_type() == "message/delivery-status" for part in message.walk()):
        return None  # its body is blocks of fields, each after a blank line: the full parse
    if bodies:
        def body(match: re.Match[str]) -> Body:
            start, end = runs[int(match.group(1))]
            if not match.group(2):
                end -= 2  # the parser took the last line end before a boundary off the body
            return Body(data, start, end)

        def text(match: re.Match[str]) -> str:
            return body(match).text()

        for part in message.walk():
            try:
                payload = part.get_payload()
            except UnicodeEncodeError:
                # A token in a payload that also holds 8-bit bytes (a message that opens with
                # a blank line, its headers then read as body): the stdlib cannot re-encode
                # it, so the message takes the full parse.
                return None
            if isinstance(payload, str) and _TOKEN in payload:
                whole = _TOKEN_LINE.fullmatch(payload) if deferred is not None else None
                if deferred is not None and whole is not None:
                    deferred[part] = body(whole)
                else:
                    part.set_payload(_TOKEN_LINE.sub(text, payload))  # as the parser sets it
            for name in ("preamble", "epilogue"):
                value = getattr(part, name)
                if isinstance(value, str) and _TOKEN in value:
                    setattr(part, name, _TOKEN_LINE.sub(text, value))
    return message


def _skeleton(data: bytes, runs: list[tuple[int, int]]) -> str:
    """The lines of `data` (CRLF throughout, CRLF-terminated) the parser may read as structure,
    as they are, and each run of other lines as one token line; `runs` gets each run's span."""
    out: list[str] = []
    size = len(data)
    pos = 0  # always the start of a line
    heading = True  # the line at `pos` may be read as a header
    dash = -1  # the next line that starts with "--" (once looked for)
    while pos < size:
        if heading or data.startswith(b"--", pos):
            end = data.index(b"\r\n", pos) + 2
            line = data[pos:end].decode("ascii", "surrogateescape")
            if line.startswith("--"):
                heading = True
            elif line != "\r\n" and _HEADER_LINE.match(line) is None:
                heading = False  # it ends the header block: the body's first line, in the run
            if heading:
                out.append(line)
                pos = end
                continue
        # A body: the run goes up to the next line that starts with "--".
        if dash <= pos:
            dash = _next_dash_line(data, pos)
        out.append(f"{_TOKEN}{len(runs)}\r\n")
        runs.append((pos, dash))
        pos = dash
    return "".join(out)


def _next_dash_line(data: bytes, pos: int) -> int:
    """Where the first line after the one at `pos` begins that starts with "--"; len(data)
    when none does."""
    found = _DASH_LINE.search(data, pos)  # twice the speed of bytes.find on short lines
    return len(data) if found is None else found.start() + 2


_DASH_LINE = re.compile(rb"\r\n--")
