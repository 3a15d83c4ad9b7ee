"""The crash test (bench/crash_once.py) at a size a test run can afford: retrying clients send
60 messages while `casegate serve` is killed three times. Every message is answered 250 in
the end and arrives; none arrives twice except, possibly, in the window SMTP cannot close
(RFC 1047: the gateway killed after the upstream committed and before it read the 250)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "crash_once.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_once", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("crash_once", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(300)  # three restarts of a real gateway on a shared machine
async def test_kills_lose_nothing_and_send_nothing_twice() -> None:
    """60 messages, 4 retrying clients, 3 kills: all accepted, none lost, no duplicate whose
    first copy's 250 the gateway is known to have read."""
    report = await _bench().run(messages=60, clients=4, kills=3, seed=7)
    assert report.kills == 3
    assert report.accepted == report.sent == 60
    assert report.lost == 0 and report.delivered == 60
    assert report.duplicated_confirmed == 0, report.lines()
