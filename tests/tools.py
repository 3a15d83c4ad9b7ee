"""External programs some tests drive (swaks, Chromium, Postfix): found, skipped or failed.

On a developer's machine a missing tool skips the test with the command that installs it. Under
CI (the environment variable CI set to anything but "" or "false") it fails instead: CI installs
every tool (.ci/run), so a missing one is a broken install that a skip would hide.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's package, driven through playwright
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def in_ci() -> bool:
    """Whether the tests run under CI, where every external tool must be present."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tool(name: str, package: str) -> str:
    """The path of program `name` (a name on PATH or an absolute path); when it is missing,
    skip the test, or fail it under CI, saying which Debian package provides it."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (apt-get install {package})"
    if in_ci():
        pytest.fail(f"{reason}; CI must install every tool the tests use", pytrace=False)
    pytest.skip(reason)
