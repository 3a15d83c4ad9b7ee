"""The site's root and the staff home page.

    GET /       the home page when signed in, else the sign-in page
    GET /home   the pages the signed-in member of staff's roles allow (see `StaffPage`)
"""

from __future__ import annotations

from aiohttp import web

from gateway.web.auth import current_user, require_user
from gateway.web.pages import HOME, SIGN_IN, render, staff_pages


def install(web_app: web.Application) -> None:
    web_app.router.add_get("/", root)
    web_app.router.add_get(HOME, home)


async def root(request: web.Request) -> web.Response:
    """The site's root has no page of its own: home when signed in, else the sign-in page."""
    raise web.HTTPFound(HOME if await current_user(request) is not None else SIGN_IN)


async def home(request: web.Request) -> web.Response:
    """The pages the signed-in member of staff may use, each with one sentence."""
    staff = await require_user(request)
    pages = [page for page in staff_pages(request.app, staff.user) if page.path != HOME]
    return render(request, "home.html", title="Home", staff=staff, pages=pages)
