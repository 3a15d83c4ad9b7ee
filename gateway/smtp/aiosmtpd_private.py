"""Every name of aiosmtpd's beyond its public API that casegate relies on, and why.

aiosmtpd's public API covers most of what the SMTP front needs: `smtp_<VERB>` methods, `push`,
the `handle_<VERB>` hooks, `authenticator`, `event_handler` and the `Session` and `Envelope`
attributes. What it does not cover is listed here, and reached only through this module:

- `HOOKS`: aiosmtpd's private methods that `GatewaySMTP` (gateway/smtp/front.py) overrides.
  aiosmtpd calls them, so the override must keep their name and parameters.
- `ATTRIBUTES`: aiosmtpd's private attributes, read or replaced only by the functions below.
- `METHODS`: aiosmtpd's private methods that the functions below call.
- `STREAM`: private attributes of the `asyncio.StreamReader` aiosmtpd reads a connection from
  (the standard library's, but aiosmtpd is why we need them: it sets the reader's limit to one
  command line and keeps the reader to itself).
- `LOOKED_UP`: how aiosmtpd's `SMTP.__init__` finds a server's commands and AUTH mechanisms and
  its handler's hooks, on every new connection: by name prefix, listing every attribute of both
  (`dir`, and `inspect.getmembers`, which also reads each one, properties included), then reading
  the EHLO hook's signature. That was most of a new connection's cost (issue 14);
  `looked_up_names` and `fixed_signature` make it cheap without changing what is found.

Checked against aiosmtpd 1.4.6. pyproject.toml bounds aiosmtpd below 1.5: these names are its
internals, which a minor release may change. tests/test_dependency_internals.py checks each
one on the installed aiosmtpd (and Python), so an upgrade that drops or reshapes one fails
there, naming it, instead of deep inside a connection.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP

from transports.aiosmtplib_private import Internal, Kind

CHECKED_AGAINST = "aiosmtpd 1.4.6"

FRONT = "gateway/smtp/front.py"

HOOKS: tuple[Internal, ...] = (
    Internal(
        SMTP, "_handle_client", Kind.HOOK, FRONT,
        "the task serving a connection: one over the connection limits is answered 421 "
        "before the greeting, and the refusals not audited one by one are summed up when it "
        "ends (aiosmtpd has no hook before its greeting or at the end of a session)",
        params=("self",), is_async=True),
    Internal(
        SMTP, "_create_envelope", Kind.HOOK, FRONT,
        "makes each transaction's envelope: ours also holds the DSN request and the verify@ "
        "route (documented as the way to a custom Envelope, though its name is private)",
        params=("self",)),
    Internal(
        SMTP, "_timeout_cb", Kind.HOOK, FRONT,
        "the idle timer's callback: ours answers 421 4.4.2 before aiosmtpd closes the "
        "connection, which it does without a word (there is no public timeout hook)",
        params=("self",)),
    Internal(
        SMTP, "_getaddr", Kind.HOOK, FRONT,
        "reads the path of MAIL and RCPT: ours refuses source routes and comments, which "
        "aiosmtpd's parser drops silently (SECURITY.md 8); there is no public parsing hook",
        params=("self", "arg")),
)

ATTRIBUTES: tuple[Internal, ...] = (
    Internal(
        SMTP, "_tls_protocol", Kind.ATTRIBUTE, FRONT,
        "set once STARTTLS begins (aiosmtpd's own test before AUTH); the public "
        "`Session.ssl` appears only after a successful handshake"),
    Internal(
        SMTP, "_handler_coroutine", Kind.ATTRIBUTE, "gateway/runtime/server.py, tests/sink.py",
        "the task serving a connection, which stopping waits for; aiosmtpd creates it in "
        "`connection_made` and keeps no public handle to it"),
    Internal(
        SMTP, "_original_transport", Kind.ATTRIBUTE, "tests/sink.py",
        "the TCP transport under the TLS layer STARTTLS adds (`transport` is then the layer), "
        "which the test sink aborts so that no half-done handshake holds it open"),
    Internal(
        SMTP, "_timeout_duration", Kind.ATTRIBUTE, FRONT,
        "the idle timeout (the constructor's `timeout`): a client outside relay_from gets a "
        "shorter one until it authenticates, then the normal one; aiosmtpd has no setter"),
    Internal(
        SMTP, "_reader", Kind.CONNECTED, f"{FRONT}, tests/test_smtp_data_writer.py",
        "the stream aiosmtpd reads commands from: DATA is read from it in large blocks "
        "(gateway/smtp/data.py) and STARTTLS checks it for pipelined commands; aiosmtpd keeps "
        "no public handle to it"),
)

METHODS: tuple[Internal, ...] = (
    Internal(
        SMTP, "_reset_timeout", Kind.METHOD, FRONT,
        "restarts the idle timer, with a new idle timeout at once (aiosmtpd restarts it only "
        "when the next command arrives)",
        params=("self", "duration")),
)

STREAM: tuple[Internal, ...] = (
    Internal(
        asyncio.StreamReader, "_buffer", Kind.ATTRIBUTE, FRONT,
        "the bytes received and not yet read: commands pipelined after STARTTLS are refused "
        "(SECURITY.md 5), and StreamReader has no public way to look without reading"),
    Internal(
        asyncio.StreamReader, "_limit", Kind.ATTRIBUTE, "gateway/smtp/data.py",
        "the most `readuntil` will buffer, which aiosmtpd sets to one command line; DATA "
        "raises it for the whole message, and StreamReader has no public setter"),
)

# The name prefixes aiosmtpd looks up on every new connection: the server's commands
# (`smtp_<VERB>`) and AUTH mechanisms (`auth_<NAME>`), the handler's hooks (`handle_<VERB>`).
LOOKED_UP = ("smtp_", "auth_", "handle_")
F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def _looked_up(cls: type) -> tuple[str, ...]:
    return tuple(sorted(name for name in dir(cls) if name.startswith(LOOKED_UP)))


def looked_up_names(cls: type) -> list[str]:
    """What `dir` of an instance of `cls` may answer: its names that aiosmtpd looks up
    (`LOOKED_UP`), found once per class. A server or handler class returns this from its
    `__dir__`, so that aiosmtpd neither lists nor reads every other attribute (a third of a
    millisecond per connection); commands, mechanisms and hooks are found as before."""
    return list(_looked_up(cls))


def fixed_signature(function: F) -> F:
    """`function` with its signature computed now: aiosmtpd reads the EHLO hook's signature on
    every new connection (to tell its old 4-argument form from the 5-argument one), and
    `inspect.signature` takes a stored `__signature__` as it is."""
    function.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    return function


def restart_idle_timer(server: SMTP, seconds: float | None = None) -> None:
    """The connection is closed after `seconds` (default: its idle timeout) from now without a
    command; nothing when the connection is already lost."""
    if server.transport is not None:
        server._reset_timeout(seconds)


def set_idle_timeout(server: SMTP, seconds: float) -> None:
    """From now on the connection is closed after `seconds` without a command."""
    server._timeout_duration = seconds
    restart_idle_timer(server)  # connected: the running timer at once


def starttls_begun(server: SMTP) -> bool:
    """Whether STARTTLS has begun on this connection (from its 220 reply on, handshake or not)."""
    return server._tls_protocol is not None


def handler_task(server: SMTP) -> asyncio.Task[None] | None:
    """The task aiosmtpd serves the connection in (None before the connection is made)."""
    return server._handler_coroutine


def socket_transport(server: SMTP) -> asyncio.BaseTransport | None:
    """The connection's own TCP transport, under any TLS layer STARTTLS has put on it."""
    return server._original_transport or server.transport


def command_stream(server: SMTP) -> asyncio.StreamReader:
    """The stream aiosmtpd reads the connection's commands from (once connected)."""
    reader: asyncio.StreamReader = server._reader
    return reader


def pending_input(server: SMTP) -> bool:
    """Whether the client has sent bytes that aiosmtpd has not read yet (pipelined commands)."""
    return bool(command_stream(server)._buffer)  # type: ignore[attr-defined]


def read_limit(reader: asyncio.StreamReader) -> int:
    """The most `reader.readuntil` will buffer before raising LimitOverrunError."""
    limit: int = reader._limit  # type: ignore[attr-defined]
    return limit


@contextmanager
def raised_read_limit(reader: asyncio.StreamReader, limit: int) -> Iterator[None]:
    """`reader.readuntil` may buffer up to `limit` octets inside the block; the limit it had
    (aiosmtpd's: one command line) is put back afterwards."""
    saved = read_limit(reader)
    reader._limit = limit  # type: ignore[attr-defined]
    try:
        yield
    finally:
        reader._limit = saved  # type: ignore[attr-defined]
