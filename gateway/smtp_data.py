"""Reading one message's DATA in large blocks instead of line by line.

aiosmtpd reads DATA one line at a time and keeps a list of lines; that, not the policy, was the
gateway's biggest cost in time and memory (issue 3's benchmark). `read_data` asks the stream for
everything up to the next ".\\r\\n" (usually the whole message in one piece) and keeps the
semantics of aiosmtpd >= 1.4.5 exactly:

- the data ends only at CRLF "." CRLF (the CRLF of the DATA command itself counts, so an empty
  message is just ".\\r\\n"); bare CR or LF never end it (SMTP smuggling, SECURITY.md item 1);
- a line (CRLF to CRLF, before dot-unstuffing) longer than `line_limit` octets is an error;
- more than `size_limit` octets is an error, detected while streaming: what arrived is dropped
  at once, and the rest is read and discarded up to the end of the data;
- the first "." of every line is removed (RFC 5321 section 4.5.2);
- a header block longer than `MAX_HEADER_BYTES` is an error (SECURITY.md item 12): the stdlib
  header parser's cost grows faster than the header's size, so a few megabytes of folded
  addresses or encoded words would hold a worker thread for minutes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

END_OF_DATA = b"\r\n.\r\n"
_CHUNK_END = b".\r\n"
TOO_MUCH = "552 5.3.4 Message too big for this gateway"
TOO_LONG = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
MAX_HEADER_BYTES = 256 * 1024  # Exchange Online's own limit on a message's header
HEADER_TOO_LARGE = "552 5.3.4 Message header too large for this gateway"


@dataclass(frozen=True)
class Received:
    """The message as received (dot-unstuffed, CRLF line endings), or the error reply."""

    content: bytes = b""
    error: str = ""


async def read_data(reader: asyncio.StreamReader, size_limit: int, line_limit: int) -> Received:
    """Read up to and including the end-of-data line; never more from the stream."""
    # StreamReader.readuntil refuses to buffer more than its limit, which aiosmtpd sets to one
    # command line; raise it for the length of the data and put it back afterwards.
    saved = reader._limit  # type: ignore[attr-defined]
    reader._limit = size_limit + len(END_OF_DATA)  # type: ignore[attr-defined]
    try:
        chunks, size = await _read_chunks(reader, size_limit)
    finally:
        reader._limit = saved  # type: ignore[attr-defined]
    if size > size_limit:
        return Received(error=TOO_MUCH)
    stuffed = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    chunks.clear()
    stuffed = stuffed[: -len(_CHUNK_END)]  # the "." line; its CRLF before ends the last line
    if _has_long_line(stuffed, line_limit):
        return Received(error=TOO_LONG)
    content = _unstuff(stuffed)
    if header_too_large(content):
        return Received(error=HEADER_TOO_LARGE)
    return Received(content=content)


def header_too_large(content: bytes, limit: int = MAX_HEADER_BYTES) -> bool:
    """Whether the header block (up to the first empty line) is longer than `limit` octets."""
    if len(content) <= limit or content.startswith(b"\r\n"):  # short, or no header at all
        return False
    return content.find(b"\r\n\r\n", 0, limit + 4) == -1


async def _read_chunks(reader: asyncio.StreamReader, size_limit: int) -> tuple[list[bytes], int]:
    """The pieces of the data, each ending in ".\\r\\n", and the total size seen."""
    chunks: list[bytes] = []
    size = 0
    tail = b"\r\n"  # the last bytes consumed so far: at first, the DATA command's CRLF
    while True:
        try:
            chunk = await reader.readuntil(_CHUNK_END)
        except asyncio.LimitOverrunError as exc:
            # Over the size limit with no end in sight: drop everything, keep reading.
            chunk = await reader.read(exc.consumed)
            chunks.clear()
            size = max(size, size_limit) + len(chunk)
            tail = (tail + chunk[-4:])[-4:]
            continue
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("connection closed during DATA") from None
        size += len(chunk)
        if size <= size_limit:
            chunks.append(chunk)
        else:
            chunks.clear()
        window = (tail + chunk[-5:])[-5:]
        tail = window[-4:]
        if window == END_OF_DATA:
            return chunks, size


def _has_long_line(data: bytes, line_limit: int) -> bool:
    """Whether a CRLF-delimited line, with its CRLF, is longer than `line_limit` octets.

    Such a line holds, whole, at least one block of `(line_limit - 1) // 2` octets (counted from
    the start) in which no CRLF begins; when every block has one, no line is long, and only a
    block without one sends us through the message line by line.
    """
    block = max(1, (line_limit - 1) // 2)
    if all(data.find(b"\r\n", start, start + block + 1) != -1
           for start in range(0, len(data) - block + 1, block)):
        return False
    return _has_long_line_exact(data, line_limit)


def _has_long_line_exact(data: bytes, line_limit: int) -> bool:
    """`_has_long_line`, one line at a time."""
    start, length = 0, len(data)
    while start < length:
        end = data.find(b"\r\n", start)
        end = length if end == -1 else end + 2
        if end - start > line_limit:
            return True
        start = end
    return False


def _unstuff(data: bytes) -> bytes:
    """Remove the first "." of every line (transparency, RFC 5321 section 4.5.2)."""
    if data.startswith(b"."):
        data = data[1:]
    return data.replace(b"\r\n.", b"\r\n")
