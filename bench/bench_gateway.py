"""Benchmark: the gateway against a bare relay and against the sink alone, in the same run.

    .venv/bin/python bench/bench_gateway.py [--quick]

Three targets receive the same load from an aiosmtplib client (CONCURRENCY connections):
  sink     a discarding aiosmtpd server (the upstream): the ceiling
  bare     aiosmtpd + aiosmtplib relaying to the sink, parsing nothing: the bar to meet
  gateway  casegate with the full policy (a trusted relay peer, as an Exchange connector is)
Each target runs in its own process, so the figures are not mixed up with the client's work,
and gets WARM_UP unmeasured messages of the same size first (its connections and caches are
those of a server that has been running).
Then each relay's peak traced memory (tracemalloc, in its own process) while relaying one 20 MB
message. Prints a Markdown table (docs/benchmarks.md holds a copy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import textwrap
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

if TYPE_CHECKING:
    from verification.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONCURRENCY = 8
WARM_UP = 2 * CONCURRENCY  # messages sent to each target, unmeasured, before each measured load
SIZES = {"10 KB": 10 * 1024, "100 KB": 100 * 1024, "2 MB": 2 * 1024 * 1024}
COUNTS = {"10 KB": 400, "100 KB": 200, "2 MB": 24}
BIG = 20 * 1024 * 1024
REGISTRY_ENTRIES = 2000  # verified recipients in casegate's registry while it is measured
# Ordinary prose wrapped at 72 columns, as mail clients send text/plain.
PROSE = textwrap.fill(
    "The office moves to the third floor next week. Please clear your desks by Thursday "
    "evening and label any boxes with your name and team; the removal firm arrives early on "
    "Friday morning and will take everything that is labelled. Keys for the new pedestals "
    "will be handed out on Monday at the front desk. Thank you for your patience while the "
    "building work is finished. ", 72).replace("\n", "\r\n").encode() + b"\r\n"
SENDER = "jo.smith@cafcass.gov.uk"
RECIPIENTS = ["colleague@cafcass.gov.uk", "school.office@example.org"]


def make_message(size: int) -> bytes:
    """A plain-text message of about `size` bytes: ordinary prose, no protected information.

    Each has its own Message-ID: the gateway (rightly) sends identical bytes only once.
    """
    head = (f"From: Jo Smith <{SENDER}>\r\nTo: {', '.join(RECIPIENTS)}\r\n"
            f"Subject: Office move\r\nMessage-ID: <{uuid.uuid4().hex}@cafcass.gov.uk>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    body = bytearray()
    while len(head) + len(body) < size:
        body += PROSE
    return head + bytes(body[: max(0, size - len(head))].rpartition(b"\r\n")[0] + b"\r\n")


# ---- the processes under test -------------------------------------------------------------


class _Discard:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


class _BareRelay:
    """Relays every message as it came, with aiosmtplib, doing no other work."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        try:
            await aiosmtplib.send(envelope.original_content or b"", sender=envelope.mail_from,
                                  recipients=envelope.rcpt_tos, hostname="127.0.0.1",
                                  port=self.upstream_port, timeout=60, start_tls=False)
        except aiosmtplib.SMTPException:
            return "451 4.4.0 upstream trouble"
        return "250 OK"


async def _serve_aiosmtpd(handler: object) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=64 * 1024 * 1024, loop=loop), "127.0.0.1", 0)
    await _announce_and_wait(server.sockets[0].getsockname()[1])
    server.close()


async def _serve_gateway(upstream_port: int, data_dir: str) -> None:
    from gateway.app import App
    from gateway.cli.serve import settle_heap
    from gateway.observe.logs import configure_logging
    from gateway.runtime.server import start_gateway

    configure_logging()  # JSON lines, as `casegate serve` writes them
    config = Path(data_dir) / "casegate.toml"
    config.write_text(
        "[smtp]\nport = 0\ntls_port = 0\nrelay_from = [\"127.0.0.1/32\"]\n"
        "max_message_size = 67108864\n[http]\nport = 0\n"
        f"[upstream]\nhost = \"127.0.0.1\"\nport = {upstream_port}\ntls = \"none\"\n"
        "pool_size = 8\n", encoding="utf-8")
    app = App.open(config, Path(data_dir) / "data")
    seed_registry(app.registry)
    gateway = await start_gateway(app, http=False)
    settle_heap()  # as `casegate serve` does
    await _announce_and_wait(gateway.smtp_port)
    await gateway.stop(drain_seconds=5)
    app.close()


def seed_registry(registry: Registry) -> None:
    """A registry the size of a busy office's: REGISTRY_ENTRIES verified recipients (none of them
    the benchmark's recipients) and a tenth as many staff personal addresses."""
    from policies.model import Role

    now = datetime.now(UTC)
    for i in range(REGISTRY_ENTRIES):
        registry.add(f"parent{i}@family{i % 400}.example.net",
                     case_number=f"ZC{i % 90 + 10}C{i:05d}", role=Role.PARTY, verified_by=SENDER,
                     now=now)
    for i in range(REGISTRY_ENTRIES // 10):
        registry.add_staff_personal(f"worker{i}@cafcass.gov.uk", f"worker{i}@example.com", now)


async def _announce_and_wait(port: int) -> None:
    """Print the port, then wait for SIGTERM; with tracing on, print the peak on the way out."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    baseline = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    tracemalloc.reset_peak() if tracemalloc.is_tracing() else None
    print(f"port {port}", flush=True)
    await stop.wait()
    if tracemalloc.is_tracing():
        print(f"peak {tracemalloc.get_traced_memory()[1] - baseline}", flush=True)


def child(role: str, args: list[str]) -> None:
    """Entry point of a process under test."""
    if "--trace" in args:
        tracemalloc.start()
        args = [a for a in args if a != "--trace"]
    if os.environ.get("CASEGATE_BENCH_PROFILE"):  # a cProfile dump of this process, on exit
        import atexit
        import cProfile
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        atexit.register(profiler.dump_stats, f"{os.environ['CASEGATE_BENCH_PROFILE']}.{role}")
    if role == "sink":
        asyncio.run(_serve_aiosmtpd(_Discard()))
    elif role == "bare":
        asyncio.run(_serve_aiosmtpd(_BareRelay(int(args[0]))))
    elif role == "gateway":
        asyncio.run(_serve_gateway(int(args[0]), args[1]))


# ---- the driver ---------------------------------------------------------------------------


@dataclass
class Running:
    process: asyncio.subprocess.Process
    port: int
    output: asyncio.Task[bytes]  # keeps draining the child's stdout (its logs) until it exits

    async def stop(self) -> str:
        """SIGTERM, and everything it printed after its port line."""
        self.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self.process.wait(), 60)
        return (await self.output).decode()


async def start(role: str, *args: str) -> Running:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", role, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
        if not line:
            raise RuntimeError(f"{role} did not start")
        if line.startswith("port "):
            stream = process.stdout
            return Running(process, int(line.split()[1]), asyncio.create_task(stream.read()))


@dataclass(frozen=True)
class Result:
    rate: float  # messages per second
    p50: float  # milliseconds
    p99: float
    failures: int


async def load(port: int, size: int, count: int) -> Result:
    """`count` messages over CONCURRENCY reused connections; latency per message."""
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal failures
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=120,
                                   start_tls=False) as client:
            while not queue.empty():
                queue.get_nowait()
                data = make_message(size)
                start = time.perf_counter()
                try:
                    await client.sendmail(SENDER, RECIPIENTS, data)
                except aiosmtplib.SMTPException:
                    failures += 1
                    continue
                latencies.append((time.perf_counter() - start) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies) or [0.0]
    return Result(rate=len(latencies) / elapsed, p50=statistics.median(ordered),
                  p99=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
                  failures=failures)


async def peak_memory(role: str, upstream: int, data_dir: str) -> int:
    """Peak traced bytes in a relay process while it relays one 20 MB message."""
    args = [str(upstream), data_dir] if role == "gateway" else [str(upstream)]
    target = await start(role, *args, "--trace")
    await aiosmtplib.send(make_message(BIG), sender=SENDER, recipients=RECIPIENTS,
                          hostname="127.0.0.1", port=target.port, timeout=300, start_tls=False)
    out = await target.stop()
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("peak ")))


async def main(quick: bool) -> None:
    scale = 0.25 if quick else 1.0
    sink = await start("sink")
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        bare = await start("bare", str(sink.port))
        gateway = await start("gateway", str(sink.port), scratch)
        try:
            for name, size in SIZES.items():
                count = max(CONCURRENCY, int(COUNTS[name] * scale))
                for label, port in (("sink", sink.port), ("bare relay", bare.port),
                                    ("casegate", gateway.port)):
                    await load(port, size, WARM_UP)  # first connections, caches: not measured
                    r = await load(port, size, count)
                    rows.append(f"| {name} | {label} | {count} | {r.rate:.1f} | {r.p50:.1f} | "
                                f"{r.p99:.1f} | {r.failures} |")
                    print(rows[-1], flush=True)
        finally:
            await bare.stop()
            await gateway.stop()
        memory = {}
        for role in ("bare", "gateway"):
            with tempfile.TemporaryDirectory() as data_dir:
                memory[role] = await peak_memory(role, sink.port, data_dir)
    await sink.stop()
    print()
    print("| message | target | messages | msg/s | p50 ms | p99 ms | failures |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    for role, peak in memory.items():
        print(f"peak traced memory, {role}, one 20 MB message: {peak / 2**20:.1f} MiB "
              f"({peak / len(make_message(BIG)):.2f} x the message)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--quick", action="store_true", help="a quarter of the messages")
        asyncio.run(main(parser.parse_args().quick))
