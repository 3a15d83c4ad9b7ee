"""The gateway's counters, rendered in the Prometheus text exposition format at /metrics.

Counters only count: no label ever holds an address, a subject or any other content.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# name -> help text; every counter the gateway exposes, in the order /metrics lists them.
COUNTERS: dict[str, str] = {
    "casegate_messages_accepted_total": "Messages answered 250 after every copy was accepted.",
    "casegate_messages_refused_total": "Messages refused with a 5xx (policy or permanent).",
    "casegate_messages_tempfailed_total": "Messages answered 4xx (the client retries).",
    "casegate_recipients_total": "Recipients decided, by action (plain, encrypt, block).",
    "casegate_rcpt_refused_total": "Recipients refused at RCPT on the address alone.",
    "casegate_auth_failures_total": "Failed SMTP AUTH attempts.",
    "casegate_auth_lockouts_total": "Client addresses locked after repeated AUTH failures.",
    "casegate_smtp_connections_refused_total": "SMTP connections refused over a connection limit.",
}


@dataclass
class Metrics:
    """In-process counters, keyed by (name, label value)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def inc(self, name: str, label: str = "", amount: int = 1) -> None:
        if name not in COUNTERS:
            raise KeyError(f"unknown counter {name}")
        self.counts[(name, label)] += amount

    def value(self, name: str, label: str = "") -> int:
        return self.counts[(name, label)]

    def render(self) -> str:
        """The Prometheus text format (version 0.0.4)."""
        lines: list[str] = []
        for name, help_text in COUNTERS.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            labelled = sorted((label, n) for (key, label), n in self.counts.items() if key == name)
            if name == "casegate_recipients_total":
                for label, n in labelled:
                    lines.append(f'{name}{{action="{label}"}} {n}')
            else:
                lines.append(f"{name} {self.counts[(name, '')]}")
        return "\n".join(lines) + "\n"
