"""Counts per day by rule as a stacked bar chart: server-side SVG, no script, no styles.

The figure carries a text alternative and the same numbers as a table (inside <details>), so it
reads without sight and without JavaScript.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

from gateway.web import Markup, escape, join

# Distinguishable colours with at least 3:1 contrast against white (WCAG non-text contrast).
PALETTE = (
    "#1d70b8", "#d4351c", "#00703c", "#6f3c8e", "#b58840", "#28a197", "#912b88", "#505a5f",
)
WIDTH = 760
HEIGHT = 240
LEFT = 40
BOTTOM = 30
TOP = 10


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def bar_chart(counts: list[tuple[str, str, int]], first: date, last: date) -> Markup:
    """The figure for `counts` ((YYYY-MM-DD, rule, n) rows) from `first` to `last` inclusive."""
    days = days_between(first, last)
    if not counts:
        return Markup('<p class="muted">No events with a rule in this period.</p>')
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for day_text, rule, n in counts:
        per_day[day_text][rule] = n
    rules = sorted({rule for _, rule, _ in counts})
    colour = {rule: PALETTE[i % len(PALETTE)] for i, rule in enumerate(rules)}
    peak = max(sum(v.values()) for v in per_day.values())
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / len(days)
    bar_w = max(1.0, slot * 0.8)
    shapes: list[Markup] = []
    for i, day in enumerate(days):
        key = day.isoformat()
        y = float(HEIGHT - BOTTOM)
        for rule in rules:
            n = per_day.get(key, {}).get(rule, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            shapes.append(Markup(
                f'<rect x="{LEFT + i * slot:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{colour[rule]}"><title>{escape(key)}: '
                f'{escape(rule)} {n}</title></rect>'
            ))
    axis = Markup(
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH}" y2="{HEIGHT - BOTTOM}" '
        f'stroke="#0b0c0c"/>'
        f'<text x="{LEFT - 6}" y="{TOP + 12}" text-anchor="end" font-size="12" '
        f'fill="#0b0c0c">{peak}</text>'
        f'<text x="{LEFT - 6}" y="{HEIGHT - BOTTOM}" text-anchor="end" font-size="12" '
        f'fill="#0b0c0c">0</text>'
        f'<text x="{LEFT}" y="{HEIGHT - 8}" font-size="12" fill="#0b0c0c">'
        f'{escape(first.isoformat())}</text>'
        f'<text x="{WIDTH}" y="{HEIGHT - 8}" text-anchor="end" font-size="12" '
        f'fill="#0b0c0c">{escape(last.isoformat())}</text>'
    )
    total = sum(n for _, _, n in counts)
    summary = (
        f"Stacked bar chart: {total} events with a rule from {first.isoformat()} to "
        f"{last.isoformat()}, at most {peak} on one day, across {len(rules)} rules."
    )
    svg = Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="chart-title">'
        f'<title id="chart-title">{escape(summary)}</title>{axis}{join(shapes)}</svg>'
    )
    legend = join([
        Markup(
            f'<li><svg width="14" height="14" aria-hidden="true"><rect width="14" height="14" '
            f'fill="{colour[rule]}"/></svg>{escape(rule)}</li>'
        )
        for rule in rules
    ])
    return Markup(
        f'<figure class="chart">{svg}<figcaption>{escape(summary)}</figcaption>'
        f'<ul class="legend">{legend}</ul></figure>{_table(counts)}'
    )


def _table(counts: list[tuple[str, str, int]]) -> Markup:
    rows = join([
        Markup(f"<tr><td>{escape(day)}</td><td>{escape(rule)}</td><td>{n}</td></tr>")
        for day, rule, n in counts
    ])
    return Markup(
        "<details><summary>The chart's numbers as a table</summary><table>"
        "<thead><tr><th scope=\"col\">Day</th><th scope=\"col\">Rule</th>"
        f"<th scope=\"col\">Events</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )
