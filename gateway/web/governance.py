"""The governance view of the audit trail (role "governance" only; everyone else gets 403).

    GET /governance                 filters, a chart of counts per day by rule, a page of events
    GET /governance/events/{seq}    one event in full, with the policy text it cites
    GET /governance/export.csv      the filtered events as CSV (itself an audit event)

Pages are keyset-paginated by sequence number (`?before=SEQ`), so a page answers as fast with a
million events behind it as with ten. Filters travel in the query string; nothing here changes
state, so no form needs a CSRF token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from aiohttp import web

from gateway.audit.export import csv_chunks
from gateway.audit.store import Checkpoint, StoredEvent
from gateway.audit.trail import GRADES, EventFilter, normalise_time
from gateway.web.auth import require_user
from gateway.web.chart import bar_chart
from gateway.web.pages import StaffPage, add_staff_page, render
from policies.events import EventKind

if TYPE_CHECKING:
    from gateway.audit.trail import AuditLog
    from gateway.web.pages import WebDeps

ROLE = "governance"
PAGE_SIZE = 50
CHART_DEFAULT_DAYS = 30
CHART_MAX_DAYS = 92
FILTER_FIELDS = ("since", "until", "sender", "domain", "case", "rule", "grade", "kind")
MAX_FILTER = 320

AUDIT: web.AppKey[AuditLog] = web.AppKey("casegate-governance-audit")


def install(web_app: web.Application, deps: WebDeps) -> None:
    web_app[AUDIT] = deps.audit
    add_staff_page(web_app, StaffPage(
        "/governance", "Audit trail",
        "Every decision casegate took, with filters, a chart and a CSV export.", (ROLE,)))
    web_app.router.add_get("/governance", trail)
    web_app.router.add_get("/governance/events/{seq}", event_detail)
    web_app.router.add_get("/governance/export.csv", export_csv)


class FilterProblem(ValueError):
    """A filter value cannot be used; the message is shown to the user."""


def _query(request: web.Request) -> dict[str, str]:
    """The filter fields present in the query string, trimmed and bounded."""
    out: dict[str, str] = {}
    for name in FILTER_FIELDS:
        value = request.query.get(name, "").strip()[:MAX_FILTER]
        if value:
            out[name] = value
    return out


def _filter(values: dict[str, str]) -> EventFilter:
    """The store's filter; the "to" date is inclusive, so it becomes the next midnight."""
    try:
        since = normalise_time(values["since"]) if "since" in values else ""
        until = values.get("until", "")
        if until:
            if len(until) == 10:
                until = (date.fromisoformat(until) + timedelta(days=1)).isoformat()
            until = normalise_time(until)
    except ValueError:
        raise FilterProblem(
            "Dates must be written as YYYY-MM-DD, for example 2026-03-01."
        ) from None
    grade = values.get("grade", "")
    if grade and grade not in GRADES:
        raise FilterProblem("The grade must be none, low, medium or high.")
    return EventFilter(
        since=since,
        until=until,
        sender=values.get("sender", ""),
        domain=values.get("domain", ""),
        case_number=values.get("case", ""),
        rule=values.get("rule", ""),
        grade=grade,
        kind=values.get("kind", ""),
    )


def _chart_period(flt: EventFilter, today: date) -> tuple[date, date]:
    last = date.fromisoformat(flt.until[:10]) - timedelta(days=1) if flt.until else today
    first = (
        date.fromisoformat(flt.since[:10])
        if flt.since
        else last - timedelta(days=CHART_DEFAULT_DAYS - 1)
    )
    first = max(first, last - timedelta(days=CHART_MAX_DAYS - 1))
    return min(first, last), last


def _href(path: str, values: dict[str, str], **extra: str) -> str:
    query = urlencode({**values, **extra})
    return f"{path}?{query}" if query else path


EVENT_HEADINGS = ("Event", "Time (UTC)", "Kind", "Grade", "Rule", "Sender", "Recipients",
                  "Case numbers")


@dataclass(frozen=True)
class EventRow:
    """One row of the events table."""

    seq: int
    href: str
    time: str
    kind: str
    grade: str
    rule: str
    sender: str
    recipients: list[str]
    case_numbers: list[str]


def _rows(events: list[StoredEvent], values: dict[str, str]) -> list[EventRow]:
    back = urlencode(values)
    return [
        EventRow(seq=e.seq, href=f"/governance/events/{e.seq}" + (f"?{back}" if back else ""),
                 time=e.time[:19].replace("T", " "), kind=e.kind, grade=e.grade, rule=e.rule,
                 sender=e.sender, recipients=list(e.recipients),
                 case_numbers=list(e.case_numbers))
        for e in events
    ]


def _before(request: web.Request) -> int | None:
    raw = request.query.get("before", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def trail(request: web.Request) -> web.Response:
    """The filter form, the chart and one page of events."""
    staff = await require_user(request, ROLE)
    audit = request.app[AUDIT]
    values = _query(request)
    before = _before(request)
    problem = ""
    try:
        flt = _filter(values)
    except FilterProblem as exc:
        problem = str(exc)
        flt = EventFilter()
    first, last = _chart_period(flt, datetime.now(UTC).date())
    chart_flt = replace(
        flt,
        since=normalise_time(first.isoformat()),
        until=normalise_time((last + timedelta(days=1)).isoformat()),
    )
    events, counts, checkpoint = await asyncio.to_thread(_read, audit, flt, before, chart_flt)
    integrity = (
        f"The trail was last signed at event {checkpoint.seq} "
        f"({checkpoint.time[:16].replace('T', ' ')} UTC)."
        if checkpoint is not None
        else "The trail has not been signed yet."
    )
    older = (_href("/governance", values, before=str(events[-1].seq))
             if len(events) == PAGE_SIZE else "")
    return render(
        request,
        "governance.html",
        title="Audit trail",
        staff=staff,
        values={name: values.get(name, "") for name in FILTER_FIELDS},
        grades=[("", "Any grade"), *((g, g) for g in GRADES)],
        rules=sorted(audit.rules),
        error=problem,
        integrity=integrity,
        chart_first=first.isoformat(),
        chart_last=last.isoformat(),
        chart=bar_chart(counts, first, last),
        export_href=_href("/governance/export.csv", values),
        event_headings=EVENT_HEADINGS,
        events=_rows(events, values),
        newest_href=_href("/governance", values) if before is not None else "",
        older_href=older,
    )


def _read(audit: AuditLog, flt: EventFilter, before: int | None, chart_flt: EventFilter
          ) -> tuple[list[StoredEvent], list[tuple[str, str, int]], Checkpoint | None]:
    """What the trail page shows from the store (in a worker thread): a page of events, the
    chart's counts, the latest checkpoint."""
    return (audit.page(flt, before=before, limit=PAGE_SIZE),
            audit.counts_by_day_and_rule(chart_flt), audit.store.latest_checkpoint())


@dataclass(frozen=True)
class PolicyText:
    sentence: str
    citation: str


def _policy_text(audit: AuditLog, event: StoredEvent) -> PolicyText | None:
    rule = audit.rules.get(event.rule)
    if rule is not None:
        return PolicyText(rule.sentence, rule.citation)
    if event.citation:
        return PolicyText(f"Rule {event.rule}.", event.citation)
    return None


async def event_detail(request: web.Request) -> web.Response:
    """One event in full, with the rule's sentence and citation from the policy."""
    staff = await require_user(request, ROLE)
    audit = request.app[AUDIT]
    raw = request.match_info["seq"]
    wanted = int(raw) if raw.isdigit() and len(raw) < 19 else None
    event = await asyncio.to_thread(audit.get, wanted) if wanted is not None else None
    if event is None:
        return render(request, "message.html", title="No such event", status=404, staff=staff,
                      heading="No such event",
                      text="There is no event with that number in the audit trail.")
    return render(
        request,
        "event.html",
        title=f"Event {event.seq}",
        staff=staff,
        back_href=_href("/governance", _query(request)),
        event=event,
        time=event.time.replace("T", " ").rstrip("Z") + " UTC",
        policy=_policy_text(audit, event),
        metadata=[(key.replace("_", " "), value) for key, value in sorted(event.metadata.items())],
    )


async def export_csv(request: web.Request) -> web.StreamResponse:
    """The filtered events as a CSV download, streamed; the export is itself recorded."""
    staff = await require_user(request, ROLE)
    audit = request.app[AUDIT]
    values = _query(request)
    try:
        flt = _filter(values)
    except FilterProblem as exc:
        return render(request, "message.html", title="Cannot export", status=400, staff=staff,
                      heading="Cannot export", text=str(exc))
    await audit.record_async(EventKind.AUDIT_EXPORT, sender=staff.address,
                             filters=[f"{k}={v}" for k, v in sorted(values.items())])
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="casegate-audit-{stamp}.csv"',
        }
    )
    await response.prepare(request)
    chunks = csv_chunks(audit.iterate(flt))  # each piece read from the store in a worker thread
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        await response.write(chunk.encode("utf-8"))
    await response.write_eof()
    return response
