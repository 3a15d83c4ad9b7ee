"""The governance view over real HTTPS: roles, filters, pages, detail, chart and CSV export."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.audit.trail import EventFilter
from tests.certs import ServerCert
from tests.staffweb import GOVERNANCE, POLICY, PRACTITIONER, StaffWeb


@pytest.fixture
async def staff_web(tmp_path: Path, server_cert: ServerCert) -> AsyncIterator[StaffWeb]:
    """The staff pages with a few graded events in the trail."""
    async with StaffWeb(tmp_path / "data", server_cert) as running:
        audit = running.audit
        for i in range(3):
            audit.record("refusal", rule="personal-address", sender=PRACTITIONER,
                         recipients=[f"parent{i}@gmail.com"], case_numbers=["ZE26C00001"],
                         decision_id=f"d-{i}", stage="rcpt")
        audit.record("refusal", rule="editable-document", sender="other@cafcass.gov.uk",
                     recipients=["<script>alert(1)</script>@example.org"],
                     case_numbers=["ZE26C00002"], attachment_types=["docx"])
        audit.record("delivery", sender=PRACTITIONER, recipients=["court@justice.gov.uk"])
        yield running


@pytest.fixture
async def governance(staff_web: StaffWeb) -> AsyncIterator[aiohttp.ClientSession]:
    """A client signed in as a governance user."""
    async with staff_web.client() as client:
        answer = await staff_web.sign_in(client, GOVERNANCE)
        assert answer.status == 303
        yield client


def event_numbers(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'href="/governance/events/(\d+)', page)]


@pytest.mark.parametrize("path", ["/governance", "/governance/events/3",
                                  "/governance/export.csv"])
async def test_other_staff_get_403(staff_web: StaffWeb, path: str) -> None:
    """A signed-in user without the governance role gets 403 on every governance page."""
    async with staff_web.client() as client:
        await staff_web.sign_in(client, PRACTITIONER)
        async with client.get(path) as page:
            assert page.status == 403
            text = await page.text()
    assert "You do not have access to this page" in text
    assert "parent0@gmail.com" not in text
    denied = staff_web.audit.page(EventFilter(kind="access-denied"))[0]
    assert denied.sender == PRACTITIONER and denied.metadata["path"] == path


async def test_trail_lists_events_newest_first(
    staff_web: StaffWeb, governance: aiohttp.ClientSession
) -> None:
    """The unfiltered page lists every event, newest first, with grades shown."""
    async with governance.get("/governance") as page:
        assert page.status == 200
        text = await page.text()
    numbers = event_numbers(text)
    assert numbers == sorted(numbers, reverse=True)
    assert len(numbers) == staff_web.audit.store.head()[0]
    assert 'class="grade grade-high"' in text
    assert "The trail has not been signed yet." in text
    staff_web.audit.checkpoint()
    async with governance.get("/governance") as page:
        assert f"last signed at event {staff_web.audit.store.head()[0]}" in await page.text()


async def test_user_values_are_escaped(governance: aiohttp.ClientSession) -> None:
    """A recipient with markup in it is shown as text, never as HTML."""
    async with governance.get("/governance", params={"case": "ZE26C00002"}) as page:
        text = await page.text()
    assert "<script>" not in text
    # escaped, with line-break opportunities after the @ and the dots of the address
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@<wbr>example.<wbr>org" in text


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({"grade": "high"}, 3),
        ({"rule": "editable-document"}, 1),
        ({"domain": "gmail.com"}, 3),
        ({"case": "ZE26C00001", "sender": PRACTITIONER}, 3),
        ({"kind": "delivery"}, 1),
        ({"since": "2000-01-01", "until": "2000-01-02"}, 0),
    ],
)
async def test_filters_narrow_the_list(
    governance: aiohttp.ClientSession, params: dict[str, str], count: int
) -> None:
    """Each filter in the query string selects the matching events only."""
    async with governance.get("/governance", params=params) as page:
        assert page.status == 200
        assert len(event_numbers(await page.text())) == count


async def test_today_inclusive_date_range(governance: aiohttp.ClientSession) -> None:
    """A "to" date includes that whole day."""
    today = datetime.now(UTC).date().isoformat()
    async with governance.get("/governance", params={"since": today, "until": today,
                                                     "grade": "high"}) as page:
        assert len(event_numbers(await page.text())) == 3


async def test_a_bad_date_is_explained(governance: aiohttp.ClientSession) -> None:
    """An unreadable date is a sentence on the page, not an error."""
    async with governance.get("/governance", params={"since": "last week"}) as page:
        assert page.status == 200
        assert "Dates must be written as YYYY-MM-DD" in await page.text()


async def test_pages_by_sequence_number(
    staff_web: StaffWeb, governance: aiohttp.ClientSession
) -> None:
    """Older events are a link with ?before=SEQ; pages never overlap."""
    for _ in range(60):
        staff_web.audit.record("delivery", sender=PRACTITIONER)
    async with governance.get("/governance") as page:
        first = await page.text()
    older = re.search(r'href="(/governance\?before=\d+)" rel="next"', first)
    assert older
    async with governance.get(older.group(1)) as page:
        second = await page.text()
    one, two = event_numbers(first), event_numbers(second)
    assert len(one) == 50 and max(two) < min(one)
    assert "Newest events" in second


async def test_event_detail_quotes_the_policy(
    staff_web: StaffWeb, governance: aiohttp.ClientSession
) -> None:
    """An event's page shows every field and the rule's sentence and citation."""
    seq = staff_web.audit.page(EventFilter(rule="editable-document"))[0].seq
    async with governance.get(f"/governance/events/{seq}") as page:
        assert page.status == 200
        text = await page.text()
    rule = POLICY.rules["editable-document"]
    assert html.escape(rule.sentence) in text
    assert f"<cite>{html.escape(rule.citation)}</cite>" in text
    assert "ZE26C00002" in text and "docx" in text
    async with governance.get("/governance/events/999999") as page:
        assert page.status == 404


async def test_chart_counts_per_day_by_rule(governance: aiohttp.ClientSession) -> None:
    """The chart is inline SVG with one bar segment per rule and its numbers as a table."""
    async with governance.get("/governance") as page:
        text = await page.text()
    today = datetime.now(UTC).date().isoformat()
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in text
    assert f"<title>{today}: personal-address 3</title>" in text
    assert f"<td>{today}</td><td>editable-document</td><td>1</td>" in text


async def test_csv_export_follows_the_filters(
    staff_web: StaffWeb, governance: aiohttp.ClientSession
) -> None:
    """The export is a CSV download of the filtered events, and is itself audited."""
    async with governance.get("/governance/export.csv", params={"grade": "high"}) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Disposition"].startswith("attachment;")
        body = await answer.text()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 3
    assert {r["rule"] for r in rows} == {"personal-address"}
    assert rows[0]["recipients"] == "parent0@gmail.com"
    export = staff_web.audit.page(EventFilter(kind="audit-export"))
    assert export[0].sender == GOVERNANCE and export[0].metadata["filters"] == ["grade=high"]
