"""Operator mistakes at start-up: `casegate serve` says what is wrong in one line and exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.smtp.tls import ensure_certificate

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
# Listeners the case does not test pick a free port, so a busy default never decides the case.
FREE_PORTS = ("--smtp-port", "0", "--tls-port", "0", "--http-port", "0")


def serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `casegate serve` as a real process; each case here must make it exit by itself."""
    return subprocess.run([sys.executable, "-m", "gateway", "serve", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=60, check=False)


def assert_one_sentence(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """A non-zero exit, exactly one line on stderr naming the problem, and no traceback."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("casegate: ")
    for word in words:
        assert word in lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "casegate.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_port_in_use_is_one_sentence(tmp_path: Path, busy_port: int) -> None:
    """The SMTP port already taken: the address, the key and the reason."""
    done = serve(tmp_path, "--data", "data", *FREE_PORTS, "--smtp-port", str(busy_port))
    assert_one_sentence(done, f"127.0.0.1:{busy_port}", "'smtp.port'", "address already in use")


def test_the_http_port_in_use_is_one_sentence(tmp_path: Path, busy_port: int) -> None:
    """The HTTP port already taken is named as such (the SMTP listeners started first)."""
    done = serve(tmp_path, "--data", "data", *FREE_PORTS, "--http-port", str(busy_port))
    assert_one_sentence(done, f"127.0.0.1:{busy_port}", "'http.port'", "already in use")


# The config's text, and the words its one line must hold ("{config}": the file's path).
BAD_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "port out of range": ("[smtp]\nport = 99999\n", ("{config}", "'smtp.port'", "65535")),
    "upstream host": ('[upstream]\nhost = "mail relay.example"\n',
                      ("{config}", "'upstream.host'")),
    "upstream port": ('[upstream]\nhost = "relay.example"\nport = 0\n',
                      ("{config}", "'upstream.port'")),
    "upstream ca file": ('[upstream]\nhost = "relay.example"\nca_file = "/nonexistent.pem"\n',
                         ("'upstream.ca_file'", "/nonexistent.pem", "no such file")),
    "not TOML": ("[smtp\n", ("{config}", "is not valid TOML")),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_bad_config_is_one_sentence(tmp_path: Path, case: str) -> None:
    """Each bad config value stops serve before it binds, naming the file and the key."""
    text, words = BAD_CONFIGS[case]
    config = write_config(tmp_path, f'data_dir = "data"\n{text}')
    done = serve(tmp_path, "--config", config, *FREE_PORTS)
    assert_one_sentence(done, *(word.replace("{config}", config) for word in words))


def test_a_port_flag_out_of_range_is_one_sentence(tmp_path: Path) -> None:
    """A port on the command line is range-checked like the config's."""
    done = serve(tmp_path, "--data", "data", "--smtp-port", "0", "--http-port", "70000")
    assert_one_sentence(done, "70000 is not a port number")


def test_an_unusable_upstream_flag_is_one_sentence(tmp_path: Path) -> None:
    """--upstream with a port out of range is refused like the config key."""
    done = serve(tmp_path, "--data", "data", *FREE_PORTS, "--upstream", "relay.example:70000")
    assert_one_sentence(done, "'upstream.port'")


def unreadable_config(tmp_path: Path) -> str:
    (tmp_path / "conf.d").mkdir()
    return str(tmp_path / "conf.d")


def missing_config(tmp_path: Path) -> str:
    return str(tmp_path / "nowhere.toml")


@pytest.mark.parametrize(("make", "words"), [
    (unreadable_config, ("cannot be read",)),
    (missing_config, ("does not exist",)),
])
def test_an_unreadable_config_is_one_sentence(tmp_path: Path, make: Callable[[Path], str],
                                              words: tuple[str, ...]) -> None:
    """A config path that is no readable file is named, with why."""
    path = make(tmp_path)
    assert_one_sentence(serve(tmp_path, "--config", path, *FREE_PORTS), path, *words)


def test_an_unusable_data_directory_is_one_sentence(tmp_path: Path) -> None:
    """A data directory that cannot be created (its parent is a file) is named, with why."""
    (tmp_path / "afile").write_text("", encoding="utf-8")
    done = serve(tmp_path, "--data", "afile/data", *FREE_PORTS)
    assert_one_sentence(done, "afile/data", "data directory cannot be used", "not a directory")


def test_a_broken_certificate_is_one_sentence(tmp_path: Path) -> None:
    """A certificate and key that do not load are named, with what to do."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "tls.crt").write_text("not a certificate\n", encoding="utf-8")
    (data / "tls.key").write_text("not a key\n", encoding="utf-8")
    done = serve(tmp_path, "--data", "data", *FREE_PORTS)
    assert_one_sentence(done, "data/tls.crt", "cannot be used", "remove both")


def test_an_unreadable_key_is_one_sentence(tmp_path: Path) -> None:
    """A key path casegate cannot read (a folder where the file should be: CI runs as root,
    which reads any file whatever its mode) is named, with why."""
    data = tmp_path / "data"
    data.mkdir()
    pair = ensure_certificate(data, "casegate.localhost")
    pair.key_file.unlink()
    pair.key_file.mkdir()
    done = serve(tmp_path, "--data", "data", *FREE_PORTS)
    assert_one_sentence(done, "tls.key", "is a directory")
