"""A new SMTP connection's set-up is cheap (issue 14): aiosmtpd looks up the commands, the AUTH
mechanisms and the handler's hooks through `dir` on every connection, so GatewaySMTP and
SubmissionHandler list only those names (`hook_names`). Nothing may go missing by that."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.smtp.front import GatewaySMTP, SubmissionHandler, hook_names
from tests.gateway_harness import Harness, running_gateway
from tests.sink import Sink


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


def every_name(cls: type, prefix: str) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if name.startswith(prefix)}


@pytest.mark.parametrize(("cls", "prefix"), [
    (GatewaySMTP, "smtp_"), (GatewaySMTP, "auth_"), (SubmissionHandler, "handle_")])
def test_hook_names_hold_every_command_mechanism_and_hook(cls: type, prefix: str) -> None:
    assert every_name(cls, prefix) and every_name(cls, prefix) <= set(hook_names(cls))


async def test_a_connection_knows_every_command_and_hook(gw: Harness) -> None:
    """Over a real connection: the server's tables are complete, and HELP still gives each
    command's syntax (the per-verb wrappers keep aiosmtpd's attributes)."""

    def talk() -> list[tuple[int, bytes]]:
        with gw.connect() as client:
            return [client.docmd("HELP", verb) for verb in ("MAIL", "RCPT", "DATA", "AUTH")]

    replies = await gw.run(talk)
    assert [code for code, _ in replies] == [250] * 4
    assert b"MAIL FROM: <address>" in replies[0][1] and b"AUTH <mechanism>" in replies[3][1]
    client = await gw.run(gw.connect)  # held open while its server's tables are read
    try:
        [session] = [s for s in gw.gateway._sessions if s.transport is not None]
        assert set(session._smtp_methods) == {n[5:] for n in every_name(GatewaySMTP, "smtp_")}
        assert set(session._handle_hooks) == {
            n[7:] for n in every_name(SubmissionHandler, "handle_")}
        assert {"PLAIN", "LOGIN"} <= set(session._auth_methods)
    finally:
        await gw.run(client.quit)
