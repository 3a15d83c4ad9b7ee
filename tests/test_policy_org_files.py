"""An organisation's policy files, named in the config, as the CLI and the gateway read them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import App
from gateway.cli import main
from policies.model import Category, Snapshot
from policies.recipients import classify_recipient


def _config(tmp_path: Path, policy_text: str) -> Path:
    (tmp_path / "org-policy.toml").write_text(policy_text, encoding="utf-8")
    config = tmp_path / "casegate.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[policy]\nfiles = ["org-policy.toml"]\n',
                      encoding="utf-8")
    return config


def test_org_file_named_in_the_config_extends_the_secure_list(tmp_path: Path) -> None:
    """A secure suffix added by the organisation's file makes its addresses secure."""
    config = _config(tmp_path, '[domains]\nsecure_suffixes = { extend = ["hscni.net"] }\n')
    app = App.open(config_path=config, data_dir=None)
    try:
        recipient = classify_recipient("sw@belfast.hscni.net", app.policy,
                                       Snapshot(now=app.snapshot().now), "jo@cafcass.gov.uk")
        assert app.policy.sources[-1] == str(tmp_path / "org-policy.toml")
    finally:
        app.close()
    assert recipient.category is Category.SECURE


def test_bad_org_file_stops_the_cli_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistake in the organisation's file is exit 2 with the file, the key and the problem."""
    config = _config(tmp_path, '[rules.fax]\nsentence = "No fax."\ngrade = "urgent"\n')
    code = main(["verify", "list", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{tmp_path / 'org-policy.toml'}: 'rules.fax.grade' must be one of low, medium, high" \
        in err


def test_missing_org_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A policy file the config names but that does not exist is a clear error."""
    config = _config(tmp_path, "")
    (tmp_path / "org-policy.toml").unlink()
    assert main(["staff", "list", "--config", str(config)]) == 2
    assert "org-policy.toml: policy file cannot be read" in capsys.readouterr().err
