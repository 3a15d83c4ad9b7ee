"""The HTTP fronts over real sockets: health and readiness on both, Prometheus metrics only on
the metrics listener (loopback, optionally behind a bearer token), no version in `Server`."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ConfigError, load_config
from gateway.observe.metrics import Metrics
from tests.gateway_harness import STAFF, Harness, message, running_gateway, write_config
from tests.sink import Sink

TOKEN = "metrics-scraper-token-0123456789"


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def _fetch(url: str, *, context: object = None,
                 headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, ssl=context, headers=headers) as response:  # type: ignore[arg-type]
            return response.status, await response.text(), dict(response.headers)


async def _public(gw: Harness, path: str) -> tuple[int, str, dict[str, str]]:
    """GET `path` on the public HTTPS front."""
    return await _fetch(f"https://{gw.host}:{gw.gateway.http_port}{path}",
                        context=gw.client_context())


async def _private(gw: Harness, path: str,
                   token: str | None = None) -> tuple[int, str, dict[str, str]]:
    """GET `path` on the metrics listener (plain HTTP on loopback)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    return await _fetch(f"http://127.0.0.1:{gw.gateway.metrics_port}{path}", headers=headers)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample prometheus_client's own parser reads, by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_healthz_over_https(gw: Harness) -> None:
    """/healthz answers over HTTPS with the security headers and a Server without a version."""
    status, body, headers = await _public(gw, "/healthz")
    assert (status, body) == (200, "ok\n")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" in headers
    assert headers["Server"] == "casegate"


async def test_readyz_follows_the_upstream(gw: Harness) -> None:
    """/readyz is 200 while the upstream listens and 503 once it does not; only the metrics
    listener says why."""
    assert (await _public(gw, "/readyz"))[:2] == (200, "ready\n")
    assert (await _private(gw, "/readyz"))[:2] == (200, "ready\n")
    await gw.sink.stop_listening()
    assert (await _public(gw, "/readyz"))[:2] == (503, "not ready\n")
    status, body, _ = await _private(gw, "/readyz")
    assert status == 503 and "upstream unreachable" in body


async def test_metrics_is_not_served_on_the_public_port(gw: Harness) -> None:
    """The public front answers /metrics with a plain 404 (Server still without a version)."""
    status, body, headers = await _public(gw, "/metrics")
    assert status == 404 and "casegate_" not in body
    assert headers["Server"] == "casegate"


async def test_metrics_listener_counts_a_real_message(gw: Harness) -> None:
    """After one relayed message and one failed AUTH, the metrics listener's text parses and
    shows replies by code, the decision, the relay outcome and the latency histograms."""
    await gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"], message())
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await gw.run(gw.connect, password="wrong password")
    status, body, headers = await _private(gw, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert headers["Server"] == "casegate"
    samples = _samples(body)
    assert _value(samples, "casegate_messages_accepted_total") == 1
    assert _value(samples, "casegate_auth_failures_total") == 1
    assert _value(samples, "casegate_smtp_replies_total", code="235") == 1
    assert _value(samples, "casegate_smtp_replies_total", code="535") == 1
    assert _value(samples, "casegate_smtp_replies_total", code="354") == 1
    # Each session: greeting 220, EHLO 250 (one reply of several lines), STARTTLS 220, EHLO
    # 250; then MAIL, RCPT and the end of DATA 250 and QUIT 221 in the first.
    assert _value(samples, "casegate_smtp_replies_total", code="220") == 4
    assert _value(samples, "casegate_smtp_replies_total", code="250") == 7
    assert _value(samples, "casegate_smtp_replies_total", code="221") == 1
    decisions = {dict(labels)["rule"]: value for (name, labels), value in samples.items()
                 if name == "casegate_decisions_total"
                 and ("action", "plain") in labels and ("stage", "data") in labels}
    assert sum(decisions.values()) == 1 and all(decisions)
    assert _value(samples, "casegate_relay_outcomes_total", transport="upstream",
                  outcome="delivered") == 1
    assert _value(samples, "casegate_message_seconds_count", reply="2xx") == 1
    assert _value(samples, "casegate_delivery_seconds_count", transport="upstream") == 1
    assert _value(samples, "casegate_audit_commit_seconds_count") >= 1
    assert "jo.smith" not in body and "cafcass.gov.uk" not in body  # no address in a label


async def test_metrics_count_a_refusal_by_rule(gw: Harness) -> None:
    """A message the policy refuses counts as a block by its rule, a 550 and a 5xx latency."""
    data = message(to=["mum@example.com"], subject="Report",
                   body="Case ZC12C00123: the court report.")
    with pytest.raises(smtplib.SMTPException):
        await gw.run(gw.send, STAFF, ["mum@example.com"], data)
    samples = _samples((await _private(gw, "/metrics"))[1])
    blocks = {dict(labels)["rule"]: value for (name, labels), value in samples.items()
              if name == "casegate_decisions_total" and ("action", "block") in labels}
    assert sum(blocks.values()) == 1
    (rule,) = blocks
    assert gw.app.policy.rule(rule).id == rule  # a rule id of the policy, nothing else
    assert _value(samples, "casegate_smtp_replies_total", code="550") == 1
    assert _value(samples, "casegate_messages_refused_total") == 1
    assert _value(samples, "casegate_message_seconds_count", reply="5xx") == 1
    assert _value(samples, "casegate_relay_outcomes_total", transport="upstream",
                  outcome="delivered") == 0
    assert gw.sink.messages == []


async def test_metrics_listener_serves_health(gw: Harness) -> None:
    """/healthz is on the metrics listener too, for a load balancer or a local probe."""
    status, body, headers = await _private(gw, "/healthz")
    assert (status, body, headers["Server"]) == (200, "ok\n", "casegate")


async def test_bearer_token_guards_the_metrics_listener(tmp_path: Path, sink: Sink) -> None:
    """With a token file (named relative to the config file), the metrics listener answers 401
    without the token or with a wrong one, and 200 with the right one; the public front is
    unaffected."""
    (tmp_path / "metrics.token").write_text(TOKEN + "\n", encoding="utf-8")
    async with running_gateway(tmp_path, sink,
                               metrics={"bearer_token_file": "metrics.token"}) as gw:
        status, _, headers = await _private(gw, "/metrics")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert (await _private(gw, "/metrics", token=TOKEN[:-1] + "x"))[0] == 401
        assert (await _private(gw, "/healthz"))[0] == 401
        basic = {"Authorization": f"Basic {TOKEN}"}
        url = f"http://127.0.0.1:{gw.gateway.metrics_port}/metrics"
        assert (await _fetch(url, headers=basic))[0] == 401
        status, body, _ = await _private(gw, "/metrics", token=TOKEN)
        assert status == 200 and _samples(body)
        assert (await _public(gw, "/healthz"))[0] == 200


def test_non_loopback_metrics_host_needs_a_token(tmp_path: Path) -> None:
    """A metrics host off loopback without bearer_token_file is a config error naming the fix."""
    path = write_config(tmp_path / "casegate.toml", None, metrics={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="bearer_token_file"):
        load_config(path)
    path = write_config(tmp_path / "casegate.toml", None,
                        metrics={"host": "0.0.0.0", "bearer_token_file": "token"})
    assert load_config(path).metrics.host == "0.0.0.0"


async def test_guessable_token_stops_start_up(tmp_path: Path) -> None:
    """A token file holding a short token stops the gateway before it binds anything."""
    token_file = tmp_path / "metrics.token"
    token_file.write_text("short\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        async with running_gateway(tmp_path, None,
                                   metrics={"bearer_token_file": str(token_file)}):
            raise AssertionError("the gateway started")


def test_each_gateway_counts_in_its_own_registry() -> None:
    """Two Metrics in one process never count into each other (no global registry), and a
    reply of several lines counts once."""
    first, second = Metrics(), Metrics()
    first.inc("casegate_messages_accepted_total")
    first.reply_sent("250 OK")
    assert first.value("casegate_messages_accepted_total") == 1
    assert second.value("casegate_messages_accepted_total") == 0
    assert second.value("casegate_smtp_replies_total", code="250") == 0
    second.reply_sent("garbage")
    assert second.value("casegate_smtp_replies_total", code="other") == 1
    second.reply_sent("250-casegate.localhost")  # a continuation line: the reply goes on
    second.reply_sent("550-5.7.1 First reason.\r\n550 5.7.1 Second reason.")
    assert second.value("casegate_smtp_replies_total", code="250") == 0
    assert second.value("casegate_smtp_replies_total", code="550") == 1


async def _raw_reply(port: int, request: bytes, context: ssl.SSLContext | None) -> bytes:
    """Send `request` as it is and read the whole answer (the server closes after an error)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_unparseable_request_gets_no_version_either(gw: Harness) -> None:
    """A request aiohttp cannot parse (answered before our code runs) still says only
    `Server: casegate`, on both fronts."""
    garbage = b"NOT-HTTP \x01\x02\r\n\r\n"
    public = await _raw_reply(gw.gateway.http_port or 0, garbage, gw.client_context())
    private = await _raw_reply(gw.gateway.metrics_port or 0, garbage, None)
    for answer in (public, private):
        head = answer.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.") and b" 400 " in head.split(b"\r\n")[0]
        assert b"\r\nserver: casegate" in head and b"aiohttp" not in head
        assert b"python" not in head


async def test_unknown_path_is_404_without_internals(gw: Harness) -> None:
    """An unknown path is a plain 404."""
    status, body, _ = await _public(gw, "/nope")
    assert status == 404 and "Traceback" not in body


async def test_readyz_with_outbox(tmp_path: Path) -> None:
    """With no upstream, readiness means the outbox directory is writable."""
    async with running_gateway(tmp_path, None) as gw:
        status, body, _ = await _public(gw, "/readyz")
        assert (status, body) == (200, "ready\n")
