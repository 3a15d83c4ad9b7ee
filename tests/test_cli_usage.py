"""The command line's own behaviour: `--version` and usage errors that name the right command."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

from gateway.cli import main


def test_version_prints_the_installed_package_version() -> None:
    """`casegate --version` prints the version from the installed package's metadata."""
    done = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert done.stdout == f"casegate {version('casegate')}\n"


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["check", "--frobnicate", "m.eml"], "usage: casegate check "),
        (["verify", "add", "a@example.org", "--organisation", "--role", "party", "--by",
          "b@cafcass.gov.uk", "--frobnicate"], "usage: casegate verify add "),
        (["audit", "--frobnicate", "verify"], "usage: casegate audit "),
    ],
)
def test_an_unknown_option_prints_its_subcommands_usage(
        capsys: pytest.CaptureFixture[str], argv: list[str], usage: str) -> None:
    """An option a subcommand does not know exits 2 with that subcommand's usage, not the top's."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert err.startswith(usage)
    assert "--frobnicate" in err
