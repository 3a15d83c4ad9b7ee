"""Every line `casegate serve` prints is JSON of one shape: `time`, `level` and `event`."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.gateway_harness import PASSWORD, STAFF
from tests.test_serve import ENV, START_TIMEOUT, _casegate, _submit

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


async def test_every_line_of_a_real_run_has_time_and_level(tmp_path: Path) -> None:
    """A run with a message through it: banner, audit events and stop lines share one shape."""
    added = _casegate("users", "add", STAFF, "--data", "data", cwd=tmp_path,
                      stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--data", "data", "--smtp-port", "0",
        "--tls-port", "0", "--http-port", "0", cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV,
    )
    assert process.stdout is not None
    lines: list[str] = []  # every line, the banner's included
    try:
        banner: dict[str, dict[str, object]] = {}
        while "files" not in banner:
            line = (await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)).decode()
            assert line, "casegate serve exited before listening"
            lines.append(line)
            event = json.loads(line)
            banner[event.get("service") or event["event"]] = event
        await asyncio.to_thread(_submit, int(str(banner["smtp"]["port"])),
                                str(banner["files"]["certificate"]))
        process.send_signal(signal.SIGTERM)
        rest, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0 and stderr == b""
    lines += rest.decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert {"audit", "stopped"} <= {event["event"] for event in events}
    for event in events:
        assert set(event) >= {"time", "level", "event"}, event
        assert TIME.fullmatch(event["time"]) and event["level"] in ("info", "warning", "error")
        assert "timestamp" not in event
    # One canonical line for the message: who, how many, the decision and its actions, the
    # reply and the time taken; every other line of it is an audit event.
    (line,) = [event for event in events if event["event"] == "message"]
    assert line["code"] == 250 and line["sender"] == STAFF and line["recipients"] == 1
    assert line["actions"] == ["plain"] and len(line["decision_id"]) == 32
    assert line["ms"] > 0 and line["size"] > 0 and line["peer"] == "127.0.0.1"
    about = [event["event"] for event in events if event.get("decision_id") == line["decision_id"]]
    assert set(about) == {"message", "audit"}, about


LIBRARY_LINE = """
import logging
from gateway.observe.logs import configure_logging
configure_logging()
logging.getLogger("aiohttp.server").error("Error handling request")
logging.getLogger("mail.log").info("aiosmtpd chatter below ERROR is not printed")
"""


def test_library_log_lines_have_the_same_shape(tmp_path: Path) -> None:
    """A line an underlying library logs (aiohttp here) comes out as the same JSON shape."""
    done = subprocess.run([sys.executable, "-c", LIBRARY_LINE], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=60, check=True)
    (line,) = done.stdout.splitlines()
    event = json.loads(line)
    assert (event["event"], event["level"], event["logger"]) == (
        "Error handling request", "error", "aiohttp.server")
    assert TIME.fullmatch(event["time"]) and done.stderr == ""


INTERLEAVED = """
import threading
import structlog
from gateway.observe.logs import STDOUT, configure_logging

configure_logging()
log = structlog.get_logger("casegate.smtp")
audit_line = '{"event": "audit", "level": "info", "time": "t"}\\n'

def logs():
    for n in range(3000):
        log.info("message", n=n)

def audits():
    for _ in range(1000):
        STDOUT.write(audit_line * 3)  # the audit writer's batch: several lines, one write

threads = [threading.Thread(target=logs), threading.Thread(target=audits)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_log_and_audit_lines_from_two_threads_never_share_a_line(tmp_path: Path) -> None:
    """Log lines (the event loop's thread) and audit lines (the audit writer's thread) reach
    stdout whole: a SIEM reading line by line never sees two JSON objects on one line."""
    done = subprocess.run([sys.executable, "-c", INTERLEAVED], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == 6000
    events = [json.loads(line) for line in lines]
    assert sum(event["event"] == "audit" for event in events) == 3000
