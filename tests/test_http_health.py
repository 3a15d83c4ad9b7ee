"""The HTTP front over real HTTPS: health, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def _get(gw: Harness, path: str) -> tuple[int, str, dict[str, str]]:
    url = f"https://{gw.host}:{gw.gateway.http_port}{path}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, ssl=gw.client_context()) as response:
            return response.status, await response.text(), dict(response.headers)


async def test_healthz_over_https(gw: Harness) -> None:
    """/healthz answers over HTTPS with the data directory's certificate."""
    status, body, headers = await _get(gw, "/healthz")
    assert (status, body) == (200, "ok\n")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" in headers


async def test_readyz_follows_the_upstream(gw: Harness) -> None:
    """/readyz is 200 while the upstream listens and 503 once it does not."""
    assert (await _get(gw, "/readyz"))[0] == 200
    await gw.sink.stop_listening()
    status, body, _ = await _get(gw, "/readyz")
    assert status == 503 and "upstream unreachable" in body


async def test_metrics_count_messages_and_auth_failures(gw: Harness) -> None:
    """/metrics shows accepted messages, recipients by action and auth failures."""
    await gw.run(gw.send, STAFF, ["colleague@cafcass.gov.uk"], message())
    status, body, headers = await _get(gw, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    lines = body.splitlines()
    assert "casegate_messages_accepted_total 1" in lines
    assert 'casegate_recipients_total{action="plain"} 1' in lines
    assert "casegate_auth_failures_total 0" in lines
    assert "# TYPE casegate_messages_refused_total counter" in lines


async def test_unknown_path_is_404_without_internals(gw: Harness) -> None:
    """An unknown path is a plain 404."""
    status, body, _ = await _get(gw, "/nope")
    assert status == 404 and "Traceback" not in body


async def test_readyz_with_outbox(tmp_path: Path) -> None:
    """With no upstream, readiness means the outbox directory is writable."""
    async with running_gateway(tmp_path, None) as gw:
        status, body, _ = await _get(gw, "/readyz")
        assert (status, body) == (200, "ready\n")
