"""The secure portal's pages for recipients, and the staff API `/api/messages`.

Recipient pages (server-rendered, no JavaScript, work on a phone browser), all under the link
token from the notification, `/portal/{token}`:

    GET  /portal/{token}                       ask for a code / enter it; once in, the message
    POST /portal/{token}/code                  email a fresh one-time code to the recipient
    POST /portal/{token}/verify                check the code; on success a new session
    GET  /portal/{token}/attachments/{id}      one attachment, by opaque id, real name and type
    POST /portal/{token}/reply                 secure reply (multipart, with files) to the sender
    POST /portal/{token}/signout

- A session (cookie `__Host-casegate-portal`: Secure, HttpOnly, SameSite=Strict, Path=/) is
  bound to one copy; the cookie is replaced by a fresh token when the code is accepted. Every
  form carries the session's CSRF token. A copy is opened only by its own link, its own code
  and a session made for it.
- Codes: see `gateway.stores.portal` (six digits, ten minutes, single use, five tries).
  `portal.max_wrong_codes` wrong codes in total, over every code, lock the copy: its page
  then tells the recipient to ask the sender, who re-issues it (`reissue_copy`: a new link
  mailed to the recipient, the old one dead; `casegate messages reissue ID` or the API).
- Rate limits: requests per client address per minute, and code requests per copy per hour.
- Withdrawn and expired copies say so (410); an expired copy is destroyed on first sight.
- Every view, download, reply, lockout, revocation and expiry is an audit event.

Staff API (HTTP Basic with a staff account, like `/api/post`, or a signed-in staff session
with the CSRF token in `X-CSRF-Token` for the POST): `GET /api/messages` (the caller's copies;
governance sees all), `GET /api/messages/{id}` (read status), `POST /api/messages/{id}/revoke`,
`POST /api/messages/{id}/reissue` (a new link for the recipient; unlocks a locked copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import nh3
import structlog
from aiohttp import BodyPartReader, web

from gateway.audit.trail import AuditLog
from gateway.observe.metrics import Metrics, PortalView
from gateway.stores.portal import (
    DEFAULT_MAX_WRONG_CODES,
    CodeCheck,
    CopyState,
    PortalCopy,
    PortalSession,
    PortalStore,
    expire_copy,
    revoke_copy,
    sweep_expired,
    token_hash,
)
from gateway.stores.users import UserRole
from gateway.web.auth import require_user
from gateway.web.pages import PAGE_HEADERS, Markup, render, use_templates
from gateway.web.post import POST_STATE, basic_user
from policies.events import EventKind
from transports.base import Copy, Transport
from transports.crypto import CryptoError, Keyring, unseal
from transports.portal import (
    PortalDelivery,
    PortalSettings,
    Upload,
    attachment,
    code_email,
    read_message,
    reply_email,
)

log = structlog.get_logger("casegate.portal")

COOKIE = "__Host-casegate-portal"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 30 * 60
REQUESTS_PER_MINUTE = 60  # per client address, every portal page
CODES_PER_HOUR = 5  # per copy
SWEEP_SECONDS = 600.0  # how often expired copies are destroyed in the background
MAX_REPLY_TEXT = 100 * 1024
MAX_REPLY_BYTES = 20 * 1024 * 1024
MAX_REPLY_FILES = 10
HTML_TAGS = {
    "a", "b", "i", "u", "em", "strong", "p", "br", "div", "span", "ul", "ol", "li", "table",
    "thead", "tbody", "tr", "td", "th", "h1", "h2", "h3", "h4", "blockquote", "pre", "code",
    "hr", "small", "sub", "sup",
}
DOWNLOAD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class WindowLimit:
    """At most `limit` events per key in each `window` seconds (fixed windows, bounded table)."""

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.limit, self.window, self._clock, self._max_keys = limit, window, clock, max_keys
        self._counts: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        start, count = self._counts.get(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if len(self._counts) >= self._max_keys and key not in self._counts:
            self._counts.clear()  # a flood of addresses: start afresh rather than grow
        self._counts[key] = (start, count + 1)
        return count < self.limit

    async def admit(self, key: str) -> bool:
        return self.allow(key)


class SharedWindowLimit:
    """`WindowLimit` counted in the portal store (fixed windows of the wall clock), so that a
    client's requests to every node count: for several nodes on one PostgreSQL database."""

    def __init__(self, store: PortalStore, limit: int, window: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.limit, self.window, self._store, self._clock = limit, window, store, clock

    async def admit(self, key: str) -> bool:
        hits = await asyncio.to_thread(self._store.count_request, key, self.window,
                                       self._clock())
        return hits <= self.limit


def client_limit(store: PortalStore, *, shared: bool) -> WindowLimit | SharedWindowLimit:
    """The per-client request limit: in this process (one node), or in the shared store."""
    if shared:
        return SharedWindowLimit(store, REQUESTS_PER_MINUTE, 60.0)
    return WindowLimit(REQUESTS_PER_MINUTE, 60.0)


@dataclass
class PortalDeps:
    """What the portal pages need from the running gateway."""

    store: PortalStore
    keyring: Keyring
    upstream: Transport
    audit: AuditLog
    settings: PortalSettings
    clock: Callable[[], datetime]
    per_client: WindowLimit | SharedWindowLimit = field(
        default_factory=lambda: WindowLimit(REQUESTS_PER_MINUTE, 60.0))
    metrics: Metrics = field(default_factory=Metrics)  # the gateway's, for portal views
    max_wrong_codes: int = DEFAULT_MAX_WRONG_CODES  # in total per copy, then it is locked
    delivery: PortalDelivery | None = None  # makes re-issued links' notifications


PORTAL: web.AppKey[PortalDeps] = web.AppKey("casegate-portal", PortalDeps)


def install(web_app: web.Application, deps: PortalDeps) -> None:
    use_templates(web_app)
    web_app[PORTAL] = deps
    web_app.router.add_get("/portal/{token}", open_copy)
    web_app.router.add_post("/portal/{token}/code", request_code)
    web_app.router.add_post("/portal/{token}/verify", verify_code)
    web_app.router.add_get("/portal/{token}/attachments/{attachment}", download)
    web_app.router.add_post("/portal/{token}/reply", reply)
    web_app.router.add_post("/portal/{token}/signout", sign_out)
    web_app.router.add_get("/api/messages", api_list)
    web_app.router.add_get("/api/messages/{id}", api_show)
    web_app.router.add_post("/api/messages/{id}/revoke", api_revoke)
    web_app.router.add_post("/api/messages/{id}/reissue", api_reissue)


def sweep_while_running(web_app: web.Application, deps: PortalDeps) -> None:
    """Destroy expired copies every `SWEEP_SECONDS` while the HTTP front runs."""

    async def sweeper(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweep_forever(deps))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    web_app.cleanup_ctx.append(sweeper)


async def _sweep_forever(deps: PortalDeps) -> None:
    """Destroy expired copies now and then (they are also destroyed when next opened)."""
    while True:
        try:
            await asyncio.to_thread(sweep_expired, deps.store, deps.audit, deps.clock())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("portal-sweep-failed")
        await asyncio.sleep(SWEEP_SECONDS)


# -- finding the copy and the session ----------------------------------------------------


@dataclass(frozen=True)
class _Visit:
    deps: PortalDeps
    copy: PortalCopy
    session: PortalSession | None
    token: str

    @property
    def base(self) -> str:
        return f"/portal/{quote(self.token, safe='')}"

    @property
    def signed_in(self) -> bool:
        return self.session is not None and self.session.signed_in


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def _page(request: web.Request, heading: str, text: str, status: int) -> web.Response:
    """A short page with a heading and one sentence, under the organisation's name."""
    return render(request, "message.html", title=heading, status=status, heading=heading,
                  text=text, brand=request.app[PORTAL].settings.organisation)


async def _visit(request: web.Request) -> _Visit:
    """The copy this link opens, after the rate limit; withdrawn/expired/unknown end here."""
    deps = request.app[PORTAL]
    if not await deps.per_client.admit(_client(request)):
        raise _Raised(_page(request, "Too many requests", "Please wait a minute and try again.",
                            429))
    token = request.match_info["token"]
    copy = await asyncio.to_thread(deps.store.by_link, token)
    if copy is None:
        raise _Raised(_page(request, "This link does not work",
                            "Check that you copied the whole link from the email.", 404))
    now = deps.clock()
    if copy.state is not CopyState.EXPIRED and copy.expires <= now:
        await asyncio.to_thread(expire_copy, deps.store, deps.audit, copy.id, reason="expired")
        copy = await asyncio.to_thread(deps.store.get, copy.id) or copy
    if copy.state is CopyState.REVOKED:
        raise _Raised(_page(request, "This message was withdrawn",
                            f"{copy.sender} withdrew this message. Contact them if you "
                            "still need the information.", 410))
    if copy.state is CopyState.EXPIRED:
        raise _Raised(_page(request, "This message has expired",
                            "Secure messages can be read for a limited time only. Contact "
                            f"{copy.sender} if you still need the information.", 410))
    if await asyncio.to_thread(deps.store.is_locked, copy.id):
        raise _Raised(_locked_page(request, copy))
    session = await asyncio.to_thread(deps.store.session, request.cookies.get(COOKIE, ""), now)
    if session is not None and session.copy_id != copy.id:
        session = None  # a session for another copy never opens this one
    return _Visit(deps=deps, copy=copy, session=session, token=token)


def _locked_page(request: web.Request, copy: PortalCopy) -> web.Response:
    """What a locked copy's link shows: why, and that only the sender can open it again."""
    return _page(request, "This message is locked",
                 "Too many wrong codes were entered for this message, so it has been locked to "
                 f"protect it. Ask {copy.sender} to send it to you again: you will get an "
                 "email with a new link.", 403)


class _Raised(web.HTTPException):
    """Raise a rendered page as the answer (status and headers from the page)."""

    def __init__(self, response: web.Response) -> None:
        self.status_code = response.status
        super().__init__(text=response.text, content_type="text/html", headers=PAGE_HEADERS)


def _csrf_ok(visit: _Visit, given: object) -> bool:
    return (visit.session is not None and isinstance(given, str) and bool(given)
            and hmac.compare_digest(given.encode(), visit.session.csrf_token.encode()))


def _set_cookie(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(COOKIE, token, path="/", secure=True, httponly=True,
                        samesite="Strict", max_age=SESSION_SECONDS)


async def _audit(visit: _Visit, kind: EventKind, request: web.Request, **extra: Any) -> None:
    await visit.deps.audit.record_async(
        kind, sender=visit.copy.sender, recipients=[visit.copy.recipient],
        decision_id=visit.copy.decision_id, copy_id=visit.copy.id, client=_client(request),
        **extra)


# -- the recipient's pages ---------------------------------------------------------------


# What a refusal of `_visit` showed, by its status, for the portal views metric.
REFUSED_VIEWS: dict[int, PortalView] = {429: "rate-limited", 404: "unknown-link", 410: "gone"}


async def open_copy(request: web.Request) -> web.Response:
    """The message for a signed-in session; otherwise the code page (with a fresh session)."""
    metrics = request.app[PORTAL].metrics
    try:
        visit = await _visit(request)
    except _Raised as refused:
        metrics.portal_viewed(REFUSED_VIEWS.get(refused.status_code, "refused"))
        raise
    metrics.portal_viewed("message" if visit.signed_in else "landing")
    if visit.signed_in:
        return await _message_page(request, visit)
    return await _landing(request, visit, "", 200, sent=request.query.get("sent") == "1")


async def _landing(request: web.Request, visit: _Visit, error: str, status: int, *,
                   sent: bool = False) -> web.Response:
    session: PortalSession | None = visit.session
    token = None
    if session is None:
        token, session = await asyncio.to_thread(
            visit.deps.store.create_session, visit.copy.id, signed_in=False,
            now=visit.deps.clock(), lifetime_seconds=SESSION_SECONDS)
    assert session is not None
    response = render(request, "portal-landing.html", title="Secure message", status=status,
                      brand=visit.deps.settings.organisation,
                      sender=visit.copy.sender, organisation=visit.deps.settings.organisation,
                      masked=_mask(visit.copy), sent=sent, error=error, base=visit.base,
                      csrf_token=session.csrf_token)
    if token is not None:
        _set_cookie(response, token)
    return response


def _mask(copy: PortalCopy) -> str:
    local, _, domain = copy.recipient.partition("@")
    return f"{local[:1]}***@{domain}"


async def request_code(request: web.Request) -> web.Response:
    """Email a fresh code to the copy's own recipient (throttled per copy)."""
    visit = await _visit(request)
    form = await request.post()
    if not _csrf_ok(visit, form.get(CSRF_FIELD)):
        return await _landing(request, visit, "The form expired. Please try again.", 403)
    deps, now = visit.deps, visit.deps.clock()
    recent = await asyncio.to_thread(deps.store.code_requests_since, visit.copy.id,
                                     now - timedelta(hours=1))
    if recent >= CODES_PER_HOUR:
        await _audit(visit, EventKind.PORTAL_REFUSED, request, reason="code-requests")
        return await _landing(request, visit, "Too many codes were asked for. Wait an hour "
                              "and try again.", 429)
    code = await asyncio.to_thread(deps.store.issue_code, visit.copy.id, now)
    result = await deps.upstream.deliver(
        [code_email(deps.settings, visit.copy.recipient, visit.copy.sender, code, now)])
    if not result.ok:
        log.warning("portal-code-not-sent", outcome=result.outcome.value)
        return await _landing(request, visit, "The code could not be sent just now. Please "
                              "try again in a few minutes.", 503)
    await _audit(visit, EventKind.PORTAL_CODE_SENT, request)
    raise web.HTTPSeeOther(location=f"{visit.base}?sent=1")


async def verify_code(request: web.Request) -> web.Response:
    """Check the code; on success replace the session with a signed-in one."""
    visit = await _visit(request)
    form = await request.post()
    if not _csrf_ok(visit, form.get(CSRF_FIELD)):
        return await _landing(request, visit, "The form expired. Please try again.", 403)
    given = form.get("code")
    code = given.strip()[:6] if isinstance(given, str) else ""
    deps = visit.deps
    check = await asyncio.to_thread(deps.store.check_code, visit.copy.id, code, deps.clock(),
                                    max_wrong_codes=deps.max_wrong_codes)
    if check is CodeCheck.ACCEPTED:
        await asyncio.to_thread(deps.store.end_session, request.cookies.get(COOKIE, ""))
        token, _ = await asyncio.to_thread(deps.store.create_session, visit.copy.id,
                                           signed_in=True, now=deps.clock(),
                                           lifetime_seconds=SESSION_SECONDS)
        await _audit(visit, EventKind.PORTAL_LOGIN, request)
        response = web.HTTPSeeOther(location=visit.base)
        _set_cookie(response, token)
        raise response
    if check is CodeCheck.COPY_LOCKED:
        await _audit(visit, EventKind.PORTAL_COPY_LOCKED, request,
                     wrong_codes=deps.max_wrong_codes)
        log.warning("portal-copy-locked", copy_id=visit.copy.id)
        return _locked_page(request, visit.copy)
    if check is CodeCheck.LOCKED:
        await _audit(visit, EventKind.PORTAL_LOCKOUT, request)
        text = "That code was wrong too many times and no longer works. Ask for a new code."
    elif check is CodeCheck.WRONG:
        await _audit(visit, EventKind.PORTAL_CODE_FAILURE, request)
        text = "That code is not right. Check the latest email and try again."
    elif await asyncio.to_thread(deps.store.code_requests_since, visit.copy.id,
                                 deps.clock() - timedelta(hours=1)):
        await _audit(visit, EventKind.PORTAL_CODE_FAILURE, request, reason="no-live-code")
        text = "That code has expired or was already used. Ask for a new code."
    else:  # no code asked for in the last hour, so none can be live (codes last 10 minutes)
        await _audit(visit, EventKind.PORTAL_CODE_FAILURE, request, reason="no-code-requested")
        text = ("Request a code first: press \u201cEmail me a code\u201d, then enter the code "
                "from the email.")
    return await _landing(request, visit, text, 401)


async def _plaintext(request: web.Request, visit: _Visit) -> bytes:
    """The decrypted copy; a wrong or missing key is a plain error page, never garbage."""
    sealed = await asyncio.to_thread(visit.deps.store.sealed, visit.copy.id)
    try:
        if sealed is None:
            raise CryptoError("no content")
        return await asyncio.to_thread(unseal, visit.deps.keyring, sealed,
                                       copy_id=visit.copy.id, recipient=visit.copy.recipient)
    except CryptoError as exc:
        log.error("portal-unseal-failed", copy_id=visit.copy.id, problem=str(exc))
        raise _Raised(_page(request, "This message cannot be opened",
                            "Something is wrong with the stored message. Contact "
                            f"{visit.copy.sender} and ask them to send it again.", 500)) from None


@dataclass(frozen=True)
class _Listed:
    """One attachment as the message page lists it."""

    id: str
    filename: str
    content_type: str
    size: str


async def _message_page(request: web.Request, visit: _Visit) -> web.Response:
    assert visit.session is not None
    data = await _plaintext(request, visit)
    message = await asyncio.to_thread(read_message, data)
    ids = await asyncio.to_thread(visit.deps.store.attachment_ids, visit.copy.id)
    listed = [_Listed(id=quote(ids[a.part], safe=""), filename=a.filename,
                      content_type=a.content_type, size=_size(a.size))
              for a in message.attachments if a.part in ids]
    await asyncio.to_thread(visit.deps.store.record_view, visit.copy.id, visit.deps.clock())
    await _audit(visit, EventKind.PORTAL_VIEW, request)
    return render(request, "portal-message.html", title="Secure message",
                  sender=visit.copy.sender, brand=visit.deps.settings.organisation,
                  recipient=visit.copy.recipient, sent=message.sent or "not stated",
                  subject=message.subject or "(no subject)",
                  expires=visit.copy.expires.strftime("%d %B %Y %H:%M"),
                  html=_clean_html(message.html), paragraphs=_paragraphs(message.text),
                  attachments=listed, base=visit.base, csrf_token=visit.session.csrf_token)


def _clean_html(html: str) -> Markup:
    """The HTML body sanitised (no scripts, styles, images or other remote content); "" if none."""
    if not html.strip():
        return Markup("")
    return Markup(nh3.clean(html, tags=HTML_TAGS, attributes={"a": {"href", "title"}},
                            url_schemes={"https", "http", "mailto"}, strip_comments=True))


def _paragraphs(text: str) -> list[list[str]]:
    """The plain-text body as paragraphs of lines (the template escapes them)."""
    blocks = text.replace("\r\n", "\n").split("\n\n")
    return [block.split("\n") for block in blocks if block.strip()]


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KB" if size < 1024**2 \
        else f"{size / 1024**2:.1f} MB"


def _require_signed_in(request: web.Request, visit: _Visit) -> None:
    if not visit.signed_in:
        raise _Raised(_page(request, "Please enter your code first",
                            "Open the link from your email again and enter a one-time code.",
                            403))


async def download(request: web.Request) -> web.StreamResponse:
    """One attachment of this copy, by its opaque id, with its real name and type."""
    visit = await _visit(request)
    _require_signed_in(request, visit)
    part = await asyncio.to_thread(visit.deps.store.attachment_part, visit.copy.id,
                                   request.match_info["attachment"])
    data = await _plaintext(request, visit) if part is not None else b""
    found = await asyncio.to_thread(attachment, data, part) if part is not None else None
    if found is None:
        return _page(request, "No such attachment",
                     "That attachment is not part of this message.", 404)
    info, content = found
    await asyncio.to_thread(visit.deps.store.record_download, visit.copy.id)
    await _audit(visit, EventKind.PORTAL_DOWNLOAD, request, attachment_type=info.content_type,
                 size=len(content))
    headers = {**DOWNLOAD_HEADERS, "Content-Disposition":
               f"attachment; filename*=UTF-8''{quote(info.filename, safe='')}"}
    return web.Response(body=content, content_type=info.content_type, headers=headers)


async def reply(request: web.Request) -> web.Response:
    """Send the recipient's reply, with files, to the sender's mailbox through the upstream."""
    visit = await _visit(request)
    _require_signed_in(request, visit)
    if request.content_type != "multipart/form-data":  # not our form: never a server error
        return _page(request, "Your reply was not sent", "The form was not understood.", 400)
    try:
        fields, uploads = await _read_reply(request)
    except ValueError as exc:
        return _page(request, "Your reply was not sent", str(exc), 413)
    if not _csrf_ok(visit, fields.get(CSRF_FIELD)):
        return _page(request, "This form has expired",
                     "Go back, reload the page and try again.", 403)
    text = fields.get("text", "").strip()
    if not text and not uploads:
        return _page(request, "Your reply was not sent", "Write a reply or attach a file.", 400)
    deps = visit.deps
    original = await asyncio.to_thread(read_message, await _plaintext(request, visit))
    mail = reply_email(deps.settings, recipient=visit.copy.recipient, sender=visit.copy.sender,
                       decision_id=visit.copy.decision_id, text=text, uploads=uploads,
                       now=deps.clock(), original_subject=original.subject,
                       original_id=original.message_id)
    result = await deps.upstream.deliver([mail])
    if not result.ok:
        log.warning("portal-reply-not-sent", outcome=result.outcome.value)
        return _page(request, "Your reply was not sent",
                     "It could not be delivered just now. Go back "
                     "and try again in a few minutes.", 503)
    await asyncio.to_thread(deps.store.record_reply, visit.copy.id)
    await _audit(visit, EventKind.PORTAL_REPLY, request, attachments=len(uploads),
                 size=sum(len(u.data) for u in uploads) + len(text))
    return _page(request, "Your reply was sent",
                 f"{visit.copy.sender} will receive it in their "
                 "mailbox. You can close this page.", 200)


async def _read_reply(request: web.Request) -> tuple[dict[str, str], list[Upload]]:
    """The reply form's fields and files, within size limits (ValueError with a sentence)."""
    fields: dict[str, str] = {}
    uploads: list[Upload] = []
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ValueError("The form was not understood.")
        if part.filename is None:
            raw = await part.read(decode=True)
            if len(raw) > MAX_REPLY_TEXT:
                raise ValueError("The reply text is too long.")
            fields[part.name or ""] = raw.decode("utf-8", "replace")
            continue
        if not part.filename:
            await part.read()  # an empty file input
            continue
        if len(uploads) >= MAX_REPLY_FILES:
            raise ValueError(f"Attach at most {MAX_REPLY_FILES} files.")
        chunks: list[bytes] = []
        while chunk := await part.read_chunk():
            total += len(chunk)
            if total > MAX_REPLY_BYTES:
                raise ValueError("The attachments are too large (20 MB at most).")
            chunks.append(chunk)
        uploads.append(Upload(filename=part.filename,
                              content_type=part.headers.get("Content-Type",
                                                            "application/octet-stream"),
                              data=b"".join(chunks)))
    return fields, uploads


async def sign_out(request: web.Request) -> web.StreamResponse:
    visit = await _visit(request)
    form = await request.post()
    if _csrf_ok(visit, form.get(CSRF_FIELD)):
        await asyncio.to_thread(visit.deps.store.end_session, request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther(location=visit.base)
    response.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
    raise response


# -- the staff API -----------------------------------------------------------------------


async def _staff(request: web.Request) -> tuple[str, bool]:
    """(address, is governance) of the caller: HTTP Basic, else a signed-in session."""
    if request.headers.get("Authorization"):
        user = await basic_user(request, request.app[POST_STATE])
        return user.address, UserRole.GOVERNANCE.value in user.roles
    staff = await require_user(request)
    return staff.address, staff.has_role(UserRole.GOVERNANCE.value)


async def _owned(request: web.Request) -> tuple[PortalDeps, PortalCopy, str]:
    deps = request.app[PORTAL]
    address, governance = await _staff(request)
    copy = await asyncio.to_thread(deps.store.get, request.match_info["id"][:64])
    if copy is None or copy.state is CopyState.PENDING or (
            copy.sender != address and not governance):
        raise web.HTTPNotFound(text='{"error": "No such message."}',
                               content_type="application/json")
    return deps, copy, address


async def api_list(request: web.Request) -> web.Response:
    """The caller's portal copies with their read status (governance: everyone's)."""
    deps = request.app[PORTAL]
    address, governance = await _staff(request)
    copies = await asyncio.to_thread(deps.store.list, None if governance else address)
    return web.json_response({"messages": [c.to_json() for c in copies]})


async def api_show(request: web.Request) -> web.Response:
    """One copy's read status: opened when, views, downloads, replies, state."""
    _, copy, _ = await _owned(request)
    return web.json_response(copy.to_json())


async def api_revoke(request: web.Request) -> web.Response:
    """Withdraw a copy: the recipient then sees that it was withdrawn."""
    deps, copy, address = await _owned(request)
    if not await asyncio.to_thread(revoke_copy, deps.store, deps.audit, copy.id, by=address,
                                   now=deps.clock()):
        return web.json_response({"error": f"The message is {copy.state.value}, not active."},
                                 status=409)
    updated = await asyncio.to_thread(deps.store.get, copy.id)
    assert updated is not None
    return web.json_response(updated.to_json())


async def api_reissue(request: web.Request) -> web.Response:
    """Give a copy a new link, mailed to its recipient (the old link stops working); this is
    how the sender opens a copy that too many wrong codes locked."""
    deps, copy, address = await _owned(request)
    if deps.delivery is None:
        return web.json_response({"error": "The portal cannot send mail here."}, status=503)
    result = await reissue_copy(deps.store, deps.audit, deps.delivery, copy.id, by=address)
    if not result.ok:
        return web.json_response({"error": result.sentence},
                                 status=503 if result.temporary else 409)
    updated = await asyncio.to_thread(deps.store.get, copy.id)
    assert updated is not None
    return web.json_response(updated.to_json())


# -- re-issuing a copy (the staff API and `casegate messages reissue`) ---------------------


@dataclass(frozen=True)
class Reissued:
    """The outcome of a re-issue, with one sentence for the sender."""

    ok: bool
    sentence: str
    temporary: bool = False  # the new link's email could not be sent: re-issue again later


async def reissue_copy(store: PortalStore, audit: AuditLog, delivery: PortalDelivery,
                       copy_id: str, *, by: str) -> Reissued:
    """A new link for an active copy, mailed to its recipient; the old link, any code and any
    session end, and a lock from too many wrong codes is lifted. An audit event
    "portal-reissue" says who did it, whether the copy was locked, and whether the mail went.

    The new link is stored before the email is sent: if the email fails, no link that works
    has gone anywhere, and re-issuing again makes another.
    """
    copy = await asyncio.to_thread(store.get, copy_id)
    if copy is None or copy.state is not CopyState.ACTIVE:
        state = copy.state.value if copy is not None else "unknown"
        return Reissued(False, f"The message is {state}, not active: it cannot be re-issued.")
    was_locked = await asyncio.to_thread(store.is_locked, copy_id)
    wrong_codes = await asyncio.to_thread(store.wrong_codes, copy_id)
    data = b""
    if delivery.settings.notify_subject:  # the notification names the original subject
        sealed = await asyncio.to_thread(store.sealed, copy_id)
        if sealed is None:
            return Reissued(False, "The message's content is gone: it cannot be re-issued.")
        data = await asyncio.to_thread(unseal, delivery.keyring, sealed, copy_id=copy_id,
                                       recipient=copy.recipient)
    link_token = secrets.token_urlsafe(32)
    if not await asyncio.to_thread(store.reissue, copy_id, link_token):
        return Reissued(False, "The message is no longer active: it cannot be re-issued.")
    notice = delivery.notification(
        Copy(key=f"reissue {copy_id} {token_hash(link_token)}", mail_from=copy.sender,
             recipients=(copy.recipient,), data=data),
        copy.recipient, link_token, copy.expires, copy_id)
    result = await delivery.upstream.deliver([notice])
    await audit.record_async(EventKind.PORTAL_REISSUE, sender=copy.sender,
                             recipients=[copy.recipient], decision_id=copy.decision_id,
                             copy_id=copy_id, by=by, was_locked=was_locked,
                             wrong_codes=wrong_codes, notified=result.ok)
    if not result.ok:
        log.warning("portal-reissue-not-sent", copy_id=copy_id, outcome=result.outcome.value)
        return Reissued(False, "A new link was made, but the email to the recipient could not "
                        "be sent just now. Re-issue the message again later.", temporary=True)
    return Reissued(True, f"{copy_id} re-issued: {copy.recipient} was sent a new link"
                    + (" (it was locked after too many wrong codes)." if was_locked else "."))
