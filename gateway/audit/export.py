"""Audit events and checkpoints in the shapes that leave the box: JSON lines, CSV, a text table
and a signed checkpoint document that can be verified elsewhere with the public key alone.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from gateway.audit import keys as auditkeys
from gateway.audit.store import Checkpoint, StoredEvent

CSV_COLUMNS = (
    "seq", "time", "kind", "grade", "rule", "citation", "sender", "recipients",
    "recipient_domains", "case_numbers", "decision_id", "metadata", "node",
)
CHECKPOINT_FORMAT = "casegate-audit-checkpoint/1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def json_line(event: StoredEvent) -> str:
    """One event as one line of JSON (control characters escaped by JSON itself)."""
    return json.dumps(event.as_dict(), sort_keys=True, ensure_ascii=False)


def _csv_cell(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a leading =, +, -, @ becomes text."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_values(event: StoredEvent) -> list[str]:
    d = event.as_dict()
    values: list[str] = []
    for column in CSV_COLUMNS:
        value = d[column]
        if isinstance(value, list):
            text = ";".join(value)
        elif isinstance(value, dict):
            text = json.dumps(value, sort_keys=True, ensure_ascii=False)
        else:
            text = str(value)
        values.append(_csv_cell(text))
    return values


def csv_chunks(events: Iterable[StoredEvent], *, batch: int = 500) -> Iterator[str]:
    """A CSV document (header first), yielded in pieces so a large export streams."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for count, event in enumerate(events, start=1):
        writer.writerow(csv_values(event))
        if count % batch == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def printable(value: str) -> str:
    """A value safe to show on a terminal: control characters shown as escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def table(events: Iterable[StoredEvent]) -> str:
    """A plain text table for `casegate audit list` (a NODE column when an event names the
    node that wrote it)."""
    shown = list(events)
    nodes = any(e.node for e in shown)
    header = ("SEQ", "TIME (UTC)", "KIND", "GRADE", "RULE", "SENDER", "RECIPIENTS", "CASES",
              *(("NODE",) if nodes else ()))
    rows = [header]
    for e in shown:
        rows.append(
            (
                str(e.seq),
                e.time[:19].replace("T", " "),
                e.kind,
                e.grade,
                e.rule or "-",
                e.sender or "-",
                ", ".join(e.recipients) or "-",
                ", ".join(e.case_numbers) or "-",
                *((e.node or "-",) if nodes else ()),
            )
        )
    safe = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in safe) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in safe
    )


def checkpoint_document(checkpoint: Checkpoint, public_pem: str) -> dict[str, Any]:
    """The exported form: the signed statement, its signature and the signer's public key."""
    return {
        "format": CHECKPOINT_FORMAT,
        "seq": checkpoint.seq,
        "time": checkpoint.time,
        "mac": checkpoint.mac.hex(),
        "key_id": checkpoint.key_id,
        "signature": base64.b64encode(checkpoint.signature).decode("ascii"),
        "public_key": public_pem,
    }


class CheckpointError(ValueError):
    """An exported checkpoint is malformed or its signature does not verify."""


def read_checkpoint_document(document: Any, public_pem: str) -> Checkpoint:
    """Parse an exported checkpoint and verify it with `public_pem` (held independently).

    Raises `CheckpointError` with a plain sentence when it is malformed, signed by another key
    or altered.
    """
    try:
        if document.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("this is not a casegate audit checkpoint")
        checkpoint = Checkpoint(
            seq=int(document["seq"]),
            time=str(document["time"]),
            mac=bytes.fromhex(document["mac"]),
            key_id=str(document["key_id"]),
            signature=base64.b64decode(document["signature"], validate=True),
        )
        public = auditkeys.load_public_pem(public_pem)
    except CheckpointError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError):
        raise CheckpointError("the checkpoint or the public key is malformed") from None
    if checkpoint.key_id != auditkeys.key_id(public):
        raise CheckpointError("the checkpoint was signed by a different key")
    if not auditkeys.signature_valid(public, checkpoint.signature, checkpoint.statement()):
        raise CheckpointError("the checkpoint's signature does not verify: it was altered")
    return checkpoint
