"""The chain's head anchored outside audit.sqlite3 (issue 18): the external file and syslog
targets, checkpoints mailed to governance, the gateway refusing a trail cut short, `audit
reanchor`, and what each anchor can and cannot see (docs/audit.md)."""

from __future__ import annotations

import io
import json
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from gateway.app import App
from gateway.audit.alerts import Alerter, AlertSettings
from gateway.audit.anchor import HEAD_FILE, AppendFile, HeadAnchor, Syslog
from gateway.audit.trail import AUDIT_DB_FILE, AuditLog, EventFilter
from gateway.cli import main
from gateway.config import AuditConfig, Config, ConfigError, UpstreamConfig
from policies.events import EventKind
from tests.auditdb import point_cli_at, tamper
from tests.sink import Sink
from transports.database import Database
from transports.ledger import Ledger
from transports.smtp_relay import SmtpRelay

GOVERNANCE_BOX = "governance@cafcass.gov.uk"


def fill(audit: AuditLog, count: int) -> None:
    for i in range(count):
        audit.record(EventKind.REFUSAL, rule="personal-address", sender="jo@cafcass.gov.uk",
                     recipients=[f"parent{i}@gmail.com"], case_numbers=["ZE26C00001"])


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(data: Path, into: Path) -> None:
    """Copy the trail's files as they are now (what a backup, or an attacker, keeps)."""
    into.mkdir()
    for name in (AUDIT_DB_FILE, HEAD_FILE):
        shutil.copyfile(data / name, into / name)


def put_back(saved: Path, data: Path) -> None:
    for name in (AUDIT_DB_FILE, HEAD_FILE):
        shutil.copyfile(saved / name, data / name)
    for suffix in ("-wal", "-shm"):
        (data / f"{AUDIT_DB_FILE}{suffix}").unlink(missing_ok=True)


def test_the_external_file_sees_a_rollback_of_the_whole_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """audit.sqlite3 and audit-head.json both put back from an older copy: consistent with
    each other, so the data directory alone cannot tell; the external file can."""
    data, outside = tmp_path / "data", tmp_path / "other-mount" / "anchors.jsonl"
    outside.parent.mkdir()
    log = AuditLog.open(Database.open(data), stream=io.StringIO(),
                        external=[AppendFile(outside)])
    fill(log, 3)
    log.close()
    snapshot(data, tmp_path / "older")
    log = AuditLog.open(Database.open(data), stream=io.StringIO(),
                        external=[AppendFile(outside)])
    fill(log, 3)
    log.close()
    lines = [json.loads(line) for line in outside.read_text().splitlines()]
    assert lines[-1]["seq"] == 8 and lines[-1]["format"] == "casegate-audit-checkpoint/1"
    code, out, _ = cli(capsys, "audit", "verify", "--data", str(data), "--anchor-file",
                       str(outside))
    assert code == 0 and "chain and its anchors verified" in out
    put_back(tmp_path / "older", data)
    code, out, _ = cli(capsys, "audit", "verify", "--data", str(data))
    assert code == 0  # the data directory alone is consistent: this is what it cannot see
    code, out, _ = cli(capsys, "audit", "verify", "--data", str(data), "--anchor-file",
                       str(outside))
    assert code == 1
    assert str(outside) in out and "holds 5 events" in out and "cut short" in out
    assert "first broken sequence number: 6" in out


def test_a_forged_line_in_the_external_file_is_reported(
    database: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line someone without the signing key wrote (a higher seq, say) is named."""
    point_cli_at(database, monkeypatch)
    data, outside = database.data_dir, database.data_dir / "anchors.jsonl"
    log = AuditLog.open(database, stream=io.StringIO(), external=[AppendFile(outside)])
    fill(log, 2)
    log.close()
    written = outside.read_text().splitlines()
    line = json.loads(written[-1])
    line["seq"] = 99
    with outside.open("a") as handle:
        handle.write(json.dumps(line) + "\n")
    code, out, _ = cli(capsys, "audit", "verify", "--data", str(data), "--anchor-file",
                       str(outside))
    assert code == 1 and f"line {len(written) + 1} of" in out
    assert "not a valid signed head" in out


def test_each_checkpoint_goes_to_the_external_file(database: Database) -> None:
    """Every signed checkpoint is appended; heads in between at most every anchor_seconds."""
    outside = database.data_dir / "anchors.jsonl"
    log = AuditLog.open(database, stream=io.StringIO(), checkpoint_every=3,
                        external=[AppendFile(outside)], external_seconds=3600)
    fill(log, 7)  # events 3..9: checkpoints at 3, 6, 9
    log.close()
    seqs = [json.loads(line)["seq"] for line in outside.read_text().splitlines()]
    assert {3, 6, 9} <= set(seqs)
    assert seqs[-1] == 9


@pytest.fixture
def syslog_socket() -> Iterator[socket.socket]:
    """A UDP syslog receiver on 127.0.0.1 (a SIEM's collector)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        yield receiver


def test_the_head_goes_to_syslog(database: Database, syslog_socket: socket.socket) -> None:
    """With a syslog target, the signed head arrives as one authpriv.info datagram."""
    port = syslog_socket.getsockname()[1]
    log = AuditLog.open(database, stream=io.StringIO(),
                        external=[Syslog(f"127.0.0.1:{port}")])
    fill(log, 2)
    log.close()
    datagram = syslog_socket.recv(65536).decode()
    assert datagram.startswith("<86>casegate-audit: ")  # authpriv (10) * 8 + info (6)
    document = json.loads(datagram.split(": ", 1)[1].rstrip("\x00"))
    assert document["format"] == "casegate-audit-checkpoint/1" and document["seq"] >= 1


def test_a_bad_syslog_address_is_refused() -> None:
    with pytest.raises(ValueError, match="neither a socket path nor host:port"):
        Syslog("nowhere")


def test_the_gateway_refuses_a_trail_cut_short_until_reanchored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restored older audit.sqlite3: every command that opens the App refuses with one
    sentence; `audit reanchor` records the gap as a high-grade event and lets it start."""
    data = tmp_path / "data"
    code, _, err = cli(capsys, "keys", "init", "--data", str(data))
    assert code == 0, err
    older = tmp_path / "older.sqlite3"
    shutil.copyfile(data / AUDIT_DB_FILE, older)
    log = AuditLog.open(Database.open(data), stream=io.StringIO())
    fill(log, 4)
    log.close()
    shutil.copyfile(older, data / AUDIT_DB_FILE)
    code, _, err = cli(capsys, "keys", "list", "--data", str(data))
    assert code == 2
    assert "cut short" in err and "casegate audit reanchor" in err
    code, out, err = cli(capsys, "audit", "reanchor", "--data", str(data), "--reason",
                         "restored from the 02:00 backup")
    assert code == 0, err
    assert "was: " in out and "records the restore" in out
    code, _, err = cli(capsys, "keys", "list", "--data", str(data))
    assert code == 0, err
    code, out, _ = cli(capsys, "audit", "verify", "--data", str(data))
    assert code == 0
    log = AuditLog.open(Database.open(data), stream=io.StringIO())
    (event,) = log.page(EventFilter(kind=EventKind.AUDIT_REANCHORED))
    log.close()
    assert event.grade == "high"
    assert event.metadata["previous_seq"] == 7 and event.metadata["found_seq"] == 3


def test_a_deleted_head_file_is_reported(database: Database,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The head file removed (write access to the data directory): verify says so, run as
    the node whose head file it was (on PostgreSQL each node anchors the trail in its own)."""
    point_cli_at(database, monkeypatch)
    tmp_path = database.data_dir
    config = tmp_path / "casegate.toml"
    config.write_text(f'[database]\nnode = "{database.node}"\n', encoding="utf-8")
    log = AuditLog.open(database, stream=io.StringIO())
    fill(log, 2)
    log.close()
    (tmp_path / HEAD_FILE).unlink()
    code, out, _ = cli(capsys, "audit", "verify", "--config", str(config), "--data",
                       str(tmp_path))
    assert code == 1 and "audit-head.json is missing" in out


@pytest.fixture
async def relay(sink: Sink, tmp_path: Path) -> AsyncIterator[SmtpRelay]:
    ledger = Ledger(Database.open(tmp_path), "ledger.sqlite3")
    transport = SmtpRelay(UpstreamConfig(host=sink.host, port=sink.port, tls="none",
                                         timeout=5.0), ledger)
    yield transport
    await transport.close()
    ledger.close()


async def test_checkpoints_are_mailed_to_governance(
    tmp_path: Path, relay: SmtpRelay, sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest signed checkpoint is mailed once, as a JSON attachment that `audit checkpoint
    --verify` accepts against the trail."""
    log = AuditLog.open(Database.open(tmp_path / "data"), stream=io.StringIO(),
                        checkpoint_every=4)
    settings = AlertSettings.from_config(
        Config(audit=AuditConfig(governance_address=GOVERNANCE_BOX)))
    assert settings is not None
    alerter = Alerter(log, relay, settings, Database.open(tmp_path))
    try:
        fill(log, 6)  # checkpoints at 4 and 8
        assert await alerter.send_checkpoint()
        assert not await alerter.send_checkpoint()  # nothing newer
    finally:
        alerter.close()
        log.close()
    (received,) = sink.messages
    assert received.rcpt_tos == (GOVERNANCE_BOX,)
    mail = message_from_bytes(received.data)
    assert mail["Subject"] == "casegate audit checkpoint 8"
    (attachment,) = [part for part in mail.walk() if part.get_filename()]
    assert attachment.get_filename() == "casegate-checkpoint-8.json"
    payload = attachment.get_payload(decode=True)
    assert isinstance(payload, bytes)
    document = json.loads(payload)
    exported, public = tmp_path / "mailed.json", tmp_path / "audit.pub"
    exported.write_bytes(payload)
    public.write_text(document["public_key"])
    code, out, _ = cli(capsys, "audit", "checkpoint", "--data", str(tmp_path / "data"),
                       "--verify", str(exported), "--public-key", str(public))
    assert code == 0 and "every event up to 8 verified" in out


def test_a_trail_rewritten_with_the_keys_still_disagrees_with_older_external_lines(
    database: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone holding the keys cuts the trail, rebuilds it and appends newer signed heads for
    it: the heads already in the append-only file still name the original events."""
    point_cli_at(database, monkeypatch)
    data, outside = database.data_dir, database.data_dir / "anchors.jsonl"
    log = AuditLog.open(database, stream=io.StringIO(), external=[AppendFile(outside)])
    fill(log, 6)  # events 3..8
    log.close()
    tamper(database, *(f"DELETE FROM {table} WHERE seq >= 5"
                       for table in ("audit_event", "audit_domain", "audit_case")),
           "DELETE FROM audit_meta WHERE name LIKE 'head-anchored-since%'")
    (data / HEAD_FILE).unlink()
    rebuilt = AuditLog.open(database, stream=io.StringIO(), external=[AppendFile(outside)])
    fill(rebuilt, 4)  # a different 5..8, chained and signed with the real keys
    rebuilt.close()
    code, _, _ = cli(capsys, "audit", "verify", "--data", str(data))
    assert code == 0  # the data directory alone: consistent
    code, out, _ = cli(capsys, "audit", "verify", "--data", str(data), "--anchor-file",
                       str(outside))
    assert code == 1 and "disagrees with" in out and str(outside) in out


def test_the_config_names_the_external_targets(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`[audit] anchor_file` (relative to the config file) receives the heads of the App's
    trail, and `audit verify --config` compares with it; a bad syslog address is one sentence."""
    config = tmp_path / "casegate.toml"
    config.write_text('[audit]\nanchor_file = "anchors.jsonl"\n', encoding="utf-8")
    app = App.open(config, tmp_path / "data")
    app.audit.record(EventKind.LOGIN, sender="jo@cafcass.gov.uk")
    app.close()
    assert (tmp_path / "anchors.jsonl").read_text().strip()
    code, out, _ = cli(capsys, "audit", "verify", "--config", str(config), "--data",
                       str(tmp_path / "data"))
    assert code == 0 and "its anchors verified" in out
    config.write_text('[audit]\nanchor_syslog = "nowhere"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'audit\.anchor_syslog'"):
        App.open(config, tmp_path / "data")


def test_the_head_file_is_replaced_at_most_every_head_seconds(tmp_path: Path) -> None:
    """Heads offered within `head_seconds` of the last write wait (the newest wins); `close`
    writes the newest at once. A head file replaced per commit group cost 0.2 to 0.5 ms of
    CPU per message under load (issue 14)."""
    signed: list[int] = []

    def sign(seq: int, mac: bytes) -> dict[str, Any]:
        signed.append(seq)
        return {"seq": seq, "mac": mac.hex()}

    path = tmp_path / HEAD_FILE
    anchor = HeadAnchor(path, sign, head_seconds=3600)
    anchor.offer(1, b"\x01" * 32)
    anchor.flush()  # returns once the head offered is in the file
    assert json.loads(path.read_text())["seq"] == 1
    anchor.offer(2, b"\x02" * 32)
    anchor.offer(3, b"\x03" * 32)
    assert json.loads(path.read_text())["seq"] == 1  # within the hour: not yet
    anchor.close()
    assert json.loads(path.read_text())["seq"] == 3
    assert signed == [1, 3]  # 2 was skipped, never signed nor written
