"""Link tokens and out-of-band codes: unforgeable, expiring, compared in constant time."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from verification.tokens import (
    KEY_FILE,
    KeyFileError,
    LinkSigner,
    TokenStatus,
    load_or_create_key,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def signer() -> LinkSigner:
    return LinkSigner(b"k" * 32)


def test_a_fresh_token_is_valid_until_it_expires() -> None:
    """A token checks as valid before its expiry and as expired from then on."""
    link = signer().issue(NOW + timedelta(hours=1))
    assert signer().check(link.token, NOW).status is TokenStatus.VALID
    assert signer().check(link.token, NOW).token_id == link.token_id
    late = signer().check(link.token, NOW + timedelta(hours=1))
    assert (late.status, late.token_id) == (TokenStatus.EXPIRED, link.token_id)


@pytest.mark.parametrize("change", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature altered
    lambda t: t.replace(".", ".9", 1),  # expiry pushed later, signature kept
    lambda t: "x" + t,  # id altered
    lambda t: t.split(".")[0],  # truncated
    lambda t: "",
    lambda t: t + "." + "a" * 300,  # oversized
])
def test_a_tampered_token_is_refused(change) -> None:  # type: ignore[no-untyped-def]
    """Any change to a token, or a token signed with another key, is TAMPERED."""
    link = signer().issue(NOW + timedelta(hours=1))
    assert signer().check(change(link.token), NOW).status is TokenStatus.TAMPERED


def test_a_token_signed_with_another_key_is_refused() -> None:
    """A token made by someone without our key does not check."""
    forged = LinkSigner(b"z" * 32).issue(NOW + timedelta(days=9))
    assert signer().check(forged.token, NOW).status is TokenStatus.TAMPERED


def test_codes_are_six_digits_and_only_their_digest_matches() -> None:
    """A code has six digits; only the same code for the same token id matches its digest."""
    s = signer()
    codes = {s.new_code() for _ in range(50)}
    assert all(len(c) == 6 and c.isdigit() for c in codes) and len(codes) > 40
    digest = s.code_digest("token-one", "123456")
    assert "123456" not in digest
    assert s.code_matches("token-one", " 123456 ", digest)
    assert not s.code_matches("token-one", "123457", digest)
    assert not s.code_matches("token-two", "123456", digest)


def test_the_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    """The key is 32 random bytes, owner-only, and the same on every later load."""
    first = load_or_create_key(tmp_path)
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path) == first


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A key that others can read is not used."""
    load_or_create_key(tmp_path)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(tmp_path)
