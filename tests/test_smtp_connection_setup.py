"""A new SMTP connection's set-up is cheap (issue 14): aiosmtpd looks up the commands, the AUTH
mechanisms and the handler's hooks by listing names on every connection, so GatewaySMTP and
SubmissionHandler list only those names (`looked_up_names`), and the per-verb wrappers are made
once for the class. Nothing may go missing by that, and every command still goes through the
wrapper that the abuse limits rely on."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.smtp.aiosmtpd_private import LOOKED_UP, looked_up_names
from gateway.smtp.front import GatewaySMTP, SubmissionHandler
from gateway.smtp.limits import TOO_MANY_ERRORS, CommandBudget
from tests.gateway_harness import Harness, running_gateway
from tests.sink import Sink
from tests.test_smtp_abuse_limits import Client


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


def every_name(cls: type, prefix: str) -> set[str]:
    """The names with `prefix` that `cls` has, found without its `__dir__`."""
    return {name for name, _ in inspect.getmembers(cls) if name.startswith(prefix)}


@pytest.mark.parametrize(("cls", "prefix"), [
    (GatewaySMTP, "smtp_"), (GatewaySMTP, "auth_"), (SubmissionHandler, "handle_")])
def test_looked_up_names_hold_every_command_mechanism_and_hook(cls: type, prefix: str) -> None:
    """What `dir` answers for the server and the handler holds each name aiosmtpd looks for."""
    assert prefix in LOOKED_UP
    assert every_name(cls, prefix) and every_name(cls, prefix) <= set(looked_up_names(cls))


def test_every_command_is_wrapped_once_for_the_class() -> None:
    """Each `smtp_<VERB>` of the server, its own and aiosmtpd's, goes through the command
    wrapper (which notes the verb and counts commands without progress), and keeps aiosmtpd's
    syntax attributes for HELP."""
    commands = every_name(GatewaySMTP, "smtp_")
    assert {"smtp_MAIL", "smtp_NOOP", "smtp_EHLO", "smtp_DATA"} <= commands
    for name in commands:
        method = getattr(GatewaySMTP, name)
        assert method.__qualname__.endswith(name) and hasattr(method, "__wrapped__"), name
        assert not hasattr(method.__wrapped__, "__wrapped__"), f"{name} wrapped twice"
    assert getattr(GatewaySMTP.smtp_MAIL, "__smtp_syntax__", None) == "MAIL FROM: <address>"


async def test_a_connection_knows_every_command_and_hook(gw: Harness) -> None:
    """Over a real connection: HELP lists every command and gives each one's syntax (the
    per-verb wrappers keep aiosmtpd's attributes), the EHLO hook adds its keywords, and AUTH
    offers both mechanisms and takes a login."""

    def talk() -> tuple[tuple[int, bytes], list[tuple[int, bytes]], str]:
        with gw.connect() as client:  # EHLO, STARTTLS, EHLO, AUTH (raises if refused)
            features = client.ehlo_resp.decode() if client.ehlo_resp else ""
            listed = client.docmd("HELP")
            return listed, [client.docmd("HELP", v) for v in ("MAIL", "RCPT", "AUTH")], features

    listed, replies, features = await gw.run(talk)
    assert listed[0] == 250
    assert set(listed[1].decode().partition(":")[2].split()) >= {
        "AUTH", "DATA", "EHLO", "HELO", "HELP", "MAIL", "NOOP", "QUIT", "RCPT", "RSET", "VRFY"}
    assert [code for code, _ in replies] == [250] * 3
    assert b"MAIL FROM: <address>" in replies[0][1] and b"AUTH <mechanism>" in replies[2][1]
    assert "ENHANCEDSTATUSCODES" in features and "DSN" in features
    assert "AUTH LOGIN PLAIN" in features or "AUTH PLAIN LOGIN" in features


class _Extended(GatewaySMTP):
    """A subclass with a command of its own and one that calls ours."""

    async def smtp_XPING(self, arg: str | None) -> None:
        await self.push("250 pong")

    async def smtp_NOOP(self, arg: str | None) -> None:
        await super().smtp_NOOP(arg)


async def test_a_subclass_command_is_tracked_and_counted_once(gw: Harness) -> None:
    """A subclass's own command goes through the command wrapper too, and a command of its that
    calls ours is counted once against the budget: junk limit 2, error limit 2, so the 4th
    NOOP's reply is followed by 421 4.7.0 and the close."""
    assert hasattr(_Extended.smtp_XPING, "_tracks_verb")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Extended(gw.gateway.handler, implicit_tls=False,
                          budget=CommandBudget(junk_limit=2, error_limit=2)),
        "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1])
    client = Client(reader, writer)
    try:
        assert (await client.reply()).startswith(b"220")
        assert (await client.command(b"XPING")) == b"250 2.0.0 pong\r\n"
        for _ in range(4):
            assert (await client.command(b"NOOP")).startswith(b"250")
        assert await client.reply() == TOO_MANY_ERRORS.encode() + b"\r\n"
        assert await client.closed_by_server()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
