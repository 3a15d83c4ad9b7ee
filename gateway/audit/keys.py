"""The two secrets of the audit trail, kept in the data directory with mode 0600.

- `audit.key`: 32 random bytes, the HMAC key of the chain.
- `audit-signing.pem`: an Ed25519 private key that signs checkpoints; its public half
  (`public_pem`) is what someone holding an exported checkpoint verifies it with, elsewhere.

Each file is created once, atomically (written aside, then hard-linked into place), so two
processes starting together cannot overwrite or half-read each other's key: the loser reads the
winner's. A key file is made only when the caller says the trail is new (`may_create`): once
anything has been chained or signed, a missing, unreadable or altered key is an `AuditKeyError`
naming the file and saying what to restore, never a fresh key that would make the trail read as
broken. What the keys must match is recorded in `audit.sqlite3` as fingerprints (`fingerprint`,
`key_id`), never the keys themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HMAC_KEY_FILE = "audit.key"
SIGNING_KEY_FILE = "audit-signing.pem"
HMAC_KEY_BYTES = 32
_FINGERPRINT_LABEL = b"casegate-audit-key-fingerprint-v1"
RESTORE = "restore it from your backup of the data directory"


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
    """The bytes of a key file; AuditKeyError with one sentence when it cannot be used."""
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raise AuditKeyError(f"{path} is missing: {RESTORE}") from None
    except OSError as exc:
        raise AuditKeyError(f"{path} cannot be read ({exc.__class__.__name__}): {RESTORE}, "
                            "readable by the user casegate runs as") from None
    if mode & 0o077:
        raise AuditKeyError(f"{path}: must be readable by its owner only (chmod 600)")
    return data


def _missing(path: Path, why: str) -> AuditKeyError:
    return AuditKeyError(f"{path} is missing, but {why}: {RESTORE} (casegate makes a new key "
                         "only for a new trail)")


def load_hmac_key(data_dir: Path, *, may_create: bool,
                  why: str = "the audit trail already exists") -> tuple[bytes, bool]:
    """The chain key, and whether it was created just now (only when `may_create`)."""
    path = data_dir / HMAC_KEY_FILE
    created = may_create and _create_exclusive(path, secrets.token_bytes(HMAC_KEY_BYTES))
    if not path.exists():
        raise _missing(path, why)
    key = _read_private(path)
    if len(key) != HMAC_KEY_BYTES:
        raise AuditKeyError(f"{path}: must hold exactly {HMAC_KEY_BYTES} bytes, but holds "
                            f"{len(key)}: {RESTORE}")
    return key, created


def load_signing_key(data_dir: Path, *, may_create: bool,
                     why: str = "the audit trail already exists") -> tuple[Ed25519PrivateKey, bool]:
    """The checkpoint signing key, and whether it was created just now (only when
    `may_create`)."""
    path = data_dir / SIGNING_KEY_FILE
    created = False
    if may_create:
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        created = _create_exclusive(path, pem)
    if not path.exists():
        raise _missing(path, why)
    try:
        key = serialization.load_pem_private_key(_read_private(path), password=None)
    except ValueError:
        raise AuditKeyError(f"{path}: is not a PEM private key (altered?): {RESTORE}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path}: is not an Ed25519 key: {RESTORE}")
    return key, created


def load_or_create_hmac_key(data_dir: Path) -> tuple[bytes, bool]:
    """The chain key, created when absent (a new trail only: see `load_hmac_key`)."""
    return load_hmac_key(data_dir, may_create=True)


def load_or_create_signing_key(data_dir: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The checkpoint signing key, created when absent (a new trail only)."""
    return load_signing_key(data_dir, may_create=True)


def fingerprint(key: bytes) -> str:
    """What `audit.sqlite3` records of the chain key: HMAC(key, a fixed label), 128 bits, hex.

    It tells whether a key file holds the key the chain was made with, and reveals nothing of
    the key (finding a key from it is as hard as breaking HMAC-SHA256).
    """
    return hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).digest()[:16].hex()


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
