"""`casegate serve` as a real process on the embedded default, and `casegate init`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.cli.init import render_config
from gateway.config import Config, load_config
from tests.gateway_harness import PASSWORD, STAFF, message

START_TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[1]
# The commands run in a scratch directory, so the project must be on the import path.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _casegate(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, input=stdin,
                          env=ENV, capture_output=True, text=True, timeout=60, check=False)


async def _read_banner(process: asyncio.subprocess.Process) -> dict[str, dict[str, Any]]:
    """The JSON log lines printed before serving: "listening" by service, then "files"."""
    assert process.stdout is not None
    banner: dict[str, dict[str, Any]] = {}
    while "files" not in banner:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        if not line:
            raise AssertionError("casegate serve exited before listening")
        event = json.loads(line)
        if event["event"] == "listening":
            banner[event["service"]] = event
        elif event["event"] == "files":
            banner["files"] = event
    return banner


def _submit(port: int, cert_file: str) -> dict[str, tuple[int, bytes]]:
    context = ssl.create_default_context(cafile=cert_file)
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.starttls(context=context)
        client.ehlo()
        client.user, client.password = STAFF, PASSWORD
        client.auth("PLAIN", client.auth_plain)
        return client.sendmail(STAFF, ["colleague@cafcass.gov.uk"], message())


async def test_serve_runs_on_the_embedded_default_and_stops_on_sigterm(tmp_path: Path) -> None:
    """serve creates its data dir, prints its ports, delivers into the outbox, stops on SIGTERM."""
    added = _casegate("users", "add", STAFF, "--data", "data", cwd=tmp_path,
                      stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--data", "data", "--smtp-port", "0",
        "--tls-port", "0", "--http-port", "0", "--metrics-port", "0", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    try:
        banner = await _read_banner(process)
        smtp_port = banner["smtp"]["port"]
        assert banner["http"]["port"] > 0 and banner["smtps"]["port"] > 0
        assert banner["metrics"]["port"] > 0 and banner["metrics"]["host"] == "127.0.0.1"
        cert_file = banner["files"]["certificate"]
        assert (os.stat(cert_file).st_mode & 0o777) == 0o600
        assert (os.stat(Path(cert_file).with_name("tls.key")).st_mode & 0o777) == 0o600
        refused = await asyncio.to_thread(_submit, smtp_port, cert_file)
        assert refused == {}
        outbox = Path(banner["files"]["outbox"])
        assert outbox == (tmp_path / "data" / "outbox").resolve()
        assert len(list((outbox / "new").iterdir())) == 1
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
        assert process.returncode == 0, stderr.decode()
        events = [json.loads(line)["event"] for line in stdout.splitlines()]
        assert events[-2:] == ["stopping", "stopped"]
        assert b"correct horse" not in stdout + stderr  # no credentials in the logs
        assert b"call me about" not in stdout + stderr  # no message content either
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_bad_relay_range_is_a_usage_error(tmp_path: Path) -> None:
    """A relay range that is not CIDR stops serve before it binds anything (exit 2)."""
    result = _casegate("serve", "--data", "data", "--smtp-port", "0", "--http-port", "0",
                       "--relay-from", "not-a-range", cwd=tmp_path)
    assert result.returncode == 2 and "not an address range" in result.stderr


def test_unreadable_metrics_token_is_a_usage_error(tmp_path: Path) -> None:
    """A metrics token file that cannot be read stops serve before it binds anything (exit 2)."""
    (tmp_path / "casegate.toml").write_text('[metrics]\nbearer_token_file = "missing.token"\n',
                                            encoding="utf-8")
    result = _casegate("serve", "--config", "casegate.toml", "--data", "data", "--smtp-port", "0",
                       "--http-port", "0", "--metrics-port", "0", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'metrics.bearer_token_file'" in result.stderr and "cannot be read" in result.stderr


def test_init_writes_a_config_that_loads_as_the_defaults(tmp_path: Path) -> None:
    """`casegate init` writes commented TOML that loads to exactly the default config."""
    result = _casegate("init", "casegate.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "casegate.toml"
    assert path.read_text() == render_config()
    loaded = load_config(path)
    assert loaded.smtp == Config().smtp and loaded.upstream == Config().upstream
    uncommented = "\n".join(line.removeprefix("# ") if " = " in line else line
                            for line in render_config().splitlines())
    path.write_text(uncommented)
    assert load_config(path).smtp == Config().smtp
    again = _casegate("init", "casegate.toml", cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_settle_heap_freezes_what_start_up_built() -> None:
    """After start-up the long-lived objects are frozen out of full collections."""
    import gc

    from gateway.cli.serve import settle_heap

    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual
