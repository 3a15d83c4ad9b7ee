"""Bounds on what one SMTP client can make the gateway do: connections and audit events.

- `ConnectionLimiter` counts open SMTP connections in total and per client address
  (SECURITY.md item 12); a connection over a limit is answered `TOO_MANY_CONNECTIONS` and
  closed. Trusted relay peers (addresses inside `smtp.relay_from`) have their own per-client
  limit, because one Exchange connector carries a whole office's mail. Connections from
  outside `relay_from` that have not (yet) authenticated have a total cap of their own
  (`smtp.max_unauthenticated_connections`), so a few addresses that connect and say nothing
  cannot hold every slot; they also get a shorter idle timeout (gateway/smtp/front.py).
- `CommandBudget` counts, per connection, the commands that make no progress, on the model
  of Postfix's `smtpd_junk_command_limit` and `smtpd_hard_error_limit`: past the junk limit
  each NOOP, RSET, HELP, VRFY, EXPN or repeated EHLO/HELO counts as an error, and at the error
  limit the client is answered `TOO_MANY_ERRORS` and cut off. Both counts start again when a
  message is accepted.
- `RefusalBudget` thins the audit events for refusals aiosmtpd answers itself (syntax errors,
  bad sequence, ...): the first `MAX_REFUSAL_EVENTS` of a connection are events, the rest are
  counted and summed up in one event when the connection ends, so a client sending garbage
  cannot flood the audit trail (SECURITY.md item 14).
- `reply_codes` reads the code and enhanced status code of a reply, which is all an event
  keeps of it (never the command's arguments: they may carry addresses or credentials).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections; try again later"
TOO_MANY_ERRORS = "421 4.7.0 Too many commands without progress; closing the connection"
# Commands that move no message forward (Postfix's junk commands, plus HELP and EXPN).
JUNK_VERBS = frozenset({"NOOP", "RSET", "HELP", "VRFY", "EXPN"})
MAX_REFUSAL_EVENTS = 10  # audited protocol refusals per connection, then one summary
MAX_TRACKED_REFUSED_CLIENTS = 10_000  # bound on the memory for counting refused connections

_REPLY = re.compile(r"(?P<code>[2-5]\d\d)[ -](?:(?P<status>[245]\.\d{1,3}\.\d{1,3})\b)?")


def reply_codes(status: str) -> tuple[int, str]:
    """The reply code and enhanced status code (or "") of a reply's last line; (0, "") if none."""
    last = status.rstrip("\r\n").rsplit("\r\n", 1)[-1]
    match = _REPLY.match(last)
    if match is None:
        return 0, ""
    return int(match["code"]), match["status"] or ""


class Admission(Enum):
    """Whether a new connection may be served, and if not, which limit it hit."""

    ADMITTED = "admitted"
    TOTAL_LIMIT = "max_connections"
    CLIENT_LIMIT = "max_connections_per_client"
    UNAUTHENTICATED_LIMIT = "max_unauthenticated_connections"


@dataclass(frozen=True)
class ConnectionLimits:
    """The configured limits; 0 means no limit."""

    total: int = 0
    per_client: int = 0
    per_relay_peer: int = 0
    unauthenticated: int = 0  # open connections from outside relay_from not yet authenticated


@dataclass
class ConnectionLimiter:
    """Open SMTP connections, in total and per client address, shared by every listener."""

    limits: ConnectionLimits
    _open: Counter[str] = field(default_factory=Counter)
    _total: int = 0
    _refused: Counter[str] = field(default_factory=Counter)
    _unauthenticated: int = 0

    def admit(self, client: str, *, relay_peer: bool) -> Admission:
        """Count a new connection from `client` if it is within the limits. One from outside
        relay_from also counts as unauthenticated until `authenticated()` is called."""
        limits = self.limits
        per_client = limits.per_relay_peer if relay_peer else limits.per_client
        if limits.total and self._total >= limits.total:
            return self._refuse(client, Admission.TOTAL_LIMIT)
        if per_client and self._open[client] >= per_client:
            return self._refuse(client, Admission.CLIENT_LIMIT)
        if not relay_peer and limits.unauthenticated \
                and self._unauthenticated >= limits.unauthenticated:
            return self._refuse(client, Admission.UNAUTHENTICATED_LIMIT)
        self._open[client] += 1
        self._total += 1
        if not relay_peer:
            self._unauthenticated += 1
        return Admission.ADMITTED

    def authenticated(self) -> None:
        """An admitted connection from outside relay_from has authenticated (or has been
        found to be a trusted peer by its certificate), or has ended before it did."""
        self._unauthenticated -= 1

    @property
    def unauthenticated_connections(self) -> int:
        return self._unauthenticated

    def release(self, client: str) -> None:
        """Forget one admitted connection from `client` (it has ended)."""
        self._total -= 1
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    @property
    def open_connections(self) -> int:
        return self._total

    def refused_so_far(self, client: str) -> int:
        """How many connections from `client` were refused (since counting last restarted)."""
        return self._refused[client]

    def _refuse(self, client: str, reason: Admission) -> Admission:
        if len(self._refused) >= MAX_TRACKED_REFUSED_CLIENTS and client not in self._refused:
            self._refused.clear()
        self._refused[client] += 1
        return reason


def worth_an_event(refused_so_far: int) -> bool:
    """Whether the n-th refused connection of a client is audited: the 1st, 10th, 100th, ..."""
    if refused_so_far < 1:
        return False
    while refused_so_far % 10 == 0:
        refused_so_far //= 10
    return refused_so_far == 1


@dataclass
class RefusalBudget:
    """Per connection: how many more protocol refusals are events, and how many were not."""

    remaining: int = MAX_REFUSAL_EVENTS
    suppressed: int = 0

    def take(self) -> bool:
        """True when this refusal is to be an event; otherwise it is counted as suppressed."""
        if self.remaining > 0:
            self.remaining -= 1
            return True
        self.suppressed += 1
        return False


@dataclass
class CommandBudget:
    """Per connection: commands without progress (Postfix's junk and hard error limits).

    `junk_limit` NOOP/RSET/HELP/VRFY/EXPN/repeated EHLO are free; each one after that is an
    error. At `error_limit` errors the connection is to be cut off. 0 means no limit. A message
    accepted is progress: both counts start again.
    """

    junk_limit: int = 0
    error_limit: int = 0
    junk: int = 0
    errors: int = 0

    def junk_command(self) -> None:
        self.junk += 1
        if self.junk_limit and self.junk > self.junk_limit:
            self.errors += 1

    def error(self) -> None:
        self.errors += 1

    def progress(self) -> None:
        self.junk = self.errors = 0

    @property
    def exhausted(self) -> bool:
        """Whether the client has made `error_limit` errors without progress."""
        return bool(self.error_limit) and self.errors >= self.error_limit
