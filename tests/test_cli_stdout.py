"""A command's stdout holds only its own output: log lines go to stderr, so `--json` parses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.dnsstub import DnsStub
from tests.verifykit import config_text

STAFF = "jo.bloggs@cafcass.gov.uk"


async def test_verify_request_json_is_all_that_stdout_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`verify request --json` into the outbox prints one JSON object; its log line is on stderr."""
    async with DnsStub() as stub:
        stub.add("example.org", "MX", "10 mx.example.org.")
        config = tmp_path / "casegate.toml"
        config.write_text("\n".join(config_text(None, stub)) + "\n", encoding="utf-8")
        code = await asyncio.to_thread(main, [
            "verify", "request", "jane.doe@example.org", "--case", "ZC12C00123",
            "--name", "Jane Doe", "--role", "party", "--by", STAFF, "--json",
            "--config", str(config), "--data", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    assert code == 0
    result = json.loads(out)
    assert result["outcome"] == "sent" and len(result["code"]) == 6
    assert "outbox.copy" in err
    assert len(list((tmp_path / "data" / "outbox" / "new").iterdir())) == 1
