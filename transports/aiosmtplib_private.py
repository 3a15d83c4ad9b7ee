"""Every name of aiosmtplib's beyond its public API that casegate relies on, and why.

aiosmtplib's public API is the `SMTP` class (connect, ehlo, login, execute_command, rset, ...),
its errors, `SMTPResponse` and `SMTPStatus`. Only `transports/smtp_data_writer.py` goes further:
it writes a copy's DATA content itself, because `SMTP.data()` holds about five times the message
in memory while sending it (issue 3). For that it needs the connection's protocol object, which
is not exported and not documented, and one of its private methods. They are listed in
`INTERNALS` and reached only through this module. One test reads one private attribute more
(`_response_pending`: whether a reply is expected), listed here too.

Checked against aiosmtplib 5.1.3. pyproject.toml bounds aiosmtplib below 6: the one private
name the gateway uses, `_drain_helper`, has been there unchanged since 1.1.3 (asyncio's own
flow-control contract, copied from the standard library), and aiosmtplib ships security
fixes in minor and patch releases (5.1.1, 5.1.2) that casegate should not be held back from.
What a release could still change underneath is caught by tests/test_dependency_internals.py,
which checks every name listed here on the installed aiosmtplib, and by
tests/test_smtp_data_writer.py, which checks the behaviour against real servers.

`Internal` and `Kind` describe such a name for any library; gateway/smtp/aiosmtpd_private.py
lists aiosmtpd's with them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib.protocol import SMTPProtocol

CHECKED_AGAINST = "aiosmtplib 5.1.3"


class Kind(enum.Enum):
    """How casegate uses a name, and so how a test can tell that it is still there."""

    HOOK = "a method of theirs that a subclass of ours overrides (they call it)"
    METHOD = "a method of theirs that we call"
    ATTRIBUTE = "an attribute every instance has from the start"
    CONNECTED = "an attribute an instance has once a client has connected"


@dataclass(frozen=True)
class Internal:
    """One name of a library's that is not its public API, and why casegate uses it."""

    owner: type  # the class that has it (its module says which library)
    name: str
    kind: Kind
    used_by: str  # our module(s) relying on it
    why: str  # what it is for, and why the public API cannot do it
    params: tuple[str, ...] = ()  # a method's parameter names, `self` first
    is_async: bool = False  # a method that is a coroutine function

    @property
    def qualified(self) -> str:
        return f"{self.owner.__qualname__}.{self.name}"


INTERNALS: tuple[Internal, ...] = (
    Internal(
        aiosmtplib.SMTP, "protocol", Kind.ATTRIBUTE, "transports/smtp_data_writer.py",
        "the connection's SMTPProtocol, to write DATA's content and read the reply itself "
        "(undocumented; `SMTP.data()` copies the message several times over)"),
    Internal(
        SMTPProtocol, "write", Kind.METHOD, "transports/smtp_data_writer.py",
        "writes a slice of the content (undocumented; no public call writes raw bytes)",
        params=("self", "data")),
    Internal(
        SMTPProtocol, "read_response", Kind.METHOD, "transports/smtp_data_writer.py",
        "waits for the reply to the content, started before the content is written so an "
        "early refusal is not dropped (undocumented; `execute_command` writes a command first)",
        params=("self", "timeout"), is_async=True),
    Internal(
        SMTPProtocol, "_drain_helper", Kind.METHOD, "transports/smtp_data_writer.py",
        "waits until the transport has room for the next slice: the flow-control waiter "
        "behind `StreamWriter.drain()`, which aiosmtplib's protocol has but does not expose",
        params=("self",), is_async=True),
    Internal(
        SMTPProtocol, "_response_pending", Kind.ATTRIBUTE, "tests/test_smtp_data_writer.py",
        "whether a reply is expected (a reply that comes while none is, is dropped): the test "
        "that the read of the reply has begun whenever the end of data is written"),
)


def room_to_write(protocol: SMTPProtocol) -> Awaitable[None]:
    """Done once the transport's buffer is back under its low-water mark (at once when it
    is not paused); raises ConnectionResetError once the connection is lost."""
    return protocol._drain_helper()


def reply_expected(protocol: SMTPProtocol) -> bool:
    """Whether the protocol would take a reply arriving now (else aiosmtplib drops it)."""
    return bool(protocol._response_pending)
