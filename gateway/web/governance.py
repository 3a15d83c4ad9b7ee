"""The governance view of the audit trail (role "governance" only; everyone else gets 403).

    GET /governance                 filters, a chart of counts per day by rule, a page of events
    GET /governance/events/{seq}    one event in full, with the policy text it cites
    GET /governance/export.csv      the filtered events as CSV (itself an audit event)

Pages are keyset-paginated by sequence number (`?before=SEQ`), so a page answers as fast with a
million events behind it as with ten. Filters travel in the query string; nothing here changes
state, so no form needs a CSRF token.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from aiohttp import web

from gateway.audit import GRADES, EventFilter, normalise_time
from gateway.auditexport import csv_chunks
from gateway.auditstore import StoredEvent
from gateway.web import Markup, escape, fill, join, render
from gateway.web.auth import require_user, user_nav
from gateway.web.chart import bar_chart

if TYPE_CHECKING:
    from gateway.audit import AuditLog
    from gateway.web import WebDeps

ROLE = "governance"
PAGE_SIZE = 50
CHART_DEFAULT_DAYS = 30
CHART_MAX_DAYS = 92
FILTER_FIELDS = ("since", "until", "sender", "domain", "case", "rule", "grade", "kind")
MAX_FILTER = 320

AUDIT: web.AppKey[AuditLog] = web.AppKey("casegate-governance-audit")


def install(web_app: web.Application, deps: WebDeps) -> None:
    web_app[AUDIT] = deps.audit
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


def _options(selected: str) -> Markup:
    choices = [("", "Any grade"), *((g, g) for g in GRADES)]
    return join([
        Markup(
            f'<option value="{escape(v)}"{" selected" if v == selected else ""}>'
            f"{escape(label)}</option>"
        )
        for v, label in choices
    ])


def _events_table(events: list[StoredEvent], values: dict[str, str]) -> Markup:
    if not events:
        return Markup('<p class="muted">No events match these filters.</p>')
    back = urlencode(values)
    rows = []
    for e in events:
        link = f"/governance/events/{e.seq}" + (f"?{back}" if back else "")
        rows.append(Markup(
            f'<tr><td><a href="{escape(link)}">{e.seq}</a></td>'
            f"<td>{escape(e.time[:19].replace('T', ' '))}</td><td>{escape(e.kind)}</td>"
            f'<td><span class="grade grade-{escape(e.grade)}">{escape(e.grade)}</span></td>'
            f"<td>{escape(e.rule or '-')}</td><td>{escape(e.sender or '-')}</td>"
            f"<td>{escape(', '.join(e.recipients) or '-')}</td>"
            f"<td>{escape(', '.join(e.case_numbers) or '-')}</td></tr>"
        ))
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in ("Event", "Time (UTC)", "Kind", "Grade", "Rule", "Sender", "Recipients",
                  "Case numbers")
    )
    return Markup(
        f"<table><caption>Events, newest first</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{join(rows)}</tbody></table>"
    )


def _pages(events: list[StoredEvent], values: dict[str, str], before: int | None) -> Markup:
    links: list[Markup] = []
    if before is not None:
        links.append(Markup(f'<a href="{escape(_href("/governance", values))}">Newest events</a>'))
    if len(events) == PAGE_SIZE:
        older = _href("/governance", values, before=str(events[-1].seq))
        links.append(Markup(f'<a href="{escape(older)}" rel="next">Older events</a>'))
    return join(links)


def _before(request: web.Request) -> int | None:
    raw = request.query.get("before", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def trail(request: web.Request) -> web.Response:
    """The filter form, the chart and one page of events."""
    staff = await require_user(request, ROLE)
    audit = request.app[AUDIT]
    values = _query(request)
    before = _before(request)
    problem = Markup("")
    try:
        flt = _filter(values)
    except FilterProblem as exc:
        problem = fill("error.html", text=str(exc))
        flt = EventFilter()
    events = audit.page(flt, before=before, limit=PAGE_SIZE)
    first, last = _chart_period(flt, datetime.now(UTC).date())
    chart_flt = replace(
        flt,
        since=normalise_time(first.isoformat()),
        until=normalise_time((last + timedelta(days=1)).isoformat()),
    )
    chart = bar_chart(audit.counts_by_day_and_rule(chart_flt), first, last)
    checkpoint = audit.store.latest_checkpoint()
    integrity = (
        f"The trail was last signed at event {checkpoint.seq} "
        f"({checkpoint.time[:16].replace('T', ' ')} UTC)."
        if checkpoint is not None
        else "The trail has not been signed yet."
    )
    rule_options = join([Markup(f'<option value="{escape(r)}">') for r in sorted(audit.rules)])
    return render(
        "governance.html",
        title="Audit trail",
        nav=user_nav(staff),
        since=values.get("since", ""),
        until=values.get("until", ""),
        sender=values.get("sender", ""),
        domain=values.get("domain", ""),
        case=values.get("case", ""),
        rule=values.get("rule", ""),
        kind=values.get("kind", ""),
        grade_options=_options(values.get("grade", "")),
        rule_options=rule_options,
        problem=problem,
        integrity=integrity,
        chart_range=f", {first.isoformat()} to {last.isoformat()}",
        chart=chart,
        export_href=_href("/governance/export.csv", values),
        events=_events_table(events, values),
        pages=_pages(events, values, before),
    )


def _policy_text(audit: AuditLog, event: StoredEvent) -> Markup:
    rule = audit.rules.get(event.rule)
    if rule is not None:
        return fill("policy.html", sentence=rule.sentence, citation=rule.citation)
    if event.citation:
        return fill("policy.html", sentence=f"Rule {event.rule}.", citation=event.citation)
    return Markup('<p class="muted">This event names no policy rule.</p>')


def _metadata_table(event: StoredEvent) -> Markup:
    if not event.metadata:
        return Markup('<p class="muted">Nothing else was recorded.</p>')
    rows = []
    for key, value in sorted(event.metadata.items()):
        text = ", ".join(value) if isinstance(value, list) else str(value)
        rows.append(Markup(
            f'<tr><th scope="row">{escape(key.replace("_", " "))}</th>'
            f"<td>{escape(text)}</td></tr>"
        ))
    return Markup(f'<table class="meta"><tbody>{join(rows)}</tbody></table>')


async def event_detail(request: web.Request) -> web.Response:
    """One event in full, with the rule's sentence and citation from the policy."""
    staff = await require_user(request, ROLE)
    audit = request.app[AUDIT]
    raw = request.match_info["seq"]
    event = audit.get(int(raw)) if raw.isdigit() and len(raw) < 19 else None
    if event is None:
        return render("message.html", title="No such event", status=404, nav=user_nav(staff),
                      heading="No such event",
                      text="There is no event with that number in the audit trail.")
    return render(
        "event.html",
        title=f"Event {event.seq}",
        nav=user_nav(staff),
        back_href=_href("/governance", _query(request)),
        seq=event.seq,
        time=event.time.replace("T", " ").rstrip("Z") + " UTC",
        kind=event.kind,
        grade=event.grade,
        rule=event.rule or "none",
        sender=event.sender or "none",
        recipients=", ".join(event.recipients) or "none",
        case_numbers=", ".join(event.case_numbers) or "none",
        decision_id=event.decision_id or "none",
        policy=_policy_text(audit, event),
        metadata=_metadata_table(event),
    )


async def export_csv(request: web.Request) -> web.StreamResponse:
    """The filtered events as a CSV download, streamed; the export is itself recorded."""
    staff = await require_user(request, ROLE)
    audit = request.app[AUDIT]
    values = _query(request)
    try:
        flt = _filter(values)
    except FilterProblem as exc:
        return render("message.html", title="Cannot export", status=400, nav=user_nav(staff),
                      heading="Cannot export", text=str(exc))
    audit.record("audit-export", sender=staff.address,
                 filters=[f"{k}={v}" for k, v in sorted(values.items())])
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="casegate-audit-{stamp}.csv"',
        }
    )
    await response.prepare(request)
    for chunk in csv_chunks(audit.iterate(flt)):
        await response.write(chunk.encode("utf-8"))
    await response.write_eof()
    return response
