"""The two secrets of the audit trail, kept in the data directory with mode 0600.

- `audit.key`: 32 random bytes, the HMAC key of the chain.
- `audit-signing.pem`: an Ed25519 private key that signs checkpoints; its public half
  (`public_pem`) is what someone holding an exported checkpoint verifies it with, elsewhere.

Each file is created once, atomically (written aside, then hard-linked into place), so two
processes starting together cannot overwrite or half-read each other's key: the loser reads the
winner's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HMAC_KEY_FILE = "audit.key"
SIGNING_KEY_FILE = "audit-signing.pem"
HMAC_KEY_BYTES = 32


class AuditKeyError(RuntimeError):
    """A key file exists but cannot be used (wrong size, wrong format, readable by others)."""


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` (mode 0600) atomically; False when it already exists.

    The bytes are written to a private temporary file first and then hard-linked into place,
    so another process never sees the key file half-written.
    """
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


def _read_private(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuditKeyError(f"{path}: must be readable by its owner only (chmod 600)")
    return path.read_bytes()


def load_or_create_hmac_key(data_dir: Path) -> tuple[bytes, bool]:
    """The chain key, and whether it was created just now."""
    path = data_dir / HMAC_KEY_FILE
    created = _create_exclusive(path, secrets.token_bytes(HMAC_KEY_BYTES))
    key = _read_private(path)
    if len(key) != HMAC_KEY_BYTES:
        raise AuditKeyError(f"{path}: must hold exactly {HMAC_KEY_BYTES} bytes")
    return key, created


def load_or_create_signing_key(data_dir: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The checkpoint signing key, and whether it was created just now."""
    path = data_dir / SIGNING_KEY_FILE
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    created = _create_exclusive(path, pem)
    try:
        key = serialization.load_pem_private_key(_read_private(path), password=None)
    except ValueError:
        raise AuditKeyError(f"{path}: is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path}: is not an Ed25519 key")
    return key, created


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_pem(text: str) -> Ed25519PublicKey:
    """Parse a public key as `public_pem` writes it; ValueError when it is not one."""
    key = serialization.load_pem_public_key(text.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint naming the signing key: sha256 of the raw public key, base64url."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:16]).decode("ascii").rstrip("=")


def signature_valid(key: Ed25519PublicKey, signature: bytes, statement: bytes) -> bool:
    try:
        key.verify(signature, statement)
    except InvalidSignature:
        return False
    return True
