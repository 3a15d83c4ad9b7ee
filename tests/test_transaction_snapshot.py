"""One registry snapshot per SMTP transaction (issue 14): read at the first RCPT, used again by
the other RCPTs and the DATA decision while fresh, read afresh once older than its bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.audit.store import EventFilter
from gateway.stages.context import TransactionSnapshot
from tests.gateway_harness import STAFF, Harness, message, running_gateway
from tests.sink import Sink

SECURE = ("a@cps.gsi.gov.uk", "b@cps.gsi.gov.uk", "c@cps.gsi.gov.uk")


@pytest.fixture
async def gw(tmp_path: Path, sink: Sink) -> AsyncIterator[Harness]:
    async with running_gateway(tmp_path, sink) as harness:
        yield harness


async def test_a_fresh_snapshot_is_used_again(gw: Harness) -> None:
    """Within the bound, the transaction's recipients and its DATA see the same snapshot."""
    snapshots = TransactionSnapshot()
    first = await snapshots.get(gw.gateway.stages)
    assert snapshots.fresh() is first
    assert await snapshots.get(gw.gateway.stages) is first


async def test_a_stale_snapshot_is_read_afresh_and_sees_a_change(gw: Harness) -> None:
    """Past the bound (here 0 s) the registry is read again: a recipient verified meanwhile
    is in the new snapshot, not in the old one."""
    snapshots = TransactionSnapshot(reuse_seconds=0)
    before = await snapshots.get(gw.gateway.stages)
    assert snapshots.fresh() is None
    gw.verify("new.person@example.org")
    after = await snapshots.get(gw.gateway.stages)
    assert after is not before
    addresses = {v.address for v in after.verified} - {v.address for v in before.verified}
    assert addresses == {"new.person@example.org"}


async def test_message_to_several_recipients_is_decided_once_for_all(gw: Harness) -> None:
    """Three recipients, one snapshot: the message is delivered to all, one decision."""
    assert await gw.run(gw.send, STAFF, list(SECURE), message()) == {}
    assert [sorted(m.rcpt_tos) for m in gw.sink.messages] == [sorted(SECURE)]
    decisions = [e for e in gw.app.audit.iterate(EventFilter()) if e.kind == "decision"]
    assert len(decisions) == 1 and sorted(decisions[0].recipients) == sorted(SECURE)
