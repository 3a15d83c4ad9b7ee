"""`casegate replay`: run the policy over past mail and show what it would have done, by rule.

This is the impact preview governance asks for before enforcement is switched on. It reads an
mbox file or a Maildir directory, decides each message exactly as the gateway would (the same
`policies.engine.evaluate`), and prints counts by rule. Nothing is sent and nothing is changed.
"""

from __future__ import annotations

import argparse
import json
import mailbox
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.common import UsageError, add_common, open_app
from gateway.stages.presentation import decision_json, header_envelope
from policies.engine import evaluate
from policies.errors import MessageError
from policies.model import Verdict

MAX_MESSAGE = 64 * 1024 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay",
        help="preview what the policy would have done with past mail (mbox or Maildir)",
        description="Decide every message in MAILBOX as the gateway would, and print counts "
        "by rule. Nothing is sent.",
    )
    parser.add_argument("mailbox", type=Path, metavar="MAILBOX")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per message, then a summary object")
    add_common(parser)
    parser.set_defaults(func=run)


def open_mailbox(path: Path) -> mailbox.Mailbox:
    if path.is_dir():
        if not (path / "cur").is_dir() or not (path / "new").is_dir():
            raise UsageError(f"{path}: is a directory but not a Maildir (no cur/ and new/)")
        return mailbox.Maildir(path, factory=None, create=False)
    if path.is_file():
        with path.open("rb") as handle:
            if not handle.read(5) == b"From ":
                raise UsageError(f"{path}: is not an mbox file (it does not start with 'From ')")
        return mailbox.mbox(path, factory=None, create=False)
    raise UsageError(f"{path}: no such mailbox")


def messages(box: mailbox.Mailbox) -> Iterator[tuple[int, bytes | None]]:
    """Each message's bytes in mailbox order; None for one that cannot be read."""
    for index, key in enumerate(sorted(box.iterkeys(), key=str)):
        try:
            raw = box.get_bytes(key)
        except (OSError, KeyError):
            yield index, None
            continue
        yield index, raw if len(raw) <= MAX_MESSAGE else None


class Progress:
    """A one-line progress bar on a terminal, with the rate and the time left; silent otherwise.

    It redraws at most every `REDRAW_SECONDS` (and at the last message), so a fast replay does
    not spend its time writing to the terminal.
    """

    REDRAW_SECONDS = 0.2
    WIDTH = 30

    def __init__(self, total: int, stream: TextIO,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.enabled = stream.isatty()
        self._clock = clock
        self._started = clock()
        self._drawn = -math.inf

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if now - self._drawn < self.REDRAW_SECONDS and done < self.total:
            return
        self._drawn = now
        self.stream.write(f"\r{self.line(done, now - self._started)}\x1b[K")
        self.stream.flush()

    def line(self, done: int, elapsed: float) -> str:
        """E.g. "[###-----] 120/1000  85 messages/s  2:43 left"."""
        filled = self.WIDTH * done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        text = f"[{bar}] {done}/{self.total}"
        if done and elapsed > 0:
            rate = done / elapsed
            left = round((self.total - done) / rate)
            text += f"  {rate:,.0f} messages/s  {left // 60}:{left % 60:02d} left"
        return text

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def run(args: argparse.Namespace) -> int:
    box = open_mailbox(args.mailbox)
    app = open_app(args)
    by_rule: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    try:
        snapshot = app.snapshot()
        total = len(box)
        progress = Progress(total, sys.stderr)
        for index, raw in messages(box):
            progress.update(index + 1)
            if raw is None:
                verdicts["unreadable"] += 1
                if args.json:
                    print(json.dumps({"index": index, "verdict": "unreadable"}))
                continue
            sender, recipients = header_envelope(raw)
            if not sender or not recipients:
                verdicts["no-envelope"] += 1
                if args.json:
                    print(json.dumps({"index": index, "verdict": "no-envelope"}))
                continue
            try:
                decision = evaluate(raw, sender, recipients, app.policy, snapshot,
                                    time.monotonic,
                                    multiple_external=app.config.policy.multiple_external)
            except MessageError:
                verdicts["unreadable"] += 1
                continue
            verdicts[decision.verdict.value] += 1
            for rd in decision.recipients:
                by_rule[f"{rd.action.value}:{rd.rule.id}"] += 1
            for refusal in decision.refusals:
                by_rule[f"refuse:{refusal.rule.id}"] += 1
            if args.json:
                print(json.dumps({"index": index, **decision_json(decision)}))
        progress.finish()
    finally:
        box.close()
        app.close()
    summary = {"messages": sum(verdicts.values()), "verdicts": dict(verdicts),
               "by_rule": dict(sorted(by_rule.items()))}
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        print_summary(summary)
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    verdicts = summary["verdicts"]
    print(f"{summary['messages']} messages: "
          f"{verdicts.get(Verdict.DELIVER.value, 0)} would be delivered, "
          f"{verdicts.get(Verdict.REFUSE.value, 0)} refused"
          + (f", {verdicts['unreadable']} unreadable" if verdicts.get("unreadable") else "")
          + (f", {verdicts['no-envelope']} without sender or recipients"
             if verdicts.get("no-envelope") else ""))
    if summary["by_rule"]:
        print("")
        print(f"{'Outcome:rule':<44} Count")
        for key, count in summary["by_rule"].items():
            print(f"{key:<44} {count}")
