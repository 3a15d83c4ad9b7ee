"""Which native engine finds the candidates of policies/scan.py fastest, on the same inputs.

    .venv/bin/python bench/bench_scan_engines.py [--runs N]

The expressions are the ones policies/scan.py compiles for the packaged policy (the shapes of
the identifier patterns, the information types' keywords, the agency-check phrase words),
over the 2 MB messages of `bench/bench_evaluate.py` (prose, digit-heavy with a CSV table, the
`smtp-source -l` body). Each engine is asked the same question: where does each expression
match?

* hyperscan: one multi-pattern block-mode database, every end of every expression reported
  in one pass (what policies/scan.py does);
* google-re2 (not a dependency: `pip install google-re2` to measure it): an RE2 Set says which
  expressions match, then each of those is searched for its matches (a Set gives no offsets);
* re: the stdlib, one alternation of all expressions, searched once (leftmost-first, so it
  reports fewer matches than the others: overlapping ones are lost).

Prints MB/s (median of N runs) per engine and text.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_evaluate  # noqa: E402
from bench_gateway import make_message  # noqa: E402

from policies import content, scan  # noqa: E402
from tests.fixtures_content import default_rules  # noqa: E402

SIZE = 2 * 1024 * 1024


def expressions() -> list[bytes]:
    rules = default_rules()
    shapes = [scan.shape(p) for p in (*content._identifier_patterns(rules),
                                      *content._gates(rules))]
    return [translated[0] for translated in shapes if translated is not None]


def texts() -> dict[str, bytes]:
    postfix, _ = bench_evaluate.smtp_source_bodies([SIZE])
    return {"prose": make_message(SIZE), "digit-heavy + CSV": bench_evaluate.digit_heavy(SIZE),
            "smtp-source -l": postfix[SIZE]}


def with_hyperscan(found: list[bytes]) -> Callable[[bytes], int] | None:
    try:
        hs = importlib.import_module("hyperscan")
    except ImportError:
        return None
    database = hs.Database(mode=hs.HS_MODE_BLOCK)
    database.compile(expressions=found, ids=list(range(len(found))), flags=0)
    scratch = hs.Scratch(database)

    def run(data: bytes) -> int:
        ends: list[int] = []
        database.scan(data, match_event_handler=lambda i, s, e, f, c: ends.append(e),
                      scratch=scratch)
        return len(ends)
    return run


def with_re2(found: list[bytes]) -> Callable[[bytes], int] | None:
    try:
        re2 = importlib.import_module("re2")
    except ImportError:
        return None
    matcher = re2.Set.SearchSet()
    for expression in found:
        matcher.Add(expression)
    matcher.Compile()
    compiled = [re2.compile(expression) for expression in found]

    def run(data: bytes) -> int:
        count = 0
        for index in matcher.Match(data) or ():
            count += sum(1 for _ in compiled[index].finditer(data))
        return count
    return run


def with_re(found: list[bytes]) -> Callable[[bytes], int]:
    combined = re.compile(b"|".join(b"(?:%s)" % expression for expression in found))

    def run(data: bytes) -> int:
        return sum(1 for _ in combined.finditer(data))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    found = expressions()
    engines = {"hyperscan": with_hyperscan(found), "google-re2": with_re2(found),
               "re (one alternation)": with_re(found)}
    print(f"{len(found)} expressions; MB/s, median of {args.runs} runs")
    print("| text | " + " | ".join(engines) + " |")
    print("|---|" + "---|" * len(engines))
    for name, raw in texts().items():
        data = raw.replace(b"\r\n", b"\n")
        row = f"| {name} |"
        for run in engines.values():
            if run is None:
                row += " not installed |"
                continue
            run(data)
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                run(data)
                times.append(time.perf_counter() - start)
            row += f" {len(data) / statistics.median(times) / 1e6:,.0f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
