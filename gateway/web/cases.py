"""The case registry over HTTP (issue 16): staff pages and the staff JSON API.

Pages, for signed-in staff (session and CSRF token of `gateway.web.auth`):

- `GET /cases`: the cases with something recorded, and a box to open one (`?case=NUMBER`).
- `GET /cases/{case}`: its people (id, initials, role), confidential details (id, kind, who may
  receive them), its shield, with forms to record and take back each.
- `POST /cases/{case}/people` (`name`, `role`, `dob`), `POST /cases/{case}/details` (`text`,
  `kind`, `may_go_to`: addresses or domains, one a line), `POST /cases/{case}/shield`
  (`access`: staff addresses, one a line), and `POST .../people/{id}/remove`,
  `.../details/{id}/remove`, `.../shield/remove`.

The API, with HTTP Basic against the staff accounts (`gateway.web.post.basic_user`: lock-out,
no cross-site requests), JSON in and out:

    GET    /api/cases                          [{case_number, shielded, people, details}]
    GET    /api/cases/{case}                   what `casegate case show --json` prints
    POST   /api/cases/{case}/people            {"name", "role", "dob"?}            -> 201
    DELETE /api/cases/{case}/people/{id}
    POST   /api/cases/{case}/details           {"text", "kind", "may_go_to"?: [...]} -> 201
    DELETE /api/cases/{case}/details/{id}
    PUT    /api/cases/{case}/shield            {"access": [...]}
    DELETE /api/cases/{case}/shield

Refusals are one sentence: 400 bad input, 403 a shielded case the member of staff is not on the
access list of (RRP 5.2: the service manager decides who has access; they see only that it is
shielded), 404 nothing to take back, 409 already recorded. The member of staff signed in is the
one who records (`--by`). Every change goes through `verification.casework.Casework` in a worker
thread, which checks it and records the audit event; names and texts are never shown back.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from aiohttp import web

from gateway.web.auth import require_user
from gateway.web.pages import StaffPage, StaffSession, add_staff_page, render, use_templates
from gateway.web.post import MAX_BODY, POST_STATE, basic_user
from policies.cases import DetailKind, PersonRole
from verification.cases import (
    AlreadyRecorded,
    CaseError,
    CaseRecord,
    CaseSummary,
    NotRecorded,
    parse_date_of_birth,
)
from verification.casework import Casework


class Answer(Protocol):
    """What the API answers with: an entry, a case, or one line of the list."""

    def to_json(self) -> dict[str, object]: ...


T = TypeVar("T", bound="Answer | list[Listed]")
MAX_FIELD = 2000  # characters of one form field or JSON string
_SEPARATORS = re.compile(r"[\s,;]+")

ROLE_LABELS = {PersonRole.CHILD: "child", PersonRole.PARTY: "party",
               PersonRole.OTHER: "other person"}
KIND_LABELS = {DetailKind.ADDRESS: "address", DetailKind.SCHOOL: "school",
               DetailKind.NURSERY: "nursery", DetailKind.GP: "GP practice",
               DetailKind.PLACEMENT: "placement", DetailKind.OTHER: "other"}


@dataclass(frozen=True)
class CasesDeps:
    """What the case pages need: the case registry's steps (store, policy, audit, clock)."""

    casework: Casework


CASES: web.AppKey[CasesDeps] = web.AppKey("casegate-cases", CasesDeps)


class NoAccess(Exception):
    """A shielded case, and the member of staff is not on its access list."""


def install(web_app: web.Application, deps: CasesDeps) -> None:
    """Add the case pages and `/api/cases` (after `gateway.web.staff` and `gateway.web.post`)."""
    use_templates(web_app)
    web_app[CASES] = deps
    add_staff_page(web_app, StaffPage(
        "/cases", "Cases",
        "The people, confidential details and shielding recorded for a case."))
    router = web_app.router
    router.add_get("/cases", list_page)
    router.add_get("/cases/{case}", case_page)
    router.add_post("/cases/{case}/people", page_add_person)
    router.add_post("/cases/{case}/details", page_add_detail)
    router.add_post("/cases/{case}/shield", page_shield)
    router.add_post("/cases/{case}/people/{id}/remove", page_remove_person)
    router.add_post("/cases/{case}/details/{id}/remove", page_remove_detail)
    router.add_post("/cases/{case}/shield/remove", page_unshield)
    router.add_get("/api/cases", api_list)
    router.add_get("/api/cases/{case}", api_show)
    router.add_post("/api/cases/{case}/people", api_add_person)
    router.add_delete("/api/cases/{case}/people/{id}", api_remove_person)
    router.add_post("/api/cases/{case}/details", api_add_detail)
    router.add_delete("/api/cases/{case}/details/{id}", api_remove_detail)
    router.add_put("/api/cases/{case}/shield", api_shield)
    router.add_delete("/api/cases/{case}/shield", api_unshield)


def _work(request: web.Request) -> Casework:
    return request.app[CASES].casework


# -- what a member of staff may see and change (in a worker thread) -------------------------


@dataclass(frozen=True)
class Listed:
    """One case in the list; the counts only for staff who may handle it."""

    summary: CaseSummary
    accessible: bool

    def to_json(self) -> dict[str, object]:
        summary = self.summary
        return {"case_number": summary.case_number, "shielded": summary.shielded,
                "people": summary.people if self.accessible else None,
                "details": summary.details if self.accessible else None}


def listed(work: Casework, staff: str) -> list[Listed]:
    """Every case with something recorded, as `staff` may see it."""
    answer = []
    for summary in work.store.cases():
        shield = work.store.shield_of(summary.case_number) if summary.shielded else None
        answer.append(Listed(summary, shield is None or staff in shield.access))
    return answer


def guarded(work: Casework, case_text: str, staff: str) -> str:
    """The case number, once `staff` may handle the case: NoAccess for a shielded case they
    are not on the access list of."""
    case = work.case_number(case_text)
    shield = work.store.shield_of(case)
    if shield is not None and staff not in shield.access:
        raise NoAccess(case)
    return case


def shown(work: Casework, case_text: str, staff: str) -> CaseRecord:
    return work.store.case(guarded(work, case_text, staff))


def _add_person(work: Casework, case_text: str, staff: str, facts: dict[str, str]) -> Answer:
    case = guarded(work, case_text, staff)
    role = facts.get("role", "")
    if role not in {r.value for r in PersonRole}:
        raise CaseError("choose the person's role: child, party or other")
    dob_text = facts.get("dob", "").strip()
    dob = parse_date_of_birth(dob_text, work.clock().date()) if dob_text else None
    return work.record_person(case, name=facts.get("name", ""), role=PersonRole(role),
                              date_of_birth=dob, by=staff, channel="http")


def _add_detail(work: Casework, case_text: str, staff: str, text: str, kind: str,
                may_go_to: list[str]) -> Answer:
    case = guarded(work, case_text, staff)
    if kind not in {k.value for k in DetailKind}:
        raise CaseError("choose the kind of detail: address, school, nursery, gp, placement "
                        "or other")
    return work.record_detail(case, text=text, kind=DetailKind(kind), may_go_to=may_go_to,
                              by=staff, channel="http")


def _shield(work: Casework, case_text: str, staff: str, access: list[str]) -> Answer:
    case = guarded(work, case_text, staff)
    if not access:
        raise CaseError("a shielded case needs at least one member of staff with access")
    return work.shield(case, access=access, by=staff, channel="http")


def _remove_person(work: Casework, case_text: str, staff: str, entry: str) -> Answer:
    return work.remove_person(guarded(work, case_text, staff), entry, by=staff, channel="http")


def _remove_detail(work: Casework, case_text: str, staff: str, entry: str) -> Answer:
    return work.remove_detail(guarded(work, case_text, staff), entry, by=staff, channel="http")


def _unshield(work: Casework, case_text: str, staff: str) -> Answer:
    return work.unshield(guarded(work, case_text, staff), by=staff, channel="http")


def _status(exc: Exception) -> int:
    if isinstance(exc, NoAccess):
        return 403
    if isinstance(exc, NotRecorded):
        return 404
    if isinstance(exc, AlreadyRecorded):
        return 409
    return 400


def _sentence(exc: Exception) -> str:
    if isinstance(exc, NoAccess):
        return (f"Case {exc} is shielded and you are not on its access list. Ask the case's "
                "service manager if you need access (RRP 5.2).")
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


# -- the pages -------------------------------------------------------------------------------


async def list_page(request: web.Request) -> web.Response:
    """The cases with something recorded; `?case=` opens one."""
    staff = await require_user(request)
    work = _work(request)
    wanted = request.query.get("case", "").strip()[:40]
    error = ""
    if wanted:
        try:
            case = await asyncio.to_thread(work.case_number, wanted)
        except CaseError as exc:
            error = _sentence(exc)
        else:
            raise web.HTTPSeeOther(location=f"/cases/{quote(case, safe='')}")
    cases = await asyncio.to_thread(listed, work, staff.address)
    return render(request, "cases.html", title="Cases", staff=staff, cases=cases,
                  error=error, status=400 if error else 200)


async def case_page(request: web.Request) -> web.Response:
    staff = await require_user(request)
    return await _case_answer(request, staff)


async def _case_answer(request: web.Request, staff: StaffSession, *, notice: str = "",
                       error: str = "", status: int = 200) -> web.Response:
    """The case's page (with what just happened), or why it cannot be shown."""
    work = _work(request)
    try:
        record = await asyncio.to_thread(shown, work, request.match_info["case"], staff.address)
    except (CaseError, NoAccess) as exc:
        code = _status(exc)
        heading = "This case is shielded" if code == 403 else "Not a case number"
        return render(request, "message.html", title=heading, status=code, staff=staff,
                      heading=heading, text=_sentence(exc))
    return render(request, "case.html", title=f"Case {record.case_number}", staff=staff,
                  case=record, notice=notice, error=error, status=status,
                  roles=[(r.value, label) for r, label in ROLE_LABELS.items()],
                  kinds=[(k.value, label) for k, label in KIND_LABELS.items()],
                  role_labels={r.value: label for r, label in ROLE_LABELS.items()},
                  kind_labels={k.value: label for k, label in KIND_LABELS.items()})


async def _page_change(request: web.Request, change: Callable[..., object], *args: Any,
                       done: str) -> web.Response:
    """Run one change for the signed-in member of staff, then show the case with its outcome."""
    staff = await require_user(request)  # checks the CSRF token of a POST
    form = await request.post()
    values = {k: v[:MAX_FIELD] for k, v in form.items() if isinstance(v, str)}
    work = _work(request)
    try:
        await asyncio.to_thread(change, work, request.match_info["case"], staff.address,
                                *[a(values) if callable(a) else a for a in args])
    except (CaseError, NoAccess) as exc:
        if isinstance(exc, NoAccess):
            return await _case_answer(request, staff)
        return await _case_answer(request, staff, error=_sentence(exc), status=_status(exc))
    return await _case_answer(request, staff, notice=done)


async def page_add_person(request: web.Request) -> web.Response:
    return await _page_change(request, _add_person, lambda v: v, done="The person is recorded.")


async def page_add_detail(request: web.Request) -> web.Response:
    return await _page_change(
        request, _add_detail, lambda v: v.get("text", ""), lambda v: v.get("kind", ""),
        lambda v: _words(v.get("may_go_to", "")), done="The confidential detail is recorded.")


async def page_shield(request: web.Request) -> web.Response:
    return await _page_change(request, _shield, lambda v: _words(v.get("access", "")),
                              done="The case is shielded.")


async def page_remove_person(request: web.Request) -> web.Response:
    return await _page_change(request, _remove_person, request.match_info["id"],
                              done="The person is no longer recorded.")


async def page_remove_detail(request: web.Request) -> web.Response:
    return await _page_change(request, _remove_detail, request.match_info["id"],
                              done="The confidential detail is no longer recorded.")


async def page_unshield(request: web.Request) -> web.Response:
    return await _page_change(request, _unshield, done="The case is no longer shielded.")


def _words(text: str) -> list[str]:
    """Addresses or domains typed one a line (or separated by commas or spaces)."""
    return [word for word in _SEPARATORS.split(text) if word]


# -- the API ---------------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _api(request: web.Request, work_on: Callable[[Casework, str], T],
               status: int = 200) -> web.Response:
    """Run `work_on(casework, staff)` for the Basic-authenticated member of staff; its
    `to_json()` (or list of them) is the answer, a refusal one sentence."""
    user = await basic_user(request, request.app[POST_STATE])
    try:
        result = await asyncio.to_thread(work_on, _work(request), user.address)
    except (CaseError, NoAccess) as exc:
        return _error(_status(exc), _sentence(exc))
    if isinstance(result, list):
        return web.json_response([item.to_json() for item in result], status=status)
    return web.json_response(result.to_json(), status=status)


async def _body(request: web.Request) -> dict[str, Any] | None:
    """The JSON object in the body; None when it is too large or not one."""
    if (request.content_length or 0) > MAX_BODY:
        return None
    raw = await request.content.read(MAX_BODY + 1)
    try:
        facts = None if len(raw) > MAX_BODY else json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return facts if isinstance(facts, dict) else None


def _string(facts: dict[str, Any], key: str) -> str:
    value = facts.get(key, "")
    if not isinstance(value, str):
        raise CaseError(f"'{key}' must be a string")
    return value[:MAX_FIELD]


def _strings(facts: dict[str, Any], key: str) -> list[str]:
    value = facts.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CaseError(f"'{key}' must be a list of strings")
    return [v[:MAX_FIELD] for v in value]


async def _api_with_body(request: web.Request,
                         work_on: Callable[[Casework, str, dict[str, Any]], T],
                         status: int) -> web.Response:
    await basic_user(request, request.app[POST_STATE])  # before the body is read
    facts = await _body(request)
    if facts is None:
        return _error(400, f"The request body must be a JSON object of at most {MAX_BODY} "
                      "bytes.")
    return await _api(request, lambda work, staff: work_on(work, staff, facts), status)


async def api_list(request: web.Request) -> web.Response:
    return await _api(request, listed)


async def api_show(request: web.Request) -> web.Response:
    case = request.match_info["case"]
    return await _api(request, lambda work, staff: shown(work, case, staff))


async def api_add_person(request: web.Request) -> web.Response:
    case = request.match_info["case"]
    return await _api_with_body(request, lambda work, staff, facts: _add_person(
        work, case, staff, {k: _string(facts, k) for k in ("name", "role", "dob")}), 201)


async def api_add_detail(request: web.Request) -> web.Response:
    case = request.match_info["case"]
    return await _api_with_body(request, lambda work, staff, facts: _add_detail(
        work, case, staff, _string(facts, "text"), _string(facts, "kind"),
        _strings(facts, "may_go_to")), 201)


async def api_shield(request: web.Request) -> web.Response:
    case = request.match_info["case"]
    return await _api_with_body(request, lambda work, staff, facts: _shield(
        work, case, staff, _strings(facts, "access")), 200)


async def api_remove_person(request: web.Request) -> web.Response:
    case, entry = request.match_info["case"], request.match_info["id"]
    return await _api(request, lambda work, staff: _remove_person(work, case, staff, entry))


async def api_remove_detail(request: web.Request) -> web.Response:
    case, entry = request.match_info["case"], request.match_info["id"]
    return await _api(request, lambda work, staff: _remove_detail(work, case, staff, entry))


async def api_unshield(request: web.Request) -> web.Response:
    case = request.match_info["case"]
    return await _api(request, lambda work, staff: _unshield(work, case, staff))
