"""Staff web pages: server-rendered HTML, no JavaScript, no external assets.

- `render(template, title=..., brand=..., **values)`: a page from `gateway/templates/`, every value
  HTML-escaped unless it is `Markup` (HTML this package built itself, already escaped).
- `add_routes(web_app, ctx)` (listed in `gateway.http.ROUTE_MODULES` as "gateway.web"): a
  redirect from `/` to the sign-in page, the login/logout pages, the governance view and the
  stylesheet; it also runs the breach alerter (`gateway.alerts`) for as long as the HTTP front
  runs. `install(web_app, deps)` does the same from explicit parts (tests build one from a real
  AuditLog and UserStore).
- Every page of ours carries a strict Content-Security-Policy (no inline script, no framing, no
  referrer).

Other modules protect their pages with `gateway.web.auth.require_user` and put
`gateway.web.auth.csrf_field(session)` in every form; see that module.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.users import UserStore

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
STYLESHEET = "casegate.css"
OUR_PREFIXES = ("/login", "/logout", "/governance", f"/static/{STYLESHEET}")
HOME = "/login"  # where the site's root sends a browser


class Markup(str):
    """HTML that is already safe: built by our code from escaped parts."""

    __slots__ = ()


def escape(value: object) -> Markup:
    """`value` as HTML text (Markup passes through unchanged)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: list[Markup], separator: str = "") -> Markup:
    return Markup(separator.join(parts))


@cache
def _template(name: str) -> Template:
    text = resources.files("gateway").joinpath("templates", name).read_text("utf-8")
    return Template(text)


def fill(name: str, **values: object) -> Markup:
    """A template with its values escaped (a missing value is a bug: KeyError)."""
    return Markup(_template(name).substitute({k: escape(v) for k, v in values.items()}))


def render(
    name: str,
    *,
    title: str,
    status: int = 200,
    nav: Markup | None = None,
    brand: str = "casegate",
    **values: object,
) -> web.Response:
    """A full page: `name` inside the layout, with our security headers.

    `brand` heads the page and ends its title: "casegate" on staff pages, the organisation's
    name on the pages families and other recipients see.
    """
    body = fill(name, **values)
    page = fill("layout.html", title=title, nav=nav or Markup(""), brand=brand, body=body)
    return web.Response(
        text=page, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


async def root(request: web.Request) -> web.Response:
    """The site's root has no page of its own: send the browser to the staff sign-in."""
    raise web.HTTPFound(HOME)


async def stylesheet(request: web.Request) -> web.Response:
    """The one stylesheet, served from the package (no external assets)."""
    return web.Response(
        text=_stylesheet_text(),
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@cache
def _stylesheet_text() -> str:
    return resources.files("gateway").joinpath("static", STYLESHEET).read_text("utf-8")


async def _our_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Our pages' headers also on redirects and error pages of our paths."""
    if request.path == "/" or request.path.startswith(OUR_PREFIXES):
        for header, value in PAGE_HEADERS.items():
            if header == "Cache-Control" and request.path.startswith("/static/"):
                continue
            response.headers.setdefault(header, value)


@dataclass(frozen=True)
class WebDeps:
    """What the staff pages need from the running gateway."""

    audit: AuditLog
    users: UserStore
    data_dir: Path


def install(web_app: web.Application, deps: WebDeps) -> None:
    """Add the staff pages to `web_app` (the root, the stylesheet, login/logout, governance)."""
    from gateway.web import auth, governance

    web_app.router.add_get("/", root)
    web_app.router.add_get(f"/static/{STYLESHEET}", stylesheet)
    auth.install(web_app, deps)
    governance.install(web_app, deps)
    web_app.on_response_prepare.append(_our_headers)


def add_routes(web_app: web.Application, ctx: Any) -> None:
    """The `ROUTE_MODULES` entry point: `ctx` is the gateway's `Services`."""
    from gateway import alerts

    install(web_app, WebDeps(audit=ctx.app.audit, users=ctx.users, data_dir=ctx.app.data_dir))
    alerts.attach(web_app, ctx)
