"""What opening a container costs: classify_message of each kind of container against the same
files attached bare, in the same run (DESIGN ruling 22).

Run: .venv/bin/python bench/bench_containers.py [--runs N] [--size small|large] [--no-pdf]

The files are a PDF of running text (3 pages; with --size large 40 pages) and a DOCX of 40
paragraphs, each line with a case number; with --no-pdf a text file replaces the PDF, so that
the containers' own cost is not hidden behind the PDF's text extraction. For each container the
median wall time of N runs of `classify_message` is printed for the message carrying the
container and for the message carrying the same files attached bare (the two measured in turn),
with their ratio; the last columns are the number of attachments found and whether anything
was left unopened (never, here: these are everyday cases, within every budget).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.content import classify_message
from tests.containerkit import docx_with, forwarded_chain, make_zip, nested_zip
from tests.fixtures_content import build_message, default_rules, make_docx, make_pdf
from tests.olekit import Msg, make_msg, make_ole_package

LINE = "The child, Amy, told me she enjoys school and sees her father every other weekend. "
CASE = "ZC12C00123"

Files = Sequence[tuple[str, bytes]]


def pdf_of(pages: int) -> bytes:
    return make_pdf(["\n".join(f"{n}. {LINE} Case {CASE}." for n in range(45))] * pages)


def docx_of(paragraphs: int) -> bytes:
    return make_docx([[f"{n}. {LINE} Case {CASE}."] for n in range(paragraphs)])


def message(attachments: Files) -> bytes:
    return build_message("Please find the documents attached.", subject="Documents",
                         attachments=[(name, "application/octet-stream", data)
                                      for name, data in attachments])


def median_seconds(actions: Sequence[Callable[[], object]], runs: int) -> list[float]:
    """The median time of each action, run in turn (so that a busy moment of the machine
    falls on all of them alike)."""
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(runs):
        for action, measured in zip(actions, times, strict=True):
            start = time.perf_counter()
            action()
            measured.append(time.perf_counter() - start)
    return [statistics.median(measured) for measured in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--size", choices=("small", "large"), default="small")
    parser.add_argument("--no-pdf", action="store_true",
                        help="a text file instead of the PDF (shows the containers' own cost)")
    args = parser.parse_args()
    rules = default_rules()
    pdf = pdf_of(3 if args.size == "small" else 40)
    docx = docx_of(40)
    first = ("letter.pdf", pdf)
    if args.no_pdf:
        first = ("notes.txt", "\n".join(f"{n}. {LINE} Case {CASE}." for n in range(45)).encode())
    files = [first, ("report.docx", docx)]
    inner = build_message("Forwarded with the documents.", subject="Documents",
                          attachments=[(name, "application/octet-stream", data)
                                       for name, data in files])
    cover = make_docx([["Cover note: see the embedded documents."]])
    cases: list[tuple[str, bytes, bytes]] = [
        ("zip", message([("docs.zip", make_zip(files))]), message(files)),
        ("zip in a zip in a zip", message([("docs.zip", nested_zip(3, files))]), message(files)),
        (".eml attached", message([("fwd.eml", inner)]), message(files)),
        ("forwarded message/rfc822", forwarded_chain(1, inner), message(files)),
        (".msg attached",
         message([("fwd.msg", make_msg("Documents", "Forwarded.", attachments=files))]),
         message(files)),
        (".msg attached to a .msg",
         message([("fwd.msg", make_msg("FW", "fyi", messages=[Msg(attachments=files)]))]),
         message(files)),
        ("DOCX embedding the files (OLE Package, DOCX)",
         message([("cover.docx", docx_with({
             "word/embeddings/Microsoft_Word_Document.docx": docx,
             "word/embeddings/oleObject1.bin": make_ole_package(*first)},
             text="Cover note: see the embedded documents."))]),
         message([("cover.docx", cover), *files])),
        ("PDF with the DOCX attached inside",
         message([("letter.pdf", make_pdf([f"{LINE} Case {CASE}."] * 3, embedded=docx))]),
         message([("letter.pdf", make_pdf([f"{LINE} Case {CASE}."] * 3)),
                  ("report.docx", docx)])),
    ]
    print(f"median of {args.runs} runs; {first[0]} {len(first[1]) / 1024:.1f} KB, report.docx "
          f"{len(docx) / 1024:.1f} KB; Python {sys.version.split()[0]}")
    print(f"{'container':<44} {'size':>7} {'bare ms':>8} {'inside ms':>10} {'ratio':>6} "
          f"{'found':>6}  unopened")
    for name, contained, bare in cases:
        bare_s, inside_s = median_seconds(
            [lambda raw=raw: classify_message(raw, rules, time.monotonic)
             for raw in (bare, contained)], args.runs)
        facts = classify_message(contained, rules, time.monotonic)
        unopened = ",".join(a.unopened for a in facts.attachments if a.unopened) or "-"
        assert CASE in facts.case_numbers, name
        print(f"{name:<44} {len(contained) / 1024:>5.0f}KB {bare_s * 1000:>8.2f} "
              f"{inside_s * 1000:>10.2f} {inside_s / bare_s:>6.2f} "
              f"{len(facts.attachments):>6}  {unopened}")


if __name__ == "__main__":
    main()
