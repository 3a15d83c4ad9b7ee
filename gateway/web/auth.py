"""Staff sign-in for the web pages: sessions, CSRF tokens and role checks.

The API other modules use:

    from gateway.web.auth import require_user

    async def handler(request: web.Request) -> web.Response:
        staff = await require_user(request, "business-services")   # any of the roles
        ...  # on POST/PUT/PATCH/DELETE the CSRF token has already been checked
        return render(request, "my-form.html", title="...", staff=staff)

`require_user` redirects to the sign-in page when there is no live session, answers 403 when
the user has none of the roles, and for state-changing methods checks the form field
`csrf_token` (or the `X-CSRF-Token` header) against the session's token.

The session cookie is `__Host-casegate`: Secure, HttpOnly, SameSite=Strict, Path=/, a fresh
random token at every sign-in. The sign-in form itself is protected by a double-submit token in
the cookie `__Host-casegate-signin`. Sign-in failures are audit events ("login-failure"), and
repeated failures lock the client and the account out for a while ("login-lockout").
"""

from __future__ import annotations

import asyncio
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from gateway.stores.sessions import SessionStore
from gateway.stores.throttle import AuthThrottle, Throttle
from gateway.stores.users import User
from gateway.web.pages import HOME, PAGE_HEADERS, StaffSession, may_open, render
from policies.events import EventKind

if TYPE_CHECKING:
    from gateway.audit.trail import AuditLog
    from gateway.stores.users import UserStore
    from gateway.web.pages import WebDeps

SESSION_COOKIE = "__Host-casegate"
SIGNIN_COOKIE = "__Host-casegate-signin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
DEFAULT_NEXT = HOME
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_FIELD = 1024
_SAFE_NEXT = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?&=+\-]*")


@dataclass
class _Auth:
    sessions: SessionStore
    users: UserStore
    audit: AuditLog
    throttle: AuthThrottle


AUTH: web.AppKey[_Auth] = web.AppKey("casegate-web-auth", _Auth)


def install(web_app: web.Application, deps: WebDeps) -> None:
    """Add /login and /logout and the session store to `web_app`."""
    store = SessionStore(deps.database)
    # five failures per client or per account, then locked for 15 minutes (on every node)
    throttle = AuthThrottle(max_failures=5, free_failures=5, delay_step=0.0,
                            database=deps.database, scope="web-signin")
    web_app[AUTH] = _Auth(sessions=store, users=deps.users, audit=deps.audit, throttle=throttle)
    web_app.router.add_get("/login", login_form)
    web_app.router.add_post("/login", login_submit)
    web_app.router.add_post("/logout", logout)

    async def close_sessions(_: web.Application) -> None:
        store.close()
        throttle.close()

    web_app.on_cleanup.append(close_sessions)


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def current_user(request: web.Request) -> StaffSession | None:
    """The signed-in user, or None (no cookie, expired, signed out or account disabled)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    return await asyncio.to_thread(_signed_in, request.app[AUTH], token)


def _signed_in(auth: _Auth, token: str) -> StaffSession | None:
    """`current_user`'s reads of the session and user stores (in a worker thread)."""
    session = auth.sessions.get(token)
    if session is None:
        return None
    user = auth.users.get(session.address)
    if user is None or user.disabled:
        auth.sessions.delete(token)
        return None
    return StaffSession(user=user, csrf_token=session.csrf_token)


async def require_user(request: web.Request, *roles: str) -> StaffSession:
    """The signed-in user holding any of `roles` (none given: any user); see the module doc.

    Raises HTTPSeeOther to the sign-in page, or HTTPForbidden (a plain page) when the user lacks
    the role or a state-changing request has no valid CSRF token.
    """
    staff = await current_user(request)
    if staff is None:
        target = request.path_qs if request.method == "GET" else DEFAULT_NEXT
        raise web.HTTPSeeOther(location=f"/login?next={quote(target, safe='')}")
    if roles and not staff.has_role(*roles):
        await request.app[AUTH].audit.record_async(
            EventKind.ACCESS_DENIED, sender=staff.address, client=_client(request),
            path=request.path[:200], roles_needed=list(roles))
        raise _forbidden(
            request,
            "You do not have access to this page",
            "Your account does not have the role this page needs. "
            "Ask your line manager or IT if you think it should.",
            staff,
        )
    if request.method in UNSAFE_METHODS and not await _csrf_ok(request, staff.csrf_token):
        raise _forbidden(
            request,
            "This form has expired",
            "Go back, reload the page and try again.",
            staff,
        )
    return staff


async def _csrf_ok(request: web.Request, expected: str) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    if not given and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        form = await request.post()
        value = form.get(CSRF_FIELD, "")
        given = value if isinstance(value, str) else ""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def _forbidden(
    request: web.Request, heading: str, text: str, staff: StaffSession
) -> web.HTTPForbidden:
    page = render(request, "message.html", title=heading, status=403, staff=staff,
                  heading=heading, text=text)
    return web.HTTPForbidden(
        text=page.text, content_type="text/html", headers=PAGE_HEADERS
    )


def safe_next(value: str) -> str:
    """A same-site path to go to after sign-in; anything else becomes the default."""
    if value and len(value) <= MAX_FIELD and _SAFE_NEXT.fullmatch(value):
        return value
    return DEFAULT_NEXT


def _signin_page(
    request: web.Request,
    next_path: str,
    token: str,
    *,
    error: str = "",
    address: str = "",
    status: int = 200,
) -> web.Response:
    response = render(request, "login.html", title="Sign in", status=status, next=next_path,
                      token=token, address=address, error=error)
    response.set_cookie(
        SIGNIN_COOKIE, token, path="/", secure=True, httponly=True, samesite="Strict"
    )
    return response


async def login_form(request: web.Request) -> web.Response:
    """The sign-in form, with a fresh double-submit token."""
    return _signin_page(request, safe_next(request.query.get("next", "")),
                        secrets.token_urlsafe(32))


async def login_submit(request: web.Request) -> web.StreamResponse:
    """Check the token and the password; on success rotate the session and redirect."""
    auth = request.app[AUTH]
    form = await request.post()
    address = _field(form, "address").strip().lower()[:320]
    password = _field(form, "password")
    next_path = safe_next(_field(form, "next"))
    cookie_token = request.cookies.get(SIGNIN_COOKIE, "")
    given = _field(form, "signin_token")
    fresh = secrets.token_urlsafe(32)
    if not cookie_token or not hmac.compare_digest(given.encode(), cookie_token.encode()):
        return _signin_page(request, next_path, fresh, status=403, address=address,
                            error="The sign-in form expired. Please try again.")
    client = _client(request)
    keys = (f"client:{client}", f"account:{address}")
    if await auth.throttle.locked(*keys):
        await auth.audit.record_async(EventKind.LOGIN_REFUSED, sender=address, client=client,
                                      reason="locked")
        return _signin_page(request, next_path, fresh, status=429, address=address,
                            error="Too many failed sign-ins. Wait 15 minutes and try again.")
    user = await asyncio.to_thread(auth.users.authenticate, address, password)
    if user is None:
        locked = [v.throttle is Throttle.LOCK for v in await auth.throttle.failed(*keys)]
        await auth.audit.record_async(EventKind.LOGIN_FAILURE, sender=address, client=client)
        if any(locked):
            await auth.audit.record_async(EventKind.LOGIN_LOCKOUT, sender=address, client=client)
        return _signin_page(request, next_path, fresh, status=401, address=address,
                            error="The address or password is not right.")
    await auth.throttle.succeeded(*keys)
    token = await asyncio.to_thread(_rotated, auth.sessions,
                                    request.cookies.get(SESSION_COOKIE), user.address)
    await auth.audit.record_async(EventKind.LOGIN, sender=user.address, client=client)
    response = web.HTTPSeeOther(location=_landing(request, user, next_path))
    response.set_cookie(
        SESSION_COOKIE,
        token,
        path="/",
        secure=True,
        httponly=True,
        samesite="Strict",
        max_age=int(auth.sessions.lifetime_seconds),
    )
    response.del_cookie(SIGNIN_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (a POST with the CSRF token) and go back to the sign-in page."""
    staff = await require_user(request)
    auth = request.app[AUTH]
    await asyncio.to_thread(auth.sessions.delete, request.cookies.get(SESSION_COOKIE, ""))
    await auth.audit.record_async(EventKind.LOGOUT, sender=staff.address, client=_client(request))
    response = web.HTTPSeeOther(location="/login")
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    raise response


def _rotated(sessions: SessionStore, old: str | None, address: str) -> str:
    """End the browser's old session, if any, and start a new one: the new token."""
    if old:
        sessions.delete(old)
    return sessions.create(address)


def _landing(request: web.Request, user: User, next_path: str) -> str:
    """Where a fresh sign-in goes: the page asked for if the user may use it, else home."""
    return next_path if may_open(request.app, user, next_path.partition("?")[0]) else HOME


def _field(form: object, name: str) -> str:
    value = form.get(name, "") if hasattr(form, "get") else ""
    return value[:MAX_FIELD] if isinstance(value, str) else ""
