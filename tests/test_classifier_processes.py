"""Classifier processes (gateway/stages/classifiers.py): messages classified on another core,
through the real gateway and a real upstream sink. The case-registry table's rows go through
them in tests/test_case_rules.py; here, what is particular to the processes: the registry they
read, a process that dies, one that cannot start, and the sizes they take."""

from __future__ import annotations

import os
import signal
import smtplib
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from gateway.app import App
from gateway.audit.store import EventFilter
from gateway.config import StartupError
from gateway.runtime.server import start_gateway
from gateway.stages.classifiers import Classifiers
from policies.cases import PersonRole
from policies.content import classify_message
from tests import caseregistry
from tests.corpus_checks import corpus
from tests.fixtures_content import TOP_HEADERS, build_message, make_pdf, multipart
from tests.gateway_harness import STAFF, Harness, message, running_gateway, write_config
from tests.sink import Sink

OUTSIDE = "school.office@example.org"  # not secure, verified in each test
SECURE = "desk@cps.gsi.gov.uk"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _config(min_bytes: int = 1, max_bytes: int = 4 * 1024 * 1024) -> str:
    return (f"[policy]\nclassifier_processes = 1\nclassifier_min_bytes = {min_bytes}\n"
            f"classifier_max_bytes = {max_bytes}\n")


def _naming(name: str, padding: int = 0) -> bytes:
    """A message to the outside recipient that names a person, padded to a size."""
    body = f"I will see {name} on Tuesday about the contact arrangements.\r\n"
    body += "Notes follow.\r\n" * (padding // 15)
    return message(to=(OUTSIDE,), body=body)


def _send(gw: Harness, raw: bytes, recipient: str = OUTSIDE) -> int:
    """Submit; the code of the reply to the data (250, or the refusal's)."""
    try:
        gw.send(STAFF, [recipient], raw)
    except smtplib.SMTPDataError as refused:
        return refused.smtp_code
    return 250


def _decisions(gw: Harness) -> list[tuple[list[str], list[str]]]:
    """Each decision on record: its actions, and the registry's people it names."""
    return [(e.metadata["actions"], e.metadata.get("case_people", []))
            for e in gw.app.audit.iterate(EventFilter()) if e.kind == "decision"]


def _classifier_processes() -> list[int]:
    """This test process's children that are classifier processes (and not yet reaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            command = (entry / "cmdline").read_bytes()
        except (OSError, NotADirectoryError):
            continue
        if int(stat[1]) == os.getpid() and b"gateway.stages.classifiers" in command:
            found.append(int(entry.name))
    return found


async def _readiness(gw: Harness) -> tuple[int, str]:
    """/readyz on the metrics listener, which says what is wrong."""
    async with aiohttp.ClientSession() as session, session.get(
            f"http://127.0.0.1:{gw.gateway.metrics_port}/readyz") as response:
        return response.status, await response.text()


def _counted(gw: Harness, name: str) -> float:
    value = gw.gateway.stages.metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_a_person_recorded_while_the_gateway_runs_is_recognised(
        tmp_path: Path, sink: Sink, engine: str, request: pytest.FixtureRequest) -> None:
    """The process reads the registry as it is when the message comes: a child's name goes
    to a verified outside address in plain text before the child is recorded, and through
    the portal after, naming the recorded child. On SQLite and on PostgreSQL (the process
    opens the registry where the gateway's is). The processes stop with the gateway."""
    database = ""
    if engine == "postgresql":
        database = f'[database]\nurl = "{request.getfixturevalue("pg_url")}"\n'
    async with running_gateway(tmp_path, sink, extra_config=_config() + database) as gw:
        gw.verify(OUTSIDE)
        raw = _naming("Ellie Armitage")
        assert await gw.run(_send, gw, raw) == 250
        gw.app.cases.add_person("ZC12C00123", name="Ellie Armitage", role=PersonRole.CHILD,
                                date_of_birth=None, by=STAFF, now=NOW)
        assert await gw.run(_send, gw, raw) == 250
        assert _decisions(gw) == [(["plain"], []),
                                  (["encrypt"], ["ZC12C00123:P1:child:full-name"])]
        assert _counted(gw, "casegate_classified_in_processes_total") == 2
    assert _classifier_processes() == []


async def test_a_process_that_dies_costs_one_451_and_the_next_message_is_read(
        tmp_path: Path, sink: Sink) -> None:
    """Killed between messages, the process's pool is broken: the next message gets 451 (the
    client keeps it), nothing leaves, and the one after is read by a new process."""
    async with running_gateway(tmp_path, sink, extra_config=_config()) as gw:
        # (each its own message: the ledger would take a resent one as delivered already)
        first, second, third = (message(to=(SECURE,), body=f"Message {n}.") for n in range(3))
        assert await gw.run(_send, gw, first, SECURE) == 250
        classifiers = gw.gateway.stages.classifiers
        assert classifiers is not None
        started = classifiers.pids()
        assert started == _classifier_processes() and len(started) == 1
        os.kill(started[0], signal.SIGKILL)
        assert await gw.run(_send, gw, second, SECURE) == 451
        assert await gw.run(_send, gw, third, SECURE) == 250
        assert classifiers.pids() != started
        assert [m.data.count(b"Message 0.") + 2 * m.data.count(b"Message 2.")
                for m in sink.messages] == [1, 2]
        assert _counted(gw, "casegate_classifier_failures_total") == 1


async def test_while_no_process_can_start_each_message_gets_451(tmp_path: Path,
                                                                  sink: Sink) -> None:
    """A process killed while its replacement cannot start (the registry's key was replaced
    meanwhile): every message gets 451 and tries to start one again; once the key is back, a
    message starts one and the next is read."""
    async with running_gateway(tmp_path, sink, extra_config=_config()) as gw:
        classifiers = gw.gateway.stages.classifiers
        assert classifiers is not None
        key = gw.app.data_dir / "case-index.key"
        kept = key.read_bytes()
        key.write_bytes(bytes(32))
        os.kill(classifiers.pids()[0], signal.SIGKILL)
        raws = [message(to=(SECURE,), body=f"Message {n}.") for n in range(5)]
        assert [await gw.run(_send, gw, raw, SECURE) for raw in raws[:3]] == [451] * 3
        await classifiers.settled()  # the last start tried with the wrong key has failed
        key.write_bytes(kept)
        assert classifiers.pids() == []
        assert await _readiness(gw) == (503, "not ready: no classifier process running\n")
        assert await gw.run(_send, gw, raws[3], SECURE) == 451  # and starts one
        assert await gw.run(_send, gw, raws[4], SECURE) == 250
        assert len(classifiers.pids()) == 1
        assert await _readiness(gw) == (200, "ready\n")
        assert [m.data.count(b"Message 4.") for m in sink.messages] == [1]
        assert _counted(gw, "casegate_classifier_failures_total") == 4


async def test_a_process_that_stops_answering_is_replaced(tmp_path: Path, sink: Sink) -> None:
    """A process that does not answer in time (stopped here with SIGSTOP) is stuck: its
    message gets 451 and nothing leaves, and the process is killed and replaced, so the next
    message is read."""
    async with running_gateway(tmp_path, sink, extra_config=_config()) as gw:
        classifiers = gw.gateway.stages.classifiers
        assert classifiers is not None
        classifiers.stuck_seconds = 1.0
        stuck = classifiers.pids()
        os.kill(stuck[0], signal.SIGSTOP)
        first, second = (message(to=(SECURE,), body=f"Message {n}.") for n in range(2))
        assert await gw.run(_send, gw, first, SECURE) == 451
        assert await gw.run(_send, gw, second, SECURE) == 250
        assert classifiers.pids() != stuck and stuck[0] not in _classifier_processes()
        assert [m.data.count(b"Message 1.") for m in sink.messages] == [1]
        assert _counted(gw, "casegate_classifier_failures_total") == 1


async def test_only_the_sizes_asked_for_go_to_a_process(tmp_path: Path, sink: Sink) -> None:
    """Below classifier_min_bytes and above classifier_max_bytes the gateway classifies the
    message itself, with the same answer."""
    async with running_gateway(tmp_path, sink, extra_config=_config(4096, 8192)) as gw:
        gw.verify(OUTSIDE)
        gw.app.cases.add_person("ZC12C00123", name="Ellie Armitage", role=PersonRole.CHILD,
                                date_of_birth=None, by=STAFF, now=NOW)
        for padding in (0, 5000, 20000):
            raw = _naming("Ellie Armitage", padding)
            assert await gw.run(_send, gw, raw) == 250
        assert _decisions(gw) == [(["encrypt"], ["ZC12C00123:P1:child:full-name"])] * 3
        assert _counted(gw, "casegate_classified_in_processes_total") == 1


async def test_a_process_that_cannot_start_stops_the_start(tmp_path: Path) -> None:
    """A process that cannot open the registry (its key was replaced after the gateway read
    it) is a StartupError that says how to go on without the processes, and no server is
    left listening."""
    config = write_config(tmp_path / "casegate.toml", None, _config())
    app = App.open(config, tmp_path / "data")
    try:
        app.cases.add_person("ZC12C00123", name="Ellie Armitage", role=PersonRole.CHILD,
                             date_of_birth=None, by=STAFF, now=NOW)
        key = app.data_dir / "case-index.key"
        key.write_bytes(bytes(32))
        with pytest.raises(StartupError, match="classifier_processes = 0"):
            await start_gateway(app)
        assert _classifier_processes() == []
    finally:
        app.close()


def _hostile() -> list[bytes]:
    """Messages the MIME reader must refuse or read with care."""
    return [
        TOP_HEADERS + multipart("b1", [b"Content-Type: text/plain\r\n\r\nDOB 01/02/2015"])
        .replace(b"--b1--", b"--b2--"),  # never closed
        TOP_HEADERS + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n!!!not base64 at all!!!\r\n",
        TOP_HEADERS + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-made-up\r\n"
        b"\r\nNHS 943 476 5919\r\n",
        b"\r\n\r\nno headers at all\r\n",
        b"\x00\xff\xfe" * 100,
        build_message("Born 3rd March 2015, see the attached.",
                      attachments=[("report.pdf", "application/pdf",
                                    make_pdf(["Case ZC12C00123: Ellie Armitage"]))]),
        build_message("Accented: Zoë’s contact – “Tuesday”, NI AB 12 34 56 C."),
    ]


async def test_a_process_finds_what_the_gateway_finds(tmp_path: Path) -> None:
    """The facts a classifier process reads from a message are those the gateway reads
    itself, for the agency-check corpus, the case-registry table's messages (the registry
    recorded) and hostile MIME."""
    config = write_config(tmp_path / "casegate.toml", None)
    app = App.open(config, tmp_path / "data")
    classifiers = Classifiers(app, 1, 1, 1 << 30)
    try:
        caseregistry.record(app.cases)
        await classifiers.start()
        messages = [sample.raw for sample in corpus(7, negatives=40, positives=20)]
        messages += [caseregistry.message(row) for row in caseregistry.TABLE["message"]]
        messages += _hostile()
        index = app.cases.index()
        read = []
        for raw in messages:
            itself = classify_message(raw, app.policy.content, time.monotonic, index)
            assert await classifiers.classify(raw) == itself, raw[:200]
            read.append(itself)
        # (what was compared holds what matters: people the registry names, malformed MIME)
        assert sum(bool(facts.case_people) for facts in read) > 5
        assert sum(bool(facts.malformed) for facts in read) >= 4
    finally:
        await classifiers.close()
        app.close()
    assert _classifier_processes() == []
