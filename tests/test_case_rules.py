"""The case registry in decisions (issue 16; DESIGN rulings 17-19): every [[message]] row of
tests/cases/case_registry.toml through the engine, through the SMTP front to a real upstream
sink, and through `casegate check`; and what the audit trail keeps of it."""

from __future__ import annotations

import json
import smtplib
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from gateway.app import App
from gateway.audit.store import EventFilter
from gateway.cli import main
from policies.engine import evaluate
from policies.loader import EMBEDDED_FILES, Policy, parse_policy
from policies.model import Decision, Verdict
from tests import caseregistry
from tests.caseregistry import TABLE
from tests.gateway_harness import OTHER_STAFF, STAFF, Harness, running_gateway
from tests.sink import Sink

ROWS = TABLE["message"]
INDEX = caseregistry.index()
assert caseregistry.STAFF == STAFF


def _embedded_policy() -> Policy:
    data = resources.files("policies").joinpath("data")
    return parse_policy([(name, data.joinpath(name).read_text("utf-8"))
                         for name in EMBEDDED_FILES])


POLICY = _embedded_policy()


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"][:70] for r in rows]


def _check_decision(row: dict[str, Any], decision: Decision) -> None:
    expect = row["expect"]
    assert decision.verdict is Verdict(expect["verdict"]), decision.reasons()
    if "rules" in expect:
        assert [rd.rule.id for rd in decision.recipients] == expect["rules"]
    if "refusals" in expect:
        assert [r.rule.id for r in decision.refusals] == expect["refusals"]
    if "case_numbers" in expect:
        assert list(decision.facts.case_numbers) == expect["case_numbers"]
    assert set(expect.get("reasons", ())) <= set(decision.facts.protected_reasons)
    assert not set(expect.get("absent", ())) & set(decision.facts.protected_reasons)
    assert list(decision.shielded_cases) == expect.get("shielded", [])
    if "note" in expect:
        refused = [rd for rd in decision.recipients if rd.rule.id == "confidential-information"]
        assert refused and all(expect["note"] in rd.reason for rd in refused)


@pytest.mark.usefixtures("each_scan_engine")
@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_engine(row: dict[str, Any]) -> None:
    """policies.engine.evaluate on the row's bytes, with the registry built as a CaseIndex,
    under each scan engine (the dates the registry's matcher reads are gated by the scan)."""
    decision = evaluate(caseregistry.message(row), caseregistry.sender(row), row["recipients"],
                        POLICY, caseregistry.snapshot(row, INDEX), time.monotonic)
    _check_decision(row, decision)


def test_a_refusal_names_the_kind_of_detail_never_its_text() -> None:
    """The sentence a sender reads for confidential information names "an address", and no
    word of the address (nor of any name) appears in anything the decision says."""
    row = next(r for r in ROWS if r.get("expect", {}).get("note") == "an address")
    decision = evaluate(caseregistry.message(row), STAFF, row["recipients"], POLICY,
                        caseregistry.snapshot(row, INDEX), time.monotonic)
    said = " ".join(decision.reasons()).lower()
    assert "an address" in said
    for word in ("acacia", "flat 2", "ls1", "4ab", "avenue"):
        assert word not in said
    assert decision.facts.confidential[0].kind.value == "address"


def test_without_a_registry_the_same_mail_is_not_recognised() -> None:
    """The registry is what makes a first name with a relation protected: with the empty index
    (no registry), the same message is ordinary mail."""
    row = next(r for r in ROWS if r["body"].startswith("Ellie's dad"))
    decision = evaluate(caseregistry.message(row), STAFF, row["recipients"], POLICY,
                        caseregistry.snapshot(row, caseregistry.CaseIndex.EMPTY),
                        time.monotonic)
    assert decision.verdict is Verdict.DELIVER
    assert decision.facts.case_people == () and decision.facts.case_numbers == ()


# --- through the SMTP front -----------------------------------------------------------------

_DELIVERING = frozenset({"internal", "secure-domain", "not-protected", "encrypt-non-secure"})


def _send(gw: Harness, row: dict[str, Any]) -> tuple[int, str]:
    """Submit the row's message as its sender (signed in as them): (code, reply text)."""
    sender = caseregistry.sender(row)
    try:
        gw.send(sender, row["recipients"], caseregistry.message(row), login=sender)
    except smtplib.SMTPDataError as refused:
        return refused.smtp_code, refused.smtp_error.decode()
    return 250, ""


def _smtp_problem(row: dict[str, Any], code: int, reply: str, got: list[Any]) -> str | None:
    """What is wrong with the gateway's answer to a row, or None."""
    expect = row["expect"]
    if expect["verdict"] == "deliver":
        delivered = sorted(r for m in got for r in m.rcpt_tos)
        if code != 250 or delivered != sorted(row["recipients"]):
            return f"{code} {reply!r}, delivered to {delivered}"
        return None
    cited = set(expect.get("refusals", ())) | set(expect.get("rules", ())) - _DELIVERING
    missing = sorted(r for r in cited if f"(rule {r})" not in reply)
    if code != 550 or got or missing:
        return f"{code} {reply!r}, {len(got)} copies, rules not cited: {missing}"
    return None


# Every message classified in a classifier process (gateway/stages/classifiers.py), which
# reads the registry the test records after it started.
IN_A_PROCESS = "[policy]\nclassifier_processes = 1\nclassifier_min_bytes = 1\n"


@pytest.mark.parametrize("extra_config", ["", IN_A_PROCESS], ids=["in-gateway", "in-a-process"])
async def test_smtp_front(tmp_path: Path, sink: Sink, extra_config: str) -> None:
    """Every row through the real gateway: a row the engine delivers reaches the upstream sink
    for each recipient; a refused one gets 550 citing each rule that refused it, and nothing
    reaches the sink. The registry is recorded in the gateway's own store. The same, with
    every message classified in a classifier process."""
    async with running_gateway(tmp_path, sink, extra_config=extra_config) as gw:
        caseregistry.record(gw.app.cases)
        problems: dict[str, str] = {}
        for row in ROWS:
            caseregistry.verify(gw.app.registry, row)
            before = len(sink.messages)
            code, reply = await gw.run(_send, gw, row)
            problem = _smtp_problem(row, code, reply, sink.messages[before:])
            if problem is not None:
                problems[row["name"]] = problem
            caseregistry.unverify(gw.app.registry, row)
        assert problems == {}


async def test_the_audit_trail_keeps_case_and_kind_never_text(tmp_path: Path,
                                                            sink: Sink) -> None:
    """A refusal for a confidential address is graded high and records the case, the detail's
    id and kind; a message about a shielded case is recorded as touching it, from a listed
    sender (delivered) and from another (refused, graded high); nothing the registry holds
    appears in plain text in the trail's database."""
    async with running_gateway(tmp_path, sink) as gw:
        caseregistry.record(gw.app.cases)
        confidential = next(r for r in ROWS if r["expect"].get("note") == "an address"
                            and "attachment" not in r)
        listed = next(r for r in ROWS if r["expect"].get("shielded")
                      and r["expect"]["verdict"] == "deliver")
        unlisted = next(r for r in ROWS if r["expect"].get("shielded")
                        and caseregistry.sender(r) == OTHER_STAFF)
        for row in (confidential, listed, unlisted):
            caseregistry.verify(gw.app.registry, row)
            await gw.run(_send, gw, row)
        events = list(gw.app.audit.iterate(EventFilter()))
        refusal = next(e for e in events if e.rule == "confidential-information")
        assert refusal.kind == "refusal" and refusal.grade == "high"
        assert refusal.case_numbers == ("ZC12C00123",)
        assert refusal.metadata["confidential_details"] == ["ZC12C00123:D1:address"]
        touched = [e for e in events if e.kind == "shielded-case-mail"]
        assert [(e.sender, e.case_numbers, e.metadata["verdict"]) for e in touched] == [
            (STAFF, ("ZC12C00789",), "deliver"), (OTHER_STAFF, ("ZC12C00789",), "refuse")]
        barred = next(e for e in events if e.rule == "shielded-case" and e.kind == "refusal")
        assert barred.grade == "high" and barred.sender == OTHER_STAFF
        delivered = next(e for e in events if e.kind == "decision"
                         and e.metadata.get("shielded_cases"))
        assert delivered.metadata["case_people"] == ["ZC12C00789:P8:child:full-name"]
        trail = (gw.app.data_dir / "audit.sqlite3").read_bytes().lower()
        for word in (b"acacia", b"armitage", b"tyler", b"quarry", b"robinson"):
            assert word not in trail


# --- through `casegate check` ---------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the staff accounts and the table's registry recorded."""
    data = tmp_path_factory.mktemp("check") / "data"
    with App.open(None, data) as app:
        app.users.add(STAFF, "a long passphrase")
        app.users.add(OTHER_STAFF, "a long passphrase")
        caseregistry.record(app.cases)
    return data


def _check(eml: Path, data: Path, sender: str, recipients: list[str],
           capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rcpts = [arg for r in recipients for arg in ("--rcpt", r)]
    code = main(["check", str(eml), "--data", str(data), "--json", "--from", sender, *rcpts])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("row", ROWS, ids=_ids(ROWS))
def test_check(row: dict[str, Any], recorded: Path, tmp_path: Path,
               capsys: pytest.CaptureFixture[str]) -> None:
    """`casegate check --from SENDER --rcpt ... --json` gives each row's decision, with the
    registry read from the data directory's store."""
    eml = tmp_path / "m.eml"
    eml.write_bytes(caseregistry.message(row))
    with App.open(None, recorded) as app:
        caseregistry.verify(app.registry, row)
    try:
        code, out = _check(eml, recorded, caseregistry.sender(row), row["recipients"], capsys)
    finally:
        with App.open(None, recorded) as app:
            caseregistry.unverify(app.registry, row)
    expect = row["expect"]
    assert out["verdict"] == expect["verdict"]
    assert code == (0 if expect["verdict"] == "deliver" else 1)
    if "rules" in expect:
        assert [r["rule"] for r in out["recipients"]] == expect["rules"]
    if "refusals" in expect:
        assert [r["rule"] for r in out["refusals"]] == expect["refusals"]
    if "case_numbers" in expect:
        assert out["case_numbers"] == expect["case_numbers"]
    assert set(expect.get("reasons", ())) <= set(out["protected_reasons"])
    assert out["shielded_cases"] == expect.get("shielded", [])
    if "note" in expect:
        assert any(expect["note"] in r["reason"] for r in out["recipients"]
                   if r["rule"] == "confidential-information")


def test_check_tries_shielding_with_from(recorded: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The same message about a shielded case, to a colleague: delivered from a listed sender,
    refused from another; --from decides which."""
    row = next(r for r in ROWS if r["expect"].get("shielded")
               and r["expect"]["verdict"] == "deliver")
    eml = tmp_path / "m.eml"
    eml.write_bytes(caseregistry.message(row))
    verdicts = []
    for sender in (STAFF, OTHER_STAFF):
        code, out = _check(eml, recorded, sender, ["manager@cafcass.gov.uk"], capsys)
        verdicts.append((code, out["verdict"], [r["rule"] for r in out["refusals"]]))
    assert verdicts == [(0, "deliver", []), (1, "refuse", ["shielded-case"])]
