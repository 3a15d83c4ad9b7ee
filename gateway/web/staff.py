"""The staff pages of the HTTP front, installed together: `/` (to the home page when signed in,
else to the sign-in page), `/home`, the stylesheet, sign-in and sign-out, and the governance view.
"""

from __future__ import annotations

from aiohttp import web

from gateway.web import auth, governance, home
from gateway.web.pages import (
    HOME_PAGE,
    STAFF_PAGES,
    STYLESHEET,
    WebDeps,
    our_headers,
    stylesheet,
    use_templates,
)


def install(web_app: web.Application, deps: WebDeps) -> None:
    """Add the staff pages to `web_app` (root, home, stylesheet, login/logout, governance)."""
    use_templates(web_app)
    web_app.setdefault(STAFF_PAGES, [HOME_PAGE])
    home.install(web_app)
    web_app.router.add_get(f"/static/{STYLESHEET}", stylesheet)
    auth.install(web_app, deps)
    governance.install(web_app, deps)
    web_app.on_response_prepare.append(our_headers)
