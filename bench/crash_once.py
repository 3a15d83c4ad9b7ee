"""Crash test: retrying clients send a few hundred messages while `casegate serve` is killed
(SIGKILL) several times; did every accepted message arrive, and arrive once?

    .venv/bin/python bench/crash_once.py [--messages 300] [--clients 6] [--kills 6] [--postgresql]

The upstream is the test sink (tests/sink.py) in this process; the gateway is a real
`casegate serve` process (tests/servekit.py). Each message has its own token in its body and
goes to one or two internal recipients. Each client submits its messages one by one, over
STARTTLS and AUTH, and retries a message until it is answered 250: after a 4xx, a dropped
connection or a refused one (the gateway is down: it waits until the gateway is back). The
gateway is killed each time another `messages / (kills + 1)` messages were accepted, at a
random point in the next half-second, and started again at once on the same data directory.
With `--postgresql` the stores are on a throwaway PostgreSQL cluster started here (the relay
ledger then commits each acceptance before the client's 250; a copy being handed over when the
gateway is killed is held off for the rest of its claim's lease, `IN_FLIGHT_LEASE`, which this
bench's clients, retrying every 50 ms, feel and real ones, retrying after minutes, do not).

Printed at the end (and returned by `run`):
  sent        messages submitted
  accepted    messages answered 250 (at some attempt)
  delivered   messages the sink holds at least once
  duplicated  messages the sink holds more than once (per recipient), split by whether the
              first copy's 250 is known to have been read by the gateway (it sent another
              command on that connection). Those "known read" are duplicates casegate must
              never make. The others are the RFC 1047 window (killed after the upstream
              committed, before the 250 was read) or, before issue 18, the ledger window
              (killed after the 250 was read, before the ledger write); the sink cannot tell
              these two apart, since a killed gateway sends no further command either way
  lost        messages answered 250 that the sink does not hold
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import smtplib
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.gateway_harness import STAFF  # noqa: E402
from tests.postgres import Cluster  # noqa: E402
from tests.servekit import Served, kill, prepare, start_serve, submit, terminate  # noqa: E402
from tests.sink import Sink  # noqa: E402

TOKEN = re.compile(rb"crash-token-(\d+)")
RECIPIENTS = ("colleague@cafcass.gov.uk", "al.jones@cafcass.gov.uk")
GIVE_UP = 120.0  # seconds a client keeps retrying one message
BACKOFF = 0.05  # seconds a client waits after a 4xx before retrying (its retry schedule)


@dataclass
class Report:
    sent: int = 0
    accepted: int = 0
    delivered: int = 0
    duplicated: int = 0
    duplicated_unconfirmed: int = 0
    duplicated_confirmed: int = 0
    lost: int = 0
    kills: int = 0
    attempts: int = 0
    tempfails: int = 0
    seconds: float = 0.0
    # per copy delivered twice: ms from the sink writing the first copy's 250 to the next kill
    # (negative: the gateway was killed before that 250 was even written)
    duplicate_to_kill_ms: list[float] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"sent        {self.sent}",
            f"accepted    {self.accepted}",
            f"delivered   {self.delivered}",
            f"duplicated  {self.duplicated} (first 250 known read: "
            f"{self.duplicated_confirmed}; not known read: {self.duplicated_unconfirmed})",
            f"lost        {self.lost}",
            "first copy's 250 written to the next kill, ms, per duplicate: "
            + (", ".join(f"{ms:.1f}" for ms in self.duplicate_to_kill_ms) or "none"),
            f"kills       {self.kills}",
            f"attempts    {self.attempts} ({self.tempfails} answered 4xx or cut off)",
            f"seconds     {self.seconds:.1f}",
        ]


@dataclass
class _Gateway:
    """The gateway the clients talk to now; `up` is set while it listens."""

    loop: asyncio.AbstractEventLoop
    served: Served | None = None
    up: threading.Event = field(default_factory=threading.Event)
    accepted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set at each acceptance

    async def accepted_at_least(self, count: int, work: list[asyncio.Future[None]]) -> bool:
        """Wait until `count` messages were accepted (True) or every client is done (False)."""
        while self.accepted < count:
            if all(w.done() for w in work):
                return False
            self.progress.clear()
            waiter = asyncio.ensure_future(self.progress.wait())
            await asyncio.wait([waiter, *work], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        return True


def _message(number: int, recipients: tuple[str, ...]) -> bytes:
    lines = [f"From: <{STAFF}>", f"To: {', '.join(recipients)}", f"Subject: crash {number}",
             f"Message-ID: <crash-{number}@cafcass.gov.uk>", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8", "",
             f"Please call me about the meeting. crash-token-{number}", ""]
    return "\r\n".join(lines).encode()


def _client(numbers: list[int], gateway: _Gateway, report: Report, accepted: set[int],
            stop: threading.Event) -> None:
    """Send each message until it is answered 250 (or GIVE_UP seconds pass)."""
    for number in numbers:
        recipients = RECIPIENTS[: 1 + number % 2]
        data = _message(number, recipients)
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline and not stop.is_set():
            if not gateway.up.wait(timeout=1.0):
                continue
            served = gateway.served
            assert served is not None
            with gateway.lock:
                report.attempts += 1
            try:
                submit(served.smtp_port, served.cert_file, data, list(recipients))
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code >= 500:
                    raise
                with gateway.lock:
                    report.tempfails += 1
                time.sleep(BACKOFF)
                continue
            except (smtplib.SMTPServerDisconnected, OSError):
                with gateway.lock:
                    report.tempfails += 1
                if gateway.served is served:
                    time.sleep(BACKOFF)
                continue
            with gateway.lock:
                accepted.add(number)
                gateway.accepted += 1
            gateway.loop.call_soon_threadsafe(gateway.progress.set)
            break


async def run(messages: int = 300, clients: int = 6, kills: int = 6,
              seed: int = 18, database_url: str = "") -> Report:
    """The crash test in a scratch directory; its report."""
    rng = random.Random(seed)
    report = Report(sent=messages)
    accepted: set[int] = set()
    gateway = _Gateway(asyncio.get_running_loop())
    killed_at: list[float] = []
    stop = threading.Event()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="casegate-crash-") as scratch:
        async with Sink() as sink:
            config = prepare(Path(scratch), sink, database_url=database_url)
            data_dir = Path(scratch) / "data"
            gateway.served = await start_serve(config, data_dir, database_url)
            gateway.up.set()
            loop = asyncio.get_running_loop()
            share = [list(range(i, messages, clients)) for i in range(clients)]
            with ThreadPoolExecutor(clients) as pool:
                work = [loop.run_in_executor(pool, _client, numbers, gateway, report, accepted,
                                             stop) for numbers in share]
                every = max(1, messages // (kills + 1))
                try:
                    for _ in range(kills):
                        if not await gateway.accepted_at_least((report.kills + 1) * every,
                                                               work):
                            break
                        await asyncio.sleep(rng.uniform(0.0, 0.5))  # when the kill strikes
                        gateway.up.clear()
                        killed_at.append(time.monotonic())
                        await kill(gateway.served)
                        report.kills += 1
                        gateway.served = await start_serve(config, data_dir, database_url)
                        gateway.up.set()
                    await asyncio.gather(*work)
                finally:
                    stop.set()
                    gateway.up.set()
                    await asyncio.gather(*work, return_exceptions=True)
                    await terminate(gateway.served)
            copies: Counter[tuple[int, str]] = Counter()
            first: dict[tuple[int, str], int] = {}
            for index, received in enumerate(sink.messages):
                found = TOKEN.search(received.data)
                if found is None:
                    continue
                for recipient in received.rcpt_tos:
                    key = (int(found.group(1)), recipient)
                    copies[key] += 1
                    first.setdefault(key, index)
            doubled = {key for key, n in copies.items() if n > 1}
            report.delivered = len({number for number, _ in copies})
            report.duplicated = len({number for number, _ in doubled})
            report.duplicated_confirmed = len({number for number, r in doubled
                                               if first[(number, r)] in sink.confirmed})
            report.duplicated_unconfirmed = report.duplicated - report.duplicated_confirmed
            for key in sorted(doubled):
                taken = sink.accepted_at[first[key]]
                replied = sink.replied_at.get(first[key], taken)
                after = [k for k in killed_at if k >= taken]
                report.duplicate_to_kill_ms.append(
                    (after[0] - replied) * 1000 if after else float("inf"))
            report.accepted = len(accepted)
            report.lost = len(accepted - {number for number, _ in copies})
    report.seconds = time.perf_counter() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--postgresql", action="store_true",
                        help="the stores on a throwaway PostgreSQL cluster (tests/postgres.py)")
    args = parser.parse_args()
    cluster = Cluster.start() if args.postgresql else None
    try:
        url = cluster.fresh_schema() if cluster is not None else ""
        report = asyncio.run(run(args.messages, args.clients, args.kills, args.seed, url))
    finally:
        if cluster is not None:
            cluster.stop()
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
