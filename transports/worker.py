"""One thread for a store's blocking calls, so that the event loop never waits on the disk.

    worker = StoreWorker("casegate-ledger")
    done = await worker.run(ledger.accepted, key)   # runs in the worker's thread

Calls run one at a time, in the order they were asked for, so a write asked for before a read is
seen by it, even when the caller of the write was cancelled meanwhile (the call still runs).
Under load the thread is rarely idle: calls asked for while it runs (or waits for the GIL) are
taken together, and their callers are woken with one call into their loop, so many calls share
each trip between threads, which is what costs (the audit store's writer commits the same way).
A call that raises gives its exception to its caller alone.

A store whose writes may share one trip to the disk gives the worker a `batch` context: every
batch of calls runs inside it, and no caller is answered before it is left (its group commit:
the portal store makes a batch's copies durable with one fsync, gateway/stores/portal.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerClosed(RuntimeError):
    """A call asked of a worker that was closed."""


@dataclass(frozen=True, eq=False)
class _Call:
    work: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class StoreWorker:
    """Runs blocking calls in one thread of its own, started by the first call.

    With `batch`, each batch of calls runs inside `batch()`, and is answered once it is left;
    when entering or leaving it raises, every call of the batch that did not raise itself
    gets that exception (what they wrote cannot be counted on)."""

    def __init__(self, name: str,
                 batch: Callable[[], AbstractContextManager[object]] | None = None) -> None:
        self.name = name
        self._batch = batch or contextlib.nullcontext
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the two fields below, and the queue's last item
        self._thread: threading.Thread | None = None
        self._closed = False

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in the worker's thread: its answer, or what it raised. `WorkerClosed`
        once the worker is closed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise WorkerClosed(f"{self.name} is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put(_Call(lambda: work(*args), future, loop))
        return await future

    def close(self) -> None:
        """Run every call asked for so far, then stop the thread and wait for it (so: from
        outside the event loop, or at shutdown once nothing is in flight)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)  # after every call: the thread stops there
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _serve(self) -> None:
        """The worker's thread: take every call queued, run them in order, answer them."""
        while True:
            batch = [self._queue.get()]  # waits for the next call
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            ran = self._run(batch)
            settled: dict[asyncio.AbstractEventLoop, list[tuple[_Call, Any, bool]]] = {}
            for call, outcome, failed in ran:
                settled.setdefault(call.loop, []).append((call, outcome, failed))
            for loop, answers in settled.items():
                try:
                    loop.call_soon_threadsafe(_settle, answers)
                except RuntimeError:  # that loop is closed: nobody waits any more
                    pass
            if None in batch:
                return

    def _run(self, batch: list[_Call | None]) -> list[tuple[_Call, Any, bool]]:
        """Run the batch's calls in order, inside the worker's `batch` context: each call's
        (call, outcome, failed)."""
        calls = [call for call in batch if call is not None]  # None: closed, it came last
        ran: list[tuple[_Call, Any, bool]] = []
        if not calls:
            return ran
        try:
            with self._batch():
                for call in calls:
                    try:
                        ran.append((call, call.work(), False))
                    except BaseException as exc:  # the caller gets it, the worker goes on
                        ran.append((call, exc, True))
        except BaseException as exc:  # the batch's context failed: no call's answer holds
            raised = {id(call): outcome for call, outcome, failed in ran if failed}
            return [(call, raised.get(id(call), exc), True) for call in calls]
        return ran


def _settle(answers: list[tuple[_Call, Any, bool]]) -> None:
    """In the caller's loop: hand each call its answer (unless its caller gave up)."""
    for call, outcome, failed in answers:
        if call.future.done():
            continue
        if failed:
            call.future.set_exception(outcome)
        else:
            call.future.set_result(outcome)
