"""HTTPS plumbing for the web tests: serve an aiohttp application on 127.0.0.1, port 0, over
real TLS, and open clients that trust only the test's own certificate."""

from __future__ import annotations

import ssl

import aiohttp
from aiohttp import web

from tests.certs import ServerCert


async def serve_https(app: web.Application, cert: ServerCert) -> tuple[web.AppRunner, str]:
    """Start `app` on a free port; returns its runner (the caller cleans it up) and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=cert.server_context())
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"https://localhost:{port}"


def https_client(base: str, context: ssl.SSLContext) -> aiohttp.ClientSession:
    """An HTTPS client for `base` trusting `context`'s roots, keeping cookies, 20 s timeout."""
    return aiohttp.ClientSession(base_url=base, connector=aiohttp.TCPConnector(ssl=context),
                                 timeout=aiohttp.ClientTimeout(total=20))
