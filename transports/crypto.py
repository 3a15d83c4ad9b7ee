"""Envelope encryption for portal copies: a random data key per copy, wrapped by a master key.

    keyring = Keyring.load_or_create(data_dir / KEYS_FILE)
    sealed = seal(keyring, message_bytes, copy_id="c1", recipient="mum@example.org")
    opened = unseal(keyring, sealed, copy_id="c1", recipient="mum@example.org")

- Each copy is encrypted with its own random 256-bit data key (AES-256-GCM, 96-bit random
  nonce). The associated data binds the copy id and the recipient, so a ciphertext moved to
  another copy or recipient fails to open.
- The data key is wrapped (AES-256-GCM again) by the master key named by `key_id`; the wrapping
  is bound to the same copy id and recipient. Rotation adds a new master key and makes it
  current: old copies still open with their own key id, new copies use the new one, and
  nothing is re-encrypted.
- The master keys live in a JSON file (mode 0600) in the data directory, or come from an
  environment variable that only the CLI composition root reads (`Keyring.from_text`). They are
  never stored in the database beside the data.
- Tampering (any changed byte), a wrong key or a missing key id raises `CryptoError` with a
  sentence saying which: never garbage.
- `fingerprint(key)` names a master key without revealing it; the portal's database records
  it (`gateway.stores.portalkeys`) so that a replaced or altered keyring is refused at start-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEYS_FILE = "portal-keys.json"
KEY_BYTES = 32
NONCE_BYTES = 12
PIECE_BYTES = 1024 * 1024  # what `sealing` encrypts at a time
_WRAP_LABEL = b"casegate-portal-wrap-v1"
_DATA_LABEL = b"casegate-portal-data-v1"
_FINGERPRINT_LABEL = b"casegate-portal-key-fingerprint-v1"


class CryptoError(Exception):
    """A copy cannot be opened (tampered, wrong or missing key) or keys cannot be read."""


class MissingKeyError(CryptoError):
    """The master key a copy was wrapped with is not in the keyring."""


class TamperedError(CryptoError):
    """The wrapped key or the ciphertext does not authenticate: changed, or the wrong key."""


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    key: bytes = b""
    created: str = ""  # ISO-8601 UTC, for `casegate keys list`

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey(key_id={self.key_id!r}, created={self.created!r})"


@dataclass(frozen=True)
class Sealed:
    """One encrypted copy as stored: which master key, the wrapped data key, the ciphertext."""

    key_id: str
    wrapped_key: bytes  # nonce + AES-GCM(master key, data key)
    ciphertext: bytes | bytearray  # nonce + AES-GCM(data key, plaintext)


@dataclass(frozen=True)
class Sealing:
    """One copy being sealed, for a store that writes the ciphertext as it is made (`sealing`):
    the same `Sealed` once written, but never whole in memory (issue 14, point 4).

    `pieces` yields, once, the bytes of `Sealed.ciphertext` in order (the nonce, the
    ciphertext a piece at a time, the tag); `size` is their total length."""

    key_id: str
    wrapped_key: bytes
    size: int
    pieces: Iterator[bytes]


@dataclass(frozen=True)
class Keyring:
    """The master keys by id, and which one new copies use."""

    keys: tuple[MasterKey, ...]
    current_id: str

    @property
    def current(self) -> MasterKey:
        return self.get(self.current_id)

    def get(self, key_id: str) -> MasterKey:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        raise MissingKeyError(
            f"master key {key_id!r} is not in the keyring: the copy cannot be opened"
        )

    # -- reading and writing -------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str, source: str = "the keyring") -> Keyring:
        """Parse the JSON form: {"current": ID, "keys": [{"id", "key" (base64), "created"}]}."""
        try:
            raw = json.loads(text)
            keys = tuple(
                MasterKey(key_id=str(k["id"]), key=base64.b64decode(k["key"], validate=True),
                          created=str(k.get("created", "")))
                for k in raw["keys"]
            )
            current = str(raw["current"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise CryptoError(f"{source} is not a valid portal keyring") from None
        if not keys or any(len(k.key) != KEY_BYTES for k in keys):
            raise CryptoError(f"{source} must hold 256-bit keys")
        ring = cls(keys=keys, current_id=current)
        ring.get(current)
        return ring

    def to_text(self) -> str:
        return json.dumps(
            {
                "current": self.current_id,
                "keys": [
                    {"id": k.key_id, "key": base64.b64encode(k.key).decode("ascii"),
                     "created": k.created}
                    for k in self.keys
                ],
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CryptoError(f"{path}: the portal keyring does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CryptoError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
        return cls.from_text(text, str(path))

    @classmethod
    def load_or_create(cls, path: Path, now: datetime | None = None) -> Keyring:
        """The keyring in `path`, created (one fresh key, mode 0600) when absent."""
        if path.exists():
            return cls.load(path)
        ring = cls.new(now)
        ring.save(path)
        return ring

    @classmethod
    def new(cls, now: datetime | None = None) -> Keyring:
        key = _fresh_key(now)
        return cls(keys=(key,), current_id=key.key_id)

    def rotated(self, now: datetime | None = None) -> Keyring:
        """A keyring with one more key, now current; the old keys stay for old copies."""
        key = _fresh_key(now)
        return Keyring(keys=(*self.keys, key), current_id=key.key_id)

    def save(self, path: Path) -> None:
        """Write atomically, readable by the owner only."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.to_text())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


def fingerprint(key: MasterKey) -> str:
    """HMAC(master key, a fixed label), 128 bits, hex: says whether a keyring holds the same key
    bytes under that id, and reveals nothing of them."""
    return hmac.new(key.key, _FINGERPRINT_LABEL, hashlib.sha256).digest()[:16].hex()


def _fresh_key(now: datetime | None) -> MasterKey:
    stamp = now.isoformat() if now is not None else ""
    return MasterKey(key_id="k-" + secrets.token_hex(6), key=AESGCM.generate_key(256),
                     created=stamp)


def _associated(label: bytes, key_id: str, copy_id: str, recipient: str) -> bytes:
    parts = (label, key_id.encode(), copy_id.encode(), recipient.lower().encode())
    return b"\x00".join(parts)


def seal(keyring: Keyring, plaintext: bytes, *, copy_id: str, recipient: str) -> Sealed:
    """Encrypt one copy under a fresh data key, wrapped by the current master key."""
    master = keyring.current
    data_key, wrapped_key = _data_key(master, copy_id, recipient)
    data_nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = _encrypted(AESGCM(data_key), data_nonce, plaintext,
                            _associated(_DATA_LABEL, master.key_id, copy_id, recipient))
    return Sealed(key_id=master.key_id, wrapped_key=wrapped_key, ciphertext=ciphertext)


def _data_key(master: MasterKey, copy_id: str, recipient: str) -> tuple[bytes, bytes]:
    """A fresh data key for one copy, and it wrapped by `master` (the nonce first)."""
    data_key = AESGCM.generate_key(256)
    wrap_nonce = secrets.token_bytes(NONCE_BYTES)
    wrapped = AESGCM(master.key).encrypt(
        wrap_nonce, data_key, _associated(_WRAP_LABEL, master.key_id, copy_id, recipient))
    return data_key, wrap_nonce + wrapped


_TAG_BYTES = 16


def sealing(keyring: Keyring, plaintext: bytes, *, copy_id: str, recipient: str) -> Sealing:
    """`seal`, with the ciphertext made a piece at a time as the store writes it: what it
    stores is exactly what `seal` would have (AES-256-GCM with the same associated data, the
    nonce first and the tag last), and `unseal` opens it."""
    master = keyring.current
    data_key, wrapped_key = _data_key(master, copy_id, recipient)
    data_nonce = secrets.token_bytes(NONCE_BYTES)
    associated = _associated(_DATA_LABEL, master.key_id, copy_id, recipient)

    def pieces() -> Iterator[bytes]:
        encryptor = Cipher(algorithms.AES(data_key), modes.GCM(data_nonce)).encryptor()
        encryptor.authenticate_additional_data(associated)
        yield data_nonce
        with memoryview(plaintext) as view:
            for start in range(0, len(view), PIECE_BYTES):
                yield encryptor.update(view[start:start + PIECE_BYTES])
        encryptor.finalize()
        yield encryptor.tag

    return Sealing(key_id=master.key_id, wrapped_key=wrapped_key,
                   size=NONCE_BYTES + len(plaintext) + _TAG_BYTES, pieces=pieces())


def written(sealed: Sealed | Sealing) -> bytes | bytearray:
    """The whole ciphertext of `sealed`, for a store that cannot write it a piece at a time."""
    if isinstance(sealed, Sealed):
        return sealed.ciphertext
    out = bytearray(sealed.size)
    at = 0
    for piece in sealed.pieces:
        out[at:at + len(piece)] = piece
        at += len(piece)
    if at != sealed.size:
        raise CryptoError("the sealed copy is not the size it was to be")
    return out


def _encrypted(aead: AESGCM, nonce: bytes, plaintext: bytes,
               associated: bytes) -> bytes | bytearray:
    """`nonce` followed by the ciphertext and its tag, written into one buffer: a large copy is
    then held once, not twice (the ciphertext, then the nonce joined to it)."""
    if not hasattr(aead, "encrypt_into"):  # cryptography < 45
        return nonce + aead.encrypt(nonce, plaintext, associated)
    out = bytearray(NONCE_BYTES + len(plaintext) + _TAG_BYTES)
    out[:NONCE_BYTES] = nonce
    with memoryview(out) as view:
        aead.encrypt_into(nonce, plaintext, associated, view[NONCE_BYTES:])
    return out


def unseal(keyring: Keyring, sealed: Sealed, *, copy_id: str, recipient: str) -> bytes:
    """The plaintext of `sealed`, or `CryptoError` saying why it cannot be opened."""
    master = keyring.get(sealed.key_id)
    try:
        data_key = AESGCM(master.key).decrypt(
            sealed.wrapped_key[:NONCE_BYTES], sealed.wrapped_key[NONCE_BYTES:],
            _associated(_WRAP_LABEL, sealed.key_id, copy_id, recipient))
    except (InvalidTag, ValueError):
        raise TamperedError(
            "the copy's data key does not authenticate: it was changed, or the master key "
            f"{sealed.key_id!r} is not the one it was sealed with"
        ) from None
    try:
        return AESGCM(data_key).decrypt(
            sealed.ciphertext[:NONCE_BYTES], sealed.ciphertext[NONCE_BYTES:],
            _associated(_DATA_LABEL, sealed.key_id, copy_id, recipient))
    except (InvalidTag, ValueError):
        raise TamperedError("the copy's ciphertext does not authenticate: it was changed") from None
