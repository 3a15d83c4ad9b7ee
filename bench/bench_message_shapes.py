"""Memory of the policy decision by the shape of the message (issue 14, point 4: at most 3x the
message on every path).

    .venv/bin/python bench/bench_message_shapes.py [--mib 20] [--baseline CHECKOUT]
                                                   [--only SHAPE ...]

`policies.engine.evaluate` on one message of about `--mib` MiB of each shape below, each in a
fresh process (so that no shape inherits another's heap), with tracemalloc on; a baseline's
process imports that checkout's code (PYTHONPATH), this script's message shapes. Printed per
shape: the peak of traced memory during `evaluate`, beyond what was in use before it, as a
multiple of the message's size; and "in all", that plus the message itself, which the gateway
holds while it decides. With `--baseline CHECKOUT` (another commit's checkout, e.g.
`git worktree add /tmp/base HEAD~2`) each shape is also measured there, in the same run.

Shapes: a text/plain body (7bit, with a case number whole on its first line, a
tab-separated table, quoted-printable, 8bit UTF-8 with Outlook's dash and apostrophe and an
accented name on every line, and a reply quoting the text with "> "); a text/html body (7bit,
quoted-printable, and 8bit UTF-8 as Outlook writes it); multipart/alternative (text and
HTML); a base64 HTML attachment; a base64 CSV attachment; a forwarded message
(message/rfc822) with a text body.
The text is prose with dates and phone numbers; the HTML a table of them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import quopri
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENDER = "jo.smith@cafcass.gov.uk"
RECIPIENT = "colleague@cafcass.gov.uk"
PROSE = ("The family meeting on 12/03/2024 went well; the children are settled at school and "
         "their father can be reached on 01632 960 123 = most evenings.\n")
CSV = "2024-03-12,09:30,01632 960 123,ZC12C00123,250.00,visit at home\n"
ROW = "<tr><td>Visit 12/03/2024</td><td>Room 4, 01632 960 123</td><td>notes &amp; plan</td></tr>\n"
SHAPES = ("text", "text-case", "text-tabs", "text-qp", "text-outlook", "reply", "html",
          "html-qp", "html-outlook", "alternative", "html-attachment", "csv-attachment",
          "forwarded")
CASE_LINE = "Case ZC12C00123: notes for the file.\n"  # a case number, whole on its line
TAB_ROW = "12/03/2024\t09:30\tvisit at home\t01632 960 123\tnotes\n"  # a pasted table
# What Outlook types for a dash and an apostrophe (past U+00FF: Python holds such text at two
# bytes a character), and an accented name
OUTLOOK = {"; ": " \u2013 ", "children": "Zo\u00eb\u2019s children"}


def _outlook(text: str) -> str:
    for plain, typed in OUTLOOK.items():
        text = text.replace(plain, typed)
    return text


def _text(size: int) -> str:
    return PROSE * (size // len(PROSE))


def _html(size: int) -> str:
    return "<html><body><table>\n" + ROW * (size // len(ROW)) + "</table></body></html>\n"


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def _part(content_type: str, body: bytes, encoding: str = "") -> bytes:
    head = f"Content-Type: {content_type}\r\n"
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\r\n"
    return head.encode() + b"\r\n" + body


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _qp(text: str) -> bytes:
    return quopri.encodestring(text.encode()).replace(b"\n", b"\r\n")


def _multipart(subtype: str, *parts: bytes) -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="b1"\r\n\r\n'.encode()
    return head + b"".join(b"--b1\r\n" + part + b"\r\n" for part in parts) + b"--b1--\r\n"


def message(shape: str, size: int) -> bytes:
    """About `size` bytes of the given shape."""
    head = (f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: Notes\r\n"
            "MIME-Version: 1.0\r\n").encode()
    note = _part("text/plain", b"Please see the attached.\r\n")
    bodies = {
        "text": lambda: _part("text/plain; charset=utf-8", _crlf(_text(size))),
        "text-case": lambda: _part("text/plain; charset=utf-8", _crlf(CASE_LINE + _text(size))),
        "text-tabs": lambda: _part("text/plain; charset=utf-8",
                                   _crlf(TAB_ROW * (size // len(TAB_ROW)))),
        "text-qp": lambda: _part("text/plain; charset=utf-8", _qp(_text(size)),
                                 "quoted-printable"),
        "text-outlook": lambda: _part("text/plain; charset=utf-8",
                                      _crlf(_outlook(_text(size))), "8bit"),
        "reply": lambda: _part("text/plain; charset=utf-8", _crlf(
            "Thanks, see below.\n\nOn Monday Jo wrote:\n"
            + "".join("> " + line for line in _text(size).splitlines(keepends=True)))),
        "html": lambda: _part("text/html; charset=utf-8", _crlf(_html(size))),
        "html-qp": lambda: _part("text/html; charset=utf-8", _qp(_html(size)),
                                 "quoted-printable"),
        "html-outlook": lambda: _part("text/html; charset=utf-8",
                                      _crlf(_outlook(_html(size).replace("notes", "children"))),
                                      "8bit"),
        "alternative": lambda: _multipart(
            "alternative", _part("text/plain", _crlf(_text(size // 2))),
            _part("text/html", _crlf(_html(size // 2)))),
        "html-attachment": lambda: _multipart(
            "mixed", note, _part('text/html; name="notes.html"',
                                 _base64(_html(size * 3 // 4).encode()), "base64")),
        "csv-attachment": lambda: _multipart(
            "mixed", note, _part('text/csv; name="visits.csv"',
                                 _base64((CSV * (size * 3 // 4 // len(CSV))).encode()),
                                 "base64")),
        "forwarded": lambda: _multipart(
            "mixed", note, _part("message/rfc822", b"From: x@example.org\r\nSubject: fwd\r\n"
                                 + _part("text/plain", _crlf(_text(size))))),
    }
    return head + bodies[shape]()


def measure(shape: str, mib: float) -> dict[str, float]:
    """In this process: evaluate once to warm up, then once traced."""
    from gateway.app import App
    from policies.engine import evaluate

    raw = message(shape, int(mib * 2**20))
    with tempfile.TemporaryDirectory() as data:
        with App.open(None, Path(data)) as app:
            snapshot = app.snapshot()
            evaluate(message(shape, 4096), SENDER, [RECIPIENT], app.policy, snapshot,
                     time.monotonic)
            tracemalloc.start()
            start = tracemalloc.get_traced_memory()[0]
            decision = evaluate(raw, SENDER, [RECIPIENT], app.policy, snapshot, time.monotonic)
            peak = tracemalloc.get_traced_memory()[1] - start
            tracemalloc.stop()
    return {"size": len(raw), "peak": peak / len(raw),
            "readable": float(UNREADABLE not in decision.facts.protected_reasons)}


UNREADABLE = "unreadable-attachment"


def run(checkout: Path, shape: str, mib: float) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", shape, str(mib)],
                          capture_output=True, text=True, cwd=checkout,
                          env={**os.environ, "PYTHONPATH": str(checkout)},
                          timeout=600, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{\"size\"")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{shape} in {checkout}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(measure(sys.argv[2], float(sys.argv[3]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=float, default=20.0, help="message size (20 MiB)")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alike")
    parser.add_argument("--only", action="append", choices=SHAPES, help="these shapes only")
    args = parser.parse_args()
    checkouts = [("this checkout", ROOT)]
    if args.baseline:
        checkouts.append(("baseline", args.baseline.resolve()))
    print(f"evaluate's traced peak beyond the message, {args.mib:g} MiB messages "
          f"(in all: plus the message)\n")
    print("| shape | size | " + " | ".join(f"{name}: beyond / in all" for name, _ in checkouts)
          + " |")
    print("|---|---|" + "---|" * len(checkouts))
    for shape in args.only or SHAPES:
        cells, size = [], 0
        for _, checkout in checkouts:
            found = run(checkout, shape, args.mib)
            size = int(found["size"])
            unread = "" if found["readable"] else " (attachment unreadable: over budget)"
            cells.append(f"{found['peak']:.2f}x / {found['peak'] + 1:.2f}x{unread}")
        print(f"| {shape} | {size / 2**20:.1f} MiB | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
