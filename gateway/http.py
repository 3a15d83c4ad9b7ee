"""The HTTP front (aiohttp): health, readiness and metrics; other modules add their pages.

Each module named in `ROUTE_MODULES` exposes `add_routes(web_app, ctx) -> None`, where `ctx` is
the gateway's `Services` (gateway.pipeline). Handlers never show internals: an unexpected error
is a plain 500 page, logged without content.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from gateway.pipeline import describe_error

if TYPE_CHECKING:
    from gateway.pipeline import Services

log = structlog.get_logger("casegate.http")

# Modules that add pages: each exposes add_routes(web_app, ctx). Other issues append here.
ROUTE_MODULES: tuple[str, ...] = (
    "gateway.web",
    "gateway.web.post",
    "gateway.web.verify",
    "gateway.web.portal",
)

SERVICES: web.AppKey[Services] = web.AppKey("services")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def build_web_app(ctx: Services, route_modules: tuple[str, ...] = ROUTE_MODULES) -> web.Application:
    """The aiohttp application with the built-in endpoints and every module's routes."""
    web_app = web.Application(middlewares=[_errors_hidden], client_max_size=1024 * 1024)
    web_app[SERVICES] = ctx
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics)
    for name in route_modules:
        import_module(name).add_routes(web_app, ctx)
    web_app.on_response_prepare.append(_security_headers)
    return web_app


async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready to take mail: stores open, upstream reachable or outbox writable."""
    problems = await request.app[SERVICES].readiness_problems()
    if problems:
        return web.Response(status=503, text="not ready: " + ", ".join(problems) + "\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    """Counters in the Prometheus text format."""
    body = request.app[SERVICES].metrics.render()
    return web.Response(text=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


@web.middleware
async def _errors_hidden(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except UnicodeDecodeError:  # a form or query that is not UTF-8: the client's mistake
        return web.Response(status=400, text="bad request\n")
    except Exception as exc:
        log.error("http-error", path=request.path, **describe_error(exc))
        return web.Response(status=500, text="internal error\n")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
