"""An upstream that accepts and discards every message, in a process of its own.

    python -m tests.discard_sink        # prints "port N", serves until its stdin closes

Memory tests measure the gateway with tracemalloc; an in-process sink would be measured with it
(aiosmtpd keeps DATA as a list of lines). This one reads the data in the same way but in its
own process, so what the test sees is the gateway's alone. `DiscardSink` starts and stops it.
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType

from aiosmtpd.smtp import SMTP, Envelope, Session


class _Discard:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        envelope.content = envelope.original_content = None
        return "250 2.0.0 OK"


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_Discard(), data_size_limit=128 * 1024 * 1024, loop=loop), "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()
    await server.wait_closed()


class DiscardSink:
    """`async with DiscardSink() as sink:` a discarding upstream on 127.0.0.1:`sink.port`."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> DiscardSink:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.discard_sink", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert self._process.stdout is not None
        line = await asyncio.wait_for(self._process.stdout.readline(), 30)
        if not line.startswith(b"port "):
            raise RuntimeError("the discard sink did not start")
        self.port = int(line.split()[1])
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 30)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()


if __name__ == "__main__":
    asyncio.run(_serve())
