"""The HTTP fronts (aiohttp): the public one with its pages, and the metrics listener.

The public front (`build_web_app`) serves /healthz, /readyz (only "ready" or "not ready") and
every page, each module's routes added here by name from the typed parts in `WebFront`: the
staff pages (gateway.web.staff), the postal pages, the verification pages, the portal's pages
when the portal has keys, and the breach alerter while the front runs. The metrics listener
(`build_metrics_app`, loopback by default, optionally behind a bearer token) serves /metrics,
/healthz and /readyz with the list of what is not ready. Handlers never show internals: an
unexpected error is a plain 500 page, logged without content. Neither front names its software
version in `Server`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from aiohttp import web, web_response

from gateway.app import App
from gateway.audit import alerts
from gateway.observe.logs import describe_error
from gateway.observe.metrics import CONTENT_TYPE, Metrics
from gateway.printed.post import post_options
from gateway.stages.context import Stages
from gateway.web import cases, portal, post, staff, verify
from gateway.web.pages import WebDeps
from transports.portal import PortalDelivery

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

Readiness = Callable[[], Awaitable[list[str]]]  # what stops the gateway taking mail; [] if none

log = structlog.get_logger("casegate.http")

READINESS: web.AppKey[Readiness] = web.AppKey("casegate-readiness")
METRICS: web.AppKey[Metrics] = web.AppKey("casegate-metrics", Metrics)

SERVER = "casegate"  # the Server header of both fronts: no software version for a scanner to match

# `_security_headers` sets Server on every response a handler (or a route miss) makes, but
# aiohttp answers a request it cannot parse (a scanner's probe) before any application code
# runs, with its default Server naming Python's and aiohttp's versions; it offers no setting
# for that (aio-libs/aiohttp#3607, #8870), so its default is replaced here, once.
web_response.SERVER_SOFTWARE = SERVER

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class WebFront:
    """What the public HTTP front is built from."""

    app: App
    stages: Stages  # the ways out, the metrics and the clock the pages share with the SMTP front
    portal: PortalDelivery | None  # the portal's pages, when the portal has keys
    readiness: Readiness


def build_web_app(front: WebFront) -> web.Application:
    """The aiohttp application with the built-in endpoints and every page."""
    app, stages = front.app, front.stages
    web_app = web.Application(middlewares=[_errors_hidden], client_max_size=1024 * 1024)
    web_app[READINESS] = front.readiness
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    staff.install(web_app, WebDeps(audit=app.audit, users=app.users, database=app.database))
    post.install(web_app, post.PostDeps(options=post_options(app), audit=app.audit,
                                        users=app.users, offices=app.offices),
                 throttle=post.api_throttle(app.database))
    verify.install(web_app, stages.workflow)
    cases.install(web_app, cases.CasesDeps(casework=app.casework(stages.clock)))
    if front.portal is not None:
        delivery = front.portal
        deps = portal.PortalDeps(
            store=app.portal, keyring=delivery.keyring, upstream=delivery.upstream,
            audit=app.audit, settings=delivery.settings, clock=lambda: delivery.clock(),
            metrics=stages.metrics, max_wrong_codes=app.config.portal.max_wrong_codes,
            delivery=delivery,
            per_client=portal.client_limit(app.portal, shared=not app.database.is_sqlite))
        portal.install(web_app, deps)
        portal.sweep_while_running(web_app, deps)
    alerts.attach(web_app, app.config, app.audit, stages.transport, app.database)
    web_app.on_response_prepare.append(_security_headers)
    return web_app


def build_metrics_app(metrics: Metrics, readiness: Readiness,
                      bearer_token: bytes | None) -> web.Application:
    """The metrics listener: /metrics, /healthz and /readyz with its problems; with a token,
    every request must carry it (`Authorization: Bearer <token>`)."""
    middlewares: list[Middleware] = [_errors_hidden]
    if bearer_token is not None:
        middlewares.insert(0, _bearer_required(bearer_token))
    web_app = web.Application(middlewares=middlewares, client_max_size=64 * 1024)
    web_app[METRICS] = metrics
    web_app[READINESS] = readiness
    web_app.router.add_get("/metrics", metrics_page)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz_detailed)
    web_app.on_response_prepare.append(_security_headers)
    return web_app


async def healthz(request: web.Request) -> web.Response:
    """The process is up and its event loop answers."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready to take mail: stores open, upstream reachable or outbox writable. The public
    front says only whether; the metrics listener's /readyz says what is wrong."""
    if await request.app[READINESS]():
        return web.Response(status=503, text="not ready\n")
    return web.Response(text="ready\n")


async def readyz_detailed(request: web.Request) -> web.Response:
    """/readyz with the list of what is not ready (the metrics listener only)."""
    problems = await request.app[READINESS]()
    if problems:
        return web.Response(status=503, text="not ready: " + ", ".join(problems) + "\n")
    return web.Response(text="ready\n")


async def metrics_page(request: web.Request) -> web.Response:
    """Counters and histograms in the Prometheus text format."""
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def _bearer_required(token: bytes) -> Middleware:
    """A middleware that answers 401 unless the request carries `token` as its bearer token.

    Both sides are hashed before the constant-time comparison, so not even the token's length
    leaks through timing.
    """
    expected = hashlib.sha256(token).digest()

    @web.middleware
    async def check(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        offered = hashlib.sha256(given.strip().encode("utf-8", "replace")).digest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(offered, expected):
            return web.Response(status=401, text="unauthorised\n",
                                headers={"WWW-Authenticate": 'Bearer realm="casegate-metrics"'})
        return await handler(request)

    return check


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
    # aiohttp adds its own Server (with its version) only when the response has none.
    response.headers["Server"] = SERVER
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
