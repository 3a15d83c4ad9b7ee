"""The README stays true: its config reference, command list and metrics match the code."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import COMMANDS
from gateway.configref import END, START, reference
from gateway.observe.metrics import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_config_reference_is_the_generated_one() -> None:
    """Every config key, type and default in the README is what gateway.config defines."""
    start, end = README.index(START), README.index(END) + len(END)
    assert README[start:end] == reference(), "run: python -m gateway.configref, paste into README"


def test_every_command_is_documented() -> None:
    """Each `casegate` subcommand appears in the README's command table."""
    for name in COMMANDS:
        assert f"`casegate {name}" in README, name


def test_every_metric_is_documented() -> None:
    """Each metric casegate exposes appears, with its type, in the README's Monitoring table."""
    for family in Metrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert f"| `{name}` | {family.type} |" in README, name
