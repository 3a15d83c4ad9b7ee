"""The README stays true: its config reference and command list match the code."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import COMMANDS
from gateway.configref import END, START, reference

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_config_reference_is_the_generated_one() -> None:
    """Every config key, type and default in the README is what gateway.config defines."""
    start, end = README.index(START), README.index(END) + len(END)
    assert README[start:end] == reference(), "run: python -m gateway.configref, paste into README"


def test_every_command_is_documented() -> None:
    """Each `casegate` subcommand appears in the README's command table."""
    for name in COMMANDS:
        assert f"`casegate {name}" in README, name
