"""The Maildir outbox: what would have been sent, filed atomically, once, with its envelope."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from transports.base import Copy, Outcome
from transports.database import Database
from transports.ledger import Ledger
from transports.outbox import ENVELOPE_FROM, ENVELOPE_TO, MaildirOutbox

SENDER = "jane.smith@cafcass.gov.uk"
DATA = b"From: jane.smith@cafcass.gov.uk\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(Database.open(tmp_path), "ledger.sqlite3")
    yield book
    book.close()


def files(outbox: Path) -> list[Path]:
    return sorted((outbox / "new").iterdir())


async def test_files_each_copy_with_its_envelope(tmp_path: Path, ledger: Ledger) -> None:
    """Each copy becomes one file in new/, starting with envelope headers, then the bytes."""
    box = MaildirOutbox(tmp_path / "outbox", ledger)
    copies = [Copy("d1:0", SENDER, ("a@example.org", "b@example.org"), DATA),
              Copy("d1:1", SENDER, ("c@example.org",), DATA)]
    result = await box.deliver(copies)
    assert result.ok and result.accepted == ("a@example.org", "b@example.org", "c@example.org")
    written = files(tmp_path / "outbox")
    assert len(written) == 2 and list((tmp_path / "outbox" / "tmp").iterdir()) == []
    contents = sorted(p.read_bytes() for p in written)
    assert all(c.endswith(DATA) for c in contents)
    parsed = [email.message_from_bytes(c, policy=email.policy.default) for c in contents]
    assert {m[ENVELOPE_FROM] for m in parsed} == {f"<{SENDER}>"}
    assert sorted(m[ENVELOPE_TO] for m in parsed) == [
        "<a@example.org>, <b@example.org>", "<c@example.org>"]
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in written)


async def test_retry_does_not_file_twice(tmp_path: Path, ledger: Ledger) -> None:
    """Delivering the same copies again (a client's retry) writes nothing new."""
    box = MaildirOutbox(tmp_path / "outbox", ledger)
    copies = [Copy("d1:0", SENDER, ("a@example.org",), DATA)]
    first = await box.deliver(copies)
    second = await box.deliver(copies)
    assert first.ok and second.ok and second.accepted == ("a@example.org",)
    assert len(files(tmp_path / "outbox")) == 1


async def test_nothing_is_filed_before_ready_and_nothing_when_it_fails(tmp_path: Path,
                                                                        ledger: Ledger) -> None:
    outbox = MaildirOutbox(tmp_path / "outbox", ledger)
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("the audit trail cannot be written"))
    result = await outbox.deliver([Copy("d1:0", SENDER, ("a@example.org",), DATA)], failed)
    assert result.outcome is Outcome.TEMPORARY and not (tmp_path / "outbox").exists()
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(ready.set_result, None)
    result = await outbox.deliver([Copy("d1:0", SENDER, ("a@example.org",), DATA)], ready)
    assert result.ok and len(files(tmp_path / "outbox")) == 1


async def test_unwritable_directory_is_temporary(tmp_path: Path, ledger: Ledger) -> None:
    """An outbox that cannot be written is TEMPORARY, and nothing is recorded as accepted."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    box = MaildirOutbox(blocker / "outbox", ledger)
    result = await box.deliver([Copy("d1:0", SENDER, ("a@example.org",), DATA)])
    assert result.outcome is Outcome.TEMPORARY and "outbox" in result.detail
    assert ledger.accepted("d1:0") == set()


@pytest.mark.parametrize("data", [b"Subject: s\n\nbare LF\n", b"Subject: s\r\n\r\nnul\x00\r\n"])
async def test_unsafe_data_is_not_filed(tmp_path: Path, ledger: Ledger, data: bytes) -> None:
    """The outbox applies the relay's checks: bare LF or NUL is refused, nothing written."""
    box = MaildirOutbox(tmp_path / "outbox", ledger)
    result = await box.deliver([Copy("d1:0", SENDER, ("a@example.org",), data)])
    assert result.outcome is Outcome.PERMANENT
    assert not (tmp_path / "outbox").exists()


async def test_header_injection_through_envelope_is_refused(tmp_path: Path, ledger: Ledger) -> None:
    """A recipient with a line break cannot add headers to the filed copy."""
    box = MaildirOutbox(tmp_path / "outbox", ledger)
    evil = "a@example.org>\r\nBcc: <x@evil.example"
    result = await box.deliver([Copy("d1:0", SENDER, (evil,), DATA)])
    assert result.outcome is Outcome.PERMANENT and not (tmp_path / "outbox").exists()


async def test_default_ledger_beside_the_maildir(tmp_path: Path) -> None:
    """With no ledger given, the outbox keeps its own beside the Maildir and still files once."""
    box = MaildirOutbox(tmp_path / "outbox")
    copies = [Copy("d1:0", SENDER, ("a@example.org",), DATA)]
    first = await box.deliver(copies)
    second = await box.deliver(copies)
    await box.close()
    assert first.ok and second.ok
    assert len(files(tmp_path / "outbox")) == 1
    assert (tmp_path / "outbox-ledger.sqlite3").exists()


async def test_default_ledger_unopenable_is_temporary(tmp_path: Path) -> None:
    """When the outbox's own ledger cannot be opened, delivery is TEMPORARY."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    box = MaildirOutbox(blocker / "outbox")
    result = await box.deliver([Copy("d1:0", SENDER, ("a@example.org",), DATA)])
    await box.close()
    assert result.outcome is Outcome.TEMPORARY
