"""Signed, expiring link tokens and out-of-band codes for recipient verification.

A link token is `<id>.<expiry>.<mac>`: a random id (the request's `token_id`), the expiry as Unix
seconds, and an HMAC-SHA256 of both under the key in `verification.key` (32 random bytes in the
data directory, mode 0600). Nobody without the key can make or alter one; the expiry is checked
against the clock the caller passes in. A token is single use because the request it names
stops being pending once answered (`verification.registry`), which the workflow checks.

The out-of-band code is six digits from `secrets`; only its HMAC (bound to the token id) is
stored, and a code is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

KEY_FILE = "verification.key"
KEY_BYTES = 32
CODE_DIGITS = 6
MAX_TOKEN_LENGTH = 200
_TOKEN = re.compile(r"^([A-Za-z0-9_-]{16,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class KeyFileError(RuntimeError):
    """The key file exists but cannot be used (wrong size, or readable by others)."""


class TokenStatus(StrEnum):
    VALID = "valid"
    TAMPERED = "tampered"  # not ours: bad shape or bad signature
    EXPIRED = "expired"


@dataclass(frozen=True)
class TokenCheck:
    """What a presented token turned out to be; `token_id` is set only when VALID or EXPIRED."""

    status: TokenStatus
    token_id: str = ""


@dataclass(frozen=True)
class IssuedLink:
    token: str  # goes into the link
    token_id: str  # goes into the registry


def load_or_create_key(data_dir: Path) -> bytes:
    """The key in `data_dir`, created (O_EXCL, mode 0600) on first use."""
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
    if path.stat().st_mode & 0o077:
        raise KeyFileError(f"{path}: must be readable by its owner only (chmod 600)")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{path}: must hold exactly {KEY_BYTES} bytes")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class LinkSigner:
    """Issues and checks link tokens and code digests under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the verification key must be at least 16 bytes")
        self._key = key

    def _mac(self, purpose: str, message: str) -> str:
        data = f"{purpose}\x00{message}".encode()
        return _b64(hmac.new(self._key, data, hashlib.sha256).digest())

    def issue(self, expires_at: datetime) -> IssuedLink:
        token_id = secrets.token_urlsafe(18)
        body = f"{token_id}.{int(expires_at.timestamp())}"
        return IssuedLink(token=f"{body}.{self._mac('link', body)}", token_id=token_id)

    def check(self, token: str, now: datetime) -> TokenCheck:
        """Whether `token` is ours and unexpired at `now` (constant-time signature check)."""
        match = _TOKEN.fullmatch(token) if len(token) <= MAX_TOKEN_LENGTH else None
        if match is None:
            return TokenCheck(TokenStatus.TAMPERED)
        token_id, expiry, mac = match.groups()
        if not hmac.compare_digest(mac, self._mac("link", f"{token_id}.{expiry}")):
            return TokenCheck(TokenStatus.TAMPERED)
        if datetime.fromtimestamp(int(expiry), UTC) <= now:
            return TokenCheck(TokenStatus.EXPIRED, token_id)
        return TokenCheck(TokenStatus.VALID, token_id)

    @staticmethod
    def new_code() -> str:
        """A fresh out-of-band code: six digits from a CSPRNG."""
        return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"

    def code_digest(self, token_id: str, code: str) -> str:
        """What the registry stores instead of the code: an HMAC bound to the token id."""
        return self._mac("code", f"{token_id}.{code.strip()}")

    def code_matches(self, token_id: str, code: str, digest: str) -> bool:
        """Whether `code` is the request's code, compared in constant time."""
        given = code.strip()[:32]
        return hmac.compare_digest(self.code_digest(token_id, given), digest)
