"""Which native engine finds the candidates of policies/scan.py fastest, on the same inputs.

    .venv/bin/python bench/bench_scan_engines.py [--runs N]

The expressions are the ones policies/scan.py compiles for the packaged policy, over the 2 MB
messages of `bench/bench_evaluate.py` (prose, digit-heavy with a CSV table, the
`smtp-source -l` body), and each engine answers the two questions the scan asks: where does
each identifier shape match (the candidates), and which of the gates (the information types'
keywords, the agency-check phrase words, dates, "from"/"wrote") occur at all? Expressions are
matched case-sensitively by all three (the same semantics for each; the scan folds case where
the pattern does).

* hyperscan: one multi-pattern block-mode database, every end of every shape and the first
  match of each gate reported in one pass (what policies/scan.py does);
* google-re2 (not a dependency: `pip install google-re2` to measure it): an RE2 Set says which
  expressions occur (a Set gives no offsets), then each shape that does is searched for its
  matches;
* re: the stdlib, one alternation of the shapes searched once (leftmost-first, so it reports
  fewer candidates than the others: overlapping ones are lost), and one of the gates, whose
  matches say which occur.

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


def expressions() -> tuple[list[bytes], list[bytes]]:
    """(the identifier shapes, the gates), as policies/scan.py writes them."""
    rules = default_rules()

    def written(patterns: tuple[re.Pattern[str], ...]) -> list[bytes]:
        shapes = [scan.shape(p) for p in patterns]
        return [translated[0] for translated in shapes if translated is not None]
    return written(content._identifier_patterns(rules)), written(content._gates(rules))


def texts() -> dict[str, bytes]:
    postfix, _ = bench_evaluate.smtp_source_bodies([SIZE])
    return {"prose": make_message(SIZE), "digit-heavy + CSV": bench_evaluate.digit_heavy(SIZE),
            "smtp-source -l": postfix[SIZE]}


def with_hyperscan(shapes: list[bytes], gates: list[bytes]) -> Callable[[bytes], int] | None:
    try:
        hs = importlib.import_module("hyperscan")
    except ImportError:
        return None
    database = hs.Database(mode=hs.HS_MODE_BLOCK)
    found = [*shapes, *gates]
    database.compile(expressions=found, ids=list(range(len(found))),
                     flags=[0] * len(shapes) + [hs.HS_FLAG_SINGLEMATCH] * len(gates))
    scratch = hs.Scratch(database)

    def run(data: bytes) -> int:
        ends: list[int] = []
        database.scan(data, match_event_handler=lambda i, s, e, f, c: ends.append(e),
                      scratch=scratch)
        return len(ends)
    return run


def with_re2(shapes: list[bytes], gates: list[bytes]) -> Callable[[bytes], int] | None:
    try:
        re2 = importlib.import_module("re2")
    except ImportError:
        return None
    matcher = re2.Set.SearchSet()
    for expression in (*shapes, *gates):
        matcher.Add(expression)
    matcher.Compile()
    compiled = [re2.compile(expression) for expression in shapes]

    def run(data: bytes) -> int:
        count = 0
        for index in matcher.Match(data) or ():
            if index < len(shapes):
                count += sum(1 for _ in compiled[index].finditer(data))
            else:
                count += 1
        return count
    return run


def with_re(shapes: list[bytes], gates: list[bytes]) -> Callable[[bytes], int]:
    candidates = re.compile(b"|".join(b"(?:%s)" % expression for expression in shapes))
    present = re.compile(b"|".join(b"(?P<g%d>%s)" % (i, expression)
                                   for i, expression in enumerate(gates)))

    def run(data: bytes) -> int:
        seen = {match.lastgroup for match in present.finditer(data)}
        return sum(1 for _ in candidates.finditer(data)) + len(seen)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    shapes, gates = expressions()
    engines = {"hyperscan": with_hyperscan(shapes, gates), "google-re2": with_re2(shapes, gates),
               "re (one alternation)": with_re(shapes, gates)}
    print(f"{len(shapes)} shapes, {len(gates)} gates; MB/s, median of {args.runs} runs")
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
