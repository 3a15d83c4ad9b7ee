"""Fixtures shared by the test files: real servers on 127.0.0.1, port 0, stopped at the end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from policies import scan
from tests.certs import ServerCert, make_server_cert
from tests.sink import Sink
from tests.tools import CHROMIUM, require_tool

# Property tests: no wall-clock deadline (a shared 2-core CI machine is noisy), and in CI a
# fixed derandomised search, so a run is repeatable; locally the search varies run to run.
settings.register_profile(
    "casegate", deadline=None, suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("casegate")


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium for the browser tests: skipped when missing, failed under CI."""
    return require_tool(CHROMIUM, "chromium")


@pytest.fixture
def server_cert(tmp_path: Path) -> ServerCert:
    """A fresh private CA and a certificate for localhost and 127.0.0.1 that it signed."""
    return make_server_cert(tmp_path / "pki")


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    """A plain (no TLS) upstream SMTP sink with fault injection; see tests/sink.py."""
    async with Sink() as upstream:
        yield upstream


@pytest.fixture
async def tls_sink(server_cert: ServerCert) -> AsyncIterator[Sink]:
    """An upstream SMTP sink that requires STARTTLS with `server_cert`."""
    async with Sink(tls=server_cert.server_context()) as upstream:
        yield upstream


@pytest.fixture(scope="module", params=scan.available())
def each_scan_engine(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a module's tests once per scan engine this platform has (policies/scan.py): the
    native one and the pure-Python fallback must decide alike. Module-scoped, so that property
    tests may use it (`pytestmark = pytest.mark.usefixtures("each_scan_engine")`)."""
    with scan.use_engine(request.param):
        yield request.param
