"""Staff web pages: server-rendered HTML, no JavaScript, no external assets.

- Pages are Jinja2 templates in `gateway/web/templates/` (through aiohttp-jinja2), auto-escaped:
  every value is HTML-escaped unless it is `markupsafe.Markup` (HTML a sanitiser or a template
  made). `render(request, template, title=..., staff=..., **values)` answers with one of them
  inside the layout and our security headers; `use_templates(web_app)` sets the engine up once
  (each module's `install` calls it).
- Staff pages register themselves with `add_staff_page(web_app, StaffPage(...))`: the home page
  and the navigation bar list the registered pages whose roles the signed-in user holds, so a
  page that is not installed is never offered.
- `gateway.web.staff.install(web_app, deps)` adds `/` (to the home page when signed in, else to
  the sign-in page), `/home`, the login/logout pages, the governance view and the stylesheet.
- Every page of ours carries a strict Content-Security-Policy (no inline script, no framing, no
  referrer).

Other modules protect their pages with `gateway.web.auth.require_user`; every form of a signed-in
page carries `<input type="hidden" name="csrf_token" value="{{ csrf_token }}">` (`render` puts
the session's token in the context when given `staff`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from gateway.stores.users import User

if TYPE_CHECKING:
    from gateway.audit.trail import AuditLog
    from gateway.stores.users import UserStore
    from transports.database import Database

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
HOME = "/home"  # the signed-in staff member's home page
SIGN_IN = "/login"
OUR_PREFIXES = ("/login", "/logout", HOME, "/governance", "/verifications", "/cases",
                f"/static/{STYLESHEET}")
_BREAK_AFTER = re.compile(r"([@.,])")


@dataclass(frozen=True)
class StaffPage:
    """A page staff can open from the home page and the navigation bar."""

    path: str
    label: str  # the navigation's link text
    description: str  # one sentence on the home page
    roles: tuple[str, ...] = ()  # any of these; empty: every signed-in member of staff

    def allows(self, user: User) -> bool:
        return not self.roles or any(role in user.roles for role in self.roles)

    def covers(self, path: str) -> bool:
        """Whether `path` is this page or one below it (/governance/events/7)."""
        return path == self.path or path.startswith(self.path + "/")


STAFF_PAGES: web.AppKey[list[StaffPage]] = web.AppKey("casegate-staff-pages")
HOME_PAGE = StaffPage(HOME, "Home", "The pages you can use.")


def add_staff_page(web_app: web.Application, page: StaffPage) -> None:
    """Offer `page` on the home page and in the navigation bar (to the roles it names)."""
    web_app.setdefault(STAFF_PAGES, [HOME_PAGE]).append(page)


def staff_pages(app: web.Application, user: User) -> list[StaffPage]:
    """The registered pages `user` may use, in the order they were added."""
    return [page for page in app.get(STAFF_PAGES, [HOME_PAGE]) if page.allows(user)]


def may_open(app: web.Application, user: User, path: str) -> bool:
    """Whether `path` is a staff page `user` may use (unknown paths: no)."""
    return any(page.covers(path) for page in staff_pages(app, user))


def breakable(value: object) -> Markup:
    """`value` escaped, with a line-break opportunity after each @ . and , (addresses, lists),
    so a narrow screen wraps an address there rather than in the middle of a word."""
    pieces = _BREAK_AFTER.split(str(value))  # text, separator, text, separator, ...
    joined = [escape(text) + escape(sep) for text, sep in zip(pieces[::2], [*pieces[1::2], ""],
                                                               strict=True)]
    return Markup("<wbr>").join(part for part in joined if part)


def plural(count: int, word: str, many: str = "") -> str:
    """'1 event', '2 events' ('many' for irregular plurals)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def yes_no(value: object) -> str:
    """How a page shows a recorded value: booleans as yes/no, lists comma-separated."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(yes_no(v) for v in value)
    return str(value)


FILTERS: dict[str, Callable[..., str]] = {
    "breakable": breakable, "plural": plural, "yes_no": yes_no}


def use_templates(web_app: web.Application) -> jinja2.Environment:
    """The Jinja2 environment of `web_app`, set up on first call (auto-escaping on for .html).

    Every template, and the stylesheet, is read now, when the pages are installed: a request
    never reads a file.
    """
    if aiohttp_jinja2.APP_KEY in web_app:
        return web_app[aiohttp_jinja2.APP_KEY]
    _stylesheet_text()
    return aiohttp_jinja2.setup(
        web_app,
        loader=preloaded(jinja2.PackageLoader("gateway.web", "templates")),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,  # a value the template needs and nobody gave: a bug
        trim_blocks=True,
        lstrip_blocks=True,
        default_helpers=False,
        filters=FILTERS,
    )


def preloaded(*loaders: jinja2.BaseLoader) -> jinja2.DictLoader:
    """Every template `loaders` offer, read now (the first loader offering a name wins)."""
    reader = jinja2.Environment(autoescape=True)
    sources: dict[str, str] = {}
    for loader in loaders:
        for name in loader.list_templates():
            sources.setdefault(name, loader.get_source(reader, name)[0])
    return jinja2.DictLoader(sources)


@dataclass(frozen=True)
class StaffSession:
    """The signed-in user of this request."""

    user: User
    csrf_token: str

    @property
    def address(self) -> str:
        return self.user.address

    def has_role(self, *roles: str) -> bool:
        return any(role in self.user.roles for role in roles)


def render(
    request: web.Request,
    name: str,
    *,
    title: str,
    status: int = 200,
    staff: StaffSession | None = None,
    brand: str = "casegate",
    **values: Any,
) -> web.Response:
    """A full page from template `name` (which extends the layout), with our security headers.

    `staff`, when given, puts the navigation bar of the signed-in user in the header. `brand`
    heads the page and ends its title: "casegate" on staff pages, the organisation's name on the
    pages families and other recipients see.
    """
    nav = _nav(request, staff) if staff is not None else None
    context = {"title": title, "brand": brand, "nav": nav,
               "csrf_token": staff.csrf_token if staff is not None else "", **values}
    response = aiohttp_jinja2.render_template(name, request, context, status=status)
    response.headers.update(PAGE_HEADERS)
    return response


@dataclass(frozen=True)
class NavLink:
    path: str
    label: str
    current: bool


@dataclass(frozen=True)
class Nav:
    """What the header's navigation bar shows for one request."""

    address: str
    csrf_token: str
    links: tuple[NavLink, ...]


def _nav(request: web.Request, staff: StaffSession) -> Nav:
    links = tuple(NavLink(page.path, page.label, page.covers(request.path))
                  for page in staff_pages(request.app, staff.user))
    return Nav(address=staff.address, csrf_token=staff.csrf_token, links=links)


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
    return resources.files("gateway.web").joinpath("static", STYLESHEET).read_text("utf-8")


async def our_headers(request: web.Request, response: web.StreamResponse) -> None:
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
    database: Database  # the stores' engine: the web sessions are kept there
