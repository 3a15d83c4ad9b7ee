"""Benchmark: casegate measured with Postfix's own load tools, against a bare relay (issue 14).

    .venv/bin/python bench/bench_postfix.py [--quick] [--runs 3] [--persistent]
        [--size "1 KB"]... [--no-memory | --memory-only] [--case-people N] [--case-details N]

Postfix's `smtp-source` (SESSIONS parallel sessions, one message per connection; `--persistent`
passes its `-d`: many messages per connection) sends through each target into Postfix's
`smtp-sink` as the upstream. The client and the sink are efficient C programs, as the software
in front of and behind a real deployment is, so they take little of the machine's two cores.

Targets, measured in the same run on the same bodies:
  postfix      smtp-source straight into smtp-sink: the ceiling
  bare         aiosmtpd + aiosmtplib in its own process (bench_gateway.py's bare relay), a new
               upstream connection per message: the bar to meet
  plain        `casegate serve` (a trusted relay peer by relay_from, upstream without TLS to the
               sink), a message without case data to a secure (gsi) recipient
  case         the same casegate, a message naming a case, to the same secure recipient
  portal       the same casegate, a message naming a case, to an outside recipient verified for
               the case: the copy is sealed and stored, a notification goes to the sink
Bodies: smtp-source's own `-l` bodies (every line starts with a number), ordinary prose, and a
covering note with a digit-heavy CSV attachment (base64: dates, phone numbers, amounts); about
1 KB, 100 KB and 2 MB each.

casegate holds a case registry as a deployment does (`CaseRegistry`: 100,000 generated people
with dates of birth and 10,000 confidential details by default), so the matcher reads every
message against it; none of it is named in the bodies. `--case-people 0` measures with an empty
registry, as the rounds before the ninth did.

Every recipient is numbered per message (smtp-source `-N`) and every file body carries a token of
its own: casegate (rightly) hands the same bytes to the same recipient only once. The numbered
recipients are verified beforehand (the secure ones organisation-wide, the outside ones for the
case), so the case-number messages are delivered, not refused. After each load the sink's count
must have grown by exactly the number of messages sent, and casegate's audit lines must hold one
decision per message, the one the target means (not protected and plain; protected and plain;
protected and encrypt), else the benchmark stops with an error: a target that refuses, drops or
misroutes mail must not look fast.

Figures: messages per second (wall time of the smtp-source run), the ratio to the bare relay in
the same run, and CPU milliseconds per message of the relay process (utime + stime from
/proc/PID/stat, reaped children included); the median of --runs runs. Then peak memory (VmHWM,
reset through /proc/PID/clear_refs, above the idle RSS) of casegate and of the bare relay with
ten 20 MB messages in flight to a slow upstream (smtp-sink -w), and of casegate with one 35 MB
message to the portal path. Prints Markdown for docs/benchmarks.md.

Its own set-up: installs Debian's `postfix` package (for the two tools only; the daemon is never
started) when /usr/sbin/smtp-source or /usr/sbin/smtp-sink is missing. Loopback only; every
process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_cases import families  # noqa: E402  (after the path is set)
from bench.bench_gateway import PROSE, seed_registry  # noqa: E402
from gateway.app import App  # noqa: E402
from policies.model import Role  # noqa: E402
from verification.cases import AlreadyRecorded  # noqa: E402

SMTP_SOURCE = Path("/usr/sbin/smtp-source")
SMTP_SINK = Path("/usr/sbin/smtp-sink")
BARE_RELAY = ROOT / "bench" / "bench_gateway.py"  # `--child bare PORT` runs its bare relay

SESSIONS = 10  # smtp-source -s: parallel sessions, as in the issue
SIZES = {"1 KB": 1024, "100 KB": 100 * 1024, "2 MB": 2 * 1024 * 1024}
# Messages per measured load (--quick: a quarter, at least SESSIONS). The 2 MB loads are one
# message per session: casegate takes about a second of CPU for each on this 2-core machine, and
# three runs of fifteen 2 MB loads would otherwise pass the 20 minutes a full run may take.
COUNTS = {"1 KB": 400, "100 KB": 100, "2 MB": SESSIONS}
WARM_UP = SESSIONS  # unmeasured 1 KB messages of the same body and target before each load
BODIES = ("smtp-source -l", "prose", "CSV attachment")
TARGETS = ("postfix", "bare", "plain", "case", "portal")
BIG = 20 * 1024 * 1024  # each of the ten messages in flight (file bytes; a little more on the wire)
# The one message to the portal: 35 MB on the wire (LF becomes CRLF), under the 35 MiB that the
# SMTP front announces and [content.limits] max_message_bytes allows (a larger one is refused).
HUGE = 35_000_000 * 77 // 78
SLOW_UPSTREAM_SECONDS = 2  # smtp-sink -w: delay before its reply to DATA

SENDER = "jo.smith@cafcass.gov.uk"
PASSWORD = "a long passphrase for the benchmark"
CASE = "ZC12C00123"
SECURE = "desk@cps.gsi.gov.uk"  # gsi.gov.uk: a secure suffix in policies/data/policy.toml
OUTSIDE = "parent@family.example.net"  # not secure: protected mail to it goes by the portal
RECIPIENT = {"plain": SECURE, "case": SECURE, "portal": OUTSIDE, "bare": SECURE,
             "postfix": SECURE}

STOP_SECONDS = 30.0  # SIGTERM, then this long, then SIGKILL
START_SECONDS = 120.0


class BenchError(RuntimeError):
    """The benchmark cannot give a figure it can stand behind (a refusal, a lost message)."""


# ---- set-up: Postfix's tools ----------------------------------------------------------------


def ensure_postfix_tools() -> None:
    """Install Debian's postfix package (its load tools) when they are missing; never start it."""
    if SMTP_SOURCE.exists() and SMTP_SINK.exists():
        return
    print("installing Debian's postfix package for smtp-source and smtp-sink ...", flush=True)
    subprocess.run(["debconf-set-selections"], check=True, timeout=60,
                   input=b"postfix postfix/main_mailer_type select No configuration\n")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "postfix"],
                   check=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not (SMTP_SOURCE.exists() and SMTP_SINK.exists()):
        raise BenchError("the postfix package did not provide smtp-source and smtp-sink")


# ---- processes ------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free at this moment (smtp-sink cannot be given port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Process:
    """A process this benchmark started, its output in a file; stopped by `stop`, always."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def output_since(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.popen.returncode}): "
                             f"{self.output()[-2000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_SECONDS)

    def cpu_seconds(self) -> float:
        """utime + stime of the process and its reaped children (all threads), and of its
        children still running (casegate's classifier processes)."""
        stat = _stat(self.pid)
        ticks = sum(int(stat[i]) for i in (11, 12, 13, 14))  # fields 14-17 of proc(5)
        ticks += sum(int(_stat(child)[i]) for child in self.children() for i in (11, 12))
        return ticks / os.sysconf("SC_CLK_TCK")

    def children(self) -> list[int]:
        """The process's children now running."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    if int(_stat(int(entry.name))[1]) == self.pid:  # field 4: the parent
                        found.append(int(entry.name))
        return found

    def memory_kb(self, field_name: str) -> int:
        """A field of /proc/PID/status, summed over the process and its running children
        (for VmHWM, each one's own peak: at most what they held at once)."""
        return sum(_status_kb(pid, field_name) for pid in (self.pid, *self.children()))

    def reset_peak(self) -> int:
        """Reset VmHWM to the current RSS (clear_refs 5), of the process and its children,
        and return that RSS in bytes."""
        for pid in (self.pid, *self.children()):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        return self.memory_kb("VmRSS") * 1024


def _status_kb(pid: int, field_name: str) -> int:
    """A field of /proc/PID/status, in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.M)
    if not found:
        raise BenchError(f"no {field_name} in /proc/{pid}/status")
    return int(found.group(1))


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def launch(name: str, argv: list[str], scratch: Path, started: list[Process],
           env: dict[str, str] | None = None) -> Process:
    log = scratch / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env)
    process = Process(name, popen, log)
    started.append(process)
    return process


class Sink:
    """Postfix's smtp-sink on a loopback port; counts the messages it received (`-c`)."""

    def __init__(self, name: str, scratch: Path, started: list[Process],
                 extra: tuple[str, ...] = ()) -> None:
        port = free_port()
        user = ("-u", "nobody") if os.geteuid() == 0 else ()  # it refuses to run as root
        self.process = launch(name, [str(SMTP_SINK), "-c", *user, *extra,
                                     f"127.0.0.1:{port}", "256"], scratch, started)
        self.process.port = port

        def ready() -> bool:
            self.process.check_alive()
            return listening(port)

        wait_until(f"{name} on port {port}", ready, 30)

    @property
    def port(self) -> int:
        return self.process.port

    def delivered(self) -> int:
        """Messages received so far (the last `mesg=` of its running counter)."""
        counts = re.findall(r"mesg=(\d+)", self.process.output())
        return int(counts[-1]) if counts else 0


def start_bare_relay(upstream: int, scratch: Path, started: list[Process],
                     name: str = "bare relay") -> Process:
    relay = launch(name, [sys.executable, str(BARE_RELAY), "--child", "bare", str(upstream)],
                   scratch, started, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def has_port() -> bool:
        relay.check_alive()
        found = re.search(r"^port (\d+)$", relay.output(), re.M)
        relay.port = int(found.group(1)) if found else 0
        return bool(found)

    wait_until(name, has_port, START_SECONDS)
    return relay


# ---- casegate: its data directory and its process -------------------------------------------


def casegate(*args: str, stdin: str = "") -> str:
    """Run one `casegate` CLI command (the installed package's), failing loudly."""
    done = subprocess.run([sys.executable, "-m", "gateway", *args], input=stdin.encode(),
                          capture_output=True, timeout=120, check=False)
    if done.returncode != 0:
        raise BenchError(f"casegate {' '.join(args)}: exit {done.returncode}: "
                         f"{done.stderr.decode()[-2000:]}{done.stdout.decode()[-500:]}")
    return done.stdout.decode()


@dataclass(frozen=True)
class CaseRegistry:
    """The case registry the gateway recognises people and details by (issue 16): generated
    families (bench_cases.py's: children, parents, dates of birth, addresses, schools), as a
    deployment holds them. The matcher reads every message against it, so its cost is in
    the measured path; none of its names, dates or details is in the benchmark's bodies, so
    the decisions stay the ones each target means. 0 people: the empty registry earlier
    rounds measured with."""

    people: int = 100_000
    details: int = 10_000

    def record(self, app: App, now: datetime) -> None:
        """Record them through the case store, in one transaction."""
        if not self.people:
            return
        with app.cases.bulk():
            for family in families(random.Random(16), self.people, self.details):
                for name, role, born in family.people:
                    with contextlib.suppress(AlreadyRecorded):  # generated twice in one case
                        app.cases.add_person(family.number, name=name, role=role,
                                             date_of_birth=born, by=SENDER, now=now)
                for kind, text in family.details:
                    with contextlib.suppress(AlreadyRecorded):
                        app.cases.add_detail(family.number, text=text, kind=kind,
                                             may_go_to=["solicitor@lawfirm.example"],
                                             by=SENDER, now=now)

    def __str__(self) -> str:
        return (f"a case registry of {self.people:,} people and {self.details:,} confidential "
                "details" if self.people else "an empty case registry")


def prepare_casegate(home: Path, upstream: int, numbered: int,
                     extra_config: str = "", registry: CaseRegistry | None = None,
                     ) -> tuple[Path, Path]:
    """A config and a data directory: a trusted relay peer on loopback, upstream `upstream`
    without TLS, the staff sender, the recipients verified (1..numbered, as -N numbers them),
    and `registry`'s people and details in the case registry (none without it);
    `extra_config` is appended to the config (bench_nodes.py's `[database]`).
    Returns (config, data)."""
    home.mkdir(parents=True)
    config, data = home / "casegate.toml", home / "data"
    config.write_text(textwrap.dedent(f"""\
        [smtp]
        port = 0
        tls_port = 0
        relay_from = ["127.0.0.1/32"]
        max_message_size = {64 * 1024 * 1024}
        drain_seconds = 5
        [http]
        port = 0
        [metrics]
        enabled = false
        [upstream]
        host = "127.0.0.1"
        port = {upstream}
        tls = "none"
        pool_size = {SESSIONS}
        """) + extra_config, encoding="utf-8")
    where = ("--config", str(config), "--data", str(data))
    casegate("users", "add", SENDER, "--role", "staff", *where, stdin=PASSWORD + "\n")
    # The two base addresses through the CLI, as staff would; the numbered ones in bulk below.
    casegate("verify", "add", SECURE, "--organisation", "--role", "professional",
             "--by", SENDER, *where)
    casegate("verify", "add", OUTSIDE, "--case", CASE, "--role", "party", "--by", SENDER, *where)
    app = App.open(config, data)  # the same Registry.add that `casegate verify add` calls
    try:
        seed_registry(app.registry)  # a busy office's registry, as bench_gateway.py has it
        now = datetime.now(UTC)
        for n in range(1, numbered + 1):
            app.registry.add(f"{n}{SECURE}", case_number=None, role=Role.PROFESSIONAL,
                             verified_by=SENDER, now=now)
            app.registry.add(f"{n}{OUTSIDE}", case_number=CASE, role=Role.PARTY,
                             verified_by=SENDER, now=now)
        if registry is not None:
            registry.record(app, now)
    finally:
        app.close()
    return config, data


def start_casegate(name: str, config: Path, data: Path, scratch: Path,
                   started: list[Process]) -> Process:
    """`casegate serve` as its own process; its JSON log lines (audit events too) go to a file."""
    gateway = launch(name, [sys.executable, "-m", "gateway", "serve", "--config", str(config),
                            "--data", str(data)], scratch, started)

    def has_port() -> bool:
        gateway.check_alive()
        for line in gateway.output().splitlines():
            if '"listening"' in line and '"smtp"' in line:
                gateway.port = int(json.loads(line)["port"])
                return True
        return False

    wait_until(name, has_port, START_SECONDS)
    return gateway


# ---- the bodies -----------------------------------------------------------------------------


def _headers(recipient: str, subject: str, content_type: str) -> str:
    return (f"From: Jo Smith <{SENDER}>\nTo: <{recipient}>\nSubject: {subject}\n"
            "Date: Sun, 06 Dec 2026 09:00:00 +0000\nMessage-ID: <TOKEN@cafcass.gov.uk>\n"
            f"MIME-Version: 1.0\nContent-Type: {content_type}\n\n")


def _subject(case: bool) -> str:
    return f"Court report {CASE}" if case else "Office move"


def prose_message(size: int, recipient: str, case: bool) -> bytes:
    """Ordinary prose wrapped at 72 columns; the case number in the subject and first line."""
    head = _headers(recipient, _subject(case), "text/plain; charset=us-ascii")
    first = f"Case {CASE}: notes for the file.\n" if case else ""
    paragraph = PROSE.decode().replace("\r\n", "\n")
    text = head + first
    while len(text) < size:
        text += paragraph
    return text[:size].rpartition("\n")[0].encode() + b"\n"


def csv_rows(rng: random.Random) -> Iterator[str]:
    """A payments schedule: dates, times, phone numbers, references, amounts."""
    yield "date,time,reference,phone,mobile,amount,vat,total,count\n"
    while True:
        amount = rng.randint(100, 999_999) / 100
        yield (f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
               f"{rng.randint(8, 18):02d}:{rng.randint(0, 59):02d},"
               f"INV-{rng.randint(0, 999_999):06d},"
               f"0161 496 {rng.randint(0, 9999):04d},07700 900{rng.randint(0, 999):03d},"
               f"{amount:.2f},{amount * 0.2:.2f},{amount * 1.2:.2f},{rng.randint(1, 40)}\n")


def csv_message(size: int, recipient: str, case: bool) -> bytes:
    """A covering note and a CSV attachment (base64, 76 columns) making about `size` bytes."""
    boundary = "=_bench_boundary_0001"
    head = _headers(recipient, _subject(case), f'multipart/mixed; boundary="{boundary}"')
    note = (f"Case {CASE}: the schedule of payments is attached.\n" if case
            else "The schedule of payments for the quarter is attached.\n")
    opening = (f"--{boundary}\nContent-Type: text/plain; charset=us-ascii\n\n{note}\n"
               f"--{boundary}\nContent-Type: text/csv; name=\"payments.csv\"\n"
               "Content-Disposition: attachment; filename=\"payments.csv\"\n"
               "Content-Transfer-Encoding: base64\n\n")
    closing = f"\n--{boundary}--\n"
    room = max(60, size - len(head) - len(opening) - len(closing))
    raw_budget = room * 76 // 77 * 3 // 4  # base64 makes 4 of 3, plus a newline every 76
    csv = bytearray()
    for row in csv_rows(random.Random(size)):
        if len(csv) + len(row) > raw_budget:
            break
        csv += row.encode()
    encoded = base64.encodebytes(bytes(csv)).decode().rstrip("\n")  # 76-column lines
    return (head + opening + encoded + closing).encode()


MAKERS = {"prose": prose_message, "CSV attachment": csv_message}


@dataclass
class Bodies:
    """File bodies made once per (body, size, target); each load gets a copy with a fresh token."""

    folder: Path
    made: dict[tuple[str, int, str], bytes] = field(default_factory=dict)

    def file(self, body: str, size: int, target: str) -> Path:
        key = (body, size, target)
        if key not in self.made:
            self.made[key] = MAKERS[body](size, RECIPIENT[target], target in ("case", "portal"))
        path = self.folder / f"body-{uuid.uuid4().hex}.eml"
        path.write_bytes(self.made[key].replace(b"TOKEN", uuid.uuid4().hex.encode(), 1))
        return path


# ---- one load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    rate: float  # messages per second
    cpu_ms: float | None  # of the relay process, per message


def smtp_source(port: int, target: str, body: str, size: int, count: int, bodies: Bodies,
                persistent: bool, sessions: int = SESSIONS,
                tolerant: list[str] | None = None) -> float:
    """Run smtp-source once; the wall time in seconds. Any refusal fails, unless `tolerant` is
    given: then smtp-source goes on (-A) and its warnings (the replies) are added to it."""
    argv = [str(SMTP_SOURCE), "-s", str(min(sessions, count)), "-m", str(count), "-N",
            "-f", SENDER, "-t", RECIPIENT[target]]
    argv += ["-d"] if persistent else []
    argv += ["-A"] if tolerant is not None else []
    made: Path | None = None
    if body == "smtp-source -l":
        argv += ["-S", _subject(target in ("case", "portal")), "-l", str(size)]
    else:
        made = bodies.file(body, size, target)
        argv += ["-F", str(made)]
    argv.append(f"127.0.0.1:{port}")
    timeout = 120 + count * max(1.0, size / (128 * 1024))  # generous: 128 KB/s per message
    began = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    finally:
        if made is not None:
            made.unlink()
    elapsed = time.perf_counter() - began
    if tolerant is not None:
        tolerant += done.stderr.decode(errors="replace").splitlines()
    elif done.returncode != 0:
        raise BenchError(f"smtp-source into {target} ({body}, {size} bytes) failed: "
                         f"{done.stderr.decode().strip()[-1000:]}")
    return elapsed


def measure(target: str, port: int, relay: Process | None, sink: Sink, body: str, size: int,
            count: int, bodies: Bodies, persistent: bool) -> Load:
    """A warm-up, then `count` messages; every one of them must have reached the sink."""
    send_counted(target, port, relay, sink, body, SIZES["1 KB"], WARM_UP, bodies, persistent)
    elapsed, cpu = send_counted(target, port, relay, sink, body, size, count, bodies, persistent)
    return Load(rate=count / elapsed, cpu_ms=cpu * 1000 / count if relay else None)


# What casegate must have decided for each of its targets: (protected, the recipient's action).
EXPECTED = {"plain": (False, "plain"), "case": (True, "plain"), "portal": (True, "encrypt")}


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects in casegate's log, one after another. Not line by line: its log lines
    and its audit lines come from two threads, and a newline sometimes lands after the wrong one
    (two objects on one line), which is casegate's to fix, not this benchmark's."""
    decoder = json.JSONDecoder()
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            if "\n" not in text[at:]:
                return  # the line being written
            raise BenchError(f"casegate's log is not JSON at: {text[at:at + 300]!r}") from None
        if isinstance(value, dict):
            yield value


def decisions(gateway: Process, offset: int) -> dict[tuple[object, object], int]:
    """casegate's decisions in its audit lines since `offset`: (protected, actions) -> count."""
    seen: dict[tuple[object, object], int] = {}
    for event in json_objects(gateway.output_since(offset)):
        if event.get("event") != "audit" or event.get("kind") not in ("decision", "refusal"):
            continue
        facts = {**event, **(event.get("metadata") or {})}
        key = (facts.get("protected"), ",".join(facts.get("actions") or ()) or event["kind"])
        seen[key] = seen.get(key, 0) + 1
    return seen


def check_decisions(target: str, gateway: Process, offset: int, count: int) -> None:
    """casegate's audit lines since `offset` hold `count` decisions, each the one `target` is
    meant to measure (a body misread as protected, or a portal copy sent plain, is an error)."""
    with contextlib.suppress(BenchError):
        wait_until("casegate's audit lines",
                   lambda: sum(decisions(gateway, offset).values()) >= count, 10)
    seen = decisions(gateway, offset)
    if seen != {EXPECTED[target]: count}:
        raise BenchError(f"casegate's decisions for {target}: {seen}, expected "
                         f"{{{EXPECTED[target]}: {count}}}")


def send_counted(target: str, port: int, relay: Process | None, sink: Sink, body: str,
                 size: int, count: int, bodies: Bodies, persistent: bool) -> tuple[float, float]:
    """One smtp-source run: (wall seconds, relay CPU seconds); fails unless all were delivered
    (and, through casegate, decided as the target means)."""
    before = sink.delivered()
    offset = relay.log_size() if relay else 0
    cpu = relay.cpu_seconds() if relay else 0.0
    elapsed = smtp_source(port, target, body, size, count, bodies, persistent)
    cpu = (relay.cpu_seconds() - cpu) if relay else 0.0
    with contextlib.suppress(BenchError):
        wait_until("the sink's count", lambda: sink.delivered() >= before + count, 10)
    got = sink.delivered() - before
    if got != count:
        raise BenchError(f"{target} ({body}, {size} bytes): smtp-source sent {count} messages, "
                         f"the sink received {got}")
    if relay:
        relay.check_alive()
    if relay and target in EXPECTED:
        check_decisions(target, relay, offset, count)
    return elapsed, cpu


# ---- memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peak:
    what: str
    peak: int  # bytes above the idle RSS
    in_flight: int  # bytes of the messages in flight, as sent
    delivered: int
    sent: int
    replies: tuple[str, ...]  # smtp-source's warnings: the refusals it was given, if any


def peak_memory(what: str, relay: Process, sink: Sink, target: str, size: int, count: int,
                bodies: Bodies) -> Peak:
    """VmHWM above the idle RSS while `count` CSV messages of `size` bytes go through."""
    smtp_source(relay.port, target, "prose", 1024, 1, bodies, False)  # first use: not counted
    wait_until("the warm-up message", lambda: sink.delivered() >= 1, 30)
    before = sink.delivered()
    idle = relay.reset_peak()
    replies: list[str] = []
    smtp_source(relay.port, target, "CSV attachment", size, count, bodies, False,
                sessions=count, tolerant=replies)
    with contextlib.suppress(BenchError):
        wait_until("the sink's count", lambda: sink.delivered() >= before + count, 30)
    peak = relay.memory_kb("VmHWM") * 1024 - idle
    relay.check_alive()
    sent = bodies.made[("CSV attachment", size, target)]
    wire = len(sent) + sent.count(b"\n")  # smtp-source ends each line with CRLF
    return Peak(what, peak, count * wire, sink.delivered() - before, count,
                tuple(sorted(set(replies))))


# ---- the run --------------------------------------------------------------------------------


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return (f"{os.cpu_count()} cores, {model.group(1).strip() if model else 'unknown CPU'}, "
            f"{datetime.now(UTC):%Y-%m-%d}")


def cell_rate(rate: float, bare: float, cpu: float | None) -> str:
    parts = [f"{rate / bare:.2f}x"]
    if cpu is not None:
        parts.append(f"{cpu:.1f} ms")
    return f"{rate:,.1f} ({'; '.join(parts)})"


def throughput(scratch: Path, runs: int, scale: float, persistent: bool, sizes: list[str],
               started: list[Process], registry: CaseRegistry,
               extra_config: str = "") -> tuple[list[str], list[str]]:
    """The table rows (medians) and one line per load as measured."""
    counts = {name: max(SESSIONS, int(COUNTS[name] * scale)) for name in sizes}
    sink = Sink("smtp-sink", scratch, started)
    print(f"preparing casegate ({max(counts.values())} numbered recipients verified) ...",
          flush=True)
    config, data = prepare_casegate(scratch / "casegate", sink.port, max(counts.values()),
                                    extra_config, registry=registry)
    bare = start_bare_relay(sink.port, scratch, started)
    gateway = start_casegate("casegate", config, data, scratch, started)
    children = [_status_kb(pid, "VmRSS") / 1024 for pid in gateway.children()]
    print(f"casegate started: {_status_kb(gateway.pid, 'VmRSS') / 1024:.0f} MiB resident"
          + (f", its {len(children)} classifier processes "
             f"{', '.join(f'{c:.0f}' for c in children)} MiB" if children else ""), flush=True)
    bodies = Bodies(scratch)
    relays: dict[str, tuple[int, Process | None]] = {
        "postfix": (sink.port, None), "bare": (bare.port, bare),
        "plain": (gateway.port, gateway), "case": (gateway.port, gateway),
        "portal": (gateway.port, gateway)}
    loads: dict[tuple[str, str, str], list[Load]] = {}
    lines = []
    for run in range(runs):
        for size_name in sizes:
            size = SIZES[size_name]
            for body in BODIES:
                for target in TARGETS:
                    port, relay = relays[target]
                    load = measure(target, port, relay, sink, body, size, counts[size_name],
                                   bodies, persistent)
                    loads.setdefault((size_name, body, target), []).append(load)
                    spent = (f", {load.cpu_ms:.2f} ms CPU/msg" if load.cpu_ms is not None
                             else "")
                    lines.append(f"run {run + 1}, {size_name}, {body}, {target}: "
                                 f"{counts[size_name]} msgs, {load.rate:.1f} msg/s{spent}")
                    print(lines[-1], flush=True)
    rows = []
    for size_name in sizes:
        for body in BODIES:
            rate = {t: statistics.median(x.rate for x in loads[(size_name, body, t)])
                    for t in TARGETS}
            cpu = {t: statistics.median(x.cpu_ms or 0.0 for x in loads[(size_name, body, t)])
                   for t in TARGETS}
            rows.append(
                f"| {size_name} | {body} | {counts[size_name]} | {rate['postfix']:,.0f} | "
                f"{rate['bare']:,.1f} ({cpu['bare']:.1f} ms) | "
                + " | ".join(cell_rate(rate[t], rate["bare"], cpu[t])
                             for t in ("plain", "case", "portal"))
                + f" | {rate['portal'] / rate['plain']:.2f}x |")
    return rows, lines


def memory(scratch: Path, started: list[Process], registry: CaseRegistry,
           extra_config: str = "") -> list[Peak]:
    """Peaks with a slow upstream: ten 20 MB messages (casegate, bare relay); one 35 MB (portal)."""
    slow = ("-w", str(SLOW_UPSTREAM_SECONDS))
    peaks = []
    bodies = Bodies(scratch)
    sink = Sink("slow smtp-sink", scratch, started, slow)
    config, data = prepare_casegate(scratch / "casegate-memory", sink.port, 2 * SESSIONS,
                                    extra_config, registry=registry)
    gateway = start_casegate("casegate (memory)", config, data, scratch, started)
    peaks.append(peak_memory("casegate, ten 20 MB messages, secure recipient, no case data",
                             gateway, sink, "plain", BIG, SESSIONS, bodies))
    peaks.append(peak_memory("casegate, one 35 MB message, case number, portal", gateway, sink,
                             "portal", HUGE, 1, bodies))
    gateway.stop()
    bare_sink = Sink("slow smtp-sink (bare)", scratch, started, slow)
    bare = start_bare_relay(bare_sink.port, scratch, started, "bare relay (memory)")
    peaks.append(peak_memory("bare relay, ten 20 MB messages", bare, bare_sink, "bare", BIG,
                             SESSIONS, bodies))
    return peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a quarter of the messages, one run unless --runs says otherwise")
    parser.add_argument("--runs", type=int, default=None, help="runs to take the median of (3)")
    parser.add_argument("--persistent", action="store_true",
                        help="smtp-source -d: many messages per connection")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory peaks")
    parser.add_argument("--size", action="append", choices=list(SIZES),
                        help="measure only this message size (repeatable; default: all)")
    parser.add_argument("--memory-only", action="store_true", help="only the memory peaks")
    parser.add_argument("--case-people", type=int, default=CaseRegistry.people,
                        help="people in casegate's case registry (0: an empty registry)")
    parser.add_argument("--case-details", type=int, default=CaseRegistry.details,
                        help="confidential details in it")
    parser.add_argument("--classifier-processes", type=int, default=0,
                        help="casegate's [policy] classifier_processes (0: none)")
    args = parser.parse_args()
    registry = CaseRegistry(args.case_people, args.case_details)
    extra_config = (f"[policy]\nclassifier_processes = {args.classifier_processes}\n"
                    if args.classifier_processes else "")
    runs = args.runs or (1 if args.quick else 3)
    ensure_postfix_tools()
    began = time.monotonic()
    started: list[Process] = []
    scratch = Path(tempfile.mkdtemp(prefix="casegate-bench-postfix-"))
    os.chmod(scratch, 0o755)  # smtp-sink runs as nobody but writes nothing here
    try:
        rows, lines = ([], []) if args.memory_only else throughput(
            scratch, runs, 0.25 if args.quick else 1.0, args.persistent,
            args.size or list(SIZES), started, registry, extra_config)
        for process in started:
            process.stop()
        peaks = [] if args.no_memory else memory(scratch, started, registry, extra_config)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    minutes = (time.monotonic() - began) / 60
    mode = "persistent connections (-d)" if args.persistent else "one message per connection"
    if rows:
        print_throughput(rows, runs, mode, minutes, args.quick, args.persistent, registry,
                         args.classifier_processes)
    if peaks:
        print_memory(peaks, registry, args.classifier_processes)
    if lines:
        print("\nEach load as measured:\n")
        print("\n".join(f"    {line}" for line in lines))
    return 0


def print_throughput(rows: list[str], runs: int, mode: str, minutes: float, quick: bool,
                     persistent: bool, registry: CaseRegistry, processes: int) -> None:
    print(f"\n### Against Postfix's smtp-source and smtp-sink ({machine()})\n")
    print(f"`bench/bench_postfix.py{' --quick' if quick else ''}"
          f"{' --persistent' if persistent else ''}`: smtp-source, {SESSIONS} sessions, "
          f"{mode}, into smtp-sink; median of {runs} run(s); every message counted at the sink. "
          "msg/s (ratio to the bare relay in the same run; CPU ms per message of the relay "
          f"process and its classifier processes); casegate with {registry}"
          f"{with_processes(processes)}. The whole run took {minutes:.1f} minutes.\n")
    print("| message | body | messages | Postfix (ceiling) | bare relay | casegate, no case data, "
          "secure recipient | casegate, case number, secure recipient | casegate, case number, "
          "verified outside recipient (portal) | portal / no case data |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def with_processes(processes: int) -> str:
    return f" and {processes} classifier process(es)" if processes else ""


def print_memory(peaks: list[Peak], registry: CaseRegistry, processes: int) -> None:
    print(f"\n| peak memory above idle RSS (VmHWM), {machine()} | peak | in flight | ratio | "
          "delivered |")
    print("|---|---|---|---|---|")
    for p in peaks:
        print(f"| {p.what} | {p.peak / 2**20:,.0f} MiB | {p.in_flight / 2**20:,.0f} MiB | "
              f"{p.peak / p.in_flight:.2f}x | {p.delivered} of {p.sent} |")
    for p in peaks:
        for reply in p.replies:
            print(f"\n{p.what}: {reply}")
    print(f"\n(CSV-attachment bodies; the upstream is smtp-sink -w {SLOW_UPSTREAM_SECONDS}, "
          f"which waits that long before it answers DATA; casegate with {registry}"
          f"{with_processes(processes)}; casegate's peak adds its classifier processes' own.)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_postfix: {exc}", file=sys.stderr)
        sys.exit(1)
