"""Two `casegate serve` processes on one PostgreSQL database (issue 15, "what must be shown"):
messages through both, a node killed (SIGKILL) in the middle of a message and after a 250, the
client's retries through the other node delivered once per recipient, a portal copy made by the
dead node opened through the other, and one audit chain, valid, naming both nodes. Then the
database stopped: 4xx to clients and /readyz not ready; started again: mail flows, without a
restart of the gateway."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import App
from policies.model import Role
from tests.gateway_harness import PASSWORD, STAFF, message, write_config
from tests.https import https_client
from tests.portalweb import CODE, SECRET_BODY, protected_message, text_of
from tests.postgres import Cluster, copy_keys, require_server
from tests.servekit import ENV, Served, kill, start_serve, submit, terminate
from tests.sink import Sink
from tests.staffweb import hidden

CASE = "FD24P01234"
MUM = "mum@example.org"
COLLEAGUE = "colleague@cafcass.gov.uk"
OTHER = "other.colleague@cafcass.gov.uk"
LINK = re.compile(r"https://[^\s]+(/portal/[A-Za-z0-9_\-]+)")


def node_config(tmp_path: Path, sink: Sink, name: str) -> Path:
    return write_config(tmp_path / f"{name}.toml", sink,
                        extra_config=f'[database]\nnode = "{name}"\nconnect_timeout = 2\n')


def prepare_nodes(tmp_path: Path, sink: Sink, url: str) -> tuple[Path, Path]:
    """Node one's data directory and the shared database: the staff account and mum verified
    for the case; node two gets node one's key files, and nothing else."""
    one = node_config(tmp_path, sink, "one")
    with App.open(one, tmp_path / "one", database_url=url) as app:
        app.users.add(STAFF, PASSWORD)
        app.registry.add(MUM, case_number=CASE, role=Role.PARTY, verified_by=STAFF,
                         now=datetime.now(UTC))
    copy_keys(tmp_path / "one", tmp_path / "two")
    return one, node_config(tmp_path, sink, "two")


def start_data_then_die(port: int, cert_file: str, data: bytes) -> smtplib.SMTP:
    """A client that has given MAIL, RCPT, DATA and half the message, and waits there."""
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.starttls(context=ssl.create_default_context(cafile=cert_file))
    client.ehlo()
    client.login(STAFF, PASSWORD)
    client.mail(STAFF)
    client.rcpt(OTHER)
    code, _ = client.docmd("DATA")
    assert code == 354
    client.send(data[: len(data) // 2])
    return client


async def read_portal_copy(served: Served, sink: Sink, path: str) -> str:
    """Open the portal link on `served`, ask for a code, give it; the message page's text."""
    context = ssl.create_default_context(cafile=served.cert_file)
    async with https_client(f"https://localhost:{served.http_port}", context) as client:
        async with client.get(path) as page:
            assert page.status == 200
            csrf = hidden(await page.text(), "csrf_token")
        before = len(sink.messages)
        async with client.post(f"{path}/code", data={"csrf_token": csrf},
                               allow_redirects=False):
            pass
        assert len(sink.messages) == before + 1
        found = CODE.search(text_of(sink.messages[-1]))
        assert found and sink.messages[-1].rcpt_tos == (MUM,)
        async with client.post(f"{path}/verify", data={"csrf_token": csrf,
                                                       "code": found.group(1)},
                               allow_redirects=False) as verified:
            assert verified.status == 303
        async with client.get(path) as page:
            return await page.text()


async def test_two_nodes_one_database(tmp_path: Path, sink: Sink, pg_url: str) -> None:
    one_config, two_config = prepare_nodes(tmp_path, sink, pg_url)
    async with AsyncExitStack() as stack:
        one = await start_serve(one_config, tmp_path / "one", pg_url)
        stack.push_async_callback(kill, one)
        two = await start_serve(two_config, tmp_path / "two", pg_url)
        stack.push_async_callback(kill, two)

        # Messages through both nodes.
        first, second = message(to=[COLLEAGUE]), message(to=[COLLEAGUE], body="Second note.")
        await asyncio.to_thread(submit, one.smtp_port, one.cert_file, first, [COLLEAGUE])
        await asyncio.to_thread(submit, two.smtp_port, two.cert_file, second, [COLLEAGUE])
        # A portal copy made by node one.
        await asyncio.to_thread(submit, one.smtp_port, one.cert_file,
                                protected_message(to=MUM), [MUM])
        (notice,) = [m for m in sink.messages if m.rcpt_tos == (MUM,)]
        link = LINK.search(text_of(notice))
        assert link
        # Node one dies in the middle of a message (half its DATA read) ...
        third = message(to=[OTHER], body="Third note, about the hearing.")
        waiting = await asyncio.to_thread(start_data_then_die, one.smtp_port, one.cert_file,
                                          third)
        await kill(one)
        with pytest.raises((smtplib.SMTPException, OSError)):
            await asyncio.to_thread(waiting.send, third[len(third) // 2:] + b"\r\n.\r\n")
            await asyncio.to_thread(waiting.getreply)
        waiting.close()
        # ... the client retries through node two: delivered once.
        await asyncio.to_thread(submit, two.smtp_port, two.cert_file, third, [OTHER])
        # The first message got its 250 from node one; a client that retries it anyway
        # through node two (it never saw the 250) is answered 250, and nothing is sent again.
        await asyncio.to_thread(submit, two.smtp_port, two.cert_file, first, [COLLEAGUE])
        delivered = sorted((m.rcpt_tos, m.data.count(b"Second note."),
                            m.data.count(b"Third note")) for m in sink.messages)
        assert delivered == [((COLLEAGUE,), 0, 0), ((COLLEAGUE,), 1, 0), ((MUM,), 0, 0),
                             ((OTHER,), 0, 1)]
        # The copy node one made opens through node two.
        page = await read_portal_copy(two, sink, link.group(1))
        assert SECRET_BODY in page
        assert await terminate(two) == 0

    # One chain, valid, each event naming its node.
    command = [sys.executable, "-m", "gateway", "audit", "verify", "--config", str(two_config),
               "--data", str(tmp_path / "two")]
    verify = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120,
        env={**ENV, "CASEGATE_DATABASE_URL": pg_url}, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "The audit trail is intact" in verify.stdout
    assert re.search(r"one \d+", verify.stdout) and re.search(r"two \d+", verify.stdout)


@pytest.fixture
async def own_cluster() -> AsyncIterator[Cluster]:
    """A cluster of this test's own, which it may stop and start."""
    require_server()
    cluster = await asyncio.to_thread(Cluster.start)
    try:
        yield cluster
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_the_database_down_is_a_4xx_and_comes_back_without_a_restart(
        tmp_path: Path, sink: Sink, own_cluster: Cluster) -> None:
    url = own_cluster.url
    config, _ = prepare_nodes(tmp_path, sink, url)
    served = await start_serve(config, tmp_path / "one", url)
    try:
        data = message(to=[COLLEAGUE])
        await asyncio.to_thread(submit, served.smtp_port, served.cert_file, data, [COLLEAGUE])
        await asyncio.to_thread(own_cluster.run, "stop")
        later = message(to=[COLLEAGUE], body="Sent while the database was down.")
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            await asyncio.to_thread(submit, served.smtp_port, served.cert_file, later,
                                    [COLLEAGUE])
        assert 400 <= refused.value.smtp_code < 500
        assert len(sink.messages) == 1  # nothing went out that could not be recorded
        context = ssl.create_default_context(cafile=served.cert_file)
        async with https_client(f"https://localhost:{served.http_port}", context) as client:
            async with client.get("/readyz") as ready:
                assert ready.status == 503
        await asyncio.to_thread(own_cluster.run, "restart")
        deadline = asyncio.get_running_loop().time() + 60  # the pool's reconnection, bounded
        while True:
            try:
                await asyncio.to_thread(submit, served.smtp_port, served.cert_file, later,
                                        [COLLEAGUE])
                break
            except smtplib.SMTPResponseException as exc:
                assert 400 <= exc.smtp_code < 500
                assert asyncio.get_running_loop().time() < deadline, "no recovery"
        assert len(sink.messages) == 2
    finally:
        await kill(served)


