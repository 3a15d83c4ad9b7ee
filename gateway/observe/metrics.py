"""The gateway's metrics: prometheus-client counters and histograms in a registry of its own.

Each `Metrics` owns its `CollectorRegistry` (never the process-wide default registry), so two
gateways in one process, or two tests, never count into each other. The rest of the code calls
the typed methods below and never imports prometheus_client; the metrics listener
(`gateway.web.app.build_metrics_app`) renders `render()` at /metrics.

Every label is a closed vocabulary: a reply code, an action, a policy rule id, a transport, an
outcome. No label ever holds an address, a subject or any other content.
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from policies.model import Action
from transports.base import Outcome

# name -> help text: the unlabelled counters, counted through `Metrics.inc(name)`.
COUNTERS: dict[str, str] = {
    "casegate_messages_accepted_total": "Messages answered 250 after every copy was accepted.",
    "casegate_messages_refused_total": "Messages refused with a 5xx (policy or permanent).",
    "casegate_messages_tempfailed_total": "Messages answered 4xx (the client retries).",
    "casegate_rcpt_refused_total": "Recipients refused at RCPT on the address alone.",
    "casegate_auth_failures_total": "Failed SMTP AUTH attempts.",
    "casegate_auth_lockouts_total": "Client addresses locked after repeated AUTH failures.",
    "casegate_smtp_connections_refused_total": "SMTP connections refused over a connection limit.",
    "casegate_classified_in_processes_total":
        "Messages classified in a classifier process ([policy] classifier_processes).",
    "casegate_classifier_failures_total":
        "Messages answered 451 because a classifier process died while reading them.",
    "casegate_proxy_headers_refused_total":
        "Connections from a trusted load balancer closed for a missing, malformed or slow "
        "PROXY header.",
}

# What `generate_latest` writes for our names (all plain ASCII): the text format 0.0.4, which
# every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Where a decision was made: at RCPT on the address alone, or at the end of DATA.
Stage = Literal["rcpt", "data"]
# Which way out a delivery took: the upstream (the smarthost, or the outbox Maildir when no
# upstream is configured) for plain copies, the secure portal for encrypt copies.
TransportKind = Literal["upstream", "portal"]
# What opening a portal link showed: the code page, the message itself, or why neither.
# ("gone": withdrawn or expired; "refused": any other refusal.)
PortalView = Literal["landing", "message", "unknown-link", "gone", "rate-limited", "refused"]

# Seconds. Message latency: end of DATA to the reply (decision, audit commit, upstream hand-over).
MESSAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# One audit transaction: a few inserts and an fsync.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


M = TypeVar("M", Counter, Histogram)


class _Children(Generic[M]):
    """The labelled children of one metric, each looked up once: `labels()` checks its
    arguments and takes a lock on every call, and several are counted for every message. (The
    labels are closed vocabularies, so the children are few.)"""

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


def _counter(name: str, help_text: str, labels: tuple[str, ...],
             registry: CollectorRegistry) -> Counter:
    # prometheus_client adds the `_total` suffix itself.
    return Counter(name.removesuffix("_total"), help_text, labels, registry=registry)


class Metrics:
    """One gateway's counters and latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._counters = {name: _counter(name, text, (), registry)
                          for name, text in COUNTERS.items()}
        self._replies = _Children(_counter(
            "casegate_smtp_replies_total", "Replies the SMTP front sent, by 3-digit code.",
            ("code",), registry))
        self._decisions = _Children(_counter(
            "casegate_decisions_total",
            "Recipients decided, by stage, action (plain, encrypt, block) and policy rule id.",
            ("stage", "action", "rule"), registry))
        self._relays = _Children(_counter(
            "casegate_relay_outcomes_total",
            "Hand-overs of a message's copies, by transport and outcome.",
            ("transport", "outcome"), registry))
        self._portal_views = _Children(_counter("casegate_portal_views_total",
                                                "Portal links opened, by what the page showed.",
                                                ("outcome",), registry))
        self._message_seconds = _Children(Histogram(
            "casegate_message_seconds",
            "Seconds from the end of DATA to the reply, by reply class (2xx, 4xx, 5xx).",
            ("reply",), registry=registry, buckets=MESSAGE_BUCKETS))
        self._delivery_seconds = _Children(Histogram(
            "casegate_delivery_seconds",
            "Seconds a transport took to hand over a message's copies, by transport.",
            ("transport",), registry=registry, buckets=MESSAGE_BUCKETS))
        self._audit_commit_seconds = Histogram(
            "casegate_audit_commit_seconds",
            "Seconds the audit writer took to store and commit one batch of events.",
            registry=registry, buckets=COMMIT_BUCKETS)
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Show every known label combination from the start, so a rate over the first
        scrapes (and an alert on "no delivery succeeded") has a series to work on."""
        for transport in get_args(TransportKind):
            self._delivery_seconds(transport)
            for outcome in Outcome:
                self._relays(transport, outcome.value)
        for reply in ("2xx", "4xx", "5xx"):
            self._message_seconds(reply)
        for view in get_args(PortalView):
            self._portal_views(view)

    def inc(self, name: str, amount: int = 1) -> None:
        """Count one of the unlabelled `COUNTERS`."""
        self._counters[name].inc(amount)

    def reply_sent(self, text: str) -> None:
        """Lines of an SMTP reply went out: counted once the reply is complete (its last line
        is "NNN text", not a "NNN-" continuation, which aiosmtpd pushes apart for EHLO), by
        its 3-digit code (anything else: "other")."""
        last = text.rpartition("\r\n")[2]
        if last[3:4] == "-":
            return
        code = last[:3]
        self._replies(code if code.isdigit() and code[0] in "2345" else "other").inc()

    def decided(self, stage: Stage, action: Action, rule: str) -> None:
        """One recipient's decision; `rule` is a policy rule id (a closed set)."""
        self._decisions(stage, action.value, rule).inc()

    def relayed(self, transport: TransportKind, outcome: Outcome, seconds: float) -> None:
        """A transport's result for a message's copies, and how long it took."""
        self._relays(transport, outcome.value).inc()
        self._delivery_seconds(transport).observe(seconds)

    def message_done(self, code: int, seconds: float) -> None:
        """The reply to a message's DATA, `seconds` after its end."""
        self._message_seconds(f"{code // 100}xx").observe(seconds)

    def audit_committed(self, seconds: float) -> None:
        """One audit transaction (called from the audit writer thread: thread-safe)."""
        self._audit_commit_seconds.observe(seconds)

    def portal_viewed(self, outcome: PortalView) -> None:
        self._portal_views(outcome).inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when it has none yet), e.g. for tests."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)
