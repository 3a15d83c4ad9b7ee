"""Fixtures shared by the test files: real servers on 127.0.0.1, port 0, stopped at the end."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from policies import scan
from tests.certs import ServerCert, make_server_cert
from tests.postgres import URL_VARIABLE, Cluster, require_server
from tests.sink import Sink
from tests.tools import CHROMIUM, require_tool
from transports.database import Database, DatabaseSettings

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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """The run's PostgreSQL: .ci/run's (CASEGATE_TEST_DATABASE_URL) or one started here."""
    require_server()
    given = os.environ.get(URL_VARIABLE)
    cluster = Cluster(url=given) if given else Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A postgresql:// URL onto an empty schema of its own, dropped after the test."""
    url = pg_cluster.fresh_schema()
    try:
        yield url
    finally:
        pg_cluster.drop(url)


@pytest.fixture
def pg_nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """Two gateway nodes' engines, "one" and "two" (data directories tmp_path/one and
    tmp_path/two), on one PostgreSQL database; closed after the test."""
    nodes = [Database.open(tmp_path / name, DatabaseSettings(url=pg_url, node=name))
             for name in ("one", "two")]
    try:
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The stores' engine, once on SQLite (files in tmp_path) and once on PostgreSQL (a
    schema of its own): a store test that takes it runs on both."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else ""
    engine = Database.open(tmp_path, DatabaseSettings(url=url, node="test-node"))
    try:
        yield engine
    finally:
        engine.close()
