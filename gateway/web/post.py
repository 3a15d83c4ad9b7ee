"""Postal decisions over HTTP: the staff API `POST /api/post` and a form at `/post`.

- `POST /api/post`: HTTP Basic authentication against the staff accounts (failures are audit
  events and lock the client and the account out like the sign-in page does); a JSON object
  with the facts of `casegate post` (`item`, `verified_email`, `address`, `sensitivity`,
  `urgent`, `weight_kg`, `third_party`, `office_transfer`, `hard_copy`, `electronic`,
  `wishes_to_collect`, `from_office`, `to_office`, `method`); the answer is the same JSON as
  `casegate post --json`. Bad input is 400 with `{"error", "field"}`. Office names may be an
  office or one of its teams: the office directory is read in a worker thread for each answer.
  A browser request that another site caused (`Sec-Fetch-Site` cross-site or same-site) is
  403 before any credential check: cached Basic credentials are no way round CSRF.
- `GET|POST /post`: a server-rendered form for signed-in staff (business services), protected
  by the session and CSRF token of `gateway.web.auth` ("gateway.web" must be installed first).

Every answer is a "post-decision" audit event naming the member of staff; bad input records
nothing. Handlers never show internals.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.printed.post import decide_and_record_async
from gateway.stores.offices import OfficeRegistry
from gateway.stores.throttle import AuthThrottle, Throttle
from gateway.web.auth import StaffSession, require_user
from gateway.web.pages import StaffPage, add_staff_page, render, use_templates
from policies.events import EventKind
from policies.post import (
    AddressStatus,
    OfficeDirectory,
    PostAction,
    PostDecision,
    PostInputError,
    PostItem,
    PostMethod,
    PostOptions,
    Sensitivity,
)

if TYPE_CHECKING:
    from gateway.audit.trail import AuditLog
    from gateway.stores.users import User, UserStore
    from transports.database import Database

MAX_BODY = 16 * 1024
MAX_AUTH_HEADER = 4096
REALM = 'Basic realm="casegate", charset="UTF-8"'
SAME_ORIGIN = frozenset({"same-origin", "none"})  # Fetch Metadata `Sec-Fetch-Site` values
FLAGS = ("verified_email", "urgent", "third_party", "office_transfer", "wishes_to_collect")
FLAG_LABELS = {
    "verified_email": "A verified email address exists",
    "urgent": "Short timescales apply",
    "third_party": "Holds personal information provided by a third party",
    "office_transfer": "Moving between Cafcass offices",
    "wishes_to_collect": "The adult or child wishes to collect it in person",
}
FORM_LABELS = {  # the form's "form" choice -> the API's flag it sets ("" sets neither)
    "": ("Not said", ""),
    "hard-copy": ("A hard copy (paper)", "hard_copy"),
    "electronic": ("Wholly electronic (no paper moves)", "electronic"),
}
ADDRESS_LABELS = {  # the form shows these; it submits the AddressStatus values
    AddressStatus.NONE: "No physical address",
    AddressStatus.UNCONFIRMED: "Address not confirmed",
    AddressStatus.CONFIRMED_EIT: "Confirmed by the EIT FCA",
    AddressStatus.CONFIRMED_WAFH:
        "Confirmed by the allocated WAFH FCA and recorded on the contact log",
}
SENSITIVITY_LABELS = {  # the form shows these; it submits the Sensitivity values
    Sensitivity.NONE: "No particular concern",
    Sensitivity.CONCERN: "A concern has been raised over the sensitivity of the contents",
    Sensitivity.PARTICULAR: "Particularly sensitive information",
}
DISPLAY_LABELS = {  # method id -> what the form shows instead of the policy data's label
    "egress-email": "secure email (casegate's encrypted portal) to one verified address",
}
HEADINGS = {
    PostAction.SEND: "Send it",
    PostAction.USE_EMAIL: "Use email instead",
    PostAction.REFUSE: "Do not send it",
}


@dataclass(frozen=True)
class PostDeps:
    """What the postal pages need from the running gateway."""

    options: PostOptions
    audit: AuditLog
    users: UserStore
    offices: OfficeRegistry  # the office directory (read in a worker thread)


@dataclass(frozen=True)
class _State:
    deps: PostDeps
    throttle: AuthThrottle


POST_STATE: web.AppKey[_State] = web.AppKey("casegate-post", _State)


def api_throttle(database: Database | None = None) -> AuthThrottle:
    """The API's sign-in throttle: five failures per client or per account, then locked for
    15 minutes; counted across the nodes when `database` is PostgreSQL."""
    return AuthThrottle(max_failures=5, free_failures=5, delay_step=0.0, database=database,
                        scope="api")


def install(
    web_app: web.Application, deps: PostDeps, *, throttle: AuthThrottle | None = None
) -> None:
    """Add `POST /api/post` and the `/post` form to `web_app`."""
    web_app[POST_STATE] = _State(
        deps=deps,
        throttle=throttle or api_throttle(),
    )
    use_templates(web_app)
    add_staff_page(web_app, StaffPage(
        "/post", "Post", "Which postal method a printed item may go by, from the post options."))
    web_app.router.add_post("/api/post", api_post)
    web_app.router.add_get("/post", form_page)
    web_app.router.add_post("/post", form_submit)


# -- the staff API -------------------------------------------------------------------------


async def api_post(request: web.Request) -> web.Response:
    """The postal decision for the JSON facts in the body."""
    state = request.app[POST_STATE]
    user = await basic_user(request, state)
    if (request.content_length or 0) > MAX_BODY:
        return json_error(413, "body", "The request body is too large.")
    raw = await request.read()  # bounded by the application's client_max_size
    if len(raw) > MAX_BODY:
        return json_error(413, "body", "The request body is too large.")
    try:
        facts = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return json_error(400, "body", "The request body must be a JSON object.")
    if not isinstance(facts, dict):
        return json_error(400, "body", "The request body must be a JSON object.")
    try:
        item = PostItem.from_mapping(facts)
        offices = await asyncio.to_thread(state.deps.offices.directory)
        decision = await decide_and_record_async(
            state.deps.options, state.deps.audit, item, sender=user.address, offices=offices
        )
    except PostInputError as exc:
        return json_error(400, exc.field, str(exc))
    return web.json_response(decision.to_json())


async def basic_user(request: web.Request, state: _State) -> User:
    """The staff member named by HTTP Basic credentials; 401, 403 or 429 otherwise."""
    if request.headers.get("Sec-Fetch-Site", "none") not in SAME_ORIGIN:
        # Another site made a browser send this, with Basic credentials the browser cached:
        # cross-site request forgery (SECURITY.md item 13). Scripts send no such header.
        raise web.HTTPForbidden(
            text=json.dumps({"error": "Cross-site requests are not accepted."}),
            content_type="application/json",
        )
    client = request.remote or "unknown"
    credentials = basic_credentials(request.headers.get("Authorization", ""))
    if credentials is None:
        raise _unauthorised()
    login, password = credentials
    address = login.strip().lower()[:320]
    keys = (f"api-client:{client}", f"api-account:{address}")
    audit = state.deps.audit
    if await state.throttle.locked(*keys):
        await audit.record_async(EventKind.LOGIN_REFUSED, sender=address, client=client,
                                 channel="api", reason="locked")
        raise web.HTTPTooManyRequests(
            text=json.dumps({"error": "Too many failed sign-ins; wait and try again."}),
            content_type="application/json",
        )
    user = await asyncio.to_thread(state.deps.users.authenticate, address, password)
    if user is None:
        locked = [v.throttle is Throttle.LOCK for v in await state.throttle.failed(*keys)]
        await audit.record_async(EventKind.LOGIN_FAILURE, sender=address, client=client,
                                 channel="api")
        if any(locked):
            await audit.record_async(EventKind.LOGIN_LOCKOUT, sender=address, client=client,
                                     channel="api")
        raise _unauthorised()
    await state.throttle.succeeded(*keys)
    return user


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(login, password) from an RFC 7617 Basic Authorization header (UTF-8), else None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded or len(header) > MAX_AUTH_HEADER:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon and login else None


def _unauthorised() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        headers={"WWW-Authenticate": REALM},
        text=json.dumps({"error": "Sign in with your staff address and password."}),
        content_type="application/json",
    )


def json_error(status: int, field_name: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field_name}, status=status)


# -- the form ------------------------------------------------------------------------------


async def form_page(request: web.Request) -> web.Response:
    """The empty form."""
    staff = await require_user(request)
    deps = request.app[POST_STATE].deps
    offices = await asyncio.to_thread(deps.offices.directory)
    return _page(request, staff, deps.options, {}, offices=offices)


async def form_submit(request: web.Request) -> web.Response:
    """The form's answer (CSRF already checked by require_user), shown under the form."""
    staff = await require_user(request)
    deps = request.app[POST_STATE].deps
    form = await request.post()
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}
    offices = await asyncio.to_thread(deps.offices.directory)
    try:
        item = PostItem.from_mapping(_facts(values))
        decision = await decide_and_record_async(deps.options, deps.audit, item,
                                                 sender=staff.address, offices=offices)
    except PostInputError as exc:
        return _page(request, staff, deps.options, values, offices=offices, error=str(exc),
                     status=400)
    return _page(request, staff, deps.options, values, offices=offices, decision=decision)


def _facts(values: dict[str, str]) -> dict[str, Any]:
    """The form's strings as the API's JSON facts; a weight that is not a number is bad input.

    A weight left empty is not given (the API's default); any other text must be a number.
    """
    facts: dict[str, Any] = {"item": values.get("item", "").strip()}
    text = values.get("weight_kg", "").strip()
    if text:
        try:
            facts["weight_kg"] = float(text)
        except ValueError:
            raise PostInputError("weight_kg",
                                 "The weight must be a number of kilograms.") from None
    for name in ("address", "sensitivity", "from_office", "to_office", "method"):
        if values.get(name, "").strip():  # left empty: the API's default
            facts[name] = values[name].strip()
    facts.update({flag: values.get(flag) == "on" for flag in FLAGS})
    chosen = FORM_LABELS.get(values.get("form", "").strip())
    if chosen is None:
        raise PostInputError("form", "Say whether it is a hard copy or electronic, or neither.")
    if chosen[1]:
        facts[chosen[1]] = True
    return facts


def method_label(method: PostMethod) -> str:
    """How the form names a method: its label from the policy data, except that casegate's
    own secure portal is called what it is (the data keeps the policy's wording, "Egress")."""
    return DISPLAY_LABELS.get(method.id, method.label)


def _page(
    request: web.Request,
    staff: StaffSession,
    options: PostOptions,
    values: dict[str, str],
    *,
    offices: OfficeDirectory,
    decision: PostDecision | None = None,
    error: str = "",
    status: int = 200,
) -> web.Response:
    labels = {m.id: method_label(m) for m in options.methods.values()}
    office_names = sorted({n for o in offices.offices for n in o.names()}
                          | set(options.dx_outgoing_offices) | set(options.dx_incoming_offices),
                          key=str.casefold)
    return render(
        request,
        "post.html",
        title="Which postal method?",
        status=status,
        staff=staff,
        values=values,
        error=error,
        items=[(i.id, i.label) for i in options.items.values()],
        addresses=[(a.value, label) for a, label in ADDRESS_LABELS.items()],
        default_address=AddressStatus.NONE.value,
        sensitivities=[(v.value, label) for v, label in SENSITIVITY_LABELS.items()],
        default_sensitivity=Sensitivity.NONE.value,
        methods=[("", "any permitted method"), *labels.items()],
        flags=[(flag, FLAG_LABELS[flag]) for flag in FLAGS],
        forms=[(value, label) for value, (label, _) in FORM_LABELS.items()],
        office_names=office_names,
        decision=decision,
        heading=HEADINGS[decision.decision] if decision else "",
        method_labels=labels,
    )
