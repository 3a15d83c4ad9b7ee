"""`casegate service-unit`: the shipped systemd unit, hardened, with this installation's paths."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.tools import require_tool


def unit_text(capsys: pytest.CaptureFixture[str], tmp_path: Path, config: str = "",
              *extra: str) -> str:
    """The unit `casegate service-unit` prints for a config holding `config`."""
    path = tmp_path / "casegate.toml"
    path.write_text(config, encoding="utf-8")
    assert main(["service-unit", "--config", str(path), *extra]) == 0
    return capsys.readouterr().out


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_the_unit_is_hardened_and_names_this_installation(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Dedicated user, read-only system but the data directory, no capabilities, paths filled."""
    unit = parse(unit_text(capsys, tmp_path, "[smtp]\ndrain_seconds = 45\n",
                           "--user", "mailgate", "--data", str(tmp_path / "state")))
    service = unit["Service"]
    casegate = Path(sys.executable).with_name("casegate")
    assert service["ExecStart"] == (f"{casegate} serve --config {tmp_path / 'casegate.toml'} "
                                    f"--data {tmp_path / 'state'}")
    assert (service["User"], service["Group"]) == ("mailgate", "mailgate")
    assert service["ReadWritePaths"] == str(tmp_path / "state")
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "CapabilityBoundingSet": "",
                       "AmbientCapabilities": "", "Restart": "on-failure",
                       "KillSignal": "SIGTERM", "KillMode": "mixed"}.items():
        assert service[key] == value, key
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 45
    assert "@" not in "".join(service.values()).replace("@system-service", "")


@pytest.mark.parametrize(("config", "seconds"), [
    ("[smtp]\ndrain_seconds = 45\n", 75),  # into the outbox: nothing is handed over
    ("[smtp]\ndrain_seconds = 45\n[upstream]\nhost = \"smarthost.example\"\n", 675),
    ("[upstream]\nhost = \"smarthost.example\"\ndata_done_timeout = 120.5\n", 181),
])
def test_systemd_waits_for_the_drain_and_the_upstreams_reply(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, config: str, seconds: int) -> None:
    """A hand-over killed while it waits for the upstream's reply leaves its acceptance
    unrecorded (the client's retry could deliver twice): the unit waits for the drain, the
    reply to the end of data, and 30 seconds more."""
    service = parse(unit_text(capsys, tmp_path, config))["Service"]
    assert service["TimeoutStopSec"] == f"{seconds}s"


def test_port_25_keeps_only_the_bind_capability(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    """A config listening on port 25 gets CAP_NET_BIND_SERVICE and no other capability."""
    service = parse(unit_text(capsys, tmp_path, "[smtp]\nport = 25\n"))["Service"]
    assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"


def test_a_missing_config_is_one_sentence_saying_how_to_make_one(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without the config file there is no unit, but a pointer to `casegate init` (exit 2)."""
    assert main(["service-unit", "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "casegate init" in err


def test_systemd_accepts_the_unit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`systemd-analyze verify` finds no error and no unknown or misspelt key in it."""
    analyze = require_tool("systemd-analyze", "systemd")
    units = tmp_path / "units"
    units.mkdir()
    (units / "casegate.service").write_text(
        unit_text(capsys, tmp_path, "[smtp]\nport = 25\n", "--data", str(tmp_path / "data")),
        encoding="utf-8")
    done = subprocess.run([analyze, "verify", str(units / "casegate.service")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "casegate.service" not in done.stderr, done.stderr
