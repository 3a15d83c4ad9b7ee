"""`swaks`, an independent SMTP client, against the real gateway over verified STARTTLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_harness import PASSWORD, STAFF, Harness, running_gateway
from tests.sink import Sink
from tests.tools import require_tool


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def _swaks(gw: Harness, *rcpts: str) -> tuple[int, str]:
    swaks = require_tool("swaks", "swaks libnet-ssleay-perl libio-socket-ssl-perl")
    process = await asyncio.create_subprocess_exec(
        swaks, "--server", gw.host, "--port", str(gw.gateway.smtp_port),
        "--tls", "--tls-verify", "--tls-ca-path", str(gw.gateway.certificate.cert_file),
        "--auth", "PLAIN", "--auth-user", STAFF, "--auth-password", PASSWORD,
        "--from", STAFF, "--to", ",".join(rcpts), "--ehlo", "client.test",
        "--timeout", "20",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode("utf-8", "replace")


async def test_swaks_delivers_through_starttls_and_auth(gw: Harness) -> None:
    """swaks verifies the certificate, authenticates, and its message reaches the sink."""
    code, output = await _swaks(gw, "colleague@cafcass.gov.uk")
    assert code == 0, output
    assert "235 2.7.0" in output and "250 2.0.0 Delivered, decision" in output
    (received,) = gw.sink.messages
    assert received.rcpt_tos == ("colleague@cafcass.gov.uk",)


async def test_swaks_sees_the_refusal_sentence(gw: Harness) -> None:
    """A personal address is refused at RCPT with the sentence the sender must read."""
    code, output = await _swaks(gw, "jo.smith@gmail.com")
    assert code != 0
    # One sentence to a reply line (an MTA's bounce runs the lines together).
    assert "550-5.7.1 Cafcass mail must never go to a staff member's personal email address.\n" \
        in output
    assert gw.sink.messages == []
