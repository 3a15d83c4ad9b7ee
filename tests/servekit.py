"""`casegate serve` as a real process for tests and benchmarks that kill it: started on port 0
with a config whose upstream is a test sink, its log drained, killed (SIGKILL) or stopped
(SIGTERM); and a blocking client that submits one message over STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.app import App
from tests.gateway_harness import PASSWORD, STAFF, write_config
from tests.sink import Sink

START_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@dataclass
class Served:
    """A running `casegate serve`: its process, SMTP port and certificate."""

    process: asyncio.subprocess.Process
    smtp_port: int
    cert_file: str
    drain: asyncio.Task[None]
    http_port: int = 0


async def _drain(stream: asyncio.StreamReader) -> None:
    """Read the rest of the log so the gateway never blocks on a full pipe."""
    while await stream.readline():
        pass


async def start_serve(config: Path, data: Path, database_url: str = "") -> Served:
    """`casegate serve` on port 0 with `config` (and its stores on `database_url`'s
    PostgreSQL when given); returns once it is listening."""
    env = {**ENV, "CASEGATE_DATABASE_URL": database_url} if database_url else ENV
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config), "--data", str(data),
        cwd=config.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env=env)
    assert process.stdout is not None
    banner: dict[str, dict[str, Any]] = {}
    try:
        while "files" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
            if not line:
                raise AssertionError("casegate serve exited before listening")
            event = json.loads(line)
            if event.get("event") == "listening":
                banner[event["service"]] = event
            elif event.get("event") == "files":
                banner["files"] = event
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return Served(process, banner["smtp"]["port"], banner["files"]["certificate"],
                  asyncio.ensure_future(_drain(process.stdout)),
                  http_port=int(banner.get("http", {}).get("port", 0)))


async def kill(served: Served) -> None:
    """SIGKILL: no drain, no shutdown, nothing closed."""
    if served.process.returncode is None:
        served.process.kill()
    await served.process.wait()
    await served.drain


async def terminate(served: Served) -> int:
    """SIGTERM and wait: the exit code."""
    if served.process.returncode is None:
        served.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(served.process.wait(), START_TIMEOUT)
    await served.drain
    return code


def submit(port: int, cert_file: str, data: bytes, recipients: list[str]) -> None:
    """One submission over STARTTLS and AUTH; raises on anything but 250."""
    context = ssl.create_default_context(cafile=cert_file)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=context)
        client.ehlo()
        client.user, client.password = STAFF, PASSWORD
        client.auth("PLAIN", client.auth_plain)
        client.sendmail(STAFF, recipients, data)


def prepare(tmp_path: Path, sink: Sink, upstream: dict[str, Any] | None = None,
            database_url: str = "") -> Path:
    """A config with the sink as upstream and a data directory (and `database_url`'s
    PostgreSQL, when given) with the staff account."""
    config = write_config(tmp_path / "casegate.toml", sink, upstream=upstream)
    with App.open(config, tmp_path / "data", database_url=database_url or None) as app:
        app.users.add(STAFF, PASSWORD)
    return config


@asynccontextmanager
async def serving(config: Path, data: Path, database_url: str = "") -> AsyncIterator[Served]:
    served = await start_serve(config, data, database_url)
    try:
        yield served
    finally:
        await kill(served)
