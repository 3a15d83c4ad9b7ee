"""Recipient verification over HTTP: the recipient's pages and the staff API (issue 4).

- `GET /v/{token}`: the page the verification email links to: a form for the out-of-band code
  and the recipient's name, and a "This is not me" button. No JavaScript, labelled fields.
- `POST /v/{token}`: the answer (`answer=confirm` with `code` and `name`, or `answer=decline`).
  Protected by a double-submit CSRF token: the hidden field must equal the `__Host-` cookie the
  form page set (SameSite=Strict, Secure, HttpOnly).
- `GET /verifications`: the signed-in member of staff's own verification requests (read only;
  only the requests they made, never anyone else's).
- `POST /api/verify`: staff ask for a verification with HTTP Basic (the helper and lock-out of
  `gateway.web.post`); JSON `{"address", "case", "name", "role"}`, and optionally
  `"confirm_lookalike": true` with a `"reason"` to ask for an address casegate reads as a
  lookalike on purpose (audited, medium grade); the answer is `RequestResult.to_json()` (with the
  out-of-band code when the email was sent).

Every step's audit event is recorded by the workflow. Handlers never show internals.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.web.auth import require_user
from gateway.web.pages import StaffPage, add_staff_page, render, use_templates
from gateway.web.post import MAX_BODY, POST_STATE, basic_user, json_error
from policies.model import Role
from verification.registry import RequestState, VerificationRequest
from verification.texts import Texts
from verification.workflow import Ask, LinkAnswer, LinkState, Outcome, Workflow, practitioner_name

CSRF_COOKIE = "__Host-casegate-verify"
CSRF_FIELD = "csrf_token"
MAX_FIELD = 300

PAGES: dict[LinkState, tuple[str, str, int]] = {  # template, title, HTTP status
    LinkState.CONFIRMED: ("page-confirmed.html", "Address confirmed", 200),
    LinkState.DECLINED: ("page-declined.html", "Thank you for telling us", 200),
    LinkState.LOCKED: ("page-locked.html", "Link locked", 200),
    LinkState.UNAVAILABLE: ("page-unavailable.html", "Link cannot be used", 410),  # used/expired
    LinkState.UNKNOWN: ("page-unknown.html", "Link cannot be used", 404),  # not one of ours
}
STATE_TEXT = {
    RequestState.PENDING: "waiting for the recipient",
    RequestState.VERIFIED: "confirmed",
    RequestState.DECLINED: "the recipient said it is not them",
    RequestState.LOCKED: "locked after wrong codes",
    RequestState.EXPIRED: "link expired unanswered",
    RequestState.REVOKED: "withdrawn",
}
STATUS: dict[Outcome, int] = {
    Outcome.SENT: 200,
    Outcome.ALREADY_VERIFIED: 200,
    Outcome.ALREADY_PENDING: 409,
    Outcome.REFUSED: 422,
    Outcome.UNDELIVERABLE: 422,
    Outcome.DNS_FAILURE: 503,
    Outcome.NOT_SENT: 503,
}

WORKFLOW: web.AppKey[Workflow] = web.AppKey("casegate-verify-workflow", Workflow)


def install(web_app: web.Application, workflow: Workflow) -> None:
    """Add the verification pages and `POST /api/verify`, which work with `workflow`."""
    use_templates(web_app)
    web_app[WORKFLOW] = workflow
    add_staff_page(web_app, StaffPage(
        "/verifications", "My verifications",
        "The recipient verifications you asked for, and where each one stands."))
    web_app.router.add_get("/verifications", my_requests)
    web_app.router.add_get("/v/{token}", link_page)
    web_app.router.add_post("/v/{token}", link_answer)
    web_app.router.add_post("/api/verify", api_verify)


def _workflow(request: web.Request) -> Workflow:
    return request.app[WORKFLOW]


# -- the recipient's pages -----------------------------------------------------------------


async def link_page(request: web.Request) -> web.Response:
    """The form, or why the link cannot be used."""
    workflow = _workflow(request)
    answer = await asyncio.to_thread(workflow.open_link, request.match_info["token"])
    return _page(request, workflow, answer)


async def link_answer(request: web.Request) -> web.Response:
    """Confirm (code and name) or decline, after the CSRF check."""
    workflow = _workflow(request)
    form = await request.post()
    given = _field(form, CSRF_FIELD)
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        answer = await asyncio.to_thread(workflow.open_link, request.match_info["token"])
        return _page(request, workflow, answer, status=403,
                     error="This form has expired. Please enter the code and your name again.")
    token = request.match_info["token"]
    if _field(form, "answer") == "decline":
        answer = await workflow.decline(token)
    else:
        answer = await workflow.confirm(token, _field(form, "code"), _field(form, "name"))
    error = ""
    if answer.state is LinkState.OPEN and answer.wrong:
        tries = "try" if answer.attempts_left == 1 else "tries"
        error = (f"The code or the name does not match. You have {answer.attempts_left} "
                 f"{tries} left. Check the code with the person who gave it to you.")
    return _page(request, workflow, answer, error=error, status=400 if error else None)


def _page(request: web.Request, workflow: Workflow, answer: LinkAnswer, *, error: str = "",
          status: int | None = None) -> web.Response:
    """The form (OPEN) or the page saying what became of the link, in the site layout."""
    texts: Texts = workflow.texts
    organisation = workflow.settings.organisation
    csrf = ""
    if answer.state is LinkState.OPEN and answer.request is not None:
        csrf = secrets.token_urlsafe(32)
        body = texts.page("page-confirm.html", practitioner_name=_practitioner(answer),
                          organisation=organisation, action=request.path, csrf_token=csrf,
                          error=error)
        title, default_status = "Confirm your email address", 200
    else:
        name, title, default_status = PAGES[answer.state]
        body = texts.page(name, organisation=organisation)
    response = render(request, "fragment.html", title=title, brand=organisation, body=body,
                      status=default_status if status is None else status)
    if csrf:
        response.set_cookie(CSRF_COOKIE, csrf, path="/", secure=True, httponly=True,
                            samesite="Strict")
    return response


def _practitioner(answer: LinkAnswer) -> str:
    assert answer.request is not None
    return practitioner_name(answer.request.requested_by)


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value[:MAX_FIELD] if isinstance(value, str) else ""


# -- the staff page ------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRow:
    """One of the member of staff's requests, as the page lists it."""

    address: str
    scope: str
    name: str
    requested: str
    state: str
    decided: str


def _row(request: VerificationRequest) -> RequestRow:
    return RequestRow(
        address=request.address, scope=request.scope, name=request.name,
        requested=request.requested_at.strftime("%Y-%m-%d %H:%M"),
        state=STATE_TEXT.get(request.state, request.state.value),
        decided=request.decided_at.strftime("%Y-%m-%d %H:%M") if request.decided_at else "-")


async def my_requests(request: web.Request) -> web.Response:
    """The signed-in member of staff's own verification requests, newest first (read only)."""
    staff = await require_user(request)
    registry = _workflow(request).registry
    mine = await asyncio.to_thread(registry.requests_by, staff.address)
    return render(request, "verifications.html", title="My verifications", staff=staff,
                  requests=[_row(r) for r in mine])


# -- the staff API -------------------------------------------------------------------------


async def api_verify(request: web.Request) -> web.Response:
    """Ask for a verification; the JSON answer carries the code when the email went."""
    user = await basic_user(request, request.app[POST_STATE])
    facts = await _json_object(request)
    if not isinstance(facts, dict):
        return json_error(400, "body", "The request body must be a JSON object of at most "
                           f"{MAX_BODY} bytes.")
    for key in ("address", "case", "name", "role"):
        if not isinstance(facts.get(key), str) or not facts[key].strip():
            return json_error(400, key, f"'{key}' is required (a string).")
    if facts["role"] not in {r.value for r in Role}:
        return json_error(400, "role", "'role' must be party or professional.")
    confirm = facts.get("confirm_lookalike", False)
    reason = facts.get("reason", "")
    if not isinstance(confirm, bool):
        return json_error(400, "confirm_lookalike", "'confirm_lookalike' must be true or false.")
    if not isinstance(reason, str) or (reason.strip() and not confirm):
        return json_error(400, "reason", "'reason' is a string, given with confirm_lookalike.")
    if confirm and not reason.strip():
        return json_error(400, "reason", "'reason' is required with confirm_lookalike: say why "
                          "this address is the right one.")
    result = await _workflow(request).request(Ask(
        address=facts["address"][:MAX_FIELD], case_number=facts["case"][:MAX_FIELD],
        name=facts["name"][:MAX_FIELD], role=Role(facts["role"]), requested_by=user.address,
        channel="http", lookalike_reason=reason[:MAX_FIELD] if confirm else ""))
    return web.json_response(result.to_json(), status=STATUS[result.outcome])


async def _json_object(request: web.Request) -> object:
    """The body as JSON; None when too large or not JSON."""
    if (request.content_length or 0) > MAX_BODY:
        return None
    raw = await request.content.read(MAX_BODY + 1)
    try:
        return None if len(raw) > MAX_BODY else json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
