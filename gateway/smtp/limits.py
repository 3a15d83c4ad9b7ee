"""Bounds on what one SMTP client can make the gateway do: connections and audit events.

- `ConnectionLimiter` counts open SMTP connections in total and per client address
  (SECURITY.md item 12); a connection over a limit is answered `TOO_MANY_CONNECTIONS` and
  closed. Trusted relay peers (addresses inside `smtp.relay_from`) have their own per-client
  limit, because one Exchange connector carries a whole office's mail.
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


@dataclass(frozen=True)
class ConnectionLimits:
    """The configured limits; 0 means no limit."""

    total: int = 0
    per_client: int = 0
    per_relay_peer: int = 0


@dataclass
class ConnectionLimiter:
    """Open SMTP connections, in total and per client address, shared by every listener."""

    limits: ConnectionLimits
    _open: Counter[str] = field(default_factory=Counter)
    _total: int = 0
    _refused: Counter[str] = field(default_factory=Counter)

    def admit(self, client: str, *, relay_peer: bool) -> Admission:
        """Count a new connection from `client` if it is within the limits."""
        limits = self.limits
        per_client = limits.per_relay_peer if relay_peer else limits.per_client
        if limits.total and self._total >= limits.total:
            return self._refuse(client, Admission.TOTAL_LIMIT)
        if per_client and self._open[client] >= per_client:
            return self._refuse(client, Admission.CLIENT_LIMIT)
        self._open[client] += 1
        self._total += 1
        return Admission.ADMITTED

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
