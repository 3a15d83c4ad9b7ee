"""Sending one copy's DATA without the copies aiosmtplib makes of it.

aiosmtplib's `SMTP.data()` normalises line endings and dot-stuffs with two regex substitutions
over the whole message, which build a list of two pieces per line: about five times the message
in memory while it is sent, and 20 ms of CPU per 2 MB. A copy that reaches the relay has already
been checked free of bare CR, bare LF and NUL (`has_unsafe_bytes`), so line endings need no
normalising, and dot-stuffing (RFC 5321 section 4.5.2) is one `bytes.replace`, which returns the
message itself when no line starts with a dot. The bytes on the wire are exactly those
`SMTP.data()` would send.

The content goes out in slices of `SLICE` octets, each written only when the transport has room
for it again (asyncio's flow control: its buffer back under the low-water mark). The transport
copies whatever the socket does not take at once into a buffer of its own, which would otherwise
hold up to another copy of the message while a slow upstream reads it.

`send_data` uses aiosmtplib's `execute_command` for DATA and its 354, then the protocol's `write`
and `read_response` for the content and the final reply, and the protocol's flow control
(`room_to_write`, the waiter behind `StreamWriter.drain`) between slices: aiosmtplib internals,
each named in transports/aiosmtplib_private.py. The caller must hold the connection alone for
the transaction (the relay's pool lends each to one copy at a time).

The upstream's reply cannot be missed: aiosmtplib drops what arrives while no reply is expected,
and `read_response` marks a reply as expected when its first step runs. So it is started, and
given that step (one `asyncio.sleep(0)`: a loop runs callbacks in the order they were scheduled),
before the first octet of the content is written. Nothing then depends on whether the loop runs
its ready callbacks or polls its sockets first (uvloop polls first: without the yield, a short
message's reply came before the read began, and waited out the reply timeout).
A reply that comes while the content is still going out (an upstream refusing early, or closing)
ends the transaction at once: the rest is not written, because the upstream would read it as
commands, and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.protocol import SMTPProtocol

from policies import scan
from transports.aiosmtplib_private import room_to_write
from transports.base import NotReady, Ready

END_OF_DATA = b".\r\n"  # after the content's own final CRLF
SLICE = 256 * 1024  # octets handed to the transport at a time


def has_unsafe_bytes(data: bytes) -> bool:
    """A CR not followed by LF, an LF not preceded by CR, or a NUL (one native pass:
    `policies.scan.unsafe_line_ends`)."""
    return scan.unsafe_line_ends(data)


def dot_stuff(data: bytes) -> bytes:
    """The content as it goes on the wire before ".\\r\\n": a dot doubled at each line start,
    and a final CRLF when the content lacks one. Only for data with CRLF line endings."""
    if data.startswith(b"."):
        data = b"." + data
    stuffed = data.replace(b"\n.", b"\n..")
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


async def send_data(smtp: aiosmtplib.SMTP, data: bytes,
                    ready: Ready | None = None, *,
                    reply_timeout: float | None = None) -> SMTPResponse:
    """DATA, the dot-stuffed content and the end-of-data line; the upstream's final reply.

    Raises like `SMTP.data()`: `SMTPDataError` when DATA is not answered 354 or the content not
    250 (and for any reply that comes before the content was all sent), `ValueError` for
    content that is not strictly CRLF-delimited (it would need the normalising this module
    leaves out), and aiosmtplib's disconnection and timeout errors. After anything but a reply
    to the whole content the connection is closed, so it is never reused half-way through a
    transaction. Each wait (for the upstream to take a slice, for a reply) is bounded by the
    connection's own timeout, as in aiosmtplib, except the wait for the reply to the whole
    content: `reply_timeout` when given (RFC 5321 4.5.3.2.6 recommends 10 minutes).

    With `ready`, the end-of-data line is written only once `ready` is done; when it fails
    (`NotReady`) or does not finish within the timeout, the connection is closed instead, and
    the upstream drops the unfinished message.
    """
    timeout = smtp.timeout
    if has_unsafe_bytes(data):
        raise ValueError("the content holds a bare CR, a bare LF or a NUL")
    stuffed = dot_stuff(data)
    start = await smtp.execute_command(b"DATA", timeout=timeout)
    if start.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # Started, and expecting a reply, before the first write: see the module's docstring.
    reply = asyncio.ensure_future(protocol.read_response())
    finished = False
    try:
        await asyncio.sleep(0)
        sent_all = await _write_content(protocol, stuffed, reply, timeout, ready)
        del stuffed
        try:
            # Not asyncio.wait_for: on 3.11 it swallows a cancellation that comes as the reply
            # does, and the cancelled caller would go on (a gateway stopping would wait for it).
            async with asyncio.timeout(reply_timeout if reply_timeout is not None
                                       else timeout):
                response = await reply
        except TimeoutError:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from None
        finished = sent_all
    finally:
        if not finished:
            _forget(reply)
            smtp.close()
    if response.code != aiosmtplib.SMTPStatus.completed or not sent_all:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


def _forget(reply: asyncio.Future[SMTPResponse]) -> None:
    """Stop waiting for a reply nobody will read (its error, if any, counts as seen)."""
    if reply.done():
        if not reply.cancelled():
            reply.exception()
    else:
        reply.cancel()


async def _write_content(protocol: SMTPProtocol, stuffed: bytes,
                         reply: asyncio.Future[SMTPResponse], seconds: float | None,
                         ready: Ready | None = None) -> bool:
    """Write the content and the end-of-data line a slice at a time; False when the upstream
    replied before all of it was written (the rest is then left unwritten)."""
    if len(stuffed) <= SLICE and (ready is None or _succeeded(ready)):
        protocol.write(stuffed + END_OF_DATA)  # one write for a short message
        return True
    for offset in range(0, len(stuffed), SLICE):
        if offset and not await _taken(protocol, reply, seconds):
            return False
        protocol.write(stuffed[offset:offset + SLICE])  # the content itself when it is small
    if ready is not None and not await _until_ready(ready, reply, seconds):
        return False
    protocol.write(END_OF_DATA)
    return True


def _succeeded(ready: Ready) -> bool:
    return ready.done() and not ready.cancelled() and ready.exception() is None


async def _until_ready(ready: Ready, reply: asyncio.Future[SMTPResponse],
                       seconds: float | None) -> bool:
    """Wait for `ready` (never cancelling it); False when a reply came first. Raises
    `NotReady` when it failed and aiosmtplib's timeout error when it took too long."""
    if not ready.done():
        done, _ = await asyncio.wait({ready, reply}, timeout=seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise aiosmtplib.SMTPTimeoutError("Timed out waiting to end the message data")
        if not ready.done():
            return False
    if not _succeeded(ready):
        raise NotReady("not ready to deliver: what the end of data waited for failed")
    return True


async def _taken(protocol: SMTPProtocol, reply: asyncio.Future[SMTPResponse],
                 seconds: float | None) -> bool:
    """Wait until the transport has room again; False when a reply came first."""
    if reply.done():
        return False
    room = asyncio.ensure_future(room_to_write(protocol))  # done at once when not paused
    waiters: set[asyncio.Future[Any]] = {room, reply}
    try:
        done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        room.cancel()
    if not done:
        raise aiosmtplib.SMTPTimeoutError("Timed out sending the message content")
    if reply.done():
        return False
    if room.exception() is not None:  # the connection was lost
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    return True
