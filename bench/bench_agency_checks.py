"""False positives and detection of the agency-check recogniser, and what it costs.

Run: .venv/bin/python bench/bench_agency_checks.py [--seeds 1 2 3] [--baseline /work/main]

For each seed, tests/corpus_checks.py generates 600 ordinary messages that mention checks and
300 original results; each is classified and decided (`evaluate`, to an outside recipient)
with the embedded policy, and again with the corpus's councils listed as check agencies (as an
organisation lists the councils it works with). A message counts as caught when it is decided
an original agency check result. The hand-written hold-out sets follow (see
tests/corpus_checks.py for which were used to tune). Misses and false positives are broken down
by template and channel.

Cost: the median time of `restricted.scan` over the texts of a short message, of a 2 MB
attachment text, and classify_message of both, with and without the scan's phrase lists
(emptied), so the difference is what the recogniser adds.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import restricted
from policies.content import classify_message
from policies.engine import decide
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import Snapshot
from tests.corpus_checks import COUNCILS, STAFF, Sample, corpus, holdout
from tests.fixtures_content import build_message

SNAPSHOT = Snapshot(now=datetime(2026, 1, 5, tzinfo=UTC))


def policies() -> dict[str, Policy]:
    data = resources.files("policies").joinpath("data")
    documents = [(name, data.joinpath(name).read_text("utf-8")) for name in EMBEDDED_FILES]
    listed = ", ".join(f'"{domain}"' for _, domain in COUNCILS)
    organisation = ("org.toml", f"[domains]\ncheck_agencies = {{ extend = [{listed}] }}\n")
    return {"default lists": parse_policy(documents),
            "councils listed": parse_policy([*documents, organisation])}


def caught(sample: Sample, policy: Policy) -> bool:
    facts = classify_message(sample.raw, policy.content, time.monotonic)
    return decide(facts, STAFF, sample.recipients, policy,
                  SNAPSHOT).facts.information_type == "agency-check-result"


def figures(label: str, samples: list[Sample], policy: Policy) -> None:
    counts: collections.Counter[tuple[bool, bool]] = collections.Counter()
    wrong: collections.Counter[tuple[bool, str, str]] = collections.Counter()
    for sample in samples:
        hit = caught(sample, policy)
        counts[(sample.positive, hit)] += 1
        if hit != sample.positive:
            wrong[(sample.positive, sample.kind, sample.channel)] += 1
    negatives = counts[(False, True)] + counts[(False, False)]
    positives = counts[(True, True)] + counts[(True, False)]
    print(f"  {label:34} false positives {counts[(False, True)]:3}/{negatives:<4} "
          f"detected {counts[(True, True)]:3}/{positives}")
    for (positive, kind, channel), number in sorted(wrong.items()):
        print(f"      {'missed' if positive else 'false positive'}: {kind} ({channel}) x{number}")


def median_ms(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def cost(policy: Policy, runs: int) -> None:
    rules = policy.content
    bare = replace(rules, agency_checks=restricted.AgencyCheckMarks(),
                   legal_advice=restricted.LegalAdviceMarks())
    short = build_message("Dear Mr Harris,\nWe have requested police checks and are awaiting "
                          "the results.\nKind regards,\nJo", subject="ZC12C00123 update")
    page = ("Incident date: 01/02/2023\nOccurrence number: 12/34567/23\nOutcome: No further "
            "action\nThe officers attended the address after a call from a neighbour.\n")
    text = page * (2 * 1024 * 1024 // len(page))
    big = build_message("see attached", attachments=[("log.txt", "text/plain", text.encode())])
    units = [restricted.Unit("attachment-text", text)]
    scanned = median_ms(lambda: restricted.scan(units, rules.agency_checks, rules.legal_advice),
                        runs)
    print(f"  scan of a 2 MB attachment text of record fields: {scanned:.1f} ms")
    for name, raw in (("short message", short), ("2 MB text attachment", big)):
        with_scan = median_ms(lambda raw=raw: classify_message(raw, rules, time.monotonic), runs)
        without = median_ms(lambda raw=raw: classify_message(raw, bare, time.monotonic), runs)
        print(f"  classify_message, {name}: {with_scan:.2f} ms "
              f"(phrase lists emptied: {without:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    chosen = policies()
    for seed in args.seeds:
        samples = corpus(seed)
        print(f"seed {seed}: {sum(not s.positive for s in samples)} ordinary, "
              f"{sum(s.positive for s in samples)} results")
        for label, policy in chosen.items():
            figures(label, samples, policy)
    for batch in (1, 2):
        print(f"hold-out set {batch}:")
        figures("default lists", holdout(batch), chosen["default lists"])
    print("cost:")
    cost(chosen["default lists"], args.runs)


if __name__ == "__main__":
    main()
