"""Keys are never silently replaced (issue 18): a missing, unreadable or altered key stops
`casegate serve` at start-up with one sentence; keys are made only for a new data directory or
by `casegate keys init`; `casegate keys rotate` reaches the running gateway and says so."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.cli import main
from gateway.cli.serve import reload_keys
from gateway.stores.keyprints import KeyFileError, guard
from gateway.stores.portal import PORTAL_DB_FILE, PortalStore
from gateway.stores.portalkeys import KeyringError, open_keyring
from tests.gateway_harness import STAFF, running_gateway
from tests.portalweb import protected_message
from tests.sink import Sink
from tests.test_serve import _read_banner
from tests.test_serve_startup import FREE_PORTS, assert_one_sentence, serve
from transports.crypto import KEYS_FILE, Keyring, seal
from transports.database import Database, DatabaseSettings

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
ENV.pop("CASEGATE_PORTAL_KEYS", None)
MUM = "mum@example.org"
CASE = "FD24P01234"


def casegate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command as its own process (for one that must reach a running gateway)."""
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=60, check=False)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """A command in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory in use: keys made, fingerprints recorded, events chained."""
    monkeypatch.delenv("CASEGATE_PORTAL_KEYS", raising=False)
    code, out, err = cli(capsys, "keys", "init", "--data", str(tmp_path / "data"))
    assert code == 0, err
    assert "audit.key" in out and KEYS_FILE in out
    code, _, err = cli(capsys, "keys", "list", "--data", str(tmp_path / "data"))
    assert code == 0, err  # the App opened once: the case registry's key recorded too
    return tmp_path / "data"


def missing(path: Path) -> None:
    path.unlink()


def unreadable(path: Path) -> None:
    """A folder where the file should be (the tests run as root, which reads any mode)."""
    path.unlink()
    path.mkdir()


def other_portal_key(path: Path) -> None:
    """Other key bytes under the same key id (valid JSON, valid length)."""
    ring = json.loads(path.read_text())
    ring["keys"][0]["key"] = base64.b64encode(bytes(32)).decode()
    path.write_text(json.dumps(ring))


def garbled(path: Path) -> None:
    path.write_text("{not json")


def flipped_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0x01
    path.write_bytes(bytes(raw))


def other_signing_key(path: Path) -> None:
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


FAILURES: list[tuple[str, Callable[[Path], None], tuple[str, ...]]] = [
    (KEYS_FILE, missing, ("portal-keys.json is missing", "restore portal-keys.json")),
    (KEYS_FILE, unreadable, ("portal-keys.json", "cannot be read", "restore")),
    (KEYS_FILE, garbled, ("portal-keys.json is not a valid portal keyring", "restore")),
    (KEYS_FILE, other_portal_key, ("portal-keys.json holds other bytes", "restore")),
    ("audit.key", missing, ("audit.key is missing", "restore it from your backup")),
    ("audit.key", unreadable, ("audit.key cannot be read", "restore")),
    ("audit.key", flipped_byte, ("audit.key is not the key", "altered or replaced",
                                 "restore")),
    ("audit-signing.pem", missing, ("audit-signing.pem is missing", "restore")),
    ("audit-signing.pem", other_signing_key, ("audit-signing.pem is not the key",
                                              "restore")),
    # a new case key would fail nothing: every recorded person would go unrecognised
    ("case-index.key", missing, ("case-index.key is missing", "restore case-index.key")),
    ("case-index.key", flipped_byte, ("case-index.key is not the key", "restore")),
    # a new link key would break every link in the mail already sent (and on a second node,
    # every link the first one mails)
    ("verification.key", missing, ("verification.key is missing", "restore verification.key")),
    ("verification.key", flipped_byte, ("verification.key is not the key", "restore")),
]


@pytest.mark.parametrize(("name", "damage", "words"), FAILURES,
                         ids=[f"{n}-{d.__name__}" for n, d, _ in FAILURES])
def test_a_damaged_key_stops_the_gateway_at_start_up(
    data: Path, name: str, damage: Callable[[Path], None], words: tuple[str, ...]
) -> None:
    """serve exits with one sentence naming the file and what to restore; nothing is made in
    its place."""
    path = data / name
    damage(path)
    before = path.read_bytes() if path.is_file() else None
    done = serve(data.parent, "--data", "data", *FREE_PORTS)
    assert_one_sentence(done, *words)
    assert (path.read_bytes() if path.is_file() else None) == before


def test_a_keyring_without_the_key_of_a_stored_copy_stops_the_gateway(data: Path) -> None:
    """A copy sealed with a key the keyring (and the record) lacks: refused, naming the key."""
    store = PortalStore(Database.open(data))
    other = Keyring.new()
    now = datetime.now(UTC)
    store.add_copy(copy_id="c1", link_token="t1", copy_key="k1", sender=STAFF, recipient=MUM,
                   decision_id="d1", sealed=seal(other, b"x", copy_id="c1", recipient=MUM),
                   size=1, attachment_parts=(), now=now, expires=now + timedelta(days=1))
    store.close()
    done = serve(data.parent, "--data", "data", *FREE_PORTS)
    assert_one_sentence(done, other.current_id, "copies in", "were sealed with", "restore")


def test_a_new_data_directory_gets_its_keys_and_keeps_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first command on an empty data directory makes the keys; later ones reuse them."""
    code, _, err = cli(capsys, "keys", "list", "--data", str(tmp_path / "data"))
    assert code == 0, err
    keyring = (tmp_path / "data" / KEYS_FILE).read_bytes()
    audit_key = (tmp_path / "data" / "audit.key").read_bytes()
    code, _, err = cli(capsys, "keys", "list", "--data", str(tmp_path / "data"))
    assert code == 0, err
    assert (tmp_path / "data" / KEYS_FILE).read_bytes() == keyring
    assert (tmp_path / "data" / "audit.key").read_bytes() == audit_key


def test_keys_init_replaces_a_lost_keyring_only_when_no_copy_needs_it(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lost keyring, no copy stored: `keys init` makes a new one (recorded as an event); with
    a stored copy sealed by the lost key it refuses."""
    old = Keyring.load(data / KEYS_FILE)
    (data / KEYS_FILE).unlink()
    code, out, err = cli(capsys, "keys", "init", "--data", str(data))
    assert code == 0, err
    assert f"Made {KEYS_FILE}" in out
    assert Keyring.load(data / KEYS_FILE).current_id != old.current_id
    code, out, _ = cli(capsys, "audit", "list", "--data", str(data), "--kind", "key-created",
                       "--json")
    assert old.current_id in out  # replaced_key_ids names the lost key
    store = PortalStore(Database.open(data))
    now = datetime.now(UTC)
    ring = Keyring.load(data / KEYS_FILE)
    store.add_copy(copy_id="c1", link_token="t1", copy_key="k1", sender=STAFF, recipient=MUM,
                   decision_id="d1", sealed=seal(ring, b"x", copy_id="c1", recipient=MUM),
                   size=1, attachment_parts=(), now=now, expires=now + timedelta(days=1))
    store.close()
    (data / KEYS_FILE).unlink()
    code, _, err = cli(capsys, "keys", "init", "--data", str(data))
    assert code == 2
    assert ring.current_id in err and "restore" in err
    assert not (data / KEYS_FILE).exists()


def test_keys_init_never_makes_an_audit_key_for_a_chained_trail(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """audit.key lost: `keys init` refuses (the trail needs the old key), making nothing."""
    (data / "audit.key").unlink()
    code, _, err = cli(capsys, "keys", "init", "--data", str(data))
    assert code == 2 and "audit.key is missing" in err
    assert not (data / "audit.key").exists()


def test_rotate_says_when_no_gateway_was_told(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No gateway running: rotate makes the key and says the next start takes it up."""
    code, out, err = cli(capsys, "keys", "rotate", "--data", str(data))
    assert code == 0, err
    assert "No running gateway was told" in out


async def test_rotate_reaches_the_running_gateway(data: Path) -> None:
    """`casegate keys rotate` while `casegate serve` runs: the gateway reloads on SIGHUP and
    rotate reports its confirmation, naming the pid and the new key."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--data", "data", *FREE_PORTS,
        "--metrics-port", "0", cwd=data.parent, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=ENV)
    try:
        await _read_banner(process)
        done = await asyncio.to_thread(casegate, data.parent, "keys", "rotate", "--data", "data")
        assert done.returncode == 0, done.stdout + done.stderr
        current = Keyring.load(data / KEYS_FILE).current_id
        assert f"The running gateway (pid {process.pid}) now seals new copies with {current}" \
            in done.stdout
    finally:
        process.terminate()
        await process.communicate()
    assert process.returncode == 0


async def test_a_reloaded_keyring_seals_the_next_copy(tmp_path: Path, sink: Sink) -> None:
    """In the running gateway, a copy sealed after the reload names the new key; the one before
    still names the old, and the keyring in use holds both."""
    async with running_gateway(tmp_path, sink) as gw:
        gw.verify(MUM, CASE)
        first = protected_message(to=MUM)
        assert await gw.run(gw.send, STAFF, [MUM], first) == {}
        old = gw.app.keyring.current_id
        rotated = gw.app.keyring.rotated(datetime.now(UTC))
        rotated.save(gw.app.data_dir / KEYS_FILE)
        await reload_keys(gw.app, gw.gateway)
        second = re.sub(rb"portal-test@", b"portal-test-2@", first)
        assert await gw.run(gw.send, STAFF, [MUM], second) == {}
        key_ids = sorted(c.key_id or "" for c in gw.app.portal.list())
        assert key_ids == sorted([old, rotated.current_id])
        assert {k.key_id for k in gw.app.keyring.keys} == {old, rotated.current_id}


# -- the fingerprints in the database, on either engine and on two nodes --------------------

CASE_KEY = "case-index.key"


def load_or_make(path: Path) -> Callable[[], bytes]:
    """A key file's loader that makes it when missing (as the case registry's does)."""
    def load() -> bytes:
        if not path.exists():
            path.write_bytes(secrets.token_bytes(32))
        return path.read_bytes()
    return load


def guarded(database: Database) -> bytes:
    path = database.data_dir / CASE_KEY
    return guard(path, database, "cases.sqlite3", ("case_person",), load_or_make(path))


def stored_values(database: Database, table: str) -> list[str]:
    db = database.connect(PORTAL_DB_FILE, autocommit=True)
    rows = db.execute(f"SELECT * FROM {table}").fetchall()
    db.close()
    return [str(value) for row in rows for value in row]


@pytest.fixture
def two_nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Database, Database]]:
    """Two gateway nodes, each with a data directory of its own, on one PostgreSQL database."""
    databases = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        databases.append(Database.open(tmp_path / name, DatabaseSettings(url=pg_url, node=name)))
    yield databases[0], databases[1]
    for database in databases:
        database.close()


def test_the_keyring_is_checked_against_the_recorded_fingerprints(database: Database) -> None:
    """Made once, then the same; only fingerprints are stored; another keyring is refused."""
    now = datetime.now(UTC)
    keyring, created = open_keyring(database, None, now)
    assert created
    again, created = open_keyring(database, None, now)
    assert not created and again.current_id == keyring.current_id
    stored = stored_values(database, "portal_key_fingerprint")
    secret = (database.data_dir / KEYS_FILE).read_text()
    assert keyring.current_id in stored and not any(v in secret for v in stored if len(v) > 20)
    Keyring.new(now).save(database.data_dir / KEYS_FILE)
    with pytest.raises(KeyringError, match="lacks master key"):
        open_keyring(database, None, now)


def test_a_key_file_is_checked_against_its_recorded_fingerprint(database: Database) -> None:
    """The case-index key: made and recorded once; the same key passes; a replaced one, or
    none while its fingerprint is recorded, is refused."""
    key = guarded(database)
    assert guarded(database) == key
    (database.data_dir / CASE_KEY).write_bytes(secrets.token_bytes(32))
    with pytest.raises(KeyFileError, match="not the key"):
        guarded(database)
    (database.data_dir / CASE_KEY).unlink()
    with pytest.raises(KeyFileError, match="is missing"):
        guarded(database)


def test_a_second_node_needs_the_first_nodes_keys(two_nodes: tuple[Database, Database]
                                                  ) -> None:
    """Keys stay in files on each node; the shared database holds their fingerprints, so a
    node given no keys, or other keys, is refused, and one given the same keys starts."""
    one, two = two_nodes
    now = datetime.now(UTC)
    keyring, _ = open_keyring(one, None, now)
    case_key = guarded(one)
    with pytest.raises(KeyringError, match="is missing"):
        open_keyring(two, None, now)
    with pytest.raises(KeyFileError, match="is missing"):
        guarded(two)
    Keyring.new(now).save(two.data_dir / KEYS_FILE)
    with pytest.raises(KeyringError, match=f"lacks master key {keyring.current_id}"):
        open_keyring(two, None, now)
    for name in (KEYS_FILE, CASE_KEY):
        shutil.copy(one.data_dir / name, two.data_dir / name)
    shared, created = open_keyring(two, None, now)
    assert not created and shared.current_id == keyring.current_id
    assert guarded(two) == case_key


def test_nodes_starting_together_agree_on_one_keyring(two_nodes: tuple[Database, Database]
                                                      ) -> None:
    """Two new nodes start at once on an empty database, each making keys: one records its
    keys and starts, the other is refused (never sealing with keys the first cannot read)."""
    start = threading.Barrier(2)
    outcomes: dict[str, list[str]] = {}

    def node_start(database: Database) -> None:
        start.wait(timeout=30)
        found = outcomes.setdefault(database.node, [])
        for step in (lambda: open_keyring(database, None, datetime.now(UTC)),
                     lambda: guarded(database)):
            try:
                step()
                found.append("started")
            except (KeyringError, KeyFileError):
                found.append("refused")

    threads = [threading.Thread(target=node_start, args=(node,)) for node in two_nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    keyrings = sorted(found[0] for found in outcomes.values())
    case_keys = sorted(found[1] for found in outcomes.values())
    assert keyrings == ["refused", "started"] and case_keys == ["refused", "started"]
