"""Log lines: one JSON shape for every line `serve` writes, errors described without content,
and one canonical line per message.

The SMTP front binds what is known of a message to structlog's context variables as it learns
it (`bind_message`: the sender at MAIL; the recipient count, decision id and actions when they
are known) and writes one `message` line when the reply goes out (`message_done`), with the reply
code and the time taken. Every other line written meanwhile (a relay error, say) carries the same
fields, so one message's lines can be found together; none ever holds a subject or a body.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import Any, TextIO, cast

import structlog

LOG_TIME_KEY = "time"  # the same key as audit events' time (gateway.audit.trail)
_MESSAGE_KEYS = ("sender", "peer", "recipients", "size", "decision_id", "actions")

log = structlog.get_logger("casegate.smtp")


class _Stdout:
    """Whatever sys.stdout is at the time (pytest and daemons replace it), one whole write at a
    time. Log lines come from the event loop's thread and audit lines from the audit writer's
    thread; with a lock around each write, and each line (or batch of lines) written in one
    call, no line is ever split by another (two JSON objects on one line break a SIEM that
    reads line by line)."""

    _lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            written = sys.stdout.write(text)
            sys.stdout.flush()
            return written

    def flush(self) -> None:
        """Every write is flushed already."""


# Every JSON line `casegate serve` writes to stdout goes through this (the audit trail's too).
STDOUT = cast(TextIO, _Stdout())


def describe_error(exc: BaseException) -> dict[str, str]:
    """Where an error happened, for the log, without its message (which may quote content)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return {"error": exc.__class__.__name__, "where": where}


def begin_message(sender: str, peer: str) -> None:
    """A new message (MAIL): forget the last one's fields, bind the sender and the client."""
    structlog.contextvars.unbind_contextvars(*_MESSAGE_KEYS)
    structlog.contextvars.bind_contextvars(sender=sender, peer=peer)


def bind_message(**fields: Any) -> None:
    """What has become known of the current message (recipients, decision id, actions...)."""
    structlog.contextvars.bind_contextvars(**fields)


def message_done(code: int, started: float) -> None:
    """The canonical line of the current message: every field bound, the reply code and the
    milliseconds since `started` (a `time.perf_counter()` reading at MAIL); then the message's
    fields are forgotten."""
    log.info("message", code=code, ms=round((time.perf_counter() - started) * 1000, 1))
    structlog.contextvars.unbind_contextvars(*_MESSAGE_KEYS)


def configure_logging() -> None:
    """One JSON shape for every line on stdout: `time` (UTC, as in audit events), `level`,
    `event`, at level info and above. Our own lines go through structlog; the libraries'
    (aiohttp, asyncio, aiosmtpd's own chatter only when it is an error) through the standard
    library's logging, rendered the same way. Audit events (gateway.audit.trail) carry the same
    two fields."""
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True, key=LOG_TIME_KEY)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=STDOUT),
    )
    handler = logging.StreamHandler(STDOUT)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           stamp],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(sort_keys=True)],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
