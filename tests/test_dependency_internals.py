"""The aiosmtpd and aiosmtplib internals casegate relies on are all still there, and used only
through the two modules that list them.

The names come from the tuples of `Internal` in gateway/smtp/aiosmtpd_private.py and
transports/aiosmtplib_private.py: a name added there is checked here. A failure names the
installed version, the name, what relies on it and where it is listed, so an upgrade that
breaks one says so at once.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.metadata
import inspect
import platform
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP
from aiosmtplib.protocol import SMTPProtocol

from gateway.smtp import aiosmtpd_private
from gateway.smtp.aiosmtpd_private import (
    command_stream,
    handler_task,
    pending_input,
    read_limit,
    socket_transport,
    starttls_begun,
)
from gateway.smtp.front import GatewaySMTP
from transports import aiosmtplib_private
from transports.aiosmtplib_private import Internal, Kind

ROOT = Path(__file__).resolve().parent.parent
REGISTRIES: tuple[ModuleType, ...] = (aiosmtpd_private, aiosmtplib_private)
OVERRIDERS: tuple[type, ...] = (GatewaySMTP,)  # our subclasses that override listed hooks
SCANNED = ("gateway", "transports", "tests")  # where no other module may reach for them


def _listed(module: ModuleType) -> list[Internal]:
    """Every `Internal` in the module's tuples, in the order they are written."""
    return [item for value in vars(module).values() if isinstance(value, tuple)
            for item in value if isinstance(item, Internal)]


LISTED = [(module, internal) for module in REGISTRIES for internal in _listed(module)]
HOOKS = {internal.name for _, internal in LISTED if internal.kind is Kind.HOOK}


def _installed(owner: type) -> str:
    """"aiosmtpd 1.4.6" for the library `owner` comes from (Python's version for asyncio)."""
    package = owner.__module__.split(".")[0]
    if package in sys.stdlib_module_names:
        return f"Python {platform.python_version()}"
    return f"{package} {importlib.metadata.version(package)}"


def _where(module: ModuleType) -> str:
    return str(Path(str(module.__file__)).relative_to(ROOT))


def _gone(module: ModuleType, internal: Internal, problem: str) -> str:
    return (f"{_installed(internal.owner)} {problem} {internal.qualified}, which "
            f"{internal.used_by} relies on: {internal.why}. See {_where(module)} "
            f"(checked against {module.CHECKED_AGAINST}).")


def _params(function: Callable[..., Any]) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


class _Peek(SMTP):
    """aiosmtpd plus one command, XPEEK: whether more of the client's input is already waiting."""

    async def smtp_XPEEK(self, arg: str | None) -> None:
        await self.push("250 pending" if pending_input(self) else "250 none")


class _NoHooks:
    """An aiosmtpd handler with no hooks: aiosmtpd answers every command itself."""


@dataclass
class Live:
    """A connected aiosmtpd session, from both ends of a real socket."""

    session: _Peek
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def say(self, wire: bytes) -> bytes:
        """Write `wire` in one piece; the first reply line."""
        self.writer.write(wire)
        await self.writer.drain()
        return await self.reader.readline()


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    """aiosmtpd on 127.0.0.1, port 0, with one client that has read the greeting."""
    loop = asyncio.get_running_loop()
    sessions: list[_Peek] = []

    def factory() -> _Peek:
        sessions.append(_Peek(_NoHooks(), hostname="internals.test", loop=loop))
        return sessions[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        assert (await reader.readline()).startswith(b"220 ")  # the session's task is serving
        yield Live(sessions[0], reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        task = handler_task(sessions[0]) if sessions else None
        if task is not None:  # the client's EOF ends it
            await asyncio.gather(task, return_exceptions=True)
        server.close()
        await server.wait_closed()


def _fresh(owner: type, loop: asyncio.AbstractEventLoop) -> object:
    """A new, unconnected instance of `owner`, as the library makes it."""
    makers: dict[type, Callable[[], object]] = {
        SMTP: lambda: SMTP(_NoHooks(), loop=loop),
        asyncio.StreamReader: asyncio.StreamReader,
        aiosmtplib.SMTP: aiosmtplib.SMTP,
        SMTPProtocol: lambda: SMTPProtocol(loop=loop),
    }
    for cls, make in makers.items():
        if issubclass(cls, owner) or issubclass(owner, cls):
            return make()
    raise AssertionError(f"the test cannot make a {owner.__qualname__}: add it to `_fresh`")


def test_each_registry_lists_its_internals() -> None:
    """Both modules list something (an empty list would make every check here pass)."""
    for module in REGISTRIES:
        assert _listed(module), f"{_where(module)} lists no internals"
        assert isinstance(module.CHECKED_AGAINST, str)


@pytest.mark.parametrize(("module", "internal"), LISTED,
                         ids=[internal.qualified for _, internal in LISTED])
async def test_a_listed_internal_is_still_there(module: ModuleType, internal: Internal,
                                                live: Live) -> None:
    """The name exists on the installed library: a method with the same parameters (and as
    much a coroutine as it was), or an attribute of a new or of a connected instance."""
    if internal.kind in (Kind.HOOK, Kind.METHOD):
        method = getattr(internal.owner, internal.name, None)
        assert callable(method), _gone(module, internal, "no longer has")
        assert _params(method) == internal.params, _gone(
            module, internal, f"now takes {_params(method)}, not {internal.params}, in")
        assert inspect.iscoroutinefunction(method) == internal.is_async, _gone(
            module, internal, "changed whether it is a coroutine:")
    elif internal.kind is Kind.ATTRIBUTE:
        instance = _fresh(internal.owner, asyncio.get_running_loop())
        assert hasattr(instance, internal.name), _gone(module, internal, "no longer sets")
    else:
        assert isinstance(live.session, internal.owner), (
            f"the test has no connected {internal.owner.__qualname__}: add one")
        assert hasattr(live.session, internal.name), _gone(
            module, internal, "no longer sets, on a connected session,")


@pytest.mark.parametrize(("module", "internal"),
                         [(m, i) for m, i in LISTED if i.kind is Kind.HOOK],
                         ids=[i.qualified for _, i in LISTED if i.kind is Kind.HOOK])
def test_a_listed_hook_is_overridden_with_its_parameters(module: ModuleType,
                                                         internal: Internal) -> None:
    """Each hook is overridden by a class of ours, which takes what the library passes."""
    overrides = [cls for cls in OVERRIDERS
                 if issubclass(cls, internal.owner) and internal.name in vars(cls)]
    assert overrides, (f"{_where(module)} lists {internal.qualified} as a hook, but no class "
                       f"of ours overrides it: take it off the list")
    for cls in overrides:
        ours = vars(cls)[internal.name]
        assert _params(ours) == internal.params, (
            f"{cls.__qualname__}.{internal.name} takes {_params(ours)}, but "
            f"{internal.qualified} is called with {internal.params} ({_where(module)})")
        assert inspect.iscoroutinefunction(ours) == internal.is_async


async def test_the_helpers_read_a_real_connection(live: Live) -> None:
    """On a connected aiosmtpd session the helpers answer what the front relies on: the
    command stream (with aiosmtpd's one-line limit), pipelined input, the serving task."""
    session = live.session
    stream = command_stream(session)
    assert isinstance(stream, asyncio.StreamReader)
    assert read_limit(stream) == SMTP.line_length_limit
    task = handler_task(session)
    assert task is not None and not task.done()
    assert socket_transport(session) is session.transport
    assert not starttls_begun(session)
    assert await live.say(b"XPEEK\r\n") == b"250 none\r\n"
    assert await live.say(b"XPEEK\r\nNOOP\r\n") == b"250 pending\r\n"
    assert await live.reader.readline() == b"250 OK\r\n"


@pytest.fixture
async def their_private_names(live: Live) -> dict[str, str]:
    """Each private name the libraries' classes and instances have -> whose it is."""
    loop = asyncio.get_running_loop()
    found: dict[str, str] = {}
    instances: tuple[tuple[type, object], ...] = (
        (SMTP, live.session),
        (asyncio.StreamReader, command_stream(live.session)),
        (aiosmtplib.SMTP, _fresh(aiosmtplib.SMTP, loop)),
        (SMTPProtocol, _fresh(SMTPProtocol, loop)),
    )
    for owner, instance in instances:
        for name in {*dir(owner), *vars(instance)}:
            if name.startswith("_") and not name.startswith("__"):
                found.setdefault(name, f"{_installed(owner)}'s {owner.__qualname__}")
    return found


def _subclasses_theirs(node: ast.ClassDef) -> bool:
    """Whether a class statement names an SMTP server or protocol class among its bases."""
    return any(ast.unparse(base).split(".")[-1].endswith(("SMTP", "SMTPProtocol"))
               for base in node.bases)


def _uses(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, name, how) for each attribute a module reaches for that the libraries may own:
    on any object but `self`; on `self` or as a method only in a subclass of theirs."""

    def walk(node: ast.AST, theirs: bool) -> Iterator[tuple[int, str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                subclass = _subclasses_theirs(child)
                for item in child.body:
                    if subclass and isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        yield item.lineno, item.name, f"defines {child.name}.{item.name}"
                yield from walk(child, subclass)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from walk(child, theirs)
                continue
            if isinstance(child, ast.Attribute):
                on_self = isinstance(child.value, ast.Name) and child.value.id == "self"
                if theirs or not on_self:
                    yield child.lineno, child.attr, f"uses {ast.unparse(child)}"
            yield from walk(child, theirs)

    yield from walk(tree, False)


def test_only_the_registries_reach_for_their_private_names(
        their_private_names: dict[str, str]) -> None:
    """No module but the two registries touches a private name of aiosmtpd's, aiosmtplib's
    or their stream's, apart from overriding and calling a listed hook; a name of ours that a
    new release now shares (shadowing theirs) is caught the same way."""
    theirs = their_private_names
    skipped = {ROOT / _where(module) for module in REGISTRIES} | {Path(__file__).resolve()}
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() in skipped:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [f"{path.relative_to(ROOT)}:{line} {how}, a private name of {theirs[name]}"
                      for line, name, how in _uses(tree)
                      if name in theirs and name not in HOOKS]
    assert not found, (
        "private names of the libraries used outside "
        f"{' and '.join(_where(m) for m in REGISTRIES)}; list each there with why the public "
        "API cannot do it and reach it through a function there (or, if the name is ours and "
        "a new release now has it too, rename ours):\n" + "\n".join(found))
