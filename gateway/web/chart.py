"""Counts per day by rule as a stacked bar chart: server-side SVG, no script, no styles.

`bar_chart` computes the figure; `templates/chart.html` draws it. The figure carries a text
alternative and the same numbers as a table (inside <details>), so it reads without sight and
without JavaScript.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from gateway.web.pages import plural

# Distinguishable colours with at least 3:1 contrast against white (WCAG non-text contrast).
PALETTE = (
    "#1d70b8", "#d4351c", "#00703c", "#6f3c8e", "#b58840", "#28a197", "#912b88", "#505a5f",
)
WIDTH = 760
HEIGHT = 240
LEFT = 40
BOTTOM = 30
TOP = 10


@dataclass(frozen=True)
class Bar:
    """One rule's part of one day's bar."""

    x: float
    y: float
    width: float
    height: float
    colour: str
    day: str
    rule: str
    count: int


@dataclass(frozen=True)
class Chart:
    """What the template draws: bars, axis labels, legend, summary and the numbers."""

    bars: tuple[Bar, ...]
    legend: tuple[tuple[str, str], ...]  # (rule, colour)
    peak: int
    first: str
    last: str
    summary: str
    counts: tuple[tuple[str, str, int], ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    baseline: int = HEIGHT - BOTTOM


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def bar_chart(counts: list[tuple[str, str, int]], first: date, last: date) -> Chart | None:
    """The figure for `counts` ((YYYY-MM-DD, rule, n) rows) from `first` to `last` inclusive;
    None when there is nothing to draw."""
    if not counts:
        return None
    days = days_between(first, last)
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for day_text, rule, n in counts:
        per_day[day_text][rule] = n
    rules = sorted({rule for _, rule, _ in counts})
    colour = {rule: PALETTE[i % len(PALETTE)] for i, rule in enumerate(rules)}
    peak = max(sum(v.values()) for v in per_day.values())
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / len(days)
    bar_w = max(1.0, slot * 0.8)
    bars: list[Bar] = []
    for i, day in enumerate(days):
        key = day.isoformat()
        y = float(HEIGHT - BOTTOM)
        for rule in rules:
            n = per_day.get(key, {}).get(rule, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            bars.append(Bar(x=LEFT + i * slot, y=y, width=bar_w, height=h, colour=colour[rule],
                            day=key, rule=rule, count=n))
    total = sum(n for _, _, n in counts)
    summary = (
        f"Stacked bar chart: {plural(total, 'event')} with a rule from {first.isoformat()} to "
        f"{last.isoformat()}, at most {peak} on one day, across {plural(len(rules), 'rule')}."
    )
    return Chart(bars=tuple(bars), legend=tuple((r, colour[r]) for r in rules), peak=peak,
                 first=first.isoformat(), last=last.isoformat(), summary=summary,
                 counts=tuple(counts))
