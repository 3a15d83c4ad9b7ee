"""How long the policy decision takes, and how much memory it peaks at, by message size.

    .venv/bin/python bench/bench_evaluate.py [--runs N] [--no-big]

`policies.engine.evaluate` (classification and decision, the work the gateway does for each
message in a worker thread) on the messages `bench/bench_gateway.py` sends: ordinary prose,
10 KB, 100 KB, 2 MB and 20 MB, to one internal and one outside recipient. A second set holds
the same prose with a date, a phone number and a reference in every paragraph, so that the
identifier detectors, which skip a text with no digit in it, do their full work. Prints the
median wall time of N runs and the peak traced memory (tracemalloc) of one run, as a multiple
of the message's size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_gateway import PROSE, RECIPIENTS, SENDER, make_message  # noqa: E402

from gateway.app import App  # noqa: E402
from policies.engine import evaluate  # noqa: E402

SIZES = {"10 KB": 10 * 1024, "100 KB": 100 * 1024, "2 MB": 2 * 1024 * 1024,
         "20 MB": 20 * 1024 * 1024}
DIGITS = b"Call 020 7946 0018 about the visit on 14/03/2025 (ref. 4471).\r\n"


def with_digits(raw: bytes) -> bytes:
    """The same message with a line holding digits after every paragraph of prose."""
    return raw.replace(PROSE, PROSE + DIGITS)


def measure(raw: bytes, app: App, runs: int) -> tuple[float, float]:
    """(median milliseconds, peak traced bytes as a multiple of the message size)."""
    snapshot = app.snapshot()

    def once() -> None:
        evaluate(raw, SENDER, RECIPIENTS, app.policy, snapshot, time.monotonic)

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    once()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times) * 1000, peak / len(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-big", action="store_true", help="leave out the 20 MB message")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        app = App.open(None, Path(data_dir))
        try:
            print("| message | text | evaluate ms | peak memory |")
            print("|---|---|---|---|")
            for name, size in SIZES.items():
                if args.no_big and size > 10 * 1024 * 1024:
                    continue
                runs = 1 if size > 10 * 1024 * 1024 else args.runs
                plain = make_message(size)
                for label, raw in (("prose", plain), ("prose with digits", with_digits(plain))):
                    ms, peak = measure(raw, app, runs)
                    print(f"| {name} | {label} | {ms:.1f} | {peak:.1f} x |", flush=True)
        finally:
            app.close()


if __name__ == "__main__":
    main()
