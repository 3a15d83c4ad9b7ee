"""`casegate.pid` in the data directory: which process serves from it, so that a CLI command
that changed the keys (`casegate keys rotate`) can tell the running gateway to reload them.

`casegate serve` writes its pid there and holds an exclusive lock on the file while it runs;
`running_pid` reports the pid only while that lock is held, so a file left behind by a gateway
that was killed is never mistaken for a running one (and a recycled pid is never signalled).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

PID_FILE = "casegate.pid"


@contextlib.contextmanager
def holding(data_dir: Path) -> Iterator[bool]:
    """Hold the pid file while the block runs; yields False when another process holds it."""
    path = data_dir / PID_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        try:
            yield True
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def running_pid(data_dir: Path) -> int | None:
    """The pid of the gateway serving from `data_dir`, or None when none is running."""
    path = data_dir / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: a gateway runs; its pid is in the file
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
