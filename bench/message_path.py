"""Which of our modules one ordinary message passes through, from its DATA to the relay.

A real gateway (tests.gateway_harness) on loopback, a real aiosmtpd sink upstream, one
authenticated client sending a short message to a secure government address. While the
gateway handles that DATA, a profiler notes every first-party function called (Python code in
gateway/, transports/, verification/; policies/ listed apart: the decision itself).

    .venv/bin/python bench/message_path.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway_harness import STAFF, message, running_gateway
from tests.sink import Sink

ROOT = Path(__file__).resolve().parent.parent
OURS = ("gateway", "transports", "verification")


def _module(frame: FrameType) -> str | None:
    path = Path(frame.f_code.co_filename)
    try:
        parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    except ValueError:
        return None
    if not parts or parts[0] not in (*OURS, "policies"):
        return None
    return ".".join(p for p in parts if p != "__init__")


async def trace_one() -> tuple[OrderedDict[str, list[str]], int]:
    calls: OrderedDict[str, list[str]] = OrderedDict()
    steps = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal steps
        if event != "call":
            return
        module = _module(frame)
        if module is None:
            return
        name = frame.f_code.co_qualname
        seen = calls.setdefault(module, [])
        if name not in seen:
            seen.append(name)
            steps += 1

    with tempfile.TemporaryDirectory() as tmp:
        async with Sink() as sink, running_gateway(Path(tmp), sink) as gw:
            handler_cls = type(gw.gateway.handler)
            original = handler_cls.handle_DATA

            async def traced(self: Any, *args: Any) -> str:
                sys.setprofile(profile)
                try:
                    return await original(self, *args)
                finally:
                    sys.setprofile(None)

            handler_cls.handle_DATA = traced  # type: ignore[method-assign]
            try:
                await gw.run(gw.send, STAFF, ["someone@cps.gsi.gov.uk"],
                             message(to=["someone@cps.gsi.gov.uk"]))
            finally:
                handler_cls.handle_DATA = original  # type: ignore[method-assign]
            assert len(sink.messages) == 1
    return calls, steps


def main() -> None:
    calls, _ = asyncio.run(trace_one())
    ours = {m: f for m, f in calls.items() if not m.startswith("policies")}
    policy = {m: f for m, f in calls.items() if m.startswith("policies")}
    print(f"DATA to relay: {sum(map(len, ours.values()))} functions in {len(ours)} modules "
          f"of gateway/, transports/ and verification/ "
          f"(+ {sum(map(len, policy.values()))} in {len(policy)} policies/ modules)")
    for module, functions in ours.items():
        print(f"  {module}: {', '.join(functions)}")
    print("  policies:", ", ".join(policy))


if __name__ == "__main__":
    main()
