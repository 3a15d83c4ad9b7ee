"""The AUTH failure throttle: free tries, growing delays, lockout, expiry, reset on success; in
memory on SQLite, in the shared table on PostgreSQL (the `database` fixture), and across two
nodes sharing one database."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.stores.throttle import AuthThrottle, Throttle
from transports.database import Database, DatabaseSettings, OperationalError


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delay_grows_then_locks_then_expires(database: Database) -> None:
    """Two free failures, then growing delays, then a lock that wears off."""
    clock = FakeClock()
    throttle = AuthThrottle(max_failures=5, lockout_seconds=60, free_failures=2, delay_step=0.5,
                            clock=clock, database=database)
    assert throttle.shared is not database.is_sqlite
    verdicts = [throttle.failure("192.0.2.1") for _ in range(4)]
    assert [v.throttle for v in verdicts] == [Throttle.ANSWER] * 4
    assert [v.delay for v in verdicts] == [0.0, 0.0, 0.5, 1.0]
    assert throttle.failure("192.0.2.1").throttle is Throttle.LOCK
    assert throttle.is_locked("192.0.2.1")
    assert not throttle.is_locked("192.0.2.2")
    clock.now += 61
    assert not throttle.is_locked("192.0.2.1")
    assert throttle.failure("192.0.2.1").delay == 0.0


def test_success_forgets_failures(database: Database) -> None:
    """A correct login clears the address's count."""
    throttle = AuthThrottle(max_failures=3, clock=FakeClock(), database=database)
    throttle.failure("192.0.2.1")
    throttle.failure("192.0.2.1")
    throttle.success("192.0.2.1")
    assert throttle.failure("192.0.2.1").throttle is Throttle.ANSWER
    assert not throttle.is_locked("192.0.2.1")


async def test_the_event_loop_methods_answer_as_the_plain_ones(database: Database) -> None:
    """`failed`, `locked` and `succeeded` (the event loop's) count per key, as the plain ones."""
    throttle = AuthThrottle(max_failures=2, clock=FakeClock(), database=database)
    assert [v.throttle for v in await throttle.failed("a", "b")] == [Throttle.ANSWER] * 2
    assert not await throttle.locked("a", "b")
    assert [v.throttle for v in await throttle.failed("a")] == [Throttle.LOCK]
    assert await throttle.locked("b", "a") and not await throttle.locked("b")
    await throttle.succeeded("a", "b")
    assert not await throttle.locked("a", "b")


# ---- two nodes on one PostgreSQL database (issue 15) --------------------------------------


def test_failures_spread_over_two_nodes_lock_at_the_same_count(
        pg_nodes: tuple[Database, Database]) -> None:
    """Failures from one client alternating between the nodes lock it at the fifth, on both;
    the other scope (web sign-in) and other clients are untouched."""
    clock = FakeClock()
    one, two = (AuthThrottle(max_failures=5, lockout_seconds=60, free_failures=2,
                             delay_step=0.5, clock=clock, database=engine)
                for engine in pg_nodes)
    verdicts = [(one if i % 2 == 0 else two).failure("192.0.2.1") for i in range(5)]
    assert [v.delay for v in verdicts[:4]] == [0.0, 0.0, 0.5, 1.0]
    assert verdicts[4].throttle is Throttle.LOCK
    assert one.is_locked("192.0.2.1") and two.is_locked("192.0.2.1")
    assert not two.is_locked("192.0.2.2")
    web = AuthThrottle(max_failures=5, clock=clock, database=pg_nodes[0], scope="web-signin")
    assert not web.is_locked("192.0.2.1")
    clock.now += 61
    assert not one.is_locked("192.0.2.1") and not two.is_locked("192.0.2.1")
    assert two.failure("192.0.2.1").delay == 0.0  # the count starts afresh after the lock


def test_failures_at_the_same_moment_on_two_nodes_are_all_counted(
        pg_nodes: tuple[Database, Database]) -> None:
    """Twenty failures sent at once through two nodes (ten threads each) count twenty: each
    failure is one atomic statement, so none is lost to a race."""
    one, two = (AuthThrottle(max_failures=100, database=engine) for engine in pg_nodes)
    barrier = threading.Barrier(20)
    counts: list[float] = []

    def fail(throttle: AuthThrottle) -> None:
        barrier.wait()
        counts.append(throttle.failure("192.0.2.9").delay)

    threads = [threading.Thread(target=fail, args=(one if i % 2 else two,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # delay = (count - free failures) * step: the counts seen were 1..20, each once
    assert sorted(counts) == [max(0, n - 2) * 1.0 for n in range(1, 21)]


async def test_a_success_on_one_node_clears_the_other(
        pg_nodes: tuple[Database, Database]) -> None:
    """A correct login through node two forgets the failures counted through node one."""
    one, two = (AuthThrottle(max_failures=3, database=engine) for engine in pg_nodes)
    await one.failed("192.0.2.1")
    await one.failed("192.0.2.1")
    await two.succeeded("192.0.2.1")
    verdicts = await asyncio.gather(one.failed("192.0.2.1"), two.failed("192.0.2.1"))
    assert sorted(v[0].throttle for v in verdicts) == [Throttle.ANSWER, Throttle.ANSWER]
    assert not await one.locked("192.0.2.1")


def test_a_database_that_cannot_be_reached_fails_closed(tmp_path: Path, pg_url: str) -> None:
    """With the shared table out of reach, the throttle raises OperationalError (the front
    answers 4xx): it never answers "not locked" nor forgets a failure unseen."""
    engine = Database.open(tmp_path, DatabaseSettings(url=pg_url, node="one"))
    throttle = AuthThrottle(max_failures=3, database=engine)
    throttle.failure("192.0.2.1")
    engine.close()  # the pool is gone: every statement now fails
    with pytest.raises(OperationalError):
        throttle.is_locked("192.0.2.1")
    with pytest.raises(OperationalError):
        throttle.failure("192.0.2.1")
    with pytest.raises(OperationalError):
        throttle.success("192.0.2.1")
