"""Envelope encryption of portal copies: round trip, tampering, wrong keys, rotation, key files."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from transports.crypto import (
    KEYS_FILE,
    PIECE_BYTES,
    CryptoError,
    Keyring,
    MissingKeyError,
    Sealed,
    TamperedError,
    seal,
    sealing,
    unseal,
    written,
)

MESSAGE = b"Subject: report\r\n\r\nPoppy's hearing is on Tuesday.\r\n"


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def test_round_trip_binds_copy_and_recipient() -> None:
    """A sealed copy opens for its own copy id and recipient only; each seal has its own key."""
    ring = Keyring.new()
    sealed = seal(ring, MESSAGE, copy_id="c1", recipient="mum@example.org")
    assert MESSAGE not in sealed.ciphertext
    assert unseal(ring, sealed, copy_id="c1", recipient="MUM@example.org") == MESSAGE
    with pytest.raises(TamperedError):
        unseal(ring, sealed, copy_id="c2", recipient="mum@example.org")
    with pytest.raises(TamperedError):
        unseal(ring, sealed, copy_id="c1", recipient="dad@example.org")
    again = seal(ring, MESSAGE, copy_id="c1", recipient="mum@example.org")
    assert again.wrapped_key != sealed.wrapped_key and again.ciphertext != sealed.ciphertext


@pytest.mark.parametrize("index", [0, 11, 12, 30, -1])
def test_any_changed_byte_is_detected(index: int) -> None:
    """Flipping one bit anywhere in the ciphertext or the wrapped key fails to open."""
    ring = Keyring.new()
    sealed = seal(ring, MESSAGE, copy_id="c1", recipient="mum@example.org")
    for changed in (replace(sealed, ciphertext=_flip(sealed.ciphertext, index)),
                    replace(sealed, wrapped_key=_flip(sealed.wrapped_key, index))):
        with pytest.raises(TamperedError):
            unseal(ring, changed, copy_id="c1", recipient="mum@example.org")


def test_wrong_or_missing_master_key_is_a_clear_error() -> None:
    """Another key under the same id does not authenticate; an unknown id is named."""
    ring = Keyring.new()
    sealed = seal(ring, MESSAGE, copy_id="c1", recipient="mum@example.org")
    impostor = Keyring(keys=(replace(ring.current, key=os.urandom(32)),),
                       current_id=ring.current_id)
    with pytest.raises(TamperedError, match="does not authenticate"):
        unseal(impostor, sealed, copy_id="c1", recipient="mum@example.org")
    with pytest.raises(MissingKeyError, match=ring.current_id):
        unseal(Keyring.new(), sealed, copy_id="c1", recipient="mum@example.org")


def test_rotation_keeps_old_copies_readable(tmp_path: Path) -> None:
    """After rotation new copies use the new key and old copies still open."""
    path = tmp_path / KEYS_FILE
    ring = Keyring.load_or_create(path)
    old = seal(ring, MESSAGE, copy_id="c1", recipient="a@example.org")
    rotated = ring.rotated()
    rotated.save(path)
    reloaded = Keyring.load(path)
    new = seal(reloaded, MESSAGE, copy_id="c2", recipient="a@example.org")
    assert new.key_id != old.key_id and reloaded.current_id == new.key_id
    assert unseal(reloaded, old, copy_id="c1", recipient="a@example.org") == MESSAGE
    assert unseal(reloaded, new, copy_id="c2", recipient="a@example.org") == MESSAGE


def test_key_file_is_owner_only_and_never_printed(tmp_path: Path) -> None:
    """The keyring file is mode 0600 and a key's repr shows no key material."""
    path = tmp_path / KEYS_FILE
    ring = Keyring.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Keyring.load_or_create(path) == ring
    assert ring.current.key.hex() not in repr(ring)


@pytest.mark.parametrize("text", ["", "{}", '{"current": "x", "keys": []}',
                                  '{"current": "a", "keys": [{"id": "a", "key": "c2hvcnQ="}]}',
                                  '{"current": "b", "keys": [{"id": "a", "key": "%s"}]}'
                                  % ("A" * 43 + "=")])
def test_bad_keyrings_are_refused(text: str) -> None:
    """Unreadable JSON, short keys or a current id that is absent are one clear error."""
    with pytest.raises(CryptoError):
        Keyring.from_text(text)


def test_keyring_from_environment_text_round_trips() -> None:
    """The JSON form (what $CASEGATE_PORTAL_KEYS holds) reads back to the same keyring."""
    ring = Keyring.new().rotated()
    assert Keyring.from_text(ring.to_text()) == ring


@pytest.mark.parametrize("size", [0, 1, PIECE_BYTES - 1, PIECE_BYTES, 2 * PIECE_BYTES + 7])
def test_a_copy_sealed_a_piece_at_a_time_opens_as_one_sealed_whole(size: int) -> None:
    """`sealing` stores what `seal` would (its pieces add up to `size`), and `unseal` opens it
    for the same copy and recipient only."""
    keyring = Keyring.new()
    plaintext = os.urandom(size)
    made = sealing(keyring, plaintext, copy_id="c1", recipient="Mum@example.org")
    ciphertext = bytes(written(made))
    assert len(ciphertext) == made.size == len(seal(keyring, plaintext, copy_id="c1",
                                                     recipient="m@example.org").ciphertext)
    stored = Sealed(key_id=made.key_id, wrapped_key=made.wrapped_key, ciphertext=ciphertext)
    assert unseal(keyring, stored, copy_id="c1", recipient="mum@example.org") == plaintext
    with pytest.raises(TamperedError):
        unseal(keyring, stored, copy_id="c2", recipient="mum@example.org")
