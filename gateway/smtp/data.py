"""Reading one message's DATA in large blocks instead of line by line.

aiosmtpd reads DATA one line at a time and keeps a list of lines; that, not the policy, was the
gateway's biggest cost in time and memory (issue 3's benchmark). `read_data` asks the stream for
everything up to the end line, CRLF "." CRLF (usually the whole message in one piece), and keeps
the semantics of aiosmtpd >= 1.4.5 exactly:

- the data ends only at CRLF "." CRLF (the CRLF of the DATA command itself counts, so an empty
  message is just ".\\r\\n"); bare CR or LF never end it (SMTP smuggling, SECURITY.md item 1);
- a line (CRLF to CRLF, before dot-unstuffing) longer than `line_limit` octets is an error;
- a message of more than `size_limit` octets is an error, detected while streaming: what
  arrived is dropped at once, and the rest is read and discarded up to the end of the data.
  The octets counted are the lines as sent, CRLFs included, without the "." end line (RFC 1870
  counts neither it nor the dots of dot-stuffing; the stuffing dots are counted here, so a
  message taken is never longer than `size_limit` once unstuffed: the policy's own limit,
  `[content.limits] max_message_bytes`, which the front's limit never exceeds, always agrees);
- the first "." of every line is removed (RFC 5321 section 4.5.2);
- a header block longer than `MAX_HEADER_BYTES` is an error (SECURITY.md item 12): the stdlib
  header parser's cost grows faster than the header's size, so a few megabytes of folded
  addresses or encoded words would hold a worker thread for minutes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.smtp.aiosmtpd_private import raised_read_limit
from gateway.smtp.budget import FIRST_CLAIM, NO_ROOM, Claim

END_OF_DATA = b"\r\n.\r\n"
_CHUNK_END = b".\r\n"
_LEAST_READ = 64 * 1024  # a claim's reads may pass it by this much (and what drops is read so)
TOO_MUCH = "552 5.3.4 Message too big for this gateway"
TOO_LONG = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
MAX_HEADER_BYTES = 256 * 1024  # Exchange Online's own limit on a message's header
HEADER_TOO_LARGE = "552 5.3.4 Message header too large for this gateway"


@dataclass(frozen=True)
class Received:
    """The message as received (dot-unstuffed, CRLF line endings), or the error reply."""

    content: bytes = b""
    error: str = ""


async def read_data(reader: asyncio.StreamReader, size_limit: int, line_limit: int,
                    claim: Claim | None = None) -> Received:
    """Read up to and including the end-of-data line; never more from the stream.

    With `claim` (the message's share of the gateway's buffer budget, gateway.smtp.budget),
    no more than it holds is buffered: it grows as the data turns out larger, and when it
    cannot the data is read to its end and dropped, and the error is NO_ROOM (452 4.3.1).

    A 20 MB message is held at most twice at any moment (issue 3): the data as read, in the
    pieces it was read in, and the one copy made of it (the "." line and a leading dot left
    out), which the unstuffed text replaces only when a line needs it.
    """
    # StreamReader.readuntil refuses to buffer more than its limit, which aiosmtpd sets to one
    # command line; raise it for the length of the data and put it back afterwards.
    wire_limit = size_limit + len(_CHUNK_END)  # the "." end line is not the message's
    with raised_read_limit(reader, wire_limit + len(END_OF_DATA)):
        stuffed = await _read_stuffed(reader, wire_limit, claim)
    if isinstance(stuffed, str):
        return Received(error=stuffed)
    end = sum(map(len, stuffed)) - len(_CHUNK_END)  # the "." line; its CRLF ends the last line
    start = 1 if end > 0 and stuffed[0].startswith(b".") else 0  # the first line's first "."
    content = _joined(stuffed, start, end)
    del stuffed  # before the next copy
    # Lines as sent: the first one with the "." left out, when it had one.
    if _has_long_line(content, line_limit, len(content)) or (
            start and _first_line_length(content) + start > line_limit):
        return Received(error=TOO_LONG)
    content = content.replace(b"\r\n.", b"\r\n")  # the same object when no line needs it
    if header_too_large(content):
        return Received(error=HEADER_TOO_LARGE)
    return Received(content=content)


def _joined(pieces: list[bytes], start: int, end: int) -> bytes:
    """Octets `start` to `end` of `pieces` put end to end, copied once: usually two pieces,
    the first octet or two (read one at a time) and the rest of the message."""
    views: list[memoryview] = []
    at = 0
    for piece in pieces:
        low, high = max(start - at, 0), min(end - at, len(piece))
        if low < high:
            views.append(memoryview(piece)[low:high])
        at += len(piece)
    joined = b"".join(views)
    for view in views:
        view.release()
    return joined


def _first_line_length(data: bytes) -> int:
    """The octets of the first line of `data`, its CRLF included."""
    found = data.find(b"\r\n")
    return len(data) if found == -1 else found + 2


def header_too_large(content: bytes, limit: int = MAX_HEADER_BYTES) -> bool:
    """Whether the header block (up to the first empty line) is longer than `limit` octets."""
    if len(content) <= limit or content.startswith(b"\r\n"):  # short, or no header at all
        return False
    return content.find(b"\r\n\r\n", 0, limit + 4) == -1


async def _read_stuffed(reader: asyncio.StreamReader, size_limit: int,
                        claim: Claim | None = None) -> list[bytes] | str:
    """The data as sent, ending in the "." line; TOO_MUCH when it was over `size_limit`
    octets, NO_ROOM when `claim` could not grow to hold it.

    The data ends at the first CRLF "." CRLF, counting the DATA command's own CRLF. While what
    was read so far ends in part of that (at first, and after a piece dropped for the size
    limit) the stream is read a byte at a time until the part is completed or broken; then
    the rest is asked for in one piece up to the whole end line, which cannot straddle what
    was read before. The pieces are kept as they were read (not added to one buffer: that
    would be a copy of the message beside the piece it came in).
    """
    stuffed: list[bytes] = []
    size = 0
    no_room = False  # the claim could not grow: the rest is read and dropped
    partial = b"\r\n"  # the end line's part already read: at first, the DATA command's CRLF
    while True:
        try:
            if partial:
                piece = await reader.readexactly(1)
                partial = _end_line_part(partial + piece)
            else:
                piece = await _read_claimed(reader, claim, size)
                partial = END_OF_DATA
        except asyncio.LimitOverrunError as exc:
            if claim is not None and not no_room and size + exc.consumed <= size_limit:
                # Larger than claimed so far: claim what came and an eighth more (at least a
                # first claim more). Not twice as much: messages that fit together (ten of
                # 20 MB in 256 MiB) must not be turned away by each other's headroom.
                needed = size + exc.consumed + len(END_OF_DATA)
                wanted = min(size_limit + len(END_OF_DATA),
                             needed + max(FIRST_CLAIM, needed // 8))
                if claim.grow(wanted):
                    continue  # the data waits in the reader's buffer: read it again
                no_room = True
            # Over the size limit (or the claim) with no end in sight: drop everything, keep
            # reading.
            over = size + exc.consumed > size_limit
            piece = await reader.read(exc.consumed)
            stuffed = []
            size = (max(size, size_limit) if over else size) + len(piece)
            partial = _end_line_part(piece[-len(END_OF_DATA):])
            continue
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("connection closed during DATA") from None
        size += len(piece)
        if size > size_limit or no_room:
            stuffed = []
        else:
            stuffed.append(piece)
        del piece
        if partial == END_OF_DATA:
            return TOO_MUCH if size > size_limit else NO_ROOM if no_room else stuffed


async def _read_claimed(reader: asyncio.StreamReader, claim: Claim | None, size: int) -> bytes:
    """`reader.readuntil(END_OF_DATA)`, buffering no more than `claim` has left after `size`
    octets (LimitOverrunError beyond that); without a claim, up to the limit already set."""
    if claim is None:
        return await reader.readuntil(END_OF_DATA)
    with raised_read_limit(reader, max(_LEAST_READ, claim.size - size)):
        return await reader.readuntil(END_OF_DATA)


def _end_line_part(seen: bytes) -> bytes:
    """The longest end of `seen` that begins END_OF_DATA (all of it when `seen` ends with it)."""
    for length in range(len(END_OF_DATA), 0, -1):
        if seen.endswith(END_OF_DATA[:length]):
            return END_OF_DATA[:length]
    return b""


def _has_long_line(data: bytes | bytearray, line_limit: int, length: int) -> bool:
    """Whether a CRLF-delimited line of `data[:length]`, with its CRLF, is longer than
    `line_limit` octets.

    Such a line holds, whole, at least one block of `(line_limit - 1) // 2` octets (counted from
    the start) in which no CRLF begins; when every block has one, no line is long, and only a
    block without one sends us through the message line by line.
    """
    block = max(1, (line_limit - 1) // 2)
    if all(data.find(b"\r\n", start, min(start + block + 1, length)) != -1
           for start in range(0, length - block + 1, block)):
        return False
    return _has_long_line_exact(data, line_limit, length)


def _has_long_line_exact(data: bytes | bytearray, line_limit: int, length: int) -> bool:
    """`_has_long_line`, one line at a time."""
    start = 0
    while start < length:
        end = data.find(b"\r\n", start, length)
        end = length if end == -1 else end + 2
        if end - start > line_limit:
            return True
        start = end
    return False

