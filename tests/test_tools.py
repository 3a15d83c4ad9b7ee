"""The rule for tests that drive an external program: skip locally, fail under CI."""

from __future__ import annotations

import pytest

from tests.tools import require_tool

MISSING = "/nonexistent/casegate-no-such-tool"


def test_a_present_tool_is_found() -> None:
    """A program on PATH comes back as its path."""
    assert require_tool("sh", "dash").endswith("/sh")


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CI a missing program skips the test, naming the package to install."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install swaks"):
        require_tool(MISSING, "swaks")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """Under CI a missing program fails the test, so a broken install cannot hide as a skip."""
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="CI must install"):
        require_tool(MISSING, "chromium")
