"""Classifier processes: the policy's reading of a message on the machine's other cores
(issue 14).

The gateway is one Python process. Its event loop and the worker thread that evaluates the
policy share one interpreter lock, so the gateway uses one core however many the machine has,
and a message whose classification is long (a table of digits, with a case registry to match)
holds up every other connection while it runs. With `[policy] classifier_processes` set,
`Classifiers` keeps that many processes beside the gateway. Each message between
`classifier_min_bytes` and `classifier_max_bytes` is sent to one of them, which runs
`policies.content.classify_message` on it: the code the gateway's own classification,
`casegate check` and replay run. The answer is the message's `MessageFacts`, and the gateway
decides from them (`policies.engine.decide`) as from its own classification. Smaller messages
are classified in the gateway process: a copy to another process costs more than they do.
Larger ones are too: the copy would be one more copy of the message in memory.

What a process reads:
- **The policy**: built again from the very documents the gateway's was built from
  (`Policy.documents`, passed when the processes start; no file is read again). The policy does
  not change while the gateway runs. (Its content rules pickled would not do: the scan engine
  knows its patterns by identity, and unpickled copies of them fell back to the pure-Python
  search, at half the speed on a digit-heavy table.)
- **The case registry**: opened by the process itself in the data directory (or on the
  PostgreSQL server), with the gateway's own code (`gateway.app.open_cases`). Before each
  message it asks the store whether anything was written since it built its index
  (`CaseStore.index`: one `PRAGMA data_version` read on SQLite). So it never matches against an
  older registry than the gateway's own index would be. The gateway decides with the snapshot
  it would have used for its own classification (verified recipients, shields: the SMTP
  transaction's while it is at most a second old, `TransactionSnapshot`, else read then).

How they talk: each process is `python -m gateway.stages.classifiers`, started by the
gateway with pipes for its standard input and output (nothing inherited but the environment
and standard error, where its log and any traceback go). Frames both ways are an 8-byte length
and that many bytes: first the start (the pickled policy documents, config and where the
registry is) and its answer; then a message's bytes as they are, answered by its pickled
`MessageFacts` (or the error raised). The gateway reads and writes them on its event loop, with
no thread of its own: `concurrent.futures.ProcessPoolExecutor` took 0.3 ms of the gateway's CPU
a call in isolation and 1.1 ms more a message under load (its feeder and manager threads, and
the interpreter lock they take), against 0.1 ms for these pipes (scratch `ipc.py`, 100 KB).

Failure, always a 451 for the message (fail closed: the client keeps it and sends it again),
never a lost or doubled one:
- A process that dies (killed, out of memory, a crash in a native reader) fails the message it
  was reading (or, dead between messages, the next one it is given), and another process is
  started in its place. In the gateway process, the same crash would stop the gateway.
- A process that has not answered after `HARD_SECONDS` beyond the policy's time for a message
  (`[content.limits] message_seconds`, which the classification keeps to itself) is stuck: it is
  killed and replaced. A thread cannot be stopped so.
- A process that cannot start stops the gateway's start (StartupError, with its reason). One
  that cannot start later, in place of another, is logged; while none is running, each message
  gets its 451 and has another start tried, and the gateway is not ready (/readyz).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import structlog

import gateway
from gateway.app import App, open_cases, open_database, settle_heap
from gateway.config import Config, StartupError
from policies import content
from policies.loader import parse_policy
from policies.model import MessageFacts

log = structlog.get_logger("casegate.classifiers")

HARD_SECONDS = 60.0  # beyond the policy's message_seconds: a process this late is stuck
START_SECONDS = 300.0  # for a process to read the policy and index the registry
_LENGTH = struct.Struct("<Q")
_ROOT = str(Path(gateway.__file__).resolve().parents[1])  # where `gateway` is imported from


class ClassifierUnavailable(RuntimeError):
    """No classifier process could read the message: try again later (451)."""


class Classifiers:
    """`processes` classifier processes for the gateway `app` (see the module docstring)."""

    def __init__(self, app: App, processes: int, min_bytes: int, max_bytes: int) -> None:
        if processes < 1:
            raise ValueError("at least one classifier process")
        self.processes = processes
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        # What each process starts from: the documents of the gateway's policy, its config,
        # and where the registry is (the URL the gateway uses, "" for SQLite in the data
        # directory).
        self._start = pickle.dumps((app.policy.documents, app.config, str(app.data_dir),
                                    app.database.url))
        # A process that has not answered a message after this long is stuck.
        self.stuck_seconds = app.policy.content.limits.message_seconds + HARD_SECONDS
        # Processes ready for a message; None wakes a waiting message when none could start.
        self._idle: asyncio.Queue[_Process | None] = asyncio.Queue()
        self._waiting = 0  # messages waiting for an idle process
        self._all: set[_Process] = set()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False

    def takes(self, raw: bytes) -> bool:
        """Whether a message of this size is classified in a process of its own."""
        return self.min_bytes <= len(raw) <= self.max_bytes

    async def start(self) -> None:
        """Start the processes and wait until each has read the policy and indexed the
        registry, so that no message waits for that. One that cannot is a StartupError."""
        began = time.monotonic()
        started = await asyncio.gather(*(self._spawn() for _ in range(self.processes)),
                                       return_exceptions=True)
        failed = [result for result in started if isinstance(result, BaseException)]
        if failed:
            await self.close()
            raise failed[0]
        for process in started:
            assert isinstance(process, _Process)
            self._idle.put_nowait(process)
        log.info("classifier-processes-started", processes=self.processes,
                 seconds=round(time.monotonic() - began, 1))

    def pids(self) -> list[int]:
        """The processes' ids (for an operator, or a test that kills one)."""
        return sorted(process.pid for process in self._all)

    async def _spawn(self) -> _Process:
        process = await _Process.start(self._start)
        self._all.add(process)
        return process

    async def classify(self, raw: bytes) -> MessageFacts:
        """The message's facts, read in the next idle process (waiting for one).
        ClassifierUnavailable when that process died or got stuck meanwhile (another is
        started in its place), or when none is running (one is started for the next
        message)."""
        if self._closed:
            raise ClassifierUnavailable("the classifier processes are stopped")
        if not self._all and not self._starting:  # every restart failed: try once more
            self._start_another()
            raise ClassifierUnavailable("no classifier process is running; try again later")
        self._waiting += 1
        try:
            process = await self._idle.get()
        finally:
            self._waiting -= 1
        if process is None:
            raise ClassifierUnavailable("no classifier process could be started; try again "
                                        "later")
        # Shielded: a caller that goes away (its client left) does not leave a process with
        # an answer nobody reads, which the next message would be given.
        return await asyncio.shield(self._read(process, raw))

    async def _read(self, process: _Process, raw: bytes) -> MessageFacts:
        try:
            answer = await asyncio.wait_for(process.call(raw), self.stuck_seconds)
        except Exception as exc:  # where the process stands in the exchange is unknown now
            why = "got stuck" if isinstance(exc, TimeoutError) else "died"
            log.error("classifier-process-failed", pid=process.pid, why=why, size=len(raw),
                      returncode=process.returncode, error=type(exc).__name__)
            self._replace(process)
            raise ClassifierUnavailable(f"a classifier process {why} while it read the "
                                        "message; try again later") from None
        self._idle.put_nowait(process)
        if isinstance(answer, BaseException):
            raise answer
        if not isinstance(answer, MessageFacts):
            raise ClassifierUnavailable(f"a classifier process answered {type(answer)}")
        return answer

    def _replace(self, process: _Process) -> None:
        """Kill a process that failed, and start another in its place (in the background)."""
        self._all.discard(process)
        process.kill()
        self._start_another()

    def _start_another(self) -> None:
        if self._closed:
            return

        async def again() -> None:
            try:
                self._idle.put_nowait(await self._spawn())
            except Exception as exc:  # the log says why; the next message tries again
                log.error("classifier-process-not-restarted", reason=str(exc))
                if not self._all:  # nothing will serve the messages waiting: a 451 each
                    for _ in range(self._waiting):
                        self._idle.put_nowait(None)

        task = asyncio.ensure_future(again())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def settled(self) -> None:
        """Wait until no process is being started in the background (after a failure)."""
        while self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)

    async def close(self) -> None:
        """Stop the processes (a message being read is answered first)."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        await asyncio.gather(*(process.stop() for process in list(self._all)),
                             return_exceptions=True)
        self._all.clear()


class _Process:
    """One classifier process and its two pipes. One call at a time: `Classifiers` hands a
    process to one message at a time (its idle queue), and starts it before that."""

    def __init__(self, child: asyncio.subprocess.Process) -> None:
        self.child = child
        self.pid = child.pid

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    @classmethod
    async def start(cls, start: bytes) -> _Process:
        """Start one and send it `start`; StartupError unless it answers that it is ready."""
        paths = os.environ.get("PYTHONPATH", "")
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.stages.classifiers",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _ROOT + (os.pathsep + paths if paths else "")})
        process = cls(child)
        try:
            answer = await asyncio.wait_for(process.call(start), START_SECONDS)
        except TimeoutError:
            answer = f"no answer in {START_SECONDS:.0f} s"
        except (OSError, EOFError, asyncio.IncompleteReadError):
            answer = None
        except BaseException:  # cancelled (the gateway stops): no process is left behind
            process.kill()
            await asyncio.shield(child.wait())
            raise
        if answer != ("ready", child.pid):
            process.kill()
            await child.wait()
            reason = (str(answer) if isinstance(answer, BaseException | str)
                      else f"it exited ({child.returncode}); see its output above")
            raise StartupError(f"a classifier process could not start: {reason}; set "
                               "[policy] classifier_processes = 0 to classify in the gateway "
                               "process")
        return process

    async def call(self, data: bytes) -> object:
        """Send one frame, and read and unpickle the one answering it."""
        stdin, stdout = self.child.stdin, self.child.stdout
        assert stdin is not None and stdout is not None
        stdin.write(_LENGTH.pack(len(data)))
        stdin.write(data)  # (writelines would join the two: a copy of the message)
        await stdin.drain()
        size = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))[0]
        return pickle.loads(await stdout.readexactly(size))  # noqa: S301 - our own child

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.child.kill()

    async def stop(self) -> None:
        """End of input: the process exits once it has answered (killed if it does not)."""
        if self.child.stdin is not None:
            self.child.stdin.close()
        try:
            await asyncio.wait_for(self.child.wait(), HARD_SECONDS)
        except TimeoutError:
            self.kill()
            await self.child.wait()


# --- in each classifier process ----------------------------------------------------------------


def serve(frames_in: BinaryIO, frames_out: BinaryIO) -> None:
    """A classifier process: the start frame, then one message after another until the end
    of input."""
    start = _read_frame(frames_in)
    if start is None:
        return
    try:
        classify = _started(*pickle.loads(start))  # noqa: S301 - from the gateway that started it
    except Exception as exc:  # its reason goes back to the gateway, which stops its start
        _write_frame(frames_out, RuntimeError(str(exc)))
        return
    _write_frame(frames_out, ("ready", os.getpid()))
    while (raw := _read_frame(frames_in)) is not None:
        try:
            answer: object = classify(raw)
        except Exception as exc:  # the gateway answers 451 for it, as for its own errors
            answer = RuntimeError(f"{type(exc).__name__}: {exc}")
        del raw
        _write_frame(frames_out, answer)


def _started(documents: tuple[tuple[str, str], ...], config: Config, data_dir: str,
             database_url: str) -> Callable[[bytes], MessageFacts]:
    """The policy's content rules, the registry and its index, the scan engine's databases;
    then what start-up built is moved out of the garbage collector's way (`settle_heap`, as
    the gateway does). Returns what reads one message."""
    rules = parse_policy(documents).content
    content.warm(rules)
    cases = open_cases(open_database(config, Path(data_dir), database_url))
    cases.index()
    settle_heap()

    def classify(raw: bytes) -> MessageFacts:
        return content.classify_message(raw, rules, time.monotonic, cases.index())

    return classify


def _read_frame(stream: BinaryIO) -> bytes | None:
    """One frame, or None at the end of input."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    return data if len(data) == size else None


def _write_frame(stream: BinaryIO, answer: Any) -> None:
    data = pickle.dumps(answer)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def main() -> None:
    """`python -m gateway.stages.classifiers`, started by the gateway: frames on the standard
    input and output. Anything else that would be written to the standard output (a log line)
    goes to the standard error, so that it cannot corrupt a frame."""
    # The gateway stops its processes itself, by closing their input once the messages they
    # read are answered (a service manager's SIGTERM may reach the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, frames_out)


if __name__ == "__main__":
    main()
