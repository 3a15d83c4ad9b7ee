"""The stores' worker thread: calls in order, off the event loop, each answered to its caller."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

from transports.worker import StoreWorker, WorkerClosed


@pytest.fixture
def worker() -> StoreWorker:
    return StoreWorker("test-worker")


async def test_calls_run_in_order_in_one_thread_off_the_loop(worker: StoreWorker) -> None:
    """Calls asked for together run one after another, in the order asked, in one thread that
    is not the loop's; each caller gets its own answer."""
    ran: list[tuple[int, int]] = []

    def work(n: int) -> int:
        ran.append((n, threading.get_ident()))
        return n * n

    try:
        answers = await asyncio.gather(*(worker.run(work, n) for n in range(20)))
    finally:
        await asyncio.to_thread(worker.close)
    assert answers == [n * n for n in range(20)]
    assert [n for n, _ in ran] == list(range(20))
    assert len({thread for _, thread in ran}) == 1
    assert ran[0][1] != threading.get_ident()


async def test_an_exception_goes_to_its_caller_alone(worker: StoreWorker) -> None:
    """A call that raises hands its exception to its caller; the calls around it are answered."""
    def fail() -> None:
        raise ValueError("no such row")

    try:
        before, failed, after = await asyncio.gather(
            worker.run(lambda: "before"), worker.run(fail), worker.run(lambda: "after"),
            return_exceptions=True)
    finally:
        await asyncio.to_thread(worker.close)
    assert (before, after) == ("before", "after")
    assert isinstance(failed, ValueError) and str(failed) == "no such row"


async def test_a_cancelled_callers_call_still_runs_before_later_ones(
        worker: StoreWorker) -> None:
    """A write whose caller gave up still happens, and before any call asked for after it (a
    retry's read sees the first attempt's write)."""
    gate = threading.Event()
    written: list[str] = []
    blocker = asyncio.ensure_future(worker.run(gate.wait))  # holds the thread for now
    write = asyncio.ensure_future(worker.run(written.append, "accepted"))
    await asyncio.sleep(0)  # both are queued
    write.cancel()
    read = asyncio.ensure_future(worker.run(lambda: list(written)))
    gate.set()
    try:
        assert await read == ["accepted"]
        assert await blocker is True
        with pytest.raises(asyncio.CancelledError):
            await write
    finally:
        await asyncio.to_thread(worker.close)


async def test_close_runs_what_was_asked_then_refuses(worker: StoreWorker) -> None:
    """Closing runs every call already asked for; a call asked for afterwards is refused."""
    gate = threading.Event()
    blocker = asyncio.ensure_future(worker.run(gate.wait))
    queued = asyncio.ensure_future(worker.run(lambda: "done"))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(asyncio.to_thread(worker.close))
    gate.set()
    await closing
    assert await blocker is True and await queued == "done"
    with pytest.raises(WorkerClosed):
        await worker.run(lambda: "too late")
    worker.close()  # a second close does nothing


async def holding(worker: StoreWorker, gate: threading.Event) -> asyncio.Future[bool]:
    """A call that holds the worker's thread until `gate` is set, once it is running: a batch
    of its own, and the calls asked for meanwhile make the next one."""
    running = threading.Event()

    def hold() -> bool:
        running.set()
        return gate.wait()

    held = asyncio.ensure_future(worker.run(hold))
    await asyncio.to_thread(running.wait)
    return held


async def test_a_batch_runs_inside_the_batch_context_and_is_answered_after_it() -> None:
    """With a `batch` context (a store's group commit), the calls asked for together run
    inside one entry of it, and none of their callers is answered before it is left."""
    seen: list[str] = []
    answered_inside: list[bool] = []
    futures: list[asyncio.Future[str]] = []

    @contextlib.contextmanager
    def batch() -> Iterator[None]:
        seen.append("enter")
        yield
        answered_inside.append(any(f.done() for f in futures))
        seen.append("leave")

    worker = StoreWorker("test-worker", batch=batch)
    gate = threading.Event()
    blocker = await holding(worker, gate)  # the first batch: this call alone
    futures += [asyncio.ensure_future(worker.run(seen.append, f"call {n}")) for n in range(3)]
    await asyncio.sleep(0)  # all queued while the thread is held: the second batch
    gate.set()
    try:
        assert await blocker is True
        await asyncio.gather(*futures)
    finally:
        await asyncio.to_thread(worker.close)
    assert seen == ["enter", "leave", "enter", "call 0", "call 1", "call 2", "leave"]
    assert answered_inside == [False, False]


async def test_when_the_batch_context_fails_every_call_of_the_batch_fails_with_it() -> None:
    """A batch context that raises as it is left (its commit failed) hands its exception to
    every call of the batch that had succeeded; a call that raised keeps its own; the next
    batch runs as usual."""
    fails = [False, True, False]  # the first batch, the second, the third

    @contextlib.contextmanager
    def batch() -> Iterator[None]:
        yield
        if fails.pop(0):
            raise OSError("fsync failed")

    def fail() -> None:
        raise ValueError("no such row")

    worker = StoreWorker("test-worker", batch=batch)
    gate = threading.Event()
    first = await holding(worker, gate)
    second = [asyncio.ensure_future(worker.run(lambda: "written")),
              asyncio.ensure_future(worker.run(fail))]
    await asyncio.sleep(0)
    gate.set()
    try:
        assert await first is True
        written, failed = await asyncio.gather(*second, return_exceptions=True)
        assert await worker.run(lambda: "later") == "later"
    finally:
        await asyncio.to_thread(worker.close)
    assert isinstance(written, OSError) and str(written) == "fsync failed"
    assert isinstance(failed, ValueError)
