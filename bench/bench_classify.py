"""How long classify_message takes, as a ratio to the stdlib parse of the same bytes.

Run: .venv/bin/python bench/bench_classify.py [--runs N]

Each case is a message built here. For each, the median wall time of N runs of
`email.message_from_bytes(raw, policy=email.policy.default)` and of `classify_message(raw, ...)`
is printed, and their ratio. The 5 MB PDF cases show that classification stays bounded
whatever the attachment holds: many short pages, one page of pure image data, more pages than
the limit, one page too big to lay out, or text that takes longer to read than the
per-attachment time budget. The last case raises the budgets to show the cost of reading a
5 MB PDF of text in full, which the default budgets never allow.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pypdf import PdfWriter
from pypdf.generic import (
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
)

from policies.content import classify_message
from tests.fixtures_content import build_message, default_rules, make_pdf

FIVE_MB = 5 * 1024 * 1024
LINE = "The child, Amy, told me she enjoys school and sees her father every other weekend. "


def text_pdf(target_bytes: int, pages: int) -> bytes:
    """A PDF of about `target_bytes` with `pages` pages of running text."""
    per_page = max(1, target_bytes // pages // (len(LINE) + 14))
    return make_pdf(["\n".join([LINE] * per_page)] * pages)


def image_pdf(target_bytes: int) -> bytes:
    """A one-page PDF carrying `target_bytes` of incompressible image data and one line."""
    writer = PdfWriter()
    page = writer.add_blank_page(width=595, height=842)
    side = int((target_bytes // 3) ** 0.5)
    image = DecodedStreamObject()
    image.set_data(os.urandom(side * side * 3))
    image.update({
        NameObject("/Type"): NameObject("/XObject"),
        NameObject("/Subtype"): NameObject("/Image"),
        NameObject("/Width"): NumberObject(side),
        NameObject("/Height"): NumberObject(side),
        NameObject("/ColorSpace"): NameObject("/DeviceRGB"),
        NameObject("/BitsPerComponent"): NumberObject(8),
    })
    content = DecodedStreamObject()
    content.set_data(b"q 500 0 0 500 40 300 cm /Im1 Do Q")
    page[NameObject("/Contents")] = writer._add_object(content)
    page[NameObject("/Resources")] = DictionaryObject({
        NameObject("/XObject"): DictionaryObject({NameObject("/Im1"): writer._add_object(image)}),
    })
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def with_pdf(pdf: bytes) -> bytes:
    return build_message("Please find the report attached.", subject="Report",
                         attachments=[("report.pdf", "application/pdf", pdf)])


def fifty_kb_message() -> bytes:
    body = "\n".join([LINE] * 260) + "\nCase ZC12C00123, DOB 01/02/2014.\n"
    pdf = text_pdf(12 * 1024, pages=3)
    return build_message(body, subject="Case update", html=f"<p>{body[:6000]}</p>",
                         attachments=[("notes.pdf", "application/pdf", pdf)])


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rules = default_rules()
    slow_rules = replace(rules, limits=replace(rules.limits, attachment_seconds=0.5))
    roomy_rules = replace(rules, limits=replace(rules.limits, max_text_chars=8_000_000,
                                                attachment_seconds=30.0))
    cases = [
        ("50 KB message (text, HTML, 3-page PDF)", fifty_kb_message(), rules),
        ("5 MB PDF, 250 pages (character budget)", with_pdf(text_pdf(FIVE_MB, pages=250)), rules),
        ("5 MB PDF, one image page (a scan)", with_pdf(image_pdf(FIVE_MB)), rules),
        ("5 MB PDF, a single 5 MB page (token limit)",
         with_pdf(text_pdf(FIVE_MB, pages=1)), rules),
        ("5 MB PDF, 1000 pages (page limit)",
         with_pdf(text_pdf(FIVE_MB, pages=1000)), rules),
        ("5 MB PDF, 250 pages, 0.5 s budget", with_pdf(text_pdf(FIVE_MB, pages=250)),
         slow_rules),
        ("5 MB PDF, 60 pages of text, read in full",
         with_pdf(text_pdf(FIVE_MB, pages=60)), roomy_rules),
    ]
    print(f"median of {args.runs} runs; Python {sys.version.split()[0]}")
    print(f"{'case':<46} {'size':>9} {'parse ms':>9} {'classify ms':>12} {'ratio':>7}  readable")
    for name, raw, case_rules in cases:
        parse = median_seconds(
            lambda raw=raw: email.message_from_bytes(raw, policy=email.policy.default),
            args.runs)
        classify = median_seconds(
            lambda raw=raw, r=case_rules: classify_message(raw, r, time.monotonic), args.runs)
        facts = classify_message(raw, case_rules, time.monotonic)
        readable = ",".join(str(a.readable) for a in facts.attachments)
        print(f"{name:<46} {len(raw) / 1024:>7.0f}KB {parse * 1000:>9.1f} "
              f"{classify * 1000:>12.1f} {classify / parse:>7.1f}  {readable}")


if __name__ == "__main__":
    main()
