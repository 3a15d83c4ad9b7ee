"""Disk work on the event loop's thread, seen as it happens: SQLite statements and file opens.

    with loopio.arming():                  # connections opened from now on are traced
        ... open the stores, start the gateway ...
        with loopio.watching() as seen:    # this thread is the loop's thread
            ... serve requests ...
    assert not seen, loopio.report(seen)

Nothing of ours is patched. An audit hook (`sys.addaudithook`, installed once per process and a
no-op unless armed) sees every file opened ("open", also raised by `os.open`), every directory
listed or file renamed or removed, every SQLite connection made ("sqlite3.connect"), and every
connection handed back ("sqlite3.connect/handle"). That event comes before the connection is
ready, so the connection waits until the hook runs again (or watching starts), then gets a trace
callback, which SQLite calls in the executing thread for each statement it runs. Whatever
happens on the watched thread is noted with the stack that did it; so is whatever another thread
does while the watched thread is blocked waiting for it (a synchronous call that hands the work to
a writer thread and waits still holds up the loop). Imports are left out: the first import of a
module reads its file once, which is not the serving path this is about.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Audit events that touch the file system (besides SQLite, traced per statement).
FILE_EVENTS = frozenset({
    "open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.remove", "os.rmdir",
    "os.chmod", "os.truncate", "os.utime", "os.link", "os.symlink", "shutil.copyfile",
    "shutil.move", "shutil.rmtree", "tempfile.mkstemp", "tempfile.mkdtemp", "glob.glob",
})
OUR_CODE = tuple(str(ROOT / name) for name in ("gateway", "transports", "verification",
                                               "policies"))


@dataclass(frozen=True)
class Touch:
    """One piece of disk work that held up the watched thread: what, and the watched thread's
    stack (innermost last)."""

    what: str
    detail: str
    stack: tuple[str, ...]

    def where(self, depth: int = 1) -> str:
        """The innermost `depth` frames of our own code (else the innermost frame), outermost
        first."""
        ours = [f for f in self.stack if f.startswith(OUR_CODE)] or list(self.stack[-1:])
        return " < ".join(f.replace(str(ROOT) + "/", "") for f in reversed(ours[-depth:]))


@dataclass
class _State:
    armed: int = 0
    thread: int | None = None  # the watched thread, while watching
    seen: list[Touch] = field(default_factory=list)
    # connections made while armed, not yet traced (Connection cannot be weakly referenced)
    pending: list[sqlite3.Connection] = field(default_factory=list)
    busy: threading.local = field(default_factory=threading.local)  # no re-entry


_state = _State()
_CONDITION_WAIT = threading.Condition.wait.__code__
_THREAD_START = threading.Thread.start.__code__
_installed = False


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    frames: list[str] = []
    while frame is not None:
        code = frame.f_code
        frames.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    return tuple(reversed(frames))


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _note(what: str, detail: str) -> None:
    """Record disk work done on the watched thread, or done elsewhere while the watched thread
    blocks waiting (on a lock's condition, an event, a future): either way the loop stands
    still. Work inside an import is left out."""
    state = _state
    if state.thread is None or getattr(state.busy, "on", False):
        return
    state.busy.on = True
    try:
        frame = sys._getframe(2)
        if _importing(frame):
            return
        if state.thread == threading.get_ident():
            state.seen.append(Touch(what, detail, _stack(frame)))
            return
        watched = sys._current_frames().get(state.thread)
        if _blocked(watched):
            state.seen.append(Touch(f"waited for {what}", detail, _stack(watched)))
    finally:
        state.busy.on = False


def _blocked(frame: FrameType | None) -> bool:
    """Whether a thread stopped in `frame` waits for another thread: a `Condition.wait` (under
    `Event.wait`, `Future.result`, `Queue.get`, ...) with no timeout or a positive one, other
    than `Thread.start` waiting for a new worker thread to begin (while an older worker, not
    waited for, may be busy)."""
    if frame is None or frame.f_code is not _CONDITION_WAIT:
        return False
    timeout = frame.f_locals.get("timeout")
    if timeout is not None and timeout <= 0:
        return False
    while frame is not None:
        if frame.f_code is _THREAD_START:
            return False
        frame = frame.f_back
    return True


def _statement(sql: str) -> None:
    """The trace callback of every armed connection."""
    if _state.thread is not None:
        _note("sqlite", " ".join(sql.split())[:120])


def _trace_pending() -> None:
    """Give the pending connections their trace callback, where that can be done now."""
    waiting: list[sqlite3.Connection] = []
    for connection in _state.pending:
        try:
            connection.set_trace_callback(_statement)
        except sqlite3.ProgrammingError as exc:
            if "closed" not in str(exc):  # not initialised yet, or another thread's
                waiting.append(connection)
    _state.pending = waiting


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _state.armed:
        return
    if _state.pending:
        _trace_pending()
    if event == "sqlite3.connect/handle" and isinstance(args[0], sqlite3.Connection):
        _state.pending.append(args[0])
    elif _state.thread is not None and (event in FILE_EVENTS or event == "sqlite3.connect"):
        _note(event, str(args[0])[:200] if args else "")


@contextmanager
def arming() -> Iterator[None]:
    """Trace every SQLite connection opened inside (the stores the test is about to open)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)  # cannot be removed: it does nothing unless armed
        _installed = True
    _state.armed += 1
    try:
        yield
    finally:
        _state.armed -= 1
        if not _state.armed:
            _state.pending = []


@contextmanager
def watching() -> Iterator[list[Touch]]:
    """Note disk work on this thread (the event loop's) until the block ends."""
    if not _state.armed:
        raise RuntimeError("watching() needs arming() around the stores' opening")
    _trace_pending()
    seen: list[Touch] = []
    _state.seen = seen
    _state.thread = threading.get_ident()
    try:
        yield seen
    finally:
        _state.thread = None


def report(seen: list[Touch]) -> str:
    """One line per distinct place (our innermost frame), with what it did and how often."""
    counts: dict[tuple[str, str], int] = {}
    for touch in seen:
        depth = 3 if touch.what.startswith("waited") else 1
        key = (touch.where(depth), f"{touch.what}: {touch.detail}")
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{where}  {what}  (x{n})" for (where, what), n in sorted(counts.items())]
    return "disk work on the event loop's thread:\n" + "\n".join(lines)
