"""Real PostgreSQL for the tests: a throwaway cluster (scripts/pg-throwaway), and a fresh schema
per test so that tests never see each other's tables.

`.ci/run` starts one cluster for the whole run and passes its URL in CASEGATE_TEST_DATABASE_URL;
without it, the first test that needs PostgreSQL starts one (stopped when the run ends). Where
the server binaries are missing, such tests skip, or fail under CI (tests/tools.py).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.tools import in_ci
from transports.database import Database, OperationalError

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "pg-throwaway"
URL_VARIABLE = "CASEGATE_TEST_DATABASE_URL"


def server_binaries() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def require_server() -> None:
    """Skip (fail under CI) when PostgreSQL's server is not installed."""
    if os.environ.get(URL_VARIABLE) or server_binaries():
        return
    reason = "PostgreSQL is not installed (apt-get install postgresql)"
    if in_ci():
        pytest.fail(f"{reason}; CI must install every tool the tests use", pytrace=False)
    pytest.skip(reason)


@dataclass
class Cluster:
    """A throwaway cluster in `directory` (started by this process, or by .ci/run: then
    `directory` is None and it cannot be restarted from here)."""

    url: str
    directory: Path | None = None

    @classmethod
    def start(cls) -> Cluster:
        directory = Path(tempfile.mkdtemp(prefix="casegate-pg-"))  # /tmp: the postgres user
        result = subprocess.run([str(SCRIPT), "start", str(directory)], capture_output=True,
                                text=True, timeout=120, check=False)
        if result.returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"pg-throwaway start failed: {result.stderr.strip()}")
        return cls(url=result.stdout.strip(), directory=directory)

    def run(self, command: str) -> None:
        assert self.directory is not None, "a cluster started by .ci/run is not ours to stop"
        subprocess.run([str(SCRIPT), command, str(self.directory)], check=True, timeout=120,
                       capture_output=True)

    def stop(self) -> None:
        if self.directory is not None:
            self.run("stop")
            shutil.rmtree(self.directory, ignore_errors=True)

    def fresh_schema(self) -> str:
        """A URL whose connections see only a new, empty schema (removed by `drop`)."""
        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        options = quote(f"-c search_path={name}")
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}options={options}"

    def drop(self, url: str) -> None:
        name = url.rsplit("search_path%3D", 1)[-1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


# What every node of one installation shares (README, "More than one node"): the keys, and the
# TLS certificate the clients were told to trust.
KEY_FILES = ("*.key", "*.pem", "portal-keys.json", "tls.crt")


def copy_keys(first: Path, other: Path) -> None:
    """Give a new node the first node's key files, as an operator distributes them."""
    other.mkdir(parents=True, exist_ok=True, mode=0o700)
    for pattern in KEY_FILES:
        for key in first.glob(pattern):
            shutil.copy2(key, other / key.name)


def wait_for_recovery(database: Database, seconds: float = 60) -> None:
    """Once a stopped server is started again: until `database` answers (the pool reconnects
    with a back-off bounded by connect_timeout), failing after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            database.ping()
            return
        except OperationalError:
            assert time.monotonic() < deadline, "no recovery after the server returned"
