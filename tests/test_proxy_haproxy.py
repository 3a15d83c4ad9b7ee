"""The gateway behind a real HAProxy (Debian's package), as docs/load-balancer.md sets it up:
TCP mode, `send-proxy-v2` to the submission port and HTTPS, `send-proxy` (v1) to the
implicit-TLS port. HAProxy listens on sockets the test binds (port 0, passed as `fd@N`, so
no port is guessed and no start-up is waited for) and is stopped at the end. Clients connect
from 127.0.0.3 and 127.0.0.4 (Linux answers on all of 127/8); HAProxy connects to the gateway
from 127.0.0.1, the trusted balancer.

Skipped when haproxy is not installed, except under CI ($CI set): .ci/run installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import socket
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from gateway.audit.store import EventFilter
from tests.gateway_harness import OTHER_STAFF, PASSWORD, STAFF, Harness, message, running_gateway
from tests.sink import Sink
from tests.staffweb import hidden

COLLEAGUE = "colleague@cafcass.gov.uk"
RELAY_PEER = "127.0.0.3"  # an Exchange connector, inside relay_from
STAFF_PC = "127.0.0.4"  # a member of staff's mail client or browser
TIMEOUT = 20.0


@pytest.fixture
def haproxy() -> str:
    """Debian's haproxy: skipped when missing, failed under CI."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is missing on CI: .ci/run must install Debian's haproxy")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return found


@dataclass
class Fronts:
    """HAProxy's listening ports, one per gateway listener."""

    smtp: int
    smtps: int
    https: int


CONFIG = """\
global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend submission
    bind fd@{smtp_fd}
    default_backend casegate_submission
backend casegate_submission
    server node1 127.0.0.1:{smtp_port} send-proxy-v2

frontend submissions
    bind fd@{smtps_fd}
    default_backend casegate_submissions
backend casegate_submissions
    server node1 127.0.0.1:{smtps_port} send-proxy

frontend https
    bind fd@{https_fd}
    default_backend casegate_https
backend casegate_https
    server node1 127.0.0.1:{https_port} send-proxy-v2
"""


@asynccontextmanager
async def running_haproxy(binary: str, tmp_path: Path, gw: Harness) -> AsyncIterator[Fronts]:
    """HAProxy in front of `gw`'s three listeners; stopped (and its sockets closed) at the end."""
    with ExitStack() as stack:
        listeners = [stack.enter_context(socket.create_server(("127.0.0.1", 0)))
                     for _ in range(3)]
        smtp, smtps, https = listeners
        config = tmp_path / "haproxy.cfg"
        config.write_text(CONFIG.format(
            smtp_fd=smtp.fileno(), smtp_port=gw.gateway.smtp_port,
            smtps_fd=smtps.fileno(), smtps_port=gw.gateway.tls_port,
            https_fd=https.fileno(), https_port=gw.gateway.http_port), encoding="utf-8")
        fds = tuple(s.fileno() for s in listeners)
        output = stack.enter_context((tmp_path / "haproxy.log").open("wb"))
        check = await asyncio.create_subprocess_exec(
            binary, "-c", "-q", "-f", str(config), pass_fds=fds, stdout=output, stderr=output)
        assert await check.wait() == 0, (tmp_path / "haproxy.log").read_text()
        process = await asyncio.create_subprocess_exec(
            binary, "-db", "-f", str(config), pass_fds=fds, stdout=output, stderr=output)
        try:
            yield Fronts(*(int(s.getsockname()[1]) for s in listeners))
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()


def _relay(gw: Harness, port: int, source: str) -> dict[str, tuple[int, bytes]]:
    """One message without AUTH or TLS, from `source`, through HAProxy on `port`."""
    with smtplib.SMTP(gw.host, port, timeout=TIMEOUT, local_hostname="exchange.test",
                      source_address=(source, 0)) as client:
        return client.sendmail(OTHER_STAFF, [COLLEAGUE], message(sender=OTHER_STAFF))


def _submit_implicit(gw: Harness, port: int, source: str) -> dict[str, tuple[int, bytes]]:
    """Log in and send over implicit TLS, from `source`, through HAProxy on `port`."""
    with smtplib.SMTP_SSL(gw.host, port, timeout=TIMEOUT, local_hostname="pc.test",
                          context=gw.client_context(), source_address=(source, 0)) as client:
        client.login(STAFF, PASSWORD)
        return client.sendmail(STAFF, [COLLEAGUE], message())


async def _wrong_sign_in(gw: Harness, port: int, source: str) -> int:
    """A sign-in with a wrong password from `source`, through HAProxy on `port`: the status."""
    connector = aiohttp.TCPConnector(ssl=gw.client_context(), local_addr=(source, 0))
    async with aiohttp.ClientSession(base_url=f"https://localhost:{port}", connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as client:
        async with client.get("/login") as form:
            token = hidden(await form.text(), "signin_token")
        async with client.post("/login", allow_redirects=False, data={
                "address": STAFF, "password": "not the password", "signin_token": token,
                "next": "/home"}) as answer:
            return answer.status


def _received_names(data: bytes, address: str) -> bool:
    return f"{address}]".encode() in data.split(b"\r\n\r\n")[0]


async def test_the_gateway_behind_haproxy_sees_every_client(
    tmp_path: Path, sink: Sink, haproxy: str
) -> None:
    """Through HAProxy: the relay peer relays by its own address (a staff PC from the same
    balancer does not), the implicit-TLS client and the browser are known by theirs."""
    async with running_gateway(tmp_path, sink, implicit_tls=True, relay_from=[RELAY_PEER],
                               extra_config='[proxy]\ntrusted = ["127.0.0.1"]\n') as gw, \
            running_haproxy(haproxy, tmp_path, gw) as fronts:
        assert await gw.run(_relay, gw, fronts.smtp, RELAY_PEER) == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            await gw.run(_relay, gw, fronts.smtp, STAFF_PC)
        assert refused.value.smtp_code == 530
        assert await gw.run(_submit_implicit, gw, fronts.smtps, STAFF_PC) == {}
        assert await _wrong_sign_in(gw, fronts.https, STAFF_PC) == 401
        relayed, submitted = sink.messages
        assert _received_names(relayed.data, RELAY_PEER)
        assert _received_names(submitted.data, STAFF_PC)
        assert [e.metadata["client"] for e in gw.app.audit.iterate(
            EventFilter(kind="login-failure"))] == [STAFF_PC]
        assert gw.gateway.stages.metrics.value("casegate_proxy_headers_refused_total") == 0
